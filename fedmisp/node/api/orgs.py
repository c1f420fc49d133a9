"""Organisations and sharing groups through the REST API (organisations/*, admin/organisations/add,
sharingGroups/*).

An organisation is known to this node by its own signed org record (its node sends it over gossip)
or because an admin introduced it by uuid, name and public key (admin/organisations/add); the key is
what makes records that organisation signs acceptable (docs DESIGN "The pipeline", inbound 1).

A sharing group is a chain of signed revisions owned by the organisation that created it
(gossip/sharing_groups.py, rules in policy/sharing_groups.py). Every change made here is a new
revision signed by this node: the owner may change anything, an extend member may only add
members, anyone else is refused (403). Deleting a group is a last revision that leaves only the
owner a member and marks it deleted, so no other node receives anything new through it.

Numeric ids (MISP's `id`): this node's organisation is 1; other organisations and sharing groups
are numbered like elements, from the first 7 bytes of their uuid (decision 0005).
"""
from __future__ import annotations

import uuid as _uuid
from typing import Any

from aiohttp import web

from fedmisp.gossip import sharing_groups as sg
from fedmisp.model.identity import decode_key, encode_key
from fedmisp.node.api.access import ADMIN, READ_ONLY, MispRoutes
from fedmisp.node.api.helpers import (
    CTX, ApiContext, ApiError, body_json, find_org, known_orgs, org_id, path_ref, posted_object, run,
)
from fedmisp.node.api.ids import find_sharing_group
from fedmisp.node.api.params import flag
from fedmisp.policy.model import SharingGroup
from fedmisp.store import query
from fedmisp.store.query import element_id

routes = MispRoutes()
# MISP answers both spellings; PyMISP uses both
groups = routes.controller("/sharingGroups", "/sharing_groups")

MAX_NAME = 255  # MISP's organisations.name and sharing_groups.name are varchar(255)
MAX_TEXT = 65_535  # description, releasability: MISP's text columns


# --- organisations -----------------------------------------------------------------------------------

def org_json(ctx: ApiContext, org: dict[str, Any]) -> dict[str, Any]:
    local = org["uuid"] == ctx.node.config.org_uuid
    return {
        "id": org_id(ctx, org["uuid"]), "name": org["name"], "uuid": org["uuid"],
        "description": org.get("description", ""), "type": org.get("type", ""),
        "nationality": org.get("nationality", ""), "sector": org.get("sector", ""),
        "contacts": org.get("contact", ""), "local": local, "restricted_to_domain": [], "landingpage": None,
        "created_by": "0", "user_count": 0, "public_key": encode_key(org["key"]) if org.get("key") else None,
        # fedmisp: how this node knows it (its own signed org record, or an admin's introduction)
        "introduced": bool(org.get("introduced")),
    }


