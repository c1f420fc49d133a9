"""Organisations and sharing groups through the API with the real PyMISP client against a real node
process. Sharing groups are signed revisions: the tests read the store to see what was signed."""
from __future__ import annotations

import uuid

from pymisp import MISPOrganisation, MISPSharingGroup

from test_api import Server, assert_misp_error, new_event
from fedmisp.gossip import sharing_groups as sg
from fedmisp.model.identity import Identity
from fedmisp.model.records import KIND_ORG, KIND_SHARING_GROUP, seal
from fedmisp.policy.model import SharingGroup
from fedmisp.store.store import Store


def introduce(server: Server, name: str) -> tuple[MISPOrganisation, Identity]:
    identity = Identity.generate()
    org = MISPOrganisation()
    org.from_dict(name=name, uuid=str(uuid.uuid4()), public_key=identity.public_key_text)
    return server.misp().add_organisation(org, pythonify=True), identity


def current_group(server: Server, group_uuid: str) -> SharingGroup:
    store = Store(server.home / "store", readonly=True)
    try:
        return sg.from_record(store.sharing_group(group_uuid))
    finally:
        store.close()


def test_organisations_index_and_view(server: Server):
    misp = server.misp("read-only")
    (own,) = misp.organisations(pythonify=True)  # MISP's default scope: local
    assert own.name == "Test CSIRT" and str(own.id) == "1"
    assert misp.get_organisation(own.uuid, pythonify=True).name == "Test CSIRT"
    assert misp.get_organisation("Test CSIRT", pythonify=True).uuid == own.uuid
    assert misp.organisation_exists(1) and not misp.organisation_exists(str(uuid.uuid4()))
    assert_misp_error(server.get("/organisations/view/424242"), 404, "Invalid organisation")
    assert_misp_error(server.get("/organisations/index/scope:galaxy"), 400, "scope")


def test_an_admin_introduces_a_remote_organisation_by_uuid_name_and_key(server: Server):
    added, identity = introduce(server, "Partner CERT")
    assert added.name == "Partner CERT" and added.local is False and added.introduced is True
    assert added.public_key == identity.public_key_text
    misp = server.misp("read-only")
    assert "Partner CERT" in {o.name for o in misp.organisations(scope="all", pythonify=True)}
    assert "Partner CERT" in {o.name for o in misp.organisations(scope="external", search="partner", pythonify=True)}
    assert misp.get_organisation(added.id, pythonify=True).uuid == added.uuid
    # its key now makes records it signs acceptable (as its own org record would)
    store = Store(server.home / "store", readonly=True)
    try:
        assert store.org_for_key(identity.public_key) == added.uuid
    finally:
        store.close()


def test_an_organisation_known_by_its_own_org_record_is_listed_and_not_introduced_again(server: Server):
    identity = Identity.generate()
    body = {"key": identity.public_key, "name": "Peer Org", "uuid": str(uuid.uuid4())}
    store = Store(server.home / "store")  # as a peer's org record arrives
    try:
        store.write_records([seal(identity, KIND_ORG, body, created=0)])
    finally:
        store.close()
    misp = server.misp("read-only")
    found = misp.get_organisation(body["uuid"], pythonify=True)
    assert found.name == "Peer Org" and found.introduced is False
    assert found.public_key == identity.public_key_text
    assert body["uuid"] in {o.uuid for o in misp.organisations(scope="external", pythonify=True)}
    again = {"name": "Peer Org", "uuid": body["uuid"], "public_key": identity.public_key_text}
    assert_misp_error(server.post("/admin/organisations/add", again), 403, "already")


def test_bad_organisations_are_refused_naming_the_field(server: Server):
    key = Identity.generate().public_key_text
    good = {"name": "Someone", "uuid": str(uuid.uuid4()), "public_key": key}
    assert_misp_error(server.post("/admin/organisations/add", {**good, "public_key": "abc"}), 400, "public_key")
    assert_misp_error(server.post("/admin/organisations/add", {**good, "uuid": "nope"}), 400, "uuid")
    assert_misp_error(server.post("/admin/organisations/add", {**good, "name": ""}), 400, "name")
    assert_misp_error(server.post("/admin/organisations/add", {"Organisation": good}, role="publisher"), 403,
                      "needs admin")
    assert not server.misp().organisation_exists(good["uuid"])
    partner, _identity = introduce(server, "Twice")
    again = {"name": "Twice again", "uuid": partner.uuid, "public_key": Identity.generate().public_key_text}
    assert_misp_error(server.post("/admin/organisations/add", again), 403, "already")
    same_key = {"name": "Same key", "uuid": str(uuid.uuid4()), "public_key": partner.public_key}
    assert_misp_error(server.post("/admin/organisations/add", same_key), 403, "already")
    assert not server.misp().organisation_exists(same_key["uuid"])


