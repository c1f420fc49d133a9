"""`fedmisp demo`: a small federation on 127.0.0.1 that shows the point in a minute.

Reads configs/demo/federation.toml, creates one node home per organisation under DIR, peers them,
creates the sharing group, imports each node's events, starts every node (`fedmisp run`), waits
until replication settles, and prints what each node holds, what it was not sent and why (the
policy's reason codes), and the correlations found across organisations. Runs until Ctrl-C
(`--once`: print and stop).
"""
from __future__ import annotations

import copy
import json
import random
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from rich.console import Console
from rich.table import Table

from fedmisp.correlate.engine import Correlator
from fedmisp.gossip.replica import Replica
from fedmisp.node.config import CONFIG_FILE
from fedmisp.node.home import Node, init_home
from fedmisp.node.importer import import_paths
from fedmisp.gossip.sharing_groups import create as create_group
from fedmisp.policy.holding import unpack_holding
from fedmisp.policy.outbound import outbound_many
from fedmisp.policy.reasons import Reason
from fedmisp.store.store import Store

SETTLE_QUIET_SECONDS = 3.0  # nothing new for this long: replication has settled
SETTLE_TIMEOUT = 90.0


@dataclass
class DemoNode:
    name: str
    org: str
    home: Path
    port: int
    events: list[Path]
    process: subprocess.Popen[bytes] | None = None


_HANDED_OUT: set[int] = set()  # ports this process gave out: never twice (their nodes may not be bound yet)


