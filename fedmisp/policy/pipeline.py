"""The machinery the pipeline at each hop shares (docs DESIGN "Distribution at every hop").

The rules themselves are in policy/outbound.py (what this node sends a peer) and policy/inbound.py
(what it takes from one), numbered after DESIGN's steps. Here is what both read: the levels an
author set (`authored_levels`, `plan`), the hop budget (`next_hop_level` out, `received_level` in),
sharing-group membership, a filter's distribution cap, the per-element loop (`decide_elements`),
and how a holding grows with each path (`merge`). Everything is pure: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from fedmisp.policy.filters import element_check
from fedmisp.policy.model import (
    ALL, CONNECTED, COMMUNITY, INHERIT, KIND_OBJECT, KIND_REFERENCE, ORG_ONLY, SHARING_GROUP,
    ElementView, EventView, Holding, NodeState, PeerMode, PeerPolicy, SyncFilter,
)
from fedmisp.policy.reasons import FILTER_REASONS, Reason

# the peer modes this node serves (outbound) and takes from (inbound)
SERVES = frozenset({PeerMode.FULL, PeerMode.PUSH_ONLY, PeerMode.CORRELATION_ONLY, PeerMode.INTERNAL})
TAKES = frozenset({PeerMode.FULL, PeerMode.PULL_ONLY, PeerMode.CORRELATION_ONLY, PeerMode.INTERNAL})


@dataclass(frozen=True, slots=True)
class Outcome:
    """The decision for one event at one hop.

    `levels` holds what passes: the event uuid and each element uuid, with the level the receiver
    holds it at. `withheld` names, per element, why it does not pass.
    """
    reason: Reason
    levels: Mapping[str, int] = field(default_factory=dict)
    withheld: Mapping[str, Reason] = field(default_factory=dict)
    correlation_only: bool = False

    @property
    def allowed(self) -> bool:
        return self.reason is Reason.ALLOWED


def link_reason(peer: PeerPolicy, node: NodeState, modes: frozenset[PeerMode], published: bool = True) -> Reason:
    """1. The link itself: the peer's mode allows this direction (`modes`: SERVES or TAKES), and an
    internal peer (no hop: everything passes) is of this node's own organisation; and only what is
    `published` moves (publishing is what shares: an unpublished event is node-local)."""
    if peer.mode not in modes:
        return Reason.PEER_MODE
    if peer.mode is PeerMode.INTERNAL and peer.org_uuid != node.org_uuid:
        return Reason.INTERNAL_ORG_MISMATCH
    if not published:
        return Reason.LOCAL_UNPUBLISHED
    return Reason.ALLOWED


def refused(reason: Reason) -> Outcome:
    return Outcome(reason)


# --- levels -------------------------------------------------------------------------------------

def authored_levels(event: EventView) -> dict[str, int]:
    """Each element's level as its author set it, with 5 (inherit) resolved: an object member and a
    reference take their object's level, an object and a top-level attribute the event's."""
    objects: dict[str, int] = {}
    for e in event.elements:
        if e.kind == KIND_OBJECT:
            objects[e.uuid] = event.distribution if e.distribution == INHERIT else e.distribution
    levels = {event.uuid: event.distribution}
    for e in event.elements:
        if e.kind == KIND_OBJECT:
            levels[e.uuid] = objects[e.uuid]
        elif e.distribution != INHERIT and e.kind != KIND_REFERENCE:
            levels[e.uuid] = e.distribution
        elif e.object_uuid is not None and e.object_uuid in objects:
            levels[e.uuid] = objects[e.object_uuid]
        else:
            levels[e.uuid] = event.distribution
    return levels


def origin_holding(event: EventView) -> Holding:
    """How the node that created (or imported) an event holds it: at the levels its author set."""
    return Holding(levels=authored_levels(event))


def sharing_group_of(event: EventView, element: ElementView | None,
                     objects: Mapping[str, ElementView] | None = None) -> str | None:
    """The sharing group a level-4 item is bound to (an inheriting element takes its parent's)."""
    if element is None:
        return event.sharing_group
    if element.distribution == SHARING_GROUP:
        return element.sharing_group
    if element.object_uuid is not None:
        if objects is None:
            objects = {e.uuid: e for e in event.elements if e.kind == KIND_OBJECT}
        parent = objects.get(element.object_uuid)
        if parent is not None and parent.distribution != INHERIT:
            return parent.sharing_group if parent.distribution == SHARING_GROUP else None
    return event.sharing_group


@dataclass(frozen=True, slots=True)
class EventPlan:
    """What the pipeline needs of an event that does not depend on the peer: made once per event
    (`plan`) and reused for every peer, so deciding for 100 peers does not redo it 100 times."""
    event: EventView
    ordered: tuple[ElementView, ...]  # objects first, so members can follow their object
    authored: Mapping[str, int]  # authored_levels(event)
    groups: Mapping[str, str | None]  # element uuid -> the sharing group a level-4 item is bound to
    parents: Mapping[str, str]  # object member or reference uuid -> its object's uuid


def plan(event: EventView) -> EventPlan:
    objects = {e.uuid: e for e in event.elements if e.kind == KIND_OBJECT}
    ordered = tuple(objects.values()) + tuple(e for e in event.elements if e.kind != KIND_OBJECT)
    # sharing_group_of for each element, without a call per element (an element outside an
    # object takes the event's group unless it names its own)
    event_group = event.sharing_group
    groups = {e.uuid: e.sharing_group if e.distribution == SHARING_GROUP else
              event_group if e.object_uuid is None else sharing_group_of(event, e, objects)
              for e in event.elements}
    parents = {e.uuid: e.object_uuid for e in event.elements if e.object_uuid is not None}
    return EventPlan(event, ordered, authored_levels(event), groups, parents)


def next_hop_level(held: int, internal: bool) -> int | None:
    """The level the next node holds an item at, or None if the hop budget is spent (rule 2).

    MISP's sync downgrade as a hop budget: 1 arrives as 0, 2 arrives as 1, 3 and 4 unchanged;
    0 never leaves. An internal link (the same organisation's other node) is no hop.
    """
    if internal:
        return held
    if held == ORG_ONLY:
        return None
    if held in (COMMUNITY, CONNECTED):
        return held - 1
    return held  # ALL, SHARING_GROUP


def sharing_group_reason(sg_uuid: str | None, peer_org: str, node: NodeState, *, inbound: bool) -> Reason:
    group = node.sharing_groups.get(sg_uuid) if sg_uuid else None
    if group is None:
        return Reason.SG_UNKNOWN
    if not group.is_member(node.org_uuid):
        # a node that is not a member never relays (or stores) the group's data
        return Reason.SG_NOT_MEMBER if inbound else Reason.SG_RELAY_NOT_MEMBER
    if not group.is_member(peer_org):
        return Reason.SG_SENDER_NOT_MEMBER if inbound else Reason.SG_NOT_MEMBER
    return Reason.ALLOWED


def received_level(offered: int, authored: int, internal: bool) -> int | None:
    """The level a receiver holds an item at, from the level its sender offered it at, checked
    against what its author signed (inbound rule 2). None: the sender was not allowed to send it.

    Never above the signed level; a level 1 or 2 item has spent at least one hop on arriving; a
    level 0 item never arrives (but over an internal link); a sharing-group item stays one.
    """
    if authored == SHARING_GROUP:
        return SHARING_GROUP
    if internal or authored == ALL:
        return min(offered, authored)
    if authored == ORG_ONLY:
        return None
    return min(offered, authored - 1)


def record_level_out(held: int, sharing_group: str | None, peer: PeerPolicy, node: NodeState) -> tuple[Reason, int]:
    """A record with a level of its own (an analyst-data item, a custom cluster version) at the
    next hop, as an element's: the hop budget, sharing-group membership, the push filter's cap.
    (ALLOWED, the level the peer holds it at), or (the reason, -1)."""
    level = next_hop_level(held, peer.mode is PeerMode.INTERNAL)
    if level is None:
        return Reason.HOP_BUDGET, -1
    return _group_and_cap(level, sharing_group, peer, node, inbound=False)


def record_level_in(offered: Any, distribution: int, sharing_group: str | None, peer: PeerPolicy,
                    node: NodeState) -> tuple[Reason, int]:
    """Such a record as a peer offered it: the level offered (an integer) against the signed
    `distribution` (`received_level`), the sender's sharing-group membership, the pull filter's cap."""
    if offered.__class__ is not int:
        return Reason.MALFORMED, -1
    level = received_level(offered, distribution, peer.mode is PeerMode.INTERNAL)
    if level is None:
        return Reason.HOP_BUDGET, -1
    return _group_and_cap(level, sharing_group, peer, node, inbound=True)


def _group_and_cap(level: int, sharing_group: str | None, peer: PeerPolicy, node: NodeState, *,
                   inbound: bool) -> tuple[Reason, int]:
    """The rest of either direction: a sharing-group level needs both ends in the group, then the
    filter of that direction (pull inbound, push outbound) caps the level."""
    if level == SHARING_GROUP:
        reason = sharing_group_reason(sharing_group, peer.org_uuid, node, inbound=inbound)
        if reason is not Reason.ALLOWED:
            return reason, -1
    capped = cap(level, peer.pull if inbound else peer.push)
    if capped is None:
        return (Reason.PULL_FILTER_DISTRIBUTION if inbound else Reason.PUSH_FILTER_DISTRIBUTION), -1
    return Reason.ALLOWED, capped


def cap(level: int, f: SyncFilter) -> int | None:
    """A filter's max_distribution: levels 0-3 are lowered to it; a sharing group passes only at 4."""
    if level == SHARING_GROUP:
        return level if f.max_distribution >= SHARING_GROUP else None
    return min(level, f.max_distribution)


def decide_elements(event_plan: EventPlan, held_levels: Mapping[str, int], peer: PeerPolicy, node: NodeState,
              f: SyncFilter, direction: int, internal: bool, inbound: bool,
              levels: dict[str, int], withheld: dict[str, Reason]) -> None:
    """Decide each element (steps 2-4); objects first so their members follow their object."""
    authored = event_plan.authored
    groups = event_plan.groups
    # Without per-element rules in the filter, an untagged element cannot fail it.
    element_rules = bool(f.types_exclude or f.to_ids_only or f.templates_exclude)
    # The level and cap functions are pure over a handful of levels: computed once per distinct
    # input instead of twice per element (this loop runs for every element sent or received).
    hops: dict[Any, int | None] = {}
    caps: dict[int, int | None] = {}
    for element in event_plan.ordered:
        uuid = element.uuid
        held = held_levels.get(uuid)
        if held is None:
            continue  # not held here (or not offered): nothing to decide
        if element.object_uuid is not None and element.object_uuid not in levels:
            withheld[uuid] = Reason.PARENT_WITHHELD
            continue
        key = (held, authored[uuid]) if inbound else held
        if key in hops:
            level = hops[key]
        else:
            level = hops[key] = received_level(held, authored[uuid], internal) if inbound \
                else next_hop_level(held, internal)
        if level is None:
            withheld[uuid] = Reason.HOP_BUDGET
            continue
        if level == SHARING_GROUP:
            reason = sharing_group_reason(groups[uuid], peer.org_uuid, node, inbound=inbound)
            if reason is not Reason.ALLOWED:
                withheld[uuid] = reason
                continue
        check = element_check(f, element) if (element_rules or element.tags) else None
        if check is None:
            capped = caps[level] if level in caps else caps.setdefault(level, cap(level, f))
        else:
            capped = None
        if capped is None:
            withheld[uuid] = FILTER_REASONS[check or "distribution"][direction]
            continue
        levels[uuid] = capped


def merge(held: Holding | None, outcome: Outcome, peer_name: str) -> Holding:
    """A node's holding after storing what `outcome` let in: each item at the highest level any
    path allowed. What came only over correlation-only links is kept apart (`correlation_levels`):
    matched, never shown or relayed, whatever else of the same event came by other paths."""
    if not outcome.allowed:
        if held is None:
            raise ValueError("nothing to merge: the outcome refused the event and nothing is held")
        return held
    if held is None and not outcome.correlation_only:
        # the first path an event arrives by (every bulk pull): held as allowed, all from this peer
        only = frozenset((peer_name,))
        return Holding(dict(outcome.levels), dict.fromkeys(outcome.levels, only))
    levels = dict(held.levels) if held else {}
    sources = {k: set(v) for k, v in held.sources.items()} if held else {}
    correlation = dict(held.correlation_levels) if held else {}
    if outcome.correlation_only:
        for uuid, level in outcome.levels.items():
            # kept when it is more than what may be relayed (correlation sees the best level held)
            if levels.get(uuid, -1) < level and correlation.get(uuid, -1) < level:
                correlation[uuid] = level
    else:
        for uuid, level in outcome.levels.items():
            held_level = levels.get(uuid, -1)
            if held_level < level:
                # A higher level came by this path: only this peer gave us what we now hold, so
                # rule 5 (never back to the peer it came from) must not keep it from the peers
                # that gave less.
                levels[uuid] = level
                sources[uuid] = {peer_name}
            elif held_level == level:
                sources.setdefault(uuid, set()).add(peer_name)
            if correlation.get(uuid, -1) <= levels[uuid]:
                correlation.pop(uuid, None)
    event_uuid = next(iter(outcome.levels))  # outcomes list the event first
    return Holding(levels, {k: frozenset(v) for k, v in sources.items()},
                   correlation_only=event_uuid not in levels, correlation_levels=correlation)
