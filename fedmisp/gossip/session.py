"""The pull replication session as a state machine without I/O (as h11 is for HTTP).

One session pulls from one peer: "what may I receive since sequence N", then only the element
bodies it lacks, then hands the driver one batch to store together with the new checkpoint, in one
transaction. The driver (aiohttp + the store, in gossip/driver.py) does the I/O; tests drive the
session with recorded or generated messages.

    session = PullSession(peer="csirt", checkpoint=held_checkpoint)
    while (step := session.next_step()) is not Done:
        SendChanges  -> POST /fed/v1/changes {since, limit}; session.changes_received(reply)
        LookUp       -> read what this node holds and knows (look_up(local, step)); session.facts_received(facts)
        SendBodies   -> POST /fed/v1/bodies {event, digests}; session.bodies_received(event, bodies)
        StoreBatch   -> write step.events and step.checkpoint in one transaction; session.stored()
        WaitStored   -> the next batch is ready: finish storing the one handed out, session.stored()

Its states are sentinels and its transitions a table (`TRANSITIONS`, as h11's are): what the peer
was asked (IDLE, AWAIT_CHANGES, TAKE_PAGE, AWAIT_FACTS, AWAIT_BODIES, DONE) and, beside it, whether
a batch is being stored (STORE_IDLE, STORING). A page's records are checked against local facts
(held revisions and digests, known and blocked keys) that the session asks for with a LookUp step,
so no transition reads the store; gossip/driver.py runs the one step loop over any transport.

A driver may call `stored()` at once after each StoreBatch (the simple loop above), or store the
batch in the background and keep calling `next_step()`: the session then fetches the next page
while the previous one is stored (at most one batch is out at a time; WaitStored says when the
driver must wait for it). The checkpoint only moves past a change once everything of it that may
be stored is stored, so a crash at any point resumes from the last stored checkpoint and re-sent
data is a no-op.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

from fedmisp.model import canonical
from fedmisp.model.analyst import analyst_problem
from fedmisp.model.org import OrgClaim, read_org
from fedmisp.model.received import received_problem
from fedmisp.model.records import (
    KIND_ANALYST, KIND_EVENT, KIND_ORG, KIND_PROPOSAL, KIND_PROPOSAL_DECISION, KIND_RETRACTION, KIND_SHARING_GROUP,
    KIND_CLUSTER, KIND_SIGHTINGS, KIND_TEMPLATE, SALT_BYTES, Record, RecordError, body_problem, element_digest, open_record,
    revision_elements,
)
from fedmisp.model.retraction import NO_LEVEL, read_retraction
from fedmisp.model.clusters import cluster_problem
from fedmisp.model.templates import template_problem
from fedmisp.policy.inbound import author_reason, check_received, not_older, record_reason
from fedmisp.policy.reasons import Reason


# One changes page: enough to amortise a round trip, small enough to keep a page's skeletons in
# memory (an event skeleton is 32 bytes per element).
CHANGES_PAGE = 200
# Elements a sender offers per changes page (gossip/sender.py). The receiver stores a page as one
# batch with its checkpoint, so this bounds the work a crash can lose and the memory a batch holds
# (an event is never split).
PAGE_ELEMENTS = 20_000
# Bodies per request: about 2-5 MB of typical attributes; a big event streams in many requests.
BODIES_PAGE = 5_000
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# What a peer says is checked against its domain (docs DESIGN: "what a peer claims ... can only
# narrow, never widen"):
# - a level an item is offered at is the level the receiver holds it at (docs/policy.md's table:
#   0 your organisation only .. 4 sharing group); 5 "inherit" is only for what an author signs, and
#   a sender resolves it before it offers. -1 would pass every max_distribution cap and be relayed.
OFFERED_LEVELS = range(0, 5)
# - a log sequence number (since, seq, last_seq, head): the store packs them as unsigned 64-bit
#   keys and its log counts up by one per record stored, so no real log gets near 2^63; above it a
#   checkpoint would not fit the signed 64-bit integers msgpack and the exporters use.
SEQ_LIMIT = 2 ** 63
# A page that carries no change still moves the checkpoint (the peer may receive none of the log
# entries it covers), and storing a checkpoint is one LMDB commit with its fsync: such pages are
# stored together, this many at a time. At CHANGES_PAGE log entries a page, a crash re-reads at
# most 10,000 entries the peer may not have (seconds), and a peer that sends empty pages costs
# this node one commit per 50 of them.
EMPTY_PAGES_PER_CHECKPOINT = 50

# Limits of one pull (the driver enforces them with a clock, `stop_rule` decides): a pull that
# breaks one ends, what it stored stays stored, the peer is backed off and the status says why.
# - The whole pull: ten minutes, the longest backoff (gossip/service.py BACKOFF_MAX). At the
#   measured 20,000-30,000 attributes a second of a bulk pull on a 2-core machine (bench/sync.py)
#   that is more than ten million attributes; a larger first pull goes on from its checkpoint in
#   the next one. A peer that moves its log forward a little at a time holds its pull no longer.
PULL_DEADLINE_SECONDS = 600.0
# - No progress (no batch stored, no body accepted) for this long: four times the read timeout of
#   one request (gossip/http.py READ_TIMEOUT, 15 s). A sender computes a page of 20,000 offered
#   elements in under a second and serves 5,000 bodies in less (bench/sync.py); a peer that
#   answers each page just before the read timeout with nothing in it is stopped here.
NO_PROGRESS_SECONDS = 60.0
# - Pages in a row that carry no change: 1,000 pages are 200,000 log entries (CHANGES_PAGE) of
#   which the peer may receive nothing. A real sender can do that (a log full of what this node
#   may not have); its pull then ends and the next one goes on from the checkpoint reached.
NO_PROGRESS_PAGES = 1_000
DEADLINE, NO_PROGRESS = Reason.PULL_DEADLINE, Reason.PULL_NO_PROGRESS  # why a pull was stopped


# --- states ------------------------------------------------------------------------------------------

class _State(type):
    def __repr__(cls) -> str:
        return cls.__name__


class IDLE(metaclass=_State):
    """Nothing is asked of the peer: next_step decides what comes next."""


class AWAIT_CHANGES(metaclass=_State):
    """A changes request is out (SendChanges): changes_received."""


class TAKE_PAGE(metaclass=_State):
    """A page arrived whose records need local facts: next_step asks for them (LookUp)."""


class AWAIT_FACTS(metaclass=_State):
    """The local facts of a page are asked (LookUp): facts_received."""


class AWAIT_BODIES(metaclass=_State):
    """A bodies request is out (SendBodies): bodies_received."""


class DONE(metaclass=_State):
    """Everything the peer offered is stored (Done)."""


class STORE_IDLE(metaclass=_State):
    """No batch is being stored."""


class STORING(metaclass=_State):
    """A batch handed out (StoreBatch) is being stored: stored()."""


# (state, what happens) -> the next state; anything else is a ProtocolError
TRANSITIONS: dict[tuple[type, str], type] = {
    (IDLE, "SendChanges"): AWAIT_CHANGES,
    (IDLE, "SendBodies"): AWAIT_BODIES,
    (IDLE, "Done"): DONE,
    (DONE, "Done"): DONE,
    (AWAIT_CHANGES, "changes"): TAKE_PAGE,  # (IDLE at once when the page needs no facts)
    (TAKE_PAGE, "LookUp"): AWAIT_FACTS,
    (TAKE_PAGE, "facts"): IDLE,  # a page that needs no facts is taken at once
    (AWAIT_FACTS, "facts"): IDLE,
    (AWAIT_BODIES, "bodies"): IDLE,
}
STORE_TRANSITIONS: dict[tuple[type, str], type] = {
    (STORE_IDLE, "StoreBatch"): STORING,
    (STORING, "store"): STORE_IDLE,
}
# what a state waits for, as a ProtocolError names it
_WAITING_FOR = {AWAIT_CHANGES: "changes", TAKE_PAGE: "facts", AWAIT_FACTS: "facts", AWAIT_BODIES: "bodies"}


class ProtocolError(Exception):
    """The peer sent something this protocol does not allow; the session stops, nothing is stored."""


class RefusedReply(ProtocolError):
    """A reply of the peer that is wrong as a whole (its page-level fields, or its shape): refused
    once, the pull ends and the peer is backed off (gossip/service.py), nothing of it is stored."""


@dataclass(frozen=True, slots=True)
class PullLimits:
    deadline: float = PULL_DEADLINE_SECONDS
    no_progress_seconds: float = NO_PROGRESS_SECONDS
    no_progress_pages: int = NO_PROGRESS_PAGES


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
    # offered digests not fetched because this node held their bodies when the offer was taken:
    # another pull may have replaced them since (the replica reports those still lacking)
    assumed_held: frozenset[bytes] = frozenset()


@dataclass(frozen=True, slots=True)
class Refused:
    seq: int
    reason: Reason
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
    # record id -> the level the sender offered a retraction at (-1: through a sharing group), or
    # an analyst-data record at (0-4)
    retraction_levels: dict[bytes, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LookUp:
    """What the page just received needs to know of this node (fast local reads, no network):
    answered by `look_up(local, step)` and handed back with `facts_received`."""
    events: tuple[str, ...]  # the held revision's timestamp and the bodies held, of each
    authors: tuple[tuple[bytes, int], ...]  # (key, created): known as an author here?
    keys: tuple[bytes, ...]  # revoked here ([blocklist] keys)?


@dataclass(frozen=True, slots=True)
class Facts:
    """The answer to a LookUp."""
    held_timestamps: dict[str, int | None]
    held_digests: dict[str, set[bytes]]
    known: dict[tuple[bytes, int], bool]
    blocked: frozenset[bytes]


@dataclass(frozen=True, slots=True)
class WaitStored:
    """The next batch (or the end) waits until the batch handed out is stored: call stored()."""
    checkpoint: int  # what the batch being stored moves the checkpoint to


@dataclass(frozen=True, slots=True)
class Done:
    checkpoint: int


class Local(Protocol):
    """What a LookUp asks of the receiving node (gossip/receiver.py Receiver is one)."""

    def held_digests(self, event_uuid: str) -> set[bytes]: ...

    def held_timestamp(self, event_uuid: str) -> int | None: ...

    def author_known(self, key: bytes, created: int) -> bool:
        """The key is this node's, a configured peer's or introduced by an org record, and (if a
        rotation retired it) `created` is not after its rotation."""

    def key_blocked(self, key: bytes) -> bool:
        """The operator revoked the key here ([blocklist] keys): nothing it signs is taken."""


def look_up(local: Local, step: LookUp) -> Facts:
    """Answer a LookUp from `local`: the one place the facts a pull needs are read."""
    return Facts({u: local.held_timestamp(u) for u in step.events},
                 {u: local.held_digests(u) for u in step.events},
                 {a: local.author_known(*a) for a in step.authors},
                 frozenset(k for k in step.keys if local.key_blocked(k)))


@dataclass
class _Seen:
    """One change of a page as read before its facts come (PullSession._seen)."""
    change: dict[str, Any]
    wire: bytes | None = None
    record: Record | None = None
    error: RecordError | None = None  # the record, its org claim or its digest list does not read
    claim: OrgClaim | None = None
    digests: set[bytes] = field(default_factory=set)
    problem: str | None = None  # an event's header or offered levels are wrong


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
    assumed: set[bytes] = field(default_factory=set)  # offered, not fetched: held when taken

    @property
    def offered(self) -> dict[bytes, int]:
        return self.change["elements"]


# records checked for shape on arrival: kind -> (the shape check, offered at a level 0-4)
_SHAPED_RECORDS: dict[str, tuple[Callable[[Any], str | None], bool]] = {
    KIND_TEMPLATE: (template_problem, False),
    KIND_CLUSTER: (cluster_problem, True),
    KIND_ANALYST: (analyst_problem, True),
}


class PullSession:
    def __init__(self, peer: str, checkpoint: int):
        self.peer = peer
        self.checkpoint = checkpoint
        self.state: type = IDLE  # what the peer was asked (TRANSITIONS)
        self.store_state: type = STORE_IDLE  # whether a batch is being stored (STORE_TRANSITIONS)
        self._since = checkpoint
        self._more = True
        self._page: list[_Seen] = []  # the page received, until its facts come (TAKE_PAGE, AWAIT_FACTS)
        self._lookup: LookUp | None = None
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
        self._handed: dict[str, _Pending] = {}  # the events of the batch handed out, by uuid
        self._repaired: set[bytes] = set()  # revisions fetched again once (see stored)
        self._everything = False
        self._limit = CHANGES_PAGE  # of the changes request in flight
        self._unstored_pages = 0  # pages taken since the last batch was handed out
        # what the pull rules read (`stop_rule`): the peer's log head as its last page said it,
        # a counter that moves whenever the pull gets somewhere (a batch stored, a body accepted),
        # and the changes pages in a row that carried no change
        self.head: int | None = None
        self.progress = 0
        self.empty_pages = 0

    # --- what to do next ---------------------------------------------------------------------------

    def next_step(self) -> SendChanges | LookUp | SendBodies | StoreBatch | WaitStored | Done:
        if self.state is TAKE_PAGE:
            assert self._lookup is not None
            self._move("LookUp")
            return self._lookup
        if self.state is not IDLE and self.state is not DONE:
            raise ProtocolError(f"waiting for {_WAITING_FOR[self.state]}")
        for pending in self._pending:
            if pending.complete:
                continue
            missing = [d for d in pending.need if d not in pending.bodies]
            if not missing:
                pending.complete = True  # bodies only arrive and `need` only shrinks
            else:
                self._move("SendBodies")
                self._asked = (pending.event_uuid, tuple(missing[:BODIES_PAGE]))
                everything = len(missing) == len(pending.offered) <= BODIES_PAGE
                self._everything = everything
                return SendBodies(*self._asked, everything=everything)
        storing = self.store_state is STORING
        moved = self._page_last > (self._storing if storing else self.checkpoint)
        if self._pending or self._ready or self._refused or self._records or moved and (
                not self._more or self._unstored_pages >= EMPTY_PAGES_PER_CHECKPOINT):
            if storing:
                return WaitStored(self._storing)  # one batch out at a time
            self._store_move("StoreBatch")
            for pending in self._pending:
                self._ready.append(ReceivedEvent(pending.wire, pending.event_uuid, pending.bodies,
                                                 _offered(pending.change, pending.event_uuid), pending.change["seq"],
                                                 pending.record, frozenset(pending.assumed)))
            self._handed = {p.event_uuid: p for p in self._pending}
            batch = StoreBatch(tuple(self._ready), tuple(self._refused), self._page_last, tuple(self._records),
                               self._retraction_levels)
            self._storing_events = {e.event_uuid for e in self._ready} | self._retracting
            self._pending, self._ready, self._refused, self._records = [], [], [], []
            self._retraction_levels, self._retracting = {}, set()
            self._storing = self._page_last
            self._unstored_pages = 0
            return batch
        if self._more:
            self._move("SendChanges")
            self._limit = CHANGES_PAGE
            return SendChanges(self._since, self._limit)
        if storing:
            return WaitStored(self._storing)
        self._move("Done")
        return Done(self.checkpoint)

    @property
    def bodies_wanted(self) -> int:
        """Bodies still to fetch for the events of the pages taken so far."""
        return sum(len(p.need) - len(p.bodies) for p in self._pending)

    # --- what came back ------------------------------------------------------------------------------

    def changes_received(self, reply: Any) -> None:
        """Take a changes page. A page whose own fields are wrong (`page_problem`) is refused whole
        (RefusedReply: nothing of it is stored, the checkpoint does not move); a change whose
        record, levels or digests are wrong is refused alone (`malformed`) and the page goes on.
        The page's records are taken when the facts they need come (LookUp, `facts_received`)."""
        self._move("changes")
        problem = page_problem(reply, self._since, self._limit, self.head)
        if problem is not None:
            raise RefusedReply(f"changes reply: {problem}")
        self._page = [self._seen(change) for change in reply["changes"]]
        self._lookup = self._look_up(self._page)
        if self._lookup is None:  # nothing to ask (an empty page, or none of its records opened)
            self.facts_received(Facts({}, {}, {}, frozenset()))
        self._since = self._page_last = reply["last_seq"]
        self._more = reply["more"]
        self.head = reply["head"]
        self._unstored_pages += 1
        self.empty_pages = 0 if reply["changes"] else self.empty_pages + 1

    def _seen(self, change: dict[str, Any]) -> _Seen:
        """What can be read of one change without local facts (its record opened, its shape
        checked), and so which facts it needs. Nothing is decided here: `_take` decides, in the
        order of the rules, so a record that breaks two is refused for the first."""
        seen = _Seen(change)
        wire = change.get("record")
        if not isinstance(wire, bytes):
            return seen
        seen.wire = wire
        try:
            record = seen.record = open_record(wire)
        except RecordError as e:
            seen.error = e
            return seen
        if record.kind == KIND_ORG:
            try:
                seen.claim = read_org(record)
            except RecordError as e:
                seen.error = e
        elif record.kind == KIND_EVENT:
            try:
                seen.digests = set(revision_elements(record))
            except RecordError as e:
                seen.error = e
                return seen
            seen.problem = received_problem(record.body["event"], header=True)
            if seen.problem is None:
                seen.problem = offer_problem(change, seen.digests)
        return seen

    def _look_up(self, page: list[_Seen]) -> LookUp | None:
        """The facts a page's records need (None: none, every record was refused unopened)."""
        events: dict[str, None] = {}
        authors: dict[tuple[bytes, int], None] = {}
        keys: dict[bytes, None] = {}
        for seen in page:
            record = seen.record
            if record is None:
                continue
            keys[record.author] = None
            if record.kind == KIND_ORG:
                claim = seen.claim
                if claim is not None:
                    keys[claim.key] = None
                    if claim.voucher is not None:
                        keys[claim.voucher] = None
                    if claim.previous is not None:
                        authors[(claim.previous, record.created)] = None
                continue
            authors[(record.author, record.created)] = None
            if record.kind == KIND_EVENT and seen.error is None and seen.problem is None:
                events[record.body["event"]["uuid"]] = None
        if not keys:
            return None
        return LookUp(tuple(events), tuple(authors), tuple(keys))

    def _take(self, seen: _Seen, facts: Facts) -> None:
        change = seen.change
        seq = change["seq"]
        wire = seen.wire
        if wire is None:
            self._refused.append(Refused(seq, Reason.MALFORMED, "change without a record"))
            return
        record = seen.record
        if record is None:
            assert seen.error is not None
            self._refused.append(Refused(seq, record_reason(seen.error), str(seen.error)))
            return
        blocked = facts.blocked
        if record.author in blocked:
            self._refused.append(Refused(seq, author_reason(blocked=True, known=False), kind=record.kind,
                                         record_id=record.id))
            return
        if record.kind == KIND_ORG:
            # An org record introduces its own key (self-signed) or a key that replaces one (signed
            # by the old key); it is what makes authors known. Whether the node accepts it is
            # decided when the batch is stored (policy/orgs.py); events by a key it refuses are
            # refused there too.
            claim = seen.claim
            if claim is None:
                self._refused.append(Refused(seq, Reason.MALFORMED, str(seen.error), record.kind, record.id))
                return
            if claim.key in blocked or (claim.voucher is not None and claim.voucher in blocked):
                self._refused.append(Refused(seq, author_reason(blocked=True, known=False), kind=record.kind,
                                             record_id=record.id))
                return
            self._records.append(wire)
            if claim.previous is None or claim.previous in self._introduced \
                    or facts.known[(claim.previous, record.created)]:
                self._introduced.add(claim.key)
            return
        reason = author_reason(blocked=False, known=record.author in self._introduced
                               or facts.known[(record.author, record.created)])
        if reason is not Reason.ALLOWED:
            self._refused.append(Refused(seq, reason, kind=record.kind, record_id=record.id))
            return
        shape = _SHAPED_RECORDS.get(record.kind)
        if shape is not None:
            # a published object template, a custom galaxy cluster version, an analyst-data item:
            # its shape (and the level it is offered at) here; who may send it, which version is
            # kept and whether its event is held when the batch is stored (policy/templates.py,
            # policy/clusters.py, policy/inbound.py analyst_inbound). Templates are stored before
            # the batch's events, which may name them.
            problem_of, levelled = shape
            problem = problem_of(record.body)
            level = change.get("level") if levelled else None
            if problem is None and levelled and (level.__class__ is not int or not 0 <= level <= 4):
                problem = f"{record.kind}: the level offered must be an integer from 0 to 4"
            if problem is not None:
                self._refused.append(Refused(seq, Reason.MALFORMED, problem, record.kind, record.id))
                return
            self._records.append(wire)
            if levelled:
                self._retraction_levels[record.id] = level
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
                self._refused.append(Refused(seq, Reason.MALFORMED, str(e), record.kind, record.id))
                return
            self._records.append(wire)
            self._retraction_levels[record.id] = level
            self._retracting.add(record.body["event_uuid"])
            return
        if record.kind != KIND_EVENT:
            return  # other kinds replicate in a later version of the protocol
        if seen.error is not None:
            self._refused.append(Refused(seq, Reason.MALFORMED, str(seen.error), record.kind, record.id))
            return
        digests = seen.digests
        if seen.problem is not None:
            header = record.body["event"]
            self._refused.append(Refused(seq, Reason.MALFORMED, seen.problem, record.kind, record.id,
                                         str(header.get("uuid", "")) if isinstance(header, dict) else ""))
            return
        event_uuid = record.body["event"]["uuid"]
        offered = change.get("elements")
        if offered.__class__ is int:
            # one level for every element of the revision (the sender's compact form)
            offered = change["elements"] = dict.fromkeys(digests, offered)
        reason = not_older(facts.held_timestamps[event_uuid], record.body["event"]["timestamp"])
        if reason is not Reason.ALLOWED:  # (its bodies are not fetched; the store decides a tie)
            self._refused.append(Refused(seq, reason, kind=record.kind, record_id=record.id, event_uuid=event_uuid))
            return
        # One revision of an event per page: the page is one batch, and its bodies are fetched and
        # stored per event. Of two, the one the store would keep (timestamp, then record id: docs
        # DESIGN) goes on and the other is refused as older; the same revision twice is malformed.
        twin = next((i for i, p in enumerate(self._pending) if p.event_uuid == event_uuid), None)
        if twin is not None:
            other = self._pending[twin]
            if other.record_id == record.id:
                self._refused.append(Refused(seq, Reason.MALFORMED, "the same revision is listed twice in one page",
                                             record.kind, record.id, event_uuid))
                return
            reason = not_older(other.record.body["event"]["timestamp"], record.body["event"]["timestamp"],
                               held_id=other.record_id, record_id=record.id)
            if reason is not Reason.ALLOWED:
                self._refused.append(Refused(seq, reason, "a newer revision of the event is in the same page",
                                             record.kind, record.id, event_uuid))
                return
            del self._pending[twin]
            self._refused.append(Refused(other.change["seq"], Reason.OLDER, "a newer revision of the event is in the same page",
                                         record.kind, other.record_id, event_uuid))
        have = set() if event_uuid in self._storing_events else facts.held_digests[event_uuid]
        need = sorted(d for d in offered if d not in have)
        self._pending.append(_Pending(change, event_uuid, wire, need, record.id, record,
                                      assumed={d for d in offered if d in have}))

    def facts_received(self, facts: Facts) -> None:
        """Take the page received with the facts its LookUp asked for (`look_up`)."""
        self._move("facts")
        page, self._page, self._lookup = self._page, [], None
        for seen in page:
            self._take(seen, facts)

    def bodies_received(self, event_uuid: str, bodies: Any) -> list[tuple[bytes, bytes]]:
        """Take a bodies reply; returns the (digest, body) pairs it accepted (verified), which a
        driver may start working on before the batch is handed out (gossip/replica.py rows_ahead)."""
        self._move("bodies")
        assert self._asked is not None
        asked_event, asked = self._asked
        if event_uuid != asked_event:
            raise ProtocolError("bodies reply for another event")
        pending = next(p for p in self._pending if p.event_uuid == event_uuid)
        if self._everything:
            if not isinstance(bodies, list) or len(bodies) > len(asked) \
                    or not all(isinstance(b, bytes) and len(b) > SALT_BYTES for b in bodies):
                raise RefusedReply("bodies reply: expected at most one body per element offered")
            by_digest = {element_digest(b): b for b in bodies}
            for stray in set(by_digest) - set(asked):
                self._refused.append(Refused(pending.change["seq"], check_received(digests_valid=False), "a body the offer did not list",
                                             "event", pending.record_id, pending.event_uuid))
                del by_digest[stray]
            bodies = [by_digest.get(d) for d in asked]
        hashed = self._everything  # each body was matched to its digest by hashing it: not again
        if not isinstance(bodies, list) or len(bodies) != len(asked):
            raise RefusedReply("bodies reply: expected one entry (body or nil) per digest asked")
        got = pending.bodies
        accepted: list[tuple[bytes, bytes]] = []
        for digest, body in zip(asked, bodies):
            if body is None:
                # The sender no longer offers it (its policy changed, or the revision moved on).
                pending.need.remove(digest)
                continue
            if body.__class__ is not bytes:
                raise RefusedReply("bodies reply: a body must be bytes")
            # The body is what the author signed (its size and digest). Its content is opened and
            # checked when the batch is stored, by the row workers of a large pull (gossip/replica.py).
            problem = body_problem(digest, body, digest=digest if hashed else None)
            if problem is not None:
                self._refused.append(Refused(pending.change["seq"], check_received(digests_valid=False), problem, "event",
                                             pending.record_id, pending.event_uuid))
                pending.need.remove(digest)
                continue
            got[digest] = body
            accepted.append((digest, body))
        self.progress += len(accepted)
        return accepted

    def bodies_held(self, event_uuid: str, held: set[bytes]) -> None:
        """Instead of a bodies reply: another pull stored this revision meanwhile, and `held` are
        the event's bodies this node holds now; they are not asked of the peer, what is still
        lacking is (next_step). Held bodies of an event whose copy a batch of this pull is about
        to replace are not counted (what is held of it may go)."""
        self._move("bodies")
        assert self._asked is not None and self._asked[0] == event_uuid, "not the event asked for"
        self._asked = None
        if event_uuid in self._storing_events:
            return
        pending = next(p for p in self._pending if p.event_uuid == event_uuid)
        pending.assumed |= {d for d in pending.need if d not in pending.bodies and d in held}
        pending.need = [d for d in pending.need if d in pending.bodies or d not in held]

    def pending_record(self, event_uuid: str) -> Record | None:
        """The record of an event whose bodies are being fetched (None: no such event pending)."""
        return next((p.record for p in self._pending if p.event_uuid == event_uuid), None)

    def stored(self, lacking: Mapping[str, Iterable[bytes]] | None = None) -> None:
        """The batch handed out last is stored (with its checkpoint). `lacking`: per event, bodies
        it took as held that another pull's batch replaced before this one was stored (the store
        said so, replica.apply): they are fetched from this peer and stored with the next batch,
        once per revision (a revision that keeps losing them is left to the next revision)."""
        if self.store_state is not STORING:
            raise ProtocolError(f"not waiting for store (waiting for {_WAITING_FOR.get(self.state, 'nothing')})")
        self._store_move("store")
        for event_uuid, digests in (lacking or {}).items():
            pending = self._handed.get(event_uuid)
            need = sorted(set(digests) & pending.offered.keys()) if pending is not None else []
            if pending is None or not need or pending.record_id in self._repaired \
                    or any(p.event_uuid == event_uuid for p in self._pending):
                continue  # (a newer revision of it is pending already: that one is stored instead)
            self._repaired.add(pending.record_id)
            self._pending.append(_Pending(pending.change, event_uuid, pending.wire, need, pending.record_id,
                                          pending.record))
        self._handed = {}
        if self._storing > self.checkpoint:
            self.progress += 1
        self.checkpoint, self._storing = self._storing, None
        self._storing_events = set()

    def _move(self, event: str) -> None:
        """Follow TRANSITIONS for `event` (a step handed out, or a reply taken)."""
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise ProtocolError(f"not waiting for {event} (waiting for {_WAITING_FOR.get(self.state, 'nothing')})")
        self.state = new

    def _store_move(self, event: str) -> None:
        self.store_state = STORE_TRANSITIONS[(self.store_state, event)]


