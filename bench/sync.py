"""Replication benchmark: real `fedmisp run` nodes on 127.0.0.1, each figure beside a same-run baseline.

Run (from the repository root):

    .venv/bin/python bench/sync.py                 # the real figures (about 4-6 minutes on 2 cores)
    .venv/bin/python bench/sync.py --quick         # small run (about 2 minutes)
    .venv/bin/python bench/sync.py --only spread   # one part: bulk, spread, idle or liveness (comma-separated)
    .venv/bin/python bench/sync.py --profile       # also profile the bulk pull in-process (where time goes)
    .venv/bin/python bench/sync.py --json          # machine-readable
    .venv/bin/python bench/sync.py --keep          # keep the node homes (and their node.log) for inspection

What it measures (ratios are the headline: machines are noisy; nothing here asserts a timing, and
the exit status only says whether the benchmark ran):

1. bulk -- ``--attributes`` (200,000) synthetic attributes (bench/synth.py, rewritten to
   distribution 3 "all communities", every attribute and object inheriting) replicated from one
   node to a fresh one.  Baseline: the LOCAL ingest rate of the same files on the same machine,
   ``fedmisp import`` into a fresh home exactly as bench/ingest.py measures it (that home then
   serves as the sending node).  The sender is started first; the clock starts when the receiver
   prints its "serving" line (its start-up pull begins then; the time from spawning the process is
   printed beside it) and stops when the receiver's store, polled read-only every 50 ms, holds
   every event.  ``--repeat`` (3) rounds of ingest then replication, interleaved so load drifts hit
   both; the headline is best replication / best ingest, each round's own ratio is printed too,
   with the CPU seconds the receiver (with its row worker processes) and sender used (their sum close to the wall time
   means the pull is a serial ping-pong between the two).  ``--profile`` repeats the pull in one
   process over gossip/driver.py's in-memory transport: time per side, the echo cost (the
   receiver's changes feed read back for the sender) and a cProfile listing.
   Target: replication rate >= 0.5 x local ingest rate.
2. spread -- ``--nodes`` (20) nodes on a seeded random connected ``--degree``-regular (4) mesh,
   anti-entropy every ``--spread-anti-entropy`` s.  After warm-up (every node knows every org
   record and no peer lags), one new ``--spread-attributes``-attribute event (distribution 3) is
   POSTed to a random node's MISP API (/events/add with its admin key: the API write triggers the
   eager notices), ``--trials`` times.  Measured: time until every node holds it (beside the time
   the first neighbour holds it, and the origin's eccentricity in hops), and the bytes sent: the
   sum of bytes_out over every node's GET /node/v1/peers after minus before, less the idle
   traffic of the same window (idle rate measured on the same mesh just before), divided by
   (payload x receiving nodes), payload = the event's signed record + element bodies.  Target:
   <= 1.3 (flooding every edge would be about the degree, 4).  The per-(node, peer) byte deltas
   are classified (full transfer / offer of an event already held / empty pull) to show where
   bytes go beyond one transfer per node.
3. idle -- pairs of peered nodes holding a small and a large amount of data (1 event; the bulk
   pair; many small events), anti-entropy every ``--idle-anti-entropy`` s, nothing new: the
   bytes both nodes count over a window of about ``--idle-rounds`` rounds, per pull (one node
   pulling one peer once: request + reply), and one idle pull sent through a counting TCP relay
   to show the real wire size with HTTP and Fedmisp-Auth headers (the node counters count
   sealed bodies only).  Target: < 1 KB per peer per round, independent of the data held (the
   large/small ratio is the headline).
4. liveness -- five fresh nodes in a line A-B-C-D with E on B, anti-entropy every
   ``--liveness-anti-entropy`` s (30, the node's default), started together, ``--liveness-rounds``
   (3) times.  Measured from the moment the last of them prints "serving": (a) until every node
   holds every organisation's own signed org record; then an event (distribution 3) is POSTed to
   D's MISP API and (b) is the time until A, three hops away, holds it; then a sighting of its
   attribute is POSTed to D's /sightings/add and (c) is the time until A holds that sighting.
   Each as a ratio to the anti-entropy period (the baseline: what the scheduled pass alone would
   need is about one period per hop).  Target: under 0.1 each, i.e. the eager paths (a pull and
   notices at start, a notice when a log head moves) deliver, not the scheduled pass.  The CPU
   seconds the five node processes used over the round are printed beside the wall time.

Node processes (bench/sync_nodes.py) are started and stopped by this script (SIGTERM); homes live
under ``<data-dir>/sync-runs/`` and are removed at the end unless --keep (or a part failed).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _p in (str(BENCH_DIR), str(REPO_ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import ingest  # noqa: E402  (bench/ingest.py: the local-ingest baseline, run exactly as it runs it)
import synth  # noqa: E402
import sync_nodes as sn  # noqa: E402

DEFAULT_DATA_DIR = BENCH_DIR / ".data"
TARGET_BULK = 0.5  # replication rate / local ingest rate, at least
TARGET_SPREAD = 1.3  # bytes sent / (payload x receiving nodes), at most
TARGET_IDLE = 1024  # bytes per peer per anti-entropy round, under
TARGET_LIVENESS = 0.1  # seconds to converge / anti-entropy period, under
LINE = [("a", "b"), ("b", "c"), ("c", "d"), ("e", "b")]  # liveness: A is three hops from D
BOX_OVERHEAD = 40  # NaCl box: 24-byte nonce + 16-byte MAC on every message
Json = dict[str, Any]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ==================================================================================================
# Data


def _distribution_3(event: Json) -> Json:
    """Every part of the event goes everywhere: event level 3, attributes and objects inherit."""
    event["distribution"] = "3"
    event["published"] = True
    for attribute in event.get("Attribute", ()):
        attribute["distribution"] = "5"
    for obj in event.get("Object", ()):
        obj["distribution"] = "5"
        for attribute in obj.get("Attribute", ()):
            attribute["distribution"] = "5"
    return event


def dataset_d3(data_dir: Path, seed: int, attributes: int) -> tuple[list[Path], int]:
    """bench/synth.py's dataset for (seed, attributes), every event rewritten to distribution 3
    (cached beside it; a folder without its manifest is rebuilt).  Returns (files, attributes)."""
    base = synth.ensure_dataset(data_dir, seed, attributes, log=log)
    root = data_dir / "sync" / f"{seed}-{attributes}-d3"
    manifest = root / "manifest.json"
    if not manifest.exists():
        shutil.rmtree(root, ignore_errors=True)
        (root / "events").mkdir(parents=True)
        for event in base.events:
            doc = json.loads(event.path.read_text())
            _distribution_3(doc["Event"])
            (root / "events" / event.path.name).write_text(json.dumps(doc))
        manifest.write_text(json.dumps({"seed": seed, "attributes": base.attributes,
                                        "events": [e.path.name for e in base.events]}))
    names = json.loads(manifest.read_text())["events"]
    files = [root / "events" / name for name in names]
    ingest.warm_page_cache(files)
    return files, base.attributes


def small_events(data_dir: Path, seed: int, count: int, size: int) -> list[Path]:
    """`count` synthetic events of `size` attributes each (distribution 3), cached."""
    root = data_dir / "sync" / f"{seed}-small-{count}x{size}-d3"
    manifest = root / "manifest.json"
    if not manifest.exists():
        shutil.rmtree(root, ignore_errors=True)
        (root / "events").mkdir(parents=True)
        for i in range(count):
            event = _distribution_3(synth.make_event(seed, 5_000_000 + i, size))
            (root / "events" / f"{i:06d}.json").write_text(json.dumps({"Event": event}))
        manifest.write_text(json.dumps({"count": count}))
    return sorted((root / "events").glob("*.json"))


def import_into(node: sn.BenchNode, files: list[Path]) -> None:
    """`fedmisp import` into a home whose node is not running (not timed)."""
    from fedmisp.node import importer
    from fedmisp.node.home import Node
    node.close_store()
    with Node.open(node.home) as opened:
        report = importer.import_paths(opened, files)
    if report.refused:
        raise RuntimeError(f"import into {node.name} refused {len(report.refused)} event(s): {report.refused[0]}")


def payload_of(store: Any, event_uuid: str) -> tuple[int, int, int]:
    """(record bytes, body bytes, elements) of the held revision: what one full transfer carries."""
    found = store.revision_entries(event_uuid)
    if found is None:
        raise RuntimeError(f"event {event_uuid} not held")
    record, entries = found
    return len(record.wire()), sum(len(body) for _, body, _ in entries), len(entries)


def store_payload(store: Any) -> int:
    total = 0
    for event_uuid in store.event_uuids():
        record, bodies, _ = payload_of(store, event_uuid)
        total += record + bodies
    return total


# ==================================================================================================
# Shared node helpers


def mean_interval(anti_entropy: float) -> float:
    """APScheduler's interval trigger adds uniform(0, jitter) to each run after the previous
    (jittered) one, and the gossiper uses jitter = min(5, interval / 2)."""
    return anti_entropy + min(5.0, anti_entropy / 2) / 2


def peers_snapshot(nodes: list[sn.BenchNode]) -> dict[tuple[str, str], Json]:
    out = {}
    for node in nodes:
        for peer, status in node.peers().items():
            out[(node.name, peer)] = status
    return out


def settled(snapshot: dict[tuple[str, str], Json]) -> bool:
    """Every node has pulled every peer up to that peer's head (no lag)."""
    for status in snapshot.values():
        if "lag" in status:
            if status["lag"] is None or status["lag"] > 0:
                return False
        elif status.get("last_success") is None:
            return False
    return True


