"""Outbound policy benchmark: how fast `outbound()` decides, per element, beside a bare loop.

Run (from the repository root):

    .venv/bin/python bench/policy.py                  # the real figure (best of 3, about 15 s)
    .venv/bin/python bench/policy.py --repeat 5       # best of 5, less noise
    .venv/bin/python bench/policy.py --elements 20000 # does the cost per element stay flat?
    .venv/bin/python bench/policy.py --profile        # also cProfile one round of outbound()
    .venv/bin/python bench/policy.py --json           # machine-readable

What it does (issue: "decisions per second for 100 peers x 10,000 elements, beside a baseline of
the same loop doing nothing; the policy must not be what limits sync"):

1. Builds, deterministically from ``--seed``, one synthetic published EventView of ``--elements``
   elements: top-level attributes, objects with member attributes, object references; element
   distributions 0-5 in a MISP-like mix (mostly 5 = inherit), some sharing-group (4) elements
   and objects, tags (tlp:* and others) on some, a realistic type and to_ids mix.  Its holding is
   `pipeline.origin_holding` (the node that created the event), and the node knows a couple of
   sharing groups.  ``--peers`` PeerPolicy objects have varied modes and push filters (most the
   default, some with tags_exclude, types_exclude, to_ids_only, TLP ceilings, org lists,
   max_distribution caps), chosen so that every peer decides every element: no peer refuses the
   whole event, which would make the figure measure the fast path.
2. Measures, best of ``--repeat``, in this process:

   * bare loop -- for each peer, for each element, one trivial assignment.  The floor of any
     per-element Python loop; the ratio base.
   * loop + levels dict [info] -- the same loop storing ``levels[uuid] = level``: the least any
     decision must do to hand back its result, so the distance between it and outbound() is
     what the policy logic itself costs.
   * outbound() -- ``outbound(event, holding, peer, node)`` for every peer; each call decides the
     event header and every element.
   * whole-event refusals -- an unpublished event, a pull-only peer and a push filter that refuses
     the event on its tags: each should cost a few microseconds whatever the event's size.

3. Prints element decisions per second as ratios against the bare loop (the headline: machines
   are noisy, ratios much less so), absolute rates and time per peer-event decision beside them,
   and the rate sync would need: a node ingests about INGEST_RATE attributes/s
   (bench/ingest.py), and every element it takes in may have to be decided for each peer, so the
   policy keeps up only if it decides INGEST_RATE x peers elements per second.

Nothing here asserts on timings; the exit status says only whether the benchmark ran.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import io
import json
import os
import platform
import pstats
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Make `import fedmisp` work from a checkout when the package is not installed into the venv.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fedmisp.policy.model import (  # noqa: E402
    ALL, COMMUNITY, CONNECTED, INHERIT, KIND_ATTRIBUTE, KIND_OBJECT, KIND_REFERENCE, ORG_ONLY,
    SHARING_GROUP, ElementView, EventView, Holding, NodeState, PeerMode, PeerPolicy, SharingGroup,
    SyncFilter,
)
from fedmisp.policy.outbound import outbound, outbound_many  # noqa: E402
from fedmisp.policy.pipeline import Outcome, origin_holding, plan  # noqa: E402

# About what one node ingests (bench/ingest.py, docs/decisions/0004: fedmisp import on a 2-core
# machine).  Context only: the figure the policy is set against, not a measurement of this run.
INGEST_RATE = 50_000

# Shape of the synthetic event.  Objects carry 1-5 member attributes (3 on average) and a tenth
# of them a reference; the rest of the elements are top-level attributes.
OBJECT_SHARE = 0.10  # objects among all elements
MEMBERS_PER_OBJECT = (1, 5)
REFERENCE_SHARE = 0.05

# Distribution mixes, weights per level 0-5.  MISP users mostly leave elements on "inherit"; a
# minority narrow them (0-2), widen them (3) or bind them to a sharing group (4).
TOP_LEVEL_MIX = {ORG_ONLY: 4, COMMUNITY: 5, CONNECTED: 3, ALL: 10, SHARING_GROUP: 6, INHERIT: 72}
OBJECT_MIX = {ORG_ONLY: 3, COMMUNITY: 3, CONNECTED: 2, ALL: 8, SHARING_GROUP: 8, INHERIT: 76}
MEMBER_MIX = {ORG_ONLY: 2, COMMUNITY: 2, CONNECTED: 1, ALL: 2, SHARING_GROUP: 3, INHERIT: 90}

# (type, to_ids, weight): a feed-like mix of indicators and context.
TYPES = [
    ("ip-dst", True, 14), ("ip-src", True, 6), ("domain", True, 12), ("hostname", True, 6),
    ("url", True, 12), ("md5", True, 8), ("sha1", True, 5), ("sha256", True, 10),
    ("filename", False, 6), ("email-src", True, 3), ("domain|ip", True, 4), ("ip-dst|port", True, 3),
    ("text", False, 5), ("comment", False, 3), ("link", False, 3),
]
OBJECT_TEMPLATES = [("file", "688c46fb-5edb-40a3-8273-1af7923e2215"),
                    ("domain-ip", "43b3b146-77eb-4931-b4cc-b66c60f28734"),
                    ("url", "60efb77b-40b5-4c46-871b-ed1ed999fce5")]
TAG_RATE = 0.20  # elements with at least one tag
TLP_TAGS = {"tlp:clear": 2, "tlp:green": 5, "tlp:amber": 4, "tlp:amber+strict": 1, "tlp:red": 1}
OTHER_TAGS = ["osint:source-type=\"block-or-filter-list\"", "kill-chain:delivery",
              "kill-chain:command-and-control", "false-positive:risk=\"low\"",
              "misp:confidence-level=\"fairly-confident\"", "admiralty-scale:source-reliability=\"b\"",
              "pap:green", "pap:amber", "workflow:state=\"complete\"", "malware:emotet"]

NODE_ORG = "org-node"
Json = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Synthetic data


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _pick(rng: random.Random, mix: dict[int, int] | dict[str, int]) -> Any:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def _tags(rng: random.Random) -> frozenset[str]:
    if rng.random() >= TAG_RATE:
        return frozenset()
    tags: set[str] = set()
    if rng.random() < 0.5:
        tags.add(_pick(rng, TLP_TAGS))
    tags.update(rng.sample(OTHER_TAGS, rng.randint(0 if tags else 1, 2)))
    return frozenset(tags)


def build_event(rng: random.Random, n_elements: int, groups: list[str]) -> EventView:
    """One event of exactly `n_elements` elements, objects' members and references right after
    their object (element order does not matter to the pipeline, which puts objects first)."""
    type_names = [t for t, _, _ in TYPES]
    type_weights = [w for _, _, w in TYPES]
    to_ids_default = {t: ids for t, ids, _ in TYPES}

    def sg_for(distribution: int) -> str | None:
        # Most sharing-group items use the widely shared group, a few the narrow one.
        return (groups[0] if rng.random() < 0.8 else groups[1]) if distribution == SHARING_GROUP else None

    def attribute(object_uuid: str | None, mix: dict[int, int]) -> ElementView:
        distribution = _pick(rng, mix)
        kind = rng.choices(type_names, weights=type_weights)[0]
        # to_ids mostly follows the type's default; analysts switch some off.
        to_ids = to_ids_default[kind] and rng.random() < 0.85
        return ElementView(uuid=_uuid(rng), kind=KIND_ATTRIBUTE, distribution=distribution,
                           sharing_group=sg_for(distribution), object_uuid=object_uuid, type=kind,
                           tags=_tags(rng), to_ids=to_ids)

    elements: list[ElementView] = []
    n_objects = int(n_elements * OBJECT_SHARE)
    object_uuids: list[str] = []
    # Leave room for the references and at least as many top-level attributes as objects.
    budget = n_elements - int(n_elements * REFERENCE_SHARE) - n_objects
    for _ in range(n_objects):
        distribution = _pick(rng, OBJECT_MIX)
        template, template_uuid = rng.choice(OBJECT_TEMPLATES)
        obj = ElementView(uuid=_uuid(rng), kind=KIND_OBJECT, distribution=distribution,
                          sharing_group=sg_for(distribution), template=template,
                          template_uuid=template_uuid, tags=_tags(rng) if rng.random() < 0.3 else frozenset())
        elements.append(obj)
        object_uuids.append(obj.uuid)
        for _ in range(min(rng.randint(*MEMBERS_PER_OBJECT), max(budget - n_objects, 0))):
            elements.append(attribute(obj.uuid, MEMBER_MIX))
            budget -= 1
    for _ in range(int(n_elements * REFERENCE_SHARE)):
        # A reference lives in its source object and carries no distribution of its own.
        elements.append(ElementView(uuid=_uuid(rng), kind=KIND_REFERENCE, distribution=INHERIT,
                                    object_uuid=rng.choice(object_uuids) if object_uuids else None))
    while len(elements) < n_elements:
        elements.append(attribute(None, TOP_LEVEL_MIX))
    return EventView(uuid=_uuid(rng), orgc_uuid="org-author", orgc_name="CIRCL",
                     distribution=ALL, sharing_group=None, published=True, timestamp=1_700_000_000,
                     tags=frozenset({"tlp:green", "osint:source-type=\"blog-post\""}),
                     elements=tuple(elements[:n_elements]))


def build_peers(rng: random.Random, n_peers: int) -> list[PeerPolicy]:
    """Peers whose push filters pass the event header (so each decides every element) but
    withhold some elements: mostly the default filter, a spread of the others."""
    variants: list[tuple[int, Callable[[], SyncFilter]]] = [
        (60, SyncFilter.push_default),
        (8, lambda: SyncFilter(tlp_ceiling="tlp:green")),
        (6, lambda: SyncFilter(tags_exclude=("false-positive:*", "tlp:red"), tlp_ceiling="tlp:amber")),
        (5, lambda: SyncFilter(types_exclude=("filename", "text", "comment", "link"),
                               tlp_ceiling="tlp:amber+strict")),
        (5, lambda: SyncFilter(to_ids_only=True, tlp_ceiling="tlp:amber")),
        (4, lambda: SyncFilter(orgs_include=("CIRCL", "org-other"), tlp_ceiling="tlp:amber",
                               pap_ceiling="pap:green")),
        (4, lambda: SyncFilter(orgs_exclude=("org-spam",), max_distribution=CONNECTED,
                               templates_exclude=("url",))),
        (4, lambda: SyncFilter(tags_include=("osint:*",), tags_exclude=("malware:*",),
                               max_distribution=ALL)),
        (4, lambda: SyncFilter()),  # operator lifted every ceiling, tlp:red included
    ]
    modes = {PeerMode.FULL: 80, PeerMode.PUSH_ONLY: 12, PeerMode.CORRELATION_ONLY: 5, PeerMode.INTERNAL: 3}
    peers: list[PeerPolicy] = []
    for i in range(n_peers):
        mode = _pick(rng, {m.value: w for m, w in modes.items()})
        make = rng.choices([v for _, v in variants], weights=[w for w, _ in variants])[0]
        org = NODE_ORG if mode == PeerMode.INTERNAL.value else f"org-{i:03d}"
        peers.append(PeerPolicy(name=f"peer-{i:03d}", org_uuid=org, mode=PeerMode(mode), push=make()))
    return peers


def build_node(peers: list[PeerPolicy]) -> tuple[NodeState, list[str]]:
    """A node in two sharing groups: a wide one most peers belong to and a narrow one."""
    orgs = sorted({p.org_uuid for p in peers} - {NODE_ORG})
    wide = {NODE_ORG: True} | {o: False for o in orgs[: len(orgs) * 2 // 3]}
    narrow = {NODE_ORG: True} | {o: False for o in orgs[::10]}
    groups = [SharingGroup(uuid="sg-wide", name="Sector ISAC", owner=NODE_ORG, revision=3, members=wide),
              SharingGroup(uuid="sg-narrow", name="Incident 42", owner=NODE_ORG, revision=1, members=narrow)]
    return NodeState(org_uuid=NODE_ORG, sharing_groups={g.uuid: g for g in groups}), [g.uuid for g in groups]


@dataclasses.dataclass(frozen=True)
class Scenario:
    event: EventView
    holding: Holding
    peers: list[PeerPolicy]
    node: NodeState


def build_scenario(seed: int, n_elements: int, n_peers: int) -> Scenario:
    rng = random.Random(f"{seed}:policy")
    peers = build_peers(rng, n_peers)
    node, groups = build_node(peers)
    event = build_event(rng, n_elements, groups)
    return Scenario(event, origin_holding(event), peers, node)


# --------------------------------------------------------------------------------------------
# Timed loops.  Each returns how many element decisions (or calls) it made, so the rate divides
# by what was actually done.  GC stays enabled (sync runs with it) but starts from a clean slate.


def loop_bare(s: Scenario) -> int:
    elements = s.event.elements
    n = 0
    for _peer in s.peers:
        for element in elements:
            x = element  # noqa: F841  -- the trivial per-element work of the floor
        n += len(elements)
    return n


def loop_levels(s: Scenario) -> int:
    elements = s.event.elements
    n = 0
    for _peer in s.peers:
        levels: dict[str, int] = {}
        for element in elements:
            levels[element.uuid] = ALL
        n += len(elements)
    return n


def loop_outbound(s: Scenario) -> int:
    event, holding, node = s.event, s.holding, s.node
    event_plan = plan(event)  # once per event, as the sync layer does: it does not depend on the peer
    n = 0
    for peer in s.peers:
        outcome = outbound(event, holding, peer, node, event_plan)
        # levels also holds the event header, withheld only elements.
        n += len(outcome.levels) - 1 + len(outcome.withheld) if outcome.allowed else 0
    return n


def loop_outbound_many(s: Scenario) -> int:
    """The sync layer's call: one decision per group of peers that cannot be told apart."""
    n = 0
    for outcome in outbound_many(s.event, s.holding, s.peers, s.node).values():
        n += len(outcome.levels) - 1 + len(outcome.withheld) if outcome.allowed else 0
    return n


