"""Event reports: eventReports/add, view, edit, delete and index, as PyMISP's add_event_report,
get_event_report, update_event_report, delete_event_report and get_event_reports call them.

A report is an element of its event (model/misp.py `_report`): adding, editing or deleting one makes
a new signed revision of the event, so only the event's creator changes its reports (MISP: the
event's organisation), and each report reaches the peers its own distribution allows.
"""
from __future__ import annotations

import uuid as _uuid
from typing import Any

from aiohttp import web

from fedmisp.model.misp import KIND_REPORT, element_kind
from fedmisp.node.api.access import READ_ONLY, USER, MispRoutes
from fedmisp.node.api.helpers import (
    ApiError, CTX, ApiContext, body_json, edit_element, must_be_creator, path_ref, resolve_element,
    resolve_event, revise_event, run, sharing_group_uuids, unwrap, wants_hard_delete,
)
from fedmisp.node.api.render import report_json
from fedmisp.store import query
from fedmisp.store.query import element_id

routes = MispRoutes()

_EDITABLE = ("name", "content", "distribution", "sharing_group_uuid", "timestamp", "deleted")
# eventReports/index's filters (MISP's harvestParameters); anything else is a 400, never ignored
_INDEX_FILTERS = ("event_id", "value")


def _report_of(ctx: ApiContext, event_uuid: str, report_uuid: str) -> dict[str, Any] | None:
    head = query.event_head(ctx.store, event_uuid)
    if head is None:
        return None
    found = query.find_element(ctx.store, report_uuid)
    if found is None or found[0] != event_uuid or element_kind(found[1]) != KIND_REPORT:
        return None
    return report_json(head.id, found[1])


async def _posted(request: web.Request, what: str) -> dict[str, Any]:
    posted = unwrap(await body_json(request), "EventReport")
    if not isinstance(posted, dict):
        raise ApiError(400, f"Could not {what}: expected {{\"EventReport\": {{\"name\": ..., \"content\": ...}}}}",
                       {"EventReport": ["expected a JSON object"]}, f"Could not {what}")
    return await sharing_group_uuids(request.app[CTX], posted)


