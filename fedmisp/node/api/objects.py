"""MISP objects and object references through the REST API (objects/*, objectReferences/*).

An object is an element of its event's revision like an attribute: adding, deleting or referencing
one makes a new revision of an event this node created (store/mutations.py `revise`), validated
whole against the misp-objects template (model/misp.py), stored whole or not at all. Soft delete
marks the object and its attributes `deleted` (MISP does both); hard delete drops the object, its
attributes and its references from the revision.
"""
from __future__ import annotations

import uuid as _uuid
from typing import Any, Callable

from aiohttp import web

from fedmisp.model.misp import to_misp
from fedmisp.node.api.access import READ_ONLY, USER, MispRoutes
from fedmisp.node.api.helpers import (
    CTX, ApiContext, ApiError, must_be_creator, path_ref, posted_object, resolve_element,
    resolve_event, revise_event, run, sharing_group_uuids, wants_hard_delete,
)
from fedmisp.node.api.render import number_event
from fedmisp.store import query
from fedmisp.store.mutations import misp_element
from fedmisp.store.query import element_id

routes = MispRoutes()

# Attributes one objects/add may carry (the largest misp-objects templates list about a hundred
# relations; a file object with many hashes stays far below).
MAX_OBJECT_ATTRIBUTES = 1_000
_ADD_FIELDS = ("name", "meta-category", "description", "template_uuid", "template_version", "uuid",
               "distribution", "sharing_group_uuid", "comment", "first_seen", "last_seen", "Attribute",
               "ObjectReference")


def _object_json(ctx: ApiContext, event_uuid: str, object_uuid: str) -> dict[str, Any] | None:
    """One object as MISP shows it (objects/view, objects/add): ids, its attributes (deleted ones
    too, flagged) and references."""
    head = query.event_head(ctx.store, event_uuid)
    if head is None:
        return None
    elements = query.event_elements(ctx.store, event_uuid)
    members = [e for e in elements if e["uuid"] == object_uuid or e.get("object_uuid") == object_uuid]
    local = ctx.store.local_tags([e["uuid"] for e in members])
    event = to_misp(head.header, members, local_tags=local)
    event["Event"]["Attribute"] = []
    numbered = number_event(event, head.id, include_deleted=True)["Event"]["Object"]
    if not numbered:
        return None
    o = numbered[0]
    by_uuid = {e["uuid"]: e for e in elements}
    for r in o["ObjectReference"]:
        _number_reference(r, by_uuid)
    return o


def _number_reference(r: dict[str, Any], by_uuid: dict[str, dict[str, Any]]) -> None:
    r["id"] = str(element_id(r["uuid"]))
    target = by_uuid.get(r["referenced_uuid"])
    if target is not None:
        r["referenced_id"] = str(element_id(target["uuid"]))
        r["referenced_type"] = "0" if "value" in target else "1"  # MISP: 0 attribute, 1 object


async def _resolve_object(ctx: ApiContext, ref: str) -> tuple[str, dict[str, Any]]:
    event_uuid, body = await resolve_element(ctx, ref, "object")
    if await run(query.event_head, ctx.store, event_uuid) is None:
        raise ApiError(404, "Invalid object", f"the event of object {ref!r} was deleted")
    return event_uuid, body


