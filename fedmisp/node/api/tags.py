"""Tags through the REST API (tags/*): index, view, add, edit, delete, attach and remove.

A tag exists on this node by use (a held revision carries it) or because an admin added it
(tags/add). Its settings (colour, exportable, hide_tag) are node-local. Its id is derived from its
name, so every node numbers a tag alike and nothing has to be stored to number one.

Attaching a shared tag makes a new revision of the event, so only events this node created take one
(another organisation's event: 403, as for any edit). A local tag is a node-local annotation kept
beside the event, outside every revision: it is never signed, never in the changes log, never sent
to a peer, and may be put on any organisation's event or attribute (docs DESIGN "Records").

tags/search is in node/api/taxonomies.py: it answers each tag with the taxonomy it belongs to.
"""
from __future__ import annotations

import uuid as _uuid
from typing import Any

from aiohttp import web

from fedmisp.model.misp import MAX_TAG_NAME
from fedmisp.node.api.access import ADMIN, READ_ONLY, USER, MispRoutes
from fedmisp.node.api.helpers import (
    CTX, ApiContext, ApiError, body_json, change_tag, path_ref, posted_object, resolve_event, run,
)
from fedmisp.node.api.params import flag
from fedmisp.node.api.render import known_tags as _known_tags, tag_id, tag_json
from fedmisp.store import query

routes = MispRoutes()

_COLOUR_CHARS = frozenset("0123456789abcdefABCDEF")


@routes.get("/tags/index", READ_ONLY)
async def tag_index(request: web.Request) -> web.Response:
    tags = await run(_known_tags, request.app[CTX])
    return web.json_response({"Tag": [tag_json(n, s) for n, s in tags.items()]})


def _tag_name(value: Any, field_: str = "name") -> str:
    if isinstance(value, dict):
        value = value.get("name")
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TAG_NAME:
        raise ApiError(400, f"{field_}: expected a tag name of 1 to {MAX_TAG_NAME} characters such as tlp:green",
                       {field_: [f"expected a tag name of 1 to {MAX_TAG_NAME} characters"]}, "Invalid tag")
    return value.strip()


async def _find_tag(ctx: ApiContext, ref: str) -> tuple[str, dict[str, Any]]:
    """(name, settings) of a known tag by id or name; 404 if none."""
    tags = await run(_known_tags, ctx)
    for name, settings in tags.items():
        if ref in (name, tag_id(name)):
            return name, settings
    raise ApiError(404, "Invalid Tag", f"no tag {ref!r} on this node; give its id (tags/index) or name",
                   name="Invalid Tag")


def _settings(raw: dict[str, Any], held: dict[str, Any]) -> dict[str, Any]:
    """The node-local settings in a posted tag, over the held ones; bad fields are 400s naming them."""
    out = dict(held)
    colour = raw.get("colour")
    if colour not in (None, ""):
        if not (isinstance(colour, str) and len(colour) == 7 and colour[0] == "#" and set(colour[1:]) <= _COLOUR_CHARS):
            raise ApiError(400, f"colour: {colour!r} is not a colour; expected #RRGGBB",
                           {"colour": ["expected #RRGGBB such as #ff0000"]}, "Invalid tag")
        out["colour"] = colour.lower()
    for key in ("exportable", "hide_tag"):
        if key in raw and raw[key] is not None:
            value = raw[key]
            if value not in (True, False, 0, 1, "0", "1"):
                raise ApiError(400, f"{key}: expected true or false", {key: ["expected true or false (or 0/1)"]},
                               "Invalid tag")
            out[key] = flag(value)
    return out


@routes.get("/tags/view/{ref}", READ_ONLY)
async def tag_view(request: web.Request) -> web.Response:
    name, settings = await _find_tag(request.app[CTX], path_ref(request))
    return web.json_response({"Tag": tag_json(name, settings)})


