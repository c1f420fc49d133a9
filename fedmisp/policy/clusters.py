"""Custom galaxy clusters: which version a node holds, where one goes, what a node takes (decision 0031).

A cluster version is a record of its own (model/clusters.py), not attached to an event: it has its
own distribution and sharing group and spends its own hop budget, as an event does. Numbered as in
docs/policy.md "Galaxy clusters":

Versions (`check_cluster_version`, in the store's write transaction):
  1. the first version of a cluster uuid makes its creator org (`orgc_uuid`) the cluster's;
  2. a later version names the same creator org (`cluster-other-org` otherwise: a forgery);
  3. and is signed by a current key of it (`org-key-not-current`);
  4. and has a higher version number (`cluster-not-newer` otherwise: an older one by another path).

Outbound (`cluster_outbound`), as an event's steps:
  1. only a published version leaves (MISP syncs published clusters only), never a level-0 one;
  2. the hop budget of the level held (1 arrives as 0, 2 as 1, 3 and 4 unchanged);
  3. a level-4 cluster goes to members of its sharing group only (and only from a member);
  4. the push filter's max_distribution (its tag, org, type and template rules are event rules);
  5. never back to a peer it came from.

Inbound (`cluster_inbound`):
  1. the record checks (signature, known author, not blocked: the session's), its shape;
  2. published, signed by a key of the org it names as creator (`cluster-other-org`), the level
     offered checked against the signed distribution, sharing-group membership of the sender;
  3. the pull filter's max_distribution, blocked orgs, and not a uuid this node hard-deleted.

Every function is pure: the sender, the receiver and the store gather the facts.
"""
from __future__ import annotations

from typing import Iterable

from fedmisp.policy.model import NodeState, PeerPolicy
from fedmisp.policy.orgs import KeyState
from fedmisp.policy.pipeline import SERVES, TAKES, link_reason, record_level_in, record_level_out
from fedmisp.policy.reasons import Reason


def check_cluster_version(held_orgc: str | None, held_version: int | None, orgc_uuid: str, version: int,
                          signer: KeyState) -> Reason:
    """`held_orgc`/`held_version`: the creator org and version of the cluster version held (None:
    none); `orgc_uuid`/`version`: the new one's; `signer`: what this node knows of its key."""
    # 1. the first version
    if held_version is None:
        return Reason.ALLOWED
    # 2. the same creator org (a held version without one is nobody's to replace)
    if held_orgc is None or orgc_uuid != held_orgc:
        return Reason.CLUSTER_OTHER_ORG
    # 3. a current key (that the key signs for the org is cluster_inbound's, or this node's own)
    if signer.retired_at is not None:
        return Reason.ORG_KEY_NOT_CURRENT
    # 4. a higher version
    if version <= held_version:
        return Reason.CLUSTER_NOT_NEWER
    return Reason.ALLOWED


def cluster_outbound(published: bool, held: int, sharing_group: str | None, sources: Iterable[str],
                     peer: PeerPolicy, node: NodeState) -> tuple[Reason, int]:
    """Whether a held cluster version goes to `peer`, and at which level the peer holds it.
    `held`: the level this node holds it at (its distribution when made here); `sources`: the
    peers it came from at that level."""
    # 1. only what is published leaves (and the link allows it)
    link = link_reason(peer, node, SERVES, published)
    if link is not Reason.ALLOWED:
        return link, -1
    # 2.-4. hop budget, sharing group, push filter (as an element's)
    reason, level = record_level_out(held, sharing_group, peer, node)
    if reason is not Reason.ALLOWED:
        return reason, -1
    # 5. not back
    if peer.name in sources:
        return Reason.FROM_PEER, -1
    return Reason.ALLOWED, level


def cluster_inbound(*, published: bool, signer_org: str | None, orgc_uuid: str, offered: int,
                    distribution: int, sharing_group: str | None, blocked: bool,
                    peer: PeerPolicy, node: NodeState) -> tuple[Reason, int]:
    """Whether this node takes a cluster version a peer sent, and at which level. `signer_org`:
    the org the signer's current key signs for; `blocked`: its uuid was hard-deleted here."""
    # 2. the sender was allowed to send it: published, by its creator, at a level it may have
    link = link_reason(peer, node, TAKES, published)
    if link is not Reason.ALLOWED:
        return link, -1
    if signer_org != orgc_uuid:
        return Reason.CLUSTER_OTHER_ORG, -1
    # 3. blocklists
    if blocked:
        return Reason.CLUSTER_BLOCKED, -1
    if orgc_uuid in node.blocked_orgs:
        return Reason.BLOCKLIST_ORG, -1
    # the level offered against the signed one, the sender's group membership, the pull filter
    return record_level_in(offered, distribution, sharing_group, peer, node)
