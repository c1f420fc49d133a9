"""`fedmisp run`: the node's long-running process (today: the MISP-compatible REST API).

The store is opened once and written through one Writer; the aiohttp server listens on the
configured address. SIGTERM and SIGINT stop it cleanly: the listener closes, requests in flight
finish (up to SHUTDOWN_GRACE seconds), the writer commits what is queued, the store is closed.
Beside the API and /fed/v1 it serves /node/v1 (health, peers, metrics), logs as [log] says, and
hands replication decisions to the metrics and the audit log (docs/operations.md).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from typing import Any

from fedmisp.runtime import tune_gc
from fedmisp.gossip.observe import Fanout
from fedmisp.gossip.service import ANTI_ENTROPY_SECONDS, Gossiper
from fedmisp.gossip.session import PULL_DEADLINE_SECONDS, PullLimits
from fedmisp.node.api.access import role_of
from fedmisp.node.api.app import make_app
from fedmisp.node.api.misp_sync import misp_peers_json
from fedmisp.node.api.helpers import DEFAULT_MAX_REQUEST_BYTES, ApiContext
from fedmisp.node.feed_fetch import FeedFetcher
from fedmisp.node.feeds import FeedServer
from fedmisp.node.connections import (BODY_TIMEOUT, FD_RESERVE, HEADER_TIMEOUT, MAX_CONNECTIONS, ConnectionLimits,
                                      GuardedRunner, raise_fd_limit, throttle_accept_errors)
from fedmisp.node.config import CONFIG_FILE, KEY_FILE, ConfigError, NodeConfig, load_config
from fedmisp.node.home import Node
from fedmisp.node.keys import reload_identity
from fedmisp.node.logs import AuditLog, configure_logging
from fedmisp.node.metrics import NodeMetrics
from fedmisp.node.misp_sync import MispSync
from fedmisp.node.operator import node_routes
from fedmisp.store.writer import Writer

log = logging.getLogger("fedmisp.server")

PID_FILE = "fedmisp.pid"  # written while `fedmisp run` serves; `fedmisp reload` signals it
# Seconds requests in flight get to finish after a stop signal.
SHUTDOWN_GRACE = 10.0
# aiohttp reads and drops what a client still sends after its request was answered early (a body
# refused by its header or its size, docs/operations.md "Limits") so that the client reads the answer
# before the connection closes; its default is 10 s of reading garbage per refused request. A second
# is many round trips on any network a peer or an API client sits on.
LINGERING_SECONDS = 1.0
# The most a configured request body limit may be: the largest event a node accepts is about this.
MAX_REQUEST_BYTES_CEILING = 1024 * 1024 * 1024


def max_request_bytes(config: NodeConfig) -> int:
    """`limits.max_request_bytes` from fedmisp.toml (default 32 MiB), validated."""
    limits = config.raw.get("limits", {})
    value = limits.get("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES) if isinstance(limits, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or not 1024 <= value <= MAX_REQUEST_BYTES_CEILING:
        raise ConfigError(config.home / CONFIG_FILE, [
            f"limits.max_request_bytes: {value!r}; expected an integer from 1024 to {MAX_REQUEST_BYTES_CEILING}"])
    return value


def _limit(config: NodeConfig, name: str, default: float, low: float, high: float, integer: bool = False) -> Any:
    """`limits.<name>` from fedmisp.toml, a number from `low` to `high`, validated."""
    limits = config.raw.get("limits", {})
    value = limits.get(name, default) if isinstance(limits, dict) else None
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        what = f"an integer from {low} to {high}" if integer else f"a number of seconds from {low:g} to {high:g}"
        raise ConfigError(config.home / CONFIG_FILE, [f"limits.{name}: {value!r}; expected {what}"])
    return value


def connection_limits(config: NodeConfig, fd_limit: int | None = None) -> ConnectionLimits:
    """`limits.header_timeout_seconds` (default 15), `limits.body_timeout_seconds` (60) and
    `limits.max_connections` (1024, and at most the open files limit less FD_RESERVE)."""
    cap = _limit(config, "max_connections", MAX_CONNECTIONS, 1, 1_000_000, integer=True)
    if fd_limit is not None:
        cap = max(1, min(cap, fd_limit - FD_RESERVE))
    return ConnectionLimits(header_timeout=float(_limit(config, "header_timeout_seconds", HEADER_TIMEOUT, 0.1, 3600)),
                            body_timeout=float(_limit(config, "body_timeout_seconds", BODY_TIMEOUT, 0.1, 3600)),
                            max_connections=cap)


async def serve(node: Node, *, host: str | None = None, port: int | None = None,
                log_overrides: dict[str, str | None] | None = None) -> None:
    """Serve the API until SIGTERM or SIGINT."""
    limit = max_request_bytes(node.config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    connections = connection_limits(node.config, raise_fd_limit())
    throttle_accept_errors(loop, connections)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pid_file = node.config.home / PID_FILE
    async def run_blocking(fn: Any, *args: Any) -> Any:
        return await loop.run_in_executor(None, fn, *args)

    metrics = NodeMetrics(node)
    audit = AuditLog(node.config.audit, node.config.home)
    observer = Fanout((metrics, audit))
    gossiper = Gossiper(node, run_blocking, interval=anti_entropy_seconds(node.config),
                        observer=observer,
                        limits=PullLimits(deadline=pull_deadline_seconds(node.config)))
    metrics.track_peers(gossiper.peers_json)
    # Something stored locally (API, import through the API) is announced to peers at once.
    writer = Writer(node.store, on_commit=lambda: loop.call_soon_threadsafe(gossiper.stored_something))
    ctx = ApiContext(node, writer, limit, observer=observer)  # (MISP peers' records: node/api/misp_sync.py)
    fetcher = FeedFetcher(node, lambda events: asyncio.wrap_future(writer.submit(events)), run_blocking)
    misp = MispSync(node, lambda events, checkpoint: asyncio.wrap_future(writer.submit(events, checkpoint=checkpoint)),
                    run_blocking, observer=observer)
    app = node_app(ctx, gossiper, fetcher, metrics, run_blocking, misp)
    runner = GuardedRunner(app, connections, access_log=None, shutdown_timeout=SHUTDOWN_GRACE,
                           lingering_time=LINGERING_SECONDS)
    try:
        await runner.setup()
        site = web.TCPSite(runner, host or node.config.listen_host,
                           node.config.listen_port if port is None else port)
        await site.start()
        bound = runner.addresses[0] if runner.addresses else (node.config.listen_host, node.config.listen_port)
        # One line a supervisor (or a test) can wait for; the port is the bound one (listen port 0 picks one).
        print(f"fedmisp: serving the MISP API on http://{_show_host(bound[0])}:{bound[1]} "
              f"for {node.config.org_name!r}", flush=True)
        await gossiper.start()
        await fetcher.start()
        await misp.start()
        pid_file.write_text(f"{os.getpid()}\n")
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(
            reload(node, gossiper, audit, log_overrides or {}, fetcher, misp)))
        await stop.wait()
        print("fedmisp: stopping", flush=True)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        pid_file.unlink(missing_ok=True)
        await misp.stop()
        await fetcher.stop()
        await gossiper.stop()
        await runner.cleanup()
        writer.close()
        audit.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def misp_status(ctx: ApiContext, misp: MispSync | None) -> dict[str, Any]:
    """Each MISP peer's status: MISP calling this node (node/api/misp_sync.py) and this node
    calling it (node/misp_sync.py), in one entry per peer."""
    served = misp_peers_json(ctx)
    calls = misp.status_json() if misp is not None else {}
    return {name: {**served.get(name, {}), **calls.get(name, {})} for name in {**served, **calls}}


def node_app(ctx: ApiContext, gossiper: Gossiper, fetcher: FeedFetcher, metrics: NodeMetrics,
             run_blocking: Any, misp: MispSync | None = None) -> web.Application:
    """The application `fedmisp run` serves: the MISP API, /fed/v1, /node/v1 and /feed."""
    return make_app(ctx, outer_middlewares=(metrics.middleware,), peer_routes=gossiper.protocol.routes(),
                    node_routes=node_routes(gossiper, fetcher, metrics, lambda: misp_status(ctx, misp)),
                    feed_routes=FeedServer(ctx.node, run_blocking, lambda key: role_of(ctx, key)).routes())


async def reload(node: Node, gossiper: Gossiper, audit: AuditLog | None = None,
                 log_overrides: dict[str, str | None] | None = None, fetcher: FeedFetcher | None = None,
                 misp: MispSync | None = None) -> None:
    """SIGHUP: read identity.key and fedmisp.toml again. An invalid file changes nothing, and the
    log says why. A new key (after `fedmisp key rotate`) is used at once and announced to peers."""
    try:
        if await asyncio.get_running_loop().run_in_executor(None, reload_identity, node):
            log.info("reloaded %s: signing as %s from now on", KEY_FILE, node.identity.public_key_text)
            gossiper.stored_something()  # peers pull the rotation at once
    except (OSError, ValueError) as e:
        log.error("reload of %s refused, keeping the running key: %s", KEY_FILE, e)
    try:
        config = await asyncio.get_running_loop().run_in_executor(None, load_config, node.config.home)
    except ConfigError as e:
        log.error("reload refused, keeping the running configuration:\n%s", e)
        return
    if (config.org_uuid, config.listen) != (node.config.org_uuid, node.config.listen):
        log.error("reload refused: node.org_uuid and node.listen take effect only on restart")
        return
    node.config = config
    configure_logging(config.log, config.home, **(log_overrides or {}))
    if audit is not None:
        audit.configure(config.audit, config.home)
    gossiper.reschedule()
    if fetcher is not None:
        fetcher.reschedule()
    if misp is not None:
        misp.reschedule()
    log.info("reloaded %s: %d peer(s)", CONFIG_FILE, len(config.peers), extra={"peers": len(config.peers)})


def _gossip_seconds(config: NodeConfig, name: str, default: float, low: float, high: float) -> float:
    """`gossip.<name>` from fedmisp.toml, a number of seconds from `low` to `high`, validated."""
    gossip = config.raw.get("gossip", {})
    value = gossip.get(name, default) if isinstance(gossip, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigError(config.home / CONFIG_FILE, [
            f"gossip.{name}: {value!r}; expected a number of seconds from {low:g} to {high:g}"])
    return float(value)


def anti_entropy_seconds(config: NodeConfig) -> float:
    """`gossip.anti_entropy_seconds` (default 30)."""
    return _gossip_seconds(config, "anti_entropy_seconds", ANTI_ENTROPY_SECONDS, 1, 86400)


def pull_deadline_seconds(config: NodeConfig) -> float:
    """`gossip.pull_deadline_seconds` (default 600): how long one pull from one peer may run."""
    return _gossip_seconds(config, "pull_deadline_seconds", PULL_DEADLINE_SECONDS, 5, 86400)


def _show_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def run(home: Path, *, log_format: str | None = None, log_level: str | None = None) -> int:
    """`fedmisp run`; `log_format` and `log_level` override the configuration's [log]."""
    overrides = {"log_format": log_format, "level": log_level}
    with Node.open(home) as node:
        configure_logging(node.config.log, node.config.home, **overrides)
        try:
            tune_gc()
            asyncio.run(serve(node, log_overrides=overrides))
        except OSError as e:  # the address is taken or not ours
            print(f"fedmisp run: cannot listen on {node.config.listen}: {e.strerror or e}", file=sys.stderr)
            return 2
    print("fedmisp: stopped", flush=True)
    return 0
