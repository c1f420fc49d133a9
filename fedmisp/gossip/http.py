"""The peer protocol over HTTP: /fed/v1 routes (serving side) and a client transport (pulling side).

Every request is POST with a boxed msgpack body and a Fedmisp-Auth header (gossip/auth.py); every
reply is boxed for the requesting peer. A key that is not a configured peer's gets 403.
"""
from __future__ import annotations

import asyncio
import re
from typing import Any, Awaitable, Callable

import aiohttp
from aiohttp import web

from nacl.public import Box

from fedmisp.gossip.auth import (HEADER, AuthError, ReplayCache, check_header, open_body, seal_body,
                                 sign_request, verify_claim)
from fedmisp.gossip.replica import Replica
from fedmisp.gossip.session import BODIES_PAGE, MAX_MESSAGE_BYTES, ProtocolError, decode, encode
from fedmisp.model.records import DIGEST_BYTES
from fedmisp.model.identity import Identity, encode_key
from fedmisp.gossip.peers import NodeView, PeerConfig
from fedmisp.policy.model import PeerMode
from fedmisp.policy.reasons import Reason

PREFIX = "/fed/v1"
CONTENT_TYPE = "application/x-fedmisp-box"
REQUEST_TIMEOUT = 60  # seconds for one request; a big event is many requests, not a long one
# A peer that accepts a connection and then says nothing holds a node's pull (one at a time, see
# gossip/service.py) for at most this long before it is backed off.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 15

# --- limits on what a request may carry (docs/operations.md "Limits") ---------------------------
# A NaCl box is the plaintext plus a 24-byte nonce and a 16-byte MAC.
BOX_OVERHEAD = Box.NONCE_SIZE + 16
# A /changes request is {since, limit}: two integers of at most 9 bytes each and two short keys, a
# /notify request an empty map; both under 40 bytes of msgpack. 1 KiB leaves room for nothing else.
SMALL_REQUEST_BYTES = 1024
# A /bodies request is {event, digests[, offered]}: at most BODIES_PAGE digests (what a puller asks
# for at once, gossip/session.py), each a msgpack bin 8 of DIGEST_BYTES (2 header bytes), plus the
# 36-character event uuid, the keys and the array header: framing well under SMALL_REQUEST_BYTES.
BODIES_REQUEST_BYTES = BODIES_PAGE * (DIGEST_BYTES + 2) + SMALL_REQUEST_BYTES + BOX_OVERHEAD
REQUEST_BYTES = {f"{PREFIX}/changes": SMALL_REQUEST_BYTES, f"{PREFIX}/notify": SMALL_REQUEST_BYTES,
                 f"{PREFIX}/bodies": BODIES_REQUEST_BYTES}
# Body bytes this node reads at once from requests whose signature is not yet verified (anyone can
# claim a configured peer's public key in a header). Room for 16 of the largest requests at once,
# more than the peers that pull from one node at the same moment; past it: 503 with Retry-After
# rather than a queue, and a real peer retries on its next pull.
UNVERIFIED_READ_BYTES = 16 * BODIES_REQUEST_BYTES
RETRY_AFTER_SECONDS = 1
# Log entries one /changes page may ask for (gossip/replica.py serves at most 1,000 a page).
CHANGES_LIMIT_MAX = 1000
# --- limits on what a reply may carry (the pulling side) ----------------------------------------
# A /changes reply is one page: up to CHANGES_PAGE log entries and PAGE_ELEMENTS offered elements,
# but never splits an event, so it can be one skeleton of MAX_ELEMENTS_PER_EVENT digests (32 MiB);
# a /bodies reply is up to BODIES_PAGE bodies, and the serving node sends them within the message
# size limit the decoder applies anyway. Both: MAX_MESSAGE_BYTES. A /notify reply is {ok: true}.
REPLY_BYTES = {"/changes": MAX_MESSAGE_BYTES, "/bodies": MAX_MESSAGE_BYTES, "/notify": SMALL_REQUEST_BYTES}
# Who may call the /fed/v1 routes: a configured peer, whose signed request `_open` verifies before
# it reads the body (node/api/access.py lists this among the kinds of access a route declares).
PEER_SIGNATURE = "peer-signature"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")


async def read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or HTTPRequestEntityTooLarge as soon as more than `limit` bytes came
    (StreamReader.read(n) may return less than is coming, so read to the end in chunks)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise _closing(web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size))
        chunks.append(chunk)
    return b"".join(chunks)


