"""Replication between real stores, against the oracle written from DESIGN's tables (issue 13).

tests/test_policy_property.py checks the pipeline in memory. This test runs what production runs:
real nodes (real LMDB stores, keys and fedmisp.toml configs, tests/federation.py), events imported
at their origin as an analyst would (MISP JSON through the importer, signed), pulled through the
real Replica and PullSession (gossip/driver.py's in-memory transport, the protocol's encoding),
in a random order of single pulls with random node restarts (a node is closed and opened again
from its home), then pulled until nothing moves. Topologies are random graphs with cycles whose
links are full, push-only, pull-only or correlation-only on either side, with random push and pull
filters (NOT tags with wildcards, TLP ceilings, types, templates, to_ids only, max_distribution);
events mix distributions 0-5 per element, a sharing group and tags.

Checked after settling, for every node and every item (header, object, attribute, reference):
it holds it at exactly the level the oracle (test_policy_property.Oracle, which never calls the
pipeline) finds, correlation-only exactly when the oracle says so, and the origin holds every
element of what it created, body and all. Then one of two narrowing steps, and the same again:
- an edit at the origin: a newer revision with other distributions, some attributes deleted;
  every node must then hold exactly what the oracle finds for the new revision alone (a node that
  held the older copy and is no longer entitled to it drops it: the author's retraction);
- the sharing group's owner removes members: each removed node drops every item bound to the
  group (and what hangs from a dropped object or header), the rest stays as it was.

The origin-loss defect of issue 13 (the origin replacing its full copy with a peer's stripped copy
of the same revision) is found by this test within its CI examples with the fix reverted. Checked
by reverting, in a worktree, Replica._accept's early return for a held same revision and
store/events.py write_event's add-only body write back to the replace-unless-identical write, then running
this test with 12 different Hypothesis seeds: 80 examples found the loss in 12 of 12 runs (40
examples: 9 of 10), hence 80. On the code before issue 13 it fails in both narrowing phases too.
"""
from __future__ import annotations

import copy
import json
import random
import uuid as _uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings, strategies as st

from fedmisp.gossip.driver import InMemory, pull
from fedmisp.gossip.replica import Replica
from fedmisp.policy.holding import unpack_holding
from fedmisp.gossip.sharing_groups import accept as sg_accept, create, revise
from fedmisp.model.analyst import current_items
from fedmisp.model.records import KIND_ANALYST
from fedmisp.node.home import Node
from fedmisp.node.importer import import_paths
from fedmisp.policy.model import ElementView, EventView, PeerMode, SharingGroup
from fedmisp.policy.reasons import Reason

from federation import make_federation
from test_policy_property import INTERNAL, NEXT_HOP, Item, Oracle, Phase, Scenario, items_of

MODES = ("full", "full", "full", "push-only", "pull-only", "correlation-only")
TAGS = ("tlp:clear", "tlp:green", "tlp:amber", "tlp:red", "osint:source-type=\"blog\"", "malware:emotet")
EXCLUDE_TAGS = ("osint:*", "*emotet*", "tlp:red", "*:red")
CEILINGS = ("tlp:clear", "tlp:green", "tlp:amber", "tlp:amber+strict", "tlp:red")
TYPES = {"ip-dst": "Network activity", "domain": "Network activity", "md5": "Payload delivery", "text": "Other"}
TEMPLATE = ("domain-ip", "43b3b146-77eb-4931-b4cc-b66c60f28734", "11")
T0 = 1_700_000_000


# --- what is drawn -----------------------------------------------------------------------------

@dataclass
class Elem:
    """One element of an event as its origin's analyst wrote it."""
    uuid: str
    kind: str  # attribute, object, reference, report
    distribution: int
    tags: tuple[str, ...] = ()
    type: str | None = None
    to_ids: bool = False
    object_uuid: str | None = None
    relation: str | None = None
    value: str = ""


@dataclass
class Note:
    """An analyst-data item (decision 0029) the origin's analyst wrote in the event's file."""
    uuid: str
    type: str  # Note or Opinion
    target: str  # the event, an attribute or report, or a note
    target_type: str  # Event, Attribute, EventReport, Note
    distribution: int  # 0-4: no inherit


@dataclass
class Ev:
    uuid: str
    origin: str
    distribution: int
    tags: tuple[str, ...]
    elements: list[Elem]
    grouped: bool = False  # whether its distribution-4 items use the sharing group
    notes: list[Note] = field(default_factory=list)  # nested ones after their targets