def wait_settled(nodes: list[sn.BenchNode], timeout: float, what: str,
                 extra: Callable[[], bool] = lambda: True) -> float:
    start = time.perf_counter()
    sn.wait_for(lambda: extra() and settled(peers_snapshot(nodes)), timeout, what, interval=0.5)
    return time.perf_counter() - start


def describe_peers(nodes: list[sn.BenchNode]) -> str:
    """What the nodes' /node/v1/peers say went wrong (errors, refusals), for a failure message."""
    notes = []
    for node in nodes:
        try:
            for peer, status in node.peers(timeout=10).items():
                if status.get("last_error") or status.get("refused"):
                    notes.append(f"{node.name}<-{peer}: error {status.get('last_error')!r}, "
                                 f"refused {status.get('refused')}, lag {status.get('lag')}")
        except Exception as e:  # noqa: BLE001 - a diagnostic, best effort
            notes.append(f"{node.name}: /node/v1/peers: {e}")
    return "; ".join(notes) or "no peer reports an error or refusal"


def total_bytes_out(snapshot: dict[tuple[str, str], Json]) -> int:
    return sum(s.get("bytes_out", 0) for s in snapshot.values())


def start_mesh(nodes: dict[str, sn.BenchNode], edges: list[tuple[str, str]], anti_entropy: float,
               timeout: float) -> None:
    """Configure and start every node; if a port was taken meanwhile, new ports and again."""
    for attempt in range(3):
        sn.configure(nodes, edges, anti_entropy)
        try:
            sn.start_all(list(nodes.values()), timeout=timeout)
            return
        except RuntimeError as e:
            if "already in use" not in str(e) or attempt == 2:
                raise
            log(f"    a port was taken ({e}); new ports, starting again")
            sn.stop_all(list(nodes.values()))
            for node in nodes.values():
                node.port = sn.free_port()


@contextlib.contextmanager
def running(nodes: list[sn.BenchNode]):
    try:
        yield nodes
    finally:
        sn.stop_all(nodes)


# ==================================================================================================
# 1. bulk


def run_bulk(args: argparse.Namespace, work: Path) -> Json:
    files, attributes = dataset_d3(args.data_dir, args.seed, args.attributes)
    log(f"bulk: {attributes:,} attributes in {len(files)} events, {args.repeat} round(s) of "
        "local ingest then replication (interleaved, best of each)")
    rounds: list[Json] = []
    pair: dict[str, sn.BenchNode] = {}
    for r in range(args.repeat):
        if pair and not args.keep:
            shutil.rmtree(work / f"round{r - 1}", ignore_errors=True)
        one, pair = bulk_round(args, work / f"round{r}", files, r)
        rounds.append(one)
    best_ingest = max(rounds, key=lambda x: x["ingest_attrs_per_s"])
    best = max(rounds, key=lambda x: x["attrs_per_s"])
    out: Json = dict(best)
    out.update({"ingest_seconds": best_ingest["ingest_seconds"], "ingest_attrs_per_s": best_ingest["ingest_attrs_per_s"],
                "ingest_cpu_seconds": best_ingest["ingest_cpu_seconds"],
                "ratio": best["attrs_per_s"] / best_ingest["ingest_attrs_per_s"], "rounds": rounds,
                "anti_entropy_seconds": args.bulk_anti_entropy})
    if args.profile:
        out["profile"] = profile_bulk(pair["sender"], work / f"round{args.repeat - 1}")
    out["_pair"] = pair  # the last round's nodes, reused by the idle part (not in the report)
    return out


