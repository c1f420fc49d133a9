"""The pull session as a state machine, driven with generated peer messages (no network)."""
from __future__ import annotations

import pytest

import fedmisp.gossip.session as session_module
from fedmisp.gossip.session import (
    Done, LookUp, ProtocolError, PullSession, SendBodies, SendChanges, StoreBatch, WaitStored, look_up,
)
from fedmisp.model import canonical
from fedmisp.model.identity import Identity
from fedmisp.model.misp import ImportDefaults, parse_event
from fedmisp.model.revision import sign_event

from factories import ORG, event

AUTHOR = Identity.generate()
DEFAULTS = ImportDefaults(org_uuid=ORG["uuid"], org_name=ORG["name"], now=1_700_000_000)


def signed(seed: int, attributes: int = 5, timestamp: int = 1_700_000_500):
    return sign_event(AUTHOR, parse_event(event(seed=seed, attributes=attributes, objects=0,
                                                timestamp=timestamp)["Event"], DEFAULTS))


def change(seq: int, s, level: int = 3) -> dict:
    return {"seq": seq, "record": s.record.wire(), "event_level": level,
            "elements": {e.digest: level for e in s.elements}}


class FakeLocal:
    def __init__(self, known=(AUTHOR.public_key,)):
        self.known = set(known)
        self.blocked: set[bytes] = set()
        self.digests: dict[str, set[bytes]] = {}
        self.timestamps: dict[str, int] = {}

    def held_digests(self, event_uuid):
        return self.digests.get(event_uuid, set())

    def held_timestamp(self, event_uuid):
        return self.timestamps.get(event_uuid)

    def author_known(self, key, created):
        return key in self.known

    def key_blocked(self, key):
        return key in self.blocked


class FakePeer:
    """Serves a fixed changes feed in pages, and bodies by digest."""

    def __init__(self, changes, bodies, page=2):
        self.changes, self.bodies, self.page = changes, bodies, page
        self.body_requests = 0

    def reply_changes(self, since):
        after = [c for c in self.changes if c["seq"] > since][: self.page]
        last = after[-1]["seq"] if after else since
        head = max((c["seq"] for c in self.changes), default=0)
        return {"changes": after, "last_seq": last, "more": any(c["seq"] > last for c in self.changes), "head": head}

    def reply_bodies(self, digests):
        self.body_requests += 1
        return [self.bodies.get(d) for d in digests]


MAX_STEPS = 10_000


def run(session: PullSession, peer: FakePeer, local: FakeLocal, crash_after_batches: int | None = None,
        lacking_for=None):
    """Drive the session to its end. `lacking_for(batch)`: the store's answer for each batch (what
    replica.apply reports: bodies it took as held that another pull replaced meanwhile); then each
    batch is stored when the session has nothing else to do (pipelined), else at once. A session
    that has not ended after MAX_STEPS steps fails the test (a loop, not a slow pull)."""
    stored = []
    for _ in range(MAX_STEPS):
        step = session.next_step()
        if isinstance(step, SendChanges):
            session.changes_received(canonical.unpack(canonical.pack(peer.reply_changes(step.since))))
        elif isinstance(step, LookUp):
            session.facts_received(look_up(local, step))
        elif isinstance(step, SendBodies):
            reply = peer.reply_bodies(step.digests)
            if step.everything:  # "everything offered": the bodies alone, matched by digest
                reply = [b for b in reply if b is not None]
            session.bodies_received(step.event_uuid, reply)
        elif isinstance(step, StoreBatch):
            if crash_after_batches is not None and len(stored) == crash_after_batches:
                return stored, session.checkpoint  # the process dies before the batch is stored
            stored.append(step)
            for e in step.events:
                local.digests.setdefault(e.event_uuid, set()).update(e.bodies)
            if lacking_for is None:
                session.stored()
        elif isinstance(step, WaitStored):
            session.stored(lacking_for(stored[-1]))
        else:
            assert isinstance(step, Done)
            return stored, step.checkpoint
    raise AssertionError(f"the session did not end in {MAX_STEPS} steps: {len(stored)} batches handed out")


def _feed(*events):
    changes = [change(i + 1, s) for i, s in enumerate(events)]
    bodies = {e.digest: e.body for s in events for e in s.elements}
    return changes, bodies


def test_a_pull_fetches_every_body_once_and_moves_the_checkpoint_with_each_stored_batch(monkeypatch):
    monkeypatch.setattr(session_module, "BODIES_PAGE", 2)  # a big event streams in several requests
    events = [signed(i) for i in range(3)]
    peer = FakePeer(*_feed(*events))
    local = FakeLocal()
    batches, checkpoint = run(PullSession("p", 0), peer, local)
    assert checkpoint == 3 and [b.checkpoint for b in batches] == [2, 3]
    received = [e for b in batches for e in b.events]
    assert [e.event_uuid for e in received] == [s.uuid for s in events]
    assert all(set(e.bodies) == {x.digest for x in s.elements} for e, s in zip(received, events))
    assert peer.body_requests == 3 * 3  # 5 bodies per event, 2 per request


