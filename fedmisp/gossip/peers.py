"""Configured peers, and who they are now: their pinned keys followed through their orgs' key
rotations, their org once an org record names it (`Peers`), and the node's own standing that
policy decides on (`Peers.node_state`). node/config.py reads the configuration."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from fedmisp.gossip.sharing_groups import current_groups
from fedmisp.model.identity import Identity
from fedmisp.policy.model import NodeState, PeerPolicy


@dataclass(frozen=True)
class PeerConfig:
    """One configured peer: where it is, its pinned key, and the policy for it."""
    policy: PeerPolicy
    url: str
    key: bytes  # Ed25519 public key
    # MISP's "anonymise sightings": sightings sent to this peer leave out the reporting org
    strip_sighting_org: bool = False

    @property
    def name(self) -> str:
        return self.policy.name


class NodeView(Protocol):
    """What gossip needs of the node that runs it (node/home.py's Node is one): its key, its store
    and its current configuration (read at each use, so a reload takes effect)."""

    identity: Identity
    retired_identities: tuple[Identity, ...]  # keys rotated away from, kept to talk to peers that
    # have not yet pulled the rotation (decision 0013)
    store: Any
    config: Any  # node.config.NodeConfig: org_uuid, peers, blocked_events, blocked_orgs


class Peers:
    """The node's peers as they are now (read from the configuration at each use, so a reload
    takes effect) and the node's own state for policy."""

    def __init__(self, node: NodeView):
        self.node = node

    def node_state(self) -> NodeState:
        return NodeState(org_uuid=self.node.config.org_uuid, sharing_groups=current_groups(self.node.store),
                         blocked_events=self.node.config.blocked_events,
                         blocked_orgs=self.node.config.blocked_orgs)

    def peer(self, name: str) -> PeerConfig | None:
        """The configured peer; a peer configured without org_uuid gets it from its org record once
        one has arrived (until then it is in no sharing group and cannot be internal)."""
        peer = next((p for p in self.node.config.peers if p.name == name), None)
        return self._resolved(peer) if peer is not None else None

    def pinned_keys(self) -> dict[bytes, str]:
        """Key -> org uuid as this node's configuration pins them: its own key, and each peer's key
        configured with an org_uuid (an operator's word, which an org record cannot override)."""
        pinned = {p.key: p.policy.org_uuid for p in self.node.config.peers if p.policy.org_uuid}
        pinned[self.node.identity.public_key] = self.node.config.org_uuid
        return pinned

    def peers(self) -> list[PeerConfig]:
        """Every configured peer, resolved as `peer` does."""
        return [self._resolved(p) for p in self.node.config.peers]

    def _resolved(self, peer: PeerConfig) -> PeerConfig:
        """The pinned key followed through the peer org's accepted rotations (decision 0013: the
        configured key stays the trust anchor, the store knows what replaced it)."""
        key = self.node.store.current_key(peer.key)
        if key != peer.key:
            peer = replace(peer, key=key)
        if not peer.policy.org_uuid:
            org = self.node.store.org_for_key(peer.key)
            if org is not None:
                peer = replace(peer, policy=replace(peer.policy, org_uuid=org))
        return peer
