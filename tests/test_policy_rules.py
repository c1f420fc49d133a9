"""Each rule of DESIGN's distribution table and pipeline, pinned by a test named after it."""
from __future__ import annotations

from dataclasses import replace

import pytest

from fedmisp.policy.model import (
    ElementView, EventView, Holding, NodeState, PeerMode, PeerPolicy, SharingGroup, SyncFilter,
    event_view,
)
from fedmisp.policy.inbound import check_received, inbound
from fedmisp.policy.outbound import outbound, outbound_many
from fedmisp.policy.pipeline import authored_levels, merge, next_hop_level, origin_holding
from fedmisp.policy.reasons import Reason
from fedmisp.policy.sharing_groups import apply_revision, check_revision

A, B, C = "org-a", "org-b", "org-c"
SG = "sg-1"
GROUP = SharingGroup(uuid=SG, name="LE-CSIRT", owner=A, revision=1, members={A: True, B: False})
NODE_A = NodeState(org_uuid=A, sharing_groups={SG: GROUP})
NODE_B = NodeState(org_uuid=B, sharing_groups={SG: GROUP})
NODE_C = NodeState(org_uuid=C, sharing_groups={SG: GROUP})
OPEN = SyncFilter()  # no ceilings at all


def peer(org: str, mode: PeerMode = PeerMode.FULL, push: SyncFilter = OPEN, pull: SyncFilter = OPEN) -> PeerPolicy:
    return PeerPolicy(name=org, org_uuid=org, mode=mode, push=push, pull=pull)


def attr(uuid: str, distribution: int = 5, **kw) -> ElementView:
    return ElementView(uuid=uuid, kind="attribute", distribution=distribution, type=kw.pop("type", "ip-dst"), **kw)


def event(distribution: int = 3, *elements: ElementView, **kw) -> EventView:
    base = dict(uuid="ev", orgc_uuid=A, orgc_name="Org A", distribution=distribution, sharing_group=None,
                published=True, timestamp=100, tags=frozenset(), elements=tuple(elements))
    base.update(kw)
    return EventView(**base)


def hop(e: EventView, holding: Holding, sender: NodeState, receiver: NodeState,
        out_policy: PeerPolicy, in_policy: PeerPolicy) -> tuple[Holding | None, object]:
    """One delivery sender -> receiver through both pipelines; the receiver's holding after it."""
    out = outbound(e, holding, out_policy, sender)
    if not out.allowed:
        return None, out
    inn = inbound(e, out.levels, in_policy, receiver)
    return (merge(None, inn, in_policy.name) if inn.allowed else None), inn


# --- 2. hop budget (the MISP sync downgrade) ----------------------------------------------------

@pytest.mark.parametrize("held,internal,expected", [
    (0, False, None), (1, False, 0), (2, False, 1), (3, False, 3), (4, False, 4),
    (0, True, 0), (1, True, 1), (2, True, 2),
])
def test_next_hop_level_follows_the_misp_downgrade(held, internal, expected):
    assert next_hop_level(held, internal) == expected


def test_level_0_never_leaves_the_origin():
    e = event(0, attr("x"))
    out = outbound(e, origin_holding(e), peer(B), NODE_A)
    assert out.reason is Reason.HOP_BUDGET


def test_level_0_passes_an_internal_link_of_the_same_org():
    e = event(0, attr("x"))
    out = outbound(e, origin_holding(e), PeerPolicy("a2", A, PeerMode.INTERNAL, OPEN, OPEN), NODE_A)
    assert out.allowed and out.levels == {"ev": 0, "x": 0}


def test_internal_peer_of_another_org_is_refused():
    e = event(3, attr("x"))
    out = outbound(e, origin_holding(e), PeerPolicy("b", B, PeerMode.INTERNAL, OPEN, OPEN), NODE_A)
    assert out.reason is Reason.INTERNAL_ORG_MISMATCH


def test_level_1_arrives_as_0_and_goes_no_further():
    e = event(1, attr("x"))
    at_b, _ = hop(e, origin_holding(e), NODE_A, NODE_B, peer(B), peer(A))
    assert at_b.levels == {"ev": 0, "x": 0}
    assert outbound(e, at_b, peer(C), NODE_B).reason is Reason.HOP_BUDGET


