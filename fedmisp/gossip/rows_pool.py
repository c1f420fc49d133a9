"""The row workers: processes that open received bodies and build their store rows for a large
pull, while the node process runs policy and stores (decision 0018).

A received batch with many bodies has them opened (decoded and shape-checked, model/received.py)
and their store rows built (value normalisation, correlation keys: about half of what storing a
received event costs) in worker processes. `rows_ahead` starts on an event's bodies as they arrive,
before the batch is handed out; `open` collects what the workers made and opens the rest here;
`rows` and `joined` give the rows of what inbound policy kept. Everything here falls back to this
process when a worker dies.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import msgpack

from fedmisp.gossip.session import PAGE_ELEMENTS
from fedmisp.model.received import received_problem
from fedmisp.model.records import KIND_EVENT, Record, RecordError, open_element
from fedmisp.policy.holding import unpack_views, views_of
from fedmisp.policy.model import ElementView, element_view
from fedmisp.runtime import tune_gc
from fedmisp.store.store import Rows, element_rows, elements_rows, join_rows, unpack_element_rows, uuid16

# A received batch with at least this many bodies builds their store rows (decoding, value
# normalisation, correlation keys: about half of what storing a received event costs) in worker
# processes while this one runs the inbound policy and stores; below it, starting the workers and
# moving the bodies costs more than it saves. Rows are built in chunks of ROWS_CHUNK bodies so
# one big event keeps every worker busy.
ROWS_POOL_MIN = 4_000
ROWS_CHUNK = 2_500
ROWS_NICE = 10  # the row workers' lower CPU priority (see _start_row_worker)
# Bodies whose rows may be built ahead of their batch (rows_ahead): about two pages.
AHEAD_BODIES = 2 * PAGE_ELEMENTS + 10_000

# (kept bodies as the receiver lists them: digest, body, the element when opened in this process)
Kept = list[tuple[bytes, bytes, dict[str, Any] | None]]


def _start_row_worker(parent: int, interval: float = 1.0) -> None:
    """In a row worker: yield the CPU to the node process, and exit when it is gone.

    The node process is a pull's critical path (policy, writes, every body's digest, all under one
    GIL) and the workers run ahead of it, so on a busy machine they get what is left (nice +ROWS_NICE).
    A worker waits on a queue whose write end it holds itself, so a node killed with SIGKILL would
    otherwise leave it waiting forever."""
    try:
        os.nice(ROWS_NICE)
    except OSError:
        pass
    tune_gc()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)
    threading.Thread(target=watch, name="fedmisp-parent-watch", daemon=True).start()


def open_received(body: bytes) -> dict[str, Any]:
    """A received body (its digest checked by the session) opened as policy and the store read it:
    decoded and its fields checked (`received_problem`). RecordError names what is wrong: the
    element is refused, the rest of its event goes on. The one place for it, in a row worker or here."""
    element = open_element(body)
    problem = received_problem(element)
    if problem is not None:
        raise RecordError(problem)
    return element


def open_rows(ev: bytes, entries: list[tuple[bytes, bytes]], event_disabled: bool) -> bytes:
    """In a row worker: `open_received` each body (`entries`: digest, body). One msgpack blob
    `[rows, attributes, views, bad]`: the store rows of the bodies that open (without the bodies'
    own rows), their views as the store keeps them (views_of: the receiver stores them, joined,
    when it keeps every body) and `[index, what is wrong]` of each bad one."""
    good: list[tuple[bytes, bytes, dict[str, Any]]] = []
    bad: list[tuple[int, str]] = []
    for i, (digest, body) in enumerate(entries):
        try:
            good.append((digest, body, open_received(body)))
        except RecordError as e:
            bad.append((i, str(e)))
    rows, attributes = elements_rows(ev, good, event_disabled)
    views = views_of([(digest, element) for digest, _, element in good])
    return msgpack.packb([rows, attributes, views, bad], use_bin_type=True)


@dataclass
class Opened:
    """The bodies of one received revision, opened: each good one's view, the elements opened in
    this process (not those a worker opened), what is wrong with each bad one, and the rows the
    workers built ahead as `(digests covered, rows, attributes)`."""
    views: dict[bytes, ElementView] = field(default_factory=dict)
    elements: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    bad: dict[bytes, str] = field(default_factory=dict)
    rows: list[tuple[list[bytes], Rows, int]] = field(default_factory=list)
    packed: list[bytes] = field(default_factory=list)  # the workers' views of their bodies (views_of)
    packed_count: int = 0  # views in `packed`


@dataclass(frozen=True)
class EventRows:
    """An accepted revision's element rows: parts built ahead, and the kept bodies they do not
    cover (`todo`), built by `jobs` in the workers or, with no jobs, in this process."""
    ready: list[tuple[Rows, int]]
    jobs: list[Future[bytes]] | None
    todo: list[tuple[bytes, bytes, dict[str, Any] | None]]


class RowsPool:
    def __init__(self, workers: int = 0):
        """`workers`: worker processes that build the store rows of large received batches (0:
        everything in this process, as tests and one-process tools do)."""
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        # (peer, record id) -> rows being built for its bodies as they arrived (rows_ahead), each
        # job with the digests it covers; taken by the batch that stores the record. Per peer:
        # pulls from two peers run at once (gossip/service.py) and may fetch the same revision.
        self._ahead: dict[tuple[str, bytes], list[tuple[list[bytes], Future[bytes]]]] = {}
        self._ahead_bodies = 0  # over every pull (the event loop adds, the store thread takes)
        self._ahead_lock = threading.Lock()

    def close(self) -> None:
        """Stop the row workers, if any were started, and forget what they were building."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        self.drop_ahead()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def expect_bodies(self, bodies: int) -> None:
        """A pull is about to fetch this many bodies: start the row workers now if its batches will
        use them, so they are ready (their imports done) when the first batch comes to be stored."""
        if self._pool is not None or self.workers <= 0 or bodies < ROWS_POOL_MIN:
            return
        pool = self.pool_for(bodies)
        if pool is None:
            return
        try:
            for _ in range(self.workers):  # each submit with no idle worker starts one
                pool.submit(element_rows, b"", [], False)
        except (BrokenProcessPool, RuntimeError):
            self._drop_pool(pool)

    def rows_ahead(self, record: Record, entries: list[tuple[bytes, bytes]], source: str = "") -> None:
        """Bodies of `record` just fetched (their digests checked): while row workers run (a large
        pull), start opening them and building their rows now, as the rest of the page is fetched,
        instead of when the page is stored (that made them a serial step of every page: about a
        third of storing one, and opening every body here a third of this process's work).

        The views are used as they are; the rows only if inbound policy keeps every body they cover
        (the usual case; otherwise the kept bodies' rows are built anew). At most AHEAD_BODIES
        bodies are ahead at a time; the rest are opened when their batch is stored."""
        pool = self._pool
        if pool is None or not entries or record.kind != KIND_EVENT:
            return
        header = record.body["event"]
        ev, disabled = uuid16(header["uuid"]), bool(header.get("disable_correlation"))
        try:
            with self._ahead_lock:  # (the batch that takes them may be stored meanwhile: _open)
                jobs = self._ahead.setdefault((source, record.id), [])
                for i in range(0, len(entries), ROWS_CHUNK):
                    part = entries[i:i + ROWS_CHUNK]
                    if self._ahead_bodies + len(part) > AHEAD_BODIES:
                        break  # the rest with their batch
                    jobs.append(([d for d, _ in part], pool.submit(open_rows, ev, part, disabled)))
                    self._ahead_bodies += len(part)
        except (BrokenProcessPool, RuntimeError):
            self._drop_pool(pool)

    def drop_ahead(self, source: str | None = None) -> None:
        """Forget work started ahead for records no batch took (the pull from `source` ended or
        failed; None: every pull's)."""
        with self._ahead_lock:
            dropped = [self._ahead.pop(k) for k in list(self._ahead) if source is None or k[0] == source]
            self._ahead_bodies -= sum(len(digests) for jobs in dropped for digests, _ in jobs)
        for jobs in dropped:
            for _, job in jobs:
                job.cancel()

    def open(self, record: Record, bodies: dict[bytes, bytes], source: str = "") -> Opened:
        """The fetched bodies of one revision opened: by the workers ahead (rows_ahead), and here
        for any they did not take (a small pull, the ahead cap, a worker that died)."""
        opened = Opened()
        views, bad = opened.views, opened.bad
        with self._ahead_lock:
            ahead = self._ahead.pop((source, record.id), [])
            self._ahead_bodies -= sum(len(digests) for digests, _ in ahead)
        for digests, job in ahead:
            try:
                rows, attributes, packed, problems = msgpack.unpackb(job.result(), raw=False, use_list=False)
            except (BrokenProcessPool, CancelledError):
                self._drop_pool(None)
                continue  # opened here below
            chunk = unpack_views(packed)
            views.update(chunk)
            for i, problem in problems:
                bad[digests[i]] = problem
            opened.rows.append((digests, rows, attributes))
            opened.packed.append(packed)
            opened.packed_count += len(chunk)
        for digest, body in bodies.items():
            if digest in views or digest in bad:
                continue
            try:
                element = open_received(body)
            except RecordError as e:
                bad[digest] = str(e)
                continue
            views[digest] = element_view(element)
            opened.elements[digest] = element
        return opened

    def rows(self, pool: ProcessPoolExecutor | None, record: Record, keep: Kept, opened: Opened) -> EventRows:
        """How an accepted revision's element rows are made (`keep`: the bodies inbound policy
        kept): those built ahead when every body they cover is kept, the rest in the workers (a
        large batch) or here."""
        ready: list[tuple[Rows, int]] = []
        todo = keep
        if opened.rows:
            kept = {d for d, _, _ in keep}
            if all(d in kept or d in opened.bad for digests, _, _ in opened.rows for d in digests):
                ready = [(rows, n) for _, rows, n in opened.rows]
                covered = {d for digests, _, _ in opened.rows for d in digests}
                todo = [entry for entry in keep if entry[0] not in covered]
        jobs = self._submit_rows(pool, record, todo) if pool is not None and todo else None
        return EventRows(ready, jobs, todo)

    def pool_for(self, bodies: int) -> ProcessPoolExecutor | None:
        """The workers for a batch of this many bodies (started on first use), None: build here."""
        if self.workers <= 0 or bodies < ROWS_POOL_MIN:
            return None
        with self._pool_lock:
            if self._pool is None:
                # spawn, not fork: a forked child would inherit this process's LMDB environment
                # and event loop threads
                self._pool = ProcessPoolExecutor(max_workers=self.workers,
                                                 mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_start_row_worker, initargs=(os.getpid(),))
            return self._pool

    def _submit_rows(self, pool: ProcessPoolExecutor, record: Record, entries: Kept) -> list[Future[bytes]] | None:
        header = record.body["event"]
        ev, disabled = uuid16(header["uuid"]), bool(header.get("disable_correlation"))
        pairs = [(d, b) for d, b, _ in entries]
        try:
            return [pool.submit(element_rows, ev, pairs[i:i + ROWS_CHUNK], disabled)
                    for i in range(0, len(pairs), ROWS_CHUNK)]
        except (BrokenProcessPool, RuntimeError):
            self._drop_pool(pool)
            return None  # built here instead

    def joined(self, record: Record, rows: EventRows) -> Rows:
        """The rows of an accepted revision, waiting for its jobs (built here if a worker died)."""
        parts = list(rows.ready)
        here = rows.todo
        if rows.jobs is not None:
            try:
                parts.append(unpack_element_rows([job.result() for job in rows.jobs]))
                here = []
            except (BrokenProcessPool, CancelledError):  # a worker died (killed, out of memory): built here instead
                self._drop_pool(None)
        if here:
            header = record.body["event"]
            parts.append(elements_rows(uuid16(header["uuid"]),
                                       [(d, b, e if e is not None else open_element(b)) for d, b, e in here],
                                       bool(header.get("disable_correlation"))))
        return join_rows(parts)

    def _drop_pool(self, pool: ProcessPoolExecutor | None) -> None:
        """Forget a broken pool (the next large batch starts a new one)."""
        with self._pool_lock:
            broken = self._pool if pool is None or pool is self._pool else None
            if broken is not None:
                self._pool = None
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)