@dataclass(repr=False)
class Plan:
    names: list[str]
    edges: list[tuple[str, str]]
    settings: dict[tuple[str, str], dict[str, Any]]  # (u, v) -> u's [[peer]] v additions
    group_owner: str
    group_members: list[str]  # node names besides the owner
    events: list[Ev]
    edit: bool  # phase 2: an edit at the origin of events[0] (else: members removed from the group)
    new_levels: dict[str, int] = field(default_factory=dict)  # phase 2 edit: uuid -> distribution
    deleted: frozenset[str] = frozenset()  # phase 2 edit: attribute uuids left out of the new revision
    removed: list[str] = field(default_factory=list)  # phase 2 removal: member node names
    seed: int = 0

    def __repr__(self) -> str:
        lines = [f"nodes {self.names}, edges {self.edges}"]
        lines += [f"  {u} configures {v}: {s}" for (u, v), s in sorted(self.settings.items()) if s]
        lines.append(f"group owner {self.group_owner} members {self.group_members}")
        for ev in self.events:
            lines.append(f"event {ev.uuid[-4:]} at {ev.origin} d={ev.distribution} tags={ev.tags}")
            lines += [f"    {e.kind} {e.uuid[-4:]} d={e.distribution} type={e.type} ids={e.to_ids} "
                      f"tags={e.tags}{' in ' + e.object_uuid[-4:] if e.object_uuid else ''}" for e in ev.elements]
            lines += [f"    {n.type} {n.uuid[-4:]} d={n.distribution} on {n.target_type} {n.target[-4:]}"
                      for n in ev.notes]
        if self.edit:
            lines.append(f"edit: levels {({k[-4:]: v for k, v in self.new_levels.items()})} "
                         f"deleted {[d[-4:] for d in sorted(self.deleted)]}")
        else:
            lines.append(f"remove members {self.removed}")
        return "\n".join(lines) + f"\nseed {self.seed}"


class Uuids:
    """Distinct uuids for one plan (drawn ones could repeat while hypothesis shrinks)."""

    def __init__(self, base: int):
        self.base, self.count = base, 0

    def __call__(self) -> str:
        self.count += 1
        return str(_uuid.UUID(int=(self.base << 16) + self.count, version=4))


@st.composite
def filters(draw) -> dict[str, Any]:
    f: dict[str, Any] = {}
    if draw(st.integers(0, 2)) == 0:
        f["tags_exclude"] = draw(st.lists(st.sampled_from(EXCLUDE_TAGS), min_size=1, max_size=2, unique=True))
    if draw(st.integers(0, 3)) == 0:
        f["tlp_ceiling"] = draw(st.sampled_from(CEILINGS))
    if draw(st.integers(0, 4)) == 0:
        f["types_exclude"] = [draw(st.sampled_from(sorted(TYPES)))]
    if draw(st.integers(0, 6)) == 0:
        f["templates_exclude"] = [TEMPLATE[0]]
    if draw(st.integers(0, 5)) == 0:
        f["to_ids_only"] = True
    if draw(st.integers(0, 3)) == 0:
        f["max_distribution"] = draw(st.integers(0, 3))
    return f


