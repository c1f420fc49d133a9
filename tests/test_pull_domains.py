"""What a peer says in a changes reply is checked against its domain before anything is stored
(issue 13 items 2 and 3, issue 21 items 13 and 14): the pull session driven with crafted messages."""
from __future__ import annotations

import os
import uuid as uuidlib

import pytest

from fedmisp.gossip.session import (
    SEQ_LIMIT, Done, LookUp, PullLimits, PullSession, RefusedReply, SendBodies, SendChanges, StoreBatch, look_up,
    stop_rule,
)
from fedmisp.model.records import KIND_EVENT, KIND_RETRACTION, seal
from fedmisp.model.retraction import Reach, retraction_body

from test_gossip_session import AUTHOR, FakeLocal, FakePeer, _feed, change, run, signed


def bounded(session, peer, local, steps: int = 200):
    """`run`, but a session that keeps asking (the /bodies loop of issue 13 item 3) fails the test."""
    count = 0
    real_next = session.next_step

    def next_step():
        nonlocal count
        count += 1
        assert count <= steps, f"the session asked for more than {steps} steps (a loop)"
        return real_next()
    session.next_step = next_step
    return run(session, peer, local)


def _refused(batches):
    return [r for b in batches for r in b.refused]


def _received(batches):
    return [e for b in batches for e in b.events]


@pytest.mark.parametrize("field", ["event_level", "element", "elements"])
@pytest.mark.parametrize("value", [-1, 5, 2 ** 63, True, "3", None])
def test_a_level_outside_0_to_4_is_malformed_for_its_record_and_the_rest_of_the_page_goes_on(field, value):
    bad, good = signed(300), signed(301)
    changes, bodies = _feed(bad, good)
    if field == "event_level":
        changes[0]["event_level"] = value
    elif field == "element":  # one element's level in the {digest: level} form
        changes[0]["elements"][bad.elements[0].digest] = value
    else:  # one level for all (the compact form)
        changes[0]["elements"] = value
    local = FakeLocal()
    peer = FakePeer(changes, bodies)
    batches, checkpoint = run(PullSession("p", 0), peer, local)
    assert [e.event_uuid for e in _received(batches)] == [good.uuid]
    (refused,) = _refused(batches)
    assert (refused.seq, refused.reason, refused.event_uuid) == (1, "malformed", bad.uuid)
    assert ("event_level" if field == "event_level" else "elements") in refused.detail
    assert "0 to 4" in refused.detail
    assert checkpoint == 2
    assert peer.body_requests == 1  # only the good event's bodies were asked for


def _page(**fields):
    reply = {"changes": [], "last_seq": 3, "more": False, "head": 3}
    reply.update(fields)
    return reply


@pytest.mark.parametrize("reply, field", [
    (_page(last_seq=SEQ_LIMIT, head=SEQ_LIMIT), "last_seq"),
    (_page(last_seq=2 ** 64 + 5, head=2 ** 64 + 5), "last_seq"),
    (_page(head=SEQ_LIMIT), "head"),
    (_page(head=-1), "head"),
    (_page(head=None), "head"),
    (_page(last_seq=True, head=3), "last_seq"),
    (_page(last_seq=9, head=3), "past head"),
    (_page(last_seq=1), "before since"),  # the request was from 2
    (_page(more="yes"), "more"),
    (_page(more=1), "more"),
    (_page(more=True, last_seq=2), "did not move"),
    (_page(changes="nope"), "changes"),
    (_page(changes=[{"seq": SEQ_LIMIT, "record": b""}], last_seq=SEQ_LIMIT - 1, head=SEQ_LIMIT - 1), "seq"),
    (_page(changes=[{"seq": 3, "record": b""}, {"seq": 3, "record": b""}]), "seq"),
    ([1, 2], "expected"),
])
def test_a_page_whose_own_fields_are_out_of_their_domain_is_refused_whole_and_the_checkpoint_stays(reply, field):
    session = PullSession("p", 2)
    assert session.next_step() == SendChanges(2)
    with pytest.raises(RefusedReply, match=field):
        session.changes_received(reply)
    assert session.checkpoint == 2


