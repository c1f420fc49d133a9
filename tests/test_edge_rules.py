"""Edges of the security rules, each pinned through the peer protocol: a real pull over /fed/v1
(requests signed and boxed by a configured peer's key, the real PeerProtocol handlers serving a
real node's store), so what is checked is what a peer can do. Issue 21 items 6, 7, 8, 10 and 11,
and the rules of docs/policy.md that no test failed without: event-not-held, the default TLP
ceiling and "none", inbound rule 2 for drafts and removed members, and a level raised by a second
path being passed on (for a revision and for its retraction)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from factories import event
from federation import make_federation
from fedmisp.gossip import sharing_groups as sg
from fedmisp.policy.holding import unpack_holding
from fedmisp.model.identity import Identity
from fedmisp.model.misp import ImportDefaults, parse_event
from fedmisp.model.org import introduction, rotation
from fedmisp.model.records import KIND_SHARING_GROUP, KIND_SIGHTINGS, seal
from fedmisp.model.revision import sign_event
from fedmisp.node.home import Node
from fedmisp.node.importer import import_paths
from fedmisp.policy.model import SharingGroup
from peer_protocol import Decisions, hostile_log, pull_over_http


def _pull(puller: Node, served: Node, craft=None) -> Decisions:
    decisions = Decisions()
    asyncio.run(pull_over_http(puller, served, decisions, craft))
    return decisions


def _offering(*changes: dict):
    """A craft (peer_protocol.py) that adds `changes` to the replies a node's own policy computed:
    what a hostile node offers that its policy withheld."""
    sent: set[int] = set()

    def craft(reply: dict) -> dict:
        extra = [c for c in changes if c["seq"] <= reply["last_seq"] and c["seq"] not in sent]
        sent.update(c["seq"] for c in extra)
        return {**reply, "changes": sorted(reply["changes"] + extra, key=lambda c: c["seq"])}
    return craft


def _import(node: Node, tmp_path: Path, misp: dict) -> str:
    path = tmp_path / f"{misp['Event']['uuid']}.json"
    path.write_text(json.dumps(misp))
    import_paths(node, [path], workers=0)
    return misp["Event"]["uuid"]


def _signed(node: Node, misp: dict, signer: Identity | None = None):
    """`misp` signed as a revision by `signer` (default: the node's key) for the node's organisation."""
    defaults = ImportDefaults(org_uuid=node.config.org_uuid, org_name=node.config.org_name)
    return sign_event(signer or node.identity, parse_event(misp["Event"], defaults))


def _close(nodes: dict[str, Node]) -> None:
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


# --- 10. a wildcard matches whole names ------------------------------------------------------------

def test_a_filter_wildcard_with_text_after_it_matches_only_names_ending_in_that_text(tmp_path: Path):
    """`*:red` in a push filter's NOT tags withholds an event tagged `ops:red`, never one tagged
    `tlp:red-team`: the pattern matches the whole tag name, as MISP's tag filters do (a tag rule is
    an SQL `Tag.name LIKE` pattern, app/Model/Tag.php findTagIdsByTagNames, which matches the whole
    name; `*` is fedmisp's spelling of LIKE's `%`)."""
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")],
                            {("a", "b"): {"push": {"tags_exclude": ["*:red", "%:secret"]}}})
    a, b = nodes["a"], nodes["b"]
    tagged = {}
    for seed, tag in enumerate(["ops:red", "tlp:red-team", "red", "ops:secret", "ops:secret-santa", "ops:redder"]):
        misp = event(seed=200 + seed, attributes=1, objects=0)
        misp["Event"]["Tag"] = [{"name": "tlp:green"}, {"name": tag}]
        tagged[tag] = _import(a, tmp_path, misp)
    decisions = _pull(b, a)
    held = set(b.store.event_uuids())
    assert {tag for tag, uuid in tagged.items() if uuid in held} == {"tlp:red-team", "red", "ops:secret-santa",
                                                                    "ops:redder"}
    assert decisions.refused("event") == []  # withheld by a's push filter: never offered at all
    _close(nodes)


# --- 6. a retired key signs nothing after its rotation ---------------------------------------------

def test_a_record_a_retired_key_signs_after_its_rotation_is_refused_as_unknown_author(tmp_path: Path):
    """a's organisation rotated from key `old` to `new` at time T (decision 0013). Whoever still
    holds `old` (a thief, a's forgotten node) serves b events signed by it: the one created before T
    is a's genuine past and is taken; the one created after T is refused as unknown-author, so the
    retired key cannot speak for a's organisation any more."""
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    a, b = nodes["a"], nodes["b"]
    old, new = a.identity, Identity.generate()
    rotated_at = 1_700_001_000
    assert a.store.write_records([rotation(old, new, a.config.org_name, a.config.org_uuid,
                                           created=rotated_at)]) == 1
    # a revision's `created` is its event's timestamp, the signer's word: one just before, one just after
    before = _signed(a, event(seed=61, attributes=2, objects=0, timestamp=rotated_at - 1), old)
    after = _signed(a, event(seed=62, attributes=2, objects=0, timestamp=rotated_at + 1), old)
    assert (before.record.created, after.record.created) == (rotated_at - 1, rotated_at + 1)
    hostile_log(a, events=[before, after])
    decisions = _pull(b, a)
    assert b.store.key_state(old.public_key).retired_at == rotated_at
    assert set(b.store.event_uuids()) == {before.uuid}
    assert decisions.refused("event") == ["unknown-author"]
    _close(nodes)


# --- 7. an introduction never moves a key to another organisation ----------------------------------

def test_a_self_signed_introduction_never_moves_a_key_known_to_another_organisation(tmp_path: Path):
    """m's key signs for m's organisation at b. m then introduces the same key, self-signed, as
    another organisation's: one b has never heard of (nothing else would stop it: an unknown
    organisation's first key is taken on its own word) and a's, which b knows. Both are refused as
    org-key-conflict and the key still signs for m's organisation only: were it moved, m could sign
    as that organisation (its events' Orgc, its sharing groups' owner)."""
    nodes = make_federation(tmp_path, ["a", "b", "m"], [("a", "b"), ("b", "m")])
    a, b, m = nodes["a"], nodes["b"], nodes["m"]
    _pull(b, a)
    _pull(b, m)
    assert b.store.key_state(m.identity.public_key).org == m.config.org_uuid
    unknown_org = "0c0c0c0c-0000-4000-8000-00000000000c"
    hostile_log(m, records=[introduction(m.identity, "Org c", unknown_org, created=1_700_000_100),
                            introduction(m.identity, a.config.org_name, a.config.org_uuid, created=1_700_000_101)])
    decisions = _pull(b, m)
    assert decisions.refused("org") == ["org-key-conflict", "org-key-conflict"]
    assert b.store.key_state(m.identity.public_key).org == m.config.org_uuid
    assert b.store.org_for_key(m.identity.public_key) == m.config.org_uuid
    _close(nodes)


# --- 8. an extend member only adds members ---------------------------------------------------------

def test_an_extend_member_can_add_members_but_neither_remove_one_nor_change_an_extend_flag(tmp_path: Path):
    """a owns a sharing group with b, c (extend) and d. c signs revisions of it and serves them to
    b: one without d, one that makes b an extend member, one that adds e. b refuses the first two
    (sg-revision-extend-removes) and takes the third: the extend flag lets a member widen the group
    (MISP's "extend": add organisations), never cut someone out of the owner's audience nor hand out
    the right to extend; only the owner's revisions do that (docs/policy.md, Sharing groups)."""
    nodes = make_federation(tmp_path, ["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c")])
    a, b, c, d = (nodes[n] for n in "abcd")
    org_a, org_b, org_c, org_d = (n.config.org_uuid for n in (a, b, c, d))
    org_e = "0e0e0e0e-0000-4000-8000-00000000000e"
    group = sg.create(a.store, a.identity, org_a, "banks", {org_b: False, org_c: True, org_d: False})
    for puller in (b, c):
        _pull(puller, a)
    assert sg.from_record(b.store.sharing_group(group.uuid)) == group

    def by_c(revision: int, members: dict[str, bool]):
        revised = SharingGroup(group.uuid, group.name, org_a, revision, members, group.releasability)
        return seal(c.identity, KIND_SHARING_GROUP, sg.to_body(revised), created=1_700_000_000 + revision)

    without_d = {org: extend for org, extend in group.members.items() if org != org_d}
    b_extends = {**group.members, org_b: True}
    with_e = {**group.members, org_e: False}
    hostile_log(c, records=[by_c(2, without_d), by_c(3, b_extends), by_c(4, with_e)])
    decisions = _pull(b, c)
    assert decisions.refused("sharing-group") == ["sg-revision-extend-removes"] * 2
    held = sg.from_record(b.store.sharing_group(group.uuid))
    assert (held.revision, held.members) == (4, with_e)
    _close(nodes)


