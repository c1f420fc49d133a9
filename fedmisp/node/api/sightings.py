"""Sightings through the REST API: sightings/add, listSightings and restSearch.

Sightings are `sightings` records signed by the reporting organisation's node (this node, for
sightings/add), one record per event, attached to their event (store `event_extra`) and sent to the
peers that may receive the event. Only sightings of attributes this node shows are listed: one of an
attribute held for correlation only, withheld by policy or hard-deleted is not.
"""
from __future__ import annotations

import time
import uuid as _uuid
from dataclasses import dataclass
from typing import Any, Iterator

from aiohttp import web

from fedmisp.export.formats import json_list
from fedmisp.model.records import KIND_SIGHTINGS, seal
from fedmisp.node.api.access import READ_ONLY, USER, MispRoutes
from fedmisp.node.api.helpers import (
    CTX, JSON, ApiContext, ApiError, body_json, find_org, org_id, path_ref, resolve_element, resolve_event, run,
    stream, unwrap,
)
from fedmisp.node.api.params import MAX_LIMIT, QueryError, flag, int_param, parse_time
from fedmisp.node.api.render import attribute_json
from fedmisp.store import query
from fedmisp.store.query import element_id

routes = MispRoutes()

SIGHTING_TYPES = ("0", "1", "2")  # seen, false positive, expiration
# sightings/add: at most this many attributes get a sighting from one request (by value, a value
# list, or a list of sightings), all written in one transaction.
MAX_SIGHTING_TARGETS = 10_000
MAX_SOURCE = 255  # MISP's sightings.source is varchar(255)
_MAX_TIMESTAMP = 2**40  # the model's timestamp ceiling
_SEARCH_PARAMS = frozenset({"context", "id", "type", "from", "to", "last", "org_id", "source", "includeAttribute",
                            "includeEvent", "returnFormat", "limit", "page", "uuid"})


@dataclass(frozen=True)
class SightingFilter:
    """What a sightings search keeps; the empty filter keeps everything."""
    type: str | None = None
    org: str | None = None  # reporting org uuid
    source: str | None = None
    since: int | None = None
    until: int | None = None
    attribute: str | None = None  # attribute uuid

    def __call__(self, s: dict[str, Any]) -> bool:
        return ((self.type is None or str(s["type"]) == self.type)
                and (self.org is None or s.get("Organisation", {}).get("uuid") == self.org)
                and (self.source is None or s.get("source", "") == self.source)
                and (self.since is None or s["date_sighting"] >= self.since)
                and (self.until is None or s["date_sighting"] <= self.until)
                and (self.attribute is None or s["attribute_uuid"] == self.attribute))


def sighting_json(ctx: ApiContext, s: dict[str, Any], event_id: int) -> dict[str, Any]:
    org = s.get("Organisation") or {}
    return {"id": str(element_id(s["uuid"])), "uuid": s["uuid"], "attribute_id": str(element_id(s["attribute_uuid"])),
            "attribute_uuid": s["attribute_uuid"], "event_id": str(event_id),
            "org_id": org_id(ctx, org["uuid"]) if "uuid" in org else "0",
            "date_sighting": str(s["date_sighting"]), "source": s.get("source", ""), "type": str(s["type"]),
            "Organisation": {"id": org_id(ctx, org["uuid"]) if "uuid" in org else "0", "name": org.get("name", ""),
                             "uuid": org.get("uuid", "")}}


def event_sightings(ctx: ApiContext, event_uuid: str, keep: SightingFilter, *, with_attribute: bool = False,
                    with_event: bool = False) -> Iterator[dict[str, Any]]:
    """{"Sighting": ...} for each kept sighting of a shown attribute of one event."""
    head = query.event_head(ctx.store, event_uuid)
    if head is None:
        return
    records = [r for r in ctx.store.event_records(event_uuid) if r.kind == KIND_SIGHTINGS]
    if not records:
        return
    attributes = {e["uuid"]: e for e in query.event_elements(ctx.store, event_uuid) if "value" in e}
    rows = sorted((s for r in records for s in r.body["sightings"]
                   if s["attribute_uuid"] in attributes and keep(s)), key=lambda s: (s["date_sighting"], s["uuid"]))
    for s in rows:
        out = sighting_json(ctx, s, head.id)
        if with_attribute or with_event:
            a = attribute_json(head, attributes[s["attribute_uuid"]])
            event = a.pop("Event")
            if with_attribute:
                out["Attribute"] = a
            if with_event:
                out["Event"] = event
        yield {"Sighting": out}