def test_re_sent_data_is_a_no_op():
    events = [signed(10), signed(11)]
    peer = FakePeer(*_feed(*events))
    local = FakeLocal()
    run(PullSession("p", 0), peer, local)
    peer.body_requests = 0
    batches, checkpoint = run(PullSession("p", 0), peer, local)  # from scratch again
    assert peer.body_requests == 0 and checkpoint == 2
    assert all(not e.bodies for b in batches for e in b.events)


def test_a_crash_before_storing_resumes_from_the_last_stored_checkpoint():
    events = [signed(20 + i) for i in range(5)]
    peer = FakePeer(*_feed(*events))
    local = FakeLocal()
    first, checkpoint = run(PullSession("p", 0), peer, local, crash_after_batches=1)
    assert checkpoint == 2
    rest, final = run(PullSession("p", checkpoint), peer, local)
    seen = [e.event_uuid for b in first + rest for e in b.events]
    assert seen == [s.uuid for s in events] and final == 5  # each event exactly once


def test_a_forged_record_is_refused_and_the_rest_goes_on():
    good, bad = signed(30), signed(31)
    changes, bodies = _feed(good, bad)
    wire = bytearray(changes[1]["record"])
    wire[-3] ^= 1  # inside the signature
    changes[1]["record"] = bytes(wire)
    local = FakeLocal()
    batches, _ = run(PullSession("p", 0), FakePeer(changes, bodies), local)
    assert [e.event_uuid for b in batches for e in b.events] == [good.uuid]
    assert [(r.seq, r.reason) for b in batches for r in b.refused] == [(2, "bad-signature")]


def test_an_altered_body_is_refused_and_its_event_keeps_the_others():
    s = signed(40)
    changes, bodies = _feed(s)
    victim = s.elements[1].digest
    bodies[victim] = bodies[victim][:-1] + bytes([bodies[victim][-1] ^ 1])
    local = FakeLocal()
    batches, _ = run(PullSession("p", 0), FakePeer(changes, bodies), local)
    (received,) = [e for b in batches for e in b.events]
    assert victim not in received.bodies and len(received.bodies) == len(s.elements) - 1
    assert [r.reason for b in batches for r in b.refused] == ["bad-digest"]


def test_an_older_revision_and_an_unknown_author_are_refused():
    old, stranger = signed(50, timestamp=100), sign_event(Identity.generate(), parse_event(
        event(seed=51, attributes=2, objects=0)["Event"], DEFAULTS))
    local = FakeLocal()
    local.timestamps[old.uuid] = 200
    batches, _ = run(PullSession("p", 0), FakePeer(*_feed(old, stranger)), local)
    assert [(r.seq, r.reason) for b in batches for r in b.refused] == [(1, "older"), (2, "unknown-author")]
    assert not [e for b in batches for e in b.events]


def test_a_body_the_sender_no_longer_offers_is_skipped():
    s = signed(60)
    changes, bodies = _feed(s)
    del bodies[s.elements[0].digest]
    local = FakeLocal()
    batches, _ = run(PullSession("p", 0), FakePeer(changes, bodies), local)
    (received,) = [e for b in batches for e in b.events]
    assert len(received.bodies) == len(s.elements) - 1


def test_protocol_violations_stop_the_session():
    session = PullSession("p", 5)
    assert session.next_step() == SendChanges(5)
    with pytest.raises(ProtocolError, match="increase"):
        session.changes_received({"changes": [{"seq": 5, "record": b""}], "last_seq": 9, "more": False, "head": 9})
    session = PullSession("p", 5)
    with pytest.raises(ProtocolError, match="not waiting"):
        session.bodies_received("x", [])
    session.next_step()
    with pytest.raises(ProtocolError, match="expected"):
        session.changes_received({"changes": "nope"})


def test_one_level_for_every_element_may_be_sent_as_that_level_alone():
    events = [signed(90), signed(91)]
    changes, bodies = _feed(*events)
    for c in changes:
        c["elements"] = 3  # the compact form: all of the revision's elements at level 3
    local = FakeLocal()
    batches, _ = run(PullSession("p", 0), FakePeer(changes, bodies), local)
    received = [e for b in batches for e in b.events]
    assert [set(e.bodies) for e in received] == [{x.digest for x in s.elements} for s in events]
    assert all(e.offered[d] == 3 for e in received for d in e.bodies)


