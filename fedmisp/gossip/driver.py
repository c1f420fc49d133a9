"""Driving a pull session: the same loop over any transport (HTTP between nodes, or in memory)."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Generator, Protocol, TypeVar

from fedmisp.gossip.replica import ApplyReport, Replica
from fedmisp.gossip.session import (
    Done, LookUp, PullLimits, PullSession, SendBodies, SendChanges, StoreBatch, WaitStored, look_up, stop_rule,
)
from fedmisp.gossip.peers import PeerConfig
from fedmisp.policy.reasons import Reason

T = TypeVar("T")


class PullStopped(Exception):
    """A pull rule ended the pull (session.stop_rule: its deadline, or no progress); what it stored
    stays stored. `rule` is DEADLINE or NO_PROGRESS, the message says what was measured."""

    def __init__(self, message: str):
        super().__init__(message)
        self.rule = Reason(message.split(":", 1)[0])


@dataclass
class PullWatch:
    """What a running pull has learnt, for the status, also when it ends by an error: the peer's
    log head as its last page said it (checked: a sequence number, not before the pull's earlier
    pages), and what the batches stored so far stored and refused."""
    head: int | None = None
    report: ApplyReport = field(default_factory=ApplyReport)


class Transport(Protocol):
    """How a session's two requests reach the peer (and its replies come back decoded)."""

    def changes(self, since: int, limit: int) -> Any: ...

    def bodies(self, event_uuid: str, digests: tuple[bytes, ...], everything: bool = False) -> Any: ...


# --- the one step loop ----------------------------------------------------------------------------
# What each step of a session asks the driver to do, as requests the loop yields and whose results
# it is sent back: the peer's replies, a piece of local work (signature checks, store reads: run
# off the event loop by the async driver), a batch to store. `pull` answers them in place, in one
# thread; `pull_async` over the network, with the pull's limits, storing a batch in the background.

@dataclass(frozen=True, slots=True)
class AskPeer:
    """A request to the peer (SendChanges or SendBodies): send back its decoded reply."""
    step: SendChanges | SendBodies


@dataclass(frozen=True, slots=True)
class Work:
    """Local work, no network: send back `fn(*args)`."""
    fn: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Store:
    """A batch to store with its checkpoint: send back its ApplyReport, or None when it is stored
    in the background (the loop then asks for it with Stored before it hands out another)."""
    batch: StoreBatch


@dataclass(frozen=True, slots=True)
class Stored:
    """Wait for the batch being stored in the background: send back its ApplyReport."""


@dataclass(frozen=True, slots=True)
class Next:
    """A step is about to be taken (the async driver checks the pull's limits here)."""


@dataclass(frozen=True, slots=True)
class Share:
    """The bodies of this revision are about to be asked of the peer: send back True if another
    pull of this node stored it meanwhile (the driver waited for it: ask only for what is still
    lacking), False to fetch them (SharedFetches; a driver without concurrent pulls says False)."""
    event_uuid: str
    record_id: bytes


Request = AskPeer | Work | Store | Stored | Next | Share

# How long a pull waits for another pull that is fetching the same event revision before it
# fetches the bodies itself. Two peers' notices for one new event start two pulls at once; without
# the wait both fetch every body (a spread over a mesh cost 2.2x the payload per node instead of
# 1.3x, bench/sync.py). A few seconds covers one event's bodies; a pull waits at most once past
# this (after one wait that ran out it stops waiting), so a slow peer delays another peer's pull
# by at most this long.
SHARED_FETCH_WAIT_SECONDS = 5.0


class SharedFetches:
    """The event revisions whose bodies a pull is fetching now, shared by a node's concurrent
    pulls: a pull offered a revision another pull is fetching waits until that pull has stored it
    (or stopped), then fetches only the bodies still lacking."""

    def __init__(self) -> None:
        self._fetching: dict[tuple[str, bytes], asyncio.Event] = {}

    def claim(self, event_uuid: str, record_id: bytes) -> asyncio.Event | None:
        """None: the caller fetches it (and releases it later); else the Event another pull sets."""
        key = (event_uuid, record_id)
        other = self._fetching.get(key)
        if other is not None:
            return other
        self._fetching[key] = asyncio.Event()
        return None

    def release(self, keys: list[tuple[str, bytes]]) -> None:
        for key in keys:
            done = self._fetching.pop(key, None)
            if done is not None:
                done.set()

    def __len__(self) -> int:
        return len(self._fetching)


