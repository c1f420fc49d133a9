"""Correlation benchmark: query rates, ssdeep against brute force, and what correlation adds to ingest.

Run (from the repository root):

    .venv/bin/python bench/correlate.py                        # 1,000,000 attributes (the real figure)
    .venv/bin/python bench/correlate.py --attributes 100000    # quick run (everything scales down)
    .venv/bin/python bench/correlate.py --skip-ingest          # queries only, on the cached store
    .venv/bin/python bench/correlate.py --json                 # machine-readable

A full run took 3.5 minutes on a 2-core VM with the synth data cached (--repeat 2: about 5.5);
a first run also generates data (synth's 1M dataset, then ~30 s of ppdeep hashing). Disk: the
with-correlation store is kept for --skip-ingest (1.4 GiB at 1M; reused only by the fedmisp code
that wrote it), the without store (1 GiB) is deleted after its run. Nothing here asserts on
timings: targets are printed, never enforced.

Data (cached under ``bench/.data/correlate/<seed>-<N>-v<version>/``, gitignored). For N attributes:

* N/10 networks and N/20 ssdeep hashes in total;
* the bulk is ``bench/synth.py``'s dataset for (seed, N) (shared with bench/ingest.py), its leading
  events up to 85% of N; its own networks (ip-dst/ip-src CIDR blocks) and ssdeep values count
  towards the totals;
* generated events top up networks (IPv4 /12-/30 with 2% /8, IPv6 /32-/64, one in ten written with host
  bits set, e.g. 10.1.2.3/8) and ssdeep hashes, and fill the rest to exactly N with ip-dst
  addresses (half inside stored networks, so CIDR queries find something);
* ssdeep: families of similar files. ``ppdeep.hash`` is pure Python (about 0.4 us per byte, a few
  ms per 10 KiB blob, measured and printed at generation), so only ``--real-ssdeep`` hashes
  (default 5,000) are ppdeep-made from random blobs and mutated copies of them; the rest are
  derived from those by editing the hash strings (1-4 characters of the first half, 0-3 of the
  second), and half the families have their block size label multiplied by 2-256 so block sizes
  spread over many more levels, as real files' do. About 25 hashes per family, so a query has
  ~20 true matches (each scored by ppdeep.compare in the engine too). The bulk's synth ssdeep
  values are random strings of ssdeep shape. Brute force and engine see the same stored values.

Phases, each contender in its own fresh interpreter (memory and page-cache state matter):

1. ingest: the real importer (``import_paths`` into a fresh ``init_home``, default workers) on all
   files, with correlation and without. "Without" sets FEDMISP_BENCH_NO_CORRELATION=1 for the
   child, which makes ``fedmisp.store.rows.correlation_rows`` return [] (this module patches it
   at import, so the importer's spawned worker processes, which re-import this file as
   ``__mp_main__``, are patched too). The child then counts the ix_ip/ix_net/ix_ssdeep rows to
   prove it (0 without). ix_value (the store's value index, also exact correlation's) is written
   in both. Headline: time with / time without (target <= 1.5).
2. queries (read-only, on the with-correlation store, default CorrelationConfig: ssdeep threshold
   40, max_matches 1,000):
   * exact: ``Correlator.value(value, type)`` on values drawn from the stored attributes;
   * IP -> networks: addresses inside stored networks and stored addresses (exact + CIDR);
   * network -> IPs: stored networks (stored IPs and networks inside, networks around);
   * events/view's correlation pass: ``Correlator.annotate`` of the largest event (every attribute's
     RelatedAttribute), CPU ms, median of 5 (query rates are wall clock; this and the CPU us per
     query beside them are what to compare on a loaded machine);
   * CIDR check: a sample of both query kinds against brute force over every stored IP and network
     (ints, from the source files, not the store), same attribute sets;
   * ssdeep: each query timed in the engine (best of 3) and by brute force (``ppdeep.compare``
     against all stored ssdeep values, held in memory, score >= 40), same values required; the
     headline is brute-force time / engine time (target >= 100).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_DATA_DIR = BENCH_DIR / ".data"
DATA_VERSION = 2
EXACT_SAMPLE = 20_000  # values drawn for exact lookups (queries use the first --exact-queries)
SSDEEP_QUERY_POOL = 24  # ssdeep queries prepared (the first --ssdeep-queries are run)
NO_CORRELATION_ENV = "FEDMISP_BENCH_NO_CORRELATION"
EVENT_ATTRIBUTES = 5_000  # generated events' size
TARGET_INGEST_RATIO = 1.5
TARGET_SSDEEP_SPEEDUP = 100.0
SSDEEP_THRESHOLD = 40  # MISP's default, and CorrelationConfig's
MIB = 1 << 20
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
IP_TYPES = {"ip-dst": 0, "ip-src": 0, "ip-dst|port": 0, "ip-src|port": 0, "domain|ip": 1}

Json = dict[str, Any]


def _disable_correlation_rows() -> None:
    """The "without correlation" contender: no ix_ip / ix_net / ix_ssdeep rows are computed."""
    import fedmisp.store.rows as rows_module

    rows_module.correlation_rows = lambda *args, **kwargs: []


# Runs at import, so spawned importer workers (which import this file as __mp_main__) patch too.
if os.environ.get(NO_CORRELATION_ENV) == "1":
    _disable_correlation_rows()


def code_fingerprint() -> str:
    """Of fedmisp's sources: a cached store is reused only by the code that wrote it (index formats
    change, e.g. the ssdeep key's block size width)."""
    from hashlib import blake2b

    h = blake2b(digest_size=16)
    for path in sorted((REPO_ROOT / "fedmisp").rglob("*.py")):
        h.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _bench_module(name: str) -> Any:
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return __import__(name)


