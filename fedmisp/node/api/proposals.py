"""Proposals in the REST API: MISP's shadowAttributes endpoints (docs/api.md "Proposals").

A proposal is a `proposal` record signed by this node: a new attribute for an event (add), a
change to an attribute (edit) or its deletion (delete). Anyone with role user may propose, on any
event this node shows, its own included (as in MISP). Only the event's creator decides: when this
node created the event, accept makes a new signed revision with the change and discard does not;
both store a signed `proposal-decision` record, in the same transaction as the revision for an
accept. Decisions replicate with the event (docs/gossip.md), so the proposal leaves every listing.

MISP's answers are kept (app/Controller/ShadowAttributesController.php): `{"ShadowAttribute": …}`
for add, edit and view, a list of those for index, `{"saved", "success"}` for delete and
`{"name", "message", "url"}` for accept and discard. Where MISP answers an unknown id or a refusal
with 405 or 500, this node answers 404 or 403 in MISP's error shape.
"""
from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from fedmisp.model.misp import EventError, parse_proposal
from fedmisp.model.records import KIND_PROPOSAL, KIND_PROPOSAL_DECISION, seal
from fedmisp.node.api.access import READ_ONLY, USER, MispRoutes
from fedmisp.node.api.helpers import (
    CTX, NOT_PERMITTED, ApiContext, ApiError, body_json, edit_element, event_error, path_ref,
    resolve_element, resolve_event, revise_event, run,
)
from fedmisp.node.api.render import proposal_json
from fedmisp.store import query
from fedmisp.store.proposals import (
    ACCEPTED, DISCARDED, HeldProposal, decision_body, find_proposal, open_proposals,
)
routes = MispRoutes()
# MISP answers both spellings (PyMISP uses shadowAttributes)
proposals = routes.controller("/shadowAttributes", "/shadow_attributes")

# Fields a proposal may set (MISP's ShadowAttributesController::edit "optional" fields).
EDITABLE = ("category", "type", "value", "to_ids", "comment", "first_seen", "last_seen")
# Proposals listed by one index request (MISP pages with limit and page; so does this node).
MAX_LISTED = 10_000


def _held_event(ctx: ApiContext, event_uuid: str) -> query.EventHead:
    head = query.event_head(ctx.store, event_uuid)
    if head is None:  # deleted, or held for correlation only: never shown, never proposed to
        raise ApiError(404, "Invalid event", f"no event {event_uuid} on this node")
    return head


def _posted(document: Any) -> dict[str, Any]:
    """The proposal in a request: bare, or wrapped as MISP accepts (request, ShadowAttribute,
    Attribute, Proposal)."""
    if isinstance(document, dict) and isinstance(document.get("request"), dict):
        document = document["request"]
    if isinstance(document, dict):
        for key in ("ShadowAttribute", "Attribute", "Proposal"):
            if isinstance(document.get(key), dict):
                return dict(document[key])
        return dict(document)
    raise ApiError(400, "Could not save the proposal: expected {\"ShadowAttribute\": {\"type\", \"value\", …}}",
                   {"ShadowAttribute": ["expected a JSON object"]}, "Could not save the proposal")


async def _propose(request: web.Request, event_uuid: str, raw: dict[str, Any],
                   attribute_uuid: str | None) -> HeldProposal:
    """Validate, sign and store one proposal of this node's org."""
    ctx = request.app[CTX]
    org = {"name": ctx.node.config.org_name, "uuid": ctx.node.config.org_uuid}
    try:
        proposal = parse_proposal(raw, event_uuid, int(time.time()), attribute_uuid, org)
    except EventError as e:
        raise event_error(e, "save the proposal") from None
    if attribute_uuid is None:
        # accepting it adds an attribute of this uuid; MISP keeps attribute uuids unique
        other = await run(query.element_event, ctx.store, proposal["uuid"])
        if other is not None:
            raise ApiError(400, f"Could not save the proposal: uuid {proposal['uuid']} is already used by event "
                           f"{other}; leave uuid out to get a new one",
                           {"uuid": ["already used; element uuids are unique across events"]},
                           "Could not save the proposal")
    record = seal(ctx.node.identity, KIND_PROPOSAL, {"event_uuid": event_uuid, "proposal": proposal})
    await run(ctx.store.write_records, [record])
    _notify(ctx)
    return HeldProposal(record, event_uuid)


