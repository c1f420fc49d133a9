"""The event write path: every rule the store applies when it takes a revision, in one transaction.

`write_event` stores one event revision (a new event, a newer revision, more bodies of the held
one) unless a rule refuses it: older than the held revision, retracted by its author, signed by
another key than the held revision's author, or claiming an element uuid another event holds.
`EventBatch` runs many of them in one write transaction (the single writer's, store/writer.py);
`write_new_records` stores standalone records (orgs, sightings, proposals and their decisions,
which are attached to their event); retractions (model/retraction.py) drop what they supersede.
The rows written are built by store/rows.py, wherever the event was signed or received.
"""
from __future__ import annotations

import uuid as _uuid
from enum import Enum
from typing import Any, Iterable, Mapping

from fedmisp.model import canonical
from fedmisp.model.identity import Identity
from fedmisp.model.records import (
    KIND_ANALYST, KIND_ORG, KIND_PROPOSAL, KIND_PROPOSAL_DECISION, KIND_RETRACTION, KIND_SIGHTINGS, Record, open_element,
    open_record, record_author, revision_elements, seal,
)
from fedmisp.model.retraction import Reach, Retraction, read_retraction, retraction_body
from fedmisp.model.revision import SignedEvent
from fedmisp.policy.holding import held_levels, pack_views, unpack_views
from fedmisp.policy.inbound import bridge_reason, by_author, not_older
from fedmisp.policy.reasons import Reason
from fedmisp.store import analyst
from fedmisp.store.db import DUPSORT, Database, Txn, sequence, set_sequence
from fedmisp.store.log import put_record, set_checkpoint
from fedmisp.store.orgs import current_key, org_reason, put_org
from fedmisp.store.rows import (
    BE8, ELEMENT_ROWS, ROW_DBS, EventWrite, HeldEvent, Rows, add_element_rows, event_write, header_index, new_rows,
    uuid16,
)

# Records attached to an event (event_extra): they follow it and are kept where it is held.
EVENT_EXTRA_KINDS = frozenset({KIND_SIGHTINGS, KIND_PROPOSAL, KIND_PROPOSAL_DECISION, KIND_ANALYST})


class WriteOutcome(str, Enum):
    """What a write did. A write refused says why instead, as a Reason (policy/reasons.py): OLDER
    (a newer revision is held, or its author retracted this one), NOT_AUTHOR (only the held
    revision's author revises it) or UUID_CONFLICT (an element uuid belongs to another held event:
    MISP keeps them unique)."""
    STORED = "stored"  # a new event or a newer revision
    UNCHANGED = "unchanged"  # this exact revision is held already


class Puts:
    """Index and body rows of a batch, applied with one putmulti per database: one C-level loop
    instead of a Python call per put. (Sorting the rows first was measured slower: the sort costs
    more than the page locality it buys, see bench/ingest.py.)"""
    __slots__ = ("rows",)

    def __init__(self) -> None:
        self.rows = new_rows()

    def extend(self, rows: Rows, skip: int = -1) -> None:
        for i, (mine, theirs) in enumerate(zip(self.rows, rows)):
            if i != skip:
                mine.extend(theirs)

    def flush(self, t: Txn) -> None:
        for name, items in zip(ROW_DBS, self.rows):
            if items:
                t.putmulti(name, items)
        self.rows = new_rows()


class EventBatch:
    """One write transaction over one or more `write` calls, then `commit` (or `abort`).

    Rows are applied at the end of each `write`, so Python holds one submission's rows at a time
    while the transaction grows in the map."""

    def __init__(self, database: Database, signer: Identity | None):
        self.signer = signer
        self.txn = database.write()
        self.seq = self._first_seq = sequence(self.txn)
        self.elements = 0  # element rows written so far

    def write(self, events: list[EventWrite | SignedEvent],
              checkpoint: tuple[str, int] | None = None) -> list[WriteOutcome]:
        txn = self.txn
        if checkpoint is not None:
            set_checkpoint(txn, *checkpoint)
        outcomes = []
        puts = Puts()
        for event in events:
            if isinstance(event, SignedEvent):
                event = event_write(event)
            outcome, self.seq = write_event(txn, event, self.seq, puts, self.signer)
            outcomes.append(outcome)
            self.elements += event.element_count
        puts.flush(txn)
        return outcomes

    def commit(self) -> None:
        if self.seq != self._first_seq:  # an unchanged page is not rewritten
            set_sequence(self.txn, self.seq)
        self.txn.commit()

    def abort(self) -> None:
        self.txn.abort()


