"""The sender: what a peer may pull from this node (docs DESIGN "The pipeline at each hop", outbound).

`changes_for` walks the local log since the peer's checkpoint and offers, per event, the revision
and the level the peer may hold the header and each element digest at; `bodies_for` serves only
bodies the peer may have, decided again at that moment. The rules are policy/outbound.py's (and
policy/retractions.py's): this module gathers their facts (the held event's views and holding, the
node's state, the peer's policy) and acts on the Reason they return.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fedmisp.gossip.observe import NO_OBSERVER, OUT, SENT, WITHHELD, Decision, Observer, count_reasons
from fedmisp.gossip.peers import NodeView, Peers
from fedmisp.gossip.session import PAGE_ELEMENTS
from fedmisp.model.analyst import ELEMENT_TARGETS, TYPES as ANALYST_TYPES, current_items
from fedmisp.model.records import KIND_ANALYST, KIND_CLUSTER, KIND_EVENT, KIND_ORG, KIND_RETRACTION, KIND_SHARING_GROUP, KIND_SIGHTINGS, KIND_TEMPLATE, Record, seal
from fedmisp.model.retraction import NO_LEVEL
from fedmisp.policy.holding import holding_all_from, unpack_holding
from fedmisp.policy.model import EventView, Holding, NodeState, PeerPolicy, event_view, header_view
from fedmisp.policy.clusters import cluster_outbound
from fedmisp.policy.outbound import analyst_outbound, attached_outbound, outbound, sharing_group_outbound
from fedmisp.policy.pipeline import EventPlan, Outcome, plan
from fedmisp.policy.reasons import Reason
from fedmisp.policy.retractions import retraction_outbound
from fedmisp.store.store import EVENT_EXTRA_KINDS

_VIEW_CACHE = 128  # event views kept between a changes page and its body requests


@dataclass(frozen=True)
class HeldView:
    record: Record
    view: EventView
    holding: Holding
    digest_of: dict[str, bytes]  # element uuid -> digest
    plan: EventPlan  # the peer-independent part of the policy decision, made once per revision
    # peer name -> (its policy, the node state, the outbound outcome) last decided: a changes page
    # and the bodies requests that follow it decide the same event for the same peer again, and
    # the decision is reused only while the peer's policy and the node's state are equal
    outcomes: dict[str, tuple[PeerPolicy, NodeState, Outcome]] = field(default_factory=dict, compare=False)


class HeldViews:
    """The held revisions as policy reads them (their views, holding and plan), cached per revision: a
    changes page and the bodies requests that follow it read the same events again. Safe to share
    between threads (the MISP sync views read it from the API's thread pool): the cache is changed
    under a lock, the store is read outside it."""

    def __init__(self, store: Any):
        self.store = store
        self._views: OrderedDict[bytes, HeldView] = OrderedDict()
        self._lock = threading.Lock()

    def forget(self) -> None:
        """What is held changed (a batch was stored, a group left): read everything anew."""
        with self._lock:
            self._views.clear()

    def get(self, event_uuid: str) -> HeldView | None:
        """A held event with its policy view and holding (cached per revision)."""
        held = self.store.held(event_uuid)
        if held is None:
            return None
        with self._lock:
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
        result = HeldView(record, view, holding, digest_of, event_plan)
        with self._lock:
            self._views[held.record_id] = result
            if len(self._views) > _VIEW_CACHE:
                self._views.popitem(last=False)
        return result


class Sender:
    def __init__(self, node: NodeView, peers: Peers, held: HeldViews, observer: Observer = NO_OBSERVER):
        """`observer`: told every decision about a record and a peer (gossip/observe.py)."""
        self.node = node
        self.store = node.store
        self.peers = peers
        self.held = held
        self.observer = observer

    def offer(self, event_uuid: str, peer: PeerPolicy,
              state: NodeState | None = None) -> tuple[HeldView, dict[str, int]] | None:
        """What of one held event `peer` may have, as uuid -> level (None: nothing)."""
        held, outcome = self.decide(event_uuid, peer, state)
        if held is None or outcome is None or not outcome.allowed:
            return None
        return held, dict(outcome.levels)

    def decide(self, event_uuid: str, peer: PeerPolicy,
               state: NodeState | None = None) -> tuple[HeldView | None, Outcome | None]:
        """The outbound decision for one held event and `peer` (None, None: not held)."""
        if self._all_from(event_uuid, peer.name):
            # rule 5, decided before the event is opened: everything came from that peer
            return None, Outcome(Reason.FROM_PEER)
        held = self.held.get(event_uuid)
        if held is None:
            return None, None
        state = state or self.peers.node_state()
        cached = held.outcomes.get(peer.name)
        if cached is not None and cached[0] == peer and cached[1] == state:
            return held, cached[2]
        outcome = outbound(held.view, held.holding, peer, state, held.plan)
        held.outcomes[peer.name] = (peer, state, outcome)
        return held, outcome

    def _all_from(self, event_uuid: str, peer_name: str) -> bool:
        raw = self.store.holding(event_uuid)
        return raw is not None and holding_all_from(raw, peer_name)

    def _attached_reason(self, event_uuid: Any, peer: PeerPolicy, state: NodeState) -> Reason:
        held = self.held.get(event_uuid) if isinstance(event_uuid, str) else None
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
        state = self.peers.node_state()  # once per page: it reads every sharing group
        configured = self.peers.peer(peer.name)
        strip_sighting_org = configured is not None and configured.strip_sighting_org
        analyst_memo: dict[Any, Any] = {}  # this page's analyst-data decisions (analyst_reason)
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
            if record.kind == KIND_ANALYST:
                event_uuid = record.body.get("event_uuid", "")
                reason, level = self.analyst_reason(record, peer, state, analyst_memo)
                if reason is Reason.ALLOWED:
                    change = {"seq": seq, "record": record.wire(), "level": level}
            elif record.kind in EVENT_EXTRA_KINDS:
                # they follow their event (policy/outbound.py attached_outbound)
                event_uuid = record.body.get("event_uuid", "")
                reason = self._attached_reason(event_uuid, peer, state)
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
            elif record.kind == KIND_CLUSTER:
                # its own distribution and hop budget, published only (policy/clusters.py)
                held_cluster = self.store.cluster(record.body["uuid"])
                if held_cluster is None or held_cluster[0].id != record.id:
                    continue  # replaced by a later version meanwhile
                body = record.body
                reason, level = cluster_outbound(body["published"], held_cluster[1], body["sharing_group_uuid"],
                                                 held_cluster[2], peer, state)
                if reason is Reason.ALLOWED:
                    change = {"seq": seq, "record": record.wire(), "level": level}
            elif record.kind == KIND_RETRACTION:
                event_uuid = record.body["event_uuid"]
                reason, offered_level = self._retraction_outbound(record, peer, state)
                if reason is Reason.ALLOWED:
                    change = {"seq": seq, "record": record.wire(), "level": offered_level}
                elif reason is Reason.EVENT_NOT_HELD:
                    continue  # replaced by a later one meanwhile
            elif record.kind not in (KIND_ORG, KIND_TEMPLATE):  # (those two go to every peer)
                continue  # other kinds replicate in a later version of the protocol
            if reason is not Reason.ALLOWED:
                decided(Decision(peer.name, OUT, WITHHELD, record.kind, record_id, str(event_uuid), reason.value))
                continue
            changes.append(change or {"seq": seq, "record": record.wire()})
            decided(Decision(peer.name, OUT, SENT, record.kind, record_id, str(event_uuid), elements=withheld))
        more = bool(self.store.log_since(last, limit=1))
        return {"changes": changes, "last_seq": last, "more": more, "head": self.store.head_sequence()}

    def analyst_reason(self, record: Record, peer: PeerPolicy, state: NodeState,
                       memo: dict[Any, Any] | None = None) -> tuple[Reason, int]:
        """Whether `peer` gets an analyst-data record, and at which level (policy/outbound.py
        analyst_outbound): only the current record of its item goes (an edit that lowered the
        item's level must not let the older text out), and only where its target goes. `memo`
        keeps the decisions of one changes page (the event's outcome, the event's items)."""
        memo = {} if memo is None else memo
        event_uuid = record.body.get("event_uuid")
        key = ("event", event_uuid)
        if key not in memo:
            held = self.held.get(event_uuid) if isinstance(event_uuid, str) else None
            outcome = None
            if held is not None:
                everywhere = Holding(held.holding.levels, {}, held.holding.correlation_only)  # step 5 aside
                outcome = outbound(held.view, everywhere, peer, state, held.plan)
            items = current_items(r for r in self.store.event_records(event_uuid)
                                  if r.kind == KIND_ANALYST) if held is not None else {}
            memo[key] = (outcome, items)
        outcome, items = memo[key]
        item = record.body["item"]
        current = items.get(item["uuid"])
        if outcome is not None and (current is None or current[1].id != record.id):
            return Reason.OLDER, -1  # superseded by a later record of the item
        return self._analyst_decision(record, outcome, items, peer, state, memo, 0)

    def _analyst_decision(self, record: Record, outcome: Any, items: dict[str, Any], peer: PeerPolicy,
                          state: NodeState, memo: dict[Any, Any], depth: int) -> tuple[Reason, int]:
        key = ("item", record.id)
        if key in memo:
            return memo[key]
        memo[key] = (Reason.PARENT_WITHHELD, -1)  # (a cycle of items on each other goes nowhere)
        item = record.body["item"]
        held = self.store.analyst_level(record.id)
        if held is None:
            held = item["distribution"]  # made or imported here
        target, target_type = item["object_uuid"], item["object_type"]
        if outcome is None or not outcome.allowed:
            sent = False
        elif target_type == "Event":
            sent = target == record.body["event_uuid"]
        elif target_type in ELEMENT_TARGETS:
            sent = target in outcome.levels
        elif target_type in ANALYST_TYPES and target in items and depth < 64:
            parent = items[target][1]
            sent = self._analyst_decision(parent, outcome, items, peer, state, memo, depth + 1)[0] is Reason.ALLOWED
        else:
            sent = False  # a target this event does not carry
        decided = analyst_outbound(outcome, held, item.get("sharing_group_uuid"), sent, peer, state)
        memo[key] = decided
        return decided

    def _retraction_outbound(self, record: Record, peer: PeerPolicy, state: NodeState) -> tuple[Reason, int]:
        """Whether `peer` gets a retraction held here, and at which level (policy/retractions.py)."""
        event_uuid = record.body["event_uuid"]
        found = self.store.retraction(event_uuid)
        if found is None or found[1].id != record.id:
            return Reason.EVENT_NOT_HELD, NO_LEVEL  # replaced by a later one meanwhile
        retraction, _, level, source = found
        held = self.store.held(event_uuid)
        wire = self.store.record(held.record_id) if held is not None else None
        published = wire is None or bool(wire.body["event"].get("published"))
        return retraction_outbound(level, retraction.reach, source, peer, state, published)

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
    def _event_change(seq: int, record: Record, held: HeldView, levels: dict[str, int]) -> tuple[dict[str, Any], int]:
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
