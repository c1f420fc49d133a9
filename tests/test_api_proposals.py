"""Proposals (MISP's shadow attributes) through the REST API, as PyMISP scripts use them: a real
`fedmisp run` process, the real PyMISP client, a real store (the `server` fixture of test_api)."""
from __future__ import annotations

from pymisp import MISPAttribute, MISPShadowAttribute

import test_api
from test_api import Server, assert_misp_error, new_event

server = test_api.server  # test_api's module-scoped fixture: this module gets a node of its own


def _attribute(type_: str, value: str, **fields: object) -> MISPAttribute:
    a = MISPAttribute()
    a.from_dict(type=type_, value=value, **fields)
    return a


def _open_ids(server: Server, event: str | None = None) -> dict[str, dict]:
    listed = server.misp().attribute_proposals(event) if event else server.misp().attribute_proposals()
    assert isinstance(listed, list), listed
    return {p["ShadowAttribute"]["id"]: p["ShadowAttribute"] for p in listed}


def test_a_new_attribute_proposed_to_another_orgs_event_is_listed_and_viewable(server: Server):
    misp = server.misp("user")
    proposed = misp.add_attribute_proposal(server.foreign_event, _attribute("domain", "evil-proposal.example",
                                                                            comment="seen in our logs"),
                                           pythonify=True)
    assert isinstance(proposed, MISPShadowAttribute)
    assert proposed.value == "evil-proposal.example" and proposed.comment == "seen in our logs"
    assert proposed.category == "Network activity" and proposed.old_id == "0"
    event = misp.get_event(server.foreign_event)["Event"]
    assert proposed.event_id == event["id"]
    # listed for all events and for its event, viewable by id, shown in the event
    assert proposed.id in _open_ids(server) and proposed.id in _open_ids(server, server.foreign_event)
    viewed = server.misp("read-only").get_attribute_proposal(proposed.id)["ShadowAttribute"]
    assert viewed["value"] == "evil-proposal.example" and viewed["Org"]["name"] == "Test CSIRT"
    shown = next(p for p in event["ShadowAttribute"] if p["uuid"] == proposed.uuid)
    assert (shown["id"], shown["event_id"], shown["old_id"]) == (proposed.id, event["id"], "0")
    # the event itself is unchanged: a proposal is not an attribute
    assert "evil-proposal.example" not in {a["value"] for a in event["Attribute"]}


def test_pymisp_edits_of_another_orgs_event_become_proposals_as_against_misp(server: Server):
    """MISP answers 403 'You do not have permission to do that.' and PyMISP then sends the same
    change as a proposal: add, update and delete of an attribute on someone else's event."""
    misp = server.misp("user")
    before = misp.get_event(server.foreign_event)["Event"]
    target = before["Attribute"][0]
    added = misp.add_attribute(server.foreign_event, _attribute("ip-dst", "203.0.113.66"), pythonify=True)
    assert isinstance(added, MISPShadowAttribute) and added.value == "203.0.113.66"
    change = _attribute(target["type"], target["value"], comment="false positive at our site")
    updated = misp.update_attribute(change, target["id"], pythonify=True)
    assert isinstance(updated, MISPShadowAttribute)
    assert updated.old_id == target["id"] and updated.uuid == target["uuid"]
    assert updated.comment == "false positive at our site"
    deleted = misp.delete_attribute(target["id"])
    assert deleted == {"saved": True, "success": "The proposal to delete the attribute has been saved"}
    listed = _open_ids(server, server.foreign_event)
    assert {added.id, updated.id} <= set(listed)
    on_target = misp.get_event(server.foreign_event)["Event"]["Attribute"][0]["ShadowAttribute"]
    assert {p["id"] for p in on_target} >= {updated.id} and {p["old_id"] for p in on_target} == {target["id"]}
    assert any(p["proposal_to_delete"] and p["old_uuid"] == target["uuid"] for p in listed.values())
    after = misp.get_event(server.foreign_event)["Event"]
    assert [(a["uuid"], a["value"], a["comment"]) for a in after["Attribute"]] == \
        [(a["uuid"], a["value"], a["comment"]) for a in before["Attribute"]]
    # the raw answer is MISP's, with the reason in errors
    raw = server.post(f"/attributes/edit/{target['id']}", {"comment": "x"}, role="user")
    body = assert_misp_error(raw, 403, "created by another organisation")
    assert body["message"] == "You do not have permission to do that."
    assert_misp_error(server.post(f"/events/edit/{server.foreign_event}", {"Event": {"info": "x"}}), 403,
                      "You do not have permission to do that.")