def refusals(event: EventView, holding: Holding, peers: list[PeerPolicy], node: NodeState,
             rounds: int) -> Callable[[Scenario], int]:
    """`rounds` x len(peers) outbound calls that refuse the whole event; counts calls."""
    def run(_: Scenario) -> int:
        for _round in range(rounds):
            for peer in peers:
                outbound(event, holding, peer, node)
        return rounds * len(peers)
    return run


def time_once(fn: Callable[[Scenario], int], s: Scenario) -> tuple[float, int]:
    gc.collect()  # each run starts without the previous one's garbage
    t0 = time.perf_counter()
    count = fn(s)
    return time.perf_counter() - t0, count


# --------------------------------------------------------------------------------------------
# Report


def describe(s: Scenario) -> Json:
    kinds = Counter(e.kind for e in s.event.elements)
    members = sum(1 for e in s.event.elements if e.kind == KIND_ATTRIBUTE and e.object_uuid)
    return {
        "elements": len(s.event.elements),
        "top_level_attributes": kinds[KIND_ATTRIBUTE] - members,
        "objects": kinds[KIND_OBJECT],
        "object_members": members,
        "references": kinds[KIND_REFERENCE],
        "distribution_as_authored": dict(sorted(Counter(e.distribution for e in s.event.elements).items())),
        "held_levels": dict(sorted(Counter(s.holding.levels.values()).items())),
        "tagged": sum(1 for e in s.event.elements if e.tags),
        "peers": len(s.peers),
        "peer_modes": dict(Counter(p.mode.value for p in s.peers)),
    }


