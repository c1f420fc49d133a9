"""Feed and export benchmark: what serving a feed through the policy, and the Zeek and STIX 2.1
exports, cost beside the plain exports that existed before them.

Run (from the repository root):

    .venv/bin/python bench/feeds.py                     # 40 events x 250 attributes, best of 3
    .venv/bin/python bench/feeds.py --events 100 --repeat 5

It builds a node in a temporary folder (factories.py events: published, distribution 3, tlp:amber,
attribute distributions mixed 0-5), then measures, best of --repeat:

* feed, no policy (baseline): every event exported (`events(store, include_local=False)`), its
  manifest entry and hashes.csv lines made: what `fedmisp export --format feed` did before feeds
  were served.
* feed, served (`build_snapshot`): the same, each event decided by the outbound pipeline for the
  feed's filter first, only the allowed elements exported.
* csv (baseline for the attribute formats), zeek, over every attribute of the node.
* misp-json events (baseline for STIX), stix2 events bundle (misp-stix).

Printed as ratios against each baseline measured in the same run; nothing asserts on timings.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from factories import event  # noqa: E402

from fedmisp.export import csv as csv_export, stix, zeek  # noqa: E402
from fedmisp.export.misp import events, hash_lines, manifest_entry  # noqa: E402
from fedmisp.gossip.replica import Replica  # noqa: E402
from fedmisp.node.feed_config import ServedFeed  # noqa: E402
from fedmisp.node.feeds import build_snapshot  # noqa: E402
from fedmisp.node.home import init_home  # noqa: E402
from fedmisp.node.importer import import_paths  # noqa: E402
from fedmisp.policy.model import SyncFilter  # noqa: E402
from fedmisp.store import query  # noqa: E402


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--attributes", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for i in range(args.events):
            (folder / f"{i}.json").write_text(json.dumps(event(seed=i, attributes=args.attributes, objects=2)))
        node, _ = init_home(Path(tmp) / "node", "Bench", "127.0.0.1:0")
        report = import_paths(node, [folder], workers=0)
        replica = Replica(node)
        feed = ServedFeed("bench", True, SyncFilter.push_default())

        def plain_feed() -> None:
            for e in events(node.store, include_local=False):
                manifest_entry(e)
                list(hash_lines(e))

        def attributes() -> Any:
            return query.search_attributes(node.store, query.Query())

        runs = {
            "feed, no policy": best(plain_feed, args.repeat),
            "feed, served": best(lambda: build_snapshot(replica, feed), args.repeat),
            "csv": best(lambda: sum(map(len, csv_export.attributes_csv(node.store, attributes()))), args.repeat),
            "zeek": best(lambda: sum(map(len, zeek.intel(attributes()))), args.repeat),
            "misp-json events": best(lambda: sum(len(json.dumps(e)) for e in events(node.store)), args.repeat),
            "stix2 events": best(lambda: sum(map(len, stix.events_bundle(events(node.store)))), args.repeat),
        }
        node.close()
    print(f"{args.events} events, {report.attributes_stored} attributes stored; best of {args.repeat}")
    for name, base in (("feed, served", "feed, no policy"), ("zeek", "csv"), ("stix2 events", "misp-json events")):
        print(f"  {name:16} {runs[name] / runs[base]:6.2f} x {base:16} ({runs[name]:.3f} s vs {runs[base]:.3f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
