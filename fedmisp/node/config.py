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
from typing import Any, Callable

import tomli_w

from fedmisp.model.identity import decode_key
from fedmisp.policy.config import parse_filter, parse_mode
from fedmisp.correlate.engine import CorrelationConfig
from fedmisp.gossip.peers import PeerConfig
from fedmisp.policy.model import PeerMode, PeerPolicy
from fedmisp.node.feed_config import FeedSource, ServedFeed, named_tables, parse_feeds, parse_served_feeds
from fedmisp.node.misp_config import KIND_MISP, KINDS, MISP_FIELDS, MispPeer, parse_misp_peer, peer_kind

CONFIG_FILE = "fedmisp.toml"
KEY_FILE = "identity.key"
STORE_DIR = "store"
DEFAULT_LISTEN = "127.0.0.1:8480"
# An import file is parsed whole; beyond this it should be split (or fed as a feed folder).
DEFAULT_MAX_IMPORT_FILE_BYTES = 256 * 1024 * 1024


_PEER_FIELDS = ("name", "kind", "url", "key", "org_uuid", "mode", "push", "pull", "strip_sighting_org")


def _parse_bool(raw: Any, where: str, default: bool, problems: list[str]) -> bool:
    if raw is None:
        return default
    if not isinstance(raw, bool):
        problems.append(f"{where}: {raw!r}; expected true or false")
        return default
    return raw


def _parse_peers(raw: Any, home: Path, problems: list[str],
                 strip_sighting_org: bool = False) -> tuple[tuple[PeerConfig, ...], tuple[MispPeer, ...]]:
    """The [[peer]] tables: fedmisp nodes, and MISP instances (`kind = "misp"`, node/misp_config.py);
    one name space for both."""
    peers = []
    misp_peers = []
    for label, name, table in named_tables(raw, "peer", tuple(dict.fromkeys(_PEER_FIELDS + MISP_FIELDS)), problems):
        kind = peer_kind(table)
        if kind == KIND_MISP:
            for key in table:
                if key not in MISP_FIELDS and key in _PEER_FIELDS:  # (unknown to both: reported above)
                    problems.append(f"{label}.{key}: not a setting of a MISP peer; accepted: {', '.join(MISP_FIELDS)}")
            misp_peers.append(parse_misp_peer(label, name, table, home, problems))
            continue
        if kind not in KINDS:
            problems.append(f"{label}.kind: {kind!r}; accepted: {', '.join(KINDS)}")
            continue
        for key in table:
            if key not in _PEER_FIELDS and key in MISP_FIELDS:
                problems.append(f"{label}.{key}: not a setting of a fedmisp peer; accepted: {', '.join(_PEER_FIELDS)}")
        url = table.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            problems.append(f"{label}.url: {url!r}; expected http://HOST:PORT or https://HOST:PORT")
            url = ""
        key = b""
        try:
            key = decode_key(table.get("key", "") if isinstance(table.get("key"), str) else "")
        except ValueError as e:
            problems.append(f"{label}.key: {e} (the peer's `fedmisp info` shows it)")
        org_uuid = table.get("org_uuid")
        if org_uuid is None:
            org_uuid = ""  # learned from the peer's org record on first contact
        else:
            try:
                org_uuid = str(_uuid.UUID(str(org_uuid)))
            except ValueError:
                problems.append(f"{label}.org_uuid: {org_uuid!r} is not a UUID (the peer's `fedmisp info` shows it)")
                org_uuid = ""
        mode = parse_mode(table.get("mode", "full"), label, problems)
        push = parse_filter(table.get("push"), f"{label}.push", problems, push=True)
        pull = parse_filter(table.get("pull"), f"{label}.pull", problems, push=False)
        strip = _parse_bool(table.get("strip_sighting_org"), f"{label}.strip_sighting_org", strip_sighting_org,
                            problems)
        peers.append(PeerConfig(PeerPolicy(name, org_uuid, mode, push, pull), url, key, strip))
    return tuple(peers), tuple(misp_peers)


def _parse_list(raw: Any, where: str, problems: list[str], what: str, parse: Callable[[Any], Any]) -> frozenset[Any]:
    """A list setting whose every item `parse` reads (ValueError: the item is named as not `what`)."""
    if raw is None:
        return frozenset()
    if not isinstance(raw, list):
        problems.append(f"{where}: expected a list of {what}s")
        return frozenset()
    out = set()
    for i, value in enumerate(raw):
        try:
            out.add(parse(value))
        except ValueError as e:
            problems.append(f"{where}[{i}]: {value!r} is not a {what}" + (f": {e}" if str(e) else ""))
    return frozenset(out)


