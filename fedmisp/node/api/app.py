"""The node's application: MISP's REST API at the root, with /fed/v1 (the peer protocol), /node/v1
(operator endpoints, health, metrics) and /feed (served MISP feeds) as sub-applications.

One route table: each API module declares its routes where its handlers live (a `MispRoutes`, with
MISP's `.json` twins) and every handler declares who may call it (node/api/access.py); this module
only adds them. Middlewares per application: the outer ones (the node's metrics) see every request;
the MISP API's answer errors MISP-shaped (`{"saved": false, "name", "message", "url", "errors"}`,
a 4xx for anything a client sent wrong, a bug a 500 with its traceback logged) and check the API
key's role; they pass a sub-application's requests through untouched. Each sub-application checks
access its own way and renders its own refusals (ApiError) as JSON; the peer protocol's are its
own (gossip/http.py). An application with a route that declares no access refuses to start.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable

from aiohttp import ClientPayloadError, web

from fedmisp.gossip.auth import ReplayCache
from fedmisp.gossip.http import PREFIX as PEER_PREFIX
from fedmisp.node.api import (
    analyst, attributes, clusters, events, galaxies, instance, misp_sync, objects, orgs, proposals, reports, search,
    sightings, tags, taxonomies, templates,
)
from fedmisp.node.api.access import OPERATOR_REPLAYS, OWN_KEY, access_middleware, give_sync_view, refuse_undeclared
from fedmisp.node.api.helpers import CTX, ApiContext, ApiError, Handler, misp_error

log = logging.getLogger("fedmisp.api")

NODE_PREFIX = "/node/v1"
FEED_PREFIX = "/feed"
# the MISP API's modules, each with its `routes`
MISP_MODULES = (instance, events, attributes, search, objects, orgs, proposals, reports, sightings, tags, taxonomies,
                galaxies, clusters, analyst, templates, misp_sync)
# Routes MISP's server sync calls that the analyst API serves too: a sync key's request to them is
# answered by their sync view, for its MISP peer (node/api/misp_sync.py)
SYNC_VIEWS = ((instance.get_version, misp_sync.get_version), (instance.user_me, misp_sync.user_me),
              (events.event_index, misp_sync.event_index), (events.event_view, misp_sync.event_view),
              (events.event_add, misp_sync.event_add), (events.event_edit, misp_sync.event_edit),
              (proposals.proposal_index, misp_sync.proposals_index),
              (sightings.search_sightings, misp_sync.sightings_search),
              (galaxies.cluster_search, misp_sync.clusters_search))
for _handler, _view in SYNC_VIEWS:
    give_sync_view(_handler, _view)


def make_app(ctx: ApiContext, outer_middlewares: tuple[Any, ...] = (), *,
             peer_routes: Iterable[web.AbstractRouteDef] = (), node_routes: Iterable[web.AbstractRouteDef] = (),
             feed_routes: Iterable[web.AbstractRouteDef] = ()) -> web.Application:
    """The node's application. `outer_middlewares` see every request first and its final response
    (the node's metrics measure latency there); the route tables of the sub-applications are
    relative to their prefix, and a sub-application is mounted when it has routes."""
    app = web.Application(middlewares=[*outer_middlewares, _misp_only(errors_middleware),
                                       _misp_only(access_middleware)],
                          client_max_size=ctx.max_request_bytes)
    app[CTX] = ctx
    for module in MISP_MODULES:
        app.add_routes(module.routes)
    peer = list(peer_routes)
    if peer:  # the peer protocol checks each request's signature and answers its own errors
        app.add_subapp(PEER_PREFIX, _sub_app(ctx, peer, [client_gone_middleware, access_middleware]))
    operator = list(node_routes)
    if operator:
        sub = _sub_app(ctx, operator, [client_gone_middleware, json_errors_middleware, access_middleware])
        sub[OWN_KEY] = lambda: ctx.node.identity.public_key
        sub[OPERATOR_REPLAYS] = ReplayCache()
        app.add_subapp(NODE_PREFIX, sub)
    feeds = list(feed_routes)
    if feeds:
        app.add_subapp(FEED_PREFIX, _sub_app(ctx, feeds, [client_gone_middleware, json_errors_middleware,
                                                          access_middleware]))
    app.on_startup.append(refuse_undeclared)
    return app


def _sub_app(ctx: ApiContext, routes: list[web.AbstractRouteDef], middlewares: list[Any]) -> web.Application:
    sub = web.Application(middlewares=middlewares)
    sub[CTX] = ctx
    sub.add_routes(routes)
    return sub


def _misp_only(middleware: Any) -> Any:
    """`middleware` for the MISP API's own requests (and those no route matches); a request to a
    sub-application goes through to that application's own middlewares."""
    @web.middleware
    async def only_misp(request: web.Request, handler: Handler) -> web.StreamResponse:
        if len(request.match_info.apps) > 1:
            return await handler(request)
        return await middleware(request, handler)
    return only_misp


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    url = request.path
    try:
        return await handler(request)
    except ApiError as e:
        return misp_error(e.status, e.name, e.message, url, e.errors)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[CTX].max_request_bytes
        return misp_error(413, "Request too large", f"request bodies up to {limit} bytes are accepted "
                          "(limits.max_request_bytes)", url, {"body": [f"larger than {limit} bytes"]})
    except (ConnectionResetError, ClientPayloadError) as e:
        # a client that went away mid-body (or whose connection the body timeout closed): its business
        log.debug("%s %s: the client went away while sending its body: %s", request.method, url, e)
        return misp_error(400, "Incomplete request", "the request body was not sent whole", url,
                          {"body": ["incomplete"]})
    except web.HTTPException as e:
        if e.status == 404:
            return misp_error(404, "Not Found", f"{request.method} {url}: no such endpoint on this node "
                              "(docs/api.md lists what is served)", url, "Not Found")
        if e.status == 405:
            return misp_error(405, "Method Not Allowed", f"{request.method} is not accepted on {url}", url,
                              "Method Not Allowed")
        raise
    except Exception:  # a bug, not bad input: logged with its traceback, answered MISP-shaped
        log.exception("%s %s failed", request.method, url, extra={"method": request.method, "path": url})
        return misp_error(500, "Internal error", "the node failed to answer this request; see its log",
                          url, "Internal error")


@web.middleware
async def json_errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A sub-application's refusals (ApiError) as the JSON the MISP API answers too."""
    try:
        return await handler(request)
    except ApiError as e:
        return misp_error(e.status, e.name, e.message, request.path, e.errors)


@web.middleware
async def client_gone_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A client that went away mid-body (or whose connection the body timeout closed): its
    business, a debug line and a 400, never a traceback in the node's log."""
    try:
        return await handler(request)
    except (ConnectionResetError, ClientPayloadError) as e:
        log.debug("%s %s: the client went away while sending its body: %s", request.method, request.path, e)
        return web.Response(status=400, text="incomplete request: the body was not sent whole")
