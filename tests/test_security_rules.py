"""Rules that mutation testing (tools/mutants.py) found unpinned: each test is named after the rule it
pins and fails when that rule is broken. Table rules are called directly (policy/ is pure); see
tools/mutants-report.md for the mutants each test kills."""
from __future__ import annotations

import pytest

from fedmisp.model.org import OrgClaim
from fedmisp.policy.config import MAX_FILTER_ENTRIES, parse_filter
from fedmisp.policy.model import SharingGroup
from fedmisp.policy.orgs import KeyState, check_org_record, signed_while_current
from fedmisp.policy.reasons import Reason
from fedmisp.policy.sharing_groups import apply_revision, check_revision

ORG, OTHER = "org-a", "org-b"
KEY, NEW_KEY = b"k" * 32, b"n" * 32
UNKNOWN = KeyState()
CURRENT = KeyState(org=ORG)
RETIRED = KeyState(org=ORG, retired_at=100, successor=NEW_KEY)


def introduction(voucher: bytes | None = None) -> OrgClaim:
    return OrgClaim(uuid=ORG, name="Org A", key=KEY, previous=None, voucher=voucher)


def rotation() -> OrgClaim:
    return OrgClaim(uuid=ORG, name="Org A", key=NEW_KEY, previous=KEY)


# --- policy/orgs.py: introductions and rotations (decision 0013, 0019) -------------------------------

@pytest.mark.parametrize("voucher, pinned, expected", [
    (None, False, Reason.ORG_KEY_NOT_VOUCHED),
    (None, True, Reason.ALLOWED),  # the operator pinned the key to the org
    (CURRENT, False, Reason.ALLOWED),  # vouched by a current key of the org
    (KeyState(org=OTHER), False, Reason.ORG_KEY_NOT_VOUCHED),  # vouched by another org's key
    (RETIRED, False, Reason.ORG_KEY_NOT_VOUCHED),  # vouched by a retired key of the org
    (UNKNOWN, False, Reason.ORG_KEY_NOT_VOUCHED),  # vouched by a key nobody knows
])
def test_rule_4_a_known_org_gets_a_further_key_only_vouched_by_a_current_key_of_it_or_pinned(voucher, pinned, expected):
    assert check_org_record(introduction(), UNKNOWN, UNKNOWN, org_known=True, voucher=voucher, pinned=pinned) is expected


def test_rule_1_an_unknown_key_of_an_unknown_org_is_introduced_without_a_vouch():
    assert check_org_record(introduction(), UNKNOWN, UNKNOWN) is Reason.ALLOWED
    # a vouch is not asked of an org nobody knows yet, whatever it is
    assert check_org_record(introduction(), UNKNOWN, UNKNOWN, voucher=KeyState(org=OTHER)) is Reason.ALLOWED


@pytest.mark.parametrize("author, expected", [
    (CURRENT, Reason.ALLOWED),  # the same introduction again
    (KeyState(org=OTHER), Reason.ORG_KEY_CONFLICT),  # it cannot move a key to another org
    (RETIRED, Reason.ORG_KEY_RETIRED),  # nor bring back a retired key
    (KeyState(org=OTHER, retired_at=5), Reason.ORG_KEY_RETIRED),
])
def test_rule_1_an_introduction_never_moves_a_known_key_nor_revives_a_retired_one(author, expected):
    assert check_org_record(introduction(), author, UNKNOWN) is expected
    # what the org is known for does not change the answer for a key already known
    assert check_org_record(introduction(), author, UNKNOWN, org_known=True) is expected


@pytest.mark.parametrize("author, expected", [
    (CURRENT, Reason.ALLOWED),
    (RETIRED, Reason.ORG_KEY_NOT_CURRENT),  # a retired key cannot rotate again
    (KeyState(org=OTHER), Reason.ORG_KEY_NOT_CURRENT),  # another org's key
    (UNKNOWN, Reason.ORG_KEY_NOT_CURRENT),  # a forged announcement
])
def test_rule_2_a_rotation_is_signed_by_a_current_key_of_the_org_it_names(author, expected):
    assert check_org_record(rotation(), author, UNKNOWN) is expected


