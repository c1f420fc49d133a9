"""What the REST API's handlers share: the request context, MISP-shaped errors, reading a request
body, finding and revising held events, and streaming an answer. Handlers import these from here,
never from another handler module or from the app factory (node/api/app.py).

Handlers never block the event loop: store reads and signing run in the default thread pool (on
the loop only the API key check, one point read of a small table, and a restSearch of a few exact
values in events whose heads are verified already: decision 0016), and writes go through the
node's single Writer (its futures wrapped with asyncio.wrap_future). Edits of one event are
read-modify-write, so they run one at a time under one lock; reads never wait for it. Search
results are streamed a chunk at a time (aiohttp StreamResponse); an answer shorter than one chunk
is sent whole, with its length.
"""
from __future__ import annotations

import asyncio
import functools
import json
import re
import sys
import uuid as _uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator

from aiohttp import web

from fedmisp.gossip.observe import NO_OBSERVER, Observer
from fedmisp.gossip.replica import Replica
from fedmisp.model.misp import EventError, element_kind
from fedmisp.model.revision import SignedEvent
from fedmisp.node.api.ids import UnknownSharingGroup, with_sharing_group_uuids
from fedmisp.node.home import ROLES, Node
from fedmisp.store import query
from fedmisp.store.query import element_id
from fedmisp.store.mutations import NotCreator, RevisionRefused, misp_element, revise
from fedmisp.policy.reasons import Reason
from fedmisp.store.events import WriteOutcome
from fedmisp.store.writer import Writer

# One request body; MISP events with a few hundred thousand attributes are tens of MiB of JSON.
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
# A streamed response is written in chunks of about this many characters.
STREAM_CHUNK = 256 * 1024
ROLE_LEVEL = {role: i for i, role in enumerate(ROLES)}

JSON = "application/json"
NOT_PERMITTED = "You do not have permission to do that."  # MISP's ForbiddenException message


# --- the request context, errors and roles --------------------------------------------------------

class ApiError(Exception):
    """A MISP-shaped error response."""

    def __init__(self, status: int, message: str, errors: Any = None, name: str | None = None):
        self.status = status
        self.message = message
        self.errors = errors if errors is not None else message
        self.name = name or message
        super().__init__(message)


def misp_error(status: int, name: str, message: str, url: str, errors: Any) -> web.Response:
    body = {"saved": False, "name": name, "message": message, "url": url, "errors": errors}
    return web.json_response(body, status=status)


@dataclass
class ApiContext:
    node: Node
    writer: Writer
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    edit_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # told each record sent to or stored from a MISP peer (the node's metrics and audit log)
    observer: Observer = NO_OBSERVER
    replica: Replica | None = None  # MISP sync's (node/api/misp_sync.py), made on first use
    # MISP peer name -> {"last_pull": time, "last_push": time}: what /node/v1/peers shows of it
    misp_activity: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def store(self) -> Any:
        return self.node.store


CTX = web.AppKey("ctx", ApiContext)
ROLE = web.RequestKey("role", str)  # the caller's role, set by access.py's middleware
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A blocking store call, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kwargs))


def may(request: web.Request, role: str) -> bool:
    """Whether the caller's key has at least `role` (for what a handler does beyond its route's role)."""
    return ROLE_LEVEL[request[ROLE]] >= ROLE_LEVEL[role]


# --- request bodies -------------------------------------------------------------------------------

async def body_json(request: web.Request, *, required: bool = True) -> Any:
    """The request's JSON body; 400 naming `body` if it is empty (when required), not UTF-8 JSON,
    nested too deeply or holds a number Python will not read, and 400 naming the field if a key
    or string in it is not text (see `not_text`)."""
    raw = await request.read()  # bounded by client_max_size: 413 beyond it
    if not raw.strip():
        if required:
            raise ApiError(400, "the request body is empty; expected JSON", {"body": ["empty; expected JSON"]})
        return {}
    try:
        document = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 JSON", {"body": ["not UTF-8; expected UTF-8 JSON"]}) from None
    except json.JSONDecodeError as e:
        raise ApiError(400, f"the request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                       {"body": [e.msg]}) from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply", {"body": ["nested too deeply"]}) from None
    except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        limit = sys.get_int_max_str_digits()
        message = f"a number of more than {limit} digits; expected numbers of at most {limit} digits"
        raise ApiError(400, f"the request body holds {message}", {"body": [message]}) from None
    if _MAY_HOLD_SURROGATE.search(raw):
        place = not_text(document)
        if place is not None:
            message = (f"{place}: holds a lone surrogate (such as \\ud800), which is not text; "
                       "expected UTF-8 text (a surrogate only as half of a pair)")
            raise ApiError(400, message, {place: [message[len(place) + 2:]]}, "Invalid text")
    return document


