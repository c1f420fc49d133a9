"""Gossip in the node process: eager notices, scheduled anti-entropy with jitter and backoff.

When this node stores something new it tells the peers it serves (POST /fed/v1/notify) and they
pull at once; a notice from a peer makes this node pull from it at once. An APScheduler job per
peer pulls every ANTI_ENTROPY_SECONDS (with jitter) to catch up whatever a notice missed and peers
that were down; a peer that fails is retried with exponential backoff and never blocks the others.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from fedmisp.gossip.driver import pull_async
from fedmisp.gossip.http import HttpTransport, PeerProtocol
from fedmisp.gossip.observe import NO_OBSERVER, Observer
from fedmisp.gossip.replica import Replica
from fedmisp.gossip.peers import PeerConfig
from fedmisp.gossip.peers import NodeView
from fedmisp.policy.model import PeerMode

log = logging.getLogger("fedmisp.gossip")

ANTI_ENTROPY_SECONDS = 30.0
JITTER_SECONDS = 5.0  # spreads the pulls of many nodes so they do not all hit a peer at once
BACKOFF_BASE = 2.0
BACKOFF_MAX = 600.0  # a peer down for long is tried every ten minutes
# Worker processes that build the store rows of large pulled batches (started at the first one,
# see gossip/replica.py ROWS_POOL_MIN): with this process storing and running policy, and the
# peer preparing the next page, two keep a 2-core machine busy.
ROWS_WORKERS = 2
_TAKES = frozenset({PeerMode.FULL, PeerMode.PULL_ONLY, PeerMode.CORRELATION_ONLY, PeerMode.INTERNAL})
_SERVES = frozenset({PeerMode.FULL, PeerMode.PUSH_ONLY, PeerMode.CORRELATION_ONLY, PeerMode.INTERNAL})


@dataclass
class PeerStatus:
    last_success: float | None = None
    last_error: str = ""
    errors: int = 0
    failures_in_a_row: int = 0
    next_try: float = 0.0
    stored: int = 0
    peer_head: int | None = None  # the peer's log head when last pulled: lag = head - checkpoint
    bytes_in: int = 0
    bytes_out: int = 0
    refused: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "last_success": self.last_success, "last_error": self.last_error, "errors": self.errors,
            "retry_in": max(0.0, round(self.next_try - time.time(), 1)), "stored": self.stored,
            "peer_head": self.peer_head,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "refused": dict(self.refused),
        }


class Gossiper:
    def __init__(self, node: NodeView, run_blocking: Callable[..., Awaitable[Any]],
                 interval: float = ANTI_ENTROPY_SECONDS, observer: Observer = NO_OBSERVER):
        self.node = node
        self.observer = observer
        self.replica = Replica(node, observer, rows_workers=ROWS_WORKERS)
        self.run_blocking = run_blocking
        self.interval = interval
        self.protocol = PeerProtocol(self.replica, run_blocking, on_notify=self.pull_soon)
        self.status: dict[str, PeerStatus] = {p.name: PeerStatus() for p in node.config.peers}
        self._http: aiohttp.ClientSession | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._pulling = asyncio.Lock()
        self._again: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        self._scheduler = AsyncIOScheduler()
        self._scheduler.start()
        self.reschedule()

    def reschedule(self) -> None:
        """One anti-entropy job per peer this node pulls from, as the configuration says now;
        called at start and after a reload (connections in flight are not touched)."""
        assert self._scheduler is not None
        wanted = {p.name for p in self.node.config.peers if p.policy.mode in _TAKES}
        for job in self._scheduler.get_jobs():
            if job.id.startswith("pull-") and job.id[5:] not in wanted:
                job.remove()
        for name in sorted(wanted):
            self.status.setdefault(name, PeerStatus())
            if self._scheduler.get_job(f"pull-{name}") is None:
                self._scheduler.add_job(self.pull, "interval", args=[name], seconds=self.interval,
                                        jitter=min(JITTER_SECONDS, self.interval / 2), max_instances=1,
                                        coalesce=True, id=f"pull-{name}")
                self.pull_soon(name)  # catch up at once with a peer that is new (or at start)

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        await self.run_blocking(self.replica.close)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def pull_soon(self, peer_name: str) -> None:
        self._spawn(self.pull(peer_name, eager=True))

    def stored_something(self) -> None:
        """Tell every served peer there is something new (they pull at once)."""
        for peer in self.node.config.peers:
            if peer.policy.mode in _SERVES:
                self._spawn(self._notify(peer))

    def _transport(self, peer: PeerConfig) -> HttpTransport:
        assert self._http is not None
        return HttpTransport(self._http, self.node.identity, peer, self.node.retired_identities)

    async def _notify(self, peer: PeerConfig) -> None:
        resolved = self.replica.peer(peer.name)  # the peer's current key (after its rotations)
        if self._http is None or resolved is None:
            return
        transport = self._transport(resolved)
        try:
            await transport.notify()
        except Exception as e:  # noqa: BLE001 - a notice is best effort; anti-entropy catches up
            log.info("notice to %s failed: %s", peer.name, e, extra={"peer": peer.name, "error": str(e)})
        finally:
            status = self.status.setdefault(peer.name, PeerStatus())
            status.bytes_in += transport.bytes_in
            status.bytes_out += transport.bytes_out

    async def pull(self, peer_name: str, eager: bool = False) -> None:
        peer = self.replica.peer(peer_name)
        status = self.status.setdefault(peer_name, PeerStatus())
        if peer is None or self._http is None:
            return
        if time.time() < status.next_try and not eager:
            return  # backing off
        if self._pulling.locked():
            # One pull at a time per node: concurrent pulls from different peers would each fetch
            # the same new bodies before either had stored them. A request that arrives meanwhile
            # is remembered and served right after, so no notice is lost.
            self._again.add(peer_name)
            return
        async with self._pulling:
            await self._pull_locked(peer, status)
        while self._again:
            self._spawn(self.pull(self._again.pop(), eager=True))

    async def _pull_locked(self, peer: PeerConfig, status: PeerStatus) -> None:
        peer_name = peer.name
        transport = self._transport(peer)
        started = time.monotonic()
        try:
            report = await pull_async(self.replica, peer, transport, self.run_blocking)
        except Exception as e:  # noqa: BLE001 - one peer's failure never stops the others
            self.observer.pulled(peer_name, time.monotonic() - started, ok=False)
            status.errors += 1
            status.failures_in_a_row += 1
            status.last_error = f"{type(e).__name__}: {e}"
            delay = min(BACKOFF_MAX, BACKOFF_BASE ** status.failures_in_a_row)
            status.next_try = time.time() + delay * random.uniform(0.5, 1.0)
            log.warning("pull from %s failed (%s); retrying in about %.0fs", peer_name, e, delay,
                        extra={"peer": peer_name, "error": status.last_error, "retry_in": round(delay)})
            return
        finally:
            status.bytes_in += transport.bytes_in
            status.bytes_out += transport.bytes_out
            if transport.head is not None:
                status.peer_head = transport.head
        self.observer.pulled(peer_name, time.monotonic() - started, ok=True)
        status.failures_in_a_row = 0
        status.next_try = 0.0
        status.last_success = time.time()
        status.stored += report.stored
        for reason, count in report.refused.items():
            status.refused[reason] = status.refused.get(reason, 0) + count
        if report.stored or report.refused:
            log.info("pulled %d event(s) from %s", report.stored, peer_name,
                     extra={"peer": peer_name, "stored": report.stored, "stored_records": report.stored_records,
                            "refused": dict(report.refused)})
        if report.stored:
            self.stored_something()  # what we stored may go further: tell our other peers

    def peers_json(self) -> dict[str, Any]:
        out = {}
        for peer in self.node.config.peers:
            status = self.status.setdefault(peer.name, PeerStatus()).as_json()
            served = self.protocol.served.get(peer.name, {})
            status["bytes_in"] += served.get("bytes_in", 0)
            status["bytes_out"] += served.get("bytes_out", 0)
            status["checkpoint"] = self.node.store.checkpoint(peer.name)
            head = status.get("peer_head")
            # records of the peer's log not yet examined (an upper bound on what may still arrive)
            status["lag"] = max(0, head - status["checkpoint"]) if head is not None else None
            status["mode"] = peer.policy.mode.value
            status["url"] = peer.url
            out[peer.name] = status
        return out