# ==========================================================================
# Data: synth bulk + generated networks, ssdeep families and filler addresses.


def _mutate_blob(rng: random.Random, blob: bytes) -> bytes:
    b = bytearray(blob)
    for _ in range(rng.randint(1, 4)):
        n = max(1, int(len(b) * rng.uniform(0.005, 0.06)))
        at = rng.randrange(len(b) + 1)
        k = rng.random()
        if k < 0.4:
            b[at:at + n] = rng.randbytes(n)
        elif k < 0.7:
            b[at:at] = rng.randbytes(n)
        else:
            del b[at:at + n]
    return bytes(b)


def _real_family_job(job: tuple[int, int, int]) -> tuple[list[str], int, float]:
    """ppdeep hashes of one family of similar random files: (hashes, bytes hashed, seconds)."""
    import ppdeep

    seed, family, count = job
    rng = random.Random(f"{seed}:ssdeep-family:{family}")
    base = rng.randbytes(int(2 ** rng.uniform(10, 15)))  # 1 KiB .. 32 KiB
    blobs = [base] + [_mutate_blob(rng, base) for _ in range(count - 1)]
    t0 = time.perf_counter()
    hashes = [ppdeep.hash(b) for b in blobs]
    return hashes, sum(map(len, blobs)), time.perf_counter() - t0


def _edit(rng: random.Random, s: str, edits: int, cap: int) -> str:
    chars = list(s)
    for _ in range(edits):
        op, i = rng.random(), rng.randrange(len(chars) + 1)
        if op < 0.5 and chars:
            chars[min(i, len(chars) - 1)] = rng.choice(B64)
        elif op < 0.75 and len(chars) < cap:
            chars.insert(i, rng.choice(B64))
        elif len(chars) > 1:
            del chars[min(i, len(chars) - 1)]
    return "".join(chars)


def derive_ssdeep(rng: random.Random, h: str, shift: int = 0) -> str:
    """A similar hash made by editing a ppdeep-made one (and relabelling its block size)."""
    bs, s1, s2 = h.split(":")
    return f"{int(bs) << shift}:{_edit(rng, s1, rng.randint(1, 4), 64)}:{_edit(rng, s2, rng.randint(0, 3), 32)}"


def _attribute(rng: random.Random, type_: str, value: str, ts: int) -> Json:
    synth = _bench_module("synth")
    return {"uuid": synth._uuid4(rng), "type": type_, "value": value, "timestamp": str(ts),
            "to_ids": type_ != "ssdeep", "distribution": "5"}


def _random_network(rng: random.Random) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    synth = _bench_module("synth")
    if rng.random() < 0.8:
        prefix = 8 if rng.random() < 0.02 else rng.randint(12, 30)
        return ipaddress.ip_network(f"{synth._ipv4(rng)}/{prefix}", strict=False)
    return ipaddress.ip_network(f"{synth._ipv6(rng)}/{rng.choice((32, 40, 48, 56, 64))}", strict=False)


def _network_text(rng: random.Random, net: Any) -> str:
    if rng.random() < 0.1:  # host bits set, as MISP users write them
        host = net.network_address + rng.randrange(1, max(2, min(net.num_addresses, 1 << 32)))
        return f"{host}/{net.prefixlen}"
    return str(net)


def _scan_bulk(paths: list[Path], seed: int, exact_sample: int) -> Json:
    """What the synth bulk holds that the checks need: networks, IPs, ssdeep values, and a sample
    of (type, value) for exact lookups."""
    synth = _bench_module("synth")
    rng = random.Random(f"{seed}:correlate:sample")
    ips: list[list[str]] = []  # [attribute uuid, ip or network text]
    ssdeep: list[str] = []
    sample: list[list[str]] = []
    seen = exact_seen = 0
    for path in paths:
        event = json.loads(path.read_bytes())["Event"]
        for a in synth.iter_attributes(event):
            t, v = a["type"], a["value"]
            half = IP_TYPES.get(t)
            if half is not None:
                ips.append([a["uuid"], v.split("|")[half]])
            elif t == "ssdeep":
                ssdeep.append(v)
            seen += 1
            if half is not None or t in ("ssdeep", "filename|ssdeep"):
                continue  # exact lookups: values that take only the exact path (the others: below)
            exact_seen += 1  # reservoir sample
            if len(sample) < exact_sample:
                sample.append([t, v])
            else:
                j = rng.randrange(exact_seen)
                if j < exact_sample:
                    sample[j] = [t, v]
    return {"ips": ips, "ssdeep": ssdeep, "sample": sample, "attributes": seen}


