"""restSearch on events and attributes: MISP's parameters become a Query (node/api/params.py), the
store searches (store/query.py), and the returnFormat's writer in export/formats.py writes the
answer, with to_ids and the warninglists applied there once for every format."""
from __future__ import annotations

from typing import Any

from aiohttp import web

from fedmisp.correlate.engine import Correlator, related_attribute
from fedmisp.export import filters, formats
from fedmisp.node.api.access import READ_ONLY, MispRoutes
from fedmisp.node.api.helpers import CTX, ApiError, body_json, stream, unwrap
from fedmisp.node.api.params import QueryError, flag, parse_search
from fedmisp.node.api.render import attribute_json, custom_clusters, galaxy_blocks, shown_event
from fedmisp.store import query

routes = MispRoutes()


async def _search_params(request: web.Request) -> tuple[query.Query, formats.Format, dict[str, Any]]:
    raw = unwrap(await body_json(request, required=False), "request")
    if not isinstance(raw, dict):
        raise ApiError(400, "restSearch: expected a JSON object of parameters", {"body": ["expected a JSON object"]})
    params = {k: v for k, v in raw.items() if v is not None}
    try:
        q, fmt = parse_search(params, request.match_info.get("tail", ""))
    except QueryError as e:
        raise ApiError(400, f"restSearch: {e}", {e.field: [str(e)]}, "Invalid search") from None
    return q, fmt, params


@routes.post("/attributes/restSearch{tail:(/.*)?}", READ_ONLY)
async def attribute_search(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    q, fmt, params = await _search_params(request)
    correlator = (Correlator(ctx.store, ctx.node.config.correlation)
                  if fmt.name == "json" and flag(params.get("includeCorrelations")) else None)
    warnings = fmt.name == "json" and flag(params.get("includeWarninglistHits"))
    enforce = flag(params.get("enforceWarninglist"))
    # MISP's attributes/restSearch: the attribute's galaxies, then its event's, when asked
    galaxies = fmt.name == "json" and flag(params.get("includeGalaxy")) and not flag(params.get("excludeGalaxy"))

    custom: dict[str, Any] | None = None

    def shown(h: query.EventHead, b: dict[str, Any]) -> dict[str, Any]:
        nonlocal custom
        a = attribute_json(h, b)
        if correlator is not None:
            related = correlator.attribute(h.uuid, b).matches
            if related:
                a["RelatedAttribute"] = [related_attribute(m) for m in related]
        if warnings:
            hits = filters.warninglists(b)
            if hits:
                a["warnings"] = [{"warninglist_name": name} for name in hits]
        if galaxies:
            if custom is None:
                custom = custom_clusters(ctx)
            blocks = galaxy_blocks([*a.get("Tag", ()), *h.header.get("Tag", ())], custom, ctx.node.config.org_uuid)
            if blocks:
                a["Galaxy"] = blocks
        return a
    # A lookup of a few exact values: cheaper on the loop than through a worker thread (bench/api.py)
    inline = (fmt.name == "json" and correlator is None and not warnings and not enforce and not galaxies
              and query.small_exact_search(ctx.store, q))
    export = formats.Export(ctx.store, f"fedmisp {ctx.node.config.org_name}", shown)
    return await stream(request, formats.attribute_export(export, q, fmt, enforce_warninglist=enforce),
                        fmt.content_type, inline=inline)


@routes.post("/events/restSearch{tail:(/.*)?}", READ_ONLY)
async def event_search(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    q, fmt, params = await _search_params(request)
    if fmt.name == "json":
        include_deleted, correlations = True in q.deleted, flag(params.get("includeCorrelations"))
        galaxies = not flag(params.get("excludeGalaxy"))  # MISP's events json has Galaxy blocks unless excluded

        def shown(head: query.EventHead) -> dict[str, Any] | None:
            return shown_event(ctx, head.uuid, include_deleted, q.event_metadata, correlations, galaxies)
    else:
        def shown(head: query.EventHead) -> dict[str, Any] | None:
            return shown_event(ctx, head.uuid, galaxies=False)  # the other formats are made from tags
    export = formats.Export(ctx.store, f"fedmisp {ctx.node.config.org_name}", attribute_json, shown)
    return await stream(request, formats.event_export(export, q, fmt,
                                                      enforce_warninglist=flag(params.get("enforceWarninglist"))),
                        fmt.content_type)
