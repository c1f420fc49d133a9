"""The peer protocol over HTTP: /fed/v1 routes (serving side) and a client transport (pulling side).

Every request is POST with a boxed msgpack body and a Fedmisp-Auth header (gossip/auth.py); every
reply is boxed for the requesting peer. A key that is not a configured peer's gets 403.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import aiohttp
from aiohttp import web

from fedmisp.gossip.auth import HEADER, AuthError, ReplayCache, open_body, seal_body, sign_request, verify_request
from fedmisp.gossip.replica import Replica
from fedmisp.gossip.session import MAX_MESSAGE_BYTES, ProtocolError, decode, encode
from fedmisp.model.identity import Identity, encode_key
from fedmisp.gossip.peers import NodeView, PeerConfig
from fedmisp.policy.model import PeerMode

PREFIX = "/fed/v1"
CONTENT_TYPE = "application/x-fedmisp-box"
REQUEST_TIMEOUT = 60  # seconds for one request; a big event is many requests, not a long one
# A peer that accepts a connection and then says nothing holds a node's pull (one at a time, see
# gossip/service.py) for at most this long before it is backed off.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 15


async def read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body, or HTTPRequestEntityTooLarge past `limit` (StreamReader.read(n) may return
    less than is coming, so read to the end in chunks)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    return b"".join(chunks)


class PeerProtocol:
    """The serving side, bound to one node's replica."""

    def __init__(self, replica: Replica, run_blocking: Callable[..., Awaitable[Any]],
                 on_notify: Callable[[str], None] | None = None):
        self.replica = replica
        self.run_blocking = run_blocking
        self.on_notify = on_notify
        self.replays = ReplayCache()
        # peer -> counters: requests answered, bytes of its requests (once verified), bytes replied
        self.served: dict[str, dict[str, int]] = {}
        # peer -> ((since, limit), what the page depends on, the next changes page being computed)
        self._ahead: dict[str, tuple[tuple[int, int], tuple[Any, ...], asyncio.Future[Any]]] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.post(f"{PREFIX}/changes", self.changes), web.post(f"{PREFIX}/bodies", self.bodies),
                web.post(f"{PREFIX}/notify", self.notify)]

    async def _open(self, request: web.Request) -> tuple[PeerConfig, Identity, Any]:
        """The peer, the key of this node its body was boxed for, and the message."""
        body = await read_capped(request.content, MAX_MESSAGE_BYTES)
        peers = {p.key: p.name for p in self.replica.peers()}
        try:
            who = verify_request(request.headers.get(HEADER), request.method, request.path, body, peers, self.replays)
            if self.replica.key_blocked(who.key):
                raise web.HTTPForbidden(text=f"key-blocked: key {encode_key(who.key)} is in this node's [blocklist] keys")
            peer = self.replica.peer(who.peer)
            assert peer is not None
            identity, plaintext = _open_with_any(node_identities(self.replica.node), peer.key, body)
            message = decode(plaintext)
        except AuthError as e:
            status = web.HTTPForbidden if e.reason in ("unknown-key", "bad-signature") else web.HTTPUnauthorized
            raise status(text=f"{e.reason}: {e}") from None
        except ValueError as e:
            raise web.HTTPBadRequest(text=f"malformed: {e}") from None
        self._count(peer.name, "bytes_in", len(body))
        if peer.policy.mode is PeerMode.PULL_ONLY:
            raise web.HTTPForbidden(text="peer-mode: this node does not serve this peer (pull-only)")
        return peer, identity, message

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

    async def changes(self, request: web.Request) -> web.Response:
        peer, identity, message = await self._open(request)
        since, limit = (message.get("since"), message.get("limit")) if isinstance(message, dict) else (None, None)
        if not isinstance(since, int) or not isinstance(limit, int) or since < 0:
            raise web.HTTPBadRequest(text="malformed: expected {since: int >= 0, limit: int}")
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

    async def bodies(self, request: web.Request) -> web.Response:
        peer, identity, message = await self._open(request)
        event, digests = (message.get("event"), message.get("digests")) if isinstance(message, dict) else (None, None)
        if isinstance(event, str) and message.get("offered") is True:
            reply = await self.run_blocking(self.replica.all_bodies_for, peer.policy, event)
            return self._reply(peer, identity, {"bodies": reply})
        if not isinstance(event, str) or not isinstance(digests, list) or len(digests) > 20_000 \
                or not all(isinstance(d, bytes) for d in digests):
            raise web.HTTPBadRequest(text="malformed: expected {event: uuid, digests: [bytes] (at most 20000)}")
        reply = await self.run_blocking(self.replica.bodies_for, peer.policy, event, digests)
        return self._reply(peer, identity, {"bodies": reply})

    async def notify(self, request: web.Request) -> web.Response:
        peer, identity, _ = await self._open(request)
        if self.on_notify is not None:
            self.on_notify(peer.name)
        return self._reply(peer, identity, {"ok": True})


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
            if status == 403 and payload.startswith(b"unknown-key") and len(self.identities) > 1:
                self.identities = self.identities[1:]
                continue
            if status != 200:
                raise ProtocolError(f"{self.peer.name}: HTTP {status}: {payload[:200].decode('utf-8', 'replace')}")
            break
        self.bytes_in += len(payload)
        try:
            return decode(open_body(self.identity, self.peer.key, payload))
        except (AuthError, ValueError) as e:
            raise ProtocolError(f"{self.peer.name}: reply does not open: {e}") from None

    async def _send(self, path: str, plaintext: bytes) -> tuple[int, bytes]:
        body = seal_body(self.identity, self.peer.key, plaintext)
        headers = {HEADER: sign_request(self.identity, "POST", PREFIX + path, body), "Content-Type": CONTENT_TYPE}
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
        async with self.http.post(self.peer.url.rstrip("/") + PREFIX + path, data=body, headers=headers,
                                  timeout=timeout) as response:
            self.bytes_out += len(body)  # counted once delivered, as the peer counts what it receives
            try:
                return response.status, await read_capped(response.content, MAX_MESSAGE_BYTES)
            except web.HTTPRequestEntityTooLarge:
                raise ProtocolError(f"{self.peer.name}: reply over {MAX_MESSAGE_BYTES} bytes") from None

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


__all__ = ["HttpTransport", "PeerProtocol", "node_identities", "read_capped"]
