"""A configured peer: where it is, its pinned key, and the policy for it (node/config.py reads them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fedmisp.model.identity import Identity
from fedmisp.policy.model import PeerPolicy


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