def bulk_round(args: argparse.Namespace, work: Path, files: list[Path], r: int) -> tuple[Json, dict[str, sn.BenchNode]]:
    log(f"  [{r + 1}/{args.repeat}] local ingest (fedmisp import into a fresh home, as bench/ingest.py) ...")
    result = ingest.run_child("fedmisp", files, work / "ingest")
    if result.get("status") != "ok":
        raise RuntimeError(f"local ingest failed: {result.get('error')}")
    stored = result["details"]["attributes_stored"]
    ingest_rate = stored / result["seconds"]
    log(f"      {result['seconds']:.2f} s, {ingest_rate:,.0f} attrs/s")

    sender = sn.adopt_node(work / "ingest" / "home", "sender")
    receiver = sn.create_node(work / "receiver", "receiver")
    pair = {"sender": sender, "receiver": receiver}
    sn.configure(pair, [("sender", "receiver")], args.bulk_anti_entropy)
    want = sender.stats()
    sender.close_store()
    out: Json = {"attributes": stored, "events": want["events"], "files": len(files),
                 "ingest_seconds": result["seconds"], "ingest_cpu_seconds": result.get("cpu_seconds"),
                 "ingest_attrs_per_s": ingest_rate}
    with running([sender, receiver]):
        sn.start_all([sender])
        receiver.spawn()
        sn.wait_for(receiver.check_serving, 120, "the receiver to start", interval=0.01)
        cpu0 = (receiver.cpu_seconds(), sender.cpu_seconds())
        log(f"  [{r + 1}/{args.repeat}] replicating to a fresh node ...")
        done = sn.wait_for(lambda: receiver.stats()["events"] >= want["events"], args.timeout,
                           "the receiver to hold every event", interval=0.05)
        cpu1 = (receiver.cpu_seconds(), sender.cpu_seconds())
        if None not in cpu0 + cpu1:
            out["receiver_cpu_seconds"] = cpu1[0] - cpu0[0]
            out["sender_cpu_seconds"] = cpu1[1] - cpu0[1]
        seconds = done - receiver.serving_at
        got = receiver.stats()
        # the sender then pulls back from the receiver (it was notified): nothing to send, but the
        # receiver's changes feed pages through everything it just stored
        echo_start = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            wait_settled([sender, receiver], args.timeout, "the echo pull")
        echo = time.perf_counter() - echo_start
        snap = peers_snapshot([sender, receiver])
    payload = store_payload(sender.store())
    sender.close_store()
    rate = got["attributes"] / seconds
    out.update({
        "seconds": seconds, "seconds_from_spawn": done - receiver.started_at,
        "attributes_received": got["attributes"], "events_received": got["events"],
        "attrs_per_s": rate, "round_ratio": rate / ingest_rate,
        "payload_bytes": payload, "wire_bytes": snap[("sender", "receiver")]["bytes_out"]
        + snap[("receiver", "sender")]["bytes_out"],
        "echo_pull_seconds": echo,
    })
    out["wire_per_payload"] = out["wire_bytes"] / payload if payload else None
    log(f"      {seconds:.2f} s ({rate:,.0f} attrs/s, {out['round_ratio']:.2f}x this round's local ingest); "
        f"echo pull settled {echo:.1f} s later")
    if got["attributes"] != stored:
        out["warning"] = f"receiver holds {got['attributes']:,} of {stored:,} attributes"
    return out, pair


