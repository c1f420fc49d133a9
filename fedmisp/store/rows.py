"""What the store writes, as plain values: index rows, stored event entries, the worker blob.

Pure functions and records, no LMDB: an element's rows are built here in whatever process has the
element (the importer's children, the replica's row workers), cross to the single writer as one
msgpack blob (`pack_writes`, `element_rows`), and are put by store/events.py. The one place that
says what an element's index entries are (writes and removals both use it).
"""
from __future__ import annotations

import struct
import uuid as _uuid
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Iterable

import msgpack

from fedmisp.correlate.keys import CORRELATION_ROW_TYPES, correlation_rows
from fedmisp.model import canonical
from fedmisp.model.records import Record, open_element
from fedmisp.model.revision import SignedEvent
from fedmisp.model.values import ValueFormatError, normalise
from fedmisp.policy.holding import views_of

# LMDB's default maximum key size is 511 bytes; longer index keys keep a prefix and a hash.
_MAX_KEY = 480
_KEY_PREFIX = 448
BE8 = struct.Struct(">Q")  # sequence numbers, timestamps and ids in keys and values: big-endian, so they sort


@dataclass(frozen=True, slots=True)
class HeldEvent:
    """An event's entry in `events`: its current revision and where it is in the log."""
    record_id: bytes
    level: int
    timestamp: int
    seq: int
    id: int  # this node's numeric id for the event (MISP's event id), kept across revisions

    @classmethod
    def decode(cls, raw: bytes) -> "HeldEvent":
        return cls(bytes(raw[:32]), raw[32], BE8.unpack_from(raw, 33)[0], BE8.unpack_from(raw, 41)[0],
                   BE8.unpack_from(raw, 49)[0])

    def encode(self) -> bytes:
        return (self.record_id + bytes([self.level]) + BE8.pack(self.timestamp) + BE8.pack(self.seq)
                + BE8.pack(self.id))


@dataclass(frozen=True, slots=True)
class EventMeta:
    """An event's entry in `event_meta`: where it came from, and what correlation results show."""
    source: str  # "" (made or imported here), a feed or file, a peer's name
    correlation_only: bool
    correlation_disabled: bool  # the event's disable_correlation
    info: str
    orgc_name: str
    deleted: bool = False  # a deleted event's last revision (a tombstone): held, never listed


def uuid16(text: str) -> bytes:
    """16 bytes of a canonical (validated, lower-case) uuid; other spellings take the slow path."""
    if len(text) == 36:
        try:
            return bytes.fromhex(text.replace("-", ""))
        except ValueError:
            pass
    return _uuid.UUID(text).bytes


def index_key(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) <= _MAX_KEY:
        return raw
    return raw[:_KEY_PREFIX] + b"\x00" + blake2b(raw, digest_size=16).digest()


# The databases an element writes to, in this order, as (key, value) rows.
ROW_DBS = ("bodies", "elements", "ix_value", "ix_type", "ix_tag", "ix_ip", "ix_net", "ix_ssdeep")
ROW_INDEX = {name: i for i, name in enumerate(ROW_DBS)}
ELEMENT_ROWS = ROW_INDEX["elements"]
Rows = tuple[list[tuple[bytes, bytes]], ...]


def new_rows() -> Rows:
    return tuple([] for _ in ROW_DBS)


def add_element_rows(rows: Rows, ev: bytes, digest: bytes, body: bytes, element: dict[str, Any],
                     keys: tuple[str, ...] | None = None, event_disabled: bool = False) -> bool:
    """Append the rows one element writes; True if it is an attribute (`add_elements_rows`)."""
    return add_elements_rows(rows, ev, [digest], [body], [element], [keys], event_disabled) == 1