def write_new_records(t: Txn, records: list[Record], refused: list[tuple[Record, Reason]] | None = None,
                      pinned: Mapping[bytes, str] | None = None,
                      levels: Mapping[bytes, int] | None = None) -> list[Record]:
    """Store standalone records (org records, sightings, proposals, ...); returns the records that
    were new (the others were held already). An org record the rules refuse (policy/orgs.py,
    checked in this transaction) is left out and, when `refused` is given, listed there with its
    reason. `pinned`: key -> org uuid as this node's configuration pins them (its own key, its
    peers' keys with their org). `levels`: record id -> the level a received analyst-data record
    is held at (store/analyst.py)."""
    new = []
    seq = sequence(t)
    for record in records:
        if record.kind == KIND_ORG:
            reason = org_reason(t, record, pinned or {})
            if reason is not Reason.ALLOWED:
                if refused is not None:
                    refused.append((record, reason))
                continue
        added, seq = put_record(t, record, seq)
        if added:
            new.append(record)
        if levels and record.id in levels and (added or analyst.level(t, record.id) is not None):
            # (one made or imported here has no level kept: it is held at its own distribution)
            analyst.put_level(t, record.id, levels[record.id])
        if added and record.kind == KIND_ORG:
            put_org(t, record)
        elif added and record.kind in EVENT_EXTRA_KINDS:
            # attached to their event (held now or arriving later) for views and exports
            attach(t, uuid16(record.body["event_uuid"]), record.id, record.kind, record.body, seq)
    set_sequence(t, seq)
    return new


def attach(t: Txn, ev: bytes, record_id: bytes, kind: str, body: Any, seq: int) -> None:
    """Index a sighting, proposal or proposal decision under its event (and a proposal by its
    id, a decision by the proposal it closes) and remember its log sequence."""
    t.put("event_extra", ev, record_id)
    t.put("extra_seqs", record_id, BE8.pack(seq))
    if kind == KIND_PROPOSAL:
        t.put("proposals", record_id, ev)
    elif kind == KIND_PROPOSAL_DECISION:
        t.put("decisions", bytes(body["proposal"]), record_id)


def _relog_extras(t: Txn, ev: bytes, seq: int) -> int:
    """Move an event's sightings, proposals and decisions to the end of the log, after its new
    revision. A peer keeps them only once it holds their event, and reads the log in order: an
    extra left before the revision would reach a new peer (or one whose filter just let the
    event in) a page before its event, be refused as `event-not-held`, and never come again.
    Peers are also offered them only while the event is published (a peer's checkpoint moves
    past what it was not offered), so when the event is published again (after an edit or an
    accepted proposal unpublished it) what was held back meanwhile is offered then."""
    for rid in attached_ids(t, ev):
        old = t.get("extra_seqs", rid)
        if old is not None and t.get("log", bytes(old)) == rid:
            t.delete("log", bytes(old))
        seq += 1
        t.put("log", BE8.pack(seq), rid)
        t.put("extra_seqs", rid, BE8.pack(seq))
    return seq