@routes.post("/eventReports/add/{ref}", USER)
async def report_add(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid = await resolve_event(ctx, path_ref(request))
    await must_be_creator(ctx, event_uuid)
    posted = await _posted(request, "add EventReport")
    report = {k: v for k, v in posted.items() if k not in ("id", "event_id", "timestamp")}
    report.setdefault("uuid", str(_uuid.uuid4()))
    if not isinstance(report["uuid"], str) or not query.is_uuid(report["uuid"]):
        raise ApiError(400, f"Could not add EventReport: uuid {report['uuid']!r} is not a UUID",
                       {"uuid": ["expected a UUID"]}, "Could not add EventReport")
    report_uuid = str(_uuid.UUID(report["uuid"]))
    report["uuid"] = report_uuid
    if await run(query.element_event, ctx.store, report_uuid) is not None:
        raise ApiError(403, f"Could not add EventReport: uuid {report_uuid} is already in use",
                       {"uuid": ["already in use"]}, "Could not add EventReport")
    await revise_event(request, event_uuid, "add EventReport", posted={"EventReport": [report]})
    return web.json_response({"EventReport": await run(_report_of, ctx, event_uuid, report_uuid)})


@routes.get("/eventReports/view/{ref}", READ_ONLY)
async def report_view(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid, body = await resolve_element(ctx, path_ref(request), KIND_REPORT)
    shown = await run(_report_of, ctx, event_uuid, body["uuid"])
    if shown is None:
        raise ApiError(404, "Invalid report")
    return web.json_response({"EventReport": shown})


@routes.post("/eventReports/edit/{ref}", USER)
async def report_edit(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid, body = await resolve_element(ctx, path_ref(request), KIND_REPORT)
    await must_be_creator(ctx, event_uuid)
    posted = await _posted(request, "edit EventReport")
    changes = {k: v for k, v in posted.items() if k in _EDITABLE}
    if "timestamp" in changes:
        ts = changes["timestamp"]
        if not (isinstance(ts, (int, str)) and str(ts).isdigit() and int(ts) > body["timestamp"]):
            raise ApiError(403, "EventReport could not be saved: EventReport in the request not newer than the "
                           f"local copy (timestamp {ts!r}, held {body['timestamp']}); leave timestamp out to edit now",
                           {"timestamp": ["not newer than the held report"]}, "Could not edit EventReport")
    await edit_element(request, event_uuid, body["uuid"], changes, "edit EventReport")
    return web.json_response({"EventReport": await run(_report_of, ctx, event_uuid, body["uuid"])})


@routes.post("/eventReports/delete/{ref}{hard:(/1)?}", USER)
async def report_delete(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid, body = await resolve_element(ctx, path_ref(request), KIND_REPORT)
    await must_be_creator(ctx, event_uuid)
    hard = await wants_hard_delete(request)
    if hard:
        await revise_event(request, event_uuid, "delete EventReport", posted={}, remove=frozenset({body["uuid"]}))
    elif not body.get("deleted"):
        await edit_element(request, event_uuid, body["uuid"], {"deleted": True}, "delete EventReport")
    rid = str(element_id(body["uuid"]))
    # MISP names the report as the request did (its id or uuid: PyMISP sends the uuid)
    message = f"Event Report {path_ref(request)} {'hard' if hard else 'soft'} deleted"
    return web.json_response({"saved": True, "success": True, "name": message, "message": message,
                              "url": request.path, "id": rid})


def _index_filters(request: web.Request, document: Any) -> dict[str, str]:
    """MISP's named parameters (`index/event_id:12`), the query string, or a posted map."""
    filters: dict[str, Any] = {}
    tail = request.match_info.get("tail", "").strip("/")
    for part in filter(None, tail.split("/")):
        name, sep, value = part.partition(":")
        if not sep:
            raise ApiError(400, f"eventReports/index: {part[:60]!r} is not a name:value filter",
                           {"filter": [f"expected one of {', '.join(_INDEX_FILTERS)} as name:value"]})
        filters[name] = value
    filters.update(request.query)
    if isinstance(document, dict):
        filters.update(document)
    elif document not in ({}, None):
        raise ApiError(400, "eventReports/index: expected a map of filters", {"body": ["expected a JSON object"]})
    unknown = sorted(set(filters) - set(_INDEX_FILTERS))
    if unknown:
        raise ApiError(400, f"eventReports/index: unknown filter {unknown[0]!r}; accepted: {', '.join(_INDEX_FILTERS)}",
                       {unknown[0]: ["not a filter of eventReports/index"]})
    for name, value in filters.items():
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ApiError(400, f"eventReports/index: {name}: expected text or a number", {name: ["expected text"]})
    return {k: str(v) for k, v in filters.items()}


def _index(ctx: ApiContext, filters: dict[str, str]) -> list[dict[str, Any]]:
    if "event_id" in filters:
        event_uuid = query.resolve_event(ctx.store, filters["event_id"])
        events = [event_uuid] if event_uuid is not None else []
    else:
        events = list(ctx.store.event_uuids())
    needle = filters.get("value", "").lower()
    out = []
    for event_uuid in events:
        head = query.event_head(ctx.store, event_uuid)
        if head is None or head.deleted:
            continue
        for body in query.event_elements(ctx.store, event_uuid):
            if element_kind(body) != KIND_REPORT or body.get("deleted"):
                continue
            if needle and needle not in body["name"].lower() and needle not in body["content"].lower():
                continue
            out.append({"EventReport": report_json(head.id, body)})
    return out


@routes.get("/eventReports/index{tail:(/.*)?}", READ_ONLY)
@routes.post("/eventReports/index{tail:(/.*)?}", READ_ONLY)
async def report_index(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    document = await body_json(request, required=False) if request.method == "POST" else None
    filters = _index_filters(request, document)
    return web.json_response(await run(_index, ctx, filters))
