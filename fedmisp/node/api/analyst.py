"""Analyst data: analyst_data/add|edit|delete|view|index as PyMISP's add_note, add_opinion,
add_relationship, get_analyst_data, update_analyst_data and delete_analyst_data call them.

An item is a record of its own signed by this node for its organisation (model/analyst.py,
decision 0029), attached to the event its target is in: any organisation may annotate any event
it holds; only the item's creator org edits or deletes it (MISP's canEditAnalystData), and an edit
or a delete is a newer record of the item (a delete: a tombstone without its content).
"""
from __future__ import annotations

import time
import uuid as _uuid
from typing import Any

from aiohttp import web

from fedmisp.model.analyst import (
    ELEMENT_TARGETS, TYPES, current_items, item_id, item_json, nest_analyst_data, parse_item, tombstone,
)
from fedmisp.model.misp import _Problems
from fedmisp.model.records import KIND_ANALYST, seal
from fedmisp.node.api.access import READ_ONLY, USER, MispRoutes
from fedmisp.node.api.helpers import (
    ApiError, CTX, ApiContext, body_json, known_orgs, path_ref, resolve_event, run, sharing_group_uuids,
)
from fedmisp.node.api.render import with_sharing_group_ids
from fedmisp.store import query

routes = MispRoutes()

NOT_AUTHORISED = "You are not authorised to do that."  # MISP's answer to an edit of another org's item
# what analyst_data/edit changes (MISP's EDITABLE_FIELDS of each type)
_EDITABLE = {"Note": ("note", "language"), "Opinion": ("opinion", "comment"),
             "Relationship": ("relationship_type", "related_object_uuid", "related_object_type")}
_BASE_EDITABLE = ("authors", "distribution", "sharing_group_uuid", "sharing_group_id", "SharingGroup")
# analyst_data/index's filters (MISP's CRUD index: uuid, target_object; its quick filter is `name`)
_INDEX_FILTERS = ("uuid", "target_object", "object_uuid", "orgc_uuid", "quickFilter")


def _type(request: web.Request, *, all_ok: bool = False) -> str:
    type_ = request.match_info["type"]
    if type_ in TYPES or all_ok and type_ == "all":
        return type_
    accepted = ", ".join(TYPES) + (", all" if all_ok else "")
    raise ApiError(400, f"analyst_data: type {type_[:40]!r} unknown; accepted: {accepted}",
                   {"type": [f"expected one of {accepted}"]})


def _all_items(ctx: ApiContext, event_uuids: list[str] | None = None) -> list[tuple[dict[str, Any], Any]]:
    """The current (body, record) of every item held, deleted ones included."""
    out = []
    events = event_uuids if event_uuids is not None else list(ctx.store.events_with_records())
    for event_uuid in events:
        records = [r for r in ctx.store.event_records(event_uuid) if r.kind == KIND_ANALYST]
        out.extend(current_items(records).values())
    return out


def _find(ctx: ApiContext, ref: str, type_: str) -> tuple[dict[str, Any], Any] | None:
    """The current record of an item by numeric id or uuid (any type for `all`), deleted ones not."""
    wanted = ref.strip().lower()
    for body, record in _all_items(ctx):
        item = body["item"]
        if item.get("deleted") or type_ != "all" and body["type"] != type_:
            continue
        if item["uuid"] == wanted or wanted.isdigit() and int(wanted) == item_id(item["uuid"]):
            return body, record
    return None


def _shown(ctx: ApiContext, body: dict[str, Any]) -> dict[str, Any]:
    """One item as MISP's view shows it, with the items on it nested (fetchChildNotesAndOpinions)."""
    orgs = known_orgs(ctx)
    event_uuid = body["event_uuid"]
    items = [b for b, _ in _all_items(ctx, [event_uuid])]
    out = item_json(body["type"], body["item"], orgs)
    holder = {"uuid": body["item"]["uuid"]}
    nest_analyst_data(holder, [b for b in items if b["item"]["uuid"] != body["item"]["uuid"]], orgs)
    for key in TYPES:
        if key in holder:
            out[key] = holder[key]
    head = query.event_head(ctx.store, event_uuid)
    if head is not None:
        out["event_id"] = str(head.id)
    out["event_uuid"] = event_uuid
    return with_sharing_group_ids(out)