# A lone surrogate reaches a parsed body only as a \ud800-\udfff escape or as the bytes ED A0-BF
# (json.loads decodes bytes with surrogatepass); only a body holding either is walked.
_MAY_HOLD_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def not_text(document: Any, place: str = "") -> str | None:
    """Where the first key or string of a parsed JSON document is not Unicode text, as the field
    path a client reads (`Event.Attribute[0].value`; `body` for the document itself), or None.
    A string with a lone surrogate cannot be encoded as UTF-8, so no record or store could keep it."""
    if isinstance(document, str):
        return None if _is_text(document) else place or "body"
    if isinstance(document, dict):
        for key, value in document.items():
            name = str(key).encode("utf-8", "backslashreplace").decode("utf-8")
            inner = f"{place}.{name}" if place else name
            if not _is_text(key):
                return inner
            found = not_text(value, inner)
            if found is not None:
                return found
    elif isinstance(document, list):
        for i, value in enumerate(document):
            found = not_text(value, f"{place or 'body'}[{i}]")
            if found is not None:
                return found
    return None


def _is_text(value: Any) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def expect(value: Any, field_: str, accepted: str, what: str, kinds: tuple[type, ...] = (str,)) -> Any:
    """`value` of a posted field if it is absent (None) or of one of `kinds` (never a bool unless
    asked for); a 400 naming the field and what would be accepted otherwise. For the fields a
    handler reads itself before the model's parser sees the body."""
    if value is None or (isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))):
        return value
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    message = f"{shown}; expected {accepted}"
    raise ApiError(400, f"Could not {what}: {field_}: {message}", {field_: [message]}, f"Could not {what}")


async def posted_object(request: web.Request, key: str, what: str) -> dict[str, Any]:
    """The JSON object a request posts, bare or wrapped as MISP does (``{key: {...}}``); 400 otherwise."""
    raw = unwrap(await body_json(request), key)
    if not isinstance(raw, dict):
        raise ApiError(400, f"Could not {what}: expected {{\"{key}\": {{...}}}}", {key: ["expected a JSON object"]},
                       f"Could not {what}")
    return raw


async def sharing_group_uuids(ctx: ApiContext, item: Any) -> Any:
    """A posted event, attribute or object with MISP's sharing_group_id as sharing_group_uuid."""
    try:
        return await run(with_sharing_group_uuids, ctx.store, item)
    except UnknownSharingGroup as e:
        raise ApiError(404, str(e), {"sharing_group_id": [str(e)]}, "Invalid sharing group") from None


# --- held events: finding them, refusals, writes --------------------------------------------------

def path_ref(request: web.Request, name: str = "ref") -> str:
    """The id or uuid a route's `{ref}` names (MISP's `12.json` is 12)."""
    ref = request.match_info.get(name, "")
    return ref[:-5] if ref.endswith(".json") else ref


def unwrap(document: Any, key: str) -> Any:
    if isinstance(document, dict) and key in document and isinstance(document[key], dict):
        return document[key]
    return document


def event_error(e: EventError, what: str) -> ApiError:
    errors: dict[str, dict[str, list[str]]] = {}
    for p in e.problems:
        errors.setdefault(p.where, {}).setdefault(p.field, []).append(p.message)
    return ApiError(400, f"Could not {what}: " + "; ".join(map(str, e.problems)), errors, f"Could not {what}")


def refused(e: RevisionRefused, what: str) -> ApiError:
    if isinstance(e, NotCreator):
        # MISP's exact words: PyMISP's add/update/delete_attribute read them and send the change
        # as a proposal instead (shadowAttributes, node/api/proposals.py); the detail is in `errors`.
        return ApiError(403, NOT_PERMITTED, {e.field: [str(e)]}, NOT_PERMITTED)
    return ApiError(e.status, str(e), {e.field: [str(e)]}, f"Could not {what}")


async def write_revision(ctx: ApiContext, signed: SignedEvent) -> WriteOutcome | Reason:
    future = await run(ctx.writer.submit, [signed])
    (outcome,) = await asyncio.wrap_future(future)
    if outcome is Reason.OLDER:
        raise ApiError(409, "a newer revision of this event arrived while this one was made; retry the request")
    if outcome is Reason.NOT_AUTHOR:  # (an event a peer sent meanwhile, with the same uuid)
        raise ApiError(403, "this node holds the event as signed by another organisation's key; only its "
                       "author can revise it", {"Event": ["held as another organisation's event"]}, NOT_PERMITTED)
    if outcome is Reason.NOT_BRIDGE:
        raise ApiError(403, "this event came from a MISP community through this node's bridge; only that MISP "
                       "peer revises it (edit it on a MISP instance of that community)",
                       {"Event": ["held on a MISP peer's behalf"]}, NOT_PERMITTED)
    return outcome


