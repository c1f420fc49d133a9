"""The node's store: one LMDB environment with named databases (docs DESIGN "Store").

Named databases (key -> value):
  records      record id (32)                 -> record wire bytes (current revisions, orgs, sightings, ...)
  bodies       event uuid (16) | digest (32)  -> salt || canonical element (keyed under its event so
                                                 an event's bodies sit together: an import appends
                                                 runs of keys instead of scattering single pages)
  log          sequence (8, big-endian)       -> record id (32); the local changes feed, one entry per
                                                 held record (a replaced revision's entry is removed,
                                                 as in CouchDB's changes feed)
  events       event uuid (16)                -> record id (32) | level (1) | timestamp (8) | seq (8)
                                                 | local event id (8)
  event_ids    local event id (8)             -> event uuid (16); MISP's numeric ids, for the API
  event_meta   event uuid (16)                -> msgpack [source, correlation_only]: where it came
                                                 from; correlation-only events are matched, never shown
  ix_ip        family (1) | address (16), dupsort       -> event uuid | attribute uuid  (correlate/keys.py)
  ix_net       family | prefix length | network, dupsort -> event uuid | attribute uuid
  ix_ssdeep    block size (8) | 6-gram, dupsort         -> event uuid | attribute uuid (6-grams at
                                                            even positions; correlate/keys.py)
  elements     element uuid (16)              -> event uuid (16) | digest (32)
  event_extra  event uuid (16), dupsort       -> record id (32) of its sightings, proposals and
                                                 proposal decisions
  proposals    proposal record id (32)        -> event uuid (16); a proposal's API id is the first 7
                                                 bytes of its record id (store/proposals.py)
  decisions    proposal record id (32)        -> record id (32) of the decision (accept or discard)
                                                 that closed it
  extra_seqs   record id (32) of an event_extra record -> its log sequence (8), so it can be
                                                 logged again when its event is published
  orgs         org uuid (16)                  -> record id (32) of the org's latest org record
               b"key:" | public key (32)      -> org uuid (16): whose key signed a record
               b"retired:" | public key (32)  -> retired at (8) | successor key (32): a rotated key
                                                 (decision 0013)
               b"known:" | org uuid (16)      -> msgpack {uuid, name, key}: an organisation an admin
                                                 introduced by uuid, name and key (no record of its own)
  local        element or event uuid (16)     -> node-local annotations (local tags), msgpack; never
                                                 in a revision or the log, so never sent to a peer
  ix_value     normalised value, dupsort      -> event uuid (16) | attribute uuid (16)
  ix_type      attribute type, dupsort        -> event uuid (16) | attribute uuid (16)
  ix_tag       tag name, dupsort              -> event uuid (16) | attribute uuid (16)
  ix_event_tag tag name, dupsort              -> event uuid (16)
  ix_org       Orgc uuid (16), dupsort        -> event uuid (16)
  ix_event_time timestamp (8) | event uuid    -> b""
  checkpoints  peer name                      -> peer's sequence (8): how far this node has pulled
  sharing_groups group uuid (16)              -> record id (32) of its current revision
  holdings     event uuid (16)                -> msgpack {levels, sources, correlation_only}: the level
                                                 each item of a received event is held at (policy)
  retractions  event uuid (16)                -> msgpack [record id, level, source, seq] of the latest
                                                 retraction of the event held (model/retraction.py):
                                                 the level it is held at (-1: through its groups
                                                 only), the peer it came from ("" made here), its
                                                 log sequence
  apikeys      key hash (32)                  -> msgpack {role, comment, created}
  meta         name                           -> value (b"seq": last sequence number; b"format": the
                                                 store format (8), see STORE_FORMAT; b"tag:" | name:
                                                 node-local tag settings from tags/add and tags/edit)

Every write goes through `write_events` / `write_records` in one transaction: an event is stored
whole or not at all, and a crash leaves the last committed transaction.
"""
from __future__ import annotations

import logging
import struct
import time
import uuid as _uuid
from dataclasses import dataclass
from enum import Enum
from hashlib import blake2b
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import lmdb
import msgpack

from fedmisp.correlate.keys import CORRELATION_ROW_TYPES, SSDEEP_PARTS, correlation_rows
from fedmisp.model import canonical
from fedmisp.model.misp import to_misp
from fedmisp.model.identity import Identity
from fedmisp.model.org import read_org
from fedmisp.model.records import (
    KIND_ORG, KIND_PROPOSAL, KIND_PROPOSAL_DECISION, KIND_RETRACTION, KIND_SIGHTINGS, Record, RecordError,
    check_element, SALT_BYTES, open_element, open_record, record_author, revision_elements, seal,
)
from fedmisp.model.retraction import Reach, Retraction, read_retraction, retraction_body
from fedmisp.model.revision import SignedEvent
from fedmisp.model.values import ValueFormatError, normalise
from fedmisp.policy.holding import correlation_only_items, holding_items, holding_levels, pack_views, unpack_views, views_of
from fedmisp.policy.model import SHARING_GROUP, element_view
from fedmisp.policy.orgs import KeyState, check_org_record
from fedmisp.policy.inbound import by_author, not_older
from fedmisp.policy.reasons import Reason

# The map is address space, not memory: LMDB grows the file as data arrives. 1 TiB leaves room for
# tens of millions of attributes on a 64-bit machine without a resize.
DEFAULT_MAP_SIZE = 1 << 40
# LMDB's default maximum key size is 511 bytes; longer index keys keep a prefix and a hash.
_MAX_KEY = 480
_KEY_PREFIX = 448

log = logging.getLogger("fedmisp.store")

# The layout of the stored indexes, recorded in meta b"format" when a store is made. Opening an
# older store (writable) brings it up to date (Store._upgrade):
#   1  ix_ssdeep held every 7-gram of a hash; ix_time (timestamp | attribute uuid) existed
#   2  ix_ssdeep holds the 6-grams at even positions; no ix_time (no query read it)
STORE_FORMAT = 2
_DROPPED_DBS = ("ix_time",)  # databases of older formats, removed by the upgrade

_DB_NAMES = (
    "records", "bodies", "log", "events", "elements", "event_extra", "orgs", "local",
    "ix_value", "ix_type", "ix_tag", "ix_event_tag", "ix_org", "ix_event_time",
    "checkpoints", "apikeys", "meta", "event_ids", "event_meta", "ix_ip", "ix_net", "ix_ssdeep",
    "holdings", "sharing_groups", "proposals", "decisions", "extra_seqs", "views", "retractions",
)
# Databases a store written by an earlier version may lack: a read-only open reads it without them.
_LATER_DBS = frozenset({"views", "retractions"})
_DUPSORT = frozenset({"event_extra", "ix_value", "ix_type", "ix_tag", "ix_event_tag", "ix_org",
                      "ix_ip", "ix_net", "ix_ssdeep"})
_BE8 = struct.Struct(">Q")
# Records attached to an event (event_extra): they follow it and are kept where it is held.
EVENT_EXTRA_KINDS = frozenset({KIND_SIGHTINGS, KIND_PROPOSAL, KIND_PROPOSAL_DECISION})
# Rows per write transaction of a compacted copy (bounds the copy's dirty pages, not its consistency:
# every row is read in one read transaction of the source).
_COPY_BATCH = 100_000
# Rotations followed from a pinned key to the current one; a key rotated yearly never gets near.
MAX_ROTATION_CHAIN = 1000


class StoreFormatError(Exception):
    """The store was written in a format this version cannot read."""


class WriteOutcome(str, Enum):
    """What a write did. A write refused says why instead, as a Reason (policy/reasons.py): OLDER
    (a newer revision is held, or its author retracted this one), NOT_AUTHOR (only the held
    revision's author revises it) or UUID_CONFLICT (an element uuid belongs to another held event:
    MISP keeps them unique)."""
    STORED = "stored"  # a new event or a newer revision
    UNCHANGED = "unchanged"  # this exact revision is held already


