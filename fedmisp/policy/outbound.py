"""Outbound: what this node sends a peer (docs DESIGN "The pipeline at each hop").

For each record and each peer, in DESIGN's order (an event's steps in `outbound`):
  1. node-local data never leaves (level 0, unpublished events, correlation-only holdings;
     local tags are stripped by the serialiser, never signed);
  2. hop budget from the distribution level (1 arrives as 0, 2 as 1, 3 unchanged);
  3. sharing-group membership of the peer's org (and of this node's: a non-member never relays);
  4. the peer's push filter;
  5. never back to the peer it came from.
The other kinds of record follow the same steps as they apply to them: a sharing group's revisions
go to its members (`sharing_group_outbound`), sightings, proposals and decisions follow their event
(`attached_outbound`), analyst data its event, its own level and its target (`analyst_outbound`),
retractions the revisions they supersede (policy/retractions.py).

Every function is pure: the sender (gossip/sender.py) gathers the facts, calls these and acts on
the Reason (or Outcome) they return.
"""
from __future__ import annotations

from typing import Any, Iterable

from fedmisp.policy.filters import event_check
from fedmisp.policy.model import SHARING_GROUP, EventView, Holding, NodeState, PeerMode, PeerPolicy
from fedmisp.policy.pipeline import (
    SERVES, EventPlan, Outcome, cap, decide_elements, link_reason, next_hop_level, plan, record_level_out, refused, sharing_group_reason,
)
from fedmisp.policy.reasons import FILTER_REASONS, Reason


def outbound(event: EventView, holding: Holding, peer: PeerPolicy, node: NodeState,
             event_plan: EventPlan | None = None) -> Outcome:
    """What of `event` this node may send to `peer`, and at which level the peer will hold it.
    Pass `event_plan` (from `plan(event)`) when deciding the same event for many peers."""
    internal = peer.mode is PeerMode.INTERNAL
    # 1. node-local data never leaves
    link = link_reason(peer, node, SERVES, event.published)
    if link is not Reason.ALLOWED:
        return refused(link)
    if holding.correlation_only:
        return refused(Reason.LOCAL_CORRELATION_ONLY)
    held = holding.level(event.uuid)
    if held is None:
        return refused(Reason.HOP_BUDGET)
    # 2. hop budget
    level = next_hop_level(held, internal)
    if level is None:
        return refused(Reason.HOP_BUDGET)
    # 3. sharing group
    if held == SHARING_GROUP:
        reason = sharing_group_reason(event.sharing_group, peer.org_uuid, node, inbound=False)
        if reason is not Reason.ALLOWED:
            return refused(reason)
    # 4. push filter
    check = event_check(peer.push, event)
    capped = cap(level, peer.push) if check is None else None
    if capped is None:
        return refused(FILTER_REASONS[check or "distribution"][0])
    levels: dict[str, int] = {event.uuid: capped}
    withheld: dict[str, Reason] = {}
    decide_elements(event_plan or plan(event), holding.levels, peer, node, peer.push, 0, internal, False,
              levels, withheld)
    # 5. never back to the peer it came from
    return _not_back(Outcome(Reason.ALLOWED, levels, withheld), holding, peer.name, event_plan or plan(event))


def outbound_many(event: EventView, holding: Holding, peers: list[PeerPolicy], node: NodeState) -> dict[str, Outcome]:
    """`outbound` for many peers at once. Peers whose decision cannot differ (same mode, push
    filter and membership in the event's sharing groups) share one decision of steps 1-4; step 5
    is applied per peer. Same outcomes as calling `outbound` per peer, at a fraction of the cost."""
    event_plan = plan(event)
    relevant = sorted({g for g in event_plan.groups.values() if g} | ({event.sharing_group} - {None}))
    shared: dict[tuple[Any, ...], Outcome] = {}
    out: dict[str, Outcome] = {}
    for peer in peers:
        groups = node.sharing_groups
        membership = tuple(g in groups and groups[g].is_member(peer.org_uuid) for g in relevant)
        key = (peer.mode, peer.push, membership, peer.org_uuid if peer.mode is PeerMode.INTERNAL else None)
        decided = shared.get(key)
        if decided is None:
            anonymous = PeerPolicy(name="", org_uuid=peer.org_uuid, mode=peer.mode, push=peer.push, pull=peer.pull)
            decided = shared[key] = outbound(event, holding, anonymous, node, event_plan)
        out[peer.name] = _not_back(decided, holding, peer.name, event_plan) if decided.allowed else decided
    return out