def test_a_head_that_goes_back_within_one_pull_is_refused_and_the_checkpoint_stays_where_stored():
    events = [signed(310), signed(311)]
    changes, bodies = _feed(*events)
    peer = FakePeer(changes, bodies, page=1)
    local = FakeLocal()
    session = PullSession("p", 0)
    pages = 0
    with pytest.raises(RefusedReply, match="head: 2 is before 5"):
        while not isinstance(step := session.next_step(), Done):
            if isinstance(step, SendChanges):
                reply = peer.reply_changes(step.since)
                pages += 1
                if pages == 1:
                    reply["head"] = 5
                else:
                    reply["head"] = 2  # the log shrank?
                session.changes_received(reply)
            elif isinstance(step, LookUp):
                session.facts_received(look_up(local, step))
            elif isinstance(step, SendBodies):
                session.bodies_received(step.event_uuid, peer.reply_bodies(step.digests))
            elif isinstance(step, StoreBatch):
                session.stored()
            else:
                session.stored()
    assert session.checkpoint <= 1  # the first page at most; the refused page moved nothing


def _twins(first_ts: int, second_ts: int):
    """Two revisions of one event (same uuid), in the order given."""
    return signed(320, timestamp=first_ts), signed(320, timestamp=second_ts)


@pytest.mark.parametrize("order", ["older first", "newer first"])
def test_a_page_listing_one_event_twice_keeps_the_newer_revision_and_refuses_the_other_as_older(order):
    older, newer = _twins(1_700_000_500, 1_700_000_600)
    first, second = (older, newer) if order == "older first" else (newer, older)
    changes, bodies = _feed(first, second)
    peer = FakePeer(changes, bodies, page=10)  # both in one page
    local = FakeLocal()
    batches, checkpoint = bounded(PullSession("p", 0), peer, local)
    (kept,) = _received(batches)
    assert kept.record.id == newer.record.id and set(kept.bodies) == {e.digest for e in newer.elements}
    (refused,) = _refused(batches)
    assert (refused.reason, refused.record_id) == ("older", older.record.id)
    assert checkpoint == 2 and peer.body_requests == 1


def test_two_revisions_with_one_timestamp_keep_the_one_with_the_larger_record_id():
    a, b = _twins(1_700_000_500, 1_700_000_500)
    newer, older = (a, b) if a.record.id > b.record.id else (b, a)
    for first, second in ((a, b), (b, a)):
        changes, bodies = _feed(first, second)
        local = FakeLocal()
        batches, _ = bounded(PullSession("p", 0), FakePeer(changes, bodies, page=10), local)
        assert [e.record.id for e in _received(batches)] == [newer.record.id]
        assert [(r.reason, r.record_id) for r in _refused(batches)] == [("older", older.record.id)]


def test_the_same_revision_listed_twice_in_one_page_is_malformed_and_stored_once():
    s = signed(330)
    changes, bodies = _feed(s, s)
    local = FakeLocal()
    peer = FakePeer(changes, bodies, page=10)
    batches, checkpoint = bounded(PullSession("p", 0), peer, local)
    assert [e.record.id for e in _received(batches)] == [s.record.id]
    (refused,) = _refused(batches)
    assert (refused.seq, refused.reason) == (2, "malformed") and "twice" in refused.detail
    assert checkpoint == 2 and peer.body_requests == 1


def test_an_offered_digest_that_the_signed_revision_does_not_carry_is_never_fetched():
    s, good = signed(340), signed(341)
    stray = os.urandom(32)  # a digest of something else (say, an element withheld from the sender)
    changes, bodies = _feed(s, good)
    changes[0]["elements"][stray] = 3
    bodies[stray] = b"\0" * 16 + b"a body the revision does not carry"
    local = FakeLocal()
    session = PullSession("p", 0)
    asked: list[bytes] = []
    peer = FakePeer(changes, bodies)
    while not isinstance(step := session.next_step(), Done):
        if isinstance(step, SendChanges):
            session.changes_received(peer.reply_changes(step.since))
        elif isinstance(step, LookUp):
            session.facts_received(look_up(local, step))
        elif isinstance(step, SendBodies):
            asked.extend(step.digests)
            reply = peer.reply_bodies(step.digests)
            session.bodies_received(step.event_uuid, [b for b in reply if b is not None] if step.everything else reply)
        elif isinstance(step, StoreBatch):
            refused = list(step.refused)
            session.stored()
        else:
            session.stored()
    assert stray not in asked
    assert [(r.seq, r.reason) for r in refused] == [(1, "malformed")]
    assert "not a digest of the signed revision" in refused[0].detail


def test_a_revision_whose_digest_list_repeats_a_digest_is_refused_as_malformed_and_never_opened():
    base = signed(350)
    digests = [e.digest for e in base.elements]
    record = seal(AUTHOR, KIND_EVENT, {"event": base.record.body["event"], "elements": digests + digests[:1]})
    changes = [{"seq": 1, "record": record.wire(), "event_level": 3, "elements": 3}]
    bodies = {e.digest: e.body for e in base.elements}
    local = FakeLocal()
    peer = FakePeer(changes, bodies)
    batches, checkpoint = run(PullSession("p", 0), peer, local)
    assert _received(batches) == [] and peer.body_requests == 0
    (refused,) = _refused(batches)
    assert refused.reason == "malformed" and "duplicate" in refused.detail
    assert checkpoint == 1