# --- 11. revisions with one timestamp: the same one everywhere ------------------------------------

def test_two_revisions_with_one_timestamp_end_as_the_same_revision_whatever_the_delivery_order(tmp_path: Path):
    """a signs two revisions of one event with the same timestamp (two edits within a second). b
    receives them from two relays in one order, c in the other: both keep the one with the higher
    record id (revisions are ordered by timestamp, then id: docs DESIGN), so the federation agrees
    on the event instead of each node keeping whichever came first or last."""
    nodes = make_federation(tmp_path, ["a", "x", "y", "b", "c"],
                            [("a", "b"), ("a", "c"), ("x", "b"), ("x", "c"), ("y", "b"), ("y", "c")])
    a, x, y, b, c = (nodes[n] for n in "axybc")
    misp = event(seed=111, attributes=2, objects=0)
    first = _signed(a, misp)
    misp["Event"]["info"] = "the same event, edited within the second"
    second = _signed(a, misp)
    assert first.timestamp == second.timestamp and first.uuid == second.uuid
    lower, higher = sorted((first, second), key=lambda s: s.record.id)
    hostile_log(x, events=[lower])  # each relay holds one of them
    hostile_log(y, events=[higher])
    for receiver, order in ((b, (x, y)), (c, (y, x))):
        _pull(receiver, a)  # a's key
        refused = [reason for relay in order for reason in _pull(receiver, relay).refused("event")]
        assert receiver.store.held(first.uuid).record_id == higher.record.id
        assert refused == ([] if order == (x, y) else ["older"])
    kept = [node.store.record(node.store.held(first.uuid).record_id).body for node in (b, c)]
    assert kept[0] == kept[1]
    _close(nodes)


