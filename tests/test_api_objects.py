"""Objects and object references through the API, driven by the real PyMISP client against a real
node process (the `server` fixture of test_api.py: one node for this module, stopped at its end)."""
from __future__ import annotations

import uuid

from pymisp import MISPObject, MISPObjectReference

from test_api import Server, assert_misp_error, new_event
from fedmisp.store.query import element_id


def domain_ip(domain: str = "c2.objects.example", ip: str = "203.0.113.50") -> MISPObject:
    o = MISPObject("domain-ip")
    o.add_attribute("domain", domain)
    o.add_attribute("ip", ip)
    return o


def test_add_object_to_an_event_and_view_it(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("objects"), pythonify=True)
    added = misp.add_object(event.id, domain_ip(), pythonify=True)
    assert added.name == "domain-ip" and int(added.id) == element_id(added.uuid)
    assert int(added.event_id) == int(event.id)
    assert {(a.object_relation, a.value) for a in added.attributes} == {("domain", "c2.objects.example"),
                                                                       ("ip", "203.0.113.50")}
    assert all(int(a.object_id) == int(added.id) for a in added.attributes)
    view = misp.get_event(event.id, pythonify=True)
    assert [o.uuid for o in view.objects] == [added.uuid]
    assert misp.get_object(added.id, pythonify=True).uuid == added.uuid
    assert misp.get_object(added.uuid, pythonify=True).id == added.id
    # the object's attributes are searchable like any other
    found = misp.search(controller="attributes", value="c2.objects.example", pythonify=True)
    assert [int(a.object_id) for a in found] == [int(added.id)]


def test_add_object_with_a_template_uuid_in_the_path(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("template path"), pythonify=True)
    template = "43b3b146-77eb-4931-b4cc-b66c60f28734"  # domain-ip in misp-objects
    response = server.post(f"/objects/add/{event.id}/{template}", domain_ip("t.objects.example"))
    assert response.status_code == 200, response.text
    assert response.json()["Object"]["template_uuid"] == template


def test_break_on_duplicate_refuses_an_object_that_exists(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("duplicates"), pythonify=True)
    misp.add_object(event.id, domain_ip("dup.objects.example"), pythonify=True)
    refused = misp.add_object(event.id, domain_ip("dup.objects.example"), break_on_duplicate=True)
    assert refused["errors"][0] == 403 and "Duplicate object" in refused["errors"][1]["message"]
    assert misp.add_object(event.id, domain_ip("dup.objects.example", "203.0.113.51"), break_on_duplicate=True,
                           pythonify=True).name == "domain-ip"
    assert len(misp.get_event(event.id, pythonify=True).objects) == 2
    assert_misp_error(server.post(f"/objects/add/{event.id}/frobnicate:1", domain_ip()), 400, "frobnicate")


def test_an_object_that_breaks_its_template_is_refused_whole(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("bad object"), pythonify=True)
    bad = MISPObject("domain-ip", strict=False)
    bad.add_attribute("domain", "1.2.3.4", type="ip-dst")  # domain takes type domain
    response = server.post(f"/objects/add/{event.id}", bad)
    assert_misp_error(response, 400, "relation 'domain'", "takes type domain")
    assert misp.get_event(event.id, pythonify=True).objects == []
    assert_misp_error(server.post(f"/objects/add/{event.id}", {"name": "domain-ip", "Attribute": []}), 400,
                      "Attribute")
    assert_misp_error(server.post(f"/objects/add/{event.id}", [1]), 400, "Object")
    assert_misp_error(server.post("/objects/add/987654", domain_ip()), 404, "Invalid event")
    assert_misp_error(server.post(f"/objects/add/{event.id}", domain_ip(), role="read-only"), 403, "needs user")
    assert misp.get_event(event.id, pythonify=True).objects == []


