"""Gossip in the node process: eager notices, scheduled anti-entropy with jitter and backoff.

When this node stores something new (any record: an event revision, an org record, a sharing-group
revision, sightings, a proposal or decision; by the API, a pull, or another process such as
`fedmisp import`) it tells the peers it serves (POST /fed/v1/notify) and they pull at once; a
notice from a peer makes this node pull from it at once. At start a node pulls from every peer and
notifies them, so they pull from it. An APScheduler job per peer pulls every ANTI_ENTROPY_SECONDS
(with jitter) to catch up whatever a notice missed and peers that were down; a peer that fails is
retried with exponential backoff, and soon after it answers again (its notice or request).

Pulls from different peers run at once (at most MAX_CONCURRENT_PULLS), each bounded by its limits
(gossip/session.py PullLimits), so a slow or hostile peer holds only its own pull; the batches of
every pull are stored one at a time on one thread (`replica.apply` merges holdings
read-modify-write).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from fedmisp.gossip.driver import PullStopped, PullWatch, SharedFetches, pull_async
from fedmisp.gossip.http import HttpTransport, PeerProtocol
from fedmisp.gossip.session import PullLimits, RefusedReply
from fedmisp.gossip.observe import IN, NO_OBSERVER, PULL, REFUSED, Decision, Observer
from fedmisp.gossip.replica import ApplyReport, Replica
from fedmisp.gossip.peers import PeerConfig
from fedmisp.gossip.peers import NodeView
from fedmisp.policy.model import PeerMode
from fedmisp.policy.reasons import Reason

log = logging.getLogger("fedmisp.gossip")

ANTI_ENTROPY_SECONDS = 30.0
JITTER_SECONDS = 5.0  # spreads the pulls of many nodes so they do not all hit a peer at once
BACKOFF_BASE = 2.0
BACKOFF_MAX = 600.0  # a peer down for long is tried every ten minutes
# Pulls from different peers at once. A pull mostly waits for its peer (a changes page, a bodies
# reply) and its batches are stored one at a time anyway; four keep a slow or hostile peer (or
# three) from holding replication with the others, while a 2-core node with its row workers is
# kept busy by one bulk pull (docs/decisions/0015). Each peer has at most one pull at a time.
MAX_CONCURRENT_PULLS = 4
# How often the log head is compared with what was last announced: a record stored by another
# process (`fedmisp import`, `fedmisp key rotate`) or by a path that does not go through the
# writer is announced within this long; it is one LMDB read. The same tick notices that a peer
# being backed off has talked to this node again (it is up: pull it now).
HEAD_WATCH_SECONDS = 1.0
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
    # what ended the last failed pull when the peer broke a rule: "deadline", "no-progress" or
    # "refused-reply" (its backoff is then not lifted by its notices); "" for any other failure
    # (unreachable, an HTTP error) or none
    stopped: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "last_success": self.last_success, "last_error": self.last_error, "errors": self.errors,
            "stopped": self.stopped,
            "retry_in": max(0.0, round(self.next_try - time.time(), 1)), "stored": self.stored,
            "peer_head": self.peer_head,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "refused": dict(self.refused),
        }


class Gossiper:
    def __init__(self, node: NodeView, run_blocking: Callable[..., Awaitable[Any]],
                 interval: float = ANTI_ENTROPY_SECONDS, observer: Observer = NO_OBSERVER,
                 limits: PullLimits = PullLimits()):
        self.node = node
        self.observer = observer
        self.replica = Replica(node, observer, rows_workers=ROWS_WORKERS)
        self.run_blocking = run_blocking
        self.interval = interval
        self.limits = limits
        self.protocol = PeerProtocol(self.replica, run_blocking, on_notify=self.pull_soon)
        self.status: dict[str, PeerStatus] = {p.name: PeerStatus() for p in node.config.peers}
        self._http: aiohttp.ClientSession | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_PULLS)
        self._fetches = SharedFetches()  # one revision's bodies fetched once, whichever peers offer it
        self._pulling: set[str] = set()  # peers with a pull running or waiting for a slot
        self._again: set[str] = set()  # ... and asked for again meanwhile (runs right after)
        self._notifying: set[str] = set()  # peers with a notice in flight
        self._notify_again: set[str] = set()  # ... and something new stored meanwhile
        self._announced = 0  # the log head when served peers were last told
        self._served_seen: dict[str, int] = {}  # requests answered per peer, at the last watch tick
        # every pull's batches, one at a time (replica.apply merges holdings read-modify-write)
        self._store_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedmisp-pull-store")
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        self._scheduler = AsyncIOScheduler()
        self._scheduler.start()
        self.reschedule()  # pulls from every peer at once
        self.stored_something()  # and tells them this node is here: they pull from it at once
        self._spawn(self._watch())

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
        self._store_thread.shutdown(wait=False)  # (idle: every pull waited for its batch)
        await self.run_blocking(self.replica.close)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retry(self, peer_name: str, wait: float) -> None:
        """Pull from a peer whose pull failed once its backoff is over (a pull that ran meanwhile,
        by a notice or anti-entropy, leaves this one nothing to do or backs it off again)."""
        await asyncio.sleep(wait + 0.05)
        await self.pull(peer_name)

    def pull_soon(self, peer_name: str) -> None:
        self._spawn(self.pull(peer_name, eager=True))

    def stored_something(self) -> None:
        """Tell every served peer there is something new (they pull at once). One notice per peer
        in flight: what is stored meanwhile is told by one more notice when it is answered."""
        self._announced = max(self._announced, self.node.store.head_sequence())
        for peer in self.node.config.peers:
            if peer.policy.mode not in _SERVES:
                continue
            if peer.name in self._notifying:
                self._notify_again.add(peer.name)
            else:
                self._notifying.add(peer.name)
                self._spawn(self._notify(peer.name))

    def _announce_if_stored(self) -> None:
        """Served peers are told if the log moved since they last were (any record stored, by
        any path: a pull, the API, another process)."""
        if self.node.store.head_sequence() > self._announced:
            self.stored_something()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(HEAD_WATCH_SECONDS)
            try:
                self._announce_if_stored()
                for name, counters in list(self.protocol.served.items()):
                    answered, before = counters.get("requests", 0), self._served_seen.get(name, 0)
                    self._served_seen[name] = answered
                    if answered > before:
                        self._answers(name)  # it asked this node something, and got its answer
            except Exception:  # noqa: BLE001 - the watch goes on; anti-entropy catches up meanwhile
                log.exception("gossip watch failed")

    def _answers(self, peer_name: str) -> None:
        """The peer is up (it answered a notice, or this node answered its request): if it is
        being backed off because it was unreachable or failed, pull from it now instead of at the
        end of its backoff. A peer whose last pull broke a rule waits for its backoff."""
        status = self.status.get(peer_name)
        if status is not None and status.failures_in_a_row and not status.stopped \
                and time.time() < status.next_try:
            status.next_try = 0.0
            self.pull_soon(peer_name)

    def _transport(self, peer: PeerConfig) -> HttpTransport:
        assert self._http is not None
        return HttpTransport(self._http, self.node.identity, peer, self.node.retired_identities)

    async def _notify(self, peer_name: str) -> None:
        try:
            while True:
                resolved = self.replica.peer(peer_name)  # the peer's current key (after its rotations)
                if self._http is None or resolved is None or resolved.policy.mode not in _SERVES:
                    return
                self._notify_again.discard(peer_name)
                transport = self._transport(resolved)
                try:
                    await transport.notify()
                    self._answers(peer_name)
                except Exception as e:  # noqa: BLE001 - a notice is best effort; anti-entropy catches up
                    log.info("notice to %s failed: %s", peer_name, e, extra={"peer": peer_name, "error": str(e)})
                    return  # (its next pull or notice tells it what is new)
                finally:
                    status = self.status.setdefault(peer_name, PeerStatus())
                    status.bytes_in += transport.bytes_in
                    status.bytes_out += transport.bytes_out
                if peer_name not in self._notify_again:
                    return
        finally:
            self._notifying.discard(peer_name)
            self._notify_again.discard(peer_name)

    async def pull(self, peer_name: str, eager: bool = False) -> None:
        peer = self.replica.peer(peer_name)
        status = self.status.setdefault(peer_name, PeerStatus())
        if peer is None or self._http is None or peer.policy.mode not in _TAKES:
            return
        if peer_name in self._pulling:
            # One pull per peer at a time; a notice that arrives meanwhile is remembered and the
            # peer pulled again right after, so no notice is lost.
            self._again.add(peer_name)
            return
        if time.time() < status.next_try and (not eager or status.stopped):
            # backing off: a notice from the peer lifts it (the peer is back), unless the peer's
            # last pull broke a rule (it would otherwise hold its pull again with every notice)
            return
        self._pulling.add(peer_name)
        try:
            async with self._slots:  # (pulls from different peers at once, at most this many)
                await self._pull_one(peer, status)
        finally:
            self._pulling.discard(peer_name)
        self._announce_if_stored()  # what we stored may go further: tell our peers
        if peer_name in self._again:
            self._again.discard(peer_name)
            self._spawn(self.pull(peer_name, eager=True))

    async def _run_store(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._store_thread, fn, *args)

    async def _pull_one(self, peer: PeerConfig, status: PeerStatus) -> None:
        peer_name = peer.name
        transport = self._transport(peer)
        watch = PullWatch()
        started = time.monotonic()
        try:
            report = await pull_async(self.replica, peer, transport, self.run_blocking, run_store=self._run_store,
                                      limits=self.limits, watch=watch, fetches=self._fetches)
        except Exception as e:  # noqa: BLE001 - one peer's failure never stops the others
            self.observer.pulled(peer_name, time.monotonic() - started, ok=False)
            self._count(status, watch.report)  # the batches stored before it stopped
            status.errors += 1
            status.failures_in_a_row += 1
            status.stopped = e.rule if isinstance(e, PullStopped) else Reason.REFUSED_REPLY \
                if isinstance(e, RefusedReply) else ""
            status.last_error = str(e) if status.stopped else f"{type(e).__name__}: {e}"
            if status.stopped:  # the peer broke a rule: the audit log says which (a line per pull)
                self.observer.decided(Decision(peer_name, IN, REFUSED, kind=PULL, reason=status.stopped,
                                               detail=status.last_error[:500]))
            delay = min(BACKOFF_MAX, BACKOFF_BASE ** status.failures_in_a_row)
            wait = delay * random.uniform(0.5, 1.0)
            status.next_try = time.time() + wait
            if wait < self.interval:  # retried when its backoff ends, not at the next anti-entropy tick
                self._spawn(self._retry(peer_name, wait))
            log.warning("pull from %s failed (%s); retrying in about %.0fs", peer_name, status.last_error, delay,
                        extra={"peer": peer_name, "error": status.last_error, "stopped": status.stopped,
                               "retry_in": round(delay)})
            return
        finally:
            status.bytes_in += transport.bytes_in
            status.bytes_out += transport.bytes_out
            if watch.head is not None:
                status.peer_head = watch.head
        self.observer.pulled(peer_name, time.monotonic() - started, ok=True)
        status.failures_in_a_row = 0
        status.next_try = 0.0
        status.stopped = ""
        status.last_success = time.time()
        self._count(status, report)
        if report.stored or report.stored_records or report.refused:
            log.info("pulled %d event(s) and %d other record(s) from %s", report.stored, report.stored_records,
                     peer_name, extra={"peer": peer_name, "stored": report.stored,
                                       "stored_records": report.stored_records, "refused": dict(report.refused)})

    @staticmethod
    def _count(status: PeerStatus, report: ApplyReport) -> None:
        status.stored += report.stored
        for reason, count in report.refused.items():
            status.refused[reason] = status.refused.get(reason, 0) + count

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
