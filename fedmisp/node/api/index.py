"""events/index with MISP's filters (PyMISP `search_index`): one row per event, no attributes.

MISP's index takes its own filter names (not restSearch's): eventinfo and attribute are substring
searches (a `%` inside is a wildcard too), tag/tags match the event's own tags, threatlevel,
distribution and analysis take lists of levels, datefrom/dateuntil the event date, timestamp and
publish_timestamp one time or a [from, to] pair. A filter this node does not apply is refused with
a 400 naming it, rather than ignored: an index that silently returned every event would look like
an answer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Iterator

from fedmisp.store import query
from fedmisp.node.api.params import MAX_LIMIT, QueryError, boolean, flag, int_param, parse_query, parse_terms
from fedmisp.store.query import EventHead, Terms
from fedmisp.store.store import Store

# Filters this node applies (MISP names; PyMISP sends `tags`, MISP also reads `tag`).
APPLIED = frozenset({
    "all", "attribute", "published", "eventid", "tag", "tags", "datefrom", "dateuntil", "eventinfo",
    "threatlevel", "distribution", "analysis", "org", "timestamp", "publish_timestamp",
    "publishtimestamp", "minimal", "sort", "direction", "desc", "limit", "page",
})
# Sent by PyMISP or MISP clients, not applied here: refused when given a value (docs/api.md).
NOT_APPLIED = frozenset({"email", "hasproposal", "sharinggroup"})
SORTS = {"id": lambda h: h.id, "date": lambda h: h.header.get("date", ""),
         "timestamp": lambda h: h.header.get("timestamp", 0), "info": lambda h: h.header.get("info", "").lower(),
         "publish_timestamp": lambda h: h.header.get("publish_timestamp", 0),
         "threat_level_id": lambda h: h.header.get("threat_level_id", 0),
         "analysis": lambda h: h.header.get("analysis", 0),
         "distribution": lambda h: h.header.get("distribution", 0)}


@dataclass(frozen=True)
class IndexFilter:
    base: query.Query  # header criteria search_events applies (and `attribute` as a value search)
    info: str | None
    tags: Terms
    levels: dict[str, frozenset[int]]  # threat_level_id / distribution / analysis -> allowed
    everything: str | None  # MISP's `all`
    minimal: bool
    sort: str | None
    descending: bool
    limit: int | None
    page: int


def _substring(text: str) -> str:
    return text if "%" in text else f"%{text}%"


def _levels(value: Any, name: str, lo: int, hi: int) -> frozenset[int] | None:
    if value is None or value == "" or value == []:
        return None
    items = value if isinstance(value, list) else str(value).split("|") if isinstance(value, str) else [value]
    out = set()
    for item in items:
        if isinstance(item, bool) or not str(item).strip().isdigit() or not lo <= int(item) <= hi:
            raise QueryError(name, f"{item!r}; expected levels from {lo} to {hi} (a list, or joined with |)")
        out.add(int(item))
    return frozenset(out)


def parse_index(params: Any, now: int | None = None) -> IndexFilter:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise QueryError("body", "expected a JSON object of events/index filters such as "
                         '{"eventinfo": "phishing", "published": 1}')
    now = int(time.time()) if now is None else now
    for key, value in params.items():
        if key in NOT_APPLIED and value not in (None, "", [], False):
            raise QueryError(key, "not applied by this node's events/index; use events/restSearch or leave it out")
        if key not in APPLIED and key not in NOT_APPLIED:
            raise QueryError(key, "not an events/index filter this node knows; accepted: " + ", ".join(sorted(APPLIED)))
    get = params.get
    text = {}
    for key in ("eventinfo", "attribute", "all"):
        value = get(key)
        if value not in (None, ""):
            if isinstance(value, bool) or not isinstance(value, (str, int)) or len(str(value)) > 65_535:
                raise QueryError(key, f"{value!r}; expected a text to search for")
            text[key] = str(value)
    tags_raw = get("tags", get("tag"))
    if isinstance(tags_raw, str) and "|" in tags_raw:
        tags_raw = tags_raw.split("|")  # MISP's index joins tags with |
    renamed = {"event_timestamp": "timestamp", "from": "datefrom", "to": "dateuntil", "value": "attribute"}
    try:
        base = _base_query(get, text, now)
    except QueryError as e:  # named as the caller named it
        name = renamed.get(e.field, e.field)
        raise QueryError(name, str(e)[len(e.field) + 2:]) from None
    sort = get("sort")
    if sort not in (None, "") and (not isinstance(sort, str) or sort not in SORTS):
        raise QueryError("sort", f"{sort!r}; accepted: {', '.join(sorted(SORTS))}")
    direction = get("direction")
    if direction not in (None, "", "asc", "desc"):
        raise QueryError("direction", f"{direction!r}; expected asc or desc")
    levels = {}
    for key, field_, lo, hi in (("threatlevel", "threat_level_id", 1, 4), ("distribution", "distribution", 0, 4),
                                ("analysis", "analysis", 0, 2)):
        allowed = _levels(get(key), key, lo, hi)
        if allowed is not None:
            levels[field_] = allowed
    limit = int_param(get("limit"), "limit", 1, MAX_LIMIT)
    return IndexFilter(
        base=base, info=text.get("eventinfo"), tags=parse_terms(tags_raw, "tags"), levels=levels,
        everything=text.get("all"), minimal=bool(boolean(get("minimal"), "minimal")),
        sort=sort or None, descending=direction == "desc" or (direction is None and flag(get("desc"))),
        limit=limit, page=int_param(get("page"), "page", 1, 2**31) or 1)


def _base_query(get: Any, text: dict[str, str], now: int) -> query.Query:
    return parse_query({k: v for k, v in {
        "eventid": get("eventid"), "org": get("org"), "published": get("published"),
        "from": get("datefrom"), "to": get("dateuntil"), "event_timestamp": get("timestamp"),
        "publish_timestamp": get("publish_timestamp", get("publishtimestamp")),
        "value": _substring(text["attribute"]) if "attribute" in text else None,
    }.items() if v is not None}, now)


def index_heads(store: Store, f: IndexFilter) -> Iterator[EventHead]:
    """The events `f` selects, sorted and paged (deleted events are not listed)."""
    info = query._Matcher(Terms(any=(_substring(f.info),))) if f.info else None
    tags = query._Matcher(f.tags) if f.tags else None
    everything = query._Matcher(Terms(any=(_substring(f.everything),))) if f.everything else None
    with_value: set[str] | None = None
    base = query.Query(**{**f.base.__dict__, "deleted": (False, True)})

    def selected(head: EventHead) -> bool:
        nonlocal with_value
        h = head.header
        if info is not None and not info([h.get("info", "")]):
            return False
        names = [t["name"] for t in h.get("Tag", ())]
        if tags is not None and not tags(names):
            return False
        if any(int(h.get(k, -1)) not in allowed for k, allowed in f.levels.items()):
            return False
        if everything is not None and not (everything([h.get("info", "")]) or everything(names)):
            if with_value is None:  # attribute values: one search, only when info and tags miss
                value = query.Query(value=Terms(any=(_substring(f.everything),)), deleted=(False, True))
                with_value = {e.uuid for e in query.search_events(store, value)}
            return head.uuid in with_value
        return True

    heads = (h for h in query.search_events(store, base) if selected(h))
    if f.sort is not None:
        heads = iter(sorted(heads, key=SORTS[f.sort], reverse=f.descending))
    skip = (f.page - 1) * f.limit if f.limit else 0
    for i, head in enumerate(heads):
        if i < skip:
            continue
        if f.limit is not None and i >= skip + f.limit:
            return
        yield head