@st.composite
def plans(draw) -> Plan:
    n = draw(st.sampled_from([3, 4, 5, 2]))
    new_uuid = Uuids(draw(st.integers(0, 2**100)))
    names = [f"n{i}" for i in range(n)]
    edges = {(names[draw(st.integers(0, i - 1))], names[i]) for i in range(1, n)}  # a spanning tree
    for j in range(n):  # and cycles
        for i in range(j):
            if draw(st.integers(0, 2)) == 0:  # most plans of 3 or more nodes have a cycle
                edges.add((names[i], names[j]))
    triangle = n >= 3 and draw(st.integers(0, 2)) > 0
    if triangle:  # a ring through the first event's origin (n0), the way its revision comes back to it
        edges |= {("n0", "n1"), ("n1", "n2"), ("n0", "n2")}
    settings: dict[tuple[str, str], dict[str, Any]] = {}
    for a, b in sorted(edges):
        for u, v in ((a, b), (b, a)):
            s: dict[str, Any] = {"mode": draw(st.sampled_from(MODES))}
            push, pull_ = draw(filters()), draw(filters())
            if push or draw(st.booleans()):  # absent: the default push filter (TLP ceiling amber+strict)
                s["push"] = push
            if pull_:
                s["pull"] = pull_
            settings[(u, v)] = s
    owner = draw(st.sampled_from(names))
    members = [m for m in names if m != owner and draw(st.booleans())]

    def level(header: bool) -> int:
        return draw(st.sampled_from([3, 2, 1, 0, 4, 3, 2] if header else [5, 3, 2, 1, 0, 4, 5, 3, 2]))

    def tags() -> tuple[str, ...]:
        return tuple(draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True))) if draw(st.booleans()) else ()

    events = []
    for k in range(draw(st.integers(1, 2))):
        origin = "n0" if triangle and k == 0 else draw(st.sampled_from(names))
        grouped = origin == owner or origin in members  # only a member knows the group
        elements: list[Elem] = []
        for i in range(draw(st.integers(1, 4))):
            t = draw(st.sampled_from(sorted(TYPES)))
            elements.append(Elem(new_uuid(), "attribute", level(False), tags(), t, draw(st.booleans())))
        for j in range(draw(st.integers(0, 1))):
            o = Elem(new_uuid(), "object", level(False))
            elements.append(o)
            for relation, t in (("domain", "domain"), ("ip", "ip-dst")):
                elements.append(Elem(new_uuid(), "attribute", level(False), tags(), t, draw(st.booleans()),
                                     o.uuid, relation))
            if draw(st.booleans()):
                elements.append(Elem(new_uuid(), "reference", 5, object_uuid=o.uuid))
        for k in range(draw(st.integers(0, 1))):
            elements.append(Elem(new_uuid(), "report", level(False)))
        ev = Ev(new_uuid(), origin, level(True), tags(), elements, grouped)
        # analyst data: a note on the event, a note on an attribute or report, an opinion on a note
        on_elements = [e for e in elements if e.kind == "report" or (e.kind == "attribute" and e.object_uuid is None)]
        if draw(st.booleans()):
            ev.notes.append(Note(new_uuid(), "Note", ev.uuid, "Event", level(True)))
        if on_elements and draw(st.booleans()):
            target = draw(st.sampled_from(on_elements))
            ev.notes.append(Note(new_uuid(), "Note", target.uuid,
                                 "EventReport" if target.kind == "report" else "Attribute", level(True)))
        if ev.notes and draw(st.booleans()):
            target = draw(st.sampled_from(ev.notes))
            ev.notes.append(Note(new_uuid(), "Opinion", target.uuid, "Note", level(True)))
        events.append(ev)
    for ev in events:
        for i, e in enumerate(ev.elements):
            e.value = _value(e.type, ev.uuid, i)
        if not ev.grouped:  # the origin cannot use a group it does not know: 4 becomes 3
            ev.distribution = 3 if ev.distribution == 4 else ev.distribution
            for e in ev.elements:
                e.distribution = 3 if e.distribution == 4 else e.distribution
            for n in ev.notes:
                n.distribution = 3 if n.distribution == 4 else n.distribution
    edit = not members or draw(st.booleans())
    plan = Plan(names, sorted(edges), settings, owner, members, events, edit, seed=draw(st.integers(0, 2**32)))
    if edit:
        ev = events[0]
        choices = [3, 2, 1, 0, 4, 5] if ev.grouped else [3, 2, 1, 0, 5]
        for e in ev.elements:
            if e.kind != "reference" and draw(st.booleans()):
                plan.new_levels[e.uuid] = draw(st.sampled_from(choices))
        if draw(st.booleans()):
            plan.new_levels[ev.uuid] = draw(st.sampled_from([c for c in choices if c != 5]))
        plan.deleted = frozenset(e.uuid for e in ev.elements
                                 if e.kind == "attribute" and e.object_uuid is None and draw(st.integers(0, 3)) == 0)
    else:
        plan.removed = draw(st.lists(st.sampled_from(members), min_size=1, unique=True))
    return plan


def _value(type_: str | None, event_uuid: str, i: int) -> str:
    n = int(event_uuid[:8], 16) + i
    return {"ip-dst": f"198.51.{n % 251}.{(n >> 8) % 251 + 1}", "domain": f"h{n}-{i}.example",
            "md5": f"{(n * 2654435761 + i) % 2**128:032x}", "text": f"note {event_uuid} {i}"}.get(type_ or "", "")


# --- MISP JSON for the importer, and the oracle's view of the same event ----------------------