def profile_bulk(sender: sn.BenchNode, work: Path) -> Json:
    """The same pull in one process over the in-memory transport (gossip/driver.py InMemory):
    sender and receiver time split, then cProfile of the whole pull (no HTTP, no boxes)."""
    from fedmisp.gossip import replica as replica_mod
    from fedmisp.gossip import session as session_mod
    from fedmisp.gossip.driver import InMemory, pull
    from fedmisp.node.home import Node

    fresh = sn.create_node(work / "profile-receiver", "receiver")
    sn.configure({"sender": sender, "receiver": fresh}, [("sender", "receiver")], 30)
    spent: Counter[str] = Counter()
    patched: list[tuple[Any, str, Any]] = []

    def timed(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t
        patched.append((owner, name, original))
        setattr(owner, name, wrapper)

    timed(replica_mod.Replica, "changes_for", "sender: changes_for (views + policy for offers)")
    timed(replica_mod.Replica, "bodies_for", "sender: bodies_for")
    timed(session_mod.PullSession, "changes_received", "receiver: changes_received")
    timed(session_mod.PullSession, "bodies_received", "receiver: bodies_received (digest checks)")
    timed(replica_mod.Replica, "apply", "receiver: apply (policy in, holdings, store write)")
    log("bulk --profile: in-process pull, timed ...")
    try:
        with Node.open(sender.home) as s, Node.open(fresh.home) as r:
            rs, rr = replica_mod.Replica(s), replica_mod.Replica(r)
            t = time.perf_counter()
            report = pull(rr, rr.peer("sender"), InMemory(rs, "receiver"))
            total = time.perf_counter() - t
    finally:
        for owner, name, original in patched:
            setattr(owner, name, original)
    shutil.rmtree(fresh.home, ignore_errors=True)
    fresh = sn.create_node(work / "profile-receiver2", "receiver")
    sn.configure({"sender": sender, "receiver": fresh}, [("sender", "receiver")], 30)
    log("bulk --profile: in-process pull under cProfile ...")
    profiler = cProfile.Profile()
    with Node.open(sender.home) as s, Node.open(fresh.home) as r:
        rs, rr = replica_mod.Replica(s), replica_mod.Replica(r)
        profiler.enable()
        pull(rr, rr.peer("sender"), InMemory(rs, "receiver"))
        profiler.disable()
        # the echo: the receiver's changes feed as the sender's pull-back sees it (rule 5 refuses
        # every event, but each is opened whole first)
        t = time.perf_counter()
        since, more = 0, True
        offered = 0
        while more:
            page = rr.changes_for(rr.peer("sender").policy, since, 1000)
            since, more = page["last_seq"], page["more"]
            offered += sum(1 for c in page["changes"] if "elements" in c)
        echo = time.perf_counter() - t
    shutil.rmtree(fresh.home, ignore_errors=True)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(18)
    stats.sort_stats("cumulative").print_stats(30)
    return {"in_memory_seconds": total, "stored": report.stored, "split_seconds": dict(spent),
            "echo_changes_seconds": echo, "echo_offered": offered, "cprofile": text.getvalue()}


# ==================================================================================================
# 2. spread


def random_regular(n: int, degree: int, rng: random.Random) -> list[tuple[int, int]]:
    """A connected simple `degree`-regular graph on n nodes (pairing model, retried)."""
    if degree >= n or (n * degree) % 2:
        raise ValueError(f"no {degree}-regular graph on {n} nodes")
    for _ in range(100_000):
        stubs = [i for i in range(n) for _ in range(degree)]
        rng.shuffle(stubs)
        edges: set[tuple[int, int]] = set()
        for a, b in zip(stubs[::2], stubs[1::2]):
            edge = (min(a, b), max(a, b))
            if a == b or edge in edges:
                break
            edges.add(edge)
        else:
            if len(bfs(n, sorted(edges), 0)) == n:
                return sorted(edges)
    raise RuntimeError("could not draw a connected regular graph")


def bfs(n: int, edges: list[tuple[int, int]], start: int) -> dict[int, int]:
    adjacent: dict[int, list[int]] = {i: [] for i in range(n)}
    for a, b in edges:
        adjacent[a].append(b)
        adjacent[b].append(a)
    hops, frontier = {start: 0}, [start]
    while frontier:
        nxt = []
        for x in frontier:
            for y in adjacent[x]:
                if y not in hops:
                    hops[y] = hops[x] + 1
                    nxt.append(y)
        frontier = nxt
    return hops


def offer_sizes(store: Any, event_uuid: str, level: int = 3) -> Json:
    """Sizes of the messages one transfer of the event takes, encoded as gossip/replica.py and
    gossip/session.py encode them (distribution 3: every element offered at level 3)."""
    from fedmisp.gossip.session import encode
    from fedmisp.model.records import revision_elements
    record, entries = store.revision_entries(event_uuid)
    digests = list(revision_elements(record))
    held = store.held(event_uuid)
    offer = {"seq": held.seq, "record": record.wire(), "event_level": level,
             "elements": {d: level for d in digests}}
    bodies = [b for _, b, _ in entries]
    return {
        "record": len(record.wire()),
        "skeleton": 32 * len(digests),
        "offer": len(encode(offer)),  # one entry of a changes reply
        "offer_elements_map": len(encode(offer["elements"])),
        "bodies_request": len(encode({"event": event_uuid, "digests": digests})) + BOX_OVERHEAD,
        "bodies_reply": len(encode({"bodies": bodies})) + BOX_OVERHEAD,
        "bodies": sum(len(b) for b in bodies),
    }


def run_spread(args: argparse.Namespace, work: Path) -> Json:
    k, degree = args.nodes, args.degree
    rng = random.Random(args.seed)
    edges = random_regular(k, degree, rng)
    names = [f"n{i:02d}" for i in range(k)]
    log(f"spread: {k} nodes, {len(edges)} edges (degree {degree}), anti-entropy {args.spread_anti_entropy:g} s; "
        "creating homes ...")
    nodes = {name: sn.create_node(work / "mesh" / name, name) for name in names}
    every = list(nodes.values())
    out: Json = {"nodes": k, "degree": degree, "edges": len(edges), "anti_entropy_seconds": args.spread_anti_entropy,
                 "event_attributes": args.spread_attributes, "trials": []}
    with running(every):
        t = time.perf_counter()
        start_mesh(nodes, [(names[a], names[b]) for a, b in edges], args.spread_anti_entropy, args.timeout)
        out["start_seconds"] = time.perf_counter() - t
        log(f"    {k} processes serving after {out['start_seconds']:.1f} s; warming up ...")
        out["warmup_seconds"] = wait_settled(every, args.timeout, "warm-up (org records everywhere, no lag)",
                                             extra=lambda: all(n.stats()["orgs"] >= k for n in every))
        time.sleep(mean_interval(args.spread_anti_entropy))
        window = max(10.0, 2 * mean_interval(args.spread_anti_entropy))
        log(f"    warm after {out['warmup_seconds']:.1f} s; idle traffic over {window:.0f} s ...")
        b0, t0 = total_bytes_out(peers_snapshot(every)), time.perf_counter()
        time.sleep(window)
        b1, t1 = total_bytes_out(peers_snapshot(every)), time.perf_counter()
        idle_rate = (b1 - b0) / (t1 - t0)
        out["idle_bytes_per_s"] = idle_rate
        for trial in range(args.trials):
            origin_index = rng.randrange(k)
            origin = every[origin_index]
            hops = bfs(k, edges, origin_index)
            event = _distribution_3(synth.make_event(args.seed, 9_000_000 + 1000 * args.seed + trial,
                                                     args.spread_attributes))
            before = peers_snapshot(every)
            t0 = time.perf_counter()
            origin.post_event(event)
            posted = time.perf_counter() - t0
            first: dict[str, float] = {origin.name: posted}
            waiting = [n for n in every if n is not origin]

            def all_hold() -> bool:
                now = time.perf_counter() - t0
                for node in list(waiting):
                    if node.holds(event["uuid"]):
                        first[node.name] = now
                        waiting.remove(node)
                return not waiting
            try:
                sn.wait_for(all_hold, args.spread_timeout, f"every node to hold the event of trial {trial + 1}",
                            interval=0.02)
            except TimeoutError as e:
                raise TimeoutError(f"{e}; missing at {', '.join(n.name for n in waiting)}; "
                                   + describe_peers(waiting)) from None
            everywhere = max(first.values())
            # let the last notices and pulls (of nodes that already hold it) finish
            wait_settled(every, args.timeout, "the mesh to settle after the spread")
            time.sleep(1.0)
            after = peers_snapshot(every)
            t1 = time.perf_counter()
            raw = total_bytes_out(after) - total_bytes_out(before)
            idle = idle_rate * (t1 - t0)
            sizes = offer_sizes(origin.store(), event["uuid"])
            payload = sizes["record"] + sizes["bodies"]
            receivers = k - 1
            sent = raw - idle
            # classify what each node received from each peer in the window
            kinds: Counter[str] = Counter()
            kind_bytes: Counter[str] = Counter()
            for key, status in after.items():
                got = status.get("bytes_in", 0) - before.get(key, {}).get("bytes_in", 0)
                if got >= sizes["bodies"] // 2:
                    kind = "full transfer"
                elif got >= sizes["offer"] // 2:
                    kind = "offer only (already held or fetched elsewhere)"
                elif got > 0:
                    kind = "empty pull (notice or anti-entropy)"
                else:
                    continue
                kinds[kind] += 1
                kind_bytes[kind] += got
            one_hop = min(v for n, v in first.items() if n != origin.name)
            transfer = sizes["offer"] + sizes["bodies_request"] + sizes["bodies_reply"] + 2 * BOX_OVERHEAD
            full = kinds["full transfer"]
            offers = kinds["offer only (already held or fetched elsewhere)"]
            accounted = {
                "full_transfers": full, "duplicate_transfers": max(0, full - receivers),
                "transfer_bytes": transfer, "offers_to_holders": offers,
                "offer_bytes": sizes["offer"] + BOX_OVERHEAD,
                "duplicates_per_payload_node": max(0, full - receivers) * transfer / (payload * receivers),
                "offers_per_payload_node": offers * (sizes["offer"] + BOX_OVERHEAD) / (payload * receivers),
                "ideal_per_payload_node": transfer / payload,
            }
            trial_out = {
                "origin": origin.name, "eccentricity_hops": max(hops.values()), "post_seconds": posted,
                "first_neighbour_seconds": one_hop, "all_seconds": everywhere,
                "payload_bytes": payload, "sizes": sizes, "raw_bytes": raw, "idle_bytes": idle,
                "bytes": sent, "ratio": sent / (payload * receivers),
                "pulls_by_kind": dict(kinds), "reply_bytes_by_kind": dict(kind_bytes), "accounted": accounted,
            }
            out["trials"].append(trial_out)
            log(f"    trial {trial + 1}: from {origin.name}, everywhere in {everywhere:.2f} s "
                f"({max(hops.values())} hops; first neighbour {one_hop:.2f} s), "
                f"{sent / 1e6:.2f} MB = {trial_out['ratio']:.2f} x payload {payload:,} B x {receivers}; "
                + ", ".join(f"{v} {kk}" for kk, v in kinds.items()))
    out["ratio"] = _median([t["ratio"] for t in out["trials"]])
    out["all_seconds"] = _median([t["all_seconds"] for t in out["trials"]])
    out["first_neighbour_seconds"] = _median([t["first_neighbour_seconds"] for t in out["trials"]])
    return out


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


# ==================================================================================================
# 3. idle


async def _relay_one_pull(client: sn.BenchNode, server: sn.BenchNode) -> Json:
    """One idle changes pull from `client` to `server`, as the node makes it (gossip/http.py
    HttpTransport, client's own key), through a TCP relay that counts every byte both ways."""
    import dataclasses

    import aiohttp

    from fedmisp.gossip.http import HttpTransport
    from fedmisp.model.identity import Identity
    from fedmisp.node.config import load_config

    config = load_config(client.home)
    peer = next(p for p in config.peers if p.name == server.name)
    counted = {"up": 0, "down": 0}

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, way: str) -> None:
        try:
            while data := await reader.read(65536):
                counted[way] += len(data)
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", server.port)
        await asyncio.gather(pipe(reader, up_writer, "up"), pipe(up_reader, writer, "down"),
                             return_exceptions=True)

    relay = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = relay.sockets[0].getsockname()[1]
    checkpoint = client.store().checkpoint(server.name)
    try:
        async with aiohttp.ClientSession() as http:
            transport = HttpTransport(http, Identity.load(config.key_path),
                                      dataclasses.replace(peer, url=f"http://127.0.0.1:{port}"))
            reply = await transport.changes(checkpoint, 200)
        await asyncio.sleep(0.2)
    finally:
        relay.close()
        await relay.wait_closed()
    return {"body_bytes": transport.bytes_out + transport.bytes_in, "wire_bytes": counted["up"] + counted["down"],
            "changes": len(reply.get("changes", [])) if isinstance(reply, dict) else None}


