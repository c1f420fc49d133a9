"""Analyst data through the API, driven by the real PyMISP client against a real node process:
add_note, add_opinion, add_relationship, get_analyst_data, update_analyst_data,
delete_analyst_data and analyst_data/index, as PyMISP calls them (decision 0029)."""
from __future__ import annotations

import uuid as uuidlib

import pytest
from pymisp import MISPNote, MISPOpinion, MISPRelationship

from factories import ORG, event as factory_event
from fedmisp.model.analyst import item_id
from fedmisp.model.identity import Identity
from fedmisp.model.misp import ImportDefaults, parse_event
from fedmisp.model.records import KIND_ANALYST, seal
from fedmisp.model.revision import sign_event
from fedmisp.node.home import ROLES, init_home
from test_api import Server, assert_misp_error, new_event, running

OTHER_ORG = "5a1b2c3d-0000-4000-8000-0000000000ee"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A node holding another organisation's event with a note by that organisation on it."""
    home = tmp_path_factory.mktemp("api-analyst") / "node"
    node, admin = init_home(home, "Test CSIRT", "127.0.0.1:0")
    keys = {role: node.create_api_key(role, f"test {role}") for role in ROLES}
    keys["admin"] = admin
    other = Identity.generate()
    foreign = factory_event(seed=98, attributes=2, objects=0)["Event"]
    parsed = parse_event(foreign, ImportDefaults(org_uuid=ORG["uuid"], org_name=ORG["name"]))
    node.store.write_events([sign_event(other, parsed)])
    note = {"event_uuid": foreign["uuid"], "type": "Note", "item": {
        "uuid": "77777777-7777-4777-8777-777777777777", "object_uuid": foreign["uuid"], "object_type": "Event",
        "orgc_uuid": OTHER_ORG, "Orgc": {"uuid": OTHER_ORG, "name": "Other Org"}, "authors": "x@other",
        "created": 1_700_000_000, "modified": 1_700_000_000, "distribution": 3, "note": "theirs"}}
    node.store.write_records([seal(other, KIND_ANALYST, note)])
    node.close()
    yield from running(home, keys, foreign["uuid"])


def _note(target_uuid: str, target_type: str, text: str, distribution: int = 1) -> MISPNote:
    n = MISPNote()
    n.from_dict(note=text, language="en", object_uuid=target_uuid, object_type=target_type,
                distribution=distribution)
    return n


def test_notes_and_opinions_added_by_pymisp_are_shown_nested_in_the_event(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("analyst"), pythonify=True)
    attribute = event.attributes[0]
    note = misp.add_note(_note(attribute.uuid, "Attribute", "seen in our sensors"), pythonify=True)
    assert isinstance(note, MISPNote) and note.note == "seen in our sensors" and note.object_uuid == attribute.uuid
    assert int(note.id) == item_id(note.uuid) and note.language == "en"
    opinion = MISPOpinion()
    opinion.from_dict(opinion=75, comment="agreed", object_uuid=note.uuid, object_type="Note")
    opinion = misp.add_opinion(opinion, pythonify=True)
    assert (opinion.opinion, opinion.comment, opinion.object_type) == (75, "agreed", "Note")
    on_event = misp.add_note(_note(event.uuid, "Event", "about the whole event"), pythonify=True)
    rel = MISPRelationship()
    rel.from_dict(relationship_type="related-to", related_object_uuid=event.attributes[1].uuid,
                  related_object_type="Attribute", object_uuid=attribute.uuid, object_type="Attribute")
    rel = misp.add_relationship(rel, pythonify=True)
    assert rel.relationship_type == "related-to" and rel.related_object_uuid == event.attributes[1].uuid

    shown = misp.get_event(event.id)["Event"]
    assert [n["uuid"] for n in shown["Note"]] == [on_event.uuid]
    a = next(x for x in shown["Attribute"] if x["uuid"] == attribute.uuid)
    assert [n["uuid"] for n in a["Note"]] == [note.uuid]
    assert [o["uuid"] for o in a["Note"][0]["Opinion"]] == [opinion.uuid]
    assert [r["uuid"] for r in a["Relationship"]] == [rel.uuid]
    assert a["Note"][0]["Orgc"]["name"] == "Test CSIRT"

    # view by id and by uuid, with the items on it nested, as MISP's view does
    viewed = misp.get_analyst_data(note, pythonify=True)
    assert viewed.uuid == note.uuid and viewed.note == "seen in our sensors"
    by_id = server.get(f"/analyst_data/view/Note/{note.id}").json()["Note"]
    assert by_id["uuid"] == note.uuid and [o["uuid"] for o in by_id["Opinion"]] == [opinion.uuid]
    assert server.get(f"/analyst_data/view/all/{note.uuid}").json()["Note"]["uuid"] == note.uuid

    listed = server.get("/analyst_data/index/Note").json()
    assert {note.uuid, on_event.uuid} <= {row["Note"]["uuid"] for row in listed}
    only = server.post("/analyst_data/index/Note", {"target_object": attribute.uuid}).json()
    assert [row["Note"]["uuid"] for row in only] == [note.uuid]


def test_edit_and_delete_by_the_creator(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("analyst edit"), pythonify=True)
    note = misp.add_note(_note(event.uuid, "Event", "first take"), pythonify=True)
    note.note = "second take"
    edited = misp.update_analyst_data(note, pythonify=True)
    assert edited.note == "second take" and edited.modified >= note.modified
    assert misp.get_event(event.id)["Event"]["Note"][0]["note"] == "second take"
    answer = misp.delete_analyst_data(note)
    assert answer["success"] is True
    assert "Note" not in misp.get_event(event.id)["Event"]
    assert_misp_error(server.get(f"/analyst_data/view/Note/{note.uuid}"), 404)


def test_our_note_on_another_orgs_event_and_their_note_is_not_ours_to_edit(server: Server):
    misp = server.misp()
    ours = misp.add_note(_note(server.foreign_event, "Event", "we saw it too"), pythonify=True)
    assert ours.object_uuid == server.foreign_event
    shown = misp.get_event(server.foreign_event)["Event"]
    assert {n["note"] for n in shown["Note"]} == {"theirs", "we saw it too"}
    theirs = "77777777-7777-4777-8777-777777777777"
    refused = server.post(f"/analyst_data/edit/Note/{theirs}", {"Note": {"note": "hijacked"}})
    assert_misp_error(refused, 403, "You are not authorised to do that.")
    assert_misp_error(server.post(f"/analyst_data/delete/Note/{theirs}"), 403, "not authorised")
    assert server.get(f"/analyst_data/view/Note/{theirs}").json()["Note"]["note"] == "theirs"


def test_bad_input_is_a_400_naming_the_field(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("analyst bad"), pythonify=True)
    bad = server.post(f"/analyst_data/add/Opinion/{event.uuid}/Event", {"Opinion": {"opinion": 101, "comment": "x"}})
    assert_misp_error(bad, 400, "opinion")
    assert_misp_error(server.post(f"/analyst_data/add/Banana/{event.uuid}/Event", {"note": "x"}), 400, "type")
    assert_misp_error(server.post(f"/analyst_data/add/Note/{event.uuid}/Galaxy", {"note": "x"}), 400, "object_type")
    assert_misp_error(server.post(f"/analyst_data/add/Note/{uuidlib.uuid4()}/Attribute", {"note": "x"}), 404)
    assert_misp_error(server.post("/analyst_data/index/Note", {"colour": "red"}), 400, "colour")
    assert_misp_error(server.post(f"/analyst_data/add/Note/{event.uuid}/Event", {"Note": {"language": "en"}}),
                      400, "note")