def _dist(raw: dict[str, Any], level: int, group: str) -> dict[str, Any]:
    raw["distribution"] = str(level)
    if level == 4:
        raw["sharing_group_uuid"] = group
    return raw


def misp_json(ev: Ev, group: str, timestamp: int, levels: dict[str, int], deleted: frozenset[str],
              notes: bool = True) -> dict:
    def level(uuid: str, default: int) -> int:
        return levels.get(uuid, default)

    out: dict[str, Any] = _dist({
        "uuid": ev.uuid, "info": f"event {ev.uuid[:8]}", "date": "2024-01-02", "threat_level_id": "2",
        "analysis": "1", "published": True, "timestamp": str(timestamp), "publish_timestamp": str(timestamp),
        "Tag": [{"name": t} for t in ev.tags], "Attribute": [], "Object": [], "EventReport": [],
    }, level(ev.uuid, ev.distribution), group)
    objects: dict[str, dict[str, Any]] = {}
    raws: dict[str, dict[str, Any]] = {ev.uuid: out}  # what a note can be on
    for e in ev.elements:
        if e.uuid in deleted:
            continue
        if e.kind == "attribute":
            a = _dist({"uuid": e.uuid, "type": e.type, "category": TYPES[e.type], "value": e.value,
                       "to_ids": e.to_ids, "timestamp": str(timestamp), "Tag": [{"name": t} for t in e.tags]},
                      level(e.uuid, e.distribution), group)
            raws[e.uuid] = a
            if e.object_uuid is None:
                out["Attribute"].append(a)
            else:
                objects[e.object_uuid]["Attribute"].append({**a, "object_relation": e.relation})
        elif e.kind == "report":
            raws[e.uuid] = _dist({"uuid": e.uuid, "name": f"report {e.uuid[:8]}", "timestamp": str(timestamp),
                                  "content": f"# Report {e.uuid}\n\nWhat we saw."}, level(e.uuid, e.distribution), group)
            out["EventReport"].append(raws[e.uuid])
        elif e.kind == "object":
            objects[e.uuid] = _dist({"uuid": e.uuid, "name": TEMPLATE[0], "meta-category": "network",
                                     "template_uuid": TEMPLATE[1], "template_version": TEMPLATE[2],
                                     "timestamp": str(timestamp), "Attribute": [], "ObjectReference": []},
                                    level(e.uuid, e.distribution), group)
            out["Object"].append(objects[e.uuid])
        else:
            target = next(x.uuid for x in ev.elements if x.kind == "attribute" and x.object_uuid is None
                          and x.uuid not in deleted) if any(
                x.kind == "attribute" and x.object_uuid is None and x.uuid not in deleted for x in ev.elements) \
                else objects[e.object_uuid]["Attribute"][0]["uuid"]
            objects[e.object_uuid]["ObjectReference"].append(
                {"uuid": e.uuid, "referenced_uuid": target, "relationship_type": "related-to",
                 "timestamp": str(timestamp)})
    for n in ev.notes if notes else ():
        raw = _dist({"uuid": n.uuid, "created": str(T0), "modified": str(T0)}, n.distribution, group)
        raw.update({"note": f"note {n.uuid}", "language": "en"} if n.type == "Note"
                   else {"opinion": 70, "comment": f"opinion {n.uuid}"})
        raws[n.uuid] = raw
        raws[n.target].setdefault(n.type, []).append(raw)
    return {"Event": out}


def event_view(ev: Ev, org: str, group: str, timestamp: int, levels: dict[str, int],
               deleted: frozenset[str]) -> EventView:
    def lower(tags: tuple[str, ...]) -> frozenset[str]:
        return frozenset(t.lower() for t in tags)

    elements = []
    for e in ev.elements:
        if e.uuid in deleted:
            continue
        d = levels.get(e.uuid, e.distribution)
        elements.append(ElementView(
            uuid=e.uuid, kind=e.kind, distribution=d, sharing_group=group if d == 4 else None,
            object_uuid=e.object_uuid, type=e.type, template=TEMPLATE[0] if e.kind == "object" else None,
            tags=lower(e.tags), to_ids=e.to_ids and e.kind == "attribute"))
    d = levels.get(ev.uuid, ev.distribution)
    return EventView(uuid=ev.uuid, orgc_uuid=org, orgc_name="", distribution=d,
                     sharing_group=group if d == 4 else None, published=True, timestamp=timestamp,
                     tags=lower(ev.tags), elements=tuple(elements))


