"""Reads of held events: revisions and their bodies, what is attached to them, where they came from.

Each function reads in the transaction it is given (one snapshot); the Store facade opens one per
call. Bodies read for a caller that shows them are verified against their digests (`revision`);
the ones a sender passes on are not, since their receiver verifies them (`revision_entries`).
"""
from __future__ import annotations

import uuid as _uuid
from typing import Any, Iterable, Iterator

import msgpack

from fedmisp.model import canonical
from fedmisp.model.analyst import current_items, nest_analyst_data
from fedmisp.model.misp import to_misp
from fedmisp.model.records import (
    KIND_ANALYST, KIND_PROPOSAL, KIND_PROPOSAL_DECISION, KIND_SIGHTINGS, SALT_BYTES, Record, check_element, open_element,
    open_record, revision_elements,
)
from fedmisp.model.retraction import Retraction
from fedmisp.model.values import normalise
from fedmisp.policy.holding import correlation_only_items as holding_correlation_only, unpack_views
from fedmisp.store.db import Database, Txn
from fedmisp.store.events import attached_ids, held_retraction
from fedmisp.store.local import local_tags
from fedmisp.store.rows import BE8, EventMeta, HeldEvent, index_key, uuid16


def held(t: Txn, event_uuid: str) -> HeldEvent | None:
    return held_at(t, uuid16(event_uuid))


# --- point reads by stored key (event and element uuids as 16 bytes), for search -----------------

def held_at(t: Txn, ev: bytes) -> HeldEvent | None:
    """The `events` entry of the event `ev`: its current revision and log place."""
    raw = t.get("events", ev)
    return HeldEvent.decode(raw) if raw is not None else None


def revision_record(t: Txn, found: HeldEvent) -> Record:
    """The held revision's record, opened (its signature verified)."""
    return open_record(t.get("records", found.record_id))


def event_meta_at(t: Txn, ev: bytes) -> EventMeta | None:
    raw = t.get("event_meta", ev)
    return EventMeta(*canonical.unpack(raw)) if raw is not None else None


def event_for_id(t: Txn, event_id: int) -> bytes | None:
    """The event (16 bytes) this node numbers `event_id` (MISP's numeric event id)."""
    if not 0 < event_id < 2**63:
        return None
    raw = t.get("event_ids", BE8.pack(event_id))
    return bytes(raw) if raw is not None else None


def event_ids_after(t: Txn, last: int, limit: int) -> list[tuple[int, bytes]]:
    """(event id, event) of up to `limit` held events numbered above `last`, in id order."""
    page = t.items_from("event_ids", BE8.pack(last + 1), limit)
    return [(int.from_bytes(key, "big"), bytes(ev)) for key, ev in page]


def element_at(t: Txn, u: bytes) -> bytes | None:
    """Where the element `u` is held: its event (16) | its body's digest (32), the body's key."""
    raw = t.get("elements", u)
    return bytes(raw) if raw is not None else None


def elements_from(t: Txn, prefix: bytes, limit: int) -> list[bytes]:
    """Up to `limit` held element uuids beginning with `prefix`, in order."""
    found: list[bytes] = []
    cur = t.cursor("elements")
    if cur.set_range(prefix):
        for key in cur.iternext(values=False):
            if not bytes(key).startswith(prefix) or len(found) >= limit:
                break
            found.append(bytes(key))
    return found


def element_body(t: Txn, location: bytes) -> dict[str, Any] | None:
    """The element held at `location` (`element_at`), verified against its digest."""
    body = t.get("bodies", location)
    return check_element(location[16:], bytes(body)) if body is not None else None


def elements_of(t: Txn, ev: bytes, uuids: Iterable[bytes]) -> list[dict[str, Any]]:
    """The verified bodies of those of `uuids` that are elements of the event `ev`, in that order."""
    out = []
    for u in uuids:
        location = element_at(t, u)
        if location is None or location[:16] != ev:
            continue
        element = element_body(t, location)
        if element is not None:
            out.append(element)
    return out


def holding(t: Txn, event_uuid: str) -> Any | None:
    """The stored policy holding of a received event (None for events made or imported here)."""
    raw = t.get("holdings", uuid16(event_uuid))
    return canonical.unpack(raw) if raw is not None else None


