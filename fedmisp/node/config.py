"""The node's TOML configuration (``fedmisp.toml`` in the node's home).

Validation reports every problem at once, each naming the file, the field and what would be
accepted, so an operator fixes a config in one pass.
"""
from __future__ import annotations

import ipaddress
import tomllib
import uuid as _uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

CONFIG_FILE = "fedmisp.toml"
KEY_FILE = "identity.key"
STORE_DIR = "store"
DEFAULT_LISTEN = "127.0.0.1:8480"
# An import file is parsed whole; beyond this it should be split (or fed as a feed folder).
DEFAULT_MAX_IMPORT_FILE_BYTES = 256 * 1024 * 1024


class ConfigError(ValueError):
    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


@dataclass(frozen=True)
class NodeConfig:
    home: Path
    org_name: str
    org_uuid: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 8480
    default_distribution: int = 1  # MISP's shipped default_event_distribution
    max_import_file_bytes: int = DEFAULT_MAX_IMPORT_FILE_BYTES
    map_size: int = 1 << 40
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def listen(self) -> str:
        return f"{self.listen_host}:{self.listen_port}"

    @property
    def store_path(self) -> Path:
        return self.home / STORE_DIR

    @property
    def key_path(self) -> Path:
        return self.home / KEY_FILE


def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT' or '[v6]:PORT' -> (host, port); ValueError says what is accepted."""
    accepted = "expected HOST:PORT such as 127.0.0.1:8480 or [::1]:8480"
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(accepted)
    host, _, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(accepted)
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not all(part.isalnum() or "-" in part for part in host.split(".")):
                raise ValueError(accepted) from None
    return host, int(port_text)


def write_config(home: Path, org_name: str, org_uuid: str, listen: str) -> Path:
    path = home / CONFIG_FILE
    document = {
        "node": {"org_name": org_name, "org_uuid": org_uuid, "listen": listen},
        "sharing": {"default_distribution": 1},
        "limits": {"max_import_file_bytes": DEFAULT_MAX_IMPORT_FILE_BYTES},
    }
    header = (
        "# fedmisp node configuration. Reference: docs/configuration.md\n"
        "# [node]     who this node is and where its API listens\n"
        "# [sharing]  defaults for events that do not say (distribution 0-4, MISP's levels)\n"
        "# [limits]   sizes this node accepts\n\n"
    )
    path.write_text(header + tomli_w.dumps(document), "utf-8")
    return path


def load_config(home: Path) -> NodeConfig:
    path = home / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(path, [f"not found; create a node with: fedmisp init --home {home} --org NAME"])
    try:
        raw = tomllib.loads(path.read_text("utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, [f"not valid TOML: {e}"]) from None
    problems: list[str] = []
    known_sections = {"node", "sharing", "limits", "peer"}
    for section in raw:
        if section not in known_sections:
            problems.append(f"[{section}]: unknown section; accepted: {', '.join(sorted(known_sections))}")
    node = raw.get("node", {})
    if not isinstance(node, dict):
        problems.append("[node]: expected a table")
        node = {}
    org_name = node.get("org_name")
    if not isinstance(org_name, str) or not org_name.strip():
        problems.append("node.org_name: missing; expected the organisation's name")
        org_name = ""
    org_uuid = node.get("org_uuid")
    try:
        org_uuid = str(_uuid.UUID(str(org_uuid)))
    except ValueError:
        problems.append(f"node.org_uuid: {org_uuid!r} is not a UUID")
        org_uuid = ""
    host, port = "127.0.0.1", 8480
    try:
        host, port = parse_listen(node.get("listen", DEFAULT_LISTEN))
    except ValueError as e:
        problems.append(f"node.listen: {node.get('listen')!r}: {e}")
    sharing = raw.get("sharing", {})
    distribution = sharing.get("default_distribution", 1) if isinstance(sharing, dict) else 1
    if not isinstance(distribution, int) or isinstance(distribution, bool) or not 0 <= distribution <= 3:
        problems.append(f"sharing.default_distribution: {distribution!r}; expected 0, 1, 2 or 3 "
                        "(4 needs a sharing group per event)")
        distribution = 1
    limits = raw.get("limits", {})
    max_file = limits.get("max_import_file_bytes", DEFAULT_MAX_IMPORT_FILE_BYTES) if isinstance(limits, dict) else 0
    if not isinstance(max_file, int) or isinstance(max_file, bool) or max_file <= 0:
        problems.append(f"limits.max_import_file_bytes: {max_file!r}; expected a positive integer")
        max_file = DEFAULT_MAX_IMPORT_FILE_BYTES
    if problems:
        raise ConfigError(path, problems)
    return NodeConfig(home=home, org_name=org_name, org_uuid=org_uuid, listen_host=host, listen_port=port,
                      default_distribution=distribution, max_import_file_bytes=max_file, raw=raw)
