"""Operator endpoints (/node/v1/peers, /node/v1/feeds, beside /node/v1/health and /node/v1/metrics):
their routes, why only an operator may read them, and the local client.

They name the node's peers, their addresses and how replication with each is going, and the feeds
it fetches: the federation's topology, which organisations sharing intelligence often keep to
themselves. MISP shows its server list to site admins only; here the same goes for an admin API
key of this node, or for a request signed with the node's own identity key, which is what
`fedmisp status` sends (whoever can read identity.key runs the node). The signature is the peer
protocol's Fedmisp-Auth header (gossip/auth.py) with the node's own key as the only pinned one,
so the same clock-skew and replay checks apply; node/api/access.py checks it (OPERATOR).
"""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, Callable

from aiohttp import web

from fedmisp.gossip.auth import HEADER, sign_request
from fedmisp.model.identity import Identity
from fedmisp.node.api.access import OPERATOR, PUBLIC, declare
from fedmisp.node.config import KEY_FILE, NodeConfig
from fedmisp.node.metrics import PATH as METRICS_PATH

if TYPE_CHECKING:  # (the CLI's client below needs none of them)
    from fedmisp.gossip.service import Gossiper
    from fedmisp.node.feed_fetch import FeedFetcher
    from fedmisp.node.metrics import NodeMetrics

PREFIX = "/node/v1"


def node_routes(gossiper: Gossiper, fetcher: FeedFetcher, metrics: NodeMetrics,
                misp_peers: Callable[[], dict[str, Any]] = dict) -> list[web.RouteDef]:
    """/node/v1's routes, relative to PREFIX: peers (fedmisp peers, and `misp_peers`: the MISP
    peers' status) and feeds for operators, health for anyone, metrics for a key (node/metrics.py)."""
    node = gossiper.node

    def all_peers() -> dict[str, Any]:
        return {**gossiper.peers_json(), **misp_peers()}

    @declare(OPERATOR)
    async def peers(request: web.Request) -> web.Response:
        # It names peers and their addresses, no keys or data.
        return web.json_response(await asyncio.get_running_loop().run_in_executor(None, all_peers))

    @declare(OPERATOR)
    async def feeds(request: web.Request) -> web.Response:
        # Like /node/v1/peers: feed locations and outcomes, no keys or headers.
        return web.json_response({"served": [f.name for f in node.config.served_feeds],
                                  "fetched": fetcher.status_json()})
    return [web.get("/peers", peers), web.get("/health", health), web.get("/feeds", feeds),
            web.get(METRICS_PATH.removeprefix(PREFIX), metrics.handler)]


@declare(PUBLIC)
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def operator_get(config: NodeConfig, path: str, timeout: float = 2.0) -> Any:
    """GET an operator endpoint of the node running from `config.home`, signed with its identity
    key; the JSON answer. Raises OSError when the node is not reachable, ValueError on a refusal
    or a reply that is not JSON."""
    identity = Identity.load(config.home / KEY_FILE)
    host = "127.0.0.1" if config.listen_host in ("0.0.0.0", "::") else config.listen_host
    host = f"[{host}]" if ":" in host else host
    request = urllib.request.Request(f"http://{host}:{config.listen_port}{path}",
                                     headers={HEADER: sign_request(identity, "GET", path, b"")})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:  # (an OSError too: say what the node answered instead)
        raise ValueError(f"{path}: the node answered {e.code}: {e.read()[:300].decode(errors='replace')}") from None
