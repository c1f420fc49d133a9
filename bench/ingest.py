"""Ingest benchmark: fedmisp import vs. the raw floor and PyMISP, same run, same data.

Run (from the repository root):

    .venv/bin/python bench/ingest.py --attributes 1000000     # the real figure
    .venv/bin/python bench/ingest.py --attributes 50000       # quick smoke run
    .venv/bin/python bench/ingest.py --json                   # machine-readable
    .venv/bin/python bench/ingest.py --repeat 3               # best of 3, less noise

What it does:

1. Generates (once; cached under ``bench/.data/<seed>-<N>/``) synthetic MISP
   events totalling ``--attributes`` attributes, 200-10,000 per event, see
   ``bench/synth.py``.  Reads them all once so every contender starts from a
   warm page cache.
2. Runs each contender in its own fresh interpreter, one after the other, on
   the same files:

   * raw floor -- ``json.loads`` each file, then ``msgpack.packb`` plus one
     LMDB ``put`` per attribute (object attributes included) in 10,000-put
     durable write transactions, keyed by a sequence number; no validation,
     signing or indexing.  Nothing can ingest meaningfully faster than this,
     so it is the ceiling.
   * raw, uuid keys [info] -- the same keyed by attribute uuid.  Not a ratio
     base: random keys turn every commit into thousands of scattered page
     writes plus fsync, so it slows as the store grows (about 170k attrs/s
     at 50k attributes, 55k/s at 1M on a 2-core VM).  It shows what any
     uuid-ordered table costs.
   * PyMISP -- ``MISPEvent().load_file(path)`` per file, nothing stored: the
     ecosystem's reference for "parse a MISP event into objects".
   * fedmisp -- ``fedmisp_import()`` below, into a freshly initialised home.

   The store-writing contenders also run on the first quarter of the events,
   to show whether peak memory grows with the amount of data imported.
3. Prints attributes/s as ratios against the two baselines measured in this
   run, plus peak memory.  Machines are noisy, so the ratios are the
   headline; absolute rates are printed beside them only for context.
   Nothing here asserts on timings: the 3x target line is informational.

Memory figures, per contender process:

* peak RSS -- ``VmHWM`` of the child, i.e. its own high-water resident set.
  Not ``getrusage(RUSAGE_SELF).ru_maxrss``: on Linux a child inherits the
  parent's ru_maxrss across fork+exec (a fresh ``python -c`` child of a
  1.5 GiB parent reports 1.5 GiB), whereas VmHWM belongs to the address space
  the exec created.  ru_maxrss is kept in the JSON for reference, and is used
  where /proc is unavailable.
* peak anon -- the highest ``RssAnon`` (resident minus shared pages) seen by
  the driver polling the child's ``/proc/<pid>/statm`` every 10 ms: heap and
  other private memory, excluding file-backed pages.  LMDB reads its
  B-tree through a read-only mmap, so every page an insert touches counts in
  RSS as (reclaimable) page cache; RSS therefore grows with database size even
  when the heap is flat.  Peak anon is the figure that shows whether the
  importer itself holds on to memory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_DATA_DIR = BENCH_DIR / ".data"

RAW_TXN_ATTRIBUTES = 10_000
LMDB_MAP_SIZE = 64 << 30  # address space only; the file grows as needed
TARGET_VS_PYMISP = 3.0
MIB = 1 << 20

Json = dict[str, Any]


# ==========================================================================
# Child side: one contender per process.  Keep imports here lazy so each
# child's peak memory reflects its contender, not the driver.


class ContenderUnavailable(Exception):
    """The contender cannot run yet (e.g. fedmisp not written); not a failure."""


@dataclass
class Stopwatch:
    """Wall and CPU time of the measured section only (setup excluded)."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    # What the contender says it did, e.g. {"attributes_stored": n}; the
    # driver flags a run that stored fewer attributes than it was given.
    details: Json = field(default_factory=dict)
    _t0: float = 0.0
    _c0: float = 0.0

    @staticmethod
    def _cpu() -> float:
        # Include reaped children in case an importer farms work out to
        # processes; CPU > wall then shows it used more than one core.
        self_, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        return self_.ru_utime + self_.ru_stime + kids.ru_utime + kids.ru_stime

    def __enter__(self) -> Stopwatch:
        self._c0, self._t0 = self._cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = self._cpu() - self._c0