def steps(replica: Replica, peer: PeerConfig, session: PullSession, total: ApplyReport,
          watch: PullWatch | None = None) -> Generator[Request, Any, ApplyReport]:
    """The step loop of one pull: the session says what is next, this says how, the driver does it."""
    while True:
        yield Next()
        step = session.next_step()
        if isinstance(step, SendChanges):
            reply = yield AskPeer(step)
            yield Work(session.changes_received, (reply,))  # (opens the page's records: signatures)
            if watch is not None:
                watch.head = session.head
        elif isinstance(step, LookUp):
            yield Work(_take_facts, (session, replica.receiver, step))  # (reads the store)
            # a large pull: the row workers start while the bodies are fetched, not when the
            # first batch is stored (a worker takes a few hundred ms to start)
            replica.expect_bodies(session.bodies_wanted)
        elif isinstance(step, SendBodies):
            record = session.pending_record(step.event_uuid)
            if record is not None and (yield Share(step.event_uuid, record.id)):
                held = yield Work(replica.receiver.held_digests, (step.event_uuid,))
                session.bodies_held(step.event_uuid, held)  # what is still lacking is asked for next
                continue
            _arrived(replica, session, step.event_uuid, (yield AskPeer(step)))
        elif isinstance(step, StoreBatch):
            report = yield Store(step)
            if report is not None:
                session.stored(report.lacking)
                total.add(report)
        elif isinstance(step, WaitStored):
            report = yield Stored()
            session.stored(report.lacking)
            total.add(report)
        else:
            assert isinstance(step, Done)
            return total


def _arrived(replica: Replica, session: PullSession, event_uuid: str, reply: Any) -> None:
    """A bodies reply: the session verifies it; the row workers (if running) start on what it took."""
    accepted = session.bodies_received(event_uuid, reply)
    record = session.pending_record(event_uuid) if accepted else None
    if record is not None:
        replica.rows_ahead(record, accepted, session.peer)


def _take_facts(session: PullSession, local: Any, step: LookUp) -> None:
    session.facts_received(look_up(local, step))


def _send(loop: Generator[Request, Any, ApplyReport], result: Any) -> Request | ApplyReport:
    """The loop's next request, given the result of the last one; its report when it is done."""
    try:
        return loop.send(result)
    except StopIteration as done:
        return done.value


def _ask(transport: Any, step: SendChanges | SendBodies) -> Any:
    if isinstance(step, SendChanges):
        return transport.changes(step.since, step.limit)
    return transport.bodies(step.event_uuid, step.digests, step.everything)


