"""MISP feeds in fedmisp.toml: feeds this node serves ([[served_feed]]) and feeds it consumes ([[feed]]).

A served feed is a publication read by anyone who has its address (and, unless it is open, an API
key): the policy treats it as a peer that pulls, with no organisation (so no sharing-group data) and
with the same filter settings as a peer's push filter. A consumed feed is a folder or an http(s)
URL holding MISP's feed layout, fetched on a schedule as full data or for correlation only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmisp.policy.config import parse_filter
from fedmisp.policy.model import PeerMode, PeerPolicy, SyncFilter

FEED_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
ACCESS = ("apikey", "open")
FEED_MODES = ("full", "correlation-only")
DEFAULT_FETCH_SECONDS = 3600  # MISP's feed fetching is usually scheduled hourly or daily
MIN_FETCH_SECONDS = 10
MAX_FETCH_SECONDS = 7 * 86400
# manifest.json lists every event of a feed (~300 bytes each): 64 MiB is about 200k events.
DEFAULT_MAX_MANIFEST_BYTES = 64 * 1024 * 1024
# One event file; the same order as limits.max_import_file_bytes' default.
DEFAULT_MAX_EVENT_BYTES = 256 * 1024 * 1024
MAX_BYTES_CEILING = 4 * 1024 * 1024 * 1024

_SERVED_FIELDS = ("name", "access", "filter")
_FEED_FIELDS = ("name", "url", "path", "interval_seconds", "mode", "max_manifest_bytes", "max_event_bytes",
                "headers", "filter", "strict")
# A fetched feed is filtered by event (as MISP's feed rules: tags and orgs); the element settings of
# a peer filter (types, templates, to_ids, distribution) are not applied to feeds.
FEED_FILTER_FIELDS = ("tags_include", "tags_exclude", "orgs_include", "orgs_exclude", "tlp_ceiling", "pap_ceiling",
                      "not_before")


@dataclass(frozen=True)
class ServedFeed:
    name: str
    open: bool  # readable without an API key
    filter: SyncFilter

    @property
    def policy(self) -> PeerPolicy:
        """The feed as a peer that pulls: no org (in no sharing group), never the source of anything."""
        return PeerPolicy(name=f"feed:{self.name}", org_uuid="", mode=PeerMode.PUSH_ONLY, push=self.filter)


@dataclass(frozen=True)
class FeedSource:
    name: str
    url: str  # http(s)://... or "" when `path` is set
    path: Path | None
    interval_seconds: float = DEFAULT_FETCH_SECONDS
    correlation_only: bool = False
    max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    headers: tuple[tuple[str, str], ...] = ()  # e.g. Authorization for a feed behind an API key
    filter: SyncFilter = SyncFilter()  # events it refuses are not taken (event settings only)
    strict: bool = False  # refuse an event with a bad element instead of taking it without (decision 0028)

    @property
    def location(self) -> str:
        return self.url or str(self.path)


def named_tables(raw: Any, section: str, known: tuple[str, ...],
                 problems: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """The `[[section]]` tables of fedmisp.toml as (label, name, table): each needs a unique name
    (1-64 letters, digits, '.', '_', '-'; a bad one is reported and replaced by `section<i>`),
    and a setting not in `known` is reported. Shared by [[peer]], [[served_feed]] and [[feed]]."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        problems.append(f"{section}: expected [[{section}]] tables")
        return []
    out = []
    names: set[str] = set()
    for i, table in enumerate(raw):
        label = f"{section}[{i}]"
        if not isinstance(table, dict):
            problems.append(f"{label}: expected a table")
            continue
        name = table.get("name")
        if isinstance(name, str) and FEED_NAME.match(name):
            label = f"{section} {name!r}"
            if name in names:
                problems.append(f"{label}.name: used by another {section}; names must be unique")
            names.add(name)
        else:
            problems.append(f"{label}.name: {name!r}; expected 1-64 letters, digits, '.', '_' or '-'")
            name = f"{section}{i}"
        for key in table:
            if key not in known:
                problems.append(f"{label}.{key}: unknown setting; accepted: {', '.join(known)}")
        out.append((label, name, table))
    return out