def test_level_2_arrives_as_1_then_as_0():
    e = event(2, attr("x"))
    at_b, _ = hop(e, origin_holding(e), NODE_A, NODE_B, peer(B), peer(A))
    at_c, _ = hop(e, at_b, NODE_B, NODE_C, peer(C), peer(B))
    assert at_b.levels["x"] == 1 and at_c.levels["x"] == 0
    assert outbound(e, at_c, peer("org-d"), NODE_C).reason is Reason.HOP_BUDGET


def test_level_3_is_unchanged_at_every_hop():
    e = event(3, attr("x"))
    holding = origin_holding(e)
    for sender, receiver, org_from, org_to in ((NODE_A, NODE_B, A, B), (NODE_B, NODE_C, B, C)):
        holding, _ = hop(e, holding, sender, receiver, peer(org_to), peer(org_from))
        assert holding.levels == {"ev": 3, "x": 3}


def test_level_5_inherits_the_event_and_object_members_inherit_their_object():
    obj = ElementView(uuid="o", kind="object", distribution=1, template="domain-ip")
    e = event(3, attr("top"), obj, attr("member", object_uuid="o"),
              ElementView(uuid="ref", kind="reference", distribution=5, object_uuid="o"))
    assert authored_levels(e) == {"ev": 3, "top": 3, "o": 1, "member": 1, "ref": 1}


def test_an_element_passes_only_if_its_object_passes():
    obj = ElementView(uuid="o", kind="object", distribution=0, template="file")
    e = event(3, obj, attr("member", distribution=3, object_uuid="o"))
    out = outbound(e, origin_holding(e), peer(B), NODE_A)
    assert out.withheld == {"o": Reason.HOP_BUDGET, "member": Reason.PARENT_WITHHELD}
    assert "member" not in out.levels


def test_an_element_never_outlives_its_event():
    e = event(1, attr("x", distribution=3))
    at_b, _ = hop(e, origin_holding(e), NODE_A, NODE_B, peer(B), peer(A))
    assert at_b.levels == {"ev": 0, "x": 3}  # held at its own level...
    assert outbound(e, at_b, peer(C), NODE_B).reason is Reason.HOP_BUDGET  # ...but its event stops here


# --- 1. node-local data never leaves ------------------------------------------------------------

def test_unpublished_events_never_move():
    e = event(3, attr("x"), published=False)
    assert outbound(e, origin_holding(e), peer(B), NODE_A).reason is Reason.LOCAL_UNPUBLISHED


def test_a_pull_only_peer_is_never_served_and_a_push_only_peers_data_is_refused():
    e = event(3, attr("x"))
    assert outbound(e, origin_holding(e), peer(B, PeerMode.PULL_ONLY), NODE_A).reason is Reason.PEER_MODE
    assert inbound(e, {"ev": 3, "x": 3}, peer(A, PeerMode.PUSH_ONLY), NODE_B).reason is Reason.PEER_MODE


def test_correlation_only_data_is_marked_and_never_relayed():
    e = event(3, attr("x"))
    at_b, inn = hop(e, origin_holding(e), NODE_A, NODE_B, peer(B), peer(A, PeerMode.CORRELATION_ONLY))
    assert inn.correlation_only and at_b.correlation_only
    assert outbound(e, at_b, peer(C), NODE_B).reason is Reason.LOCAL_CORRELATION_ONLY
    # the same event by a full path makes it shown (and relayable)
    shown = merge(at_b, inbound(e, {"ev": 3, "x": 3}, peer(C), NODE_B), C)
    assert not shown.correlation_only


# --- 3. sharing groups --------------------------------------------------------------------------

def test_sharing_group_data_goes_only_to_member_orgs():
    e = event(4, attr("x"), sharing_group=SG)
    assert outbound(e, origin_holding(e), peer(B), NODE_A).allowed
    assert outbound(e, origin_holding(e), peer(C), NODE_A).reason is Reason.SG_NOT_MEMBER


def test_a_non_member_never_relays_the_groups_data():
    e = event(3, attr("x", distribution=4, sharing_group=SG))
    held_by_c = Holding({"ev": 3, "x": 4})
    out = outbound(e, held_by_c, peer(B), NODE_C)
    assert out.allowed and out.withheld == {"x": Reason.SG_RELAY_NOT_MEMBER}


