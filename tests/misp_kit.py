"""Real MISP 2.5 instances for the interoperability tests, from the kit in ../shared/misp (its README).

`start_kit` starts named instances in a RUN_DIR of their own, on free ports of 127.0.0.1 (so two
test sessions never collide), with their own MariaDB and Redis; `stop` stops them by the kit's pid
files. `MispInstance` is the admin's view of one instance: its REST API (as the site admin), its
console (`cake`), and the steps an admin takes to add an organisation and a sync server.

The kit is looked for in $MISP_KIT, else ../shared/misp beside the checkout, else /work/shared/misp.
`kit_unavailable`
says why it cannot run (kit missing; packages missing and no apt or not root), for a skip.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
def _kit() -> Path:
    """$MISP_KIT, else ../shared/misp beside the checkout, else the workplace's /work/shared/misp (a
    checkout elsewhere, as CI's clean one may be)."""
    if os.environ.get("MISP_KIT"):
        return Path(os.environ["MISP_KIT"])
    beside = ROOT.parent / "shared" / "misp"
    return beside if beside.is_dir() else Path("/work/shared/misp")


KIT = _kit()
_PACKAGES = ("/usr/bin/php", "/usr/sbin/mariadbd", "/usr/bin/redis-server")
START_TIMEOUT = 1800  # a first start installs Debian packages


def kit_unavailable() -> str | None:
    if not (KIT / "misp-src.tar.xz").is_file():
        return f"the MISP kit is not at {KIT} (set MISP_KIT to its folder)"
    if not all(os.path.exists(c) for c in _PACKAGES):
        if not shutil.which("apt-get"):
            return "the MISP kit needs Debian's apt-get to install php, mariadb and redis"
        if os.geteuid() != 0:
            return "the MISP kit's packages (php, mariadb, redis) are missing and this is not root"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MispError(Exception):
    pass


@dataclass
class MispInstance:
    name: str
    url: str
    key: str  # the site admin's API key
    org_uuid: str  # the host organisation
    org_name: str
    cake_path: str
    misp_uuid: str

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def call(self, method: str, path: str, body: Any = None, key: str | None = None,
             timeout: float = 300) -> Any:
        """One REST call as the site admin (or `key`); the JSON answer, or MispError with the body."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": key or self.key, "Accept": "application/json", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            raise MispError(f"{method} {path}: HTTP {e.code}: {e.read()[:2000]!r}") from None
        return json.loads(raw) if raw.strip() else None

    def cake(self, *args: str, timeout: float = 600) -> str:
        """MISP's console (`app/Console/cake ...`); its output, or MispError with it."""
        p = subprocess.run([self.cake_path, *args], capture_output=True, text=True, timeout=timeout)
        if p.returncode:
            raise MispError(f"cake {' '.join(args)}: exit {p.returncode}: {p.stdout[-3000:]}{p.stderr[-3000:]}")
        return p.stdout

    # -- what an admin does ------------------------------------------------------------------

    def add_org(self, name: str, uuid: str, local: bool = False) -> int:
        """The organisation's id here, adding it when it is not known yet."""
        for entry in self.call("GET", "/organisations/index/scope:all") or []:
            org = entry.get("Organisation", entry)
            if org.get("uuid") == uuid:
                return int(org["id"])
        answer = self.call("POST", "/admin/organisations/add",
                           {"Organisation": {"name": name, "uuid": uuid, "local": local}})
        return int(answer["Organisation"]["id"])

    def add_server(self, url: str, authkey: str, remote_org_id: int, name: str, push: bool = True,
                   pull: bool = True, internal: bool = False, **extra: Any) -> int:
        """A sync server (Sync Actions > Servers > New server); its id."""
        server = {"url": url, "name": name, "authkey": authkey, "remote_org_id": remote_org_id, "push": push,
                  "pull": pull, "skip_proxy": True, "internal": internal, "self_signed": False, **extra}
        answer = self.call("POST", "/servers/add", {"Server": server})
        return int(answer["Server"]["id"])

    def add_sync_user(self, org_id: int, email: str) -> str:
        """A user of `org_id` with MISP's Sync user role; its auth key (what a remote server is given)."""
        roles = self.call("GET", "/roles/index")
        sync_role = next(int(r["Role"]["id"]) for r in roles if r["Role"]["name"] == "Sync user")
        user = self.call("POST", "/admin/users/add", {"User": {"email": email, "org_id": org_id,
                                                                "role_id": sync_role, "change_pw": False}})
        user_id = user["User"]["id"]
        key = user["User"].get("authkey")
        if key and len(key) == 40:
            return key
        answer = self.call("POST", f"/auth_keys/add/{user_id}", {"AuthKey": {"comment": "sync"}})
        return answer["AuthKey"]["authkey_raw"]

    def pull(self, server_id: int, technique: str = "full") -> str:
        return self.cake("Server", "pull", "1", str(server_id), technique)

    def push(self, server_id: int, technique: str = "full") -> str:
        return self.cake("Server", "push", "1", str(server_id), technique)

    def event(self, uuid: str) -> dict[str, Any] | None:
        """The event as this instance holds it (its admin's view), or None."""
        try:
            answer = self.call("GET", f"/events/view/{uuid}")
        except MispError as e:
            if "HTTP 404" in str(e) or "HTTP 403" in str(e):
                return None
            raise
        return answer.get("Event") if isinstance(answer, dict) else None


@dataclass
class Kit:
    run_dir: Path
    instances: dict[str, MispInstance]
    output: str
    remove: bool = True  # the RUN_DIR was made for this kit: removed once it is stopped (~800 MB)

    def stop(self) -> None:
        subprocess.run([str(KIT / "stop.sh"), str(self.run_dir)], capture_output=True, timeout=300)
        if self.remove:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def __getitem__(self, name: str) -> MispInstance:
        return self.instances[name]


def start_kit(names: tuple[str, ...] = ("A", "B"), run_dir: Path | None = None) -> Kit:
    """Start the named instances (the kit's start.sh; minutes when it installs packages)."""
    run = run_dir or Path(tempfile.mkdtemp(prefix="fmk", dir="/tmp"))  # short: the MariaDB socket path
    env = dict(os.environ, DB_PORT=str(free_port()), REDIS_PORT=str(free_port()))
    specs = [f"{n}:{free_port()}" for n in names]
    p = subprocess.run([str(KIT / "start.sh"), str(run), *specs], env=env, capture_output=True, text=True,
                       timeout=START_TIMEOUT)
    kit = Kit(run, {}, p.stdout + p.stderr, remove=run_dir is None)
    if p.returncode:
        kit.stop()
        raise MispError("the MISP kit's start.sh failed:\n" + p.stdout[-3000:] + p.stderr[-3000:])
    for n in names:
        values = dict(line.split("=", 1) for line in (run / f"{n}.env").read_text().splitlines() if "=" in line)
        kit.instances[n] = MispInstance(n, values["MISP_URL"], values["MISP_KEY"], values["MISP_ORG_UUID"],
                                        values["MISP_ORG_NAME"], values["MISP_CAKE"], values["MISP_UUID"])
    return kit