def _target_event(ctx: ApiContext, target_uuid: str, target_type: str) -> str | None:
    """The held event an item on `target_uuid` belongs to (None: this node holds no such target)."""
    if target_type == "Event":
        event_uuid = query.resolve_event(ctx.store, target_uuid)
        head = query.event_head(ctx.store, event_uuid) if event_uuid else None
        return event_uuid if head is not None and not head.deleted else None
    if target_type in ELEMENT_TARGETS:
        return query.element_event(ctx.store, target_uuid)
    if target_type in TYPES:
        found = _find(ctx, target_uuid, target_type)
        return found[0]["event_uuid"] if found is not None else None
    return None


async def _posted(request: web.Request, type_: str, what: str) -> dict[str, Any]:
    document = await body_json(request, required=False)
    if isinstance(document, dict) and isinstance(document.get(type_), dict):
        document = document[type_]
    if not isinstance(document, dict):
        raise ApiError(400, f"Could not {what}: expected {{\"{type_}\": {{...}}}} or the {type_} fields",
                       {type_: ["expected a JSON object"]}, f"Could not {what}")
    return await sharing_group_uuids(request.app[CTX], document)


def _checked(ctx: ApiContext, raw: dict[str, Any], type_: str, what: str, **target: str) -> dict[str, Any]:
    p = _Problems()
    item = parse_item(raw, type_, type_, p, ctx.node.import_defaults(), **target)
    if p.items or item is None:
        first = p.items[0] if p.items else None
        errors = {pr.field: [pr.message] for pr in p.items} or {type_: ["expected a map"]}
        raise ApiError(400, f"Could not {what}: {first.field}: {first.message}" if first else f"Could not {what}",
                       errors, f"Could not {what}")
    return item


def _write(ctx: ApiContext, body: dict[str, Any]) -> None:
    ctx.store.write_records([seal(ctx.node.identity, KIND_ANALYST, body)])


