"""Small federations of real nodes (real stores, keys, configs) for replication tests."""
from __future__ import annotations

from pathlib import Path

import tomli_w

from fedmisp.gossip.driver import InMemory, pull
from fedmisp.gossip.observe import NO_OBSERVER, Observer
from fedmisp.gossip.replica import Replica
from fedmisp.node.config import CONFIG_FILE
from fedmisp.node.home import Node, init_home


def make_federation(tmp_path: Path, names: list[str], edges: list[tuple[str, str]],
                    settings: dict[tuple[str, str], dict] | None = None) -> dict[str, Node]:
    """Nodes named `names`, peered along undirected `edges`; `settings[(a, b)]` adds to a's [[peer]] b."""
    homes: dict[str, Path] = {}
    info: dict[str, tuple[str, str]] = {}
    for name in names:
        node, _ = init_home(tmp_path / name, f"Org {name}", "127.0.0.1:0")
        info[name] = (node.config.org_uuid, node.identity.public_key_text)
        homes[name] = node.config.home
        node.close()
    peers: dict[str, list[dict]] = {n: [] for n in names}
    for a, b in edges:
        for x, y in ((a, b), (b, a)):
            entry = {"name": y, "url": "http://127.0.0.1:1", "key": info[y][1], "org_uuid": info[y][0], "mode": "full"}
            entry.update((settings or {}).get((x, y), {}))
            peers[x].append(entry)
    for name in names:
        path = homes[name] / CONFIG_FILE
        path.write_text(path.read_text() + "\n" + tomli_w.dumps({"peer": peers[name]}))
    return {name: Node.open(homes[name]) for name in names}


def settle(nodes: dict[str, Node], rounds: int = 10, observers: dict[str, Observer] | None = None) -> None:
    """Every node pulls from every peer until nothing new arrives; `observers[name]` is told what
    that node decided (gossip/observe.py)."""
    replicas = {name: Replica(node, (observers or {}).get(name, NO_OBSERVER)) for name, node in nodes.items()}
    for _ in range(rounds):
        moved = 0
        for name, replica in replicas.items():
            for peer in nodes[name].config.peers:
                report = pull(replica, peer, InMemory(replicas[peer.name], name))
                moved += report.stored + report.stored_records
        if not moved:
            return
    raise AssertionError("replication did not settle")