@dataclass(frozen=True, slots=True)
class HeldEvent:
    record_id: bytes
    level: int
    timestamp: int
    seq: int
    id: int  # this node's numeric id for the event (MISP's event id), kept across revisions

    @classmethod
    def decode(cls, raw: bytes) -> "HeldEvent":
        return cls(bytes(raw[:32]), raw[32], _BE8.unpack_from(raw, 33)[0], _BE8.unpack_from(raw, 41)[0],
                   _BE8.unpack_from(raw, 49)[0])

    def encode(self) -> bytes:
        return (self.record_id + bytes([self.level]) + _BE8.pack(self.timestamp) + _BE8.pack(self.seq)
                + _BE8.pack(self.id))


@dataclass(frozen=True, slots=True)
class EventMeta:
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
_ROW_INDEX = {name: i for i, name in enumerate(ROW_DBS)}
_ELEMENTS = _ROW_INDEX["elements"]
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
            found = _normalised(element)
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
                rows[_ROW_INDEX[name]].append((key, value))
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
    # policy views of the bodies written (policy/holding.py views_of), kept beside the revision so
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
    return (uuid16(header["Orgc"]["uuid"]), _BE8.pack(header["timestamp"]),
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


class Store:
    def __init__(self, path: Path, *, map_size: int = DEFAULT_MAP_SIZE, readonly: bool = False):
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.env = lmdb.open(
            str(path), map_size=map_size, max_dbs=len(_DB_NAMES) + 4, readonly=readonly,
            # Readers never wait for the writer; one process writes (the node or the CLI).
            max_readers=256, subdir=True,
            # Dirty pages are written in place in the file mapping instead of being copied from
            # heap buffers: a large transaction then costs page cache, not private memory, and
            # the importer's memory stays flat as the store grows. (LMDB's caveat: a stray write
            # through a wild pointer could corrupt the map; there is no C code of ours here.)
            writemap=not readonly,
        )
        # The node's signing identity (Node.open sets it): a revision made here that replaces a
        # published one is stored with its retraction, signed by it. None (a bare store): none.
        self.signer: Identity | None = None
        self.db: dict[str, Any] = {}
        for name in _DB_NAMES:
            try:
                self.db[name] = self.env.open_db(name.encode(), create=not readonly,
                                                 dupsort=name in _DUPSORT, dupfixed=name in _DUPSORT)
            except lmdb.NotFoundError:
                if name not in _LATER_DBS:
                    self.env.close()
                    raise
                self.db[name] = None
        try:
            self.format = self._open_format(readonly)
        except BaseException:
            self.env.close()
            raise

    def _open_format(self, readonly: bool) -> int:
        """The store's format (meta b"format"); a writable open records it in a new store and
        brings an older store up to date. A store without the key is a new one if it holds no
        record, else format 1 (written before formats were recorded). A read-only open of an older
        store reads it as it is (correlation looks ssdeep up the old way: `Store.format`)."""
        with self.env.begin() as txn:
            raw = txn.get(b"format", db=self.db["meta"])
            empty = txn.get(b"seq", db=self.db["meta"]) is None and txn.stat(self.db["records"])["entries"] == 0
        found = _BE8.unpack(raw)[0] if raw is not None else (STORE_FORMAT if empty else 1)
        if found > STORE_FORMAT:
            raise StoreFormatError(f"{self.path}: store format {found} was written by a newer fedmisp; this one "
                                   f"reads formats up to {STORE_FORMAT} (upgrade fedmisp, or restore a backup "
                                   "made by this version)")
        if readonly or (raw is not None and found == STORE_FORMAT):
            return found
        if found < STORE_FORMAT:
            self._upgrade(found)
        else:
            with self.env.begin(write=True) as txn:
                txn.put(b"format", _BE8.pack(STORE_FORMAT), db=self.db["meta"])
        return STORE_FORMAT

    def _upgrade(self, found: int) -> None:
        """Bring a format-1 store to STORE_FORMAT in one transaction: drop ix_time, and rebuild
        ix_ssdeep from the held element bodies (the rows `add_element_rows` writes today)."""
        started = time.monotonic()
        rebuilt = 0
        with self.env.begin(write=True) as txn:
            for name in _DROPPED_DBS:
                try:
                    dropped = self.env.open_db(name.encode(), txn=txn, create=False)
                except lmdb.NotFoundError:
                    continue
                txn.drop(dropped, delete=True)
            ssdeep = self.db["ix_ssdeep"]
            txn.drop(ssdeep, delete=False)
            meta, disabled = self.db["event_meta"], False
            last_ev = None
            rows: list[tuple[bytes, bytes]] = []
            for key, body in txn.cursor(db=self.db["bodies"]):
                if b"ssdeep" not in body:  # cheap: most bodies are not ssdeep attributes
                    continue
                element = open_element(body)
                if element.get("type") not in SSDEEP_PARTS or "value" not in element or "uuid" not in element:
                    continue
                ev = key[:16]
                if ev != last_ev:
                    raw = txn.get(ev, db=meta)
                    disabled, last_ev = bool(raw is not None and canonical.unpack(raw)[2]), ev
                found_rows = correlation_rows(element, _normalised(element), ev + uuid16(element["uuid"]), disabled)
                rows.extend((k, v) for name, k, v in found_rows if name == "ix_ssdeep")
                rebuilt += 1
            txn.cursor(db=ssdeep).putmulti(rows, dupdata=True)
            txn.put(b"format", _BE8.pack(STORE_FORMAT), db=self.db["meta"])
        log.warning("store %s: format %d upgraded to %d: ssdeep index rebuilt from %d attribute(s) "
                    "(%d rows), time index dropped, in %.1f s", self.path, found, STORE_FORMAT, rebuilt,
                    len(rows), time.monotonic() - started)

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------------------

    def write_events(self, events: list[EventWrite | SignedEvent],
                     checkpoint: tuple[str, int] | None = None) -> list[WriteOutcome | Reason]:
        """Store many event revisions in one transaction (each whole, or the batch not at all),
        with a peer's replication checkpoint when they came from that peer."""
        batch = self.begin_events()
        try:
            outcomes = batch.write(events, checkpoint)
        except BaseException:
            batch.abort()
            raise
        batch.commit()
        return outcomes

    def begin_events(self) -> "EventBatch":
        """A write transaction that takes several `write` calls before one commit (the writer's:
        fewer commits write far fewer pages, see docs/decisions/0004)."""
        return EventBatch(self)

    def write_records(self, records: list[Record], refused: list[tuple[Record, Reason]] | None = None,
                      pinned: Mapping[bytes, str] | None = None) -> int:
        """Store standalone records (org records, ...); returns how many were new. An org record the
        rules refuse (policy/orgs.py, checked in this transaction) is left out and, when `refused`
        is given, listed there with its reason. `pinned`: key -> org uuid as this node's
        configuration pins them (its own key, its peers' keys with their org)."""
        return len(self.write_new_records(records, refused, pinned))

    def write_new_records(self, records: list[Record], refused: list[tuple[Record, Reason]] | None = None,
                          pinned: Mapping[bytes, str] | None = None) -> list[Record]:
        """`write_records`, returning the records that were new (the others were held already)."""
        new = []
        with self.env.begin(write=True) as txn:
            seq = self._seq(txn)
            for record in records:
                if record.kind == KIND_ORG:
                    reason = self._org_reason(txn, record, pinned or {})
                    if reason is not Reason.ALLOWED:
                        if refused is not None:
                            refused.append((record, reason))
                        continue
                added, seq = self._put_record(txn, record, seq)
                if added:
                    new.append(record)
                if added and record.kind == KIND_ORG:
                    self._put_org(txn, record)
                elif added and record.kind in EVENT_EXTRA_KINDS:
                    # attached to their event (held now or arriving later) for views and exports
                    self._attach(txn, uuid16(record.body["event_uuid"]), record.id, record.kind, record.body, seq)
            txn.put(b"seq", _BE8.pack(seq), db=self.db["meta"])
        return new

    def _attach(self, txn: lmdb.Transaction, ev: bytes, record_id: bytes, kind: str, body: Any, seq: int) -> None:
        """Index a sighting, proposal or proposal decision under its event (and a proposal by its
        id, a decision by the proposal it closes) and remember its log sequence."""
        txn.put(ev, record_id, db=self.db["event_extra"])
        txn.put(record_id, _BE8.pack(seq), db=self.db["extra_seqs"])
        if kind == KIND_PROPOSAL:
            txn.put(record_id, ev, db=self.db["proposals"])
        elif kind == KIND_PROPOSAL_DECISION:
            txn.put(bytes(body["proposal"]), record_id, db=self.db["decisions"])

    def _relog_extras(self, txn: lmdb.Transaction, ev: bytes, seq: int) -> int:
        """Move an event's sightings, proposals and decisions to the end of the log, after its new
        revision. A peer keeps them only once it holds their event, and reads the log in order: an
        extra left before the revision would reach a new peer (or one whose filter just let the
        event in) a page before its event, be refused as `event-not-held`, and never come again.
        Peers are also offered them only while the event is published (a peer's checkpoint moves
        past what it was not offered), so when the event is published again (after an edit or an
        accepted proposal unpublished it) what was held back meanwhile is offered then."""
        cur = txn.cursor(db=self.db["event_extra"])
        ids = [bytes(rid) for rid in cur.iternext_dup()] if cur.set_key(ev) else []
        for rid in ids:
            old = txn.get(rid, db=self.db["extra_seqs"])
            if old is not None and txn.get(bytes(old), db=self.db["log"]) == rid:
                txn.delete(bytes(old), db=self.db["log"])
            seq += 1
            txn.put(_BE8.pack(seq), rid, db=self.db["log"])
            txn.put(rid, _BE8.pack(seq), db=self.db["extra_seqs"])
        return seq

    def _org_reason(self, txn: lmdb.Transaction, record: Record, pinned: Mapping[bytes, str]) -> Reason:
        if txn.get(record.id, db=self.db["records"]) is not None:
            return Reason.ALLOWED  # held already: storing it again is a no-op
        try:
            claim = read_org(record)
        except RecordError:
            return Reason.MALFORMED
        return check_org_record(
            claim, self._key_state(txn, record.author), self._key_state(txn, claim.key),
            org_known=txn.get(uuid16(claim.uuid), db=self.db["orgs"]) is not None,
            voucher=self._key_state(txn, claim.voucher) if claim.voucher is not None else None,
            pinned=pinned.get(claim.key) == claim.uuid)

    def _put_org(self, txn: lmdb.Transaction, record: Record) -> None:
        claim = read_org(record)
        org = uuid16(claim.uuid)
        txn.put(org, record.id, db=self.db["orgs"])
        txn.put(b"key:" + claim.key, org, db=self.db["orgs"])
        if claim.previous is not None:
            txn.put(b"retired:" + claim.previous, _BE8.pack(record.created) + claim.key, db=self.db["orgs"])

    def _key_state(self, txn: lmdb.Transaction, key: bytes) -> KeyState:
        org = txn.get(b"key:" + key, db=self.db["orgs"])
        retired = txn.get(b"retired:" + key, db=self.db["orgs"])
        return KeyState(
            org=str(_uuid.UUID(bytes=bytes(org))) if org is not None else None,
            retired_at=_BE8.unpack_from(retired)[0] if retired is not None else None,
            successor=bytes(retired[8:]) if retired is not None else None,
        )

    def key_state(self, key: bytes) -> KeyState:
        """Which organisation a key signs for, and whether (when, by which key) it was rotated."""
        with self.env.begin() as txn:
            return self._key_state(txn, key)

    def current_key(self, key: bytes) -> bytes:
        """The key that replaced `key` through its org's rotations (`key` itself if never rotated):
        what a peer pinned by `key` now authenticates with."""
        with self.env.begin() as txn:
            return self._current_key(txn, key)

    def _current_key(self, txn: lmdb.Transaction, key: bytes) -> bytes:
        for _ in range(MAX_ROTATION_CHAIN):
            retired = txn.get(b"retired:" + key, db=self.db["orgs"])
            if retired is None:
                return key
            key = bytes(retired[8:])
        raise RecordError(f"key rotation chain longer than {MAX_ROTATION_CHAIN}")

    def _seq(self, txn: lmdb.Transaction) -> int:
        raw = txn.get(b"seq", db=self.db["meta"])
        return _BE8.unpack(raw)[0] if raw else 0

    def _put_record(self, txn: lmdb.Transaction, record: Record, seq: int) -> tuple[bool, int]:
        rid = record.id
        if not txn.put(rid, record.wire(), db=self.db["records"], overwrite=False):
            return False, seq
        seq += 1
        txn.put(_BE8.pack(seq), rid, db=self.db["log"])
        return True, seq

    def _write_event(self, txn: lmdb.Transaction, event: EventWrite, seq: int,
                     puts: "_Puts") -> tuple[WriteOutcome | Reason, int]:
        db = self.db
        ev = event.uuid
        rid = event.record_id
        retracted = self._retraction(txn, ev)
        if retracted is not None and retracted[0].supersedes(event.timestamp, rid) and \
                self._current_key(txn, record_author(event.wire)) == self._current_key(txn, retracted[1].author):
            return Reason.OLDER, seq  # its author has retracted it (a stale copy from a slow path)
        raw = txn.get(ev, db=db["events"])
        if raw is None:
            if not self._claim_elements(txn, ev, event.rows[1]):
                return Reason.UUID_CONFLICT, seq
            puts.extend(event.rows, skip=_ELEMENTS)  # elements: written by the claim
            last = txn.get(b"event_id", db=db["meta"])
            event_id = (_BE8.unpack(last)[0] if last else 0) + 1
            txn.put(b"event_id", _BE8.pack(event_id), db=db["meta"])
            txn.put(_BE8.pack(event_id), ev, db=db["event_ids"])
        else:
            held = HeldEvent.decode(raw)
            event_id = held.id
            same = held.record_id == rid
            older = not_older(held.timestamp, event.timestamp, held_id=held.record_id, record_id=rid)
            if not same and older is not Reason.ALLOWED:
                return older, seq
            puts.flush(txn)  # the held revision's entries may still be queued in this batch
            old = open_record(txn.get(held.record_id, db=db["records"]))
            if not same:
                author = by_author(self._current_key(txn, record_author(event.wire)), self._current_key(txn, old.author))
                if author is not Reason.ALLOWED:
                    return author, seq
            # The bodies held now: a received revision may hold only some of its skeleton's.
            old_digests = {d for d in revision_elements(old) if txn.get(ev + d, db=db["bodies"]) is not None}
            bodies = event.rows[0]
            # checked before anything of this event is written, so a refusal leaves nothing behind
            if self._uuid_conflict(txn, ev, [u for u, v in event.rows[1] if v[16:] not in old_digests]):
                return Reason.UUID_CONFLICT, seq
            if same:
                return self._add_bodies(txn, event, held, old_digests, seq, puts)
            self._unindex_header(txn, ev, header_index(old.body["event"]))
            if db["views"] is not None:  # (a same revision's views are put again below, or dropped)
                txn.delete(held.record_id, db=db["views"])
            txn.delete(held.record_id, db=db["records"])
            txn.delete(_BE8.pack(held.seq), db=db["log"])
            # Only what changed is touched: bodies the new revision dropped go (with their index
            # rows), bodies it added come in; shared elements keep their rows.
            old_disabled = bool(old.body["event"].get("disable_correlation"))
            new_digests = {key[16:] for key, _ in bodies}
            # When the event's disable_correlation flips, every element's correlation rows change:
            # then nothing counts as shared and the whole event is indexed again.
            shared = old_digests & new_digests if old_disabled == event.event_disabled else set()
            gone = new_rows()
            for digest in old_digests - shared:
                body = txn.get(ev + digest, db=db["bodies"]) if digest in new_digests else \
                    txn.pop(ev + digest, db=db["bodies"])
                if body is not None:
                    body = bytes(body)
                    add_element_rows(gone, ev, digest, body, open_element(body), event_disabled=old_disabled)
            gone[0].clear()  # bodies: popped above (or kept for the new revision), never deleted by rows
            self._delete_rows(txn, ev, gone)
            added = new_rows()
            for key, body in bodies:
                if key[16:] not in shared:
                    add_element_rows(added, ev, key[16:], body, open_element(body),
                                     event_disabled=event.event_disabled)
            # elements now, not at the flush: a later event of this batch checks its uuids against them
            txn.cursor(db=db["elements"]).putmulti(added[_ELEMENTS])
            puts.extend(added, skip=_ELEMENTS)
        self._index_header(txn, ev, event.header)
        seq += 1
        txn.put(rid, event.wire, db=db["records"])
        if event.views is not None:
            txn.put(rid, event.views, db=db["views"])
        txn.put(_BE8.pack(seq), rid, db=db["log"])
        txn.put(ev, HeldEvent(rid, event.level, event.timestamp, seq, event_id).encode(), db=db["events"])
        if raw is not None and _published(event.wire):
            # The revision moved to the end of the log: its sightings, proposals and decisions
            # follow it there, so a peer reading the log in order never meets one before its event.
            seq = self._relog_extras(txn, ev, seq)
        for extra_id, extra_wire in event.extra:
            if txn.put(extra_id, extra_wire, db=db["records"], overwrite=False):
                seq += 1
                txn.put(_BE8.pack(seq), extra_id, db=db["log"])
                _version, kind, _author, _created, body = canonical.unpack(canonical.unpack(extra_wire)[0])
                self._attach(txn, ev, extra_id, kind, body, seq)
        for key, packed in event.local:
            txn.put(key, packed, db=db["local"])
        header = open_record(event.wire).body["event"] if event.event_info is None else None
        info = event.event_info if event.event_info is not None else header["info"]
        orgc = event.orgc_name if event.orgc_name is not None else header["Orgc"]["name"]
        deleted = not event.rows[0] and event.attribute_count == 0 and bool(
            (open_record(event.wire).body["event"].get("extra") or {}).get("deleted"))
        txn.put(ev, canonical.pack([event.source, event.correlation_only, event.event_disabled, info, orgc, deleted]),
                db=db["event_meta"])
        if event.holding is not None:
            txn.put(ev, event.holding, db=db["holdings"])
        elif raw is not None and self.signer is not None:
            seq = self._retract_older(txn, ev, old, event, retracted, seq)
        return WriteOutcome.STORED, seq

    # --- retractions (model/retraction.py) --------------------------------------------------------

    def _retraction(self, txn: lmdb.Transaction, ev: bytes) -> tuple[Retraction, Record, int, str, int] | None:
        """The latest retraction held for an event: what it says, its record, the level it is held
        at, the peer it came from, its log sequence."""
        db = self.db["retractions"]
        raw = txn.get(ev, db=db) if db is not None else None
        if raw is None:
            return None
        rid, level, source, seq = canonical.unpack(raw)
        record = open_record(txn.get(rid, db=self.db["records"]))
        return read_retraction(record), record, level, source, seq

    def _put_retraction(self, txn: lmdb.Transaction, ev: bytes, record: Record, level: int, source: str,
                        previous: tuple[Retraction, Record, int, str, int] | None, seq: int) -> int:
        """Hold `record` as the event's retraction (in the log, replacing the one held before)."""
        if previous is not None:
            txn.delete(previous[1].id, db=self.db["records"])
            if txn.get(_BE8.pack(previous[4]), db=self.db["log"]) == previous[1].id:
                txn.delete(_BE8.pack(previous[4]), db=self.db["log"])
        seq += 1
        txn.put(record.id, record.wire(), db=self.db["records"])
        txn.put(_BE8.pack(seq), record.id, db=self.db["log"])
        txn.put(ev, canonical.pack([record.id, level, source, seq]), db=self.db["retractions"])
        return seq

    def _retract_older(self, txn: lmdb.Transaction, ev: bytes, old: Record, event: EventWrite,
                       previous: tuple[Retraction, Record, int, str, int] | None, seq: int) -> int:
        """A revision made here replaced `old`: sign the retraction of every revision before it,
        reaching wherever the published ones could have gone (the one held before, widened by
        `old` if it was published). Nothing to retract while nothing was published."""
        assert self.signer is not None
        reach = previous[0].reach if previous is not None else Reach()
        header = old.body["event"]
        if header.get("published"):
            reach = reach.widened(header["distribution"], header.get("sharing_group_uuid"))
        if not reach:
            return seq
        event_uuid = str(_uuid.UUID(bytes=ev))
        record = seal(self.signer, KIND_RETRACTION, retraction_body(event_uuid, event.timestamp, event.record_id, reach),
                      created=event.timestamp)
        return self._put_retraction(txn, ev, record, reach.level, "", previous, seq)

    def write_retraction(self, record: Record, level: int, source: str) -> Reason:
        """Take a retraction a peer sent (policy/retractions.py decided `level`): ALLOWED when it
        was stored (a held revision it supersedes is dropped, unless made here: the origin keeps
        what it created); OLDER when this one or a later one is held (nothing to do);
        EVENT_NOT_HELD when neither a revision of the event nor a retraction of it is held (the
        node has nothing to drop); NOT_AUTHOR when another key than the event's author signed it."""
        retraction = read_retraction(record)
        ev = uuid16(retraction.event_uuid)
        with self.env.begin(write=True) as txn:
            previous = self._retraction(txn, ev)
            raw = txn.get(ev, db=self.db["events"])
            held = HeldEvent.decode(raw) if raw is not None else None
            if held is None and previous is None:
                return Reason.EVENT_NOT_HELD
            author = record_author(txn.get(held.record_id, db=self.db["records"])) if held is not None \
                else previous[1].author  # type: ignore[index]
            reason = by_author(self._current_key(txn, record.author), self._current_key(txn, author))
            if reason is not Reason.ALLOWED:
                return reason
            if previous is not None and not previous[0].before < retraction.before:
                if previous[1].id == record.id and level > previous[2]:
                    # the same retraction by a path that lets it go further: held at the higher
                    # level and logged again, so it reaches the peers the lower one could not (as a
                    # revision's widened holding does; DESIGN: held at the highest level any path allows)
                    seq = self._put_retraction(txn, ev, record, level, source, previous, self._seq(txn))
                    txn.put(b"seq", _BE8.pack(seq), db=self.db["meta"])
                    return Reason.ALLOWED
                return Reason.OLDER
            seq = self._seq(txn)
            if held is not None and retraction.supersedes(held.timestamp, held.record_id) \
                    and txn.get(ev, db=self.db["holdings"]) is not None:
                seq = self._drop_event(txn, ev, held, seq)
            seq = self._put_retraction(txn, ev, record, level, source, previous, seq)
            txn.put(b"seq", _BE8.pack(seq), db=self.db["meta"])
        return Reason.ALLOWED

    def retraction(self, event_uuid: str) -> tuple[Retraction, Record, int, str] | None:
        """The latest retraction held for an event: what it says, its record, the level it is held
        at and the peer it came from."""
        with self.env.begin() as txn:
            found = self._retraction(txn, uuid16(event_uuid))
        return found[:4] if found is not None else None

    def _drop_event(self, txn: lmdb.Transaction, ev: bytes, held: HeldEvent, seq: int) -> int:
        """Remove a received event whole: its revision, bodies and their index rows, its header
        index, holding, views, API id and the records attached to it (its author retracted it, or
        this node may no longer hold it). Local annotations stay (they are this node's own)."""
        db = self.db
        record = open_record(txn.get(held.record_id, db=db["records"]))
        disabled = bool(record.body["event"].get("disable_correlation"))
        gone = new_rows()
        for digest in revision_elements(record):
            body = txn.pop(ev + digest, db=db["bodies"])
            if body is not None:
                body = bytes(body)
                add_element_rows(gone, ev, digest, body, open_element(body), event_disabled=disabled)
        gone[0].clear()
        self._delete_rows(txn, ev, gone)
        self._unindex_header(txn, ev, header_index(record.body["event"]))
        for name in ("events", "holdings", "event_meta"):
            txn.delete(ev, db=db[name])
        if db["views"] is not None:
            txn.delete(held.record_id, db=db["views"])
        txn.delete(held.record_id, db=db["records"])
        txn.delete(_BE8.pack(held.seq), db=db["log"])
        txn.delete(_BE8.pack(held.id), db=db["event_ids"])
        cur = txn.cursor(db=db["event_extra"])
        extras = [bytes(rid) for rid in cur.iternext_dup()] if cur.set_key(ev) else []
        for rid in extras:
            logged = txn.pop(rid, db=db["extra_seqs"])
            if logged is not None and txn.get(bytes(logged), db=db["log"]) == rid:
                txn.delete(bytes(logged), db=db["log"])
            txn.delete(rid, db=db["records"])
            txn.delete(rid, db=db["proposals"])
            txn.delete(rid, db=db["decisions"])  # (a decision is an extra of the event too)
        txn.delete(ev, db=db["event_extra"])
        return seq

    def drop_received(self, event_uuid: str) -> bool:
        """Remove a received event whole (this node may no longer hold it); False if it is not
        held or was made here (the origin keeps what it created)."""
        ev = uuid16(event_uuid)
        with self.env.begin(write=True) as txn:
            raw = txn.get(ev, db=self.db["events"])
            if raw is None or txn.get(ev, db=self.db["holdings"]) is None:
                return False
            self._drop_event(txn, ev, HeldEvent.decode(raw), 0)
        return True

    def drop_elements(self, event_uuid: str, digests: Iterable[bytes], holding: bytes) -> int:
        """Remove some bodies of a received event (this node may no longer hold them), with their
        index rows and kept views, and store the holding without them. Returns how many went."""
        ev = uuid16(event_uuid)
        db = self.db
        dropped = 0
        with self.env.begin(write=True) as txn:
            raw = txn.get(ev, db=db["events"])
            if raw is None or txn.get(ev, db=db["holdings"]) is None:
                return 0
            held = HeldEvent.decode(raw)
            record = open_record(txn.get(held.record_id, db=db["records"]))
            disabled = bool(record.body["event"].get("disable_correlation"))
            gone = new_rows()
            removed: set[bytes] = set()
            for digest in digests:
                body = txn.pop(ev + digest, db=db["bodies"])
                if body is not None:
                    body = bytes(body)
                    add_element_rows(gone, ev, digest, body, open_element(body), event_disabled=disabled)
                    removed.add(digest)
            gone[0].clear()
            self._delete_rows(txn, ev, gone)
            views_db = db["views"]
            blob = txn.get(held.record_id, db=views_db) if views_db is not None else None
            if blob is not None:
                kept = [(d, v) for d, v in unpack_views(bytes(blob)) if d not in removed]
                txn.put(held.record_id, pack_views(kept), db=views_db)
            txn.put(ev, holding, db=db["holdings"])
            dropped = len(removed)
        return dropped

    def events_with_group_items(self) -> list[str]:
        """Received events holding an item at level 4 (sharing group), for a node that leaves a
        group (their holdings say so without opening the revisions)."""
        out = []
        with self.env.begin() as txn:
            for key, raw in txn.cursor(db=self.db["holdings"]):
                if SHARING_GROUP in holding_levels(canonical.unpack(raw)):
                    out.append(str(_uuid.UUID(bytes=bytes(key))))
        return out

    def _add_bodies(self, txn: lmdb.Transaction, event: EventWrite, held: HeldEvent, old_digests: set[bytes],
                    seq: int, puts: "_Puts") -> tuple[WriteOutcome | Reason, int]:
        """The revision held, again (by another path): only bodies it lacks are added, nothing held
        is removed (DESIGN: a copy of the same revision with fewer bodies adds nothing and removes
        nothing). A revision made or imported here (no holding) holds every body already."""
        db, ev = self.db, event.uuid
        if txn.get(ev, db=db["holdings"]) is None:
            return WriteOutcome.UNCHANGED, seq
        bodies = event.rows[0]
        fresh = [(key, body) for key, body in bodies if key[16:] not in old_digests]
        widened = False  # the holding changed: a level went up, or what was held for correlation is shown
        if event.holding is not None and event.holding != bytes(txn.get(ev, db=db["holdings"])):
            widened = True
            txn.put(ev, event.holding, db=db["holdings"])
            raw = txn.get(ev, db=db["event_meta"])
            if raw is not None:  # what one path held for correlation only may now be shown
                meta = list(canonical.unpack(raw))
                meta[1] = event.correlation_only
                txn.put(ev, canonical.pack(meta), db=db["event_meta"])
        if not fresh and not widened:
            return WriteOutcome.UNCHANGED, seq
        if fresh and len(fresh) == len(bodies):
            added = event.rows  # every body given is new: its rows are the ones given
        else:
            added = new_rows()
            for key, body in fresh:
                add_element_rows(added, ev, key[16:], body, open_element(body), event_disabled=event.event_disabled)
        txn.cursor(db=db["elements"]).putmulti(added[_ELEMENTS])
        puts.extend(added, skip=_ELEMENTS)
        views_db = db["views"]
        if views_db is not None and fresh:
            old_views = txn.get(held.record_id, db=views_db)
            if old_views is not None and event.views is not None:
                new_views = [(d, v) for d, v in unpack_views(event.views) if d not in old_digests]
                txn.put(held.record_id, pack_views(unpack_views(bytes(old_views)) + new_views), db=views_db)
            else:
                txn.delete(held.record_id, db=views_db)  # read by decoding the bodies instead
        # logged again at the end: what arrived may now go on to peers that had less of it
        txn.delete(_BE8.pack(held.seq), db=db["log"])
        seq += 1
        txn.put(_BE8.pack(seq), held.record_id, db=db["log"])
        txn.put(ev, HeldEvent(held.record_id, held.level, held.timestamp, seq, held.id).encode(), db=db["events"])
        if _published(event.wire):
            seq = self._relog_extras(txn, ev, seq)
        return WriteOutcome.STORED, seq

    def _claim_elements(self, txn: lmdb.Transaction, ev: bytes, element_rows: list[tuple[bytes, bytes]]) -> bool:
        """Write a new event's element rows unless one of its uuids belongs to another event (held,
        or earlier in this transaction); False, with nothing written, if one does.

        The check is the put itself (no overwrite): one B-tree descent per element instead of a
        get and then a put."""
        elements = self.db["elements"]
        consumed, added = txn.cursor(db=elements).putmulti(element_rows, overwrite=False)
        if added == consumed:
            return True
        # Some uuid is taken. The event is new, so no row names it yet: whatever names it now was
        # written just above.
        if self._uuid_conflict(txn, ev, [u for u, _ in element_rows]):
            for u, _ in element_rows:
                held = txn.get(u, db=elements)
                if held is not None and held[:16] == ev:
                    txn.delete(u, db=elements)
            return False
        # Only repeats within this event (a peer's revision may carry them): the last one wins.
        txn.cursor(db=elements).putmulti(element_rows)
        return True

    def _uuid_conflict(self, txn: lmdb.Transaction, ev: bytes, uuids: list[bytes]) -> bool:
        """Whether any of these element uuids belongs to another event."""
        elements = self.db["elements"]
        for u in uuids:
            raw = txn.get(u, db=elements)
            if raw is not None and raw[:16] != ev:
                return True
        return False

    def _delete_rows(self, txn: lmdb.Transaction, ev: bytes, rows: Rows) -> None:
        for name, items in zip(ROW_DBS, rows):
            db = self.db[name]
            for key, value in items:
                if name == "bodies":
                    continue  # popped by the caller
                if name == "elements":
                    # the element uuid may meanwhile belong to the new revision's body
                    if txn.get(key, db=db) == value:
                        txn.delete(key, db=db)
                elif name in _DUPSORT:
                    txn.delete(key, value, db=db)
                else:
                    txn.delete(key, db=db)

    def _index_header(self, txn: lmdb.Transaction, ev: bytes, index: tuple[bytes, bytes, tuple[bytes, ...]]) -> None:
        db = self.db
        orgc, ts, tag_keys = index
        txn.put(orgc, ev, db=db["ix_org"])
        txn.put(ts + ev, b"", db=db["ix_event_time"])
        for key in tag_keys:
            txn.put(key, ev, db=db["ix_event_tag"])

    def _unindex_header(self, txn: lmdb.Transaction, ev: bytes, index: tuple[bytes, bytes, tuple[bytes, ...]]) -> None:
        db = self.db
        orgc, ts, tag_keys = index
        txn.delete(orgc, ev, db=db["ix_org"])
        txn.delete(ts + ev, db=db["ix_event_time"])
        for key in tag_keys:
            txn.delete(key, ev, db=db["ix_event_tag"])

    # --- reading ---------------------------------------------------------------------------------

    def held(self, event_uuid: str) -> HeldEvent | None:
        with self.env.begin() as txn:
            raw = txn.get(uuid16(event_uuid), db=self.db["events"])
        return HeldEvent.decode(raw) if raw is not None else None

    def put_sharing_group(self, record: Record, group_uuid: str) -> None:
        """Make `record` the group's current revision (the caller checked the revision rules)."""
        with self.env.begin(write=True) as txn:
            seq = self._seq(txn)
            key = uuid16(group_uuid)
            old = txn.get(key, db=self.db["sharing_groups"])
            if old is not None:
                txn.delete(bytes(old), db=self.db["records"])
                cur = txn.cursor(db=self.db["log"])
                for k, v in cur:  # the replaced revision's log entry (groups are few and change rarely)
                    if bytes(v) == bytes(old):
                        cur.delete()
                        break
            added, seq = self._put_record(txn, record, seq)
            txn.put(key, record.id, db=self.db["sharing_groups"])
            ever = self._sharing_group_orgs_ever(txn, key) | {m[0] for m in record.body["members"]}
            txn.put(_SG_EVER + key, canonical.pack(sorted(ever)), db=self.db["meta"])
            txn.put(b"seq", _BE8.pack(seq), db=self.db["meta"])

    def _sharing_group_orgs_ever(self, txn: lmdb.Transaction, key: bytes) -> set[str]:
        raw = txn.get(_SG_EVER + key, db=self.db["meta"])
        return set(canonical.unpack(raw)) if raw is not None else set()

    def sharing_group_orgs_ever(self, group_uuid: str) -> set[str]:
        """Every organisation a revision of the group held here listed as a member: its revisions go
        to these, so a member a revision removes learns that it was removed."""
        with self.env.begin() as txn:
            return self._sharing_group_orgs_ever(txn, uuid16(group_uuid))

    def set_local_tags(self, target_uuid: str, tags: list[dict[str, Any]]) -> None:
        """Replace the node-local tags of one event or element (of any organisation's event): no
        revision, no log entry, so nothing of it is signed or sent to a peer."""
        with self.env.begin(write=True) as txn:
            if tags:
                txn.put(uuid16(target_uuid), canonical.pack(tags), db=self.db["local"])
            else:
                txn.delete(uuid16(target_uuid), db=self.db["local"])

    def drop_local_tag(self, name: str) -> int:
        """Remove one tag name from every node-local tag list; returns how many lists changed."""
        changed = 0
        with self.env.begin(write=True) as txn:
            cur = txn.cursor(db=self.db["local"])
            for key, raw in list(cur):
                tags = canonical.unpack(raw)
                kept = [t for t in tags if t.get("name") != name]
                if len(kept) != len(tags):
                    changed += 1
                    if kept:
                        txn.put(bytes(key), canonical.pack(kept), db=self.db["local"])
                    else:
                        txn.delete(bytes(key), db=self.db["local"])
        return changed

    def tag_settings(self) -> dict[str, dict[str, Any]]:
        """Node-local tag settings (colour, exportable, hide_tag) by tag name."""
        out = {}
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db["meta"])
            if cur.set_range(b"tag:"):
                for key, raw in cur:
                    if not bytes(key).startswith(b"tag:"):
                        break
                    out[bytes(key)[4:].decode("utf-8")] = canonical.unpack(raw)
        return out

    def set_tag_settings(self, name: str, settings: dict[str, Any] | None) -> None:
        """Store (or with None remove) one tag's node-local settings."""
        key = b"tag:" + name.encode("utf-8")
        with self.env.begin(write=True) as txn:
            if settings is None:
                txn.delete(key, db=self.db["meta"])
            else:
                txn.put(key, canonical.pack(settings), db=self.db["meta"])

    def orgs(self) -> list[dict[str, Any]]:
        """Organisations this node knows: from their own signed org records ({uuid, name, key,
        ..., "introduced": False}) and those an admin introduced ("introduced": True)."""
        out: dict[str, dict[str, Any]] = {}
        with self.env.begin() as txn:
            for key, value in txn.cursor(db=self.db["orgs"]):
                key = bytes(key)
                if len(key) == 16:
                    raw = txn.get(bytes(value), db=self.db["records"])
                    if raw is not None:
                        record = open_record(raw)
                        out[str(_uuid.UUID(bytes=key))] = {**record.body, "key": record.author, "introduced": False}
                elif key.startswith(b"known:"):
                    org = canonical.unpack(value)
                    out.setdefault(org["uuid"], {**org, "introduced": True})
        return list(out.values())

    def introduce_org(self, org_uuid: str, name: str, key: bytes) -> bool:
        """Know an organisation by uuid, name and public key, as an admin said (records signed by
        that key are then accepted from peers, as from an org record). False if the uuid or the key
        is known already."""
        u = uuid16(org_uuid)
        with self.env.begin(write=True) as txn:
            db = self.db["orgs"]
            if txn.get(u, db=db) is not None or txn.get(b"known:" + u, db=db) is not None \
                    or txn.get(b"key:" + key, db=db) is not None:
                return False
            txn.put(b"known:" + u, canonical.pack({"key": key, "name": name, "uuid": str(_uuid.UUID(bytes=u))}), db=db)
            txn.put(b"key:" + key, u, db=db)
        return True

    def sharing_group(self, group_uuid: str) -> Record | None:
        with self.env.begin() as txn:
            rid = txn.get(uuid16(group_uuid), db=self.db["sharing_groups"])
            raw = txn.get(bytes(rid), db=self.db["records"]) if rid is not None else None
        return open_record(raw) if raw is not None else None

    def sharing_groups(self) -> list[Record]:
        with self.env.begin() as txn:
            return [open_record(txn.get(bytes(rid), db=self.db["records"]))
                    for rid in txn.cursor(db=self.db["sharing_groups"]).iternext(keys=False)]

    def head_sequence(self) -> int:
        """The last sequence number of the local log (what a fully caught-up peer has seen)."""
        with self.env.begin() as txn:
            return self._seq(txn)

    def org_for_key(self, key: bytes) -> str | None:
        with self.env.begin() as txn:
            raw = txn.get(b"key:" + key, db=self.db["orgs"])
        return str(_uuid.UUID(bytes=bytes(raw))) if raw is not None else None

    def checkpoint(self, peer: str) -> int:
        with self.env.begin() as txn:
            raw = txn.get(peer.encode("utf-8"), db=self.db["checkpoints"])
        return _BE8.unpack(raw)[0] if raw is not None else 0

    def holding(self, event_uuid: str) -> Any | None:
        """The stored policy holding of a received event (None for events made or imported here)."""
        with self.env.begin() as txn:
            raw = txn.get(uuid16(event_uuid), db=self.db["holdings"])
        return canonical.unpack(raw) if raw is not None else None

    def revision_entries(self, event_uuid: str) -> tuple[Record, list[tuple[bytes, bytes, dict[str, Any]]]] | None:
        """The held revision and, in its order, (digest, body, element) for each body held.

        The bodies are decoded, not hashed again: each was checked against its digest before it
        was stored (the importer computed the digest; a receiver verified it), and what is sent
        from them is verified by its receiver. (The replica builds a policy view of every event
        it offers from these: re-hashing its own store cost a third of a bulk pull's sender time.)
        `check_integrity` is the place that re-verifies what is held."""
        held = self.held(event_uuid)
        if held is None:
            return None
        ev = uuid16(event_uuid)
        entries = []
        bodies = self.db["bodies"]
        unpackb = msgpack.unpackb
        with self.env.begin() as txn:
            record = open_record(txn.get(held.record_id, db=self.db["records"]))
            get = txn.get
            for digest in revision_elements(record):
                body = get(ev + digest, db=bodies)
                if body is not None:
                    # open_element inlined (once per element of every event offered to a peer)
                    try:
                        element = unpackb(memoryview(body)[SALT_BYTES:], raw=False, strict_map_key=True,
                                          use_list=True)
                    except Exception:  # noqa: BLE001 - open_element below says what is wrong
                        element = None
                    entries.append((digest, body, element if element.__class__ is dict else open_element(body)))
        return record, entries

    def revision_views(self, event_uuid: str) -> tuple[Record, list[tuple[bytes, Any]]] | None:
        """The held revision and the policy views (policy/model.py) of the bodies held for it, as
        written with it, without decoding a body; None when the store kept none for exactly the
        bodies it holds (a revision written by another path or version: `revision_entries`)."""
        held = self.held(event_uuid)
        views_db = self.db["views"]
        if held is None or views_db is None:
            return None
        ev = uuid16(event_uuid)
        with self.env.begin() as txn:
            blob = txn.get(held.record_id, db=views_db)
            if blob is None:
                return None
            record = open_record(txn.get(held.record_id, db=self.db["records"]))
            get, bodies = txn.get, self.db["bodies"]
            held_digests = {d for d in revision_elements(record) if get(ev + d, db=bodies) is not None}
        views = unpack_views(blob)
        if len(views) != len(held_digests) or any(d not in held_digests for d, _ in views):
            return None
        return record, views

    def bodies(self, event_uuid: str, digests: list[bytes]) -> dict[bytes, bytes]:
        """The held bodies among `digests` (unverified: what is sent is checked by its receiver)."""
        ev = uuid16(event_uuid)
        out = {}
        with self.env.begin() as txn:
            for digest in digests:
                body = txn.get(ev + digest, db=self.db["bodies"])
                if body is not None:
                    out[digest] = bytes(body)
        return out

    def held_digests(self, event_uuid: str) -> set[bytes]:
        """Digests of the element bodies held for an event's current revision."""
        held = self.held(event_uuid)
        if held is None:
            return set()
        ev = uuid16(event_uuid)
        with self.env.begin() as txn:
            record = open_record(txn.get(held.record_id, db=self.db["records"]))
            return {d for d in revision_elements(record) if txn.get(ev + d, db=self.db["bodies"]) is not None}

    def event_uuid_for_id(self, event_id: int) -> str | None:
        """The uuid of the event this node numbers `event_id` (MISP's numeric event id)."""
        if not 0 < event_id < 2**63:
            return None
        with self.env.begin() as txn:
            raw = txn.get(_BE8.pack(event_id), db=self.db["event_ids"])
        return str(_uuid.UUID(bytes=bytes(raw))) if raw is not None else None

    def previous_elements(self, event_uuid: str) -> dict[str, tuple[bytes, bytes]]:
        """element uuid -> (digest, body) of the held revision, for signing a new one."""
        held = self.held(event_uuid)
        if held is None:
            return {}
        out: dict[str, tuple[bytes, bytes]] = {}
        ev = uuid16(event_uuid)
        with self.env.begin() as txn:
            record = open_record(txn.get(held.record_id, db=self.db["records"]))
            for digest in revision_elements(record):
                body = txn.get(ev + digest, db=self.db["bodies"])
                if body is not None:
                    out[open_element(body)["uuid"]] = (digest, bytes(body))
        return out

    def event_uuids(self, *, include_correlation_only: bool = False) -> Iterator[str]:
        """Held events; correlation-only ones (matched, never shown) only when asked for; deleted
        ones (tombstones) never."""
        with self.env.begin() as txn:
            meta = self.db["event_meta"]
            for key in txn.cursor(db=self.db["events"]).iternext(values=False):
                raw = txn.get(key, db=meta)
                if raw is not None:
                    found = EventMeta(*canonical.unpack(raw))
                    if found.deleted or (found.correlation_only and not include_correlation_only):
                        continue
                yield str(_uuid.UUID(bytes=bytes(key)))

    def event_meta(self, event_uuid: str) -> EventMeta | None:
        """Where a held event came from and the few header fields correlation results show."""
        with self.env.begin() as txn:
            raw = txn.get(uuid16(event_uuid), db=self.db["event_meta"])
        return EventMeta(*canonical.unpack(raw)) if raw is not None else None

    def revision(self, event_uuid: str) -> tuple[Record, list[dict[str, Any]]] | None:
        """The held revision and its element bodies in the revision's order."""
        held = self.held(event_uuid)
        if held is None:
            return None
        ev = uuid16(event_uuid)
        with self.env.begin() as txn:
            record = open_record(txn.get(held.record_id, db=self.db["records"]))
            elements = []
            for digest in revision_elements(record):
                body = txn.get(ev + digest, db=self.db["bodies"])
                if body is not None:
                    # Reads verify too: a body altered on disk fails here, not in a peer's hands.
                    elements.append(check_element(digest, bytes(body)))
        return record, elements

    def event_records(self, event_uuid: str) -> list[Record]:
        """Sightings and proposal records attached to an event."""
        out = []
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db["event_extra"])
            if cur.set_key(uuid16(event_uuid)):
                for rid in cur.iternext_dup():
                    raw = txn.get(rid, db=self.db["records"])
                    if raw is not None:
                        out.append(open_record(raw))
        return out

    def events_with_records(self, page: int = 1000) -> Iterator[str]:
        """Uuids of events that have sightings or proposals attached, read a page at a time (no read
        transaction stays open between pages)."""
        after = b""
        while True:
            keys = []
            with self.env.begin() as txn:
                cur = txn.cursor(db=self.db["event_extra"])
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

    def local_tags(self, uuids: list[str]) -> dict[str, list[dict[str, Any]]]:
        out = {}
        with self.env.begin() as txn:
            for u in uuids:
                raw = txn.get(uuid16(u), db=self.db["local"])
                if raw is not None:
                    out[u] = canonical.unpack(raw)
        return out

    def correlation_only_items(self, event_uuid: str) -> set[str]:
        """Elements of a shown event held only for correlation (they came over correlation-only
        links at their held level): matched, never shown (policy Holding.correlation_levels)."""
        with self.env.begin() as txn:
            raw = txn.get(uuid16(event_uuid), db=self.db["holdings"])
        if raw is None:
            return set()
        return correlation_only_items(canonical.unpack(raw))  # (policy/holding.py)

    def export_event(self, event_uuid: str) -> dict[str, Any] | None:
        """The event as MISP JSON ``{"Event": ...}``, with its sightings, proposals and local tags."""
        held = self.revision(event_uuid)
        if held is None:
            return None
        record, elements = held
        hidden = self.correlation_only_items(event_uuid)
        if hidden:
            elements = [e for e in elements if e["uuid"] not in hidden]
        sightings: list[dict[str, Any]] = []
        proposals: list[dict[str, Any]] = []
        extras = self.event_records(event_uuid)
        decided = {bytes(r.body["proposal"]) for r in extras if r.kind == KIND_PROPOSAL_DECISION}
        for extra in extras:
            if extra.kind == KIND_SIGHTINGS:
                sightings.extend(extra.body["sightings"])
            elif extra.kind == KIND_PROPOSAL and extra.id not in decided:
                proposals.append(extra.body["proposal"])  # accepted or discarded ones are not shown
        local = self.local_tags([event_uuid] + [e["uuid"] for e in elements])
        return to_misp(record.body["event"], elements, _distinct_sightings(sightings), proposals, local)

    def attributes_by(self, index: str, key: str) -> list[str]:
        """Attribute uuids under one key of ix_value (normalised), ix_type or ix_tag."""
        db = self.db[index]
        k = index_key(key)
        with self.env.begin() as txn:
            cur = txn.cursor(db=db)
            if not cur.set_key(k):
                return []
            return [str(_uuid.UUID(bytes=bytes(v[16:]))) for v in cur.iternext_dup()]

    def find_value(self, value: str, type_: str | None = None) -> list[str]:
        """Attribute uuids whose normalised value (or one half of a composite) equals `value`'s."""
        keys: list[str] = []
        if type_ is not None:
            keys.extend(normalise(type_, value))
        else:
            keys.append(value.strip())
        out: list[str] = []
        for k in dict.fromkeys(keys):
            out.extend(self.attributes_by("ix_value", k))
        return out

    def log_since(self, seq: int, limit: int = 1000) -> list[tuple[int, bytes]]:
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.db["log"])
            out = []
            if cur.set_range(_BE8.pack(seq + 1)):
                for key, rid in cur:
                    out.append((_BE8.unpack(key)[0], bytes(rid)))
                    if len(out) >= limit:
                        break
        return out

    def record(self, record_id: bytes) -> Record | None:
        with self.env.begin() as txn:
            raw = txn.get(record_id, db=self.db["records"])
        return open_record(raw) if raw is not None else None

    def copy_compacted(self, dest: Path) -> int:
        """Every database as of one read transaction, rewritten densely into a new environment in
        the empty folder `dest`; returns the copy's head sequence. (LMDB's own compacting copy,
        ``Environment.copy(compact=True)``, crashes on a dupfixed database holding many values
        under one key, as ix_type does: decision 0014.) Written without writemap, so the copy's
        file is as large as its pages, not the map size."""
        out = lmdb.open(str(dest), map_size=self.env.info()["map_size"], max_dbs=len(_DB_NAMES) + 4,
                        subdir=True, writemap=False, sync=False)
        try:
            with self.env.begin() as txn:
                head = self._seq(txn)
                for name in _DB_NAMES:
                    dupsort = name in _DUPSORT
                    target = out.open_db(name.encode(), dupsort=dupsort, dupfixed=dupsort)
                    if self.db[name] is None:
                        continue  # (an earlier version's store, opened read-only)
                    rows = txn.cursor(db=self.db[name]).iternext()
                    while batch := list(islice(rows, _COPY_BATCH)):
                        with out.begin(write=True) as w:
                            # rows come sorted: appended at the end of each page, so pages fill up
                            w.cursor(db=target).putmulti(batch, dupdata=dupsort, append=True)
            out.sync(True)
        finally:
            out.close()
        return head

    def check_integrity(self, own_keys: Iterable[bytes] = ()) -> list[str]:
        """Every held event whole and verified, the indexes agreeing with the held revisions, and
        every event holding what the node is entitled to: one made here (signed by `own_keys`, or
        by the store's signer, or a key they rotated from) every body of its revision, a received
        one every element its holding lists. Returns the problems found (empty when sound)."""
        problems: list[str] = []
        referenced: set[bytes] = set()
        attributes = 0
        with self.env.begin() as txn:
            own = {self._current_key(txn, k) for k in own_keys}
            if self.signer is not None:
                own.add(self._current_key(txn, self.signer.public_key))
            for key, raw in txn.cursor(db=self.db["events"]):
                held = HeldEvent.decode(bytes(raw))
                event = str(_uuid.UUID(bytes=bytes(key)))
                wire = txn.get(held.record_id, db=self.db["records"])
                if wire is None:
                    problems.append(f"event {event}: revision record missing")
                    continue
                try:
                    record = open_record(wire)
                    digests = revision_elements(record)
                except RecordError as e:
                    problems.append(f"event {event}: {e}")
                    continue
                if txn.get(_BE8.pack(held.seq), db=self.db["log"]) != held.record_id:
                    problems.append(f"event {event}: log entry {held.seq} does not point at its revision")
                holding = txn.get(bytes(key), db=self.db["holdings"])
                made_here = self._current_key(txn, record.author) in own
                if made_here and holding is not None:
                    problems.append(f"event {event}: made here, but held as a copy received from a peer")
                stripped_allowed = holding is not None and not made_here
                retracted = self._retraction(txn, bytes(key))
                if stripped_allowed and retracted is not None and retracted[0].supersedes(held.timestamp, held.record_id):
                    problems.append(f"event {event}: its revision is superseded by its author's retraction, "
                                    "yet held")
                blob = txn.get(held.record_id, db=self.db["views"]) if self.db["views"] is not None else None
                kept_views = dict(unpack_views(blob)) if blob is not None else None
                seen_views = 0
                held_uuids: set[str] = set()
                for digest in digests:
                    body = txn.get(bytes(key) + digest, db=self.db["bodies"])
                    if body is None:
                        # A received revision holds only what policy let in; a local one is whole.
                        if not stripped_allowed:
                            problems.append(f"event {event}: element body {digest.hex()[:16]} missing")
                        continue
                    try:
                        element = check_element(digest, bytes(body))
                    except RecordError as e:
                        problems.append(f"event {event}: {e}")
                        continue
                    held_uuids.add(str(element.get("uuid")))
                    referenced.add(bytes(key) + digest)
                    attributes += "value" in element and "type" in element
                    if kept_views is not None:
                        seen_views += 1
                        if kept_views.get(digest) != element_view(element):
                            problems.append(f"event {event}: the kept view of element {digest.hex()[:16]} "
                                            "does not match its body")
                if kept_views is not None and seen_views != len(kept_views):
                    problems.append(f"event {event}: {len(kept_views)} element views kept for {seen_views} bodies")
                if stripped_allowed:
                    listed = holding_items(canonical.unpack(holding)) - {event}
                    if listed - held_uuids:
                        problems.append(f"event {event}: {len(listed - held_uuids)} element(s) held at a level "
                                        f"without their body (e.g. {sorted(listed - held_uuids)[0]})")
                    if held_uuids - listed:
                        problems.append(f"event {event}: {len(held_uuids - listed)} element bod(ies) held "
                                        f"without a level (e.g. {sorted(held_uuids - listed)[0]})")
            bodies = txn.stat(self.db["bodies"])["entries"]
            if bodies != len(referenced):
                problems.append(f"{bodies} element bodies stored, {len(referenced)} referenced")
            indexed = txn.stat(self.db["ix_type"])["entries"]  # one row per attribute
            if indexed != attributes:
                problems.append(f"{indexed} attributes indexed, {attributes} held")
        return problems

    def stats(self) -> dict[str, int]:
        with self.env.begin() as txn:
            def n(name: str) -> int:
                return txn.stat(self.db[name])["entries"]
            seq = self._seq(txn)
            return {
                "events": n("events"),
                "attributes": n("ix_type"),
                "elements": n("elements"),
                "bodies": n("bodies"),
                "records": n("records"),
                "orgs": sum(1 for k in txn.cursor(db=self.db["orgs"]).iternext(values=False) if len(k) == 16),
                "sequence": seq,
                "store_bytes": self.env.info()["last_pgno"] * self.env.stat()["psize"],
            }


