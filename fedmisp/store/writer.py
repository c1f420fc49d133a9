"""The single writer: one thread owns LMDB writes and groups queued work into few transactions.

LMDB allows one write transaction at a time and a commit costs an fsync, so many small commits are
the slow path. Callers (the importer, later the API and replication) submit batches and get a
future; the writer drains whatever is queued into one transaction, off the event loop, while readers
keep reading the last committed state.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

from fedmisp.model.revision import SignedEvent
from fedmisp.store.store import EventWrite, Store, WriteOutcome

# Group at most this many elements in one transaction: big enough that the commit's fsync is
# amortised, small enough that a transaction's dirty pages stay a few hundred MB at most.
MAX_ELEMENTS_PER_TXN = 50_000
# Submissions waiting in the queue; a producer faster than the disk blocks here, which keeps the
# importer's memory flat however many events it reads.
MAX_QUEUED = 3


@dataclass(slots=True)
class _Job:
    events: list[EventWrite | SignedEvent]
    future: "Future[list[WriteOutcome]]"


class Writer:
    def __init__(self, store: Store, on_commit: "Callable[[], None] | None" = None):
        self.store = store
        self.on_commit = on_commit  # called from the writer thread after each successful commit
        self._queue: "queue.Queue[_Job | None]" = queue.Queue(maxsize=MAX_QUEUED)
        self._thread = threading.Thread(target=self._run, name="fedmisp-writer", daemon=True)
        self._thread.start()

    def submit(self, events: list[EventWrite | SignedEvent]) -> "Future[list[WriteOutcome]]":
        future: Future[list[WriteOutcome]] = Future()
        self._queue.put(_Job(events, future))
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
        stop = False
        while not stop:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            size = sum(_size(e) for e in job.events)
            while size < MAX_ELEMENTS_PER_TXN:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
                size += sum(_size(e) for e in more.events)
            self._commit(jobs)

    def _commit(self, jobs: list[_Job]) -> None:
        events = [e for job in jobs for e in job.events]
        try:
            outcomes = self.store.write_events(events)
        except BaseException as e:  # the transaction was aborted: nothing of it is stored
            for job in jobs:
                job.future.set_exception(e)
            return
        i = 0
        for job in jobs:
            job.future.set_result(outcomes[i:i + len(job.events)])
            i += len(job.events)
        if self.on_commit is not None and any(o is WriteOutcome.STORED for o in outcomes):
            self.on_commit()


def _size(event: EventWrite | SignedEvent) -> int:
    return event.element_count if isinstance(event, EventWrite) else len(event.elements)