@pytest.mark.parametrize("new_key", [CURRENT, KeyState(org=OTHER), RETIRED])
def test_rule_3_a_rotation_never_takes_over_a_key_already_in_use(new_key):
    assert check_org_record(rotation(), CURRENT, new_key) is Reason.ORG_KEY_CONFLICT


@pytest.mark.parametrize("state, created, accepted", [
    (CURRENT, 10**9, True),
    (RETIRED, 99, True),
    (RETIRED, 100, True),  # signed at the rotation itself
    (RETIRED, 101, False),  # after the rotation: a stolen key's record
])
def test_a_retired_keys_record_is_accepted_only_if_signed_before_its_rotation(state, created, accepted):
    assert signed_while_current(state, created) is accepted


# --- policy/sharing_groups.py: revisions (docs/policy.md's sharing group rules) ---------------------

GROUP = SharingGroup(uuid="sg", name="LE", owner=ORG, revision=1, members={ORG: False, OTHER: True, "org-c": False})


def revised(**changes) -> SharingGroup:
    fields = dict(uuid=GROUP.uuid, name=GROUP.name, owner=GROUP.owner, revision=GROUP.revision + 1,
                  members=dict(GROUP.members), releasability=GROUP.releasability, description=GROUP.description,
                  deleted=GROUP.deleted)
    fields.update(changes)
    return SharingGroup(**fields)


def test_sg_rule_1_the_first_revision_is_signed_by_its_owner_who_is_a_member():
    first = revised(revision=1)
    assert check_revision(None, first, ORG) is Reason.ALLOWED
    assert check_revision(None, first, OTHER) is Reason.SG_REVISION_AUTHOR
    assert check_revision(None, revised(revision=1, members={OTHER: True}), ORG) is Reason.SG_REVISION_OWNER_REMOVED


@pytest.mark.parametrize("change", [
    dict(name="renamed"), dict(releasability="anyone"), dict(description="changed"), dict(deleted=True),
    dict(members={ORG: False, OTHER: True}),  # removes a non-owner member
    dict(members={ORG: False, OTHER: True, "org-c": True}),  # changes someone's extend flag
    dict(members={ORG: False, OTHER: False, "org-c": False}),  # even its own
])
def test_sg_rule_5_an_extend_member_may_add_members_and_do_nothing_else(change):
    assert check_revision(GROUP, revised(**change), OTHER) is Reason.SG_REVISION_EXTEND_REMOVES
    # the owner may change any of it (rule 4)
    assert check_revision(GROUP, revised(**change), ORG) is Reason.ALLOWED


def test_sg_rule_5_an_extend_member_adding_a_member_is_allowed_and_applied():
    groups = {GROUP.uuid: GROUP}
    added = revised(members={**GROUP.members, "org-d": False})
    assert apply_revision(groups, added, OTHER) is Reason.ALLOWED
    assert groups[GROUP.uuid] is added
    # a member without extend may not
    assert check_revision(GROUP, added, "org-c") is Reason.SG_REVISION_AUTHOR
    assert check_revision(GROUP, added, "org-z") is Reason.SG_REVISION_AUTHOR


def test_sg_a_refused_revision_is_not_applied():
    groups = {GROUP.uuid: GROUP}
    assert apply_revision(groups, revised(name="renamed"), OTHER) is Reason.SG_REVISION_EXTEND_REMOVES
    assert groups[GROUP.uuid] is GROUP
    assert apply_revision(groups, revised(revision=1, name="same number"), ORG) is Reason.SG_REVISION_NOT_NEWER
    assert groups[GROUP.uuid] is GROUP


def test_sg_rule_3_the_owner_never_changes_and_is_never_removed():
    assert check_revision(GROUP, revised(owner=OTHER), ORG) is Reason.SG_REVISION_OWNER_CHANGED
    assert check_revision(GROUP, revised(members={OTHER: True}), ORG) is Reason.SG_REVISION_OWNER_REMOVED