# --- running it --------------------------------------------------------------------------------

class Federation:
    """The nodes of a plan, pulled in a random order with random restarts, then settled."""

    def __init__(self, tmp: Path, plan: Plan):
        self.tmp = tmp
        self.nodes = make_federation(tmp, plan.names, plan.edges, plan.settings)
        self.homes = {name: node.config.home for name, node in self.nodes.items()}
        self.replicas = {name: Replica(node) for name, node in self.nodes.items()}
        self.rnd = random.Random(plan.seed)

    def pull(self, name: str, peer_name: str, meanwhile: str | None = None) -> int:
        """One pull of `name` from `peer_name`; with `meanwhile`, a whole pull of `name` from that
        peer runs between the first's changes page and its first bodies reply (as two concurrent
        pulls of a node interleave at worst: the first took bodies as held that the second's batch
        may replace)."""
        peer = next(p for p in self.nodes[name].config.peers if p.name == peer_name)
        transport = InMemory(self.replicas[peer_name], name)
        if meanwhile is not None:
            fetch, ran = transport.bodies, []

            def bodies(*args: Any, **kwargs: Any) -> Any:
                if not ran:
                    ran.append(self.pull(name, meanwhile))
                return fetch(*args, **kwargs)
            transport.bodies = bodies  # type: ignore[method-assign]
        report = pull(self.replicas[name], peer, transport)
        return report.stored + report.stored_records + (sum(ran) if meanwhile is not None else 0)

    def pull_some(self, name: str, peer_name: str, pairs: list[tuple[str, str]]) -> int:
        """A pull, a third of the time with another pull of the same node in its middle."""
        others = [p for u, p in pairs if u == name and p != peer_name]
        return self.pull(name, peer_name, self.rnd.choice(others) if others and self.rnd.random() < 0.33 else None)

    def restart(self, name: str) -> None:
        self.nodes[name].close()
        self.nodes[name] = Node.open(self.homes[name])
        self.replicas[name] = Replica(self.nodes[name])

    def shuffle_then_settle(self) -> None:
        pairs = [(u, p.name) for u, node in self.nodes.items() for p in node.config.peers]
        for _ in range(2 * len(pairs)):
            if self.rnd.random() < 0.1:
                self.restart(self.rnd.choice(sorted(self.nodes)))
            self.pull_some(*self.rnd.choice(pairs), pairs)
        for _ in range(3 * len(self.nodes) + 5):
            self.rnd.shuffle(pairs)
            if not sum(self.pull_some(u, v, pairs) for u, v in pairs):
                return
        raise AssertionError("replication did not settle")

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()


def members_gossip_cannot_reach(fed: Federation, plan: Plan, group: SharingGroup) -> list[str]:
    """The group's members that its revision cannot reach by gossip: a revision goes from a node
    that holds it to a member that node serves and that takes from it (its holders are the owner
    and the members). The oracle (test_policy_property.Oracle) has every member know the group, so
    these are given it by hand; every other member must have got it over the links."""
    serves = {PeerMode.FULL, PeerMode.PUSH_ONLY, PeerMode.CORRELATION_ONLY, PeerMode.INTERNAL}
    takes = {PeerMode.FULL, PeerMode.PULL_ONLY, PeerMode.CORRELATION_ONLY, PeerMode.INTERNAL}
    mode = {(name, p.name): p.policy.mode for name, node in fed.nodes.items() for p in node.config.peers}
    members = set(plan.group_members)
    reached, queue = {plan.group_owner}, [plan.group_owner]
    while queue:
        u = queue.pop()
        for (a, v), m in mode.items():
            if a == u and v in members and v not in reached and m in serves and mode.get((v, u)) in takes:
                reached.add(v)
                queue.append(v)
    return sorted(members - reached)


def scenario(fed: Federation, events: list[tuple[str, EventView]], group: SharingGroup | None) -> Scenario:
    policies = {(name, p.name): p.policy for name, node in fed.nodes.items() for p in node.config.peers}
    orgs = {name: node.config.org_uuid for name, node in fed.nodes.items()}
    return Scenario(orgs, policies, [Phase((group,) if group else (), tuple(events))])


