"""MISP instances as peers: `[[peer]]` tables with `kind = "misp"` in fedmisp.toml.

A MISP peer is a MISP server of a community this node takes part in, synchronised with MISP's own
server sync in both directions (docs/misp-sync.md, decision 0032):
- the MISP instance pulls from and pushes to this node with an API key of this node (role `sync`,
  bound to the peer by name: `fedmisp peer add --kind misp` prints it);
- this node pulls from and pushes to the MISP instance with `misp_key`, a sync user's key on the
  MISP side, when one is configured.

Its organisation (`org_uuid`) is the MISP instance's host organisation, the remote org MISP's admin
enters for this node: what this node sends it is what the outbound policy allows that organisation.
"""
from __future__ import annotations

import re
import uuid as _uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmisp.policy.config import parse_filter, parse_mode
from fedmisp.policy.model import PeerMode, PeerPolicy, SyncFilter

KIND_MISP = "misp"
KINDS = ("fedmisp", KIND_MISP)
MISP_FIELDS = ("name", "kind", "url", "misp_key", "org_uuid", "mode", "push", "pull", "interval_seconds",
               "tls_verify", "ca_file", "max_event_bytes", "timeout_seconds")
# MISP's own modes of a sync server: pull, push, both; a MISP community never sees correlation-only
# data, and `internal` is for this organisation's own other fedmisp node.
MISP_MODES = (PeerMode.FULL, PeerMode.PUSH_ONLY, PeerMode.PULL_ONLY)
# MISP's auth keys: 40 letters and digits (AuthKey::generateAuthKey).
MISP_KEY = re.compile(r"[A-Za-z0-9]{40}\Z")
DEFAULT_INTERVAL_SECONDS = 300
MIN_INTERVAL_SECONDS = 10
MAX_INTERVAL_SECONDS = 86400
DEFAULT_MAX_EVENT_BYTES = 256 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class MispPeer:
    name: str
    url: str  # the MISP instance's base URL, without a trailing slash
    org_uuid: str  # its host organisation ("" allowed with misp_key: pulling works, pushing needs it)
    mode: PeerMode = PeerMode.FULL
    push: SyncFilter = field(default_factory=SyncFilter.push_default)
    pull: SyncFilter = field(default_factory=SyncFilter)
    misp_key: str = field(default="", repr=False)  # a sync user's key on the MISP side; never logged
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    tls_verify: bool = True
    ca_file: Path | None = None
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS

    @property
    def policy(self) -> PeerPolicy:
        return PeerPolicy(self.name, self.org_uuid, self.mode, self.push, self.pull)

    @property
    def may_call(self) -> bool:
        """This node can call the MISP instance (pull from it, push to it)."""
        return bool(self.misp_key)


def peer_kind(table: Any) -> str:
    kind = table.get("kind", "fedmisp") if isinstance(table, dict) else "fedmisp"
    return kind if isinstance(kind, str) else repr(kind)


def parse_misp_peer(label: str, name: str, table: dict[str, Any], home: Path, problems: list[str]) -> MispPeer:
    url = table.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > 2048:
        problems.append(f"{label}.url: {url!r}; expected the MISP instance's http:// or https:// base URL")
        url = ""
    url = url.rstrip("/")
    key = table.get("misp_key", "")
    if not isinstance(key, str) or (key and not MISP_KEY.match(key)):
        problems.append(f"{label}.misp_key: not a MISP auth key; expected the 40 letters and digits of a sync "
                        "user's key on the MISP instance, or leave it out (the MISP instance then only "
                        "pulls from and pushes to this node)")
        key = ""
    org_uuid = table.get("org_uuid", "")
    if org_uuid:
        try:
            org_uuid = str(_uuid.UUID(str(org_uuid)))
        except ValueError:
            problems.append(f"{label}.org_uuid: {org_uuid!r} is not a UUID (the MISP instance's host organisation, "
                            "as its /servers/getVersion or Administration > Organisations shows)")
            org_uuid = ""
    elif not key:
        problems.append(f"{label}.org_uuid: missing; a MISP peer without misp_key needs the uuid of the MISP "
                        "instance's host organisation (its /servers/getVersion or Administration > Organisations)")
    mode = parse_mode(table.get("mode", "full"), label, problems)
    if mode not in MISP_MODES:
        problems.append(f"{label}.mode: {mode.value!r} is not for a MISP peer; accepted: "
                        + ", ".join(m.value for m in MISP_MODES))
        mode = PeerMode.FULL
    push = parse_filter(table.get("push"), f"{label}.push", problems, push=True)
    pull = parse_filter(table.get("pull"), f"{label}.pull", problems, push=False)
    interval = _number(table, label, "interval_seconds", DEFAULT_INTERVAL_SECONDS, MIN_INTERVAL_SECONDS,
                       MAX_INTERVAL_SECONDS, problems)
    timeout = _number(table, label, "timeout_seconds", DEFAULT_TIMEOUT_SECONDS, 1, 3600, problems)
    max_event = _number(table, label, "max_event_bytes", DEFAULT_MAX_EVENT_BYTES, 1024, 4 << 30, problems)
    verify = table.get("tls_verify", True)
    if not isinstance(verify, bool):
        problems.append(f"{label}.tls_verify: {verify!r}; expected true or false")
        verify = True
    ca_file = table.get("ca_file")
    ca_path = None
    if ca_file is not None:
        if not isinstance(ca_file, str) or not ca_file:
            problems.append(f"{label}.ca_file: {ca_file!r}; expected the path of a PEM file of CA certificates")
        else:
            ca_path = Path(ca_file) if Path(ca_file).is_absolute() else home / ca_file
            if not ca_path.is_file():
                problems.append(f"{label}.ca_file: {ca_path} is not a file")
    return MispPeer(name=name, url=url, org_uuid=org_uuid, mode=mode, push=push, pull=pull, misp_key=key,
                    interval_seconds=float(interval), tls_verify=verify, ca_file=ca_path,
                    max_event_bytes=int(max_event), timeout_seconds=float(timeout))


def _number(table: dict[str, Any], label: str, key: str, default: float, low: float, high: float,
            problems: list[str]) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        problems.append(f"{label}.{key}: {value!r}; expected a number from {low:g} to {high:g}")
        return default
    return value