def test_inbound_refuses_group_data_from_a_non_member_sender():
    e = event(3, attr("x", distribution=4, sharing_group=SG))
    inn = inbound(e, {"ev": 3, "x": 4}, peer(C), NODE_B)
    assert inn.allowed and inn.withheld == {"x": Reason.SG_SENDER_NOT_MEMBER}


def test_an_unknown_sharing_group_is_refused():
    e = event(4, attr("x"), sharing_group="sg-unknown")
    assert outbound(e, origin_holding(e), peer(B), NODE_A).reason is Reason.SG_UNKNOWN


def test_a_removed_member_receives_nothing_new():
    groups = {SG: GROUP}
    removed = replace(GROUP, revision=2, members={A: True})
    assert apply_revision(groups, removed, A) is Reason.ALLOWED
    e = event(4, attr("x"), sharing_group=SG)
    assert outbound(e, origin_holding(e), peer(B), NodeState(A, groups)).reason is Reason.SG_NOT_MEMBER


@pytest.mark.parametrize("author,new,expected", [
    (A, replace(GROUP, revision=2, members={A: True, C: False}), Reason.ALLOWED),  # owner removes and adds
    (A, replace(GROUP, revision=1, name="again"), Reason.SG_REVISION_NOT_NEWER),
    (B, replace(GROUP, revision=2, members={A: True, B: False, C: False}), Reason.SG_REVISION_AUTHOR),  # B cannot extend
    (A, replace(GROUP, revision=2, owner=B), Reason.SG_REVISION_OWNER_CHANGED),
    (A, replace(GROUP, revision=2, members={B: True}), Reason.SG_REVISION_OWNER_REMOVED),
])
def test_sharing_group_revision_rules(author, new, expected):
    assert check_revision(GROUP, new, author) is expected


def test_an_extend_member_may_add_members_and_nothing_else():
    group = replace(GROUP, members={A: True, B: True})
    assert check_revision(group, replace(group, revision=2, members={A: True, B: True, C: False}), B) is Reason.ALLOWED
    assert check_revision(group, replace(group, revision=2, members={B: True}), B) is Reason.SG_REVISION_OWNER_REMOVED
    assert check_revision(group, replace(group, revision=2, members={A: True, B: True}, name="x"), B) \
        is Reason.SG_REVISION_EXTEND_REMOVES


def test_an_extend_member_may_neither_delete_nor_redescribe_a_group():
    group = replace(GROUP, members={A: True, B: True})
    assert check_revision(group, replace(group, revision=2, deleted=True), B) is Reason.SG_REVISION_EXTEND_REMOVES
    assert check_revision(group, replace(group, revision=2, description="mine"), B) is Reason.SG_REVISION_EXTEND_REMOVES
    assert check_revision(group, replace(group, revision=2, members={A: True}, deleted=True), A) is Reason.ALLOWED


def test_the_first_revision_is_signed_by_its_owner():
    assert check_revision(None, GROUP, B) is Reason.SG_REVISION_AUTHOR
    assert check_revision(None, GROUP, A) is Reason.ALLOWED


# --- 4. filters ---------------------------------------------------------------------------------

def test_push_filter_not_tag_on_the_event_refuses_the_event():
    e = event(3, attr("x"), tags=frozenset({"internal:only"}))
    out = outbound(e, origin_holding(e), peer(B, push=SyncFilter(tags_exclude=("internal:*",))), NODE_A)
    assert out.reason is Reason.PUSH_FILTER_TAG


def test_push_filter_not_tag_on_an_attribute_withholds_only_that_attribute():
    e = event(3, attr("x", tags=frozenset({"internal:only"})), attr("y"))
    out = outbound(e, origin_holding(e), peer(B, push=SyncFilter(tags_exclude=("INTERNAL:%",))), NODE_A)
    assert out.allowed and set(out.levels) == {"ev", "y"} and out.withheld == {"x": Reason.PUSH_FILTER_TAG}


def test_or_tags_need_one_of_them_on_the_event():
    f = SyncFilter(tags_include=("osint:*", "tlp:green"))
    tagged = event(3, attr("x"), tags=frozenset({"osint:source-type=\"blog-post\""}))
    assert outbound(tagged, origin_holding(tagged), peer(B, push=f), NODE_A).allowed
    bare = event(3, attr("x"))
    assert outbound(bare, origin_holding(bare), peer(B, push=f), NODE_A).reason is Reason.PUSH_FILTER_TAG