def write_event(t: Txn, event: EventWrite, seq: int, puts: "Puts",
                signer: Identity | None) -> tuple[WriteOutcome | Reason, int]:
    """Store one event revision in `t`, unless a rule of the store refuses it; (outcome, the log's
    new head). `signer`: the node's identity, which signs the retraction of a revision made here
    that replaces a published one (None: nothing is retracted)."""
    ev = event.uuid
    rid = event.record_id
    retracted = held_retraction(t, ev)
    if retracted is not None and retracted[0].supersedes(event.timestamp, rid) and \
            current_key(t, record_author(event.wire)) == current_key(t, retracted[1].author):
        return Reason.OLDER, seq  # its author has retracted it (a stale copy from a slow path)
    raw = t.get("events", ev)
    if raw is None:
        if not _claim_elements(t, ev, event.rows[1]):
            return Reason.UUID_CONFLICT, seq
        puts.extend(event.rows, skip=ELEMENT_ROWS)  # elements: written by the claim
        last = t.get("meta", b"event_id")
        event_id = (BE8.unpack(last)[0] if last else 0) + 1
        t.put("meta", b"event_id", BE8.pack(event_id))
        t.put("event_ids", BE8.pack(event_id), ev)
    else:
        held = HeldEvent.decode(raw)
        event_id = held.id
        same = held.record_id == rid
        older = not_older(held.timestamp, event.timestamp, held_id=held.record_id, record_id=rid)
        if not same and older is not Reason.ALLOWED:
            return older, seq
        puts.flush(t)  # the held revision's entries may still be queued in this batch
        old = open_record(t.get("records", held.record_id))
        if not same:
            author = by_author(current_key(t, record_author(event.wire)), current_key(t, old.author))
            if author is not Reason.ALLOWED:
                return author, seq
            meta = t.get("event_meta", ev)  # (EventMeta: its source first)
            bridge = bridge_reason(canonical.unpack(meta)[0] if meta is not None else "", event.source)
            if bridge is not Reason.ALLOWED:
                return bridge, seq
        # The bodies held now: a received revision may hold only some of its skeleton's.
        old_digests = {d for d in revision_elements(old) if t.get("bodies", ev + d) is not None}
        bodies = event.rows[0]
        # checked before anything of this event is written, so a refusal leaves nothing behind
        if _uuid_conflict(t, ev, [u for u, v in event.rows[1] if v[16:] not in old_digests]):
            return Reason.UUID_CONFLICT, seq
        if same:
            return _add_bodies(t, event, held, old_digests, seq, puts)
        _unindex_header(t, ev, header_index(old.body["event"]))
        if t.has("views"):  # (a same revision's views are put again below, or dropped)
            t.delete("views", held.record_id)
        t.delete("records", held.record_id)
        t.delete("log", BE8.pack(held.seq))
        # Only what changed is touched: bodies the new revision dropped go (with their index
        # rows), bodies it added come in; shared elements keep their rows.
        old_disabled = bool(old.body["event"].get("disable_correlation"))
        new_digests = {key[16:] for key, _ in bodies}
        # When the event's disable_correlation flips, every element's correlation rows change:
        # then nothing counts as shared and the whole event is indexed again.
        shared = old_digests & new_digests if old_disabled == event.event_disabled else set()
        gone = new_rows()
        for digest in old_digests - shared:
            body = t.get("bodies", ev + digest) if digest in new_digests else \
                t.pop("bodies", ev + digest)
            if body is not None:
                body = bytes(body)
                add_element_rows(gone, ev, digest, body, open_element(body), event_disabled=old_disabled)
        gone[0].clear()  # bodies: popped above (or kept for the new revision), never deleted by rows
        _delete_rows(t, ev, gone)
        added = new_rows()
        for key, body in bodies:
            if key[16:] not in shared:
                add_element_rows(added, ev, key[16:], body, open_element(body),
                                 event_disabled=event.event_disabled)
        # elements now, not at the flush: a later event of this batch checks its uuids against them
        t.putmulti("elements", added[ELEMENT_ROWS])
        puts.extend(added, skip=ELEMENT_ROWS)
    _index_header(t, ev, event.header)
    seq += 1
    t.put("records", rid, event.wire)
    if event.views is not None:
        t.put("views", rid, event.views)
    t.put("log", BE8.pack(seq), rid)
    t.put("events", ev, HeldEvent(rid, event.level, event.timestamp, seq, event_id).encode())
    if raw is not None and _published(event.wire):
        # The revision moved to the end of the log: its sightings, proposals and decisions
        # follow it there, so a peer reading the log in order never meets one before its event.
        seq = _relog_extras(t, ev, seq)
    for extra_id, extra_wire in event.extra:
        if t.put("records", extra_id, extra_wire, overwrite=False):
            seq += 1
            t.put("log", BE8.pack(seq), extra_id)
            _version, kind, _author, _created, body = canonical.unpack(canonical.unpack(extra_wire)[0])
            attach(t, ev, extra_id, kind, body, seq)
    for key, packed in event.local:
        t.put("local", key, packed)
    header = open_record(event.wire).body["event"] if event.event_info is None else None
    info = event.event_info if event.event_info is not None else header["info"]
    orgc = event.orgc_name if event.orgc_name is not None else header["Orgc"]["name"]
    deleted = not event.rows[0] and event.attribute_count == 0 and bool(
        (open_record(event.wire).body["event"].get("extra") or {}).get("deleted"))
    t.put("event_meta", ev, canonical.pack([event.source, event.correlation_only, event.event_disabled, info, orgc, deleted]))
    if event.holding is not None:
        t.put("holdings", ev, event.holding)
    elif raw is not None and signer is not None:
        seq = _retract_older(t, ev, old, event, retracted, seq, signer)
    return WriteOutcome.STORED, seq


