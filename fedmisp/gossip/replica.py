"""Replication against the store: one node's sender and receiver, wired together.

The jobs live in their own modules: resolving peers (gossip/peers.py `Peers`), what a peer may pull
(gossip/sender.py `Sender`), what this node keeps of a pull (gossip/receiver.py `Receiver`), and the
processes that build a large pull's store rows (gossip/rows_pool.py `RowsPool`). A `Replica` makes
one of each over one node, sharing the cache of held events' policy views, and is what the driver,
the peer HTTP layer, feeds and tools are given.
"""
from __future__ import annotations

from typing import Any

from fedmisp.gossip.observe import NO_OBSERVER, Decision, Observer
from fedmisp.gossip.peers import NodeView, PeerConfig, Peers
from fedmisp.gossip.receiver import ApplyReport, Receiver
from fedmisp.gossip.rows_pool import RowsPool
from fedmisp.gossip.sender import HeldView, HeldViews, Sender
from fedmisp.gossip.session import Refused, StoreBatch
from fedmisp.model.records import Record
from fedmisp.policy.model import NodeState, PeerPolicy


class Replica:
    def __init__(self, node: NodeView, observer: Observer = NO_OBSERVER, rows_workers: int = 0):
        """`observer`: told every decision about a record and a peer (gossip/observe.py).
        `rows_workers`: worker processes that build the store rows of large received batches
        (0: everything in this process, as tests and one-process tools do)."""
        self.node = node
        self.store = node.store
        self.observer = observer
        self.resolver = Peers(node)
        self.held = HeldViews(node.store)
        self.rows = RowsPool(rows_workers)
        self.sender = Sender(node, self.resolver, self.held, observer)
        self.receiver = Receiver(node, self.resolver, self.held, self.rows, observer)

    def close(self) -> None:
        """Stop the row workers, if any were started."""
        self.rows.close()

    # --- peers (gossip/peers.py) ---------------------------------------------------------------------

    def node_state(self) -> NodeState:
        return self.resolver.node_state()

    def peer(self, name: str) -> PeerConfig | None:
        return self.resolver.peer(name)

    def peers(self) -> list[PeerConfig]:
        return self.resolver.peers()

    def held_event(self, event_uuid: str) -> HeldView | None:
        return self.held.get(event_uuid)

    # --- sender (gossip/sender.py) -------------------------------------------------------------------

    def offer(self, event_uuid: str, peer: PeerPolicy,
              state: NodeState | None = None) -> tuple[HeldView, dict[str, int]] | None:
        return self.sender.offer(event_uuid, peer, state)

    def changes_for(self, peer: PeerPolicy, since: int, limit: int,
                    decisions: list[Decision] | None = None) -> dict[str, Any]:
        return self.sender.changes_for(peer, since, limit, decisions)

    def bodies_for(self, peer: PeerPolicy, event_uuid: str, digests: list[bytes]) -> list[bytes | None]:
        return self.sender.bodies_for(peer, event_uuid, digests)

    def all_bodies_for(self, peer: PeerPolicy, event_uuid: str) -> list[bytes]:
        return self.sender.all_bodies_for(peer, event_uuid)

    # --- receiver (gossip/receiver.py) ---------------------------------------------------------------

    def key_blocked(self, key: bytes) -> bool:
        return self.receiver.key_blocked(key)

    def apply(self, peer: PeerConfig, batch: StoreBatch) -> ApplyReport:
        return self.receiver.apply(peer, batch)

    @property
    def generation(self) -> int:
        """Moves whenever the receiver stores what it pulled (gossip/http.py: a changes page computed
        before is not served after)."""
        return self.receiver.generation

    # --- row workers (gossip/rows_pool.py) -----------------------------------------------------------

    def expect_bodies(self, bodies: int) -> None:
        self.rows.expect_bodies(bodies)

    def rows_ahead(self, record: Record, entries: list[tuple[bytes, bytes]], source: str = "") -> None:
        self.rows.rows_ahead(record, entries, source)

    def drop_ahead(self, source: str | None = None) -> None:
        self.rows.drop_ahead(source)


__all__ = ["ApplyReport", "Refused", "Replica"]
