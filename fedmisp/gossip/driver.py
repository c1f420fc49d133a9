"""Driving a pull session: the same loop over any transport (HTTP between nodes, or in memory)."""
from __future__ import annotations

import asyncio
from typing import Any, Protocol

from fedmisp.gossip.replica import ApplyReport, Replica
from fedmisp.gossip.session import Done, PullSession, SendBodies, SendChanges, StoreBatch, WaitStored
from fedmisp.gossip.peers import PeerConfig


class Transport(Protocol):
    """How a session's two requests reach the peer (and its replies come back decoded)."""

    def changes(self, since: int, limit: int) -> Any: ...

    def bodies(self, event_uuid: str, digests: tuple[bytes, ...], everything: bool = False) -> Any: ...


def pull(replica: Replica, peer: PeerConfig, transport: Transport) -> ApplyReport:
    """Pull everything new from one peer, storing batch by batch with the checkpoint."""
    total = ApplyReport()
    session = PullSession(peer.name, replica.store.checkpoint(peer.name), replica)
    try:
        while True:
            step = session.next_step()
            if isinstance(step, SendChanges):
                session.changes_received(transport.changes(step.since, step.limit))
                replica.expect_bodies(session.bodies_wanted)
            elif isinstance(step, SendBodies):
                _arrived(replica, session, step.event_uuid,
                         transport.bodies(step.event_uuid, step.digests, step.everything))
            elif isinstance(step, StoreBatch):
                report = replica.apply(peer, step)
                session.stored()
                total.add(report)
            else:
                assert isinstance(step, Done)
                return total
    finally:
        replica.drop_ahead()


def _arrived(replica: Replica, session: PullSession, event_uuid: str, reply: Any) -> None:
    """A bodies reply: the session verifies it; the row workers (if running) start on what it took."""
    accepted = session.bodies_received(event_uuid, reply)
    record = session.pending_record(event_uuid) if accepted else None
    if record is not None:
        replica.rows_ahead(record, accepted)


class InMemory:
    """A transport that calls the sender's replica directly (tests, and one-process demos)."""

    def __init__(self, sender: Replica, receiver_name: str):
        self.sender = sender
        peer = sender.peer(receiver_name)
        if peer is None:
            raise ValueError(f"{receiver_name!r} is not a peer of the sender")
        self.policy = peer.policy

    def changes(self, since: int, limit: int) -> Any:
        return self.sender.changes_for(self.policy, since, limit)

    def bodies(self, event_uuid: str, digests: tuple[bytes, ...], everything: bool = False) -> Any:
        if everything:
            return self.sender.all_bodies_for(self.policy, event_uuid)
        return self.sender.bodies_for(self.policy, event_uuid, list(digests))


class AsyncTransport(Protocol):
    async def changes(self, since: int, limit: int) -> Any: ...

    async def bodies(self, event_uuid: str, digests: tuple[bytes, ...], everything: bool = False) -> Any: ...


async def pull_async(replica: Replica, peer: PeerConfig, transport: AsyncTransport,
                     run_blocking: Any) -> ApplyReport:
    """`pull` for the node process: network awaits, store work in `run_blocking` (an executor).

    A batch is stored in the background while the next page and its bodies are fetched (the peer
    prepares them meanwhile), so the two nodes work at the same time instead of taking turns; the
    session hands out one batch at a time and says when to wait for it (WaitStored)."""
    total = ApplyReport()
    checkpoint = await run_blocking(replica.store.checkpoint, peer.name)
    session = PullSession(peer.name, checkpoint, replica)
    storing: asyncio.Future[ApplyReport] | None = None
    try:
        while True:
            step = session.next_step()
            if isinstance(step, SendChanges):
                reply = await transport.changes(step.since, step.limit)
                await run_blocking(session.changes_received, reply)  # reads the store (held digests)
                # a large pull: the row workers start while the bodies are fetched, not when the
                # first batch is stored (a worker takes a few hundred ms to start)
                replica.expect_bodies(session.bodies_wanted)
            elif isinstance(step, SendBodies):
                _arrived(replica, session, step.event_uuid,
                         await transport.bodies(step.event_uuid, step.digests, step.everything))
            elif isinstance(step, StoreBatch):
                storing = asyncio.ensure_future(run_blocking(replica.apply, peer, step))
            elif isinstance(step, WaitStored):
                assert storing is not None
                report, storing = await storing, None
                session.stored()
                total.add(report)
            else:
                return total
    finally:
        if storing is not None:
            # a fetch failed meanwhile: the batch being stored is still stored whole (with its
            # checkpoint) or not at all; wait for it so no store work outlives the pull
            await asyncio.gather(storing, return_exceptions=True)
        replica.drop_ahead()