def held_retraction(t: Txn, ev: bytes) -> tuple[Retraction, Record, int, str, int] | None:
    """The latest retraction held for an event: what it says, its record, the level it is held
    at, the peer it came from, its log sequence."""
    raw = t.get("retractions", ev)
    if raw is None:
        return None
    rid, level, source, seq = canonical.unpack(raw)
    record = open_record(t.get("records", rid))
    return read_retraction(record), record, level, source, seq


def _put_retraction(t: Txn, ev: bytes, record: Record, level: int, source: str,
                    previous: tuple[Retraction, Record, int, str, int] | None, seq: int) -> int:
    """Hold `record` as the event's retraction (in the log, replacing the one held before)."""
    if previous is not None:
        t.delete("records", previous[1].id)
        if t.get("log", BE8.pack(previous[4])) == previous[1].id:
            t.delete("log", BE8.pack(previous[4]))
    seq += 1
    t.put("records", record.id, record.wire())
    t.put("log", BE8.pack(seq), record.id)
    t.put("retractions", ev, canonical.pack([record.id, level, source, seq]))
    return seq


def _retract_older(t: Txn, ev: bytes, old: Record, event: EventWrite,
                   previous: tuple[Retraction, Record, int, str, int] | None, seq: int, signer: Identity) -> int:
    """A revision made here replaced `old`: sign the retraction of every revision before it,
    reaching wherever the published ones could have gone (the one held before, widened by
    `old` if it was published). Nothing to retract while nothing was published."""
    reach = previous[0].reach if previous is not None else Reach()
    header = old.body["event"]
    if header.get("published"):
        reach = reach.widened(header["distribution"], header.get("sharing_group_uuid"))
    if not reach:
        return seq
    event_uuid = str(_uuid.UUID(bytes=ev))
    record = seal(signer, KIND_RETRACTION, retraction_body(event_uuid, event.timestamp, event.record_id, reach),
                  created=event.timestamp)
    return _put_retraction(t, ev, record, reach.level, "", previous, seq)


def write_retraction(t: Txn, record: Record, level: int, source: str) -> Reason:
    """Take a retraction a peer sent (policy/retractions.py decided `level`): ALLOWED when it
    was stored (a held revision it supersedes is dropped, unless made here: the origin keeps
    what it created); OLDER when this one or a later one is held (nothing to do);
    EVENT_NOT_HELD when neither a revision of the event nor a retraction of it is held (the
    node has nothing to drop); NOT_AUTHOR when another key than the event's author signed it."""
    retraction = read_retraction(record)
    ev = uuid16(retraction.event_uuid)
    previous = held_retraction(t, ev)
    raw = t.get("events", ev)
    held = HeldEvent.decode(raw) if raw is not None else None
    if held is None and previous is None:
        return Reason.EVENT_NOT_HELD
    author = record_author(t.get("records", held.record_id)) if held is not None \
        else previous[1].author  # type: ignore[index]
    reason = by_author(current_key(t, record.author), current_key(t, author))
    if reason is not Reason.ALLOWED:
        return reason
    if previous is not None and not previous[0].before < retraction.before:
        if previous[1].id == record.id and level > previous[2]:
            # the same retraction by a path that lets it go further: held at the higher
            # level and logged again, so it reaches the peers the lower one could not (as a
            # revision's widened holding does; DESIGN: held at the highest level any path allows)
            set_sequence(t, _put_retraction(t, ev, record, level, source, previous, sequence(t)))
            return Reason.ALLOWED
        return Reason.OLDER
    seq = sequence(t)
    if held is not None and retraction.supersedes(held.timestamp, held.record_id) \
            and t.get("holdings", ev) is not None:
        seq = drop_event(t, ev, held, seq)
    set_sequence(t, _put_retraction(t, ev, record, level, source, previous, seq))
    return Reason.ALLOWED


