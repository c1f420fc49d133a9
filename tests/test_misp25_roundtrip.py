"""MISP 2.5 content end to end (issue 15, "Done means"): one event built with PyMISP carrying event
reports, notes, opinions and relationships (nested, on the event, attributes, an object, an object
attribute and reports), a galaxy cluster tag, an object and tags, with distinct distributions and
one sharing group, checked field for field (uuid, creator org, distribution, content, what it is
attached to) after `fedmisp import` -> `fedmisp export`, PyMISP add_event -> get_event against a
real node, and a three-node replication a - b - c where each node holds exactly what the levels
allow and every signature still verifies."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pymisp import MISPEvent, MISPObject, MISPSharingGroup

from fedmisp.model.records import KIND_ANALYST
from fedmisp.node.importer import import_paths

from federation import make_federation, settle
from test_api import Server

THIRD_ORG = {"uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f", "name": "CIRCL"}
GALAXY_TAG = 'misp-galaxy:threat-actor="APT29"'


def build(sg_uuid: str | None, sg_id: str = "1") -> tuple[MISPEvent, dict[str, str], dict[str, set[str]]]:
    """The event, its items by name, and which of a, b, c (a - b - c, the group {a, b}) may hold each."""
    ev = MISPEvent()
    ev.info = "MISP 2.5 round trip"
    ev.distribution = 3
    ev.published = True
    ev.threat_level_id, ev.analysis = 2, 1
    ev.add_tag("tlp:green")
    ev.add_tag(GALAXY_TAG)
    # a MISP export names the group by uuid; a PyMISP user by the instance's id (sg_uuid None)
    sg = {"distribution": 4, "sharing_group_id": sg_id, **({"sharing_group_uuid": sg_uuid} if sg_uuid else {})}
    i: dict[str, Any] = {}
    i["attr"] = ev.add_attribute("ip-dst", "198.51.100.7", to_ids=True, distribution=5,
                                 Tag=[{"name": "kill-chain:command-and-control"}])
    i["attr0"] = ev.add_attribute("domain", "home-only.example", distribution=0)
    i["attr1"] = ev.add_attribute("url", "https://one-hop.example/x", distribution=1)
    i["attr_sg"] = ev.add_attribute("hostname", "group.example", **sg)
    obj = MISPObject("file", standalone=False)
    obj.distribution = 5
    obj.add_attribute("filename", "dropper.exe", distribution=5, to_ids=False)
    i["md5"] = obj.add_attribute("md5", "0123456789abcdef0123456789abcdef", distribution=5, to_ids=True)
    i["obj"] = ev.add_object(obj)
    i["rep5"] = ev.add_event_report("Everyone's report", "# Findings\n\nThe C2 is @[attribute](x).", distribution=5)
    i["rep0"] = ev.add_event_report("Internal report", "# Ours only", distribution=0)
    i["rep1"] = ev.add_event_report("Community report", "# One hop", distribution=1)
    i["rep_sg"] = ev.add_event_report("Group report", "# For the group", **sg)
    # analyst data: a third party's note on the attribute, with an opinion on that note (nested)
    i["n_attr"] = i["attr"].add_note("seen in the wild", language="en", distribution=3,
                                     orgc_uuid=THIRD_ORG["uuid"], Orgc=THIRD_ORG, authors="analyst@circl.lu")
    i["o_n_attr"] = i["n_attr"].add_opinion(80, "agreed", distribution=3)
    i["n_attr0"] = i["attr0"].add_note("on a level-0 attribute", distribution=3)
    i["n_rep0"] = i["rep0"].add_note("on the level-0 report", distribution=3)
    i["n_rep5"] = i["rep5"].add_note("on the shared report", distribution=2)
    i["n_e1"] = ev.add_note("event note, one hop", distribution=1)
    i["o_n_e1"] = i["n_e1"].add_opinion(30, "on the one-hop note", distribution=3)
    i["n_e0"] = ev.add_note("event note, org only", distribution=0)
    i["o_n_e0"] = i["n_e0"].add_opinion(10, "on the withheld note", distribution=3)
    i["n_sg"] = ev.add_note("event note, group only", **sg)
    i["rel"] = i["obj"].add_relationship("Attribute", i["attr"].uuid, "drops", distribution=3)
    i["o_md5"] = i["md5"].add_opinion(100, "hash checked", distribution=3)
    uuids = {name: item.uuid for name, item in i.items()}
    everywhere, home, ab = {"a", "b", "c"}, {"a"}, {"a", "b"}
    reach = {"attr": everywhere, "attr0": home, "attr1": ab, "attr_sg": ab, "md5": everywhere,
             "obj": everywhere, "rep5": everywhere, "rep0": home, "rep1": ab, "rep_sg": ab,
             "n_attr": everywhere, "o_n_attr": everywhere, "n_attr0": home, "n_rep0": home,
             "n_rep5": everywhere, "n_e1": ab, "o_n_e1": ab, "n_e0": home, "o_n_e0": home, "n_sg": ab,
             "rel": everywhere, "o_md5": everywhere}
    # the object's filename attribute: with its object
    filename = next(a for a in obj.attributes if a.object_relation == "filename")
    uuids["filename"], reach["filename"] = filename.uuid, everywhere
    return ev, uuids, {uuids[n]: r for n, r in reach.items()}


ANALYST = ("Note", "Opinion", "Relationship")
CONTENT = {"Note": ("note", "language", "authors"), "Opinion": ("opinion", "comment", "authors"),
           "Relationship": ("relationship_type", "related_object_uuid", "related_object_type", "authors")}


def _sg(item: dict, default: str | None = None) -> str | None:
    if str(item.get("distribution")) != "4":
        return None
    return item.get("sharing_group_uuid") or (item.get("SharingGroup") or {}).get("uuid") or default


def facts(event: dict, default_org: str, loose: bool = False, sg: str | None = None) -> dict[str, tuple]:
    """uuid -> what must survive of each element and analyst-data item: its kind, what it is
    attached to, its creator org (analyst data), distribution, sharing group and content."""
    ev = event.get("Event", event)
    out: dict[str, tuple] = {}
    nested: dict[str, str] = {}  # analyst item -> the uuid of the map it is nested in

    def analyst(holder: dict, holder_uuid: str) -> None:
        for type_ in ANALYST:
            for item in holder.get(type_) or ():
                content = tuple(str(item.get(k) or "") for k in CONTENT[type_])
                orgc = item.get("orgc_uuid") or (item.get("Orgc") or {}).get("uuid") or default_org
                out[item["uuid"]] = (type_, item["object_uuid"], item["object_type"], orgc,
                                     str(item["distribution"]), _sg(item, sg), content)
                nested[item["uuid"]] = holder_uuid
                analyst(item, item["uuid"])

    def attribute(a: dict, parent: str) -> None:
        tags = tuple(sorted(t["name"] for t in a.get("Tag") or () if not t.get("local")))
        out[a["uuid"]] = ("Attribute", parent, a["type"], a["value"], a.get("object_relation"),
                          str(a["distribution"]), _sg(a, sg), bool(a.get("to_ids")), tags)
        analyst(a, a["uuid"])

    analyst(ev, ev["uuid"])
    for a in ev.get("Attribute") or ():
        attribute(a, ev["uuid"])
    for o in ev.get("Object") or ():
        out[o["uuid"]] = ("Object", ev["uuid"], o["name"], str(o["distribution"]), _sg(o, sg))
        analyst(o, o["uuid"])
        for a in o.get("Attribute") or ():
            attribute(a, o["uuid"])
    for r in ev.get("EventReport") or ():
        out[r["uuid"]] = ("EventReport", ev["uuid"], r["name"], r["content"], str(r["distribution"]), _sg(r, sg))
        analyst(r, r["uuid"])
    if not loose:  # where MISP nests them: in what they are on (PyMISP writes an opinion on a note
        # beside the note, in the note's holder)
        assert all(out[u][1] == holder for u, holder in nested.items()), nested
    return out


def header(event: dict) -> tuple:
    ev = event.get("Event", event)
    return (ev["uuid"], ev["info"], str(ev["distribution"]), ev["Orgc"]["uuid"],
            sorted(t["name"] for t in ev.get("Tag") or () if not t.get("local")))


def _expected(ev: MISPEvent, org: str, sg: str | None = None) -> tuple[dict, dict[str, tuple]]:
    """What went in: `sg` the group's uuid where the input names it by id only."""
    raw = json.loads(ev.to_json())
    raw.setdefault("Orgc", {"uuid": org, "name": "the importer"})
    return raw, facts(raw, org, loose=True, sg=sg)


