"""Custom galaxy clusters through the REST API, as MISP's GalaxyClustersController and PyMISP's
add_galaxy_cluster, update_galaxy_cluster, publish_galaxy_cluster, fork_galaxy_cluster and
delete_galaxy_cluster call them: galaxy_clusters/add/<galaxy>[/forkUUID:<uuid>], edit/<ref>,
publish/<ref>, unpublish/<ref>, delete/<ref> (decision 0031). Listing and viewing them, beside the
default ones, is node/api/galaxies.py's.

Each change is a new version signed by this node (gossip/clusters.py), its `version` the time
(MISP's), above the version held. Add, edit and delete leave it unpublished, as MISP does: only
publish (a publisher's) makes a version that replicates. Only the creator organisation edits,
publishes or deletes (MISP's messages); a default cluster is not changed (405, MISP's).
"""
from __future__ import annotations

import json
import time
import uuid as _uuid
from typing import Any

from aiohttp import web

from fedmisp.gossip.clusters import sign
from fedmisp.model.clusters import ClusterError, check_body, custom_tag
from fedmisp.model.galaxies import Cluster, Galaxy
from fedmisp.node.api.access import PUBLISHER, USER, MispRoutes
from fedmisp.node.api.galaxies import book, find_cluster, find_galaxy
from fedmisp.node.api.helpers import (
    CTX, ApiContext, ApiError, body_json, path_ref, run, sharing_group_uuids, unwrap, wants_hard_delete,
)
from fedmisp.node.api.render import cluster_id, full_cluster_json
from fedmisp.policy.reasons import Reason

routes = MispRoutes()
clusters = routes.controller("/galaxy_clusters", "/galaxyClusters")

NOT_CREATOR = "Only the creator organisation can modify the galaxy cluster"  # MISP's (fetchIfAuthorized)
NOT_CREATOR_PUBLISH = "Only the creator organisation with publishing capabilities can publish the galaxy cluster"
# what PyMISP posts that is derived or this node's to set, never taken from a post
_DERIVED = frozenset({"id", "galaxy_id", "collection_uuid", "type", "tag_name", "org_id", "orgc_id", "Org", "Orgc",
                      "default", "locked", "published", "deleted", "version", "Galaxy", "meta", "tag_count",
                      "tag_id", "SharingGroup", "TargetingClusterRelation", "event_tag_id", "attribute_tag_id",
                      "local", "relationship_type", "galaxy_uuid", "elementsDict", "sharing_group_uuid"})
_TEXT_FIELDS = ("value", "description", "source")


def _bad(field: str, message: str, what: str) -> ApiError:
    return ApiError(400, f"Could not {what}: {field}: {message}", {field: [message]}, f"Could not {what}")


def _authors(value: Any, what: str) -> list[str]:
    """MISP's authors: a list, a JSON list, or comma-separated text."""
    if value in (None, "", []):
        return []
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = [a.strip() for a in value.split(",") if a.strip()]
        value = decoded if isinstance(decoded, list) else [value]
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise _bad("authors", "expected a list of names, or comma-separated names", what)
    return value


def _elements(posted: dict[str, Any], what: str) -> list[list[str]]:
    """GalaxyElement [{key, value}] (PyMISP), or MISP's `elements` JSON text of the same."""
    raw: Any = posted.get("GalaxyElement")
    where = "GalaxyElement"
    if raw in (None, []) and posted.get("elements"):
        where = "elements"
        raw = posted["elements"]
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise _bad("elements", "Invalid JSON; expected [{\"key\": ..., \"value\": ...}]", what) from None
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise _bad(where, "expected a list of {key, value}", what)
    out = []
    for i, element in enumerate(raw):
        if not isinstance(element, dict) or not isinstance(element.get("key"), str) \
                or not isinstance(element.get("value"), (str, int, float)) or isinstance(element.get("value"), bool):
            raise _bad(f"{where}[{i}]", "expected {\"key\": text, \"value\": text}", what)
        out.append([element["key"], str(element["value"])])
    return out