def drop_event(t: Txn, ev: bytes, held: HeldEvent, seq: int) -> int:
    """Remove a received event whole: its revision, bodies and their index rows, its header
    index, holding, views, API id and the records attached to it (its author retracted it, or
    this node may no longer hold it). Local annotations stay (they are this node's own)."""
    record = open_record(t.get("records", held.record_id))
    _drop_bodies(t, ev, revision_elements(record), bool(record.body["event"].get("disable_correlation")))
    _unindex_header(t, ev, header_index(record.body["event"]))
    for name in ("events", "holdings", "event_meta"):
        t.delete(name, ev)
    if t.has("views"):
        t.delete("views", held.record_id)
    t.delete("records", held.record_id)
    t.delete("log", BE8.pack(held.seq))
    t.delete("event_ids", BE8.pack(held.id))
    for rid in attached_ids(t, ev):
        logged = t.pop("extra_seqs", rid)
        if logged is not None and t.get("log", bytes(logged)) == rid:
            t.delete("log", bytes(logged))
        t.delete("records", rid)
        t.delete("proposals", rid)
        t.delete("decisions", rid)  # (a decision is an extra of the event too)
        analyst.drop_level(t, rid)
    t.delete("event_extra", ev)
    return seq


def drop_received(t: Txn, event_uuid: str) -> bool:
    """Remove a received event whole (this node may no longer hold it); False if it is not
    held or was made here (the origin keeps what it created)."""
    ev = uuid16(event_uuid)
    raw = t.get("events", ev)
    if raw is None or t.get("holdings", ev) is None:
        return False
    drop_event(t, ev, HeldEvent.decode(raw), 0)
    return True


def drop_elements(t: Txn, event_uuid: str, digests: Iterable[bytes], holding: bytes) -> int:
    """Remove some bodies of a received event (this node may no longer hold them), with their
    index rows and kept views, and store the holding without them. Returns how many went."""
    ev = uuid16(event_uuid)
    dropped = 0
    raw = t.get("events", ev)
    if raw is None or t.get("holdings", ev) is None:
        return 0
    held = HeldEvent.decode(raw)
    record = open_record(t.get("records", held.record_id))
    removed = _drop_bodies(t, ev, digests, bool(record.body["event"].get("disable_correlation")))
    blob = t.get("views", held.record_id)
    if blob is not None:
        kept = [(d, v) for d, v in unpack_views(bytes(blob)) if d not in removed]
        t.put("views", held.record_id, pack_views(kept))
    t.put("holdings", ev, holding)
    dropped = len(removed)
    return dropped


def _drop_bodies(t: Txn, ev: bytes, digests: Iterable[bytes], disabled: bool) -> set[bytes]:
    """Remove these bodies of the event `ev` with their index rows; the digests that were held."""
    gone = new_rows()
    removed: set[bytes] = set()
    for digest in digests:
        body = t.pop("bodies", ev + digest)
        if body is not None:
            body = bytes(body)
            add_element_rows(gone, ev, digest, body, open_element(body), event_disabled=disabled)
            removed.add(digest)
    gone[0].clear()  # bodies: popped above
    _delete_rows(t, ev, gone)
    return removed


def attached_ids(t: Txn, ev: bytes) -> list[bytes]:
    """Record ids of the sightings, proposals and decisions attached to the event `ev`."""
    cur = t.cursor("event_extra")
    return [bytes(rid) for rid in cur.iternext_dup()] if cur.set_key(ev) else []