def test_objects_on_another_organisations_event_are_refused(server: Server):
    response = server.post(f"/objects/add/{server.foreign_event}", domain_ip("x.objects.example"))
    assert_misp_error(response, 403, "created by another organisation")
    assert not server.misp().search(controller="attributes", value="x.objects.example", pythonify=True)


def test_soft_delete_marks_the_object_and_its_attributes_deleted(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("soft delete object"), pythonify=True)
    added = misp.add_object(event.id, domain_ip("soft.objects.example"), pythonify=True)
    assert misp.delete_object(added.id)["success"] is True
    assert misp.get_event(event.id, pythonify=True).objects == []
    with_deleted = misp.get_event(event.id, deleted=True, pythonify=True)
    (o,) = with_deleted.objects
    assert o.deleted and all(a.deleted for a in o.attributes)
    assert misp.search(controller="attributes", value="soft.objects.example", pythonify=True) == []


def test_hard_delete_removes_the_object_from_the_revision(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("hard delete object"), pythonify=True)
    added = misp.add_object(event.id, domain_ip("hard.objects.example"), pythonify=True)
    assert misp.delete_object(added.uuid, hard=True)["success"] is True
    assert misp.get_event(event.id, deleted=True, pythonify=True).objects == []
    assert_misp_error(server.get(f"/objects/view/{added.id}"), 404, "Invalid object")
    assert_misp_error(server.post(f"/objects/delete/{added.id}"), 404, "Invalid object")
    assert_misp_error(server.get(f"/attributes/view/{added.attributes[0].uuid}"), 404)


def test_update_object_changes_matched_attributes_adds_new_ones_and_soft_deletes_the_rest(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("edit object"), pythonify=True)
    o = MISPObject("domain-ip")
    o.add_attribute("domain", "edit.objects.example")
    o.add_attribute("ip", "203.0.113.60")
    o.add_attribute("ip", "203.0.113.61")
    added = misp.add_object(event.id, o, pythonify=True)
    by_value = {a.value: a for a in added.attributes}
    # as a PyMISP script does: change one attribute, drop another, add a new one, comment the object
    added.comment = "seen in campaign X"
    by_value["203.0.113.60"].value = "203.0.113.70"
    by_value["203.0.113.60"].to_ids = False
    added.attributes = [a for a in added.attributes if a.value != "203.0.113.61"]
    added.add_attribute("port", "8443")
    updated = misp.update_object(added, pythonify=True)
    assert updated.uuid == added.uuid and updated.comment == "seen in campaign X"
    live = {a.uuid: a for a in updated.attributes if not a.deleted}
    assert {a.value for a in live.values()} == {"edit.objects.example", "203.0.113.70", "8443"}
    assert live[by_value["203.0.113.60"].uuid].to_ids is False  # the same attribute, changed
    gone = next(a for a in updated.attributes if a.uuid == by_value["203.0.113.61"].uuid)
    assert gone.deleted  # left out: soft-deleted, as MISP does
    # untouched attributes keep their timestamp; the search index follows the edit
    assert live[by_value["edit.objects.example"].uuid].timestamp == by_value["edit.objects.example"].timestamp
    assert misp.search(controller="attributes", value="203.0.113.60", pythonify=True) == []
    assert [a.uuid for a in misp.search(controller="attributes", value="203.0.113.70", pythonify=True)] == \
        [by_value["203.0.113.60"].uuid]
    assert misp.search(controller="attributes", value="203.0.113.61", pythonify=True) == []
    # an edit with no attribute list changes only the object's fields
    before = {a.uuid: a.timestamp for a in updated.attributes}
    response = server.post(f"/objects/edit/{updated.id}", {"Object": {"comment": "retired"}})
    assert response.status_code == 200, response.text
    assert response.json()["Object"]["comment"] == "retired"
    assert {a["uuid"]: int(a["timestamp"]) for a in response.json()["Object"]["Attribute"]} == \
        {u: int(t.timestamp()) for u, t in before.items()}