def _relations(posted: dict[str, Any], what: str) -> list[dict[str, Any]]:
    raw = posted.get("GalaxyClusterRelation")
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise _bad("GalaxyClusterRelation", "expected a list of relations", what)
    out = []
    for i, r in enumerate(raw):
        where = f"GalaxyClusterRelation[{i}]"
        if not isinstance(r, dict):
            raise _bad(where, "expected {referenced_galaxy_cluster_uuid, referenced_galaxy_cluster_type, Tag}", what)
        tags = r.get("Tag") or r.get("tags") or []
        if not isinstance(tags, list):
            raise _bad(f"{where}.Tag", "expected a list of tags", what)
        names = [t.get("name") if isinstance(t, dict) else t for t in tags]
        out.append({"referenced_galaxy_cluster_uuid": r.get("referenced_galaxy_cluster_uuid"),
                    "referenced_galaxy_cluster_type": r.get("referenced_galaxy_cluster_type"), "tags": names})
    return out


def _distribution(value: Any, default: int, what: str) -> int:
    if value in (None, ""):
        return default
    if isinstance(value, bool) or not str(value).strip().isdigit() or int(str(value)) > 4:
        raise _bad("distribution", f"{value!r}; expected 0-4 (a cluster has no inherit)", what)
    return int(str(value))


def _int_or_none(value: Any, field: str, what: str) -> int | None:
    if value in (None, "", 0, "0"):
        return None
    if isinstance(value, bool) or not str(value).strip().isdigit():
        raise _bad(field, f"{value!r}; expected an integer", what)
    return int(str(value))