def test_only_the_events_creator_accepts_or_discards(server: Server):
    misp = server.misp("admin")
    proposed = misp.add_attribute_proposal(server.foreign_event, _attribute("url", "https://x.example/p"),
                                           pythonify=True)
    for action in ("accept", "discard"):
        refused = server.post(f"/shadowAttributes/{action}/{proposed.id}")
        body = assert_misp_error(refused, 403, "only the event's creator")
        assert body["message"] == "You do not have permission to do that."
    assert proposed.id in _open_ids(server)


def test_accepting_a_new_attribute_adds_it_in_a_new_revision_and_closes_the_proposal(server: Server):
    misp = server.misp("user")
    own = server.misp("publisher").add_event(new_event("own event with proposals"), pythonify=True)
    proposed = misp.add_attribute_proposal(own.id, _attribute("sha256", "a" * 64, to_ids=True), pythonify=True)
    answer = misp.accept_attribute_proposal(proposed.id)
    assert answer == {"name": "Proposal accepted.", "message": "Proposal accepted.",
                      "url": f"/shadow_attributes/accept/{proposed.id}"}
    event = misp.get_event(own.id, pythonify=True)
    accepted = next(a for a in event.attributes if a.value == "a" * 64)
    assert accepted.uuid == proposed.uuid and accepted.to_ids and accepted.type == "sha256"
    assert int(event.timestamp.timestamp()) > int(own.timestamp.timestamp())
    assert not event.published  # MISP unpublishes an event when a proposal is accepted
    assert proposed.id not in _open_ids(server)
    assert not misp.get_event(own.id)["Event"].get("ShadowAttribute")
    # closed: viewing, accepting or discarding it again is a 404
    assert_misp_error(server.get(f"/shadowAttributes/view/{proposed.id}"), 404, "Invalid proposal.")
    assert_misp_error(server.post(f"/shadowAttributes/accept/{proposed.id}"), 404, "Invalid proposal.")
    assert_misp_error(server.post(f"/shadowAttributes/discard/{proposed.id}"), 404, "Invalid proposal.")


def test_accepting_an_edit_and_a_deletion_changes_the_attribute(server: Server):
    misp = server.misp("user")
    own = server.misp("publisher").add_event(new_event("own event, edit proposals"), pythonify=True)
    ip = next(a for a in own.attributes if a.type == "ip-dst")
    domain = next(a for a in own.attributes if a.type == "domain")
    edit = misp.update_attribute_proposal(ip.id, {"value": "198.51.100.21", "comment": "moved"}, pythonify=True)
    assert edit.old_id == str(ip.id) and edit.value == "198.51.100.21" and edit.type == "ip-dst"
    assert misp.delete_attribute_proposal(domain.id)["saved"] is True
    deletion = next(p for p in _open_ids(server, own.uuid).values() if p["proposal_to_delete"])
    assert misp.accept_attribute_proposal(edit.id)["message"] == "Proposed change accepted."
    assert misp.accept_attribute_proposal(deletion["id"])["message"] == "Proposed change accepted."
    changed = misp.get_attribute(ip.id, pythonify=True)
    assert (changed.value, changed.comment, changed.uuid) == ("198.51.100.21", "moved", ip.uuid)
    shown = {a["uuid"] for a in misp.get_event(own.id)["Event"]["Attribute"]}
    assert domain.uuid not in shown  # soft-deleted, as MISP deletes on accept
    assert _open_ids(server, own.uuid) == {}


def test_discarding_closes_the_proposal_and_leaves_the_event_as_it_was(server: Server):
    misp = server.misp("user")
    own = server.misp("publisher").add_event(new_event("own event, discard"), pythonify=True)
    proposed = misp.add_attribute_proposal(own.uuid, _attribute("ip-src", "192.0.2.200"), pythonify=True)
    before = misp.get_event(own.id)["Event"]
    assert misp.discard_attribute_proposal(proposed.id) == {
        "name": "Proposal discarded.", "message": "Proposal discarded.",
        "url": f"/shadow_attributes/discard/{proposed.id}"}
    after = misp.get_event(own.id)["Event"]
    assert after["timestamp"] == before["timestamp"] and after["Attribute"] == before["Attribute"]
    assert not after.get("ShadowAttribute") and proposed.id not in _open_ids(server)