def _iter_attributes(event: Json) -> Iterator[Json]:
    # Same as synth.iter_attributes; duplicated so children need not import
    # the generator.
    yield from event.get("Attribute", ())
    for obj in event.get("Object", ()):
        yield from obj.get("Attribute", ())


def _raw_store(files: list[Path], work: Path, *, uuid_keys: bool) -> Stopwatch:
    """Parse, msgpack, one LMDB put per attribute, 10,000 puts per txn."""
    import lmdb
    import msgpack

    # writemap off (the default) so dirty pages are written with pwrite, the
    # safer mode a real store would use; sync stays on (durable commits).
    env = lmdb.open(str(work / "raw.lmdb"), map_size=LMDB_MAP_SIZE, writemap=False)
    packb, loads = msgpack.packb, json.loads
    try:
        with Stopwatch() as sw:
            txn = env.begin(write=True)
            seq = pending = 0
            for path in files:
                event = loads(path.read_bytes())["Event"]
                for attr in _iter_attributes(event):
                    key = attr["uuid"].encode() if uuid_keys else seq.to_bytes(8, "big")
                    txn.put(key, packb(attr))
                    seq += 1
                    pending += 1
                    if pending == RAW_TXN_ATTRIBUTES:
                        txn.commit()
                        txn = env.begin(write=True)
                        pending = 0
            txn.commit()
    finally:
        env.close()
    sw.details["attributes_stored"] = seq
    return sw


def contender_raw(files: list[Path], work: Path) -> Stopwatch:
    """Raw floor: keys are an 8-byte big-endian sequence number, so every put
    appends to the rightmost leaf.  Keying by uuid would already be an index
    (random-order B-tree inserts), which the floor must not include."""
    return _raw_store(files, work, uuid_keys=False)


def contender_raw_uuid(files: list[Path], work: Path) -> Stopwatch:
    """Informational: the raw floor keyed by attribute uuid.  Random keys make
    each 10,000-put txn dirty thousands of scattered leaf pages that commit
    must write and fsync, so the rate falls as the store grows.  This is the
    price of any uuid-ordered table, and it is reported so importer designs
    can be judged against it; it is not a ratio base."""
    return _raw_store(files, work, uuid_keys=True)


def contender_pymisp(files: list[Path], work: Path) -> Stopwatch:
    """Reference: PyMISP parses each event into MISPEvent objects; no storing."""
    from pymisp import MISPEvent

    with Stopwatch() as sw:
        for path in files:
            event = MISPEvent()
            event.load_file(path)
    return sw


# --------------------------------------------------------------------------
# >>> PLACEHOLDER: fedmisp API.  Lead: adjust this to the real importer. <<<
#
# Contract: initialise a fresh fedmisp home (not timed), then import every
# file into it inside the Stopwatch (timed), and return the Stopwatch.
# Raise ContenderUnavailable when fedmisp cannot run at all yet, so the
# benchmark still reports the two baselines.


