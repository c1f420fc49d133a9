"""Galaxies and their clusters (galaxies/*, galaxy_clusters/*): MISP's default galaxies as
pymispgalaxies ships them (model/galaxies.py), read-only, and galaxies/attachCluster, which puts a
cluster on an event or attribute as its tag through the same code as tags/attachTagToObject.

Galaxies and clusters have ids derived from their uuids (render.py: `galaxy_id`, `cluster_id`), the
same on every node and across restarts; every endpoint that takes an id takes the uuid too. An id
two of them share (none do in the shipped data) is a 404, as for elements (decision 0005). The
catalogue is read on the first request that needs it, in the thread pool (decision 0027).

Filters follow MISP's GalaxiesController::index, GalaxyClustersController::index and
GalaxyCluster::buildFilterConditions; a filter this node does not apply is a 400 naming it, never
ignored (as events/index). Custom clusters (signed records, decision 0031) are listed beside the
default ones; node/api/clusters.py adds, edits, publishes and deletes them.
"""
from __future__ import annotations

import json
import uuid as _uuid
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable, Iterator

from aiohttp import web

from fedmisp.model.clusters import as_cluster
from fedmisp.model.galaxies import Catalogue, Cluster, Galaxy, Relation, catalogue
from fedmisp.node.api.access import READ_ONLY, USER, MispRoutes
from fedmisp.node.api.helpers import (
    CTX, JSON, ApiContext, ApiError, body_json, change_tag, must_be_creator, path_ref, resolve_element,
    resolve_event, run, shared_tags, stream, unwrap,
)
from fedmisp.node.api.params import MAX_LIMIT, MAX_TERMS, QueryError, boolean, flag, int_param
from fedmisp.node.api.render import (
    cluster_elements, cluster_id, cluster_json, full_cluster_json, galaxy_id, galaxy_json, shown_event,
)
from fedmisp.store import query

routes = MispRoutes()
clusters = routes.controller("/galaxy_clusters", "/galaxyClusters")

# A restSearch answers at most this many clusters in full without a `limit` (the whole catalogue
# is 45,000 clusters and 190 MB of JSON in full; 10,000 of the largest galaxy's are about 40 MB).
MAX_FULL_CLUSTERS = 10_000


# --- ids and references ----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Ids:
    galaxies: dict[str, list[Galaxy]]
    clusters: dict[str, list[Cluster]]


@cache
def _ids(found: Catalogue) -> _Ids:
    galaxies: dict[str, list[Galaxy]] = {}
    by_id: dict[str, list[Cluster]] = {}
    for g in found.galaxies:
        galaxies.setdefault(galaxy_id(g), []).append(g)
    for c in found.clusters:
        by_id.setdefault(cluster_id(c), []).append(c)
    return _Ids(galaxies, by_id)


class Clusters:
    """The clusters this node shows: the catalogue's default ones and the custom ones it holds
    (signed records, decision 0031), with the look-ups the catalogue has. Custom clusters are
    few; they are read from the store per request."""

    def __init__(self, found: Catalogue, custom: list[Cluster], own_org: str):
        self.found = found
        self.own_org = own_org
        self.custom = custom  # deleted ones included (context "deleted", view)
        self.live = [c for c in custom if c.custom is not None and not c.custom.deleted]

    @property
    def clusters(self) -> Iterator[Cluster]:
        yield from self.found.clusters
        yield from self.live

    def galaxy(self, uuid: str) -> Galaxy | None:
        return self.found.galaxy(uuid)

    def clusters_of(self, galaxy: Galaxy, deleted: bool = False) -> list[Cluster]:
        mine = [c for c in (self.custom if deleted else self.live) if c.galaxy.uuid == galaxy.uuid]
        return mine if deleted else [*self.found.clusters_of(galaxy), *mine]

    def by_uuid(self, uuid: str) -> list[Cluster]:
        uuid = uuid.lower()
        return [*self.found.by_uuid(uuid), *(c for c in self.custom if c.uuid == uuid)]

    def by_tag(self, tag_name: str) -> Cluster | None:
        wanted = tag_name.lower()
        return next((c for c in self.live if c.tag_name.lower() == wanted), None) or self.found.by_tag(tag_name)

    def targeting(self, uuid: str) -> list[tuple[Cluster, Relation]]:
        return [*self.found.targeting(uuid), *((c, r) for c in self.live for r in c.related if r.dest_uuid == uuid)]