def measure_idle(label: str, pair: list[sn.BenchNode], args: argparse.Namespace, expect_events: int) -> Json:
    receiver = pair[1]
    with running(pair):
        start_mesh({n.name: n for n in pair}, [(pair[0].name, pair[1].name)], args.idle_anti_entropy, args.timeout)
        wait_settled(pair, args.timeout, f"the {label} pair to settle",
                     extra=lambda: receiver.stats()["events"] >= expect_events)
        interval = mean_interval(args.idle_anti_entropy)
        time.sleep(interval)  # a round after settling, so no catch-up pull is in the window
        window = args.idle_rounds * interval
        s0, t0 = peers_snapshot(pair), time.perf_counter()
        time.sleep(window)
        s1, t1 = peers_snapshot(pair), time.perf_counter()
        delta = total_bytes_out(s1) - total_bytes_out(s0)
        pulls = 2 * (t1 - t0) / interval  # each of the two nodes pulls its one peer once a round
        stats = [n.stats() for n in pair]
        one = asyncio.run(_relay_one_pull(pair[0], pair[1]))
    return {"label": label, "events": stats[0]["events"], "attributes": stats[0]["attributes"],
            "store_bytes": stats[0]["store_bytes"], "window_seconds": t1 - t0, "bytes": delta,
            "est_pulls": pulls, "bytes_per_pull": delta / pulls if pulls else None,
            "one_pull_body_bytes": one["body_bytes"], "one_pull_wire_bytes": one["wire_bytes"],
            "one_pull_changes": one["changes"]}


def idle_pair(work: Path, label: str, files: list[Path]) -> tuple[list[sn.BenchNode], int]:
    a = sn.create_node(work / f"idle-{label}" / "a", "a")
    b = sn.create_node(work / f"idle-{label}" / "b", "b")
    import_into(a, files)
    events = a.stats()["events"]
    a.close_store()
    return [a, b], events


