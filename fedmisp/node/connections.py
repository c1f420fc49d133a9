"""Bounds on the connections `fedmisp run` serves (issue 13 item 4: slowloris, fd exhaustion).

aiohttp (3.14) closes a connection that has not completed its first request's headers after
`keepalive_timeout` (counted from the connection's start, data or no data), and an idle kept-alive
connection after the same time; so the header timeout is aiohttp's keepalive_timeout. It has no
body read timeout and no connection cap: this module adds both in a small layer over aiohttp's
protocol (one handler class and one server class), and throttles the accept errors asyncio logs
with a traceback each (EMFILE and friends) to one line per interval with a count.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import resource
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("fedmisp.server")

# Seconds a client has to send a request's headers, counted from its connection or its previous
# answer (aiohttp's keepalive_timeout; its default is 75). A request line and headers are at most a
# few KiB: any real client sends them in one round trip.
HEADER_TIMEOUT = 15.0
# Seconds a client has to send a request's body once its headers came: the largest API body
# (limits.max_request_bytes, 32 MiB) at 1 MB/s is 32 s; a /fed/v1 body is at most 171 KB.
BODY_TIMEOUT = 60.0
# Connections served at once (API, /fed/v1, feeds, /node/v1 together); one more is closed at once
# and counted. Far above what one organisation's tools and peers open (a few tens), far below the
# fd limit after it is raised; and never more than the fd limit leaves after FD_RESERVE.
MAX_CONNECTIONS = 1024
# File descriptors kept for everything but client connections: LMDB, logs, the audit log, outgoing
# peer connections, worker processes' pipes.
FD_RESERVE = 128
# Accept errors (EMFILE, ENFILE, ENOBUFS, ENOMEM) are logged at most once per this many seconds,
# with how many there were (asyncio logs a traceback for each, and retries accept every second).
ACCEPT_ERROR_LOG_SECONDS = 10.0
_ACCEPT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass
class ConnectionLimits:
    header_timeout: float = HEADER_TIMEOUT
    body_timeout: float = BODY_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    # counters, for the log and tests
    refused: int = 0
    timed_out: int = 0
    accept_errors: int = 0
    _accept_logged: float = field(default=0.0, repr=False)
    _accept_unlogged: int = field(default=0, repr=False)

    def runner_settings(self) -> dict[str, Any]:
        """aiohttp server settings (AppRunner keyword arguments) these limits set."""
        return {"keepalive_timeout": self.header_timeout}


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard limit (logged); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open files limit raised from %d to %d", soft, target)
            soft = target
        except (ValueError, OSError) as e:
            log.warning("open files limit stays at %d (hard %d): %s", soft, hard, e)
    return soft


class _GuardedHandler(RequestHandler):
    """aiohttp's connection handler with the connection cap and the body read timeout."""

    __slots__ = ("_limits", "_body_timer")

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._manager is not None and len(self._manager.connections) > self._limits.max_connections:
            self._limits.refused += 1
            log.debug("connection refused: %d connections open (limit %d)",
                      len(self._manager.connections) - 1, self._limits.max_connections)
            self.force_close()

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before and self._messages:
            payload = self._messages[-1][1]
            if not payload.is_eof():
                if self._body_timer is not None:
                    self._body_timer.cancel()
                self._body_timer = self._loop.call_later(self._limits.body_timeout, self._body_late, payload)

    def _body_late(self, payload: Any) -> None:
        self._body_timer = None
        if not payload.is_eof() and self.transport is not None:
            self._limits.timed_out += 1
            log.debug("connection closed: a request body not sent within %ss", self._limits.body_timeout)
            self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().connection_lost(exc)


class _GuardedServer(web.Server):
    """aiohttp's web.Server whose connections are _GuardedHandler's."""

    limits: ConnectionLimits

    def __call__(self) -> RequestHandler:
        return _GuardedHandler(self, loop=self._loop, limits=self.limits, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An AppRunner whose server is a _GuardedServer (aiohttp builds its Server in _make_server;
    the class of the one it built is switched, so every setting aiohttp gives it stays)."""

    def __init__(self, app: web.Application, limits: ConnectionLimits, **kwargs: Any):
        super().__init__(app, **limits.runner_settings(), **kwargs)
        self.limits = limits

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer
        server.limits = self.limits  # type: ignore[attr-defined]
        return server


def throttle_accept_errors(loop: asyncio.AbstractEventLoop, limits: ConnectionLimits) -> None:
    """Accept errors logged once per ACCEPT_ERROR_LOG_SECONDS with a count; others as asyncio does."""
    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS:
            limits.accept_errors += 1
            limits._accept_unlogged += 1
            now = time.monotonic()
            if now - limits._accept_logged >= ACCEPT_ERROR_LOG_SECONDS:
                log.error("cannot accept connections: %s (%d time(s) in the last %gs); open connections are "
                          "capped at %d, see docs/operations.md \"Limits\"", exc.strerror or exc,
                          limits._accept_unlogged, ACCEPT_ERROR_LOG_SECONDS, limits.max_connections)
                limits._accept_logged = now
                limits._accept_unlogged = 0
            return
        loop.default_exception_handler(context)
    loop.set_exception_handler(handle)
