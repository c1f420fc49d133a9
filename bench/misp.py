"""MISP sync benchmark: a node beside MISP itself, same run, same data, real MISP 2.5 instances.

Run (from the repository root; needs the MISP kit, tests/misp_kit.py, about 5-10 minutes):

    .venv/bin/python bench/misp.py                    # 200 events of 50-500 attributes
    .venv/bin/python bench/misp.py --events 40        # a quick run
    .venv/bin/python bench/misp.py --json             # machine-readable

Three MISP instances (A, B, C) and one node. MISP A is given the events (distribution 3, published,
`--events` of 50-500 attributes each, seeded). Then:

1. MISP B pulls everything from MISP A (`cake Server pull ... full`): the baseline, MISP serving MISP.
2. The node pulls everything from MISP A (`fedmisp misp pull`). Ratio: 1's time / 2's time
   (target >= 3: the node takes what MISP serves at least 3x faster than a MISP does).
3. MISP C, fresh and configured like B, pulls the same events from the node (`fedmisp run`).
   Ratio: 1's time / 3's time (target >= 2: the node serves at least 2x faster than MISP serves).

Each step's wall time and CPU seconds are printed: CPU of the processes doing the work (the cake
process or `fedmisp misp pull`, the serving php -S workers or `fedmisp run`, and MariaDB, which every
MISP step uses), so a figure that looks fast only because it ran in parallel shows; and the CPU of
the side pulled from alone (php -S of MISP A, or `fedmisp run`): what serving cost, apart from what
the pulling MISP spends saving. The load average
is printed at the start and end. No figure is asserted; the exit status says whether it ran.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from misp_kit import Kit, MispInstance, free_port, kit_unavailable, start_kit  # noqa: E402

FEDMISP = [sys.executable, "-m", "fedmisp"]
CLK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- CPU seconds of process trees ---------------------------------------------------------------

def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), sum(int(v) for v in fields[11:15]) / CLK


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds used so far by `roots` and every live descendant (php -S forks its workers)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                table[int(entry)] = found
    wanted, total = set(roots), 0.0
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _cpu) in table.items():
            if ppid in wanted and pid not in wanted:
                wanted.add(pid)
                changed = True
    for pid in wanted:
        if pid in table:
            total += table[pid][1]
    return total


def kit_pids(kit: Kit, names: tuple[str, ...], mariadb: bool = True) -> list[int]:
    """The php -S servers of `names` and (`mariadb`) the MariaDB every instance of the kit's RUN_DIR
    shares (their pid files)."""
    files = [kit.run_dir / "run" / f"php-{n}.pid" for n in names]
    if mariadb:
        files += sorted((kit.run_dir / "run").glob("mariadb*.pid"))
    pids = set()
    for path in files:
        try:
            pids.add(int(path.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    return sorted(pids)


class Step:
    """Wall time and CPU seconds of one step: a child process (its CPU counted when it is reaped)
    while the trees of `serving` (the server answering it: php -S or `fedmisp run`) and `shared`
    (MariaDB, which both MISP sides use) are measured before and after. `served_cpu` is the server's
    alone: what the side being pulled from spent."""

    def __init__(self, name: str):
        self.name = name
        self.seconds = 0.0
        self.cpu = 0.0
        self.served_cpu = 0.0

    def run(self, command: list[str], serving: list[int], shared: list[int] = (),  # type: ignore[assignment]
            env: dict[str, str] | None = None) -> str:
        before_children = os.times()
        before, before_shared = tree_cpu(serving), tree_cpu(list(shared))
        t0 = time.perf_counter()
        p = subprocess.run(command, capture_output=True, text=True, env=env, timeout=7200)
        self.seconds = time.perf_counter() - t0
        after_children = os.times()
        self.served_cpu = tree_cpu(serving) - before
        self.cpu = self.served_cpu + (tree_cpu(list(shared)) - before_shared) \
            + (after_children.children_user - before_children.children_user) \
            + (after_children.children_system - before_children.children_system)
        if p.returncode:
            raise SystemExit(f"{self.name}: {' '.join(command[:4])} ... exit {p.returncode}:\n{p.stdout[-2000:]}"
                             f"{p.stderr[-2000:]}")
        return p.stdout


# -- data --------------------------------------------------------------------------------------

def seed_events(misp: MispInstance, events: int, seed: int) -> int:
    """`events` published events of 50-500 attributes (distribution 3, inheriting); attributes made."""
    rng = random.Random(seed)
    made = 0
    for n in range(events):
        count = rng.randint(50, 500)
        attributes = []
        for i in range(count):
            kind = rng.random()
            if kind < 0.5:
                attributes.append({"type": "ip-dst", "category": "Network activity", "to_ids": True,
                                   "value": f"10.{n % 250}.{i // 250}.{i % 250}"})
            elif kind < 0.8:
                attributes.append({"type": "domain", "category": "Network activity", "to_ids": True,
                                   "value": f"host{i}.event{n}.example.com"})
            else:
                attributes.append({"type": "sha256", "category": "Payload delivery", "to_ids": True,
                                   "value": f"{rng.getrandbits(256):064x}"})
        misp.call("POST", "/events/add", {"Event": {"info": f"bench event {n}", "distribution": 3, "analysis": 2,
                                                    "threat_level_id": 2, "published": True,
                                                    "Attribute": attributes}})
        made += count
    return made


def misp_pulls(puller: MispInstance, server_url: str, server_key: str, remote_org: tuple[str, str],
               name: str) -> int:
    """`puller`'s admin adds a sync server (its remote org added first); its server id."""
    org_id = puller.add_org(remote_org[1], remote_org[0])
    return puller.add_server(server_url, server_key, org_id, name, push=False, pull=True)


