"""What a MISP client asks first: servers/getVersion, users/view/me, attributes/describeTypes."""
from __future__ import annotations

from aiohttp import web

from fedmisp import __version__
from fedmisp.model.describe import describe_types
from fedmisp.node.api.access import READ_ONLY, MispRoutes
from fedmisp.node.api.helpers import CTX, ROLE, ROLE_LEVEL, may, this_org

routes = MispRoutes()
_MISP_VERSION = "2.5.0"  # the MISP API level this node answers as (servers/getVersion)


@routes.get("/servers/getVersion", READ_ONLY)
async def get_version(request: web.Request) -> web.Response:
    import pymisp
    return web.json_response({
        "version": _MISP_VERSION, "pymisp_recommended_version": pymisp.__version__, "fedmisp": __version__,
        "perm_sync": False, "perm_sighting": may(request, "user"), "perm_galaxy_editor": False,
        "request_encoding": ["gzip"], "filter_sightings": False,
    })


@routes.get("/users/view/me", READ_ONLY)
async def user_me(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    role = request[ROLE]
    level = ROLE_LEVEL[role]
    org = this_org(ctx)
    perms = {
        "perm_add": level >= 1, "perm_modify": level >= 1, "perm_modify_org": level >= 1,
        "perm_publish": level >= 2, "perm_delegate": False, "perm_sync": False, "perm_admin": level >= 3,
        "perm_audit": level >= 3, "perm_auth": True, "perm_site_admin": level >= 3, "perm_regexp_access": False,
        "perm_tagger": level >= 1, "perm_template": False, "perm_sharing_group": level >= 3,
        "perm_tag_editor": level >= 3, "perm_sighting": level >= 1, "perm_object_template": False,
        "perm_galaxy_editor": False, "perm_warninglist": False,
    }
    return web.json_response({
        "User": {"id": str(level + 1), "org_id": org["id"], "email": f"{role}@{ctx.node.config.org_uuid}",
                 "role_id": str(level + 1), "autoalert": False, "disabled": False},
        "Role": {"id": str(level + 1), "name": role, **perms},
        "UserSetting": [],
        "Organisation": org,
    })


@routes.get("/attributes/describeTypes", READ_ONLY)
async def describe(request: web.Request) -> web.Response:
    return web.json_response({"result": describe_types().raw})