def test_orgs_match_by_uuid_or_name():
    e = event(3, attr("x"))
    assert outbound(e, origin_holding(e), peer(B, push=SyncFilter(orgs_exclude=("org a",))), NODE_A).reason \
        is Reason.PUSH_FILTER_ORG
    assert outbound(e, origin_holding(e), peer(B, push=SyncFilter(orgs_include=(A,))), NODE_A).allowed
    assert outbound(e, origin_holding(e), peer(B, push=SyncFilter(orgs_include=(C,))), NODE_A).reason \
        is Reason.PUSH_FILTER_ORG


def test_attribute_types_and_object_templates_are_withheld():
    obj = ElementView(uuid="o", kind="object", distribution=5, template="email")
    e = event(3, attr("x", type="email-src"), attr("y"), obj, attr("m", object_uuid="o", type="email-subject"))
    f = SyncFilter(types_exclude=("email-src",), templates_exclude=("email",))
    out = outbound(e, origin_holding(e), peer(B, push=f), NODE_A)
    assert set(out.levels) == {"ev", "y"}
    assert out.withheld == {"x": Reason.PUSH_FILTER_TYPE, "o": Reason.PUSH_FILTER_TEMPLATE, "m": Reason.PARENT_WITHHELD}


def test_tlp_red_never_leaves_unless_the_peer_is_allowed_it():
    e = event(3, attr("x"), tags=frozenset({"tlp:red"}))
    default = PeerPolicy(name=B, org_uuid=B)  # the default push filter
    assert outbound(e, origin_holding(e), default, NODE_A).reason is Reason.PUSH_FILTER_TLP
    allowed = replace(default, push=SyncFilter(tlp_ceiling="tlp:red"))
    assert outbound(e, origin_holding(e), allowed, NODE_A).allowed
    amber_event = event(3, attr("red-one", tags=frozenset({"tlp:red"})), attr("ok"), tags=frozenset({"tlp:amber"}))
    out = outbound(amber_event, origin_holding(amber_event), default, NODE_A)
    assert out.withheld == {"red-one": Reason.PUSH_FILTER_TLP} and "ok" in out.levels


def test_pap_ceiling():
    e = event(3, attr("x"), tags=frozenset({"pap:red"}))
    assert outbound(e, origin_holding(e), peer(B, push=SyncFilter(pap_ceiling="pap:amber")), NODE_A).reason \
        is Reason.PUSH_FILTER_PAP


# DESIGN's marking scales, written out as the oracle: white is clear's older name
_TLP_RANKS = {"tlp:clear": 0, "tlp:white": 0, "tlp:green": 1, "tlp:amber": 2, "tlp:amber+strict": 3, "tlp:red": 4}
_PAP_RANKS = {"pap:clear": 0, "pap:white": 0, "pap:green": 1, "pap:amber": 2, "pap:red": 3}


@pytest.mark.parametrize("ranks, field, reason", [(_TLP_RANKS, "tlp_ceiling", Reason.PUSH_FILTER_TLP),
                                                  (_PAP_RANKS, "pap_ceiling", Reason.PUSH_FILTER_PAP)])
def test_a_marking_ceiling_passes_exactly_the_markings_at_or_below_it_on_events_and_elements(ranks, field, reason):
    for ceiling, top in ranks.items():
        f = SyncFilter(**{field: ceiling})
        for marking, rank in ranks.items():
            e = event(3, attr("x"), tags=frozenset({marking}))
            out = outbound(e, origin_holding(e), peer(B, push=f), NODE_A)
            assert out.reason is (Reason.ALLOWED if rank <= top else reason), (ceiling, marking)
            inner = event(3, attr("x", tags=frozenset({marking})), attr("y"))
            out = outbound(inner, origin_holding(inner), peer(B, push=f), NODE_A)
            assert dict(out.withheld) == ({} if rank <= top else {"x": reason}), (ceiling, marking)


def test_to_ids_only():
    e = event(3, attr("x", to_ids=True), attr("y", to_ids=False))
    out = outbound(e, origin_holding(e), peer(B, push=SyncFilter(to_ids_only=True)), NODE_A)
    assert set(out.levels) == {"ev", "x"} and out.withheld == {"y": Reason.PUSH_FILTER_TO_IDS}