def add_elements_rows(rows: Rows, ev: bytes, digests: list[bytes], bodies: list[bytes],
                      elements: list[dict[str, Any]], keys: list[tuple[str, ...] | None] | None = None,
                      event_disabled: bool = False) -> int:
    """Append the rows of elements of the event `ev` (parallel lists: digest, body, decoded
    element, and its normalised values when known, None to compute them); returns how many are
    attributes. The one place that says what an element's index entries are (writes and removals
    both use it). Once per element on import, so written for speed: rows[i] follows ROW_DBS, and
    what every element has is built a list at a time."""
    body_keys = [ev + d for d in digests]
    rows[0].extend(zip(body_keys, bodies))
    uuids = [uuid16(e["uuid"]) for e in elements]
    rows[1].extend(zip(uuids, body_keys))
    values, types, tag_rows = rows[2], rows[3], rows[4]
    attributes = 0
    for element, u, found in zip(elements, uuids, keys or [None] * len(elements)):
        if "value" not in element or "type" not in element:
            continue
        attributes += 1
        ref = ev + u
        if found is None:
            found = index_values(element)
        if len(found) == 1:
            key = found[0].encode()
            values.append((key if len(key) <= _MAX_KEY else index_key(found[0]), ref))
        else:
            values.extend((index_key(k), ref) for k in dict.fromkeys(found))
        type_ = element["type"]
        types.append((type_.encode(), ref))
        tags = element.get("Tag")
        if tags:
            tag_rows.extend((index_key(tag["name"]), ref) for tag in tags)
        if type_ in CORRELATION_ROW_TYPES:
            for name, key, value in correlation_rows(element, found, ref, event_disabled):
                rows[ROW_INDEX[name]].append((key, value))
    return attributes


@dataclass(slots=True)
class EventWrite:
    """One event revision as the store writes it: record, bodies and every index row, precomputed.

    Built in whatever process signed the event (see node/importer.py), so the single writer only
    moves sorted rows into LMDB; plain bytes and tuples, so a batch crosses processes as one
    msgpack blob.
    """
    uuid: bytes  # 16
    timestamp: int
    level: int  # the distribution level this node holds the event at
    record_id: bytes
    wire: bytes
    header: tuple[bytes, bytes, tuple[bytes, ...]]  # (Orgc uuid, timestamp (8), tag keys)
    rows: Rows
    attribute_count: int
    extra: list[tuple[bytes, bytes]]  # (record id, wire) of its sightings and proposals
    local: list[tuple[bytes, bytes]]  # (element or event uuid, packed local tags)
    source: str = ""  # where it came from: "" (made here), a feed or file, a peer's name
    correlation_only: bool = False  # matched by correlation, never shown or relayed
    event_disabled: bool = False  # the event's disable_correlation
    event_info: str | None = None  # the event's info and creator, kept for correlation results
    orgc_name: str | None = None
    holding: bytes | None = None  # packed policy holding of a received event (None: made here)
    # policy views of the bodies written (policy/model.py views_of), kept beside the revision so
    # a sender decides what a peer may have without decoding them (None: none kept)
    views: bytes | None = None

    @property
    def element_count(self) -> int:
        return len(self.rows[0])


def pack_writes(events: list[EventWrite]) -> bytes:
    """Events ready for the writer as one blob (msgpack: far cheaper than pickling objects)."""
    return msgpack.packb([[e.uuid, e.timestamp, e.level, e.record_id, e.wire, e.header, e.rows,
                           e.attribute_count, e.extra, e.local, e.source, e.correlation_only,
                           e.event_disabled, e.event_info, e.orgc_name, e.views] for e in events], use_bin_type=True)


def unpack_writes(blob: bytes) -> list[EventWrite]:
    return [EventWrite(u, ts, level, rid, wire, header, tuple(list(r) for r in rows), n, list(extra), list(local),
                       source, correlation_only, disabled, info, orgc, views=views)
            for u, ts, level, rid, wire, header, rows, n, extra, local, source, correlation_only, disabled, info, orgc,
            views in msgpack.unpackb(blob, raw=False, use_list=False)]


def header_index(header: dict[str, Any]) -> tuple[bytes, bytes, tuple[bytes, ...]]:
    return (uuid16(header["Orgc"]["uuid"]), BE8.pack(header["timestamp"]),
            tuple(index_key(t["name"]) for t in header.get("Tag", ())))


def elements_rows(ev: bytes, entries: list[tuple[bytes, bytes, dict[str, Any]]],
                  event_disabled: bool) -> tuple[Rows, int]:
    """The index rows of elements of the event `ev` (`entries`: digest, body, element) and how
    many are attributes, without the bodies' own rows (`received_write` adds those)."""
    rows = new_rows()
    attributes = add_elements_rows(rows, ev, [d for d, _, _ in entries], [b for _, b, _ in entries],
                                   [e for _, _, e in entries], None, event_disabled)
    rows[0].clear()
    return rows, attributes