def test_sharing_group_add_edit_members_and_delete_are_signed_revisions(server: Server):
    misp = server.misp()
    partner, _ = introduce(server, "SG Partner")
    new = MISPSharingGroup()
    new.from_dict(name="Financial ISAC", releasability="members only", description="banks")
    group = misp.add_sharing_group(new, pythonify=True)
    assert group.name == "Financial ISAC" and group.releasability == "members only"
    assert [o.Organisation["name"] for o in group.sgorgs] == ["Test CSIRT"]
    assert current_group(server, group.uuid).revision == 1
    assert misp.add_org_to_sharing_group(group.id, partner.uuid, extend=True)["success"] is True
    held = current_group(server, group.uuid)
    assert held.revision == 2 and held.members[partner.uuid] is True
    listed = {g.uuid: g for g in misp.sharing_groups(pythonify=True)}
    assert {o.Organisation["uuid"] for o in listed[group.uuid].sgorgs} == {partner.uuid, held.owner}
    assert misp.sharing_group_exists(group.uuid)
    updated = misp.update_sharing_group({"name": "Financial ISAC (EU)", "description": "EU banks"}, group.id,
                                        pythonify=True)
    assert (updated.name, updated.description) == ("Financial ISAC (EU)", "EU banks")
    assert misp.remove_org_from_sharing_group(group.uuid, partner.id)["success"] is True
    assert partner.uuid not in current_group(server, group.uuid).members
    assert misp.delete_sharing_group(group.id)["success"] is True
    gone = current_group(server, group.uuid)
    assert gone.deleted and list(gone.members) == [gone.owner]  # nobody else receives through it
    assert group.uuid not in {g.uuid for g in misp.sharing_groups(pythonify=True)}
    assert not misp.sharing_group_exists(group.uuid)


def test_bad_sharing_group_requests_are_refused_and_change_nothing(server: Server):
    misp = server.misp()
    new = MISPSharingGroup()
    new.from_dict(name="Checked")
    group = misp.add_sharing_group(new, pythonify=True)
    assert_misp_error(server.post("/sharingGroups/add", {"SharingGroup": {"releasability": "x"}}), 400, "name")
    assert_misp_error(server.post("/sharingGroups/add", {"name": "x", "SharingGroupOrg": [{"org_uuid": str(uuid.uuid4())}]}),
                      404, "SharingGroupOrg[0]")
    assert_misp_error(server.post("/sharingGroups/add", {"name": "by a user"}, role="user"), 403, "needs admin")
    unknown_org = {"sg_id": group.id, "org_id": str(uuid.uuid4())}
    assert_misp_error(server.post("/sharingGroups/addOrg", unknown_org), 404, "org_id")
    assert_misp_error(server.post("/sharingGroups/addOrg", {"org_id": 1}), 400, "sg_id")
    assert_misp_error(server.post("/sharingGroups/addOrg", {"sg_id": 424242, "org_id": 1}), 404, "Invalid sharing group")
    assert_misp_error(server.post("/sharingGroups/removeOrg", {"sg_id": group.id, "org_id": 1}), 403, "owner")
    assert_misp_error(server.get("/sharing_groups/view/424242"), 404, "Invalid sharing group")
    assert current_group(server, group.uuid).revision == 1


def test_a_group_another_organisation_owns_follows_its_revision_rules(server: Server):
    misp = server.misp()
    owner, identity = introduce(server, "Group Owner")
    own_uuid = misp.get_organisation(1, pythonify=True).uuid
    theirs = SharingGroup(uuid=str(uuid.uuid4()), name="Owner's group", owner=owner.uuid, revision=1,
                          members={owner.uuid: True, own_uuid: False})
    store = Store(server.home / "store")  # as a peer's delivery would store it
    try:
        own_key = Identity.generate().public_key  # not the author: the record is checked as a peer's
        assert sg.accept(store, seal(identity, KIND_SHARING_GROUP, sg.to_body(theirs)), own_uuid, own_key).value == "allowed"
    finally:
        store.close()
    view = misp.get_sharing_group(theirs.uuid, pythonify=True)
    assert view.name == "Owner's group" and view.organisation_uuid == owner.uuid
    partner, _ = introduce(server, "Would-be member")
    # this node's org is a member without extend: it may not add, edit or delete
    assert_misp_error(server.post("/sharingGroups/addOrg", {"sg_id": theirs.uuid, "org_id": partner.uuid}), 403,
                      "refused")
    assert_misp_error(server.post(f"/sharing_groups/edit/{theirs.uuid}", {"name": "mine now"}), 403, "refused")
    assert_misp_error(server.post(f"/sharingGroups/delete/{theirs.uuid}"), 403, "owner")
    assert current_group(server, theirs.uuid) == theirs


def test_events_and_attributes_name_a_sharing_group_by_its_misp_id(server: Server):
    misp = server.misp()
    new = MISPSharingGroup()
    new.from_dict(name="By id")
    group = misp.add_sharing_group(new, pythonify=True)
    event = new_event("for a group", distribution=4, sharing_group_id=group.id)
    added = misp.add_event(event)
    assert added["Event"]["sharing_group_uuid"] == group.uuid, added
    attribute = misp.add_attribute(added["Event"]["id"], {"type": "domain", "value": "sg.orgs.example",
                                                          "distribution": 4, "sharing_group_id": group.id})
    assert attribute["Attribute"]["sharing_group_uuid"] == group.uuid
    unknown = new_event("unknown group", distribution=4, sharing_group_id=424242)
    assert_misp_error(server.post("/events/add", unknown), 404, "sharing_group_id")
    assert not misp.event_exists(unknown.uuid)
