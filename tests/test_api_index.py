"""events/index with MISP's filters, driven by PyMISP's search_index against a real node (the
`server` fixture: one node per test module, so every event here carries this module's marker)."""
from __future__ import annotations

import uuid

from pymisp import MISPEvent

from test_api import Server, assert_misp_error

MARK = f"idx{uuid.uuid4().hex[:8]}"


def _event(info: str, tags: list[str], threat: int, analysis: int, published: bool, value: str) -> MISPEvent:
    e = MISPEvent()
    e.info = f"{MARK} {info}"
    e.distribution = 1
    e.threat_level_id = threat
    e.analysis = analysis
    e.published = published
    e.add_attribute("domain", value)
    for tag in tags:
        e.add_tag(tag)
    return e


def test_search_index_applies_misps_filters(server: Server):
    misp = server.misp()
    made = {}
    for name, tags, threat, analysis, published, value in (
            ("phishing wave", ["tlp:green"], 1, 2, True, f"{MARK}-login.example"),
            ("ransomware note", ["tlp:amber", "malware:ransomware"], 2, 0, False, f"{MARK}-locker.example"),
            ("phishing kit", ["tlp:amber"], 3, 1, True, f"{MARK}-kit.example")):
        made[name] = misp.add_event(_event(name, tags, threat, analysis, published, value), pythonify=True)

    def infos(**filters) -> set[str]:
        found = misp.search_index(eventinfo=MARK, pythonify=True, **filters) if "eventinfo" not in filters \
            else misp.search_index(pythonify=True, **filters)
        return {e.info.removeprefix(f"{MARK} ") for e in found}

    assert infos() == set(made)
    assert infos(eventinfo=f"{MARK} phishing") == {"phishing wave", "phishing kit"}
    assert infos(tags=["tlp:amber"]) == {"ransomware note", "phishing kit"}
    assert infos(tags=["!tlp:amber"]) == {"phishing wave"}
    assert infos(published=True) == {"phishing wave", "phishing kit"}
    assert infos(threatlevel=[1, 3]) == {"phishing wave", "phishing kit"}
    assert infos(analysis=[0]) == {"ransomware note"}
    assert infos(attribute=f"{MARK}-locker") == {"ransomware note"}
    assert infos(eventid=made["phishing kit"].id) == {"phishing kit"}
    assert {e.info for e in misp.search_index(all=f"{MARK}-kit", pythonify=True)} == {f"{MARK} phishing kit"}
    assert infos(tags=["malware:%"]) == {"ransomware note"}
    # sort and page: by info, descending, one per page
    pages = [misp.search_index(eventinfo=MARK, sort="info", desc=True, limit=1, page=p, pythonify=True)
             for p in (1, 2, 3, 4)]
    assert [[e.info.removeprefix(f"{MARK} ") for e in page] for page in pages] == \
        [["ransomware note"], ["phishing wave"], ["phishing kit"], []]
    minimal = misp.search_index(eventinfo=MARK, minimal=True)
    assert {tuple(sorted(row)) for row in minimal} == {("id", "orgc_uuid", "published", "timestamp", "uuid")}


def test_index_filters_this_node_does_not_apply_are_refused_not_ignored(server: Server):
    assert_misp_error(server.post("/events/index", {"hasproposal": 1}), 400, "hasproposal", "restSearch")
    assert_misp_error(server.post("/events/index", {"frobnicate": 1}), 400, "frobnicate", "eventinfo")
    assert_misp_error(server.post("/events/index", {"threatlevel": [9]}), 400, "threatlevel", "1 to 4")
    assert_misp_error(server.post("/events/index", {"sort": "colour"}), 400, "sort", "info")
    assert_misp_error(server.post("/events/index", {"timestamp": "yesterday-ish"}), 400, "timestamp: ")
    assert_misp_error(server.post("/events/index", {"datefrom": "soon"}), 400, "datefrom: ")
    # PyMISP's defaults (None values dropped, desc False) are accepted
    assert server.post("/events/index", {"desc": False, "hasproposal": None}).status_code == 200
