"""The shape checks of what arrives from a peer (model/misp.py writes the form they check).

A revision from a peer was validated by its author's node (model/misp.py parse_event), and its signature
says who made it, not that it is well-formed: a peer's bug or a hostile key could sign anything.
Before policy, the store or the API read a received header or element, its fields are checked
against the form parse_event writes (types and ranges, not every MISP rule: a peer's data stays
its author's). A field this node reads that is the wrong type refuses the element (or the event).

Other received kinds are checked where they are read: records, element digests and bodies in
model/records.py (`open_record`, `body_problem`), org records in model/org.py (`read_org`),
retractions in model/retraction.py (`read_retraction`), proposals and decisions in
store/proposals.py, and a changes page and its offers in gossip/session.py.
"""
from __future__ import annotations

from typing import Any

from fedmisp.model.misp import MAX_TIMESTAMP, UUID_RE, show_value

_RECEIVED_RULES: dict[str, Any] = {
    **{name: str for name in ("type", "value", "category", "comment", "name", "object_relation", "relationship_type",
                              "meta-category", "template_version", "description", "first_seen", "last_seen", "info",
                              "date", "sharing_group_uuid", "object_uuid", "referenced_uuid", "template_uuid",
                              "content")},
    **{name: bool for name in ("to_ids", "deleted", "disable_correlation", "published")},
    "timestamp": (0, MAX_TIMESTAMP), "publish_timestamp": (0, MAX_TIMESTAMP), "distribution": (0, 5),
    "threat_level_id": (1, 4), "analysis": (0, 2),
}


# what every node writes (and the export reads) in each kind of body
_RECEIVED_HEADER = ("info", "distribution", "threat_level_id", "analysis", "timestamp", "publish_timestamp")
_RECEIVED_ATTRIBUTE = ("type", "value", "distribution", "timestamp")
_RECEIVED_REFERENCE = ("object_uuid", "referenced_uuid", "timestamp")
_RECEIVED_OBJECT = ("name", "distribution", "timestamp")
_RECEIVED_REPORT = ("name", "content", "distribution", "timestamp")


def received_problem(body: Any, *, header: bool = False) -> str | None:
    """What is wrong with a received element (or, `header`, an event header) in the fields this
    node reads, naming the field and what is accepted; None if nothing. (Once per element pulled:
    one pass over the body's own fields.)"""
    what = "event" if header else "element"
    if body.__class__ is not dict:
        return f"{what}: expected a map"
    rules = _RECEIVED_RULES
    for name, value in body.items():
        rule = rules.get(name)
        if rule is None or value is None:
            continue
        if rule is str:
            if value.__class__ is not str:
                return f"{what}.{name}: expected a string, got {type(value).__name__}"
        elif rule is bool:
            if value.__class__ is not bool:
                return f"{what}.{name}: expected true or false, got {show_value(value)}"
        elif value.__class__ is not int or not rule[0] <= value <= rule[1]:
            return f"{what}.{name}: {show_value(value)} is not an integer {rule[0]} to {rule[1]}"
    get = body.get
    u = get("uuid")
    if not (u.__class__ is str and UUID_RE.match(u)):
        return f"{what}.uuid: {show_value(u)} is not a UUID"
    tags = get("Tag")
    if tags is not None and not (tags.__class__ is list and all(
            t.__class__ is dict and t.get("name").__class__ is str for t in tags)):
        return f"{what}.Tag: expected a list of {{name: string}}"
    extra = get("extra")
    if extra is not None and extra.__class__ is not dict:
        return f"{what}.extra: expected a map"
    if header:
        required = _RECEIVED_HEADER
        if get("distribution") is not None and get("distribution") > 4:
            return f"event.distribution: {get('distribution')} is not an integer 0 to 4"
        orgc = get("Orgc")
        if not (isinstance(orgc, dict) and isinstance(orgc.get("name"), str)
                and isinstance(orgc.get("uuid"), str) and UUID_RE.match(orgc["uuid"])):
            return "event.Orgc: expected {uuid: a UUID, name: string}"
    elif "content" in body:
        if "value" in body or "type" in body or "relationship_type" in body or "object_uuid" in body:
            return f"{what}.content: an event report has no type, value, relationship_type or object_uuid"
        required = _RECEIVED_REPORT
    elif "value" in body or "type" in body:
        required = _RECEIVED_ATTRIBUTE
    elif "relationship_type" in body:
        required = _RECEIVED_REFERENCE
    else:
        required = _RECEIVED_OBJECT
    for name in required:
        if get(name) is None:
            return f"{what}.{name}: missing"
    return None


__all__ = ["received_problem"]
