"""Analyst data (MISP 2.5 notes, opinions, relationships) travels as records of its own, signed by
its creator's node, under policy (decision 0029; issue 15 part 1): import -> export keeps every
item nested where MISP puts it; replication sends an item only where its event, its own level and
its target go; a received item must be signed for the org it names as creator."""
from __future__ import annotations

import copy
import json
import uuid as uuidlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pymisp import MISPEvent

from fedmisp.model.analyst import analyst_problem, current_items, nest_analyst_data, parse_item, tombstone
from fedmisp.model.identity import Identity
from fedmisp.model.misp import EventError, ImportDefaults, _Problems, parse_event, to_misp
from fedmisp.model.records import KIND_ANALYST, seal
from fedmisp.node.importer import import_paths
from fedmisp.policy.model import NodeState, PeerMode, PeerPolicy, SyncFilter
from fedmisp.policy.inbound import analyst_inbound
from fedmisp.policy.outbound import analyst_outbound
from fedmisp.policy.pipeline import Outcome
from fedmisp.policy.reasons import Reason

from factories import event
from federation import make_federation, settle

DEFAULTS = ImportDefaults(org_uuid="5a1b2c3d-0000-4000-8000-00000000abcd", org_name="Org A", now=1_700_000_000)


def _pymisp_event() -> tuple[dict, dict[str, str]]:
    """An event built with PyMISP carrying a note and an opinion on an attribute, a note on the
    event, a note on a report and an opinion on a note (nesting)."""
    ev = MISPEvent()
    ev.info = "analyst data round trip"
    ev.distribution = 3
    attr = ev.add_attribute("ip-dst", "198.51.100.7")
    note_a = attr.add_note("seen in the wild", language="en")
    op_a = attr.add_opinion(80, "agreed")
    note_e = ev.add_note("event-level note")
    report = ev.add_event_report("Report", "# Findings")
    note_r = report.add_note("on the report")
    op_n = note_a.add_opinion(20, "not so sure")
    ids = {"note_a": note_a.uuid, "op_a": op_a.uuid, "note_e": note_e.uuid, "note_r": note_r.uuid,
           "op_n": op_n.uuid, "attr": attr.uuid, "report": report.uuid, "event": ev.uuid}
    return json.loads(ev.to_json()), ids


def test_a_pymisp_event_with_nested_analyst_data_survives_import_and_export():
    raw, ids = _pymisp_event()
    parsed = parse_event(raw, DEFAULTS)
    by_uuid = {b["item"]["uuid"]: b for b in parsed.analyst}
    assert set(by_uuid) == {ids["note_a"], ids["op_a"], ids["note_e"], ids["note_r"], ids["op_n"]}
    assert all(analyst_problem(b) is None for b in parsed.analyst)
    assert by_uuid[ids["op_n"]]["item"]["object_uuid"] == ids["note_a"]
    assert by_uuid[ids["op_n"]]["item"]["object_type"] == "Note"
    out = to_misp(parsed.header, [e.body for e in parsed.elements])
    nest_analyst_data(out, parsed.analyst)
    ev = out["Event"]
    [note_e] = ev["Note"]
    assert (note_e["uuid"], note_e["note"], note_e["object_type"]) == (ids["note_e"], "event-level note", "Event")
    [attr] = ev["Attribute"]
    [note_a] = attr["Note"]
    [op_a] = attr["Opinion"]
    assert (note_a["note"], note_a["language"], op_a["opinion"], op_a["comment"]) == (
        "seen in the wild", "en", "80", "agreed")
    [op_n] = note_a["Opinion"]
    assert (op_n["uuid"], op_n["opinion"], op_n["comment"]) == (ids["op_n"], "20", "not so sure")
    [report] = ev["EventReport"]
    assert [n["note"] for n in report["Note"]] == ["on the report"]
    assert note_a["Orgc"] == {"uuid": DEFAULTS.org_uuid, "name": "Org A"}
    # PyMISP reads what comes out as it wrote it
    back = MISPEvent()
    back.from_dict(**out)
    assert back.attributes[0].notes[0].note == "seen in the wild"
    # (PyMISP files an opinion read nested in a note under the note's parent)
    assert sorted(o.opinion for o in back.attributes[0].opinions) == [20, 80]