def _filter(ctx: ApiContext, params: dict[str, Any]) -> SightingFilter:
    """A SightingFilter from MISP's parameters; 400 naming the field for a bad one."""
    kind = params.get("type")
    if kind not in (None, "") and str(kind) not in SIGHTING_TYPES:
        raise ApiError(400, "type: expected 0 (sighting), 1 (false positive) or 2 (expiration)",
                       {"type": ["expected 0, 1 or 2"]}, "Invalid search")
    org = None
    if params.get("org_id") not in (None, ""):
        found = find_org(ctx, params["org_id"])
        if found is None:
            raise ApiError(404, f"org_id: no organisation {params['org_id']!r} known to this node",
                           {"org_id": ["unknown organisation"]}, "Invalid organisation")
        org = found["uuid"]
    now = int(time.time())
    try:
        since = parse_time(params["from"], "from", now) if params.get("from") not in (None, "") else None
        if params.get("last") not in (None, ""):
            since = max(since or 0, parse_time(params["last"], "last", now))
        until = parse_time(params["to"], "to", now) if params.get("to") not in (None, "") else None
    except QueryError as e:
        raise ApiError(400, f"sightings/restSearch: {e}", {e.field: [str(e)]}, "Invalid search") from None
    source = params.get("source")
    if source is not None and not isinstance(source, str):
        raise ApiError(400, "source: expected text", {"source": ["expected text"]}, "Invalid search")
    return SightingFilter(type=None if kind in (None, "") else str(kind), org=org, source=source or None,
                          since=since, until=until)


async def _params(request: web.Request) -> dict[str, Any]:
    params = unwrap(await body_json(request, required=False), "request")
    if not isinstance(params, dict):
        raise ApiError(400, "expected a JSON object of parameters", {"body": ["expected a JSON object"]})
    return {k: v for k, v in params.items() if v is not None}


async def _context(ctx: ApiContext, context: str, ref: Any) -> tuple[list[str] | None, str | None]:
    """(events to read or None for all, attribute uuid or None) of a context and an id."""
    if context not in ("", "event", "attribute"):
        raise ApiError(400, f"context: {context!r}; accepted: event, attribute", {"context": ["event or attribute"]})
    if ref in (None, ""):
        if context:
            raise ApiError(400, f"id: missing; give the {context}'s id or uuid", {"id": ["missing"]})
        return None, None
    if isinstance(ref, bool) or not isinstance(ref, (str, int)):
        raise ApiError(400, "id: expected an id or uuid", {"id": ["expected an id or uuid"]})
    if context == "event":
        return [await resolve_event(ctx, str(ref))], None
    event_uuid, body = await resolve_element(ctx, str(ref), "attribute")
    return [event_uuid], body["uuid"]


@routes.post("/sightings/listSightings", READ_ONLY)
@routes.post("/sightings/listSightings/{ref}", READ_ONLY)
@routes.post("/sightings/listSightings/{ref}/{context}", READ_ONLY)
@routes.get("/sightings/listSightings/{ref}/{context}", READ_ONLY)
async def list_sightings(request: web.Request) -> web.Response:
    """sightings/listSightings[/<id>/<context>] with {"context": "event"|"attribute", "id", "org_id"}."""
    ctx = request.app[CTX]
    params = await _params(request)
    ref = request.match_info.get("ref") or params.get("id")
    context = request.match_info.get("context") or params.get("context") or "attribute"  # MISP's default
    if not isinstance(context, str):
        raise ApiError(400, "context: expected event or attribute", {"context": ["event or attribute"]})
    events, attribute = await _context(ctx, context, ref)
    if events is None:
        raise ApiError(400, "id: missing; give the event's or attribute's id or uuid", {"id": ["missing"]})
    keep = _filter(ctx, {"org_id": params.get("org_id")})
    keep = SightingFilter(org=keep.org, attribute=attribute)
    rows = await run(lambda: list(event_sightings(ctx, events[0], keep)))
    return web.json_response(rows)