def _notify(ctx: ApiContext) -> None:
    """Tell peers at once (as the writer does after its commits); anti-entropy would catch up too."""
    if ctx.writer.on_commit is not None:
        ctx.writer.on_commit()


# --- proposing -------------------------------------------------------------------------------------

@proposals.post("/add/{ref}", USER)
async def proposal_add(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid = await resolve_event(ctx, path_ref(request))
    head = await run(_held_event, ctx, event_uuid)
    raw = _posted(await body_json(request))
    raw = {k: v for k, v in raw.items() if k not in ("id", "event_id", "old_id", "timestamp", "deleted",
                                                      "proposal_to_delete", "attribute_uuid", "Org")}
    held = await _propose(request, event_uuid, raw, None)
    return web.json_response({"ShadowAttribute": proposal_json(ctx, head, held)})


async def _attribute_proposal(request: web.Request, changes: dict[str, Any]) -> tuple[query.EventHead, HeldProposal]:
    """A proposal about a held attribute: its current fields with `changes` over them."""
    ctx = request.app[CTX]
    event_uuid, body = await resolve_element(ctx, path_ref(request), "attribute")
    head = await run(_held_event, ctx, event_uuid)
    raw = {k: body[k] for k in EDITABLE if k in body}
    if "object_uuid" in body:
        changes.pop("type", None)  # an object attribute's type is its template's (MISP keeps it too)
    raw.update(changes, uuid=body["uuid"])  # an edit proposal has the attribute's uuid (MISP)
    return head, await _propose(request, event_uuid, raw, body["uuid"])


@proposals.post("/edit/{ref}", USER)
async def proposal_edit(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    posted = _posted(await body_json(request))
    changes = {k: posted[k] for k in EDITABLE if posted.get(k) is not None}
    if not changes:
        # MISP: MethodNotAllowedException('Invalid input.') when no proposable field is given
        raise ApiError(405, "Invalid input. A proposal changes at least one of: " + ", ".join(EDITABLE),
                       {"ShadowAttribute": [f"give at least one of {', '.join(EDITABLE)}"]}, "Invalid input.")
    head, held = await _attribute_proposal(request, changes)
    return web.json_response({"ShadowAttribute": proposal_json(ctx, head, held)})


@proposals.post("/delete/{ref}", USER)
async def proposal_delete(request: web.Request) -> web.Response:
    await _attribute_proposal(request, {"proposal_to_delete": True})
    return web.json_response({"saved": True, "success": "The proposal to delete the attribute has been saved"})


# --- reading ---------------------------------------------------------------------------------------

async def _find(ctx: ApiContext, ref: str) -> tuple[query.EventHead, HeldProposal]:
    held = await run(find_proposal, ctx.store, int(ref)) if ref.isdigit() and len(ref) < 20 else None
    head = await run(query.event_head, ctx.store, held.event_uuid) if held is not None else None
    if held is None or head is None:
        raise ApiError(404, "Invalid proposal.", f"no open proposal {ref!r} on this node (an accepted or "
                       "discarded one is closed); give its numeric id from shadowAttributes/index")
    return head, held


@proposals.get("/view/{ref}", READ_ONLY)
async def proposal_view(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    head, held = await _find(ctx, path_ref(request))
    return web.json_response({"ShadowAttribute": proposal_json(ctx, head, held)})


def _page(request: web.Request, opts: str) -> tuple[int, int]:
    """`limit` and `page` from the query string or CakePHP named parameters (/limit:10/page:2)."""
    params = dict(request.query)
    for part in opts.split("/"):
        key, sep, value = part.partition(":")
        if sep:
            params.setdefault(key, value)
    out = []
    for key, default, top in (("limit", MAX_LISTED, MAX_LISTED), ("page", 1, 10**9)):
        value = str(params.get(key, default))
        if not value.isdigit() or not 1 <= int(value) <= top:
            raise ApiError(400, f"{key}: {value!r}; expected a whole number from 1 to {top}",
                           {key: [f"expected 1 to {top}"]}, f"Invalid {key}")
        out.append(int(value))
    return out[0], out[1]


@proposals.get("/index", READ_ONLY)
@proposals.get("/index/{ref}", READ_ONLY)
@proposals.get("/index/{ref}/{opts:.*}", READ_ONLY)
async def proposal_index(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ref, opts = path_ref(request), request.match_info.get("opts", "")
    if ":" in ref:  # index/limit:10: a named parameter, not an event
        ref, opts = "", ref + "/" + opts
    event_uuid = await resolve_event(ctx, ref) if ref else None
    limit, page = _page(request, opts)

    def listing() -> list[dict[str, Any]]:
        heads: dict[str, query.EventHead | None] = {}
        out = []
        for held in open_proposals(ctx.store, event_uuid, limit, (page - 1) * limit):
            if held.event_uuid not in heads:
                heads[held.event_uuid] = query.event_head(ctx.store, held.event_uuid)
            head = heads[held.event_uuid]
            if head is not None:  # proposals on events this node does not show are not listed
                out.append({"ShadowAttribute": proposal_json(ctx, head, held)})
        return out
    return web.json_response(await run(listing))


# --- deciding ----------------------------------------------------------------------------------------

async def _decidable(request: web.Request, what: str) -> tuple[ApiContext, query.EventHead, HeldProposal]:
    ctx = request.app[CTX]
    head, held = await _find(ctx, path_ref(request))
    if head.author != ctx.node.identity.public_key:
        creator = head.header["Orgc"]["name"]
        raise ApiError(403, NOT_PERMITTED, {"ShadowAttribute": [
            f"only the event's creator ({creator}) may {what} proposals to it; this node's org did not create it"]},
            NOT_PERMITTED)
    return ctx, head, held


def _decision(ctx: ApiContext, held: HeldProposal, decision: str) -> Any:
    return seal(ctx.node.identity, KIND_PROPOSAL_DECISION, decision_body(held.event_uuid, held.record, decision))


@proposals.post("/accept/{ref}", USER)
async def proposal_accept(request: web.Request) -> web.Response:
    ctx, _head, held = await _decidable(request, "accept")
    body = held.body
    decision = (_decision(ctx, held, ACCEPTED),)
    target = body.get("attribute_uuid")
    if target:
        found = await run(query.find_element, ctx.store, target)
        if found is None or found[0] != held.event_uuid:
            raise ApiError(404, "Invalid attribute", f"the attribute {target} this proposal changes is no longer in "
                           "the event; discard the proposal", {"old_id": ["no longer held"]})
        if body.get("proposal_to_delete"):
            changes: dict[str, Any] = {"deleted": True}  # MISP deletes softly on accept
        else:
            changes = {k: body[k] for k in EDITABLE if k in body}
        await edit_element(request, held.event_uuid, target, changes, "accept Proposal", extra_records=decision)
        message = "Proposed change accepted."
    else:
        attribute = {k: body[k] for k in (*EDITABLE, "uuid", "disable_correlation") if k in body}
        attribute["distribution"] = 5  # MISP: an accepted new attribute inherits the event's distribution
        await revise_event(request, held.event_uuid, "accept Proposal", posted={"Attribute": [attribute]},
                      extra_records=decision)
        message = "Proposal accepted."
    return web.json_response({"name": message, "message": message,
                              "url": f"/shadow_attributes/accept/{held.id}"})


@proposals.post("/discard/{ref}", USER)
async def proposal_discard(request: web.Request) -> web.Response:
    ctx, _head, held = await _decidable(request, "discard")
    await run(ctx.store.write_records, [_decision(ctx, held, DISCARDED)])
    _notify(ctx)
    message = "Proposal discarded."
    return web.json_response({"name": message, "message": message,
                              "url": f"/shadow_attributes/discard/{held.id}"})