@routes.post("/tags/add", ADMIN)
async def tag_add(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    raw = await posted_object(request, "Tag", "add Tag")
    name = _tag_name(raw.get("name"))
    settings = _settings(raw, {})
    async with ctx.edit_lock:
        if name in await run(_known_tags, ctx):
            raise ApiError(403, f"Could not add Tag: a tag named {name!r} exists already",
                           {"name": ["A similar name already exists"]}, "Could not add Tag")
        await run(ctx.store.set_tag_settings, name, settings)
    return web.json_response({"Tag": tag_json(name, settings)})


@routes.post("/tags/edit/{ref}", ADMIN)
async def tag_edit(request: web.Request) -> web.Response:
    """tags/edit/<id>: colour, exportable and hide_tag. A name travels in signed revisions, so a
    tag is not renamed: tag anew and remove the old one."""
    ctx = request.app[CTX]
    raw = await posted_object(request, "Tag", "edit Tag")
    async with ctx.edit_lock:
        name, held = await _find_tag(ctx, path_ref(request))
        if raw.get("name") not in (None, "", name):
            raise ApiError(403, f"Could not edit Tag: name: {name!r} cannot be renamed; tags travel by name in "
                           "signed revisions (attach the new name and remove the old one instead)",
                           {"name": ["a tag's name cannot change"]}, "Could not edit Tag")
        settings = _settings(raw, held)
        await run(ctx.store.set_tag_settings, name, settings)
    return web.json_response({"Tag": tag_json(name, settings)})


@routes.post("/tags/delete/{ref}", ADMIN)
@routes.delete("/tags/delete/{ref}", ADMIN)
async def tag_delete(request: web.Request) -> web.Response:
    """tags/delete/<id>: forget the tag's settings and take it off every local tag list. A tag that
    a held revision still carries cannot go (that would need its creator's new revision)."""
    ctx = request.app[CTX]
    async with ctx.edit_lock:
        name, _settings_held = await _find_tag(ctx, path_ref(request))
        if await run(query.tag_in_use, ctx.store, name):
            raise ApiError(403, f"Could not delete Tag: {name!r} is attached to events or attributes held here; "
                           "remove it from them first (tags/removeTagFromObject)",
                           {"Tag": ["in use in signed revisions"]}, "Could not delete Tag")
        await run(ctx.store.drop_local_tag, name)
        await run(ctx.store.set_tag_settings, name, None)
    return web.json_response({"saved": True, "success": True, "name": "Tag deleted.", "message": "Tag deleted.",
                              "url": request.path, "id": tag_id(name)})


async def _tag_target(ctx: ApiContext, ref: Any) -> tuple[str, str | None]:
    """(event uuid, element uuid or None for the event itself) from a uuid or event id."""
    if not isinstance(ref, (str, int)) or isinstance(ref, bool):
        raise ApiError(400, "uuid: expected the uuid of an event or attribute", {"uuid": ["expected a uuid"]})
    ref = str(ref)
    if query.is_uuid(ref):
        ref = str(_uuid.UUID(ref))
        if await run(query.resolve_event, ctx.store, ref):
            return await resolve_event(ctx, ref), None
        found = await run(query.find_element, ctx.store, ref)
        if found is not None and await run(query.event_head, ctx.store, found[0]) is not None:
            return found[0], ref
    elif ref.isdigit():
        return await resolve_event(ctx, ref), None
    raise ApiError(404, "Invalid target", f"no event or attribute {ref!r} on this node")


async def _attach_name(ctx: ApiContext, value: Any) -> str:
    """The tag to attach: a name, or (as MISP) the numeric id of a tag this node knows."""
    name = _tag_name(value, "tag")
    if name.isdigit():
        for known in await run(_known_tags, ctx):
            if tag_id(known) == name:
                return known
    return name


async def _change_tags(request: web.Request, attach: bool) -> web.Response:
    ctx = request.app[CTX]
    params = await body_json(request)
    if not isinstance(params, dict):
        raise ApiError(400, "expected {\"uuid\": ..., \"tag\": ...}", {"body": ["expected a JSON object"]})
    name = await _attach_name(ctx, params.get("tag"))
    local = flag(params.get("local"))
    event_uuid, element_uuid = await _tag_target(ctx, params.get("uuid"))
    node_local = await change_tag(request, event_uuid, element_uuid, _tag(name, params), attach, local)
    return web.json_response({"saved": True, "success": "Tag(s) attached." if attach else "Tag removed.",
                              "check_publish": not node_local})


def _tag(name: str, params: dict[str, Any]) -> dict[str, Any]:
    tag: dict[str, Any] = {"name": name}
    if isinstance(params.get("relationship_type"), str) and params["relationship_type"]:
        tag["relationship_type"] = params["relationship_type"]
    return tag


@routes.post("/tags/attachTagToObject", USER)
async def tag_attach(request: web.Request) -> web.Response:
    return await _change_tags(request, True)


@routes.post("/tags/removeTagFromObject", USER)
async def tag_remove(request: web.Request) -> web.Response:
    return await _change_tags(request, False)

