"""Importing MISP JSON files, folders and MISP feeds into a node's store.

Each event is validated whole before anything is written (a refused event leaves nothing behind),
signed as a revision by this node, and handed to the single writer, which groups many events per
transaction. A refusal is reported with the file, event, element and field, and the import goes on.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from fedmisp.model.misp import EventError, parse_event, unwrap_events
from fedmisp.model.revision import SignedEvent, sign_event
from fedmisp.node.home import Node
from fedmisp.store.store import WriteOutcome
from fedmisp.store.writer import Writer

# Hand events to the writer in groups of about this many elements: one future per group rather
# than per event, and each group small enough to keep memory flat.
_BATCH_ELEMENTS = 10_000
_BATCH_EVENTS = 100


@dataclass
class ImportReport:
    files: int = 0
    events_stored: int = 0
    events_unchanged: int = 0
    events_older: int = 0
    attributes_stored: int = 0
    refused: list[str] = field(default_factory=list)

    @property
    def events_refused(self) -> int:
        return len(self.refused)

    def summary(self) -> str:
        return (f"{self.files} file(s): {self.events_stored} event(s) stored "
                f"({self.attributes_stored} attributes), {self.events_unchanged} unchanged, "
                f"{self.events_older} older than held, {self.events_refused} refused")


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
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ImportFileError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ImportFileError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ImportFileError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def import_paths(node: Node, paths: list[Path],
                 progress: Callable[[int, int], None] | None = None) -> ImportReport:
    report = ImportReport()
    files = list(expand_paths(paths))
    defaults = node.import_defaults()
    batch: list[SignedEvent] = []
    batch_elements = 0
    pending: list = []

    def settle(wait_all: bool) -> None:
        while pending and (wait_all or pending[0][0].done()):
            future, events = pending.pop(0)
            for event, outcome in zip(events, future.result()):
                if outcome is WriteOutcome.STORED:
                    report.events_stored += 1
                    report.attributes_stored += event.attribute_count
                elif outcome is WriteOutcome.UNCHANGED:
                    report.events_unchanged += 1
                else:
                    report.events_older += 1

    with Writer(node.store) as writer:
        for i, path in enumerate(files):
            report.files += 1
            try:
                document = _read_document(path, node.config.max_import_file_bytes)
            except ImportFileError as e:
                report.refused.append(str(e))
                continue
            for index, raw in enumerate(unwrap_events(document)):
                try:
                    parsed = parse_event(raw, defaults)
                except EventError as e:
                    name = e.event if isinstance(raw, dict) and raw.get("uuid") else f"#{index}"
                    info = raw.get("info") if isinstance(raw, dict) else None
                    label = f"{name}" + (f" ({info!r})" if isinstance(info, str) and info else "")
                    report.refused.append(f"{path}: event {label}: " + "; ".join(map(str, e.problems)))
                    continue
                held = node.store.held(parsed.uuid)
                if held is not None and held.timestamp >= parsed.timestamp:
                    # Same or older timestamp than held: MISP only applies newer edits.
                    if held.timestamp == parsed.timestamp:
                        report.events_unchanged += 1
                    else:
                        report.events_older += 1
                    continue
                previous = node.store.previous_elements(parsed.uuid) if held is not None else None
                signed = sign_event(node.identity, parsed, previous.get if previous else None)
                batch.append(signed)
                batch_elements += len(signed.elements)
                if batch_elements >= _BATCH_ELEMENTS or len(batch) >= _BATCH_EVENTS:
                    pending.append((writer.submit(batch), batch))
                    batch, batch_elements = [], 0
                    settle(wait_all=False)
            if progress is not None:
                progress(i + 1, len(files))
        if batch:
            pending.append((writer.submit(batch), batch))
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