def test_bad_proposals_are_refused_naming_the_field(server: Server):
    misp_event = server.foreign_event
    assert_misp_error(server.post(f"/shadowAttributes/add/{misp_event}", {"type": "ip-dst", "value": "not an ip"},
                                  role="user"), 400, "value")
    assert_misp_error(server.post(f"/shadowAttributes/add/{misp_event}", {"type": "no-such-type", "value": "x"},
                                  role="user"), 400, "type", "is not a MISP attribute type")
    assert_misp_error(server.post(f"/shadowAttributes/add/{misp_event}", [1, 2], role="user"), 400,
                      "ShadowAttribute")
    target = server.misp().get_event(misp_event)["Event"]["Attribute"][0]
    assert_misp_error(server.post(f"/shadowAttributes/add/{misp_event}",
                                  {"type": "ip-dst", "value": "192.0.2.9", "uuid": target["uuid"]}, role="user"),
                      400, "already used")
    assert_misp_error(server.post(f"/shadowAttributes/edit/{target['id']}", {"uuid": "x"}, role="user"), 405,
                      "Invalid input.", "value")
    # unknown ids: MISP's 404 shape
    assert_misp_error(server.post("/shadowAttributes/add/999999", {"type": "ip-dst", "value": "192.0.2.9"}),
                      404, "Invalid event")
    assert_misp_error(server.post("/shadowAttributes/edit/123456789", {"value": "192.0.2.9"}), 404,
                      "Invalid attribute")
    assert_misp_error(server.post("/shadowAttributes/delete/123456789"), 404, "Invalid attribute")
    for path in ("/shadowAttributes/view/42", "/shadowAttributes/view/not-a-number"):
        assert_misp_error(server.get(path), 404, "Invalid proposal.")
    assert_misp_error(server.get("/shadowAttributes/index/999999"), 404, "Invalid event")
    assert_misp_error(server.get("/shadowAttributes/index?limit=0"), 400, "limit")


def test_roles_read_only_may_list_but_not_propose_or_decide(server: Server):
    attribute = {"type": "ip-dst", "value": "192.0.2.10"}
    assert_misp_error(server.post(f"/shadowAttributes/add/{server.foreign_event}", attribute, role="read-only"),
                      403, "needs user")
    assert server.get("/shadowAttributes/index", role="read-only").status_code == 200
    proposed = server.misp("user").add_attribute_proposal(server.foreign_event, attribute, pythonify=True)
    for action in ("accept", "discard"):
        assert_misp_error(server.post(f"/shadowAttributes/{action}/{proposed.id}", role="read-only"), 403,
                          "needs user")
    assert server.get(f"/shadow_attributes/view/{proposed.id}", role="read-only").json()["ShadowAttribute"][
        "value"] == "192.0.2.10"


def test_index_pages_with_limit_and_page(server: Server):
    misp = server.misp("user")
    own = server.misp("publisher").add_event(new_event("own event, many proposals"), pythonify=True)
    made = [misp.add_attribute_proposal(own.id, {"type": "ip-dst", "value": f"192.0.2.{i}"}, pythonify=True).id
            for i in range(30, 35)]
    pages = [server.get(f"/shadowAttributes/index/{own.id}/limit:2/page:{n}").json() for n in (1, 2, 3, 4)]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert sorted(p["ShadowAttribute"]["id"] for page in pages for p in page) == sorted(made)


def test_the_permission_answer_comes_before_other_checks_so_pymisp_still_proposes(server: Server):
    """MISP refuses a change to another org's event before validating it; a value the event
    already has would otherwise be refused as 'similar' and never reach the proposal."""
    misp = server.misp("user")
    held = misp.get_event(server.foreign_event)["Event"]["Attribute"][0]
    again = misp.add_attribute(server.foreign_event, _attribute(held["type"], held["value"],
                                                                category=held["category"]), pythonify=True)
    assert isinstance(again, MISPShadowAttribute) and again.value == held["value"]
    stale = server.post(f"/attributes/edit/{held['id']}", {"value": held["value"], "timestamp": "1"}, role="user")
    assert stale.json()["message"] == "You do not have permission to do that."


def test_a_proposal_to_an_object_attribute_keeps_its_type_and_is_accepted_into_the_object(server: Server):
    from pymisp import MISPObject
    event = new_event("own event with an object")
    obj = MISPObject("domain-ip")
    obj.add_attribute("domain", value="obj.example")
    obj.add_attribute("ip", value="192.0.2.150")
    event.add_object(obj)
    own = server.misp("publisher").add_event(event, pythonify=True)
    member = next(a for a in own.objects[0].attributes if a.object_relation == "ip")
    misp = server.misp("user")
    proposed = misp.update_attribute_proposal(member.id, {"value": "192.0.2.151", "type": "domain"}, pythonify=True)
    assert proposed.type == "ip-dst" and proposed.value == "192.0.2.151"
    misp.accept_attribute_proposal(proposed.id)
    shown = misp.get_event(own.id, pythonify=True).objects[0]
    assert {(a.object_relation, a.value) for a in shown.attributes} == {("domain", "obj.example"),
                                                                        ("ip", "192.0.2.151")}