def _offered(change: dict[str, Any], event_uuid: str) -> dict[bytes | str, int]:
    offered: dict[bytes | str, int] = dict(change["elements"])
    offered[event_uuid] = change["event_level"]  # (checked by offer_problem)
    return offered


def _is_seq(value: Any) -> bool:
    return value.__class__ is int and 0 <= value < SEQ_LIMIT


def _is_level(value: Any) -> bool:
    return value.__class__ is int and value in OFFERED_LEVELS  # (a bool is not a level)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def page_problem(reply: Any, since: int, limit: int, head: int | None) -> str | None:
    """What is wrong with a changes reply as a whole (None: nothing), for a request from `since`
    for at most `limit` changes, after earlier pages of the pull said `head` (None: the first).
    A log only grows: last_seq is not before `since`, nor past the head, and the head does not go
    back; a sender that says `more` has moved past `since` (a real one always does)."""
    if reply.__class__ is not dict:
        return "expected {changes: [...], last_seq: int, more: bool, head: int}"
    changes, last, more, new_head = (reply.get(k) for k in ("changes", "last_seq", "more", "head"))
    if changes.__class__ is not list:
        return "changes: expected a list"
    if len(changes) > limit:
        return f"changes: {len(changes)} listed; at most {limit} were asked for"
    for name, value in (("last_seq", last), ("head", new_head)):
        if not _is_seq(value):
            return f"{name}: {_show(value)} is not an integer 0 to 2^63-1"
    if more.__class__ is not bool:
        return f"more: {_show(more)} is not true or false"
    if last < since:
        return f"last_seq: {last} is before since {since} (went backwards)"
    if last > new_head:
        return f"last_seq: {last} is past head {new_head}"
    if head is not None and new_head < head:
        return f"head: {new_head} is before {head}, which an earlier page of this pull said (went backwards)"
    if more and last == since:
        return f"more: true, but last_seq did not move past since {since}"
    previous = since
    for change in changes:
        seq = change.get("seq") if change.__class__ is dict else None
        if not _is_seq(seq) or not previous < seq <= last:
            return f"seq: {_show(seq)}; sequence numbers must increase within (since {since}, last_seq {last}]"
        previous = seq
    return None


