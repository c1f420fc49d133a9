"""Operator endpoints (/node/v1/peers, /node/v1/feeds): who may read them, and the local client.

They name the node's peers, their addresses and how replication with each is going, and the feeds
it fetches: the federation's topology, which organisations sharing intelligence often keep to
themselves. MISP shows its server list to site admins only; here the same goes for an admin API
key of this node, or for a request signed with the node's own identity key, which is what
`fedmisp status` sends (whoever can read identity.key runs the node). The signature is the peer
protocol's Fedmisp-Auth header (gossip/auth.py) with the node's own key as the only pinned one,
so the same clock-skew and replay checks apply.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Awaitable, Callable

from aiohttp import web

from fedmisp.gossip.auth import HEADER, AuthError, ReplayCache, sign_request, verify_request
from fedmisp.model.identity import Identity
from fedmisp.node.api import ApiError, request_role
from fedmisp.node.config import KEY_FILE, NodeConfig

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPERATOR_ROLE = "admin"
DENIED = ("Authentication failed: {path} needs an admin API key of this node (Authorization: <key>) "
          "or a request signed with this node's identity key, as `fedmisp status` sends; see docs/operations.md")


def operator_only(handler: Handler, own_key: Callable[[], bytes], replays: ReplayCache) -> Handler:
    """`handler`, answered only to an admin API key or a request signed by the node's own key
    (`own_key` is read per request: a key rotation takes effect without a restart)."""
    async def guarded(request: web.Request) -> web.StreamResponse:
        if request.headers.get(HEADER) is not None:
            try:
                verify_request(request.headers[HEADER], request.method, request.path, b"",
                               {own_key(): "self"}, replays)
            except AuthError as e:
                raise ApiError(403, DENIED.format(path=request.path) + f" ({HEADER}: {e.reason})") from None
            return await handler(request)
        if await request_role(request) != OPERATOR_ROLE:
            raise ApiError(403, DENIED.format(path=request.path))
        return await handler(request)
    return guarded


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