def run_idle(args: argparse.Namespace, work: Path, bulk_pair: dict[str, sn.BenchNode] | None) -> Json:
    results = []
    log(f"idle: anti-entropy every {args.idle_anti_entropy:g} s (mean {mean_interval(args.idle_anti_entropy):.2f} s "
        f"with jitter), {args.idle_rounds} rounds per window")
    variants: list[tuple[str, Callable[[], tuple[list[sn.BenchNode], int]]]] = [
        ("1 event", lambda: idle_pair(work, "one", small_events(args.data_dir, args.seed, 1, 200))),
        (f"{args.idle_many:,} small events", lambda: idle_pair(
            work, "many", small_events(args.data_dir, args.seed, args.idle_many, 10))),
    ]
    if bulk_pair is not None:
        def reuse() -> tuple[list[sn.BenchNode], int]:
            pair = [bulk_pair["sender"], bulk_pair["receiver"]]
            events = pair[0].stats()["events"]
            pair[0].close_store()
            return pair, events
        variants.append(("bulk pair", reuse))
    for label, make in variants:
        pair, events = make()
        log(f"    {label}: {events:,} events ...")
        result = measure_idle(label, pair, args, events)
        results.append(result)
        log(f"      {result['bytes_per_pull']:.0f} B per pull (window), one pull {result['one_pull_body_bytes']} B "
            f"counted / {result['one_pull_wire_bytes']} B on the wire")
    small = results[0]["bytes_per_pull"]
    largest = max(results, key=lambda r: r["attributes"])
    return {"anti_entropy_seconds": args.idle_anti_entropy, "variants": results,
            "largest_vs_smallest": largest["bytes_per_pull"] / small if small else None,
            "worst_bytes_per_pull": max(r["bytes_per_pull"] for r in results),
            "worst_wire_bytes_per_pull": max(r["one_pull_wire_bytes"] for r in results)}


# ==================================================================================================
# 4. liveness


def _own_org_records(node: sn.BenchNode) -> set[str]:
    return {org["uuid"] for org in node.store().orgs() if not org["introduced"]}


def _sighting_sources(node: sn.BenchNode, event_uuid: str) -> set[str]:
    from fedmisp.model.records import KIND_SIGHTINGS
    return {s.get("source", "") for r in node.store().event_records(event_uuid) if r.kind == KIND_SIGHTINGS
            for s in r.body["sightings"]}


def liveness_round(args: argparse.Namespace, work: Path, r: int) -> Json:
    nodes = {name: sn.create_node(work / f"round{r}" / name, name) for name in "abcde"}
    every = list(nodes.values())
    a, d = nodes["a"], nodes["d"]
    orgs = {n.org_uuid for n in every}
    wait = args.liveness_timeout
    out: Json = {"load_before": round(os.getloadavg()[0], 2)}
    with running(every):
        start_mesh(nodes, LINE, args.liveness_anti_entropy, args.timeout)
        t0 = max(n.serving_at for n in every)  # type: ignore[type-var]
        out["start_spread_seconds"] = t0 - min(n.started_at for n in every)  # type: ignore[type-var]
        cpu0 = sum(n.cpu_seconds() or 0.0 for n in every)
        try:
            out["orgs_seconds"] = sn.wait_for(lambda: all(_own_org_records(n) == orgs for n in every), wait,
                                              "every org record at every node", interval=0.05) - t0
            event = _distribution_3(synth.make_event(args.seed, 9_500_000 + r, 1))
            value = f"liveness-{r}-{event['uuid'][:8]}.example"
            event["Attribute"], event["Object"] = [{"type": "domain", "value": value, "distribution": "5"}], []
            t1 = time.perf_counter()
            d.post_event(event)
            out["event_seconds"] = sn.wait_for(lambda: a.holds(event["uuid"]), wait, "D's event at A",
                                               interval=0.02) - t1
            t2 = time.perf_counter()
            answer = d.post("/sightings/add", {"value": value, "source": f"bench-{r}"})
            if "Sighting" not in answer:
                raise RuntimeError(f"D did not add the sighting: {answer}")
            out["sighting_seconds"] = sn.wait_for(lambda: f"bench-{r}" in _sighting_sources(a, event["uuid"]), wait,
                                                  "D's sighting at A", interval=0.02) - t2
        except TimeoutError as e:
            raise TimeoutError(f"{e}; {describe_peers(every)}") from None
        out["wall_seconds"] = time.perf_counter() - t0
        out["cpu_seconds"] = sum(n.cpu_seconds() or 0.0 for n in every) - cpu0
    out["load_after"] = round(os.getloadavg()[0], 2)
    return out


def run_liveness(args: argparse.Namespace, work: Path) -> Json:
    period = args.liveness_anti_entropy
    log(f"liveness: five nodes A-B-C-D, E-B, anti-entropy {period:g} s, {args.liveness_rounds} round(s) "
        "of a simultaneous start")
    rounds = []
    for r in range(args.liveness_rounds):
        one = liveness_round(args, work, r)
        rounds.append(one)
        log(f"    round {r + 1}: org records everywhere {one['orgs_seconds']:.2f} s, event D->A "
            f"{one['event_seconds']:.2f} s, sighting D->A {one['sighting_seconds']:.2f} s; "
            f"CPU of the five nodes {one['cpu_seconds']:.1f} s in {one['wall_seconds']:.1f} s wall; "
            f"load {one['load_before']} -> {one['load_after']}")
        if not args.keep:
            shutil.rmtree(work / f"round{r}", ignore_errors=True)
    out: Json = {"anti_entropy_seconds": period, "rounds": rounds}
    for figure in ("orgs_seconds", "event_seconds", "sighting_seconds"):
        worst = max(x[figure] for x in rounds)
        out[figure] = _median([x[figure] for x in rounds])
        out[figure.replace("_seconds", "_worst_seconds")] = worst
        out[figure.replace("_seconds", "_ratio")] = worst / period
    return out


# ==================================================================================================
# Report


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "MISSED")