def _fedmisp(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "fedmisp", *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_import_then_export_keeps_every_item_field_for_field(tmp_path: Path):
    home = tmp_path / "n"
    _fedmisp("init", "--home", str(home), "--org", "Importing CERT")
    org = json.loads(_fedmisp("info", "--home", str(home), "--json").stdout)["org_uuid"]
    ev, uuids, _ = build("0b0b0b0b-0000-4000-8000-000000000001")
    path = tmp_path / "event.json"
    path.write_text(ev.to_json())
    imported = _fedmisp("import", "--home", str(home), str(path))
    assert "1 event(s) stored" in imported.stdout and "dropped" not in imported.stdout.replace(
        "0 element(s) dropped", ""), imported.stdout
    [out] = json.loads(_fedmisp("export", "--home", str(home)).stdout)["response"]
    raw, want = _expected(ev, org)
    got = facts(out, org)
    assert set(got) == set(want) == set(uuids.values())
    for u in want:
        assert got[u] == want[u], (u, got[u], want[u])
    assert header(out) == header(raw)
    assert GALAXY_TAG in header(out)[4]


def test_pymisp_add_event_then_get_event_keeps_every_item_field_for_field(server: Server):
    misp = server.misp()
    group = misp.add_sharing_group(_group("round trip group"), pythonify=True)
    ev, uuids, _ = build(None, str(group.id))
    added = misp.add_event(ev)
    assert added["Event"]["uuid"] == ev.uuid and not added.get("errors"), added.get("errors")
    shown = misp.get_event(ev.uuid)
    own_org = shown["Event"]["Orgc"]["uuid"]
    raw, want = _expected(ev, own_org, group.uuid)
    got = facts(shown, own_org)
    assert set(got) == set(want), (set(want) - set(got), set(got) - set(want))
    for u in want:
        assert got[u] == want[u], (u, got[u], want[u])
    e = shown["Event"]
    assert header(shown)[:3] == header(raw)[:3] and GALAXY_TAG in header(shown)[4]
    # events/view derives the cluster's Galaxy block from its tag (decision 0027)
    assert [c["value"] for g in e.get("Galaxy", []) for c in g["GalaxyCluster"]] == ["APT29"]
    # and PyMISP reads each kind back as its own class
    back = misp.get_event(ev.uuid, pythonify=True)
    assert {r.uuid for r in back.event_reports} == {uuids["rep5"], uuids["rep0"], uuids["rep1"], uuids["rep_sg"]}
    [opinion] = [o for a in back.attributes if a.uuid == uuids["attr"] for o in a.opinions]
    viewed = misp.get_analyst_data(opinion, pythonify=True)
    assert (viewed.uuid, viewed.comment, int(viewed.opinion)) == (uuids["o_n_attr"], "agreed", 80)
    assert viewed.object_uuid == uuids["n_attr"]


def _group(name: str) -> MISPSharingGroup:
    g = MISPSharingGroup()
    g.name, g.releasability = name, "round trip"
    return g


def test_three_nodes_hold_exactly_what_the_levels_allow_and_every_signature_verifies(tmp_path: Path):
    from fedmisp.gossip.sharing_groups import create
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    orgs = {n: node.config.org_uuid for n, node in nodes.items()}
    settle(nodes)  # org records everywhere
    group = create(nodes["a"].store, nodes["a"].identity, orgs["a"], "a and b", {orgs["b"]: True})
    ev, uuids, reach = build(group.uuid)
    path = tmp_path / "event.json"
    path.write_text(ev.to_json())
    report = import_paths(nodes["a"], [path], workers=0)
    assert report.events_stored == 1 and report.elements_dropped == 0, report
    settle(nodes)
    raw, want = _expected(ev, orgs["a"])
    for name, node in nodes.items():
        out = node.store.export_event(ev.uuid)
        assert out is not None, name
        got = facts(out, orgs["a"])
        allowed = {u for u, where in reach.items() if name in where}
        assert set(got) == allowed, (name, {k for k, v in uuids.items() if v in set(got) ^ allowed})
        for u in allowed:
            assert got[u] == want[u], (name, u, got[u], want[u])
        assert header(out) == header(raw), name
        # not merely hidden: a withheld item's record was never sent
        held = {r.body["item"]["uuid"] for r in node.store.event_records(ev.uuid) if r.kind == KIND_ANALYST}
        assert held == {u for u in allowed if want[u][0] in ANALYST}, name
        assert node.store.check_integrity() == [], name
    for node in nodes.values():
        node.close()


def test_events_add_keeps_reports_and_analyst_data_that_name_their_group_by_id(server: Server):
    """PyMISP names a sharing group by the instance's sharing_group_id only: a report and a note
    at distribution 4 posted inline with events/add were dropped as "needs the group"."""
    misp = server.misp()
    group = misp.add_sharing_group(_group("inline group"), pythonify=True)
    ev = MISPEvent()
    ev.info, ev.distribution = "inline level-4 items", 1
    ev.add_attribute("ip-dst", "198.51.100.99")
    report = ev.add_event_report("Group report", "# g", distribution=4, sharing_group_id=group.id)
    note = ev.add_note("group note", distribution=4, sharing_group_id=group.id)
    added = misp.add_event(ev)
    assert not added.get("errors"), added["errors"]
    e = misp.get_event(ev.uuid)["Event"]
    assert [(r["uuid"], r["distribution"], r["sharing_group_uuid"]) for r in e["EventReport"]] == [
        (report.uuid, "4", group.uuid)]
    assert [(n["uuid"], n["distribution"], n["sharing_group_uuid"]) for n in e["Note"]] == [
        (note.uuid, "4", group.uuid)]


def test_pymisp_reads_back_an_event_with_items_in_a_sharing_group(server: Server):
    """events/view gives each level-4 item the group's sharing_group_id (sharingGroups/index's):
    PyMISP raises on a level-4 attribute, report or note without one."""
    misp = server.misp()
    group = misp.add_sharing_group(_group("view group"), pythonify=True)
    ev = MISPEvent()
    ev.info, ev.distribution = "level-4 view", 4
    ev.sharing_group_id = group.id
    attr = ev.add_attribute("domain", "group-view.example", distribution=4, sharing_group_id=group.id)
    assert not misp.add_event(ev).get("errors")
    back = misp.get_event(ev.uuid, pythonify=True)
    assert int(back.sharing_group_id) == int(group.id)
    [a] = [a for a in back.attributes if a.uuid == attr.uuid]
    assert (int(a.distribution), int(a.sharing_group_id)) == (4, int(group.id))


def test_pymisp_reads_a_level_4_report_note_and_attribute_from_their_own_views(server: Server):
    """eventReports/view, analyst_data/view and attributes/restSearch give a level-4 item its
    sharing_group_id too: PyMISP's get_event_report, get_analyst_data and search(pythonify) raise
    on one without it."""
    misp = server.misp()
    group = misp.add_sharing_group(_group("item views group"), pythonify=True)
    ev = MISPEvent()
    ev.info, ev.distribution = "level-4 item views", 1
    attr = ev.add_attribute("domain", "item-views.example", distribution=4, sharing_group_id=group.id)
    report = ev.add_event_report("Group report", "# g", distribution=4, sharing_group_id=group.id)
    note = ev.add_note("group note", distribution=4, sharing_group_id=group.id)
    assert not misp.add_event(ev).get("errors")
    shown = misp.get_event_report(report.uuid, pythonify=True)
    assert (shown.uuid, int(shown.sharing_group_id)) == (report.uuid, int(group.id))
    viewed = misp.get_analyst_data(note, pythonify=True)
    assert (viewed.uuid, int(viewed.sharing_group_id)) == (note.uuid, int(group.id))
    [found] = misp.search(controller="attributes", value="item-views.example", pythonify=True)
    assert (found.uuid, int(found.sharing_group_id)) == (attr.uuid, int(group.id))
