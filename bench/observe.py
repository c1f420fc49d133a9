"""What observability costs replication: the same in-process pull with and without the node's observers.

Run (from the repository root):

    .venv/bin/python bench/observe.py                       # 2,000 events of 5 attributes, 3 rounds
    .venv/bin/python bench/observe.py --events 500 --attributes 200

One sender home holds ``--events`` synthetic events (bench/synth.py, rewritten to distribution 3).
Each round pulls them into two fresh receivers over gossip/driver.py's in-memory transport: one with
no observer (the baseline), one with what `fedmisp run` wires (Prometheus counters and the audit
log file, on both the sender's and the receiver's side). Small events are the worst case: the cost
is per record (one Decision, one counter, one JSON line on each side), not per attribute. The
result is the ratio observed / baseline (CPU seconds of the process) per round; nothing here
asserts a timing.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))
sys.path.insert(0, str(BENCH_DIR))

import sync_nodes as sn  # noqa: E402
from synth import make_event  # noqa: E402
from sync import _distribution_3  # noqa: E402

from fedmisp.gossip.driver import InMemory, pull  # noqa: E402
from fedmisp.gossip.observe import NO_OBSERVER, Fanout, Observer  # noqa: E402
from fedmisp.gossip.replica import Replica  # noqa: E402
from fedmisp.node.home import Node  # noqa: E402
from fedmisp.node.importer import import_paths  # noqa: E402
from fedmisp.node.logs import AuditLog  # noqa: E402
from fedmisp.node.metrics import NodeMetrics  # noqa: E402


def observers(node: Node) -> tuple[Observer, AuditLog]:
    audit = AuditLog(node.config.audit, node.config.home)
    return Fanout((NodeMetrics(node), audit)), audit


def one_pull(work: Path, sender: sn.BenchNode, label: str, observed: bool) -> float:
    receiver = sn.create_node(work / label, "receiver")
    sn.configure({"sender": sender, "receiver": receiver}, [("sender", "receiver")], 30)
    audits: list[AuditLog] = []
    with Node.open(sender.home) as s, Node.open(receiver.home) as r:
        s_obs = r_obs = NO_OBSERVER
        if observed:
            (s_obs, a1), (r_obs, a2) = observers(s), observers(r)
            audits = [a1, a2]
        rs, rr = Replica(s, s_obs), Replica(r, r_obs)
        # CPU time of this process: the pull runs on this thread alone, and the shared machine's
        # load then moves the figure far less than wall time
        started = time.process_time()
        report = pull(rr, rr.peer("sender"), InMemory(rs, "receiver"))
        seconds = time.process_time() - started
        for audit in audits:
            audit.close()
    assert report.stored > 0, "nothing replicated: the benchmark measured nothing"
    shutil.rmtree(receiver.home, ignore_errors=True)
    return seconds


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--attributes", type=int, default=5, help="attributes per event (objects included)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fedmisp-bench-observe-"))
    try:
        files = work / "events"
        files.mkdir()
        for i in range(args.events):
            doc = {"Event": _distribution_3(make_event(7, i, args.attributes))}
            (files / f"{i:06d}.json").write_text(json.dumps(doc))
        sender = sn.create_node(work / "sender", "sender")
        with Node.open(sender.home) as node:
            import_paths(node, sorted(files.iterdir()))
        rounds = []
        for r in range(args.repeat):
            # interleaved, so a load drift on the shared machine hits both
            base = one_pull(work, sender, f"base{r}", observed=False)
            observed = one_pull(work, sender, f"obs{r}", observed=True)
            rounds.append({"baseline_s": base, "observed_s": observed, "ratio": observed / base})
        ratios = [x["ratio"] for x in rounds]
        if args.json:
            print(json.dumps({"events": args.events, "attributes": args.attributes, "rounds": rounds}))
        else:
            for i, x in enumerate(rounds):
                print(f"round {i}: observed / baseline = {x['ratio']:.3f}")
            print(f"{args.events} events x {args.attributes} attributes: observed / baseline "
                  f"{min(ratios):.3f} .. {max(ratios):.3f} (1.0 = free)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
