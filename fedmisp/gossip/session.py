"""The pull replication session as a state machine without I/O (as h11 is for HTTP).

One session pulls from one peer: "what may I receive since sequence N", then only the element
bodies it lacks, then hands the driver one batch to store together with the new checkpoint, in one
transaction. The driver (aiohttp + the store, in gossip/driver.py) does the I/O; tests drive the
session with recorded or generated messages.

    session = PullSession(peer="csirt", checkpoint=held_checkpoint, local=local)
    while (step := session.next_step()) is not Done:
        SendChanges  -> POST /fed/v1/changes {since, limit}; session.changes_received(reply)
        SendBodies   -> POST /fed/v1/bodies {event, digests}; session.bodies_received(event, bodies)
        StoreBatch   -> write step.events and step.checkpoint in one transaction; session.stored()
        WaitStored   -> the next batch is ready: finish storing the one handed out, session.stored()

A driver may call `stored()` at once after each StoreBatch (the simple loop above), or store the
batch in the background and keep calling `next_step()`: the session then fetches the next page
while the previous one is stored (at most one batch is out at a time; WaitStored says when the
driver must wait for it). The checkpoint only moves past a change once everything of it that may
be stored is stored, so a crash at any point resumes from the last stored checkpoint and re-sent
data is a no-op.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from fedmisp.model import canonical
from fedmisp.model.org import read_org
from fedmisp.model.misp import received_problem
from fedmisp.model.records import (
    KIND_EVENT, KIND_ORG, KIND_PROPOSAL, KIND_PROPOSAL_DECISION, KIND_RETRACTION, KIND_SHARING_GROUP,
    KIND_SIGHTINGS, SALT_BYTES, Record, RecordError, body_problem, element_digest, open_record,
    revision_elements,
)
from fedmisp.model.retraction import NO_LEVEL, read_retraction


# One changes page: enough to amortise a round trip, small enough to keep a page's skeletons in
# memory (an event skeleton is 32 bytes per element).
CHANGES_PAGE = 200
# Bodies per request: about 2-5 MB of typical attributes; a big event streams in many requests.
BODIES_PAGE = 5_000
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ProtocolError(Exception):
    """The peer sent something this protocol does not allow; the session stops, nothing is stored."""


@dataclass(frozen=True, slots=True)
class SendChanges:
    since: int
    limit: int = CHANGES_PAGE


@dataclass(frozen=True, slots=True)
class SendBodies:
    event_uuid: str
    digests: tuple[bytes, ...]
    # the receiver holds none of what was offered: ask for "everything offered" instead of listing
    # digests (saves 32 bytes per element on the wire); the reply is then matched by digest
    everything: bool = False


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """An event revision to store: its verified record, the bodies fetched for it (verified against
    their digests), and the level the sender offered the header and each element digest at."""
    wire: bytes
    event_uuid: str
    bodies: dict[bytes, bytes]
    offered: dict[bytes | str, int]  # event uuid -> header level; digest -> element level
    seq: int
    record: Record | None = None  # the record opened (signature verified) from `wire`


@dataclass(frozen=True, slots=True)
class Refused:
    seq: int
    reason: str
    detail: str = ""
    kind: str = ""  # what is known of the record (nothing when it did not open), for the audit log
    record_id: bytes = b""
    event_uuid: str = ""


@dataclass(frozen=True, slots=True)
class StoreBatch:
    events: tuple[ReceivedEvent, ...]
    refused: tuple[Refused, ...]
    checkpoint: int
    records: tuple[bytes, ...] = ()  # org and sharing-group records, stored before the events
    # record id -> the level the sender offered a retraction at (-1: through a sharing group)
    retraction_levels: dict[bytes, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WaitStored:
    """The next batch (or the end) waits until the batch handed out is stored: call stored()."""
    checkpoint: int  # what the batch being stored moves the checkpoint to


@dataclass(frozen=True, slots=True)
class Done:
    checkpoint: int


class Local(Protocol):
    """What the session asks of the receiving node (fast local reads, no network)."""

    def held_digests(self, event_uuid: str) -> set[bytes]: ...

    def held_timestamp(self, event_uuid: str) -> int | None: ...

    def author_known(self, key: bytes, created: int) -> bool:
        """The key is this node's, a configured peer's or introduced by an org record, and (if a
        rotation retired it) `created` is not after its rotation."""

    def key_blocked(self, key: bytes) -> bool:
        """The operator revoked the key here ([blocklist] keys): nothing it signs is taken."""


@dataclass
class _Pending:
    change: dict[str, Any]
    event_uuid: str
    wire: bytes
    need: list[bytes]
    record_id: bytes
    record: Record
    bodies: dict[bytes, bytes] = field(default_factory=dict)
    complete: bool = False  # every body needed has arrived (or is no longer offered): not scanned again

    @property
    def offered(self) -> dict[bytes, int]:
        return self.change["elements"]


class PullSession:
    def __init__(self, peer: str, checkpoint: int, local: Local):
        self.peer = peer
        self.checkpoint = checkpoint
        self.local = local
        self._since = checkpoint
        self._more = True
        self._waiting: str | None = None  # "changes", "bodies"
        self._storing: int | None = None  # checkpoint of the batch handed out and not yet stored
        self._pending: list[_Pending] = []  # events whose bodies are being fetched, in seq order
        self._ready: list[ReceivedEvent] = []
        self._refused: list[Refused] = []
        self._records: list[bytes] = []
        self._retraction_levels: dict[bytes, int] = {}
        # events the batch handed out (and not yet stored) revises or retracts: what is held of
        # them may be about to go, so their bodies are not taken as held (fetched again instead)
        self._storing_events: set[str] = set()
        self._retracting: set[str] = set()  # events of the retractions taken since the last batch
        self._introduced: set[bytes] = set()  # keys of org records seen in this session (stored with the batch)
        self._page_last = checkpoint
        self._asked: tuple[str, tuple[bytes, ...]] | None = None
        self._everything = False

    # --- what to do next ---------------------------------------------------------------------------

    def next_step(self) -> SendChanges | SendBodies | StoreBatch | WaitStored | Done:
        if self._waiting is not None:
            raise ProtocolError(f"waiting for {self._waiting}")
        for pending in self._pending:
            if pending.complete:
                continue
            missing = [d for d in pending.need if d not in pending.bodies]
            if not missing:
                pending.complete = True  # bodies only arrive and `need` only shrinks
            else:
                self._waiting = "bodies"
                self._asked = (pending.event_uuid, tuple(missing[:BODIES_PAGE]))
                everything = len(missing) == len(pending.offered) <= BODIES_PAGE
                self._everything = everything
                return SendBodies(*self._asked, everything=everything)
        storing = self._storing is not None
        if self._pending or self._ready or self._refused or self._records \
                or self._page_last > (self._storing if storing else self.checkpoint):
            if storing:
                return WaitStored(self._storing)  # one batch out at a time
            for pending in self._pending:
                self._ready.append(ReceivedEvent(pending.wire, pending.event_uuid, pending.bodies,
                                                 _offered(pending.change, pending.event_uuid), pending.change["seq"],
                                                 pending.record))
            batch = StoreBatch(tuple(self._ready), tuple(self._refused), self._page_last, tuple(self._records),
                               self._retraction_levels)
            self._storing_events = {e.event_uuid for e in self._ready} | self._retracting
            self._pending, self._ready, self._refused, self._records = [], [], [], []
            self._retraction_levels, self._retracting = {}, set()
            self._storing = self._page_last
            return batch
        if self._more:
            self._waiting = "changes"
            return SendChanges(self._since)
        if storing:
            return WaitStored(self._storing)
        return Done(self.checkpoint)

    @property
    def bodies_wanted(self) -> int:
        """Bodies still to fetch for the events of the pages taken so far."""
        return sum(len(p.need) - len(p.bodies) for p in self._pending)

    # --- what came back ------------------------------------------------------------------------------

    def changes_received(self, reply: Any) -> None:
        self._expect("changes")
        if not isinstance(reply, dict) or not isinstance(reply.get("changes"), list) \
                or not isinstance(reply.get("last_seq"), int) or not isinstance(reply.get("more"), bool):
            raise ProtocolError("changes reply: expected {changes: [...], last_seq: int, more: bool}")
        if reply["last_seq"] < self._since:
            raise ProtocolError("changes reply: last_seq went backwards")
        previous = self._since
        for change in reply["changes"]:
            seq = change.get("seq") if isinstance(change, dict) else None
            if not isinstance(seq, int) or not previous < seq <= reply["last_seq"]:
                raise ProtocolError("changes reply: sequence numbers must increase within (since, last_seq]")
            previous = seq
            self._take(change)
        self._since = reply["last_seq"]
        self._page_last = reply["last_seq"]
        self._more = reply["more"]

    def _take(self, change: dict[str, Any]) -> None:
        seq = change["seq"]
        wire = change.get("record")
        if not isinstance(wire, bytes):
            self._refused.append(Refused(seq, "malformed", "change without a record"))
            return
        try:
            record = open_record(wire)
        except RecordError as e:
            self._refused.append(Refused(seq, "bad-signature" if "signature" in str(e) else "malformed", str(e)))
            return
        if self.local.key_blocked(record.author):
            self._refused.append(Refused(seq, "key-blocked", kind=record.kind, record_id=record.id))
            return
        if record.kind == KIND_ORG:
            # An org record introduces its own key (self-signed) or a key that replaces one (signed
            # by the old key); it is what makes authors known. Whether the node accepts it is
            # decided when the batch is stored (policy/orgs.py); events by a key it refuses are
            # refused there too.
            try:
                claim = read_org(record)
            except RecordError as e:
                self._refused.append(Refused(seq, "malformed", str(e), record.kind, record.id))
                return
            if self.local.key_blocked(claim.key) or (claim.voucher is not None and self.local.key_blocked(claim.voucher)):
                self._refused.append(Refused(seq, "key-blocked", kind=record.kind, record_id=record.id))
                return
            self._records.append(wire)
            if claim.previous is None or claim.previous in self._introduced \
                    or self.local.author_known(claim.previous, record.created):
                self._introduced.add(claim.key)
            return
        if record.author not in self._introduced and not self.local.author_known(record.author, record.created):
            self._refused.append(Refused(seq, "unknown-author", kind=record.kind, record_id=record.id))
            return
        if record.kind in (KIND_SHARING_GROUP, KIND_SIGHTINGS, KIND_PROPOSAL, KIND_PROPOSAL_DECISION):
            # sharing groups: checked against the revision rules when stored; sightings, proposals
            # and proposal decisions: kept when this node holds their event (a decision only if
            # the event's creator signed it)
            self._records.append(wire)
            return
        if record.kind == KIND_RETRACTION:
            # where it may go is decided when the batch is stored (policy/retractions.py), from the
            # level it is offered at
            level = change.get("level")
            try:
                read_retraction(record)
                if level.__class__ is not int or not NO_LEVEL <= level <= 3:
                    raise RecordError("retraction: the level offered must be an integer from -1 to 3")
            except RecordError as e:
                self._refused.append(Refused(seq, "malformed", str(e), record.kind, record.id))
                return
            self._records.append(wire)
            self._retraction_levels[record.id] = level
            self._retracting.add(record.body["event_uuid"])
            return
        if record.kind != KIND_EVENT:
            return  # other kinds replicate in a later version of the protocol
        try:
            digests = set(revision_elements(record))
        except RecordError as e:
            self._refused.append(Refused(seq, "malformed", str(e), record.kind, record.id))
            return
        problem = received_problem(record.body["event"], header=True)
        if problem is not None:
            self._refused.append(Refused(seq, "malformed", problem, record.kind, record.id,
                                         str(record.body["event"].get("uuid", ""))))
            return
        event_uuid = record.body["event"]["uuid"]
        offered = change.get("elements")
        if isinstance(offered, int) and not isinstance(offered, bool):
            # one level for every element of the revision (the sender's compact form)
            offered = change["elements"] = {d: offered for d in digests}
        if not isinstance(offered, dict) \
                or not all(isinstance(d, bytes) and d in digests and v.__class__ is int for d, v in offered.items()):
            self._refused.append(Refused(seq, "malformed", "offered elements must be digests of the revision",
                                         record.kind, record.id, str(event_uuid)))
            return
        held = self.local.held_timestamp(event_uuid)
        if held is not None and record.body["event"].get("timestamp", 0) < held:
            self._refused.append(Refused(seq, "older", kind=record.kind, record_id=record.id, event_uuid=event_uuid))
            return
        have = set() if event_uuid in self._storing_events else self.local.held_digests(event_uuid)
        need = sorted(d for d in offered if d not in have)
        self._pending.append(_Pending(change, event_uuid, wire, need, record.id, record))

    def bodies_received(self, event_uuid: str, bodies: Any) -> list[tuple[bytes, bytes]]:
        """Take a bodies reply; returns the (digest, body) pairs it accepted (verified), which a
        driver may start working on before the batch is handed out (gossip/replica.py rows_ahead)."""
        self._expect("bodies")
        assert self._asked is not None
        asked_event, asked = self._asked
        if event_uuid != asked_event:
            raise ProtocolError("bodies reply for another event")
        pending = next(p for p in self._pending if p.event_uuid == event_uuid)
        if self._everything:
            if not isinstance(bodies, list) or len(bodies) > len(asked) \
                    or not all(isinstance(b, bytes) and len(b) > SALT_BYTES for b in bodies):
                raise ProtocolError("bodies reply: expected at most one body per element offered")
            by_digest = {element_digest(b): b for b in bodies}
            for stray in set(by_digest) - set(asked):
                self._refused.append(Refused(pending.change["seq"], "bad-digest", "a body the offer did not list",
                                             "event", pending.record_id, pending.event_uuid))
                del by_digest[stray]
            bodies = [by_digest.get(d) for d in asked]
        hashed = self._everything  # each body was matched to its digest by hashing it: not again
        if not isinstance(bodies, list) or len(bodies) != len(asked):
            raise ProtocolError("bodies reply: expected one entry (body or nil) per digest asked")
        got = pending.bodies
        accepted: list[tuple[bytes, bytes]] = []
        for digest, body in zip(asked, bodies):
            if body is None:
                # The sender no longer offers it (its policy changed, or the revision moved on).
                pending.need.remove(digest)
                continue
            if body.__class__ is not bytes:
                raise ProtocolError("bodies reply: a body must be bytes")
            # The body is what the author signed (its size and digest). Its content is opened and
            # checked when the batch is stored, by the row workers of a large pull (gossip/replica.py).
            problem = body_problem(digest, body, digest=digest if hashed else None)
            if problem is not None:
                self._refused.append(Refused(pending.change["seq"], "bad-digest", problem, "event",
                                             pending.record_id, pending.event_uuid))
                pending.need.remove(digest)
                continue
            got[digest] = body
            accepted.append((digest, body))
        return accepted

    def pending_record(self, event_uuid: str) -> Record | None:
        """The record of an event whose bodies are being fetched (None: no such event pending)."""
        return next((p.record for p in self._pending if p.event_uuid == event_uuid), None)

    def stored(self) -> None:
        """The batch handed out last is stored (with its checkpoint)."""
        if self._storing is None:
            raise ProtocolError(f"not waiting for store (waiting for {self._waiting or 'nothing'})")
        self.checkpoint, self._storing = self._storing, None
        self._storing_events = set()

    def _expect(self, what: str) -> None:
        if self._waiting != what:
            raise ProtocolError(f"not waiting for {what} (waiting for {self._waiting or 'nothing'})")
        self._waiting = None


def _offered(change: dict[str, Any], event_uuid: str) -> dict[bytes | str, int]:
    offered: dict[bytes | str, int] = dict(change["elements"])
    level = change.get("event_level")
    if isinstance(level, int):
        offered[event_uuid] = level
    return offered


def encode(message: Any) -> bytes:
    return canonical.pack_sorted(message)


def decode(data: bytes) -> Any:
    return canonical.unpack(data, max_bytes=MAX_MESSAGE_BYTES)
