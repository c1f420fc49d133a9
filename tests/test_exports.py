"""Exports for protective tools: Zeek intel and STIX 2.1 (misp-stix) from the CLI and from restSearch,
with the IDS flag and warninglist filters."""
from __future__ import annotations

import copy
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import stix2
from hypothesis import given, settings, strategies as st
from pymisp import PyMISP

from factories import ORG
from fedmisp.export import zeek
from fedmisp.node.cli import main
from fedmisp.store import query
from fedmisp.node.home import init_home
from fedmisp.node.importer import import_paths

EVENT_UUID = "5f4c3b2a-1d0e-4f9a-8b7c-6d5e4f3a2b1c"
# (type, value, to_ids): what the export must do with each is in the tests below
ATTRIBUTES = [
    ("ip-dst", "198.51.100.7", True),
    ("ip-dst", "203.0.113.0/24", True),
    ("ip-dst|port", "198.51.100.8|8443", True),
    ("domain|ip", "evil.example|192.0.2.9", True),
    ("url", "https://evil.example/drop.php", True),
    ("filename|sha256", "dropper.exe|" + "ab" * 32, True),
    ("email-src", "phish@evil.example", True),
    ("user-agent", "EvilBot/1.0", True),
    ("text", "not something Zeek matches", True),
    ("domain", "observed-only.example", False),
    ("ip-dst", "8.8.8.8", True),  # a public resolver: on a MISP warninglist
]


def _event() -> dict:
    attributes = []
    for i, (t, v, ids) in enumerate(ATTRIBUTES):
        category = "Payload delivery" if t.startswith("filename") or t == "email-src" else "Network activity"
        if t == "text":
            category = "Other"
        attributes.append({"uuid": f"5f4c3b2a-1d0e-4f9a-8b7c-{i:012d}", "type": t, "category": category,
                           "value": v, "to_ids": ids, "timestamp": "1700000000", "distribution": "5",
                           "comment": "seen\tin a\ncampaign" if i == 0 else ""})
    return {"Event": {"uuid": EVENT_UUID, "info": "Dropper campaign", "date": "2024-01-02", "threat_level_id": "1",
                      "analysis": "2", "distribution": "3", "published": True, "timestamp": "1700000100",
                      "publish_timestamp": "1700000100", "Orgc": ORG, "Tag": [{"name": "tlp:green"}],
                      "Attribute": attributes, "Object": []}}


def _node_with_the_event(folder: Path) -> Path:
    node, _ = init_home(folder / "node", "Export CSIRT", "127.0.0.1:0")
    (folder / "event.json").write_text(json.dumps(_event()))
    report = import_paths(node, [folder / "event.json"])
    assert report.events_stored == 1, report.refused
    node.close()
    return node.config.home


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _node_with_the_event(tmp_path_factory.mktemp("exports"))


def _export(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["export", "--home", str(home), *args]) == 0
    return capsys.readouterr().out


def _zeek_rows(text: str) -> list[list[str]]:
    lines = text.splitlines()
    assert lines[0] == "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url\tmeta.do_notice\tmeta.if_in"
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(row) == 7 for row in rows), "every intel line has the 7 header fields"
    return rows


def test_zeek_intel_maps_each_type_to_its_intel_kind_and_keeps_lines_whole(home, capsys):
    rows = _zeek_rows(_export(home, capsys, "--format", "zeek"))
    assert sorted((r[0], r[1]) for r in rows) == sorted([
        ("198.51.100.7", "Intel::ADDR"), ("203.0.113.0/24", "Intel::SUBNET"), ("198.51.100.8", "Intel::ADDR"),
        ("evil.example", "Intel::DOMAIN"), ("192.0.2.9", "Intel::ADDR"), ("evil.example/drop.php", "Intel::URL"),
        ("dropper.exe", "Intel::FILE_NAME"), ("ab" * 32, "Intel::FILE_HASH"), ("phish@evil.example", "Intel::EMAIL"),
        ("EvilBot/1.0", "Intel::SOFTWARE"), ("8.8.8.8", "Intel::ADDR"),
    ])  # text is not matchable, observed-only.example is not flagged for IDS
    first = next(r for r in rows if r[0] == "198.51.100.7")
    assert first[2] == f"fedmisp Export CSIRT ({EVENT_UUID}) - {ORG['name']}"
    assert first[3] == "Dropper campaign. seen in a campaign"  # the tab and line break cannot split the line
    assert first[4:] == ["-", "T", "-"]
    assert next(r for r in rows if r[1] == "Intel::URL")[3] == "Dropper campaign"  # no comment: the info alone


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(zeek.INTEL_TYPES)), st.text(min_size=1), st.text(), st.text(min_size=1))
def test_every_zeek_line_has_the_seven_fields_whatever_the_text(type_, value, comment, info):
    head = query.EventHead(EVENT_UUID, 1, None, b"", {"info": info, "Orgc": {"name": "Org\tX\n"}})
    for line in zeek.lines({"type": type_, "value": value, "comment": comment}, head, "fedmisp"):
        assert line.endswith("\n") and line.count("\n") == 1 and "\r" not in line
        fields = line[:-1].split("\t")
        assert len(fields) == 7 and all(fields), fields