def event_count(misp: MispInstance) -> int:
    return len(misp.call("POST", "/events/index", {"minimal": 1}) or [])


# -- the node ------------------------------------------------------------------------------------

def node_home(work: Path, name: str) -> Path:
    home = work / name
    port = free_port()
    subprocess.run([*FEDMISP, "init", "--home", str(home), "--org", f"Bench {name}", "--listen", f"127.0.0.1:{port}"],
                   check=True, capture_output=True, text=True)
    return home


def add_misp_peer(home: Path, name: str, misp: MispInstance, misp_key: str = "") -> str:
    """`fedmisp peer add --kind misp`; the sync key it prints for the MISP side."""
    command = [*FEDMISP, "peer", "add", "--home", str(home), "--name", name, "--kind", "misp", "--url", misp.url,
               "--org-uuid", misp.org_uuid]
    if misp_key:
        command += ["--misp-key", misp_key]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    found = re.findall(r"\b[A-Za-z0-9_-]{32,}\b", out)
    return found[-1] if found else ""


def node_info(home: Path) -> tuple[str, str, str]:
    """(org uuid, org name, listen URL) from the node's fedmisp.toml."""
    import tomllib
    config = tomllib.loads((home / "fedmisp.toml").read_text())["node"]
    return config["org_uuid"], config["org_name"], f"http://{config['listen']}"