def _parse_uuid_list(raw: Any, where: str, problems: list[str]) -> frozenset[str]:
    def parse(value: Any) -> str:
        try:
            return str(_uuid.UUID(str(value)))
        except ValueError:
            raise ValueError() from None
    return _parse_list(raw, where, problems, "UUID", parse)


def _parse_key_list(raw: Any, where: str, problems: list[str]) -> frozenset[bytes]:
    return _parse_list(raw, where, problems, "public key",
                       lambda value: decode_key(value if isinstance(value, str) else ""))


def _parse_correlation(raw: Any, problems: list[str]) -> CorrelationConfig:
    default = CorrelationConfig()
    if raw is None:
        return default
    if not isinstance(raw, dict):
        problems.append("[correlation]: expected a table")
        return default
    known = ("ssdeep_threshold", "max_matches", "exclusions")
    for key in raw:
        if key not in known:
            problems.append(f"correlation.{key}: unknown setting; accepted: {', '.join(known)}")
    threshold = raw.get("ssdeep_threshold", default.ssdeep_threshold)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= 100:
        problems.append(f"correlation.ssdeep_threshold: {threshold!r}; expected 1 to 100 (MISP's default is 40)")
        threshold = default.ssdeep_threshold
    cap = raw.get("max_matches", default.max_matches)
    if isinstance(cap, bool) or not isinstance(cap, int) or not 1 <= cap <= 1_000_000:
        problems.append(f"correlation.max_matches: {cap!r}; expected 1 to 1000000")
        cap = default.max_matches
    exclusions = raw.get("exclusions", [])
    if not isinstance(exclusions, list) or not all(isinstance(x, str) and x.strip() for x in exclusions) \
            or len(exclusions) > 10_000:
        problems.append("correlation.exclusions: expected a list of values (at most 10000), '%' as wildcard")
        exclusions = []
    return CorrelationConfig(ssdeep_threshold=threshold, max_matches=cap, exclusions=tuple(exclusions))


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LOG_BYTES = 10 * 1024 * 1024
DEFAULT_AUDIT_FILE = "audit.log"
# The audit log has a line per record and peer: about 250 bytes, so 50 MiB is ~200k decisions per file.
DEFAULT_AUDIT_BYTES = 50 * 1024 * 1024
MAX_LOG_BYTES = 1 << 40
MAX_LOG_BACKUPS = 1000


@dataclass(frozen=True)
class LogConfig:
    """[log]: the node's own log (`fedmisp run`); `file` empty means standard error."""
    format: str = "text"
    level: str = "info"
    file: str = ""
    max_bytes: int = DEFAULT_LOG_BYTES
    backups: int = 5


@dataclass(frozen=True)
class AuditConfig:
    """[audit]: one JSON line per record sent to, withheld from, stored from or refused from a peer."""
    enabled: bool = True
    file: str = DEFAULT_AUDIT_FILE
    max_bytes: int = DEFAULT_AUDIT_BYTES
    backups: int = 10


@dataclass(frozen=True)
class MetricsConfig:
    """[metrics]: GET /node/v1/metrics (Prometheus text format)."""
    require_api_key: bool = True


def _choice(table: dict[str, Any], section: str, key: str, default: str, accepted: tuple[str, ...],
            problems: list[str]) -> str:
    value = table.get(key, default)
    if value not in accepted:
        problems.append(f"{section}.{key}: {value!r}; accepted: {', '.join(repr(a) for a in accepted)}")
        return default
    return str(value)


def _integer(table: dict[str, Any], section: str, key: str, default: int, low: int, high: int,
             problems: list[str]) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        problems.append(f"{section}.{key}: {value!r}; expected an integer from {low} to {high}")
        return default
    return value


def _flag(table: dict[str, Any], section: str, key: str, default: bool, problems: list[str]) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        problems.append(f"{section}.{key}: {value!r}; expected true or false")
        return default
    return value


def _file(table: dict[str, Any], section: str, default: str, problems: list[str]) -> str:
    value = table.get("file", default)
    if not isinstance(value, str) or "\0" in value:
        problems.append(f"{section}.file: {value!r}; expected a path (relative to the node's home, or absolute)")
        return default
    return value


def _section(raw: Any, section: str, known: tuple[str, ...], problems: list[str]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"[{section}]: expected a table")
        return {}
    for key in raw:
        if key not in known:
            problems.append(f"{section}.{key}: unknown setting; accepted: {', '.join(known)}")
    return raw