def offer_problem(change: dict[str, Any], digests: set[bytes]) -> str | None:
    """What is wrong with the levels an event revision is offered at (None: nothing): the header's
    `event_level` and, per element, `elements` (one level for all, or {digest: level} for digests
    the signed revision carries: a body it does not carry is never asked for)."""
    level = change.get("event_level")
    if not _is_level(level):
        return f"event_level: {_show(level)} is not an integer 0 to 4"
    offered = change.get("elements")
    if offered.__class__ is int:
        return None if _is_level(offered) else f"elements: {_show(offered)} is not an integer 0 to 4"
    if offered.__class__ is not dict:
        return "elements: expected a level 0 to 4 or {digest: level}"
    for digest, level in offered.items():
        if digest not in digests:  # (a digest the revision carries is bytes)
            return f"elements: {_show(digest)} is not a digest of the signed revision"
        if not _is_level(level):
            return f"elements: {level!r} for digest {digest.hex()[:16]} is not an integer 0 to 4"
    return None


def stop_rule(session: PullSession, elapsed: float, since_progress: float, limits: PullLimits) -> str | None:
    """Why the pull must end now (None: it goes on), with `elapsed` seconds since it started and
    `since_progress` since `session.progress` last moved; the driver reads the clock."""
    if elapsed >= limits.deadline:
        return f"{DEADLINE}: the pull ran {elapsed:.0f} s (at most {limits.deadline:.0f} s)"
    if since_progress >= limits.no_progress_seconds:
        return (f"{NO_PROGRESS}: nothing stored and no body accepted for {since_progress:.0f} s "
                f"(at most {limits.no_progress_seconds:.0f} s)")
    if session.empty_pages >= limits.no_progress_pages:
        return f"{NO_PROGRESS}: {session.empty_pages} changes pages in a row carried no change (at most {limits.no_progress_pages})"
    return None


def encode(message: Any) -> bytes:
    return canonical.pack_sorted(message)


def decode(data: bytes) -> Any:
    return canonical.unpack(data, max_bytes=MAX_MESSAGE_BYTES)
