"""The custom-cluster rules of policy/clusters.py one by one (docs/policy.md "Galaxy clusters")."""
from __future__ import annotations

import pytest

from fedmisp.policy.clusters import check_cluster_version, cluster_inbound, cluster_outbound
from fedmisp.policy.model import NodeState, PeerPolicy, SharingGroup, SyncFilter
from fedmisp.policy.orgs import KeyState
from fedmisp.policy.reasons import Reason

ME, PEER, CREATOR = "org-me", "org-peer", "org-creator"
NODE = NodeState(ME)
P = PeerPolicy("p", PEER)


def inbound(**changes):
    facts = dict(published=True, signer_org=CREATOR, orgc_uuid=CREATOR, offered=3, distribution=3,
                 sharing_group=None, blocked=False, peer=P, node=NODE)
    facts.update(changes)
    return cluster_inbound(**facts)


def test_a_cluster_from_a_blocked_organisation_is_refused():
    assert inbound(node=NodeState(ME, blocked_orgs=frozenset({CREATOR})))[0] is Reason.BLOCKLIST_ORG
    assert inbound() == (Reason.ALLOWED, 3)


@pytest.mark.parametrize("changes, reason", [
    ({"published": False}, Reason.LOCAL_UNPUBLISHED),
    ({"signer_org": PEER}, Reason.CLUSTER_OTHER_ORG),
    ({"offered": "3"}, Reason.MALFORMED),
    ({"distribution": 0, "offered": 0}, Reason.HOP_BUDGET),
    ({"blocked": True}, Reason.CLUSTER_BLOCKED),
    ({"peer": PeerPolicy("p", PEER, pull=SyncFilter(max_distribution=2)), "offered": 3}, Reason.ALLOWED),
])
def test_each_inbound_rule(changes, reason):
    assert inbound(**changes)[0] is reason


def test_a_sharing_group_cluster_is_refused_by_a_pull_filter_that_keeps_groups_out():
    group = SharingGroup("g", "g", CREATOR, 1, {CREATOR: True, ME: False, PEER: False})
    node = NodeState(ME, sharing_groups={"g": group})
    assert inbound(node=node, offered=4, distribution=4, sharing_group="g") == (Reason.ALLOWED, 4)
    kept_out = PeerPolicy("p", PEER, pull=SyncFilter(max_distribution=3))
    assert inbound(node=node, offered=4, distribution=4, sharing_group="g",
                   peer=kept_out)[0] is Reason.PULL_FILTER_DISTRIBUTION


def test_the_pull_cap_and_the_hop_budget_set_the_level_taken():
    assert inbound(peer=PeerPolicy("p", PEER, pull=SyncFilter(max_distribution=2))) == (Reason.ALLOWED, 2)
    assert inbound(offered=2, distribution=2) == (Reason.ALLOWED, 1)


def test_outbound_rules_and_the_level_sent():
    group = SharingGroup("g", "g", ME, 1, {ME: True, PEER: False})
    with_group = NodeState(ME, sharing_groups={"g": group})
    assert cluster_outbound(True, 3, None, (), P, NODE) == (Reason.ALLOWED, 3)
    assert cluster_outbound(True, 2, None, (), P, NODE) == (Reason.ALLOWED, 1)
    assert cluster_outbound(False, 3, None, (), P, NODE)[0] is Reason.LOCAL_UNPUBLISHED
    assert cluster_outbound(True, 0, None, (), P, NODE)[0] is Reason.HOP_BUDGET
    assert cluster_outbound(True, 4, "g", (), P, with_group) == (Reason.ALLOWED, 4)
    assert cluster_outbound(True, 4, "g", (), PeerPolicy("q", "org-out"), with_group)[0] is Reason.SG_NOT_MEMBER
    assert cluster_outbound(True, 3, None, ("p",), P, NODE)[0] is Reason.FROM_PEER
    capped = PeerPolicy("p", PEER, push=SyncFilter(max_distribution=1))
    assert cluster_outbound(True, 3, None, (), capped, NODE) == (Reason.ALLOWED, 1)
    assert cluster_outbound(True, 4, "g", (), PeerPolicy("p", PEER, push=SyncFilter(max_distribution=3)),
                            with_group)[0] is Reason.PUSH_FILTER_DISTRIBUTION


def test_versions():
    current = KeyState(org=CREATOR)
    assert check_cluster_version(None, None, CREATOR, 1, current) is Reason.ALLOWED
    assert check_cluster_version(None, 1, CREATOR, 2, current) is Reason.CLUSTER_OTHER_ORG
    assert check_cluster_version(CREATOR, 1, PEER, 2, current) is Reason.CLUSTER_OTHER_ORG
    assert check_cluster_version(CREATOR, 1, CREATOR, 2, KeyState(org=CREATOR, retired_at=1)) is Reason.ORG_KEY_NOT_CURRENT
    assert check_cluster_version(CREATOR, 2, CREATOR, 2, current) is Reason.CLUSTER_NOT_NEWER
    assert check_cluster_version(CREATOR, 2, CREATOR, 3, current) is Reason.ALLOWED
