"""Real fedmisp node processes on 127.0.0.1 for multi-node tests; each test stops what it starts."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import tomli_w

from fedmisp.node.config import CONFIG_FILE
from fedmisp.node.demo import free_port as demo_free_port
from fedmisp.node.home import init_home
from fedmisp.store.store import Store


def free_port() -> int:
    return demo_free_port()


class NodeProcess:
    def __init__(self, name: str, home: Path, port: int):
        self.name, self.home, self.port = name, home, port
        self.proc: subprocess.Popen[str] | None = None
        self.log = home / "node.log"

    def start(self, timeout: float = 30) -> None:
        # the log is appended to across restarts: only this start's lines say it is serving
        offset = self.log.stat().st_size if self.log.exists() else 0
        log = open(self.log, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "fedmisp", "run", "--home", str(self.home)],
                                     stdout=log, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "serving" in self.log.read_text()[offset:]:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"node {self.name} did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def operator(self, path: str = "/node/v1/peers") -> Any:
        """An operator endpoint's JSON, asked as `fedmisp status` asks: signed with the node's key."""
        from fedmisp.node.config import load_config
        from fedmisp.node.operator import operator_get
        return operator_get(load_config(self.home), path, timeout=30)

    def events(self) -> set[str]:
        store = Store(self.home / "store", readonly=True)
        try:
            return set(store.event_uuids())
        finally:
            store.close()

    def integrity(self) -> list[str]:
        store = Store(self.home / "store", readonly=True)
        try:
            return store.check_integrity()
        finally:
            store.close()


def configure(tmp_path: Path, names: list[str], edges: list[tuple[str, str]],
              settings: dict[tuple[str, str], dict] | None = None,
              anti_entropy: float = 2.0) -> dict[str, NodeProcess]:
    """Homes for `names` with free ports, peered along undirected `edges` (not started)."""
    nodes: dict[str, NodeProcess] = {}
    info: dict[str, tuple[str, str]] = {}
    for name in names:
        port = free_port()
        node, _ = init_home(tmp_path / name, f"Org {name}", f"127.0.0.1:{port}")
        info[name] = (node.config.org_uuid, node.identity.public_key_text)
        nodes[name] = NodeProcess(name, node.config.home, port)
        node.close()
    peers: dict[str, list[dict]] = {n: [] for n in names}
    for a, b in edges:
        for x, y in ((a, b), (b, a)):
            entry = {"name": y, "url": f"http://127.0.0.1:{nodes[y].port}", "key": info[y][1],
                     "org_uuid": info[y][0], "mode": "full"}
            entry.update((settings or {}).get((x, y), {}))
            peers[x].append(entry)
    for name in names:
        path = nodes[name].home / CONFIG_FILE
        extra = {"gossip": {"anti_entropy_seconds": anti_entropy}}
        if peers[name]:
            extra["peer"] = peers[name]
        path.write_text(path.read_text() + "\n" + tomli_w.dumps(extra))
    return nodes


@contextmanager
def running(nodes: dict[str, NodeProcess]) -> Iterator[dict[str, NodeProcess]]:
    try:
        for node in nodes.values():
            node.start()
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def env_without_proxies() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
