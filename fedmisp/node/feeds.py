"""Serving MISP feeds from the running node: GET /feed/{name}/manifest.json, /{uuid}.json, /hashes.csv.

What a feed publishes is what the outbound pipeline lets a peer with the feed's filter pull
(`ServedFeed.policy`): published events only, nothing at level 0, nothing bound to a sharing group
(a feed reader is no member of any), only what the filter passes, never correlation-only data.
Each item is written at the level its reader holds it at (MISP's downgrade: 1 becomes 0, 2 becomes
1), so a node that imports the feed does not pass on further than the author allowed.

The layout is MISP's (what its "fetch feed" reads): manifest.json maps each event uuid to its
summary (info, Orgc, Tag, date, threat_level_id, analysis, timestamp), one ``{uuid}.json`` per event
(``{"Event": ...}`` without local ids, local tags, sightings or proposals; with the event reports
and analyst data the feed's policy lets out, decision 0029), and hashes.csv.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from aiohttp import web

from fedmisp.export.misp import hash_lines, manifest_entry
from fedmisp.gossip.peers import NodeView
from fedmisp.gossip.replica import Replica
from fedmisp.model.analyst import current_items, nest_analyst_data
from fedmisp.model.misp import to_misp
from fedmisp.model.records import KIND_ANALYST
from fedmisp.node.api.access import ANY_KEY_UNLESS_OPEN, declare
from fedmisp.node.api.helpers import ApiError
from fedmisp.node.api.render import with_galaxies
from fedmisp.node.feed_config import ServedFeed
from fedmisp.policy.model import INHERIT, NodeState, PeerPolicy
from fedmisp.policy.reasons import Reason
from fedmisp.store.query import is_tombstone

# manifest.json and hashes.csv are rebuilt when the log moved, and at least this often: a holding can
# change without a log entry (the same revision offered again at a higher level).
SNAPSHOT_MAX_AGE_SECONDS = 60.0
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


def feed_event(replica: Replica, feed: ServedFeed, event_uuid: str, state: NodeState | None = None
               ) -> dict[str, Any] | None:
    """The event as `feed` publishes it, or None when the feed may not carry it."""
    return offered_event(replica, feed.policy, event_uuid, state, galaxies=True)


def offered_event(replica: Replica, policy: PeerPolicy, event_uuid: str, state: NodeState | None = None, *,
                  served: Callable[[int], int] = lambda level: level, galaxies: bool = False,
                  deleted: bool = False) -> dict[str, Any] | None:
    """The event as a reader with `policy` may have it (`Replica.offer`, the outbound pipeline),
    MISP JSON without local ids, local tags, sightings or proposals, or None when nothing of it may
    leave. Each item carries `served(level)` of the level the reader holds it at (a feed: that
    level; a MISP peer, which downgrades what it pulls itself: the level before that downgrade).
    `galaxies`: with the Galaxy blocks of the default-cluster tags, as MISP's feeds carry them.
    `deleted`: with the deleted items offered, marked so (a MISP peer this node pushes to deletes
    its copies, as MISP's own push makes it: node/misp_sync.py)."""
    offered = replica.offer(event_uuid, policy, state)
    if offered is None:
        return None
    held, levels = offered
    header = held.record.body["event"]
    if is_tombstone(header):
        return None  # a tombstone (decision 0007): gone
    found = replica.store.revision(event_uuid)
    if found is None:
        return None
    _record, elements = found
    kept = [e for e in elements if e["uuid"] in levels and (deleted or not e.get("deleted"))]
    event = to_misp(header, kept)
    e = event["Event"]
    e["distribution"] = str(served(levels[event_uuid]))
    for item in e["Attribute"] + e["Object"] + [a for o in e["Object"] for a in o["Attribute"]] \
            + e.get("EventReport", []):
        if item["distribution"] != str(INHERIT):
            item["distribution"] = str(served(levels[item["uuid"]]))
    analyst = offered_analyst_data(replica, policy, event_uuid, state)
    if analyst:
        nest_analyst_data(event, [{**b, "item": {**b["item"], "distribution": served(b["item"]["distribution"])}}
                                  for b in analyst])
    if galaxies:
        # default clusters only (public data; a custom cluster's own distribution is not ours to judge)
        with_galaxies(event)
    return event


def offered_analyst_data(replica: Replica, policy: PeerPolicy, event_uuid: str, state: NodeState | None = None
                         ) -> list[dict[str, Any]]:
    """The notes, opinions and relationships of an event that a peer with `policy` would pull (the
    sender's rule, decision 0029: the item's own level, hop budget and target), each written at the
    level its reader holds it at."""
    records = [r for r in replica.store.event_records(event_uuid) if r.kind == KIND_ANALYST]
    if not records:
        return []
    state = state or replica.node_state()
    memo: dict[Any, Any] = {}
    out = []
    for body, record in current_items(records).values():
        if body["item"].get("deleted"):
            continue
        reason, level = replica.sender.analyst_reason(record, policy, state, memo)
        if reason is Reason.ALLOWED:
            out.append({**body, "item": {**body["item"], "distribution": level}})
    return out


def feed_events(replica: Replica, feed: ServedFeed) -> Iterator[dict[str, Any]]:
    state = replica.node_state()  # once: it reads every sharing group
    for event_uuid in replica.store.event_uuids():
        event = feed_event(replica, feed, event_uuid, state)
        if event is not None:
            yield event


@dataclass(frozen=True)
class Snapshot:
    """manifest.json and hashes.csv of one feed as of one log sequence."""
    sequence: int
    built: float  # time.monotonic() when it was built
    feed: ServedFeed
    manifest: bytes
    hashes: bytes


def build_snapshot(replica: Replica, feed: ServedFeed) -> Snapshot:
    sequence, built = replica.store.head_sequence(), time.monotonic()
    manifest: dict[str, Any] = {}
    hashes: list[str] = []
    for event in feed_events(replica, feed):
        manifest[event["Event"]["uuid"]] = manifest_entry(event)
        hashes.extend(hash_lines(event))
    return Snapshot(sequence, built, feed, json.dumps(manifest, ensure_ascii=False).encode("utf-8"),
                    "".join(hashes).encode("utf-8"))


class FeedServer:
    """The /feed routes. manifest.json and hashes.csv are rebuilt when the store's log moved, the
    feed's configuration changed or the last build is SNAPSHOT_MAX_AGE_SECONDS old; event files are
    decided at each request."""

    def __init__(self, node: NodeView, run_blocking: Any, role_of: Any):
        self.node = node
        self.replica = Replica(node)
        self.run_blocking = run_blocking
        self.role_of = role_of  # API key -> role or None (node/api/access.py's role_of)
        self._snapshots: dict[str, Snapshot] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def routes(self) -> list[web.RouteDef]:
        """The routes, relative to /feed (node/api/app.py mounts them there)."""
        return [web.get("/{name}/manifest.json", self.manifest),
                web.get("/{name}/hashes.csv", self.hashes),
                web.get("/{name}/{uuid:" + _UUID + "}.json", self.event)]

    async def _feed(self, request: web.Request) -> ServedFeed:
        name = request.match_info["name"]
        feed = next((f for f in self.node.config.served_feeds if f.name == name), None)
        if feed is None:
            raise ApiError(404, f"no served feed named {name!r} on this node (fedmisp.toml [[served_feed]])",
                           {"name": ["not a served feed"]}, "Not Found")
        if not feed.open:
            key = (request.headers.get("Authorization") or request.headers.get("X-MISP-AUTH") or "").strip()
            if await self.run_blocking(self.role_of, key) is None:
                raise ApiError(403, f"feed {name!r} needs an API key of this node in the Authorization header "
                               "(or set access = \"open\" for it in fedmisp.toml)")
        return feed

    async def _snapshot(self, feed: ServedFeed) -> Snapshot:
        lock = self._locks.setdefault(feed.name, asyncio.Lock())
        async with lock:  # one build at a time per feed; the others wait for it
            current = self._snapshots.get(feed.name)
            head = await self.run_blocking(self.node.store.head_sequence)
            if current is None or current.sequence != head or current.feed != feed \
                    or time.monotonic() - current.built > SNAPSHOT_MAX_AGE_SECONDS:
                current = self._snapshots[feed.name] = await self.run_blocking(build_snapshot, self.replica, feed)
            return current

    @declare(ANY_KEY_UNLESS_OPEN)  # an open feed, or any key of this node: `_feed` reads which
    async def manifest(self, request: web.Request) -> web.Response:
        snapshot = await self._snapshot(await self._feed(request))
        return web.Response(body=snapshot.manifest, content_type="application/json", charset="utf-8")

    @declare(ANY_KEY_UNLESS_OPEN)  # an open feed, or any key of this node: `_feed` reads which
    async def hashes(self, request: web.Request) -> web.Response:
        snapshot = await self._snapshot(await self._feed(request))
        return web.Response(body=snapshot.hashes, content_type="text/csv", charset="utf-8")

    @declare(ANY_KEY_UNLESS_OPEN)  # an open feed, or any key of this node: `_feed` reads which
    async def event(self, request: web.Request) -> web.Response:
        feed = await self._feed(request)
        event_uuid = request.match_info["uuid"].lower()
        event = await self.run_blocking(feed_event, self.replica, feed, event_uuid)
        if event is None:
            raise ApiError(404, f"event {event_uuid} is not in feed {feed.name!r}", {"uuid": ["not in this feed"]},
                           "Not Found")
        return web.json_response(event, dumps=lambda o: json.dumps(o, ensure_ascii=False))
