"""New revisions of an event this node authored, as the REST API's edits make them.

Every change (an edit, an added, changed or deleted attribute, a tag, publishing, deleting the
event) is a new event revision signed by this node and stored through the single writer with
Store.write_events, like any other revision: stored whole or not at all. Only the record's author
may revise an event (docs DESIGN "Records"); edits of other organisations' events are proposals.

MISP's edit semantics (app/Model/Event.php `_edit`): a posted element replaces the held one of the
same uuid only if its timestamp is newer; an element posted without a timestamp is an edit made now;
elements the post does not mention are kept; a posted event whose own timestamp is not newer than
the held one is refused. Each new revision's timestamp is strictly above the held one, because the
store orders revisions by timestamp (a revision in the same second could otherwise lose to the one
it replaces).
"""
from __future__ import annotations

import time
from typing import Any

from fedmisp.model.identity import Identity
from fedmisp.model.misp import (
    EventError, ImportDefaults, KIND_REPORT, ParsedElement, ParsedEvent, Problem, element_kind, parse_event, to_misp,
)
from fedmisp.model.records import Record
from fedmisp.model.revision import SignedEvent, sign_event
from fedmisp.store.query import element_event, is_tombstone
from fedmisp.store.store import Store

# Event header fields a post may change (Orgc and uuid never change).
_HEADER_FIELDS = ("info", "date", "threat_level_id", "analysis", "distribution", "published",
                  "publish_timestamp", "extends_uuid", "sharing_group_uuid", "disable_correlation", "Tag")