def free_port() -> int:
    """A free port below the kernel's ephemeral range, so that no outgoing connection of another
    node can take it as its source port between this check and the node's own bind, and not one
    this process gave out before: nothing holds a port between this check and the bind, so a
    second call could otherwise return it again (two nodes of one federation on one port)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, low) if low > 20000 else rng.randrange(1024, 65536)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port found on 127.0.0.1")


def setup(spec_path: Path, root: Path) -> dict[str, DemoNode]:
    spec = tomllib.loads(spec_path.read_text("utf-8"))
    base = spec_path.parent
    nodes: dict[str, DemoNode] = {}
    keys: dict[str, tuple[str, str]] = {}
    for entry in spec["node"]:
        port = free_port()
        node, _ = init_home(root / entry["name"], entry["org"], f"127.0.0.1:{port}")
        keys[entry["name"]] = (node.config.org_uuid, node.identity.public_key_text)
        nodes[entry["name"]] = DemoNode(entry["name"], entry["org"], node.config.home, port,
                                        [base / e for e in entry.get("events", [])])
        node.close()
    peers: dict[str, list[dict[str, Any]]] = {name: [] for name in nodes}
    for link in spec.get("link", []):
        for me, other, push in ((link["a"], link["b"], link.get("a_push")), (link["b"], link["a"], link.get("b_push"))):
            entry: dict[str, Any] = {"name": other, "url": f"http://127.0.0.1:{nodes[other].port}",
                                     "key": keys[other][1], "org_uuid": keys[other][0], "mode": "full"}
            if push:
                entry["push"] = push
            peers[me].append(entry)
    for name, node in nodes.items():
        path = node.home / CONFIG_FILE
        extra = {"gossip": {"anti_entropy_seconds": 5}, "peer": peers[name]}
        path.write_text(path.read_text("utf-8") + "\n" + tomli_w.dumps(extra), "utf-8")
    # sharing groups, then each node's events (those bound to a group get its uuid)
    bound: dict[Path, str] = {}
    for group in spec.get("sharing_group", []):
        owner = nodes[group["owner"]]
        with Node.open(owner.home) as node:
            created = create_group(node.store, node.identity, node.config.org_uuid, group["name"],
                                   {keys[m][0]: False for m in group.get("members", [])})
        for event in group.get("events", []):
            bound[(base / event).resolve()] = created.uuid
    for node_spec in nodes.values():
        files = []
        for path in node_spec.events:
            if path.resolve() in bound:
                document = copy.deepcopy(json.loads(path.read_text("utf-8")))
                document["Event"]["sharing_group_uuid"] = bound[path.resolve()]
                path = node_spec.home / path.name
                path.write_text(json.dumps(document), "utf-8")
            files.append(path)
        if files:
            with Node.open(node_spec.home) as node:
                report = import_paths(node, files, workers=0)
                if report.refused:
                    raise RuntimeError("demo events refused: " + "; ".join(report.refused))
    return nodes


def start(nodes: dict[str, DemoNode]) -> None:
    for node in nodes.values():
        log = open(node.home / "node.log", "ab")
        node.process = subprocess.Popen([sys.executable, "-m", "fedmisp", "run", "--home", str(node.home)],
                                        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    for node in nodes.values():
        while b"serving" not in (node.home / "node.log").read_bytes():
            if node.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node {node.name} did not start: see {node.home / 'node.log'}")
            time.sleep(0.1)


def stop(nodes: dict[str, DemoNode]) -> None:
    for node in nodes.values():
        if node.process is not None and node.process.poll() is None:
            node.process.send_signal(signal.SIGTERM)
    for node in nodes.values():
        if node.process is not None:
            try:
                node.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.process.kill()


def _holdings(nodes: dict[str, DemoNode]) -> dict[str, set[str]]:
    out = {}
    for name, node in nodes.items():
        with Store(node.home / "store", readonly=True) as store:
            out[name] = set(store.event_uuids())
    return out


def settle(nodes: dict[str, DemoNode]) -> dict[str, set[str]]:
    last, quiet_since = _holdings(nodes), time.monotonic()
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _holdings(nodes)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= SETTLE_QUIET_SECONDS:
            return now
    return last


def report(nodes: dict[str, DemoNode], console: Console) -> dict[str, Any]:
    """Print the three tables; return what they show (for tests)."""
    result: dict[str, Any] = {"held": {}, "refused": {}, "correlations": []}
    opened = {name: Node.open(n.home, readonly=True) for name, n in nodes.items()}
    try:
        infos: dict[str, tuple[str, str]] = {}
        for name, node in opened.items():
            for uuid in node.store.event_uuids():
                record, _ = node.store.revision(uuid)
                infos[uuid] = (record.body["event"]["info"], record.body["event"]["Orgc"]["name"])
        held = Table(title="What each node holds", title_justify="left")
        for column in ("node", "event", "creator", "level held", "attributes"):
            held.add_column(column, overflow="fold")
        for name, node in opened.items():
            result["held"][name] = {}
            for uuid in sorted(node.store.event_uuids(), key=lambda u: infos[u][0]):
                record, elements = node.store.revision(uuid)
                holding = node.store.holding(uuid)
                if holding:
                    kept = unpack_holding(holding)
                    level = kept.levels.get(uuid, kept.correlation_levels.get(uuid))
                else:
                    level = record.body["event"]["distribution"]
                result["held"][name][uuid] = level
                attributes = sum(1 for e in elements if "type" in e and "value" in e)
                held.add_row(name, infos[uuid][0][:60], infos[uuid][1], str(level), str(attributes))
        console.print(held)

        refused = Table(title="What each node was not sent, and why (policy reason codes)", title_justify="left")
        for column in ("from", "to", "event", "reason"):
            refused.add_column(column, overflow="fold")
        for name, node in opened.items():
            replica = Replica(node)
            state = replica.node_state()
            policies = [replica.peer(peer.name).policy for peer in node.config.peers]
            decided = {}  # event uuid -> peer name -> outcome: every peer decided at once per event
            for uuid in node.store.event_uuids():
                held_event = replica.held_event(uuid)
                if held_event is not None:
                    decided[uuid] = outbound_many(held_event.view, held_event.holding, policies, state)
            for peer in node.config.peers:
                for uuid in node.store.event_uuids():
                    if uuid not in decided:
                        continue
                    outcome = decided[uuid][peer.name]
                    if outcome.reason is Reason.FROM_PEER:
                        continue  # it came from there: not a refusal
                    reasons = [outcome.reason.value] if not outcome.allowed else sorted(
                        {f"{r.value} ({n})" for r, n in _count(outcome.withheld).items()})
                    for reason in reasons:
                        if reason != Reason.ALLOWED:
                            refused.add_row(name, peer.name, infos[uuid][0][:60], reason)
                            result["refused"].setdefault((name, peer.name), []).append((uuid, reason))
        console.print(refused)

        related = Table(title="Correlations across organisations", title_justify="left")
        for column in ("node", "value", "in event", "also in", "of"):
            related.add_column(column, overflow="fold")
        for name, node in opened.items():
            correlator = Correlator(node.store, node.config.correlation)
            for uuid in node.store.event_uuids():
                record, elements = node.store.revision(uuid)
                creator = record.body["event"]["Orgc"]["name"]
                for element in elements:
                    if "type" not in element or "value" not in element:
                        continue
                    for match in correlator.attribute(uuid, element).matches:
                        if match.org != creator:
                            # the matched attribute's type and value tell two matches in one event apart
                            related.add_row(name, f'{element["value"]} ({element["type"]})', infos[uuid][0][:40],
                                            match.event_info[:40], f"{match.org} ({match.kind}: {match.type} {match.value})")
                            result["correlations"].append((name, element["value"], match.event_uuid, match.kind))
        console.print(related)
    finally:
        for node in opened.values():
            node.close()
    return result


def _count(withheld: Any) -> dict[Reason, int]:
    counts: dict[Reason, int] = {}
    for reason in withheld.values():
        counts[reason] = counts.get(reason, 0) + 1
    return counts


def run_demo(spec: Path, root: Path, once: bool, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(width=max(Console().width, 120))
    if root.exists() and any(root.iterdir()):
        import shutil
        shutil.rmtree(root)
    console.print(f"[bold]fedmisp demo[/bold]: three organisations, three nodes on 127.0.0.1 ({spec})")
    nodes = setup(spec, root)
    for node in nodes.values():
        console.print(f"  {node.name:7} {node.org:24} http://127.0.0.1:{node.port}  home {node.home}")
    start(nodes)
    try:
        console.print("replicating ...")
        settle(nodes)
        result = report(nodes, console)
        if not once:
            console.print("the nodes keep running; [bold]Ctrl-C[/bold] stops them "
                          f"(try: fedmisp status --home {root / 'csirt'})")
            try:
                while all(n.process is not None and n.process.poll() is None for n in nodes.values()):
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
    finally:
        stop(nodes)
    return result
