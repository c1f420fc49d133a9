"""Tags through the API with the real PyMISP client against a real node process: tag settings
(add, edit, delete) and local tags, which stay node-local on any organisation's event."""
from __future__ import annotations

from pymisp import MISPTag

from test_api import Server, assert_misp_error, new_event
from fedmisp.store.store import Store


def held(server: Server, event_uuid: str) -> tuple[bytes, int]:
    """(record id of the held revision, last sequence of the changes log), read from the store."""
    store = Store(server.home / "store", readonly=True)
    try:
        return store.held(event_uuid).record_id, store.head_sequence()
    finally:
        store.close()


def tag_names(entity: dict) -> dict[str, bool]:
    return {t["name"]: bool(t.get("local")) for t in entity.get("Tag", [])}


def test_local_tags_on_another_organisations_event_stay_local(server: Server):
    misp = server.misp("user")
    before = held(server, server.foreign_event)
    attribute = misp.get_event(server.foreign_event)["Event"]["Attribute"][0]
    assert misp.tag(server.foreign_event, "internal:triage", local=True)["saved"] is True
    assert misp.tag(attribute["uuid"], "internal:false-positive", local=True)["saved"] is True
    view = misp.get_event(server.foreign_event)["Event"]
    assert tag_names(view)["internal:triage"] is True
    a = next(x for x in view["Attribute"] if x["uuid"] == attribute["uuid"])
    assert tag_names(a)["internal:false-positive"] is True
    # no new revision, nothing in the changes log: nothing a peer could receive
    assert held(server, server.foreign_event) == before
    misp.untag(server.foreign_event, "internal:triage")
    misp.untag(attribute["uuid"], "internal:false-positive")
    view = misp.get_event(server.foreign_event)["Event"]
    assert "internal:triage" not in tag_names(view)
    assert "internal:false-positive" not in tag_names(next(x for x in view["Attribute"] if x["uuid"] == attribute["uuid"]))
    assert held(server, server.foreign_event) == before


def test_a_shared_tag_on_another_organisations_event_is_refused(server: Server):
    before = held(server, server.foreign_event)
    refused = server.post("/tags/attachTagToObject", {"uuid": server.foreign_event, "tag": "tlp:red"}, role="user")
    assert_misp_error(refused, 403, "created by another organisation")
    assert held(server, server.foreign_event) == before


def test_a_local_tag_on_an_own_event_makes_no_revision(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("local on own"), pythonify=True)
    before = held(server, event.uuid)
    misp.tag(event.uuid, "internal:case-7", local=True)
    assert held(server, event.uuid) == before
    assert tag_names(misp.get_event(event.id)["Event"])["internal:case-7"] is True
    misp.tag(event.uuid, "tlp:amber")  # a shared tag is a new revision
    assert held(server, event.uuid)[0] != before[0]
    assert tag_names(misp.get_event(event.id)["Event"])["tlp:amber"] is False


def test_removing_a_tag_that_is_not_attached_is_a_404(server: Server):
    event = server.misp().add_event(new_event("untag"), pythonify=True)
    response = server.post("/tags/removeTagFromObject", {"uuid": event.uuid, "tag": "never:attached"})
    assert_misp_error(response, 404, "not attached")
    response = server.post("/tags/attachTagToObject", {"uuid": "4f2c2f5e-0000-4000-8000-000000000000", "tag": "x"})
    assert_misp_error(response, 404, "no event or attribute")


def test_tag_add_edit_view_and_delete(server: Server):
    misp = server.misp()
    tag = MISPTag()
    tag.name = "workflow:state=draft"
    tag.colour = "#112233"
    added = misp.add_tag(tag, pythonify=True)
    assert added.name == "workflow:state=draft" and added.colour == "#112233"
    assert "workflow:state=draft" in {t.name for t in misp.tags(pythonify=True)}
    assert_misp_error(server.post("/tags/add", {"Tag": {"name": "workflow:state=draft"}}), 403, "already exists")
    added.colour = "#aabbcc"
    added.hide_tag = True
    edited = misp.update_tag(added, pythonify=True)
    assert (edited.colour, edited.hide_tag) == ("#aabbcc", True)
    assert misp.get_tag(added.id, pythonify=True).colour == "#aabbcc"
    assert_misp_error(server.post(f"/tags/edit/{added.id}", {"Tag": {"name": "renamed"}}), 403, "name")
    assert_misp_error(server.post(f"/tags/edit/{added.id}", {"Tag": {"colour": "red"}}), 400, "colour", "#RRGGBB")
    assert_misp_error(server.post(f"/tags/edit/{added.id}", {"Tag": {"colour": "#000000"}}, role="user"), 403,
                      "needs admin")
    assert misp.get_tag(added.id, pythonify=True).colour == "#aabbcc"
    assert misp.delete_tag(added.id)["success"] is True
    assert_misp_error(server.get(f"/tags/view/{added.id}"), 404, "Invalid Tag")
    assert_misp_error(server.post(f"/tags/delete/{added.id}"), 404, "Invalid Tag")
    assert "workflow:state=draft" not in {t.name for t in misp.tags(pythonify=True)}


def test_a_tag_in_a_signed_revision_is_not_deleted_and_a_local_one_is_taken_off(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("tag delete"), pythonify=True)  # carries tlp:green
    in_use = next(t for t in misp.tags(pythonify=True) if t.name == "tlp:green")
    assert_misp_error(server.post(f"/tags/delete/{in_use.id}"), 403, "in use")
    misp.tag(event.uuid, "internal:to-forget", local=True)
    local = next(t for t in misp.tags(pythonify=True) if t.name == "internal:to-forget")
    assert misp.delete_tag(local.id)["success"] is True
    assert "internal:to-forget" not in tag_names(misp.get_event(event.id)["Event"])
    assert "tlp:green" in tag_names(misp.get_event(event.id)["Event"])
