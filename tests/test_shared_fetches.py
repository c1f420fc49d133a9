"""Concurrent pulls share their body fetches (gossip/driver.py SharedFetches): two peers offering
the same new event revision at once cost its bodies once, not once per peer, and whatever the first
peer could not give is fetched from the other. Over real signed HTTP between node stores
(tests/peer_protocol.py)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from fedmisp.gossip import driver
from fedmisp.gossip.driver import SharedFetches, pull_async
from fedmisp.gossip.replica import Replica
from fedmisp.node.importer import import_paths

from factories import event
from federation import make_federation
from peer_protocol import as_peer, pull_over_http, run_blocking, served


class Counting:
    """A transport that counts the bodies it asks for, after an optional delay per bodies request
    (a slower peer)."""

    def __init__(self, inner: Any, delay: float = 0.0, stall: asyncio.Event | None = None):
        self.inner, self.delay, self.stall = inner, delay, stall
        self.asked = 0

    async def changes(self, since: int, limit: int) -> Any:
        return await self.inner.changes(since, limit)

    async def bodies(self, event_uuid: str, digests: tuple[bytes, ...], everything: bool = False) -> Any:
        if self.stall is not None:
            await self.stall.wait()
        await asyncio.sleep(self.delay)
        reply = await self.inner.bodies(event_uuid, digests, everything)
        self.asked += len(digests)
        return reply


def _three(tmp_path: Path, settings: dict | None = None, secret: int = 0):
    """a, b, c all peered; an event of 12 attributes made at b (the first `secret` tagged "secret"),
    and c holding what b gave it: the same revision."""
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("a", "c"), ("b", "c")], settings=settings)
    raw = event(seed=7, attributes=12, objects=0)
    raw["Event"]["distribution"] = "3"
    for i, attribute in enumerate(raw["Event"]["Attribute"]):
        attribute["distribution"] = "5"
        attribute["Tag"] = [{"name": "secret"}] if i < secret else []
    path = tmp_path / "event.json"
    path.write_text(json.dumps(raw))
    import_paths(nodes["b"], [path])
    asyncio.run(pull_over_http(nodes["c"], nodes["b"]))
    return nodes, raw["Event"]["uuid"]


async def _pull_both(nodes, fetches, slow_b: float = 0.0, c_stall: asyncio.Event | None = None):
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    replica = Replica(a)
    try:
        async with served(b) as url_b, served(c) as url_c, \
                as_peer(a, b, url_b) as to_b, as_peer(a, c, url_c) as to_c:
            from_b, from_c = Counting(to_b, delay=slow_b), Counting(to_c, stall=c_stall)
            reports = await asyncio.gather(
                pull_async(replica, to_b.peer, from_b, run_blocking, fetches=fetches),
                pull_async(replica, to_c.peer, from_c, run_blocking, fetches=fetches))
            return from_b.asked, from_c.asked, reports
    finally:
        replica.close()


def _close(nodes):
    for node in nodes.values():
        node.close()


def test_two_peers_offering_one_new_revision_at_once_cost_its_bodies_once(tmp_path: Path):
    nodes, uuid = _three(tmp_path)
    try:
        held_at_b = len(nodes["b"].store.held_digests(uuid))
        fetches = SharedFetches()
        asked_b, asked_c, _ = asyncio.run(_pull_both(nodes, fetches, slow_b=0.2))
        assert asked_b + asked_c == held_at_b, "each body fetched once, from one of the two peers"
        assert len(nodes["a"].store.held_digests(uuid)) == held_at_b
        assert len(fetches) == 0  # nothing left claimed once both pulls ended
    finally:
        _close(nodes)


def test_without_shared_fetches_both_pulls_fetch_every_body(tmp_path: Path):
    # the baseline the test above improves on: it shows the two pulls really do overlap
    nodes, uuid = _three(tmp_path)
    try:
        held_at_b = len(nodes["b"].store.held_digests(uuid))
        asked_b, asked_c, _ = asyncio.run(_pull_both(nodes, None, slow_b=0.2))
        assert asked_b + asked_c == 2 * held_at_b
    finally:
        _close(nodes)


def test_what_the_first_peer_could_not_give_is_fetched_from_the_other(tmp_path: Path):
    # c's push filter to a withholds the four "secret" attributes; b's gives everything. However
    # the two pulls interleave, a ends with every body, and fetches none twice.
    nodes, uuid = _three(tmp_path, settings={("c", "a"): {"push": {"tags_exclude": ["secret"]}}}, secret=4)
    try:
        held_at_b = len(nodes["b"].store.held_digests(uuid))
        asked_b, asked_c, _ = asyncio.run(_pull_both(nodes, SharedFetches()))
        assert len(nodes["a"].store.held_digests(uuid)) == held_at_b
        assert asked_b + asked_c <= held_at_b
    finally:
        _close(nodes)


def test_a_pull_waits_for_a_stalled_pull_of_the_same_revision_only_so_long_then_fetches_itself(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(driver, "SHARED_FETCH_WAIT_SECONDS", 0.5)
    nodes, uuid = _three(tmp_path)
    try:
        held_at_b = len(nodes["b"].store.held_digests(uuid))

        async def go() -> tuple[int, int]:
            stall = asyncio.Event()  # c's bodies reply never comes until b's pull has finished
            fetches = SharedFetches()
            a, b, c = nodes["a"], nodes["b"], nodes["c"]
            replica = Replica(a)
            try:
                async with served(b) as url_b, served(c) as url_c, \
                        as_peer(a, b, url_b) as to_b, as_peer(a, c, url_c) as to_c:
                    from_b, from_c = Counting(to_b, delay=0.1), Counting(to_c, stall=stall)
                    pull_c = asyncio.ensure_future(pull_async(replica, to_c.peer, from_c, run_blocking,
                                                              fetches=fetches))
                    await asyncio.sleep(0.05)  # c's pull claims the revision first, then stalls
                    await asyncio.wait_for(pull_async(replica, to_b.peer, from_b, run_blocking, fetches=fetches),
                                           timeout=10)
                    stall.set()
                    await pull_c
                    return from_b.asked, from_c.asked
            finally:
                replica.close()
        asked_b, _ = asyncio.run(go())
        assert asked_b == held_at_b  # b's pull gave up waiting and fetched everything itself
        assert len(nodes["a"].store.held_digests(uuid)) == held_at_b
    finally:
        _close(nodes)
