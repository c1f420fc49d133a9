"""The receiver: what this node keeps of what a pull fetched (docs DESIGN "The pipeline at each hop",
inbound).

`apply` takes one batch a pull session handed out (gossip/session.py): org records and sharing-group
revisions first, then each event revision through inbound policy (policy/inbound.py: the facts it
needs are gathered here), its holding merged (each item at the highest level any path allowed),
and the batch stored with the checkpoint in one transaction; sightings, proposals and decisions
after their events, retractions last. The row workers (gossip/rows_pool.py) open the bodies of a
large batch and build their rows meanwhile. It also answers the session's questions about what is
held here (`Local`: held digests and timestamps, whether an author's key is known or blocked).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedmisp.gossip.observe import IN, NO_OBSERVER, REFUSED, STORED, Decision, Observer, count_reasons
from fedmisp.gossip.peers import NodeView, PeerConfig, Peers
from fedmisp.gossip.rows_pool import EventRows, Kept, Opened, RowsPool
from fedmisp.gossip.sender import HeldViews
from fedmisp.gossip.session import ReceivedEvent, StoreBatch
from fedmisp.gossip.sharing_groups import accept as accept_sharing_group, from_record as sharing_group_from_record
from fedmisp.gossip.clusters import accept as accept_cluster
from fedmisp.gossip.templates import accept as accept_template
from fedmisp.model.analyst import ELEMENT_TARGETS, TYPES as ANALYST_TYPES, analyst_problem
from fedmisp.model.records import KIND_ANALYST, KIND_CLUSTER, KIND_EVENT, KIND_ORG, KIND_PROPOSAL, KIND_PROPOSAL_DECISION, KIND_RETRACTION, \
    KIND_SHARING_GROUP, KIND_TEMPLATE, Record, open_record
from fedmisp.model.retraction import NO_LEVEL, read_retraction
from fedmisp.model.templates import resolve_template
from fedmisp.policy.holding import holding_items, join_views, pack_holding, pack_views, unpack_holding
from fedmisp.policy.inbound import analyst_inbound, attached_inbound, author_reason, inbound, key_known
from fedmisp.policy.model import KIND_OBJECT, SHARING_GROUP, ElementView, EventView, Holding, NodeState, element_view, header_view, \
    view_from_fields
from fedmisp.policy.orgs import KeyState
from fedmisp.policy.pipeline import merge
from fedmisp.policy.reasons import Reason
from fedmisp.policy.retractions import retraction_inbound
from fedmisp.policy.clusters import cluster_inbound
from fedmisp.policy.templates import template_reason
from fedmisp.store.proposals import decision_shape_problem, proposal_shape_problem
from fedmisp.store.store import EVENT_EXTRA_KINDS, EventWrite, WriteOutcome, received_write, uuid16


@dataclass
class ApplyReport:
    stored: int = 0
    stored_records: int = 0  # org records, sharing-group revisions, sightings, proposals, decisions, retractions
    unchanged: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # reason -> count
    # event uuid -> bodies the pull took as held, replaced by another pull's batch before this
    # one was stored: the session fetches them (PullSession.stored). Per batch, not added up.
    lacking: dict[str, list[bytes]] = field(default_factory=dict)

    def refuse(self, reason: str, count: int = 1) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + count

    def add(self, other: "ApplyReport") -> None:
        self.stored += other.stored
        self.stored_records += other.stored_records
        self.unchanged += other.unchanged
        for reason, count in other.refused.items():
            self.refuse(reason, count)


@dataclass(frozen=True)
class Accepted:
    """What inbound policy lets in of one received revision: the element bodies kept (digest,
    body, element when opened in this process, in the revision's order) and the merged holding."""
    record: Record
    keep: Kept
    holding: bytes
    correlation_only: bool
    withheld: dict[str, int]  # elements not kept, by reason (for the observer)
    views: bytes  # the kept bodies' policy views (views_of / pack_views), stored with the revision


# Items on items followed to what they hang from (a cycle of items on each other goes nowhere).
MAX_ITEM_DEPTH = 64


class Receiver:
    def __init__(self, node: NodeView, peers: Peers, held: HeldViews, rows: RowsPool,
                 observer: Observer = NO_OBSERVER):
        """`observer`: told every decision about a record and a peer (gossip/observe.py)."""
        self.node = node
        self.store = node.store
        self.peers = peers
        self.held = held
        self.rows = rows
        self.observer = observer
        # bumped whenever this receiver stores what it pulled (holdings can change without a new
        # log entry): a changes page computed before is not served after (gossip/http.py)
        self.generation = 0

    def key_blocked(self, key: bytes) -> bool:
        return key in self.node.config.blocked_keys

    def author_known(self, key: bytes, created: int) -> bool:
        """The facts of policy/inbound.py key_known (a blocked key: the session refuses it as
        key-blocked first)."""
        config = self.node.config
        if key in config.blocked_keys:
            return key_known(KeyState(), created, configured=False, blocked=True)
        configured = key == self.node.identity.public_key or any(p.key == key for p in config.peers)
        return key_known(self.store.key_state(key), created, configured=configured)

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
            for record in self.store.write_new_records(org_records, refused_orgs, self.peers.pinned_keys()):
                report.stored_records += 1
                self._stored(peer.name, record)
            for record, reason in refused_orgs:
                self._refuse(peer.name, report, reason.value, record.kind, record.id)
        attached = []
        retractions = []
        clusters: list[Record] = []
        for record in opened:
            if record.kind == KIND_ORG:
                continue
            reason = author_reason(blocked=False, known=self.author_known(record.author, record.created))
            if reason is not Reason.ALLOWED:
                # the session let it through on an org record of this page that was just refused
                self._refuse(peer.name, report, reason, record.kind, record.id)
                continue
            if record.kind in EVENT_EXTRA_KINDS:
                if _attached_problem(record) is None:
                    attached.append(record)
                else:
                    self._refuse(peer.name, report, Reason.MALFORMED, record.kind, record.id)
            if record.kind == KIND_RETRACTION:
                retractions.append(record)  # after the batch's revisions: one of them may be the new one
            if record.kind == KIND_TEMPLATE:
                reason = accept_template(self.store, record)
                if reason is Reason.ALLOWED:
                    report.stored_records += 1
                    self._stored(peer.name, record)
                elif reason is not Reason.TEMPLATE_NOT_NEWER:  # (an older version by another path)
                    self._refuse(peer.name, report, reason.value, record.kind, record.id)
            if record.kind == KIND_CLUSTER:
                clusters.append(record)  # after the batch's sharing groups: a level-4 one needs its group
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
        state = self.peers.node_state()
        for record in clusters:
            self._take_cluster(peer, record, batch.retraction_levels.get(record.id), state, report)
        templates = self.store.published_templates() if batch.events else {}
        pool = self.rows.pool_for(sum(len(e.bodies) for e in batch.events))
        accepted: list[tuple[Accepted, EventRows]] = []
        for received in batch.events:
            record = received.record if received.record is not None else open_record(received.wire)
            opened = self.rows.open(record, received.bodies, peer.name)
            for digest, problem in opened.bad.items():
                self._refuse(peer.name, report, Reason.MALFORMED, record.kind, record.id,
                             received.event_uuid, problem)
            if self._template_missing(received, record, opened, peer, templates, report):
                continue
            taken = self._accept(received, record, opened, peer, state, report)
            if taken is not None:
                # the rows not built ahead are built in the workers while the next event's policy runs here
                accepted.append((taken, self.rows.rows(pool, taken.record, taken.keep, opened)))
        writes = [self._write(taken, rows, peer.name) for taken, rows in accepted]
        outcomes = self.store.write_events(writes, checkpoint=(peer.name, batch.checkpoint))
        # sightings, proposals and decisions of events this node holds (now that the batch's events
        # are in); a decision counts only if the event's author signed it
        keep = []
        levels: dict[bytes, int] = {}
        views: dict[str, dict[str, ElementView]] = {}  # event uuid -> its elements' views (written above)
        pinned = self.peers.pinned_keys() if any(r.kind == KIND_ANALYST for r in attached) else {}
        for record in attached:
            event_uuid = record.body["event_uuid"]  # (shape checked above)
            if record.kind == KIND_ANALYST:
                reason, level = self._analyst_reason(record, peer, state, pinned, keep,
                                                     batch.retraction_levels.get(record.id), views)
                if reason is Reason.ALLOWED:
                    keep.append(record)
                    levels[record.id] = level
                else:
                    self._refuse(peer.name, report, reason, record.kind, record.id, event_uuid)
                continue
            author = self._event_author(event_uuid)
            signer = record.author
            if author is not None and signer != author:
                # the keys their rotations lead to (decision 0013), looked up only when they differ
                signer, author = self.store.current_key(signer), self.store.current_key(author)
            reason = attached_inbound(author, signer, decision=record.kind == KIND_PROPOSAL_DECISION)
            if reason is Reason.ALLOWED:
                keep.append(record)
            else:
                self._refuse(peer.name, report, reason, record.kind, record.id, event_uuid)
        new_records = self.store.write_new_records(keep, levels=levels) if keep else []
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
        self.held.forget()
        return report

    def _take_cluster(self, peer: PeerConfig, record: Record, offered: int | None, state: NodeState,
                      report: ApplyReport) -> None:
        """A custom galaxy cluster version (policy/clusters.py cluster_inbound, then the version
        rule in the store's write); an older version by another path is not a refusal."""
        body = record.body
        signer = self.store.current_key(record.author)
        pinned = self.peers.pinned_keys()
        signer_org = self.store.org_for_key(signer) or pinned.get(record.author) or pinned.get(signer)
        reason, level = cluster_inbound(published=body["published"], signer_org=signer_org,
                                        orgc_uuid=body["orgc_uuid"], offered=offered if offered is not None else -1,
                                        distribution=body["distribution"], sharing_group=body["sharing_group_uuid"],
                                        blocked=self.store.cluster_blocked(body["uuid"]), peer=peer.policy, node=state)
        if reason is Reason.ALLOWED:
            held = self.store.cluster(body["uuid"])
            reason = accept_cluster(self.store, record, level, peer.name)
            if reason is Reason.ALLOWED and (held is None or held[0].id != record.id):
                report.stored_records += 1
                self._stored(peer.name, record)
                return
        if reason not in (Reason.ALLOWED, Reason.CLUSTER_NOT_NEWER):  # (an older version by another path)
            self._refuse(peer.name, report, reason, record.kind, record.id)

    def _template_missing(self, received: ReceivedEvent, record: Record, opened: Opened, peer: PeerConfig,
                          templates: dict[str, Any], report: ApplyReport) -> bool:
        """Refuse a revision with an object naming a template this node holds neither shipped nor
        published (policy/templates.py template_reason), and remember it: when the template arrives,
        the peer's next pull starts before it and takes it (store/templates.py, decision 0030)."""
        for view in opened.views.values():
            if view.kind != KIND_OBJECT:
                continue
            reason = template_reason(view.template_uuid, view.template_uuid in templates)
            if reason is Reason.ALLOWED:
                continue
            self.store.await_template(view.template_uuid, peer.name, received.seq)
            self._refuse(peer.name, report, reason, record.kind, record.id, received.event_uuid,
                         f"object {view.uuid} {resolve_template(view.template or '', view.template_uuid, None, templates)[1]}")
            return True
        return False

    def leave_group(self, group_uuid: str) -> int:
        """This node's organisation is no longer a member of a sharing group (a revision removed
        it, or deleted the group): drop what it received bound to the group, and what only passed
        with it (an object's members, an event whose header is the group's). Events made here are
        kept. Returns how many items went. (DESIGN: a removed member must not keep the group's data.)"""
        dropped = 0
        for event_uuid in self.store.events_with_group_items():
            held = self.held.get(event_uuid)
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
            self.held.forget()
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

    def _analyst_reason(self, record: Record, peer: PeerConfig, state: NodeState, pinned: dict[bytes, str],
                        taken: list[Record], offered: Any,
                        views: dict[str, dict[str, ElementView]]) -> tuple[Reason, int]:
        """The facts of policy/inbound.py analyst_inbound for one analyst-data record."""
        body = record.body
        item = body["item"]
        author = self._event_author(body["event_uuid"])
        signer = self.store.current_key(record.author)
        signer_org = self.store.org_for_key(signer) or pinned.get(record.author) or pinned.get(signer)
        by_event_author = author is not None and self.store.current_key(author) == signer
        held_by = None
        others = [r for r in list(self.store.event_records(body["event_uuid"])) + taken if r.kind == KIND_ANALYST]
        for other in others:
            if other.body["item"]["uuid"] == item["uuid"]:
                held_by = other.body["item"]["orgc_uuid"]
                break
        # what it is on must be held here too (an opinion on a note this node refused is refused),
        # up the chain of items on items to the element or event it hangs from, whose views this
        # peer's pull filter must take
        target, target_type = item["object_uuid"], item["object_type"]
        held_items = {other.body["item"]["uuid"]: other.body["item"] for other in others}
        target_views: tuple[ElementView, ...] = ()
        target_held = False
        for _ in range(MAX_ITEM_DEPTH):
            if target_type in ANALYST_TYPES:
                parent = held_items.get(target)
                if parent is None:
                    break
                target, target_type = parent["object_uuid"], parent["object_type"]
                continue
            if target_type == "Event":
                target_held = target == body["event_uuid"]
            elif target_type in ELEMENT_TARGETS:
                raw = self.store.holding(body["event_uuid"])
                target_held = raw is None or target in holding_items(raw)  # (no holding: made here, held whole)
                target_views = self._element_and_object(body["event_uuid"], target, views) if raw is not None else ()
            break
        return analyst_inbound(event_held=author is not None, signer_org=signer_org, orgc_uuid=item["orgc_uuid"],
                               by_event_author=by_event_author, held_by=held_by, target_held=target_held,
                               offered=offered if offered is not None else -1,
                               distribution=item["distribution"], sharing_group=item.get("sharing_group_uuid"),
                               peer=peer.policy, node=state, target_views=target_views,
                               event=self._event_view(body["event_uuid"]) if author is not None else None)

    def _event_view(self, event_uuid: str) -> EventView | None:
        held = self.store.held(event_uuid)
        wire = self.store.record(held.record_id) if held is not None else None
        return header_view(wire.body["event"], []) if wire is not None else None

    def _element_and_object(self, event_uuid: str, uuid: str,
                            memo: dict[str, dict[str, ElementView]]) -> tuple[ElementView, ...]:
        """The policy views of a held element and of the object it is in (what an item on it hangs
        from); `memo` keeps each event's views for the batch (an event may carry many items)."""
        views = memo.get(event_uuid)
        if views is None:
            found = self.store.revision_views(event_uuid)
            if found is not None:
                views = {fields[0]: view_from_fields(fields) for _, fields in found[1]}
            else:
                entries = self.store.revision_entries(event_uuid)
                views = {v.uuid: v for v in (element_view(e) for _, _, e in (entries[1] if entries else ()))}
            memo[event_uuid] = views
        chain = []
        view = views.get(uuid)
        while view is not None and len(chain) < 2:
            chain.append(view)
            view = views.get(view.object_uuid) if view.object_uuid else None
        return tuple(chain)

    def _event_author(self, event_uuid: str) -> bytes | None:
        """The key that signed the held event (its author: the creator org's key), None if the
        event is not held."""
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

    def _accept(self, received: ReceivedEvent, record: Record, opened: Opened, peer: PeerConfig,
                state: NodeState, report: ApplyReport) -> Accepted | None:
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
        if received.assumed_held:
            held_now = {d for d, _, _ in held[1]} if held is not None else set()
            lacking = sorted(d for d in received.assumed_held if d not in fetched and d not in held_now)
            if lacking:
                report.lacking[event_uuid] = lacking
        # The same revision by another path: its items at the highest level any path allowed. A
        # newer revision starts a holding of its own: the levels earlier revisions were held at
        # say nothing of this one (its author may have lowered them), and merging them would let
        # a later path lift an element it offers lower back to the old level.
        holding = merge(unpack_holding(previous) if same and previous is not None else None, outcome, peer.name)
        allowed = outcome.levels
        # what the holding keeps: on an event's first path (every bulk pull) exactly what this one allowed
        kept = allowed if not same and not outcome.correlation_only else \
            holding.levels.keys() | holding.correlation_levels.keys()
        keep: Kept = []
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
        return Accepted(record, keep, pack_holding(holding), holding.correlation_only,
                         count_reasons(outcome.withheld), packed)



    def _write(self, taken: Accepted, rows: EventRows, source: str) -> EventWrite:
        return received_write(taken.record, taken.keep, taken.holding, source, taken.correlation_only,
                              self.rows.joined(taken.record, rows), taken.views)


def _attached_problem(record: Record) -> str | None:
    """What is wrong with a received attached record's body: a sighting, proposal, decision or
    analyst-data item (views read them; proposals' and decisions' shapes are store/proposals.py's,
    analyst data's model/analyst.py's)."""
    if record.kind == KIND_ANALYST:
        return analyst_problem(record.body)
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
