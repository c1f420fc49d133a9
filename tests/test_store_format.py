"""Store format 2: half the ssdeep index rows, no time index, and the upgrade of a format-1 store.

- The ssdeep index holds only the 6-grams at even positions of a stored half, and a query looks up
  every 6-gram. Hypothesis holds it to the old scheme (every 7-gram, index and query, copied below
  as it was): whenever the old keys of a stored hash and a query meet, the new ones meet too, so
  the engine (which scores every candidate with ppdeep) finds everything it found before.
- A format-1 store (written as the code before this change wrote it: legacy ssdeep keys, an
  ix_time database, no b"format" in meta) is upgraded when opened writable: ix_ssdeep rebuilt from
  the stored bodies, ix_time dropped, the format recorded, with a log line; a read-only open reads it
  as it is and still correlates. A store from a newer fedmisp is refused.
"""
from __future__ import annotations

import logging
import struct
from pathlib import Path

import lmdb
import pytest
from hypothesis import given, settings, strategies as st

from fedmisp.correlate.engine import CorrelationConfig, Correlator
from fedmisp.model import canonical
from fedmisp.model.records import open_element
from fedmisp.correlate.keys import SSDEEP_PARTS, correlation_rows, parse_ssdeep, ssdeep_keys
from fedmisp.store.db import STORE_FORMAT, StoreFormatError
from fedmisp.store.rows import index_values, uuid16
from fedmisp.store.store import Store

from test_correlate import attr, misp_event, ssdeep_corpus, uuids, write

_BE8 = struct.Struct(">Q")


# --- the old scheme, as store format 1 wrote and queried it ----------------------------------------

def _old_grams(s: str):
    if len(s) < 7:
        yield b"=" + s.encode()
        return
    seen = set()
    for i in range(len(s) - 7 + 1):
        g = s[i:i + 7]
        if g not in seen:
            seen.add(g)
            yield g.encode()


def old_ssdeep_keys(text: str) -> list[bytes]:
    """Format 1's index keys of one ssdeep hash, which were also its query keys."""
    parsed = parse_ssdeep(text)
    if parsed is None:
        return []
    bs, s1, s2 = parsed
    if bs >= 2**62:
        return []
    keys = [_BE8.pack(bs) + g for g in _old_grams(s1)]
    keys.extend(_BE8.pack(bs * 2) + g for g in _old_grams(s2))
    return list(dict.fromkeys(keys))


# --- no match lost -----------------------------------------------------------------------------------

# A small alphabet makes shared substrings and runs (collapsed by ssdeep when longer than 3) common.
_halves = st.text(alphabet="ABCab+/", max_size=40)