def ensure_data(args: argparse.Namespace) -> Json:
    """Files to import and the ground truth the query child checks against (cached)."""
    synth = _bench_module("synth")
    n = args.attributes
    root = args.data_dir / "correlate" / f"{args.seed}-{n}-v{DATA_VERSION}-r{args.real_ssdeep}"
    manifest_path = root / "manifest.json"
    if manifest_path.exists() and not args.regenerate:
        manifest: Json = json.loads(manifest_path.read_text())
        if all(Path(p).is_file() for p in manifest["files"]):
            return manifest
    n_networks, n_ssdeep = n // 10, n // 20
    dataset = synth.ensure_dataset(args.data_dir, args.seed, n, log=log)
    bulk = dataset.prefix(n - n_networks - n_ssdeep)
    log(f"scanning the synth bulk ({len(bulk)} events, {sum(e.attributes for e in bulk):,} attributes) ...")
    t0 = time.perf_counter()
    truth = _scan_bulk([e.path for e in bulk], args.seed, EXACT_SAMPLE)
    bulk_networks = sum("/" in ip for _, ip in truth["ips"])
    log(f"    {time.perf_counter() - t0:.1f} s: {bulk_networks:,} networks, {len(truth['ssdeep']):,} ssdeep")

    rng = random.Random(f"{args.seed}:correlate:extras")
    extra_networks = max(0, n_networks - bulk_networks)
    extra_ssdeep = max(0, n_ssdeep - len(truth["ssdeep"]))
    filler = max(0, n - truth["attributes"] - extra_networks - extra_ssdeep)

    # ssdeep families: a few ppdeep-made members each, the rest derived from their strings.
    families = max(1, extra_ssdeep // 25) if extra_ssdeep else 0
    real = min(args.real_ssdeep, extra_ssdeep)
    real_per_family = max(1, math.ceil(real / families)) if families else 0
    log(f"hashing {families * real_per_family:,} random files with ppdeep ({families:,} families) ...")
    t0 = time.perf_counter()
    jobs = [(args.seed, f, real_per_family) for f in range(families)]
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        made = list(pool.map(_real_family_job, jobs, chunksize=16))
    wall = time.perf_counter() - t0
    hashed_bytes = sum(b for _, b, _ in made)
    hash_seconds = sum(s for _, _, s in made)
    real_made = sum(len(h) for h, _, _ in made)
    per_hash = hash_seconds / max(1, real_made)
    log(f"    {real_made:,} hashes in {wall:.1f} s wall ({per_hash * 1000:.1f} ms each in one process, "
        f"{hashed_bytes / max(1, real_made) / 1024:.1f} KiB average); {n_ssdeep:,} would take "
        f"{per_hash * n_ssdeep:,.0f} s of CPU")
    ssdeep_values: list[str] = []
    shifts = [0 if rng.random() < 0.5 else rng.randint(1, 8) for _ in range(families)]
    per_family = [extra_ssdeep // families + (f < extra_ssdeep % families) for f in range(families)] if families else []
    ppdeep_made = 0
    for f, (hashes, _, _) in enumerate(made):
        members = [_relabel(h, shifts[f]) for h in hashes][:per_family[f]]
        ppdeep_made += len(members)
        while len(members) < per_family[f]:
            members.append(derive_ssdeep(rng, rng.choice(hashes), shifts[f]))
        ssdeep_values += members

    # Queries for ssdeep: unseen variants of random families, plus one stored synth value.
    ssdeep_queries = [rng.choice(truth["ssdeep"])] if truth["ssdeep"] else []
    for f in rng.sample(range(families), min(families, SSDEEP_QUERY_POOL - 1)):
        ssdeep_queries.append(derive_ssdeep(rng, rng.choice(made[f][0]), shifts[f]))

    # Events: networks, ssdeep and filler addresses, shuffled, EVENT_ATTRIBUTES per event.
    networks = [_random_network(rng) for _ in range(extra_networks)]
    kinds = ["net"] * extra_networks + ["ssdeep"] * extra_ssdeep + ["ip"] * filler
    rng.shuffle(kinds)
    events_dir = root / "events"
    shutil.rmtree(root, ignore_errors=True)
    events_dir.mkdir(parents=True)
    files = [str(e.path) for e in bulk]
    ni = si = 0
    for start in range(0, len(kinds), EVENT_ATTRIBUTES):
        ts = synth.EPOCH_END - rng.randint(0, 86_400 * 365)
        attributes = []
        for kind in kinds[start:start + EVENT_ATTRIBUTES]:
            if kind == "net":
                text = _network_text(rng, networks[ni])
                ni += 1
                a = _attribute(rng, "ip-dst" if rng.random() < 0.75 else "ip-src", text, ts)
                truth["ips"].append([a["uuid"], text])
            elif kind == "ssdeep":
                a = _attribute(rng, "ssdeep", ssdeep_values[si], ts)
                si += 1
            else:
                if networks and rng.random() < 0.5:
                    net = rng.choice(networks)
                    ip = str(net.network_address + rng.randrange(min(net.num_addresses, 1 << 32)))
                else:
                    ip = str(synth._ipv4(rng))
                a = _attribute(rng, "ip-dst", ip, ts)
                truth["ips"].append([a["uuid"], ip])
            attributes.append(a)
        event = {"uuid": synth._uuid4(rng), "info": f"correlation bench extras {start // EVENT_ATTRIBUTES}",
                 "date": "2024-06-01", "timestamp": str(ts), "distribution": "3", "published": True,
                 "Orgc": {"name": "Org-Correlate", "uuid": synth._uuid4(rng)}, "Attribute": attributes}
        path = events_dir / f"extra-{start // EVENT_ATTRIBUTES:05d}.json"
        path.write_text(json.dumps({"Event": event}, separators=(",", ":")))
        files.append(str(path))
    truth["ssdeep"] += ssdeep_values
    sample = truth["sample"]
    rng.shuffle(sample)

    (root / "truth.json").write_text(json.dumps({
        "ips": truth["ips"], "ssdeep": truth["ssdeep"], "exact_sample": sample, "ssdeep_queries": ssdeep_queries,
    }))
    manifest = {
        "files": files, "attributes": truth["attributes"] + len(kinds), "root": str(root),
        "truth": str(root / "truth.json"),
        "composition": {
            "bulk_attributes": truth["attributes"], "bulk_networks": bulk_networks,
            "bulk_ssdeep": len(truth["ssdeep"]) - len(ssdeep_values),
            "extra_networks": extra_networks, "extra_ssdeep": extra_ssdeep, "filler_ips": filler,
            "networks": bulk_networks + extra_networks, "ssdeep": len(truth["ssdeep"]),
            "ssdeep_ppdeep_made": ppdeep_made,
            "ssdeep_families": families, "ppdeep_ms_per_hash": per_hash * 1000,
            "ppdeep_kib_per_blob": hashed_bytes / max(1, real_made) / 1024,
        },
    }
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def _relabel(h: str, shift: int) -> str:
    bs, rest = h.split(":", 1)
    return f"{int(bs) << shift}:{rest}"


# ==========================================================================
# Children.


def _vmhwm_bytes() -> int | None:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def child_import(job: Json) -> Json:
    from fedmisp.node.home import init_home
    from fedmisp.node.importer import import_paths

    home = Path(job["home"])
    node, _key = init_home(home, "Bench", "127.0.0.1:0")  # setup, not timed
    files = [Path(p) for p in job["files"]]
    try:
        cpu0 = os.times()
        t0 = time.perf_counter()
        report = import_paths(node, files)
        seconds = time.perf_counter() - t0
        cpu1 = os.times()
        store = node.store
        entries = store.usage()["entries"]
        rows = {name: entries[name] for name in ("ix_ip", "ix_net", "ix_ssdeep", "ix_value")}
        stats = store.stats()
    finally:
        node.close()
    return {
        "seconds": seconds,
        "cpu_seconds": (cpu1.user + cpu1.system + cpu1.children_user + cpu1.children_system)
        - (cpu0.user + cpu0.system + cpu0.children_user + cpu0.children_system),
        "attributes_stored": report.attributes_stored, "events_stored": report.events_stored,
        "refused": report.refused[:3], "rows": rows, "store_bytes": stats["store_bytes"],
        "correlation_rows_patched": os.environ.get(NO_CORRELATION_ENV) == "1",
    }


def _ip_int(text: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(text, strict=False)
    return net.version, int(net.network_address), net.prefixlen


def _brute_cidr(table: list[tuple[str, int, int, int]], query: str) -> set[str]:
    """Stored IPs and networks overlapping the query (one contains the other), by integer masks."""
    qv, qa, ql = _ip_int(query)
    bits = 32 if qv == 4 else 128
    out = set()
    for u, v, a, pl in table:
        if v != qv:
            continue
        common = min(pl, ql)
        shift = bits - common
        if (a >> shift) == (qa >> shift):
            out.add(u)
    return out


def child_query(job: Json) -> Json:
    import ppdeep

    from fedmisp.correlate.engine import CorrelationConfig, Correlator
    from fedmisp.correlate.keys import ssdeep_keys
    from fedmisp.model.values import normalise
    from fedmisp.store.rows import index_key
    from fedmisp.store.store import Store

    truth = json.loads(Path(job["truth"]).read_text())
    rng = random.Random(job["seed"])
    store = Store(Path(job["store"]), readonly=True)
    correlator = Correlator(store, CorrelationConfig())
    out: Json = {"max_matches": correlator.config.max_matches, "ssdeep_threshold": correlator.config.ssdeep_threshold}

    def timed(queries: list[tuple[str, str]]) -> Json:
        for value, type_ in queries[:200]:  # warm-up: page cache and code paths
            correlator.value(value, type_)
        matches = over = 0
        t0, c0 = time.perf_counter(), time.process_time()
        for value, type_ in queries:
            found = correlator.value(value, type_)
            matches += len(found.matches)
            over += bool(found.over_correlating)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        return {"queries": len(queries), "seconds": seconds, "per_second": len(queries) / seconds,
                "cpu_us_per_query": cpu / len(queries) * 1e6,
                "mean_matches": matches / len(queries), "over_correlating": over}

    # exact, and its floor: the same ix_value keys read raw (cursor + duplicates, no decoding)
    exact = [(v, t) for t, v in truth["exact_sample"][:job["exact_queries"]]]
    out["exact"] = timed(exact)
    keys = [index_key(k) for v, t in exact for k in normalise(t, v)]
    db = store.database.db["ix_value"]
    with store.database.env.begin() as txn:
        cursor = txn.cursor(db=db)
        t0 = time.perf_counter()
        for key in keys:
            if cursor.set_key(key):
                for _ in cursor.iternext_dup():
                    pass
        raw_seconds = time.perf_counter() - t0
    out["exact"]["raw_ix_value_per_second"] = len(exact) / raw_seconds
    log(f"    exact: {out['exact']['per_second']:,.0f} lookups/s "
        f"(raw ix_value reads of the same keys: {len(exact) / raw_seconds:,.0f}/s)")

    # IP -> networks and network -> IPs
    table = [(u, *_ip_int(text)) for u, text in truth["ips"]]
    networks = [text for _, text in truth["ips"] if "/" in text]
    addresses = [text for _, text in truth["ips"] if "/" not in text]
    ip_queries = []
    for _ in range(job["ip_queries"]):
        if rng.random() < 0.5:
            net = ipaddress.ip_network(rng.choice(networks), strict=False)
            ip_queries.append(str(net.network_address + rng.randrange(min(net.num_addresses, 1 << 62))))
        else:
            ip_queries.append(rng.choice(addresses))
    net_queries = [rng.choice(networks) for _ in range(job["net_queries"])]
    out["ip_to_networks"] = timed([(q, "ip-dst") for q in ip_queries])
    log(f"    IP -> networks: {out['ip_to_networks']['per_second']:,.0f} queries/s")
    out["network_to_ips"] = timed([(q, "ip-dst") for q in net_queries])
    log(f"    network -> IPs: {out['network_to_ips']['per_second']:,.0f} queries/s")

    # CIDR against brute force on a sample of both directions
    checks = {"same": 0, "different": 0, "capped": 0, "examples": []}
    sample = ip_queries[:job["check_queries"]] + net_queries[:job["check_queries"]]
    for q in sample:
        found = correlator.value(q, "ip-dst")
        got = {m.attribute_uuid for m in found.matches}
        want = _brute_cidr(table, q)
        if found.over_correlating:
            checks["capped"] += 1  # listed fewer by design: max_matches
        elif got == want:
            checks["same"] += 1
        else:
            checks["different"] += 1
            if len(checks["examples"]) < 3:
                checks["examples"].append({"query": q, "missing": len(want - got), "extra": len(got - want)})
    out["cidr_check"] = checks
    log(f"    CIDR vs brute force: {checks['same']} same, {checks['different']} different, {checks['capped']} capped")

    # events/view's correlation pass (MISP's RelatedAttribute for every attribute of one event):
    # the largest event, annotated in one process; CPU seconds, median of 5, the load notwithstanding
    sizes = {}
    for uuid in store.event_uuids():
        meta = store.event_meta(uuid)
        if meta is not None and not meta.correlation_only:
            _, elements = store.revision(uuid)
            sizes[uuid] = sum(1 for e in elements if "value" in e)
    if sizes:
        largest = max(sizes, key=sizes.__getitem__)
        event = store.export_event(largest)
        cpus, related = [], 0
        for _ in range(5):
            copy = json.loads(json.dumps(event))
            c0 = time.process_time()
            correlator.annotate(copy)
            cpus.append(time.process_time() - c0)
        attributes = list(copy["Event"].get("Attribute", []))
        for obj in copy["Event"].get("Object", []):
            attributes.extend(obj.get("Attribute", []))
        related = sum(1 for a in attributes if a.get("RelatedAttribute"))
        out["annotate"] = {"attributes": len(attributes), "with_related": related,
                           "cpu_ms": statistics.median(cpus) * 1000}
        log(f"    events/view correlation pass: {out['annotate']['cpu_ms']:.1f} CPU ms for {len(attributes):,} attributes")

    # ssdeep: engine (best of 3) vs brute force over every stored value
    stored = truth["ssdeep"]
    rows = []
    for q in truth["ssdeep_queries"][:job["ssdeep_queries"]]:
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            found = correlator.value(q, "ssdeep")
            best = min(best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        brute = [v for v in stored if ppdeep.compare(q, v) >= SSDEEP_THRESHOLD]
        brute_seconds = time.perf_counter() - t0
        engine_values = Counter(m.value for m in found.matches)
        candidates: set[bytes] = set()  # what the index hands to ppdeep.compare
        with store.database.env.begin() as txn:
            cursor = txn.cursor(db=store.database.db["ix_ssdeep"])
            for key in ssdeep_keys(q):
                if cursor.set_key(key):
                    candidates.update(bytes(v) for v in cursor.iternext_dup())
        rows.append({"query": q, "engine_seconds": best, "brute_seconds": brute_seconds,
                     "matches": sum(engine_values.values()), "brute_matches": len(brute),
                     "candidates": len(candidates),
                     "identical": engine_values == Counter(brute), "over_correlating": bool(found.over_correlating)})
        log(f"    ssdeep {q[:40]}...: engine {best * 1000:.2f} ms, brute force {brute_seconds:.2f} s, "
            f"{len(brute)} matches ({len(candidates)} candidates), "
            f"{'identical' if rows[-1]['identical'] else 'DIFFERENT'}")
    out["ssdeep"] = {
        "stored": len(stored), "queries": rows,
        "engine_seconds_mean": sum(r["engine_seconds"] for r in rows) / max(1, len(rows)),
        "brute_seconds_mean": sum(r["brute_seconds"] for r in rows) / max(1, len(rows)),
        "identical": sum(r["identical"] for r in rows),
        "mean_matches": sum(r["matches"] for r in rows) / max(1, len(rows)),
        "mean_candidates": sum(r["candidates"] for r in rows) / max(1, len(rows)),
    }
    store.close()
    return out


def child_main(job_file: Path) -> int:
    job = json.loads(job_file.read_text())
    result: Json = {"status": "ok"}
    try:
        result.update(child_import(job) if job["kind"] == "import" else child_query(job))
    except Exception as exc:  # report, do not crash the driver
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    result["peak_rss_bytes"] = _vmhwm_bytes()
    Path(job["result"]).write_text(json.dumps(result))
    return 0


def run_child(job: Json, work: Path, *, no_correlation: bool = False) -> Json:
    ingest = _bench_module("ingest")
    work.mkdir(parents=True, exist_ok=True)
    job_file, result_file = work / "job.json", work / "result.json"
    result_file.unlink(missing_ok=True)
    job["result"] = str(result_file)
    job_file.write_text(json.dumps(job))
    env = ingest.child_env()
    env.pop(NO_CORRELATION_ENV, None)
    if no_correlation:
        env[NO_CORRELATION_ENV] = "1"
    log_path = work / "child.log"
    with open(log_path, "wb") as child_log:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(job_file)],
                                cwd=REPO_ROOT, env=env, stdout=child_log, stderr=subprocess.STDOUT)
        watcher = ingest.AnonWatcher(proc.pid)
        try:
            while proc.poll() is None:
                watcher.sample()
                time.sleep(ingest.AnonWatcher.INTERVAL)
        finally:
            watcher.close()
    if result_file.exists():
        result: Json = json.loads(result_file.read_text())
        result["peak_anon_bytes"] = watcher.peak_bytes
        if result.get("status") != "ok":
            log(result.get("traceback", result.get("error", "")))
        return result
    tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-5:])
    return {"status": "failed", "error": f"child exited {proc.returncode} without a result: {tail}"}