def test_cli_exports_filter_on_the_ids_flag_and_on_warninglists(home, capsys):
    every = _export(home, capsys, "--format", "text").splitlines()
    assert len(every) == len(ATTRIBUTES)
    flagged = _export(home, capsys, "--format", "text", "--to-ids").splitlines()
    assert "observed-only.example" not in flagged and len(flagged) == len(ATTRIBUTES) - 1
    benign = _export(home, capsys, "--format", "csv", "--to-ids", "--enforce-warninglist")
    assert "8.8.8.8" not in benign and "198.51.100.7" in benign
    assert "8.8.8.8" not in [r[0] for r in _zeek_rows(_export(home, capsys, "--format", "zeek",
                                                               "--enforce-warninglist"))]
    rules = _export(home, capsys, "--format", "suricata", "--enforce-warninglist")
    assert "198.51.100.7" in rules and "8.8.8.8" not in rules
    assert main(["export", "--home", str(home), "--format", "feed", "--to-ids"]) == 2
    assert "--to-ids and --enforce-warninglist apply to" in capsys.readouterr().err


def _indicator_values(bundle: stix2.Bundle) -> str:
    return " ".join(o.pattern for o in bundle.objects if o.type == "indicator")


def test_cli_stix2_is_a_bundle_with_an_indicator_per_ids_attribute(home, capsys, tmp_path):
    out = tmp_path / "bundle.json"
    assert main(["export", "--home", str(home), "--format", "stix2", "--out", str(out)]) == 0
    bundle = stix2.parse(out.read_text(), allow_custom=True)
    report = next(o for o in bundle.objects if o.type == "report")
    assert report.name == "Dropper campaign"
    indicators = [o for o in bundle.objects if o.type == "indicator"]
    patterns = _indicator_values(bundle)
    for value in ("198.51.100.7", "evil.example/drop.php", "ab" * 32, "8.8.8.8"):
        assert value in patterns
    assert "observed-only.example" not in patterns  # not for IDS: observed data, not an indicator
    assert any(o.type == "observed-data" for o in bundle.objects)
    assert len(indicators) >= 8
    filtered = stix2.parse(_export(home, capsys, "--format", "stix2", "--to-ids", "--enforce-warninglist"),
                           allow_custom=True)
    assert "8.8.8.8" not in _indicator_values(filtered) and "198.51.100.7" in _indicator_values(filtered)
    assert not any(o.type == "observed-data" and "observed-only" in o.serialize() for o in filtered.objects)