def decision_mix(s: Scenario) -> Json:
    """What the peers were told, summed: shows the run exercises each branch of the pipeline."""
    reasons: Counter[str] = Counter()
    passed = refused_events = 0
    for peer in s.peers:
        outcome: Outcome = outbound(s.event, s.holding, peer, s.node)
        if not outcome.allowed:
            refused_events += 1
            continue
        passed += len(outcome.levels) - 1
        reasons.update(r.value for r in outcome.withheld.values())
    return {"passed": passed, "withheld": dict(reasons.most_common()), "events_refused": refused_events}


def profile(s: Scenario, top: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    loop_outbound(s)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def run(args: argparse.Namespace) -> Json:
    s = build_scenario(args.seed, args.elements, args.peers)
    n_peers = len(s.peers)
    unpublished = dataclasses.replace(s.event, published=False)
    pull_only = [dataclasses.replace(p, mode=PeerMode.PULL_ONLY) for p in s.peers]
    tag_refused = [dataclasses.replace(p, push=SyncFilter(tags_exclude=("osint:*",))) for p in s.peers]
    # Refusals take a few microseconds each: enough rounds for a run of a few milliseconds.
    rounds = max(1, 20_000 // max(n_peers, 1))

    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    # Interleave rounds so drifts in machine load hit every measurement alike.
    plan: dict[str, Callable[[Scenario], int]] = {
        "bare": loop_bare,
        "levels": loop_levels,
        "outbound": loop_outbound,
        "outbound_many": loop_outbound_many,
        "refuse_unpublished": refusals(unpublished, s.holding, s.peers, s.node, rounds),
        "refuse_pull_only": refusals(s.event, s.holding, pull_only, s.node, rounds),
        "refuse_event_tag": refusals(s.event, s.holding, tag_refused, s.node, rounds),
    }
    loop_outbound(s)  # warm up: first-call costs (lru caches, enum lookups) are not the steady state
    results: dict[str, Json] = {k: {"seconds": None, "count": 0, "all_seconds": []} for k in plan}
    for _ in range(args.repeat):
        for name, fn in plan.items():
            secs, count = time_once(fn, s)
            r = results[name]
            r["all_seconds"].append(secs)
            if r["seconds"] is None or secs < r["seconds"]:
                r["seconds"], r["count"] = secs, count

    per_element = {k: results[k] for k in ("bare", "levels", "outbound", "outbound_many")}
    for r in per_element.values():
        r["decisions_per_s"] = r["count"] / r["seconds"] if r["seconds"] else None
        r["per_peer_event_s"] = r["seconds"] / n_peers if n_peers else None
    base = per_element["bare"]["decisions_per_s"]
    for r in per_element.values():
        r["vs_bare"] = r["decisions_per_s"] / base if base and r["decisions_per_s"] else None
    full_call = per_element["outbound"]["per_peer_event_s"]
    for k in ("refuse_unpublished", "refuse_pull_only", "refuse_event_tag"):
        r = results[k]
        r["per_call_s"] = r["seconds"] / r["count"] if r["count"] else None
        r["vs_full_decision"] = r["per_call_s"] / full_call if full_call and r["per_call_s"] else None

    needed = INGEST_RATE * n_peers
    got = per_element["outbound_many"]["decisions_per_s"]
    report: Json = {
        "scenario": describe(s) | {"seed": args.seed},
        "decision_mix": decision_mix(s),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_before": load_before},
        "repeat": args.repeat,
        "results": results,
        "sync": {"ingest_rate_per_node": INGEST_RATE, "needed_decisions_per_s": needed,
                 "headroom": got / needed if got else None},
    }
    if args.profile:
        report["profile"] = profile(s, args.profile_top)
    return report


def fmt_rate(x: float | None) -> str:
    return f"{x:,.0f}" if x else "-"


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.2f} {unit}"
    return f"{seconds / 1e-9:.0f} ns"


def print_report(report: Json) -> None:
    sc, res, sync = report["scenario"], report["results"], report["sync"]
    load = report["machine"]["loadavg_before"]
    print(f"policy benchmark: 1 event x {sc['elements']:,} elements ({sc['top_level_attributes']:,} attributes, "
          f"{sc['objects']:,} objects, {sc['object_members']:,} object members, {sc['references']:,} references) "
          f"x {sc['peers']} peers; seed {sc['seed']}, best of {report['repeat']}, "
          f"{report['machine']['cpus']} CPUs, Python {report['machine']['python']}"
          + (f", load {load[0]:.2f}" if load else ""))
    print(f"authored distributions {sc['distribution_as_authored']}, held levels {sc['held_levels']}, "
          f"{sc['tagged']:,} tagged; peer modes {sc['peer_modes']}")
    mix = report["decision_mix"]
    print(f"decisions: {mix['passed']:,} element passes, withheld {mix['withheld']}, "
          f"{mix['events_refused']} whole-event refusals")

    print()
    header = f"{'loop over peers x elements':<32} {'x bare loop':>11} {'element decisions/s':>20} {'per peer-event':>15}"
    print(header)
    print("-" * len(header))
    labels = {"bare": "bare loop (floor)", "levels": "loop + levels dict [info]", "outbound": "outbound()",
              "outbound_many": "outbound_many()"}
    for key, label in labels.items():
        r = res[key]
        ratio = f"{r['vs_bare']:.3f}x" if r["vs_bare"] else "-"
        print(f"{label:<32} {ratio:>11} {fmt_rate(r['decisions_per_s']):>20} {fmt_time(r['per_peer_event_s']):>15}")
    out = res["outbound"]
    expected = sc["elements"] * sc["peers"]
    if out["count"] != expected:
        print(f"! outbound() decided {out['count']:,} elements, not {expected:,}: some peer refused the whole event")
    if out["vs_bare"]:
        print(f"outbound() costs {1 / out['vs_bare']:.0f}x the bare loop per element, "
              f"{res['levels']['decisions_per_s'] / out['decisions_per_s']:.1f}x the loop that only stores levels")

    print()
    header = f"{'whole-event refusal (outbound)':<32} {'of a full decision':>18} {'per call':>12}"
    print(header)
    print("-" * len(header))
    for key, label in (("refuse_unpublished", "unpublished event"), ("refuse_pull_only", "pull-only peer"),
                       ("refuse_event_tag", "push filter refuses event tag")):
        r = res[key]
        # A fraction like 0.00008 reads better as "1/12,500 of a full decision".
        ratio = f"1/{1 / r['vs_full_decision']:,.0f}" if r["vs_full_decision"] else "-"
        print(f"{label:<32} {ratio:>18} {fmt_time(r['per_call_s']):>12}")

    print()
    head = sync["headroom"]
    verdict = "-" if head is None else (f"{head:.1f}x what sync needs" if head >= 1
                                         else f"only {head:.2f}x what sync needs: the policy would limit sync")
    print(f"sync: a node ingests ~{sync['ingest_rate_per_node']:,} attributes/s (bench/ingest.py); fanning each "
          f"out to {sc['peers']} peers needs {sync['needed_decisions_per_s']:,} element decisions/s. "
          f"outbound_many() decides {fmt_rate(res['outbound_many']['decisions_per_s'])}/s on one core "
          f"(all {sc['peers']} peers at full ingest rate at once, the worst case): {verdict}  "
          f"[informational; never asserted]")
    if "profile" in report:
        print()
        print(report["profile"])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="fedmisp outbound policy benchmark (ratios against a bare loop).")
    parser.add_argument("--elements", type=int, default=10_000, help="elements in the event (default 10,000)")
    parser.add_argument("--peers", type=int, default=100, help="peers to decide for (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is reported (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="data generator seed (default 1)")
    parser.add_argument("--profile", action="store_true", help="also cProfile one round of outbound() calls")
    parser.add_argument("--profile-top", type=int, default=15, help="functions to list in the profile (default 15)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results instead of the table")
    args = parser.parse_args(argv)
    if args.elements < 20 or args.peers < 1 or args.repeat < 1:
        parser.error("--elements must be at least 20, --peers and --repeat positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