def book(ctx: ApiContext) -> Clusters:
    """The default clusters and the custom ones held (read in the thread pool: the catalogue's
    first read takes seconds)."""
    found = catalogue()
    # (one node per process: set, never cleared, so a search running meanwhile in another thread
    # never sees it empty; the filters should take the node's org as an argument instead)
    _OWN_ORG_ID[ctx.node.config.org_uuid] = "1"
    custom = [as_cluster(r.body, found.galaxy(r.body["galaxy_uuid"])) for r, _, _ in ctx.store.clusters()]
    return Clusters(found, custom, ctx.node.config.org_uuid)


def find_galaxy(ref: str) -> Galaxy | None:
    """A galaxy by id or uuid (None: no such galaxy, or an id two share)."""
    found = catalogue()
    if query.is_uuid(ref):
        return found.galaxy(_canonical_uuid(ref))
    matches = _ids(found).galaxies.get(ref, [])
    return matches[0] if len(matches) == 1 else None


def find_cluster(ref: str, clusters: Clusters | None = None) -> Cluster | None:
    """A cluster by id or uuid; a uuid two galaxies share finds the first (Catalogue's order).
    `clusters`: with the custom clusters held (deleted ones too), else the catalogue's alone."""
    found = catalogue()
    if query.is_uuid(ref):
        matches = (clusters or found).by_uuid(_canonical_uuid(ref))
        return matches[0] if matches else None
    matches = [*_ids(found).clusters.get(ref, []),
               *(c for c in (clusters.custom if clusters is not None else ()) if cluster_id(c) == ref)]
    return matches[0] if len(matches) == 1 else None


def _canonical_uuid(ref: str) -> str:
    return str(_uuid.UUID(ref))


def _filters(request: web.Request, params: Any, what: str, tail: str = "") -> dict[str, Any]:
    """The request's filters: the JSON body (bare or under `request`), the query string of a GET,
    and CakePHP's named parameters after the endpoint (`/context:all`)."""
    if request.method != "POST":
        params = dict(request.query)
    params = unwrap(params, "request")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ApiError(400, f"{what}: expected a JSON object of filters", {"body": ["expected a JSON object"]},
                       "Invalid filter")
    params = {k: v for k, v in params.items() if v is not None}
    for part in tail.strip("/").split("/"):
        if ":" in part:
            key, _, value = part.partition(":")
            params.setdefault(key, value)
        elif part:
            raise ApiError(400, f"{what}: {part!r} in the path is not a named parameter (name:value)",
                           {"path": [f"{part!r}: expected name:value"]}, "Invalid filter")
    return params


def _refuse_unknown(params: dict[str, Any], known: frozenset[str], what: str) -> None:
    for key in params:
        if key not in known:
            message = f"{key}: not a {what} filter this node knows; accepted: {', '.join(sorted(known))}"
            raise ApiError(400, f"{what}: {message}", {key: [message]}, "Invalid filter")


def _bad(e: QueryError, what: str) -> ApiError:
    return ApiError(400, f"{what}: {e}", {e.field: [str(e)]}, "Invalid filter")


def _texts(value: Any, field_: str) -> frozenset[str] | None:
    """A filter of one value or a list of them (MISP's `field => value` condition), lower-cased;
    None when not given."""
    if value is None or value == "" or value == []:
        return None
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_TERMS:
        raise QueryError(field_, f"{len(items)} values; at most {MAX_TERMS} accepted")
    out = set()
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)) or len(str(item)) > 65_535:
            raise QueryError(field_, f"{item!r}; expected a string or number, or a list of them")
        out.add(str(item).strip().lower())
    return frozenset(out)


def _json(document: Any) -> web.Response:
    return web.Response(text=json.dumps(document), content_type=JSON)


# --- galaxies ------------------------------------------------------------------------------------

GALAXY_FILTERS = frozenset({"value", "enabled"})


def _galaxy_text(g: Galaxy) -> str:
    """What MISP's galaxies/index `value` searches: name, namespace, description, kill chain, uuid."""
    return "\n".join([g.name, g.namespace, g.description, json.dumps(g.kill_chain_order or ""), g.uuid]).lower()