class _Puts:
    """Index and body rows of a batch, applied with one putmulti per database: one C-level loop
    instead of a Python call per put. (Sorting the rows first was measured slower: the sort costs
    more than the page locality it buys, see bench/ingest.py.)"""
    __slots__ = ("db", "rows")

    def __init__(self, db: dict[str, Any]):
        self.db = db
        self.rows = new_rows()

    def extend(self, rows: Rows, skip: int = -1) -> None:
        for i, (mine, theirs) in enumerate(zip(self.rows, rows)):
            if i != skip:
                mine.extend(theirs)

    def flush(self, txn: lmdb.Transaction) -> None:
        for name, items in zip(ROW_DBS, self.rows):
            if items:
                txn.cursor(db=self.db[name]).putmulti(items, dupdata=name in _DUPSORT)
        self.rows = new_rows()


_SG_EVER = b"sg-orgs-ever:"  # meta key prefix: + group uuid (16) -> canonical list of org uuids


def _published(wire: bytes) -> bool:
    """The published flag of an event revision's wire form (read without verifying: it was)."""
    _version, _kind, _author, _created, body = canonical.unpack(canonical.unpack(wire)[0])
    return bool(body["event"].get("published"))


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


class EventBatch:
    """One write transaction over one or more `write` calls, then `commit` (or `abort`).

    Rows are applied at the end of each `write`, so Python holds one submission's rows at a time
    while the transaction grows in the map."""

    def __init__(self, store: Store):
        self.store = store
        self.txn = store.env.begin(write=True)
        self.seq = self._first_seq = store._seq(self.txn)
        self.elements = 0  # element rows written so far

    def write(self, events: list[EventWrite | SignedEvent],
              checkpoint: tuple[str, int] | None = None) -> list[WriteOutcome | Reason]:
        store, txn = self.store, self.txn
        if checkpoint is not None:
            txn.put(checkpoint[0].encode("utf-8"), _BE8.pack(checkpoint[1]), db=store.db["checkpoints"])
        outcomes = []
        puts = _Puts(store.db)
        for event in events:
            if isinstance(event, SignedEvent):
                event = event_write(event)
            outcome, self.seq = store._write_event(txn, event, self.seq, puts)
            outcomes.append(outcome)
            self.elements += event.element_count
        puts.flush(txn)
        return outcomes

    def commit(self) -> None:
        if self.seq != self._first_seq:  # an unchanged page is not rewritten
            self.txn.put(b"seq", _BE8.pack(self.seq), db=self.store.db["meta"])
        self.txn.commit()

    def abort(self) -> None:
        self.txn.abort()


def _normalised(element: dict[str, Any]) -> tuple[str, ...]:
    try:
        return normalise(element["type"], element["value"])
    except ValueFormatError:
        # Elements from peers were validated by their author's node; a value this node's rules
        # reject is stored but not indexed by value rather than lost.
        return ()