# --- sightings follow their event (docs/policy.md: event-not-held) --------------------------------

def test_a_sighting_of_an_event_the_node_does_not_hold_is_not_kept(tmp_path: Path):
    """b's pull filter keeps a's tlp:amber events out. a serves b an amber event, which b refuses,
    and a sighting of it, which b must not keep either (event-not-held): sightings are kept where
    their event is; the sighting of the event b does hold is kept."""
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")],
                            {("b", "a"): {"pull": {"tags_exclude": ["tlp:amber"]}}})
    a, b = nodes["a"], nodes["b"]
    amber = event(seed=121, attributes=1, objects=0)  # (factories tag events tlp:amber)
    green = event(seed=122, attributes=1, objects=0)
    green["Event"]["Tag"] = [{"name": "tlp:green"}]
    for misp in (amber, green):
        _import(a, tmp_path, misp)
        sighting = {"Organisation": {"name": a.config.org_name, "uuid": a.config.org_uuid},
                    "attribute_uuid": misp["Event"]["Attribute"][0]["uuid"], "date_sighting": 1_700_000_600,
                    "source": "ids", "type": 0, "uuid": misp["Event"]["uuid"][:-4] + "5151"}
        a.store.write_records([seal(a.identity, KIND_SIGHTINGS,
                                    {"event_uuid": misp["Event"]["uuid"], "sightings": [sighting]})])
    decisions = _pull(b, a)
    assert decisions.refused("event") == ["pull-filter-tag"]
    assert decisions.refused("sightings") == ["event-not-held"]
    assert set(b.store.event_uuids()) == {green["Event"]["uuid"]}
    seen = [s["attribute_uuid"] for at in b.store.export_event(green["Event"]["uuid"])["Event"]["Attribute"]
            for s in at.get("Sighting", [])]
    assert seen == [green["Event"]["Attribute"][0]["uuid"]]
    _close(nodes)


