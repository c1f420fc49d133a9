"""The serving side of the peer protocol (/fed/v1) and the pulling side's reader, through real
signed and boxed requests to a node's real PeerProtocol handlers on 127.0.0.1 (tests/peer_protocol.py):
what a request may carry is checked against its domain with a 400 naming the field, a request is
refused by its header and its size before its body is read, replies are read within a cap, the
replay cache keeps each peer's nonces apart, and /bodies serves only what the peer's policy allows."""
from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from fedmisp.gossip import http as peer_http
from fedmisp.gossip.auth import HEADER, ReplayCache, seal_body, sign_request
from fedmisp.gossip.http import (BODIES_REQUEST_BYTES, CONTENT_TYPE, PREFIX, REPLY_BYTES, SMALL_REQUEST_BYTES,
                                 UNVERIFIED_READ_BYTES, HttpTransport, PeerProtocol)
from fedmisp.gossip.replica import Replica
from fedmisp.gossip.session import BODIES_PAGE, ProtocolError, encode
from fedmisp.model.identity import Identity
from fedmisp.node.home import Node
from fedmisp.node.importer import import_paths
from fedmisp.node.server import LINGERING_SECONDS

from factories import event
from federation import make_federation
from peer_protocol import as_peer, peer_at, run_blocking, served

UUID = "5a1b2c3d-0000-4000-8000-00000000abcd"


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _signed(url: str, asking: Node, served_node: Node, route: str, message: Any,
                  identity: Identity | None = None) -> tuple[int, str]:
    """One request as a configured peer makes it (signed by `identity`, default the asking node's
    key, and boxed for the served node): the status and the text of a refusal."""
    identity = identity or asking.identity
    body = seal_body(identity, served_node.identity.public_key, encode(message))
    headers = {HEADER: sign_request(identity, "POST", PREFIX + route, body), "Content-Type": CONTENT_TYPE}
    async with aiohttp.ClientSession() as http:
        async with http.post(url + PREFIX + route, data=body, headers=headers) as reply:
            return reply.status, (await reply.read()).decode("utf-8", "replace") if reply.status != 200 else ""