@st.composite
def related_pairs(draw):
    """(stored, query): the query half shares a random piece of the stored half (or not), at the
    same, double or half block size, so old-scheme key overlaps are frequent."""
    bs = draw(st.sampled_from([3, 6, 12, 96, 3 * 2**40]))
    s1, s2 = draw(_halves), draw(_halves)
    stored = f"{bs}:{s1}:{s2}"
    source = draw(st.sampled_from([s1, s2]))
    start = draw(st.integers(0, max(0, len(source) - 1)))
    piece = source[start:start + draw(st.integers(0, 12))]
    q1 = draw(_halves) + piece + draw(_halves)
    q2 = draw(_halves)
    if draw(st.booleans()):
        q1, q2 = q2, q1
    qbs = draw(st.sampled_from([bs, bs * 2, max(3, bs // 2)]))
    return stored, f"{qbs}:{q1}:{q2}"


@settings(max_examples=3000, deadline=None)
@given(related_pairs())
def test_every_pair_the_old_ssdeep_keys_found_the_new_ones_find(pair):
    stored, query = pair
    old = set(old_ssdeep_keys(stored)) & set(old_ssdeep_keys(query))
    new = set(ssdeep_keys(stored)) & set(ssdeep_keys(query, query=True))
    if old:
        assert new, (stored, query, old)


@settings(max_examples=500, deadline=None)
@given(st.builds(lambda bs, a, b: f"{bs}:{a}:{b}", st.sampled_from([3, 48, 1536]), _halves, _halves))
def test_new_index_keys_are_a_subset_of_the_query_keys_and_about_half_the_old_ones(text):
    index, query = ssdeep_keys(text), ssdeep_keys(text, query=True)
    assert set(index) <= set(query)  # a hash always finds itself
    assert ssdeep_keys(text, legacy=True) == ssdeep_keys(text, query=True, legacy=True) == old_ssdeep_keys(text)
    _bs, s1, s2 = parse_ssdeep(text)
    for half in (s1, s2):
        if len(half) >= 7:  # every other 6-gram: at most half the 7-grams, plus one
            assert len({g for g in index}) <= len(old_ssdeep_keys(text))


def test_the_corpus_needs_half_the_rows():
    stored, _extra = ssdeep_corpus()
    old = sum(len(old_ssdeep_keys(h)) for h in stored)
    new = sum(len(ssdeep_keys(h)) for h in stored)
    assert new < 0.6 * old


# --- upgrading a format-1 store -----------------------------------------------------------------------

def _ssdeep_rows(store: Store) -> set[tuple[bytes, bytes]]:
    with store.database.env.begin() as txn:
        return {(bytes(k), bytes(v)) for k, v in txn.cursor(db=store.database.db["ix_ssdeep"])}


def _make_format_1(store: Store) -> None:
    """Rewrite a store as format 1 held it: every attribute in ix_time, every 7-gram of a correlating
    ssdeep value in ix_ssdeep (the old function above), no format in meta."""
    with store.database.env.begin(write=True) as txn:
        ssdeep = store.database.db["ix_ssdeep"]
        txn.drop(ssdeep, delete=False)
        ix_time = store.database.env.open_db(b"ix_time", txn=txn)
        for key, body in txn.cursor(db=store.database.db["bodies"]):
            element = open_element(bytes(body))
            if "value" not in element or "type" not in element:
                continue
            ev, u = bytes(key[:16]), uuid16(element["uuid"])
            txn.put(_BE8.pack(element["timestamp"]) + u, b"", db=ix_time)
            disabled = canonical.unpack(bytes(txn.get(ev, db=store.database.db["event_meta"])))[2]
            keys = index_values(element)
            # the rows' database names say whether it correlates (deleted, disabled, ...)
            if any(name == "ix_ssdeep" for name, _k, _v in correlation_rows(element, keys, ev + u, disabled)):
                half = keys[SSDEEP_PARTS[element["type"]]]
                txn.cursor(db=ssdeep).putmulti([(k, ev + u) for k in old_ssdeep_keys(half)], dupdata=True)
        assert txn.delete(b"format", db=store.database.db["meta"])


@pytest.fixture
def corpus_events():
    stored, extra = ssdeep_corpus()
    attributes = [attr("ssdeep", h) if i % 5 else attr("filename|ssdeep", f"f{i}.exe|{h}")
                  for i, h in enumerate(stored)]
    # a disabled event and a deleted attribute keep no ssdeep rows, before and after
    attributes.append(attr("ssdeep", stored[0], deleted=True))
    events = [misp_event(attributes[i::3]) for i in range(3)]
    events.append(misp_event([attr("ssdeep", stored[1]), attr("domain", "example.org")], disable_correlation=True))
    return events, stored + extra


def _correlations(store: Store, queries: list[str]) -> dict[str, set[str]]:
    correlator = Correlator(store, CorrelationConfig(ssdeep_threshold=1, max_matches=10**6))
    return {q: uuids(correlator.value(q, "ssdeep")) for q in queries}


def test_a_format_1_store_is_upgraded_on_a_writable_open(tmp_path: Path, corpus_events, caplog):
    events, queries = corpus_events
    path = tmp_path / "store"
    with Store(path, map_size=1 << 30) as store:
        assert store.format == STORE_FORMAT
        write(store, *events)
        fresh_rows = _ssdeep_rows(store)
        expected = _correlations(store, queries)
        stats = {k: v for k, v in store.stats().items() if k != "store_bytes"}
        _make_format_1(store)
        assert _ssdeep_rows(store) != fresh_rows
    assert any(expected.values())

    # read-only: read as it is (nothing written), correlation queries the old way
    with Store(path, map_size=1 << 30, readonly=True) as store:
        assert store.format == 1
        assert _correlations(store, queries) == expected
    with Store(path, map_size=1 << 30, readonly=True) as store:
        assert store.format == 1

    caplog.set_level(logging.INFO, logger="fedmisp.store")
    with Store(path, map_size=1 << 30) as store:
        assert store.format == STORE_FORMAT
        assert [r.getMessage() for r in caplog.records if "upgraded" in r.getMessage()], caplog.text
        assert _ssdeep_rows(store) == fresh_rows  # exactly what a fresh write indexes
        with store.database.env.begin(write=True) as txn, pytest.raises(lmdb.NotFoundError):
            store.database.env.open_db(b"ix_time", txn=txn, create=False)
        assert _correlations(store, queries) == expected
        assert store.check_integrity() == []
        assert {k: v for k, v in store.stats().items() if k != "store_bytes"} == stats
    caplog.clear()
    with Store(path, map_size=1 << 30) as store:  # once only
        assert store.format == STORE_FORMAT
    assert not [r for r in caplog.records if "upgraded" in r.getMessage()]


def test_a_store_from_a_newer_fedmisp_is_refused(tmp_path: Path):
    path = tmp_path / "store"
    with Store(path, map_size=1 << 30) as store, store.database.env.begin(write=True) as txn:
        txn.put(b"format", _BE8.pack(STORE_FORMAT + 1), db=store.database.db["meta"])
    for readonly in (False, True):
        with pytest.raises(StoreFormatError, match=f"store format {STORE_FORMAT + 1} was written by a newer fedmisp"):
            Store(path, map_size=1 << 30, readonly=readonly)


def test_a_new_store_records_its_format(tmp_path: Path):
    with Store(tmp_path / "store", map_size=1 << 30) as store, store.database.env.begin() as txn:
        assert _BE8.unpack(txn.get(b"format", db=store.database.db["meta"]))[0] == STORE_FORMAT


def _mixed_event(seed: int) -> dict:
    """An event whose elements differ in what policy reads: levels, a group, tags, objects, to_ids."""
    import copy

    from factories import event
    raw = copy.deepcopy(event(seed=seed, attributes=6, objects=2))["Event"]
    raw["Attribute"][0]["distribution"] = "0"
    raw["Attribute"][1]["Tag"] = [{"name": "tlp:red"}, {"name": "Internal:Only"}]
    raw["Attribute"][2]["to_ids"] = False
    raw["Object"][0]["distribution"] = "1"
    return {"Event": raw}


def _in_order(view):
    import dataclasses
    return dataclasses.replace(view, elements=tuple(sorted(view.elements, key=lambda e: e.uuid)))


def test_the_policy_views_kept_with_a_revision_are_the_views_of_its_bodies(tmp_path: Path):
    """A sender decides from the views kept beside each revision, not from its decoded bodies:
    they give the same event view and digests, imported or received; a store without them (an
    earlier version's), or whose views do not cover exactly the bodies held, falls back to the
    bodies; the integrity check finds a view that does not match its body."""
    import json

    from fedmisp.gossip.replica import Replica
    from fedmisp.node.importer import import_paths
    from fedmisp.policy.holding import pack_views
    from fedmisp.policy.model import event_view

    from federation import make_federation, settle
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(_mixed_event(5)))
    import_paths(nodes["a"], [path])
    settle(nodes)
    event_uuid = json.loads(path.read_text())["Event"]["uuid"]
    for name in ("a", "b"):
        store = nodes[name].store
        record, entries = store.revision_entries(event_uuid)
        kept = store.revision_views(event_uuid)
        assert kept is not None and kept[0].id == record.id
        decoded = event_view(record.body["event"], [e for _, _, e in entries])
        held = Replica(nodes[name]).held_event(event_uuid)
        assert _in_order(held.view) == _in_order(decoded)  # (kept in no particular order)
        assert held.digest_of == {e["uuid"]: d for d, _, e in entries}
        assert store.check_integrity() == []
    # b holds the event without what a withheld (the org-only and the tlp:red attribute): its
    # views are of what it holds
    b_views, a_views = nodes["b"].store.revision_views(event_uuid)[1], nodes["a"].store.revision_views(event_uuid)[1]
    assert len(b_views) == len(nodes["b"].store.revision_entries(event_uuid)[1]) < len(a_views)
    store = nodes["a"].store
    record, entries = store.revision_entries(event_uuid)
    views = store.revision_views(event_uuid)[1]
    with store.database.env.begin(write=True) as txn:  # one view fewer than bodies held: not used
        txn.put(record.id, pack_views(views[1:]), db=store.database.db["views"])
    assert store.revision_views(event_uuid) is None
    assert Replica(nodes["a"]).held_event(event_uuid).view == event_view(record.body["event"], [e for _, _, e in entries])
    assert Replica(nodes["a"]).held_event(event_uuid).view.elements != ()
    forged = [(d, v._replace(distribution=3)) if i == 0 else (d, v) for i, (d, v) in enumerate(views)]
    with store.database.env.begin(write=True) as txn:  # a view that does not match its body: reported
        txn.put(record.id, pack_views(forged), db=store.database.db["views"])
    assert any("does not match its body" in p for p in store.check_integrity())
    home = store.path
    for node in nodes.values():
        node.close()
    env = lmdb.open(str(home), max_dbs=64)  # as an earlier version left it: no views database
    with env.begin(write=True) as txn:
        txn.drop(env.open_db(b"views", txn=txn), delete=True)
    env.close()
    old = Store(home, readonly=True)
    try:
        assert old.database.db["views"] is None and old.revision_views(event_uuid) is None
        assert old.revision_entries(event_uuid) is not None and old.check_integrity() == []
    finally:
        old.close()