async def resolve_event(ctx: ApiContext, ref: str) -> str:
    event_uuid = await run(query.resolve_event, ctx.store, ref)
    if event_uuid is None:
        raise ApiError(404, "Invalid event", f"no event {ref!r} on this node; give its numeric id or uuid")
    head = await run(query.event_head, ctx.store, event_uuid)
    if head is None or head.deleted:
        raise ApiError(404, "Invalid event", f"event {ref!r} was deleted")
    return event_uuid


async def must_be_creator(ctx: ApiContext, event_uuid: str) -> None:
    """MISP checks the permission to change an event before anything else in the request, and
    PyMISP proposes the change when it reads that 403; so this comes first here too."""
    head = await run(query.event_head, ctx.store, event_uuid)
    if head is not None and head.author != ctx.node.identity.public_key:
        raise refused(NotCreator.of(event_uuid, head.header["Orgc"]["name"]), "change the event")


async def resolve_element(ctx: ApiContext, ref: str, kind: str) -> tuple[str, dict[str, Any]]:
    element_uuid = await run(query.resolve_element, ctx.store, ref)
    found = await run(query.find_element, ctx.store, element_uuid) if element_uuid else None
    if found is None or element_kind(found[1]) != kind:
        raise ApiError(404, f"Invalid {kind}", f"no {kind} {ref!r} on this node; give its numeric id or uuid")
    return found


def this_org(ctx: ApiContext) -> dict[str, str]:
    return {"id": "1", "name": ctx.node.config.org_name, "uuid": ctx.node.config.org_uuid, "local": True}


# --- organisations this node knows ----------------------------------------------------------------

def known_orgs(ctx: ApiContext) -> dict[str, dict[str, Any]]:
    """uuid -> organisation (as the store knows it), this node's own first."""
    own = ctx.node.config.org_uuid
    out = {own: {"uuid": own, "name": ctx.node.config.org_name, "key": ctx.node.identity.public_key,
                 "introduced": False}}
    for org in ctx.store.orgs():
        out.setdefault(org["uuid"], org)
    return out

def org_id(ctx: ApiContext, org_uuid: str) -> str:
    return "1" if org_uuid == ctx.node.config.org_uuid else str(element_id(org_uuid))

def find_org(ctx: ApiContext, ref: Any) -> dict[str, Any] | None:
    """An organisation by MISP id, uuid or name."""
    if isinstance(ref, bool) or not isinstance(ref, (str, int)):
        return None
    ref = str(ref).strip()
    orgs = known_orgs(ctx)
    if query.is_uuid(ref):
        return orgs.get(str(_uuid.UUID(ref)))
    # PyMISP writes a space in a path as "+" (PHP's urldecode reads it back as a space)
    names = {ref, ref.replace("+", " ")}
    for org in orgs.values():
        if ref == org_id(ctx, org["uuid"]) or org["name"] in names:
            return org
    return None


# --- new revisions of this node's events ----------------------------------------------------------

async def revise_event(request: web.Request, event_uuid: str, what: str, **kwargs: Any) -> str:
    """Make and store a new revision of an event of this node (see store/mutations.py)."""
    ctx = request.app[CTX]
    kwargs.setdefault("may_publish", may(request, "publisher"))

    def make() -> SignedEvent:
        try:
            return revise(ctx.store, ctx.node.identity, ctx.node.import_defaults(), event_uuid, **kwargs)
        except EventError as e:
            raise event_error(e, what) from None
        except RevisionRefused as e:
            raise refused(e, what) from None

    async with ctx.edit_lock:
        signed = await run(make)
        await write_revision(ctx, signed)
    return event_uuid


async def edit_element(request: web.Request, event_uuid: str, element_uuid: str, changes: dict[str, Any],
                        what: str, local_tags: dict[str, list[dict[str, Any]]] | None = None,
                        **revise_kwargs: Any) -> None:
    """Change fields of one held element (an attribute, or an object member) with MISP's edit rules."""
    ctx = request.app[CTX]
    head = await run(query.event_head, ctx.store, event_uuid)
    elements = await run(query.event_elements, ctx.store, event_uuid)
    local = await run(ctx.store.local_tags, [element_uuid])
    post = misp_element(head.header, elements, element_uuid)
    if "EventReport" in post:
        candidates = post["EventReport"]
    elif "Attribute" in post:
        candidates = post["Attribute"]
    else:
        candidates = [post["Object"][0], *post["Object"][0]["Attribute"]]
    target = next(c for c in candidates if c["uuid"] == element_uuid)
    target.update(changes)
    if "Tag" not in changes and local.get(element_uuid):
        target["Tag"] = list(target.get("Tag", [])) + [{**t, "local": True} for t in local[element_uuid]]
    if "timestamp" not in changes:
        target.pop("timestamp", None)
    await revise_event(request, event_uuid, what, posted=post, local_tags=local_tags, **revise_kwargs)


