"""MISP 2.5 analyst data (notes, opinions, relationships) as signed records attached to an event
(decision 0029).

An analyst-data item is not its event's author's data: any organisation may add one on another
organisation's event, attribute, object, event report or on another item (they nest). Each item
travels as its own record (`KIND_ANALYST`), signed by its creator's node, attached to its event
like sightings and proposals, with its own distribution (0-4) and sharing group:

    {"event_uuid": ..., "type": "Note" | "Opinion" | "Relationship", "item": {
        uuid, object_uuid, object_type, orgc_uuid, Orgc {uuid, name}?, authors, created, modified,
        distribution, sharing_group_uuid (level 4), note + language | opinion + comment |
        relationship_type + related_object_uuid + related_object_type, deleted?}}

An edit is a newer record of the same item uuid (newest wins, by `modified` then record id); a
delete is a record of the item with `deleted: true` and no content (a tombstone), which wins the
same way. Times are integer seconds (MISP shows them as "YYYY-MM-DD HH:MM:SS", UTC).

This module parses them out of MISP JSON (`parse_analyst_data`, `parse_item`), checks a received
one's shape (`analyst_problem`), picks the current items of an event (`current_items`) and puts
them back where MISP nests them (`nest_analyst_data`).
"""
from __future__ import annotations

import datetime as _dt
import uuid as uuidlib
from typing import Any, Iterable

from fedmisp.model.misp import (
    MAX_TIMESTAMP, UUID_RE, ImportDefaults, _int, _org, _Problems, _sharing_group_uuid, _text, _uuid, show_value,
)

NOTE, OPINION, RELATIONSHIP = "Note", "Opinion", "Relationship"
TYPES = (NOTE, OPINION, RELATIONSHIP)
# what an item may be attached to (MISP's AnalystData::$valid_targets)
TARGET_TYPES = frozenset({"Attribute", "Event", "EventReport", "GalaxyCluster", "Galaxy", "Object", "Note",
                          "Opinion", "Relationship", "Organisation", "SharingGroup"})
# the targets an item attached to an event can have here: the event, its elements, other items
ELEMENT_TARGETS = frozenset({"Attribute", "Object", "EventReport"})
MAX_NESTING = 16  # items on items on items...: deep enough for any thread, bounded for a hostile file
MAX_AUTHORS = 255  # MISP: authors varchar(255)
MAX_NOTE_BYTES = 65_535  # MISP: note is TEXT
MAX_LANGUAGE = 16  # an RFC 5646 tag

_CONTENT = {NOTE: ("note", "language"), OPINION: ("opinion", "comment"),
            RELATIONSHIP: ("relationship_type", "related_object_uuid", "related_object_type")}
_COMMON = ("uuid", "object_uuid", "object_type", "orgc_uuid", "Orgc", "authors", "created", "modified",
           "distribution", "sharing_group_uuid", "deleted")


def misp_time(seconds: int) -> str:
    """An item's time as MISP writes it (UTC, "YYYY-MM-DD HH:MM:SS"; PyMISP reads it as UTC)."""
    return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _when(value: Any, where: str, field_: str, p: _Problems, default: int) -> int:
    """created/modified as MISP ("2024-01-31 12:00:00", UTC), ISO 8601 or epoch seconds gives them."""
    if value is None or value == "":
        return default
    if isinstance(value, float) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) or isinstance(value, str) and value.isdigit():
        return _int(value, where, field_, p, 0, MAX_TIMESTAMP, default)
    if isinstance(value, str):
        try:
            moment = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=_dt.timezone.utc)
            seconds = int(moment.timestamp())
            if 0 <= seconds <= MAX_TIMESTAMP:
                return seconds
    p.add(where, field_, f"{show_value(value)} is not a time; expected YYYY-MM-DD HH:MM:SS (UTC) or epoch seconds")
    return default


