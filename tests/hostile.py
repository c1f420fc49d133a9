"""A peer on 127.0.0.1 that speaks the real /fed/v1 protocol (signed, boxed requests and replies,
gossip/http.py PeerProtocol over a real node home and store) but whose replies a test rewrites,
delays or makes up: a hostile peer for real node processes to pull from."""
from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from fedmisp.gossip.http import PREFIX, PeerProtocol
from fedmisp.gossip.peers import PeerConfig
from fedmisp.gossip.replica import Replica
from fedmisp.node.home import Node

# (since, limit, the reply the real node would give) -> the reply sent
Craft = Callable[[int, int, dict[str, Any]], dict[str, Any]]


class _Crafting(PeerProtocol):
    def __init__(self, server: "HostilePeer", replica: Replica, run_blocking: Any):
        super().__init__(replica, run_blocking)
        self.server = server

    def log_head(self) -> int:
        # a crafted page may move the puller's checkpoint past this node's real log: answer it
        return 2 ** 63 - 1 if self.server.craft is not None else super().log_head()

    async def _changes(self, peer: PeerConfig, since: int, limit: int) -> dict[str, Any]:
        server = self.server
        server.changes_requests += 1
        if server.delay:
            await asyncio.sleep(server.delay)
        reply = await super()._changes(peer, since, limit)
        return server.craft(since, limit, reply) if server.craft is not None else reply

    async def bodies(self, request: web.Request) -> web.Response:
        if self.server.bodies is None:
            return await super().bodies(request)
        peer, identity, message = await self._open(request)
        self.server.bodies_requests += 1
        digests = message.get("digests") or list(self.server.bodies)
        return self._reply(peer, identity, {"bodies": [self.server.bodies.get(d) for d in digests]})


class HostilePeer:
    """Serves the node home `home` on 127.0.0.1:`port` in a thread of the test process. `craft`
    rewrites each changes reply, `delay` holds each one that long, `bodies` (digest -> body)
    answers /bodies instead of the store."""

    def __init__(self, home: Path, port: int, craft: Craft | None = None, delay: float = 0.0,
                 bodies: dict[bytes, bytes] | None = None):
        self.home, self.port, self.craft, self.delay, self.bodies = home, port, craft, delay, bodies
        self.changes_requests = 0
        self.bodies_requests = 0
        self.node: Node | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> "HostilePeer":
        self.node = Node.open(self.home)
        self._thread = threading.Thread(target=self._serve, name="hostile-peer", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"hostile peer did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(30)
        if self.node is not None:
            self.node.close()

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        replica = Replica(self.node)

        async def run_blocking(fn: Any, *args: Any) -> Any:
            return await loop.run_in_executor(None, fn, *args)

        app = web.Application()
        peer = web.Application()  # /fed/v1 as the node mounts it (node/api/app.py)
        peer.add_routes(_Crafting(self, replica, run_blocking).routes())
        app.add_subapp(PREFIX, peer)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        except BaseException as e:  # noqa: BLE001 - reported to __enter__
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            replica.close()
            loop.close()