# --- policy/config.py: filters from TOML --------------------------------------------------------------

def parsed(table: dict, push: bool = True):
    problems: list[str] = []
    return parse_filter(table, "peer.x.push", problems, push=push), problems


@pytest.mark.parametrize("name", ["tags_include", "tags_exclude", "orgs_include", "orgs_exclude", "types_exclude",
                                  "templates_exclude"])
def test_every_filter_list_is_read_and_checked_as_a_list(name):
    f, problems = parsed({name: [" osint:* ", "x"]})
    assert problems == [] and getattr(f, name) == ("osint:*", "x")
    _, problems = parsed({name: "tlp:red"})
    assert problems and problems[0].startswith(f"peer.x.push.{name}:")
    _, problems = parsed({name: ["ok", "  "]})
    assert problems and "non-empty strings" in problems[0]


def test_a_filter_list_holds_at_most_max_filter_entries():
    _, problems = parsed({"tags_exclude": [f"t{i}" for i in range(MAX_FILTER_ENTRIES)]})
    assert problems == []
    _, problems = parsed({"tags_exclude": [f"t{i}" for i in range(MAX_FILTER_ENTRIES + 1)]})
    assert problems and f"at most {MAX_FILTER_ENTRIES}" in problems[0]


@pytest.mark.parametrize("key, value, expected", [
    ("tlp_ceiling", "amber", "tlp:amber"), ("tlp_ceiling", "TLP:Green", "tlp:green"), ("tlp_ceiling", "none", None),
    ("tlp_ceiling", "NONE", None), ("pap_ceiling", "none", None), ("pap_ceiling", "pap:none", None),
    ("pap_ceiling", "red", "pap:red"), ("pap_ceiling", "pap:white", "pap:white"),
])
def test_a_ceiling_is_read_with_or_without_its_prefix(key, value, expected):
    f, problems = parsed({key: value})
    assert problems == [] and getattr(f, key) == expected


@pytest.mark.parametrize("key, value", [
    ("tlp_ceiling", "pap:red"), ("pap_ceiling", "tlp:red"), ("tlp_ceiling", 3), ("tlp_ceiling", "crimson"),
    ("to_ids_only", 1), ("max_distribution", True), ("max_distribution", 5), ("max_distribution", -1),
    ("max_distribution", "4"), ("not_before", -1), ("not_before", False), ("not_before", "yesterday"),
])
def test_a_bad_filter_value_is_refused_naming_the_field(key, value):
    _, problems = parsed({key: value})
    assert len(problems) == 1 and problems[0].startswith(f"peer.x.push.{key}:")


@pytest.mark.parametrize("key, value", [("max_distribution", 0), ("max_distribution", 4), ("not_before", 0),
                                        ("to_ids_only", True), ("to_ids_only", False)])
def test_a_good_filter_value_is_kept(key, value):
    f, problems = parsed({key: value})
    assert problems == [] and getattr(f, key) == value


# --- policy/pipeline.py: step 3, sharing groups, both ways -----------------------------------------

from fedmisp.policy.model import ElementView, EventView, Holding, NodeState, PeerMode, PeerPolicy, SyncFilter  # noqa: E402
from fedmisp.policy.inbound import inbound  # noqa: E402
from fedmisp.policy.outbound import outbound  # noqa: E402

SG_A, SG_B, SG_C = "org-a", "org-b", "org-c"  # A owns the group, B a member, C not
SG_GROUP = SharingGroup(uuid="sg-1", name="LE-CSIRT", owner=SG_A, revision=1, members={SG_A: True, SG_B: False})


def sg_node(org: str, *, knows_group: bool = True) -> NodeState:
    return NodeState(org_uuid=org, sharing_groups={SG_GROUP.uuid: SG_GROUP} if knows_group else {})