@pytest.mark.parametrize("change, field", [
    ({"opinion": 101}, "opinion"), ({"opinion": None}, "opinion"), ({"distribution": 5}, "distribution"),
    ({"distribution": 4}, "sharing_group_uuid"), ({"uuid": "nope"}, "uuid"),
    ({"object_type": "Banana"}, "object_type"), ({"created": "yesterday"}, "created"),
])
def test_an_item_out_of_its_domain_refuses_the_event_naming_the_field(change, field):
    raw = copy.deepcopy(event(seed=3, attributes=1, objects=0))["Event"]
    opinion = {"uuid": str(uuidlib.uuid4()), "opinion": 50, "comment": "c", "object_type": "Attribute",
               "object_uuid": raw["Attribute"][0]["uuid"], **change}
    raw["Attribute"][0]["Opinion"] = [opinion]
    with pytest.raises(EventError) as e:
        parse_event(raw, DEFAULTS)
    assert any(p.field == field and "Opinion[0]" in p.where for p in e.value.problems), e.value.problems


def _body(**item) -> dict:
    base = {"uuid": str(uuidlib.uuid4()), "object_uuid": str(uuidlib.uuid4()), "object_type": "Attribute",
            "orgc_uuid": DEFAULTS.org_uuid, "created": 1, "modified": 1, "distribution": 3, "note": "n"}
    base.update(item)
    return {"event_uuid": str(uuidlib.uuid4()), "type": "Note", "item": {k: v for k, v in base.items() if v is not None}}


@pytest.mark.parametrize("item, field", [
    ({"note": 5}, "note"), ({"distribution": 9}, "distribution"), ({"distribution": "3"}, "distribution"),
    ({"uuid": "x"}, "uuid"), ({"orgc_uuid": None}, "orgc_uuid"), ({"object_type": "Nope"}, "object_type"),
    ({"modified": -1}, "modified"), ({"distribution": 4}, "sharing_group_uuid"), ({"opinion": 5}, "opinion"),
    ({"Orgc": {"uuid": "5a1b2c3d-0000-4000-8000-000000000000", "name": "x"}}, "Orgc"),
    ({"deleted": False}, "deleted"),
])
def test_a_received_item_out_of_its_shape_is_named(item, field):
    problem = analyst_problem(_body(**item))
    assert problem is not None and f"analyst-data.item.{field}" in problem, problem


def test_newest_record_of_an_item_wins_and_a_tombstone_hides_it():
    me = Identity.generate()
    first = seal(me, KIND_ANALYST, _body(modified=10, note="old"))
    edit = seal(me, KIND_ANALYST, {**first.body, "item": {**first.body["item"], "modified": 20, "note": "new"}})
    [(body, record)] = current_items([edit, first]).values()
    assert body["item"]["note"] == "new" and record.id == edit.id
    gone = seal(me, KIND_ANALYST, tombstone(edit.body, 15))
    assert analyst_problem(gone.body) is None
    [(body, _)] = current_items([first, gone, edit]).values()
    assert body["item"]["deleted"] is True and "note" not in body["item"]


# --- replication ---------------------------------------------------------------------------------

def _import(node, tmp_path, raw: dict, name: str = "ev.json") -> None:
    path = tmp_path / name
    path.write_text(json.dumps(raw))
    report = import_paths(node, [path], workers=0)
    assert report.events_stored == 1, report