def revision_entries(t: Txn, event_uuid: str) -> tuple[Record, list[tuple[bytes, bytes, dict[str, Any]]]] | None:
    """The held revision and, in its order, (digest, body, element) for each body held.

    The bodies are decoded, not hashed again: each was checked against its digest before it
    was stored (the importer computed the digest; a receiver verified it), and what is sent
    from them is verified by its receiver. (The replica builds a policy view of every event
    it offers from these: re-hashing its own store cost a third of a bulk pull's sender time.)
    `check_integrity` is the place that re-verifies what is held."""
    found = held(t, event_uuid)
    if found is None:
        return None
    ev = uuid16(event_uuid)
    entries = []
    unpackb = msgpack.unpackb
    record = revision_record(t, found)
    get = t.getter("bodies")
    for digest in revision_elements(record):
        body = get(ev + digest)
        if body is not None:
            # open_element inlined (once per element of every event offered to a peer)
            try:
                element = unpackb(memoryview(body)[SALT_BYTES:], raw=False, strict_map_key=True,
                                  use_list=True)
            except Exception:  # noqa: BLE001 - open_element below says what is wrong
                element = None
            entries.append((digest, body, element if element.__class__ is dict else open_element(body)))
    return record, entries


def revision_views(t: Txn, event_uuid: str) -> tuple[Record, list[tuple[bytes, Any]]] | None:
    """The held revision and the policy views (policy/model.py) of the bodies held for it, as
    written with it, without decoding a body; None when the store kept none for exactly the
    bodies it holds (a revision written by another path or version: `revision_entries`)."""
    found = held(t, event_uuid)
    if found is None or not t.has("views"):
        return None
    ev = uuid16(event_uuid)
    blob = t.get("views", found.record_id)
    if blob is None:
        return None
    record = revision_record(t, found)
    get = t.getter("bodies")
    digests = {d for d in revision_elements(record) if get(ev + d) is not None}
    views = unpack_views(blob)
    if len(views) != len(digests) or any(d not in digests for d, _ in views):
        return None
    return record, views


def bodies(t: Txn, event_uuid: str, digests: list[bytes]) -> dict[bytes, bytes]:
    """The held bodies among `digests` (unverified: what is sent is checked by its receiver)."""
    ev = uuid16(event_uuid)
    out = {}
    for digest in digests:
        body = t.get("bodies", ev + digest)
        if body is not None:
            out[digest] = bytes(body)
    return out


def held_digests(t: Txn, event_uuid: str) -> set[bytes]:
    """Digests of the element bodies held for an event's current revision."""
    found = held(t, event_uuid)
    if found is None:
        return set()
    ev = uuid16(event_uuid)
    record = revision_record(t, found)
    return {d for d in revision_elements(record) if t.get("bodies", ev + d) is not None}


def event_uuid_for_id(t: Txn, event_id: int) -> str | None:
    """The uuid of the event this node numbers `event_id` (MISP's numeric event id)."""
    ev = event_for_id(t, event_id)
    return str(_uuid.UUID(bytes=ev)) if ev is not None else None


def previous_elements(t: Txn, event_uuid: str) -> dict[str, tuple[bytes, bytes]]:
    """element uuid -> (digest, body) of the held revision, for signing a new one."""
    found = held(t, event_uuid)
    if found is None:
        return {}
    out: dict[str, tuple[bytes, bytes]] = {}
    ev = uuid16(event_uuid)
    record = revision_record(t, found)
    for digest in revision_elements(record):
        body = t.get("bodies", ev + digest)
        if body is not None:
            out[open_element(body)["uuid"]] = (digest, bytes(body))
    return out


def event_uuids(database: Database, *, include_correlation_only: bool = False) -> Iterator[str]:
    """Held events; correlation-only ones (matched, never shown) only when asked for; deleted
    ones (tombstones) never. (One read transaction while the caller iterates.)"""
    with database.read() as t:
        meta = t.getter("event_meta")
        for key in t.cursor("events").iternext(values=False):
            raw = meta(key)
            if raw is not None:
                found = EventMeta(*canonical.unpack(raw))
                if found.deleted or (found.correlation_only and not include_correlation_only):
                    continue
            yield str(_uuid.UUID(bytes=bytes(key)))