def _galaxy_index(params: dict[str, Any]) -> list[dict[str, Any]]:
    value = params.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
        raise QueryError("value", f"{value!r}; expected text to look for in name, namespace, description or uuid")
    enabled = boolean(params.get("enabled"), "enabled")
    if enabled is False:
        return []  # every galaxy of the package is enabled
    needle = str(value or "").lower()
    return [{"Galaxy": galaxy_json(g)} for g in catalogue().galaxies if needle in _galaxy_text(g)]


@routes.get("/galaxies", READ_ONLY)
@routes.post("/galaxies", READ_ONLY)
@routes.get("/galaxies/index", READ_ONLY)
@routes.post("/galaxies/index", READ_ONLY)
async def galaxy_index(request: web.Request) -> web.Response:
    """galaxies/index (PyMISP `galaxies`), and `galaxies` with `value` (PyMISP `search_galaxy`)."""
    params = _filters(request, await body_json(request, required=False), "galaxies/index")
    _refuse_unknown(params, GALAXY_FILTERS, "galaxies/index")
    try:
        return _json(await run(_galaxy_index, params))
    except QueryError as e:
        raise _bad(e, "galaxies/index") from None


def _galaxy_view(ctx: ApiContext, ref: str) -> dict[str, Any] | None:
    galaxy = find_galaxy(ref)
    if galaxy is None:
        return None
    shown = []
    clusters = book(ctx)
    for c in clusters.clusters_of(galaxy):
        row = cluster_json(c, clusters.own_org)
        row["GalaxyElement"] = cluster_elements(c)
        shown.append(row)
    return {"Galaxy": galaxy_json(galaxy), "GalaxyCluster": shown}


@routes.get("/galaxies/view/{ref}", READ_ONLY)
async def galaxy_view(request: web.Request) -> web.Response:
    """`{"Galaxy": …, "GalaxyCluster": [… with "GalaxyElement"]}` (PyMISP `get_galaxy`)."""
    ref = path_ref(request)
    shown = await run(_galaxy_view, request.app[CTX], ref)
    if shown is None:
        raise ApiError(404, "Galaxy not found.", f"no galaxy {ref!r} on this node; give its id or uuid "
                       "(galaxies/index lists them)", "Galaxy not found.")
    return _json(shown)


# --- clusters ------------------------------------------------------------------------------------

CLUSTER_INDEX_FILTERS = frozenset({"context", "searchall"})
# galaxy_clusters/index `context` (MISP's): which of a galaxy's clusters; "org" and "orgc" are this
# node's organisation's custom clusters (the one that holds them here, the one that made them: the same)
CONTEXTS: dict[str, Callable[[Cluster, str], bool]] = {
    "all": lambda c, own: True,
    "default": lambda c, own: c.custom is None,
    "custom": lambda c, own: c.custom is not None,
    "org": lambda c, own: c.custom is not None and c.custom.orgc_uuid == own,
    "orgc": lambda c, own: c.custom is not None and c.custom.orgc_uuid == own,
    "deleted": lambda c, own: c.custom is not None and c.custom.deleted,
}


def _cluster_index(ctx: ApiContext, galaxy: Galaxy, params: dict[str, Any]) -> list[dict[str, Any]]:
    context = params.get("context") or "all"
    if not isinstance(context, str) or context not in CONTEXTS:
        raise QueryError("context", f"{context!r}; expected one of {', '.join(CONTEXTS)}")
    clusters = book(ctx)
    wanted = CONTEXTS[context]
    own = clusters.own_org
    searchall = params.get("searchall")
    if searchall is not None and (isinstance(searchall, bool) or not isinstance(searchall, (str, int))):
        raise QueryError("searchall", f"{searchall!r}; expected text to look for in value, description or synonyms")
    needle = str(searchall or "").lower()

    def hit(c: Cluster) -> bool:
        # MISP: value or description LIKE %x%, the uuid itself, or a synonym LIKE %x%
        return (not needle or needle in c.value.lower() or needle in c.description.lower() or needle == c.uuid
                or any(k == "synonyms" and needle in v.lower() for k, v in c.elements))
    return [{"GalaxyCluster": cluster_json(c, own)} for c in clusters.clusters_of(galaxy, deleted=context == "deleted")
            if wanted(c, own) and hit(c)]


