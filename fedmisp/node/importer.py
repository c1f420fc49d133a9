"""Importing MISP JSON files, folders and MISP feeds into a node's store.

Each event is validated before anything is written, signed as a revision by this node, and handed
to the single writer, which groups many events per transaction. As MISP adds an event, an
attribute, object, object reference or tag that does not validate is dropped and the rest is kept
(each dropped element reported with the file, event, element and field; decision 0028); an event
whose own fields are bad is refused, and `strict` refuses an event for any problem. A refused
event leaves nothing behind, and the import goes on.
"""
from __future__ import annotations

import gc
import json
import multiprocessing
import os
import sys
import uuid as _uuid
from collections import deque
from contextlib import contextmanager
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from fedmisp.model.identity import Identity
from fedmisp.model.misp import EventError, ImportDefaults, ParsedEvent, parse_event, unwrap_events
from fedmisp.model.revision import sign_event
from fedmisp.node.config import load_config
from fedmisp.node.home import Node
from fedmisp.policy.reasons import Reason
from fedmisp.store.events import WriteOutcome
from fedmisp.store.rows import EventWrite, event_write, pack_writes, unpack_writes
from fedmisp.store.store import Store
from fedmisp.store.writer import Writer

def uuid_text(raw: bytes) -> str:
    return str(_uuid.UUID(bytes=raw))


# Hand events to the writer in groups of about this many elements: one future per group rather
# than per event, and each group small enough to keep memory flat.
_BATCH_ELEMENTS = 10_000
_BATCH_EVENTS = 100
# Dropped elements the CLI prints one by one; the rest it counts.
SHOWN_DROPPED = 20
# Dropped elements a report keeps the lines of (a file of bad data must not fill the memory).
KEPT_DROPPED = 1_000


@dataclass
class ImportReport:
    files: int = 0
    events_stored: int = 0
    events_unchanged: int = 0
    events_older: int = 0
    attributes_stored: int = 0
    refused: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # elements left out of the events stored (the first ones)
    elements_dropped: int = 0

    def count(self, event_uuid: bytes, attributes: int, outcome: WriteOutcome | Reason,
              dropped: tuple[str, ...] = ()) -> None:
        """What the writer did with one event (its uuid, 16 bytes, its attribute count and the
        elements its file had that were dropped from it)."""
        if outcome is WriteOutcome.STORED:
            self.events_stored += 1
            self.attributes_stored += attributes
            self.elements_dropped += len(dropped)
            self.dropped.extend(dropped[:KEPT_DROPPED - len(self.dropped)])
        elif outcome is WriteOutcome.UNCHANGED:
            self.events_unchanged += 1
        elif outcome is Reason.UUID_CONFLICT:
            self.refused.append(f"event {uuid_text(event_uuid)}: an attribute or object uuid is "
                                "already used by another event; element uuids must be unique")
        elif outcome is Reason.NOT_AUTHOR:
            self.refused.append(f"event {uuid_text(event_uuid)}: this node holds it as signed by another "
                                "organisation's key (received from a peer); only its author can revise it")
        elif outcome is Reason.NOT_BRIDGE:
            self.refused.append(f"event {uuid_text(event_uuid)}: this node holds it from another source than "
                                "this one, and an event that came from a MISP peer is revised only by that peer "
                                "(decision 0032)")
        else:
            self.events_older += 1

    @property
    def events_refused(self) -> int:
        return len(self.refused)

    def summary(self) -> str:
        return (f"{self.files} file(s): {self.events_stored} event(s) stored "
                f"({self.attributes_stored} attributes), {self.events_unchanged} unchanged, "
                f"{self.events_older} older than held, {self.events_refused} refused, "
                f"{self.elements_dropped} element(s) dropped")

    def dropped_lines(self, limit: int = SHOWN_DROPPED) -> list[str]:
        """The first `limit` dropped elements, then how many more (what the CLI prints)."""
        lines = [f"dropped: {line}" for line in self.dropped[:limit]]
        if self.elements_dropped > limit:
            lines.append(f"dropped: ... and {self.elements_dropped - limit} more element(s)")
        return lines


def expand_paths(paths: list[Path]) -> Iterator[Path]:
    """MISP JSON files; folders recursively; a folder with manifest.json is a MISP feed."""
    for path in paths:
        if path.is_dir():
            manifest = path / "manifest.json"
            if manifest.is_file():
                yield from _feed_files(path, manifest)
            else:
                for child in sorted(path.rglob("*.json")):
                    if child.name != "manifest.json":
                        yield child
        else:
            yield path


