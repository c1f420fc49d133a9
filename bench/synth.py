"""Deterministic synthetic MISP events for the ingest benchmark.

Writes one ``{"Event": {...}}`` JSON file per event into a cached folder,
``<base>/<seed>-<attributes>/``, plus ``manifest.json`` (written last, so a
folder without it is an interrupted generation and is rebuilt).

Shape of the data, and why:

* Event sizes are drawn log-uniformly between 200 and 10,000 attributes
  (object attributes included), so a run has many mid-size events and a few
  large ones, like real feeds; the sizes sum exactly to the requested total.
* Attribute types follow a realistic feed mix (hashes, network indicators,
  composites, free text, host artefacts).  Categories come from PyMISP's
  ``describeTypes.json`` (mostly the type's ``default_category``, otherwise
  another category valid for that type), and ``to_ids`` is the type's
  ``sane_defaults`` value.
* Every value passes MISP's server-side validation for its type and is
  already in MISP's normalised form (lower-case hashes and domains,
  canonical IPv6, CIDR on the network address, ``ip|port``), so an importer
  that validates and normalises does real work but rejects nothing.
* About 5% of values come from a shared per-seed pool so the same indicator
  recurs across events, which is what correlation indexes are for.
* Each event carries a few MISP objects (``file`` and ``domain-ip``, with
  name/meta-category/template uuid/version taken from PyMISP's bundled
  templates) and a few ObjectReferences between them.
* Numbers are written as strings where MISP's own JSON export does so
  (``"distribution": "5"``, ``"timestamp": "1690000000"``).

Everything derives from ``--seed``: the size plan from ``Random(f"{seed}:plan")``
and event ``i`` from ``Random(f"{seed}:event:{i}")`` (string seeds hash with
SHA-512, so they are stable across runs and Python versions).  Per-event RNGs
let generation run in parallel worker processes with identical output.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import random
import re
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

# Bump whenever the generated content changes, so cached folders are rebuilt.
GENERATOR_VERSION = 1

MIN_EVENT_ATTRIBUTES = 200
MAX_EVENT_ATTRIBUTES = 10_000
SHARED_VALUE_RATE = 0.05  # share of values drawn from the cross-event pool
POOL_SIZE_PER_TYPE = 2_000

# Fixed window, not "now", so output does not depend on when it is generated.
EPOCH_START = 1_640_995_200  # 2022-01-01T00:00:00Z
EPOCH_END = 1_735_689_600  # 2025-01-01T00:00:00Z

Json = dict[str, Any]
Rng = random.Random


# --------------------------------------------------------------------------
# Dataset handle


@dataclass(frozen=True)
class EventFile:
    path: Path
    attributes: int  # including object attributes
    objects: int


@dataclass(frozen=True)
class Dataset:
    root: Path
    seed: int
    attributes: int
    events: tuple[EventFile, ...]
    total_bytes: int

    @property
    def paths(self) -> list[Path]:
        return [e.path for e in self.events]

    def prefix(self, attributes: int) -> tuple[EventFile, ...]:
        """The leading events whose attribute total is closest to
        ``attributes`` (at least one event).  Used to measure the same
        contender on a smaller slice of the same data."""
        count = total = 0
        for event in self.events:
            # Take the next event while that brings the total closer.
            if count and abs(total + event.attributes - attributes) >= abs(total - attributes):
                break
            count += 1
            total += event.attributes
        return self.events[:count]


def ensure_dataset(
    base: Path,
    seed: int,
    attributes: int,
    *,
    workers: int | None = None,
    regenerate: bool = False,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
) -> Dataset:
    """Return the cached dataset for (seed, attributes), generating it first
    if it is missing, incomplete or from another generator version."""
    root = base / f"{seed}-{attributes}"
    if not regenerate:
        cached = _load_manifest(root, seed, attributes)
        if cached is not None:
            return cached
    sizes = plan_event_sizes(seed, attributes)
    log(f"generating {attributes:,} attributes in {len(sizes):,} events into {root} ...")
    # Build in a private temporary folder and rename at the end, so an
    # interrupted or concurrent run never leaves a half-written dataset that
    # looks complete.
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f".tmp-{seed}-{attributes}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "events").mkdir(parents=True)
    jobs = [(seed, i, n, str(tmp / "events" / _event_name(i))) for i, n in enumerate(sizes)]
    workers = workers or min(2, os.cpu_count() or 1)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_write_event_job, jobs, chunksize=4))
    else:
        results = [_write_event_job(job) for job in jobs]
    manifest = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "attributes": attributes,
        "events": [
            {"file": _event_name(i), "attributes": n_attr, "objects": n_obj, "bytes": n_bytes}
            for i, (n_attr, n_obj, n_bytes) in enumerate(results)
        ],
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    dataset = _load_manifest(root, seed, attributes)
    assert dataset is not None
    return dataset


def _event_name(index: int) -> str:
    return f"event-{index:06d}.json"


def _load_manifest(root: Path, seed: int, attributes: int) -> Dataset | None:
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if (
        manifest.get("generator_version") != GENERATOR_VERSION
        or manifest.get("seed") != seed
        or manifest.get("attributes") != attributes
    ):
        return None
    events = tuple(
        EventFile(root / "events" / e["file"], int(e["attributes"]), int(e["objects"]))
        for e in manifest["events"]
    )
    if not all(e.path.is_file() for e in events):
        return None
    total_bytes = sum(int(e["bytes"]) for e in manifest["events"])
    return Dataset(root, seed, attributes, events, total_bytes)


def _write_event_job(job: tuple[int, int, int, str]) -> tuple[int, int, int]:
    seed, index, size, path = job
    event = make_event(seed, index, size)
    # Compact separators: file size then tracks content, not whitespace.
    data = json.dumps({"Event": event}, separators=(",", ":")).encode()
    with open(path, "wb") as f:
        f.write(data)
    n_attr = len(event["Attribute"]) + sum(len(o["Attribute"]) for o in event["Object"])
    return n_attr, len(event["Object"]), len(data)


def plan_event_sizes(seed: int, total: int) -> list[int]:
    """Event sizes, log-uniform in [200, 10000], summing exactly to ``total``."""
    if total <= 0:
        raise ValueError("total attributes must be positive")
    rng = random.Random(f"{seed}:plan")
    lo, hi = math.log(MIN_EVENT_ATTRIBUTES), math.log(MAX_EVENT_ATTRIBUTES)
    sizes: list[int] = []
    remaining = total
    while remaining > 0:
        n = min(int(round(math.exp(rng.uniform(lo, hi)))), remaining)
        sizes.append(n)
        remaining -= n
    # The last draw was cut to what was left; if that is below the minimum,
    # fold it into events that still have room (keeps every event within
    # bounds unless the whole total is below the minimum).
    if len(sizes) > 1 and sizes[-1] < MIN_EVENT_ATTRIBUTES:
        leftover = sizes.pop()
        for i in range(len(sizes)):
            room = MAX_EVENT_ATTRIBUTES - sizes[i]
            take = min(room, leftover)
            sizes[i] += take
            leftover -= take
            if not leftover:
                break
        if leftover:  # every event is full: keep a small last event
            sizes.append(leftover)
    assert sum(sizes) == total
    return sizes


# --------------------------------------------------------------------------
# PyMISP reference data (categories, to_ids defaults, object templates)


@cache
def _pymisp_data_dir() -> Path:
    # Locate the data folder without importing pymisp (slow, and it would
    # inflate memory in generator workers for no reason).
    import importlib.util

    spec = importlib.util.find_spec("pymisp")
    if spec is None or spec.origin is None:
        raise RuntimeError("pymisp is required to generate benchmark data")
    return Path(spec.origin).parent / "data"


@cache
def _describe_types() -> Json:
    data: Json = json.loads((_pymisp_data_dir() / "describeTypes.json").read_text())
    result: Json = data["result"]
    return result


@cache
def _categories_for(attr_type: str) -> tuple[str, ...]:
    mappings: dict[str, list[str]] = _describe_types()["category_type_mappings"]
    return tuple(c for c, types in mappings.items() if attr_type in types)


@cache
def _object_template(name: str) -> Json:
    path = _pymisp_data_dir() / "misp-objects" / "objects" / name / "definition.json"
    template: Json = json.loads(path.read_text())
    return template


# --------------------------------------------------------------------------
# Value generators.  Each returns a value that is valid for its MISP type and
# already normalised the way MISP would store it.

_WORDS = (
    "secure update login cdn mail account verify cloud static api portal "
    "service online support micro soft data sync track office pay bank "
    "invoice docs share drive auth sso admin panel news media stream"
).split()
_TLDS = "com net org info ru cn xyz top io biz club online site de uk su pw cc tk ws".split()
_HOST_PREFIXES = "www mail cdn update api vpn ns1 ns2 mx smtp ftp dl static img c2 gate".split()
_FIRST_NAMES = "john anna li maria oleg chen fatima david sara ivan lucas emma".split()
_FILE_STEMS = (
    "invoice payment_details scan report update setup installer document "
    "order svchost winlogon taskhost readme payload loader dropper agent"
).split()
_FILE_EXTS = ".exe .dll .docm .xlsm .pdf.exe .js .vbs .hta .ps1 .lnk .iso .zip .msi .scr .bat".split()
_URL_WORDS = "wp-content wp-admin images uploads admin gate.php index.php panel files invoice api v1 download".split()
_REG_RUN_KEYS = (
    "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Run",
    "HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run",
    "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\RunOnce",
    "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Services",
    "HKEY_CURRENT_USER\\Software\\Classes\\CLSID",
)
_TEXT_WORDS = (
    "observed beacon traffic to the command and control server after initial "
    "access via phishing attachment; payload drops second stage loader and "
    "establishes persistence; campaign overlaps with previous activity"
).split()
_COMMON_PORTS = (80, 443, 8080, 8443, 4444, 53, 22, 3389, 445, 25, 587, 1337, 9001)
_SSDEEP_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _hex(rng: Rng, chars: int) -> str:
    return f"{rng.getrandbits(chars * 4):0{chars}x}"


def _uuid4(rng: Rng) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ipv4(rng: Rng) -> ipaddress.IPv4Address:
    # First octet 1-223 minus 10 and 127: looks like routable unicast.
    first = rng.choice([o for o in range(1, 224) if o not in (10, 127)])
    return ipaddress.IPv4Address((first << 24) | rng.getrandbits(24))


def _ipv6(rng: Rng) -> ipaddress.IPv6Address:
    # Global unicast 2000::/3; str() gives MISP's canonical compressed form.
    return ipaddress.IPv6Address((0x2000 << 112) | rng.getrandbits(125))


def _ip(rng: Rng, *, allow_cidr: bool = True) -> str:
    r = rng.random()
    if allow_cidr and r < 0.05:
        net = ipaddress.ip_network(f"{_ipv4(rng)}/{rng.randint(16, 30)}", strict=False)
        return str(net)
    if allow_cidr and r < 0.07:
        net = ipaddress.ip_network(f"{_ipv6(rng)}/{rng.choice((32, 48, 56, 64))}", strict=False)
        return str(net)
    if r < 0.15:
        return str(_ipv6(rng))
    return str(_ipv4(rng))


def _domain(rng: Rng) -> str:
    if rng.random() < 0.35:  # DGA-looking
        label = "".join(rng.choice(_LETTERS) for _ in range(rng.randint(8, 16)))
    else:
        label = "-".join(rng.sample(_WORDS, rng.randint(1, 3)))
        if rng.random() < 0.5:
            label += str(rng.randint(1, 9999))
    return f"{label}.{rng.choice(_TLDS)}"


def _hostname(rng: Rng) -> str:
    return f"{rng.choice(_HOST_PREFIXES)}{rng.choice(('', '', str(rng.randint(1, 9))))}.{_domain(rng)}"


def _url(rng: Rng) -> str:
    host = rng.choice((_domain, _hostname, lambda r: str(_ipv4(r))))(rng)
    port = f":{rng.choice(_COMMON_PORTS)}" if rng.random() < 0.1 else ""
    path = "/".join(rng.choice(_URL_WORDS) for _ in range(rng.randint(1, 4)))
    query = f"?id={_hex(rng, 8)}" if rng.random() < 0.3 else ""
    return f"{rng.choice(('http', 'https'))}://{host}{port}/{path}{query}"


def _email(rng: Rng) -> str:
    local = f"{rng.choice(_FIRST_NAMES)}.{rng.choice(_WORDS)}{rng.randint(1, 999)}"
    return f"{local}@{_domain(rng)}"


def _filename(rng: Rng) -> str:
    stem = rng.choice(_FILE_STEMS)
    if rng.random() < 0.5:
        stem += f"_{rng.randint(1, 99999)}"
    return stem + rng.choice(_FILE_EXTS)


def _port(rng: Rng) -> int:
    return rng.choice(_COMMON_PORTS) if rng.random() < 0.6 else rng.randint(1024, 65535)


def _ssdeep(rng: Rng) -> str:
    # "blocksize:hash:hash" with blocksize 3*2^k, the second hash at double
    # block size so at most half as long, as ssdeep produces.
    blocksize = 3 * 2 ** rng.randint(1, 14)
    h1 = "".join(rng.choice(_SSDEEP_ALPHABET) for _ in range(rng.randint(20, 64)))
    h2 = "".join(rng.choice(_SSDEEP_ALPHABET) for _ in range(rng.randint(10, 32)))
    return f"{blocksize}:{h1}:{h2}"


def _text(rng: Rng) -> str:
    return " ".join(rng.choice(_TEXT_WORDS) for _ in range(rng.randint(4, 20))).capitalize()


def _regkey(rng: Rng) -> str:
    name = rng.choice(_FILE_STEMS) + rng.choice(("", _hex(rng, 4)))
    return f"{rng.choice(_REG_RUN_KEYS)}\\{name}"


def _mutex(rng: Rng) -> str:
    r = rng.random()
    if r < 0.4:
        return f"Global\\{_uuid4(rng).upper()}"
    if r < 0.7:
        return f"_{rng.choice(_WORDS).upper()}_{rng.randint(1000, 99999)}"
    return "".join(rng.choice(_LETTERS + "0123456789") for _ in range(rng.randint(6, 16)))


def _vulnerability(rng: Rng) -> str:
    return f"CVE-{rng.randint(2010, 2024)}-{rng.randint(1, 49999):04d}"


ValueGen = Callable[[Rng], str]

# (type, weight, generator): a feed-like mix dominated by hashes and network
# indicators.  Weights are relative.
ATTRIBUTE_MIX: tuple[tuple[str, float, ValueGen], ...] = (
    ("md5", 12, lambda r: _hex(r, 32)),
    ("sha1", 7, lambda r: _hex(r, 40)),
    ("sha256", 12, lambda r: _hex(r, 64)),
    ("ip-dst", 14, _ip),
    ("ip-src", 5, _ip),
    ("domain", 12, _domain),
    ("hostname", 6, _hostname),
    ("url", 10, _url),
    ("email-src", 2, _email),
    ("filename", 4, _filename),
    ("filename|md5", 3, lambda r: f"{_filename(r)}|{_hex(r, 32)}"),
    ("ip-dst|port", 3, lambda r: f"{_ip(r, allow_cidr=False)}|{_port(r)}"),
    ("domain|ip", 2, lambda r: f"{_domain(r)}|{_ip(r, allow_cidr=False)}"),
    ("ssdeep", 2, _ssdeep),
    ("text", 1.5, _text),
    ("comment", 1, _text),
    ("regkey", 1.5, _regkey),
    ("mutex", 1, _mutex),
    ("vulnerability", 1.5, _vulnerability),
)
_MIX_TYPES = tuple(t for t, _, _ in ATTRIBUTE_MIX)
_MIX_WEIGHTS = tuple(w for _, w, _ in ATTRIBUTE_MIX)
VALUE_GENERATORS: dict[str, ValueGen] = {t: g for t, _, g in ATTRIBUTE_MIX}
VALUE_GENERATORS["port"] = lambda r: str(_port(r))
VALUE_GENERATORS["ip-dst-plain"] = lambda r: _ip(r, allow_cidr=False)

_TLP_TAGS = (("tlp:white", "#ffffff"), ("tlp:green", "#339900"), ("tlp:amber", "#ffc000"))
_OTHER_TAGS = (
    ('misp-galaxy:threat-actor="Sofacy"', "#0088cc"),
    ('misp-galaxy:threat-actor="Lazarus Group"', "#0088cc"),
    ('misp-galaxy:malpedia="Emotet"', "#0088cc"),
    ('misp-galaxy:malpedia="Cobalt Strike"', "#0088cc"),
    ('misp-galaxy:mitre-attack-pattern="Spearphishing Attachment - T1566.001"', "#0088cc"),
    ('misp-galaxy:mitre-attack-pattern="Registry Run Keys / Startup Folder - T1547.001"', "#0088cc"),
    ('admiralty-scale:source-reliability="b"', "#1f3d7a"),
    ('estimative-language:likelihood-probability="likely"', "#5c9c30"),
    ('kill-chain:Command and Control', "#a41a1a"),
    ("type:OSINT", "#004646"),
)
_ATTRIBUTE_TAGS = (
    ('kill-chain:Delivery', "#a41a1a"),
    ('kill-chain:Command and Control', "#a41a1a"),
    ('misp-galaxy:malpedia="Emotet"', "#0088cc"),
    ("false-positive:risk=\"low\"", "#1f3d7a"),
    ("tlp:amber", "#ffc000"),
)
_INFO_SUBJECTS = (
    "Emotet", "QakBot", "Cobalt Strike", "AgentTesla", "IcedID", "Sofacy", "Lazarus",
    "RedLine Stealer", "LockBit", "BumbleBee", "AsyncRAT", "Phishing kit",
)
_INFO_VERBS = (
    "campaign targeting", "infrastructure used against", "malspam wave hitting",
    "indicators from incident at", "C2 servers observed in",
)
_INFO_TARGETS = (
    "financial sector", "healthcare providers", "European governments", "energy utilities",
    "telecoms", "retail", "universities", "logistics companies",
)


def _tag(name: str, colour: str) -> Json:
    return {"name": name, "colour": colour, "exportable": True, "local": 0}


@cache
def _shared_pool(seed: int, attr_type: str) -> tuple[str, ...]:
    """Values that recur across events (for correlation), per seed and type."""
    rng = random.Random(f"{seed}:pool:{attr_type}")
    gen = VALUE_GENERATORS[attr_type]
    return tuple(gen(rng) for _ in range(POOL_SIZE_PER_TYPE))


def _value(rng: Rng, seed: int, attr_type: str) -> str:
    if rng.random() < SHARED_VALUE_RATE:
        return rng.choice(_shared_pool(seed, attr_type))
    return VALUE_GENERATORS[attr_type](rng)


def _category(rng: Rng, attr_type: str, allowed: Sequence[str] | None = None) -> str:
    default: str = _describe_types()["sane_defaults"][attr_type]["default_category"]
    choices = tuple(allowed) if allowed else _categories_for(attr_type)
    if default in choices and rng.random() < 0.75:
        return default
    return rng.choice(choices)


def _attribute(
    rng: Rng,
    seed: int,
    attr_type: str,
    event_ts: int,
    *,
    value: str | None = None,
    relation: str | None = None,
    categories: Sequence[str] | None = None,
) -> Json:
    # Attribute timestamps never exceed the event's (MISP keeps the event
    # timestamp as the max over its content).
    ts = event_ts - rng.randint(0, 30 * 86_400)
    attr: Json = {
        "uuid": _uuid4(rng),
        "type": attr_type,
        "category": _category(rng, attr_type, categories),
        "value": value if value is not None else _value(rng, seed, attr_type),
        "to_ids": bool(_describe_types()["sane_defaults"][attr_type]["to_ids"]),
        "distribution": "5" if rng.random() < 0.8 else str(rng.randint(0, 3)),
        "timestamp": str(ts),
        "comment": "" if rng.random() < 0.9 else _text(rng),
        "object_relation": relation,
        "disable_correlation": False,
        "deleted": False,
    }
    if attr_type.startswith("ip-") and rng.random() < 0.05:
        first = ts - rng.randint(0, 90 * 86_400)
        attr["first_seen"] = _iso(first)
        attr["last_seen"] = _iso(ts)
    if rng.random() < 0.05:
        attr["Tag"] = [_tag(*t) for t in rng.sample(_ATTRIBUTE_TAGS, rng.randint(1, 2))]
    return attr


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def _object_header(rng: Rng, name: str, event_ts: int) -> Json:
    template = _object_template(name)
    return {
        "uuid": _uuid4(rng),
        "name": template["name"],
        "meta-category": template["meta-category"],
        "description": template["description"],
        "template_uuid": template["uuid"],
        "template_version": str(template["version"]),
        "timestamp": str(event_ts - rng.randint(0, 30 * 86_400)),
        "distribution": "5",
        "comment": "",
        "deleted": False,
        "ObjectReference": [],
        "Attribute": [],
    }


def _template_categories(name: str, relation: str, attr_type: str) -> list[str] | None:
    """Categories the template allows for ``relation`` that describeTypes also
    allows for ``attr_type`` (templates list some that are not, e.g. "External
    analysis" for ``port``); None means "any valid for the type"."""
    spec: Json = _object_template(name)["attributes"][relation]
    valid = _categories_for(attr_type)
    cats = [c for c in spec.get("categories") or () if c in valid]
    return cats or None


def _file_object(rng: Rng, seed: int, event_ts: int) -> Json:
    obj = _object_header(rng, "file", event_ts)
    for relation, attr_type in (("filename", "filename"), ("md5", "md5"), ("sha256", "sha256")):
        obj["Attribute"].append(
            _attribute(rng, seed, attr_type, event_ts, relation=relation,
                       categories=_template_categories("file", relation, attr_type))
        )
    return obj


def _domain_ip_object(rng: Rng, seed: int, event_ts: int) -> Json:
    obj = _object_header(rng, "domain-ip", event_ts)
    parts: list[tuple[str, str, str]] = [("domain", "domain", _value(rng, seed, "domain")),
                                         ("ip", "ip-dst", _ip(rng, allow_cidr=False))]
    if rng.random() < 0.5:
        parts.append(("port", "port", str(_port(rng))))
    for relation, attr_type, value in parts:
        obj["Attribute"].append(
            _attribute(rng, seed, attr_type, event_ts, value=value, relation=relation,
                       categories=_template_categories("domain-ip", relation, attr_type))
        )
    return obj


def _reference(rng: Rng, source: Json, target_uuid: str, relationship: str, ts: int) -> Json:
    return {
        "uuid": _uuid4(rng),
        "object_uuid": source["uuid"],
        "referenced_uuid": target_uuid,
        "relationship_type": relationship,
        "comment": "",
        "timestamp": str(ts),
        "deleted": False,
    }


def make_event(seed: int, index: int, size: int) -> Json:
    """Event ``index`` of the dataset for ``seed``, with exactly ``size``
    attributes counting those inside objects."""
    rng = random.Random(f"{seed}:event:{index}")
    event_ts = rng.randint(EPOCH_START, EPOCH_END)
    org_rng = random.Random(f"{seed}:org:{rng.randint(0, 24)}")  # 25 orgs per seed

    # A few objects: 2 plus one per 1,000 attributes (2..12), each with 2-3
    # attributes, never more than half the event.
    objects: list[Json] = []
    object_attrs = 0
    for _ in range(2 + size // 1000):
        make = _file_object if rng.random() < 0.6 else _domain_ip_object
        obj = make(rng, seed, event_ts)
        if object_attrs + len(obj["Attribute"]) > size // 2:
            break
        objects.append(obj)
        object_attrs += len(obj["Attribute"])

    attributes = [
        _attribute(rng, seed, attr_type, event_ts)
        for attr_type in rng.choices(_MIX_TYPES, weights=_MIX_WEIGHTS, k=size - object_attrs)
    ]

    # A few references: file objects point at domain-ip objects they talk to
    # and at a loose attribute they relate to.
    files = [o for o in objects if o["name"] == "file"]
    nets = [o for o in objects if o["name"] == "domain-ip"]
    for obj in files:
        if nets and rng.random() < 0.7:
            obj["ObjectReference"].append(
                _reference(rng, obj, rng.choice(nets)["uuid"], "communicates-with", event_ts))
        if attributes and rng.random() < 0.4:
            obj["ObjectReference"].append(
                _reference(rng, obj, rng.choice(attributes)["uuid"], "related-to", event_ts))

    tags = [_tag(*rng.choice(_TLP_TAGS))]
    tags += [_tag(*t) for t in rng.sample(_OTHER_TAGS, rng.randint(0, 3))]
    date = _iso(event_ts - rng.randint(0, 7 * 86_400))[:10]
    info = f"{rng.choice(_INFO_SUBJECTS)} {rng.choice(_INFO_VERBS)} {rng.choice(_INFO_TARGETS)} ({date})"
    return {
        "uuid": _uuid4(rng),
        "info": info,
        "date": date,
        "threat_level_id": str(rng.randint(1, 4)),
        "analysis": str(rng.randint(0, 2)),
        "distribution": str(rng.choice((0, 1, 1, 2, 3, 3, 3))),
        "published": True,
        "timestamp": str(event_ts),
        "publish_timestamp": str(event_ts + rng.randint(0, 3600)),
        "attribute_count": str(size),
        "Orgc": {"name": f"Org-{org_rng.randint(100, 999)}", "uuid": _uuid4(org_rng)},
        "Tag": tags,
        "Attribute": attributes,
        "Object": objects,
    }


def iter_attributes(event: Json) -> Iterator[Json]:
    """All attributes of an ``Event`` body: loose ones, then object ones."""
    yield from event.get("Attribute", ())
    for obj in event.get("Object", ()):
        yield from obj.get("Attribute", ())


# --------------------------------------------------------------------------
# Self-check: the rules of MISP's server-side AttributeValidationTool for the
# types generated here, plus "already normalised" (MISP would store the value
# unchanged).  Run with ``python bench/synth.py --check``.

_DOMAIN_RE = re.compile(r"^[A-Z0-9.\-_]+\.[A-Z0-9\-]{2,}$", re.IGNORECASE)
_EMAIL_RE = re.compile(r"^.[^\s]*@.*\..*$", re.IGNORECASE)
_SSDEEP_RE = re.compile(r"^([0-9]+):([0-9a-zA-Z/+]*):([0-9a-zA-Z/+]*)$")
_CVE_RE = re.compile(r"^CVE-\d{4}-\d{4,}$")
_UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
_HEX_LEN = {"md5": 32, "sha1": 40, "sha256": 64}


def _valid_ip(value: str, *, allow_cidr: bool = True) -> bool:
    try:
        if "/" in value:
            # strict=True: CIDR values sit on their network address.
            return allow_cidr and str(ipaddress.ip_network(value, strict=True)) == value
        return str(ipaddress.ip_address(value)) == value  # canonical form
    except ValueError:
        return False


def _valid_hash(value: str, attr_type: str) -> bool:
    return len(value) == _HEX_LEN[attr_type] and all(c in "0123456789abcdef" for c in value)


def _valid_domain(value: str) -> bool:
    return bool(_DOMAIN_RE.match(value)) and value == value.lower()


def valid_value(attr_type: str, value: str) -> bool:
    if "\n" in value:
        return False
    match attr_type:
        case "md5" | "sha1" | "sha256":
            return _valid_hash(value, attr_type)
        case "ip-dst" | "ip-src":
            return _valid_ip(value)
        case "domain" | "hostname":
            return _valid_domain(value)
        case "email-src":
            return bool(_EMAIL_RE.match(value)) and value == value.lower()
        case "url":
            return "://" in value
        case "filename|md5":
            name, _, digest = value.rpartition("|")
            return bool(name) and _valid_hash(digest, "md5")
        case "ip-dst|port":
            ip, _, port = value.rpartition("|")
            return _valid_ip(ip, allow_cidr=False) and port.isdigit() and 1 <= int(port) <= 65535
        case "port":
            return value.isdigit() and 1 <= int(value) <= 65535
        case "domain|ip":
            domain, _, ip = value.partition("|")
            return _valid_domain(domain) and _valid_ip(ip, allow_cidr=False)
        case "ssdeep":
            return bool(_SSDEEP_RE.match(value))
        case "vulnerability":
            return bool(_CVE_RE.match(value))
        case "filename" | "regkey" | "mutex" | "text" | "comment":
            return bool(value)
    return False


def check_event(event: Json) -> list[str]:
    """Problems found in one event body (empty list when it is clean)."""
    problems: list[str] = []
    defaults = _describe_types()["sane_defaults"]

    def check_attr(attr: Json, where: str) -> None:
        t, v = attr["type"], attr["value"]
        if not valid_value(t, v):
            problems.append(f"{where}: invalid {t} value {v!r}")
        if attr["category"] not in _categories_for(t):
            problems.append(f"{where}: category {attr['category']!r} not valid for {t}")
        if attr["to_ids"] != bool(defaults[t]["to_ids"]):
            problems.append(f"{where}: to_ids differs from sane_defaults for {t}")
        if not _UUID4_RE.match(attr["uuid"]):
            problems.append(f"{where}: bad uuid {attr['uuid']!r}")
        if int(attr["timestamp"]) > int(event["timestamp"]):
            problems.append(f"{where}: attribute newer than its event")

    for attr in event["Attribute"]:
        check_attr(attr, f"event {event['uuid']} attribute {attr['uuid']}")
    for obj in event["Object"]:
        template = _object_template(obj["name"])
        if (obj["template_uuid"], int(obj["template_version"])) != (template["uuid"], template["version"]):
            problems.append(f"object {obj['uuid']}: template uuid/version mismatch")
        for attr in obj["Attribute"]:
            expected = template["attributes"][attr["object_relation"]]["misp-attribute"]
            if attr["type"] != expected:
                problems.append(f"object {obj['uuid']}: {attr['object_relation']} should be {expected}")
            check_attr(attr, f"object {obj['uuid']} attribute {attr['uuid']}")
    n = sum(1 for _ in iter_attributes(event))
    if str(n) != event["attribute_count"]:
        problems.append(f"event {event['uuid']}: attribute_count {event['attribute_count']} != {n}")
    return problems


if __name__ == "__main__":  # pragma: no cover - manual inspection helper
    import argparse

    parser = argparse.ArgumentParser(description="Generate (or locate) a cached benchmark dataset.")
    parser.add_argument("--attributes", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parent / ".data")
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--check", action="store_true", help="validate every generated event")
    args = parser.parse_args()
    ds = ensure_dataset(args.data_dir, args.seed, args.attributes, regenerate=args.regenerate)
    print(f"{ds.root}: {len(ds.events)} events, {ds.attributes:,} attributes, {ds.total_bytes / 2**20:.1f} MiB")
    if args.check:
        from collections import Counter

        types: Counter[str] = Counter()
        bad = 0
        for ef in ds.events:
            body = json.loads(ef.path.read_bytes())["Event"]
            types.update(a["type"] for a in iter_attributes(body))
            for problem in check_event(body):
                bad += 1
                if bad <= 20:
                    print("  " + problem)
        sizes = [e.attributes for e in ds.events]
        print(f"sizes min {min(sizes)} max {max(sizes)}; types: " +
              ", ".join(f"{t} {n / sum(types.values()):.1%}" for t, n in types.most_common()))
        print("check: OK" if not bad else f"check: {bad} problems")
        sys.exit(1 if bad else 0)