def _closing(response: web.HTTPException) -> web.HTTPException:
    """A refusal sent before the body is read: the connection is not kept alive after it. What the
    client still sends is read and dropped for at most aiohttp's lingering_time (node/server.py
    LINGERING_SECONDS), never kept, and the connection closed."""
    response.force_close()
    return response


class ReadBudget:
    """Bytes that may be read at once from requests not yet authenticated; past it, 503."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.refused = 0

    def take(self, size: int) -> None:
        if self.used + size > self.limit:
            self.refused += 1
            raise _closing(web.HTTPServiceUnavailable(
                text=f"busy: more than {self.limit} bytes of unauthenticated requests being read; retry",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)}))
        self.used += size

    def give_back(self, size: int) -> None:
        self.used -= size


def _bad(field: str, accepted: str, value: Any = None) -> web.HTTPBadRequest:
    shown = "" if value is None else f" {value!r}"[:81] + ";"
    return web.HTTPBadRequest(text=f"malformed: {field}:{shown} expected {accepted}")


def _int_in(message: dict[str, Any], field: str, low: int, high: int) -> int:
    value = message.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _bad(field, f"an integer from {low} to {high}", value)
    return value


def _peer_signed(handler: Callable[..., Any]) -> Callable[..., Any]:
    handler.access = PEER_SIGNATURE  # type: ignore[attr-defined]
    return handler


class PeerProtocol:
    """The serving side, bound to one node's replica."""

    def __init__(self, replica: Replica, run_blocking: Callable[..., Awaitable[Any]],
                 on_notify: Callable[[str], None] | None = None):
        self.replica = replica
        self.run_blocking = run_blocking
        self.on_notify = on_notify
        self.replays = ReplayCache()
        self.unverified = ReadBudget(UNVERIFIED_READ_BYTES)
        # peer -> counters: requests answered, bytes of its requests (once verified), bytes replied
        self.served: dict[str, dict[str, int]] = {}
        # peer -> ((since, limit), what the page depends on, the next changes page being computed)
        self._ahead: dict[str, tuple[tuple[int, int], tuple[Any, ...], asyncio.Future[Any]]] = {}

    def routes(self) -> list[web.RouteDef]:
        """The routes, relative to PREFIX (the node mounts them there as a sub-application)."""
        return [web.post("/changes", self.changes), web.post("/bodies", self.bodies), web.post("/notify", self.notify)]

    async def _open(self, request: web.Request) -> tuple[PeerConfig, Identity, Any]:
        """The peer, the key of this node its body was boxed for, and the message (a mapping).

        Everything that needs no body is checked before any of it is read: the header (well-formed,
        a configured peer's key that is not blocked, time within the skew, nonce not seen), then
        the route's body limit against Content-Length; the body is then read within the limit and
        the budget for unauthenticated bytes, and the signature (over the body's hash) verified."""
        limit = REQUEST_BYTES[request.path]
        peers = {p.key: p.name for p in self.replica.peers()}
        try:
            claim = check_header(request.headers.get(HEADER), peers, self.replays)
        except AuthError as e:
            raise _closing(_auth_refusal(e)) from None
        if self.replica.key_blocked(claim.key):
            raise _closing(web.HTTPForbidden(
                text=f"key-blocked: key {encode_key(claim.key)} is in this node's [blocklist] keys"))
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _closing(web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=declared))
        reserved = limit if declared is None else declared
        self.unverified.take(reserved)
        try:
            # (a client that goes away mid-body raises ConnectionResetError here, which aiohttp
            # answers with a debug line: tests/test_server_limits.py)
            body = await read_capped(request.content, limit)
        finally:
            self.unverified.give_back(reserved)
        try:
            who = verify_claim(claim, request.method, request.path, body, peers, self.replays)
            peer = self.replica.peer(who.peer)
            assert peer is not None
            identity, plaintext = _open_with_any(node_identities(self.replica.node), peer.key, body)
            message = decode(plaintext)
        except AuthError as e:
            raise _auth_refusal(e) from None
        except ValueError as e:
            raise web.HTTPBadRequest(text=f"malformed: {e}") from None
        self._count(peer.name, "bytes_in", len(body))
        if peer.policy.mode is PeerMode.PULL_ONLY:
            raise web.HTTPForbidden(text="peer-mode: this node does not serve this peer (pull-only)")
        if not isinstance(message, dict):
            raise _bad("body", "a map")
        return peer, identity, message

    def log_head(self) -> int:
        """The highest `since` a /changes request may carry."""
        return self.replica.store.head_sequence()

    def _count(self, peer: str, counter: str, value: int) -> None:
        counters = self.served.setdefault(peer, {"requests": 0, "bytes_in": 0, "bytes_out": 0})
        counters[counter] += value

    def _reply(self, peer: PeerConfig, identity: Identity, message: Any) -> web.Response:
        # boxed with the key the peer addressed: a peer that has not yet seen this node's key
        # rotation still pins the old one (decision 0013)
        sealed = seal_body(identity, peer.key, encode(message))
        self._count(peer.name, "requests", 1)
        self._count(peer.name, "bytes_out", len(sealed))
        return web.Response(body=sealed, content_type=CONTENT_TYPE)

    @_peer_signed
    async def changes(self, request: web.Request) -> web.Response:
        peer, identity, message = await self._open(request)
        # since: a checkpoint in this node's log, which never runs ahead of its head
        since = _int_in(message, "since", 0, self.log_head())
        limit = _int_in(message, "limit", 1, CHANGES_LIMIT_MAX)
        return self._reply(peer, identity, await self._changes(peer, since, limit))

    def _unchanged_since(self, peer: PeerConfig) -> tuple[Any, ...]:
        """What a changes page depends on besides (since, limit): the peer's policy, the node's
        configuration, what this node stored from pulls and its log head (every record stored,
        revised or relogged moves the head)."""
        return (peer.policy, self.replica.node.config, self.replica.generation, self.replica.store.head_sequence())

    async def _changes(self, peer: PeerConfig, since: int, limit: int) -> dict[str, Any]:
        """The changes page, and the next one computed at once in the background: a pulling peer
        asks for it as soon as it has the bodies of this one, and would otherwise wait while it is
        built (the offers for a page of 20,000 elements take this node a few hundred ms). A page
        computed ahead is served only if nothing it depends on changed meanwhile
        (`_unchanged_since`), else it is computed again; its decisions reach the observer (audit
        log, metrics) only when it is served."""
        ahead = self._ahead.pop(peer.name, None)
        reply = decisions = None
        if ahead is not None and ahead[0] == (since, limit):
            try:
                reply, decisions = await ahead[2]
            except Exception:  # noqa: BLE001 - computed again below, where an error is reported
                reply = None
            if reply is not None and ahead[1] != self._unchanged_since(peer):
                reply = None
        if reply is None:
            decisions = []
            reply = await self.run_blocking(self.replica.changes_for, peer.policy, since, limit, decisions)
        for decision in decisions or ():
            self.replica.observer.decided(decision)
        if reply["more"]:
            ahead_since = reply["last_seq"]
            state = self._unchanged_since(peer)

            def compute() -> tuple[dict[str, Any], list[Any]]:
                found: list[Any] = []
                return self.replica.changes_for(peer.policy, ahead_since, limit, found), found
            future = asyncio.ensure_future(self.run_blocking(compute))
            # (a page never asked for may have failed: its error is not worth a warning at exit)
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._ahead[peer.name] = ((ahead_since, limit), state, future)
        return reply

    @_peer_signed
    async def bodies(self, request: web.Request) -> web.Response:
        peer, identity, message = await self._open(request)
        event, digests, offered = bodies_request(message)
        # What is served is decided by the peer's policy (replica.offer): a digest withheld from the
        # peer (level, sharing group, push filter) is answered None, whatever the peer asks for.
        if offered:
            reply = await self.run_blocking(self.replica.all_bodies_for, peer.policy, event)
        else:
            reply = await self.run_blocking(self.replica.bodies_for, peer.policy, event, digests)
        return self._reply(peer, identity, {"bodies": reply})

    @_peer_signed
    async def notify(self, request: web.Request) -> web.Response:
        peer, identity, _ = await self._open(request)
        if self.on_notify is not None:
            self.on_notify(peer.name)
        return self._reply(peer, identity, {"ok": True})


