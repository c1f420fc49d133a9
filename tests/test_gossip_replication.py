"""Replication between real nodes (in one process): DESIGN's distribution table, hop by hop."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fedmisp.policy.holding import unpack_holding
from fedmisp.node.importer import import_paths

from factories import event
from federation import make_federation, settle


def _event_at_level(tmp_path: Path, seed: int, level: int, **header) -> tuple[Path, dict]:
    raw = copy.deepcopy(event(seed=seed, attributes=3, objects=0))
    raw["Event"]["distribution"] = str(level)
    for a in raw["Event"]["Attribute"]:
        a["distribution"] = "5"
    raw["Event"].update(header)
    path = tmp_path / f"ev{seed}.json"
    path.write_text(json.dumps(raw))
    return path, raw["Event"]


def held(node) -> set[str]:
    return set(node.store.event_uuids())


def test_each_level_travels_exactly_as_far_as_the_table_says(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("c", "d")])
    events = {level: _event_at_level(tmp_path, 100 + level, level)[1]["uuid"] for level in range(4)}
    import_paths(nodes["a"], [tmp_path / f"ev{100 + level}.json" for level in range(4)])
    settle(nodes)
    assert held(nodes["a"]) == set(events.values())
    assert held(nodes["b"]) == {events[1], events[2], events[3]}
    assert held(nodes["c"]) == {events[2], events[3]}
    assert held(nodes["d"]) == {events[3]}
    # a level-2 event is held one hop away as 1 and two hops away as 0
    assert unpack_holding(nodes["b"].store.holding(events[2])).levels[events[2]] == 1
    assert unpack_holding(nodes["c"].store.holding(events[2])).levels[events[2]] == 0
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


def test_an_attribute_tagged_with_an_excluded_tag_is_withheld_and_the_rest_goes(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")],
                            {("a", "b"): {"push": {"tags_exclude": ["internal:*"]}}})
    path, raw = _event_at_level(tmp_path, 7, 3)
    raw_doc = json.loads(path.read_text())
    raw_doc["Event"]["Attribute"][1]["Tag"] = [{"name": "internal:only"}]
    path.write_text(json.dumps(raw_doc))
    import_paths(nodes["a"], [path])
    settle(nodes)
    exported = nodes["b"].store.export_event(raw["uuid"])["Event"]
    assert {a["uuid"] for a in exported["Attribute"]} == {raw["Attribute"][0]["uuid"], raw["Attribute"][2]["uuid"]}
    for node in nodes.values():
        node.close()


def test_unpublished_and_level_0_events_never_leave_and_re_pulling_is_a_no_op(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    p1, _ = _event_at_level(tmp_path, 8, 3, published=False)
    p2, _ = _event_at_level(tmp_path, 9, 0)
    p3, shared = _event_at_level(tmp_path, 10, 3)
    import_paths(nodes["a"], [p1, p2, p3])
    settle(nodes)
    assert held(nodes["b"]) == {shared["uuid"]}
    before = nodes["b"].store.stats()
    settle(nodes)
    assert nodes["b"].store.stats() == before
    for node in nodes.values():
        node.close()


def test_a_newer_revision_replaces_the_old_one_downstream(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    path, raw = _event_at_level(tmp_path, 11, 3)
    import_paths(nodes["a"], [path])
    settle(nodes)
    doc = json.loads(path.read_text())
    doc["Event"]["timestamp"] = str(int(doc["Event"]["timestamp"]) + 100)
    doc["Event"]["info"] = "updated at the source"
    doc["Event"]["Attribute"] = doc["Event"]["Attribute"][:2]
    path.write_text(json.dumps(doc))
    import_paths(nodes["a"], [path])
    settle(nodes)
    for name in ("b", "c"):
        exported = nodes[name].store.export_event(raw["uuid"])["Event"]
        assert exported["info"] == "updated at the source" and len(exported["Attribute"]) == 2
        assert nodes[name].store.check_integrity() == []
    for node in nodes.values():
        node.close()


def test_sharing_group_data_travels_only_through_members(tmp_path):
    """a - b - c - d in a line; the group has a, b and d: d is a member but only reachable through
    c, which is not, so the group's event reaches b only."""
    from fedmisp.gossip.sharing_groups import create, revise
    nodes = make_federation(tmp_path, ["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("c", "d")])
    orgs = {n: node.config.org_uuid for n, node in nodes.items()}
    settle(nodes)  # org records everywhere
    group = create(nodes["a"].store, nodes["a"].identity, orgs["a"], "LE-CSIRT",
                   {orgs["b"]: False, orgs["d"]: False})
    path, raw = _event_at_level(tmp_path, 70, 4, sharing_group_uuid=group.uuid)
    import_paths(nodes["a"], [path])
    settle(nodes)
    assert held(nodes["b"]) == {raw["uuid"]}
    assert held(nodes["c"]) == set() and held(nodes["d"]) == set()
    assert nodes["c"].store.sharing_group(group.uuid) is None  # the group itself goes to members only
    # the owner removes b: b drops what it held of the group and receives nothing new of it
    revise(nodes["a"].store, nodes["a"].identity, orgs["a"], group.uuid, remove=(orgs["b"],))
    path2, raw2 = _event_at_level(tmp_path, 71, 4, sharing_group_uuid=group.uuid)
    import_paths(nodes["a"], [path2])
    settle(nodes)
    assert held(nodes["b"]) == set()
    for node in nodes.values():
        node.close()


def test_a_sighting_reaches_the_events_creator_two_hops_away(tmp_path):
    from fedmisp.model.records import KIND_SIGHTINGS, seal
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    path, raw = _event_at_level(tmp_path, 80, 3)
    import_paths(nodes["a"], [path])
    settle(nodes)
    attribute = raw["Attribute"][0]
    sighting = {"Organisation": {"name": "Org c", "uuid": nodes["c"].config.org_uuid},
                "attribute_uuid": attribute["uuid"], "date_sighting": 1_800_000_000, "source": "ids",
                "type": 0, "uuid": "a5a5a5a5-0000-4000-8000-000000000001"}
    nodes["c"].store.write_records([seal(nodes["c"].identity, KIND_SIGHTINGS,
                                         {"event_uuid": raw["uuid"], "sightings": [sighting]})])
    settle(nodes)
    exported = nodes["a"].store.export_event(raw["uuid"])["Event"]
    seen = [s for a in exported["Attribute"] for s in a.get("Sighting", [])]
    assert [s["uuid"] for s in seen] == [sighting["uuid"]] and seen[0]["source"] == "ids"
    for node in nodes.values():
        node.close()


def test_what_came_only_over_a_correlation_only_link_is_matched_but_never_shown_or_relayed(tmp_path):
    """c takes o's data for correlation only, and the same event from x, whose filter keeps the md5
    from c: c shows the event without the md5, finds the md5 by correlation, and never relays it."""
    from fedmisp.correlate.engine import Correlator
    nodes = make_federation(tmp_path, ["o", "x", "c", "y"], [("o", "x"), ("x", "c"), ("o", "c"), ("c", "y")],
                            {("c", "o"): {"mode": "correlation-only"},
                             ("x", "c"): {"push": {"types_exclude": ["md5"]}}})
    path, raw = _event_at_level(tmp_path, 90, 3)
    md5 = next(a for a in raw["Attribute"] if a["type"] == "md5")
    import_paths(nodes["o"], [path])
    settle(nodes)
    shown = nodes["c"].store.export_event(raw["uuid"])["Event"]
    assert md5["uuid"] not in {a["uuid"] for a in shown["Attribute"]} and len(shown["Attribute"]) == 2
    assert [m.attribute_uuid for m in Correlator(nodes["c"].store).value(md5["value"], "md5").matches] == [md5["uuid"]]
    assert md5["uuid"] not in {a["uuid"] for a in nodes["y"].store.export_event(raw["uuid"])["Event"]["Attribute"]}
    for node in nodes.values():
        node.close()


def _rows_of(node) -> dict[str, list]:
    from fedmisp.store.rows import ROW_DBS
    with node.store.database.env.begin() as txn:
        return {name: [(bytes(k), bytes(v)) for k, v in txn.cursor(db=node.store.database.db[name])]
                for name in ROW_DBS + ("events", "holdings", "ix_org", "ix_event_time")}


def test_rows_built_in_worker_processes_are_the_rows_built_in_process(tmp_path, monkeypatch):
    """c builds the rows of what it pulls in worker processes (every batch, chunks of 2 bodies),
    b in its own process: both stores end byte for byte the same; a worker that dies makes the
    next batch build its rows in process, and the pull goes on."""
    import fedmisp.gossip.rows_pool as rows_module
    from fedmisp.gossip.driver import InMemory, pull
    from fedmisp.gossip.replica import Replica
    monkeypatch.setattr(rows_module, "ROWS_POOL_MIN", 1)
    monkeypatch.setattr(rows_module, "ROWS_CHUNK", 2)
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("a", "c")])
    import_paths(nodes["a"], [_event_at_level(tmp_path, 200 + i, 3)[0] for i in range(3)])
    a = Replica(nodes["a"])
    by_workers = Replica(nodes["c"], rows_workers=1)
    try:
        pull(Replica(nodes["b"]), nodes["b"].config.peers[0], InMemory(a, "b"))
        pull(by_workers, nodes["c"].config.peers[0], InMemory(a, "c"))
        assert by_workers.rows._pool is not None  # the rows really were built by a worker
        assert _rows_of(nodes["c"]) == _rows_of(nodes["b"]) and len(held(nodes["c"])) == 3
        killed = by_workers.rows._pool
        for process in list(killed._processes.values()):
            process.kill()
            process.join()
        import_paths(nodes["a"], [_event_at_level(tmp_path, 210, 3)[0]])
        pull(Replica(nodes["b"]), nodes["b"].config.peers[0], InMemory(a, "b"))
        report = pull(by_workers, nodes["c"].config.peers[0], InMemory(a, "c"))
        assert report.stored == 1 and _rows_of(nodes["c"]) == _rows_of(nodes["b"])
        assert by_workers.rows._pool is not killed  # the broken pool was let go
        assert nodes["c"].store.check_integrity() == []
    finally:
        by_workers.close()
        for node in nodes.values():
            node.close()