def test_max_distribution_caps_the_level_and_keeps_groups_out_below_4():
    e = event(3, attr("x"), attr("g", distribution=4, sharing_group=SG))
    out = outbound(e, origin_holding(e), peer(B, push=SyncFilter(max_distribution=1)), NODE_A)
    assert out.levels == {"ev": 1, "x": 1}
    assert out.withheld == {"g": Reason.PUSH_FILTER_DISTRIBUTION}


def test_not_before_keeps_old_events_back():
    e = event(3, attr("x"), timestamp=50)
    assert outbound(e, origin_holding(e), peer(B, push=SyncFilter(not_before=60)), NODE_A).reason \
        is Reason.PUSH_FILTER_AGE


def test_pull_filter_applies_on_the_receiving_side_with_pull_reasons():
    e = event(3, attr("x", type="md5"), attr("y"))
    inn = inbound(e, {"ev": 3, "x": 3, "y": 3}, peer(A, pull=SyncFilter(types_exclude=("md5",))), NODE_B)
    assert inn.withheld == {"x": Reason.PULL_FILTER_TYPE}


# --- 5. never back to the peer it came from -----------------------------------------------------

def test_never_back_to_the_peer_it_came_from():
    e = event(3, attr("x"))
    at_b, _ = hop(e, origin_holding(e), NODE_A, NODE_B, peer(B), peer(A))
    assert outbound(e, at_b, peer(A), NODE_B).reason is Reason.FROM_PEER
    assert outbound(e, at_b, peer(C), NODE_B).allowed


def test_an_element_that_came_from_the_peer_is_withheld_from_it_as_from_peer():
    # the header came by another path, one element from this peer: the element is not sent back,
    # and the audit log and the metrics say why
    e = event(3, attr("x"), attr("y"))
    held = Holding({"ev": 3, "x": 3, "y": 3}, {"ev": frozenset({C}), "x": frozenset({A}), "y": frozenset({C})})
    out = outbound(e, held, peer(A), NODE_B)
    assert out.allowed and "x" not in out.levels and "y" in out.levels
    assert out.withheld == {"x": Reason.FROM_PEER}


def test_a_header_from_another_path_is_sent_to_the_peer_every_element_came_from():
    # The peer gave every element, a newer header came by another path: the peer is offered that
    # header alone (it holds the elements), not refused as if the whole event had come from it.
    e = event(3, attr("x"), attr("y"))
    held = Holding({"ev": 3, "x": 3, "y": 3}, {"ev": frozenset({C}), "x": frozenset({A}), "y": frozenset({A})})
    out = outbound(e, held, peer(A), NODE_B)
    assert out.allowed and dict(out.levels) == {"ev": 3}
    assert out.withheld == {"x": Reason.FROM_PEER, "y": Reason.FROM_PEER}
    (many,) = outbound_many(e, held, [peer(A)], NODE_B).values()
    assert many == out
    # and an event whose header and elements all came from the peer is not sent back at all
    back = Holding({"ev": 3, "x": 3, "y": 3}, {u: frozenset({A}) for u in ("ev", "x", "y")})
    assert outbound(e, back, peer(A), NODE_B).reason is Reason.FROM_PEER
    # while an element the peer did not give goes to it with the header it gave
    mixed = Holding({"ev": 3, "x": 3, "y": 3}, {"ev": frozenset({A}), "x": frozenset({A}), "y": frozenset({C})})
    out = outbound(e, mixed, peer(A), NODE_B)
    assert out.allowed and dict(out.levels) == {"ev": 3, "y": 3}


# --- inbound ------------------------------------------------------------------------------------

@pytest.mark.parametrize("facts,expected", [
    ({}, Reason.ALLOWED),
    ({"well_formed": False}, Reason.MALFORMED),
    ({"within_limits": False}, Reason.TOO_LARGE),
    ({"signature_valid": False}, Reason.BAD_SIGNATURE),
    ({"digests_valid": False}, Reason.BAD_DIGEST),
    ({"author_known": False}, Reason.UNKNOWN_AUTHOR),
])
def test_inbound_step_1_reasons(facts, expected):
    assert check_received(**facts) is expected


def test_a_sender_cannot_claim_more_than_the_author_signed():
    e = event(1, attr("x", distribution=1))
    inn = inbound(e, {"ev": 3, "x": 3}, peer(A), NODE_B)
    assert inn.levels == {"ev": 0, "x": 0}  # level 1 arrives as 0, whatever the sender offers