@routes.post("/analyst_data/add/{type}/{object_uuid}/{object_type}", USER)
@routes.post("/analyst_data/add/{type}", USER)
async def analyst_add(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    type_ = _type(request)
    what = f"add {type_}"
    posted = await _posted(request, type_, what)
    target_uuid = request.match_info.get("object_uuid") or posted.get("object_uuid")
    target_type = request.match_info.get("object_type") or posted.get("object_type")
    if not isinstance(target_uuid, str) or not query.is_uuid(target_uuid):
        raise ApiError(400, f"Could not {what}: object_uuid {str(target_uuid)[:60]!r} is not a UUID",
                       {"object_uuid": ["expected the UUID of the event, attribute, object, report or item"]},
                       f"Could not {what}")
    target_uuid = str(_uuid.UUID(target_uuid))
    accepted = ("Event", *sorted(ELEMENT_TARGETS), *TYPES)
    if target_type not in accepted:
        raise ApiError(400, f"Could not {what}: object_type {str(target_type)[:40]!r} is not a target here; "
                       f"accepted: {', '.join(accepted)}", {"object_type": [f"expected one of {', '.join(accepted)}"]},
                       f"Could not {what}")
    event_uuid = await run(_target_event, ctx, target_uuid, target_type)
    if event_uuid is None:
        raise ApiError(404, f"Invalid {target_type}", f"no {target_type} {target_uuid} on this node")
    # the creator is this node's organisation, whatever the post says (MISP: unless a sync user)
    raw = {k: v for k, v in posted.items() if k not in ("orgc_uuid", "Orgc", "org_uuid", "Org", "id")}
    raw["orgc_uuid"] = ctx.node.config.org_uuid
    item = _checked(ctx, raw, type_, what, object_uuid=target_uuid, object_type=target_type)
    item["object_uuid"], item["object_type"] = target_uuid, target_type
    item["Orgc"] = {"name": ctx.node.config.org_name, "uuid": ctx.node.config.org_uuid}
    if await run(_target_event, ctx, item["uuid"], type_) is not None or \
            await run(query.element_event, ctx.store, item["uuid"]) is not None:
        raise ApiError(403, f"Could not {what}: uuid {item['uuid']} is already in use",
                       {"uuid": ["already in use"]}, f"Could not {what}")
    body = {"event_uuid": event_uuid, "type": type_, "item": dict(sorted(item.items()))}
    await run(_write, ctx, body)
    return web.json_response({type_: await run(_shown, ctx, body)})


async def _held(request: web.Request, *, all_ok: bool = True) -> tuple[dict[str, Any], Any]:
    ctx = request.app[CTX]
    type_ = _type(request, all_ok=all_ok)
    ref = path_ref(request, "ref")
    found = await run(_find, ctx, ref, type_)
    if found is None:
        raise ApiError(404, f"Invalid {type_ if type_ != 'all' else 'analyst data'}",
                       f"no {type_ if type_ != 'all' else 'analyst data'} {ref[:60]!r} on this node; "
                       "give its numeric id or uuid")
    return found


def _must_be_creator(ctx: ApiContext, body: dict[str, Any]) -> None:
    if body["item"]["orgc_uuid"] != ctx.node.config.org_uuid:
        raise ApiError(403, NOT_AUTHORISED, {"orgc_uuid": ["only the organisation that created it edits or deletes it"]})


@routes.get("/analyst_data/view/{type}/{ref}", READ_ONLY)
async def analyst_view(request: web.Request) -> web.Response:
    body, _ = await _held(request)
    return web.json_response({body["type"]: await run(_shown, request.app[CTX], body)})


@routes.post("/analyst_data/edit/{type}/{ref}", USER)
async def analyst_edit(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body, _ = await _held(request)
    _must_be_creator(ctx, body)
    type_ = body["type"]
    what = f"edit {type_}"
    posted = await _posted(request, type_, what)
    item = body["item"]
    # the held item with the editable fields posted (MISP's getEditableFields), checked again whole
    raw = {k: v for k, v in item.items() if k not in ("created", "modified")}
    raw["created"] = item["created"]
    for name in (*_BASE_EDITABLE, *_EDITABLE[type_]):
        if name in posted:
            raw[name] = posted[name]
    if "distribution" in posted and str(posted["distribution"]) != "4":
        raw.pop("sharing_group_uuid", None)
    edited = _checked(ctx, raw, type_, what, object_uuid=item["object_uuid"], object_type=item["object_type"])
    edited["modified"] = max(int(time.time()), item["modified"] + 1)  # newer than the held record, always
    edited["Orgc"] = item.get("Orgc") or {"name": ctx.node.config.org_name, "uuid": item["orgc_uuid"]}
    new = {"event_uuid": body["event_uuid"], "type": type_, "item": dict(sorted(edited.items()))}
    await run(_write, ctx, new)
    return web.json_response({type_: await run(_shown, ctx, new)})


@routes.post("/analyst_data/delete/{type}/{ref}", USER)
@routes.delete("/analyst_data/delete/{type}/{ref}", USER)
async def analyst_delete(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body, _ = await _held(request)
    _must_be_creator(ctx, body)
    await run(_write, ctx, tombstone(body, int(time.time())))
    type_ = body["type"]
    message = f"{type_} deleted."
    return web.json_response({"saved": True, "success": True, "name": message, "message": message,
                              "url": request.path, "id": str(item_id(body["item"]["uuid"]))})


def _index_filters(request: web.Request, document: Any) -> dict[str, str]:
    filters: dict[str, Any] = dict(request.query)
    if isinstance(document, dict):
        filters.update(document)
    elif document not in ({}, None):
        raise ApiError(400, "analyst_data/index: expected a map of filters", {"body": ["expected a JSON object"]})
    unknown = sorted(set(filters) - set(_INDEX_FILTERS))
    if unknown:
        raise ApiError(400, f"analyst_data/index: unknown filter {unknown[0][:60]!r}; accepted: {', '.join(_INDEX_FILTERS)}",
                       {unknown[0][:60]: ["not a filter of analyst_data/index"]})
    for name, value in filters.items():
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise ApiError(400, f"analyst_data/index: {name}: expected text", {name: ["expected text"]})
    return {k: str(v).strip().lower() for k, v in filters.items()}


def _index(ctx: ApiContext, type_: str, filters: dict[str, str]) -> list[dict[str, Any]]:
    orgs = known_orgs(ctx)
    target = filters.get("target_object") or filters.get("object_uuid")
    needle = filters.get("quickFilter", "")
    out = []
    for body, _ in sorted(_all_items(ctx), key=lambda b: (b[0]["item"]["created"], b[0]["item"]["uuid"])):
        item = body["item"]
        if item.get("deleted") or body["type"] != type_:
            continue
        if "uuid" in filters and item["uuid"] != filters["uuid"]:
            continue
        if target and item["object_uuid"] != target:
            continue
        if "orgc_uuid" in filters and item["orgc_uuid"] != filters["orgc_uuid"]:
            continue
        if needle and not any(needle in str(item.get(k, "")).lower() for k in _EDITABLE[type_]):
            continue
        out.append({type_: with_sharing_group_ids(item_json(type_, item, orgs))})
    return out


@routes.get("/analyst_data/index/{type}", READ_ONLY)
@routes.post("/analyst_data/index/{type}", READ_ONLY)
async def analyst_index(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    type_ = _type(request)
    document = await body_json(request, required=False) if request.method == "POST" else None
    filters = _index_filters(request, document)
    return web.json_response(await run(_index, ctx, type_, filters))