@clusters.get("/index/{ref}", READ_ONLY)
@clusters.post("/index/{ref}", READ_ONLY)
async def cluster_index(request: web.Request) -> web.Response:
    """A galaxy's clusters, `context` and `searchall` as MISP reads them (PyMISP `search_galaxy_clusters`)."""
    ref = path_ref(request)
    params = _filters(request, await body_json(request, required=False), "galaxy_clusters/index")
    _refuse_unknown(params, CLUSTER_INDEX_FILTERS, "galaxy_clusters/index")
    galaxy = await run(find_galaxy, ref)
    if galaxy is None:
        raise ApiError(404, "Galaxy not found.", f"no galaxy {ref!r} on this node; give its id or uuid",
                       "Galaxy not found.")
    try:
        return _json(await run(_cluster_index, request.app[CTX], galaxy, params))
    except QueryError as e:
        raise _bad(e, "galaxy_clusters/index") from None


def _cluster_view(ctx: ApiContext, ref: str) -> dict[str, Any] | None:
    clusters = book(ctx)
    cluster = find_cluster(ref, clusters)
    return None if cluster is None else full_cluster_json(clusters, cluster, clusters.own_org)


@clusters.get("/view/{ref}", READ_ONLY)
async def cluster_view(request: web.Request) -> web.Response:
    """`{"GalaxyCluster": …}` with its galaxy, elements and relations (PyMISP `get_galaxy_cluster`)."""
    ref = path_ref(request)
    shown = await run(_cluster_view, request.app[CTX], ref)
    if shown is None:
        raise ApiError(404, "Invalid galaxy cluster", f"no galaxy cluster {ref!r} on this node; give its id or uuid",
                       "Invalid galaxy cluster")
    return _json(shown)


# --- galaxy_clusters/restSearch ------------------------------------------------------------------------

Match = Callable[[Cluster], bool]


def _within(values: frozenset[str], key: Callable[[Cluster], str]) -> Match:
    return lambda c: key(c).lower() in values


def _custom_or(default: str, of_custom: Callable[[Any], str]) -> Callable[[Cluster], str]:
    """A column every default cluster has the same value in (distribution 3, organisation 0, ...),
    a custom cluster its own (decision 0031)."""
    return lambda c: default if c.custom is None else of_custom(c.custom)


def _org_column(c: Cluster) -> str:
    return "0" if c.custom is None else _OWN_ORG_ID.get(c.custom.orgc_uuid, str(query.element_id(c.custom.orgc_uuid)))


_OWN_ORG_ID: dict[str, str] = {}  # this node's organisation uuid -> "1" (set by book())


# MISP's simple filters (buildFilterConditions' `GalaxyCluster.<name> => value`), each a test of a cluster
SIMPLE: dict[str, Callable[[frozenset[str]], Match]] = {
    "id": lambda v: _within(v, cluster_id),
    "uuid": lambda v: _within(v, lambda c: c.uuid),
    "galaxy_id": lambda v: _within(v, lambda c: galaxy_id(c.galaxy)),
    "galaxy_uuid": lambda v: _within(v, lambda c: c.galaxy.uuid),
    "type": lambda v: _within(v, lambda c: c.type),
    "value": lambda v: _within(v, lambda c: c.value),
    "tag_name": lambda v: _within(v, lambda c: c.tag_name),
    "version": lambda v: _within(v, lambda c: str(c.version)),
    "distribution": lambda v: _within(v, _custom_or("3", lambda x: str(x.distribution))),
    "org_id": lambda v: _within(v, _org_column),
    "orgc_id": lambda v: _within(v, _org_column),
    "extends_uuid": lambda v: _within(v, _custom_or("", lambda x: x.extends_uuid or "")),
}
# MISP's flags, each as a cluster has it
FLAGS: dict[str, Callable[[Cluster], bool]] = {
    "default": lambda c: c.custom is None,
    "custom": lambda c: c.custom is not None,
    "published": lambda c: c.custom is not None and c.custom.published,
}
OPTIONS = frozenset({"limit", "page", "minimal", "full", "returnFormat", "sgReferenceOnly"})
# MISP's find options, not applied here: refused rather than ignored
NOT_APPLIED = frozenset({"list", "first", "count", "order"})
SEARCH_PARAMETERS = frozenset(SIMPLE) | frozenset(FLAGS) | OPTIONS | {"eventid", "elements"}


