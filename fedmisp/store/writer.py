"""The single writer: one thread owns LMDB writes and groups queued work into few transactions.

LMDB allows one write transaction at a time and a commit costs an fsync plus a write of every page
the transaction dirtied, so many small commits are the slow path. Callers (the importer, the API,
replication) submit batches and get a future that resolves at the commit; the writer puts whatever
is queued into one transaction, off the event loop, while readers keep reading the last committed
state. An importer announces `more=True` and the transaction stays open across its batches, up to
MAX_ELEMENTS_PER_TXN (docs/decisions/0004).
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

from fedmisp.model.revision import SignedEvent
from fedmisp.store.events import EventBatch, WriteOutcome
from fedmisp.store.rows import EventWrite
from fedmisp.store.store import Store

# Commit once a transaction holds this many elements. Each commit writes every page the
# transaction touched, and random-keyed indexes (element uuid, value, ssdeep gram) touch most of
# their leaf pages in any large transaction: writing 1,000,000 attributes dirtied 9.5 GB of pages
# at 50,000 elements per commit, 1.6 GB at 250,000 and 1.1 GB at 500,000 (docs/decisions/0004).
# Dirty pages live in the file mapping (writemap), not the heap, so a larger transaction costs
# page cache, not private memory. The price: another process's writes wait for the commit (a few
# seconds), and a crash loses the open transaction (a re-import redoes it).
MAX_ELEMENTS_PER_TXN = 500_000
# Submissions waiting in the queue; a producer faster than the disk blocks here, which keeps the
# importer's memory flat however many events it reads.
MAX_QUEUED = 3


@dataclass(slots=True)
class _Job:
    events: list[EventWrite | SignedEvent]
    future: "Future[list[WriteOutcome]]"
    more: bool = False
    outcomes: list[WriteOutcome] | None = None
    checkpoint: tuple[str, int] | None = None


class Writer:
    def __init__(self, store: Store, on_commit: "Callable[[], None] | None" = None):
        self.store = store
        self.on_commit = on_commit  # called from the writer thread after each successful commit
        self._queue: "queue.Queue[_Job | None]" = queue.Queue(maxsize=MAX_QUEUED)
        self._thread = threading.Thread(target=self._run, name="fedmisp-writer", daemon=True)
        self._thread.start()

    def submit(self, events: list[EventWrite | SignedEvent], *, more: bool = False,
               checkpoint: tuple[str, int] | None = None) -> "Future[list[WriteOutcome]]":
        """Queue events for storing; the future gives their outcomes once they are committed.
        `checkpoint` (name, value) is stored in the same transaction as the events: a pull that
        resumes from it after a crash has lost nothing it counted as stored (node/misp_sync.py).

        `more=True` says the caller will submit again soon (an import in progress): the writer
        may then keep the transaction open for the next submission instead of committing, so the
        future resolves with a later commit. The caller's last submission must leave it False."""
        future: Future[list[WriteOutcome]] = Future()
        self._queue.put(_Job(events, future, more, checkpoint=checkpoint))
        return future

    def close(self) -> None:
        """Finish everything queued, then stop."""
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        batch: EventBatch | None = None
        jobs: list[_Job] = []
        while True:
            job = self._queue.get()
            if job is None:
                break
            try:
                if batch is None:
                    batch = self.store.begin_events()
                job.outcomes = batch.write(job.events, job.checkpoint)
                job.events = []  # written into the transaction: no need to hold them till the commit
            except BaseException as e:  # the transaction is aborted: nothing of it is stored
                if batch is not None:
                    batch.abort()
                self._fail(jobs + [job], e)
                batch, jobs = None, []
                continue
            jobs.append(job)
            # Commit when the transaction is big enough, or when nothing more is coming: no
            # submission waiting and the last one not announcing another.
            if batch.elements >= MAX_ELEMENTS_PER_TXN or (not job.more and self._queue.empty()):
                self._commit(batch, jobs)
                batch, jobs = None, []
        if batch is not None:
            self._commit(batch, jobs)

    def _commit(self, batch: EventBatch, jobs: list[_Job]) -> None:
        try:
            batch.commit()
        except BaseException as e:
            self._fail(jobs, e)
            return
        for job in jobs:
            assert job.outcomes is not None
            job.future.set_result(job.outcomes)
        if self.on_commit is not None and any(o is WriteOutcome.STORED for job in jobs for o in job.outcomes or ()):
            self.on_commit()

    @staticmethod
    def _fail(jobs: list[_Job], error: BaseException) -> None:
        for job in jobs:
            job.future.set_exception(error)