# --- the push filter's default TLP ceiling, and "none" ---------------------------------------------

def test_tlp_red_goes_only_to_a_peer_whose_push_filter_lifts_the_ceiling_with_none(tmp_path: Path):
    """Push filters default to tlp_ceiling = "amber+strict" (docs/policy.md): a's tlp:red event
    reaches c, whose [peer.push] says tlp_ceiling = "none", and not b, which has no push filter."""
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("a", "c")],
                            {("a", "c"): {"push": {"tlp_ceiling": "none"}}})
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    red = event(seed=131, attributes=1, objects=0)
    red["Event"]["Tag"] = [{"name": "tlp:red"}]
    amber = event(seed=132, attributes=1, objects=0)
    _import(a, tmp_path, red)
    _import(a, tmp_path, amber)
    _pull(b, a)
    _pull(c, a)
    assert set(b.store.event_uuids()) == {amber["Event"]["uuid"]}
    assert set(c.store.event_uuids()) == {red["Event"]["uuid"], amber["Event"]["uuid"]}
    _close(nodes)


# --- inbound 2: the sender was allowed to send it ---------------------------------------------------

def test_an_unpublished_revision_a_peer_offers_is_refused_and_not_held(tmp_path: Path):
    """Only published events move (publishing is what shares): a's node offers b a draft its
    policy withheld; b refuses it as local-unpublished and keeps a's published event."""
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    a, b = nodes["a"], nodes["b"]
    published = _import(a, tmp_path, event(seed=141, attributes=1, objects=0))
    misp = event(seed=142, attributes=0, objects=0)
    misp["Event"]["published"] = False
    draft = _signed(a, misp)
    hostile_log(a, events=[draft])
    offer = {"seq": a.store.head_sequence(), "record": draft.record.wire(), "event_level": 3, "elements": 3}
    decisions = _pull(b, a, _offering(offer))
    assert decisions.refused("event") == ["local-unpublished"]
    assert set(b.store.event_uuids()) == {published}
    _close(nodes)


def test_a_removed_member_takes_nothing_new_of_the_group_even_when_a_peer_offers_it(tmp_path: Path):
    """a's sharing group listed b, then a removed b (b learned it: revision 2). a's node offers b
    an event of the group anyway; b refuses it (sg-not-member: a node that is not a member holds
    none of the group's data)."""
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("a", "c")])
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    org_a, org_b, org_c = (n.config.org_uuid for n in (a, b, c))
    group = sg.create(a.store, a.identity, org_a, "banks", {org_b: False, org_c: False})

    def of_group(seed: int) -> dict:
        misp = event(seed=seed, attributes=1, objects=0)
        misp["Event"]["distribution"] = "4"
        misp["Event"]["SharingGroup"] = {"uuid": group.uuid}
        return misp
    before = _import(a, tmp_path, of_group(151))
    _pull(b, a)
    assert set(b.store.event_uuids()) == {before}
    sg.revise(a.store, a.identity, org_a, group.uuid, remove=(org_b,))
    after = _signed(a, of_group(152))
    hostile_log(a, events=[after])
    offer = {"seq": a.store.head_sequence(), "record": after.record.wire(), "event_level": 4, "elements": 4}
    decisions = _pull(b, a, _offering(offer))
    assert sg.from_record(b.store.sharing_group(group.uuid)).revision == 2
    assert decisions.refused("event") == ["sg-not-member"]
    assert after.uuid not in set(b.store.event_uuids())
    _close(nodes)


