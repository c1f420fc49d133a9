"""API benchmark: restSearch and events/view on a real node, against a trivial aiohttp handler.

Run (from the repository root):

    .venv/bin/python bench/api.py                          # 1,000,000 attributes (the real figure)
    .venv/bin/python bench/api.py --attributes 50000       # quick run
    .venv/bin/python bench/api.py --repeat 5 --seconds 5   # more rounds, less noise
    .venv/bin/python bench/api.py --json                   # machine-readable

What it does:

1. Data: ``bench/synth.py``'s dataset for (seed, N), imported once with the ingest benchmark's
   own contender (``bench/ingest.py``: ``fedmisp init`` then ``import_paths`` with its worker
   processes, in a fresh interpreter) into ``bench/.data/api/<seed>-<N>/home``. A read-only API
   key is created there, and the query targets are picked from the source files
   (``targets.json``). The folder is reused while the dataset and the code that defines the
   store's on-disk form (STORE_FORMAT_SOURCES) are unchanged; ``--rebuild`` forces it.
2. Two servers on 127.0.0.1, each its own process: the node (``python -m fedmisp run`` on that
   home) and the ceiling, a trivial aiohttp handler (this file with ``--trivial-server``) that
   answers every request with a small JSON object, without reading the store or the body.
3. One aiohttp client in this process keeps ``--concurrency`` requests in flight (keep-alive
   connections) for ``--seconds`` per workload, after a warm-up of the same length as the
   workload's own check; it reads every response body whole and counts non-200 answers as errors:

   * ceiling  -- the single-value request below, sent to the trivial handler;
   * value    -- POST /attributes/restSearch {"value": v}: 1 attribute per answer, cycling over
                 up to 256 values that occur once in the dataset (so the store is read, not a
                 cache of one answer);
   * type+tag -- POST /attributes/restSearch {"type": t, "tags": [tag], "limit": 1000}: 1,000
                 attributes per answer, for (type, tag) pairs with at least 1,000 matches;
   * view     -- GET /events/view/<uuid> of the event of median size (its attribute count is
                 printed).

   Before measuring, one answer of each workload is parsed and checked (1 attribute, 1,000
   attributes, the event asked for); the measured loop only reads bodies.
4. ``--repeat`` rounds; in each, every workload is measured right after its own ceiling run, and
   its rate is divided by that ceiling rate, so the pair sees the same machine load (the machine
   this was written on is shared). The table shows the median ratio and the range over rounds,
   with p50/p99 latency, the server process's and the client's CPU time per request (/proc and
   process_time: less sensitive to a noisy neighbour than the wall clock), and "CPU model x", the
   ratio an otherwise idle machine would give estimated from those CPU times (cpu_model_ratio).
   On a busy machine the measured ratios are squeezed towards 1 (both servers wait for the same
   contended cores); the CPU model is the cross-check.

Target (issue 3): the single-value lookup at no less than 0.30 x the trivial handler's rate.
Printed, never asserted: the exit status says only whether the benchmark ran.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from hashlib import blake2b
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
DEFAULT_DATA_DIR = BENCH_DIR / ".data"

TARGET_VALUE_VS_TRIVIAL = 0.30
TYPE_TAG_LIMIT = 1_000
VALUE_TARGETS = 256  # distinct single-match values the value workload cycles over
TYPE_TAG_TARGETS = 4
# What decides the bytes of a stored home: a cached store is reused only while these are unchanged
# (API, query and export code may change freely between runs on the same store).
STORE_FORMAT_SOURCES = ("fedmisp/store/db.py", "fedmisp/store/rows.py", "fedmisp/store/events.py",
                        "fedmisp/store/log.py", "fedmisp/store/orgs.py", "fedmisp/store/apikeys.py",
                        "fedmisp/store/writer.py", "fedmisp/model",
                        "fedmisp/correlate/keys.py", "fedmisp/node/importer.py", "fedmisp/node/home.py")
WORKLOADS = ("ceiling", "value", "type+tag", "view")
LABELS = {"ceiling": "trivial aiohttp handler", "value": "restSearch value -> 1",
          "type+tag": "restSearch type+tag -> 1000", "view": "events/view"}

Json = dict[str, Any]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- the ceiling: a trivial aiohttp handler in its own process -----------------------------------

def trivial_server(port: int) -> None:
    """Answer every request with a small JSON object; the same aiohttp and event loop as the node,
    with access logging off as the node has it."""
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"response": {"Attribute": []}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None,
                print=lambda *_: print(f"trivial: serving on 127.0.0.1:{port}", flush=True))


# --- the cached store ----------------------------------------------------------------------------

def store_fingerprint(dataset: Any) -> str:
    h = blake2b(digest_size=16)
    h.update((dataset.root / "manifest.json").read_bytes())
    for name in STORE_FORMAT_SOURCES:
        path = REPO_ROOT / name
        for source in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(str(source.relative_to(REPO_ROOT)).encode() + b"\0" + source.read_bytes())
    return h.hexdigest()


def _event_attributes(event: Json) -> list[Json]:
    import synth
    return [a for a in synth.iter_attributes(event) if not a.get("deleted")]


def pick_targets(dataset: Any, seed: int) -> Json:
    """Query targets from the source files: values that occur once (also as a half of a composite
    value, which the value index holds too), (type, tag) pairs with at least TYPE_TAG_LIMIT
    matches, and the event of median size."""
    forms: Counter[str] = Counter()
    candidates: list[str] = []
    type_tag: Counter[tuple[str, str]] = Counter()
    sizes: list[tuple[int, str]] = []
    for path in dataset.paths:
        event = json.loads(path.read_bytes())["Event"]
        event_tags = {t["name"] for t in event.get("Tag", ())}
        attributes = _event_attributes(event)
        sizes.append((len(attributes), event["uuid"]))
        for a in attributes:
            value = a["value"].lower()
            forms[value] += 1
            if "|" in a["type"]:
                forms.update(value.split("|"))
            elif a["type"] in ("md5", "sha1", "sha256", "domain", "hostname", "ip-dst", "ip-src", "url"):
                candidates.append(value)
            for tag in event_tags | {t["name"] for t in a.get("Tag", ())}:
                type_tag[(a["type"], tag)] += 1
    unique = [v for v in candidates if forms[v] == 1]
    rng = random.Random(f"{seed}:api-targets")
    values = rng.sample(unique, min(VALUE_TARGETS, len(unique)))
    pairs = sorted((p for p, n in type_tag.items() if n >= TYPE_TAG_LIMIT), key=lambda p: (-type_tag[p], p))
    sizes.sort()
    median = sizes[len(sizes) // 2]
    return {"values": values,
            "type_tag": [{"type": t, "tag": tag, "matches": type_tag[(t, tag)]} for t, tag in
                         pairs[:TYPE_TAG_TARGETS]],
            "view": {"uuid": median[1], "attributes": median[0]}}


@dataclass
class CachedHome:
    home: Path
    api_key: str
    targets: Json
    built_seconds: float | None = None  # set when this run built it


def ensure_home(dataset: Any, data_dir: Path, seed: int, rebuild: bool) -> CachedHome:
    import ingest

    root = data_dir / "api" / f"{seed}-{dataset.attributes}"
    fingerprint = store_fingerprint(dataset)
    stamp = root / "fingerprint"
    if not rebuild and stamp.exists() and stamp.read_text() == fingerprint:
        return CachedHome(root / "home", (root / "apikey").read_text().strip(),
                          json.loads((root / "targets.json").read_text()))
    log(f"building the store for {dataset.attributes:,} attributes in {root} (cached for later runs) ...")
    shutil.rmtree(root, ignore_errors=True)
    work = root / "build"
    t0 = time.perf_counter()
    result = ingest.run_child("fedmisp", dataset.paths, work)  # exactly as bench/ingest.py imports
    if result.get("status") != "ok":
        raise RuntimeError(f"import failed: {result.get('error')}")
    stored = result.get("details", {}).get("attributes_stored")
    if stored != dataset.attributes:
        raise RuntimeError(f"import stored {stored} of {dataset.attributes} attributes: {result.get('details')}")
    (work / "home").rename(root / "home")
    shutil.rmtree(work)
    built = time.perf_counter() - t0
    log(f"    imported in {built:.0f} s; picking query targets from the source files ...")
    from fedmisp.node.home import Node
    with Node.open(root / "home") as node:
        api_key = node.create_api_key("read-only", "bench/api.py")
    targets = pick_targets(dataset, seed)
    (root / "apikey").write_text(api_key + "\n")
    (root / "targets.json").write_text(json.dumps(targets, indent=1))
    stamp.write_text(fingerprint)  # last: a folder without it is rebuilt
    return CachedHome(root / "home", api_key, targets, built)


# --- servers ---------------------------------------------------------------------------------------

def start_node(cached: CachedHome) -> Any:
    import sync_nodes as sn

    from fedmisp.model.identity import Identity
    from fedmisp.node.config import load_config

    config = load_config(cached.home)
    node = sn.BenchNode("api", cached.home, sn.free_port(), config.org_uuid,
                        Identity.load(config.key_path).public_key_text, cached.api_key)
    sn.configure({"api": node}, [], anti_entropy=86400)  # its own port; no peers
    sn.start_all([node], timeout=300)
    return node


def start_trivial(data_dir: Path) -> Any:
    """The ceiling server, driven like a node (BenchNode's spawn, wait and stop)."""
    import sync_nodes as sn

    home = data_dir / "api" / "trivial"
    home.mkdir(parents=True, exist_ok=True)
    server = sn.BenchNode("trivial", home, sn.free_port(), "", "", "")
    server.spawn(wrap=[str(Path(__file__).resolve()), "--trivial-server", str(server.port)])
    sn.wait_for(server.check_serving, 60, "the trivial server to start", interval=0.02)
    return server


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the client --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    method: str
    url: str
    body: bytes | None


@dataclass
class Round:
    requests: int
    errors: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    bytes_per_response: float
    server_cpu_ms: float | None  # server process CPU per request
    client_cpu_ms: float  # this process's CPU per request (the aiohttp client)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return sorted_values[rank - 1]


async def load(session: Any, requests: list[Request], concurrency: int, seconds: float,
               pid: int | None) -> Round:
    """Keep `concurrency` requests in flight for `seconds`, cycling over `requests`."""
    latencies: list[float] = []
    errors = 0
    received = 0
    turn = itertools.count()
    perf = time.perf_counter

    async def worker(stop_at: float) -> None:
        nonlocal errors, received
        while perf() < stop_at:
            r = requests[next(turn) % len(requests)]
            t0 = perf()
            try:
                async with session.request(r.method, r.url, data=r.body) as response:
                    body = await response.read()
                    ok = response.status == 200
            except OSError:
                ok, body = False, b""
            latencies.append(perf() - t0)
            received += len(body)
            if not ok:
                errors += 1

    cpu0 = cpu_seconds(pid) if pid else None
    client0 = time.process_time()
    t0 = perf()
    await asyncio.gather(*(worker(t0 + seconds) for _ in range(concurrency)))
    elapsed = perf() - t0
    client = time.process_time() - client0
    cpu = cpu_seconds(pid) - cpu0 if pid and cpu0 is not None else None
    latencies.sort()
    n = len(latencies)
    return Round(n, errors, elapsed, n / elapsed, percentile(latencies, 50) * 1000,
                 percentile(latencies, 99) * 1000, received / max(n, 1),
                 cpu / n * 1000 if cpu is not None and n else None, client / max(n, 1) * 1000)


def search_body(**params: Any) -> bytes:
    return json.dumps({"returnFormat": "json", **params}).encode()


def workloads(node_url: str, trivial_url: str, targets: Json) -> dict[str, list[Request]]:
    search = node_url + "/attributes/restSearch"
    values = [Request("POST", search, search_body(value=v)) for v in targets["values"]]
    return {
        "ceiling": [Request("POST", trivial_url + "/attributes/restSearch", r.body) for r in values],
        "value": values,
        "type+tag": [Request("POST", search, search_body(type=p["type"], tags=[p["tag"]], limit=TYPE_TAG_LIMIT))
                     for p in targets["type_tag"]],
        "view": [Request("GET", f"{node_url}/events/view/{targets['view']['uuid']}", None)],
    }


async def check_answers(session: Any, plan: dict[str, list[Request]], targets: Json) -> None:
    """One parsed answer per request of each node workload: the benchmark measures what it says."""
    async def get(r: Request) -> Any:
        async with session.request(r.method, r.url, data=r.body) as response:
            text = await response.text()
            if response.status != 200:
                raise RuntimeError(f"{r.method} {r.url} {r.body!r}: HTTP {response.status}: {text[:300]}")
            return json.loads(text)

    for r in plan["value"]:
        got = len((await get(r))["response"]["Attribute"])
        if got != 1:
            raise RuntimeError(f"value search {r.body!r} found {got} attributes; expected 1")
    for r in plan["type+tag"]:
        got = len((await get(r))["response"]["Attribute"])
        if got != TYPE_TAG_LIMIT:
            raise RuntimeError(f"type+tag search {r.body!r} found {got} attributes; expected {TYPE_TAG_LIMIT}")
    event = (await get(plan["view"][0]))["Event"]
    shown = len(event["Attribute"]) + sum(len(o["Attribute"]) for o in event["Object"])
    if event["uuid"] != targets["view"]["uuid"] or shown != targets["view"]["attributes"]:
        raise RuntimeError(f"events/view answered {event['uuid']} with {shown} attributes; expected "
                           f"{targets['view']['uuid']} with {targets['view']['attributes']}")


async def measure(node: Any, trivial: Any, cached: CachedHome, args: argparse.Namespace) -> list[dict[str, Round]]:
    import aiohttp

    plan = workloads(node.url, trivial.url, cached.targets)
    pids = {"ceiling": trivial.proc.pid, "value": node.proc.pid, "type+tag": node.proc.pid, "view": node.proc.pid}
    headers = {"Authorization": cached.api_key, "Accept": "application/json", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    rounds: list[dict[str, Round]] = []
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        await check_answers(session, plan, cached.targets)
        chosen = [name for name in WORKLOADS if name in args.workloads]
        for name in chosen:  # warm-up: connections, page cache, the node's first-use paths
            await load(session, plan[name], args.concurrency, args.warmup, None)
        for i in range(args.repeat):
            this: dict[str, Round] = {}
            for name in chosen[1:]:
                # The ceiling right before each workload: the pair sees the same machine load.
                for key, kind in ((ceiling_key(name), "ceiling"), (name, name)):
                    this[key] = r = await load(session, plan[kind], args.concurrency, args.seconds, pids[kind])
                    log(f"  [{i + 1}/{args.repeat}] {LABELS[kind]:<28} {r.rate:9,.0f} req/s  p50 {r.p50_ms:7.2f} ms"
                        f"  p99 {r.p99_ms:7.2f} ms" + (f"  {r.errors} errors" if r.errors else ""))
            rounds.append(this)
    return rounds


def ceiling_key(name: str) -> str:
    return f"ceiling@{name}"


# --- report --------------------------------------------------------------------------------------------

@dataclass
class Summary:
    workload: str
    ratio_median: float | None
    ratio_min: float | None
    ratio_max: float | None
    rate_median: float
    p50_ms: float  # median over rounds
    p99_ms: float  # median over rounds
    server_cpu_ms: float | None
    client_cpu_ms: float
    bytes_per_response: float
    errors: int
    ratios: list[float] = field(default_factory=list)
    cpu_model_ratio: float | None = None  # see cpu_model_ratio()


def summarise(rounds: list[dict[str, Round]]) -> list[Summary]:
    """Per workload, over rounds: its rate / its paired ceiling's rate; the ceiling row pools every
    ceiling measurement."""
    out = []
    for name in WORKLOADS:
        if name == "ceiling":
            runs = [r[k] for r in rounds for k in r if k.startswith("ceiling@")]
            ratios = [1.0] * len(runs)
        else:
            pairs = [(r[name], r[ceiling_key(name)]) for r in rounds if name in r]
            if not pairs:
                continue
            runs = [w for w, _ in pairs]
            ratios = [w.rate / c.rate for w, c in pairs if c.rate]
        cpu = [r.server_cpu_ms for r in runs if r.server_cpu_ms is not None]
        out.append(Summary(
            name, statistics.median(ratios) if ratios else None, min(ratios, default=None),
            max(ratios, default=None), statistics.median(r.rate for r in runs),
            statistics.median(r.p50_ms for r in runs), statistics.median(r.p99_ms for r in runs),
            statistics.median(cpu) if cpu else None, statistics.median(r.client_cpu_ms for r in runs),
            statistics.median(r.bytes_per_response for r in runs), sum(r.errors for r in runs), ratios))
    for m in out:
        m.cpu_model_ratio = cpu_model_ratio(out[0], m) if out and out[0].workload == "ceiling" else None
    return out


def cpu_model_ratio(ceiling: Summary, m: Summary) -> float | None:
    """The rate ratio an otherwise idle machine would give, estimated from CPU per request: the
    client and each server are single processes bound to about one core each (the node's threads
    share one GIL), so a request costs max(client CPU, server CPU) of wall time. Informational; the
    measured ratio is the headline."""
    if ceiling.server_cpu_ms is None or m.server_cpu_ms is None:
        return None
    return max(ceiling.client_cpu_ms, ceiling.server_cpu_ms) / max(m.client_cpu_ms, m.server_cpu_ms)


def print_table(report: Json, summaries: list[Summary]) -> None:
    s = report["settings"]
    t = report["targets"]
    print(f"API benchmark: {report['dataset']['attributes']:,} attributes in {report['dataset']['events']} events; "
          f"{s['concurrency']} requests in flight, {s['seconds']:g} s per workload, {s['repeat']} round(s); "
          f"{report['machine']['cpus']} CPUs, load {report['machine']['loadavg_before'][0]:.2f}")
    print(f"events/view: event of median size ({t['view']['attributes']:,} attributes); type+tag: "
          + ", ".join(f"{p['type']} + {p['tag']}" for p in t["type_tag"]))
    header = (f"{'workload':<30} {'x trivial':>9} {'range':>13} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'srv CPU ms':>10} {'cli CPU ms':>10} {'CPU model x':>11} {'KiB/resp':>9}")
    print()
    print(header)
    print("-" * len(header))
    for m in summaries:
        ratio = f"{m.ratio_median:.3f}" if m.ratio_median is not None else "-"
        spread = f"{m.ratio_min:.3f}-{m.ratio_max:.3f}" if m.ratio_min is not None else "-"
        cpu = f"{m.server_cpu_ms:.2f}" if m.server_cpu_ms is not None else "-"
        model = f"{m.cpu_model_ratio:.3f}" if m.cpu_model_ratio is not None else "-"
        print(f"{LABELS[m.workload]:<30} {ratio:>9} {spread:>13} {m.rate_median:>9,.0f} {m.p50_ms:>8.2f} "
              f"{m.p99_ms:>8.2f} {cpu:>10} {m.client_cpu_ms:>10.2f} {model:>11} {m.bytes_per_response / 1024:>9.1f}"
              + (f"  ! {m.errors} errors" if m.errors else ""))
    value = next((m for m in summaries if m.workload == "value"), None)
    if value is None:
        return
    print()
    verdict = "-" if value.ratio_median is None else \
        f"{value.ratio_median:.3f} ({'met' if value.ratio_median >= TARGET_VALUE_VS_TRIVIAL else 'not met'})"
    print(f"target: single-value restSearch >= {TARGET_VALUE_VS_TRIVIAL:.2f} x the trivial handler's rate: "
          f"{verdict}  [median of rounds; informational, never asserted]")
    print("(x trivial: measured rates, paired per round. CPU model x: max(client, server) CPU per request of the "
          "ceiling / of the workload, the ratio an idle machine would show; a busy machine squeezes the measured "
          "ratios towards 1)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="fedmisp API benchmark (ratios against a trivial aiohttp handler "
                                "measured in the same run).")
    p.add_argument("--attributes", type=int, default=1_000_000, help="attributes stored (default 1,000,000)")
    p.add_argument("--seed", type=int, default=1, help="data generator seed (default 1)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per workload and round (default 5)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per workload (default 2)")
    p.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help=f"comma-separated subset of {','.join(WORKLOADS)} (default: all; ceiling always runs)")
    p.add_argument("--json", action="store_true", help="print machine-readable results instead of the table")
    p.add_argument("--rebuild", action="store_true", help="rebuild the cached store and query targets")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help=f"cache for generated data and the store (default {DEFAULT_DATA_DIR})")
    args = p.parse_args(argv)
    unknown = set(args.workloads.split(",")) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workloads: {', '.join(sorted(unknown))}; accepted: {', '.join(WORKLOADS)}")
    args.workloads = {"ceiling", *args.workloads.split(",")}
    if (args.attributes < TYPE_TAG_LIMIT * 10 or args.repeat < 1
                                        or args.concurrency < 1 or args.seconds <= 0 or args.warmup < 0):
        p.error(f"--attributes must be at least {TYPE_TAG_LIMIT * 10}; --repeat, --concurrency and "
                "--seconds positive")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--trivial-server"]:
        # The ceiling's own process. BenchNode.spawn appends the node's `run --home DIR`: ignored.
        trivial_server(int(argv[1]))
        return 0
    args = parse_args(argv)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import synth

    dataset = synth.ensure_dataset(args.data_dir, args.seed, args.attributes, log=log)
    cached = ensure_home(dataset, args.data_dir, args.seed, args.rebuild)
    if not cached.targets["type_tag"]:
        raise SystemExit(f"no (type, tag) pair has {TYPE_TAG_LIMIT} matches in this dataset; use more --attributes")
    load_before = os.getloadavg()
    node = trivial = None
    try:
        log("starting the node and the trivial handler ...")
        node = start_node(cached)
        trivial = start_trivial(args.data_dir)
        rounds = asyncio.run(measure(node, trivial, cached, args))
    finally:
        for server in (node, trivial):
            if server is not None:
                server.stop()
    summaries = summarise(rounds)
    value_ratio = next((m.ratio_median for m in summaries if m.workload == "value"), None)
    report = {
        "dataset": {"seed": args.seed, "attributes": dataset.attributes, "events": len(dataset.events),
                    "home": str(cached.home), "built_seconds": cached.built_seconds},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_before": load_before},
        "settings": {"concurrency": args.concurrency, "seconds": args.seconds, "warmup": args.warmup,
                     "repeat": args.repeat},
        "targets": {"values": len(cached.targets["values"]), "type_tag": cached.targets["type_tag"],
                    "view": cached.targets["view"]},
        "rounds": [{k: asdict(v) for k, v in r.items()} for r in rounds],
        "summary": [asdict(s) for s in summaries],
        "target": {"value_vs_trivial_at_least": TARGET_VALUE_VS_TRIVIAL,
                   "met": None if value_ratio is None else value_ratio >= TARGET_VALUE_VS_TRIVIAL},
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report, summaries)
    return 1 if any(s.errors for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
