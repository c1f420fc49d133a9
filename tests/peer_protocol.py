"""A node's peer protocol (/fed/v1) served by the real PeerProtocol handlers on 127.0.0.1 in this
process, and its peers talking to it as they do in production: requests signed and boxed by a
configured peer's key (gossip/http.py's HttpTransport), pulls through gossip/driver.py. What a
hostile node serves is written straight into its log (`hostile_log`), past every check of its own,
or added to the changes replies its own policy computed (`craft`)."""
from __future__ import annotations

import asyncio
import dataclasses
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterable

import aiohttp
from aiohttp import web

from fedmisp.gossip.driver import pull_async
from fedmisp.gossip.http import PREFIX, HttpTransport, PeerProtocol
from fedmisp.gossip.observe import Decision
from fedmisp.gossip.peers import PeerConfig
from fedmisp.gossip.replica import ApplyReport, Replica
from fedmisp.model.records import Record
from fedmisp.model.revision import SignedEvent
from fedmisp.node.home import Node
from fedmisp.store.db import sequence, set_sequence
from fedmisp.store.log import put_record
from fedmisp.store.rows import event_write


# the changes reply the node's own policy computed -> the reply sent
Craft = Callable[[dict[str, Any]], dict[str, Any]]


async def run_blocking(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class _Crafting(PeerProtocol):
    def __init__(self, replica: Replica, run_blocking: Any, craft: Craft):
        super().__init__(replica, run_blocking)
        self.craft = craft

    async def _changes(self, peer: PeerConfig, since: int, limit: int) -> dict[str, Any]:
        return self.craft(await super()._changes(peer, since, limit))


@asynccontextmanager
async def served(node: Node, craft: Craft | None = None, **server: Any) -> AsyncIterator[str]:
    """`node`'s /fed/v1 on a free 127.0.0.1 port; yields its base URL. `craft` rewrites each
    changes reply (a hostile node offering what its policy withheld); `server`: aiohttp server
    settings (node/server.py's, such as lingering_time)."""
    replica = Replica(node)
    app = web.Application()
    protocol = PeerProtocol(replica, run_blocking) if craft is None else _Crafting(replica, run_blocking, craft)
    peer = web.Application()  # /fed/v1 as the node mounts it (node/api/app.py)
    peer.add_routes(protocol.routes())
    app.add_subapp(PREFIX, peer)
    runner = web.AppRunner(app, **server)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
        replica.close()


def peer_at(asking: Node, served_node: Node, url: str) -> PeerConfig:
    """The asking node's configured peer entry for `served_node`, at the address it is served on."""
    peer = next(p for p in asking.config.peers if p.key == served_node.identity.public_key)
    return dataclasses.replace(peer, url=url)


@asynccontextmanager
async def as_peer(asking: Node, served_node: Node, url: str) -> AsyncIterator[HttpTransport]:
    """The asking node's client for `served_node`'s /fed/v1: signed with its key, boxed between the two."""
    async with aiohttp.ClientSession() as http:
        yield HttpTransport(http, asking.identity, peer_at(asking, served_node, url))


class Decisions:
    """An observer (gossip/observe.py) that keeps what a node decided."""

    def __init__(self) -> None:
        self.all: list[Decision] = []

    def decided(self, decision: Decision) -> None:
        self.all.append(decision)

    def pulled(self, peer: str, seconds: float, ok: bool) -> None:
        pass

    def refused(self, kind: str) -> list[str]:
        return [d.reason for d in self.all if d.action == "refused" and d.kind == kind]


async def pull_over_http(puller: Node, served_node: Node, observer: Decisions | None = None,
                         craft: Craft | None = None) -> ApplyReport:
    """One pull of `puller` from `served_node`, over HTTP as the node's gossip service makes it."""
    replica = Replica(puller, observer or Decisions())
    try:
        async with served(served_node, craft) as url, as_peer(puller, served_node, url) as transport:
            return await pull_async(replica, transport.peer, transport, run_blocking)
    finally:
        replica.close()


def hostile_log(node: Node, records: Iterable[Record] = (), events: Iterable[SignedEvent] = ()) -> None:
    """Records put straight into a node's log and events into its store, past the checks a node
    applies to what it takes: what a hostile or compromised node serves its peers."""
    store = node.store
    with store.database.write() as txn:
        seq = sequence(txn)
        for record in records:
            _, seq = put_record(txn, record, seq)
        set_sequence(txn, seq)
    events = list(events)
    if events:
        store.write_events([event_write(e) for e in events])