@pytest.mark.parametrize("ahead_cap", [None, 1])
def test_rows_built_ahead_as_bodies_arrive_are_used_only_for_what_policy_keeps(tmp_path, monkeypatch, ahead_cap):
    """c's workers start on each event's rows as its bodies arrive. c and b both refuse md5 on
    pull: events with an md5 have their rows built anew for what is kept, the others use the rows
    built ahead; a later revision adds the rows of the bodies it keeps from the held one. With the
    ahead cap at one body, an event's first body is built ahead and the rest with its batch. c's
    store ends byte for byte the same as b's, which builds every row in process."""
    import fedmisp.gossip.rows_pool as rows_module
    from fedmisp.gossip.driver import InMemory, pull
    from fedmisp.gossip.replica import Replica
    from fedmisp.gossip.rows_pool import RowsPool
    monkeypatch.setattr(rows_module, "ROWS_POOL_MIN", 1)
    monkeypatch.setattr(rows_module, "ROWS_CHUNK", 2 if ahead_cap is None else 1)
    if ahead_cap is not None:
        monkeypatch.setattr(rows_module, "AHEAD_BODIES", ahead_cap)
    no_md5 = {"pull": {"types_exclude": ["md5"]}}
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("a", "c")],
                            {("b", "a"): no_md5, ("c", "a"): no_md5})
    paths = [_event_at_level(tmp_path, 300 + i, 3)[0] for i in range(6)]
    for path in paths[::2]:  # half the events without an md5
        doc = json.loads(path.read_text())
        doc["Event"]["Attribute"] = [x for x in doc["Event"]["Attribute"] if x["type"] != "md5"]
        path.write_text(json.dumps(doc))
    docs = [json.loads(p.read_text())["Event"] for p in paths]
    with_md5 = {d["uuid"] for d in docs if any(a["type"] == "md5" for a in d["Attribute"])}
    assert 0 < len(with_md5) < len(docs)  # both cases are exercised
    import_paths(nodes["a"], paths)
    a = Replica(nodes["a"])
    by_workers = Replica(nodes["c"], rows_workers=1)
    built_anew: list[str] = []
    submit = RowsPool._submit_rows

    def counting(self, pool, record, entries):
        built_anew.append(record.body["event"]["uuid"])
        return submit(self, pool, record, entries)
    monkeypatch.setattr(RowsPool, "_submit_rows", counting)
    try:
        pull(Replica(nodes["b"]), nodes["b"].config.peers[0], InMemory(a, "b"))
        report = pull(by_workers, nodes["c"].config.peers[0], InMemory(a, "c"))
        assert report.stored == len(docs) and report.refused == {"pull-filter-type": len(with_md5)}
        if ahead_cap is None:
            assert set(built_anew) == with_md5  # the rest used the rows built ahead
        assert by_workers.rows._ahead == {} and by_workers.rows._ahead_bodies == 0
        assert _rows_of(nodes["c"]) == _rows_of(nodes["b"])
        # a new revision changes one attribute: one body is fetched, the others kept from the held one
        plain = next(p for p, d in zip(paths, docs) if d["uuid"] not in with_md5)
        doc = json.loads(plain.read_text())
        doc["Event"]["timestamp"] = str(int(doc["Event"]["timestamp"]) + 10)
        doc["Event"]["Attribute"][0]["comment"] = "changed"
        doc["Event"]["Attribute"][0]["timestamp"] = doc["Event"]["timestamp"]
        plain.write_text(json.dumps(doc))
        import_paths(nodes["a"], [plain])
        pull(Replica(nodes["b"]), nodes["b"].config.peers[0], InMemory(a, "b"))
        assert pull(by_workers, nodes["c"].config.peers[0], InMemory(a, "c")).stored == 1
        shown = nodes["c"].store.export_event(doc["Event"]["uuid"])["Event"]
        assert shown["Attribute"][0]["comment"] == "changed"
        assert len(shown["Attribute"]) == len(doc["Event"]["Attribute"]) > 1
        assert _rows_of(nodes["c"]) == _rows_of(nodes["b"]) and nodes["c"].store.check_integrity() == []
    finally:
        by_workers.close()
        for node in nodes.values():
            node.close()