def sg_peer(org: str) -> PeerPolicy:
    return PeerPolicy(name=org, org_uuid=org, mode=PeerMode.FULL, push=SyncFilter(), pull=SyncFilter())


def sg_event() -> EventView:
    element = ElementView(uuid="x", kind="attribute", distribution=5, type="ip-dst")
    return EventView(uuid="ev", orgc_uuid=SG_A, orgc_name="Org A", distribution=4, sharing_group=SG_GROUP.uuid,
                     published=True, timestamp=100, tags=frozenset(), elements=(element,))


@pytest.mark.parametrize("receiver, sender, expected", [
    (SG_B, SG_A, Reason.ALLOWED),
    (SG_C, SG_A, Reason.SG_NOT_MEMBER),  # this node is not a member: it never stores the group's data
    (SG_B, SG_C, Reason.SG_SENDER_NOT_MEMBER),  # the sender is not a member: it should never have had it
])
def test_step_3_inbound_a_sharing_group_event_is_kept_only_by_a_member_from_a_member(receiver, sender, expected):
    assert inbound(sg_event(), {"ev": 4, "x": 4}, sg_peer(sender), sg_node(receiver)).reason is expected


def test_step_3_inbound_a_sharing_group_this_node_does_not_know_is_refused():
    assert inbound(sg_event(), {"ev": 4, "x": 4}, sg_peer(SG_A), sg_node(SG_B, knows_group=False)).reason \
        is Reason.SG_UNKNOWN


@pytest.mark.parametrize("holder, receiver, expected", [
    (SG_A, SG_B, Reason.ALLOWED),
    (SG_A, SG_C, Reason.SG_NOT_MEMBER),  # the peer is not a member
    (SG_C, SG_B, Reason.SG_RELAY_NOT_MEMBER),  # this node is not a member: it never relays the group's data
])
def test_step_3_outbound_a_sharing_group_event_goes_only_from_a_member_to_a_member(holder, receiver, expected):
    holding = Holding(levels={"ev": 4, "x": 4})
    assert outbound(sg_event(), holding, sg_peer(receiver), sg_node(holder)).reason is expected


# --- policy/pipeline.py: merge -----------------------------------------------------------------------

from fedmisp.policy.pipeline import merge  # noqa: E402


def test_merging_a_refused_event_keeps_what_is_held_unchanged():
    held = Holding(levels={"ev": 3, "x": 3}, sources={"ev": frozenset({"p"}), "x": frozenset({"p"})})
    refused = inbound(sg_event(), {"ev": 4, "x": 4}, sg_peer(SG_A), sg_node(SG_C))
    assert not refused.allowed
    assert merge(held, refused, SG_A) is held
    with pytest.raises(ValueError):
        merge(None, refused, SG_A)  # nothing to store and nothing held: a caller's bug, not a silent no-op


# --- gossip/auth.py: who is authenticated (docs/gossip.md, "Authentication") ------------------------

from nacl.signing import SigningKey  # noqa: E402

from fedmisp.gossip import auth  # noqa: E402
from fedmisp.model.identity import Identity  # noqa: E402

ALICE = Identity(SigningKey(b"\x01" * 32))
MALLORY = Identity(SigningKey(b"\x02" * 32))
NOW = 1_700_000_000
NONCE = b"\x07" * auth.NONCE_BYTES


def signed(identity: Identity = ALICE, *, at: int = NOW, nonce: bytes = NONCE, method: str = "POST",
           path: str = "/fed/v1/changes", body: bytes = b"body") -> str:
    return auth.sign_request(identity, method, path, body, now=at, nonce=nonce)


def verified(header: str | None, *, now: int = NOW, replays: auth.ReplayCache | None = None,
             method: str = "POST", path: str = "/fed/v1/changes", body: bytes = b"body") -> auth.Authenticated:
    return auth.verify_request(header, method, path, body, {ALICE.public_key: "alice"},
                               replays or auth.ReplayCache(), now=now)


