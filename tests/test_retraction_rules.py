"""Each rule of where a retraction goes (policy/retractions.py, docs/policy.md "Narrowing"), one
test a rule, numbered as the module numbers them: removing any one of them fails its test."""
from __future__ import annotations

import pytest

from fedmisp.model.retraction import NO_LEVEL, Reach
from fedmisp.policy.model import NodeState, PeerMode, PeerPolicy, SharingGroup, SyncFilter
from fedmisp.policy.reasons import Reason
from fedmisp.policy.retractions import retraction_inbound, retraction_outbound

ME, PEER, OTHER = ("11111111-1111-4111-8111-%012d" % i for i in (1, 2, 3))
GROUP = "22222222-2222-4222-8222-000000000001"


def _peer(mode: PeerMode = PeerMode.FULL, org: str = PEER, max_distribution: int = 4) -> PeerPolicy:
    return PeerPolicy("p", org, mode, push=SyncFilter(max_distribution=max_distribution))


def _node(members: tuple[str, ...] = (ME, PEER)) -> NodeState:
    group = SharingGroup(GROUP, "g", ME, 1, dict.fromkeys(members, False))
    return NodeState(ME, {GROUP: group})


EVERYWHERE = Reach(3)
IN_GROUP = Reach(NO_LEVEL, frozenset({GROUP}))


# --- outbound -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, served", [(PeerMode.FULL, True), (PeerMode.PUSH_ONLY, True),
                                          (PeerMode.CORRELATION_ONLY, True), (PeerMode.PULL_ONLY, False)])
def test_outbound_1_only_a_peer_this_node_serves_gets_a_retraction(mode, served):
    reason, _ = retraction_outbound(3, EVERYWHERE, "", _peer(mode), _node())
    assert reason is (Reason.ALLOWED if served else Reason.PEER_MODE)


def test_outbound_1_an_internal_peer_of_another_organisation_gets_none():
    assert retraction_outbound(3, EVERYWHERE, "", _peer(PeerMode.INTERNAL, OTHER), _node())[0] \
        is Reason.INTERNAL_ORG_MISMATCH
    assert retraction_outbound(0, EVERYWHERE, "", _peer(PeerMode.INTERNAL, ME), _node()) == (Reason.ALLOWED, 0)


@pytest.mark.parametrize("held, offered", [(3, 3), (2, 1), (1, 0)])
def test_outbound_2_the_hop_budget_is_spent_one_hop_at_a_time(held, offered):
    assert retraction_outbound(held, Reach(held), "", _peer(), _node()) == (Reason.ALLOWED, offered)


def test_outbound_2_a_retraction_held_at_0_goes_no_further():
    assert retraction_outbound(0, Reach(0), "", _peer(), _node()) == (Reason.HOP_BUDGET, NO_LEVEL)


def test_outbound_2_the_peers_push_filter_caps_the_level_offered():
    assert retraction_outbound(3, EVERYWHERE, "", _peer(max_distribution=1), _node()) == (Reason.ALLOWED, 1)


def test_outbound_3_through_a_group_of_its_reach_only_to_a_member_and_only_by_a_member():
    assert retraction_outbound(NO_LEVEL, IN_GROUP, "", _peer(), _node()) == (Reason.ALLOWED, NO_LEVEL)
    assert retraction_outbound(NO_LEVEL, IN_GROUP, "", _peer(), _node(members=(ME,))) == \
        (Reason.SG_NOT_MEMBER, NO_LEVEL)
    assert retraction_outbound(NO_LEVEL, IN_GROUP, "", _peer(), _node(members=(PEER,))) == \
        (Reason.SG_NOT_MEMBER, NO_LEVEL)
    assert retraction_outbound(NO_LEVEL, Reach(NO_LEVEL, frozenset({OTHER})), "", _peer(), _node())[0] \
        is Reason.SG_NOT_MEMBER  # a group this node does not know


def test_outbound_4_never_back_to_the_peer_it_came_from():
    assert retraction_outbound(3, EVERYWHERE, "p", _peer(), _node()) == (Reason.FROM_PEER, NO_LEVEL)
    assert retraction_outbound(NO_LEVEL, IN_GROUP, "p", _peer(), _node())[0] is Reason.FROM_PEER
    assert retraction_outbound(3, EVERYWHERE, "q", _peer(), _node())[0] is Reason.ALLOWED


# --- inbound --------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, taken", [(PeerMode.FULL, True), (PeerMode.PULL_ONLY, True),
                                         (PeerMode.CORRELATION_ONLY, True), (PeerMode.PUSH_ONLY, False)])
def test_inbound_1_only_a_peer_this_node_takes_from_is_heard(mode, taken):
    reason, _ = retraction_inbound(3, EVERYWHERE, _peer(mode), _node())
    assert reason is (Reason.ALLOWED if taken else Reason.PEER_MODE)


def test_inbound_1_an_internal_peer_of_another_organisation_is_not_heard():
    assert retraction_inbound(3, EVERYWHERE, _peer(PeerMode.INTERNAL, OTHER), _node())[0] is Reason.INTERNAL_ORG_MISMATCH


@pytest.mark.parametrize("offered, signed, held", [
    (3, 3, 3),  # all communities: unchanged
    (3, 1, 0),  # offered above what the author signed: held at what the author allows one hop on
    (1, 2, 1),  # a connected-communities retraction one hop on
    (0, 1, 0),  # a community retraction arrives at 0
])
def test_inbound_2_the_level_held_is_never_above_what_the_author_signed_less_the_hop(offered, signed, held):
    assert retraction_inbound(offered, Reach(signed), _peer(), _node()) == (Reason.ALLOWED, held)


def test_inbound_2_an_org_only_reach_never_arrives_and_no_level_without_a_group_is_refused():
    assert retraction_inbound(3, Reach(0), _peer(), _node()) == (Reason.HOP_BUDGET, NO_LEVEL)
    assert retraction_inbound(NO_LEVEL, EVERYWHERE, _peer(), _node()) == (Reason.HOP_BUDGET, NO_LEVEL)


def test_inbound_2_through_a_group_only_when_both_ends_are_members():
    assert retraction_inbound(NO_LEVEL, IN_GROUP, _peer(), _node()) == (Reason.ALLOWED, NO_LEVEL)
    assert retraction_inbound(NO_LEVEL, IN_GROUP, _peer(), _node(members=(ME,))) == \
        (Reason.SG_SENDER_NOT_MEMBER, NO_LEVEL)
    assert retraction_inbound(NO_LEVEL, IN_GROUP, _peer(), _node(members=(PEER,))) == \
        (Reason.SG_SENDER_NOT_MEMBER, NO_LEVEL)