def pull(replica: Replica, peer: PeerConfig, transport: Transport) -> ApplyReport:
    """Pull everything new from one peer, storing batch by batch with the checkpoint."""
    session = PullSession(peer.name, replica.store.pull_from(peer.name))
    loop = steps(replica, peer, session, ApplyReport())
    result: Any = None
    try:
        while not isinstance(request := _send(loop, result), ApplyReport):
            if isinstance(request, AskPeer):
                result = _ask(transport, request.step)
            elif isinstance(request, Work):
                result = request.fn(*request.args)
            elif isinstance(request, Store):
                result = replica.apply(peer, request.batch)
            else:
                result = None  # Next (no limits here), Share (no other pull); Stored never comes: every
                # batch is stored at once
        return request
    finally:
        replica.drop_ahead(peer.name)


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
                     run_blocking: Any, *, run_store: Any = None, limits: PullLimits = PullLimits(),
                     watch: PullWatch | None = None, clock: Callable[[], float] = time.monotonic,
                     fetches: SharedFetches | None = None) -> ApplyReport:
    """`pull` for the node process: network awaits, store reads in `run_blocking` (an executor),
    each batch stored in `run_store` (default `run_blocking`; the gossiper gives one thread for
    every pull's batches: `replica.apply` merges holdings read-modify-write).

    A batch is stored in the background while the next page and its bodies are fetched (the peer
    prepares them meanwhile), so the two nodes work at the same time instead of taking turns; the
    session hands out one batch at a time and says when to wait for it (WaitStored).

    Every wait for the peer is bounded by `limits` (session.stop_rule): the pull's deadline, and
    no progress for `no_progress_seconds` or `no_progress_pages` empty pages; one that is reached
    raises PullStopped. The batch being stored is stored first (it is this node's work, not the
    peer's), and the checkpoint stays where the last stored batch put it.

    With `fetches` (shared by the node's pulls), a revision another pull is fetching is waited for
    (SHARED_FETCH_WAIT_SECONDS at most) instead of fetched twice."""
    run_store = run_store or run_blocking
    total = watch.report if watch is not None else ApplyReport()
    checkpoint = await run_blocking(replica.store.pull_from, peer.name)
    session = PullSession(peer.name, checkpoint)
    started = progressed = clock()
    seen = session.progress
    storing: asyncio.Future[ApplyReport] | None = None

    def check(now: float | None = None) -> None:
        nonlocal seen, progressed
        if session.progress != seen:
            seen, progressed = session.progress, clock()
        now = clock() if now is None else now
        stop = stop_rule(session, now - started, now - progressed, limits)
        if stop is not None:
            raise PullStopped(stop)

    async def from_peer(request: Awaitable[T]) -> T:
        """The peer's reply, or PullStopped once the first limit is reached while waiting."""
        limit_at = min(started + limits.deadline, progressed + limits.no_progress_seconds)
        try:
            async with asyncio.timeout(max(limit_at - clock(), 0)) as scope:
                return await request
        except TimeoutError:
            if not scope.expired():
                raise  # the transport's own timeout (a silent peer)
        check(max(clock(), limit_at))  # which limit it was (the loop may wake a little early)
        raise AssertionError("a pull limit was reached but no rule says which")  # pragma: no cover

    loop = steps(replica, peer, session, total, watch)
    result: Any = None
    just_stored = False
    claimed: list[tuple[str, bytes]] = []  # revisions this pull fetches, not yet in a stored batch
    claimed_storing: list[tuple[str, bytes]] = []  # ... in the batch being stored
    waited: set[tuple[str, bytes]] = set()
    wait_for_others = True

    async def share(request: Share) -> bool:
        """Whether another pull stored this revision while this one waited for it."""
        nonlocal wait_for_others, seen, progressed
        key = (request.event_uuid, request.record_id)
        if fetches is None or key in waited or key in claimed:
            return False
        other = fetches.claim(*key)
        if other is None:
            claimed.append(key)
            return False
        waited.add(key)
        if wait_for_others:
            try:
                await asyncio.wait_for(other.wait(), SHARED_FETCH_WAIT_SECONDS)
            except TimeoutError:
                wait_for_others = False  # once: a slow peer delays this pull only so long
        seen, progressed = session.progress, clock()  # the wait was this node's, not the peer's
        return True

    def stored_batch() -> None:
        nonlocal claimed_storing
        if fetches is not None:
            fetches.release(claimed_storing)
        claimed_storing = []
    try:
        while not isinstance(request := _send(loop, result), ApplyReport):
            if isinstance(request, Next):
                if just_stored:
                    # time spent storing is this node's, not the peer's: it does not count against it
                    seen, progressed, just_stored = session.progress, clock(), False
                check()
                result = None
            elif isinstance(request, AskPeer):
                result = await from_peer(_ask(transport, request.step))
            elif isinstance(request, Work):
                result = await run_blocking(request.fn, *request.args)
            elif isinstance(request, Share):
                result = await share(request)
            elif isinstance(request, Store):
                storing = asyncio.ensure_future(run_store(replica.apply, peer, request.batch))
                claimed_storing, claimed = claimed, []
                result = None
            else:
                assert isinstance(request, Stored) and storing is not None
                result, storing = await storing, None
                stored_batch()
                just_stored = True
        return request
    finally:
        if storing is not None:
            # a fetch failed meanwhile: the batch being stored is still stored whole (with its
            # checkpoint) or not at all; wait for it so no store work outlives the pull
            await asyncio.gather(storing, return_exceptions=True)
        if fetches is not None:
            fetches.release(claimed_storing + claimed)  # whoever waits fetches what is still lacking
        replica.drop_ahead(peer.name)