def parse_item(raw: Any, type_: str, where: str, p: _Problems, defaults: ImportDefaults, *,
               object_uuid: str | None = None, object_type: str | None = None) -> dict[str, Any] | None:
    """One MISP Note, Opinion or Relationship map as an item body (its nested items not included);
    problems are added to `p`. `object_uuid`/`object_type`: its target, when the nesting says it."""
    if not isinstance(raw, dict):
        p.add(where, type_, "expected a map")
        return None
    now = defaults.timestamp()
    target = _uuid(raw.get("object_uuid"), where, "object_uuid", p) or object_uuid
    kind = raw.get("object_type") or object_type
    if target is None:
        p.add(where, "object_uuid", "missing; expected the UUID of what it is attached to")
    if kind not in TARGET_TYPES:
        p.add(where, "object_type", f"{show_value(kind)} is not a target; expected one of {', '.join(sorted(TARGET_TYPES))}")
    distribution = _int(raw.get("distribution"), where, "distribution", p, 0, 4, defaults.distribution)
    created = _when(raw.get("created"), where, "created", p, now)
    orgc = _org(raw.get("Orgc"))
    orgc_uuid = _uuid(raw.get("orgc_uuid"), where, "orgc_uuid", p) or (orgc or {}).get("uuid") or defaults.org_uuid
    item: dict[str, Any] = {
        "uuid": _uuid(raw.get("uuid"), where, "uuid", p) or str(uuidlib.uuid4()),
        "object_uuid": target or "", "object_type": kind if isinstance(kind, str) else "",
        "orgc_uuid": orgc_uuid,
        "authors": _text(raw.get("authors"), where, "authors", p, limit=MAX_AUTHORS),
        "created": created,
        "modified": _when(raw.get("modified"), where, "modified", p, created),
        "distribution": distribution,
    }
    if orgc is not None and orgc["uuid"] == orgc_uuid:
        item["Orgc"] = orgc
    elif orgc_uuid == defaults.org_uuid:
        item["Orgc"] = {"name": defaults.org_name, "uuid": orgc_uuid}
    sg = _sharing_group_uuid(raw, distribution, where, p)
    if sg:
        item["sharing_group_uuid"] = sg
    if type_ == NOTE:
        item["note"] = _text(raw.get("note"), where, "note", p, required=True, limit=MAX_NOTE_BYTES)
        language = _text(raw.get("language"), where, "language", p, limit=MAX_LANGUAGE)
        if language:
            item["language"] = language
    elif type_ == OPINION:
        item["opinion"] = _int(raw.get("opinion"), where, "opinion", p, 0, 100, 50)
        if raw.get("opinion") in (None, ""):
            p.add(where, "opinion", "missing; expected an integer 0 to 100")
        item["comment"] = _text(raw.get("comment"), where, "comment", p)
    else:
        item["relationship_type"] = _text(raw.get("relationship_type"), where, "relationship_type", p, limit=255)
        item["related_object_uuid"] = _uuid(raw.get("related_object_uuid"), where, "related_object_uuid", p,
                                            required=True) or ""
        related = raw.get("related_object_type")
        if related not in TARGET_TYPES:
            p.add(where, "related_object_type",
                  f"{show_value(related)} is not a type; expected one of {', '.join(sorted(TARGET_TYPES))}")
        item["related_object_type"] = related if isinstance(related, str) else ""
    return dict(sorted(item.items()))


def _walk(raw: dict[str, Any], target_uuid: str, target_type: str, where: str, p: _Problems,
          defaults: ImportDefaults, out: list[tuple[str, dict[str, Any]]], depth: int) -> None:
    """The Note/Opinion/Relationship lists of one MISP map, and theirs, into `out`."""
    for type_ in TYPES:
        items = raw.get(type_)
        if not items:
            continue
        if not isinstance(items, list):
            p.add(where, type_, f"expected a list of {type_.lower()}s")
            continue
        if depth >= MAX_NESTING:
            p.add(where, type_, f"analyst data nested deeper than {MAX_NESTING} levels")
            continue
        for i, child in enumerate(items):
            w = f"{where}.{type_}[{i}]"
            item = parse_item(child, type_, w, p, defaults, object_uuid=target_uuid, object_type=target_type)
            if item is None:
                continue
            out.append((type_, item))
            _walk(child, item["uuid"], type_, w, p, defaults, out, depth + 1)