def _feed_files(folder: Path, manifest: Path) -> Iterator[Path]:
    try:
        entries = json.loads(manifest.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise ImportFileError(f"{manifest}: not a MISP feed manifest ({e})") from None
    if not isinstance(entries, dict):
        raise ImportFileError(f"{manifest}: expected a map of event uuid -> event summary")
    for event_uuid in entries:
        yield folder / f"{event_uuid}.json"


class ImportFileError(Exception):
    pass


def _read_document(path: Path, max_bytes: int) -> object:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise ImportFileError(f"{path}: cannot read ({e.strerror})") from None
    if size > max_bytes:
        raise ImportFileError(f"{path}: {size} bytes; files up to {max_bytes} bytes are accepted "
                              "(limits.max_import_file_bytes); split it or import it as a feed folder")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ImportFileError(f"{path}: cannot read ({e.strerror})") from None
    return parse_document(raw, str(path))


def parse_document(raw: bytes, label: str) -> object:
    """UTF-8 JSON (a BOM allowed), with an error naming `label` and where the text went wrong."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ImportFileError(f"{label}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ImportFileError(f"{label}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise ImportFileError(f"{label}: JSON nested too deeply") from None


@dataclass
class FileResult:
    """What one file gives: events ready for the writer, and what was refused or skipped."""
    events: list[EventWrite] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unchanged: int = 0
    older: int = 0
    filtered: int = 0  # valid, but not taken (a feed's filter)
    dropped: list[tuple[str, ...]] = field(default_factory=list)  # per event of `events`: its dropped elements


class Preparer:
    """Reads, validates and signs the events of one file: everything but the write.

    Runs in the importing process for small imports and in worker processes for large ones (each
    with its own read-only view of the store), so parsing and signing use every core while the
    single writer commits.
    """

    def __init__(self, identity: Identity, store: Store, defaults: ImportDefaults, max_bytes: int,
                 source: str = "", correlation_only: bool = False,
                 accept: Callable[[ParsedEvent], str | None] | None = None, strict: bool = False):
        self.identity = identity
        self.store = store
        self.defaults = defaults
        self.max_bytes = max_bytes
        self.source = source
        self.correlation_only = correlation_only
        self.accept = accept  # a filter: the reason an event is not taken, or None (a feed's filter)
        self.strict = strict  # refuse an event for any bad element instead of dropping the element

    def prepare(self, path: Path) -> FileResult:
        try:
            document = _read_document(path, self.max_bytes)
        except ImportFileError as e:
            return FileResult(refused=[str(e)])
        return self.prepare_document(document, str(path))

    def prepare_document(self, document: object, label: str) -> FileResult:
        """The events of one parsed MISP JSON document; `label` names it in refusals (a file, a URL)."""
        result = FileResult()
        path = label
        for index, raw in enumerate(unwrap_events(document)):
            try:
                parsed = parse_event(raw, self.defaults, lenient=not self.strict)
            except EventError as e:
                name = e.event if isinstance(raw, dict) and raw.get("uuid") else f"#{index}"
                info = raw.get("info") if isinstance(raw, dict) else None
                label = name + (f" ({info!r})" if isinstance(info, str) and info else "")
                result.refused.append(f"{path}: event {label}: " + "; ".join(map(str, e.problems)))
                continue
            if self.accept is not None and self.accept(parsed) is not None:
                result.filtered += 1
                continue
            take_if_newer(self.identity, self.store, parsed, result, f"{path}: event {parsed.uuid}", self.source,
                          self.correlation_only)
        return result


def take_if_newer(identity: Identity, store: Store, parsed: ParsedEvent, result: FileResult, where: str,
                  source: str, correlation_only: bool = False) -> None:
    """Sign `parsed` as a revision for the writer into `result`, unless the event held here has the
    same or a newer timestamp (MISP only applies newer edits): then it is counted unchanged or older."""
    held = store.held(parsed.uuid)
    if held is not None and held.timestamp >= parsed.timestamp:
        if held.timestamp == parsed.timestamp:
            result.unchanged += 1
        else:
            result.older += 1
        return
    previous = store.previous_elements(parsed.uuid) if held is not None else None
    signed = sign_event(identity, parsed, previous.get if previous else None)
    result.events.append(event_write(signed, source, correlation_only))
    result.dropped.append(tuple(f"{where}: {d}" for d in parsed.dropped))


_WORKER: Preparer | None = None


def _init_worker(home: str, source: str, correlation_only: bool, strict: bool) -> None:
    global _WORKER
    config = load_config(Path(home))
    store = Store(config.store_path, map_size=config.map_size, readonly=True)
    defaults = ImportDefaults(org_uuid=config.org_uuid, org_name=config.org_name,
                              distribution=config.default_distribution, templates=store.published_templates())
    _WORKER = Preparer(Identity.load(config.key_path), store, defaults, config.max_import_file_bytes,
                       source, correlation_only, strict=strict)
    # Python's cyclic garbage collector walks every tracked object it holds, over and over, while a
    # file's hundred thousands of dicts and strings are built: a tenth of a worker's time. Nothing
    # in preparing a file makes reference cycles (refcounting frees it all), so a worker runs with
    # the collector off and sweeps the young objects once per file instead (docs/decisions/0004).
    gc.freeze()
    gc.disable()


def _prepare_in_worker(path: Path) -> tuple[bytes, list[str], int, int, list[tuple[str, ...]]]:
    assert _WORKER is not None
    result = _WORKER.prepare(path)
    out = pack_writes(result.events), result.refused, result.unchanged, result.older, result.dropped
    del result
    gc.collect(0)  # whatever cycle the file left (none expected): what survived it is little
    return out


# Below this much input, starting worker processes costs more than it saves.
_POOL_MIN_BYTES = 16 * 1024 * 1024


def _default_workers(files: list[Path]) -> int:
    total = 0
    for f in files:
        try:
            total += f.stat().st_size
        except OSError:
            pass
    return 0 if total < _POOL_MIN_BYTES else min(os.cpu_count() or 1, 4)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for an import. Its passes, triggered by the millions of row
    tuples allocated, walked every tracked object in flight (and everything the process held
    before) again and again; the import makes no reference cycles, refcounting frees it all.
    Switched back on when the import ends (nothing frozen or unfrozen: a node process keeps its
    own frozen start-up objects, fedmisp/runtime.py)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def import_paths(node: Node, paths: list[Path], progress: Callable[[int, int], None] | None = None,
                 workers: int | None = None, *, source: str = "", correlation_only: bool = False,
                 strict: bool = False) -> ImportReport:
    """Import files, folders and feeds; `workers` processes parse and sign (0: in this process).

    `correlation_only` events (a feed used for matching) are correlated against but never shown
    or relayed; `source` names where they came from in correlation results. `strict` refuses an
    event with any bad element, instead of storing it without the element."""
    report = ImportReport()
    files = list(expand_paths(paths))
    workers = _default_workers(files) if workers is None else workers
    batch: list[EventWrite] = []
    batch_dropped: list[tuple[str, ...]] = []
    batch_elements = 0
    # (future, [(event uuid, attribute count, dropped elements)]): only what the report needs
    # waits for the commit, not the events' bodies and rows
    pending: deque[tuple[Future[list[WriteOutcome]], list[tuple[bytes, int, tuple[str, ...]]]]] = deque()

    def submit(more: bool) -> None:
        pending.append((writer.submit(batch, more=more),
                        [(e.uuid, e.attribute_count, d) for e, d in zip(batch, batch_dropped)]))

    def settle(wait_all: bool) -> None:
        while pending and (wait_all or pending[0][0].done()):
            future, events = pending.popleft()
            for (event_uuid, attributes, dropped), outcome in zip(events, future.result()):
                report.count(event_uuid, attributes, outcome, dropped)

    def take(result: FileResult) -> None:
        nonlocal batch, batch_dropped, batch_elements
        report.files += 1
        report.refused.extend(result.refused)
        report.events_unchanged += result.unchanged
        report.events_older += result.older
        for event, dropped in zip(result.events, result.dropped):
            batch.append(event)
            batch_dropped.append(dropped)
            batch_elements += event.element_count
            if batch_elements >= _BATCH_ELEMENTS or len(batch) >= _BATCH_EVENTS:
                submit(more=True)  # the writer may keep one transaction open over many batches
                batch, batch_dropped, batch_elements = [], [], 0
                settle(wait_all=False)
        if progress is not None:
            progress(report.files, len(files))

    with _collector_paused(), Writer(node.store) as writer:
        if workers <= 0:
            preparer = Preparer(node.identity, node.store, node.import_defaults(),
                                node.config.max_import_file_bytes, source, correlation_only, strict=strict)
            for path in files:
                take(preparer.prepare(path))
        else:
            # spawn, not fork: a forked child would inherit this process's open LMDB environment.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                     initargs=(str(node.config.home), source, correlation_only, strict)) as pool:
                window: deque[Future[tuple[bytes, list[str], int, int, list[tuple[str, ...]]]]] = deque()

                def take_next() -> None:
                    blob, refused, unchanged, older, dropped = window.popleft().result()
                    take(FileResult(unpack_writes(blob), refused, unchanged, older, dropped=dropped))
                for path in files:
                    window.append(pool.submit(_prepare_in_worker, path))
                    # A bounded window keeps memory flat: at most this many files' events in flight.
                    if len(window) >= 4 * workers:
                        take_next()
                while window:
                    take_next()
        submit(more=False)  # the last one, even empty: commit now
        settle(wait_all=True)
    return report


def print_progress_factory(total_hint: int) -> Callable[[int, int], None] | None:
    """A plain progress line on a terminal for long imports (nothing when output is piped)."""
    if not sys.stderr.isatty() or total_hint < 20:
        return None

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        sys.stderr.write(f"\rimporting [{'#' * filled}{'.' * (width - filled)}] {done}/{total} files")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show