@routes.post("/sightings/restSearch", READ_ONLY)
@routes.post("/sightings/restSearch/{context}", READ_ONLY)
async def search_sightings(request: web.Request) -> web.StreamResponse:
    """sightings/restSearch[/event|/attribute] (PyMISP search_sightings): {"response": [{"Sighting"}]}."""
    ctx = request.app[CTX]
    params = await _params(request)
    unknown = sorted(set(params) - _SEARCH_PARAMS)
    if unknown:
        raise ApiError(400, f"sightings/restSearch: unknown parameter {unknown[0]!r}; accepted: "
                       + ", ".join(sorted(_SEARCH_PARAMS)), {unknown[0]: ["unknown parameter"]}, "Invalid search")
    if params.get("returnFormat", "json") != "json":
        raise ApiError(400, "returnFormat: only json is served for sightings", {"returnFormat": ["accepted: json"]},
                       "Invalid search")
    context = request.match_info.get("context") or params.get("context") or ""
    if not isinstance(context, str):
        raise ApiError(400, "context: expected event or attribute", {"context": ["event or attribute"]})
    events, attribute = await _context(ctx, context, params.get("id"))
    keep = _filter(ctx, params)
    if attribute is not None:
        keep = SightingFilter(keep.type, keep.org, keep.source, keep.since, keep.until, attribute)
    try:
        limit = int_param(params.get("limit"), "limit", 1, MAX_LIMIT)
        page = int_param(params.get("page"), "page", 1, 2**31) or 1
    except QueryError as e:
        raise ApiError(400, f"sightings/restSearch: {e}", {e.field: [str(e)]}, "Invalid search") from None
    with_attribute = flag(params.get("includeAttribute"))
    with_event = flag(params.get("includeEvent"))

    def rows() -> Iterator[dict[str, Any]]:
        skip = (page - 1) * limit if limit else 0
        left = limit
        for event_uuid in (events if events is not None else ctx.store.events_with_records()):
            for row in event_sightings(ctx, event_uuid, keep, with_attribute=with_attribute, with_event=with_event):
                if skip:
                    skip -= 1
                    continue
                yield row
                if left is not None:
                    left -= 1
                    if left == 0:
                        return
    return await stream(request, json_list('{"response": [', rows(), "]}"), JSON)


# --- adding ---------------------------------------------------------------------------------------------

def _sighting_fields(params: dict[str, Any], where: str) -> tuple[int, int, str]:
    """(type, date_sighting, source) of one posted sighting; 400 naming the field otherwise."""
    name = "Could not add Sighting"
    kind = params.get("type", 0)
    if kind not in (0, 1, 2, "0", "1", "2"):
        raise ApiError(400, f"{name}: {where}type must be 0 (sighting), 1 (false positive) or 2 (expiration)",
                       {f"{where}type": ["expected 0, 1 or 2"]}, name)
    when = params.get("timestamp") or params.get("date_sighting") or int(time.time())
    if isinstance(when, bool) or not (isinstance(when, int) or (isinstance(when, str) and when.isdigit())) \
            or not 0 <= int(when) <= _MAX_TIMESTAMP:
        raise ApiError(400, f"{name}: {where}timestamp must be epoch seconds",
                       {f"{where}timestamp": ["expected epoch seconds"]}, name)
    source = params.get("source") if params.get("source") is not None else ""
    if not isinstance(source, str) or len(source) > MAX_SOURCE:
        raise ApiError(400, f"{name}: {where}source must be text of at most {MAX_SOURCE} characters",
                       {f"{where}source": [f"text of at most {MAX_SOURCE} characters"]}, name)
    return int(kind), int(when), source


def _with_value(ctx: ApiContext, value: str, limit: int) -> list[tuple[str, str]]:
    """(event uuid, attribute uuid) of every shown attribute whose value (or a composite half) is
    `value`, as MISP matches it (exactly, case-insensitively); `%` is no wildcard here."""
    wanted = value.strip().casefold()
    found = query.search_attributes(ctx.store, query.Query(value=query.Terms(any=(value,)), limit=None))
    out = []
    for head, body in found:
        if wanted in {v.strip().casefold() for v in (body["value"], *body["value"].split("|"))}:
            out.append((head.uuid, body["uuid"]))
            if len(out) >= limit:
                break
    return out