def event_meta(t: Txn, event_uuid: str) -> EventMeta | None:
    """Where a held event came from and the few header fields correlation results show."""
    return event_meta_at(t, uuid16(event_uuid))


def revision(t: Txn, event_uuid: str) -> tuple[Record, list[dict[str, Any]]] | None:
    """The held revision and its element bodies in the revision's order."""
    found = held(t, event_uuid)
    if found is None:
        return None
    ev = uuid16(event_uuid)
    record = revision_record(t, found)
    elements = []
    for digest in revision_elements(record):
        body = t.get("bodies", ev + digest)
        if body is not None:
            # Reads verify too: a body altered on disk fails here, not in a peer's hands.
            elements.append(check_element(digest, bytes(body)))
    return record, elements


def event_records(t: Txn, event_uuid: str) -> list[Record]:
    """Sightings and proposal records attached to an event."""
    out = []
    for rid in attached_ids(t, uuid16(event_uuid)):
        raw = t.get("records", rid)
        if raw is not None:
            out.append(open_record(raw))
    return out


def events_with_records(database: Database, page: int = 1000) -> Iterator[str]:
    """Uuids of events that have sightings or proposals attached, read a page at a time (no read
    transaction stays open between pages)."""
    after = b""
    while True:
        keys = []
        with database.read() as t:
            cur = t.cursor("event_extra")
            positioned = cur.set_range(after) if after else cur.first()
            if positioned and after and bytes(cur.key()) == after:
                positioned = cur.next_nodup()
            while positioned and len(keys) < page:
                keys.append(bytes(cur.key()))
                positioned = cur.next_nodup()
        if not keys:
            return
        yield from (str(_uuid.UUID(bytes=k)) for k in keys)
        after = keys[-1]


def correlation_only_items(t: Txn, event_uuid: str) -> set[str]:
    """Elements of a shown event held only for correlation (they came over correlation-only
    links at their held level): matched, never shown (policy Holding.correlation_levels)."""
    raw = t.get("holdings", uuid16(event_uuid))
    if raw is None:
        return set()
    return holding_correlation_only(canonical.unpack(raw))  # (policy/holding.py)


def export_event(t: Txn, event_uuid: str) -> dict[str, Any] | None:
    """The event as MISP JSON ``{"Event": ...}``, with its sightings, proposals and local tags."""
    found = revision(t, event_uuid)
    if found is None:
        return None
    record, elements = found
    hidden = correlation_only_items(t, event_uuid)
    if hidden:
        elements = [e for e in elements if e["uuid"] not in hidden]
    sightings: list[dict[str, Any]] = []
    proposals: list[dict[str, Any]] = []
    extras = event_records(t, event_uuid)
    decided = {bytes(r.body["proposal"]) for r in extras if r.kind == KIND_PROPOSAL_DECISION}
    for extra in extras:
        if extra.kind == KIND_SIGHTINGS:
            sightings.extend(extra.body["sightings"])
        elif extra.kind == KIND_PROPOSAL and extra.id not in decided:
            proposals.append(extra.body["proposal"])  # accepted or discarded ones are not shown
    local = local_tags(t, [event_uuid] + [e["uuid"] for e in elements])
    event = to_misp(record.body["event"], elements, _distinct_sightings(sightings), proposals, local)
    analyst = [r for r in extras if r.kind == KIND_ANALYST]
    if analyst:  # notes, opinions and relationships where MISP nests them (model/analyst.py)
        nest_analyst_data(event, [body for body, _ in current_items(analyst).values()])
    return event


def attributes_by(t: Txn, index: str, key: str) -> list[str]:
    """Attribute uuids under one key of ix_value (normalised), ix_type or ix_tag."""
    cur = t.cursor(index)
    if not cur.set_key(index_key(key)):
        return []
    return [str(_uuid.UUID(bytes=bytes(v[16:]))) for v in cur.iternext_dup()]


def find_value(t: Txn, value: str, type_: str | None = None) -> list[str]:
    """Attribute uuids whose normalised value (or one half of a composite) equals `value`'s."""
    keys: list[str] = []
    if type_ is not None:
        keys.extend(normalise(type_, value))
    else:
        keys.append(value.strip())
    out: list[str] = []
    for k in dict.fromkeys(keys):
        out.extend(attributes_by(t, "ix_value", k))
    return out