def _body(ctx: ApiContext, posted: dict[str, Any], galaxy: Galaxy, cluster_uuid: str, version: int,
          held: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """A version from a post (the held version's fields where the post leaves them out), checked
    whole (400 naming the field)."""
    base = held or {}
    for name in _TEXT_FIELDS:
        if name in posted and posted[name] is not None and not isinstance(posted[name], str):
            raise _bad(name, f"{posted[name]!r}; expected text", what)
    distribution = _distribution(posted.get("distribution"), base.get("distribution", ctx.node.config.default_distribution), what)
    group = posted.get("sharing_group_uuid") if distribution == 4 else None
    if distribution == 4 and group is None:
        group = base.get("sharing_group_uuid")
        if group is None:
            raise _bad("sharing_group_id", "distribution 4 needs a sharing group (sharingGroups/index lists them)", what)
    extends = posted.get("extends_uuid", base.get("extends_uuid")) or None
    body = {
        "uuid": cluster_uuid, "galaxy_uuid": galaxy.uuid, "type": galaxy.type,
        "value": posted.get("value", base.get("value")) if posted.get("value") is not None else base.get("value"),
        "description": posted.get("description") if posted.get("description") is not None else base.get("description", ""),
        "tag_name": custom_tag(galaxy.type, cluster_uuid), "version": version, "distribution": distribution,
        "sharing_group_uuid": group, "published": False, "deleted": False,
        "authors": _authors(posted["authors"], what) if "authors" in posted else base.get("authors", []),
        "source": posted.get("source") if posted.get("source") is not None else base.get("source", ""),
        "orgc_uuid": ctx.node.config.org_uuid, "orgc_name": ctx.node.config.org_name,
        "elements": _elements(posted, what) if ("GalaxyElement" in posted or "elements" in posted)
        else base.get("elements", []),
        "relations": _relations(posted, what) if "GalaxyClusterRelation" in posted else base.get("relations", []),
        "extends_uuid": extends,
        "extends_version": _int_or_none(posted.get("extends_version", base.get("extends_version")), "extends_version",
                                        what) if extends else None,
    }
    if body["value"] is None:
        raise _bad("value", "missing; expected the cluster's name", what)
    try:
        return check_body(body)
    except ClusterError as e:
        raise _bad(e.field.removeprefix("cluster."), str(e).split(": ", 1)[1], what) from None


async def _posted(request: web.Request, what: str) -> dict[str, Any]:
    posted = unwrap(await body_json(request, required=False), "GalaxyCluster")
    if not isinstance(posted, dict):
        raise _bad("GalaxyCluster", "expected a JSON object", what)
    posted = await sharing_group_uuids(request.app[CTX], posted)
    return posted


def _next_version(held: dict[str, Any] | None) -> int:
    """MISP's version is the time of the change; above the held one, whatever the clock says."""
    now = int(time.time())
    return max(now, held["version"] + 1) if held is not None else now


def _write(ctx: ApiContext, body: dict[str, Any], what: str) -> dict[str, Any]:
    reason, _ = sign(ctx.store, ctx.node.identity, body)
    if reason is not Reason.ALLOWED:
        raise ApiError(403, f"Could not {what}: {reason.value}", {"uuid": [reason.value]}, f"Could not {what}")
    clusters = book(ctx)
    return full_cluster_json(clusters, find_cluster(body["uuid"], clusters), clusters.own_org)


def _held_custom(ctx: ApiContext, ref: str) -> Cluster:
    cluster = find_cluster(ref, book(ctx))
    if cluster is None:
        raise ApiError(404, "Invalid galaxy cluster", f"no galaxy cluster {ref!r} on this node; give its id or uuid",
                       "Invalid galaxy cluster")
    return cluster


def _mine(ctx: ApiContext, cluster: Cluster, default_message: str, message: str = NOT_CREATOR) -> dict[str, Any]:
    """The held version of a custom cluster of this node's organisation (405/403 otherwise, MISP's)."""
    if cluster.custom is None:
        raise ApiError(405, default_message, {"default": [default_message]}, default_message)
    if cluster.custom.orgc_uuid != ctx.node.config.org_uuid:
        raise ApiError(403, message, {"orgc_id": ["only the organisation that created it changes it"]}, message)
    held = ctx.store.cluster(cluster.uuid)
    if held is None:
        raise ApiError(404, "Invalid galaxy cluster", f"galaxy cluster {cluster.uuid} is no longer held")
    return dict(held[0].body)


@clusters.post("/add/{galaxy}{tail:(/.*)?}", USER)
async def cluster_add(request: web.Request) -> web.Response:
    """galaxy_clusters/add/<galaxy id|uuid>[/forkUUID:<cluster uuid>] (PyMISP add_galaxy_cluster,
    fork_galaxy_cluster): a new custom cluster of this node's organisation, unpublished."""
    ctx = request.app[CTX]
    what = "add galaxy cluster"
    galaxy = await run(find_galaxy, path_ref(request, "galaxy"))
    if galaxy is None:
        raise ApiError(404, "Invalid galaxy", f"no galaxy {request.match_info['galaxy']!r} on this node; give the id "
                       "or uuid of a galaxy galaxies/index lists (custom galaxies are not made here)", "Invalid galaxy")
    posted = await _posted(request, what)
    tail = request.match_info.get("tail", "").strip("/")
    fork = None
    if tail:
        key, _, value = tail.partition(":")
        if key.lower() != "forkuuid" or not value:
            raise _bad("path", f"{tail!r}; expected forkUUID:<cluster uuid>", what)
        fork = await run(find_cluster, value, await run(book, ctx))
        if fork is None:
            raise ApiError(404, "Forked cluster not found.", f"no galaxy cluster {value!r} to fork", "Forked cluster not found.")
        if fork.galaxy.uuid != galaxy.uuid:
            raise _bad("galaxy", "Cluster forks have to belong to the same galaxy as the parent", what)
        posted = {**posted, "extends_uuid": fork.uuid, "extends_version": posted.get("extends_version") or fork.version}
    cluster_uuid = posted.get("uuid") or str(_uuid.uuid4())
    if not isinstance(cluster_uuid, str):
        raise _bad("uuid", f"{cluster_uuid!r}; expected a uuid", what)
    try:
        cluster_uuid = str(_uuid.UUID(cluster_uuid))
    except ValueError:
        raise _bad("uuid", f"{cluster_uuid!r}; expected a uuid", what) from None
    clusters = await run(book, ctx)
    if clusters.by_uuid(cluster_uuid) or await run(ctx.store.cluster_blocked, cluster_uuid):
        raise _bad("uuid", f"{cluster_uuid} is already in use (or was hard-deleted here); edit it, or leave uuid out",
                   what)
    if posted.get("extends_uuid") and fork is None:
        parent = find_cluster(str(posted["extends_uuid"]), clusters)
        if parent is not None and parent.galaxy.uuid != galaxy.uuid:
            raise _bad("extends_uuid", "Cluster forks have to belong to the same galaxy as the parent", what)
    posted = {k: v for k, v in posted.items() if k not in _DERIVED or k == "sharing_group_uuid"}
    body = _body(ctx, posted, galaxy, cluster_uuid, _next_version(None), None, what)
    return web.json_response(await run(_write, ctx, body, what))


@clusters.post("/edit/{ref}", USER)
async def cluster_edit(request: web.Request) -> web.Response:
    """galaxy_clusters/edit/<id|uuid> (PyMISP update_galaxy_cluster): a new version, unpublished."""
    ctx = request.app[CTX]
    what = "edit galaxy cluster"
    cluster = await run(_held_custom, ctx, path_ref(request))
    held = await run(_mine, ctx, cluster, "Default galaxy cluster cannot be edited")
    posted = await _posted(request, what)
    posted = {k: v for k, v in posted.items() if k not in _DERIVED or k == "sharing_group_uuid"}
    posted.pop("uuid", None)
    body = _body(ctx, posted, cluster.galaxy, cluster.uuid, _next_version(held), held, what)
    body["deleted"] = held["deleted"]
    return web.json_response(await run(_write, ctx, body, what))


def _success(request: web.Request, cluster: Cluster, action: str, message: str) -> web.Response:
    return web.json_response({"saved": True, "success": True, "name": message, "message": message,
                              "url": f"/galaxy_clusters/{action}/{cluster_id(cluster)}", "id": cluster_id(cluster)})


@clusters.post("/publish/{ref}", PUBLISHER)
async def cluster_publish(request: web.Request) -> web.Response:
    """galaxy_clusters/publish/<id|uuid> (PyMISP publish_galaxy_cluster): the version that
    replicates (signed anew: every version that travels is a signed record)."""
    ctx = request.app[CTX]
    cluster = await run(_held_custom, ctx, path_ref(request))
    held = await run(_mine, ctx, cluster, "Default galaxy cluster cannot be published", NOT_CREATOR_PUBLISH)
    if held["published"]:
        message = "You can't publish a galaxy cluster that is already published"
        raise ApiError(405, message, {"published": [message]}, message)
    await run(_write, ctx, {**held, "published": True, "version": _next_version(held)}, "publish galaxy cluster")
    return _success(request, cluster, "publish", "Galaxy cluster published")


@clusters.post("/unpublish/{ref}", PUBLISHER)
async def cluster_unpublish(request: web.Request) -> web.Response:
    """galaxy_clusters/unpublish/<id|uuid>: a new version that stays here (peers keep the published one)."""
    ctx = request.app[CTX]
    cluster = await run(_held_custom, ctx, path_ref(request))
    held = await run(_mine, ctx, cluster, "Default galaxy cluster cannot be unpublished", NOT_CREATOR_PUBLISH)
    if not held["published"]:
        message = "You can't unpublish a galaxy cluster that is not published"
        raise ApiError(405, message, {"published": [message]}, message)
    await run(_write, ctx, {**held, "published": False, "version": _next_version(held)}, "unpublish galaxy cluster")
    return _success(request, cluster, "unpublish", "Galaxy cluster unpublished")


@clusters.post("/delete/{ref}", USER)
async def cluster_delete(request: web.Request) -> web.Response:
    """galaxy_clusters/delete/<id|uuid> (PyMISP delete_galaxy_cluster): soft, a new version marked
    deleted and unpublished (publishing it tells the peers); hard (`{"hard": 1}`), removed here
    and its uuid refused from then on (MISP's cluster blocklist), what peers hold stays theirs."""
    ctx = request.app[CTX]
    cluster = await run(_held_custom, ctx, path_ref(request))
    held = await run(_mine, ctx, cluster, "Default galaxy cluster cannot be deleted")
    hard = await wants_hard_delete(request)
    if hard:
        await run(ctx.store.hard_delete_cluster, cluster.uuid)
        message = "Galaxy cluster successfuly hard deleted and added to the block list."
    else:
        await run(_write, ctx, {**held, "deleted": True, "published": False, "version": _next_version(held)},
                  "delete galaxy cluster")
        message = "Galaxy cluster successfuly soft deleted."
    return _success(request, cluster, "delete", message)
