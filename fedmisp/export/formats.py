"""The output formats of restSearch (`returnFormat`) and of `fedmisp export`: one table, read by both.

Each format says its content type, whether it carries IDS-flagged attributes only unless asked
otherwise (MISP's NIDS and Zeek exports), and how it writes attributes and, where it has its own
event form, events. What an export leaves out is decided here once, for every caller:
`attributes` and `event_attributes` give the (event head, attribute) pairs a format carries, with
`to_ids` defaulted by the format and warninglisted values left out (export/filters.py judges the
value as the store indexes it, normalised, as MISP judges the value it stored).

Writers yield text a piece at a time, so the API streams an answer and the CLI writes a file
without holding the whole export. MISP JSON with this node's numeric ids is rendered by the caller
(`Export.attribute_json`, `Export.event_json`: the REST API adds correlations and warninglist hits);
the CLI's whole-store `misp-json` and `feed` dumps are export/misp.py's, not search formats.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

from fedmisp.export import csv as csv_export, filters, nids, stix, text, zeek
from fedmisp.store import query
from fedmisp.store.store import Store

Pairs = Iterable[tuple[query.EventHead, dict[str, Any]]]
JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Export:
    """What writers need besides the attributes: the store (CSV's object columns), the source
    Zeek names, and the caller's MISP JSON of an attribute (with its Event) and of an event."""
    store: Store
    source: str = "fedmisp"
    attribute_json: Callable[[query.EventHead, dict[str, Any]], dict[str, Any]] | None = None
    event_json: Callable[[query.EventHead], dict[str, Any] | None] | None = None


@dataclass(frozen=True)
class Format:
    name: str
    content_type: str
    attributes: Callable[[Export, Pairs], Iterator[str]]
    # how matching events are written; None: as the attributes of those events (MISP does the same)
    events: Callable[[Export, Iterable[dict[str, Any]]], Iterator[str]] | None = None
    ids_only: bool = False  # IDS-flagged attributes only, unless the request gives to_ids
    # the events' attributes pass the to_ids and warninglist filters (json: MISP's whole event view)
    filters_events: bool = True

    def query(self, q: query.Query) -> query.Query:
        """`q` with this format's `to_ids` default."""
        return replace(q, to_ids=True) if self.ids_only and q.to_ids is None else q


# json.dumps(item, ensure_ascii=False) without building an encoder per item: the same text.
_encode_json = json.JSONEncoder(ensure_ascii=False).encode


def json_list(prefix: str, items: Iterable[Any], suffix: str) -> Iterator[str]:
    """`prefix`, the items as JSON separated by commas, `suffix`: a JSON array streamed item by item."""
    yield prefix
    for i, item in enumerate(items):
        yield ("," if i else "") + _encode_json(item)
    yield suffix


def _attribute_json(x: Export, found: Pairs) -> Iterator[dict[str, Any]]:
    assert x.attribute_json is not None, "MISP JSON attributes need the caller's attribute_json"
    return (x.attribute_json(h, b) for h, b in found)


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("json", JSON, lambda x, found: json_list('{"response": {"Attribute": [', _attribute_json(x, found), "]}}"),
           events=lambda x, events: json_list('{"response": [', events, "]}"), filters_events=False),
    Format("csv", "text/csv; charset=utf-8", lambda x, found: csv_export.attributes_csv(x.store, found)),
    Format("text", TEXT, lambda x, found: text.attributes_text(found)),
    Format("suricata", TEXT, lambda x, found: nids.rules(found, "suricata"), ids_only=True),
    Format("snort", TEXT, lambda x, found: nids.rules(found, "snort"), ids_only=True),
    Format("zeek", TEXT, lambda x, found: zeek.intel(found, x.source), ids_only=True),
    # one report per event (misp-stix), as MISP's event restSearch gives; attributes: the objects alone
    Format("stix2", JSON, lambda x, found: stix.attributes_bundle(_attribute_json(x, found)),
           events=lambda x, events: stix.events_bundle(events)),
)}


def attributes(store: Store, q: query.Query, fmt: Format, *, enforce_warninglist: bool = False) -> Pairs:
    """The (event head, attribute) pairs of an attribute search that `fmt` carries."""
    found = query.search_attributes(store, fmt.query(q))
    return _without_warninglisted(found) if enforce_warninglist else found


def event_attributes(store: Store, q: query.Query, fmt: Format, *, enforce_warninglist: bool = False) -> Pairs:
    """The attributes of the events an event search matches, as `fmt` carries them."""
    q = fmt.query(q)
    found = ((h, b) for head in query.search_events(store, q)
             for h, b in query.search_attributes(store, query.Query(eventid=query.Terms(any=(head.uuid,)),
                                                                   deleted=q.deleted, to_ids=q.to_ids)))
    return _without_warninglisted(found) if enforce_warninglist else found


def events(misp_events: Iterable[dict[str, Any] | None], q: query.Query, fmt: Format, *,
           enforce_warninglist: bool = False) -> Iterator[dict[str, Any]]:
    """MISP JSON events as `fmt` carries them (None: an event not shown, left out): with only the
    attributes the filters keep, for a format that filters events."""
    if not fmt.filters_events:
        return (e for e in misp_events if e)
    to_ids = bool(fmt.query(q).to_ids)
    return (filters.event(e, to_ids=to_ids, enforce_warninglist=enforce_warninglist) for e in misp_events if e)


def attribute_export(x: Export, q: query.Query, fmt: Format, *, enforce_warninglist: bool = False) -> Iterator[str]:
    """restSearch on attributes (and `fedmisp export`) in `fmt`."""
    return fmt.attributes(x, attributes(x.store, q, fmt, enforce_warninglist=enforce_warninglist))


def event_export(x: Export, q: query.Query, fmt: Format, *, enforce_warninglist: bool = False) -> Iterator[str]:
    """restSearch on events in `fmt`: the events in the format's event form, or their attributes."""
    if fmt.events is None:
        return fmt.attributes(x, event_attributes(x.store, q, fmt, enforce_warninglist=enforce_warninglist))
    assert x.event_json is not None, "an event form needs the caller's event_json"
    shown = (x.event_json(head) for head in query.search_events(x.store, q))
    return fmt.events(x, events(shown, q, fmt, enforce_warninglist=enforce_warninglist))


def _without_warninglisted(found: Pairs) -> Pairs:
    # MISP's enforceWarninglist: leave out what a warninglist says is benign (a resolver, a top domain)
    return ((h, b) for h, b in found if not filters.warninglisted(b))