def retraction(t: Txn, event_uuid: str) -> tuple[Retraction, Record, int, str] | None:
    """The latest retraction held for an event: what it says, its record, the level it is held
    at and the peer it came from."""
    found = held_retraction(t, uuid16(event_uuid))
    return found[:4] if found is not None else None


def _distinct_sightings(sightings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One sighting per uuid: a node can hold a sighting and an anonymised copy of it (a peer that
    strips the reporting org re-signs the copy); the one that names its org is kept."""
    by_uuid: dict[Any, dict[str, Any]] = {}
    for s in sightings:
        key = s.get("uuid") or id(s)
        held = by_uuid.get(key)
        if held is None or ("Organisation" in s and "Organisation" not in held):
            by_uuid[key] = s
    return list(by_uuid.values())



class IndexView:
    """The correlation indexes and attribute bodies over one read transaction: what
    correlate/engine.py reads, by index ("value", "ip", "net", "ssdeep"), never by table."""
    __slots__ = ("_t", "_cursors", "_metas", "_lengths")
    _TABLES = {"value": "ix_value", "ip": "ix_ip", "net": "ix_net", "ssdeep": "ix_ssdeep"}

    def __init__(self, t: Txn):
        self._t = t
        # one cursor per index for the point lookups, whose results are read out before the next
        # (a CIDR match seeks once per prefix length: a cursor each time was a fifth of its cost)
        self._cursors: dict[str, Any] = {}
        # one transaction: an event's meta and the prefix lengths an index holds cannot change
        self._metas: dict[bytes, EventMeta | None] = {}
        self._lengths: dict[tuple[str, bytes], tuple[int, ...]] = {}

    def _cursor(self, index: str) -> Any:
        cursor = self._cursors.get(index)
        if cursor is None:
            cursor = self._cursors[index] = self._t.cursor(self._TABLES[index])
        return cursor

    def refs(self, index: str, key: bytes, at_most: int) -> tuple[int, list[bytes]]:
        """How many refs (event uuid | attribute uuid) are under `key`, and the refs; none when
        there are more than `at_most` (an over-correlating value is counted, not read)."""
        cursor = self._cursor(index)
        if not cursor.set_key(key):
            return 0, []
        count = cursor.count()
        return count, ([bytes(v) for v in cursor.iternext_dup()] if count <= at_most else [])

    def key_at_or_after(self, index: str, key: bytes) -> bytes | None:
        """The first key of the index at or after `key`."""
        cursor = self._cursor(index)
        return bytes(cursor.key()) if cursor.set_range(key) else None

    def prefix_lengths(self, index: str, family: bytes) -> tuple[int, ...]:
        """The prefix lengths (keys' second byte) the index holds under `family` (their first),
        ascending: found by seeking once per length held, and kept for the view's life."""
        known = self._lengths.get((index, family))
        if known is not None:
            return known
        lengths: list[int] = []
        prefix = 0
        while prefix < 256:
            found = self.key_at_or_after(index, family + bytes([prefix]))
            if found is None or found[:1] != family or len(found) < 2:
                break
            lengths.append(found[1])
            prefix = found[1] + 1
        known = self._lengths[(index, family)] = tuple(lengths)
        return known

    def refs_between(self, index: str, low: bytes, high: bytes, at_most: int) -> list[bytes] | None:
        """The refs under every key from `low` to `high`, both included, in key order; None when
        there are more than `at_most`."""
        cursor = self._cursor(index)
        refs: list[bytes] = []
        if not cursor.set_range(low):
            return refs
        for key, ref in cursor:
            if key > high:
                break
            refs.append(bytes(ref))
            if len(refs) > at_most:
                return None
        return refs

    def attribute_body(self, ref: bytes) -> bytes | None:
        """The held body of the attribute a ref names, if it is still in that event (unverified)."""
        t = self._t
        located = t.get("elements", ref[16:])
        if located is None or located[:16] != ref[:16]:
            return None
        body = t.get("bodies", bytes(located))
        return bytes(body) if body is not None else None

    def event_meta(self, ev: bytes) -> EventMeta | None:
        if ev in self._metas:
            return self._metas[ev]
        if len(self._metas) >= 4096:  # a bound: a view over a huge event's correlations
            self._metas.clear()
        meta = self._metas[ev] = event_meta_at(self._t, ev)
        return meta