def _analyst_uuids(node, event_uuid: str) -> set[str]:
    exported = node.store.export_event(event_uuid)
    if exported is None:
        return set()
    found: set[str] = set()

    def walk(m: dict) -> None:
        for key in ("Note", "Opinion", "Relationship"):
            for item in m.get(key, ()):
                found.add(item["uuid"])
                walk(item)
    ev = exported["Event"]
    walk(ev)
    for a in ev.get("Attribute", ()):
        walk(a)
    for o in ev.get("Object", ()):
        walk(o)
        for a in o.get("Attribute", ()):
            walk(a)
    for r in ev.get("EventReport", ()):
        walk(r)
    return found


def _note(target: str, target_type: str, distribution: int, text: str = "a note", **more) -> dict:
    return {"uuid": str(uuidlib.uuid4()), "note": text, "object_uuid": target, "object_type": target_type,
            "distribution": str(distribution), **more}


def test_items_travel_as_far_as_their_level_event_and_target_allow(tmp_path):
    """a - b - c, an event at level 3: a note at level 1 reaches b and not c; a note at level 3
    reaches both; an opinion (level 3) on the level-1 note stops where the note stops; a note
    on a level-0 attribute stays at a."""
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    raw = copy.deepcopy(event(seed=11, attributes=2, objects=0))
    ev = raw["Event"]
    ev["Attribute"][1]["distribution"] = "0"
    one = _note(ev["uuid"], "Event", 1, "one hop")
    three = _note(ev["uuid"], "Event", 3, "everywhere")
    opinion = {"uuid": str(uuidlib.uuid4()), "opinion": "30", "comment": "on the level-1 note",
               "distribution": "3"}
    one["Opinion"] = [opinion]
    hidden = _note(ev["Attribute"][1]["uuid"], "Attribute", 3, "on a withheld attribute")
    ev["Note"] = [one, three]
    ev["Attribute"][1]["Note"] = [hidden]
    _import(nodes["a"], tmp_path, raw)
    settle(nodes)
    u = ev["uuid"]
    assert _analyst_uuids(nodes["a"], u) == {one["uuid"], three["uuid"], opinion["uuid"], hidden["uuid"]}
    assert _analyst_uuids(nodes["b"], u) == {one["uuid"], three["uuid"], opinion["uuid"]}
    assert _analyst_uuids(nodes["c"], u) == {three["uuid"]}
    # c was never sent the opinion whose note it may not have (not merely left unshown)
    held_c = {r.body["item"]["uuid"] for r in nodes["c"].store.event_records(u) if r.kind == KIND_ANALYST}
    assert held_c == {three["uuid"]}
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


def test_what_the_receivers_pull_filter_withholds_takes_the_items_on_it_with_it(tmp_path):
    """a - b, b's pull filter for a withholds md5 attributes: a note on the md5 attribute and an
    opinion on that note are refused at b (`parent-withheld`), though a sends them (its push side
    lets them go); the note on the other attribute is taken. Found by test_replication_property:
    a node held an opinion on a note its pull filter had refused."""
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")], {("b", "a"): {"pull": {"types_exclude": ["md5"]}}})
    raw = copy.deepcopy(event(seed=12, attributes=2, objects=0))
    ev = raw["Event"]
    ev["Attribute"][0].update(type="md5", category="Payload delivery", value="d41d8cd98f00b204e9800998ecf8427e")
    on_md5 = _note(ev["Attribute"][0]["uuid"], "Attribute", 3, "on the md5")
    opinion = {"uuid": str(uuidlib.uuid4()), "opinion": "80", "comment": "on a note b may not hold",
               "distribution": "3"}
    on_md5["Opinion"] = [opinion]
    on_ip = _note(ev["Attribute"][1]["uuid"], "Attribute", 3, "on the other one")
    ev["Attribute"][0]["Note"] = [on_md5]
    ev["Attribute"][1]["Note"] = [on_ip]
    _import(nodes["a"], tmp_path, raw)
    settle(nodes)
    u = ev["uuid"]
    assert _analyst_uuids(nodes["a"], u) == {on_md5["uuid"], opinion["uuid"], on_ip["uuid"]}
    held_b = {r.body["item"]["uuid"] for r in nodes["b"].store.event_records(u) if r.kind == KIND_ANALYST}
    assert held_b == {on_ip["uuid"]}
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


