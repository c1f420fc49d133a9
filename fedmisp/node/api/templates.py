"""MISP object templates through the REST API, read-only: objectTemplates/index, view and getRaw
list the shipped misp-objects templates (pymisp's) and the published ones this node holds
(signed records, decision 0030), in MISP's shape (ObjectTemplatesController).

A template's id is the 56-bit id of its uuid (`render.hashed_id`, as a galaxy's: decision 0027),
the same on every node. A shipped template is MISP's `fixed` one, of this node's organisation as
MISP's are of the instance that loaded them; a published one is of the organisation that signed
it. Templates are published with `fedmisp template add`, not through the API: MISP's own
objectTemplates/update loads the shipped ones and has nothing to do here.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from fedmisp.model.records import Record
from fedmisp.model.templates import shipped_definitions
from fedmisp.node.api.access import READ_ONLY, MispRoutes
from fedmisp.node.api.helpers import CTX, ApiContext, ApiError, org_id, path_ref, run
from fedmisp.node.api.render import hashed_id

routes = MispRoutes()


def template_id(template_uuid: str) -> str:
    return str(hashed_id("object-template", template_uuid))


def _organisation(ctx: ApiContext, org_uuid: str | None) -> dict[str, Any]:
    known = {o["uuid"]: o for o in ctx.store.orgs()}
    org_uuid = org_uuid or ctx.node.config.org_uuid
    name = known.get(org_uuid, {}).get("name") or (ctx.node.config.org_name if org_uuid == ctx.node.config.org_uuid else "")
    return {"id": org_id(ctx, org_uuid), "name": name, "uuid": org_uuid}


def _all(ctx: ApiContext) -> list[tuple[dict[str, Any], str | None, bool]]:
    """(definition, publishing org uuid or None for the node's own, fixed) of every template."""
    out: list[tuple[dict[str, Any], str | None, bool]] = [(d, None, True) for d in shipped_definitions().values()]
    for record in ctx.store.template_records():
        out.append((record.body, _publisher(ctx, record), False))
    return out


def _publisher(ctx: ApiContext, record: Record) -> str | None:
    if record.author == ctx.node.identity.public_key:
        return ctx.node.config.org_uuid
    return ctx.store.org_for_key(record.author)


def template_json(ctx: ApiContext, definition: dict[str, Any], org_uuid: str | None, fixed: bool) -> dict[str, Any]:
    """One template as MISP's object_templates row shows it."""
    requirements = {k: definition[k] for k in ("required", "requiredOneOf") if definition.get(k)}
    organisation = _organisation(ctx, org_uuid)
    return {"id": template_id(definition["uuid"]), "user_id": "0", "org_id": organisation["id"],
            "uuid": definition["uuid"], "name": definition["name"], "description": definition.get("description", ""),
            "version": str(definition["version"]), "meta-category": definition["meta-category"],
            "requirements": requirements, "fixed": fixed, "active": True}


def element_json(template: dict[str, Any], relation: str, spec: dict[str, Any], index: int) -> dict[str, Any]:
    """One attribute of a template as MISP's object_template_elements row shows it."""
    return {"id": str(index), "object_template_id": template_id(template["uuid"]), "object_relation": relation,
            "type": spec["misp-attribute"], "ui-priority": str(spec.get("ui-priority", 0)),
            "categories": list(spec.get("categories", [])), "sane_default": list(spec.get("sane_default", [])),
            "values_list": list(spec.get("values_list", [])), "description": spec.get("description", ""),
            "disable_correlation": spec.get("disable_correlation"), "multiple": bool(spec.get("multiple", False))}


def _find(ctx: ApiContext, ref: str) -> tuple[dict[str, Any], str | None, bool]:
    """A template by id, uuid or (getRaw) name; 404 if none."""
    for found in _all(ctx):
        definition = found[0]
        if ref in (definition["uuid"], template_id(definition["uuid"])):
            return found
    raise ApiError(404, f"Invalid object template: no object template with id or uuid {ref[:100]!r} on this node; "
                   "expected an id or uuid from objectTemplates/index", {"id": ["no such object template"]},
                   "Invalid object template")


def _index(ctx: ApiContext) -> list[dict[str, Any]]:
    return [{"ObjectTemplate": template_json(ctx, d, org, fixed), "Organisation": _organisation(ctx, org)}
            for d, org, fixed in sorted(_all(ctx), key=lambda t: t[0]["name"])]


def _view(ctx: ApiContext, ref: str) -> dict[str, Any]:
    definition, org, fixed = _find(ctx, ref)
    elements = [element_json(definition, relation, spec, i)
                for i, (relation, spec) in enumerate(sorted(definition["attributes"].items()), 1)]
    return {"ObjectTemplate": template_json(ctx, definition, org, fixed), "Organisation": _organisation(ctx, org),
            "ObjectTemplateElement": elements}


def _raw(ctx: ApiContext, ref: str) -> dict[str, Any]:
    for definition, _org, _fixed in _all(ctx):
        if ref in (definition["uuid"], definition["name"]):
            return definition
    raise ApiError(404, f"Invalid object template: no object template with uuid or name {ref[:100]!r} on this node",
                   {"uuid": ["no such object template"]}, "Invalid object template")


@routes.get("/objectTemplates/index", READ_ONLY)
async def template_index(request: web.Request) -> web.Response:
    """PyMISP `object_templates()`: `[{"ObjectTemplate", "Organisation"}]`, shipped and published."""
    return web.json_response(await run(_index, request.app[CTX]))


@routes.get("/objectTemplates/view/{ref}", READ_ONLY)
async def template_view(request: web.Request) -> web.Response:
    """PyMISP `get_object_template(id or uuid)`: `{"ObjectTemplate", "Organisation",
    "ObjectTemplateElement": [...]}`."""
    return web.json_response(await run(_view, request.app[CTX], path_ref(request)))


@routes.get("/objectTemplates/getRaw/{ref}", READ_ONLY)
async def template_raw(request: web.Request) -> web.Response:
    """PyMISP `get_raw_object_template(uuid or name)`: the definition.json itself, which
    `MISPObject(name, misp_objects_template_custom=...)` builds an object from."""
    return web.json_response(await run(_raw, request.app[CTX], path_ref(request)))