# --- several paths: held, and relayed, at the highest level any allows -----------------------------

def _diamond(tmp_path: Path, link: tuple[str, str], filters: dict, seed: int) -> tuple[dict[str, Node], dict, str]:
    """a-b, a-c, b-c, b-d, with `filters` on `link`, and a level-3 event made at a."""
    nodes = make_federation(tmp_path, ["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("b", "c"), ("b", "d")],
                            {link: filters})
    misp = event(seed=seed, attributes=1, objects=0)
    misp["Event"]["Tag"] = [{"name": "tlp:green"}]
    return nodes, misp, _import(nodes["a"], tmp_path, misp)


def test_a_level_raised_by_a_second_path_reaches_the_peers_it_was_withheld_from(tmp_path: Path):
    """b pulls a's level-3 event capped at 0 (b's pull filter for a: max_distribution 0), so d,
    pulling from b, is withheld it. Then c's copy of it reaches b at 3: b holds it at 3 now (the
    highest level any path allows) and d, pulling b again, gets it. Before, b's raised holding was
    not logged again and d, whose checkpoint had passed it, never got it (found by
    test_replication_property on a fresh clone)."""
    nodes, misp, uuid = _diamond(tmp_path, ("b", "a"), {"pull": {"max_distribution": 0}}, seed=161)
    a, b, c, d = (nodes[n] for n in "abcd")
    _pull(b, a)
    _pull(d, b)
    assert d.store.holding(uuid) is None  # held at 0 by b: it goes no further
    _pull(c, a)
    _pull(b, c)
    _pull(d, b)
    assert unpack_holding(b.store.holding(uuid)).levels[uuid] == 3
    assert [e["uuid"] for e in d.store.export_event(uuid)["Event"]["Attribute"]] == \
        [misp["Event"]["Attribute"][0]["uuid"]]
    _close(nodes)


def test_a_second_path_at_the_same_level_is_remembered_as_a_source_but_not_logged_again(tmp_path: Path):
    """b holds a's level-3 event from a; c's copy reaches b at the same level. b remembers c as a
    source (not sent back to it), but offers it to no peer again: nobody may receive more. Before,
    every second path moved the event to the end of b's log, so each of b's peers was offered it
    once more (bench/sync.py spread: 1.43 bytes per payload byte per node instead of 1.27)."""
    nodes, misp, uuid = _diamond(tmp_path, ("b", "a"), {}, seed=162)
    a, b, c = (nodes[n] for n in "abc")
    _pull(b, a)
    _pull(b, c)  # c's own org record (c holds nothing else yet)
    _pull(c, a)
    head = b.store.stats()["sequence"]
    _pull(b, c)
    assert unpack_holding(b.store.holding(uuid)).sources[uuid] == {"a", "c"}
    assert b.store.stats()["sequence"] == head
    _close(nodes)


def test_a_retraction_raised_by_a_second_path_reaches_the_peers_the_first_could_not(tmp_path: Path):
    """a shares an event at level 3 with b, and b with d; then a lowers it to 1, which retracts it
    from d (no longer entitled). The retraction first reaches b through c, whose link from a is
    capped at 1 (a's push filter for c), so b holds it at 0 and could not pass it on; then straight
    from a at 3: b holds it at 3 now and d, pulling b, drops the event. Before, b kept the first
    level and d held the event the author had withdrawn from it (found by test_replication_property)."""
    nodes, misp, uuid = _diamond(tmp_path, ("a", "c"), {"push": {"max_distribution": 1}}, seed=171)
    a, b, c, d = (nodes[n] for n in "abcd")
    for puller, served in ((b, a), (d, b), (c, a)):
        _pull(puller, served)
    assert d.store.held(uuid) is not None
    misp["Event"]["distribution"] = "1"
    misp["Event"]["timestamp"] = misp["Event"]["publish_timestamp"] = str(int(misp["Event"]["timestamp"]) + 100)
    path = tmp_path / "lowered.json"
    path.write_text(json.dumps(misp))
    import_paths(a, [path], workers=0)
    for puller, served in ((c, a), (b, c), (b, a), (d, b)):
        _pull(puller, served)
    assert b.store.retraction(uuid)[2] == 3  # the level b holds the retraction at
    assert d.store.held(uuid) is None and d.store.retraction(uuid) is not None
    _close(nodes)


def _hostile_retraction(node: Node, event_uuid: str, signer: Identity | None = None) -> dict:
    """A retraction of `event_uuid` signed by `signer` (default the node's key), put in the node's
    log past its checks and offered at 3: what a hostile node serves."""
    from fedmisp.model.records import KIND_RETRACTION
    from fedmisp.model.retraction import Reach, retraction_body
    record = seal(signer or node.identity, KIND_RETRACTION,
                  retraction_body(event_uuid, 2 ** 40, b"\xff" * 32, Reach(3)))
    hostile_log(node, records=[record])
    return {"seq": node.store.head_sequence(), "record": record.wire(), "level": 3}


def test_a_retraction_not_signed_by_the_events_author_is_refused_and_drops_nothing(tmp_path: Path):
    """c's node offers b a retraction of a's event, signed by c: only the author withdraws its
    event (not-author); b keeps a's event."""
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    uuid = _import(a, tmp_path, event(seed=181, attributes=1, objects=0))
    _pull(b, a)
    _pull(b, c)  # c's org record: c is a known author
    decisions = _pull(b, c, _offering(_hostile_retraction(c, uuid)))
    assert decisions.refused("retraction") == ["not-author"]
    assert b.store.held(uuid) is not None and b.store.retraction(uuid) is None
    _close(nodes)


def test_a_retraction_of_an_event_never_held_is_refused_and_not_kept(tmp_path: Path):
    """a's node offers b a retraction of an event b never held: b has nothing to drop and is not
    told the event exists (event-not-held); nothing of it is stored."""
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    a, b = nodes["a"], nodes["b"]
    _pull(b, a)
    unknown = "5a1b2c3d-0000-4000-8000-0000000000ff"
    decisions = _pull(b, a, _offering(_hostile_retraction(a, unknown)))
    assert decisions.refused("retraction") == ["event-not-held"]
    assert b.store.retraction(unknown) is None
    _close(nodes)


# --- what a pull stored is counted, whatever its kind ---------------------------------------------

def test_a_pull_counts_the_org_records_and_sharing_group_revisions_it_stored(tmp_path: Path):
    """A pull's report (the status page's and the log's "other records", and what tells a settle
    loop that something moved) counts org records and sharing-group revisions too. Before, a pull
    that brought only a group revision said it stored nothing, and test_replication_property's
    settle stopped before a member two hops away had it (found on a fresh clone)."""
    from federation import settle
    nodes = make_federation(tmp_path, ["a", "c", "b"], [("a", "b"), ("b", "c")])
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    assert asyncio.run(pull_over_http(b, a)).stored_records == 1  # a's org record
    group = sg.create(a.store, a.identity, a.config.org_uuid, "banks",
                      {b.config.org_uuid: False, c.config.org_uuid: False})
    assert asyncio.run(pull_over_http(b, a)).stored_records == 1
    settle(nodes)  # c pulls b before b pulls a in each round: it takes a second round to reach c
    assert c.store.sharing_group(group.uuid) is not None
    _close(nodes)