def refusal(header: str | None, **kw) -> str:
    with pytest.raises(auth.AuthError) as caught:
        verified(header, **kw)
    return caught.value.reason


def test_a_request_header_is_signed_over_method_path_time_nonce_and_body_as_the_wire_format_says():
    # a known answer: a change to what is signed, or how, stops old and new nodes understanding each other
    key, timestamp, nonce, signature = signed().split(".")
    assert (timestamp, nonce) == (str(NOW), "BwcHBwcHBwcHBwcHBwcHBw")
    expected = ALICE.sign(auth.canonical.pack([b"fedmisp-peer-request-v1", "POST", "/fed/v1/changes", NOW, NONCE,
                                               auth.blake2b(b"body", digest_size=32).digest()]))
    assert auth._unb64(signature) == expected
    assert signed(method="post") == signed(method="POST")  # the method is signed upper-case


@pytest.mark.parametrize("skew, accepted", [(0, True), (300, True), (-300, True), (301, False), (-301, False)])
def test_a_request_is_accepted_only_within_max_clock_skew_of_the_receivers_clock(skew, accepted):
    header = signed(at=NOW + skew)
    if accepted:
        assert verified(header) == auth.Authenticated("alice", ALICE.public_key)
    else:
        assert refusal(header) == "stale"


@pytest.mark.parametrize("header, reason", [
    (None, "missing"), ("", "missing"), ("a.b.c", "malformed"), ("a.b.c.d.e", "malformed"),
    (signed().replace(f".{NOW}.", ".soon."), "malformed"),
    (signed(MALLORY), "unknown-key"),
    (signed(nonce=b"\x07" * (auth.NONCE_BYTES - 1)), "malformed"),  # a short nonce
    (signed(nonce=b"\x07" * (auth.NONCE_BYTES + 1)), "malformed"),
    (signed().rsplit(".", 1)[0] + "." + auth._b64(b"\x00" * 63), "malformed"),  # a short signature
    (signed().rsplit(".", 1)[0] + "." + auth._b64(b"\x00" * 64), "bad-signature"),
])
def test_a_request_header_is_refused_with_its_reason(header, reason):
    assert refusal(header) == reason


@pytest.mark.parametrize("change", [dict(method="GET"), dict(path="/fed/v1/bodies"), dict(body=b"other")])
def test_a_request_changed_after_signing_is_refused(change):
    assert refusal(signed(), **change) == "bad-signature"


def test_a_signature_by_another_key_in_a_pinned_keys_name_is_refused():
    key = signed().split(".")[0]
    forged = signed(MALLORY).split(".")
    assert refusal(".".join([key, *forged[1:]])) == "bad-signature"


def test_a_nonce_is_accepted_once_per_key_within_the_window():
    replays = auth.ReplayCache()
    verified(signed(), replays=replays)
    assert refusal(signed(), replays=replays) == "replay"
    # a nonce seen more than two windows ago is forgotten (a request that old is stale anyway)
    later = NOW + 2 * auth.MAX_CLOCK_SKEW + 1
    assert replays.check_and_remember(ALICE.public_key, NONCE, later, later)
    assert not replays.check_and_remember(ALICE.public_key, NONCE, later, later)
    # another key's same nonce is another request
    assert replays.check_and_remember(MALLORY.public_key, NONCE, later, later)


def test_a_full_replay_window_refuses_new_nonces_rather_than_forgetting_one_that_could_be_replayed():
    replays = auth.ReplayCache(per_key=2)
    for n in (b"1", b"2"):
        assert replays.check_and_remember(ALICE.public_key, n, NOW, NOW)
    with pytest.raises(auth.AuthError) as caught:
        replays.check(ALICE.public_key, b"3", NOW)
    assert caught.value.reason == "too-many"
    for n in (b"1", b"2"):  # nothing was forgotten to make room: both are still refused as replays
        with pytest.raises(auth.AuthError) as caught:
            replays.check(ALICE.public_key, n, NOW)
        assert caught.value.reason == "replay"
    assert replays.check_and_remember(MALLORY.public_key, b"3", NOW, NOW)  # another key has its own window
    later = NOW + auth.MAX_CLOCK_SKEW + 1  # once the window has passed, the key is served again
    assert replays.check_and_remember(ALICE.public_key, b"3", later, later)
    assert replays.remembered(ALICE.public_key) == 1