# ==========================================================================
# Driver.


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="fedmisp correlation benchmark (ratios are the headline).")
    p.add_argument("--attributes", type=int, default=1_000_000,
                   help="stored attributes in total; 10%% networks, 5%% ssdeep (default 1,000,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--real-ssdeep", type=int, default=5_000,
                   help="ssdeep hashes made by ppdeep.hash of random files; the rest are derived (default 5,000)")
    p.add_argument("--exact-queries", type=int, default=EXACT_SAMPLE, help=f"at most {EXACT_SAMPLE:,} (default)")
    p.add_argument("--ip-queries", type=int, default=5_000)
    p.add_argument("--net-queries", type=int, default=2_000)
    p.add_argument("--check-queries", type=int, default=50,
                   help="queries of each CIDR direction also checked against brute force (default 50)")
    p.add_argument("--ssdeep-queries", type=int, default=6,
                   help=f"ssdeep queries (at most {SSDEEP_QUERY_POOL}), each also run by brute force over all "
                        "stored hashes (default 6; the first is a stored synth value, the others unseen variants)")
    p.add_argument("--repeat", type=int, default=1, help="ingest runs per contender, interleaved; best kept")
    p.add_argument("--skip-ingest", action="store_true",
                   help="no ingest measurement: query the cached store (imported once if missing)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--regenerate", action="store_true")
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is None and (args.attributes < 1000 or args.repeat < 1):
        p.error("--attributes must be at least 1000 and --repeat positive")
    return args


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child is not None:
        return child_main(args.child)
    ingest = _bench_module("ingest")
    started = time.perf_counter()
    manifest = ensure_data(args)
    root = Path(manifest["root"])
    files = [Path(p) for p in manifest["files"]]
    comp = manifest["composition"]
    log(f"data: {manifest['attributes']:,} attributes in {len(files)} files ({comp['networks']:,} networks, "
        f"{comp['ssdeep']:,} ssdeep)")
    ingest.warm_page_cache(files)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    cached_home = root / "home"
    runs = root / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    results: Json = {"with": None, "without": None}
    rounds: dict[str, list[float | None]] = {"with": [], "without": []}
    failed = False
    import_job = {"kind": "import", "files": [str(p) for p in files]}
    fingerprint = code_fingerprint()
    fingerprint_file = root / "home.fingerprint"
    cached_ok = (cached_home / "store" / "data.mdb").exists() and fingerprint_file.exists() \
        and fingerprint_file.read_text() == fingerprint
    if args.skip_ingest and not cached_ok:
        log("no cached store written by this code: importing once (with correlation), not measured")
    if not args.skip_ingest or not cached_ok:
        plan = ["with", "without"] if not args.skip_ingest else ["with"]
        for round_no in range(args.repeat):
            for name in plan:
                work = runs / f"{name}-{round_no}"
                log(f"[ingest {round_no + 1}/{args.repeat}] {name} correlation, {manifest['attributes']:,} attributes ...")
                r = run_child(dict(import_job, home=str(work / "home")), work, no_correlation=name == "without")
                if r.get("status") != "ok":
                    log(f"    FAILED: {r.get('error')}")
                    failed = True
                    rounds[name].append(None)
                    continue
                log(f"    {r['seconds']:.1f} s, rows {r['rows']}")
                rounds[name].append(r["seconds"])
                best = results[name]
                if best is None or r["seconds"] < best["seconds"]:
                    results[name] = r
                    if name == "with":  # keep the best with-correlation store for the queries
                        shutil.rmtree(cached_home, ignore_errors=True)
                        shutil.move(str(work / "home"), cached_home)
                        fingerprint_file.write_text(fingerprint)
                shutil.rmtree(work, ignore_errors=True)
        if args.skip_ingest:
            results = {"with": None, "without": None}
    log("queries on the with-correlation store ...")
    q = run_child({"kind": "query", "store": str(cached_home / "store"), "truth": manifest["truth"],
                   "seed": args.seed, "ip_queries": args.ip_queries, "net_queries": args.net_queries,
                   "check_queries": args.check_queries, "exact_queries": args.exact_queries,
                   "ssdeep_queries": args.ssdeep_queries}, runs / "query")
    if q.get("status") != "ok":
        log(f"    FAILED: {q.get('error')}")
        failed = True
    shutil.rmtree(runs, ignore_errors=True)

    w, wo = results["with"], results["without"]
    ss = q.get("ssdeep") or {}
    report = {
        "data": {"attributes": manifest["attributes"], "files": len(files), **comp, "path": str(root)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_before": load_before},
        "ingest": {"with": w, "without": wo,
                   "ratio_with_over_without": _ratio(w and w["seconds"], wo and wo["seconds"]),
                   "ratio_per_round": [_ratio(a, b) for a, b in zip(rounds["with"], rounds["without"])],
                   "seconds_per_round": rounds,
                   "added_us_per_attribute": ((w["seconds"] - wo["seconds"]) / manifest["attributes"] * 1e6)
                   if w and wo else None,
                   "target_at_most": TARGET_INGEST_RATIO},
        "queries": q,
        "ssdeep_speedup": _ratio(ss.get("brute_seconds_mean"), ss.get("engine_seconds_mean")),
        "total_seconds": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 1 if failed else 0


def print_report(report: Json) -> None:
    d, m, ing, q = report["data"], report["machine"], report["ingest"], report["queries"]
    load = m["loadavg_before"]
    print(f"correlation benchmark: {d['attributes']:,} attributes ({d['networks']:,} networks, {d['ssdeep']:,} ssdeep: "
          f"{d['ssdeep_ppdeep_made']:,} ppdeep-made from random files, {d['extra_ssdeep'] - d['ssdeep_ppdeep_made']:,} "
          f"derived by editing those, {d['bulk_ssdeep']:,} synth random strings); {m['cpus']} CPUs"
          + (f", load {load[0]:.2f}" if load else ""))
    print(f"ppdeep.hash: {d['ppdeep_ms_per_hash']:.1f} ms per {d['ppdeep_kib_per_blob']:.1f} KiB file; "
          f"{d['ssdeep']:,} real hashes would cost {d['ppdeep_ms_per_hash'] * d['ssdeep'] / 1000:,.0f} CPU-s")
    print()
    print("headline (ratios; this machine is noisy):")
    r = ing["ratio_with_over_without"]
    if r is not None:
        w, wo = ing["with"], ing["without"]
        per_round = ", ".join(f"{x:.2f}" if x else "-" for x in ing["ratio_per_round"])
        print(f"  ingest with correlation / without:  {r:.2f}x time (target <= {TARGET_INGEST_RATIO}: "
              f"{'met' if r <= TARGET_INGEST_RATIO else 'NOT met'}); +{ing['added_us_per_attribute']:.1f} us per attribute "
              f"[best of {len(ing['ratio_per_round'])}: {w['seconds']:.1f} s vs {wo['seconds']:.1f} s; "
              f"{w['attributes_stored']:,} attributes each; ratio per round (adjacent runs): {per_round}]")
        print(f"    'without' = fedmisp.store.rows.correlation_rows patched to return [] in the importing child and "
              f"its spawned workers: rows ix_ip/ix_net/ix_ssdeep {wo['rows']['ix_ip']}/{wo['rows']['ix_net']}/"
              f"{wo['rows']['ix_ssdeep']} (with: {w['rows']['ix_ip']:,}/{w['rows']['ix_net']:,}/{w['rows']['ix_ssdeep']:,})")
        print(f"    store {w['store_bytes'] / MIB:,.0f} MiB vs {wo['store_bytes'] / MIB:,.0f} MiB; peak RSS "
              f"{(w['peak_rss_bytes'] or 0) / MIB:,.0f} vs {(wo['peak_rss_bytes'] or 0) / MIB:,.0f} MiB, peak anon "
              f"{(w['peak_anon_bytes'] or 0) / MIB:,.0f} vs {(wo['peak_anon_bytes'] or 0) / MIB:,.0f} MiB")
    else:
        print("  ingest: not measured (--skip-ingest)")
    ss = q.get("ssdeep") or {}
    sp = report["ssdeep_speedup"]
    if sp is not None:
        print(f"  ssdeep query vs brute force:        {sp:,.0f}x faster (target >= {TARGET_SSDEEP_SPEEDUP:.0f}: "
              f"{'met' if sp >= TARGET_SSDEEP_SPEEDUP else 'NOT met'}); identical results on {ss['identical']}/"
              f"{len(ss['queries'])} queries [{ss['engine_seconds_mean'] * 1000:.2f} ms vs "
              f"{ss['brute_seconds_mean']:.2f} s per query over {ss['stored']:,} stored hashes, threshold "
              f"{q.get('ssdeep_threshold')}; {ss['mean_matches']:.1f} matches from {ss['mean_candidates']:.1f} "
              f"index candidates per query, each scored with ppdeep.compare]")
        print("    (brute force grows with the stored hashes, the engine with the matches: small runs fall short)")
    x = q.get("exact")
    if x:
        per_match = 1e6 / (x["per_second"] * x["mean_matches"]) if x["mean_matches"] else 0.0
        print(f"  exact lookups:                      {x['per_second']:>9,.0f} lookups/s; {x['mean_matches']:.1f} "
              f"matches per query (~{per_match:.0f} us per listed match), {x['queries']:,} values of the bulk's mix "
              f"without IP and ssdeep types (those below)")
        print(f"    = {x['per_second'] / x['raw_ix_value_per_second']:.3f}x raw ix_value reads of the same keys "
              f"({x['raw_ix_value_per_second']:,.0f}/s: cursor and duplicates only, nothing decoded)")
    for key, label in (("ip_to_networks", "IP -> networks"), ("network_to_ips", "network -> IPs")):
        x = q.get(key)
        if x:
            print(f"  {label + ':':<35} {x['per_second']:>9,.0f} queries/s; {x['mean_matches']:.1f} matches per query "
                  f"(exact + CIDR), {x['over_correlating']} over-correlating, {x['queries']:,} queries"
                  + (f"; {x['cpu_us_per_query']:.0f} CPU us per query" if "cpu_us_per_query" in x else ""))
    a = q.get("annotate")
    if a:
        print(f"  events/view correlation pass:       {a['cpu_ms']:>9.1f} CPU ms for the largest event "
              f"({a['attributes']:,} attributes, {a['with_related']:,} with RelatedAttribute; median of 5)")
    c = q.get("cidr_check")
    if c:
        print(f"  CIDR vs brute force (ipaddress ints): {c['same']} identical, {c['different']} different, "
              f"{c['capped']} over the max_matches cap ({q.get('max_matches')})" +
              (f"; e.g. {c['examples']}" if c["examples"] else ""))
    print()
    print(f"total {report['total_seconds']:.0f} s. Targets are informational; nothing is asserted.")


if __name__ == "__main__":
    sys.exit(main())
