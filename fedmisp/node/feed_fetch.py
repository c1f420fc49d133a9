"""Fetching MISP feeds ([[feed]] in fedmisp.toml): on a schedule in `fedmisp run`, or now with
`fedmisp feed fetch`.

Like MISP's "fetch feed": read manifest.json, download only the events whose manifest timestamp
differs from the one seen at the last fetch, and import each as `fedmisp import` would (validated,
a bad element dropped and reported unless the feed is `strict`, decision 0028; signed by this node,
decision 0001), as full data or for correlation only. Every download
has a size limit; an event that fails to download is tried again next time, one that is refused
(invalid) only once its timestamp changes.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp

from fedmisp.node.feed_config import FeedSource
from fedmisp.node.importer import FileResult, ImportFileError, ImportReport, Preparer, parse_document
from fedmisp.model.misp import unwrap_events
from fedmisp.policy.filters import event_check
from fedmisp.policy.model import event_view
from fedmisp.store.events import WriteOutcome
from fedmisp.store.rows import EventWrite

log = logging.getLogger("fedmisp.feeds")

STATE_DIR = "feeds"  # <home>/feeds/<name>.json: event uuid -> manifest timestamp last fetched
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
HTTP_TIMEOUT_SECONDS = 300  # one download, however large (within its size limit)
SAVE_STATE_EVERY = 100  # events: a fetch interrupted half-way resumes near where it stopped

Submit = Callable[[list[EventWrite]], Awaitable[list[WriteOutcome]]]
RunBlocking = Callable[..., Awaitable[Any]]


class FeedError(Exception):
    """The feed as a whole could not be read (its manifest); nothing was changed."""


@dataclass
class FetchReport(ImportReport):
    feed: str = ""
    listed: int = 0  # events in the manifest
    skipped: int = 0  # manifest timestamp unchanged since the last fetch: not downloaded
    filtered: int = 0  # valid events the feed's filter did not take
    failed: list[str] = field(default_factory=list)  # downloads that failed: tried again next time

    def summary(self) -> str:
        return (f"feed {self.feed}: {self.listed} listed, {self.skipped} unchanged since the last fetch, "
                f"{self.files} fetched: {self.events_stored} event(s) stored ({self.attributes_stored} attributes), "
                f"{self.events_unchanged} unchanged, {self.events_older} older than held, "
                f"{self.filtered} filtered out, {self.events_refused} refused, {len(self.failed)} failed to download, "
                f"{self.elements_dropped} element(s) dropped")


async def read_limited(feed: FeedSource, name: str, limit: int, http: aiohttp.ClientSession | None,
                       run_blocking: RunBlocking) -> bytes:
    """One file of the feed (manifest.json, {uuid}.json), refused beyond `limit` bytes."""
    if feed.path is not None:
        return await run_blocking(_read_file, feed.path / name, limit)
    assert http is not None
    url = f"{feed.url}/{name}"
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS)
    async with http.get(url, headers=dict(feed.headers), timeout=timeout, allow_redirects=True) as response:
        if response.status != 200:
            raise OSError(f"{url}: HTTP {response.status} {response.reason}")
        if response.content_length is not None and response.content_length > limit:
            raise OSError(f"{url}: {response.content_length} bytes; the limit is {limit} ({_limit_name(name)})")
        body = bytearray()
        async for chunk in response.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > limit:
                raise OSError(f"{url}: more than {limit} bytes ({_limit_name(name)})")
        return bytes(body)


def _limit_name(name: str) -> str:
    return "feed.max_manifest_bytes" if name == "manifest.json" else "feed.max_event_bytes"


def _read_file(path: Path, limit: int) -> bytes:
    size = path.stat().st_size
    if size > limit:
        raise OSError(f"{path}: {size} bytes; the limit is {limit} ({_limit_name(path.name)})")
    return path.read_bytes()


def parse_manifest(raw: bytes, where: str) -> dict[str, int]:
    """Event uuid -> manifest timestamp; anything else is refused whole, naming the entry."""
    try:
        document = parse_document(raw, where)
    except ImportFileError as e:
        raise FeedError(str(e)) from None
    if not isinstance(document, dict):
        raise FeedError(f"{where}: expected a map of event uuid -> event summary (MISP's manifest.json)")
    out: dict[str, int] = {}
    for event_uuid, entry in document.items():
        if not _UUID.match(event_uuid):
            raise FeedError(f"{where}: key {event_uuid[:60]!r} is not an event uuid")
        stamp = entry.get("timestamp") if isinstance(entry, dict) else None
        try:
            out[event_uuid.lower()] = int(stamp)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise FeedError(f"{where}: {event_uuid}.timestamp: {stamp!r}; expected a Unix timestamp") from None
    return out


def state_path(home: Path, feed: FeedSource) -> Path:
    return home / STATE_DIR / f"{feed.name}.json"


def _load_state(path: Path, feed: FeedSource) -> dict[str, int]:
    try:
        state = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    # a feed pointed somewhere else (or switched mode) starts afresh
    if not isinstance(state, dict) or state.get("location") != feed.location \
            or state.get("correlation_only") != feed.correlation_only:
        return {}
    seen = state.get("seen")
    return seen if isinstance(seen, dict) else {}


def _save_state(path: Path, feed: FeedSource, seen: dict[str, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"location": feed.location, "correlation_only": feed.correlation_only,
                               "fetched": int(time.time()), "seen": seen}), "utf-8")
    os.replace(tmp, path)


async def fetch_feed(node: Any, feed: FeedSource, submit: Submit, run_blocking: RunBlocking,
                     http: aiohttp.ClientSession | None) -> FetchReport:
    """Fetch what changed in `feed` and store it through `submit` (the node's single writer)."""
    report = FetchReport(feed=feed.name)
    try:
        raw = await read_limited(feed, "manifest.json", feed.max_manifest_bytes, http, run_blocking)
    except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as e:
        raise FeedError(f"feed {feed.name}: cannot read its manifest: {e or type(e).__name__}") from None
    manifest = await run_blocking(parse_manifest, raw, f"feed {feed.name} ({feed.location}/manifest.json)")
    report.listed = len(manifest)
    path = state_path(node.config.home, feed)
    seen = await run_blocking(_load_state, path, feed)
    preparer = Preparer(node.identity, node.store, node.import_defaults(), feed.max_event_bytes,
                        source=feed.name if feed.correlation_only else "", correlation_only=feed.correlation_only,
                        accept=lambda parsed: event_check(feed.filter, event_view(parsed.header, [])),
                        strict=feed.strict)
    done = 0
    for event_uuid, stamp in manifest.items():
        if seen.get(event_uuid) == stamp:
            report.skipped += 1
            continue
        name = f"{event_uuid}.json"
        try:
            body = await read_limited(feed, name, feed.max_event_bytes, http, run_blocking)
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as e:
            report.failed.append(f"{feed.location}/{name}: {e or type(e).__name__}")
            continue
        result = await run_blocking(_prepare, preparer, body, f"{feed.location}/{name}", event_uuid)
        report.files += 1
        report.filtered += result.filtered
        report.refused.extend(result.refused)
        report.events_unchanged += result.unchanged
        report.events_older += result.older
        if result.events:
            for event, dropped, outcome in zip(result.events, result.dropped, await submit(result.events)):
                report.count(event.uuid, event.attribute_count, outcome, dropped)
        seen[event_uuid] = stamp
        done += 1
        if done % SAVE_STATE_EVERY == 0:
            await run_blocking(_save_state, path, feed, seen)
    await run_blocking(_save_state, path, feed, seen)
    return report


def _prepare(preparer: Preparer, body: bytes, label: str, event_uuid: str) -> FileResult:
    try:
        document = parse_document(body, label)
    except ImportFileError as e:
        return FileResult(refused=[str(e)])
    events = unwrap_events(document)
    # the file the manifest lists under a uuid holds that event and no other
    if len(events) != 1 or not isinstance(events[0], dict) or str(events[0].get("uuid", "")).lower() != event_uuid:
        return FileResult(refused=[f"{label}: expected the one event {event_uuid} the manifest lists it for"])
    return preparer.prepare_document(document, label)


def reschedule_jobs(scheduler: Any, prefix: str, intervals: dict[str, float], run: Callable[[str], Any]) -> None:
    """One APScheduler job `prefix + name` per name, every `intervals[name]` seconds and first now,
    one run at a time; the jobs of names no longer wanted (or of a changed interval) are removed
    (feeds here, MISP peers in node/misp_sync.py)."""
    from datetime import datetime
    for job in scheduler.get_jobs():
        if not job.id.startswith(prefix):
            continue
        interval = intervals.get(job.id[len(prefix):])
        if interval is None or job.trigger.interval.total_seconds() != interval:
            job.remove()
    for name, interval in intervals.items():
        if scheduler.get_job(prefix + name) is None:
            scheduler.add_job(run, "interval", args=[name], seconds=interval, max_instances=1, coalesce=True,
                              id=prefix + name, next_run_time=datetime.now())


class FeedFetcher:
    """In `fedmisp run`: one APScheduler job per [[feed]], every `interval_seconds` (first at start);
    one fetch at a time, so two feeds never race to store the same event."""

    def __init__(self, node: Any, submit: Submit, run_blocking: RunBlocking):
        self.node = node
        self.submit = submit
        self.run_blocking = run_blocking
        self.last: dict[str, dict[str, Any]] = {}  # feed name -> last fetch's outcome (status pages)
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None
        self._scheduler: Any = None

    async def start(self) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        self._http = aiohttp.ClientSession()
        self._scheduler = AsyncIOScheduler()
        self._scheduler.start()
        self.reschedule()

    def reschedule(self) -> None:
        """Jobs as the configuration says now (at start and after a reload)."""
        if self._scheduler is not None:
            reschedule_jobs(self._scheduler, "feed-", {f.name: f.interval_seconds for f in self.node.config.feeds},
                            self.fetch)

    def status_json(self) -> dict[str, Any]:
        """Each configured feed and what its last fetch did (GET /node/v1/feeds)."""
        return {f.name: {"location": f.location, "mode": "correlation-only" if f.correlation_only else "full",
                         "interval_seconds": f.interval_seconds, "last_fetch": self.last.get(f.name)}
                for f in self.node.config.feeds}

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._http is not None:
            await self._http.close()

    async def fetch(self, name: str) -> FetchReport | None:
        feed = next((f for f in self.node.config.feeds if f.name == name), None)
        if feed is None:
            return None
        async with self._lock:
            try:
                report = await fetch_feed(self.node, feed, self.submit, self.run_blocking, self._http)
            except FeedError as e:
                log.warning("%s", e)
                self.last[name] = {"time": time.time(), "error": str(e)}
                return None
            except Exception as e:  # noqa: BLE001 - one feed's failure never stops the node or other feeds
                log.exception("feed %s: fetch failed", name)
                self.last[name] = {"time": time.time(), "error": f"{type(e).__name__}: {e}"}
                return None
        for refusal in report.refused[:20]:
            log.warning("feed %s: refused: %s", name, refusal)
        for line in report.dropped_lines():
            log.warning("feed %s: %s", name, line)
        log.info("%s", report.summary())
        self.last[name] = {"time": time.time(), "summary": report.summary()}
        return report