def test_a_body_opens_only_between_the_two_keys_and_is_refused_as_bad_box_otherwise():
    sealed = auth.seal_body(ALICE, MALLORY.public_key, b"secret")
    assert auth.open_body(MALLORY, ALICE.public_key, sealed) == b"secret"
    third = Identity(SigningKey(b"\x03" * 32))
    for who, key, box in ((third, ALICE.public_key, sealed), (MALLORY, ALICE.public_key, sealed[:-1] + b"\x00"),
                          (MALLORY, ALICE.public_key, b"short")):
        with pytest.raises(auth.AuthError) as caught:
            auth.open_body(who, key, box)
        assert caught.value.reason == "bad-box"


# --- model/received.py: the shape of what arrives from a peer (received_problem) ------------------------

from fedmisp.model.misp import MAX_TIMESTAMP  # noqa: E402
from fedmisp.model.received import received_problem  # noqa: E402

U1, U2 = "11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222"
HEADER = {"uuid": U1, "info": "x", "distribution": 1, "threat_level_id": 2, "analysis": 0, "timestamp": 5,
          "publish_timestamp": 5, "Orgc": {"uuid": U2, "name": "Org"}, "Tag": [{"name": "tlp:green"}]}
ATTRIBUTE = {"uuid": U1, "type": "ip-dst", "value": "1.2.3.4", "distribution": 5, "timestamp": 5, "to_ids": True}
OBJECT = {"uuid": U1, "name": "file", "distribution": 5, "timestamp": 5}
REFERENCE = {"uuid": U1, "object_uuid": U1, "referenced_uuid": U2, "relationship_type": "rel", "timestamp": 5}


def test_received_well_formed_bodies_pass():
    assert received_problem(HEADER, header=True) is None
    for body in (ATTRIBUTE, OBJECT, REFERENCE):
        assert received_problem(body) is None


@pytest.mark.parametrize("field, good, bad", [
    ("timestamp", [0, MAX_TIMESTAMP], [-1, MAX_TIMESTAMP + 1, "5", 5.0, True]),
    ("publish_timestamp", [0, MAX_TIMESTAMP], [-1, MAX_TIMESTAMP + 1]),
    ("distribution", [0, 4], [-1, 5, 6, "1"]),  # 5 (inherit) is no level for an event
    ("threat_level_id", [1, 4], [0, 5]),
    ("analysis", [0, 2], [-1, 3]),
    ("published", [True, False], [1, "true"]),
    ("info", ["", "x"], [1, b"x", ["x"]]),
    ("Tag", [[], [{"name": "a"}]], [{"name": "a"}, {}, "", ["a"], [{"name": 1}], [{}]]),  # ({} and "": not lists, though empty)
    ("uuid", [U2, U2.upper()], ["not-a-uuid", U2 + "0", None, 1]),
    ("Orgc", [{"uuid": U1, "name": ""}], [None, {"uuid": U1}, {"name": "x"}, {"uuid": "x", "name": "x"}, "Org"]),
    ("extra", [{}], [[], "x"]),
])
def test_received_event_header_fields_are_checked_against_their_range(field, good, bad):
    for value in good:
        assert received_problem({**HEADER, field: value}, header=True) is None, value
    for value in bad:
        problem = received_problem({**HEADER, field: value}, header=True)
        assert problem is not None and problem.startswith(f"event.{field}"), value


@pytest.mark.parametrize("field", ["info", "distribution", "threat_level_id", "analysis", "timestamp",
                                   "publish_timestamp", "Orgc", "uuid"])
