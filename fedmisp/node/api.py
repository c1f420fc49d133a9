"""The MISP-compatible REST API (aiohttp): what PyMISP's core workflow calls, reference in docs/api.md.

Every request carries an API key (`Authorization: <key>`, or MISP's `X-MISP-AUTH`), checked against
the hashes in the store; the key's role (read-only < user < publisher < admin) must reach the
endpoint's. Errors have MISP's shape ``{"saved": false, "name", "message", "url", "errors"}`` with a
4xx status for anything a client sent wrong; bad input is never a 5xx.

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
import logging
import re
import sys
import time
import uuid as _uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator

from aiohttp import ClientPayloadError, web

from fedmisp import __version__
from fedmisp.model import canonical
from fedmisp.model.describe import describe_types
from fedmisp.model.misp import EventError, element_kind, misp_attribute, parse_event
from fedmisp.correlate.engine import Correlator, related_attribute
from fedmisp.export import filters, formats
from fedmisp.model.revision import SignedEvent, sign_event
from fedmisp.node.api_ids import UnknownSharingGroup, with_sharing_group_uuids
from fedmisp.node.api_index import index_heads, parse_index
from fedmisp.node.home import ROLES, Node, hash_api_key
from fedmisp.store import query
from fedmisp.store.mutations import NotCreator, RevisionRefused, check_uuids_free, misp_element, revise, tombstone
from fedmisp.store.query import QueryError, element_id
from fedmisp.store.store import WriteOutcome
from fedmisp.store.writer import Writer

log = logging.getLogger("fedmisp.api")

# One request body; MISP events with a few hundred thousand attributes are tens of MiB of JSON.
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
# A streamed response is written in chunks of about this many characters.
STREAM_CHUNK = 256 * 1024
# Attributes one attributes/add request may carry (MISP accepts lists; this bounds one revision edit).
MAX_ATTRIBUTES_PER_ADD = 10_000
ROLE_LEVEL = {role: i for i, role in enumerate(ROLES)}
_MISP_VERSION = "2.5.0"  # the MISP API level this node answers as (servers/getVersion)

JSON = "application/json"
NOT_PERMITTED = "You do not have permission to do that."  # MISP's ForbiddenException message


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

    @property
    def store(self) -> Any:
        return self.node.store


CTX = web.AppKey("ctx", ApiContext)
ROLE = web.RequestKey("role", str)  # the caller's role, set by auth_middleware
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def needs(role: str) -> Callable[[Handler], Handler]:
    """The least role that may call a handler."""
    def mark(handler: Handler) -> Handler:
        handler.role = role  # type: ignore[attr-defined]
        return handler
    return mark


async def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A blocking store call, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kwargs))


# --- middleware ----------------------------------------------------------------------------------

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
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route_handler = getattr(request.match_info, "handler", None)
    need = getattr(route_handler, "role", None)
    if need is None or request.match_info.http_exception is not None:
        return await handler(request)  # not found / not allowed: answered by the errors middleware
    role = await request_role(request)
    if role is None:
        raise ApiError(403, "Authentication failed. Please make sure you pass the API key of an API enabled "
                       "user along in the Authorization header.")
    if ROLE_LEVEL[role] < ROLE_LEVEL[need]:
        raise ApiError(403, f"You do not have permission to do that. (this key's role is {role}; "
                       f"{request.path} needs {need} or above)")
    request[ROLE] = role
    return await handler(request)


async def request_role(request: web.Request) -> str | None:
    """The role of the request's API key (None: no valid key). MISP's `Authorization: <key>` and
    `X-MISP-AUTH`, and `Authorization: Bearer <key>` as monitoring tools (Prometheus) send it."""
    key = (request.headers.get("Authorization") or request.headers.get("X-MISP-AUTH") or "").strip()
    if key[:7].lower() == "bearer ":
        key = key[7:].strip()
    # On the loop, not in the thread pool: one point read of the small, hot apikeys table costs
    # about 10 us, less than the hop to a worker thread and back (bench/api.py).
    return _role_of(request.app[CTX], key)


def _role_of(ctx: ApiContext, key: str) -> str | None:
    if not key or len(key) > 256:
        return None
    with ctx.store.env.begin() as txn:
        raw = txn.get(hash_api_key(key), db=ctx.store.db["apikeys"])
    if raw is None:
        return None
    role = canonical.unpack(raw).get("role")
    return role if role in ROLE_LEVEL else None


def may(request: web.Request, role: str) -> bool:
    return ROLE_LEVEL[request[ROLE]] >= ROLE_LEVEL[role]


# --- request helpers -----------------------------------------------------------------------------

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
    raw = _unwrap(await body_json(request), key)
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


def _ref(request: web.Request, name: str = "ref") -> str:
    ref = request.match_info.get(name, "")
    return ref[:-5] if ref.endswith(".json") else ref


def _unwrap(document: Any, key: str) -> Any:
    if isinstance(document, dict) and key in document and isinstance(document[key], dict):
        return document[key]
    return document


def _event_error(e: EventError, what: str) -> ApiError:
    errors: dict[str, dict[str, list[str]]] = {}
    for p in e.problems:
        errors.setdefault(p.where, {}).setdefault(p.field, []).append(p.message)
    return ApiError(400, f"Could not {what}: " + "; ".join(map(str, e.problems)), errors, f"Could not {what}")


def _refused(e: RevisionRefused, what: str) -> ApiError:
    if isinstance(e, NotCreator):
        # MISP's exact words: PyMISP's add/update/delete_attribute read them and send the change
        # as a proposal instead (shadowAttributes, api_proposals.py); the detail is in `errors`.
        return ApiError(403, NOT_PERMITTED, {e.field: [str(e)]}, NOT_PERMITTED)
    return ApiError(e.status, str(e), {e.field: [str(e)]}, f"Could not {what}")


async def _write(ctx: ApiContext, signed: SignedEvent) -> WriteOutcome:
    future = await run(ctx.writer.submit, [signed])
    (outcome,) = await asyncio.wrap_future(future)
    if outcome is WriteOutcome.OLDER:
        raise ApiError(409, "a newer revision of this event arrived while this one was made; retry the request")
    if outcome is WriteOutcome.NOT_AUTHOR:  # (an event a peer sent meanwhile, with the same uuid)
        raise ApiError(403, "this node holds the event as signed by another organisation's key; only its "
                       "author can revise it", {"Event": ["held as another organisation's event"]}, NOT_PERMITTED)
    return outcome


async def _resolve_event(ctx: ApiContext, ref: str) -> str:
    event_uuid = await run(query.resolve_event, ctx.store, ref)
    if event_uuid is None:
        raise ApiError(404, "Invalid event", f"no event {ref!r} on this node; give its numeric id or uuid")
    head = await run(query.event_head, ctx.store, event_uuid)
    if head is None or head.deleted:
        raise ApiError(404, "Invalid event", f"event {ref!r} was deleted")
    return event_uuid


async def _must_be_creator(ctx: ApiContext, event_uuid: str) -> None:
    """MISP checks the permission to change an event before anything else in the request, and
    PyMISP proposes the change when it reads that 403; so this comes first here too."""
    head = await run(query.event_head, ctx.store, event_uuid)
    if head is not None and head.author != ctx.node.identity.public_key:
        raise _refused(NotCreator.of(event_uuid, head.header["Orgc"]["name"]), "change the event")


async def _resolve_element(ctx: ApiContext, ref: str, kind: str) -> tuple[str, dict[str, Any]]:
    element_uuid = await run(query.resolve_element, ctx.store, ref)
    found = await run(query.find_element, ctx.store, element_uuid) if element_uuid else None
    if found is None or element_kind(found[1]) != kind:
        raise ApiError(404, f"Invalid {kind}", f"no {kind} {ref!r} on this node; give its numeric id or uuid")
    return found


# --- MISP JSON out, with this node's numeric ids ----------------------------------------------------

def _org(ctx: ApiContext) -> dict[str, str]:
    return {"id": "1", "name": ctx.node.config.org_name, "uuid": ctx.node.config.org_uuid, "local": True}


def number_event(event: dict[str, Any], event_id: int, include_deleted: bool = False) -> dict[str, Any]:
    """Add MISP's numeric ids (event id; 56-bit element ids, decision 0005); drop soft-deleted
    attributes and objects unless asked for them (MISP's events/view default)."""
    e = event["Event"]
    eid = str(event_id)
    e["id"] = eid
    e.pop("deleted", None)

    def attribute(a: dict[str, Any], object_id: str) -> dict[str, Any]:
        a["id"] = str(element_id(a["uuid"]))
        a["event_id"] = eid
        a["object_id"] = object_id
        return a
    e["Attribute"] = [attribute(a, "0") for a in e["Attribute"] if include_deleted or not a.get("deleted")]
    objects = []
    for o in e["Object"]:
        if o.get("deleted") and not include_deleted:
            continue
        oid = str(element_id(o["uuid"]))
        o["id"] = oid
        o["event_id"] = eid
        o["Attribute"] = [attribute(a, oid) for a in o["Attribute"] if include_deleted or not a.get("deleted")]
        for r in o["ObjectReference"]:
            r["object_id"] = oid
            r["event_id"] = eid
        objects.append(o)
    e["Object"] = objects
    return event


def _view(ctx: ApiContext, event_uuid: str, include_deleted: bool = False, metadata: bool = False,
          correlations: bool = False) -> dict[str, Any] | None:
    held = ctx.store.held(event_uuid)
    event = ctx.store.export_event(event_uuid)
    if held is None or event is None or event["Event"].get("deleted"):  # a tombstone (decision 0007)
        return None
    meta = ctx.store.event_meta(event_uuid)
    if meta is not None and meta.correlation_only:
        return None  # matched by correlation, never shown (issue 5)
    event = number_event(event, held.id, include_deleted)
    from fedmisp.node.api_proposals import number_proposals  # it imports this module
    number_proposals(ctx, event)
    if correlations:
        # MISP's RelatedEvent and RelatedAttribute, computed now from the indexes (decision 0006)
        Correlator(ctx.store, ctx.node.config.correlation).annotate(event)
    if metadata:
        event["Event"].pop("Attribute", None)
        event["Event"].pop("Object", None)
    return event


def attribute_json(head: query.EventHead, body: dict[str, Any], local: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    a = misp_attribute(body, {body["uuid"]: local} if local else {})
    a["id"] = str(element_id(body["uuid"]))
    a["event_id"] = str(head.id)
    a["object_id"] = str(element_id(body["object_uuid"])) if "object_uuid" in body else "0"
    if "object_uuid" in body:
        a["object_uuid"] = body["object_uuid"]
    h = head.header
    a["Event"] = {"id": str(head.id), "uuid": head.uuid, "info": h["info"], "distribution": str(h["distribution"]),
                  "orgc_id": "0", "Orgc": h["Orgc"], "published": h["published"], "date": h["date"]}
    return a


def _attribute_view(ctx: ApiContext, element_uuid: str) -> dict[str, Any] | None:
    found = query.find_element(ctx.store, element_uuid)
    if found is None:
        return None
    head = query.event_head(ctx.store, found[0])
    if head is None:
        return None
    local = ctx.store.local_tags([element_uuid]).get(element_uuid)
    a = attribute_json(head, found[1], local)
    a.pop("Event")
    return a


# --- streaming ---------------------------------------------------------------------------------------

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


# --- servers, users, describeTypes -------------------------------------------------------------------

@needs("read-only")
async def get_version(request: web.Request) -> web.Response:
    import pymisp
    return web.json_response({
        "version": _MISP_VERSION, "pymisp_recommended_version": pymisp.__version__, "fedmisp": __version__,
        "perm_sync": False, "perm_sighting": may(request, "user"), "perm_galaxy_editor": False,
        "request_encoding": ["gzip"], "filter_sightings": False,
    })


@needs("read-only")
async def user_me(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    role = request[ROLE]
    level = ROLE_LEVEL[role]
    org = _org(ctx)
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


@needs("read-only")
async def describe(request: web.Request) -> web.Response:
    return web.json_response({"result": describe_types().raw})


# --- events ---------------------------------------------------------------------------------------------

@needs("read-only")
async def event_view(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid = await _resolve_event(ctx, _ref(request))
    include_deleted = False
    if request.method == "POST":
        params = await body_json(request, required=False)
        include_deleted = isinstance(params, dict) and params.get("deleted") not in (None, 0, "0", False, [0], ["0"])
    event = await run(_view, ctx, event_uuid, include_deleted, correlations=True)
    if event is None:
        raise ApiError(404, "Invalid event")
    return web.json_response(event)


@needs("read-only")
async def event_index(request: web.Request) -> web.StreamResponse:
    """events/index, filtered as MISP filters it (PyMISP search_index; node/api_index.py)."""
    ctx = request.app[CTX]
    if request.method == "POST":
        params = await body_json(request, required=False)
    else:
        params = dict(request.query)
    try:
        wanted = parse_index(params)
    except QueryError as e:
        raise ApiError(400, f"events/index: {e}", {e.field: [str(e)]}, "Invalid filter") from None

    def rows() -> Iterator[dict[str, Any]]:
        for head in index_heads(ctx.store, wanted):
            h = head.header
            if wanted.minimal:
                yield {"id": str(head.id), "timestamp": str(h["timestamp"]), "published": h["published"],
                       "uuid": head.uuid, "orgc_uuid": h["Orgc"]["uuid"]}
                continue
            row = {k: v for k, v in h.items() if k not in ("extra", "Tag")}
            for key in ("distribution", "threat_level_id", "analysis", "timestamp", "publish_timestamp"):
                row[key] = str(h[key])
            row.update(id=str(head.id), orgc_id="0", org_id="1", Org=_org(ctx),
                       EventTag=[{"Tag": t} for t in h.get("Tag", ())])
            yield row
    return await stream(request, formats.json_list("[", rows(), "]"), JSON)


@needs("user")
async def event_add(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    document = await body_json(request)
    raw = _unwrap(document, "Event")
    if not isinstance(raw, dict):
        raise ApiError(400, "Could not add Event: expected {\"Event\": {...}} with info and attributes",
                       {"Event": ["expected a JSON object"]}, "Could not add Event")
    raw = await sharing_group_uuids(ctx, raw)
    # MISP: the creator of an event added through the API is the user's organisation.
    raw["Orgc"] = {"name": ctx.node.config.org_name, "uuid": ctx.node.config.org_uuid}
    if not may(request, "publisher"):
        raw["published"] = False

    def make() -> SignedEvent | int:
        try:
            parsed = parse_event(raw, ctx.node.import_defaults())
        except EventError as e:
            raise _event_error(e, "add Event") from None
        held = ctx.store.held(parsed.uuid)
        if held is not None:
            return held.id
        try:
            check_uuids_free(ctx.store, parsed.uuid, parsed.elements)
        except EventError as e:
            raise _event_error(e, "add Event") from None
        return sign_event(ctx.node.identity, parsed)

    async with ctx.edit_lock:
        signed = await run(make)
        if isinstance(signed, int):
            raise ApiError(403, "Event already exists, if you would like to edit it, use the url in the location "
                           f"field: /events/edit/{signed}", {"Event": {"uuid": ["already held by this node"]}},
                           "Could not add Event")
        await _write(ctx, signed)
    event = await run(_view, ctx, signed.uuid)
    return web.json_response(event)


async def _revise(request: web.Request, event_uuid: str, what: str, **kwargs: Any) -> str:
    """Make and store a new revision of an event of this node (see store/mutations.py)."""
    ctx = request.app[CTX]
    kwargs.setdefault("may_publish", may(request, "publisher"))

    def make() -> SignedEvent:
        try:
            return revise(ctx.store, ctx.node.identity, ctx.node.import_defaults(), event_uuid, **kwargs)
        except EventError as e:
            raise _event_error(e, what) from None
        except RevisionRefused as e:
            raise _refused(e, what) from None

    async with ctx.edit_lock:
        signed = await run(make)
        await _write(ctx, signed)
    return event_uuid


@needs("user")
async def event_edit(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid = await _resolve_event(ctx, _ref(request))
    await _must_be_creator(ctx, event_uuid)
    raw = _unwrap(await body_json(request), "Event")
    if not isinstance(raw, dict):
        raise ApiError(400, "Could not edit Event: expected {\"Event\": {...}}", {"Event": ["expected a JSON object"]})
    await _revise(request, event_uuid, "edit Event", posted=await sharing_group_uuids(ctx, raw))
    return web.json_response(await run(_view, ctx, event_uuid))


@needs("user")
async def event_delete(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    ref = _ref(request)
    event_uuid = await _resolve_event(ctx, ref)

    def make() -> SignedEvent:
        try:
            return tombstone(ctx.store, ctx.node.identity, event_uuid)
        except RevisionRefused as e:
            raise _refused(e, "delete Event") from None
    async with ctx.edit_lock:
        await _write(ctx, await run(make))
    return web.json_response({"saved": True, "success": True, "name": "Event deleted.", "message": "Event deleted.",
                              "url": request.path, "id": ref})


async def _publish(request: web.Request, published: bool) -> web.Response:
    ctx = request.app[CTX]
    ref = _ref(request)
    event_uuid = await _resolve_event(ctx, ref)
    header: dict[str, Any] = {"published": published}
    if published:
        header["publish_timestamp"] = int(time.time())
    await _revise(request, event_uuid, "publish Event", posted={}, set_header=header, may_publish=True)
    word = "Event published." if published else "Event unpublished."
    return web.json_response({"saved": True, "success": True, "name": word, "message": word,
                              "url": request.path, "id": ref})


@needs("publisher")
async def event_publish(request: web.Request) -> web.Response:
    return await _publish(request, True)


@needs("publisher")
async def event_unpublish(request: web.Request) -> web.Response:
    return await _publish(request, False)


# --- attributes ---------------------------------------------------------------------------------------

@needs("read-only")
async def attribute_view(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    _event_uuid, body = await _resolve_element(ctx, _ref(request), "attribute")
    a = await run(_attribute_view, ctx, body["uuid"])
    if a is None:
        raise ApiError(404, "Invalid attribute")
    return web.json_response({"Attribute": a})


@needs("user")
async def attribute_add(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid = await _resolve_event(ctx, _ref(request))
    await _must_be_creator(ctx, event_uuid)
    document = await body_json(request)
    many = isinstance(document, list)
    posted = document if many else [_unwrap(document, "Attribute")]
    if not posted or len(posted) > MAX_ATTRIBUTES_PER_ADD:
        raise ApiError(400, f"Could not add Attribute: expected 1 to {MAX_ATTRIBUTES_PER_ADD} attributes",
                       {"Attribute": ["expected an attribute object or a list of them"]}, "Could not add Attribute")
    elements = await run(query.event_elements, ctx.store, event_uuid)
    held = {e["uuid"] for e in elements}
    similar = {(e["type"], e["category"], e["value"]) for e in elements
               if element_kind(e) == "attribute" and not e.get("deleted") and "object_uuid" not in e}
    attributes = []
    for i, a in enumerate(posted):
        if not isinstance(a, dict):
            raise ApiError(400, f"Could not add Attribute: Attribute[{i}] is not a JSON object",
                           {f"Attribute[{i}]": ["expected a JSON object"]}, "Could not add Attribute")
        a = {k: v for k, v in (await sharing_group_uuids(ctx, a)).items()
             if k not in ("id", "event_id", "object_id", "object_uuid")}
        a.setdefault("uuid", str(_uuid.uuid4()))
        # read here for the similar-attribute check, before the parser sees them
        expect(a.get("type"), f"Attribute[{i}].type", "a MISP attribute type (describeTypes)", "add Attribute")
        expect(a.get("category"), f"Attribute[{i}].category", "a MISP category (describeTypes)", "add Attribute")
        expect(a.get("value"), f"Attribute[{i}].value", "the attribute's value as a string", "add Attribute",
               (str, int, float))
        if str(a["uuid"]).lower() in held:
            raise ApiError(403, f"Could not add Attribute: uuid {a['uuid']} is already used in this event",
                           {"uuid": ["already in use"]}, "Could not add Attribute")
        if (a.get("type"), a.get("category") or _default_category(a.get("type")), a.get("value")) in similar:
            raise ApiError(403, "Could not add Attribute: A similar attribute already exists for this event.",
                           {"value": ["A similar attribute already exists for this event."]}, "Could not add Attribute")
        a.pop("timestamp", None)  # an addition is made now
        attributes.append(a)
    await _revise(request, event_uuid, "add Attribute", posted={"Attribute": attributes})
    views = [await run(_attribute_view, ctx, str(a["uuid"]).lower()) for a in attributes]
    return web.json_response({"Attribute": views if many else views[0]})


def _default_category(type_: Any) -> str | None:
    defaults = describe_types().sane_defaults
    return defaults[type_].default_category if isinstance(type_, str) and type_ in defaults else None


_ATTRIBUTE_EDITABLE = ("type", "category", "value", "to_ids", "distribution", "comment", "disable_correlation",
                       "first_seen", "last_seen", "sharing_group_uuid", "deleted", "timestamp", "Tag",
                       "object_relation")


async def _edit_element(request: web.Request, event_uuid: str, element_uuid: str, changes: dict[str, Any],
                        what: str, local_tags: dict[str, list[dict[str, Any]]] | None = None,
                        **revise_kwargs: Any) -> None:
    """Change fields of one held element (an attribute, or an object member) with MISP's edit rules."""
    ctx = request.app[CTX]
    head = await run(query.event_head, ctx.store, event_uuid)
    elements = await run(query.event_elements, ctx.store, event_uuid)
    local = await run(ctx.store.local_tags, [element_uuid])
    post = misp_element(head.header, elements, element_uuid)
    if "Attribute" in post:
        candidates = post["Attribute"]
    else:
        candidates = [post["Object"][0], *post["Object"][0]["Attribute"]]
    target = next(c for c in candidates if c["uuid"] == element_uuid)
    target.update(changes)
    if "Tag" not in changes and local.get(element_uuid):
        target["Tag"] = list(target.get("Tag", [])) + [{**t, "local": True} for t in local[element_uuid]]
    if "timestamp" not in changes:
        target.pop("timestamp", None)
    await _revise(request, event_uuid, what, posted=post, local_tags=local_tags, **revise_kwargs)


@needs("user")
async def attribute_edit(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid, body = await _resolve_element(ctx, _ref(request), "attribute")
    await _must_be_creator(ctx, event_uuid)
    posted = _unwrap(await body_json(request), "Attribute")
    if not isinstance(posted, dict):
        raise ApiError(400, "Could not edit Attribute: expected {\"Attribute\": {...}}",
                       {"Attribute": ["expected a JSON object"]}, "Could not edit Attribute")
    changes = {k: v for k, v in (await sharing_group_uuids(ctx, posted)).items() if k in _ATTRIBUTE_EDITABLE}
    if "timestamp" in changes:
        ts = changes["timestamp"]
        if not (isinstance(ts, (int, str)) and str(ts).isdigit() and int(ts) > body["timestamp"]):
            raise ApiError(403, "Attribute could not be saved: Attribute in the request not newer than the local "
                           f"copy (timestamp {ts!r}, held {body['timestamp']}); leave timestamp out to edit now",
                           {"timestamp": ["not newer than the held attribute"]}, "Could not edit Attribute")
    if "Tag" in changes:
        changes.pop("Tag")  # tags change through tags/attachTagToObject and removeTagFromObject
    await _edit_element(request, event_uuid, body["uuid"], changes, "edit Attribute")
    return web.json_response({"Attribute": await run(_attribute_view, ctx, body["uuid"])})


@needs("user")
async def attribute_delete(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    event_uuid, body = await _resolve_element(ctx, _ref(request), "attribute")
    await _must_be_creator(ctx, event_uuid)
    params = await body_json(request, required=False)
    hard = request.match_info.get("hard") == "/1" or (isinstance(params, dict) and params.get("hard") in (1, "1", True))
    if hard:
        await _revise(request, event_uuid, "delete Attribute", posted={}, remove=frozenset({body["uuid"]}))
    elif not body.get("deleted"):
        await _edit_element(request, event_uuid, body["uuid"], {"deleted": True}, "delete Attribute")
    return web.json_response({"message": "Attribute deleted.", "success": True, "saved": True, "url": request.path,
                              "id": str(element_id(body["uuid"]))})


# --- restSearch -----------------------------------------------------------------------------------------

RETURN_FORMATS = tuple(formats.FORMATS)


async def _search_params(request: web.Request) -> tuple[query.Query, formats.Format, dict[str, Any]]:
    params = await body_json(request, required=False)
    params = _unwrap(params, "request")
    if not isinstance(params, dict):
        raise ApiError(400, "restSearch: expected a JSON object of parameters", {"body": ["expected a JSON object"]})
    params = {k: v for k, v in params.items() if v is not None}
    tail = request.match_info.get("tail", "")
    for part in tail.strip("/").split("/"):
        if ":" in part:  # CakePHP named parameters in the path: returnFormat:csv/limit:10
            k, _, v = part.partition(":")
            params.setdefault(k, v)
    fmt = params.get("returnFormat", "json")
    if fmt not in RETURN_FORMATS:
        raise ApiError(400, f"returnFormat {fmt!r} is not served by this node; accepted: {', '.join(RETURN_FORMATS)}",
                       {"returnFormat": [f"accepted: {', '.join(RETURN_FORMATS)}"]}, "Invalid returnFormat")
    try:
        q = query.parse_query(params)
    except QueryError as e:
        raise ApiError(400, f"restSearch: {e}", {e.field: [str(e)]}, "Invalid search") from None
    return q, formats.FORMATS[fmt], params


def _flag(value: Any) -> bool:
    return value in (True, 1, "1", "true", "True")


@needs("read-only")
async def attribute_search(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    q, fmt, params = await _search_params(request)
    correlator = (Correlator(ctx.store, ctx.node.config.correlation)
                  if fmt.name == "json" and _flag(params.get("includeCorrelations")) else None)
    warnings = fmt.name == "json" and _flag(params.get("includeWarninglistHits"))
    enforce = _flag(params.get("enforceWarninglist"))

    def shown(h: query.EventHead, b: dict[str, Any]) -> dict[str, Any]:
        a = attribute_json(h, b)
        if correlator is not None:
            related = correlator.attribute(h.uuid, b).matches
            if related:
                a["RelatedAttribute"] = [related_attribute(m) for m in related]
        if warnings:
            hits = filters.warninglists(b)
            if hits:
                a["warnings"] = [{"warninglist_name": name} for name in hits]
        return a
    # A lookup of a few exact values: cheaper on the loop than through a worker thread (bench/api.py)
    inline = (fmt.name == "json" and correlator is None and not warnings and not enforce
              and query.small_exact_search(ctx.store, q))
    export = formats.Export(ctx.store, f"fedmisp {ctx.node.config.org_name}", shown)
    return await stream(request, formats.attribute_export(export, q, fmt, enforce_warninglist=enforce),
                        fmt.content_type, inline=inline)


@needs("read-only")
async def event_search(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    q, fmt, params = await _search_params(request)
    if fmt.name == "json":
        include_deleted, correlations = True in q.deleted, _flag(params.get("includeCorrelations"))

        def shown(head: query.EventHead) -> dict[str, Any] | None:
            return _view(ctx, head.uuid, include_deleted, q.event_metadata, correlations)
    else:
        def shown(head: query.EventHead) -> dict[str, Any] | None:
            return _view(ctx, head.uuid)
    export = formats.Export(ctx.store, f"fedmisp {ctx.node.config.org_name}", attribute_json, shown)
    return await stream(request, formats.event_export(export, q, fmt,
                                                      enforce_warninglist=_flag(params.get("enforceWarninglist"))),
                        fmt.content_type)


# --- the application ---------------------------------------------------------------------------------

def make_app(ctx: ApiContext, outer_middlewares: tuple[Any, ...] = ()) -> web.Application:
    """The API application; `outer_middlewares` see every request first and its final response
    (the node's metrics measure latency there)."""
    app = web.Application(middlewares=[*outer_middlewares, errors_middleware, auth_middleware],
                          client_max_size=ctx.max_request_bytes)
    app[CTX] = ctx
    r = app.router

    def both(method: str, path: str, handler: Handler) -> None:
        """MISP answers `x` and `x.json` alike."""
        r.add_route(method, path, handler)
        if not path.endswith("}") and not path.endswith(".json"):
            r.add_route(method, path + ".json", handler)

    both("GET", "/servers/getVersion", get_version)
    both("GET", "/users/view/me", user_me)
    both("GET", "/attributes/describeTypes", describe)
    both("GET", "/events/index", event_index)
    both("POST", "/events/index", event_index)
    r.add_get("/events/view/{ref}", event_view)  # HEAD too (aiohttp answers HEAD from GET)
    r.add_get("/events/view/{ref}/{opts:.*}", event_view)
    r.add_post("/events/view/{ref}", event_view)
    r.add_post("/events/view/{ref}/{opts:.*}", event_view)
    both("POST", "/events/add", event_add)
    r.add_post("/events/add/{opts:.*}", event_add)
    r.add_post("/events/edit/{ref}", event_edit)
    r.add_post("/events/edit/{ref}/{opts:.*}", event_edit)
    r.add_post("/events/delete/{ref}", event_delete)
    r.add_route("DELETE", "/events/delete/{ref}", event_delete)
    r.add_post("/events/publish/{ref}", event_publish)
    r.add_post("/events/unpublish/{ref}", event_unpublish)
    r.add_post("/events/restSearch{tail:(/.*)?}", event_search)
    r.add_get("/attributes/view/{ref}", attribute_view)
    r.add_post("/attributes/add/{ref}", attribute_add)
    r.add_post("/attributes/add/{ref}/{opts:.*}", attribute_add)
    r.add_post("/attributes/edit/{ref}", attribute_edit)
    r.add_post("/attributes/delete/{ref}{hard:(/1)?}", attribute_delete)
    r.add_post("/attributes/restSearch{tail:(/.*)?}", attribute_search)
    from fedmisp.node import api_objects, api_orgs, api_proposals, api_sightings, api_tags  # they build on this module
    for module in (api_objects, api_orgs, api_proposals, api_sightings, api_tags):
        module.add_routes(r)
    return app