_KILLED_NODE = """
import os, signal, sys, types
from fedmisp.gossip.replica import Replica
if __name__ == "__main__":
    replica = Replica(types.SimpleNamespace(store=None), rows_workers=1)
    pool = replica.rows.pool_for(10 ** 9)
    print(pool.submit(os.getpid).result(), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_row_workers_exit_when_their_node_is_killed(tmp_path):
    import subprocess
    import sys
    import time
    script = tmp_path / "node.py"
    script.write_text(_KILLED_NODE)
    # stdout read line by line: an orphaned worker would keep the pipe open forever
    node = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(node.stdout.readline())
    node.wait(timeout=60)
    node.stdout.close()

    def alive() -> bool:
        try:
            return Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False
    deadline = time.monotonic() + 30
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive():
        import os
        import signal
        os.kill(worker, signal.SIGKILL)
        raise AssertionError(f"row worker {worker} outlived its killed node")


def test_a_holding_packs_grouped_and_reads_back_whole_and_the_earlier_form_still_reads():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from fedmisp.policy.holding import holding_all_from, pack_holding
    from fedmisp.model import canonical
    from fedmisp.policy.model import Holding

    uuids = st.sampled_from([f"u{i}" for i in range(12)])
    peers = st.frozensets(st.sampled_from(["p", "q", "r"]), min_size=1, max_size=3)

    @settings(max_examples=200, deadline=None)
    @given(st.dictionaries(uuids, st.tuples(st.integers(0, 4), st.none() | peers)),
           st.dictionaries(uuids, st.integers(0, 4)), st.booleans())
    def check(items, correlation, correlation_only):
        holding = Holding(levels={u: lv for u, (lv, _) in items.items()},
                          sources={u: src for u, (_, src) in items.items() if src is not None},
                          correlation_only=correlation_only, correlation_levels=correlation)
        packed = pack_holding(holding)
        # the same holding built in another order packs to the same bytes
        again = Holding(levels=dict(reversed(list(holding.levels.items()))),
                        sources=dict(reversed(list(holding.sources.items()))),
                        correlation_only=correlation_only, correlation_levels=correlation)
        assert pack_holding(again) == packed
        back = unpack_holding(canonical.unpack(packed))
        assert dict(back.levels) == dict(holding.levels)
        assert dict(back.sources) == dict(holding.sources)
        assert back.correlation_only == correlation_only
        assert dict(back.correlation_levels) == correlation
        # the earlier per-element form (stores written before the grouped one) reads the same
        earlier = {"c": correlation_only, "k": correlation, "l": dict(holding.levels),
                   "s": {u: sorted(v) for u, v in holding.sources.items()}}
        old = unpack_holding(earlier)
        assert dict(old.levels) == dict(back.levels) and dict(old.sources) == dict(back.sources)
        for peer in ("p", "q"):
            assert holding_all_from(canonical.unpack(packed), peer) == holding_all_from(earlier, peer)

    check()


def test_a_large_pull_starts_the_row_workers_before_its_first_batch_and_a_small_one_never():
    import types

    from fedmisp.gossip.replica import Replica
    from fedmisp.gossip.rows_pool import ROWS_POOL_MIN
    small = Replica(types.SimpleNamespace(store=None), rows_workers=2)
    small.expect_bodies(ROWS_POOL_MIN - 1)
    assert small.rows._pool is None
    large = Replica(types.SimpleNamespace(store=None), rows_workers=2)
    try:
        large.expect_bodies(ROWS_POOL_MIN)
        pool = large.rows._pool
        assert pool is not None and len(pool._processes) == 2
        large.expect_bodies(ROWS_POOL_MIN)  # started once
        assert large.rows._pool is pool and len(pool._processes) == 2
    finally:
        large.close()


def test_the_next_changes_page_is_computed_ahead_and_served_only_while_nothing_it_depends_on_changed(
        tmp_path, monkeypatch):
    import asyncio

    import fedmisp.gossip.sender as sender_module
    from fedmisp.gossip.http import PeerProtocol
    from fedmisp.gossip.observe import SENT
    from fedmisp.gossip.replica import Replica

    monkeypatch.setattr(sender_module, "PAGE_ELEMENTS", 1)  # one event per page
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    import_paths(nodes["a"], [_event_at_level(tmp_path, 300 + i, 3)[0] for i in range(4)])

    class Recorder:
        def __init__(self):
            self.sent = []

        def decided(self, decision):
            if decision.action == SENT:
                self.sent.append(decision.record_id)

        def pulled(self, peer, seconds, ok):
            pass

    recorder = Recorder()
    a = Replica(nodes["a"], recorder)
    computed = []
    original = a.changes_for

    def counting(*args):
        computed.append(args[1])
        return original(*args)
    monkeypatch.setattr(a, "changes_for", counting)

    async def scenario():
        loop = asyncio.get_running_loop()

        async def run_blocking(fn, *args):
            return await loop.run_in_executor(None, fn, *args)
        protocol = PeerProtocol(a, run_blocking)
        peer = a.peer("b")
        first = await protocol._changes(peer, 0, 200)
        await protocol._ahead["b"][2]
        assert first["more"] and computed == [0, first["last_seq"]]  # this page, and the next ahead
        assert len(recorder.sent) == len(first["changes"])  # the page ahead is not reported yet
        second = await protocol._changes(peer, first["last_seq"], 200)
        await protocol._ahead["b"][2]
        assert computed == [0, first["last_seq"], second["last_seq"]]  # served as computed ahead
        assert second == original(peer.policy, first["last_seq"], 200, [])
        # something new is stored: the page computed ahead is computed again
        import_paths(nodes["a"], [_event_at_level(tmp_path, 310, 3)[0]])
        third = await protocol._changes(peer, second["last_seq"], 200)
        await protocol._ahead["b"][2]
        assert computed[-2:] == [second["last_seq"], third["last_seq"]]
        assert computed.count(second["last_seq"]) == 2
        assert third == original(peer.policy, second["last_seq"], 200, [])
        # each record served was reported once
        served = [c["record"] for page in (first, second, third) for c in page["changes"]]
        assert len(recorder.sent) == len(served) == len(set(recorder.sent))
    try:
        asyncio.run(scenario())
    finally:
        for node in nodes.values():
            node.close()


class _Crafted:
    """A peer serving one signed revision (its author's key is a known peer's) and its bodies."""

    def __init__(self, records: list[tuple[object, dict[bytes, bytes]]]):
        self.records = records

    def changes(self, since, limit):
        changes = [{"seq": i + 1, "record": rec.wire(), "event_level": 3, "elements": 3}
                   for i, (rec, _) in enumerate(self.records) if i + 1 > since]
        return {"changes": changes, "last_seq": len(self.records), "more": False, "head": len(self.records)}

    def bodies(self, event_uuid, digests, everything=False):
        bodies = next(b for rec, b in self.records if rec.body["event"]["uuid"] == event_uuid)
        return list(bodies.values()) if everything else [bodies.get(d) for d in digests]


_GOOD_ELEMENT = {"uuid": "22222222-2222-4222-8222-222222222222", "type": "ip-dst", "category": "Network activity",
                 "value": "192.0.2.7", "distribution": 5, "to_ids": True, "timestamp": 1_700_000_000}


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("where, change, field", [
    ("element", {"uuid": None}, "element.uuid"),
    ("element", {"uuid": "not-a-uuid"}, "element.uuid"),
    ("element", {"distribution": "3"}, "element.distribution"),
    ("element", {"value": 1234}, "element.value"),
    ("element", {"Tag": ["tlp:red"]}, "element.Tag"),
    ("element", {"to_ids": "yes"}, "element.to_ids"),
    ("header", {"timestamp": "1700000000"}, "event.timestamp"),
    ("header", {"Orgc": None}, "event.Orgc"),
    ("header", {"distribution": 9}, "event.distribution"),
    # 0-4 is a header's range: 5 "inherit" is only for elements (issue 21 item 12)
    ("header", {"distribution": 5}, "event.distribution"),
    ("header", {"Tag": [{"name": 7}]}, "event.Tag"),
])
def test_a_known_peers_signed_but_malformed_revision_is_refused_and_the_pull_goes_on(
        tmp_path, monkeypatch, workers, where, change, field):
    """Signed by a known peer's key, but a field this node reads has the wrong type: before, the
    pull raised on it every time and nothing more came from that peer. Now a bad element is refused
    (its event keeps the rest), a bad header refuses its event, and the next event arrives."""
    import fedmisp.gossip.rows_pool as rows_module
    from fedmisp.gossip.driver import pull
    from fedmisp.gossip.observe import Decision
    from fedmisp.gossip.replica import Replica
    from fedmisp.model.records import KIND_EVENT, fresh_salts, seal, seal_element
    monkeypatch.setattr(rows_module, "ROWS_POOL_MIN", 1)
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    a = nodes["a"]

    def crafted(n: int, header_change: dict, element_change: dict):
        header = {"uuid": f"1111111{n}-1111-4111-8111-111111111111", "info": "x", "timestamp": 1_700_000_000,
                  "distribution": 3, "Orgc": {"uuid": a.config.org_uuid, "name": "Org a"}, "date": "2024-01-01",
                  "threat_level_id": 2, "analysis": 0, "published": True, "publish_timestamp": 1_700_000_000}
        header = {k: v for k, v in {**header, **header_change}.items() if v is not None}
        first = {k: v for k, v in {**_GOOD_ELEMENT, "uuid": f"2222222{n}-2222-4222-8222-222222222222",
                                   **element_change}.items() if v is not None}
        second = dict(_GOOD_ELEMENT, uuid=f"3333333{n}-3333-4333-8333-333333333333", value=f"198.51.100.{n}")
        sealed = [seal_element(e, salt) for e, salt in zip([first, second], fresh_salts(2))]
        record = seal(a.identity, KIND_EVENT, {"event": header, "elements": [d for d, _ in sealed]})
        return record, dict(sealed)

    bad = crafted(1, change if where == "header" else {}, change if where == "element" else {})
    good = crafted(2, {}, {})
    decisions: list[Decision] = []
    observer = type("O", (), {"decided": lambda self, d: decisions.append(d)})()
    replica = Replica(nodes["b"], observer, rows_workers=workers)
    try:
        report = pull(replica, nodes["b"].config.peers[0], _Crafted([bad, good]))
        bad, good = bad[0], good[0]
        if workers:
            assert replica.rows._pool is not None  # the bodies were opened by a worker
    finally:
        replica.close()
    held_events = held(nodes["b"])
    assert report.refused == {"malformed": 1}
    (refusal,) = [d for d in decisions if d.reason == "malformed"]
    assert field in refusal.detail
    if where == "header":
        assert held_events == {good.body["event"]["uuid"]}
    else:  # the event is kept without the bad element
        assert held_events == {bad.body["event"]["uuid"], good.body["event"]["uuid"]}
        shown = nodes["b"].store.export_event(bad.body["event"]["uuid"])["Event"]["Attribute"]
        assert [x["value"] for x in shown] == ["198.51.100.1"]
    assert nodes["b"].store.checkpoint("a") == 2 and nodes["b"].store.check_integrity() == []
    for node in nodes.values():
        node.close()


@pytest.mark.parametrize("body, field", [
    (dict(_GOOD_ELEMENT, distribution=None), "element.distribution: missing"),
    (dict(_GOOD_ELEMENT, timestamp=None), "element.timestamp: missing"),
    ({"uuid": _GOOD_ELEMENT["uuid"], "name": "domain-ip", "distribution": 5, "timestamp": None}, "element.timestamp"),
    ({"uuid": _GOOD_ELEMENT["uuid"], "relationship_type": "related-to", "object_uuid": None,
      "referenced_uuid": _GOOD_ELEMENT["uuid"], "timestamp": 1}, "element.object_uuid: missing"),
])
def test_a_required_field_written_as_null_is_missing(body, field):
    """A null is no value: policy and the export would read None where they need a level or a time."""
    from fedmisp.model.received import received_problem
    assert field in (received_problem(body) or "")