def element_rows(ev: bytes, entries: list[tuple[bytes, bytes]], event_disabled: bool) -> bytes:
    """`elements_rows` of verified bodies (`entries`: digest, body), decoded here, as one msgpack
    blob `[rows, attributes]`: what a worker process hands back (see gossip/replica.py)."""
    return msgpack.packb(elements_rows(ev, [(d, b, open_element(b)) for d, b in entries], event_disabled),
                         use_bin_type=True)


def join_rows(parts: Iterable[tuple[Rows, int]]) -> tuple[Rows, int]:
    """Rows built in parts (and their attribute counts) as one."""
    rows, attributes = new_rows(), 0
    for part, n in parts:
        for mine, theirs in zip(rows, part):
            mine.extend(theirs)
        attributes += n
    return rows, attributes


def unpack_element_rows(blobs: list[bytes]) -> tuple[Rows, int]:
    """The rows of `element_rows` blobs of one event, joined in order."""
    return join_rows(msgpack.unpackb(blob, raw=False, use_list=False) for blob in blobs)


def received_write(record: Record, entries: list[tuple[bytes, bytes, dict[str, Any]]], holding: bytes,
                   source: str, correlation_only: bool, built: tuple[Rows, int] | None = None,
                   views: bytes | None = None) -> EventWrite:
    """An EventWrite for a revision received from a peer: only the element bodies it may hold
    (`entries`: digest, body, element), with the policy's holding. `built`: the entries' rows and
    attribute count when they were made elsewhere (`element_rows` in a worker process); `views`:
    the entries' policy views (views_of)."""
    header = record.body["event"]
    ev = uuid16(header["uuid"])
    disabled = bool(header.get("disable_correlation"))
    if built is None:
        rows = new_rows()
        attributes = add_elements_rows(rows, ev, [d for d, _, _ in entries], [b for _, b, _ in entries],
                                       [e for _, _, e in entries], None, disabled)
    else:
        rows, attributes = built
        rows[0].extend((ev + d, b) for d, b, _ in entries)  # `element_rows` leaves the bodies out
    return EventWrite(
        uuid=ev, timestamp=header["timestamp"], level=0, record_id=record.id, wire=record.wire(),
        header=header_index(header), rows=rows, attribute_count=attributes, extra=[], local=[],
        source=source, correlation_only=correlation_only, event_disabled=disabled,
        event_info=header["info"], orgc_name=header["Orgc"]["name"], holding=holding, views=views,
    )


def event_write(signed: SignedEvent, source: str = "", correlation_only: bool = False) -> EventWrite:
    ev = uuid16(signed.uuid)
    rows = new_rows()
    disabled = bool(signed.record.body["event"].get("disable_correlation"))
    elements = signed.elements
    attributes = add_elements_rows(rows, ev, [e.digest for e in elements], [e.body for e in elements],
                                   [e.element for e in elements], [e.keys for e in elements], disabled)
    return EventWrite(
        uuid=ev, timestamp=signed.timestamp, level=signed.level,
        record_id=signed.record.id, wire=signed.record.wire(),
        header=header_index(signed.record.body["event"]), rows=rows, attribute_count=attributes,
        extra=[(r.id, r.wire()) for r in signed.extra_records],
        local=[(uuid16(u), canonical.pack(tags)) for u, tags in signed.local_tags.items()],
        source=source, correlation_only=correlation_only, event_disabled=disabled,
        event_info=signed.record.body["event"]["info"], orgc_name=signed.record.body["event"]["Orgc"]["name"],
        views=views_of([(e.digest, e.element) for e in elements]),
    )


def index_values(element: dict[str, Any]) -> tuple[str, ...]:
    """The normalised values an attribute is indexed under (model/values.py normalise)."""
    try:
        return normalise(element["type"], element["value"])
    except ValueFormatError:
        # Elements from peers were validated by their author's node; a value this node's rules
        # reject is stored but not indexed by value rather than lost.
        return ()
