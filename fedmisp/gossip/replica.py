"""Replication against the store: what a peer may pull (sender), what a node keeps (receiver).

Sender: `changes_for` walks the local log since the peer's checkpoint and offers, per event, the
skeleton and the level the peer may hold the header and each element digest at (policy outbound,
DESIGN's pipeline); `bodies_for` serves only bodies the peer may have, decided again at that moment.
Receiver: `apply` runs policy inbound on what a session fetched, merges the holding (each item at
the highest level any path allowed) and stores the batch with the checkpoint in one transaction.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from fedmisp.gossip.observe import IN, NO_OBSERVER, OUT, REFUSED, SENT, STORED, WITHHELD, Decision, Observer, count_reasons
from fedmisp.gossip.session import ReceivedEvent, Refused, StoreBatch
from fedmisp.model.received import received_problem
from fedmisp.model.records import (
    KIND_EVENT, KIND_ORG, KIND_PROPOSAL, KIND_PROPOSAL_DECISION, KIND_RETRACTION, KIND_SHARING_GROUP,
    KIND_SIGHTINGS, Record, RecordError, open_element, open_record, seal,
)
from fedmisp.model.retraction import NO_LEVEL, read_retraction
from fedmisp.policy.retractions import retraction_inbound, retraction_outbound
from fedmisp.gossip.peers import PeerConfig
from fedmisp.gossip.peers import NodeView
from fedmisp.gossip.sharing_groups import (
    accept as accept_sharing_group, current_groups, from_record as sharing_group_from_record,
)
from fedmisp.policy.orgs import signed_while_current
from fedmisp.runtime import tune_gc
from fedmisp.policy.reasons import Reason
from fedmisp.policy.model import (
    SHARING_GROUP, ElementView, EventView, Holding, NodeState, PeerPolicy, element_view, event_view, header_view,
)
from fedmisp.policy.holding import (
    holding_all_from, join_views, pack_holding, pack_views, unpack_holding, unpack_views, views_of,
)
from fedmisp.policy.inbound import attached_inbound, author_reason, inbound
from fedmisp.policy.outbound import attached_outbound, outbound, sharing_group_outbound
from fedmisp.policy.pipeline import EventPlan, Outcome, merge, plan
from fedmisp.store.proposals import decision_shape_problem, proposal_shape_problem
from fedmisp.store.store import (
    EVENT_EXTRA_KINDS, EventWrite, Rows, WriteOutcome, element_rows, elements_rows, join_rows, received_write,
    unpack_element_rows, uuid16,
)

_VIEW_CACHE = 128  # event views kept between a changes page and its body requests
# Elements offered per changes page. The receiver stores a page as one batch with its checkpoint,
# so this bounds the work a crash can lose and the memory a batch holds (an event is never split).
PAGE_ELEMENTS = 20_000
# A received batch with at least this many bodies builds their store rows (decoding, value
# normalisation, correlation keys: about half of what storing a received event costs) in worker
# processes while this one runs the inbound policy and stores; below it, starting the workers and
# moving the bodies costs more than it saves. Rows are built in chunks of ROWS_CHUNK bodies so
# one big event keeps every worker busy.
ROWS_POOL_MIN = 4_000
ROWS_CHUNK = 2_500
ROWS_NICE = 10  # the row workers' lower CPU priority (see _start_row_worker)
# Bodies whose rows may be built ahead of their batch (rows_ahead): about two pages.
AHEAD_BODIES = 2 * PAGE_ELEMENTS + 10_000


@dataclass
class ApplyReport:
    stored: int = 0
    stored_records: int = 0  # org records, sharing-group revisions, sightings, proposals, decisions, retractions
    unchanged: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # reason -> count

    def refuse(self, reason: str, count: int = 1) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + count

    def add(self, other: "ApplyReport") -> None:
        self.stored += other.stored
        self.stored_records += other.stored_records
        self.unchanged += other.unchanged
        for reason, count in other.refused.items():
            self.refuse(reason, count)


@dataclass(frozen=True)
class _Held:
    record: Record
    view: EventView
    holding: Holding
    digest_of: dict[str, bytes]  # element uuid -> digest
    plan: EventPlan  # the peer-independent part of the policy decision, made once per revision
    # peer name -> (its policy, the node state, the outbound outcome) last decided: a changes page
    # and the bodies requests that follow it decide the same event for the same peer again, and
    # the decision is reused only while the peer's policy and the node's state are equal
    outcomes: dict[str, tuple[PeerPolicy, NodeState, Outcome]] = field(default_factory=dict, compare=False)


def _start_row_worker(parent: int, interval: float = 1.0) -> None:
    """In a row worker: yield the CPU to the node process, and exit when it is gone.

    The node process is a pull's critical path (policy, writes, every body's digest, all under one
    GIL) and the workers run ahead of it, so on a busy machine they get what is left (nice +ROWS_NICE).
    A worker waits on a queue whose write end it holds itself, so a node killed with SIGKILL would
    otherwise leave it waiting forever."""
    try:
        os.nice(ROWS_NICE)
    except OSError:
        pass
    tune_gc()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)
    threading.Thread(target=watch, name="fedmisp-parent-watch", daemon=True).start()


def open_received(body: bytes) -> dict[str, Any]:
    """A received body (its digest checked by the session) opened as policy and the store read it:
    decoded and its fields checked (`received_problem`). RecordError names what is wrong: the
    element is refused, the rest of its event goes on. The one place for it, in a row worker or here."""
    element = open_element(body)
    problem = received_problem(element)
    if problem is not None:
        raise RecordError(problem)
    return element


def open_rows(ev: bytes, entries: list[tuple[bytes, bytes]], event_disabled: bool) -> bytes:
    """In a row worker: `open_received` each body (`entries`: digest, body). One msgpack blob
    `[rows, attributes, views, bad]`: the store rows of the bodies that open (without the bodies'
    own rows), their views as the store keeps them (views_of: the receiver stores them, joined,
    when it keeps every body) and `[index, what is wrong]` of each bad one."""
    good: list[tuple[bytes, bytes, dict[str, Any]]] = []
    bad: list[tuple[int, str]] = []
    for i, (digest, body) in enumerate(entries):
        try:
            good.append((digest, body, open_received(body)))
        except RecordError as e:
            bad.append((i, str(e)))
    rows, attributes = elements_rows(ev, good, event_disabled)
    views = views_of([(digest, element) for digest, _, element in good])
    return msgpack.packb([rows, attributes, views, bad], use_bin_type=True)


@dataclass
class _Opened:
    """The bodies of one received revision, opened: each good one's view, the elements opened in
    this process (not those a worker opened), what is wrong with each bad one, and the rows the
    workers built ahead as `(digests covered, rows, attributes)`."""
    views: dict[bytes, ElementView] = field(default_factory=dict)
    elements: dict[bytes, dict[str, Any]] = field(default_factory=dict)
    bad: dict[bytes, str] = field(default_factory=dict)
    rows: list[tuple[list[bytes], Rows, int]] = field(default_factory=list)
    packed: list[bytes] = field(default_factory=list)  # the workers' views of their bodies (views_of)
    packed_count: int = 0  # views in `packed`


@dataclass(frozen=True)
class _Rows:
    """An accepted revision's element rows: parts built ahead, and the kept bodies they do not
    cover (`todo`), built by `jobs` in the workers or, with no jobs, in this process."""
    ready: list[tuple[Rows, int]]
    jobs: list[Future[bytes]] | None
    todo: list[tuple[bytes, bytes, dict[str, Any] | None]]


@dataclass(frozen=True)
class _Accepted:
    """What inbound policy lets in of one received revision: the element bodies kept (digest,
    body, element when opened in this process, in the revision's order) and the merged holding."""
    record: Record
    keep: list[tuple[bytes, bytes, dict[str, Any] | None]]
    holding: bytes
    correlation_only: bool
    withheld: dict[str, int]  # elements not kept, by reason (for the observer)
    views: bytes  # the kept bodies' policy views (views_of / pack_views), stored with the revision


class Replica:
    def __init__(self, node: NodeView, observer: Observer = NO_OBSERVER, rows_workers: int = 0):
        """`observer`: told every decision about a record and a peer (gossip/observe.py).
        `rows_workers`: worker processes that build the store rows of large received batches
        (0: everything in this process, as tests and one-process tools do)."""
        self.node = node
        self.store = node.store
        self.observer = observer
        self.rows_workers = rows_workers
        self._views: OrderedDict[bytes, _Held] = OrderedDict()
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        # (peer, record id) -> rows being built for its bodies as they arrived (rows_ahead), each
        # job with the digests it covers; taken by the batch that stores the record. Per peer:
        # pulls from two peers run at once (gossip/service.py) and may fetch the same revision.
        self._ahead: dict[tuple[str, bytes], list[tuple[list[bytes], Future[bytes]]]] = {}
        self._ahead_bodies = 0  # over every pull (the event loop adds, the store thread takes)
        self._ahead_lock = threading.Lock()
        # bumped whenever this replica stores what it pulled (holdings can change without a new
        # log entry): a changes page computed before is not served after (gossip/http.py)
        self.generation = 0

    def close(self) -> None:
        """Stop the row workers, if any were started."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        self.drop_ahead()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def node_state(self) -> NodeState:
        return NodeState(org_uuid=self.node.config.org_uuid, sharing_groups=current_groups(self.store),
                         blocked_events=self.node.config.blocked_events,
                         blocked_orgs=self.node.config.blocked_orgs)

    def peer(self, name: str) -> PeerConfig | None:
        """The configured peer; a peer configured without org_uuid gets it from its org record once
        one has arrived (until then it is in no sharing group and cannot be internal)."""
        peer = next((p for p in self.node.config.peers if p.name == name), None)
        return self._resolved(peer) if peer is not None else None

    def pinned_keys(self) -> dict[bytes, str]:
        """Key -> org uuid as this node's configuration pins them: its own key, and each peer's key
        configured with an org_uuid (an operator's word, which an org record cannot override)."""
        pinned = {p.key: p.policy.org_uuid for p in self.node.config.peers if p.policy.org_uuid}
        pinned[self.node.identity.public_key] = self.node.config.org_uuid
        return pinned

    def peers(self) -> list[PeerConfig]:
        """Every configured peer, resolved as `peer` does."""
        return [self._resolved(p) for p in self.node.config.peers]

    def _resolved(self, peer: PeerConfig) -> PeerConfig:
        """The pinned key followed through the peer org's accepted rotations (decision 0013: the
        configured key stays the trust anchor, the store knows what replaced it)."""
        key = self.store.current_key(peer.key)
        if key != peer.key:
            peer = replace(peer, key=key)
        if not peer.policy.org_uuid:
            org = self.store.org_for_key(peer.key)
            if org is not None:
                peer = replace(peer, policy=replace(peer.policy, org_uuid=org))
        return peer

    # --- sender --------------------------------------------------------------------------------------

    def held_event(self, event_uuid: str) -> _Held | None:
        """A held event with its policy view and holding (cached per revision)."""
        held = self.store.held(event_uuid)
        if held is None:
            return None
        cached = self._views.get(held.record_id)
        if cached is not None:
            self._views.move_to_end(held.record_id)
            return cached
        kept = self.store.revision_views(event_uuid)
        if kept is not None:  # the views kept with the revision: no body decoded
            record, views = kept
            view = header_view(record.body["event"], [v for _, v in views])
            digest_of = {v.uuid: d for d, v in views}
        else:
            found = self.store.revision_entries(event_uuid)
            if found is None:
                return None
            record, entries = found
            view = event_view(record.body["event"], [e for _, _, e in entries])
            digest_of = {e["uuid"]: d for d, _, e in entries}
        event_plan = plan(view)
        stored = self.store.holding(event_uuid)
        # made or imported here: held at the levels its author set (origin_holding, from the plan)
        holding = unpack_holding(stored) if stored is not None else Holding(levels=dict(event_plan.authored))
        result = _Held(record, view, holding, digest_of, event_plan)
        self._views[held.record_id] = result
        if len(self._views) > _VIEW_CACHE:
            self._views.popitem(last=False)
        return result

    def offer(self, event_uuid: str, peer: PeerPolicy,
              state: NodeState | None = None) -> tuple[_Held, dict[str, int]] | None:
        """What of one held event `peer` may have, as uuid -> level (None: nothing)."""
        held, outcome = self.decide(event_uuid, peer, state)
        if held is None or outcome is None or not outcome.allowed:
            return None
        return held, dict(outcome.levels)

    def decide(self, event_uuid: str, peer: PeerPolicy,
               state: NodeState | None = None) -> tuple[_Held | None, Outcome | None]:
        """The outbound decision for one held event and `peer` (None, None: not held)."""
        if self._all_from(event_uuid, peer.name):
            # rule 5, decided before the event is opened: everything came from that peer
            return None, Outcome(Reason.FROM_PEER)
        held = self.held_event(event_uuid)
        if held is None:
            return None, None
        state = state or self.node_state()
        cached = held.outcomes.get(peer.name)
        if cached is not None and cached[0] == peer and cached[1] == state:
            return held, cached[2]
        outcome = outbound(held.view, held.holding, peer, state, held.plan)
        held.outcomes[peer.name] = (peer, state, outcome)
        return held, outcome

    def _all_from(self, event_uuid: str, peer_name: str) -> bool:
        raw = self.store.holding(event_uuid)
        return raw is not None and holding_all_from(raw, peer_name)

    def _may_receive(self, event_uuid: Any, peer: PeerPolicy, state: NodeState) -> Reason:
        held = self.held_event(event_uuid) if isinstance(event_uuid, str) else None
        if held is None:
            return attached_outbound(None, Holding({}), peer, state)
        return attached_outbound(held.view, held.holding, peer, state, held.plan)

    def changes_for(self, peer: PeerPolicy, since: int, limit: int,
                    decisions: list[Decision] | None = None) -> dict[str, Any]:
        """One changes page for `peer`. `decisions`: collect what it decided there instead of
        telling the observer (a page computed ahead of the peer's request, gossip/http.py, is
        reported only if it is served)."""
        decided = self.observer.decided if decisions is None else decisions.append
        limit = max(1, min(limit, 1000))
        entries = self.store.log_since(since, limit=limit)
        changes: list[dict[str, Any]] = []
        budget = PAGE_ELEMENTS
        last = since
        state = self.node_state()  # once per page: it reads every sharing group
        configured = self.peer(peer.name)
        strip_sighting_org = configured is not None and configured.strip_sighting_org
        for seq, record_id in entries:
            if budget <= 0:
                break  # the rest next page: a page is stored as one batch, so it stays small
            last = seq
            record = self.store.record(record_id)
            if record is None:
                continue
            event_uuid = ""
            reason = Reason.ALLOWED
            withheld: dict[str, int] = {}
            change: dict[str, Any] | None = None  # an event's; any other record goes as it is
            if record.kind in EVENT_EXTRA_KINDS:
                # they follow their event (policy/outbound.py attached_outbound)
                event_uuid = record.body.get("event_uuid", "")
                reason = self._may_receive(event_uuid, peer, state)
                if (reason is Reason.ALLOWED and strip_sighting_org and record.kind == KIND_SIGHTINGS
                        and record.author != configured.key):
                    record = self.anonymised_sightings(record)  # (the peer's own go back as they are)
            elif record.kind == KIND_SHARING_GROUP:
                members = {m[0] for m in record.body.get("members", [])}
                ever = self.store.sharing_group_orgs_ever(record.body["uuid"]) \
                    if peer.org_uuid and peer.org_uuid not in members else ()
                reason = sharing_group_outbound(peer.org_uuid, members, ever)
            elif record.kind == KIND_EVENT:
                event_uuid = record.body["event"]["uuid"]
                held, outcome = self.decide(event_uuid, peer, state)
                if outcome is None:
                    continue
                reason = outcome.reason
                if held is not None and outcome.allowed:
                    withheld = count_reasons(outcome.withheld)
                    change, offered = self._event_change(seq, record, held, dict(outcome.levels))
                    budget -= offered
            elif record.kind == KIND_RETRACTION:
                event_uuid = record.body["event_uuid"]
                reason, offered_level = self._retraction_outbound(record, peer, state)
                if reason is Reason.ALLOWED:
                    change = {"seq": seq, "record": record.wire(), "level": offered_level}
                elif reason is Reason.EVENT_NOT_HELD:
                    continue  # replaced by a later one meanwhile
            elif record.kind != KIND_ORG:
                continue  # other kinds replicate in a later version of the protocol
            if reason is not Reason.ALLOWED:
                decided(Decision(peer.name, OUT, WITHHELD, record.kind, record_id, str(event_uuid), reason.value))
                continue
            changes.append(change or {"seq": seq, "record": record.wire()})
            decided(Decision(peer.name, OUT, SENT, record.kind, record_id, str(event_uuid), elements=withheld))
        more = bool(self.store.log_since(last, limit=1))
        return {"changes": changes, "last_seq": last, "more": more, "head": self.store.head_sequence()}

    def _retraction_outbound(self, record: Record, peer: PeerPolicy, state: NodeState) -> tuple[Reason, int]:
        """Whether `peer` gets a retraction held here, and at which level (policy/retractions.py).
        Held back while the revision it announces is unpublished here (its maker has not shared it
        yet: peers keep what they have until it is)."""
        event_uuid = record.body["event_uuid"]
        found = self.store.retraction(event_uuid)
        if found is None or found[1].id != record.id:
            return Reason.EVENT_NOT_HELD, NO_LEVEL
        retraction, _, level, source = found
        held = self.store.held(event_uuid)
        if held is not None:
            wire = self.store.record(held.record_id)
            if wire is not None and not wire.body["event"].get("published"):
                return Reason.LOCAL_UNPUBLISHED, NO_LEVEL
        return retraction_outbound(level, retraction.reach, source, peer, state)

    def anonymised_sightings(self, record: Record) -> Record:
        """A sightings record without who reported them (MISP's "anonymise sightings"), for a peer
        configured with `strip_sighting_org`. The reporter's signature cannot survive the change,
        so this node signs the copy: the peer learns the sightings came through this node, not
        which organisation reported them. Ed25519 signatures are deterministic, so the copy has
        the same record id every time it is offered (a re-sent copy is a no-op at the peer)."""
        sightings = record.body.get("sightings")
        if not isinstance(sightings, list) or not any(isinstance(s, dict) and "Organisation" in s for s in sightings):
            return record
        stripped = [{k: v for k, v in s.items() if k != "Organisation"} if isinstance(s, dict) else s
                    for s in sightings]
        return seal(self.node.identity, KIND_SIGHTINGS, {**record.body, "sightings": stripped}, created=record.created)

    @staticmethod
    def _event_change(seq: int, record: Record, held: _Held, levels: dict[str, int]) -> tuple[dict[str, Any], int]:
        """The change offering an event revision at `levels`, and how many elements it offers."""
        elements = {held.digest_of[u]: level for u, level in levels.items() if u in held.digest_of}
        distinct = set(elements.values())
        # Every element offered at one level (the usual case): that level alone, not a map
        # of 32-byte digests (about half of what an offer to a peer that holds it costs).
        compact: int | dict[bytes, int] = distinct.pop() if (
            len(distinct) == 1 and len(elements) == len(record.body["elements"])) else elements
        return {"seq": seq, "record": record.wire(), "event_level": levels.pop(held.view.uuid),
                "elements": compact}, len(elements)

    def bodies_for(self, peer: PeerPolicy, event_uuid: str, digests: list[bytes]) -> list[bytes | None]:
        """The bodies asked for that `peer` may have now (None for any other)."""
        offered = self.offer(event_uuid, peer)
        if offered is None:
            return [None] * len(digests)
        held, levels = offered
        allowed = {held.digest_of[u] for u in levels if u in held.digest_of}
        # only the bodies asked for are read (the receiver checks each against its digest)
        bodies = self.store.bodies(event_uuid, [d for d in digests if d in allowed])
        return [bodies.get(d) for d in digests]

    def all_bodies_for(self, peer: PeerPolicy, event_uuid: str) -> list[bytes]:
        """Every body of the event `peer` may have now (it asked for everything offered)."""
        offered = self.offer(event_uuid, peer)
        if offered is None:
            return []
        held, levels = offered
        allowed = [held.digest_of[u] for u in levels if u in held.digest_of]
        bodies = self.store.bodies(event_uuid, allowed)
        return [bodies[d] for d in allowed if d in bodies]

    # --- receiver ------------------------------------------------------------------------------------

    def key_blocked(self, key: bytes) -> bool:
        return key in self.node.config.blocked_keys

    def author_known(self, key: bytes, created: int) -> bool:
        if key in self.node.config.blocked_keys:
            return False  # revoked here (the session refuses it as key-blocked first)
        state = self.store.key_state(key)
        if not signed_while_current(state, created):
            return False  # signed by a retired key after its rotation
        if state.org is not None or key == self.node.identity.public_key:
            return True
        return any(p.key == key for p in self.node.config.peers)

    def held_digests(self, event_uuid: str) -> set[bytes]:
        return self.store.held_digests(event_uuid)

    def held_timestamp(self, event_uuid: str) -> int | None:
        held = self.store.held(event_uuid)
        return held.timestamp if held is not None else None

    def apply(self, peer: PeerConfig, batch: StoreBatch) -> ApplyReport:
        """Keep what policy lets in from one batch, store it with the checkpoint in one transaction."""
        self.generation += 1  # before and after: no page computed while this runs is served later
        try:
            return self._apply(peer, batch)
        finally:
            self.generation += 1

    def _apply(self, peer: PeerConfig, batch: StoreBatch) -> ApplyReport:
        report = ApplyReport()
        for refused in batch.refused:
            self._refuse(peer.name, report, refused.reason, refused.kind, refused.record_id, refused.event_uuid,
                         refused.detail)
        opened = []
        for wire in batch.records:
            try:
                opened.append(open_record(wire))
            except Exception:  # noqa: BLE001 - counted, never stored
                self._refuse(peer.name, report, Reason.MALFORMED)
        org_records = [r for r in opened if r.kind == KIND_ORG]
        if org_records:
            # introductions and key rotations; the rules (policy/orgs.py) are checked in the store's
            # write transaction
            refused_orgs: list[tuple[Record, Reason]] = []
            for record in self.store.write_new_records(org_records, refused_orgs, self.pinned_keys()):
                report.stored_records += 1
                self._stored(peer.name, record)
            for record, reason in refused_orgs:
                self._refuse(peer.name, report, reason.value, record.kind, record.id)
        attached = []
        retractions = []
        for record in opened:
            if record.kind == KIND_ORG:
                continue
            reason = author_reason(blocked=False, known=self.author_known(record.author, record.created))
            if reason is not Reason.ALLOWED:
                # the session let it through on an org record of this page that was just refused
                self._refuse(peer.name, report, reason, record.kind, record.id)
                continue
            if record.kind in EVENT_EXTRA_KINDS:
                if _extra_problem(record) is None:
                    attached.append(record)
                else:
                    self._refuse(peer.name, report, Reason.MALFORMED, record.kind, record.id)
            if record.kind == KIND_RETRACTION:
                retractions.append(record)  # after the batch's revisions: one of them may be the new one
            if record.kind == KIND_SHARING_GROUP:
                reason = accept_sharing_group(self.store, record, self.node.config.org_uuid,
                                              self.node.identity.public_key)
                if reason is Reason.ALLOWED:
                    report.stored_records += 1
                    self._stored(peer.name, record)
                    group = sharing_group_from_record(record)
                    if not group.is_member(self.node.config.org_uuid):
                        self.leave_group(group.uuid)
                elif reason is not Reason.SG_REVISION_NOT_NEWER:
                    self._refuse(peer.name, report, reason.value, record.kind, record.id)
        state = self.node_state()
        pool = self._rows_pool(sum(len(e.bodies) for e in batch.events))
        accepted: list[tuple[_Accepted, _Rows]] = []
        for received in batch.events:
            record = received.record if received.record is not None else open_record(received.wire)
            opened = self._open(record, received.bodies, peer.name)
            for digest, problem in opened.bad.items():
                self._refuse(peer.name, report, Reason.MALFORMED, record.kind, record.id,
                             received.event_uuid, problem)
            taken = self._accept(received, record, opened, peer, state, report)
            if taken is not None:
                # the rows not built ahead are built in the workers while the next event's policy runs here
                accepted.append((taken, self._rows(pool, taken, opened)))
        writes = [self._write(taken, rows, peer.name) for taken, rows in accepted]
        outcomes = self.store.write_events(writes, checkpoint=(peer.name, batch.checkpoint))
        # sightings, proposals and decisions of events this node holds (now that the batch's events
        # are in); a decision counts only if the event's creator signed it
        keep = []
        for record in attached:
            event_uuid = record.body["event_uuid"]  # (shape checked above)
            creator = self._creator(event_uuid)
            signer = record.author
            if creator is not None and signer != creator:
                # the keys their rotations lead to (decision 0013), looked up only when they differ
                signer, creator = self.store.current_key(signer), self.store.current_key(creator)
            reason = attached_inbound(creator, signer, decision=record.kind == KIND_PROPOSAL_DECISION)
            if reason is Reason.ALLOWED:
                keep.append(record)
            else:
                self._refuse(peer.name, report, reason, record.kind, record.id, event_uuid)
        new_records = self.store.write_new_records(keep) if keep else []
        report.stored_records += len(new_records)
        for record in new_records:
            self._stored(peer.name, record)
        for record in retractions:
            self._take_retraction(peer, record, batch.retraction_levels.get(record.id, NO_LEVEL), state, report)
        for (taken, _), outcome in zip(accepted, outcomes):
            record, withheld = taken.record, taken.withheld
            if outcome is WriteOutcome.STORED:
                report.stored += 1
                self._stored(peer.name, record, withheld)
            elif outcome is WriteOutcome.UNCHANGED:
                report.unchanged += 1
            else:  # a refusal decided in the write (policy/inbound.py not_older, by_author; uuid-conflict)
                self._refuse(peer.name, report, outcome, record.kind, record.id, record.body["event"]["uuid"])
        self._views.clear()
        return report

    def leave_group(self, group_uuid: str) -> int:
        """This node's organisation is no longer a member of a sharing group (a revision removed
        it, or deleted the group): drop what it received bound to the group, and what only passed
        with it (an object's members, an event whose header is the group's). Events made here are
        kept. Returns how many items went. (DESIGN: a removed member must not keep the group's data.)"""
        dropped = 0
        for event_uuid in self.store.events_with_group_items():
            held = self.held_event(event_uuid)
            if held is None:
                continue
            h, event_plan = held.holding, held.plan
            header_level = h.levels.get(event_uuid, h.correlation_levels.get(event_uuid))
            if header_level == SHARING_GROUP and held.view.sharing_group == group_uuid:
                dropped += self.store.drop_received(event_uuid)
                continue
            at = {**h.correlation_levels, **h.levels}
            gone = {u for u, level in at.items()
                    if level == SHARING_GROUP and u != event_uuid and event_plan.groups.get(u) == group_uuid}
            gone |= {u for u, parent in event_plan.parents.items() if parent in gone}
            if not gone:
                continue
            kept = Holding({u: v for u, v in h.levels.items() if u not in gone},
                           {u: v for u, v in h.sources.items() if u not in gone}, h.correlation_only,
                           {u: v for u, v in h.correlation_levels.items() if u not in gone})
            dropped += self.store.drop_elements(event_uuid, [held.digest_of[u] for u in gone if u in held.digest_of],
                                                pack_holding(kept))
        if dropped:
            self._views.clear()
        return dropped

    def _take_retraction(self, peer: PeerConfig, record: Record, offered: int, state: NodeState,
                         report: ApplyReport) -> None:
        """A retraction from `peer` (shape checked by the session): stored where policy lets it in
        and this node holds the event or an earlier retraction of it; a revision it supersedes is
        dropped (model/retraction.py)."""
        retraction = read_retraction(record)
        event_uuid = retraction.event_uuid
        reason, level = retraction_inbound(offered, retraction.reach, peer.policy, state)
        if reason is Reason.ALLOWED:
            reason = self.store.write_retraction(record, level, peer.name)
        if reason is Reason.ALLOWED:
            report.stored_records += 1
            self._stored(peer.name, record)
        elif reason is Reason.OLDER:
            report.unchanged += 1  # held already, or a later one
        else:
            self._refuse(peer.name, report, reason.value, record.kind, record.id, event_uuid)

    def _creator(self, event_uuid: str) -> bytes | None:
        """The key that signed the held event (its creator), None if the event is not held."""
        held = self.store.held(event_uuid)
        record = self.store.record(held.record_id) if held is not None else None
        return record.author if record is not None else None

    def _refuse(self, peer: str, report: ApplyReport, reason: Reason, kind: str = "", record_id: bytes = b"",
                event_uuid: str = "", detail: str = "") -> None:
        report.refuse(reason)
        self.observer.decided(Decision(peer, IN, REFUSED, kind, record_id, event_uuid, reason, detail=detail))

    def _stored(self, peer: str, record: Record, withheld: dict[str, int] | None = None) -> None:
        event_uuid = record.body["event"]["uuid"] if record.kind == KIND_EVENT else (
            record.body.get("event_uuid", "") if record.kind in EVENT_EXTRA_KINDS else "")
        self.observer.decided(Decision(peer, IN, STORED, record.kind, record.id, event_uuid,
                                       elements=withheld or {}))

    def expect_bodies(self, bodies: int) -> None:
        """A pull is about to fetch this many bodies: start the row workers now if its batches will
        use them, so they are ready (their imports done) when the first batch comes to be stored."""
        if self._pool is not None or self.rows_workers <= 0 or bodies < ROWS_POOL_MIN:
            return
        pool = self._rows_pool(bodies)
        if pool is None:
            return
        try:
            for _ in range(self.rows_workers):  # each submit with no idle worker starts one
                pool.submit(element_rows, b"", [], False)
        except (BrokenProcessPool, RuntimeError):
            self._drop_pool(pool)

    def rows_ahead(self, record: Record, entries: list[tuple[bytes, bytes]], source: str = "") -> None:
        """Bodies of `record` just fetched (their digests checked): while row workers run (a large
        pull), start opening them and building their rows now, as the rest of the page is fetched,
        instead of when the page is stored (that made them a serial step of every page: about a
        third of storing one, and opening every body here a third of this process's work).

        The views are used as they are; the rows only if inbound policy keeps every body they cover
        (the usual case; otherwise the kept bodies' rows are built anew). At most AHEAD_BODIES
        bodies are ahead at a time; the rest are opened when their batch is stored."""
        pool = self._pool
        if pool is None or not entries or record.kind != KIND_EVENT:
            return
        header = record.body["event"]
        ev, disabled = uuid16(header["uuid"]), bool(header.get("disable_correlation"))
        try:
            with self._ahead_lock:  # (the batch that takes them may be stored meanwhile: _open)
                jobs = self._ahead.setdefault((source, record.id), [])
                for i in range(0, len(entries), ROWS_CHUNK):
                    part = entries[i:i + ROWS_CHUNK]
                    if self._ahead_bodies + len(part) > AHEAD_BODIES:
                        break  # the rest with their batch
                    jobs.append(([d for d, _ in part], pool.submit(open_rows, ev, part, disabled)))
                    self._ahead_bodies += len(part)
        except (BrokenProcessPool, RuntimeError):
            self._drop_pool(pool)

    def drop_ahead(self, source: str | None = None) -> None:
        """Forget work started ahead for records no batch took (the pull from `source` ended or
        failed; None: every pull's)."""
        with self._ahead_lock:
            dropped = [self._ahead.pop(k) for k in list(self._ahead) if source is None or k[0] == source]
            self._ahead_bodies -= sum(len(digests) for jobs in dropped for digests, _ in jobs)
        for jobs in dropped:
            for _, job in jobs:
                job.cancel()

    def _open(self, record: Record, bodies: dict[bytes, bytes], source: str = "") -> _Opened:
        """The fetched bodies of one revision opened: by the workers ahead (rows_ahead), and here
        for any they did not take (a small pull, the ahead cap, a worker that died)."""
        opened = _Opened()
        views, bad = opened.views, opened.bad
        with self._ahead_lock:
            ahead = self._ahead.pop((source, record.id), [])
            self._ahead_bodies -= sum(len(digests) for digests, _ in ahead)
        for digests, job in ahead:
            try:
                rows, attributes, packed, problems = msgpack.unpackb(job.result(), raw=False, use_list=False)
            except (BrokenProcessPool, CancelledError):
                self._drop_pool(None)
                continue  # opened here below
            chunk = unpack_views(packed)
            views.update(chunk)
            for i, problem in problems:
                bad[digests[i]] = problem
            opened.rows.append((digests, rows, attributes))
            opened.packed.append(packed)
            opened.packed_count += len(chunk)
        for digest, body in bodies.items():
            if digest in views or digest in bad:
                continue
            try:
                element = open_received(body)
            except RecordError as e:
                bad[digest] = str(e)
                continue
            views[digest] = element_view(element)
            opened.elements[digest] = element
        return opened

    def _rows(self, pool: ProcessPoolExecutor | None, taken: _Accepted, opened: _Opened) -> _Rows:
        """How an accepted revision's element rows are made: those built ahead when every body
        they cover is kept, the rest in the workers (a large batch) or here."""
        ready: list[tuple[Rows, int]] = []
        todo = taken.keep
        if opened.rows:
            kept = {d for d, _, _ in taken.keep}
            if all(d in kept or d in opened.bad for digests, _, _ in opened.rows for d in digests):
                ready = [(rows, n) for _, rows, n in opened.rows]
                covered = {d for digests, _, _ in opened.rows for d in digests}
                todo = [entry for entry in taken.keep if entry[0] not in covered]
        jobs = self._submit_rows(pool, taken, todo) if pool is not None and todo else None
        return _Rows(ready, jobs, todo)

    def _rows_pool(self, bodies: int) -> ProcessPoolExecutor | None:
        if self.rows_workers <= 0 or bodies < ROWS_POOL_MIN:
            return None
        with self._pool_lock:
            if self._pool is None:
                # spawn, not fork: a forked child would inherit this process's LMDB environment
                # and event loop threads
                self._pool = ProcessPoolExecutor(max_workers=self.rows_workers,
                                                 mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_start_row_worker, initargs=(os.getpid(),))
            return self._pool

    def _submit_rows(self, pool: ProcessPoolExecutor, taken: _Accepted,
                     entries: list[tuple[bytes, bytes, dict[str, Any] | None]]) -> list[Future[bytes]] | None:
        header = taken.record.body["event"]
        ev, disabled = uuid16(header["uuid"]), bool(header.get("disable_correlation"))
        pairs = [(d, b) for d, b, _ in entries]
        try:
            return [pool.submit(element_rows, ev, pairs[i:i + ROWS_CHUNK], disabled)
                    for i in range(0, len(pairs), ROWS_CHUNK)]
        except (BrokenProcessPool, RuntimeError):
            self._drop_pool(pool)
            return None  # built here instead

    def _write(self, taken: _Accepted, rows: _Rows, source: str) -> EventWrite:
        parts = list(rows.ready)
        here = rows.todo
        if rows.jobs is not None:
            try:
                parts.append(unpack_element_rows([job.result() for job in rows.jobs]))
                here = []
            except (BrokenProcessPool, CancelledError):  # a worker died (killed, out of memory): built here instead
                self._drop_pool(None)
        if here:
            header = taken.record.body["event"]
            parts.append(elements_rows(uuid16(header["uuid"]),
                                       [(d, b, e if e is not None else open_element(b)) for d, b, e in here],
                                       bool(header.get("disable_correlation"))))
        return received_write(taken.record, taken.keep, taken.holding, source, taken.correlation_only,
                              join_rows(parts), taken.views)

    def _drop_pool(self, pool: ProcessPoolExecutor | None) -> None:
        """Forget a broken pool (the next large batch starts a new one)."""
        with self._pool_lock:
            broken = self._pool if pool is None or pool is self._pool else None
            if broken is not None:
                self._pool = None
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)

    def _accept(self, received: ReceivedEvent, record: Record, opened: _Opened, peer: PeerConfig,
                state: NodeState, report: ApplyReport) -> _Accepted | None:
        reason = author_reason(blocked=False, known=self.author_known(record.author, record.created))
        if reason is not Reason.ALLOWED:
            # (a key this batch's org records just retired or refused: reported like every refusal)
            self._refuse(peer.name, report, reason, record.kind, record.id, received.event_uuid)
            return None
        header = record.body["event"]
        event_uuid = received.event_uuid
        # the bodies just fetched (bad ones left out: refused by the caller) ...
        fetched, views = received.bodies, opened.views
        # ... and the ones already held that the new revision keeps (none on an event's first arrival)
        kept_held: dict[bytes, tuple[bytes, dict[str, Any], ElementView]] = {}
        held = self.store.revision_entries(event_uuid)
        previous = self.store.holding(event_uuid) if held is not None else None
        same = held is not None and held[0].id == record.id
        if same and previous is None:
            # Made or imported here: this node holds every element of its own revision, and a copy
            # that comes back from a peer (stripped to what that peer may hold) adds nothing and
            # removes nothing (DESIGN "The pipeline at each hop").
            report.unchanged += 1
            return None
        if held is not None:
            skeleton = set(record.body["elements"])
            kept_held = {d: (b, e, element_view(e)) for d, b, e in held[1] if d in skeleton and d not in fetched}
        offered: dict[str, int] = {event_uuid: received.offered.get(event_uuid, -1)}
        for digest, level in received.offered.items():
            view = views.get(digest)
            if view is None:
                entry = kept_held.get(digest) if isinstance(digest, bytes) else None
                if entry is None:
                    continue
                view = entry[2]
            offered[view.uuid] = level
        elements = list(views.values())
        if kept_held:
            elements[:0] = [v for _, _, v in kept_held.values()]
        event = header_view(header, elements)
        held_timestamp = self.held_timestamp(event_uuid)
        outcome = inbound(event, offered, peer.policy, state, held_timestamp)
        if not outcome.allowed:
            self._refuse(peer.name, report, outcome.reason.value, record.kind, record.id, event_uuid)
            return None
        for reason in outcome.withheld.values():
            report.refuse(reason.value)
        # The same revision by another path: its items at the highest level any path allowed. A
        # newer revision starts a holding of its own: the levels earlier revisions were held at
        # say nothing of this one (its author may have lowered them), and merging them would let
        # a later path lift an element it offers lower back to the old level.
        holding = merge(unpack_holding(previous) if same and previous is not None else None, outcome, peer.name)
        allowed = outcome.levels
        # what the holding keeps: on an event's first path (every bulk pull) exactly what this one allowed
        kept = allowed if not same and not outcome.correlation_only else \
            holding.levels.keys() | holding.correlation_levels.keys()
        keep: list[tuple[bytes, bytes, dict[str, Any] | None]] = []
        kept_views: list[tuple[bytes, ElementView]] = []
        elements_here = opened.elements
        for digest in record.body["elements"]:  # in the revision's order
            view = views.get(digest)
            if view is not None:  # fetched: kept if this path allowed it
                u = view.uuid
                if u in allowed and u in kept:
                    keep.append((digest, fetched[digest], elements_here.get(digest)))
                    kept_views.append((digest, view))
            elif not same:  # (the same revision: held bodies stay as they are, the store only adds)
                entry = kept_held.get(digest)
                if entry is not None and entry[2].uuid in kept:
                    keep.append((digest, entry[0], entry[1]))
                    kept_views.append((digest, entry[2]))
        if not kept_held and len(kept_views) == opened.packed_count == len(views):
            packed = join_views(opened.packed)  # every body kept, the workers opened all of them
        else:
            packed = pack_views(kept_views)
        return _Accepted(record, keep, pack_holding(holding), holding.correlation_only,
                         count_reasons(outcome.withheld), packed)


def _extra_problem(record: Record) -> str | None:
    """What is wrong with a received sighting, proposal or decision's body (views read them)."""
    if record.kind == KIND_PROPOSAL:
        return proposal_shape_problem(record.body)
    if record.kind == KIND_PROPOSAL_DECISION:
        return decision_shape_problem(record.body)
    if not isinstance(record.body, dict) or not isinstance(record.body.get("event_uuid"), str):
        return "expected {event_uuid, ...}"
    try:
        uuid16(record.body["event_uuid"])
    except ValueError:
        return "event_uuid must be a uuid"
    return None


__all__ = ["ApplyReport", "Refused", "Replica"]