def test_an_item_on_a_target_not_held_is_refused_as_parent_withheld():
    node, peer = NodeState("org-b"), PeerPolicy("a", "org-a", PeerMode.FULL, SyncFilter(), SyncFilter())
    facts = dict(event_held=True, signer_org="org-a", orgc_uuid="org-a", by_event_author=False, held_by=None,
                 offered=3, distribution=3, sharing_group=None, peer=peer, node=node)
    assert analyst_inbound(**facts, target_held=True) == (Reason.ALLOWED, 3)
    assert analyst_inbound(**facts, target_held=False) == (Reason.PARENT_WITHHELD, -1)


def test_an_item_is_refused_from_a_peer_whose_pull_filter_withholds_its_event_or_target_even_if_held_by_another_path():
    """Per path, as an element's members go with their object: the item passes from this peer only
    if this node's pull filter for the peer takes its event and what it hangs from (found by the
    replication property test: a note came at 3 over a link that withheld its attribute)."""
    from fedmisp.policy.model import ElementView, EventView
    pull = SyncFilter(types_exclude=frozenset({"domain"}), tags_exclude=frozenset({"tlp:red"}))
    node, peer = NodeState("org-b"), PeerPolicy("a", "org-a", PeerMode.FULL, SyncFilter(), pull)
    facts = dict(event_held=True, signer_org="org-a", orgc_uuid="org-a", by_event_author=False, held_by=None,
                 offered=3, distribution=3, sharing_group=None, peer=peer, node=node, target_held=True)
    ip, domain = ElementView("a1", "attribute", 5, type="ip-dst"), ElementView("a2", "attribute", 5, type="domain")
    in_object = ElementView("a3", "attribute", 5, object_uuid="o1", type="ip-dst")
    red_object = ElementView("o1", "object", 5, template="domain-ip", tags=frozenset({"tlp:red"}))
    green = EventView("e", "org-a", "Org A", 3, None, True, 1, frozenset({"tlp:green"}))
    red = EventView("e", "org-a", "Org A", 3, None, True, 1, frozenset({"tlp:red"}))
    assert analyst_inbound(**facts, target_views=(ip,), event=green) == (Reason.ALLOWED, 3)
    assert analyst_inbound(**facts, target_views=(domain,), event=green) == (Reason.PARENT_WITHHELD, -1)
    assert analyst_inbound(**facts, target_views=(in_object, red_object), event=green) == (Reason.PARENT_WITHHELD, -1)
    assert analyst_inbound(**facts, target_views=(), event=red) == (Reason.PARENT_WITHHELD, -1)


def test_an_item_from_a_push_only_peer_is_refused_as_its_events_are():
    node, peer = NodeState("org-b"), PeerPolicy("a", "org-a", PeerMode.PUSH_ONLY, SyncFilter(), SyncFilter())
    assert analyst_inbound(event_held=True, signer_org="org-a", orgc_uuid="org-a", by_event_author=False,
                           held_by=None, offered=3, distribution=3, sharing_group=None, peer=peer,
                           node=node) == (Reason.PEER_MODE, -1)


def _add_local_note(node, event_uuid: str, target: str, target_type: str, distribution: int, text: str) -> dict:
    """A note made at `node` by its own organisation (as analyst_data/add makes one)."""
    p = _Problems()
    defaults = node.import_defaults()
    item = parse_item({"note": text, "distribution": distribution}, "Note", "Note", p, defaults,
                      object_uuid=target, object_type=target_type)
    assert not p.items, p.items
    body = {"event_uuid": event_uuid, "type": "Note", "item": item}
    node.store.write_new_records([seal(node.identity, KIND_ANALYST, body)])
    return body


