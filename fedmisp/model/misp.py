"""The MISP core format: parsing MISP JSON into validated element bodies, and back.

An event becomes a header (the MISP event fields) and a flat list of elements: attributes (with
``object_uuid`` when they belong to an object), objects and object references. Each element's body is
a map with MISP's own field names, so MISP JSON out is a re-nesting of what came in. Fields that are
local to one MISP instance (numeric ids, correlations, the owner org, derived galaxy expansions) are
dropped on the way in; unknown fields are kept under ``extra`` so nothing a newer MISP sends is lost.

Sightings and proposals travel as their own records (docs DESIGN "Records"), and local tags are
node-local annotations: the parser returns them separately.

What a peer sends is checked against this form by model/received.py.
"""
from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import re
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from fedmisp.model import canonical
from fedmisp.model.describe import describe_types
from fedmisp.model.templates import resolve_template
from fedmisp.model.galaxies import CLUSTER_TAG_PREFIX
from fedmisp.model.values import MAX_VALUE_BYTES, ValueFormatError, normalise

# --- limits (every size has one) ----------------------------------------------------------------
MAX_TEXT_BYTES = 65_535  # MISP stores info, comment and values in TEXT columns (65,535 bytes)
MAX_TAG_NAME = 255  # MISP's tags.name is varchar(255)
MAX_TAGS_PER_ELEMENT = 1_000
MAX_ATTACHMENT_BYTES = 32 * 1024 * 1024  # base64 "data" of a malware-sample or attachment
MAX_ERRORS_REPORTED = 20  # per event: enough to fix a file, not a flood

KIND_ATTRIBUTE = "attribute"
KIND_OBJECT = "object"
KIND_REFERENCE = "reference"
KIND_REPORT = "report"  # an event report (MISP's EventReport): markdown with its own distribution
MAX_REPORT_BYTES = 4 * 1024 * 1024  # a report's markdown (MISP: a longtext column)

# Fields one MISP instance derives or numbers for itself; they mean nothing on another node.
_LOCAL_FIELDS = frozenset({
    "id", "event_id", "object_id", "org_id", "orgc_id", "sharing_group_id", "user_id", "locked",
    "attribute_count", "proposal_email_lock", "value1", "value2", "event_uuid", "Event", "Org",
    "RelatedEvent", "RelatedAttribute", "Feed", "Galaxy", "AttributeTag", "EventTag", "decay_score",
    "SharingGroup", "source_uuid", "referenced_id", "referenced_type", "Object", "Attribute",
    "ObjectReference", "Tag", "Sighting", "ShadowAttribute", "Orgc", "CryptographicKey",
    "sighting_timestamp", "template_id", "disable_correlation_count", "protected",
    "ObjectRelation", "Analyst", "Note", "Opinion", "Relationship",
    "RelatedObject", "first_seen", "last_seen", "EventReport",
})
# first_seen/last_seen and the nested lists are in _LOCAL_FIELDS only so the "extra" pass skips
# them; they are handled explicitly below.

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_TRUE = {True, 1, "1", "true", "True"}
_FALSE = {False, 0, "0", "false", "False", None, ""}
MAX_TIMESTAMP = 2**40  # year 36812: beyond any real time, below any overflow


@dataclass(frozen=True, slots=True)
class Problem:
    where: str  # "event", "Attribute[3] (uuid …)", "Object[0].Attribute[2]"
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: field '{self.field}': {self.message}"


class EventError(ValueError):
    """An event refused whole; `problems` names each element, field and what would be accepted."""

    def __init__(self, event: str, problems: list[Problem]):
        self.event = event
        self.problems = problems
        more = "" if len(problems) < MAX_ERRORS_REPORTED else f" (first {MAX_ERRORS_REPORTED} shown)"
        super().__init__(f"event {event}: " + "; ".join(map(str, problems)) + more)


@dataclass(frozen=True, slots=True)
class Dropped:
    """A part of an event left out while the rest is kept, as MISP drops an attribute, object or
    reference that fails validation and saves the event without it (decision 0028)."""
    kind: str  # attribute, object, reference, tag, sighting, proposal
    uuid: str | None  # the part's own uuid, when it gave a valid one
    where: str  # its place in the event as given: Attribute[3], Object[0].Attribute[2], event.Tag[1]
    problems: tuple[Problem, ...]

    @property
    def field(self) -> str:
        return self.problems[0].field

    @property
    def reason(self) -> str:
        return self.problems[0].message

    @property
    def label(self) -> str:
        return f"{self.where} (uuid {self.uuid})" if self.uuid else self.where

    def __str__(self) -> str:
        return f"{self.kind} {self.label}: " + "; ".join(
            f"field '{p.field}': {p.message}" for p in self.problems)


class _Problems:
    """What is wrong with an event being parsed. Strict (the default): every problem refuses the
    event. Lenient: a problem inside an element takes that element out (`dropped`) and only a
    problem of the event itself refuses it."""

    def __init__(self, lenient: bool = False) -> None:
        self.items: list[Problem] = []
        self.lenient = lenient
        self.dropped: list[Dropped] = []
        # a lenient parse must see every problem of an element to know that it is bad
        self.limit = 1 << 62 if lenient else MAX_ERRORS_REPORTED

    def add(self, where: str, field_: str, message: str) -> None:
        if len(self.items) < self.limit:
            self.items.append(Problem(where, field_, message))

    def part(self, kind: str, uuid: str | None, part_where: str, where: str, field_: str, message: str) -> None:
        """A problem that leaves out only one part (a tag, a sighting), never its element."""
        if self.lenient:
            self.dropped.append(Dropped(kind, uuid, part_where, (Problem(where, field_, message),)))
        else:
            self.add(where, field_, message)

    def isolate(self, mark: int, kind: str, uuid: str | None, where: str) -> bool:
        """Whether the part parsed since `mark` (a length of `items`) is bad. Lenient: its problems
        become one Dropped record and leave `items`, so the enclosing element stays valid."""
        if len(self.items) == mark:
            return False
        if self.lenient:
            self.dropped.append(Dropped(kind, uuid, where, tuple(self.items[mark:])))
            del self.items[mark:]
        return True

    def drop(self, kind: str, uuid: str | None, where: str, field_: str, message: str) -> None:
        self.dropped.append(Dropped(kind, uuid, where, (Problem(where, field_, message),)))


@dataclass(frozen=True, slots=True)
class ImportDefaults:
    """What a MISP JSON file may leave out, filled as MISP fills it on add."""
    org_uuid: str
    org_name: str
    distribution: int = 1  # MISP's shipped MISP.default_event_distribution
    now: int = 0
    # the object templates this node holds published, by uuid (model/templates.py resolve_template)
    templates: Mapping[str, Any] | None = None

    def timestamp(self) -> int:
        return self.now or int(time.time())


