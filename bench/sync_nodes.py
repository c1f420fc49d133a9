"""Real `python -m fedmisp run` processes for bench/sync.py (the approach of tests/nodes.py).

Homes with free ports on 127.0.0.1, peered along undirected edges through their fedmisp.toml
([[peer]] entries, [gossip] anti_entropy_seconds); processes started in parallel and stopped with
SIGTERM; each node's store read read-only (cheap LMDB stat counts) while it runs; /node/v1/peers
read over HTTP.  Unlike tests/nodes.py this keeps each node's admin API key (`init_home` returns
it) so the benchmark can POST events to the node's MISP API, and it rewrites a home's config so the
same homes can be restarted with other peers or another anti-entropy interval.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import tomli_w

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from fedmisp.node.config import CONFIG_FILE  # noqa: E402
from fedmisp.node.home import Node, init_home  # noqa: E402
from fedmisp.store.store import Store  # noqa: E402

# Requests to 127.0.0.1 never go through a proxy, whatever the environment says.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


from fedmisp.node.demo import free_port  # noqa: E402  (one port picker for tests, demo and bench)


def node_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


@dataclass
class BenchNode:
    name: str
    home: Path
    port: int
    org_uuid: str
    key_text: str
    api_key: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float | None = None  # perf_counter when Popen returned
    serving_at: float | None = None  # perf_counter when its "serving" line was seen
    _store: Store | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.home / "node.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- process -----------------------------------------------------------------------------------

    def spawn(self, wrap: list[str] | None = None) -> None:
        self.close_store()
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        log = open(self.log, "ab")
        cmd = [sys.executable] + (wrap or ["-m", "fedmisp"]) + ["run", "--home", str(self.home)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=node_env())
        log.close()
        self.started_at = time.perf_counter()
        self.serving_at = None

    def check_serving(self) -> bool:
        if self.serving_at is not None:
            return True
        assert self.proc is not None
        with open(self.log, "rb") as f:
            f.seek(self._log_offset)
            text = f.read()
        if b"serving" in text:
            self.serving_at = time.perf_counter()
            return True
        if self.proc.poll() is not None:
            raise RuntimeError(f"node {self.name} exited {self.proc.returncode}: "
                               f"{text[-2000:].decode('utf-8', 'replace')}")
        return False

    def stop(self, timeout: float = 30) -> None:
        self.close_store()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    # --- read-only views ---------------------------------------------------------------------------

    def store(self) -> Store:
        """The node's store, opened read-only once (each read is its own short transaction, so it
        sees what the node has committed by then)."""
        if self._store is None:
            self._store = Store(self.home / "store", readonly=True)
        return self._store

    def close_store(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def cpu_seconds(self) -> float | None:
        """User + system CPU the node process and its running child processes (the row workers
        of gossip/replica.py) have used so far (Linux /proc; None elsewhere)."""
        if self.proc is None:
            return None
        ticks = _process_ticks(self.proc.pid)
        if ticks is None:
            return None
        for child in _children(self.proc.pid):
            ticks += _process_ticks(child) or 0
        return ticks / os.sysconf("SC_CLK_TCK")

    def stats(self) -> dict[str, int]:
        return self.store().stats()

    def holds(self, event_uuid: str) -> bool:
        return self.store().held(event_uuid) is not None

    def peers(self, timeout: float = 30) -> dict[str, Any]:
        with _HTTP.open(urllib.request.Request(self.url + "/node/v1/peers", headers={"Authorization": self.api_key}),
                        timeout=timeout) as response:
            return json.loads(response.read())

    def post(self, path: str, document: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        """POST JSON to the node's MISP API with its admin key; the decoded answer."""
        request = urllib.request.Request(self.url + path, data=json.dumps(document).encode(), method="POST", headers={
            "Authorization": self.api_key, "Accept": "application/json", "Content-Type": "application/json"})
        with _HTTP.open(request, timeout=timeout) as response:
            return json.loads(response.read())

    def post_event(self, event: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        return self.post("/events/add", {"Event": event}, timeout)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[11]) + int(fields[12]) if fields is not None else None


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and fields[1] == str(pid):
                out.append(int(entry.name))
    return out


def create_node(home: Path, name: str) -> BenchNode:
    """A fresh home (identity, config, store, admin API key) listening on a free port."""
    port = free_port()
    node, api_key = init_home(home, f"Org {name}", f"127.0.0.1:{port}")
    try:
        return BenchNode(name, home, port, node.config.org_uuid, node.identity.public_key_text, api_key)
    finally:
        node.close()


def adopt_node(home: Path, name: str) -> BenchNode:
    """An existing home (e.g. the one the ingest baseline imported into), on a new free port."""
    port = free_port()
    with Node.open(home) as node:
        api_key = node.create_api_key("admin", "bench/sync.py")
        result = BenchNode(name, home, port, node.config.org_uuid, node.identity.public_key_text, api_key)
    _set_config(result, {}, [])
    return result


def _set_config(node: BenchNode, gossip: dict[str, Any], peers: list[dict[str, Any]]) -> None:
    path = node.home / CONFIG_FILE
    document = tomllib.loads(path.read_text("utf-8"))
    document.setdefault("node", {})["listen"] = f"127.0.0.1:{node.port}"
    document.pop("peer", None)
    document.pop("gossip", None)
    if gossip:
        document["gossip"] = gossip
    if peers:
        document["peer"] = peers
    path.write_text(tomli_w.dumps(document), "utf-8")


def configure(nodes: dict[str, BenchNode], edges: list[tuple[str, str]], anti_entropy: float) -> None:
    """Peer `nodes` along the undirected `edges` (mode full, default filters), replacing any peers
    they had, and set their anti-entropy interval.  Takes effect at the next start."""
    peers: dict[str, list[dict[str, Any]]] = {n: [] for n in nodes}
    for a, b in edges:
        for x, y in ((a, b), (b, a)):
            other = nodes[y]
            peers[x].append({"name": y, "url": other.url, "key": other.key_text, "org_uuid": other.org_uuid,
                             "mode": "full"})
    for name, node in nodes.items():
        _set_config(node, {"anti_entropy_seconds": anti_entropy}, peers[name])


def start_all(nodes: list[BenchNode], timeout: float = 120, wrap: list[str] | None = None) -> None:
    """Spawn every process at once, then wait until each says it is serving."""
    for node in nodes:
        node.spawn(wrap)
    wait_for(lambda: all(n.check_serving() for n in nodes), timeout, "nodes to start", interval=0.02)


def stop_all(nodes: list[BenchNode]) -> None:
    for node in nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
    for node in nodes:
        node.stop()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll until `condition()`; returns the perf_counter time it first held."""
    deadline = time.perf_counter() + timeout
    while True:
        if condition():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wire_bytes(nodes: list[BenchNode]) -> tuple[int, int]:
    """(sum of bytes_out, sum of bytes_in) over every node's peers, from /node/v1/peers.

    A node's bytes_out for a peer is what it sent that peer: its own pull requests plus the replies
    it served the peer; bytes_in is the replies it received when pulling.  Summed over all nodes,
    bytes_out is every sealed message body on the wire once (HTTP and Fedmisp-Auth headers are not
    counted)."""
    out = inn = 0
    for node in nodes:
        for status in node.peers().values():
            out += status.get("bytes_out", 0)
            inn += status.get("bytes_in", 0)
    return out, inn


__all__ = ["BenchNode", "adopt_node", "configure", "create_node", "free_port", "start_all", "stop_all",
           "wait_for", "wire_bytes"]