def test_another_orgs_note_on_our_event_reaches_us_and_a_forged_one_is_refused(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    settle(nodes)  # org records
    raw = copy.deepcopy(event(seed=12, attributes=1, objects=0))
    _import(nodes["a"], tmp_path, raw)
    settle(nodes)
    u = raw["Event"]["uuid"]
    theirs = _add_local_note(nodes["b"], u, raw["Event"]["Attribute"][0]["uuid"], "Attribute", 3, "b thinks so")
    # a forgery: signed by b's key, claiming to be a's organisation
    forged_item = {**theirs["item"], "uuid": str(uuidlib.uuid4()), "orgc_uuid": nodes["a"].config.org_uuid,
                   "note": "a never said this"}
    forged_item.pop("Orgc", None)
    nodes["b"].store.write_new_records([seal(nodes["b"].identity, KIND_ANALYST, {**theirs, "item": forged_item})])
    settle(nodes)
    shown = nodes["a"].store.export_event(u)["Event"]
    [note] = shown["Attribute"][0]["Note"]
    assert (note["uuid"], note["note"], note["orgc_uuid"]) == (
        theirs["item"]["uuid"], "b thinks so", nodes["b"].config.org_uuid)
    assert forged_item["uuid"] not in _analyst_uuids(nodes["a"], u)
    for node in nodes.values():
        node.close()


def test_an_edit_replaces_the_item_and_a_delete_removes_it_downstream(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    raw = copy.deepcopy(event(seed=13, attributes=1, objects=0))
    _import(nodes["a"], tmp_path, raw)
    u = raw["Event"]["uuid"]
    body = _add_local_note(nodes["a"], u, u, "Event", 3, "first")
    settle(nodes)
    edited = {**body, "item": {**body["item"], "note": "second", "modified": body["item"]["modified"] + 5}}
    nodes["a"].store.write_new_records([seal(nodes["a"].identity, KIND_ANALYST, edited)])
    settle(nodes)
    assert [n["note"] for n in nodes["b"].store.export_event(u)["Event"]["Note"]] == ["second"]
    nodes["a"].store.write_new_records([seal(nodes["a"].identity, KIND_ANALYST,
                                             tombstone(edited, edited["item"]["modified"] + 5))])
    settle(nodes)
    assert "Note" not in nodes["b"].store.export_event(u)["Event"]
    for node in nodes.values():
        node.close()


# --- the outbound rule, as a property -------------------------------------------------------------

PEER = PeerPolicy(name="p", org_uuid="5a1b2c3d-0000-4000-8000-0000000000b0", mode=PeerMode.FULL,
                  push=SyncFilter(), pull=SyncFilter())
STATE = NodeState(org_uuid=DEFAULTS.org_uuid)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(event_sent=st.booleans(), element_sent=st.booleans(),
       chain=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=5))
def test_an_item_is_sent_iff_its_event_its_level_and_every_ancestor_are(event_sent, element_sent, chain):
    """A chain of items: the first on an element (sent or not), each next on the one before it,
    each at a level and held from a peer or made here. Deciding them in order with the
    sender's rule, an item goes iff the event goes, its own held level allows a hop, and every
    item above it (and the element) goes."""
    outcome = Outcome(Reason.ALLOWED, {"ev": 3, **({"el": 3} if element_sent else {})}) if event_sent \
        else Outcome(Reason.LOCAL_UNPUBLISHED)
    target_sent = "el" in outcome.levels
    all_above = element_sent
    for level, _ in chain:
        reason, offered = analyst_outbound(outcome, level, None, target_sent, PEER, STATE)
        expected = event_sent and level > 0 and all_above
        assert (reason is Reason.ALLOWED) == expected, (reason, level, all_above)
        if expected:
            assert offered == (level - 1 if level in (1, 2) else level)
        target_sent = reason is Reason.ALLOWED
        all_above = all_above and level > 0