def _parse_observability(raw: dict[str, Any], problems: list[str]) -> tuple[LogConfig, AuditConfig, MetricsConfig]:
    t = _section(raw.get("log"), "log", ("format", "level", "file", "max_bytes", "backups"), problems)
    log = LogConfig(format=_choice(t, "log", "format", "text", LOG_FORMATS, problems),
                    level=_choice(t, "log", "level", "info", LOG_LEVELS, problems),
                    file=_file(t, "log", "", problems),
                    max_bytes=_integer(t, "log", "max_bytes", DEFAULT_LOG_BYTES, 4096, MAX_LOG_BYTES, problems),
                    backups=_integer(t, "log", "backups", 5, 1, MAX_LOG_BACKUPS, problems))
    t = _section(raw.get("audit"), "audit", ("enabled", "file", "max_bytes", "backups"), problems)
    audit = AuditConfig(enabled=_flag(t, "audit", "enabled", True, problems),
                        file=_file(t, "audit", DEFAULT_AUDIT_FILE, problems) or DEFAULT_AUDIT_FILE,
                        max_bytes=_integer(t, "audit", "max_bytes", DEFAULT_AUDIT_BYTES, 4096, MAX_LOG_BYTES,
                                           problems),
                        backups=_integer(t, "audit", "backups", 10, 1, MAX_LOG_BACKUPS, problems))
    t = _section(raw.get("metrics"), "metrics", ("require_api_key",), problems)
    metrics = MetricsConfig(require_api_key=_flag(t, "metrics", "require_api_key", True, problems))
    return log, audit, metrics


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
    peers: tuple[PeerConfig, ...] = ()
    correlation: CorrelationConfig = field(default_factory=CorrelationConfig)
    blocked_events: frozenset[str] = frozenset()
    blocked_orgs: frozenset[str] = frozenset()
    blocked_keys: frozenset[bytes] = frozenset()  # revoked by this node: whatever they sign is refused
    log: LogConfig = field(default_factory=LogConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    served_feeds: tuple[ServedFeed, ...] = ()  # [[served_feed]]: MISP feeds this node publishes
    feeds: tuple[FeedSource, ...] = ()  # [[feed]]: MISP feeds this node fetches
    misp_peers: tuple[MispPeer, ...] = ()  # [[peer]] kind = "misp": MISP instances (node/misp_config.py)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # (holds secrets: misp_key)

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
    known_sections = {"node", "sharing", "limits", "peer", "blocklist", "gossip", "correlation", "log", "audit",
                      "metrics", "served_feed", "feed"}
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
    gossip = raw.get("gossip", {})
    if not isinstance(gossip, dict):
        problems.append("[gossip]: expected a table")
        gossip = {}
    # [gossip] strip_sighting_org: the default for every peer; a [[peer]] entry may say otherwise
    strip_default = _parse_bool(gossip.get("strip_sighting_org"), "gossip.strip_sighting_org", False, problems)
    peers, misp_peers = _parse_peers(raw.get("peer"), home, problems, strip_default)
    for peer in peers:
        if peer.policy.mode is PeerMode.INTERNAL and peer.policy.org_uuid != org_uuid:
            problems.append(f"peer {peer.name!r}.mode: internal is for this organisation's own other "
                            f"node, but org_uuid is {peer.policy.org_uuid!r}, not {org_uuid!r}")
    blocklist = raw.get("blocklist", {})
    if not isinstance(blocklist, dict):
        problems.append("[blocklist]: expected a table with events, orgs and keys")
        blocklist = {}
    blocked_events = _parse_uuid_list(blocklist.get("events"), "blocklist.events", problems)
    blocked_orgs = _parse_uuid_list(blocklist.get("orgs"), "blocklist.orgs", problems)
    blocked_keys = _parse_key_list(blocklist.get("keys"), "blocklist.keys", problems)
    correlation = _parse_correlation(raw.get("correlation"), problems)
    log, audit, metrics = _parse_observability(raw, problems)
    served_feeds = parse_served_feeds(raw.get("served_feed"), problems)
    feeds = parse_feeds(raw.get("feed"), home, problems)
    if problems:
        raise ConfigError(path, problems)
    return NodeConfig(correlation=correlation, home=home, org_name=org_name, org_uuid=org_uuid, listen_host=host, listen_port=port,
                      default_distribution=distribution, max_import_file_bytes=max_file, peers=peers, misp_peers=misp_peers,
                      blocked_events=blocked_events, blocked_orgs=blocked_orgs, blocked_keys=blocked_keys,
                      log=log, audit=audit,
                      metrics=metrics, served_feeds=served_feeds, feeds=feeds, raw=raw)