def holdings(fed: Federation, event_uuids: list[str]) -> dict[str, dict[str, tuple[int | None, bool]]]:
    """node -> item uuid -> (level held, whether only for correlation), for every item held."""
    out: dict[str, dict[str, tuple[int | None, bool]]] = {}
    for name, node in fed.nodes.items():
        held: dict[str, tuple[int | None, bool]] = {}
        for uuid in event_uuids:
            raw = node.store.holding(uuid)
            if raw is None:
                continue
            h = unpack_holding(raw)
            for item in {*h.levels, *h.correlation_levels}:
                # correlation-only: its highest level came over a correlation-only link (a path
                # that lets it be shown may still have brought it lower, as the oracle counts it)
                level = h.held_level(item)
                held[item] = (level, item not in h.levels or h.levels[item] < level)
        out[name] = held
    return out


def origin_problems(fed: Federation, origin: str, view: EventView) -> list[str]:
    """The origin holds the revision it made, every element's body with it."""
    node = fed.nodes[origin]
    entries = node.store.revision_entries(view.uuid)
    if entries is None:
        return [f"{origin} (origin): lost {view.uuid[-4:]}"]
    record, bodies = entries
    if node.store.holding(view.uuid) is not None:
        return [f"{origin} (origin): holds its own {view.uuid[-4:]} as a received copy"]
    have = {element.get("uuid") for _, _, element in bodies}
    lost = {e.uuid for e in view.elements} - have
    return [f"{origin} (origin): lost {sorted(u[-4:] for u in lost)} of {view.uuid[-4:]}"] if lost else []


def expected_from(oracle: Oracle, names: list[str]) -> dict[str, dict[str, tuple[int | None, bool]]]:
    """What the oracle says each node holds, in holdings()'s shape (origins excluded: they hold
    their own revision whole, checked by origin_problems)."""
    out: dict[str, dict[str, tuple[int | None, bool]]] = {n: {} for n in names}
    for name in names:
        for uuid, item in oracle.items.items():
            if oracle.origins[item.event.uuid] == name:
                continue
            want = oracle.expected(name, uuid)
            if want.level is not None:
                r = oracle.relayable[name].get(uuid)
                out[name][uuid] = (want.level, r is None or r < want.level)
    return out


def differences(want: dict, got: dict, oracle: Oracle) -> list[str]:
    problems = []
    for name in want:
        for uuid in sorted(set(want[name]) | set(got.get(name, {}))):
            w, g = want[name].get(uuid), got.get(name, {}).get(uuid)
            if w != g:
                why = "" if w is not None else \
                    f" ({oracle.why_not(name, uuid) if uuid in oracle.items else 'not in the revision'})"
                problems.append(f"{name}: {uuid[-4:]} held (level, correlation-only) {g}, expected {w}{why}")
    return problems


def without_group(expected: dict[str, dict[str, tuple[int | None, bool]]], items: dict[str, Item],
                  node: str, group: str) -> None:
    """What a node removed from `group` keeps: nothing bound to the group, nor anything whose
    object or event header it dropped."""
    held = expected[node]
    for depth in (0, 1, 2):
        for uuid in list(held):
            item = items[uuid]
            if item.depth == depth and (item.group == group or (item.parent is not None and item.parent not in held)):
                del held[uuid]