@dataclass(slots=True)
class ParsedElement:
    kind: str
    uuid: str
    body: dict[str, Any]  # MISP field names, keys in sorted order (canonical)
    keys: tuple[str, ...] = ()  # an attribute's normalised value(s), for the value index
    local_tags: list[dict[str, Any]] | None = None  # until the element is taken into its event


@dataclass(slots=True)
class ParsedEvent:
    """A validated event, ready to be signed as a revision."""
    header: dict[str, Any]
    elements: list[ParsedElement]
    sightings: list[dict[str, Any]] = field(default_factory=list)
    proposals: list[dict[str, Any]] = field(default_factory=list)
    local_tags: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # element/event uuid -> tags
    dropped: list[Dropped] = field(default_factory=list)  # a lenient parse: what was left out
    analyst: list[dict[str, Any]] = field(default_factory=list)  # analyst-data record bodies (model/analyst.py)

    @property
    def uuid(self) -> str:
        return self.header["uuid"]

    @property
    def timestamp(self) -> int:
        return self.header["timestamp"]

    def attribute_count(self) -> int:
        return sum(1 for e in self.elements if e.kind == KIND_ATTRIBUTE)


# --- field checks -------------------------------------------------------------------------------

def _uuid(value: Any, where: str, field_: str, p: _Problems, *, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            p.add(where, field_, "missing; expected a UUID such as 5a1b2c3d-0000-4000-8000-00000000abcd")
        return None
    if isinstance(value, str) and UUID_RE.match(value):
        return value.lower()
    p.add(where, field_, f"{show_value(value)} is not a UUID; expected 8-4-4-4-12 hexadecimal digits")
    return None


def _int(value: Any, where: str, field_: str, p: _Problems, lo: int, hi: int, default: int) -> int:
    if value is None or value == "":
        return default
    # (Python's int() also reads other scripts' digits, "1_000" and surrounding spaces; MISP does not)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or \
            (isinstance(value, str) and not (value.isascii() and value.lstrip("-").isdigit())):
        p.add(where, field_, f"{show_value(value)} is not an integer; expected {lo} to {hi}")
        return default
    try:
        n = int(value)
    except ValueError:
        p.add(where, field_, f"{show_value(value)} is not an integer; expected {lo} to {hi}")
        return default
    if not lo <= n <= hi:
        p.add(where, field_, f"{n} is out of range; expected {lo} to {hi}")
        return default
    return n


def _bool(value: Any, where: str, field_: str, p: _Problems, default: bool = False) -> bool:
    if value is None:
        return default
    if isinstance(value, (bool, int, str)):
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
    p.add(where, field_, f"{show_value(value)} is not a boolean; expected true, false, 0 or 1")
    return default


def _text(value: Any, where: str, field_: str, p: _Problems, *, required: bool = False,
          limit: int = MAX_TEXT_BYTES) -> str:
    if value is None:
        if required:
            p.add(where, field_, "missing; expected a non-empty string")
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        p.add(where, field_, f"expected a string, got {type(value).__name__}")
        return ""
    if required and not value.strip():
        p.add(where, field_, "is empty; expected a non-empty string")
    if len(value) > limit // 4 and len(value.encode("utf-8")) > limit:
        p.add(where, field_, f"is {len(value.encode('utf-8'))} bytes; at most {limit} accepted")
    return value


def _seen(value: Any, where: str, field_: str, p: _Problems) -> str | None:
    """first_seen/last_seen: ISO 8601 as MISP emits it (kept as given), or epoch microseconds."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        if value.isdigit():
            return value
        try:
            _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return value
        except ValueError:
            pass
    p.add(where, field_, f"{show_value(value)} is not a time; expected ISO 8601 such as 2024-01-31T12:00:00.000000+00:00")
    return None


def show_value(value: Any) -> str:
    """A value as an error message quotes it (at most 60 characters)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _tags(raw: Any, where: str, p: _Problems, local_out: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Shared tags as {name[, colour][, relationship_type]}; local tags go to `local_out`. A bad
    tag is a problem of its own: a lenient parse drops the tag and keeps what carries it."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        p.part("tag", None, f"{where}.Tag", where, "Tag", "expected a list of tags such as [{\"name\": \"tlp:green\"}]")
        return []
    if len(raw) > MAX_TAGS_PER_ELEMENT:
        p.part("tag", None, f"{where}.Tag", where, "Tag", f"{len(raw)} tags; at most {MAX_TAGS_PER_ELEMENT} accepted")
        return []
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, t in enumerate(raw):
        if isinstance(t, str):
            t = {"name": t}
        if not isinstance(t, dict):
            p.part("tag", None, f"{where}.Tag[{i}]", where, f"Tag[{i}]", "expected {\"name\": ...}")
            continue
        name = t.get("name")
        if not isinstance(name, str) or not name.strip():
            p.part("tag", None, f"{where}.Tag[{i}]", where, f"Tag[{i}].name",
                   "missing; expected a tag name such as tlp:amber")
            continue
        if len(name) > MAX_TAG_NAME:
            p.part("tag", None, f"{where}.Tag[{i}]", where, f"Tag[{i}].name",
                   f"{len(name)} characters; at most {MAX_TAG_NAME} accepted")
            continue
        if name in seen:
            continue  # MISP attaches a tag once
        seen.add(name)
        colour = t.get("colour")
        # keys in sorted order (canonical form): colour, name, relationship_type
        tag: dict[str, Any] = {"colour": colour, "name": name} if isinstance(colour, str) and colour \
            else {"name": name}
        rel = t.get("relationship_type")
        if isinstance(rel, str) and rel:
            tag["relationship_type"] = rel
        if t.get("local") in (True, 1, "1", "true") and local_out is not None:
            local_out.append(tag)
        else:
            out.append(tag)
    return out


def _cluster_tags(raw: dict[str, Any], where: str, p: _Problems) -> Any:
    """An event's or attribute's `Tag` list with the tags of the clusters its `Galaxy` blocks list
    (MISP's `convertGalaxyClustersToTags` on add: a cluster is its `tag_name`, or
    `misp-galaxy:<type>="<uuid>"` without one); `_tags` then drops those already listed. The
    block itself is derived on output (decision 0027), so it is not kept; a cluster marked local
    becomes a local tag, so a node-local annotation stays node-local."""
    tags, galaxies = raw.get("Tag"), raw.get("Galaxy")
    if not galaxies:
        return tags
    if not isinstance(galaxies, list):
        p.add(where, "Galaxy", "expected a list of galaxies such as [{\"type\": ..., \"GalaxyCluster\": [...]}]")
        return tags
    found: list[dict[str, Any]] = []
    for i, galaxy in enumerate(galaxies):
        clusters = galaxy.get("GalaxyCluster") if isinstance(galaxy, dict) else None
        if not isinstance(galaxy, dict) or not isinstance(clusters, (list, type(None))):
            p.add(where, f"Galaxy[{i}]", "expected a galaxy with a list of clusters ({\"GalaxyCluster\": [...]})")
            continue
        for j, cluster in enumerate(clusters or ()):
            place = f"Galaxy[{i}].GalaxyCluster[{j}]"
            if not isinstance(cluster, dict):
                p.add(where, place, "expected a cluster with its tag_name")
                continue
            name = cluster.get("tag_name")
            kind = cluster.get("type") or galaxy.get("type")
            if not name and isinstance(kind, str) and isinstance(cluster.get("uuid"), str) and kind and cluster["uuid"]:
                name = f'{CLUSTER_TAG_PREFIX}{kind}="{cluster["uuid"]}"'
            if not isinstance(name, str) or not name.strip():
                p.add(where, f"{place}.tag_name", 'missing; expected the cluster\'s tag such as misp-galaxy:threat-actor="APT1" '
                      "(or its type and uuid)")
                continue
            tag: dict[str, Any] = {"name": name, "local": cluster.get("local") in (True, 1, "1", "true", "True")}
            if isinstance(cluster.get("relationship_type"), str):
                tag["relationship_type"] = cluster["relationship_type"]
            found.append(tag)
    if not found:
        return tags
    return [*tags, *found] if isinstance(tags, list) else tags if tags is not None else found


def _extra(raw: dict[str, Any], known: frozenset[str]) -> dict[str, Any] | None:
    extra = {k: v for k, v in raw.items() if k not in known and k not in _LOCAL_FIELDS and v is not None}
    # Floats have no canonical encoding: an unknown field's float is kept as its decimal text.
    return canonical.sorted_value(extra, floats_as_text=True) if extra else None


def _sharing_group_uuid(raw: dict[str, Any], distribution: int, where: str, p: _Problems) -> str | None:
    sg = raw.get("sharing_group_uuid")
    if sg is None and isinstance(raw.get("SharingGroup"), dict):
        sg = raw["SharingGroup"].get("uuid")
    sg_uuid = _uuid(sg, where, "sharing_group_uuid", p)
    if distribution == 4 and sg_uuid is None and sg is None:
        p.add(where, "sharing_group_uuid",
              "distribution 4 (sharing group) needs the group: give SharingGroup.uuid or sharing_group_uuid")
    if distribution != 4:
        return None
    return sg_uuid


# --- elements -----------------------------------------------------------------------------------

_ATTRIBUTE_KNOWN = frozenset({
    "uuid", "type", "category", "value", "to_ids", "distribution", "comment", "timestamp", "deleted",
    "disable_correlation", "object_relation", "object_uuid", "data", "malware_binary",
})


def _attribute(raw: Any, where: str, p: _Problems, defaults: ImportDefaults, parsed: ParsedEvent,
               object_uuid: str | None = None) -> ParsedElement | None:
    # The ingest hot path (once per attribute): common well-formed fields take a fast path; anything
    # unusual falls through to the general checks, which name the problem.
    if not isinstance(raw, dict):
        p.add(where, "Attribute", "expected a map with type, category and value")
        return None
    n = len(p.items)
    dt = describe_types()
    get = raw.get
    uuid = get("uuid")
    if uuid.__class__ is str and len(uuid) == 36 and UUID_RE.match(uuid):
        uuid = uuid.lower()
        where_u = f"{where} (uuid {uuid})"
    else:
        where_u = where
        uuid = _uuid(uuid, where, "uuid", p) or str(uuidlib.uuid4())
    type_ = get("type")
    if type_.__class__ is not str or type_ not in dt.types:
        p.add(where_u, "type", f"{show_value(type_)} is not a MISP attribute type; accepted: the {len(dt.types)} "
              "types of describeTypes.json (e.g. ip-dst, domain, md5, url)")
        return None
    category = get("category")
    if category is None or category == "":
        category = dt.sane_defaults[type_].default_category
    elif category.__class__ is not str or type_ not in dt.category_types.get(category, ()):
        p.add(where_u, "category", f"{show_value(category)} does not take type {type_}; accepted: "
              + ", ".join(dt.categories_for(type_)))
    value = get("value")
    if value.__class__ is not str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        else:
            p.add(where_u, "value", f"missing or not a string; expected a {type_} value")
            return None
    if type_ == "malware-sample" and "|" not in value and isinstance(get("data"), str):
        value = _complete_malware_sample(value, get("data"))
    keys: tuple[str, ...] = ()
    try:
        keys = normalise(type_, value)
    except ValueFormatError as e:
        p.add(where_u, "value", f"{show_value(value)}: {e}")
    distribution = get("distribution")
    if distribution.__class__ is str and len(distribution) == 1 and "0" <= distribution <= "5":
        distribution = ord(distribution) - 48
    elif distribution.__class__ is not int or not 0 <= distribution <= 5:
        distribution = _int(distribution, where_u, "distribution", p, 0, 5, 5)
    timestamp = get("timestamp")
    if timestamp.__class__ is str and timestamp.isascii() and timestamp.isdigit() and len(timestamp) < 12:
        timestamp = int(timestamp)
    elif timestamp.__class__ is not int or not 0 <= timestamp <= MAX_TIMESTAMP:
        timestamp = _int(timestamp, where_u, "timestamp", p, 0, MAX_TIMESTAMP, parsed.header["timestamp"])
    to_ids = get("to_ids")
    if to_ids is not True and to_ids is not False:
        to_ids = _bool(to_ids, where_u, "to_ids", p, dt.sane_defaults[type_].to_ids)
    deleted = get("deleted", False)
    if deleted is not True and deleted is not False:
        deleted = _bool(deleted, where_u, "deleted", p)
    no_correlation = get("disable_correlation", False)
    if no_correlation is not True and no_correlation is not False:
        no_correlation = _bool(no_correlation, where_u, "disable_correlation", p)
    comment = get("comment")
    if comment is None or comment.__class__ is not str or len(comment) > MAX_TEXT_BYTES // 4:
        comment = _text(comment, where_u, "comment", p)
    # Keys in sorted order: the body is packed as is (canonical form, see model/canonical.py).
    body: dict[str, Any] = {
        "category": category,
        "comment": comment,
        "deleted": deleted,
        "disable_correlation": no_correlation,
        "distribution": distribution,
        "timestamp": timestamp,
        "to_ids": to_ids,
        "type": type_,
        "uuid": uuid,
        "value": value,
    }
    if distribution == 4 or get("sharing_group_uuid") is not None:
        sg = _sharing_group_uuid(raw, distribution, where_u, p)
        if sg:
            body["sharing_group_uuid"] = sg
    for key in ("first_seen", "last_seen"):
        if get(key) is not None:
            seen = _seen(get(key), where_u, key, p)
            if seen is not None:
                body[key] = seen
    if object_uuid is not None:
        body["object_uuid"] = object_uuid
        body["object_relation"] = _text(get("object_relation"), where_u, "object_relation", p,
                                        required=True, limit=255)
    for key in ("data", "malware_binary"):
        data = get(key)
        if data is not None:
            if not isinstance(data, str):
                p.add(where_u, key, "expected base64 text")
            elif len(data) > MAX_ATTACHMENT_BYTES:
                p.add(where_u, key, f"{len(data)} bytes; at most {MAX_ATTACHMENT_BYTES} accepted")
            else:
                body[key] = data
    local: list[dict[str, Any]] | None = None
    if get("Tag") or get("Galaxy"):
        local = []
        tags = _tags(_cluster_tags(raw, where_u, p), where_u, p, local)
        if tags:
            body["Tag"] = tags
    if not raw.keys() <= _ATTRIBUTE_PLAIN:
        extra = _extra(raw, _ATTRIBUTE_KNOWN)
        if extra:
            body["extra"] = extra
        if get("Sighting"):
            _sightings(get("Sighting"), uuid, where_u, p, parsed)
        if get("ShadowAttribute"):
            _proposals(get("ShadowAttribute"), uuid, where_u, p, parsed, defaults)
    if len(p.items) != n:
        return None
    if len(body) > 10:
        body = {k: body[k] for k in sorted(body)}
    return ParsedElement(KIND_ATTRIBUTE, uuid, body, keys, local or None)


# An attribute with only these keys needs no look for extras, sightings or proposals.
_ATTRIBUTE_PLAIN = _ATTRIBUTE_KNOWN | _LOCAL_FIELDS - {"Sighting", "ShadowAttribute"}


def _complete_malware_sample(filename: str, data: str) -> str:
    """MISP stores a malware-sample as filename|md5; given only the filename and the file, it
    computes the md5 itself (PyMISP sends samples that way)."""
    try:
        content = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return filename  # the value check then names what is wrong
    return f"{filename}|{hashlib.md5(content).hexdigest()}"


_OBJECT_KNOWN = frozenset({
    "uuid", "name", "meta-category", "description", "template_uuid", "template_version", "comment",
    "distribution", "timestamp", "deleted",
})


_REPEATED = "appears twice in the event; uuids must be unique"
# MISP saves an event's elements one by one and refuses a uuid already saved ("The UUID provided is
# not unique"): the first occurrence is kept.
_REPEATED_DROPPED = "an earlier element of the event has this uuid; the first one is kept"


def _repeated(element: ParsedElement | None, where: str, p: _Problems, seen: set[str]) -> None:
    if element is not None and element.uuid in seen:
        if p.lenient:
            p.add(f"{where} (uuid {element.uuid})", "uuid", _REPEATED_DROPPED)
        else:
            p.add(f"{element.kind} {element.uuid}", "uuid", _REPEATED)


def _take_attribute(raw: Any, where: str, p: _Problems, defaults: ImportDefaults, parsed: ParsedEvent,
                    seen: set[str], object_uuid: str | None = None) -> ParsedElement | None:
    """One attribute, or None when it is bad (a lenient parse drops it, with its sightings and
    proposals) or repeats an earlier element's uuid."""
    items = p.items
    mark, sightings, proposals = len(items), len(parsed.sightings), len(parsed.proposals)
    element = _attribute(raw, where, p, defaults, parsed, object_uuid)
    if element is not None and len(items) == mark and element.uuid not in seen:  # the ingest hot path
        seen.add(element.uuid)
        return element
    _repeated(element, where, p, seen)
    p.isolate(mark, KIND_ATTRIBUTE, _given_uuid(raw), where)
    del parsed.sightings[sightings:], parsed.proposals[proposals:]
    return None


_REPORT_KNOWN = frozenset({"uuid", "name", "content", "distribution", "timestamp", "deleted"})


def _report(raw: Any, where: str, p: _Problems, parsed: ParsedEvent) -> ParsedElement | None:
    """One event report (MISP's EventReport): an element of its own, so its distribution and
    sharing group decide where it goes (not the event's header, which every receiver gets)."""
    if not isinstance(raw, dict):
        p.add(where, "EventReport", "expected a map with name and content")
        return None
    uuid = _uuid(raw.get("uuid"), where, "uuid", p) or str(uuidlib.uuid4())
    where_u = f"{where} (uuid {uuid})"
    distribution = _int(raw.get("distribution"), where_u, "distribution", p, 0, 5, 5)
    content = raw.get("content")
    if content is None:
        p.add(where_u, "content", "missing; expected the report's markdown text (it may be empty)")
        content = ""
    else:
        content = _text(content, where_u, "content", p, limit=MAX_REPORT_BYTES)
    body: dict[str, Any] = {
        "content": content,
        "deleted": _bool(raw.get("deleted"), where_u, "deleted", p),
        "distribution": distribution,
        "name": _text(raw.get("name"), where_u, "name", p, required=True, limit=255),
        "timestamp": _int(raw.get("timestamp"), where_u, "timestamp", p, 0, MAX_TIMESTAMP,
                          parsed.header["timestamp"]),
        "uuid": uuid,
    }
    sg = _sharing_group_uuid(raw, distribution, where_u, p)
    if sg:
        body["sharing_group_uuid"] = sg
    extra = _extra(raw, _REPORT_KNOWN)
    if extra:
        body["extra"] = extra
    return ParsedElement(KIND_REPORT, uuid, dict(sorted(body.items())))


def _take_report(raw: Any, where: str, p: _Problems, parsed: ParsedEvent, seen: set[str]) -> None:
    """One event report into the event, unless it is bad (a lenient parse drops it) or repeats an
    earlier element's uuid."""
    mark = len(p.items)
    element = _report(raw, where, p, parsed)
    if element is not None and len(p.items) == mark and element.uuid not in seen:
        seen.add(element.uuid)
        parsed.elements.append(element)
        return
    _repeated(element, where, p, seen)
    p.isolate(mark, KIND_REPORT, _given_uuid(raw), where)


def _object(raw: Any, where: str, p: _Problems, defaults: ImportDefaults, parsed: ParsedEvent,
            seen: set[str], references_at: dict[str, str]) -> None:
    """One object with its attributes and references. A lenient parse drops a bad attribute or
    reference alone, and the whole object (with all it holds) when its own fields are bad, its uuid
    is taken, or the attributes left no longer fill its template."""
    mark = len(p.items)
    if not isinstance(raw, dict):
        p.add(where, "Object", "expected a map with name and Attribute")
        p.isolate(mark, KIND_OBJECT, None, where)
        return
    uuid = _uuid(raw.get("uuid"), where, "uuid", p) or str(uuidlib.uuid4())
    where_u = f"{where} (uuid {uuid})"
    name = _text(raw.get("name"), where_u, "name", p, required=True, limit=255)
    template_uuid = _uuid(raw.get("template_uuid"), where_u, "template_uuid", p)
    distribution = _int(raw.get("distribution"), where_u, "distribution", p, 0, 5, 5)
    version = raw.get("template_version")
    template, missing = resolve_template(name, template_uuid, version if isinstance(version, int) else
                                         int(version) if isinstance(version, str) and version.isdigit() else None,
                                         defaults.templates)
    if missing is not None:
        p.add(where_u, "template_uuid", missing)
    body: dict[str, Any] = {
        "comment": _text(raw.get("comment"), where_u, "comment", p),
        "deleted": _bool(raw.get("deleted"), where_u, "deleted", p),
        "distribution": distribution,
        "meta-category": _text(raw.get("meta-category") or (template.meta_category if template else ""),
                               where_u, "meta-category", p, limit=255),
        "name": name,
        "timestamp": _int(raw.get("timestamp"), where_u, "timestamp", p, 0, MAX_TIMESTAMP,
                          parsed.header["timestamp"]),
        "uuid": uuid,
    }
    if raw.get("description"):
        body["description"] = _text(raw.get("description"), where_u, "description", p)
    if template_uuid:
        body["template_uuid"] = template_uuid
    if raw.get("template_version") not in (None, ""):
        body["template_version"] = str(_int(raw.get("template_version"), where_u, "template_version",
                                            p, 0, 2**31, 0))
    sg = _sharing_group_uuid(raw, distribution, where_u, p)
    if sg:
        body["sharing_group_uuid"] = sg
    for key in ("first_seen", "last_seen"):
        seen_at = _seen(raw.get(key), where_u, key, p)
        if seen_at is not None:
            body[key] = seen_at
    extra = _extra(raw, _OBJECT_KNOWN)
    if extra:
        body["extra"] = extra
    attributes = raw.get("Attribute") or []
    if not isinstance(attributes, list):
        p.add(where_u, "Attribute", "expected a list of attributes")
        attributes = []
    references = raw.get("ObjectReference") or []
    if not isinstance(references, list):
        p.add(where_u, "ObjectReference", "expected a list of references")
        references = []
    given = _given_uuid(raw)
    element = ParsedElement(KIND_OBJECT, uuid, dict(sorted(body.items())))
    _repeated(element, where, p, seen)
    if p.lenient and p.isolate(mark, KIND_OBJECT, given, where):
        _drop_contents(p, where, attributes, references)
        return
    seen.add(uuid)
    sightings, proposals = len(parsed.sightings), len(parsed.proposals)

    members: list[tuple[ParsedElement, str]] = []
    relations: list[tuple[str, str]] = []
    for i, a in enumerate(attributes):
        w = f"{where}.Attribute[{i}]"
        member = _take_attribute(a, w, p, defaults, parsed, seen, object_uuid=uuid)
        if member is not None:
            members.append((member, w))
            if not member.body["deleted"]:
                relations.append((member.body["object_relation"], member.body["type"]))
    if template is not None and not body["deleted"]:  # a deleted object need not be complete
        mark = len(p.items)
        _check_template(template, relations, where_u, p)
        if p.lenient and p.isolate(mark, KIND_OBJECT, given, where):
            seen.discard(uuid)
            seen.difference_update(m.uuid for m, _w in members)
            del parsed.sightings[sightings:], parsed.proposals[proposals:]
            for member, w in members:
                p.drop(KIND_ATTRIBUTE, member.uuid, w, "object_uuid", f"its object {where} is dropped")
            _drop_contents(p, where, [], references)
            return

    taken: list[ParsedElement] = []
    for i, r in enumerate(references):
        w = f"{where}.ObjectReference[{i}]"
        mark = len(p.items)
        reference = _reference(r, w, uuid, p, parsed)
        _repeated(reference, w, p, seen)
        if p.isolate(mark, KIND_REFERENCE, _given_uuid(r), w) or reference is None:
            continue
        seen.add(reference.uuid)
        references_at[reference.uuid] = w
        taken.append(reference)

    parsed.elements.append(element)
    for member, _w in members:
        parsed.elements.append(member)
        if member.local_tags:
            parsed.local_tags[member.uuid] = member.local_tags
    parsed.elements.extend(taken)


def _drop_contents(p: _Problems, where: str, attributes: list[Any], references: list[Any]) -> None:
    """A dropped object's attributes and references, named one by one: they go with it."""
    why = f"its object {where} is dropped"
    for i, a in enumerate(attributes):
        p.drop(KIND_ATTRIBUTE, _given_uuid(a), f"{where}.Attribute[{i}]", "object_uuid", why)
    for i, r in enumerate(references):
        p.drop(KIND_REFERENCE, _given_uuid(r), f"{where}.ObjectReference[{i}]", "object_uuid", why)


def _check_template(template: Any, relations: list[tuple[str, str]], where: str, p: _Problems) -> None:
    present = {rel for rel, _ in relations}
    missing = [r for r in template.required if r not in present]
    if missing:
        p.add(where, "Attribute", f"object '{template.name}' requires relation(s) {', '.join(missing)}")
    if template.required_one_of and not present.intersection(template.required_one_of):
        p.add(where, "Attribute", f"object '{template.name}' requires at least one of: "
              + ", ".join(template.required_one_of))
    for rel, type_ in relations:
        spec = template.relations.get(rel)
        # Relations a template does not list are accepted, as MISP and PyMISP (non-strict) do;
        # a listed relation must carry its template's type.
        if spec is not None and spec.misp_attribute != type_:
            p.add(where, "Attribute", f"relation '{rel}' of object '{template.name}' takes type "
                  f"{spec.misp_attribute}, not {type_}")


_REFERENCE_KNOWN = frozenset({
    "uuid", "object_uuid", "referenced_uuid", "relationship_type", "comment", "timestamp", "deleted",
})


def _reference(raw: Any, where: str, object_uuid: str, p: _Problems, parsed: ParsedEvent) -> ParsedElement | None:
    if not isinstance(raw, dict):
        p.add(where, "ObjectReference", "expected a map with referenced_uuid and relationship_type")
        return None
    n = len(p.items)
    uuid = _uuid(raw.get("uuid"), where, "uuid", p) or str(uuidlib.uuid4())
    where_u = f"{where} (uuid {uuid})"
    body: dict[str, Any] = {
        "comment": _text(raw.get("comment"), where_u, "comment", p),
        "deleted": _bool(raw.get("deleted"), where_u, "deleted", p),
        "object_uuid": object_uuid,
        "referenced_uuid": _uuid(raw.get("referenced_uuid"), where_u, "referenced_uuid", p, required=True),
        "relationship_type": _text(raw.get("relationship_type"), where_u, "relationship_type", p,
                                   required=True, limit=255),
        "timestamp": _int(raw.get("timestamp"), where_u, "timestamp", p, 0, MAX_TIMESTAMP,
                          parsed.header["timestamp"]),
        "uuid": uuid,
    }
    extra = _extra(raw, _REFERENCE_KNOWN)
    if extra:
        body["extra"] = extra
    if len(p.items) != n:
        return None
    return ParsedElement(KIND_REFERENCE, uuid, dict(sorted(body.items())))


def _org(raw: Any) -> dict[str, str] | None:
    if not isinstance(raw, dict):
        return None
    name, uuid = raw.get("name"), raw.get("uuid")
    if not isinstance(name, str) or not isinstance(uuid, str) or not UUID_RE.match(uuid):
        return None
    return {"name": name, "uuid": uuid.lower()}


def _given_uuid(raw: Any) -> str | None:
    """The uuid a part of an event gave, if it is one (to name the part when it is dropped)."""
    value = raw.get("uuid") if isinstance(raw, dict) else None
    return value.lower() if isinstance(value, str) and UUID_RE.match(value) else None


def _sightings(raw: Any, attribute_uuid: str, where: str, p: _Problems, parsed: ParsedEvent) -> None:
    if not raw:
        return
    if not isinstance(raw, list):
        p.part("sighting", None, f"{where}.Sighting", where, "Sighting", "expected a list of sightings")
        return
    for i, s in enumerate(raw):
        w = f"{where}.Sighting[{i}]"
        if not isinstance(s, dict):
            p.part("sighting", None, w, w, "Sighting", "expected a map")
            continue
        mark = len(p.items)
        sighting: dict[str, Any] = {
            "attribute_uuid": attribute_uuid,
            "date_sighting": _int(s.get("date_sighting"), w, "date_sighting", p, 0, MAX_TIMESTAMP,
                                  parsed.header["timestamp"]),
            "source": _text(s.get("source"), w, "source", p, limit=255),
            "type": _int(s.get("type"), w, "type", p, 0, 2, 0),
            "uuid": _uuid(s.get("uuid"), w, "uuid", p) or str(uuidlib.uuid4()),
        }
        org = _org(s.get("Organisation"))
        if org:
            sighting["Organisation"] = org
        if p.isolate(mark, "sighting", _given_uuid(s), w):
            continue
        parsed.sightings.append(sighting)


_PROPOSAL_KNOWN = frozenset({
    "uuid", "type", "category", "value", "to_ids", "comment", "timestamp", "deleted",
    "disable_correlation", "proposal_to_delete", "old_id", "first_seen", "last_seen",
})


def _proposals(raw: Any, attribute_uuid: str | None, where: str, p: _Problems, parsed: ParsedEvent,
               defaults: ImportDefaults) -> None:
    if not raw:
        return
    if not isinstance(raw, list):
        p.part("proposal", None, f"{where}.ShadowAttribute", where, "ShadowAttribute", "expected a list of proposals")
        return
    for i, s in enumerate(raw):
        w = f"{where}.ShadowAttribute[{i}]"
        mark = len(p.items)
        proposal = _proposal(s, w, attribute_uuid, p, parsed)
        if p.isolate(mark, "proposal", _given_uuid(s), w) or proposal is None:
            continue
        parsed.proposals.append(proposal)


def _proposal(s: Any, w: str, attribute_uuid: str | None, p: _Problems, parsed: ParsedEvent) -> dict[str, Any] | None:
    if not isinstance(s, dict):
        p.add(w, "ShadowAttribute", "expected a map")
        return None
    dt = describe_types()
    type_ = s.get("type")
    if not isinstance(type_, str) or type_ not in dt.types:
        p.add(w, "type", f"{show_value(type_)} is not a MISP attribute type")
        return None
    value = s.get("value")
    value = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if not isinstance(value, str):
        p.add(w, "value", f"missing; expected a {type_} value")
        return None
    try:
        normalise(type_, value)
    except ValueFormatError as e:
        p.add(w, "value", f"{show_value(value)}: {e}")
    category = s.get("category") or dt.sane_defaults[type_].default_category
    if not isinstance(category, str) or category not in dt.category_types or type_ not in dt.category_types[category]:
        p.add(w, "category", f"{show_value(category)} does not take type {type_}")
    proposal: dict[str, Any] = {
        "category": category,
        "comment": _text(s.get("comment"), w, "comment", p),
        "deleted": _bool(s.get("deleted"), w, "deleted", p),
        "disable_correlation": _bool(s.get("disable_correlation"), w, "disable_correlation", p),
        "proposal_to_delete": _bool(s.get("proposal_to_delete"), w, "proposal_to_delete", p),
        "timestamp": _int(s.get("timestamp"), w, "timestamp", p, 0, MAX_TIMESTAMP, parsed.header["timestamp"]),
        "to_ids": _bool(s.get("to_ids"), w, "to_ids", p, dt.sane_defaults[type_].to_ids),
        "type": type_,
        "uuid": _uuid(s.get("uuid"), w, "uuid", p) or str(uuidlib.uuid4()),
        "value": value,
    }
    if attribute_uuid:
        proposal["attribute_uuid"] = attribute_uuid
    for key in ("first_seen", "last_seen"):
        seen = _seen(s.get(key), w, key, p)
        if seen is not None:
            proposal[key] = seen
    org = _org(s.get("Org"))
    if org:
        proposal["Org"] = org
    return proposal


def parse_proposal(raw: Any, event_uuid: str, now: int, attribute_uuid: str | None = None,
                   org: dict[str, str] | None = None) -> dict[str, Any]:
    """One proposal (MISP's ShadowAttribute) as a `proposal` record carries it, validated like a
    proposal inside an event; `attribute_uuid` for a change to (or deletion of) that attribute.
    Raises EventError naming the field and what would be accepted."""
    p = _Problems()
    parsed = ParsedEvent({"uuid": event_uuid, "timestamp": now}, [])
    _proposals([raw], attribute_uuid, "ShadowAttribute", p, parsed, None)  # type: ignore[arg-type]
    if p.items or not parsed.proposals:
        raise EventError(event_uuid, [Problem(x.where.replace(".ShadowAttribute[0]", ""), x.field, x.message)
                                      for x in p.items])
    proposal = parsed.proposals[0]
    if org:
        proposal["Org"] = dict(org)
    return proposal


# --- events -------------------------------------------------------------------------------------

_EVENT_KNOWN = frozenset({
    "uuid", "info", "date", "threat_level_id", "analysis", "distribution", "published", "timestamp",
    "publish_timestamp", "extends_uuid", "sharing_group_uuid", "disable_correlation",
})


def unwrap_events(document: Any) -> list[Any]:
    """The event maps in a MISP JSON document: {"Event": …}, {"response": [...]}, a list, or a bare event."""
    if isinstance(document, dict):
        if "response" in document and isinstance(document["response"], list):
            return [e.get("Event", e) if isinstance(e, dict) else e for e in document["response"]]
        if "Event" in document:
            return [document["Event"]]
        return [document]
    if isinstance(document, list):
        return [e.get("Event", e) if isinstance(e, dict) else e for e in document]
    return [document]


def parse_event(raw: Any, defaults: ImportDefaults, *, lenient: bool = False) -> ParsedEvent:
    """Validate one MISP event map; raise EventError naming every problem (up to a limit).

    `lenient` parses as MISP adds an event: an attribute, object, object reference, tag, sighting
    or proposal that does not validate is left out (`ParsedEvent.dropped` names each, with what
    could not stay without it) and the rest is kept; of two elements with one uuid the first is
    kept. Only a problem of the event's own fields raises EventError then."""
    p = _Problems(lenient)
    if not isinstance(raw, dict):
        raise EventError("?", [Problem("event", "Event", "expected a map of MISP event fields")])
    uuid = _uuid(raw.get("uuid"), "event", "uuid", p) or str(uuidlib.uuid4())
    now = defaults.timestamp()
    distribution = _int(raw.get("distribution"), "event", "distribution", p, 0, 4, defaults.distribution)
    date = raw.get("date")
    if date is None or date == "":
        date = _dt.datetime.fromtimestamp(now, _dt.timezone.utc).date().isoformat()
    elif not isinstance(date, str) or not _DATE_RE.match(date):
        p.add("event", "date", f"{show_value(date)} is not a date; expected YYYY-MM-DD")
    orgc = _org(raw.get("Orgc")) or {"name": defaults.org_name, "uuid": defaults.org_uuid}
    header: dict[str, Any] = {
        "Orgc": orgc,
        "analysis": _int(raw.get("analysis"), "event", "analysis", p, 0, 2, 0),
        "date": date,
        "distribution": distribution,
        "info": _text(raw.get("info"), "event", "info", p, required=True),
        "published": _bool(raw.get("published"), "event", "published", p),
        "publish_timestamp": _int(raw.get("publish_timestamp"), "event", "publish_timestamp", p, 0,
                                  MAX_TIMESTAMP, 0),
        "threat_level_id": _int(raw.get("threat_level_id"), "event", "threat_level_id", p, 1, 4, 4),
        "timestamp": _int(raw.get("timestamp"), "event", "timestamp", p, 0, MAX_TIMESTAMP, now),
        "uuid": uuid,
    }
    if raw.get("disable_correlation") is not None:
        header["disable_correlation"] = _bool(raw.get("disable_correlation"), "event", "disable_correlation", p)
    extends = _uuid(raw.get("extends_uuid"), "event", "extends_uuid", p)
    if extends:
        header["extends_uuid"] = extends
    sg = _sharing_group_uuid(raw, distribution, "event", p)
    if sg:
        header["sharing_group_uuid"] = sg
    parsed = ParsedEvent(header, [])
    local: list[dict[str, Any]] = []
    tags = _tags(_cluster_tags(raw, "event", p), "event", p, local)
    if tags:
        header["Tag"] = tags
    if local:
        parsed.local_tags[uuid] = local
    extra = _extra(raw, _EVENT_KNOWN)
    if extra:
        header["extra"] = extra

    attributes = raw.get("Attribute") or []
    objects = raw.get("Object") or []
    if not isinstance(attributes, list):
        p.add("event", "Attribute", "expected a list of attributes")
        attributes = []
    if not isinstance(objects, list):
        p.add("event", "Object", "expected a list of objects")
        objects = []
    seen: set[str] = set()  # element uuids taken so far
    references_at: dict[str, str] = {}  # reference uuid -> its place, should its target be dropped
    for i, a in enumerate(attributes):
        element = _take_attribute(a, f"Attribute[{i}]", p, defaults, parsed, seen)
        if element is not None:
            parsed.elements.append(element)
            if element.local_tags:
                parsed.local_tags[element.uuid] = element.local_tags
    for i, o in enumerate(objects):
        _object(o, f"Object[{i}]", p, defaults, parsed, seen, references_at)
    reports = raw.get("EventReport") or []
    if not isinstance(reports, list):
        p.add("event", "EventReport", "expected a list of event reports")
        reports = []
    for i, r in enumerate(reports):
        _take_report(r, f"EventReport[{i}]", p, parsed, seen)
    _proposals(raw.get("ShadowAttribute"), None, "event", p, parsed, defaults)
    mark = len(p.items)
    _analyst_data(raw, parsed, defaults, p)
    if p.isolate(mark, "analyst-data", None, "Note/Opinion/Relationship"):
        parsed.analyst = []  # a lenient parse keeps the event without its analyst data
    if p.items:
        raise EventError(uuid, p.items[:MAX_ERRORS_REPORTED])
    if p.dropped:
        # MISP saves a reference only when its target is saved: one to a dropped element goes too
        gone = {d.uuid for d in p.dropped if d.uuid and d.kind in (KIND_ATTRIBUTE, KIND_OBJECT)} - seen
        if gone and references_at:
            p.dropped.extend(drop_elements(parsed, {}, gone, references_at, defaults.templates))
        parsed.dropped = p.dropped
    return parsed


def _analyst_data(raw: dict[str, Any], parsed: ParsedEvent, defaults: ImportDefaults, p: _Problems) -> None:
    """The notes, opinions and relationships nested in the event: records of their own (model/analyst.py)."""
    from fedmisp.model.analyst import parse_analyst_data  # (it reads this module's field checks)
    parsed.analyst = parse_analyst_data(raw, parsed.uuid, defaults, p)


def drop_elements(parsed: ParsedEvent, reasons: dict[str, Problem], gone: Iterable[str] = (),
                  where: dict[str, str] | None = None, templates: Mapping[str, Any] | None = None) -> list[Dropped]:
    """Take out of `parsed` the elements `reasons` names (uuid -> why) and what cannot stay without
    them: an object's attributes and references; an object whose attributes left no longer fill
    its template; a reference to a dropped element or to one of `gone` (uuids dropped before).
    Their sightings, proposals and local tags go with them. `where` names elements' places (by
    uuid) for the report. Returns what was dropped, in event order."""
    at = where or {}
    label = {KIND_ATTRIBUTE: "Attribute", KIND_OBJECT: "Object", KIND_REFERENCE: "ObjectReference"}
    why: dict[str, tuple[Problem, ...]] = {u: (r,) for u, r in reasons.items()}
    gone = set(gone)
    members: dict[str, list[ParsedElement]] = {}
    for e in parsed.elements:
        if e.kind == KIND_ATTRIBUTE and "object_uuid" in e.body:
            members.setdefault(e.body["object_uuid"], []).append(e)

    def place(e: ParsedElement) -> str:
        return at.get(e.uuid, label[e.kind])

    changed = True
    while changed:
        changed = False
        for e in parsed.elements:
            if e.uuid in why:
                continue
            w = f"{place(e)} (uuid {e.uuid})"
            owner = e.body.get("object_uuid")
            target = e.body.get("referenced_uuid")
            found: tuple[Problem, ...] = ()
            if owner is not None and owner in why:
                found = (Problem(w, "object_uuid", f"its object {owner} is dropped"),)
            elif e.kind == KIND_REFERENCE and (target in why or target in gone):
                found = (Problem(w, "referenced_uuid", f"refers to {target}, which is dropped from the event"),)
            elif e.kind == KIND_OBJECT and not e.body["deleted"] and \
                    any(m.uuid in why for m in members.get(e.uuid, ())):
                template = resolve_template(e.body["name"], e.body.get("template_uuid"), None, templates)[0]
                if template is not None:
                    p = _Problems(lenient=True)
                    _check_template(template, [(m.body["object_relation"], m.body["type"])
                                               for m in members[e.uuid] if m.uuid not in why and not m.body["deleted"]],
                                    w, p)
                    found = tuple(p.items)
            if found:
                why[e.uuid] = found
                changed = True
    if not why:
        return []
    out = [Dropped(e.kind, e.uuid, place(e), why[e.uuid]) for e in parsed.elements if e.uuid in why]
    parsed.elements = [e for e in parsed.elements if e.uuid not in why]
    parsed.sightings = [s for s in parsed.sightings if s["attribute_uuid"] not in why]
    parsed.proposals = [s for s in parsed.proposals if s.get("attribute_uuid") not in why]
    for u in why:
        parsed.local_tags.pop(u, None)
    return out


# --- MISP JSON out ------------------------------------------------------------------------------

def _misp_tags(tags: Iterable[dict[str, Any]], local: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    out = [dict(t) for t in tags]
    out.extend({**t, "local": True} for t in local)
    return out


def misp_attribute(body: dict[str, Any], local: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One attribute body as MISP JSON (string distribution and timestamp, extra fields back in
    place, shared then local tags); `local` maps element uuids to their local tags."""
    out = {k: v for k, v in body.items() if k not in ("extra", "Tag", "object_uuid")}
    out.update(body.get("extra") or {})
    out["distribution"] = str(body["distribution"])
    out["timestamp"] = str(body["timestamp"])
    tags = _misp_tags(body.get("Tag", ()), local.get(body["uuid"], ()))
    if tags:
        out["Tag"] = tags
    return out


def to_misp(header: dict[str, Any], elements: Iterable[dict[str, Any]],
            sightings: Iterable[dict[str, Any]] = (), proposals: Iterable[dict[str, Any]] = (),
            local_tags: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Re-nest a header and element bodies into a MISP JSON ``{"Event": ...}``."""
    local = local_tags or {}
    event = {k: v for k, v in header.items() if k not in ("extra", "Tag")}
    event.update(header.get("extra") or {})
    for key in ("distribution", "threat_level_id", "analysis", "timestamp", "publish_timestamp"):
        event[key] = str(header[key])
    tags = _misp_tags(header.get("Tag", ()), local.get(header["uuid"], ()))
    if tags:
        event["Tag"] = tags
    attributes: list[dict[str, Any]] = []
    objects: dict[str, dict[str, Any]] = {}
    pending: list[tuple[str, dict[str, Any]]] = []  # (object uuid, member), placed once objects are known
    references: list[dict[str, Any]] = []
    by_uuid: dict[str, dict[str, Any]] = {}
    reports: list[dict[str, Any]] = []
    for body in elements:
        if "content" in body:
            r = {k: v for k, v in body.items() if k != "extra"}
            r.update(body.get("extra") or {})
            r["distribution"] = str(body["distribution"])
            r["timestamp"] = str(body["timestamp"])
            reports.append(r)
        elif "type" in body and "value" in body:
            a = misp_attribute(body, local)
            by_uuid[a["uuid"]] = a
            if "object_uuid" in body:
                pending.append((body["object_uuid"], a))
            else:
                attributes.append(a)
        elif "relationship_type" in body:
            references.append(body)
        else:
            o = {k: v for k, v in body.items() if k != "extra"}
            o.update(body.get("extra") or {})
            o["distribution"] = str(body["distribution"])
            o["timestamp"] = str(body["timestamp"])
            o["Attribute"] = []
            o["ObjectReference"] = []
            objects[o["uuid"]] = o
    for object_uuid, a in pending:
        parent = objects.get(object_uuid)
        if parent is None:  # its object was withheld: MISP has no orphan object attributes
            continue
        parent["Attribute"].append(a)
    for r in references:
        parent = objects.get(r["object_uuid"])
        if parent is None:
            continue
        ref = {k: v for k, v in r.items() if k != "extra"}
        ref.update(r.get("extra") or {})
        ref["timestamp"] = str(r["timestamp"])
        parent["ObjectReference"].append(ref)
    for s in sightings:
        target = by_uuid.get(s["attribute_uuid"])
        if target is not None:
            sighting = {k: v for k, v in s.items() if k != "attribute_uuid"}
            sighting["attribute_uuid"] = s["attribute_uuid"]
            sighting["date_sighting"] = str(s["date_sighting"])
            sighting["type"] = str(s["type"])
            target.setdefault("Sighting", []).append(sighting)
    event_proposals: list[dict[str, Any]] = []
    for sa in proposals:
        out = dict(sa)
        out["timestamp"] = str(sa["timestamp"])
        target = by_uuid.get(sa.get("attribute_uuid", ""))
        if target is not None:
            target.setdefault("ShadowAttribute", []).append(out)
        else:
            event_proposals.append(out)
    event["Attribute"] = attributes
    event["Object"] = list(objects.values())
    if reports:
        event["EventReport"] = reports
    if event_proposals:
        event["ShadowAttribute"] = event_proposals
    return {"Event": event}


def element_kind(body: dict[str, Any]) -> str:
    """An element body's kind, from the fields only it has (the body carries no kind field)."""
    if "content" in body:
        return KIND_REPORT
    if "type" in body and "value" in body:
        return KIND_ATTRIBUTE
    if "relationship_type" in body:
        return KIND_REFERENCE
    return KIND_OBJECT


__all__ = [
    "Dropped", "EventError", "ImportDefaults", "ParsedElement", "ParsedEvent", "Problem",
    "drop_elements", "element_kind", "misp_attribute", "parse_event", "to_misp", "unwrap_events",
    "MAX_TIMESTAMP", "MAX_VALUE_BYTES", "UUID_RE", "show_value",
]