def start_node(home: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([*FEDMISP, "run", "--home", str(home)], stdout=subprocess.DEVNULL,
                               stderr=open(home / "node.log", "wb"), start_new_session=True)
    url = node_info(home)[2]
    import urllib.request
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/node/v1/health", timeout=1).read()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the node at {url} did not start; see {home / 'node.log'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = kit_unavailable()
    if reason:
        raise SystemExit(f"bench/misp.py needs the MISP kit: {reason}")
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="fmbench"))
    log("starting MISP A, B and C (the kit)")
    kit = start_kit(("A", "B", "C"))
    node = None
    try:
        a, b, c = kit["A"], kit["B"], kit["C"]
        log(f"seeding MISP A with {args.events} events")
        attributes = seed_events(a, args.events, args.seed)
        log(f"{attributes} attributes on MISP A")

        # 1. MISP B pulls from MISP A
        b_on_a = a.add_sync_user(a.add_org(b.org_name, b.org_uuid), "sync-b@bench.test")
        server = misp_pulls(b, a.url, b_on_a, (a.org_uuid, a.org_name), "misp-a")
        misp_misp = Step("MISP B pulls from MISP A")
        misp_misp.run([b.cake_path, "Server", "pull", "1", str(server), "full"], kit_pids(kit, ("A",), False),
                      kit_pids(kit, ()))
        assert event_count(b) >= args.events, "MISP B did not get every event"

        # 2. the node pulls from MISP A
        home = node_home(work, "node")
        org_uuid, org_name, node_url = node_info(home)
        node_on_a = a.add_sync_user(a.add_org(org_name, org_uuid), "sync-node@bench.test")
        add_misp_peer(home, "misp-a", a, node_on_a)
        node_misp = Step("the node pulls from MISP A")
        out = node_misp.run([*FEDMISP, "misp", "pull", "--home", str(home), "--name", "misp-a"],
                            kit_pids(kit, ("A",), False), kit_pids(kit, ()))
        log(out.strip().splitlines()[-1] if out.strip() else "(no summary)")

        # 3. MISP C pulls from the node
        key = add_misp_peer(home, "misp-c", c)
        node = start_node(home)
        server = misp_pulls(c, node_url, key, (org_uuid, org_name), "node")
        misp_node = Step("MISP C pulls from the node")
        misp_node.run([c.cake_path, "Server", "pull", "1", str(server), "full"], [node.pid], kit_pids(kit, ()))
        held_c = event_count(c)
        load_end = os.getloadavg()
        figures = {
            "events": args.events, "attributes": attributes, "load_start": load_start, "load_end": load_end,
            "steps": {s.name: {"seconds": round(s.seconds, 2), "cpu_seconds": round(s.cpu, 2),
                               "served_cpu_seconds": round(s.served_cpu, 2)} for s in (misp_misp, node_misp, misp_node)},
            "node_serving_cpu_vs_misp_serving_cpu": round(misp_misp.served_cpu / max(misp_node.served_cpu, 1e-9), 2),
            "node_pull_vs_misp_pull": round(misp_misp.seconds / node_misp.seconds, 2),
            "node_pull_vs_misp_pull_cpu": round(misp_misp.cpu / max(node_misp.cpu, 1e-9), 2),
            "node_serves_vs_misp_serves": round(misp_misp.seconds / misp_node.seconds, 2),
            "node_serves_vs_misp_serves_cpu": round(misp_misp.cpu / max(misp_node.cpu, 1e-9), 2),
            "misp_c_holds": held_c,
        }
        if args.json:
            print(json.dumps(figures, indent=1))
        else:
            print(f"{args.events} events, {attributes} attributes; load {load_start[0]:.2f} -> {load_end[0]:.2f}")
            for s in (misp_misp, node_misp, misp_node):
                print(f"  {s.name:32} {s.seconds:8.2f} s wall {s.cpu:8.2f} s CPU "
                      f"(of which the side pulled from {s.served_cpu:.2f} s)")
            print(f"  node pulls MISP A vs MISP B pulls MISP A: {figures['node_pull_vs_misp_pull']}x faster "
                  f"(CPU {figures['node_pull_vs_misp_pull_cpu']}x; target >= 3)")
            print(f"  MISP pulls the node vs MISP pulls MISP A: {figures['node_serves_vs_misp_serves']}x faster "
                  f"(CPU {figures['node_serves_vs_misp_serves_cpu']}x; target >= 2)")
            print(f"  serving alone, CPU of the side pulled from: the node {figures['node_serving_cpu_vs_misp_serving_cpu']}x "
                  "cheaper than MISP A (MariaDB, shared by both MISP sides, left out)")
            print(f"  MISP C holds {held_c} of {args.events} events")
        return 0
    finally:
        if node is not None:
            node.terminate()
            node.wait(30)
        kit.stop()


if __name__ == "__main__":
    sys.exit(main())
