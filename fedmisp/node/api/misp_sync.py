"""MISP's server sync against this node: what a MISP instance's `cake Server pull` and `cake Server
push` (and /servers/pull, /servers/push) call with the sync key of one of this node's MISP peers
(`fedmisp peer add --kind misp`), answered as a MISP server answers its sync user.

Pull (MISP 2.5.1's Server::pull, ServerSyncTool): servers/getVersion, events/index (POST, minimal,
published, with an ETag MISP sends back as If-None-Match), events/view/<uuid>/... per event,
shadow_attributes/index. What MISP gets is what `Replica.offer`, the outbound pipeline the peers and
served feeds use (decision 0011), allows the MISP peer's policy (`MispPeer.policy`: its
organisation and push filter): published events only, no local tags, level-4 data only for a
member organisation, with the SharingGroup block MISP captures the group from. MISP downgrades what
it pulls itself (Server::__updatePulledEventBeforeInsert: 1 -> 0, 2 -> 1), so each item is served
at the level before that downgrade of the level the peer may hold it at: MISP ends up holding
exactly what the policy allows.

Push (Server::push, Event::uploadEventToServer): events/filterEventIdsForPush, HEAD events/view,
events/add/metadata:1, events/edit/<uuid>/metadata:1. What MISP pushes goes through
node/misp_inbound.py's `prepare_misp_events` (MISP's receiver rules, then the inbound policy for
that peer) and the node's single writer, signed by this node with source misp:<peer> (decision
0001; the store's bridge rule: only that peer revises it). A refusal is answered in MISP's shape
with the reason, and nothing of the event is stored.

Sightings both ways: the index's sighting_timestamp (the newest sighting the peer may have) tells a
pulling MISP which events to ask sightings/restSearch/event about; a pushing MISP asks
sightings/filterSightingUuidsForPush which it holds and sends the rest to bulkSaveSightings.

Proposals both ways: shadow_attributes/index lists the open proposals on what the peer may pull; a
pushing MISP's events/pushProposals are kept as proposals of the MISP peer's organisation.

Analyst data (notes, opinions, relationships) ride inside the events, as offered_event gives them
(the sender's rule, decision 0029); MISP captures them when it adds or edits the event.

Not carried: custom galaxy clusters (galaxy_clusters/restSearch lists none), analyst data on its own
routes (getVersion says perm_galaxy_editor and perm_analyst_data false, so MISP does not push them
and does not call analyst_data/indexMinimal): analyst data made on a MISP instance does not reach
the node, as MISP pushes it only through those routes.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid as _uuid
from typing import Any, Iterator

from aiohttp import web

from fedmisp.gossip.observe import IN, OUT, REFUSED, SENT, STORED, WITHHELD, Decision, count_reasons
from fedmisp.gossip.replica import Replica
from fedmisp.model.misp import EventError, parse_proposal
from fedmisp.model.records import KIND_EVENT, KIND_PROPOSAL, KIND_SIGHTINGS, seal
from fedmisp.node.api.access import SYNC, SYNC_PEER, MispRoutes, declare
from fedmisp.node.api.helpers import CTX, ApiContext, ApiError, body_json, path_ref, run, this_org
from fedmisp.node.api.index import index_heads, parse_index
from fedmisp.node.api.params import QueryError
from fedmisp.node.api.render import shown_event
from fedmisp.node.feeds import offered_event
from fedmisp.node.misp_config import MispPeer
from fedmisp.node.misp_inbound import misp_source, prepare_misp_events
from fedmisp.policy.model import SHARING_GROUP, NodeState
from fedmisp.policy.pipeline import TAKES, link_reason
from fedmisp.policy.reasons import Reason
from fedmisp.store import query
from fedmisp.store.events import WriteOutcome
from fedmisp.store.proposals import HeldProposal, open_proposals
from fedmisp.store.query import element_id, is_uuid

routes = MispRoutes()

MISP_VERSION = "2.5.1"  # what this node answers MISP's sync as (checkVersionCompatibility: same minor)
# The inverse of MISP's pull downgrade: the level to serve so that MISP holds `level` after it.
_BEFORE_DOWNGRADE = {0: 1, 1: 2}
# What filterEventIdsForPush reads at most (MISP sends every pushable event of its own at once).
MAX_PUSH_CANDIDATES = 1_000_000
# Sightings: events one restSearch asks about (MISP asks 20 at a time), sightings one push carries.
MAX_SIGHTING_EVENTS = 1000
MAX_SIGHTINGS = 100_000
MAX_SOURCE = 255  # MISP's sightings.source
MAX_TIMESTAMP = 2**40
# Proposals: one index page or push at most, and the open proposals one index reads at most.
MAX_PROPOSALS = 10_000
MAX_PROPOSALS_READ = 1_000_000
NOT_NEWER = "Event could not be saved: Event in the request not newer than the local copy."


def served_level(level: int) -> int:
    return _BEFORE_DOWNGRADE.get(level, level)


def _peer(request: web.Request) -> MispPeer:
    return request[SYNC_PEER]


def _replica(ctx: ApiContext) -> Replica:
    """One Replica for the sync views (its sender and the cache of held events' views)."""
    if ctx.replica is None:
        ctx.replica = Replica(ctx.node, ctx.observer)
    return ctx.replica


def _seen(ctx: ApiContext, peer: MispPeer, what: str) -> None:
    """When the MISP peer last pulled (`pull`) or pushed (`push`): /node/v1/peers shows it."""
    ctx.misp_activity.setdefault(peer.name, {})[f"last_{what}"] = time.time()


# --- what MISP asks first ----------------------------------------------------------------------------

@declare(SYNC)
async def get_version(request: web.Request) -> web.Response:
    """As MISP answers its sync user: perm_sync (MISP pushes events), perm_sighting and
    filter_sightings (it asks which sightings are held before pushing them); no galaxy or
    analyst-data editing (MISP then leaves those routes alone: not carried, see the module)."""
    import pymisp
    ctx = request.app[CTX]
    return web.json_response({
        "version": MISP_VERSION, "pymisp_recommended_version": pymisp.__version__, "perm_sync": True,
        "perm_sighting": True, "perm_galaxy_editor": False, "perm_analyst_data": False,
        "uuid": node_uuid(ctx), "request_encoding": ["gzip"], "filter_sightings": True,
    })


def node_uuid(ctx: ApiContext) -> str:
    """The instance uuid MISP records for this node (MISP.uuid): stable, derived from its key."""
    return str(_uuid.uuid5(_uuid.NAMESPACE_URL, "fedmisp:" + ctx.node.identity.public_key.hex()))


@declare(SYNC)
async def user_me(request: web.Request) -> web.Response:
    """The sync user MISP's connection test reads: Sync user role, this node's organisation."""
    ctx = request.app[CTX]
    peer = _peer(request)
    perms = {name: False for name in (
        "perm_add", "perm_modify", "perm_modify_org", "perm_publish", "perm_delegate", "perm_admin", "perm_audit",
        "perm_site_admin", "perm_regexp_access", "perm_tagger", "perm_template", "perm_tag_editor",
        "perm_object_template", "perm_galaxy_editor", "perm_warninglist", "perm_analyst_data", "perm_sighting")}
    perms.update(perm_add=True, perm_modify=True, perm_modify_org=True, perm_publish=True, perm_sync=True,
                 perm_auth=True, perm_tagger=True, perm_sharing_group=True, perm_sighting=True)
    return web.json_response({
        "User": {"id": "0", "org_id": "1", "email": f"sync-{peer.name}@{ctx.node.config.org_uuid}", "role_id": "5",
                 "autoalert": False, "disabled": False},
        "Role": {"id": "5", "name": "Sync user", **perms},
        "UserSetting": [],
        "Organisation": this_org(ctx),
    })


# --- pull: what MISP may have ------------------------------------------------------------------------

@declare(SYNC)
async def event_index(request: web.Request) -> web.Response:
    """MISP's sync index (POST {"minimal": 1, "published": 1, pull rules}): one row per event the
    peer may pull, with an ETag; MISP's If-None-Match of the same list is a 304."""
    ctx = request.app[CTX]
    peer = _peer(request)
    params = await body_json(request, required=False) if request.method == "POST" else dict(request.query)
    if not isinstance(params, dict):
        raise ApiError(400, "events/index: expected a JSON object of filters", {"body": ["expected a JSON object"]},
                       "Invalid filter")
    try:
        wanted = parse_index({**params, "minimal": 1})
    except QueryError as e:
        raise ApiError(400, f"events/index: {e}", {e.field: [str(e)]}, "Invalid filter") from None
    _seen(ctx, peer, "pull")

    def rows() -> list[dict[str, Any]]:
        replica = _replica(ctx)
        state = replica.node_state()
        out = []
        for head in index_heads(ctx.store, wanted):
            offered = replica.offer(head.uuid, peer.policy, state)
            if offered is None:
                continue
            h = head.header
            seen = max((s["date_sighting"] for s in offered_sightings(ctx, head.uuid, offered[1])), default=0)
            out.append({"id": str(head.id), "timestamp": str(h["timestamp"]), "sighting_timestamp": str(seen),
                        "published": h["published"], "uuid": head.uuid, "orgc_uuid": h["Orgc"]["uuid"]})
        return out
    body = json.dumps(await run(rows)).encode("utf-8")
    etag = '"' + hashlib.sha1(body).hexdigest() + '"'
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(body=body, content_type="application/json", headers={"ETag": etag})


@declare(SYNC)
async def event_view(request: web.Request) -> web.Response:
    """One event as the peer may pull it (MISP's events/view/<uuid>/deleted[]:0/deleted[]:1/...;
    the options MISP sends are its sync's: no correlations, no galaxies, no local tags). HEAD (a
    pushing MISP asks whether to add or edit): 200 when the event is held for this peer (bridged
    from it, or one it may pull), 404 otherwise."""
    ctx = request.app[CTX]
    peer = _peer(request)
    event_uuid = await _event_uuid(ctx, path_ref(request))
    if request.method == "HEAD":
        known = event_uuid is not None and await run(_held_for, ctx, peer, event_uuid)
        return web.Response(status=200 if known else 404)
    event = await run(_served_event, ctx, peer, event_uuid) if event_uuid else None
    if event is None:
        raise ApiError(404, "Invalid event", f"no event {path_ref(request)!r} this node offers to MISP peer "
                       f"{peer.name!r}")
    return web.json_response(event, dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def _event_uuid(ctx: ApiContext, ref: str) -> str | None:
    return await run(query.resolve_event, ctx.store, ref)


def _held_for(ctx: ApiContext, peer: MispPeer, event_uuid: str) -> bool:
    meta = ctx.store.event_meta(event_uuid)
    if meta is None or meta.deleted:
        return False
    return meta.source == misp_source(peer) or _replica(ctx).offer(event_uuid, peer.policy) is not None


def _served_event(ctx: ApiContext, peer: MispPeer, event_uuid: str) -> dict[str, Any] | None:
    """The event for the peer (offered_event at the levels before MISP's downgrade), with the
    SharingGroup blocks MISP needs; each decision told to the observer, as a peer's changes are."""
    replica = _replica(ctx)
    state = replica.node_state()
    held, outcome = replica.sender.decide(event_uuid, peer.policy, state)
    record_id = held.record.id if held is not None else b""
    if outcome is None or not outcome.allowed:
        reason = outcome.reason.value if outcome is not None else Reason.EVENT_NOT_HELD.value
        ctx.observer.decided(Decision(peer.name, OUT, WITHHELD, KIND_EVENT, record_id, event_uuid, reason))
        return None
    event = offered_event(replica, peer.policy, event_uuid, state, served=served_level)
    if event is None:
        return None
    with_sharing_groups(ctx, event["Event"], state)
    ctx.observer.decided(Decision(peer.name, OUT, SENT, KIND_EVENT, record_id, event_uuid,
                                  elements=count_reasons(outcome.withheld)))
    return event


def with_sharing_groups(ctx: ApiContext, event: dict[str, Any], state: NodeState) -> None:
    """MISP's SharingGroup block (its organisations, SharingGroupOrg) on the event and each item at
    level 4: MISP creates or updates the group from it when a sync user's pull brings it."""
    orgs = {o["uuid"]: o for o in ctx.store.orgs()}
    items = [event, *event.get("Attribute", ()), *event.get("EventReport", ())]
    for obj in event.get("Object", ()):
        items += [obj, *obj.get("Attribute", ())]
    for item in items:
        group = state.sharing_groups.get(item.get("sharing_group_uuid") or "")
        if str(item.get("distribution")) != str(SHARING_GROUP) or group is None:
            continue
        gid = str(element_id(group.uuid))
        item["sharing_group_id"] = gid
        item["SharingGroup"] = {
            "id": gid, "uuid": group.uuid, "name": group.name, "releasability": group.releasability,
            "description": group.description, "organisation_uuid": group.owner, "active": True, "local": False,
            "roaming": True, "Organisation": _org(ctx, orgs, group.owner),
            "SharingGroupOrg": [{"extend": extend, "Organisation": _org(ctx, orgs, member)}
                                for member, extend in sorted(group.members.items())],
            "SharingGroupServer": [],
        }


def _org(ctx: ApiContext, orgs: dict[str, dict[str, Any]], org_uuid: str) -> dict[str, Any]:
    if org_uuid == ctx.node.config.org_uuid:
        return {"uuid": org_uuid, "name": ctx.node.config.org_name}
    return {"uuid": org_uuid, "name": orgs.get(org_uuid, {}).get("name") or org_uuid}


# --- sightings ------------------------------------------------------------------------------------

def offered_sightings(ctx: ApiContext, event_uuid: str, levels: dict[str, int]) -> list[dict[str, Any]]:
    """The sightings of an offered event (`levels`: what of it the peer may have) on the attributes
    the peer may have: sightings follow their event (policy/outbound.py attached_outbound)."""
    return [s for r in ctx.store.event_records(event_uuid) if r.kind == KIND_SIGHTINGS
            for s in r.body["sightings"] if s["attribute_uuid"] in levels]


@declare(SYNC)
async def sightings_search(request: web.Request) -> web.Response:
    """sightings/restSearch/event {"uuid": [event uuids], "last": 0, "org_id": ["!uuid", ...]}: the
    sightings of those events the peer may have (MISP's pullSightings, 20 events a request)."""
    ctx = request.app[CTX]
    peer = _peer(request)
    params = await body_json(request)
    if request.match_info.get("context") != "event" or not isinstance(params, dict):
        raise ApiError(400, "sightings/restSearch: a sync key searches by event (sightings/restSearch/event with "
                       "{\"uuid\": [event uuids]})", {"context": ["expected event"]})
    uuids = _uuid_list(params.get("uuid"), "uuid", MAX_SIGHTING_EVENTS)
    blocked = {o[1:] for o in _as_list(params.get("org_id")) if isinstance(o, str) and o.startswith("!")}

    def rows() -> list[dict[str, Any]]:
        replica = _replica(ctx)
        state = replica.node_state()
        out = []
        for event_uuid in uuids:
            offered = replica.offer(event_uuid, peer.policy, state)
            if offered is None:
                continue
            for s in offered_sightings(ctx, event_uuid, offered[1]):
                if s.get("Organisation", {}).get("uuid") not in blocked:
                    out.append({"Sighting": misp_sighting(s, event_uuid)})
        return out
    return web.json_response({"response": await run(rows)})


def misp_sighting(s: dict[str, Any], event_uuid: str) -> dict[str, Any]:
    """A sighting as MISP's sync carries it: org_id "0" when it names no organisation (anonymised)."""
    org = s.get("Organisation")
    out = {"uuid": s["uuid"], "attribute_uuid": s["attribute_uuid"], "event_uuid": event_uuid,
           "date_sighting": str(s["date_sighting"]), "type": str(s["type"]), "source": s.get("source", ""),
           "org_id": "1" if org else "0"}
    if org:
        out["Organisation"] = {"uuid": org["uuid"], "name": org.get("name", "")}
    return out


@routes.post("/sightings/filterSightingUuidsForPush/{ref}", SYNC)
async def sightings_held(request: web.Request) -> web.Response:
    """Of the sighting uuids MISP would push for an event, those this node holds already."""
    ctx = request.app[CTX]
    offered = set(_uuid_list(await body_json(request), "body", MAX_SIGHTINGS))
    event_uuid = await _event_uuid(ctx, path_ref(request))
    if event_uuid is None:
        raise ApiError(404, "Event not found", f"no event {path_ref(request)!r} on this node")

    def held() -> list[str]:
        return sorted(s["uuid"] for r in ctx.store.event_records(event_uuid) if r.kind == KIND_SIGHTINGS
                      for s in r.body["sightings"] if s["uuid"] in offered)
    return web.json_response(await run(held))


@routes.post("/sightings/bulkSaveSightings/{ref}", SYNC)
async def sightings_save(request: web.Request) -> web.Response:
    """The sightings a pushing MISP sends for one event, kept as MISP's bulkSaveSightings keeps them:
    new uuids only, on attributes of the event this peer has (bridged from it, or offered to it);
    signed by this node as their importer (decision 0001), each naming its reporting organisation."""
    ctx = request.app[CTX]
    peer = _peer(request)
    posted = await body_json(request)
    posted = posted.get("Sighting", posted) if isinstance(posted, dict) else posted
    if not isinstance(posted, list) or len(posted) > MAX_SIGHTINGS:
        raise ApiError(400, f"sightings/bulkSaveSightings: expected a list of at most {MAX_SIGHTINGS} sightings",
                       {"body": ["expected a list of sightings"]})
    sightings = [_pushed_sighting(item, i) for i, item in enumerate(posted)]
    event_uuid = await _event_uuid(ctx, path_ref(request))
    if event_uuid is None:
        raise ApiError(405, "Event not found or not accessible by this user.")
    _seen(ctx, peer, "push")

    def save() -> int:
        replica = _replica(ctx)
        state = replica.node_state()
        if link_reason(peer.policy, state, TAKES) is not Reason.ALLOWED:
            return -1
        attributes = _attributes_of_peer(ctx, peer, event_uuid, state)
        held = {s["uuid"] for r in ctx.store.event_records(event_uuid) if r.kind == KIND_SIGHTINGS
                for s in r.body["sightings"]}
        new = [s for s in {s["uuid"]: s for s in sightings}.values()
               if s["uuid"] not in held and s["attribute_uuid"] in attributes]
        if new:
            ctx.store.write_records([seal(ctx.node.identity, KIND_SIGHTINGS, {"event_uuid": event_uuid,
                                                                              "sightings": new})])
        return len(new)
    saved = await run(save)
    if saved < 0:
        _refused(ctx, peer, event_uuid, Reason.PEER_MODE.value, "this node takes nothing from a push-only peer",
                 KIND_SIGHTINGS)
        raise ApiError(403, f"Sightings could not be saved: MISP peer {peer.name!r} is push-only (this node takes "
                       f"nothing from it; {Reason.PEER_MODE.value})")
    if saved:
        ctx.observer.decided(Decision(peer.name, IN, STORED, KIND_SIGHTINGS, b"", event_uuid))
    return web.json_response({"saved": saved > 0, "success": f"{saved} sightings added." if saved
                              else "No sightings added."})


def _pushed_sighting(item: Any, i: int) -> dict[str, Any]:
    """One pushed sighting in this node's shape; 400 naming the field when it is not one."""
    where = f"[{i}]"
    if not isinstance(item, dict):
        raise ApiError(400, f"sightings/bulkSaveSightings: {where}: expected a sighting object",
                       {where: ["expected a JSON object"]})
    for name in ("uuid", "attribute_uuid"):
        if not isinstance(item.get(name), str) or not is_uuid(item[name]):
            raise ApiError(400, f"sightings/bulkSaveSightings: {where}.{name}: expected a uuid",
                           {f"{where}.{name}": ["expected a uuid"]})
    when, kind, source = str(item.get("date_sighting", "")), str(item.get("type", "0")), item.get("source") or ""
    if not when.isdigit() or not 0 < int(when) < MAX_TIMESTAMP:
        raise ApiError(400, f"sightings/bulkSaveSightings: {where}.date_sighting: expected a Unix time in seconds",
                       {f"{where}.date_sighting": ["expected a Unix time"]})
    if kind not in ("0", "1", "2") or not isinstance(source, str) or len(source) > MAX_SOURCE:
        raise ApiError(400, f"sightings/bulkSaveSightings: {where}: type must be 0, 1 or 2 and source text of at "
                       f"most {MAX_SOURCE} characters", {f"{where}.type": ["expected 0, 1 or 2"]})
    out = {"uuid": str(_uuid.UUID(item["uuid"])), "attribute_uuid": str(_uuid.UUID(item["attribute_uuid"])),
           "date_sighting": int(when), "type": int(kind), "source": source}
    org = item.get("Organisation")
    if str(item.get("org_id", "0")) != "0" and isinstance(org, dict) and isinstance(org.get("uuid"), str) \
            and is_uuid(org["uuid"]):
        out["Organisation"] = {"uuid": str(_uuid.UUID(org["uuid"])), "name": str(org.get("name", ""))[:255]}
    return out


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _uuid_list(value: Any, name: str, limit: int) -> list[str]:
    items = _as_list(value)
    if len(items) > limit or not all(isinstance(u, str) and is_uuid(u) for u in items):
        raise ApiError(400, f"{name}: expected a list of at most {limit} uuids", {name: ["expected uuids"]})
    return [str(_uuid.UUID(u)) for u in items]


# --- proposals ------------------------------------------------------------------------------------

@declare(SYNC)
async def proposals_index(request: web.Request) -> web.Response:
    """shadow_attributes/index/all:1/timestamp:T/limit:N/page:P/...: the open proposals made since T
    on events the peer may pull (and, for a change, on an attribute it may have), paged as MISP pages
    (its pullProposals asks 1000 at a time until a page is short)."""
    ctx = request.app[CTX]
    peer = _peer(request)
    named = _named(request.match_info.get("ref", "") + "/" + request.match_info.get("opts", ""))
    since, limit, page = (_count(named, "timestamp", 0), _count(named, "limit", MAX_PROPOSALS) or MAX_PROPOSALS,
                          _count(named, "page", 1) or 1)
    limit = min(limit, MAX_PROPOSALS)

    def listing() -> list[dict[str, Any]]:
        replica = _replica(ctx)
        state = replica.node_state()
        offers: dict[str, dict[str, int] | None] = {}
        kept = []
        for held in _all_open_proposals(ctx):
            body = held.body
            if body["timestamp"] < since:
                continue
            if held.event_uuid not in offers:
                offered = replica.offer(held.event_uuid, peer.policy, state)
                offers[held.event_uuid] = offered[1] if offered is not None else None
            levels = offers[held.event_uuid]
            if levels is None or body.get("attribute_uuid", held.event_uuid) not in levels:
                continue
            kept.append({"ShadowAttribute": misp_proposal(body, held.event_uuid)})
        return kept[(page - 1) * limit: page * limit]
    return web.json_response(await run(listing))


def _all_open_proposals(ctx: ApiContext) -> Iterator[HeldProposal]:
    offset = 0
    while offset < MAX_PROPOSALS_READ:
        chunk = open_proposals(ctx.store, None, MAX_PROPOSALS, offset)
        yield from chunk
        if len(chunk) < MAX_PROPOSALS:
            return
        offset += len(chunk)


def misp_proposal(body: dict[str, Any], event_uuid: str) -> dict[str, Any]:
    """A proposal as MISP's sync carries a ShadowAttribute: a change of an attribute has the
    attribute's uuid and an old_id (MISP looks the attribute up by that uuid), a new one neither."""
    org = body.get("Org") or {}
    out = {"uuid": body.get("attribute_uuid", body["uuid"]), "event_uuid": event_uuid, "type": body["type"],
           "category": body["category"], "value": body["value"], "to_ids": bool(body.get("to_ids")),
           "comment": body.get("comment", ""), "timestamp": str(body["timestamp"]), "deleted": False,
           "proposal_to_delete": bool(body.get("proposal_to_delete")),
           "disable_correlation": bool(body.get("disable_correlation")), "first_seen": body.get("first_seen"),
           "last_seen": body.get("last_seen"), "email": "", "Org": {"uuid": org.get("uuid", ""),
                                                                     "name": org.get("name", "")}}
    if "attribute_uuid" in body:
        out["old_id"] = "1"
    return out


def _named(path: str) -> dict[str, str]:
    """CakePHP's named parameters of a path (`timestamp:123/limit:10`); `x[]:v` ones are left out."""
    return dict(part.split(":", 1) for part in path.split("/") if ":" in part and "[" not in part.split(":", 1)[0])


def _count(named: dict[str, str], name: str, default: int) -> int:
    value = named.get(name, str(default)).removesuffix(".json")
    if not value.isdigit() or len(value) > 12:
        raise ApiError(400, f"shadow_attributes/index: {name}: {value!r}; expected a whole number",
                       {name: ["expected a whole number"]})
    return int(value)


@routes.post("/events/pushProposals/{ref}", SYNC)
async def proposals_push(request: web.Request) -> web.Response:
    """The proposals a pushing MISP sends for one event (its ShadowAttributes): kept as proposals of
    the MISP peer's organisation, signed by this node as their importer (decision 0001), on events
    the peer has (bridged from it, or offered to it); one already open is not kept twice."""
    ctx = request.app[CTX]
    peer = _peer(request)
    posted = await body_json(request)
    if not isinstance(posted, list) or len(posted) > MAX_PROPOSALS:
        raise ApiError(400, f"events/pushProposals: expected a list of at most {MAX_PROPOSALS} proposals",
                       {"body": ["expected a list of ShadowAttributes"]})
    event_uuid = await _event_uuid(ctx, path_ref(request))
    if event_uuid is None:
        raise ApiError(404, "Invalid event", f"no event {path_ref(request)!r} on this node")
    _seen(ctx, peer, "push")

    def save() -> tuple[int, list[str]]:
        replica = _replica(ctx)
        state = replica.node_state()
        if link_reason(peer.policy, state, TAKES) is not Reason.ALLOWED:
            return 0, [f"MISP peer {peer.name!r} is push-only ({Reason.PEER_MODE.value})"]
        attributes = _attributes_of_peer(ctx, peer, event_uuid, state)
        held = {(p.body["uuid"], p.body["timestamp"]) for p in open_proposals(ctx.store, event_uuid)}
        org = {"uuid": peer.org_uuid, "name": _org(ctx, {o["uuid"]: o for o in ctx.store.orgs()}, peer.org_uuid)["name"]}
        records, problems = [], []
        for i, raw in enumerate(posted):
            target, proposal = _pushed_proposal(raw, i, event_uuid, attributes, org, problems)
            if proposal is not None and (proposal["uuid"], proposal["timestamp"]) not in held:
                records.append(seal(ctx.node.identity, KIND_PROPOSAL, {"event_uuid": event_uuid, "proposal": proposal}))
        if records:
            ctx.store.write_records(records)
        return len(records), problems
    saved, problems = await run(save)
    for problem in problems:
        _refused(ctx, peer, event_uuid, refusal_code(problem), problem, KIND_PROPOSAL)
    if saved:
        ctx.observer.decided(Decision(peer.name, IN, STORED, KIND_PROPOSAL, b"", event_uuid))
    message = f"{saved} proposal(s) saved" + (": " + "; ".join(problems[:20]) if problems else "")
    return web.json_response({"success": not problems or saved > 0, "counter": saved, "message": message})


def _attributes_of_peer(ctx: ApiContext, peer: MispPeer, event_uuid: str, state: NodeState) -> set[str]:
    """The attributes of an event the MISP peer has: all of one bridged from it, else those offered."""
    meta = ctx.store.event_meta(event_uuid)
    if meta is not None and meta.source == misp_source(peer):
        return {e["uuid"] for e in query.event_elements(ctx.store, event_uuid) if "value" in e} | {event_uuid}
    offered = _replica(ctx).offer(event_uuid, peer.policy, state)
    return set(offered[1]) if offered is not None else set()


def _pushed_proposal(raw: Any, i: int, event_uuid: str, attributes: set[str], org: dict[str, str],
                     problems: list[str]) -> tuple[str | None, dict[str, Any] | None]:
    """One pushed ShadowAttribute as this node's proposal (a change when its old_id names an
    attribute: MISP gives it that attribute's uuid), or None with the problem noted."""
    where = f"ShadowAttribute[{i}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: {Reason.MALFORMED.value}: expected a JSON object")
        return None, None
    if event_uuid not in attributes:
        problems.append(f"{where}: {Reason.EVENT_NOT_HELD.value}: the event is not one this MISP peer has")
        return None, None
    change = str(raw.get("old_id", "0")) not in ("0", "", "None")
    target = str(raw.get("uuid", "")).lower() if change else None
    if change and target not in attributes:
        problems.append(f"{where}: {Reason.PARENT_WITHHELD.value}: it changes attribute {target}, which this MISP "
                        "peer does not have")
        return None, None
    stamp = str(raw.get("timestamp", ""))
    fields = {k: raw[k] for k in ("type", "category", "value", "to_ids", "comment", "first_seen", "last_seen",
                                  "proposal_to_delete", "disable_correlation") if raw.get(k) is not None}
    if change or isinstance(raw.get("uuid"), str):
        fields["uuid"] = target if change else raw["uuid"]  # (a change has its attribute's uuid, as in MISP)
    try:
        proposal = parse_proposal(fields, event_uuid, int(stamp) if stamp.isdigit() else int(time.time()), target,
                                  org)
    except EventError as e:
        problems.append(f"{where}: {Reason.MALFORMED.value}: " + "; ".join(map(str, e.problems)))
        return None, None
    if stamp.isdigit():
        proposal["timestamp"] = int(stamp)
    return target, proposal


# --- custom galaxy clusters --------------------------------------------------------------------------

@declare(SYNC)
async def clusters_search(request: web.Request) -> web.Response:
    """galaxy_clusters/restSearch (a MISP server with "pull galaxy clusters" asks for the custom,
    published ones): none are carried to MISP peers yet, so none are listed."""
    return web.json_response({"response": []})


# --- push: what MISP sends ---------------------------------------------------------------------------

@routes.post("/events/filterEventIdsForPush", SYNC)
async def filter_for_push(request: web.Request) -> web.Response:
    """The uuids of the offered events ([{"Event": {"uuid", "timestamp"}}]) this node wants: those it
    does not hold, or holds older (MISP's filterEventIdsForPush)."""
    ctx = request.app[CTX]
    posted = await body_json(request)
    if not isinstance(posted, list) or len(posted) > MAX_PUSH_CANDIDATES:
        raise ApiError(400, "events/filterEventIdsForPush: expected a list of {\"Event\": {\"uuid\", \"timestamp\"}}",
                       {"body": [f"expected a list of at most {MAX_PUSH_CANDIDATES} events"]})
    candidates: list[tuple[str, int]] = []
    for i, item in enumerate(posted):
        event = item.get("Event") if isinstance(item, dict) else None
        uuid_ = event.get("uuid") if isinstance(event, dict) else None
        stamp = event.get("timestamp") if isinstance(event, dict) else None
        if not isinstance(uuid_, str) or not is_uuid(uuid_) or not str(stamp).isdigit():
            raise ApiError(400, f"events/filterEventIdsForPush: [{i}]: expected {{\"Event\": {{\"uuid\": UUID, "
                           "\"timestamp\": SECONDS}}", {f"[{i}]": ["expected an event uuid and timestamp"]})
        candidates.append((str(_uuid.UUID(uuid_)), int(str(stamp))))

    def wanted() -> list[str]:
        out = []
        for event_uuid, stamp in candidates:
            held = ctx.store.held(event_uuid)
            if held is None or held.timestamp < stamp:
                out.append(event_uuid)
        return out
    _seen(ctx, _peer(request), "push")
    return web.json_response(await run(wanted))


@declare(SYNC)
async def event_add(request: web.Request) -> web.Response:
    """events/add/metadata:1 from a pushing MISP."""
    return await _pushed(request, "add")


@declare(SYNC)
async def event_edit(request: web.Request) -> web.Response:
    """events/edit/<uuid>/metadata:1 from a pushing MISP: the same as an add (the store decides
    whether the revision is newer, and the bridge rule whether this peer may revise it)."""
    return await _pushed(request, "edit")


async def _pushed(request: web.Request, what: str) -> web.Response:
    ctx = request.app[CTX]
    peer = _peer(request)
    document = await body_json(request)
    if not isinstance(document, dict) or not isinstance(document.get("Event", document), dict):
        raise ApiError(400, f"Could not {what} Event: expected {{\"Event\": {{...}}}}",
                       {"Event": ["expected a JSON object"]}, f"Could not {what} Event")
    raw = document.get("Event", document)
    posted_uuid = raw.get("uuid") if isinstance(raw.get("uuid"), str) else ""
    if what == "edit":
        ref = path_ref(request)
        if not is_uuid(ref) or not is_uuid(posted_uuid) or _uuid.UUID(ref) != _uuid.UUID(posted_uuid):
            raise ApiError(400, f"Could not edit Event: the path names {ref!r} and the event's uuid is "
                           f"{posted_uuid!r}; expected the same uuid", {"uuid": ["not the uuid in the path"]},
                           "Could not edit Event")
    _seen(ctx, peer, "push")
    mode = link_reason(peer.policy, NodeState(ctx.node.config.org_uuid), TAKES)
    if mode is not Reason.ALLOWED:
        _refused(ctx, peer, posted_uuid, mode.value, "this node takes nothing from a push-only peer")
        raise ApiError(403, f"Event could not be saved: MISP peer {peer.name!r} is push-only: this node takes "
                       f"nothing from it ({mode.value})", f"Event could not be saved: {mode.value}",
                       "Event could not be saved")
    label = f"events/{what} from MISP peer {peer.name}"
    async with ctx.edit_lock:
        result = await run(prepare_misp_events, ctx.node, peer, {"Event": raw}, pulled=False, label=label)
        outcomes = []
        if result.events:
            future = await run(ctx.writer.submit, result.events)
            outcomes = await _wait(future)
    event_uuid = str(_uuid.UUID(posted_uuid)) if is_uuid(posted_uuid) else posted_uuid
    if result.refused or result.filtered:
        reason = "; ".join(result.refused) or f"the pull filter of MISP peer {peer.name!r} does not take it"
        _refused(ctx, peer, event_uuid, refusal_code(reason) if result.refused else FILTERED, reason)
        raise ApiError(403, f"Event could not be saved: {reason}", f"Event could not be saved: {reason}",
                       "Event could not be saved")
    if not outcomes or outcomes[0] in (WriteOutcome.UNCHANGED, Reason.OLDER):
        raise ApiError(403, NOT_NEWER, NOT_NEWER, NOT_NEWER)
    outcome = outcomes[0]
    if outcome is not WriteOutcome.STORED:
        code = getattr(outcome, "value", str(outcome))
        _refused(ctx, peer, event_uuid, code, code)
        raise ApiError(403, f"Event could not be saved: {_WRITE_REFUSALS.get(code, code)} ({code})",
                       f"Event could not be saved: {code}", "Event could not be saved")
    ctx.observer.decided(Decision(peer.name, IN, STORED, KIND_EVENT, result.events[0].record_id, event_uuid,
                                  elements={Reason.MALFORMED.value: len(result.dropped[0])} if result.dropped[0] else {}))
    event = await run(shown_event, ctx, event_uuid)
    return web.json_response(event)


_WRITE_REFUSALS = {
    Reason.NOT_BRIDGE.value: "this node holds the event from another source; an event is revised only "
                             "through the path it came by (decision 0032)",
    Reason.NOT_AUTHOR.value: "this node holds the event signed by another organisation's key",
    Reason.UUID_CONFLICT.value: "an attribute or object uuid is already used by another event",
}


# The code an event the peer's pull filter does not take is counted under (prepare_misp_events
# counts it as filtered, without the filter's own reason).
FILTERED = "pull-filter"
# Reason codes, longest first: `sg-relay-not-member` before `sg-not-member`.
_CODES = sorted((r.value for r in Reason), key=len, reverse=True)


def refusal_code(text: str) -> str:
    """The reason code a refusal of prepare_misp_events names (its lines name it), else malformed
    (the event does not validate, or lacks its creator)."""
    return next((code for code in _CODES if code in text), Reason.MALFORMED.value)


async def _wait(future: Any) -> list[Any]:
    return list(await asyncio.wrap_future(future))


def _refused(ctx: ApiContext, peer: MispPeer, event_uuid: str, code: str, detail: str, kind: str = KIND_EVENT) -> None:
    ctx.observer.decided(Decision(peer.name, IN, REFUSED, kind, b"", event_uuid, code, detail=detail[:500]))


def misp_peers_json(ctx: ApiContext) -> dict[str, Any]:
    """The MISP peers as /node/v1/peers lists them: kind, URL, mode, when the MISP instance last
    pulled from and pushed to this node (null: not since this node started)."""
    out = {}
    for peer in ctx.node.config.misp_peers:
        seen = ctx.misp_activity.get(peer.name, {})
        out[peer.name] = {"kind": "misp", "url": peer.url, "mode": peer.policy.mode.value, "org_uuid": peer.org_uuid,
                          "last_pull": seen.get("last_pull"), "last_push": seen.get("last_push")}
    return out