def bodies_request(message: dict[str, Any]) -> tuple[str, list[bytes], bool]:
    """(event uuid, digests, offered) of a /bodies request, each field checked against its domain:
    `event` a lowercase uuid, `offered` a boolean, `digests` (unless offered) a list of at most
    BODIES_PAGE digests of DIGEST_BYTES each."""
    event = message.get("event")
    if not isinstance(event, str) or not _UUID.match(event):
        raise _bad("event", "an event uuid (8-4-4-4-12 lowercase hexadecimal digits)", event)
    offered = message.get("offered", False)
    if not isinstance(offered, bool):
        raise _bad("offered", "true or false", offered)
    if offered:
        return event, [], True
    digests = message.get("digests")
    if not isinstance(digests, list) or len(digests) > BODIES_PAGE:
        shown = f"{len(digests)} digests" if isinstance(digests, list) else digests
        raise _bad("digests", f"a list of at most {BODIES_PAGE} digests", shown)
    for i, digest in enumerate(digests):
        if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
            raise _bad(f"digests[{i}]", f"{DIGEST_BYTES} bytes", digest)
    return event, digests, False


def _auth_refusal(e: AuthError) -> web.HTTPException:
    if e.reason == Reason.TOO_MANY:
        return web.HTTPTooManyRequests(text=f"{e.reason}: {e}",
                                       headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    status = web.HTTPForbidden if e.reason in (Reason.UNKNOWN_KEY, Reason.BAD_SIGNATURE) else web.HTTPUnauthorized
    return status(text=f"{e.reason}: {e}")


def node_identities(node: NodeView) -> tuple[Identity, ...]:
    """This node's key, then the keys it rotated away from, newest first (decision 0013)."""
    return (node.identity, *node.retired_identities)


def _open_with_any(identities: tuple[Identity, ...], peer_key: bytes, sealed: bytes) -> tuple[Identity, bytes]:
    error: AuthError | None = None
    for identity in identities:
        try:
            return identity, open_body(identity, peer_key, sealed)
        except AuthError as e:
            error = e
    assert error is not None
    raise error


class HttpTransport:
    """The pulling side: one peer, signed and boxed requests over a shared aiohttp session.

    Requests are signed with the node's current key; a peer that answers 403 unknown-key has not
    yet pulled this node's key rotation, so the request is made again with the previous key (the
    one it pins), and that key is used for the rest of this transport's requests."""

    def __init__(self, http: aiohttp.ClientSession, identity: Identity, peer: PeerConfig,
                 previous: tuple[Identity, ...] = ()):
        self.http = http
        self.identities = (identity, *previous)
        self.peer = peer
        self.bytes_in = 0
        self.bytes_out = 0
        self.head: int | None = None  # the peer's log head, from its last changes reply

    @property
    def identity(self) -> Identity:
        return self.identities[0]

    async def post(self, path: str, message: Any) -> Any:
        plaintext = encode(message)
        while True:
            status, payload = await self._send(path, plaintext)
            if status == 403 and payload.startswith(Reason.UNKNOWN_KEY.encode()) and len(self.identities) > 1:
                self.identities = self.identities[1:]
                continue
            if status != 200:
                raise ProtocolError(f"{self.peer.name}: HTTP {status}: {payload[:200].decode('utf-8', 'replace')}")
            break
        self.bytes_in += len(payload)
        try:
            reply = decode(open_body(self.identity, self.peer.key, payload))
        except (AuthError, ValueError) as e:
            raise ProtocolError(f"{self.peer.name}: reply does not open: {e}") from None
        if not isinstance(reply, dict):
            raise ProtocolError(f"{self.peer.name}: {path} reply is a {type(reply).__name__}; expected a map")
        return reply

    async def _send(self, path: str, plaintext: bytes) -> tuple[int, bytes]:
        body = seal_body(self.identity, self.peer.key, plaintext)
        headers = {HEADER: sign_request(self.identity, "POST", PREFIX + path, body), "Content-Type": CONTENT_TYPE}
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
        async with self.http.post(self.peer.url.rstrip("/") + PREFIX + path, data=body, headers=headers,
                                  timeout=timeout) as response:
            self.bytes_out += len(body)  # counted once delivered, as the peer counts what it receives
            cap = REPLY_BYTES[path]
            if response.content_length is not None and response.content_length > cap:
                raise ProtocolError(f"{self.peer.name}: {path} reply of {response.content_length} bytes; "
                                    f"at most {cap}")  # refused before any of it is read
            try:
                return response.status, await read_capped(response.content, cap)
            except web.HTTPRequestEntityTooLarge:
                raise ProtocolError(f"{self.peer.name}: {path} reply over {cap} bytes") from None

    async def changes(self, since: int, limit: int) -> Any:
        reply = await self.post("/changes", {"since": since, "limit": limit})
        if isinstance(reply, dict) and isinstance(reply.get("head"), int):
            self.head = reply["head"]
        return reply

    async def bodies(self, event_uuid: str, digests: tuple[bytes, ...], everything: bool = False) -> Any:
        request = {"event": event_uuid, "offered": True} if everything else {"event": event_uuid, "digests": list(digests)}
        return (await self.post("/bodies", request)).get("bodies")

    async def notify(self) -> None:
        await self.post("/notify", {})


__all__ = ["BODIES_REQUEST_BYTES", "HttpTransport", "PeerProtocol", "REPLY_BYTES", "REQUEST_BYTES",
           "UNVERIFIED_READ_BYTES", "bodies_request", "node_identities", "read_capped"]