def _int_setting(table: dict[str, Any], key: str, label: str, default: int, lo: int, hi: int,
                 problems: list[str]) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        problems.append(f"{label}.{key}: {value!r}; expected an integer from {lo} to {hi}")
        return default
    return value


def parse_served_feeds(raw: Any, problems: list[str]) -> tuple[ServedFeed, ...]:
    feeds = []
    for label, name, table in named_tables(raw, "served_feed", _SERVED_FIELDS, problems):
        access = table.get("access", "apikey")
        if access not in ACCESS:
            problems.append(f"{label}.access: {access!r}; accepted: {', '.join(ACCESS)}")
        # A feed is a publication: the same defaults as a push filter (tlp:red stays home).
        f = parse_filter(table.get("filter"), f"{label}.filter", problems, push=True)
        feeds.append(ServedFeed(name, access == "open", f))
    return tuple(feeds)


def parse_feeds(raw: Any, home: Path, problems: list[str]) -> tuple[FeedSource, ...]:
    feeds = []
    for label, name, table in named_tables(raw, "feed", _FEED_FIELDS, problems):
        url, path = table.get("url"), table.get("path")
        url, path = (None if v == "" else v for v in (url, path))  # an empty one is not given
        folder: Path | None = None
        if (url is None) == (path is None):
            problems.append(f"{label}: give exactly one of url (http:// or https://) or path (a feed folder)")
            url = ""
        elif url is not None:
            if not isinstance(url, str) or not re.match(r"https?://[^/\s]+", url):
                problems.append(f"{label}.url: {url!r}; expected http://HOST/... or https://HOST/...")
            url = url.rstrip("/") if isinstance(url, str) else ""
        else:
            url = ""
            if not isinstance(path, str) or not path.strip():
                problems.append(f"{label}.path: {path!r}; expected a folder holding manifest.json")
            else:
                folder = Path(path).expanduser()
                folder = folder if folder.is_absolute() else home / folder
        interval = table.get("interval_seconds", DEFAULT_FETCH_SECONDS)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
                or not MIN_FETCH_SECONDS <= interval <= MAX_FETCH_SECONDS:
            problems.append(f"{label}.interval_seconds: {interval!r}; expected seconds from "
                            f"{MIN_FETCH_SECONDS} to {MAX_FETCH_SECONDS}")
            interval = DEFAULT_FETCH_SECONDS
        mode = table.get("mode", "full")
        if mode not in FEED_MODES:
            problems.append(f"{label}.mode: {mode!r}; accepted: {', '.join(FEED_MODES)}")
        manifest_max = _int_setting(table, "max_manifest_bytes", label, DEFAULT_MAX_MANIFEST_BYTES, 1024,
                                    MAX_BYTES_CEILING, problems)
        event_max = _int_setting(table, "max_event_bytes", label, DEFAULT_MAX_EVENT_BYTES, 1024,
                                 MAX_BYTES_CEILING, problems)
        headers = table.get("headers", {})
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and "\n" not in k + v for k, v in headers.items()):
            problems.append(f"{label}.headers: expected a table of header names to text values, "
                            "such as {{ Authorization = \"KEY\" }}")
            headers = {}
        raw_filter = table.get("filter")
        if isinstance(raw_filter, dict):
            for key in raw_filter:
                if key not in FEED_FILTER_FIELDS:
                    problems.append(f"{label}.filter.{key}: not applied to fetched feeds (they are filtered by "
                                    f"event); accepted: {', '.join(FEED_FILTER_FIELDS)}")
            raw_filter = {k: v for k, v in raw_filter.items() if k in FEED_FILTER_FIELDS}
        f = parse_filter(raw_filter, f"{label}.filter", problems, push=False)
        strict = table.get("strict", False)
        if not isinstance(strict, bool):
            problems.append(f"{label}.strict: {strict!r}; expected true or false")
            strict = False
        feeds.append(FeedSource(name, url, folder, float(interval), mode == "correlation-only",
                                manifest_max, event_max, tuple(sorted(headers.items())), f, strict))
    return tuple(feeds)
