"""Prometheus metrics of one node, served at GET /node/v1/metrics (names and meaning: docs/operations.md).

Each node has its own CollectorRegistry (never the process-wide default), so several nodes in one
process (tests, the demo) keep separate figures. Counters of replication decisions are fed by the
gossip layer's observer calls (gossip/observe.py) and API latency by an aiohttp middleware; per-peer
status (lag, bytes, errors) and the store's size are read when scraped.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fedmisp.gossip.observe import IN, OUT, REFUSED, SENT, STORED, WITHHELD, Decision
from fedmisp.node.api.access import ANY_KEY_UNLESS_OPEN, declare, request_role
from fedmisp.node.api.helpers import ApiError, run
from fedmisp.node.home import Node

PATH = "/node/v1/metrics"
# A pull is one round trip when nothing is new and minutes when a large event streams in.
PULL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
# The MISP API answers in milliseconds; a large restSearch streams for a while.
API_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
# The classic text format, which every Prometheus version reads (names here are plain ASCII, so
# generate_latest's output is that format; newer prometheus-client label it 1.0.0 by default).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED_ROUTE = "unmatched"  # a path no route serves (404): one label, whatever was asked


class NodeMetrics:
    """The metrics of one node; an Observer of its replication (decided, pulled)."""

    def __init__(self, node: Node):
        self.node = node
        self.registry = CollectorRegistry()
        r = self.registry
        self.stored = Counter("fedmisp_records_stored", "Records stored from a peer (new to this node)",
                              ["peer", "kind"], registry=r)
        self.refused = Counter("fedmisp_records_refused", "Records refused from a peer, by reason code",
                               ["peer", "kind", "reason"], registry=r)
        self.sent = Counter("fedmisp_records_sent", "Records offered to a peer in its changes requests",
                            ["peer", "kind"], registry=r)
        self.withheld = Counter("fedmisp_records_withheld", "Records kept from a peer, by reason code",
                                ["peer", "kind", "reason"], registry=r)
        self.elements = Counter("fedmisp_elements_left_out",
                                "Elements left out of records sent (out) or stored (in), by reason code",
                                ["peer", "direction", "reason"], registry=r)
        self.pulls = Histogram("fedmisp_pull_duration_seconds", "Duration of one pull from a peer (a whole sync)",
                               ["peer", "outcome"], buckets=PULL_BUCKETS, registry=r)
        self.api = Histogram("fedmisp_api_request_duration_seconds", "Latency of requests to the node's HTTP API",
                             ["route", "method", "status"], buckets=API_BUCKETS, registry=r)
        self._peers: Callable[[], dict[str, Any]] = dict
        # the latency histogram's child per (route, method, status): labels() costs more than observe()
        self._api_children: dict[tuple[str, str, int], Any] = {}
        r.register(_StateCollector(self))

    def track_peers(self, peers_json: Callable[[], dict[str, Any]]) -> None:
        """Where per-peer status comes from (Gossiper.peers_json: the same figures as /node/v1/peers)."""
        self._peers = peers_json

    # --- Observer ---------------------------------------------------------------------------------

    def decided(self, d: Decision) -> None:
        kind = d.kind or "unknown"
        if d.action == STORED:
            self.stored.labels(d.peer, kind).inc()
        elif d.action == REFUSED:
            self.refused.labels(d.peer, kind, d.reason).inc()
        elif d.action == SENT:
            self.sent.labels(d.peer, kind).inc()
        elif d.action == WITHHELD:
            self.withheld.labels(d.peer, kind, d.reason).inc()
        for reason, count in d.elements.items():
            self.elements.labels(d.peer, OUT if d.action in (SENT, WITHHELD) else IN, reason).inc(count)

    def pulled(self, peer: str, seconds: float, ok: bool) -> None:
        self.pulls.labels(peer, "ok" if ok else "error").observe(seconds)

    # --- HTTP -------------------------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """API latency by route template (bounded cardinality), method and final status."""
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else UNMATCHED_ROUTE
            labels = (route, request.method, status)
            child = self._api_children.get(labels)
            if child is None:  # bounded: routes x methods x statuses
                child = self._api_children[labels] = self.api.labels(route, request.method, str(status))
            child.observe(time.perf_counter() - started)

    @declare(ANY_KEY_UNLESS_OPEN)  # any key of this node, unless metrics.require_api_key = false
    async def handler(self, request: web.Request) -> web.Response:
        if self.node.config.metrics.require_api_key and await request_role(request) is None:
            raise ApiError(403, "Authentication failed: /node/v1/metrics needs an API key of this node "
                           "(Authorization: <key> or Authorization: Bearer <key>); see docs/operations.md")
        body = await run(generate_latest, self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


class _StateCollector(Collector):
    """What is read when scraped: per-peer status and the store's size."""

    def __init__(self, metrics: NodeMetrics):
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        peers = self.metrics._peers()
        lag = GaugeMetricFamily("fedmisp_peer_lag_records",
                                "Records of the peer's log not yet examined (its head minus our checkpoint)",
                                labels=["peer"])
        checkpoint = GaugeMetricFamily("fedmisp_peer_checkpoint", "How far this node has pulled the peer's log",
                                       labels=["peer"])
        received = CounterMetricFamily("fedmisp_peer_bytes_received",
                                       "Bytes received from a peer (its replies and its requests)", labels=["peer"])
        sent = CounterMetricFamily("fedmisp_peer_bytes_sent",
                                   "Bytes sent to a peer (our requests and our replies)", labels=["peer"])
        errors = CounterMetricFamily("fedmisp_peer_pull_errors", "Pulls from a peer that failed", labels=["peer"])
        success = GaugeMetricFamily("fedmisp_peer_last_success_timestamp_seconds",
                                    "When a pull from the peer last succeeded (Unix time)", labels=["peer"])
        for name, status in sorted(peers.items()):
            if status.get("lag") is not None:
                lag.add_metric([name], status["lag"])
            checkpoint.add_metric([name], status["checkpoint"])
            received.add_metric([name], status["bytes_in"])
            sent.add_metric([name], status["bytes_out"])
            errors.add_metric([name], status["errors"])
            if status.get("last_success") is not None:
                success.add_metric([name], status["last_success"])
        yield from (lag, checkpoint, received, sent, errors, success)
        yield from store_metrics(self.metrics.node.store)


def store_metrics(store: Any) -> Iterator[Any]:
    usage = store.usage()
    yield GaugeMetricFamily("fedmisp_store_map_used_bytes", "Bytes of the LMDB map in use (pages up to the last one)",
                            value=usage["map_used_bytes"])
    yield GaugeMetricFamily("fedmisp_store_map_size_bytes", "The LMDB map size (the most the store can grow to)",
                            value=usage["map_size"])
    entries = GaugeMetricFamily("fedmisp_store_entries", "Entries of each LMDB database of the store", labels=["db"])
    for name, count in usage["entries"].items():
        entries.add_metric([name], count)
    yield entries
    stats = store.stats()
    yield GaugeMetricFamily("fedmisp_events_held", "Events this node holds", value=stats["events"])
    yield GaugeMetricFamily("fedmisp_attributes_held", "Attributes this node holds", value=stats["attributes"])
    yield GaugeMetricFamily("fedmisp_log_sequence", "The last sequence number of this node's local log",
                            value=stats["sequence"])