def fedmisp_import(files: list[Path], home: Path) -> Stopwatch:
    try:
        from fedmisp.node import importer  # type: ignore[import-not-found, unused-ignore]
        from fedmisp.node.home import Node  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise ContenderUnavailable(f"{type(exc).__name__}: {exc}") from exc

    init = subprocess.run(
        [sys.executable, "-m", "fedmisp", "init", "--home", str(home), "--org", "Bench"],
        capture_output=True,
        text=True,
    )
    if init.returncode != 0:
        detail = (init.stderr or init.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ContenderUnavailable(f"`fedmisp init` exited {init.returncode}: {detail[0]}")

    # Opening the store is setup, not timed.
    with Node.open(home) as node, Stopwatch() as sw:
        report = importer.import_paths(node, files)
    sw.details = {
        "attributes_stored": report.attributes_stored,
        "events_stored": report.events_stored,
        "events_refused": len(report.refused),
        "first_refusal": report.refused[0] if report.refused else None,
    }
    return sw


# >>> end of PLACEHOLDER <<<
# --------------------------------------------------------------------------


def contender_fedmisp(files: list[Path], work: Path) -> Stopwatch:
    try:
        return fedmisp_import(files, work / "home")
    except NotImplementedError as exc:
        raise ContenderUnavailable(f"NotImplementedError: {exc}") from exc


CONTENDERS: dict[str, Callable[[list[Path], Path], Stopwatch]] = {
    "raw": contender_raw,
    "raw-uuid": contender_raw_uuid,
    "pymisp": contender_pymisp,
    "fedmisp": contender_fedmisp,
}
LABELS = {
    "raw": "raw floor (msgpack+LMDB)",
    "raw-uuid": "raw, uuid keys [info]",
    "pymisp": "PyMISP MISPEvent.load",
    "fedmisp": "fedmisp import",
}
# Contenders that write a store also run on the first quarter of the events,
# to show whether their peak memory grows with the amount of data.
SCALED = ("raw", "raw-uuid", "fedmisp")


def _proc_status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(field_name.encode() + b":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _ru_maxrss_bytes(who: int) -> int:
    kib_or_bytes = resource.getrusage(who).ru_maxrss
    return kib_or_bytes if sys.platform == "darwin" else kib_or_bytes * 1024


def child_main(job_file: Path) -> int:
    job = json.loads(job_file.read_text())
    files = [Path(p) for p in job["files"]]
    work = Path(job["work"])
    result: Json = {"status": "ok", "error": None}
    try:
        sw = CONTENDERS[job["contender"]](files, work)
        result.update(seconds=sw.seconds, cpu_seconds=sw.cpu_seconds, details=sw.details)
    except ContenderUnavailable as exc:
        result.update(status="unavailable", error=str(exc))
    except Exception as exc:  # report, do not crash the driver
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
    hwm_kib = _proc_status_kib("VmHWM")
    ru_self = _ru_maxrss_bytes(resource.RUSAGE_SELF)
    result.update(
        peak_rss_bytes=hwm_kib * 1024 if hwm_kib is not None else ru_self,
        ru_maxrss_bytes=ru_self,
        # Largest reaped subprocess (e.g. `fedmisp init`, or importer workers).
        children_ru_maxrss_bytes=_ru_maxrss_bytes(resource.RUSAGE_CHILDREN),
    )
    Path(job["result"]).write_text(json.dumps(result))
    return 0


# ==========================================================================
# Driver side.


@dataclass
class Measurement:
    contender: str
    size: str  # "full" or "quarter"
    events: int
    attributes: int
    status: str = "ok"
    error: str | None = None
    runs: int = 0
    seconds: float | None = None  # best (lowest) over runs
    cpu_seconds: float | None = None  # of the best run
    attrs_per_s: float | None = None
    peak_rss_mib: float | None = None  # highest over runs
    peak_anon_mib: float | None = None
    ru_maxrss_mib: float | None = None
    children_ru_maxrss_mib: float | None = None
    all_seconds: list[float] = field(default_factory=list)
    details: Json = field(default_factory=dict)  # of the last run

    @property
    def warning(self) -> str | None:
        """Set when the contender stored fewer attributes than it was given:
        its rate then does not measure the whole job."""
        stored = self.details.get("attributes_stored")
        if stored is None or stored >= self.attributes:
            return None
        note = f"stored {stored:,} of {self.attributes:,} attributes"
        if self.details.get("events_refused"):
            note += f"; {self.details['events_refused']} event(s) refused, first: {self.details['first_refusal']}"
        return note

    @property
    def ok(self) -> bool:
        return self.status == "ok" and bool(self.attrs_per_s)

    def add(self, raw: Json) -> None:
        self.runs += 1
        self.status, self.error = raw["status"], raw.get("error")
        if self.status != "ok":
            return
        self.details = raw.get("details") or {}
        secs = float(raw["seconds"])
        self.all_seconds.append(secs)
        if self.seconds is None or secs < self.seconds:
            self.seconds, self.cpu_seconds = secs, float(raw["cpu_seconds"])
            self.attrs_per_s = self.attributes / secs if secs > 0 else None

        def peak(old: float | None, new_bytes: int | None) -> float | None:
            if new_bytes is None:
                return old
            return max(old or 0.0, new_bytes / MIB)

        self.peak_rss_mib = peak(self.peak_rss_mib, raw.get("peak_rss_bytes"))
        self.peak_anon_mib = peak(self.peak_anon_mib, raw.get("peak_anon_bytes"))
        self.ru_maxrss_mib = peak(self.ru_maxrss_mib, raw.get("ru_maxrss_bytes"))
        self.children_ru_maxrss_mib = peak(self.children_ru_maxrss_mib, raw.get("children_ru_maxrss_bytes"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def warm_page_cache(paths: list[Path]) -> None:
    """Read every file once so no contender pays for cold disk reads.  Chunked
    so the driver's own memory stays small."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 20):
                pass


def child_env() -> dict[str, str]:
    # Make `import fedmisp` work from a checkout (flat or src layout) even
    # when the package is not installed into the venv; `python -m fedmisp`
    # in the grandchild inherits this.
    env = dict(os.environ)
    extra = [str(REPO_ROOT), str(REPO_ROOT / "src")]
    if env.get("PYTHONPATH"):
        extra.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(extra)
    return env


class AnonWatcher:
    """Peak private (anonymous) memory of another process, by polling
    ``/proc/<pid>/statm`` (resident - shared pages = RssAnon) from the driver.

    The kernel keeps no high-water mark for anonymous memory, so it has to be
    sampled.  Sampling from outside costs the measured process nothing: an
    in-process sampler thread was tried first and cost ~5% CPU through GIL
    hand-offs.  Spikes shorter than the 10 ms interval can be missed.
    """

    INTERVAL = 0.01

    def __init__(self, pid: int) -> None:
        self.peak_bytes: int | None = None
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        try:
            self._fd: int | None = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
        except OSError:
            self._fd = None  # no /proc (not Linux): peak anon is not reported

    def sample(self) -> None:
        if self._fd is None:
            return
        try:
            fields = os.pread(self._fd, 128, 0).split()
            anon = (int(fields[1]) - int(fields[2])) * self._page
        except (OSError, ValueError, IndexError):
            return  # process already gone
        if self.peak_bytes is None or anon > self.peak_bytes:
            self.peak_bytes = anon

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def run_child(contender: str, files: list[Path], work: Path) -> Json:
    work.mkdir(parents=True)
    job_file, result_file = work / "job.json", work / "result.json"
    job_file.write_text(json.dumps({
        "contender": contender,
        "files": [str(p) for p in files],
        "work": str(work),
        "result": str(result_file),
    }))
    # Output goes to files, not pipes: the driver is busy polling memory and
    # must not let a chatty importer block on a full pipe.
    log_path = work / "child.log"
    with open(log_path, "wb") as child_log:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(job_file)],
            cwd=REPO_ROOT, env=child_env(), stdout=child_log, stderr=subprocess.STDOUT,
        )
        watcher = AnonWatcher(proc.pid)
        try:
            while proc.poll() is None:
                watcher.sample()
                time.sleep(AnonWatcher.INTERVAL)
        finally:
            watcher.close()
    if result_file.exists():
        result: Json = json.loads(result_file.read_text())
        result["peak_anon_bytes"] = watcher.peak_bytes
        return result
    tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-5:])
    return {"status": "failed", "error": f"child exited {proc.returncode} without a result: {tail}"}


def fmt_rate(x: float | None) -> str:
    return f"{x:,.0f}" if x else "-"


def fmt_ratio(num: float | None, den: float | None) -> str:
    return f"{num / den:.2f}x" if num and den else "-"


def fmt_mib(x: float | None) -> str:
    return f"{x:,.0f}" if x is not None else "-"


def ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


def build_report(dataset: Any, results: dict[tuple[str, str], Measurement], args: argparse.Namespace,
                 load_before: tuple[float, float, float] | None) -> Json:
    def get(c: str, s: str = "full") -> Measurement | None:
        return results.get((c, s))

    def rate(c: str, s: str = "full") -> float | None:
        m = get(c, s)
        return m.attrs_per_s if m and m.ok else None

    def growth(c: str, key: str) -> float | None:
        full, quarter = get(c, "full"), get(c, "quarter")
        if not (full and quarter and full.ok and quarter.ok):
            return None
        return ratio(getattr(full, key), getattr(quarter, key))

    fed_vs_pymisp = ratio(rate("fedmisp"), rate("pymisp"))
    return {
        "dataset": {
            "seed": dataset.seed,
            "attributes": dataset.attributes,
            "events": len(dataset.events),
            "objects": sum(e.objects for e in dataset.events),
            "json_mib": round(dataset.total_bytes / MIB, 1),
            "path": str(dataset.root),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": load_before,
        },
        "settings": {"repeat": args.repeat, "raw_txn_attributes": RAW_TXN_ATTRIBUTES,
                     "lmdb_map_size": LMDB_MAP_SIZE},
        "results": [asdict(m) | {"warning": m.warning} for m in results.values()],
        "ratios": {
            "fedmisp_vs_pymisp": fed_vs_pymisp,
            "fedmisp_vs_raw_floor": ratio(rate("fedmisp"), rate("raw")),
            "raw_floor_vs_pymisp": ratio(rate("raw"), rate("pymisp")),
            "raw_uuid_vs_pymisp": ratio(rate("raw-uuid"), rate("pymisp")),
        },
        "memory_growth_full_vs_quarter": {
            c: {"peak_rss": growth(c, "peak_rss_mib"), "peak_anon": growth(c, "peak_anon_mib")}
            for c in SCALED if get(c, "quarter")
        },
        "target": {
            "fedmisp_vs_pymisp_at_least": TARGET_VS_PYMISP,
            "met": None if fed_vs_pymisp is None else fed_vs_pymisp >= TARGET_VS_PYMISP,
        },
    }


def print_table(report: Json, results: dict[tuple[str, str], Measurement]) -> None:
    ds = report["dataset"]
    load = report["machine"]["loadavg_before"]
    load_note = f", load {load[0]:.2f}" if load else ""
    events = f"{ds['events']:,} event" + ("s" if ds["events"] != 1 else "")
    print(f"ingest benchmark: {ds['attributes']:,} attributes in {events} "
          f"({ds['objects']:,} objects, {ds['json_mib']:,.1f} MiB JSON, seed {ds['seed']}); "
          f"{report['machine']['cpus']} CPUs{load_note}")
    raw = results.get(("raw", "full"))
    pym = results.get(("pymisp", "full"))
    raw_rate = raw.attrs_per_s if raw and raw.ok else None
    pym_rate = pym.attrs_per_s if pym and pym.ok else None

    header = (f"{'contender':<26} {'x PyMISP':>9} {'x raw floor':>12} {'attrs/s':>11} "
              f"{'seconds':>8} {'peak RSS MiB':>13} {'peak anon MiB':>14}")
    print()
    print(header)
    print("-" * len(header))
    for name in CONTENDERS:
        m = results.get((name, "full"))
        if m is None:
            continue
        if not m.ok:
            word = "not available" if m.status == "unavailable" else m.status.upper()
            print(f"{LABELS[name]:<26} {word} ({m.error})")
            continue
        print(f"{LABELS[name]:<26} {fmt_ratio(m.attrs_per_s, pym_rate):>9} "
              f"{fmt_ratio(m.attrs_per_s, raw_rate):>12} {fmt_rate(m.attrs_per_s):>11} "
              f"{m.seconds:>8.2f} {fmt_mib(m.peak_rss_mib):>13} {fmt_mib(m.peak_anon_mib):>14}")
        if m.warning:
            print(f"{'':<26} ! {m.warning}")

    scaling: list[tuple[str, Measurement, Measurement]] = []
    for c in SCALED:
        q, f = results.get((c, "quarter")), results.get((c, "full"))
        if q is not None and f is not None and q.ok and f.ok:
            scaling.append((c, q, f))
    if scaling:
        q0 = scaling[0][1]
        print()
        print(f"peak memory vs data size (MiB; quarter = first {q0.events} events, {q0.attributes:,} attributes):")
        print(f"{'contender':<26} {'RSS 1/4':>9} {'RSS full':>9} {'growth':>7}   "
              f"{'anon 1/4':>9} {'anon full':>9} {'growth':>7}")
        for c, q, f in scaling:
            print(f"{LABELS[c]:<26} {fmt_mib(q.peak_rss_mib):>9} {fmt_mib(f.peak_rss_mib):>9} "
                  f"{fmt_ratio(f.peak_rss_mib, q.peak_rss_mib):>7}   "
                  f"{fmt_mib(q.peak_anon_mib):>9} {fmt_mib(f.peak_anon_mib):>9} "
                  f"{fmt_ratio(f.peak_anon_mib, q.peak_anon_mib):>7}")
        print("(RSS includes LMDB pages read through its mmap, which grow with the database; "
              "anon is private memory)")

    print()
    got = report["ratios"]["fedmisp_vs_pymisp"]
    verdict = "no fedmisp figure" if got is None else f"{got:.2f}x ({'met' if got >= TARGET_VS_PYMISP else 'not met'})"
    print(f"target: fedmisp >= {TARGET_VS_PYMISP:.0f}x PyMISP load rate: {verdict}  [informational; never asserted]")
    if raw_rate and pym_rate:
        print(f"headroom: raw floor is {raw_rate / pym_rate:.2f}x PyMISP in this run")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="fedmisp ingest benchmark (ratios against baselines measured in the same run).")
    parser.add_argument("--attributes", type=int, default=1_000_000,
                        help="total attributes across all events (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1, help="data generator seed (default 1)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the stores written by the contenders (LMDB env, fedmisp home) for inspection")
    parser.add_argument("--json", action="store_true", help="print machine-readable results instead of the table")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per contender; best time and highest memory are reported (default 1)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"comma-separated subset of {','.join(CONTENDERS)} (default: all)")
    parser.add_argument("--no-scaling", action="store_true",
                        help="skip the quarter-size runs used for the memory-growth check")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help=f"cache for generated data and scratch stores (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the cached dataset")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # internal: run one contender
    args = parser.parse_args(argv)
    if args.child is None:
        unknown = set(args.contenders.split(",")) - set(CONTENDERS)
        if unknown:
            parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
        if args.attributes < 1 or args.repeat < 1:
            parser.error("--attributes and --repeat must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child is not None:
        return child_main(args.child)

    sys.path.insert(0, str(BENCH_DIR))
    import synth  # driver-only: generation must not weigh on the children

    dataset = synth.ensure_dataset(args.data_dir, args.seed, args.attributes,
                                   regenerate=args.regenerate, log=log)
    log(f"dataset: {dataset.root} ({len(dataset.events)} events, {dataset.total_bytes / MIB:.1f} MiB)")
    warm_page_cache(dataset.paths)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None

    sizes: dict[str, tuple[Any, ...]] = {"full": dataset.events}
    if not args.no_scaling and len(dataset.events) > 1:
        sizes["quarter"] = dataset.prefix(args.attributes // 4)
    chosen = [c for c in CONTENDERS if c in args.contenders.split(",")]
    plan = [(c, "full") for c in chosen]
    plan += [(c, "quarter") for c in SCALED if c in chosen and "quarter" in sizes]

    results: dict[tuple[str, str], Measurement] = {
        (c, s): Measurement(c, s, len(sizes[s]), sum(e.attributes for e in sizes[s])) for c, s in plan
    }
    run_root = args.data_dir / "runs" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    try:
        # Rounds interleave contenders so slow drifts in machine load hit all
        # of them alike rather than whichever happened to run last.
        for round_no in range(args.repeat):
            for contender, size in plan:
                m = results[(contender, size)]
                if m.runs and m.status != "ok":
                    continue  # unavailable or failed once: don't retry each round
                work = run_root / f"{contender}-{size}-{round_no}"
                log(f"[{round_no + 1}/{args.repeat}] {LABELS[contender]} on {m.attributes:,} attributes ...")
                m.add(run_child(contender, [e.path for e in sizes[size]], work))
                log(f"    {m.status}: " + (f"{m.all_seconds[-1]:.2f} s" if m.status == "ok" else str(m.error)))
                if not args.keep:
                    shutil.rmtree(work, ignore_errors=True)  # free disk before the next store
    finally:
        if not args.keep:
            shutil.rmtree(run_root, ignore_errors=True)
            with contextlib.suppress(OSError):
                run_root.parent.rmdir()  # only if no kept runs remain
        else:
            log(f"stores kept under {run_root}")

    report = build_report(dataset, results, args, load_before)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report, results)
    # Exit status reflects only whether the benchmark ran, never the speed.
    return 1 if any(m.status == "failed" for m in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