def test_a_revision_with_more_elements_than_an_event_may_hold_is_malformed_and_never_fetched(monkeypatch):
    # MAX_ELEMENTS_PER_EVENT (a million) bounds what one skeleton makes a node fetch and index; the
    # limit is lowered here so the revision stays small
    from fedmisp.model import records
    base = signed(360)
    monkeypatch.setattr(records, "MAX_ELEMENTS_PER_EVENT", len(base.elements) - 1)
    changes = [{"seq": 1, "record": base.record.wire(), "event_level": 3, "elements": 3}]
    local = FakeLocal()
    peer = FakePeer(changes, {e.digest: e.body for e in base.elements})
    batches, checkpoint = run(PullSession("p", 0), peer, local)
    assert _received(batches) == [] and peer.body_requests == 0
    (refused,) = _refused(batches)
    assert refused.reason == "malformed" and "at most" in refused.detail
    assert checkpoint == 1


def _retraction(event_uuid: str, reach_level: int = 2):
    return seal(AUTHOR, KIND_RETRACTION, retraction_body(event_uuid, 1_700_000_400, bytes(32), Reach(reach_level)))


@pytest.mark.parametrize("level", [-2, 4, 5, 2 ** 63, True, "2", None])
def test_a_retraction_offered_at_a_level_outside_minus_1_to_3_is_malformed_and_the_rest_of_the_page_goes_on(level):
    # the level a retraction is offered at decides where it may go next (policy/retractions.py):
    # -1 (through its groups only) to 3, the levels a retraction's reach can have
    bad, good = _retraction(str(uuidlib.uuid4())), _retraction(str(uuidlib.uuid4()))
    changes = [{"seq": 1, "record": bad.wire(), "level": level},
               {"seq": 2, "record": good.wire(), "level": 3}]
    batches, checkpoint = run(PullSession("p", 0), FakePeer(changes, {}), FakeLocal())
    (refused,) = _refused(batches)
    assert (refused.seq, refused.reason, refused.record_id) == (1, "malformed", bad.id)
    assert "from -1 to 3" in refused.detail
    stored = [r for b in batches for r in b.records]
    assert stored == [good.wire()]
    assert {k: v for b in batches for k, v in b.retraction_levels.items()} == {good.id: 3}
    assert checkpoint == 2


@pytest.mark.parametrize("level", [-1, 0, 1, 2, 3])
def test_a_retraction_offered_at_each_level_from_minus_1_to_3_is_taken_at_that_level(level):
    r = _retraction(str(uuidlib.uuid4()))
    batches, checkpoint = run(PullSession("p", 0), FakePeer([{"seq": 1, "record": r.wire(), "level": level}], {}),
                              FakeLocal())
    assert _refused(batches) == []
    assert [w for b in batches for w in b.records] == [r.wire()]
    assert {k: v for b in batches for k, v in b.retraction_levels.items()} == {r.id: level}
    assert checkpoint == 1


def test_empty_pages_that_say_more_end_the_pull_by_the_progress_rule():
    limits = PullLimits(deadline=600, no_progress_seconds=60, no_progress_pages=5)
    session = PullSession("p", 0)
    stops = []
    seq = 0
    for _ in range(10):
        step = session.next_step()
        while isinstance(step, (StoreBatch,)) or step.__class__.__name__ == "WaitStored":
            session.stored() if step.__class__.__name__ == "WaitStored" else None
            step = session.next_step()
        assert isinstance(step, SendChanges)
        seq += 200
        session.changes_received({"changes": [], "last_seq": seq, "more": True, "head": 10 ** 9})
        stops.append(stop_rule(session, elapsed=1.0, since_progress=1.0, limits=limits))
    assert stops[:4] == [None] * 4
    assert stops[4] is not None and stops[4].startswith("no-progress") and "5 changes pages" in stops[4]


def test_the_stop_rule_names_the_deadline_and_the_silence_it_measured():
    session = PullSession("p", 0)
    limits = PullLimits(deadline=100, no_progress_seconds=30, no_progress_pages=1000)
    assert stop_rule(session, 99, 29, limits) is None
    assert stop_rule(session, 100, 0, limits).startswith("deadline: the pull ran 100 s (at most 100 s)")
    assert stop_rule(session, 50, 30, limits).startswith("no-progress: nothing stored and no body accepted for 30 s")