def parse_analyst_data(raw: dict[str, Any], event_uuid: str, defaults: ImportDefaults,
                       p: _Problems) -> list[dict[str, Any]]:
    """Every analyst-data item nested in a MISP event map (on the event, its attributes, objects,
    object attributes, reports and on each other), as record bodies {event_uuid, type, item}."""
    out: list[tuple[str, dict[str, Any]]] = []
    _walk(raw, event_uuid, "Event", "event", p, defaults, out, 0)

    def each(key: str) -> Iterable[tuple[int, dict[str, Any]]]:
        value = raw.get(key)
        return ((i, v) for i, v in enumerate(value) if isinstance(v, dict)) if isinstance(value, list) else ()

    # the ingest hot path: once per attribute, so a map without analyst data costs three lookups
    for i, a in each("Attribute"):
        if ("Note" in a or "Opinion" in a or "Relationship" in a) and isinstance(a.get("uuid"), str):
            _walk(a, a["uuid"].lower(), "Attribute", f"Attribute[{i}]", p, defaults, out, 0)
    for i, o in each("Object"):
        if ("Note" in o or "Opinion" in o or "Relationship" in o) and isinstance(o.get("uuid"), str):
            _walk(o, o["uuid"].lower(), "Object", f"Object[{i}]", p, defaults, out, 0)
        members = o.get("Attribute")
        for j, a in enumerate(members if isinstance(members, list) else ()):
            if isinstance(a, dict) and ("Note" in a or "Opinion" in a or "Relationship" in a) \
                    and isinstance(a.get("uuid"), str):
                _walk(a, a["uuid"].lower(), "Attribute", f"Object[{i}].Attribute[{j}]", p, defaults, out, 0)
    for i, r in each("EventReport"):
        if isinstance(r.get("uuid"), str):
            _walk(r, r["uuid"].lower(), "EventReport", f"EventReport[{i}]", p, defaults, out, 0)
    seen: set[str] = set()
    for type_, item in out:
        if item["uuid"] in seen:
            p.add(f"{type_} {item['uuid']}", "uuid", "appears twice in the event; uuids must be unique")
        seen.add(item["uuid"])
    return [{"event_uuid": event_uuid, "type": type_, "item": item} for type_, item in out]


def tombstone(body: dict[str, Any], modified: int) -> dict[str, Any]:
    """The record body that deletes an item: its place and reach, no content."""
    item = {k: v for k, v in body["item"].items() if k in _COMMON}
    item["deleted"] = True
    item["modified"] = max(modified, item.get("modified", 0) + 1)
    return {"event_uuid": body["event_uuid"], "type": body["type"], "item": dict(sorted(item.items()))}


# --- received shape -----------------------------------------------------------------------------

def _is_uuid(value: Any) -> bool:
    return value.__class__ is str and bool(UUID_RE.match(value))


def _is_int(value: Any, lo: int, hi: int) -> bool:
    return value.__class__ is int and lo <= value <= hi


def analyst_problem(body: Any) -> str | None:
    """What is wrong with a received analyst-data record body, naming the field and what is
    accepted; None if nothing. Every field is checked against its domain (model/received.py's
    way: a peer's data is its author's, but this node reads each of these)."""
    if body.__class__ is not dict:
        return "analyst-data: expected a map {event_uuid, type, item}"
    if not _is_uuid(body.get("event_uuid")):
        return "analyst-data.event_uuid: expected a UUID"
    type_ = body.get("type")
    if type_ not in TYPES:
        return f"analyst-data.type: {show_value(type_)}; expected Note, Opinion or Relationship"
    item = body.get("item")
    if item.__class__ is not dict:
        return "analyst-data.item: expected a map"
    allowed = set(_COMMON) | set(_CONTENT[type_])
    for name in item:
        if name not in allowed:
            return f"analyst-data.item.{name}: not a field of a {type_}"
    for name in ("uuid", "object_uuid", "orgc_uuid"):
        if not _is_uuid(item.get(name)):
            return f"analyst-data.item.{name}: {show_value(item.get(name))} is not a UUID"
    if item.get("object_type") not in TARGET_TYPES:
        return f"analyst-data.item.object_type: {show_value(item.get('object_type'))} is not a target type"
    for name in ("created", "modified"):
        if not _is_int(item.get(name), 0, MAX_TIMESTAMP):
            return f"analyst-data.item.{name}: expected an integer timestamp"
    if not _is_int(item.get("distribution"), 0, 4):
        return f"analyst-data.item.distribution: {show_value(item.get('distribution'))} is not an integer 0 to 4"
    sg = item.get("sharing_group_uuid")
    if item["distribution"] == 4 and not _is_uuid(sg) or sg is not None and not _is_uuid(sg):
        return "analyst-data.item.sharing_group_uuid: distribution 4 needs a sharing group UUID"
    orgc = item.get("Orgc")
    if orgc is not None and not (orgc.__class__ is dict and orgc.get("name").__class__ is str
                                 and orgc.get("uuid") == item["orgc_uuid"]):
        return "analyst-data.item.Orgc: expected {uuid: the orgc_uuid, name: string}"
    if item.get("authors") is not None and item["authors"].__class__ is not str:
        return "analyst-data.item.authors: expected a string"
    deleted = item.get("deleted")
    if deleted is not None and deleted is not True:
        return "analyst-data.item.deleted: expected true or absent"
    if deleted:
        if any(name in item for name in _CONTENT[type_]):
            return "analyst-data.item: a deleted item carries no content"
        return None
    if type_ == NOTE:
        if item.get("note").__class__ is not str:
            return "analyst-data.item.note: expected a string"
        if item.get("language") is not None and item["language"].__class__ is not str:
            return "analyst-data.item.language: expected a string"
    elif type_ == OPINION:
        if not _is_int(item.get("opinion"), 0, 100):
            return f"analyst-data.item.opinion: {show_value(item.get('opinion'))} is not an integer 0 to 100"
        if item.get("comment") is not None and item["comment"].__class__ is not str:
            return "analyst-data.item.comment: expected a string"
    else:
        if item.get("relationship_type").__class__ is not str:
            return "analyst-data.item.relationship_type: expected a string"
        if not _is_uuid(item.get("related_object_uuid")):
            return "analyst-data.item.related_object_uuid: expected a UUID"
        if item.get("related_object_type") not in TARGET_TYPES:
            return "analyst-data.item.related_object_type: not a type MISP relates"
    return None