def _add_bodies(t: Txn, event: EventWrite, held: HeldEvent, old_digests: set[bytes],
                seq: int, puts: "Puts") -> tuple[WriteOutcome, int]:
    """The revision held, again (by another path): only bodies it lacks are added, nothing held
    is removed (DESIGN: a copy of the same revision with fewer bodies adds nothing and removes
    nothing). A revision made or imported here (no holding) holds every body already."""
    ev = event.uuid
    if t.get("holdings", ev) is None:
        return WriteOutcome.UNCHANGED, seq
    bodies = event.rows[0]
    fresh = [(key, body) for key, body in bodies if key[16:] not in old_digests]
    widened = False  # a level went up, or what was held for correlation is shown: logged again
    stored_holding = bytes(t.get("holdings", ev))
    if event.holding is not None and event.holding != stored_holding:
        # A second path at the same levels only adds itself to the sources (what is not sent
        # back to it): nobody may receive more, so the event is not offered to every peer again.
        widened = held_levels(canonical.unpack(event.holding)) != held_levels(canonical.unpack(stored_holding))
        t.put("holdings", ev, event.holding)
        raw = t.get("event_meta", ev)
        if raw is not None:  # what one path held for correlation only may now be shown
            meta = list(canonical.unpack(raw))
            meta[1] = event.correlation_only
            t.put("event_meta", ev, canonical.pack(meta))
    if not fresh and not widened:
        return WriteOutcome.UNCHANGED, seq
    if fresh and len(fresh) == len(bodies):
        added = event.rows  # every body given is new: its rows are the ones given
    else:
        added = new_rows()
        for key, body in fresh:
            add_element_rows(added, ev, key[16:], body, open_element(body), event_disabled=event.event_disabled)
    t.putmulti("elements", added[ELEMENT_ROWS])
    puts.extend(added, skip=ELEMENT_ROWS)
    if t.has("views") and fresh:
        old_views = t.get("views", held.record_id)
        if old_views is not None and event.views is not None:
            new_views = [(d, v) for d, v in unpack_views(event.views) if d not in old_digests]
            t.put("views", held.record_id, pack_views(unpack_views(bytes(old_views)) + new_views))
        else:
            t.delete("views", held.record_id)  # read by decoding the bodies instead
    # logged again at the end: what arrived may now go on to peers that had less of it
    t.delete("log", BE8.pack(held.seq))
    seq += 1
    t.put("log", BE8.pack(seq), held.record_id)
    t.put("events", ev, HeldEvent(held.record_id, held.level, held.timestamp, seq, held.id).encode())
    if _published(event.wire):
        seq = _relog_extras(t, ev, seq)
    return WriteOutcome.STORED, seq


def _claim_elements(t: Txn, ev: bytes, element_rows: list[tuple[bytes, bytes]]) -> bool:
    """Write a new event's element rows unless one of its uuids belongs to another event (held,
    or earlier in this transaction); False, with nothing written, if one does.

    The check is the put itself (no overwrite): one B-tree descent per element instead of a
    get and then a put."""
    consumed, added = t.putmulti("elements", element_rows, overwrite=False)
    if added == consumed:
        return True
    # Some uuid is taken. The event is new, so no row names it yet: whatever names it now was
    # written just above.
    if _uuid_conflict(t, ev, [u for u, _ in element_rows]):
        for u, _ in element_rows:
            held = t.get("elements", u)
            if held is not None and held[:16] == ev:
                t.delete("elements", u)
        return False
    # Only repeats within this event (a peer's revision may carry them): the last one wins.
    t.putmulti("elements", element_rows)
    return True


def _uuid_conflict(t: Txn, ev: bytes, uuids: list[bytes]) -> bool:
    """Whether any of these element uuids belongs to another event."""
    get = t.getter("elements")
    for u in uuids:
        raw = get(u)
        if raw is not None and raw[:16] != ev:
            return True
    return False


def _delete_rows(t: Txn, ev: bytes, rows: Rows) -> None:
    for name, items in zip(ROW_DBS, rows):
        for key, value in items:
            if name == "bodies":
                continue  # popped by the caller
            if name == "elements":
                # the element uuid may meanwhile belong to the new revision's body
                if t.get(name, key) == value:
                    t.delete(name, key)
            elif name in DUPSORT:
                t.delete(name, key, value)
            else:
                t.delete(name, key)


def _index_header(t: Txn, ev: bytes, index: tuple[bytes, bytes, tuple[bytes, ...]]) -> None:
    orgc, ts, tag_keys = index
    t.put("ix_org", orgc, ev)
    t.put("ix_event_time", ts + ev, b"")
    for key in tag_keys:
        t.put("ix_event_tag", key, ev)


def _unindex_header(t: Txn, ev: bytes, index: tuple[bytes, bytes, tuple[bytes, ...]]) -> None:
    orgc, ts, tag_keys = index
    t.delete("ix_org", orgc, ev)
    t.delete("ix_event_time", ts + ev)
    for key in tag_keys:
        t.delete("ix_event_tag", key, ev)


def _published(wire: bytes) -> bool:
    """The published flag of an event revision's wire form (read without verifying: it was)."""
    _version, _kind, _author, _created, body = canonical.unpack(canonical.unpack(wire)[0])
    return bool(body["event"].get("published"))