async def _targets(ctx: ApiContext, params: dict[str, Any], ref: Any, where: str) -> list[tuple[str, str]]:
    name = "Could not add Sighting"
    if ref not in (None, ""):
        if isinstance(ref, bool) or not isinstance(ref, (str, int)):
            raise ApiError(400, f"{name}: {where}id: expected an attribute id or uuid", {f"{where}id": ["expected an id"]},
                           name)
        event_uuid, body = await resolve_element(ctx, str(ref), "attribute")
        return [(event_uuid, body["uuid"])]
    values = params.get("values")
    if values is None and params.get("value") is not None:
        values = [params["value"]]
    if not isinstance(values, list) or not values or len(values) > MAX_SIGHTING_TARGETS \
            or not all(isinstance(v, str) and v.strip() for v in values):
        raise ApiError(400, f"{name}: give an attribute id or uuid, a value, or values (a list of up to "
                       f"{MAX_SIGHTING_TARGETS} values)", {f"{where}value": ["missing; or give uuid / id"]}, name)
    targets: list[tuple[str, str]] = []
    for v in dict.fromkeys(values):
        targets.extend(await run(_with_value, ctx, v, MAX_SIGHTING_TARGETS - len(targets) + 1))
    return targets


@routes.post("/sightings/add", USER)
@routes.post("/sightings/add/{ref}", USER)
async def sighting_add(request: web.Request) -> web.Response:
    """sightings/add[/<attribute id|uuid>]: one sighting (by id, uuid, value or values), or a list
    of them; every attribute with a given value gets one (MISP). All or nothing, one transaction."""
    ctx = request.app[CTX]
    document = await body_json(request, required=False)
    many = isinstance(document, list)
    items = document if many else [unwrap(document, "Sighting")]
    name = "Could not add Sighting"
    if not items or len(items) > MAX_SIGHTING_TARGETS:
        raise ApiError(400, f"{name}: expected a sighting or a list of 1 to {MAX_SIGHTING_TARGETS}",
                       {"Sighting": ["expected a JSON object or a list of them"]}, name)
    org = {"name": ctx.node.config.org_name, "uuid": ctx.node.config.org_uuid}
    by_event: dict[str, list[dict[str, Any]]] = {}
    made: list[dict[str, Any]] = []
    for i, params in enumerate(items):
        where = f"Sighting[{i}]." if many else ""
        params = unwrap(params, "Sighting")
        if not isinstance(params, dict):
            raise ApiError(400, f"{name}: {where or 'the body'} is not a JSON object",
                           {where.rstrip(".") or "Sighting": ["expected a JSON object"]}, name)
        kind, when, source = _sighting_fields(params, where)
        ref = (path_ref(request) if not many else None) or params.get("id") or params.get("uuid")
        targets = await _targets(ctx, params, ref, where)
        if not targets:
            raise ApiError(404, f"{name}: {where}no attribute has this value", {f"{where}value": ["no attribute"]},
                           name)
        for event_uuid, attribute_uuid in targets:
            sighting = {"Organisation": org, "attribute_uuid": attribute_uuid, "date_sighting": when,
                        "source": source, "type": kind, "uuid": str(_uuid.uuid4())}
            by_event.setdefault(event_uuid, []).append(sighting)
            made.append(sighting)
        if len(made) > MAX_SIGHTING_TARGETS:
            raise ApiError(400, f"{name}: more than {MAX_SIGHTING_TARGETS} attributes would be sighted; split the request",
                           {"value": [f"at most {MAX_SIGHTING_TARGETS} attributes per request"]}, name)
    records = [seal(ctx.node.identity, KIND_SIGHTINGS, {"event_uuid": e, "sightings": s}) for e, s in by_event.items()]
    await run(ctx.store.write_records, records)

    def shown(s: dict[str, Any]) -> dict[str, Any]:
        return {**s, "date_sighting": str(s["date_sighting"]), "type": str(s["type"]),
                "attribute_id": str(element_id(s["attribute_uuid"]))}
    if many:
        return web.json_response([{"Sighting": shown(s)} for s in made])
    return web.json_response({"Sighting": shown(made[0])})