class AnalystOracle:
    """Where each analyst-data item may be held (decision 0029, docs/policy.md), from the same
    tables as the elements' oracle and without calling the pipeline: an item passes a hop u -> v
    only if its event passes that hop (test_policy_property.Oracle), its own level allows the hop
    (the hop budget, a sharing group's members at both ends, push and pull max_distribution: as for
    an element, but no inherit and no tag, type or template filter) and its target passes that hop
    too (the event; the attribute or report, as the elements' oracle finds; the note it is on, by
    this rule). So an item is held only where its event and every target it hangs from are held,
    at the highest level any path allows; what came over a link the receiver marked
    correlation-only is held but never relayed; the origin keeps everything at its own level."""

    def __init__(self, oracle: Oracle, events: list[Ev], group: str):
        self.o, self.group = oracle, group
        nodes = oracle.sc.orgs
        self.relayable: dict[str, dict[str, int]] = {n: {} for n in nodes}
        self.correlation: dict[str, dict[str, int]] = {n: {} for n in nodes}
        self.notes: dict[str, tuple[Ev, Note]] = {}
        for ev in events:
            for n in ev.notes:
                self.notes[n.uuid] = (ev, n)
                self.relayable[ev.origin][n.uuid] = n.distribution
            for n in ev.notes:  # a note's target comes before it
                self._spread(ev, n)

    def hop(self, u: str, v: str, ev: Ev, n: Note, level: int) -> int | None:
        o, sc = self.o, self.o.sc
        if o.passes(u, v, o.items[ev.uuid])[0] is None:
            return None
        mine, theirs = sc.policies[(u, v)], sc.policies[(v, u)]
        caps = (mine.push.max_distribution, theirs.pull.max_distribution)
        if level == 4:
            members = o.members.get(self.group, frozenset())
            if sc.orgs[u] not in members or sc.orgs[v] not in members or min(caps) < 4:
                return None
            new = 4
        else:
            internal = mine.mode is INTERNAL and theirs.mode is INTERNAL
            new = level if internal else NEXT_HOP.get(level)
            if new is None:
                return None
            new = min(new, *caps)
        if n.target_type in ("Attribute", "EventReport") and o.passes(u, v, o.items[n.target])[0] is None:
            return None
        if n.target_type == "Note" and self.passes(u, v, n.target) is None:
            return None
        return new

    def passes(self, u: str, v: str, uuid: str) -> int | None:
        level = self.relayable[u].get(uuid)
        if level is None:
            return None
        ev, n = self.notes[uuid]
        return self.hop(u, v, ev, n, level)

    def _spread(self, ev: Ev, n: Note) -> None:
        sc = self.o.sc
        queue = [u for u in sc.orgs if n.uuid in self.relayable[u]]
        while queue:
            u = queue.pop(0)
            for v in sc.neighbours(u):
                new = self.passes(u, v, n.uuid)
                if new is None:
                    continue
                correlation = sc.policies[(v, u)].mode is PeerMode.CORRELATION_ONLY
                table = self.correlation if correlation else self.relayable
                if new > table[v].get(n.uuid, -1):
                    table[v][n.uuid] = new
                    if not correlation:
                        queue.append(v)

    def expected(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for node in self.o.sc.orgs:
            out[node] = {}
            for uuid in self.notes:
                levels = [t[node][uuid] for t in (self.relayable, self.correlation) if uuid in t[node]]
                if levels:
                    out[node][uuid] = max(levels)
        return out


def analyst_held(fed: Federation, event_uuids: list[str]) -> dict[str, dict[str, int]]:
    """node -> item uuid -> the level its current record is held at (its own distribution where
    it was made or imported)."""
    out: dict[str, dict[str, int]] = {}
    for name, node in fed.nodes.items():
        held: dict[str, int] = {}
        for uuid in event_uuids:
            records = [r for r in node.store.event_records(uuid) if r.kind == KIND_ANALYST]
            for item_uuid, (body, record) in current_items(records).items():
                if not body["item"].get("deleted"):
                    level = node.store.analyst_level(record.id)
                    held[item_uuid] = body["item"]["distribution"] if level is None else level
        out[name] = held
    return out


def analyst_differences(want: dict[str, dict[str, int]], got: dict[str, dict[str, int]],
                        notes: dict[str, tuple[Ev, Note]]) -> list[str]:
    problems = []
    for name in want:
        for uuid in sorted(set(want[name]) | set(got.get(name, {}))):
            w, g = want[name].get(uuid), got.get(name, {}).get(uuid)
            if w != g:
                n = notes[uuid][1] if uuid in notes else None
                what = f"{n.type} on {n.target_type} {n.target[-4:]}" if n else "an item not drawn"
                problems.append(f"{name}: {what} {uuid[-4:]} held at {g}, expected {w}")
    return problems


_PUSH_LIMITED = {"tlp_ceiling": "tlp:clear", "types_exclude": ["domain"], "to_ids_only": True}
# Found on a fresh clone (no Hypothesis database): n2 holds the event header at 0 from n1 (n1's
# push filter caps it there) and at 3 over its correlation-only link to n0. holdings() reported
# that as not correlation-only, where expected_from() says correlation-only whenever what a node
# may relay is below what it holds: the example keeps the two in step.
RELAYED_BELOW_CORRELATION = Plan(
    names=["n0", "n1", "n2"], edges=[("n0", "n1"), ("n0", "n2"), ("n1", "n2")],
    settings={("n0", "n1"): {"push": _PUSH_LIMITED}, ("n1", "n2"): {"push": {"max_distribution": 0}},
              ("n2", "n0"): {"mode": "correlation-only", "pull": _PUSH_LIMITED}},
    group_owner="n0", group_members=["n2"],
    events=[Ev(uuid="00000000-0000-4000-8000-000000000002", origin="n0", distribution=3, tags=(),
               elements=[Elem(uuid="00000000-0000-4000-8000-000000000001", kind="attribute", distribution=5,
                              type="domain", value="h0-0.example")], grouped=True)],
    edit=False, removed=["n2"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.function_scoped_fixture])
@example(plan=RELAYED_BELOW_CORRELATION)
@given(plan=plans())
def test_real_stores_hold_what_the_design_allows_and_the_origin_keeps_everything(tmp_path_factory, plan):
    tmp = tmp_path_factory.mktemp("fed")
    fed = Federation(tmp, plan)
    try:
        fed.shuffle_then_settle()  # org records everywhere
        orgs = {n: node.config.org_uuid for n, node in fed.nodes.items()}
        group = create(fed.nodes[plan.group_owner].store, fed.nodes[plan.group_owner].identity,
                       orgs[plan.group_owner], "group", {orgs[m]: False for m in plan.group_members})
        fed.shuffle_then_settle()  # the group to its members
        given_by_hand = members_gossip_cannot_reach(fed, plan, group)
        for name in given_by_hand:  # the oracle has every member know the group: as if imported there
            node = fed.nodes[name]
            record = fed.nodes[plan.group_owner].store.sharing_group(group.uuid)
            if node.store.sharing_group(group.uuid) is None:
                assert sg_accept(node.store, record, node.config.org_uuid, node.identity.public_key) is Reason.ALLOWED
        for name in plan.group_members:
            assert fed.nodes[name].store.sharing_group(group.uuid) is not None, f"{name} never got the group"
        views = []
        for i, ev in enumerate(plan.events):
            path = tmp / f"ev{i}.json"
            path.write_text(json.dumps(misp_json(ev, group.uuid, T0, {}, frozenset())))
            import_paths(fed.nodes[ev.origin], [path])
            views.append((ev.origin, event_view(ev, orgs[ev.origin], group.uuid, T0, {}, frozenset())))
        fed.shuffle_then_settle()

        oracle = Oracle(scenario(fed, views, group))
        problems = [p for origin, view in views for p in origin_problems(fed, origin, view)]
        want = expected_from(oracle, plan.names)
        problems += differences(want, holdings(fed, [v.uuid for _, v in views]), oracle)
        problems += [f"{n}: {p}" for n, node in fed.nodes.items() for p in node.store.check_integrity()]
        analyst = AnalystOracle(oracle, plan.events, group.uuid)
        problems += analyst_differences(analyst.expected(), analyst_held(fed, [v.uuid for _, v in views]),
                                        analyst.notes)
        assert not problems, "after the first spread:\n" + "\n".join(problems) + f"\n\n{plan!r}"

        if plan.edit:  # an edit at the origin: only the new revision's spread is held anywhere
            ev = plan.events[0]
            path = tmp / "edit.json"
            path.write_text(json.dumps(misp_json(ev, group.uuid, T0 + 100, plan.new_levels, plan.deleted,
                                                 notes=False)))
            import_paths(fed.nodes[ev.origin], [path])
            views[0] = (ev.origin, event_view(ev, orgs[ev.origin], group.uuid, T0 + 100, plan.new_levels,
                                              plan.deleted))
            fed.shuffle_then_settle()
            oracle = Oracle(scenario(fed, views, group))
            want = expected_from(oracle, plan.names)
            stage = "after the edit"
        else:  # members removed: each drops what it held of the group, nothing else changes
            removed = tuple(orgs[m] for m in plan.removed)
            revise(fed.nodes[plan.group_owner].store, fed.nodes[plan.group_owner].identity,
                   orgs[plan.group_owner], group.uuid, remove=removed)
            fed.shuffle_then_settle()
            for m in plan.removed:
                without_group(want, oracle.items, m, group.uuid)
            stage = "after removing members"
        problems = [p for origin, view in views for p in origin_problems(fed, origin, view)]
        problems += differences(want, holdings(fed, [v.uuid for _, v in views]), oracle)
        problems += [f"{n}: {p}" for n, node in fed.nodes.items() for p in node.store.check_integrity()]
        assert not problems, f"{stage}:\n" + "\n".join(problems) + f"\n\n{plan!r}"
    finally:
        fed.close()
