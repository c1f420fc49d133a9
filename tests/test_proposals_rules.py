"""The rules a proposal and a decision must meet, for any input (hypothesis)."""
from __future__ import annotations

import uuid

from hypothesis import given, settings, strategies as st

from fedmisp.model.identity import Identity
from fedmisp.model.misp import EventError, parse_proposal
from fedmisp.model.records import KIND_PROPOSAL, seal
from fedmisp.store.proposals import (
    DECISIONS, decision_body, decision_shape_problem, proposal_id, proposal_shape_problem,
)

EVENT = "5f3c2a1e-0b9d-4c8e-a7f6-1d2e3f4a5b6c"
IDENTITY = Identity.generate()

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=40)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=12)
# proposal-like maps: MISP's field names with values of any kind, and sometimes good ones
fields = st.sampled_from(["type", "value", "category", "to_ids", "comment", "uuid", "first_seen", "last_seen",
                          "timestamp", "disable_correlation", "proposal_to_delete", "Org"])
good = st.fixed_dictionaries({"type": st.just("ip-dst"), "value": st.sampled_from(["192.0.2.1", "x", "::1"])})
posts = st.one_of(good, st.dictionaries(fields, values | st.text(max_size=30), max_size=6),
                  good.flatmap(lambda g: st.dictionaries(fields, values, max_size=3).map(lambda d: {**g, **d})))


@settings(max_examples=300, deadline=None)
@given(posts)
def test_a_posted_proposal_is_refused_naming_a_field_or_becomes_a_well_formed_record_body(raw):
    try:
        proposal = parse_proposal(raw, EVENT, 1_800_000_000, None, {"name": "Org", "uuid": EVENT})
    except EventError as e:
        assert e.problems and all(p.field and p.message for p in e.problems)
        return
    assert proposal_shape_problem({"event_uuid": EVENT, "proposal": proposal}) is None
    assert proposal["type"] == raw["type"] and proposal["Org"]["uuid"] == EVENT


@settings(max_examples=300, deadline=None)
@given(values)
def test_any_received_body_gets_an_answer_not_an_exception(body):
    for check in (proposal_shape_problem, decision_shape_problem):
        assert check(body) is None or isinstance(check(body), str)


@given(st.sampled_from(DECISIONS), st.uuids())
def test_a_decision_this_node_makes_is_well_formed_and_names_the_proposal(decision, event):
    proposal = seal(IDENTITY, KIND_PROPOSAL, {"event_uuid": str(event), "proposal": {}})
    body = decision_body(str(event), proposal, decision)
    assert decision_shape_problem(body) is None and body["proposal"] == proposal.id
    assert decision_shape_problem({**body, "decision": "maybe"}) is not None
    assert decision_shape_problem({**body, "extra": 1}) is not None
    assert proposal_id(proposal.id) == int.from_bytes(proposal.id[:7], "big") < 2 ** 56


def test_a_proposal_for_another_uuid_keeps_the_attribute_it_changes():
    target = str(uuid.uuid4())
    proposal = parse_proposal({"type": "domain", "value": "a.example", "uuid": target}, EVENT, 1, target)
    assert proposal["attribute_uuid"] == target and proposal["uuid"] == target