# --- the current items of an event, and MISP JSON out --------------------------------------------

def newer(a: tuple[dict[str, Any], bytes], b: tuple[dict[str, Any], bytes]) -> bool:
    """Whether record body `a` (with its record id) supersedes `b` for the same item."""
    return (a[0]["item"]["modified"], a[1]) > (b[0]["item"]["modified"], b[1])


def current_items(records: Iterable[Any]) -> dict[str, tuple[dict[str, Any], Any]]:
    """item uuid -> (body, record) of the newest record of each item held (a tombstone included:
    callers skip deleted items)."""
    best: dict[str, tuple[dict[str, Any], Any]] = {}
    for record in records:
        body = record.body
        u = body["item"]["uuid"]
        held = best.get(u)
        if held is None or newer((body, record.id), (held[0], held[1].id)):
            best[u] = (body, record)
    return best


def item_id(item_uuid: str) -> int:
    """An item's numeric id: the first 7 bytes of its uuid, as attributes' (decision 0005)."""
    return int(item_uuid.replace("-", "")[:14], 16)


def item_json(type_: str, item: dict[str, Any], orgs: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """One item as MISP JSON (its nested items not included)."""
    out = {k: v for k, v in item.items() if k not in ("Orgc", "deleted")}
    out["id"] = str(item_id(item["uuid"]))
    out["created"] = misp_time(item["created"])
    out["modified"] = misp_time(item["modified"])
    out["distribution"] = str(item["distribution"])
    if type_ == OPINION:
        out["opinion"] = str(item["opinion"])
    out["note_type_name"] = type_
    out["note_type"] = str(TYPES.index(type_))
    orgc = item.get("Orgc") or (orgs or {}).get(item["orgc_uuid"])
    out["Orgc"] = {"uuid": item["orgc_uuid"], "name": (orgc or {}).get("name", "")}
    return out


def nest_analyst_data(event: dict[str, Any], items: Iterable[dict[str, Any]],
                      orgs: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Put items (record bodies, deleted ones skipped) into a MISP JSON event (``{"Event": ...}``
    or the event map) where MISP nests them: under their target's Note/Opinion/Relationship list.
    An item whose target is not in the event (withheld, or deleted) is left out, and so are the
    items on it."""
    ev = event.get("Event", event)
    targets: dict[str, dict[str, Any]] = {ev["uuid"]: ev}
    for a in ev.get("Attribute", ()):
        targets[a["uuid"]] = a
    for o in ev.get("Object", ()):
        targets[o["uuid"]] = o
        for a in o.get("Attribute", ()):
            targets[a["uuid"]] = a
    for r in ev.get("EventReport", ()):
        targets[r["uuid"]] = r
    pending = sorted((b for b in items if not b["item"].get("deleted")),
                     key=lambda b: (b["item"]["created"], b["item"]["uuid"]))
    while pending:  # items on items: placed once their target is
        left = []
        for body in pending:
            item = body["item"]
            target = targets.get(item["object_uuid"])
            if target is None:
                left.append(body)
                continue
            out = item_json(body["type"], item, orgs)
            target.setdefault(body["type"], []).append(out)
            targets[item["uuid"]] = out
        if len(left) == len(pending):
            break
        pending = left
    return event


__all__ = [
    "ELEMENT_TARGETS", "NOTE", "OPINION", "RELATIONSHIP", "TARGET_TYPES", "TYPES", "analyst_problem",
    "current_items", "item_id", "item_json", "misp_time", "nest_analyst_data", "newer", "parse_analyst_data", "parse_item",
    "tombstone",
]