def _org_or_stub(ctx: ApiContext, org_uuid: str, orgs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A member org as MISP shows it; one not known here yet (no org record arrived) by uuid alone."""
    return org_json(ctx, orgs.get(org_uuid) or {"uuid": org_uuid, "name": org_uuid})


@routes.get("/organisations/index{tail:(/.*)?}", READ_ONLY)
async def org_index(request: web.Request) -> web.Response:
    """organisations/index[/scope:local|external|all][/searchall:TEXT]: MISP's default scope is
    local, this node's own organisation."""
    ctx = request.app[CTX]
    named = dict(part.partition(":")[::2] for part in request.match_info.get("tail", "").split("/") if ":" in part)
    scope = named.get("scope", request.query.get("scope", "local"))
    if scope not in ("local", "external", "all"):
        raise ApiError(400, f"scope: {scope!r}; accepted: local, external, all", {"scope": ["local, external or all"]})
    search = named.get("searchall", request.query.get("searchall", "")).lower()
    orgs = await run(known_orgs, ctx)
    own = ctx.node.config.org_uuid
    rows = [{"Organisation": org_json(ctx, o)} for u, o in orgs.items()
            if (scope == "all" or (scope == "local") == (u == own))
            and (not search or search in o["name"].lower() or search in u)]
    return web.json_response(rows)


@routes.get("/organisations/view/{ref}", READ_ONLY)
async def org_view(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ref = path_ref(request)
    org = await run(find_org, ctx, ref)
    if org is None:
        raise ApiError(404, "Invalid organisation", f"no organisation {ref!r} known to this node; give its id, "
                       "uuid or name (organisations/index/scope:all)", name="Invalid organisation")
    return web.json_response({"Organisation": org_json(ctx, org)})


def _text_field(raw: dict[str, Any], key: str, limit: int, what: str, *, required: bool = False) -> str:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            raise ApiError(400, f"Could not {what}: {key}: missing", {key: ["missing"]}, f"Could not {what}")
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise ApiError(400, f"Could not {what}: {key}: expected text of at most {limit} characters",
                       {key: [f"expected text of at most {limit} characters"]}, f"Could not {what}")
    return value.strip()


@routes.post("/admin/organisations/add", ADMIN)
async def org_add(request: web.Request) -> web.Response:
    """admin/organisations/add with {"Organisation": {"name", "uuid", "public_key"}}: a remote
    organisation, known from now on by its signing key."""
    ctx = request.app[CTX]
    what = "add Organisation"
    raw = await posted_object(request, "Organisation", what)
    name = _text_field(raw, "name", MAX_NAME, what, required=True)
    org_uuid = raw.get("uuid")
    if not isinstance(org_uuid, str) or not query.is_uuid(org_uuid):
        raise ApiError(400, "Could not add Organisation: uuid: expected the organisation's uuid (a remote "
                       "organisation keeps the uuid it has everywhere)", {"uuid": ["expected a uuid"]},
                       "Could not add Organisation")
    org_uuid = str(_uuid.UUID(org_uuid))
    try:
        key = decode_key(raw.get("public_key") if isinstance(raw.get("public_key"), str) else "")
    except ValueError as e:
        raise ApiError(400, f"Could not add Organisation: public_key: {e} (its node shows it: fedmisp status)",
                       {"public_key": [str(e)]}, "Could not add Organisation") from None
    if org_uuid == ctx.node.config.org_uuid or key == ctx.node.identity.public_key:
        raise ApiError(403, "Could not add Organisation: that is this node's own organisation",
                       {"uuid": ["this node's own organisation"]}, "Could not add Organisation")
    if not await run(ctx.store.introduce_org, org_uuid, name, key):
        raise ApiError(403, "Could not add Organisation: an organisation with this uuid or key is known already",
                       {"uuid": ["Organisation already exists"]}, "Could not add Organisation")
    org = await run(find_org, ctx, org_uuid)
    return web.json_response({"Organisation": org_json(ctx, org)})


# --- sharing groups -----------------------------------------------------------------------------------

def _groups(ctx: ApiContext) -> list[SharingGroup]:
    own = ctx.node.config.org_uuid
    # as MISP: the groups this organisation is in (a removed member holds the revision that removed it)
    return [g for g in sg.current_groups(ctx.store).values() if not g.deleted and (own in g.members or g.owner == own)]


def sharing_group_json(ctx: ApiContext, group: SharingGroup, orgs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    gid = str(element_id(group.uuid))
    members = []
    for i, (org_uuid, extend) in enumerate(sorted(group.members.items())):
        member = _org_or_stub(ctx, org_uuid, orgs)
        members.append({"id": str(i + 1), "sharing_group_id": gid,
                        "org_id": member["id"], "extend": extend, "Organisation": member})
    owner = _org_or_stub(ctx, group.owner, orgs)
    return {
        "SharingGroup": {
            "id": gid, "uuid": group.uuid, "name": group.name, "description": group.description,
            "releasability": group.releasability, "organisation_uuid": group.owner, "org_id": owner["id"],
            "sync_user_id": "0", "active": True, "local": True, "roaming": False,
            "revision": group.revision,  # fedmisp: the signed revision this node holds
            "editable": group.owner == ctx.node.config.org_uuid,
        },
        "Organisation": owner,
        "SharingGroupOrg": members,
        "SharingGroupServer": [],
    }


async def _group(ctx: ApiContext, ref: Any) -> SharingGroup:
    group = await run(lambda: find_sharing_group(sg.current_groups(ctx.store), ref))
    if group is None:
        raise ApiError(404, "Invalid sharing group", f"no sharing group {ref!r} on this node; give its id or uuid "
                       "(sharingGroups/index)", name="Invalid sharing group")
    return group


async def _group_response(ctx: ApiContext, group_uuid: str) -> web.Response:
    def view() -> dict[str, Any]:
        group = sg.current_groups(ctx.store)[group_uuid]
        return sharing_group_json(ctx, group, known_orgs(ctx))
    return web.json_response(await run(view))


@groups.get("/index", READ_ONLY)
async def sharing_group_index(request: web.Request) -> web.Response:
    ctx = request.app[CTX]

    def rows() -> list[dict[str, Any]]:
        orgs = known_orgs(ctx)
        return [sharing_group_json(ctx, g, orgs) for g in sorted(_groups(ctx), key=lambda g: g.name)]
    return web.json_response({"response": await run(rows)})


@groups.get("/view/{ref}", READ_ONLY)
async def sharing_group_view(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    group = await _group(ctx, path_ref(request))
    return await _group_response(ctx, group.uuid)


def _refused(e: sg.SharingGroupError, what: str) -> ApiError:
    text = str(e)
    # refused by the revision rules (not the owner, not an extend member): a permission problem
    status = 403 if "refused" in text or "exists" in text else 400
    return ApiError(status, f"Could not {what}: {text}", {"SharingGroup": [text]}, f"Could not {what}")


async def _sign(request: web.Request, what: str, fn: Any, *args: Any, **kwargs: Any) -> SharingGroup:
    """Make and store one revision (under the node's edit lock: revisions are read-modify-write)."""
    ctx = request.app[CTX]
    async with ctx.edit_lock:
        try:
            return await run(fn, ctx.store, ctx.node.identity, ctx.node.config.org_uuid, *args, **kwargs)
        except sg.SharingGroupError as e:
            raise _refused(e, what) from None


def _members(ctx: ApiContext, raw: Any, what: str) -> dict[str, bool]:
    """SharingGroupOrg entries of a posted group: organisations this node knows, by id, uuid or name."""
    if raw in (None, ""):
        return {}
    if not isinstance(raw, list) or len(raw) > sg.MAX_MEMBERS:
        raise ApiError(400, f"Could not {what}: SharingGroupOrg: expected a list of at most {sg.MAX_MEMBERS} members",
                       {"SharingGroupOrg": ["expected a list"]}, f"Could not {what}")
    out = {}
    for i, m in enumerate(raw):
        m = m if isinstance(m, dict) else {}
        ref = m.get("org_uuid") or m.get("org_id") or (m.get("Organisation") or {}).get("uuid")
        org = find_org(ctx, ref)
        if org is None:
            raise ApiError(404, f"Could not {what}: SharingGroupOrg[{i}]: organisation {ref!r} is not known here "
                           "(admin/organisations/add introduces one)", {f"SharingGroupOrg[{i}]": ["unknown organisation"]},
                           f"Could not {what}")
        out[org["uuid"]] = flag(m.get("extend"))
    return out


@groups.post("/add", ADMIN)
async def sharing_group_add(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    what = "add SharingGroup"
    raw = await posted_object(request, "SharingGroup", what)
    name = _text_field(raw, "name", MAX_NAME, what, required=True)
    releasability = _text_field(raw, "releasability", MAX_TEXT, what)
    description = _text_field(raw, "description", MAX_TEXT, what)
    group_uuid = raw.get("uuid")
    if group_uuid not in (None, ""):
        if not isinstance(group_uuid, str) or not query.is_uuid(group_uuid):
            raise ApiError(400, "Could not add SharingGroup: uuid: expected a uuid", {"uuid": ["expected a uuid"]},
                           "Could not add SharingGroup")
        group_uuid = str(_uuid.UUID(group_uuid))
    members = await run(_members, ctx, raw.get("SharingGroupOrg"), what)
    group = await _sign(request, what, sg.create, name, members, releasability, description=description,
                        group_uuid=group_uuid or None)
    return await _group_response(ctx, group.uuid)


@groups.post("/edit/{ref}", ADMIN)
async def sharing_group_edit(request: web.Request) -> web.Response:
    """sharing_groups/edit/<id|uuid>: name, releasability, description (members: addOrg/removeOrg)."""
    ctx = request.app[CTX]
    what = "edit SharingGroup"
    group = await _group(ctx, path_ref(request))
    raw = await posted_object(request, "SharingGroup", what)
    changes = {}
    for key, limit in (("name", MAX_NAME), ("releasability", MAX_TEXT), ("description", MAX_TEXT)):
        if key in raw and (key != "name" or raw[key] not in (None, "")):  # a name is never emptied
            changes[key] = _text_field(raw, key, limit, what)
    await _sign(request, what, sg.revise, group.uuid, **changes)
    return await _group_response(ctx, group.uuid)


@groups.post("/delete/{ref}", ADMIN)
@groups.delete("/delete/{ref}", ADMIN)
async def sharing_group_delete(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    group = await _group(ctx, path_ref(request))
    if group.owner != ctx.node.config.org_uuid:
        raise ApiError(403, "Could not delete SharingGroup: only its owner organisation may delete it",
                       {"SharingGroup": ["owned by another organisation"]}, "Could not delete SharingGroup")
    await _sign(request, "delete SharingGroup", sg.revise, group.uuid, delete=True)
    return web.json_response({"saved": True, "success": True, "name": "SharingGroup deleted.",
                              "message": "SharingGroup deleted.", "url": request.path,
                              "id": str(element_id(group.uuid))})


async def _member_params(request: web.Request, what: str) -> tuple[SharingGroup, dict[str, Any], Any]:
    ctx = request.app[CTX]
    params = await body_json(request, required=False)
    params = params if isinstance(params, dict) else {}
    group_ref = path_ref(request, "sg") or params.get("sg_id") or params.get("sg_uuid")
    org_ref = path_ref(request, "org") or params.get("org_id") or params.get("org_uuid")
    if group_ref in (None, ""):
        raise ApiError(400, f"Could not {what}: sg_id: missing", {"sg_id": ["missing"]}, f"Could not {what}")
    if org_ref in (None, ""):
        raise ApiError(400, f"Could not {what}: org_id: missing", {"org_id": ["missing"]}, f"Could not {what}")
    group = await _group(ctx, group_ref)
    org = await run(find_org, ctx, org_ref)
    if org is None:
        raise ApiError(404, f"Could not {what}: org_id: organisation {org_ref!r} is not known here "
                       "(admin/organisations/add introduces one)", {"org_id": ["unknown organisation"]},
                       "Invalid organisation")
    return group, org, params.get("extend")


@groups.post("/addOrg", ADMIN)
@groups.post("/addOrg/{sg}/{org}", ADMIN)
async def sharing_group_add_org(request: web.Request) -> web.Response:
    what = "add Organisation to SharingGroup"
    group, org, extend = await _member_params(request, what)
    await _sign(request, what, sg.revise, group.uuid, add={org["uuid"]: flag(extend)})
    message = "Organisation added to the sharing group."
    return web.json_response({"saved": True, "success": True, "name": message, "message": message,
                              "url": request.path})


@groups.post("/removeOrg", ADMIN)
@groups.post("/removeOrg/{sg}/{org}", ADMIN)
async def sharing_group_remove_org(request: web.Request) -> web.Response:
    what = "remove Organisation from SharingGroup"
    group, org, _extend = await _member_params(request, what)
    if org["uuid"] not in group.members:
        raise ApiError(404, f"Could not {what}: {org['name']} is not a member", {"org_id": ["not a member"]},
                       f"Could not {what}")
    if org["uuid"] == group.owner:
        raise ApiError(403, f"Could not {what}: the owner organisation stays a member of its group",
                       {"org_id": ["the group's owner"]}, f"Could not {what}")
    await _sign(request, what, sg.revise, group.uuid, remove=(org["uuid"],))
    message = "Organisation removed from the sharing group."
    return web.json_response({"saved": True, "success": True, "name": message, "message": message,
                              "url": request.path})

