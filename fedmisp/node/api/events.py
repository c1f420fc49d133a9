"""Events: events/view, events/index, add, edit, delete, publish and unpublish."""
from __future__ import annotations

import time
from typing import Any, Iterator

from aiohttp import web

from fedmisp.export.formats import json_list
from fedmisp.model.misp import Dropped, EventError, drop_elements, parse_event
from fedmisp.model.revision import SignedEvent, sign_event
from fedmisp.node.api.access import PUBLISHER, READ_ONLY, USER, MispRoutes
from fedmisp.node.api.helpers import (
    CTX, JSON, ApiError, body_json, event_error, may, must_be_creator, path_ref, refused, resolve_event,
    revise_event, run, sharing_group_uuids, stream, this_org, unwrap, write_revision,
)
from fedmisp.node.api.index import index_heads, parse_index
from fedmisp.node.api.params import QueryError, deleted
from fedmisp.node.api.render import shown_event
from fedmisp.store.mutations import RevisionRefused, tombstone, uuids_in_use

routes = MispRoutes()


@routes.get("/events/view/{ref}", READ_ONLY)  # HEAD too (aiohttp answers HEAD from GET)
@routes.get("/events/view/{ref}/{opts:.*}", READ_ONLY)
@routes.post("/events/view/{ref}", READ_ONLY)
@routes.post("/events/view/{ref}/{opts:.*}", READ_ONLY)
async def event_view(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid = await resolve_event(ctx, path_ref(request))
    include_deleted = False
    if request.method == "POST":
        params = await body_json(request, required=False)
        try:
            include_deleted = isinstance(params, dict) and True in deleted(params.get("deleted"))
        except QueryError as e:
            raise ApiError(400, f"events/view: {e}", {e.field: [str(e)]}, "Invalid filter") from None
    event = await run(shown_event, ctx, event_uuid, include_deleted, correlations=True)
    if event is None:
        raise ApiError(404, "Invalid event")
    return web.json_response(event)


@routes.get("/events/index", READ_ONLY)
@routes.post("/events/index", READ_ONLY)
async def event_index(request: web.Request) -> web.StreamResponse:
    """events/index, filtered as MISP filters it (PyMISP search_index; node/api/index.py)."""
    ctx = request.app[CTX]
    if request.method == "POST":
        params = await body_json(request, required=False)
    else:
        params = dict(request.query)
    try:
        wanted = parse_index(params)
    except QueryError as e:
        raise ApiError(400, f"events/index: {e}", {e.field: [str(e)]}, "Invalid filter") from None

    def rows() -> Iterator[dict[str, Any]]:
        for head in index_heads(ctx.store, wanted):
            h = head.header
            if wanted.minimal:
                yield {"id": str(head.id), "timestamp": str(h["timestamp"]), "published": h["published"],
                       "uuid": head.uuid, "orgc_uuid": h["Orgc"]["uuid"]}
                continue
            row = {k: v for k, v in h.items() if k not in ("extra", "Tag")}
            for key in ("distribution", "threat_level_id", "analysis", "timestamp", "publish_timestamp"):
                row[key] = str(h[key])
            row.update(id=str(head.id), orgc_id="0", org_id="1", Org=this_org(ctx),
                       EventTag=[{"Tag": t} for t in h.get("Tag", ())])
            yield row
    return await stream(request, json_list("[", rows(), "]"), JSON)


@routes.post("/events/add", USER)
@routes.post("/events/add/{opts:.*}", USER)
async def event_add(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    document = await body_json(request)
    raw = unwrap(document, "Event")
    if not isinstance(raw, dict):
        raise ApiError(400, "Could not add Event: expected {\"Event\": {...}} with info and attributes",
                       {"Event": ["expected a JSON object"]}, "Could not add Event")
    raw = await sharing_group_uuids(ctx, raw)
    # MISP: the creator of an event added through the API is the user's organisation.
    raw["Orgc"] = {"name": ctx.node.config.org_name, "uuid": ctx.node.config.org_uuid}
    if not may(request, "publisher"):
        raw["published"] = False

    def make() -> tuple[SignedEvent, list[Dropped]] | int:
        # As MISP's events/add: an attribute, object, reference or tag that does not validate (or
        # whose uuid another event uses) is dropped and the event stored without it; the answer
        # names each in `errors`. Only a bad event header refuses the request (decision 0028).
        try:
            defaults = ctx.node.import_defaults()
            parsed = parse_event(raw, defaults, lenient=True)
        except EventError as e:
            raise event_error(e, "add Event") from None
        held = ctx.store.held(parsed.uuid)
        if held is not None:
            return held.id
        taken = uuids_in_use(ctx.store, parsed.uuid, parsed.elements)
        if taken:
            parsed.dropped.extend(drop_elements(parsed, taken, templates=defaults.templates))
        return sign_event(ctx.node.identity, parsed), parsed.dropped

    async with ctx.edit_lock:
        made = await run(make)
        if isinstance(made, int):
            raise ApiError(403, "Event already exists, if you would like to edit it, use the url in the location "
                           f"field: /events/edit/{made}", {"Event": {"uuid": ["already held by this node"]}},
                           "Could not add Event")
        signed, dropped = made
        await write_revision(ctx, signed)
    event = await run(shown_event, ctx, signed.uuid)
    if dropped:
        event["errors"] = dropped_errors(dropped)
    return web.json_response(event)


def dropped_errors(dropped: list[Dropped]) -> dict[str, dict[str, list[str]]]:
    """What was left out of an added event, in the shape of a refusal's `errors`: element -> field
    -> messages (`Attribute[2] (uuid …)`, `Object[0].Attribute[1]`, `event.Tag[3]`)."""
    errors: dict[str, dict[str, list[str]]] = {}
    for d in dropped:
        fields = errors.setdefault(d.label, {})
        for problem in d.problems:
            fields.setdefault(problem.field, []).append(problem.message)
    return errors


@routes.post("/events/edit/{ref}", USER)
@routes.post("/events/edit/{ref}/{opts:.*}", USER)
async def event_edit(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid = await resolve_event(ctx, path_ref(request))
    await must_be_creator(ctx, event_uuid)
    raw = unwrap(await body_json(request), "Event")
    if not isinstance(raw, dict):
        raise ApiError(400, "Could not edit Event: expected {\"Event\": {...}}", {"Event": ["expected a JSON object"]})
    await revise_event(request, event_uuid, "edit Event", posted=await sharing_group_uuids(ctx, raw))
    return web.json_response(await run(shown_event, ctx, event_uuid))


@routes.post("/events/delete/{ref}", USER)
@routes.delete("/events/delete/{ref}", USER)
async def event_delete(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ref = path_ref(request)
    event_uuid = await resolve_event(ctx, ref)

    def make() -> SignedEvent:
        try:
            return tombstone(ctx.store, ctx.node.identity, event_uuid)
        except RevisionRefused as e:
            raise refused(e, "delete Event") from None
    async with ctx.edit_lock:
        await write_revision(ctx, await run(make))
    return web.json_response({"saved": True, "success": True, "name": "Event deleted.", "message": "Event deleted.",
                              "url": request.path, "id": ref})


async def _publish(request: web.Request, published: bool) -> web.Response:
    ctx = request.app[CTX]
    ref = path_ref(request)
    event_uuid = await resolve_event(ctx, ref)
    header: dict[str, Any] = {"published": published}
    if published:
        header["publish_timestamp"] = int(time.time())
    await revise_event(request, event_uuid, "publish Event", posted={}, set_header=header, may_publish=True)
    word = "Event published." if published else "Event unpublished."
    return web.json_response({"saved": True, "success": True, "name": word, "message": word,
                              "url": request.path, "id": ref})


@routes.post("/events/publish/{ref}", PUBLISHER)
async def event_publish(request: web.Request) -> web.Response:
    return await _publish(request, True)


@routes.post("/events/unpublish/{ref}", PUBLISHER)
async def event_unpublish(request: web.Request) -> web.Response:
    return await _publish(request, False)