@pytest.fixture
def pair(tmp_path: Path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    yield nodes["a"], nodes["b"]
    for node in nodes.values():
        node.close()


# --- every field of every request against its domain ---------------------------------------------

@pytest.mark.parametrize("message, field", [
    ({"since": 10, "limit": 10}, "since"),  # beyond this node's log head (1: its org record)
    ({"since": 2 ** 64 - 1, "limit": 10}, "since"),  # the most msgpack carries; struct.error before
    ({"since": -1, "limit": 10}, "since"),
    ({"since": True, "limit": 10}, "since"),
    ({"since": 0, "limit": 0}, "limit"),
    ({"since": 0, "limit": 10 ** 9}, "limit"),
    ({"since": 0, "limit": "10"}, "limit"),
    ([0, 10], "body"),
])
def test_a_changes_request_out_of_its_domain_is_a_400_naming_the_field(pair, message, field):
    a, b = pair

    async def go() -> tuple[int, str]:
        async with served(a) as url:
            return await _signed(url, b, a, "/changes", message)
    status, text = _run(go())
    assert status == 400 and f"{field}:" in text, text
    if field == "since" and message["since"] == 10:
        assert f"from 0 to {a.store.head_sequence()}" in text  # the accepted range: [0, head]


@pytest.mark.parametrize("message, field", [
    ({"event": "", "digests": []}, "event"),
    ({"event": "not-a-uuid", "digests": []}, "event"),
    ({"event": 7, "digests": []}, "event"),
    ({"event": UUID, "offered": "yes"}, "offered"),
    ({"event": UUID, "offered": 1}, "offered"),
    ({"event": UUID, "digests": [b"x" * 31]}, "digests[0]"),
    ({"event": UUID, "digests": [b"x" * 32, b"x" * 33]}, "digests[1]"),
    ({"event": UUID, "digests": [b"x" * 32, "x" * 32]}, "digests[1]"),
    ({"event": UUID, "digests": [b"x" * 32] * (BODIES_PAGE + 1)}, "digests"),
    ({"event": UUID, "digests": b"x" * 32}, "digests"),
    ({"event": UUID}, "digests"),
])
def test_a_bodies_request_out_of_its_domain_is_a_400_naming_the_field(pair, message, field):
    a, b = pair

    async def go() -> tuple[int, str]:
        async with served(a) as url:
            return await _signed(url, b, a, "/bodies", message)
    status, text = _run(go())
    assert status == 400 and f"{field}:" in text, text


def test_requests_within_their_domain_are_answered(pair):
    a, b = pair

    async def go() -> list[int]:
        async with served(a) as url:
            return [(await _signed(url, b, a, "/changes", {"since": 0, "limit": 1000}))[0],
                    (await _signed(url, b, a, "/bodies", {"event": UUID, "digests": [b"x" * 32] * BODIES_PAGE}))[0],
                    (await _signed(url, b, a, "/bodies", {"event": UUID, "offered": True}))[0],
                    (await _signed(url, b, a, "/notify", {}))[0]]
    assert _run(go()) == [200, 200, 200, 200]


# --- who is served, and what ----------------------------------------------------------------------

def test_a_pull_only_peer_is_never_served_changes_or_bodies(tmp_path: Path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")], settings={("a", "b"): {"mode": "pull-only"}})
    a, b = nodes["a"], nodes["b"]

    async def go() -> list[tuple[int, str]]:
        async with served(a) as url:
            return [await _signed(url, b, a, "/changes", {"since": 0, "limit": 10}),
                    await _signed(url, b, a, "/bodies", {"event": UUID, "offered": True}),
                    await _signed(url, b, a, "/bodies", {"event": UUID, "digests": []})]
    try:
        for status, text in _run(go()):
            assert status == 403 and text.startswith("peer-mode"), text
    finally:
        for node in nodes.values():
            node.close()


def _withheld_event(tmp_path: Path) -> dict:
    """An event of four attributes that b may have, and four withheld from b: level 0, b's push
    filter's NOT tag, above b's TLP ceiling, and a sharing group b is not a member of."""
    raw = event(seed=5, attributes=8, objects=0)
    attributes = raw["Event"]["Attribute"]
    for attribute in attributes:
        attribute["distribution"] = "3"
        attribute.pop("Tag", None)
    attributes[4]["distribution"] = "0"
    attributes[5]["Tag"] = [{"name": "secret"}]
    attributes[6]["Tag"] = [{"name": "tlp:red"}]
    attributes[7]["distribution"] = "4"
    attributes[7]["sharing_group_uuid"] = "0b3a1c2d-0000-4000-8000-00000000beef"
    return raw


def test_bodies_never_serves_what_the_peers_policy_withholds_by_digest_or_offered(tmp_path: Path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")], settings={
        ("a", "b"): {"push": {"tags_exclude": ["secret"], "tlp_ceiling": "tlp:amber"}}})
    a, b = nodes["a"], nodes["b"]
    raw = _withheld_event(tmp_path)
    path = tmp_path / "event.json"
    path.write_text(json.dumps(raw))
    import_paths(a, [path])
    uuid = raw["Event"]["uuid"]
    replica = Replica(a)
    digest_of = dict(replica.held_event(uuid).digest_of)
    replica.close()
    attributes = raw["Event"]["Attribute"]
    allowed = {digest_of[x["uuid"]] for x in attributes[:4]}
    withheld = {digest_of[x["uuid"]] for x in attributes[4:] if x["uuid"] in digest_of}
    assert len(withheld) >= 3  # (a may not hold an element of a sharing group it does not know)
    held = a.store.bodies(uuid, list(digest_of.values()))
    assert withheld <= set(held)  # a holds them all: only the policy keeps them from b

    async def go() -> tuple[Any, Any]:
        async with served(a) as url, as_peer(b, a, url) as transport:
            asked = list(digest_of.values())
            return asked, (await transport.bodies(uuid, tuple(asked)), await transport.bodies(uuid, (), everything=True))
    try:
        asked, (by_digest, offered) = _run(go())
        served_by_digest = {d for d, body in zip(asked, by_digest) if body is not None}
        assert served_by_digest == allowed
        assert not {held[d] for d in withheld} & set(offered)
        assert {held[d] for d in allowed} == set(offered)
    finally:
        for node in nodes.values():
            node.close()


# --- replays ---------------------------------------------------------------------------------------

def test_a_flood_from_one_peer_never_makes_another_peers_captured_request_replayable(tmp_path: Path):
    nodes = make_federation(tmp_path, ["a", "x", "y"], [("a", "x"), ("a", "y")])
    a, x, y = nodes["a"], nodes["x"], nodes["y"]
    replica = Replica(a)
    protocol = PeerProtocol(replica, run_blocking)
    protocol.replays = ReplayCache(50)  # (the node's is 100,000 per key; a smaller one floods sooner)

    async def go() -> tuple[int, int]:
        app = web.Application()
        peer = web.Application()  # /fed/v1 as the node mounts it (node/api/app.py)
        peer.add_routes(protocol.routes())
        app.add_subapp(PREFIX, peer)
        runner = web.AppRunner(app)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}{PREFIX}/notify"
            body = seal_body(y.identity, a.identity.public_key, encode({}))
            captured = {HEADER: sign_request(y.identity, "POST", PREFIX + "/notify", body)}
            async with aiohttp.ClientSession() as http:
                async with http.post(url, data=body, headers=captured) as reply:
                    first = reply.status
                for _ in range(120):  # x's flood: more requests than the cache holds
                    flood = seal_body(x.identity, a.identity.public_key, encode({}))
                    headers = {HEADER: sign_request(x.identity, "POST", PREFIX + "/notify", flood)}
                    async with http.post(url, data=flood, headers=headers) as reply:
                        await reply.read()
                async with http.post(url, data=body, headers=captured) as reply:
                    return first, reply.status
        finally:
            await runner.cleanup()
    try:
        first, replayed = _run(go())
        assert first == 200
        assert replayed == 401  # refused as a replay: y's nonce is still remembered
    finally:
        replica.close()
        for node in nodes.values():
            node.close()