@dataclass(frozen=True)
class ClusterSearch:
    matches: tuple[Match, ...]
    event_refs: frozenset[str] | None  # eventid: clusters whose tags an event or its attributes carry
    minimal: bool  # uuid and version only; else in full
    limit: int | None
    page: int


def parse_cluster_search(params: dict[str, Any]) -> ClusterSearch:
    for key, value in params.items():
        if key in NOT_APPLIED:
            raise QueryError(key, "not applied by this node's galaxy_clusters/restSearch; leave it out")
        if key not in SEARCH_PARAMETERS:
            raise QueryError(key, "not a galaxy_clusters/restSearch filter this node knows; accepted: "
                             + ", ".join(sorted(SEARCH_PARAMETERS)))
    fmt = params.get("returnFormat", "json")
    if fmt != "json":
        raise QueryError("returnFormat", f"{fmt!r}; galaxy_clusters/restSearch answers json only")
    matches: list[Match] = []
    for name, make in SIMPLE.items():
        values = _texts(params.get(name), name)
        if values is not None:
            matches.append(make(values))
    for name, has in FLAGS.items():
        wanted = boolean(params.get(name), name)
        if wanted is not None:
            matches.append(lambda c, has=has, wanted=wanted: has(c) == wanted)
    elements = params.get("elements")
    if elements not in (None, "", [], {}):
        if not isinstance(elements, dict) or not all(isinstance(v, (str, int)) and not isinstance(v, bool)
                                                     for v in elements.values()):
            raise QueryError("elements", 'expected {"key": "value", ...} such as {"synonyms": "APT 1"}')
        wanted_elements = [(k.lower(), str(v).lower()) for k, v in elements.items()]
        # every pair, each by some element of the cluster (MISP: the clusters matching all of them)
        matches.append(lambda c: all(any(k.lower() == key and v.lower() == value for k, v in c.elements)
                                     for key, value in wanted_elements))
    minimal = bool(boolean(params.get("minimal"), "minimal"))
    # MISP: full unless minimal, whatever `full` says (GalaxyCluster::restSearch); read to check it
    boolean(params.get("full"), "full")
    boolean(params.get("sgReferenceOnly"), "sgReferenceOnly")  # a cluster's group is named by its id alone here
    return ClusterSearch(
        matches=tuple(matches), event_refs=_texts(params.get("eventid"), "eventid"), minimal=minimal,
        limit=int_param(params.get("limit"), "limit", 1, MAX_LIMIT),
        page=int_param(params.get("page"), "page", 1, 2**31) or 1)


def _event_tags(ctx: ApiContext, refs: frozenset[str]) -> frozenset[str]:
    """The tag names (lower-cased) shown on the events `refs` name and on their attributes; an
    event this node does not show adds nothing (MISP: no cluster matches)."""
    names: set[str] = set()
    for ref in refs:
        event_uuid = query.resolve_event(ctx.store, ref)
        event = shown_event(ctx, event_uuid, galaxies=False) if event_uuid else None
        if event is None:
            continue
        e = event["Event"]
        for item in (e, *e["Attribute"], *(a for o in e["Object"] for a in o["Attribute"])):
            names.update(t["name"].lower() for t in item.get("Tag", ()))
    return frozenset(names)


def _cluster_search(ctx: ApiContext, search: ClusterSearch) -> Iterator[str]:
    found = book(ctx)
    matches = list(search.matches)
    if search.event_refs is not None:
        tags = _event_tags(ctx, search.event_refs)
        matches.append(lambda c: c.tag_name.lower() in tags)
    hits = [c for c in found.clusters if all(m(c) for m in matches)]
    if search.limit is not None:
        hits = hits[(search.page - 1) * search.limit:search.page * search.limit]
    elif not search.minimal and len(hits) > MAX_FULL_CLUSTERS:
        raise QueryError("limit", f"{len(hits)} clusters match; at most {MAX_FULL_CLUSTERS} are answered in full "
                         "at once: give limit (and page), minimal, or a narrower filter")

    def shown(c: Cluster) -> dict[str, Any]:
        if search.minimal:
            return {"GalaxyCluster": {"uuid": c.uuid, "version": str(c.version)}}
        return full_cluster_json(found, c, found.own_org)
    yield '{"response": ['
    for i, c in enumerate(hits):
        yield ("," if i else "") + json.dumps(shown(c))
    yield "]}"