def _not_back(outcome: Outcome, holding: Holding, peer_name: str, event_plan: EventPlan) -> Outcome:
    """Step 5: drop what came from this peer (it holds it at that level or higher). An object it
    gave stays in the offer while one of its members goes, or the receiver could not attach the
    member (an element passes only with its object)."""
    sources = holding.sources
    event_uuid = event_plan.event.uuid
    back = {u for u in outcome.levels if u != event_uuid and peer_name in sources.get(u, ())}
    header_back = peer_name in sources.get(event_uuid, ())
    if not back and not header_back:
        return outcome
    parents = event_plan.parents
    for u in outcome.levels:
        if u not in back and parents.get(u) in back:
            back.discard(parents[u])
    levels = {u: lv for u, lv in outcome.levels.items() if u not in back}
    if header_back and len(levels) == 1:
        return refused(Reason.FROM_PEER)
    withheld = dict(outcome.withheld)
    withheld.update({u: Reason.FROM_PEER for u in back})
    return Outcome(Reason.ALLOWED, levels, withheld)


def sharing_group_outbound(peer_org: str, members: Iterable[str], ever_members: Iterable[str]) -> Reason:
    """3. A sharing group's revision goes to its members only, like its data, and to the
    organisations an earlier revision listed (`ever_members`): a member that a revision removes
    (or a deletion drops) learns that it is out, rather than keeping the last revision it was sent."""
    if not peer_org or peer_org not in members and peer_org not in ever_members:
        return Reason.SG_NOT_MEMBER
    return Reason.ALLOWED


def attached_outbound(event: EventView | None, holding: Holding, peer: PeerPolicy, node: NodeState,
                      event_plan: EventPlan | None = None) -> Reason:
    """Sightings, proposals and proposal decisions follow their event's distribution: they go to a
    peer that may receive the event (`event`: the held event's view, None when it is not held),
    the one it came from included (step 5 aside: a sighting or proposal travels back towards the
    event's creator, a decision out from it)."""
    if event is None:
        return Reason.EVENT_NOT_HELD
    everywhere = Holding(holding.levels, {}, holding.correlation_only)  # step 5 aside
    return outbound(event, everywhere, peer, node, event_plan).reason


def analyst_outbound(event: Outcome | None, held: int, sharing_group: str | None, target_sent: bool,
                     peer: PeerPolicy, node: NodeState) -> tuple[Reason, int]:
    """Whether an analyst-data item (a note, opinion or relationship: decision 0029) goes to
    `peer`, and at which level the peer holds it. It goes only where its event goes (`event`: the
    event's outbound outcome for this peer with step 5 aside, None when the event is not held),
    where its own level allows the hop (`held`: the level this node holds it at; hop budget,
    sharing-group membership, the push filter's max_distribution, as for an element), and where
    its target is sent too (`target_sent`: the event, the element or report, or the item it is
    on: an opinion on a withheld note is withheld)."""
    if event is None:
        return Reason.EVENT_NOT_HELD, -1
    if not event.allowed:
        return event.reason, -1
    reason, level = record_level_out(held, sharing_group, peer, node)
    if reason is not Reason.ALLOWED:
        return reason, -1
    if not target_sent:
        return Reason.PARENT_WITHHELD, -1
    return Reason.ALLOWED, level
