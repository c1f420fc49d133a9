"""Event reports (MISP's EventReport) are elements of their own: signed, with their own
distribution and sharing group, withheld from a peer like an attribute (issue 15, part 2)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fedmisp.model.misp import EventError, ImportDefaults, KIND_REPORT, element_kind, parse_event, to_misp
from fedmisp.model.received import received_problem
from fedmisp.node.importer import import_paths
from fedmisp.policy.model import KIND_REPORT as POLICY_KIND_REPORT, element_view

from factories import event
from federation import make_federation, settle

DEFAULTS = ImportDefaults(org_uuid="5a1b2c3d-0000-4000-8000-00000000abcd", org_name="Org A", now=1_700_000_000)


def _report(uuid: str, distribution: str = "5", **fields) -> dict:
    return {"uuid": uuid, "name": f"Report {uuid[:4]}", "content": "# Findings\n\nSee @[attribute](x).",
            "distribution": distribution, "timestamp": "1700000000", "deleted": False, **fields}


def _event_with_reports(seed: int, level: int, reports: list[dict]) -> dict:
    raw = copy.deepcopy(event(seed=seed, attributes=2, objects=0))
    raw["Event"]["distribution"] = str(level)
    raw["Event"]["EventReport"] = reports
    return raw


R1 = "11111111-1111-4111-8111-111111111111"
R2 = "22222222-2222-4222-8222-222222222222"
R3 = "33333333-3333-4333-8333-333333333333"


def test_a_report_is_parsed_as_its_own_element_and_comes_back_as_misp_wrote_it():
    raw = _event_with_reports(1, 3, [_report(R1, "0", unknown_field="kept")])
    parsed = parse_event(raw["Event"], DEFAULTS)
    reports = [e for e in parsed.elements if e.kind == KIND_REPORT]
    assert [r.uuid for r in reports] == [R1]
    assert "EventReport" not in parsed.header and "EventReport" not in (parsed.header.get("extra") or {})
    body = reports[0].body
    assert element_kind(body) == KIND_REPORT
    assert (body["name"], body["distribution"], body["deleted"]) == (f"Report {R1[:4]}", 0, False)
    view = element_view(body)
    assert (view.kind, view.distribution, view.object_uuid) == (POLICY_KIND_REPORT, 0, None)
    assert received_problem(body) is None
    out = to_misp(parsed.header, [e.body for e in parsed.elements])["Event"]
    [report] = out["EventReport"]
    assert report["uuid"] == R1 and report["content"] == raw["Event"]["EventReport"][0]["content"]
    assert (report["distribution"], report["timestamp"], report["unknown_field"]) == ("0", "1700000000", "kept")
    assert len(out["Attribute"]) == 2  # the attributes are untouched


@pytest.mark.parametrize("change, field", [
    ({"name": ""}, "name"), ({"name": None}, "name"), ({"content": None}, "content"),
    ({"content": 5j}, "content"), ({"distribution": "6"}, "distribution"),
    ({"distribution": "4"}, "sharing_group_uuid"), ({"uuid": "not-a-uuid"}, "uuid"),
    ({"timestamp": "-1"}, "timestamp"), ({"deleted": "maybe"}, "deleted"),
])
def test_a_report_out_of_its_domain_refuses_the_event_naming_the_field(change, field):
    report = {**_report(R1), **change}
    if change.get("content", "") is None:
        del report["content"]
    raw = _event_with_reports(2, 3, [report])
    with pytest.raises(EventError) as e:
        parse_event(raw["Event"], DEFAULTS)
    assert any(p.field == field and "EventReport[0]" in p.where for p in e.value.problems), e.value.problems


def test_a_report_over_its_size_limit_is_refused():
    from fedmisp.model.misp import MAX_REPORT_BYTES
    raw = _event_with_reports(3, 3, [_report(R1, content="x" * (MAX_REPORT_BYTES + 1))])
    with pytest.raises(EventError, match="content"):
        parse_event(raw["Event"], DEFAULTS)


@pytest.mark.parametrize("body, field", [
    ({"uuid": R1, "name": "r", "content": 7, "distribution": 1, "timestamp": 1}, "content"),
    ({"uuid": R1, "name": "r", "content": "x", "distribution": 6, "timestamp": 1}, "distribution"),
    ({"uuid": R1, "name": "r", "content": "x", "timestamp": 1}, "distribution"),
    ({"uuid": R1, "content": "x", "distribution": 1, "timestamp": 1}, "name"),
    ({"uuid": R1, "name": "r", "content": "x", "distribution": 1, "timestamp": 1, "object_uuid": R2}, "content"),
    ({"uuid": R1, "name": "r", "content": "x", "distribution": 1, "timestamp": 1, "type": "ip-dst"}, "content"),
])
def test_a_received_report_out_of_its_shape_is_named(body, field):
    problem = received_problem(body)
    assert problem is not None and problem.startswith(f"element.{field}"), problem


def test_each_report_travels_as_far_as_its_own_distribution_says(tmp_path):
    """a - b - c: an event at level 3 with reports at 0, 1 and inherit: b gets the level-1 report
    and the inheriting one, c only the inheriting one; a keeps all three; signatures still verify."""
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    raw = _event_with_reports(4, 3, [_report(R1, "0"), _report(R2, "1"), _report(R3, "5")])
    path = tmp_path / "ev.json"
    path.write_text(json.dumps(raw))
    import_paths(nodes["a"], [path])
    settle(nodes)
    uuid = raw["Event"]["uuid"]

    def reports(name: str) -> set[str]:
        exported = nodes[name].store.export_event(uuid)["Event"]
        return {r["uuid"] for r in exported.get("EventReport", [])}
    assert reports("a") == {R1, R2, R3}
    assert reports("b") == {R2, R3}
    assert reports("c") == {R3}
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


def test_a_report_in_a_sharing_group_goes_only_to_the_groups_members(tmp_path):
    from fedmisp.gossip.sharing_groups import create
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("a", "c")])
    orgs = {n: node.config.org_uuid for n, node in nodes.items()}
    settle(nodes)  # org records everywhere
    group = create(nodes["a"].store, nodes["a"].identity, orgs["a"], "a and b", {orgs["b"]: False})
    raw = _event_with_reports(5, 3, [_report(R1, "4", sharing_group_uuid=group.uuid), _report(R2, "3")])
    path = tmp_path / "ev.json"
    path.write_text(json.dumps(raw))
    import_paths(nodes["a"], [path])
    settle(nodes)
    uuid = raw["Event"]["uuid"]
    b = nodes["b"].store.export_event(uuid)["Event"]
    c = nodes["c"].store.export_event(uuid)["Event"]
    assert {r["uuid"] for r in b["EventReport"]} == {R1, R2}
    assert {r["uuid"] for r in c["EventReport"]} == {R2}
    for node in nodes.values():
        node.close()


def test_a_revision_signed_with_reports_in_its_header_has_them_as_elements_after_the_next_edit(node):
    """Before decision 0026 a report was kept in the header's extra; the author's next revision
    (any edit) makes it an element, withheld by its own distribution from then on."""
    from fedmisp.model.revision import sign_event
    from fedmisp.store.mutations import revise
    from fedmisp.store import query
    defaults = node.import_defaults()
    raw = _event_with_reports(6, 3, [])["Event"]
    del raw["EventReport"]
    parsed = parse_event(raw, defaults)
    legacy = [_report(R1, "0"), _report(R2, "3")]
    parsed.header["extra"] = {**(parsed.header.get("extra") or {}), "EventReport": legacy}
    node.store.write_events([sign_event(node.identity, parsed)])
    uuid = raw["uuid"]
    signed = revise(node.store, node.identity, defaults, uuid, {"info": "edited"})
    node.store.write_events([signed])
    header = query.event_head(node.store, uuid).header
    assert "EventReport" not in (header.get("extra") or {})
    reports = {e["uuid"]: e for e in query.event_elements(node.store, uuid) if element_kind(e) == KIND_REPORT}
    assert set(reports) == {R1, R2} and reports[R1]["distribution"] == 0
    assert node.store.export_event(uuid)["Event"]["info"] == "edited"
