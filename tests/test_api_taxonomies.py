"""MISP's taxonomies, warninglists and tag search through the API, as PyMISP scripts see them: a real
`fedmisp run` process, the real PyMISP client, the vocabularies of the installed pytaxonomies and
pymispwarninglists packages."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given, strategies as st
from pymisp import MISPTaxonomy, MISPWarninglist
from pytaxonomies import Taxonomies
from pymispwarninglists import WarningLists

from test_api import Server, assert_misp_error, new_event

RESOLVERS = "List of known IPv4 public DNS resolvers"
RESOLVER_HOSTNAMES = "List of known public DNS resolvers expressed as hostname"


@pytest.fixture(scope="module")
def tagged(server: Server) -> dict[str, str]:
    """An event of this node with tlp:green, kill-chain:delivery (on an attribute), two admiralty
    tags (one a value the taxonomy lists, one not) and a local tag of no taxonomy."""
    misp = server.misp()
    event = new_event("taxonomy tags")
    event.add_tag('admiralty-scale:source-reliability="a"')
    event.add_tag('admiralty-scale:information-credibility="9"')
    added = misp.add_event(event, pythonify=True)
    misp.tag(added.uuid, "internal:triage", local=True)
    return {"uuid": added.uuid, "id": added.id}


@pytest.fixture(scope="module")
def packaged_taxonomies() -> dict[str, object]:
    """The package's taxonomies for events (MISP's Taxonomy::update skips the others)."""
    kept = {}
    for name, t in Taxonomies().items():
        if t.type is None or "event" in t.type:
            kept[name] = t
    return kept


def _entries(taxonomy) -> list[str]:
    return [taxonomy.make_machinetag(p, e) for p, predicate in taxonomy.items()
            for e in (predicate.entries.values() or [None])]


# --- taxonomies ----------------------------------------------------------------------------------

def test_taxonomies_lists_the_packages_taxonomies_each_enabled_with_an_id(server: Server, tagged, packaged_taxonomies):
    listed = server.misp("read-only").taxonomies(pythonify=True)
    assert all(isinstance(t, MISPTaxonomy) for t in listed)
    assert {t.namespace for t in listed} == set(packaged_taxonomies)
    assert all(t.enabled is True for t in listed)
    ids = [t.id for t in listed]
    assert all(i.isdigit() for i in ids) and len(set(ids)) == len(ids)
    raw = {t["Taxonomy"]["namespace"]: t for t in server.misp().taxonomies()}
    assert raw["tlp"]["total_count"] == len(_entries(packaged_taxonomies["tlp"]))
    # current: the taxonomy's tags this node knows (tags/index), here tlp:green and the foreign event's tlp:amber
    held = {t.name.lower() for t in server.misp().tags(pythonify=True)}
    assert {"tlp:green", "tlp:amber"} <= held
    for namespace in ("tlp", "admiralty-scale", "kill-chain", "PAP"):
        expected = held & {tag.lower() for tag in _entries(packaged_taxonomies[namespace])}
        assert raw[namespace]["current_count"] == len(expected), namespace
    assert raw["admiralty-scale"]["current_count"] == 1  # the listed value; "9" is not one of its tags


def test_a_taxonomy_by_id_and_by_namespace_has_its_entries_and_the_held_tags(server: Server, tagged,
                                                                             packaged_taxonomies):
    misp = server.misp("read-only")
    tlp_id = next(t.id for t in misp.taxonomies(pythonify=True) if t.namespace == "tlp")
    by_id = misp.get_taxonomy(tlp_id)
    assert by_id == misp.get_taxonomy("tlp") == misp.get_taxonomy("TLP")
    assert by_id["Taxonomy"]["namespace"] == "tlp" and by_id["Taxonomy"]["id"] == tlp_id
    entries = {e["tag"]: e for e in by_id["entries"]}
    assert list(entries) == _entries(packaged_taxonomies["tlp"])
    assert entries["tlp:green"]["existing_tag"]["Tag"]["name"] == "tlp:green"
    assert entries["tlp:red"]["existing_tag"] is False
    assert entries["tlp:red"]["expanded"] == packaged_taxonomies["tlp"]["red"].expanded
    typed = misp.get_taxonomy(tlp_id, pythonify=True)
    assert isinstance(typed, MISPTaxonomy) and typed.namespace == "tlp" and typed.enabled is True
    # a predicate's values: "predicate: value" expanded, and whether the predicate is exclusive
    admiralty = {e["tag"]: e for e in misp.get_taxonomy("admiralty-scale")["entries"]}
    reliable = admiralty['admiralty-scale:source-reliability="a"']
    assert reliable["expanded"].startswith("Source Reliability: ") and isinstance(reliable["exclusive_predicate"], bool)
    assert reliable["existing_tag"]["Tag"]["name"] == 'admiralty-scale:source-reliability="a"'


def test_an_unknown_taxonomy_is_a_404(server: Server):
    assert_misp_error(server.get("/taxonomies/view/12345", role="read-only"), 404, "Taxonomy not found")
    assert_misp_error(server.get("/taxonomies/view/no-such-namespace"), 404, "Taxonomy not found")
    answer = server.misp().get_taxonomy(12345, pythonify=True)  # PyMISP hands back the error
    assert answer["errors"][0] == 404


def test_enabling_disabling_or_updating_a_taxonomy_or_warninglist_is_refused(server: Server):
    misp = server.misp()
    tlp_id = next(t.id for t in misp.taxonomies(pythonify=True) if t.namespace == "tlp")
    for answer in (misp.enable_taxonomy(tlp_id), misp.disable_taxonomy(tlp_id), misp.update_taxonomies(),
                   misp.enable_taxonomy_tags(tlp_id), misp.set_taxonomy_required(tlp_id, True),
                   misp.toggle_warninglist(warninglist_name=RESOLVERS), misp.disable_warninglist(1),
                   misp.update_warninglists()):
        status, body = answer["errors"]
        assert status == 403 and "not enabled, disabled" in body["message"], answer
    assert misp.get_taxonomy(tlp_id)["Taxonomy"]["enabled"] is True


# --- warninglists --------------------------------------------------------------------------------

def test_warninglists_lists_the_packages_lists_and_views_one_with_its_entries(server: Server):
    misp = server.misp("read-only")
    listed = misp.warninglists(pythonify=True)
    packaged = WarningLists(slow_search=False)
    assert all(isinstance(w, MISPWarninglist) for w in listed)
    assert {w.name for w in listed} == set(packaged)
    assert all(w.enabled is True for w in listed)
    resolvers = next(w for w in listed if w.name == RESOLVERS)
    assert resolvers.warninglist_entry_count == str(len(packaged[RESOLVERS].list))
    assert resolvers.valid_attributes == ", ".join(packaged[RESOLVERS].matching_attributes)
    view = misp.get_warninglist(resolvers.id)
    assert view["Warninglist"]["name"] == RESOLVERS and view["Warninglist"]["id"] == resolvers.id
    assert "8.8.8.8" in {e["value"] for e in view["Warninglist"]["WarninglistEntry"]}
    assert [t["type"] for t in view["Warninglist"]["WarninglistType"]] == packaged[RESOLVERS].matching_attributes
    typed = misp.get_warninglist(resolvers.id, pythonify=True)
    assert isinstance(typed, MISPWarninglist) and typed.name == RESOLVERS
    assert_misp_error(server.get("/warninglists/view/12345"), 404, "Warninglist not found")
    assert_misp_error(server.get("/warninglists/view/public-dns-v4"), 404, "expected an id")


def test_check_value_names_the_lists_a_value_is_on(server: Server):
    misp = server.misp("read-only")
    ids = {w.name: w.id for w in misp.warninglists(pythonify=True)}
    hits = misp.values_in_warninglist(["8.8.8.8", " 8.8.8.8 ", "login-bank.example", "DNS.GOOGLE"])
    assert set(hits) == {"8.8.8.8", "DNS.GOOGLE"}  # the trimmed value as sent is the key, as MISP
    assert {"id": ids[RESOLVERS], "name": RESOLVERS, "matched": "8.8.8.8"} in hits["8.8.8.8"]
    by_name = {h["name"]: h for h in hits["DNS.GOOGLE"]}
    assert by_name[RESOLVER_HOSTNAMES]["matched"] == "dns.google"
    assert misp.values_in_warninglist(["login-bank.example"]) == {}


def test_check_value_judges_a_value_as_rest_search_enforce_warninglist_does(server: Server):
    """A value checkValue finds on a list is the one restSearch's enforceWarninglist leaves out,
    refanged or upper-case alike, and a value it does not find is kept."""
    misp = server.misp()
    values = {"8.8.8.8": "ip-dst", "8.8.8[.]8": "ip-dst", "DNS.GOOGLE": "domain", "dns[.]google": "domain",
              "hxxps://login-bank[.]example/x": "url", "login-bank.example": "domain", "203.0.113.9": "ip-dst"}
    event = new_event("warninglist judgement")
    event.attributes = []
    for value, type_ in values.items():
        event.add_attribute(type_, value, to_ids=True)
    added = misp.add_event(event, pythonify=True)
    kept = {a["value"] for a in misp.search(controller="attributes", eventid=added.id, enforce_warninglist=True)["Attribute"]}
    everything = {a["value"] for a in misp.search(controller="attributes", eventid=added.id)["Attribute"]}
    assert everything == set(values)
    hits = misp.values_in_warninglist(list(values))
    assert set(hits) == everything - kept
    assert {"8.8.8.8", "8.8.8[.]8", "DNS.GOOGLE", "dns[.]google"} <= set(hits)


def test_check_value_refuses_what_is_not_a_list_of_values(server: Server):
    assert_misp_error(server.post("/warninglists/checkValue", ["8.8.8.8", 8]), 400, "body[1]", "expected a string")
    assert_misp_error(server.post("/warninglists/checkValue", []), 400, "expected a list of values")
    assert_misp_error(server.post("/warninglists/checkValue", {"Warninglist": [None]}), 400, "Warninglist[0]")
    # MISP's other spellings of the same request
    assert "8.8.8.8" in server.post("/warninglists/checkValue", {"Warninglist": ["8.8.8.8"]}).json()
    assert "8.8.8.8" in server.post("/warninglists/checkValue", "8.8.8.8").json()


# --- tags/search ---------------------------------------------------------------------------------

def test_search_tags_finds_held_tags_by_pattern_with_their_taxonomy(server: Server, tagged):
    misp = server.misp("read-only")
    found = misp.search_tags("tlp:%", pythonify=True)
    assert [t.name for t in found] == ["tlp:amber", "tlp:green"]  # (the foreign event's, and the tagged one's)
    [green] = misp.search_tags("TLP:GR%")  # without case, as MISP's LIKE
    assert green["Tag"]["name"] == "tlp:green"
    assert green["Taxonomy"]["namespace"] == "tlp"
    assert green["TaxonomyPredicate"]["value"] == "green" and "TaxonomyEntry" not in green["TaxonomyPredicate"]
    tlp_id = next(t.id for t in misp.taxonomies(pythonify=True) if t.namespace == "tlp")
    assert green["Taxonomy"]["id"] == green["TaxonomyPredicate"]["taxonomy_id"] == tlp_id
    assert green["Tag"]["id"] == misp.get_tag(green["Tag"]["id"])["Tag"]["id"]
    [local] = misp.search_tags("internal:%")
    assert local["Tag"]["name"] == "internal:triage" and "Taxonomy" not in local
    [attribute_tag] = misp.search_tags("%delivery", strict_tagname=True)
    assert attribute_tag["Taxonomy"]["namespace"] == "kill-chain"
    assert misp.search_tags("nothing:%") == []


def test_search_tags_shows_the_value_of_a_triple_tag(server: Server, tagged):
    misp = server.misp()
    [listed] = misp.search_tags('admiralty-scale:source-reliability="a"')
    assert listed["Taxonomy"]["namespace"] == "admiralty-scale"
    assert listed["TaxonomyPredicate"]["value"] == "source-reliability"
    [entry] = listed["TaxonomyPredicate"]["TaxonomyEntry"]
    assert entry["value"] == "a" and entry["taxonomy_predicate_id"] == listed["TaxonomyPredicate"]["id"]
    assert entry["id"] == listed["Tag"]["id"]  # a taxonomy entry's id is its tag's
    # a value the predicate does not list: still the taxonomy's (as MISP), with no entry
    [unlisted] = misp.search_tags('admiralty-scale:information-credibility="9"')
    assert unlisted["TaxonomyPredicate"]["value"] == "information-credibility"
    assert unlisted["TaxonomyPredicate"]["TaxonomyEntry"] == []


def test_search_tags_in_the_path_strict_is_an_exact_name_or_an_id(server: Server, tagged):
    pattern = server.get("/tags/search/tlp:%25", role="read-only").json()
    assert [t["Tag"]["name"] for t in pattern] == ["tlp:amber", "tlp:green"]
    assert server.get("/tags/search/tlp:%25/1").json() == []  # strict: % is no wildcard
    [exact] = server.get("/tags/search/TLP:green/1").json()
    assert exact["Tag"]["name"] == "tlp:green"
    [by_id] = server.get(f"/tags/search/{exact['Tag']['id']}/1").json()
    assert by_id == exact
    assert_misp_error(server.get("/tags/search/tlp:green/maybe"), 400, "strict", "expected 0 or 1")
    assert_misp_error(server.post("/tags/search", {"strict_tagname": True}), 400, "tagname", "expected")
    assert_misp_error(server.post("/tags/search", {"tagname": ["tlp:%", 3]}), 400, "tagname", "expected")


# --- loading ---------------------------------------------------------------------------------------

def test_the_vocabularies_load_only_when_asked_for():
    """Starting the API loads neither package's data: it costs seconds, and most nodes never ask."""
    code = ("import sys; from fedmisp.node.api.app import make_app; "
            "print('pytaxonomies' in sys.modules, 'pymispwarninglists' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_each_vocabulary_loads_once_for_the_api_restsearch_and_tag_search(monkeypatch):
    import pymispwarninglists
    import pytaxonomies
    from fedmisp.correlate import warninglists as wl
    from fedmisp.export import filters
    from fedmisp.model import taxonomies as tx
    from fedmisp.node.api import taxonomies as api
    loads = {"taxonomies": 0, "warninglists": 0}

    class CountedTaxonomies(pytaxonomies.Taxonomies):
        def __init__(self, *args, **kwargs):
            loads["taxonomies"] += 1
            super().__init__(*args, **kwargs)

    class CountedWarningLists(pymispwarninglists.WarningLists):
        def __init__(self, *args, **kwargs):
            loads["warninglists"] += 1
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(pytaxonomies, "Taxonomies", CountedTaxonomies)
    monkeypatch.setattr(pymispwarninglists, "WarningLists", CountedWarningLists)
    tx._loaded.cache_clear()
    wl._lists.cache_clear()
    try:
        api.find_taxonomy("tlp")
        assert api.tag_search_hit("tlp:red", {})["Taxonomy"]["namespace"] == "tlp"
        assert len(tx.taxonomies()) > 100
        assert api.check_values(["8.8.8.8"])["8.8.8.8"][0]["name"] == RESOLVERS
        assert filters.warninglisted({"type": "domain", "value": "DNS.GOOGLE"})
        assert api._find_warninglist(api.name_id(RESOLVERS)).name == RESOLVERS
        assert loads == {"taxonomies": 1, "warninglists": 1}
    finally:
        tx._loaded.cache_clear()
        wl._lists.cache_clear()


# --- LIKE ------------------------------------------------------------------------------------------

def _like_oracle(pattern: str, name: str) -> bool:
    """LIKE as a regular expression: fine for the short strings drawn here."""
    out, escaped = [], False
    for ch in pattern:
        if escaped:
            out.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    if escaped:
        out.append(re.escape("\\"))
    return re.fullmatch("".join(out), name, re.I | re.S) is not None


@given(st.text("ab%_\\A", max_size=7), st.text("abAB%_\\", max_size=8))
def test_a_tag_pattern_matches_as_mysql_like_without_case(pattern: str, name: str):
    from fedmisp.node.api.taxonomies import like
    assert like(pattern)(name) == _like_oracle(pattern, name)


def test_a_pattern_of_many_wildcards_is_answered_at_once():
    """A regular expression of 30 `%`s backtracks for ever on a 255-character name; LIKE here does not."""
    from fedmisp.node.api.taxonomies import like
    assert like("%a" * 30 + "%b")("a" * 255) is False
    assert like("%a" * 30 + "%")("a" * 255) is True