def print_report(report: Json) -> None:
    m = report["machine"]
    print(f"sync benchmark: {m['cpus']} CPUs, Python {m['python']}, load before {m['loadavg_before']}")
    rows: list[tuple[str, str, str, str, str, str]] = []
    bulk = report.get("bulk")
    if bulk:
        rows.append((f"bulk: {bulk['attributes_received']:,} attrs, {bulk['events_received']} events",
                     f"{bulk['attrs_per_s']:,.0f} attrs/s ({bulk['seconds']:.1f} s)",
                     f"local ingest {bulk['ingest_attrs_per_s']:,.0f} attrs/s ({bulk['ingest_seconds']:.1f} s)",
                     f"{bulk['ratio']:.2f}x", f">= {TARGET_BULK}", verdict(bulk["ratio"] >= TARGET_BULK)))
    spread = report.get("spread")
    if spread:
        trials = spread["trials"]
        payload = _median([t["payload_bytes"] for t in trials])
        rows.append((f"spread: {spread['nodes']} nodes, degree {spread['degree']}, time",
                     f"{spread['all_seconds']:.2f} s to all",
                     f"first neighbour {spread['first_neighbour_seconds']:.2f} s",
                     f"{spread['all_seconds'] / spread['first_neighbour_seconds']:.1f}x",
                     "[info]", "-"))
        rows.append(("spread: bytes per payload per node",
                     f"{_median([t['bytes'] for t in trials]) / 1e6:.2f} MB sent",
                     f"payload {payload:,.0f} B x {spread['nodes'] - 1} nodes",
                     f"{spread['ratio']:.2f}", f"<= {TARGET_SPREAD}", verdict(spread["ratio"] <= TARGET_SPREAD)))
    idle = report.get("idle")
    if idle:
        for v in idle["variants"]:
            rows.append((f"idle: {v['label']} ({v['events']:,} ev, {v['attributes']:,} attrs)",
                         f"{v['bytes_per_pull']:,.0f} B/pull",
                         f"one pull: {v['one_pull_body_bytes']} B counted, {v['one_pull_wire_bytes']} B wire",
                         f"{v['bytes_per_pull'] / idle['variants'][0]['bytes_per_pull']:.2f}x",
                         f"< {TARGET_IDLE} B", verdict(max(v["bytes_per_pull"], v["one_pull_wire_bytes"]) < TARGET_IDLE)))
    live = report.get("liveness")
    if live:
        period = live["anti_entropy_seconds"]
        for figure, label in (("orgs", "liveness: every org record at all 5"), ("event", "liveness: event D->A, 3 hops"),
                              ("sighting", "liveness: sighting D->A, 3 hops")):
            ratio = live[f"{figure}_ratio"]
            rows.append((label, f"{live[f'{figure}_seconds']:.2f} s (worst {live[f'{figure}_worst_seconds']:.2f} s)",
                         f"anti-entropy period {period:g} s", f"{ratio:.3f}", f"< {TARGET_LIVENESS}",
                         verdict(ratio < TARGET_LIVENESS)))
    header = ("figure", "measured", "baseline (same run)", "ratio", "target", "")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(6)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print()
    print(line.format(*header))
    print("-" * (sum(widths) + 10))
    for row in rows:
        print(line.format(*row))
    print()
    if bulk:
        print(f"bulk: {bulk['seconds_from_spawn']:.1f} s counting the receiver's process start; "
              f"wire {bulk['wire_bytes'] / 1e6:.1f} MB for {bulk['payload_bytes'] / 1e6:.1f} MB payload "
              f"({bulk['wire_per_payload']:.2f}x); the sender's echo pull from the receiver (nothing to send) "
              f"settled {bulk['echo_pull_seconds']:.1f} s after; anti-entropy {bulk['anti_entropy_seconds']:g} s")
        for i, r in enumerate(bulk["rounds"], 1):
            cores = (f", {r['ingest_cpu_seconds'] / r['ingest_seconds']:.1f} cores"
                     if r.get("ingest_cpu_seconds") else "")
            cpu = (f"; CPU receiver with its row workers {r['receiver_cpu_seconds']:.1f} s, sender {r['sender_cpu_seconds']:.1f} s"
                   if "receiver_cpu_seconds" in r else "")
            print(f"  round {i}: ingest {r['ingest_seconds']:.1f} s ({r['ingest_attrs_per_s']:,.0f} attrs/s{cores}), "
                  f"replication {r['seconds']:.1f} s ({r['attrs_per_s']:,.0f} attrs/s{cpu}): {r['round_ratio']:.2f}x")
        if bulk.get("warning"):
            print(f"  ! {bulk['warning']}")
        prof = bulk.get("profile")
        if prof:
            print(f"bulk --profile: in-process pull (no HTTP) {prof['in_memory_seconds']:.2f} s "
                  f"({bulk['attributes'] / prof['in_memory_seconds']:,.0f} attrs/s), split:")
            for label, secs in sorted(prof["split_seconds"].items(), key=lambda x: -x[1]):
                print(f"    {secs:7.2f} s  {label}")
            print(f"    echo: the receiver's changes feed read back for the sender took {prof['echo_changes_seconds']:.2f} s "
                  f"and offered {prof['echo_offered']} event(s)")
    if spread:
        print(f"spread: start {spread['start_seconds']:.1f} s, warm-up {spread['warmup_seconds']:.1f} s, "
              f"idle traffic {spread['idle_bytes_per_s']:,.0f} B/s (subtracted); per trial:")
        for t in trials:
            s = t["sizes"]
            a = t["accounted"]
            print(f"  {t['origin']}: {t['all_seconds']:.2f} s ({t['eccentricity_hops']} hops), ratio {t['ratio']:.2f} = "
                  f"{a['ideal_per_payload_node']:.2f} one transfer per node + {a['duplicates_per_payload_node']:.2f} "
                  f"for {a['duplicate_transfers']} duplicate transfer(s) + {a['offers_per_payload_node']:.2f} for "
                  f"{a['offers_to_holders']} offer(s) to nodes that had it + rest; pulls: "
                  + ", ".join(f"{v} {k}" for k, v in t["pulls_by_kind"].items()))
        s = trials[-1]["sizes"]
        print(f"  one transfer of the last event: changes entry {s['offer']:,} B (record {s['record']:,} B incl. "
              f"skeleton {s['skeleton']:,} B, elements map {s['offer_elements_map']:,} B) + bodies request "
              f"{s['bodies_request']:,} B + bodies reply {s['bodies_reply']:,} B (bodies {s['bodies']:,} B)")
        print(f"  ideal with this protocol: one transfer per receiving node = "
              f"{(s['offer'] + s['bodies_request'] + s['bodies_reply']) / (s['record'] + s['bodies']):.2f} x payload")
    if idle:
        print(f"idle: bytes per pull = what one node and one peer exchange when the node pulls (request + reply "
              f"bodies, as the nodes count them); the relay figure adds HTTP and Fedmisp-Auth headers. "
              f"Largest/smallest store: {idle['largest_vs_smallest']:.2f}x")
    if live:
        print(f"liveness: median of {len(live['rounds'])} simultaneous start(s), the ratio from the worst; per round "
              "(from the last node serving; CPU = the five node processes):")
        for i, r in enumerate(live["rounds"], 1):
            print(f"  round {i}: orgs {r['orgs_seconds']:.2f} s, event {r['event_seconds']:.2f} s, sighting "
                  f"{r['sighting_seconds']:.2f} s; {r['cpu_seconds']:.1f} CPU s in {r['wall_seconds']:.1f} s wall; "
                  f"starts spread over {r['start_spread_seconds']:.1f} s; load {r['load_before']} -> {r['load_after']}")
    print("[ratios only; nothing is asserted]")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="fedmisp replication benchmark (real node processes; ratios vs same-run baselines)")
    p.add_argument("--quick", action="store_true", help="small run: 20,000 attributes, 8 nodes, 2 trials")
    p.add_argument("--only", default="bulk,spread,idle,liveness",
                   help="parts to run: bulk, spread, idle, liveness (comma-separated)")
    p.add_argument("--attributes", type=int, help="bulk: attributes to replicate (default 200,000; quick 20,000)")
    p.add_argument("--nodes", type=int, help="spread: nodes in the mesh (default 20; quick 8)")
    p.add_argument("--degree", type=int, default=4, help="spread: peers per node (default 4)")
    p.add_argument("--trials", type=int, help="spread: events published one after the other (default 3; quick 2)")
    p.add_argument("--spread-attributes", type=int, default=200, help="spread: attributes of the event (default 200)")
    p.add_argument("--spread-anti-entropy", type=float, default=5.0, help="spread: anti-entropy seconds (default 5)")
    p.add_argument("--bulk-anti-entropy", type=float, default=30.0,
                   help="bulk: anti-entropy seconds (default 30, the node's default)")
    p.add_argument("--idle-anti-entropy", type=float, default=2.0, help="idle: anti-entropy seconds (default 2)")
    p.add_argument("--idle-rounds", type=int, default=8, help="idle: rounds per measuring window (default 8)")
    p.add_argument("--idle-many", type=int, help="idle: small events in the many-events pair (default 2,000; quick 200)")
    p.add_argument("--liveness-anti-entropy", type=float, default=30.0,
                   help="liveness: anti-entropy seconds (default 30, the node's default)")
    p.add_argument("--liveness-rounds", type=int, help="liveness: simultaneous starts (default 3; quick 1)")
    p.add_argument("--liveness-timeout", type=float, default=300,
                   help="liveness: seconds each figure may take before the part fails (default 300)")
    p.add_argument("--repeat", type=int, help="bulk: rounds of ingest + replication, best of each (default 3; quick 1)")
    p.add_argument("--seed", type=int, default=1, help="data and mesh seed (default 1)")
    p.add_argument("--timeout", type=float, default=600, help="seconds any one wait may take (default 600)")
    p.add_argument("--spread-timeout", type=float, default=120,
                   help="spread: seconds an event may take to reach every node (default 120)")
    p.add_argument("--profile", action="store_true", help="bulk: also time and cProfile the pull in-process")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--keep", action="store_true", help="keep node homes under <data-dir>/sync-runs/")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"cache and scratch (default {DEFAULT_DATA_DIR})")
    args = p.parse_args(argv)
    args.attributes = args.attributes or (20_000 if args.quick else 200_000)
    args.nodes = args.nodes or (8 if args.quick else 20)
    args.trials = args.trials or (2 if args.quick else 3)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.idle_many = args.idle_many or (200 if args.quick else 2_000)
    args.liveness_rounds = args.liveness_rounds or (1 if args.quick else 3)
    known = {"bulk", "spread", "idle", "liveness"}
    parts = set(args.only.split(","))
    if parts - known:
        p.error(f"--only: unknown part(s) {', '.join(sorted(parts - known))}")
    args.parts = parts
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    work = args.data_dir / "sync-runs" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    work.mkdir(parents=True)
    report: Json = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "platform": platform.platform(),
                                "loadavg_before": [round(x, 2) for x in os.getloadavg()]},
                    "settings": {k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set) else v)
                                 for k, v in vars(args).items()}}
    failed = False
    started = time.perf_counter()
    try:
        bulk_pair = None
        if "bulk" in args.parts:
            try:
                report["bulk"] = run_bulk(args, work / "bulk")
                bulk_pair = report["bulk"].pop("_pair")
            except Exception as e:  # report what ran; the other parts still run
                failed = True
                report["bulk_error"] = f"{type(e).__name__}: {e}"
                log(f"bulk FAILED: {report['bulk_error']}")
        parts: dict[str, Callable[[], Json]] = {
            "spread": lambda: run_spread(args, work / "spread"),
            "idle": lambda: run_idle(args, work / "idle", bulk_pair),
            "liveness": lambda: run_liveness(args, work / "liveness")}
        for part, run in parts.items():
            if part not in args.parts:
                continue
            try:
                report[part] = run()
            except Exception as e:  # report what ran; the other parts still run
                failed = True
                report[f"{part}_error"] = f"{type(e).__name__}: {e}"
                log(f"{part} FAILED: {report[part + '_error']}")
    finally:
        report["seconds"] = time.perf_counter() - started
        if args.keep or failed:
            log(f"node homes kept under {work}" + (" (something failed: see each home's node.log)" if failed else ""))
        else:
            shutil.rmtree(work, ignore_errors=True)
            with contextlib.suppress(OSError):
                work.parent.rmdir()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
        if args.profile and report.get("bulk", {}).get("profile"):
            print()
            print(report["bulk"]["profile"]["cprofile"])
        for part in ("bulk", "spread", "idle", "liveness"):
            if f"{part}_error" in report:
                print(f"{part}: FAILED: {report[part + '_error']}")
        print(f"(whole run {report['seconds']:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
