"""Operator endpoints (/node/v1/peers, /node/v1/feeds) answer only the node's operators: an admin
API key, or a request signed with the node's own identity key (what `fedmisp status` sends)."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from nodes import configure, running, wait_for

from fedmisp.gossip.auth import HEADER, sign_request
from fedmisp.model.identity import Identity
from fedmisp.node.home import Node


def _get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.mark.slow
def test_peer_and_feed_status_need_an_admin_key_or_the_nodes_own_signature(tmp_path):
    nodes = configure(tmp_path, ["a", "c"], [("a", "c")], anti_entropy=1.0)
    a = nodes["a"]
    node = Node.open(a.home)
    try:
        keys = {role: node.create_api_key(role, "operator test") for role in ("user", "admin")}
        own = node.identity
    finally:
        node.close()
    base = f"http://127.0.0.1:{a.port}"
    with running(nodes):
        wait_for(lambda: a.operator()["c"]["last_success"] is not None, what="a to pull from c once")
        for path in ("/node/v1/peers", "/node/v1/feeds"):
            url = base + path
            status, body = _get(url, {})
            assert status == 403 and b"admin API key" in body and b"fedmisp status" in body
            assert _get(url, {"Authorization": keys["user"]})[0] == 403  # an API user is not an operator
            status, body = _get(url, {"Authorization": keys["admin"]})
            assert status == 200 and json.loads(body) == a.operator(path)
            # the node's own key, as `fedmisp status` signs; another key, or a replay, is refused
            signed = sign_request(own, "GET", path, b"")
            assert _get(url, {HEADER: signed})[0] == 200
            status, body = _get(url, {HEADER: signed})
            assert status == 403 and b"replay" in body
            status, body = _get(url, {HEADER: sign_request(Identity.generate(), "GET", path, b"")})
            assert status == 403 and b"unknown-key" in body
            # a signature for another path does not open this one
            other = "/node/v1/feeds" if path == "/node/v1/peers" else "/node/v1/peers"
            assert _get(url, {HEADER: sign_request(own, "GET", other, b"")})[0] == 403
        assert _get(base + "/node/v1/health", {})[0] == 200  # liveness stays open for supervisors
        status_cli = subprocess.run([sys.executable, "-m", "fedmisp", "status", "--home", str(a.home)],
                                    capture_output=True, text=True, check=True).stdout
        assert "node not running" not in status_cli and "refused" in status_cli
        assert any(line.split()[:1] == ["c"] and "lag" in line for line in status_cli.splitlines())