# --- a request is refused by its header and size before its body is read ------------------------

def _served(node: Node) -> Any:
    """As `fedmisp run` serves: what a client still sends after an early refusal is read and
    dropped for LINGERING_SECONDS, not aiohttp's 10 s."""
    return served(node, lingering_time=LINGERING_SECONDS)


async def _partial(url: str, route: str, headers: dict[str, str], sent: bytes, chunked: bool = False,
                   declared: int | None = None) -> tuple[int, bytes]:
    """Send the request line, `headers` and only `sent` of the body, then wait for the answer
    without sending more: a server that reads the body first never answers (the read fails)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = [f"POST {PREFIX}{route} HTTP/1.1", f"Host: {host}", f"Content-Type: {CONTENT_TYPE}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if chunked:
            head.append("Transfer-Encoding: chunked")
            payload = b"".join(b"%x\r\n%s\r\n" % (len(sent[i:i + 4096]), sent[i:i + 4096])
                               for i in range(0, len(sent), 4096))
        else:
            head.append(f"Content-Length: {declared}")
            payload = sent
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        await writer.drain()
        head_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=20)
        length = next((int(line.split(b":")[1]) for line in head_bytes.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        rest = head_bytes + await asyncio.wait_for(reader.readexactly(length), timeout=20)
        return int(head_bytes.split()[1]), rest
    finally:
        writer.close()


def _claim(identity: Identity, route: str) -> dict[str, str]:
    """A well-formed header of a configured peer (its signature over other bytes: it is verified
    only once a body is read)."""
    return {HEADER: sign_request(identity, "POST", PREFIX + route, os.urandom(8))}


@pytest.mark.parametrize("route, declared", [("/changes", SMALL_REQUEST_BYTES + 1),
                                             ("/notify", 60 * 1024 * 1024),
                                             ("/bodies", BODIES_REQUEST_BYTES + 1)])
def test_a_request_over_its_routes_body_limit_is_a_413_before_its_body_is_read(pair, route, declared):
    a, b = pair

    async def go() -> tuple[int, bytes]:
        async with _served(a) as url:
            return await _partial(url, route, _claim(b.identity, route), b"x" * 100, declared=declared)
    status, _ = _run(go())
    assert status == 413


def test_a_chunked_request_over_its_routes_body_limit_is_a_413_once_the_limit_is_passed(pair):
    a, b = pair

    async def go() -> tuple[int, bytes]:
        async with _served(a) as url:
            return await _partial(url, "/changes", _claim(b.identity, "/changes"), b"x" * (2 * SMALL_REQUEST_BYTES),
                                  chunked=True)
    status, _ = _run(go())
    assert status == 413


@pytest.mark.parametrize("header", [None, "garbage", "a.b.c.d"])
def test_a_request_without_a_valid_header_is_refused_before_its_body_is_read(pair, header):
    a, b = pair

    async def go() -> tuple[int, bytes]:
        async with _served(a) as url:
            return await _partial(url, "/bodies", {} if header is None else {HEADER: header}, b"x" * 100,
                                  declared=60 * 1024 * 1024)
    status, text = _run(go())
    assert status in (401, 403), text


def test_a_header_with_an_unknown_key_is_refused_before_its_body_is_read(pair):
    a, b = pair

    async def go() -> tuple[int, bytes]:
        async with _served(a) as url:
            return await _partial(url, "/bodies", _claim(Identity.generate(), "/bodies"), b"x" * 100,
                                  declared=BODIES_REQUEST_BYTES)
    status, text = _run(go())
    assert status == 403 and b"unknown-key" in text


def test_unauthenticated_bytes_read_at_once_are_bounded_and_past_it_the_answer_is_503(pair):
    """Requests that claim a configured peer's key, each of the largest size, each holding back the
    rest of its body: the ones that fit the budget are read (and wait), the next is told to retry."""
    a, b = pair
    holding = UNVERIFIED_READ_BYTES // BODIES_REQUEST_BYTES

    async def go() -> tuple[int, str]:
        async with _served(a) as url:
            host, port = url.removeprefix("http://").split(":")
            writers = []
            try:
                for _ in range(holding):
                    _, writer = await asyncio.open_connection(host, int(port))
                    head = (f"POST {PREFIX}/bodies HTTP/1.1\r\nHost: {host}\r\nContent-Length: {BODIES_REQUEST_BYTES}\r\n"
                            f"{HEADER}: {_claim(b.identity, '/bodies')[HEADER]}\r\n\r\n")
                    writer.write(head.encode() + b"x" * 10)
                    await writer.drain()
                    writers.append(writer)
                protocol_busy = 0
                for _ in range(200):  # until the server has taken all of them in (a condition, not a time)
                    status, rest = await _partial(url, "/bodies", _claim(b.identity, "/bodies"), b"x" * 10,
                                                  declared=BODIES_REQUEST_BYTES)
                    if status == 503:
                        return status, rest.decode()
                    protocol_busy += 1
                    await asyncio.sleep(0.05)
                return 0, f"never refused after {protocol_busy} tries"
            finally:
                for writer in writers:
                    writer.close()
    status, text = _run(go())
    assert status == 503 and "Retry-After: 1" in text, text


# --- the pulling side reads replies within a cap ------------------------------------------------

async def _fake_peer(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.add_routes([web.post(PREFIX + "/changes", handler), web.post(PREFIX + "/bodies", handler)])
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def test_a_reply_streamed_past_the_cap_is_refused_and_not_read_whole(pair):
    a, b = pair
    cap = REPLY_BYTES["/changes"]
    written = [0]

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no length to refuse it by
        await response.prepare(request)
        chunk = b"\0" * (1 << 20)
        try:
            while written[0] < 4 * cap:
                await response.write(chunk)
                written[0] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the reader hung up
        return response

    async def go() -> str:
        runner, url = await _fake_peer(endless)
        try:
            async with aiohttp.ClientSession() as http:
                transport = HttpTransport(http, b.identity, peer_at(b, a, url))
                with pytest.raises(ProtocolError) as info:
                    await transport.changes(0, 10)
                return str(info.value)
        finally:
            await runner.cleanup()
    message = _run(go())
    assert f"reply over {cap} bytes" in message
    assert written[0] < 4 * cap  # the reader stopped early: the server could not write it all


def test_a_reply_that_declares_more_than_the_cap_is_refused_unread(pair):
    a, b = pair

    async def declared(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(REPLY_BYTES["/bodies"] + 1)})
        await response.prepare(request)
        try:
            await response.write(b"\0" * 1024)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def go() -> str:
        runner, url = await _fake_peer(declared)
        try:
            async with aiohttp.ClientSession() as http:
                transport = HttpTransport(http, b.identity, peer_at(b, a, url))
                with pytest.raises(ProtocolError) as info:
                    await asyncio.wait_for(transport.bodies(UUID, (b"x" * 32,)), timeout=30)
                return str(info.value)
        finally:
            await runner.cleanup()
    assert "at most" in _run(go())


@pytest.mark.parametrize("reply", [[1, 2], "bodies", 7, None])
def test_a_reply_that_is_not_a_map_is_a_refused_reply(pair, reply):
    a, b = pair

    async def not_a_map(request: web.Request) -> web.Response:
        return web.Response(body=seal_body(a.identity, b.identity.public_key, encode(reply)), content_type=CONTENT_TYPE)

    async def go() -> list[str]:
        runner, url = await _fake_peer(not_a_map)
        try:
            async with aiohttp.ClientSession() as http:
                transport = HttpTransport(http, b.identity, peer_at(b, a, url))
                messages = []
                for call in (transport.bodies(UUID, (b"x" * 32,)), transport.changes(0, 10)):
                    with pytest.raises(ProtocolError) as info:
                        await call
                    messages.append(str(info.value))
                return messages
        finally:
            await runner.cleanup()
    for message in _run(go()):
        assert "expected a map" in message


# --- a changes page computed ahead ----------------------------------------------------------------

def test_a_changes_page_computed_ahead_is_not_served_once_the_peers_policy_changed(tmp_path: Path):
    """The server computes the next changes page while the peer fetches bodies (gossip/http.py
    _changes). An operator then narrows what b may have (a push filter NOT tag, reloaded as SIGHUP
    does): the page b asks for next is computed anew under the new policy, not served as it was
    computed before."""
    import tomllib

    import tomli_w

    from fedmisp.model.records import KIND_EVENT, open_record
    from fedmisp.node.config import CONFIG_FILE, load_config
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    a, b = nodes["a"], nodes["b"]
    secret = []
    for seed, tagged in ((401, False), (402, True), (403, True), (404, False)):
        raw = event(seed=seed, attributes=1, objects=0)
        raw["Event"]["Tag"] = [{"name": "secret"}] if tagged else []
        path = tmp_path / f"{seed}.json"
        path.write_text(json.dumps(raw))
        import_paths(a, [path])
        if tagged:
            secret.append(raw["Event"]["uuid"])

    def narrow() -> None:
        path = a.config.home / CONFIG_FILE
        document = tomllib.loads(path.read_text())
        for peer in document["peer"]:
            peer.setdefault("push", {})["tags_exclude"] = ["secret"]
        path.write_text(tomli_w.dumps(document))
        a.config = load_config(a.config.home)  # what reload() does on SIGHUP

    async def go() -> list[str]:
        async with served(a) as url, as_peer(b, a, url) as transport:
            first = await transport.changes(0, 2)
            assert first["more"]
            await asyncio.sleep(0.5)  # the next page is computed ahead meanwhile
            narrow()
            rest, since = [], first["last_seq"]
            while True:
                page = await transport.changes(since, 2)
                rest += page["changes"]
                if not page["more"]:
                    return [r.body["event"]["uuid"] for r in (open_record(c["record"]) for c in rest)
                            if r.kind == KIND_EVENT]
                since = page["last_seq"]
    try:
        offered = _run(go())
        assert offered and not set(secret) & set(offered), "a page computed before the change was served"
    finally:
        for node in nodes.values():
            node.close()


def test_a_refused_request_is_reported_with_its_status_and_the_servers_reason(pair):
    """A key the peer does not know (403 unknown-key), and no earlier key to try: the pull ends
    with a ProtocolError naming the status and the reason, not with a failure to open the reply."""
    from nacl.signing import SigningKey
    a, b = pair

    async def go() -> str:
        async with served(a) as url, aiohttp.ClientSession() as http:
            stranger = HttpTransport(http, Identity(SigningKey(b"\x07" * 32)), peer_at(b, a, url))
            with pytest.raises(ProtocolError) as refused:
                await stranger.changes(0, 10)
            return str(refused.value)
    message = _run(go())
    assert "HTTP 403" in message and "unknown-key" in message


def test_a_peer_that_has_not_seen_this_nodes_key_rotation_is_asked_again_with_the_previous_key(pair):
    """b rotated its key; a still pins the old one and answers 403 unknown-key to the new: b's
    transport asks again with its previous key, once, and keeps using it."""
    from nacl.signing import SigningKey
    a, b = pair

    async def go() -> tuple[Any, tuple[Identity, ...]]:
        async with served(a) as url, aiohttp.ClientSession() as http:
            rotated = Identity(SigningKey(b"\x08" * 32))
            transport = HttpTransport(http, rotated, peer_at(b, a, url), previous=(b.identity,))
            first = await asyncio.wait_for(transport.changes(0, 10), timeout=10)
            again = await asyncio.wait_for(transport.changes(0, 10), timeout=10)
            assert again["changes"] == first["changes"]
            return first, transport.identities
    reply, identities = _run(go())
    assert reply["changes"] and [i.public_key for i in identities] == [b.identity.public_key]


def test_a_body_that_is_not_the_one_signed_is_refused_after_it_is_read_naming_the_reason(pair):
    """A configured peer's valid header, but a body changed in transit: the header passes the
    checks made before the body is read; the body then fails the signature (403 bad-signature)
    and nothing is served."""
    a, b = pair

    async def go() -> tuple[int, str]:
        body = seal_body(b.identity, a.identity.public_key, encode({"since": 0, "limit": 10}))
        headers = {HEADER: sign_request(b.identity, "POST", PREFIX + "/changes", body), "Content-Type": CONTENT_TYPE}
        tampered = body[:-1] + bytes([body[-1] ^ 1])
        async with served(a) as url, aiohttp.ClientSession() as http:
            async with http.post(url + PREFIX + "/changes", data=tampered, headers=headers) as reply:
                return reply.status, (await reply.read()).decode("utf-8", "replace")
    status, text = _run(go())
    assert status == 403 and text.startswith("bad-signature"), (status, text)
