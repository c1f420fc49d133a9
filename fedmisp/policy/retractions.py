"""Where a retraction goes, and what a node does with one (model/retraction.py, docs/policy.md).

A retraction follows the revisions it supersedes: it may reach every node an earlier published
revision could have reached, and no other. Its level is the hop budget of those revisions (the
highest of their distributions below 4, spent one hop at a time as an event header's is); its
groups pass between nodes whose organisations are both members, as sharing-group data does.

Outbound, for a held retraction and one peer:
  1. the peer's mode: only a peer this node serves (and not while the revision it announces is
     unpublished here);
  2. hop budget from the level this node holds the retraction at, capped by the peer's push
     filter's max_distribution (a peer that may hold nothing above 1 held nothing above 1);
  3. or, failing that, a sharing group of its reach of which this node and the peer are members;
  4. never back to the peer it came from.
Inbound, for a retraction a peer sent:
  1. the peer's mode: only a peer this node takes from;
  2. the level offered, checked against the reach the author signed (never above it; a level
     below 3 has spent a hop on arriving), or a group of its reach of which both are members;
  3. signed by the author of the revision held (the store checks it, with the key's rotations),
     and only where a revision of the event or an earlier retraction of it is held: a node that
     never held the event has nothing to drop and is not told it exists.
"""
from __future__ import annotations

from fedmisp.model.retraction import NO_LEVEL, Reach
from fedmisp.policy.model import NodeState, PeerMode, PeerPolicy
from fedmisp.policy.pipeline import SERVES, TAKES, link_reason, next_hop_level, received_level
from fedmisp.policy.reasons import Reason



def _shared_group(reach: Reach, peer_org: str, node: NodeState) -> bool:
    for uuid in reach.groups:
        group = node.sharing_groups.get(uuid)
        if group is not None and group.is_member(node.org_uuid) and group.is_member(peer_org):
            return True
    return False


def retraction_outbound(level: int, reach: Reach, source: str, peer: PeerPolicy,
                        node: NodeState, announced_published: bool = True) -> tuple[Reason, int]:
    """Whether `peer` gets a retraction this node holds at `level` (-1: through its groups only),
    and the level it is offered at (-1: through a group). `announced_published`: the revision it
    announces is published here (else it is held back: its maker has not shared that revision
    yet, and peers keep what they have until it does)."""
    internal = peer.mode is PeerMode.INTERNAL
    if not announced_published:
        return Reason.LOCAL_UNPUBLISHED, NO_LEVEL
    # 1. the peer's mode
    link = link_reason(peer, node, SERVES)
    if link is not Reason.ALLOWED:
        return link, NO_LEVEL
    # 4. never back to the peer it came from
    if source and source == peer.name:
        return Reason.FROM_PEER, NO_LEVEL
    # 2. hop budget
    offered = next_hop_level(level, internal) if level != NO_LEVEL else None
    if offered is not None:
        offered = min(offered, peer.push.max_distribution)
        return Reason.ALLOWED, offered
    # 3. a sharing group of its reach
    if _shared_group(reach, peer.org_uuid, node):
        return Reason.ALLOWED, NO_LEVEL
    return (Reason.SG_NOT_MEMBER if reach.groups else Reason.HOP_BUDGET), NO_LEVEL


def retraction_inbound(offered: int, reach: Reach, peer: PeerPolicy, node: NodeState) -> tuple[Reason, int]:
    """Whether this node takes a retraction `peer` offered at `offered`, and the level it holds it at."""
    internal = peer.mode is PeerMode.INTERNAL
    # 1. the peer's mode
    link = link_reason(peer, node, TAKES)
    if link is not Reason.ALLOWED:
        return link, NO_LEVEL
    # 2. the level offered against the reach signed, or a shared group
    if offered != NO_LEVEL and reach.level != NO_LEVEL:
        level = received_level(offered, reach.level, internal)
        if level is not None and level >= 0:
            return Reason.ALLOWED, level
    if _shared_group(reach, peer.org_uuid, node):
        return Reason.ALLOWED, NO_LEVEL
    return (Reason.SG_SENDER_NOT_MEMBER if reach.groups else Reason.HOP_BUDGET), NO_LEVEL