def test_update_object_refusals_change_nothing(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("edit object refusals"), pythonify=True)
    added = misp.add_object(event.id, domain_ip("refuse.objects.example", "203.0.113.80"), pythonify=True)
    domain = next(a for a in added.attributes if a.object_relation == "domain")
    bad = {"Object": {"Attribute": [{"uuid": domain.uuid, "value": "not a domain!"},
                                    *[{"uuid": a.uuid} for a in added.attributes if a.uuid != domain.uuid]]}}
    assert_misp_error(server.post(f"/objects/edit/{added.id}", bad), 400, "domain")
    assert_misp_error(server.post(f"/objects/edit/{added.id}", {"Object": {"Attribute": "x"}}), 400, "Attribute")
    other = misp.add_event(new_event("edit object, other event"), pythonify=True)
    elsewhere = misp.add_attribute(other.id, {"type": "domain", "value": "elsewhere.objects.example"}, pythonify=True)
    taken = {"Object": {"Attribute": [{"uuid": a.uuid} for a in added.attributes] +
                        [{"uuid": elsewhere.uuid, "type": "ip-dst", "object_relation": "ip", "value": "203.0.113.81"}]}}
    assert_misp_error(server.post(f"/objects/edit/{added.id}", taken), 403, "already used")
    assert_misp_error(server.post("/objects/edit/987654", {"Object": {"comment": "x"}}), 404, "Invalid object")
    assert_misp_error(server.post(f"/objects/edit/{added.id}", {"Object": {"comment": "x"}}, role="read-only"), 403)
    held = misp.get_object(added.id, pythonify=True)
    assert {a.value for a in held.attributes} == {"refuse.objects.example", "203.0.113.80"}
    assert not any(a.deleted for a in held.attributes) and not held.comment


def test_object_references_add_and_delete(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("references"), pythonify=True)
    o = misp.add_object(event.id, domain_ip("ref.objects.example"), pythonify=True)
    target = event.attributes[0]
    ref = MISPObjectReference()
    ref.from_dict(object_uuid=o.uuid, referenced_uuid=target.uuid, relationship_type="resolves-to",
                  comment="seen together")
    added = misp.add_object_reference(ref, pythonify=True)
    assert added.object_uuid == o.uuid and added.referenced_uuid == target.uuid
    assert added.relationship_type == "resolves-to" and int(added.referenced_id) == int(target.id)
    held = misp.get_object(o.id, pythonify=True).references
    assert [(r.uuid, r.relationship_type) for r in held] == [(added.uuid, "resolves-to")]
    # soft: flagged deleted, still in the revision
    assert misp.delete_object_reference(added.id)["success"] is True
    assert [r.deleted for r in misp.get_object(o.id, pythonify=True).references] == [True]
    assert misp.delete_object_reference(added.uuid, hard=True)["success"] is True
    assert misp.get_object(o.id, pythonify=True).references == []
    assert_misp_error(server.post(f"/objectReferences/delete/{added.id}"), 404)


def test_bad_references_are_refused_naming_the_field(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("bad references"), pythonify=True)
    o = misp.add_object(event.id, domain_ip("badref.objects.example"), pythonify=True)
    unknown = {"object_uuid": o.uuid, "referenced_uuid": str(uuid.uuid4()), "relationship_type": "related-to"}
    assert_misp_error(server.post("/objectReferences/add", unknown), 404, "referenced_uuid")
    no_type = {"object_uuid": o.uuid, "referenced_uuid": event.attributes[0].uuid}
    assert_misp_error(server.post("/objectReferences/add", no_type), 400, "relationship_type")
    no_object = {"referenced_uuid": event.attributes[0].uuid, "relationship_type": "related-to"}
    assert_misp_error(server.post("/objectReferences/add", no_object), 400, "object_uuid")
    not_an_object = {**no_object, "object_uuid": event.attributes[0].uuid}
    assert_misp_error(server.post("/objectReferences/add", not_an_object), 404, "Invalid object")
    assert misp.get_object(o.id, pythonify=True).references == []