class RevisionRefused(ValueError):
    """A change this node will not make; `status` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str, field_: str = "Event"):
        self.status = status
        self.field = field_
        super().__init__(message)


class NotCreator(RevisionRefused):
    """A change to an event another organisation created: only its creator revises it. (MISP's API
    answers such an edit with 403, and PyMISP then sends it as a proposal.)"""

    @classmethod
    def of(cls, event_uuid: str, creator: str) -> "NotCreator":
        return cls(403, f"event {event_uuid} was created by another organisation ({creator}): only its creator "
                   "can revise it; propose the change as a proposal (shadow attribute) instead")


def _timestamp(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) < 12:
        return int(value)
    return None


def _stamp(items: Any, now: int) -> Any:
    """Copies of posted elements; one without a timestamp is an edit made now (MISP)."""
    if not isinstance(items, list):
        return items
    out = []
    for item in items:
        if isinstance(item, dict):
            item = dict(item)
            if item.get("timestamp") in (None, ""):
                item["timestamp"] = now
            for nested in ("Attribute", "ObjectReference"):
                if nested in item:
                    item[nested] = _stamp(item[nested], now)
        out.append(item)
    return out


def held_for_revision(store: Store, identity: Identity, event_uuid: str) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """(header, elements, held timestamp) of an event this node may revise."""
    held = store.held(event_uuid)
    revision = store.revision(event_uuid) if held is not None else None
    if held is None or revision is None or is_tombstone(revision[0].body["event"]):
        raise RevisionRefused(404, f"event {event_uuid} is not held by this node")
    record, elements = revision
    # signed by this node's key, or by a key it rotated away from (decision 0013)
    if record.author != identity.public_key and store.current_key(record.author) != identity.public_key:
        raise NotCreator.of(event_uuid, record.body["event"]["Orgc"]["name"])
    return dict(record.body["event"]), elements, held.timestamp


def revise(store: Store, identity: Identity, defaults: ImportDefaults, event_uuid: str,
           posted: dict[str, Any] | None = None, *, remove: frozenset[str] = frozenset(),
           set_header: dict[str, Any] | None = None, may_publish: bool = True,
           local_tags: dict[str, list[dict[str, Any]]] | None = None, now: int | None = None,
           extra_records: tuple[Record, ...] = ()) -> SignedEvent:
    """A new revision of a held event of this node: `posted` (MISP JSON event fields, Attribute,
    Object) applied with MISP's edit semantics, elements in `remove` dropped (with an object's
    members and references), `set_header` fields set, `local_tags` (element or event uuid -> the
    whole new list) written; `extra_records` (a proposal decision) are stored in the same
    transaction. Raises EventError or RevisionRefused."""
    header, held_elements, held_ts = held_for_revision(store, identity, event_uuid)
    posted = dict(posted or {})
    stamp = max(int(time.time()) if now is None else now, held_ts + 1)
    given_uuid = posted.get("uuid")
    if given_uuid not in (None, "") and str(given_uuid).lower() != event_uuid:
        raise RevisionRefused(400, f"Event.uuid {given_uuid!r} is not the uuid of event {event_uuid}", "uuid")
    given_ts = _timestamp(posted.get("timestamp"))
    if posted.get("timestamp") not in (None, "") and (given_ts is None or given_ts <= held_ts):
        raise RevisionRefused(
            403, "Event could not be saved: Event in the request not newer than the local copy "
            f"(timestamp {posted.get('timestamp')!r}, held {held_ts}); leave timestamp out to edit now",
            "timestamp")
    raw = {k: v for k, v in posted.items() if k not in ("ShadowAttribute", "Sighting")}
    legacy = (header.get("extra") or {}).get("EventReport")
    if legacy is not None:
        # a revision signed before reports were elements (decision 0026) kept them in the header,
        # where they went wherever the header went: this revision makes them elements
        rest = {k: v for k, v in header["extra"].items() if k != "EventReport"}
        if rest:
            header["extra"] = rest
        else:
            header.pop("extra")
        posted_reports = raw.get("EventReport") or []
        posted_uuids = {r.get("uuid") for r in posted_reports if isinstance(r, dict)}
        if isinstance(legacy, list) and isinstance(posted_reports, list):
            raw["EventReport"] = [r for r in legacy if not isinstance(r, dict) or r.get("uuid") not in posted_uuids] \
                + posted_reports
    raw.update(uuid=event_uuid, Orgc=header["Orgc"], timestamp=given_ts or stamp)
    for key in ("info", "date", "distribution", "sharing_group_uuid"):
        if raw.get(key) in (None, "") and key in header:
            raw[key] = header[key]
    raw["Attribute"] = _stamp(raw.get("Attribute"), stamp)
    raw["Object"] = _stamp(raw.get("Object"), stamp)
    if "EventReport" in raw:
        raw["EventReport"] = _stamp(raw.get("EventReport"), stamp)
    parsed = parse_event(raw, defaults)

    for key in _HEADER_FIELDS:
        if key in posted:
            if key in parsed.header:
                header[key] = parsed.header[key]
            else:
                header.pop(key, None)
    if parsed.header.get("extra"):
        header["extra"] = {**header.get("extra", {}), **parsed.header["extra"]}
    header["timestamp"] = parsed.header["timestamp"]
    # MISP: an edit unpublishes the event unless the post publishes it (and the user may publish).
    header["published"] = bool(posted.get("published") in (True, 1, "1", "true")) and may_publish
    for key, value in (set_header or {}).items():
        header[key] = value
    header = dict(sorted(header.items()))

    held_by_uuid = {e["uuid"]: i for i, e in enumerate(held_elements)}
    check_uuids_free(store, event_uuid, [e for e in parsed.elements if e.uuid not in held_by_uuid])
    elements: list[ParsedElement] = [ParsedElement(element_kind(e), e["uuid"], e, None) for e in held_elements]  # type: ignore[arg-type]
    for item in parsed.elements:
        at = held_by_uuid.get(item.uuid)
        if at is None:
            elements.append(item)
            continue
        old = held_elements[at]
        if element_kind(old) != item.kind:
            raise EventError(event_uuid, [Problem(f"{item.kind} {item.uuid}", "uuid",
                                                  f"is the uuid of an {element_kind(old)} of this event")])
        if item.body["timestamp"] > old["timestamp"]:
            elements[at] = item
    if remove:
        elements = [e for e in elements if e.uuid not in remove and e.body.get("object_uuid") not in remove]
    revision = ParsedEvent(header, elements, local_tags={**parsed.local_tags, **(local_tags or {})})
    previous = store.previous_elements(event_uuid)
    signed = sign_event(identity, revision, previous.get)
    signed.extra_records.extend(extra_records)
    return signed


def uuids_in_use(store: Store, event_uuid: str, elements: list[ParsedElement]) -> dict[str, Problem]:
    """The elements whose uuid another held event uses (element uuid -> the problem): MISP keeps
    attribute and object uuids unique across the instance, and the store maps each element uuid
    to one event."""
    problems = {}
    for item in elements:
        other = element_event(store, item.uuid)
        if other is not None and other != event_uuid:
            problems[item.uuid] = Problem(f"{item.kind} {item.uuid}", "uuid", f"already used by event {other}; "
                                          "element uuids must be unique across events")
    return problems


def check_uuids_free(store: Store, event_uuid: str, elements: list[ParsedElement]) -> None:
    """Refuse elements whose uuid another held event uses (`uuids_in_use`)."""
    problems = list(uuids_in_use(store, event_uuid, elements).values())
    if problems:
        raise EventError(event_uuid, problems[:20])


def tombstone(store: Store, identity: Identity, event_uuid: str, now: int | None = None) -> SignedEvent:
    """The last revision of a deleted event: its header marked deleted and no elements, so every
    node that holds the event drops its bodies and indexes, and no older copy can come back
    (decision 0007)."""
    header, _elements, held_ts = held_for_revision(store, identity, event_uuid)
    header["timestamp"] = max(int(time.time()) if now is None else now, held_ts + 1)
    header["extra"] = {**header.get("extra", {}), "deleted": True}
    header.pop("Tag", None)
    return sign_event(identity, ParsedEvent(dict(sorted(header.items())), []))


def misp_element(header: dict[str, Any], elements: list[dict[str, Any]], element_uuid: str) -> dict[str, Any]:
    """The MISP JSON of one held element, wrapped as a post for `revise`: an attribute alone, or an
    object member inside its object with its siblings (so the template check sees the object whole)."""
    by_uuid = {e["uuid"]: e for e in elements}
    body = by_uuid[element_uuid]
    if element_kind(body) == KIND_REPORT:
        return {"EventReport": to_misp(header, [body])["Event"]["EventReport"]}
    object_uuid = body.get("object_uuid") or (body["uuid"] if element_kind(body) == "object" else None)
    if object_uuid is None:
        event = to_misp(header, [body])["Event"]
        return {"Attribute": event["Attribute"]}
    members = [e for e in elements if e["uuid"] == object_uuid or e.get("object_uuid") == object_uuid]
    event = to_misp(header, members)["Event"]
    return {"Object": event["Object"]}