@clusters.post("/restSearch{tail:(/.*)?}", READ_ONLY)
async def cluster_search(request: web.Request) -> web.StreamResponse:
    """`{"response": [{"GalaxyCluster": …}]}`: MISP's filters (id, uuid, galaxy_id, galaxy_uuid,
    type, value, tag_name, version, distribution, org_id, orgc_id, extends_uuid, default, custom,
    published, eventid, elements), `minimal`/`full`, `limit`/`page`."""
    ctx = request.app[CTX]
    params = _filters(request, await body_json(request, required=False), "galaxy_clusters/restSearch",
                      request.match_info.get("tail", ""))
    try:
        search = parse_cluster_search(params)
        return await stream(request, _cluster_search(ctx, search), JSON)
    except QueryError as e:
        raise _bad(e, "galaxy_clusters/restSearch") from None


# --- galaxies/attachCluster ----------------------------------------------------------------------------

TARGET_TYPES = ("event", "attribute")


@routes.post("/galaxies/attachCluster/{ref}{tail:(/.*)?}", USER)
async def cluster_attach(request: web.Request) -> web.Response:
    """galaxies/attachCluster/<target id|uuid>[/event|/attribute][/local:0|1] with
    `{"Galaxy": {"target_id": <cluster id|uuid>}}` (PyMISP `attach_galaxy_cluster`): the cluster's
    tag on the event or attribute, shared (a new revision, this node's events only) or local, as
    tags/attachTagToObject puts a tag; MISP's answer, "Cluster attached." or "Cluster already attached."."""
    ctx = request.app[CTX]
    tail = request.match_info.get("tail", "").strip("/").split("/")
    scope = tail[0][:-5] if tail[0].endswith(".json") else tail[0]
    if scope and ":" not in scope:
        tail = tail[1:]
    else:
        scope = "event"  # MISP's default target type
    if scope not in TARGET_TYPES:
        raise ApiError(400, f"target_type: {scope!r}; expected one of {', '.join(TARGET_TYPES)} (a tag collection "
                       "is not served here)", {"target_type": [f"expected one of {', '.join(TARGET_TYPES)}"]},
                       "Invalid target type")
    named = _filters(request, {}, "galaxies/attachCluster", "/".join(tail))
    _refuse_unknown(named, frozenset({"local"}), "galaxies/attachCluster")
    local = flag(named.get("local"))
    posted = unwrap(await body_json(request), "Galaxy")
    cluster_ref = posted.get("target_id") if isinstance(posted, dict) else None
    if isinstance(cluster_ref, bool) or not isinstance(cluster_ref, (str, int)) or not str(cluster_ref).strip():
        raise ApiError(400, "Galaxy.target_id: expected the id or uuid of a galaxy cluster",
                       {"Galaxy.target_id": ["expected a galaxy cluster id or uuid (galaxy_clusters/index lists them)"]},
                       "Invalid galaxy cluster")
    clusters = await run(book, ctx)
    cluster = await run(find_cluster, str(cluster_ref).strip(), clusters)
    if cluster is None or (cluster.custom is not None and cluster.custom.deleted):
        raise ApiError(404, "Invalid Galaxy cluster", f"no galaxy cluster {cluster_ref!r} on this node",
                       "Invalid Galaxy cluster")
    ref = path_ref(request)
    if scope == "event":
        event_uuid, element_uuid = await resolve_event(ctx, ref), None
    else:
        event_uuid, _body = await resolve_element(ctx, ref, "attribute")
        element_uuid = _body["uuid"]
        head = await run(query.event_head, ctx.store, event_uuid)
        if head is None or head.deleted:
            raise ApiError(404, "Invalid attribute", f"attribute {ref!r} belongs to a deleted event")
    if not local:
        await must_be_creator(ctx, event_uuid)  # MISP checks who may tag before anything else (canModifyTag)
    target = element_uuid or event_uuid
    held_local = (await run(ctx.store.local_tags, [target])).get(target, [])
    held = {t["name"] for t in [*held_local, *await shared_tags(ctx, event_uuid, element_uuid)]}
    if cluster.tag_name in held:
        success = "Cluster already attached."
    else:
        await change_tag(request, event_uuid, element_uuid, {"name": cluster.tag_name}, True, local)
        success = "Cluster attached."
    return web.json_response({"saved": True, "success": success, "check_publish": True})