@routes.get("/objects/view/{ref}", READ_ONLY)
async def object_view(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid, body = await _resolve_object(ctx, path_ref(request))
    o = await run(_object_json, ctx, event_uuid, body["uuid"])
    if o is None:
        raise ApiError(404, "Invalid object")
    return web.json_response({"Object": o})


@routes.post("/objects/add/{ref}{tail:(/.*)?}", USER)
async def object_add(request: web.Request) -> web.Response:
    """POST objects/add/<event id|uuid>[/<template uuid>] with a MISP object (PyMISP add_object)."""
    ctx = request.app[CTX]
    event_uuid = await resolve_event(ctx, path_ref(request))
    what = "add Object"
    raw = await posted_object(request, "Object", what)
    posted = {k: v for k, v in (await sharing_group_uuids(ctx, raw)).items() if k in _ADD_FIELDS}
    tail = [part for part in request.match_info.get("tail", "").split("/") if part]
    # CakePHP named parameters (PyMISP: breakOnDuplicate:1) beside an optional template uuid
    named = dict(part.partition(":")[::2] for part in tail if ":" in part)
    unknown = sorted(set(named) - {"breakOnDuplicate"})
    if unknown:
        raise ApiError(400, f"Could not add Object: unknown parameter {unknown[0]!r}; accepted: breakOnDuplicate",
                       {unknown[0]: ["unknown parameter"]}, "Could not add Object")
    for template in (part for part in tail if ":" not in part):
        if not query.is_uuid(template):
            raise ApiError(400, f"Could not add Object: template {template!r} is not a template uuid",
                           {"template_uuid": ["expected a misp-objects template uuid"]}, "Could not add Object")
        posted.setdefault("template_uuid", template)
    break_on_duplicate = named.get("breakOnDuplicate") in ("1", "true") or raw.get("breakOnDuplicate") in (1, "1", True)
    attributes = posted.get("Attribute")
    if not isinstance(attributes, list) or not attributes:
        raise ApiError(400, "Could not add Object: an object needs at least one attribute",
                       {"Attribute": ["expected a non-empty list of attributes"]}, "Could not add Object")
    if len(attributes) > MAX_OBJECT_ATTRIBUTES:
        raise ApiError(400, f"Could not add Object: {len(attributes)} attributes; at most {MAX_OBJECT_ATTRIBUTES}",
                       {"Attribute": [f"at most {MAX_OBJECT_ATTRIBUTES} attributes"]}, "Could not add Object")
    object_uuid = str(posted.get("uuid") or _uuid.uuid4()).lower()
    posted["uuid"] = object_uuid
    # An addition is made now: no timestamps, and no ids of another instance.
    posted["Attribute"] = [{k: v for k, v in a.items() if k not in ("id", "event_id", "object_id", "timestamp")}
                           if isinstance(a, dict) else a for a in attributes]
    if query.is_uuid(object_uuid) and await run(query.element_event, ctx.store, object_uuid) is not None:
        raise ApiError(403, f"Could not add Object: uuid {object_uuid} is already used",
                       {"uuid": ["already in use; leave uuid out to get a new one"]}, "Could not add Object")
    if break_on_duplicate and await run(_has_duplicate, ctx, event_uuid, posted):
        raise ApiError(403, "Could not add Object: Duplicate object found. Since breakOnDuplicate is set the object "
                       "will not be added.", {"Object": ["an object with these attributes exists in this event"]},
                       "Could not add Object")
    await revise_event(request, event_uuid, what, posted={"Object": [posted]})
    o = await run(_object_json, ctx, event_uuid, object_uuid)
    return web.json_response({"Object": o})


# What objects/edit changes (MISP's MispObject::deltaMerge): these fields of the object, and of each
# posted attribute that has the uuid of one of its attributes.
_OBJECT_EDITABLE = ("comment", "template_version", "distribution", "sharing_group_uuid", "first_seen", "last_seen")
_MEMBER_EDITABLE = ("category", "value", "to_ids", "distribution", "sharing_group_uuid", "comment",
                    "disable_correlation", "first_seen", "last_seen")
_NOT_COPIED = ("id", "event_id", "object_id", "timestamp")  # another instance's, or the server's to set


@routes.post("/objects/edit/{ref}", USER)
async def object_edit(request: web.Request) -> web.Response:
    """POST objects/edit/<id|uuid> with a MISP object (PyMISP update_object), as MISP merges it: the
    object's comment, template version, distribution and seen times; each posted attribute with
    the uuid of one of the object's attributes changes that attribute, any other is added to the
    object, and the object's attributes the post leaves out are soft-deleted (only when the post
    lists attributes at all). One new revision, validated against the template, or nothing."""
    ctx = request.app[CTX]
    event_uuid, body = await _resolve_object(ctx, path_ref(request))
    await must_be_creator(ctx, event_uuid)
    what, name = "edit Object", "Could not edit Object"
    posted = await sharing_group_uuids(ctx, await posted_object(request, "Object", "edit Object"))
    attributes = posted.get("Attribute", [])
    if not isinstance(attributes, list) or not all(isinstance(a, dict) for a in attributes):
        raise ApiError(400, f"{name}: Attribute: expected a list of attributes", {"Attribute": ["expected a list"]}, name)
    if len(attributes) > MAX_OBJECT_ATTRIBUTES:
        raise ApiError(400, f"{name}: {len(attributes)} attributes; at most {MAX_OBJECT_ATTRIBUTES}",
                       {"Attribute": [f"at most {MAX_OBJECT_ATTRIBUTES} attributes"]}, name)
    head = await run(query.event_head, ctx.store, event_uuid)
    elements = await run(query.event_elements, ctx.store, event_uuid)
    post = misp_element(head.header, elements, body["uuid"])
    o = post["Object"][0]
    o.update((k, posted[k]) for k in _OBJECT_EDITABLE if k in posted)
    o.pop("timestamp", None)
    if attributes:
        held = {a["uuid"]: a for a in o["Attribute"]}
        kept: set[str] = set()
        added: list[dict[str, Any]] = []
        for a in attributes:
            u = str(a.get("uuid") or "").lower()
            target = held.get(u)
            if target is None:
                if u and query.is_uuid(u) and await run(query.element_event, ctx.store, u) is not None:
                    raise ApiError(403, f"{name}: attribute uuid {u} is already used outside this object",
                                   {"uuid": ["already in use; leave uuid out to get a new one"]}, name)
                added.append({k: v for k, v in a.items() if k not in _NOT_COPIED})
                continue
            kept.add(u)
            changes = {k: a[k] for k in _MEMBER_EDITABLE if k in a and not _same(target.get(k), a[k])}
            if changes:
                target.update(changes)
                target.pop("timestamp", None)
        for u, a in held.items():
            if u not in kept and not a.get("deleted"):
                a["deleted"] = True
                a.pop("timestamp", None)
        o["Attribute"] = [*held.values(), *added]
    await revise_event(request, event_uuid, what, posted=post)
    return web.json_response({"Object": await run(_object_json, ctx, event_uuid, body["uuid"])})


def _same(held: Any, posted: Any) -> bool:
    """MISP compares posted fields loosely: True and "1", 5 and "5" are the same."""
    def plain(v: Any) -> str:
        return str(int(v)) if isinstance(v, bool) else "" if v is None else str(v)
    return plain(held) == plain(posted)


def _has_duplicate(ctx: ApiContext, event_uuid: str, posted: dict[str, Any]) -> bool:
    """MISP's breakOnDuplicate: a live object of the same name whose attributes (relation, type,
    value) are the posted ones."""
    def shape(attributes: list[Any]) -> set[tuple[Any, Any, Any]]:
        return {(a.get("object_relation"), a.get("type"), a.get("value")) for a in attributes if isinstance(a, dict)}
    wanted = shape(posted["Attribute"])
    elements = query.event_elements(ctx.store, event_uuid)
    members: dict[str, list[dict[str, Any]]] = {}
    for e in elements:
        if "value" in e and "object_uuid" in e and not e.get("deleted"):
            members.setdefault(e["object_uuid"], []).append(e)
    return any(shape(members.get(e["uuid"], [])) == wanted for e in elements
               if "name" in e and "value" not in e and e["name"] == posted.get("name") and not e.get("deleted"))


@routes.post("/objects/delete/{ref}{hard:(/1|/true|/0|/false)?}", USER)
@routes.delete("/objects/delete/{ref}", USER)
async def object_delete(request: web.Request) -> web.Response:
    """POST objects/delete/<id|uuid>[/1|/true] (or {"hard": 1}): soft or hard delete."""
    ctx = request.app[CTX]
    event_uuid, body = await _resolve_object(ctx, path_ref(request))
    hard = await wants_hard_delete(request)

    def soft(o: dict[str, Any]) -> list[dict[str, Any]]:
        return [o, *o["Attribute"]]
    return await _delete(request, event_uuid, body, "Object", hard, soft)


async def _delete(request: web.Request, event_uuid: str, body: dict[str, Any], kind: str, hard: bool,
                  marked: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> web.Response:
    """Hard: the element (with an object's members) leaves the revision. Soft: the items `marked`
    picks from its object's MISP JSON are flagged deleted, as changes made now."""
    ctx = request.app[CTX]
    what = f"delete {kind}"
    if hard:
        await revise_event(request, event_uuid, what, posted={}, remove=frozenset({body["uuid"]}))
    elif not body.get("deleted"):
        head = await run(query.event_head, ctx.store, event_uuid)
        elements = await run(query.event_elements, ctx.store, event_uuid)
        post = misp_element(head.header, elements, body.get("object_uuid") or body["uuid"])
        for item in marked(post["Object"][0]):
            item["deleted"] = True
            item.pop("timestamp", None)
        await revise_event(request, event_uuid, what, posted=post)
    message = f"{kind} deleted."
    return web.json_response({"saved": True, "success": True, "name": message, "message": message,
                              "url": request.path, "id": str(element_id(body["uuid"]))})


# --- object references ---------------------------------------------------------------------------------

@routes.post("/objectReferences/add", USER)
@routes.post("/objectReferences/add/{ref}", USER)
async def reference_add(request: web.Request) -> web.Response:
    """POST objectReferences/add[/<object id|uuid>] with {object_uuid, referenced_uuid,
    relationship_type[, comment, uuid]} (PyMISP add_object_reference)."""
    ctx = request.app[CTX]
    raw = await posted_object(request, "ObjectReference", "add ObjectReference")
    name = "Could not add ObjectReference"
    ref = path_ref(request) or raw.get("object_uuid") or raw.get("object_id")
    if not isinstance(ref, (str, int)) or isinstance(ref, bool) or not str(ref):
        raise ApiError(400, f"{name}: object_uuid: missing; give the uuid of the referencing object",
                       {"object_uuid": ["missing"]}, name)
    event_uuid, body = await _resolve_object(ctx, str(ref))
    target = raw.get("referenced_uuid")
    if not isinstance(target, str) or not query.is_uuid(target):
        raise ApiError(400, f"{name}: referenced_uuid: expected the uuid of an attribute or object",
                       {"referenced_uuid": ["expected a uuid"]}, name)
    target = str(_uuid.UUID(target))
    if await run(query.element_event, ctx.store, target) is None and await run(query.resolve_event, ctx.store, target) is None:
        raise ApiError(404, f"{name}: referenced_uuid {target} is no attribute, object or event on this node",
                       {"referenced_uuid": ["not held on this node"]}, name)
    reference_uuid = str(raw.get("uuid") or _uuid.uuid4()).lower()
    if query.is_uuid(reference_uuid) and await run(query.element_event, ctx.store, reference_uuid) is not None:
        raise ApiError(403, f"{name}: uuid {reference_uuid} is already used", {"uuid": ["already in use"]}, name)
    reference = {"uuid": reference_uuid, "referenced_uuid": target,
                 "relationship_type": raw.get("relationship_type"), "comment": raw.get("comment") or ""}
    head = await run(query.event_head, ctx.store, event_uuid)
    elements = await run(query.event_elements, ctx.store, event_uuid)
    post = misp_element(head.header, elements, body["uuid"])
    post["Object"][0]["ObjectReference"].append(reference)
    await revise_event(request, event_uuid, "add ObjectReference", posted=post)
    o = await run(_object_json, ctx, event_uuid, body["uuid"])
    added = next(r for r in o["ObjectReference"] if r["uuid"] == reference_uuid)
    return web.json_response({"ObjectReference": added})


@routes.post("/objectReferences/delete/{ref}{hard:(/1|/true|/0|/false)?}", USER)
async def reference_delete(request: web.Request) -> web.Response:
    """POST objectReferences/delete/<id|uuid>[/true]: soft (deleted flag) or hard delete."""
    ctx = request.app[CTX]
    event_uuid, body = await resolve_element(ctx, path_ref(request), "reference")
    hard = request.match_info.get("hard", "") in ("/1", "/true")

    def soft(o: dict[str, Any]) -> list[dict[str, Any]]:
        return [r for r in o["ObjectReference"] if r["uuid"] == body["uuid"]]
    return await _delete(request, event_uuid, body, "ObjectReference", hard, soft)