@pytest.fixture(scope="module")
def misp(tmp_path_factory: pytest.TempPathFactory):
    served = _node_with_the_event(tmp_path_factory.mktemp("served"))  # a store is sparse: not copied
    from fedmisp.node.home import Node
    with Node.open(served) as node:
        key = node.create_api_key("read-only", "exports test")
    process = subprocess.Popen([sys.executable, "-m", "fedmisp", "run", "--home", str(served)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match is not None, f"fedmisp run did not start: {line!r}"
        yield PyMISP(match.group(0), key, ssl=False)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_rest_search_stix2_on_events_and_attributes(misp):
    events = stix2.parse(misp.search(controller="events", return_format="stix2"), allow_custom=True)
    assert [o.name for o in events.objects if o.type == "report"] == ["Dropper campaign"]
    assert "198.51.100.7" in _indicator_values(events)
    attributes = stix2.parse(misp.search(controller="attributes", return_format="stix2", to_ids=True,
                                         enforceWarninglist=True), allow_custom=True)
    patterns = _indicator_values(attributes)
    assert "evil.example/drop.php" in patterns and "8.8.8.8" not in patterns
    assert not any(o.type == "report" for o in attributes.objects)


def test_rest_search_zeek_on_events_and_attributes(misp):
    # PyMISP's search() does not list zeek among its formats (MISP serves it): a direct call
    def search(controller: str, **params: object) -> str:
        text = misp.direct_call(f"{controller}/restSearch", {"returnFormat": "zeek", **params})
        assert isinstance(text, str), text
        return text
    rows = _zeek_rows(search("attributes", value="https://evil.example%"))
    assert {(r[0], r[1]) for r in rows} == {("evil.example/drop.php", "Intel::URL")}
    rows = _zeek_rows(search("events", to_ids=True))
    assert ("192.0.2.9", "Intel::ADDR") in {(r[0], r[1]) for r in rows} and len(rows) == 11
    assert "8.8.8.8" not in search("attributes", enforceWarninglist=True)


def test_an_event_filter_never_exports_deleted_attributes():
    from fedmisp.export import filters
    event = copy.deepcopy(_event())
    event["Event"]["Attribute"][0]["deleted"] = True
    kept = filters.event(event)["Event"]["Attribute"]
    assert len(kept) == len(ATTRIBUTES) - 1


def test_zeek_indicators_are_refanged_and_composites_split():
    head = query.EventHead(EVENT_UUID, 1, None, b"", {"info": "Phishing", "Orgc": {"name": "CSIRT"}})
    url = list(zeek.lines({"type": "url", "value": "hxxps://login-bank[.]example/verify.php"}, head, "fedmisp"))
    assert [line.split("\t")[:2] for line in url] == [["login-bank.example/verify.php", "Intel::URL"]]
    domain_ip = list(zeek.lines({"type": "domain|ip", "value": "Login-Bank[.]example|198.51.100.7"}, head, "fedmisp"))
    assert [line.split("\t")[:2] for line in domain_ip] == [
        ["login-bank.example", "Intel::DOMAIN"], ["198.51.100.7", "Intel::ADDR"]]


def test_text_lists_carry_the_refanged_value_and_keep_composites_on_one_line():
    from fedmisp.export import text
    head = query.EventHead(EVENT_UUID, 1, None, b"", {"info": "Phishing", "Orgc": {"name": "CSIRT"}})
    found = [(head, {"type": "url", "value": "hxxps://login-bank[.]example/verify.php"}),
             (head, {"type": "domain|ip", "value": "Login-Bank[.]example|198.51.100.7"}),
             (head, {"type": "text", "value": "two\nlines"})]
    assert list(text.attributes_text(found)) == ["https://login-bank.example/verify.php\n",
                                                 "login-bank.example|198.51.100.7\n", "two lines\n"]


def test_ids_rules_match_the_refanged_value():
    from fedmisp.export import nids
    head = query.EventHead(EVENT_UUID, 1, None, b"", {"info": "Phishing", "Orgc": {"name": "CSIRT"}})
    dns = nids.rule({"type": "domain", "value": "Login-Bank[.]example"}, head, 1, "suricata")
    assert 'content:"login-bank.example"' in dns and "[.]" not in dns
    uri = nids.rule({"type": "url", "value": "hxxp://login-bank[.]example/a.php"}, head, 2, "snort")
    assert 'content:"/a.php"' in uri and "hxxp" not in uri


# A public resolver's hostname written two ways a MISP user writes it: upper-case, and defanged.
# Both are the `dns.google` a warninglist names once normalised, which is how the store indexes them.
WARNINGLISTED_SPELLINGS = ("DNS.GOOGLE", "dns[.]google")


def test_rest_search_and_the_cli_leave_out_the_same_warninglisted_values(tmp_path, capsys):
    import asyncio
    from aiohttp.test_utils import TestClient, TestServer
    from fedmisp.node.api.app import make_app
    from fedmisp.node.api.helpers import ApiContext
    from fedmisp.node.home import Node
    from fedmisp.store.writer import Writer
    event = _event()
    event["Event"]["uuid"] = "5f4c3b2a-1d0e-4f9a-8b7c-6d5e4f3a2b1d"
    event["Event"]["Attribute"] = [
        {"uuid": f"5f4c3b2a-1d0e-4f9a-8b7c-1{i:011d}", "type": "domain", "category": "Network activity",
         "value": value, "to_ids": True, "timestamp": "1700000000", "distribution": "5"}
        for i, value in enumerate((*WARNINGLISTED_SPELLINGS, "evil.example"))]
    node, _ = init_home(tmp_path / "node", "Warninglist CSIRT", "127.0.0.1:0")
    (tmp_path / "event.json").write_text(json.dumps(event))
    assert import_paths(node, [tmp_path / "event.json"]).events_stored == 1
    key = node.create_api_key("read-only", "warninglist test")
    node.close()
    cli = _export(tmp_path / "node", capsys, "--format", "text", "--enforce-warninglist").splitlines()

    async def rest_search() -> tuple[str, list[dict]]:
        with Node.open(tmp_path / "node") as served, Writer(served.store) as writer:
            async with TestClient(TestServer(make_app(ApiContext(served, writer)))) as client:
                answers = []
                for params in ({"returnFormat": "text", "enforceWarninglist": 1},
                               {"returnFormat": "json", "includeWarninglistHits": 1}):
                    async with client.post("/attributes/restSearch", json=params,
                                           headers={"Authorization": key, "Accept": "application/json"}) as r:
                        assert r.status == 200, await r.text()
                        answers.append(await r.text())
        return answers[0], json.loads(answers[1])["response"]["Attribute"]
    api, annotated = asyncio.run(rest_search())
    assert cli == api.splitlines() == ["evil.example"]
    warned = {a["value"] for a in annotated if a.get("warnings")}
    assert warned == set(WARNINGLISTED_SPELLINGS), "includeWarninglistHits names what enforceWarninglist leaves out"