def test_received_event_header_without_a_field_it_must_carry_is_refused(field):
    body = {k: v for k, v in HEADER.items() if k != field}
    assert received_problem(body, header=True).startswith(f"event.{field}")


@pytest.mark.parametrize("body, missing", [
    (ATTRIBUTE, ("type", "value", "distribution", "timestamp")),
    (OBJECT, ("name", "distribution", "timestamp")),
    (REFERENCE, ("object_uuid", "referenced_uuid", "timestamp")),
])
def test_received_element_without_a_field_its_kind_must_carry_is_refused(body, missing):
    for field in missing:
        rest = {k: v for k, v in body.items() if k != field}
        if field in ("type", "value"):
            rest = {**rest, "type" if field == "value" else "value": "x"}
        assert received_problem(rest) == f"element.{field}: missing"


@pytest.mark.parametrize("field, good, bad", [
    ("distribution", [0, 5], [-1, 6]),  # an element may inherit (5)
    ("to_ids", [False], [0, "yes"]),
    ("value", ["x"], [1, 1.5]),
    ("timestamp", [0], [-1, True]),
])
def test_received_attribute_fields_are_checked_against_their_range(field, good, bad):
    for value in good:
        assert received_problem({**ATTRIBUTE, field: value}) is None, value
    for value in bad:
        problem = received_problem({**ATTRIBUTE, field: value})
        assert problem is not None and problem.startswith(f"element.{field}"), value


def test_received_body_that_is_not_a_map_is_refused():
    for body in ([], "x", None, 1):
        assert received_problem(body) == "element: expected a map"
        assert received_problem(body, header=True) == "event: expected a map"


# --- gossip/session.py: what a pull takes ([blocklist] keys) ------------------------------------------

from fedmisp.gossip.session import PullSession  # noqa: E402
from fedmisp.model.org import introduction as org_introduction, vouch  # noqa: E402

from test_gossip_session import FakeLocal, FakePeer, run as run_pull  # noqa: E402


@pytest.mark.parametrize("blocked", ["voucher", "key", "nobody"])
def test_a_pull_refuses_an_introduction_whose_key_or_voucher_is_blocked(blocked):
    voucher, newcomer = ALICE, Identity(SigningKey(b"\x04" * 32))
    record = org_introduction(newcomer, "Org A", U1, 5, (voucher.public_key, vouch(voucher, U1, newcomer.public_key)))
    local = FakeLocal(known=(voucher.public_key,))
    local.blocked = {"voucher": {voucher.public_key}, "key": {newcomer.public_key}, "nobody": set()}[blocked]
    batches, _ = run_pull(PullSession("p", 0), FakePeer([{"seq": 1, "record": record.wire()}], {}), local)
    refused = [(r.seq, r.reason) for b in batches for r in b.refused]
    taken = [w for b in batches for w in b.records]
    if blocked == "nobody":
        assert refused == [] and taken == [record.wire()]
    else:
        assert refused == [(1, "key-blocked")] and taken == []


# --- policy/model.py: how an element body reads as the policy's view ----------------------------------

from fedmisp.policy.model import INHERIT, element_view  # noqa: E402


@pytest.mark.parametrize("body", [
    {**ATTRIBUTE, "object_uuid": U2, "sharing_group_uuid": "sg-1", "Tag": [{"name": "TLP:RED"}]},
    {**REFERENCE, "sharing_group_uuid": "sg-1", "Tag": [{"name": "TLP:RED"}]},
    {**OBJECT, "object_uuid": U2, "sharing_group_uuid": "sg-1", "Tag": [{"name": "TLP:RED"}]},
])
def test_an_element_view_keeps_what_the_rules_decide_by_its_object_sharing_group_and_tags(body):
    # an attribute's object decides its level and sharing group (an element passes only with its object)
    view = element_view(body)
    assert view.uuid == U1 and view.sharing_group == "sg-1" and view.tags == frozenset({"tlp:red"})
    assert view.object_uuid == body.get("object_uuid")
    assert view.distribution == body.get("distribution", INHERIT)
