"""`fedmisp run`'s connection limits against a careless or hostile client, on real node processes
on 127.0.0.1: half-sent requests are closed after the header and body timeouts, connections beyond
the cap are closed at once, the API and the peer protocol keep answering, and the log stays small."""
from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

from fedmisp.gossip.auth import HEADER, sign_request
from fedmisp.model.identity import Identity
from fedmisp.node.config import CONFIG_FILE
from fedmisp.node.home import Node

from nodes import configure, running, wait_for

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
CAP = 40


def _limits(home: Path) -> None:
    path = home / CONFIG_FILE
    text = path.read_text()
    settings = (f"header_timeout_seconds = {HEADER_TIMEOUT}\nbody_timeout_seconds = {BODY_TIMEOUT}\n"
                f"max_connections = {CAP}\n")
    path.write_text(text.replace("[limits]\n", "[limits]\n" + settings, 1) if "[limits]\n" in text
                    else text + "\n[limits]\n" + settings)


def _half_sent(port: int, body: bool, identity: Identity | None = None, api_key: str | None = None) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    if api_key is not None:  # an API client with a valid key that stops halfway through its body
        s.sendall(f"POST /events/add HTTP/1.1\r\nHost: x\r\nAuthorization: {api_key}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n".encode() + b'{"Event": ')
    elif body:  # a configured peer's header, whole, then only part of the body: the node reads it
        header = sign_request(identity, "POST", "/fed/v1/changes", b"")
        s.sendall(f"POST /fed/v1/changes HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n{HEADER}: {header}\r\n\r\n"
                  .encode() + b"x" * 10)
    else:  # a request line and half a header, never finished
        s.sendall(b"GET /node/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    return s


def _closed(s: socket.socket) -> bool:
    """The server closed it (EOF or reset), waiting at most a moment."""
    s.settimeout(0.05)
    try:
        return s.recv(4096) == b"" or _closed(s)  # (an answer first, e.g. 400: then the close)
    except socket.timeout:
        return False
    except OSError:
        return True


def _health(port: int) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/node/v1/health", timeout=30) as reply:
        return json.loads(reply.read())["status"] == "ok" and reply.status


def test_half_sent_requests_are_closed_by_the_timeouts_and_the_node_keeps_serving(tmp_path: Path):
    from test_keys import _peer_request
    nodes = configure(tmp_path, ["a", "b"], [("a", "b")], anti_entropy=600)
    _limits(nodes["b"].home)
    b = nodes["b"]
    identity = Identity.load(nodes["a"].home / "identity.key")  # a's key, a configured peer of b
    node = Node.open(b.home)
    api_key = node.create_api_key("admin", "slow client")
    node.close()
    sockets: list[socket.socket] = []
    with running({"b": b}):
        try:
            log_before = b.log.stat().st_size
            for i in range(3 * CAP):  # more than the cap: the ones beyond it are closed at once
                sockets.append(_half_sent(b.port, body=i % 2 == 1, identity=identity,
                                          api_key=api_key if i % 3 == 0 else None))
            wait_for(lambda: all(_closed(s) for s in sockets), timeout=60,
                     what="every half-sent connection closed by the header or body timeout or the cap")
            # the node still answers: the API, and a signed request of a configured peer
            assert _health(b.port) == 200
            assert _peer_request(b, identity)[0] == 200
            # a second wave while a real request is made: a fresh connection is served once the
            # slow ones are gone (waiting on the condition, not on a time)
            for i in range(CAP // 2):
                sockets.append(_half_sent(b.port, body=False))
            assert _health(b.port) == 200
            log = b.log.read_text()[log_before:]
            assert "Traceback" not in log and len(log) < 20_000, log[-2000:]
        finally:
            for s in sockets:
                s.close()


def test_connections_beyond_the_cap_are_closed_at_once(tmp_path: Path):
    nodes = configure(tmp_path, ["b"], [], anti_entropy=600)
    path = nodes["b"].home / CONFIG_FILE
    # long timeouts: only the cap can close these
    path.write_text(path.read_text().replace("[limits]\n", "[limits]\nheader_timeout_seconds = 600\n"
                                             f"max_connections = {CAP}\n", 1))
    b = nodes["b"]
    sockets: list[socket.socket] = []
    with running({"b": b}):
        try:
            for _ in range(CAP):
                sockets.append(_half_sent(b.port, body=False))
            time.sleep(0.5)  # (not asserted on: lets the node accept them before the next one)
            extra = _half_sent(b.port, body=False)
            sockets.append(extra)
            wait_for(lambda: _closed(extra), timeout=30, what="the connection beyond the cap closed")
            assert not any(_closed(s) for s in sockets[:CAP // 2])  # the first ones are still open
        finally:
            for s in sockets:
                s.close()


def test_accept_errors_are_logged_once_per_interval_with_a_count_not_a_traceback_each(caplog):
    """What asyncio's event loop reports when accept() fails for want of file descriptors (it
    retries every second, and by default logs a traceback each time)."""
    import asyncio
    import errno
    import logging

    from fedmisp.node.connections import ConnectionLimits, throttle_accept_errors

    limits = ConnectionLimits()
    loop = asyncio.new_event_loop()
    try:
        throttle_accept_errors(loop, limits)
        with caplog.at_level(logging.DEBUG):
            for _ in range(1000):
                error = OSError(errno.EMFILE, "Too many open files")
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": error})
    finally:
        loop.close()
    lines = [r for r in caplog.records if "accept" in r.getMessage()]
    assert len(lines) == 1 and "Too many open files" in lines[0].getMessage() and not lines[0].exc_info
    assert limits.accept_errors == 1000


def _open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open files line in /proc/<pid>/limits")


def test_a_node_raises_its_open_files_limit_and_a_client_that_drops_mid_body_is_no_error(tmp_path: Path):
    import resource
    nodes = configure(tmp_path, ["b"], [], anti_entropy=600)
    b = nodes["b"]
    node = Node.open(b.home)
    api_key = node.create_api_key("admin", "careless client")
    node.close()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    if low >= hard:
        import pytest
        pytest.skip("the hard open files limit is too low to tell a raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))  # the node process starts with it
    try:
        with running({"b": b}):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            assert _open_files_limit(b.proc.pid) == (hard, hard)  # raised to the hard limit at start
            log_before = b.log.stat().st_size
            for _ in range(3):  # API clients that send half a body, wait, then go away
                s = _half_sent(b.port, body=False, api_key=api_key)
                time.sleep(0.3)  # (the handler is reading the body by then)
                s.close()
            time.sleep(0.3)
            assert _health(b.port) == 200
            log = b.log.read_text()[log_before:]
            assert "Traceback" not in log and " ERROR " not in log, log[-2000:]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