async def wants_hard_delete(request: web.Request) -> bool:
    """MISP's hard delete: `/1` (or `/true`) after the id, or `{"hard": 1}` in the body."""
    params = await body_json(request, required=False)
    return request.match_info.get("hard", "") in ("/1", "/true") or (
        isinstance(params, dict) and params.get("hard") in (1, "1", True, "true"))


# --- tags on events and attributes ----------------------------------------------------------------

async def change_tag(request: web.Request, event_uuid: str, element_uuid: str | None, tag: dict[str, Any],
                     attach: bool, local: bool) -> bool:
    """Attach or remove one tag (`{"name"[, "relationship_type"]}`) on a held event, or on one of
    its attributes (`element_uuid`), as tags/attachTagToObject and removeTagFromObject do; True
    when the change was node-local. A local tag is kept beside the event, outside every revision
    (any organisation's event); removing a tag that is local removes the local one. A shared tag
    is a new revision (this node's events only: 403 otherwise); attaching one already there
    changes nothing, removing one that is not there is a 404."""
    ctx = request.app[CTX]
    name = tag["name"]
    target = element_uuid or event_uuid
    async with ctx.edit_lock:
        held_local = (await run(ctx.store.local_tags, [target])).get(target, [])
        if local and attach or not attach and any(t["name"] == name for t in held_local):
            # node-local: beside the event, no revision (any organisation's event)
            kept = [t for t in held_local if t["name"] != name]
            if attach:
                kept.append(tag)
                if name not in await run(ctx.store.tag_settings):
                    # listed by tags/index from now on (as MISP makes a Tag when it is first used)
                    await run(ctx.store.set_tag_settings, name, {})
            await run(ctx.store.set_local_tags, target, kept)
            return True
    head = await run(query.event_head, ctx.store, event_uuid)
    shared = await shared_tags(ctx, event_uuid, element_uuid)
    present = any(t["name"] == name for t in shared)
    if attach and present:
        return False
    if not attach and not present:
        raise ApiError(404, f"Could not remove Tag: {name!r} is not attached to {target}",
                       {"tag": ["not attached to this event or attribute"]}, "Could not remove Tag")
    shared = [*shared, tag] if attach else [t for t in shared if t["name"] != name]
    what = "attach Tag" if attach else "remove Tag"
    if element_uuid is None:
        await revise_event(request, event_uuid, what, posted={"Tag": shared, "published": head.header["published"]})
    else:
        await edit_element(request, event_uuid, element_uuid, {"Tag": shared}, what)
    return False


async def shared_tags(ctx: ApiContext, event_uuid: str, element_uuid: str | None) -> list[dict[str, Any]]:
    """The tags the held revision gives an event, or one of its attributes (`element_uuid`)."""
    if element_uuid is None:
        return list((await run(query.event_head, ctx.store, event_uuid)).header.get("Tag", []))
    return list((await run(query.find_element, ctx.store, element_uuid))[1].get("Tag", []))


# --- answers --------------------------------------------------------------------------------------

async def stream(request: web.Request, pieces: Iterator[str], content_type: str, *,
                 inline: bool = False) -> web.StreamResponse:
    """Write `pieces` (produced in the thread pool a chunk at a time) as the response body; an
    answer shorter than one chunk is sent whole. `inline`: the first chunk is produced on the
    event loop, for a search known to be a few point reads (query.small_exact_search), where the
    hop to a worker thread and back would cost more than the search."""
    def batch() -> tuple[str, bool]:
        parts: list[str] = []
        size = 0
        for piece in pieces:
            parts.append(piece)
            size += len(piece)
            if size >= STREAM_CHUNK:
                return "".join(parts), False
        return "".join(parts), True

    first, done = batch() if inline else await run(batch)  # errors in the first chunk still become a 4xx
    if done:
        # The whole answer fits one chunk: one response with a Content-Length, written in one send,
        # instead of headers, a chunk and a terminator (most searches are small; bench/api.py).
        return web.Response(body=first.encode("utf-8"), headers={"Content-Type": content_type})
    response = web.StreamResponse(headers={"Content-Type": content_type})
    await response.prepare(request)
    await response.write(first.encode("utf-8"))
    while not done:
        text, done = await run(batch)
        await response.write(text.encode("utf-8"))
    await response.write_eof()
    return response