def test_level_0_data_offered_by_a_peer_is_refused():
    e = event(0, attr("x"))
    assert inbound(e, {"ev": 0, "x": 0}, peer(A), NODE_B).reason is Reason.HOP_BUDGET
    internal = PeerPolicy("b2", B, PeerMode.INTERNAL, OPEN, OPEN)
    assert inbound(e, {"ev": 0, "x": 0}, internal, NODE_B).levels == {"ev": 0, "x": 0}


def test_a_level_2_item_has_spent_a_hop_on_arrival_whatever_the_sender_says():
    e = event(2, attr("x"))
    assert inbound(e, {"ev": 2, "x": 2}, peer(A), NODE_B).levels == {"ev": 1, "x": 1}


def test_blocklists_refuse_events_and_orgs():
    e = event(3, attr("x"))
    assert inbound(e, {"ev": 3}, peer(A), replace(NODE_B, blocked_events=frozenset({"ev"}))).reason \
        is Reason.BLOCKLIST_EVENT
    assert inbound(e, {"ev": 3}, peer(A), replace(NODE_B, blocked_orgs=frozenset({A}))).reason \
        is Reason.BLOCKLIST_ORG


def test_an_older_revision_is_refused():
    e = event(3, attr("x"), timestamp=100)
    assert inbound(e, {"ev": 3, "x": 3}, peer(A), NODE_B, held_timestamp=200).reason is Reason.OLDER
    assert inbound(e, {"ev": 3, "x": 3}, peer(A), NODE_B, held_timestamp=100).allowed


def test_a_record_arriving_by_several_paths_is_held_at_the_highest_level():
    e = event(2, attr("x"))
    far = merge(None, inbound(e, {"ev": 0, "x": 0}, peer(C), NODE_B), C)  # two hops away: held as 0
    near = merge(far, inbound(e, {"ev": 1, "x": 1}, peer(A), NODE_B), A)  # direct: held as 1
    assert far.levels == {"ev": 0, "x": 0} and near.levels == {"ev": 1, "x": 1}
    assert merge(near, inbound(e, {"ev": 0, "x": 0}, peer(C), NODE_B), C).levels == {"ev": 1, "x": 1}


def test_event_view_reads_the_model_bodies():
    header = {"uuid": "e1", "Orgc": {"uuid": A, "name": "Org A"}, "distribution": 4,
              "sharing_group_uuid": SG, "published": True, "timestamp": 5, "Tag": [{"name": "TLP:Amber"}]}
    bodies = [{"uuid": "a1", "type": "md5", "value": "x", "distribution": 5, "to_ids": True, "Tag": []},
              {"uuid": "o1", "name": "file", "meta-category": "file", "distribution": 1},
              {"uuid": "r1", "object_uuid": "o1", "referenced_uuid": "a1", "relationship_type": "rel"}]
    view = event_view(header, bodies)
    assert view.tags == frozenset({"tlp:amber"}) and view.sharing_group == SG
    assert [e.kind for e in view.elements] == ["attribute", "object", "reference"]
    assert authored_levels(view) == {"e1": 4, "a1": 4, "o1": 1, "r1": 1}


def test_outbound_many_decides_as_outbound_does_for_each_peer():
    obj = ElementView(uuid="o", kind="object", distribution=5, template="file")
    e = event(3, attr("x", tags=frozenset({"tlp:red"})), attr("y", to_ids=True), obj,
              attr("m", object_uuid="o", distribution=4, sharing_group=SG), attr("z", distribution=1))
    holding = merge(None, inbound(e, {"ev": 3, "x": 3, "y": 3, "o": 3, "m": 4, "z": 1}, peer(A), NODE_B), A)
    peers = [peer(A), peer(C), PeerPolicy("c2", C), peer("org-d", PeerMode.PUSH_ONLY, push=SyncFilter(to_ids_only=True)),
             peer("org-e", PeerMode.PULL_ONLY), PeerPolicy("b2", B, PeerMode.INTERNAL, OPEN, OPEN)]
    many = outbound_many(e, holding, peers, NODE_B)
    assert many == {p.name: outbound(e, holding, p, NODE_B) for p in peers}
    assert many[A].reason is Reason.FROM_PEER and many["c2"].withheld["x"] is Reason.PUSH_FILTER_TLP
