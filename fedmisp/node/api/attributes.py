"""Attributes: attributes/view, add, edit and delete (restSearch is node/api/search.py)."""
from __future__ import annotations

import uuid as _uuid
from typing import Any

from aiohttp import web

from fedmisp.model.describe import describe_types
from fedmisp.model.misp import element_kind
from fedmisp.node.api.access import READ_ONLY, USER, MispRoutes
from fedmisp.node.api.helpers import (
    ApiError, CTX, body_json, edit_element, expect, must_be_creator, path_ref, resolve_element,
    resolve_event, revise_event, run, sharing_group_uuids, unwrap, wants_hard_delete,
)
from fedmisp.node.api.render import shown_attribute
from fedmisp.store import query
from fedmisp.store.query import element_id

routes = MispRoutes()
# Attributes one attributes/add request may carry (MISP accepts lists; this bounds one revision edit).
MAX_ATTRIBUTES_PER_ADD = 10_000


@routes.get("/attributes/view/{ref}", READ_ONLY)
async def attribute_view(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    _event_uuid, body = await resolve_element(ctx, path_ref(request), "attribute")
    a = await run(shown_attribute, ctx, body["uuid"])
    if a is None:
        raise ApiError(404, "Invalid attribute")
    return web.json_response({"Attribute": a})


@routes.post("/attributes/add/{ref}", USER)
@routes.post("/attributes/add/{ref}/{opts:.*}", USER)
async def attribute_add(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid = await resolve_event(ctx, path_ref(request))
    await must_be_creator(ctx, event_uuid)
    document = await body_json(request)
    many = isinstance(document, list)
    posted = document if many else [unwrap(document, "Attribute")]
    if not posted or len(posted) > MAX_ATTRIBUTES_PER_ADD:
        raise ApiError(400, f"Could not add Attribute: expected 1 to {MAX_ATTRIBUTES_PER_ADD} attributes",
                       {"Attribute": ["expected an attribute object or a list of them"]}, "Could not add Attribute")
    elements = await run(query.event_elements, ctx.store, event_uuid)
    held = {e["uuid"] for e in elements}
    similar = {(e["type"], e["category"], e["value"]) for e in elements
               if element_kind(e) == "attribute" and not e.get("deleted") and "object_uuid" not in e}
    attributes = []
    for i, a in enumerate(posted):
        if not isinstance(a, dict):
            raise ApiError(400, f"Could not add Attribute: Attribute[{i}] is not a JSON object",
                           {f"Attribute[{i}]": ["expected a JSON object"]}, "Could not add Attribute")
        a = {k: v for k, v in (await sharing_group_uuids(ctx, a)).items()
             if k not in ("id", "event_id", "object_id", "object_uuid")}
        a.setdefault("uuid", str(_uuid.uuid4()))
        # read here for the similar-attribute check, before the parser sees them
        expect(a.get("type"), f"Attribute[{i}].type", "a MISP attribute type (describeTypes)", "add Attribute")
        expect(a.get("category"), f"Attribute[{i}].category", "a MISP category (describeTypes)", "add Attribute")
        expect(a.get("value"), f"Attribute[{i}].value", "the attribute's value as a string", "add Attribute",
               (str, int, float))
        if str(a["uuid"]).lower() in held:
            raise ApiError(403, f"Could not add Attribute: uuid {a['uuid']} is already used in this event",
                           {"uuid": ["already in use"]}, "Could not add Attribute")
        if (a.get("type"), a.get("category") or _default_category(a.get("type")), a.get("value")) in similar:
            raise ApiError(403, "Could not add Attribute: A similar attribute already exists for this event.",
                           {"value": ["A similar attribute already exists for this event."]}, "Could not add Attribute")
        a.pop("timestamp", None)  # an addition is made now
        attributes.append(a)
    await revise_event(request, event_uuid, "add Attribute", posted={"Attribute": attributes})
    views = [await run(shown_attribute, ctx, str(a["uuid"]).lower()) for a in attributes]
    return web.json_response({"Attribute": views if many else views[0]})


def _default_category(type_: Any) -> str | None:
    defaults = describe_types().sane_defaults
    return defaults[type_].default_category if isinstance(type_, str) and type_ in defaults else None


_ATTRIBUTE_EDITABLE = ("type", "category", "value", "to_ids", "distribution", "comment", "disable_correlation",
                       "first_seen", "last_seen", "sharing_group_uuid", "deleted", "timestamp", "Tag",
                       "object_relation")


@routes.post("/attributes/edit/{ref}", USER)
async def attribute_edit(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid, body = await resolve_element(ctx, path_ref(request), "attribute")
    await must_be_creator(ctx, event_uuid)
    posted = unwrap(await body_json(request), "Attribute")
    if not isinstance(posted, dict):
        raise ApiError(400, "Could not edit Attribute: expected {\"Attribute\": {...}}",
                       {"Attribute": ["expected a JSON object"]}, "Could not edit Attribute")
    changes = {k: v for k, v in (await sharing_group_uuids(ctx, posted)).items() if k in _ATTRIBUTE_EDITABLE}
    if "timestamp" in changes:
        ts = changes["timestamp"]
        if not (isinstance(ts, (int, str)) and str(ts).isdigit() and int(ts) > body["timestamp"]):
            raise ApiError(403, "Attribute could not be saved: Attribute in the request not newer than the local "
                           f"copy (timestamp {ts!r}, held {body['timestamp']}); leave timestamp out to edit now",
                           {"timestamp": ["not newer than the held attribute"]}, "Could not edit Attribute")
    if "Tag" in changes:
        changes.pop("Tag")  # tags change through tags/attachTagToObject and removeTagFromObject
    await edit_element(request, event_uuid, body["uuid"], changes, "edit Attribute")
    return web.json_response({"Attribute": await run(shown_attribute, ctx, body["uuid"])})


@routes.post("/attributes/delete/{ref}{hard:(/1)?}", USER)
async def attribute_delete(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid, body = await resolve_element(ctx, path_ref(request), "attribute")
    await must_be_creator(ctx, event_uuid)
    hard = await wants_hard_delete(request)
    if hard:
        await revise_event(request, event_uuid, "delete Attribute", posted={}, remove=frozenset({body["uuid"]}))
    elif not body.get("deleted"):
        await edit_element(request, event_uuid, body["uuid"], {"deleted": True}, "delete Attribute")
    return web.json_response({"message": "Attribute deleted.", "success": True, "saved": True, "url": request.path,
                              "id": str(element_id(body["uuid"]))})
