"""Importing real-world files keeps what is valid (decision 0028).

MISP adds an event element by element and drops one that fails validation, keeping the event; of
two elements with one uuid it keeps the first. pymisp's own test files hold both cases: an event
whose ten attributes share one uuid (reportlab_testfiles/japanese_test_heavy.json) and an ssdeep
value with a line break inside (reportlab_testfiles/to_delete2.json). They go through `fedmisp
import` and `fedmisp feed fetch` on a real home here; a property test inserts one bad element of
each kind into a valid event and checks that exactly it, and what cannot stay without it, is left
out.
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
import tomllib
from hypothesis import event as note, given, settings, strategies as st

from factories import event
from fedmisp.model.misp import EventError, ImportDefaults, parse_event, unwrap_events
from fedmisp.model.records import revision_elements, verify_revision
from fedmisp.store import query
from fedmisp.store.store import Store

DUPLICATES = "japanese_test_heavy.json"  # ten attributes, one uuid
LINE_BREAK = "to_delete2.json"  # an ssdeep value with "\r\n" inside, in its fifth object


def fedmisp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedmisp", *args], capture_output=True, text=True, timeout=300)


def _home(tmp_path: Path, name: str = "n") -> Path:
    home = tmp_path / name
    assert fedmisp("init", "--home", str(home), "--org", "Lenient CSIRT").returncode == 0
    return home


@pytest.fixture
def real_files(pymisp_tests: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in (DUPLICATES, LINE_BREAK):
        shutil.copy(pymisp_tests / "reportlab_testfiles" / name, folder / name)
    return folder


def _source(path: Path) -> dict[str, Any]:
    return unwrap_events(json.loads(path.read_text()))[0]


def _all_attributes(e: dict[str, Any]) -> list[dict[str, Any]]:
    return e.get("Attribute", []) + [a for o in e.get("Object", []) for a in o.get("Attribute", [])]


def _line_break(source: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
    for j, o in enumerate(source["Object"]):
        for i, a in enumerate(o["Attribute"]):
            if a["type"] == "ssdeep" and "\n" in a["value"]:
                return j, i, a
    raise AssertionError("the pymisp fixture lost its ssdeep value with a line break")


def _stored(home: Path, event_uuid: str) -> list[dict[str, Any]]:
    """The held revision's element bodies, after checking its signature and every body's digest,
    and that the store holds a body for each digest it signed and no other."""
    with Store(home / "store", readonly=True) as store:
        record, entries = store.revision_entries(event_uuid)
        verify_revision(record.wire(), {digest: body for digest, body, _ in entries})
        assert sorted(revision_elements(record)) == sorted(digest for digest, _, _ in entries)
        return [element for _, _, element in entries]


def test_real_files_keep_all_but_their_bad_elements_and_name_each(real_files: Path, tmp_path: Path):
    home = _home(tmp_path)
    result = fedmisp("import", "--home", str(home), str(real_files))
    assert result.returncode == 0, result.stderr

    dup = _source(real_files / DUPLICATES)
    shared = dup["Attribute"][0]["uuid"]
    assert [a["uuid"] for a in dup["Attribute"]] == [shared] * 10
    for i in range(1, 10):
        assert (f"dropped: {real_files / DUPLICATES}: event {dup['uuid']}: attribute Attribute[{i}] (uuid {shared}): "
                "field 'uuid': an earlier element of the event has this uuid; the first one is kept") in result.stderr
    broken = _source(real_files / LINE_BREAK)
    j, i, bad = _line_break(broken)
    assert (f"dropped: {real_files / LINE_BREAK}: event {broken['uuid']}: attribute Object[{j}].Attribute[{i}] "
            f"(uuid {bad['uuid']}): field 'value': ") in result.stderr
    assert "(ssdeep)" in result.stderr
    assert result.stderr.count("dropped: ") == 10 and "refused" not in result.stderr

    attributes = 1 + len(_all_attributes(broken)) - 1
    assert (f"2 file(s): 2 event(s) stored ({attributes} attributes), 0 unchanged, 0 older than held, "
            "0 refused, 10 element(s) dropped") in result.stdout
    assert fedmisp("check", "--home", str(home)).returncode == 0

    # the duplicates: the first one is what is stored, the nine others are nowhere
    kept = _stored(home, dup["uuid"])
    assert [(e["uuid"], e["value"]) for e in kept] == [(shared, dup["Attribute"][0]["value"])]
    # the line break: every other element of the file is stored as given, the bad one nowhere
    held = _stored(home, broken["uuid"])
    given = {a["uuid"] for a in _all_attributes(broken)} | {o["uuid"] for o in broken["Object"]} | \
        {r["uuid"] for o in broken["Object"] for r in o.get("ObjectReference", [])}
    assert {e["uuid"] for e in held} == given - {bad["uuid"]}
    obj = broken["Object"][j]
    assert sorted(e["uuid"] for e in held if e.get("object_uuid") == obj["uuid"] and "value" in e) == \
        sorted(a["uuid"] for k, a in enumerate(obj["Attribute"]) if k != i)
    with Store(home / "store", readonly=True) as store:
        assert query.find_element(store, bad["uuid"]) is None
        assert store.find_value(dup["Attribute"][0]["value"]) == [shared]
        for a in dup["Attribute"][1:]:
            assert store.find_value(a["value"]) == []


def test_strict_refuses_both_events_whole_as_before(real_files: Path, tmp_path: Path):
    home = _home(tmp_path)
    result = fedmisp("import", "--strict", "--home", str(home), str(real_files))
    assert result.returncode == 1  # nothing stored
    dup, broken = _source(real_files / DUPLICATES), _source(real_files / LINE_BREAK)
    assert f"refused: {real_files / DUPLICATES}: event {dup['uuid']} " in result.stderr
    assert "appears twice in the event" in result.stderr
    assert f"refused: {real_files / LINE_BREAK}: event {broken['uuid']} " in result.stderr
    assert "dropped: " not in result.stderr
    assert "0 event(s) stored (0 attributes), 0 unchanged, 0 older than held, 2 refused, 0 element(s) dropped" \
        in result.stdout
    assert json.loads(fedmisp("status", "--home", str(home), "--json").stdout)["events"] == 0


def test_a_bad_event_header_still_refuses_the_event(tmp_path: Path):
    home = _home(tmp_path)
    raw = event(seed=3, attributes=3, objects=0)
    raw["Event"]["Attribute"][0]["value"] = "not an address"
    raw["Event"]["Attribute"][0]["type"] = "ip-dst"
    raw["Event"]["date"] = "yesterday"
    (tmp_path / "e.json").write_text(json.dumps(raw))
    result = fedmisp("import", "--home", str(home), str(tmp_path / "e.json"))
    assert result.returncode == 1
    assert "field 'date': 'yesterday' is not a date" in result.stderr and "dropped: " not in result.stderr
    assert "0 event(s) stored" in result.stdout and "1 refused, 0 element(s) dropped" in result.stdout


def test_the_cli_prints_the_first_dropped_elements_then_counts_the_rest(tmp_path: Path):
    home = _home(tmp_path)
    raw = event(seed=4, attributes=30, objects=0)
    for a in raw["Event"]["Attribute"][:25]:
        a.update(type="md5", category="Payload delivery", value="zz")
    (tmp_path / "e.json").write_text(json.dumps(raw))
    result = fedmisp("import", "--home", str(home), str(tmp_path / "e.json"))
    lines = [line for line in result.stderr.splitlines() if line.startswith("dropped: ")]
    assert len(lines) == 21 and lines[-1] == "dropped: ... and 5 more element(s)"
    for k, line in enumerate(lines[:20]):
        assert f"attribute Attribute[{k}] (uuid {raw['Event']['Attribute'][k]['uuid']}): field 'value'" in line
    assert "1 event(s) stored (5 attributes)" in result.stdout and "25 element(s) dropped" in result.stdout


def test_a_report_keeps_the_first_dropped_lines_and_counts_them_all():
    from fedmisp.node.importer import KEPT_DROPPED, SHOWN_DROPPED, ImportReport
    from fedmisp.store.events import WriteOutcome
    report = ImportReport()
    lines = tuple(f"f.json: event e: attribute Attribute[{i}]: field 'value': bad" for i in range(KEPT_DROPPED + 7))
    report.count(b"\x01" * 16, 3, WriteOutcome.STORED, lines)
    report.count(b"\x02" * 16, 3, WriteOutcome.UNCHANGED, lines)  # nothing was added: nothing dropped
    assert report.elements_dropped == KEPT_DROPPED + 7 and report.dropped == list(lines[:KEPT_DROPPED])
    shown = report.dropped_lines()
    assert shown[:-1] == [f"dropped: {line}" for line in lines[:SHOWN_DROPPED]]
    assert shown[-1] == f"dropped: ... and {KEPT_DROPPED + 7 - SHOWN_DROPPED} more element(s)"
    assert report.summary().endswith(f"{KEPT_DROPPED + 7} element(s) dropped")


def _feed(folder: Path, files: list[Path]) -> None:
    folder.mkdir()
    manifest = {}
    for path in files:
        e = _source(path)
        manifest[e["uuid"]] = {"info": e["info"], "timestamp": e["timestamp"]}
        shutil.copy(path, folder / f"{e['uuid']}.json")
    (folder / "manifest.json").write_text(json.dumps(manifest))


def _with_feed(home: Path, folder: Path, **settings: Any) -> None:
    path = home / "fedmisp.toml"
    path.write_text(tomli_w.dumps({**tomllib.loads(path.read_text()),
                                   "feed": [{"name": "reportlab", "path": str(folder), **settings}]}))


def test_a_fetched_feed_keeps_the_valid_part_of_each_event_unless_strict(real_files: Path, tmp_path: Path):
    _feed(tmp_path / "feed", [real_files / DUPLICATES, real_files / LINE_BREAK])
    dup, broken = _source(real_files / DUPLICATES), _source(real_files / LINE_BREAK)
    j, i, bad = _line_break(broken)
    home = _home(tmp_path, "lenient")
    _with_feed(home, tmp_path / "feed")
    result = fedmisp("feed", "fetch", "--home", str(home))
    assert result.returncode == 0, result.stderr
    assert "2 fetched: 2 event(s) stored" in result.stdout and "10 element(s) dropped" in result.stdout
    assert (f"dropped: {tmp_path / 'feed'}/{broken['uuid']}.json: event {broken['uuid']}: "
            f"attribute Object[{j}].Attribute[{i}] (uuid {bad['uuid']}): field 'value'") in result.stderr
    assert f"{dup['uuid']}.json: event {dup['uuid']}: attribute Attribute[9]" in result.stderr
    assert bad["uuid"] not in {e["uuid"] for e in _stored(home, broken["uuid"])}
    assert len(_stored(home, dup["uuid"])) == 1

    # strict: from the feed's setting, or for one fetch from the command line
    for name, setting, flag in (("strict", {"strict": True}, ()), ("flag", {}, ("--strict",))):
        home = _home(tmp_path, name)
        _with_feed(home, tmp_path / "feed", **setting)
        result = fedmisp("feed", "fetch", "--home", str(home), *flag)
        assert "2 fetched: 0 event(s) stored" in result.stdout and "2 refused" in result.stdout, result.stdout
        assert "appears twice in the event" in result.stderr and "dropped: " not in result.stderr


def test_a_feed_strict_setting_that_is_not_a_boolean_is_named(tmp_path: Path):
    home = _home(tmp_path)
    _with_feed(home, tmp_path / "feed", strict="yes")
    result = fedmisp("config", "check", "--home", str(home))
    assert result.returncode != 0 and "feed 'reportlab'.strict: 'yes'; expected true or false" in result.stderr


# --- one bad element inserted into a valid event ---------------------------------------------------

DEFAULTS = ImportDefaults(org_uuid="11111111-2222-4333-8444-555555555555", org_name="Lenient", now=1_700_000_900)
# A reference of the base event points at this uuid, held by no element of it (a reference to
# another event's attribute is valid): an attribute inserted with it is the reference's target.
TARGET = "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"
# Values each type refuses: the bad attribute's (type, category, value).
BAD_VALUES = [
    ("md5", "Payload delivery", "not-a-hash"),
    ("ip-dst", "Network activity", "300.1.2.3"),
    ("ssdeep", "Payload delivery", "3072:GxXIbbVcpID+5/MiPDH8QnO3oMc+i+TN85mQLP\r\ngpnejnceJ:GxXIbbVcpID"),
    ("domain", "Network activity", "no domain.example"),
    ("no-such-type", "Other", "x"),
    ("url", "Antivirus detection", "https://category.example/wrong"),
]


def _base(seed: int) -> dict[str, Any]:
    raw = event(seed=seed, attributes=6, objects=2)["Event"]
    # the second object's one attribute that domain-ip requires (ip, domain or hostname) is its domain
    raw["Object"][1]["Attribute"][1].update(type="text", category="Other", object_relation="text", value="note")
    raw["Object"][1]["ObjectReference"].append({
        "uuid": "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b", "referenced_uuid": TARGET,
        "relationship_type": "related-to", "timestamp": raw["timestamp"]})
    return raw


def _uuid(seed: int, n: int) -> str:
    return f"{seed % 10**8:08x}-0000-4000-8000-{n:012x}"


def _bad_attribute(draw: st.DrawFn, seed: int, n: int) -> dict[str, Any]:
    """A bad attribute, perhaps with what goes with it when it is dropped: a sighting, a proposal,
    a local tag (each valid on its own)."""
    type_, category, value = draw(st.sampled_from(BAD_VALUES))
    bad = {"uuid": _uuid(seed, n), "type": type_, "category": category, "value": value, "timestamp": "1700000100"}
    if draw(st.booleans()):
        bad["Sighting"] = [{"uuid": _uuid(seed, 100 + n), "type": "0", "date_sighting": "1700000000"}]
    if draw(st.booleans()):
        bad["ShadowAttribute"] = [{"uuid": _uuid(seed, 200 + n), "type": "comment", "value": "a proposal"}]
    if draw(st.booleans()):
        bad["Tag"] = [{"name": "seen-here", "local": 1}]
    return bad


@st.composite
def one_bad_element(draw: st.DrawFn, kind: str) -> tuple[dict[str, Any], dict[str, Any],
                                                          set[tuple[str, str | None]], set[str]]:
    """(base event, the event with one bad element of `kind` inserted, what must be dropped as
    (kind, uuid), the uuids of base elements that go with it)."""
    seed = draw(st.integers(0, 10**6))
    base = _base(seed)
    e = copy.deepcopy(base)
    attributes, objects = e["Attribute"], e["Object"]
    at = draw(st.integers(0, len(attributes)))
    if kind == "attribute":
        bad = _bad_attribute(draw, seed, 1)
        attributes.insert(at, bad)
        return base, e, {("attribute", bad["uuid"])}, set()
    if kind == "target":  # its dependent: the base reference that points at it goes too
        bad = _bad_attribute(draw, seed, 1) | {"uuid": TARGET}
        attributes.insert(at, bad)
        ref = base["Object"][1]["ObjectReference"][1]["uuid"]
        return base, e, {("attribute", TARGET), ("reference", ref)}, {ref}
    if kind == "duplicate":  # a valid attribute, but an earlier element has its uuid: the first is kept
        first = draw(st.integers(0, len(attributes) - 1))
        copy_ = dict(attributes[first], value="repeat.example", type="domain", category="Network activity")
        attributes.insert(draw(st.integers(first + 1, len(attributes))), copy_)
        return base, e, {("attribute", copy_["uuid"])}, set()
    if kind == "member":  # a relation the template does not list: the object stays complete without it
        bad = _bad_attribute(draw, seed, 1) | {"object_relation": "note"}
        members = objects[draw(st.integers(0, 1))]["Attribute"]
        members.insert(draw(st.integers(0, len(members))), bad)
        return base, e, {("attribute", bad["uuid"])}, set()
    if kind in ("object", "incomplete object"):
        obj = copy.deepcopy(objects[0])
        obj["uuid"] = _uuid(seed, 2)
        obj["Attribute"] = [dict(a, uuid=_uuid(seed, 3 + k)) for k, a in enumerate(obj["Attribute"])]
        obj["ObjectReference"] = [dict(obj["ObjectReference"][0], uuid=_uuid(seed, 9))]
        if kind == "object":  # a bad field of the object itself: it goes with all it holds
            obj["distribution"] = draw(st.sampled_from(["7", "-1", "all"]))
        else:  # its domain is bad: what is left does not fill domain-ip (ip, domain or hostname)
            obj["Attribute"] = [_bad_attribute(draw, seed, 3) | {"object_relation": "domain"},
                                {"uuid": _uuid(seed, 4), "type": "text", "object_relation": "text", "value": "kept?",
                                 "Sighting": [{"uuid": _uuid(seed, 5), "type": "0", "date_sighting": "1700000000"}]}]
        objects.insert(draw(st.integers(0, len(objects))), obj)
        return base, e, {("object", obj["uuid"]), ("reference", _uuid(seed, 9))} | \
            {("attribute", a["uuid"]) for a in obj["Attribute"]}, set()
    if kind == "reference":
        refs = objects[draw(st.integers(0, 1))]["ObjectReference"]
        bad = {"uuid": _uuid(seed, 1), "referenced_uuid": draw(st.sampled_from(["", "b", TARGET])),
               "relationship_type": draw(st.sampled_from(["", None, "related-to"]))}
        if bad["referenced_uuid"] == TARGET and bad["relationship_type"] == "related-to":
            bad["relationship_type"] = ""
        refs.insert(draw(st.integers(0, len(refs))), bad)
        return base, e, {("reference", bad["uuid"])}, set()
    bad_tag = draw(st.sampled_from([{"name": ""}, {"name": "t" * 256}, {"colour": "#ffffff"}, 7]))
    if kind == "tag":
        target = attributes[draw(st.integers(0, len(attributes) - 1))]
        target.setdefault("Tag", []).insert(0, bad_tag)
        return base, e, {("tag", None)}, set()
    if kind == "event tag":
        e["Tag"].insert(draw(st.integers(0, len(e["Tag"]))), bad_tag)
        return base, e, {("tag", None)}, set()
    target = attributes[draw(st.integers(0, len(attributes) - 1))]
    target["Sighting"] = [{"uuid": _uuid(seed, 1), "type": "9", "date_sighting": "1700000000"}]
    return base, e, {("sighting", _uuid(seed, 1))}, set()


KINDS = ["attribute", "target", "duplicate", "member", "object", "incomplete object", "reference", "tag",
         "event tag", "sighting"]


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from(KINDS), data=st.data())
def test_one_bad_element_drops_exactly_it_and_what_depends_on_it(kind: str, data: st.DataObject):
    note(kind)
    base, mutated, dropped, dependents = data.draw(one_bad_element(kind))
    expected = parse_event(copy.deepcopy(base), DEFAULTS)
    with pytest.raises(EventError):
        parse_event(copy.deepcopy(mutated), DEFAULTS)  # strict: the whole event is refused
    parsed = parse_event(copy.deepcopy(mutated), DEFAULTS, lenient=True)
    assert {(d.kind, d.uuid) for d in parsed.dropped} == dropped
    assert len(parsed.dropped) == len(dropped)
    assert parsed.header == expected.header
    assert [e.body for e in parsed.elements] == [e.body for e in expected.elements if e.uuid not in dependents]
    assert (parsed.sightings, parsed.proposals, parsed.local_tags) == \
        (expected.sightings, expected.proposals, expected.local_tags)
    for d in parsed.dropped:  # each is named with its place and a field
        assert d.where and d.field and d.reason and str(d).startswith(f"{d.kind} {d.label}: field '")


def _spoil(raw: dict[str, Any], element_uuid: str) -> None:
    """Make the element of `raw` with this uuid fail validation."""
    for a in raw["Attribute"] + [a for o in raw["Object"] for a in o["Attribute"]]:
        if a["uuid"] == element_uuid:
            a["value"] = "300.1.2.3" if a["type"] == "ip-dst" else "no domain.example"
            a.update(type="ip-dst", category="Network activity")
    for o in raw["Object"]:
        if o["uuid"] == element_uuid:
            o["distribution"] = "7"
        for r in o["ObjectReference"]:
            if r["uuid"] == element_uuid:
                r["relationship_type"] = ""


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 10**6), data=st.data())
def test_dropping_an_element_after_parsing_is_parsing_it_bad(seed: int, data: st.DataObject):
    """events/add drops an element whose uuid another event uses once the event is parsed
    (`drop_elements`): what goes with it is what goes with a bad element in a lenient parse."""
    from fedmisp.model.misp import Problem, drop_elements
    base = _base(seed)
    parsed = parse_event(copy.deepcopy(base), DEFAULTS, lenient=True)
    victim = data.draw(st.sampled_from([e.uuid for e in parsed.elements]))
    dropped = drop_elements(parsed, {victim: Problem("Attribute", "uuid", "already used by event X")})
    spoiled = copy.deepcopy(base)
    _spoil(spoiled, victim)
    oracle = parse_event(spoiled, DEFAULTS, lenient=True)
    assert sorted((d.kind, d.uuid) for d in dropped) == sorted((d.kind, d.uuid) for d in oracle.dropped)
    assert [e.body for e in parsed.elements] == [e.body for e in oracle.elements]