def test_the_next_page_is_fetched_while_a_batch_is_stored_and_the_checkpoint_waits_for_it():
    events = [signed(70 + i) for i in range(5)]
    peer = FakePeer(*_feed(*events))  # pages of 2: batches end at 2, 4, 5
    local = FakeLocal()
    session = PullSession("p", 0)
    out: list[StoreBatch] = []  # handed out; stored only when the session asks to wait
    steps = []
    while not isinstance(step := session.next_step(), Done):
        steps.append(type(step).__name__)
        if isinstance(step, SendChanges):
            session.changes_received(peer.reply_changes(step.since))
        elif isinstance(step, LookUp):
            session.facts_received(look_up(local, step))
        elif isinstance(step, SendBodies):
            session.bodies_received(step.event_uuid, [b for b in peer.reply_bodies(step.digests) if b is not None])
        elif isinstance(step, StoreBatch):
            out.append(step)
        else:
            assert isinstance(step, WaitStored) and step.checkpoint == out[-1].checkpoint
            assert session.checkpoint == (out[-2].checkpoint if len(out) > 1 else 0)  # not moved yet
            session.stored()
            assert session.checkpoint == out[-1].checkpoint
    # after the first batch is handed out, the second page is asked for before it is stored
    assert steps[steps.index("StoreBatch") + 1] == "SendChanges"
    assert [b.checkpoint for b in out] == [2, 4, 5] and session.checkpoint == 5
    assert [e.event_uuid for b in out for e in b.events] == [s.uuid for s in events]
    with pytest.raises(ProtocolError, match="not waiting for store"):
        session.stored()


def test_a_revision_with_a_malformed_header_is_refused_naming_the_field_and_the_rest_goes_on():
    from fedmisp.model.records import KIND_EVENT, seal
    good = signed(81)
    header = dict(signed(82).record.body["event"], timestamp="1700000000")  # signed, but a string
    bad = seal(AUTHOR, KIND_EVENT, {"event": header, "elements": []})
    changes, bodies = _feed(good)
    changes.insert(0, {"seq": 1, "record": bad.wire(), "event_level": 3, "elements": 3})
    changes[1]["seq"] = 2
    local = FakeLocal()
    batches, _ = run(PullSession("p", 0), FakePeer(changes, bodies), local)
    assert [e.event_uuid for b in batches for e in b.events] == [good.uuid]
    (refused,) = [r for b in batches for r in b.refused]
    assert (refused.seq, refused.reason, refused.event_uuid) == (1, "malformed", header["uuid"])
    assert "event.timestamp" in refused.detail and "integer" in refused.detail


def test_bodies_a_batch_took_as_held_and_lost_are_fetched_again_once_per_revision():
    s = signed(40, attributes=4)
    changes, bodies = _feed(s)
    peer = FakePeer(changes, bodies)
    local = FakeLocal()
    held = {e.digest for e in s.elements[:2]}
    local.digests[s.uuid] = set(held)  # held when the offer is taken: not fetched at first
    # the store says they were lost after every batch: fetched once, then left to the next revision
    batches, checkpoint = run(PullSession("p", 0), peer, local,
                              lacking_for=lambda batch: {e.event_uuid: held for e in batch.events})
    assert [[set(e.bodies) for e in b.events] for b in batches] == [
        [{e.digest for e in s.elements[2:]}], [held]]
    assert batches[0].events[0].assumed_held == frozenset(held)
    assert checkpoint == 1


def test_lost_bodies_of_a_revision_a_newer_one_replaces_in_the_same_pull_are_not_fetched():
    old = signed(41, attributes=3, timestamp=1_700_000_500)
    new = signed(41, attributes=4, timestamp=1_700_000_900)
    peer = FakePeer([change(1, old), change(2, new)], {e.digest: e.body for x in (old, new) for e in x.elements},
                    page=1)
    local = FakeLocal()
    held = {e.digest for e in old.elements}
    local.digests[old.uuid] = set(held)
    calls = []

    def lacking(batch):
        calls.append([e.seq for e in batch.events])
        return {e.event_uuid: held for e in batch.events if e.seq == 1}
    batches, _ = run(PullSession("p", 0), peer, local, lacking_for=lacking)
    stored = [(e.seq, set(e.bodies)) for b in batches for e in b.events]
    # the newer revision (seq 2) was pending when seq 1's batch reported its loss: only it is stored next
    assert [seq for seq, _ in stored] == [1, 2]
    assert peer.body_requests == 1  # seq 2's bodies, once; nothing refetched for seq 1


def test_lost_bodies_the_revision_does_not_offer_are_not_fetched():
    s = signed(42, attributes=3)
    changes, bodies = _feed(s)
    peer = FakePeer(changes, bodies)
    stray = {b"\x01" * 32}  # not a digest of this revision: nothing to fetch, nothing stored again
    batches, _ = run(PullSession("p", 0), peer, FakeLocal(),
                     lacking_for=lambda batch: {e.event_uuid: stray for e in batch.events})
    assert len(batches) == 1 and peer.body_requests == 1
