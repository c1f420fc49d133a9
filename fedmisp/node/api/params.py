"""MISP's request parameters read into what the node searches for: restSearch's parameters into a
`Query` (store/query.py searches with it) and a returnFormat (export/formats.py), with the readers
every endpoint shares: one for yes/no parameters, times, term lists and bounded integers.
QueryError names the parameter and what would be accepted; the handlers answer it with a 400."""
from __future__ import annotations

import datetime as _dt
import re
import time
from typing import Any

from fedmisp.export.formats import FORMATS, Format
from fedmisp.store.query import Query, Terms

# restSearch: a page is at most this many results (MISP has no cap; ours bounds one response page).
MAX_LIMIT = 1_000_000
# A search term list longer than this is refused: it would be a scan per term.
MAX_TERMS = 1_000


class QueryError(ValueError):
    """A search parameter this node cannot use; names the field and what is accepted."""

    def __init__(self, field_: str, message: str):
        self.field = field_
        super().__init__(f"{field_}: {message}")


def _scalar(value: Any, field_: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise QueryError(field_, f"{value!r} is not a string; expected a string, a list of strings, or "
                         '{"OR": [...], "AND": [...], "NOT": [...]}')
    text = str(value)
    if len(text) > 65_535:
        raise QueryError(field_, "a term longer than 65535 characters")
    return text


NO_TERMS = Terms()


def parse_terms(value: Any, field_: str) -> Terms:
    if value is None or value == "" or value == []:
        return NO_TERMS
    any_: list[str] = []
    all_: list[str] = []
    none: list[str] = []

    def add(items: Any, target: list[str], negate_ok: bool) -> None:
        if not isinstance(items, list):
            items = [items]
        if len(items) > MAX_TERMS:
            raise QueryError(field_, f"{len(items)} terms; at most {MAX_TERMS} accepted")
        for item in items:
            text = _scalar(item, field_)
            if negate_ok and text.startswith("!"):
                none.append(text[1:])
            elif text:
                target.append(text)

    if isinstance(value, dict):
        unknown = set(value) - {"OR", "AND", "NOT", "or", "and", "not"}
        if unknown:
            raise QueryError(field_, f"unknown operator(s) {sorted(unknown)}; accepted: OR, AND, NOT")
        add(value.get("OR", value.get("or", [])), any_, True)
        add(value.get("AND", value.get("and", [])), all_, True)
        add(value.get("NOT", value.get("not", [])), none, False)
    else:
        add(value, any_, True)
    return Terms(tuple(any_), tuple(all_), tuple(none))


# MISP's spellings of a yes or a no (PyMISP sends True/False, 0/1; CakePHP's named parameters "1", "true").
TRUE = (True, 1, "1", "true", "True")
FALSE = (False, 0, "0", "false", "False")


def boolean(value: Any, field_: str) -> bool | None:
    """A yes/no parameter (None: not given); QueryError naming the field for anything else."""
    if value is None or value == "" or value == []:
        return None
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise QueryError(field_, f"{value!r}; expected 0, 1, true or false")


def flag(value: Any) -> bool:
    """An option switch as MISP reads one (includeCorrelations, local, extend...): on for a yes in
    `boolean`'s spellings, off for anything else."""
    return value in TRUE


_DURATION = re.compile(r"(\d+)([smhdw]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# Times a search accepts: the epoch to the year 36812 (the model's timestamp ceiling).
_MAX_TIME = 2**40


def parse_time(value: Any, field_: str, now: int) -> int:
    """A point in time as MISP takes it: epoch seconds, YYYY-MM-DD, or a duration back from now
    ('7d', '12h', '30m')."""
    t = _parse_time(value, field_, now)
    if not 0 <= t <= _MAX_TIME:
        raise QueryError(field_, f"{value!r} is out of range; expected a time from 1970 to the year 36812")
    return t


def _parse_time(value: Any, field_: str, now: int) -> int:
    if isinstance(value, bool):
        raise QueryError(field_, f"{value!r} is not a time")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise QueryError(field_, f"{value!r} is not a time")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and len(text) >= 9:
            return int(text)
        match = _DURATION.match(text)
        if match and len(text) < 12:
            return now - int(match.group(1)) * _UNITS[match.group(2)]
        try:
            day = _dt.date.fromisoformat(text[:10])
            return int(_dt.datetime(day.year, day.month, day.day, tzinfo=_dt.timezone.utc).timestamp())
        except ValueError:
            pass
    raise QueryError(field_, f"{value!r} is not a time; expected epoch seconds, YYYY-MM-DD, or a duration "
                     "such as 7d, 12h, 30m")


def time_range(value: Any, field_: str, now: int) -> tuple[int, int] | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise QueryError(field_, "expected one time or a pair [from, to]")
        return parse_time(value[0], field_, now), parse_time(value[1], field_, now)
    return parse_time(value, field_, now), 2**63


def day(value: Any, field_: str, now: int) -> str | None:
    if value is None or value == "":
        return None
    t = parse_time(value, field_, now)
    if t >= 253_402_300_800:  # past 9999-12-31, where dates (and MISP's date field) end
        return "9999-12-31"
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).date().isoformat()


def int_param(value: Any, field_: str, lo: int, hi: int) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise QueryError(field_, f"{value!r}; expected an integer from {lo} to {hi}")
    n = int(value)
    if not lo <= n <= hi:
        raise QueryError(field_, f"{n}; expected an integer from {lo} to {hi}")
    return n


# Parameters PyMISP always sends; accepted, and not yet used by this node (listed in docs/api.md).
IGNORED_PARAMETERS = frozenset({
    "returnFormat", "withAttachments", "metadata", "includeEventUuid",
    "includeEventTags", "sgReferenceOnly", "includeContext", "headerless", "includeSightings",
    "includeDecayScore", "excludeDecayed", "quickFilter", "event_tags",
    "eventinfo", "searchall", "requested_attributes", "object_name", "sharinggroup", "includeProposals",
    "decayingModel", "score", "first_seen", "last_seen", "attackGalaxy", "object_relation",
    "includeAllTags", "includeGranularCorrelations", "returnMetaAttributes",
    "threat_level_id", "distribution", "analysis", "includeFullModel", "excludeLocalTags",
})
KNOWN_PARAMETERS = frozenset({
    "value", "type", "category", "org", "tags", "eventid", "uuid", "from", "to", "last",
    "publish_timestamp", "timestamp", "event_timestamp", "published", "to_ids", "deleted", "limit",
    "page", "date_from", "date_to", "attribute_timestamp",
    "includeCorrelations", "enforceWarninglist", "includeWarninglistHits",  # the API layer (correlate/)
    "excludeGalaxy", "includeGalaxy",  # the API layer (render.py: Galaxy blocks)
}) | IGNORED_PARAMETERS


def deleted(value: Any, field_: str = "deleted") -> tuple[bool, ...]:
    """Which attributes MISP's `deleted` asks for: not deleted (absent or 0, the default), deleted
    only (1), or both ([0, 1])."""
    if isinstance(value, list):
        return tuple(sorted({bool(boolean(d, field_)) for d in value}))
    wanted = boolean(value, field_)
    return (False,) if wanted is None else (wanted,)


def parse_query(params: dict[str, Any], now: int | None = None) -> Query:
    """restSearch parameters (MISP names) -> Query; QueryError names the first bad one."""
    if not isinstance(params, dict):
        raise QueryError("body", "expected a JSON object of restSearch parameters such as "
                         '{"value": "8.8.8.8", "type": "ip-dst"}')
    now = int(time.time()) if now is None else now
    for key in params:
        if key not in KNOWN_PARAMETERS:
            raise QueryError(key, "not a restSearch parameter this node knows; accepted: "
                             + ", ".join(sorted(KNOWN_PARAMETERS - IGNORED_PARAMETERS)))
    get = params.get
    last = get("last")
    publish = time_range(get("publish_timestamp"), "publish_timestamp", now)
    if last not in (None, ""):
        publish = (parse_time(last, "last", now), 2**63)
    limit = int_param(get("limit"), "limit", 1, MAX_LIMIT)
    page = int_param(get("page"), "page", 1, 2**31) or 1
    metadata = boolean(get("metadata"), "metadata") or False
    return Query(
        value=parse_terms(get("value"), "value"),
        type=parse_terms(get("type"), "type"),
        category=parse_terms(get("category"), "category"),
        org=parse_terms(get("org"), "org"),
        tags=parse_terms(get("tags"), "tags"),
        eventid=parse_terms(get("eventid"), "eventid"),
        uuid=parse_terms(get("uuid"), "uuid"),
        date_from=day(get("from", get("date_from")), "from", now),
        date_to=day(get("to", get("date_to")), "to", now),
        publish_timestamp=publish,
        timestamp=time_range(get("timestamp", get("attribute_timestamp")), "timestamp", now),
        event_timestamp=time_range(get("event_timestamp"), "event_timestamp", now),
        published=boolean(get("published"), "published"),
        to_ids=boolean(get("to_ids"), "to_ids"),
        deleted=deleted(get("deleted")),
        limit=limit,
        page=page,
        event_metadata=metadata,
    )


def parse_search(params: dict[str, Any], tail: str = "") -> tuple[Query, Format]:
    """A restSearch request's parameters (the body's, and CakePHP's named parameters in the path
    after the endpoint: `/returnFormat:csv/limit:10`) -> what to search for and the answer's format."""
    for part in tail.strip("/").split("/"):
        if ":" in part:
            k, _, v = part.partition(":")
            params.setdefault(k, v)
    fmt = params.get("returnFormat", "json")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise QueryError("returnFormat", f"{fmt!r} is not served by this node; accepted: {', '.join(FORMATS)}")
    return parse_query(params), FORMATS[fmt]
