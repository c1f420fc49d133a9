"""Custom galaxy clusters as signed records that replicate (decision 0031): their shape, the version
rule, and how far each goes: a published level-1 cluster reaches one hop and not two, an unpublished
one never leaves, a sharing-group one reaches its members only, a newer version replaces the older,
a forged one (another organisation's key) is refused and the pull goes on, a malformed one is
refused naming the field; and an event tagged with a custom cluster shows its Galaxy block at the
node that holds the cluster."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from factories import event
from federation import make_federation, settle
from peer_protocol import Decisions
from fedmisp.gossip.clusters import sign
from fedmisp.gossip.driver import InMemory, pull
from fedmisp.gossip.replica import Replica
from fedmisp.model.clusters import ClusterError, check_body, cluster_problem, custom_tag
from fedmisp.model.records import KIND_CLUSTER, seal
from fedmisp.node.api.render import with_galaxies
from fedmisp.node.importer import import_paths
from fedmisp.policy.clusters import check_cluster_version, cluster_inbound, cluster_outbound
from fedmisp.policy.model import NodeState, PeerMode, PeerPolicy, SharingGroup, SyncFilter
from fedmisp.policy.orgs import KeyState
from fedmisp.policy.reasons import Reason
from fedmisp.store import clusters as store_clusters
from fedmisp.store.db import sequence, set_sequence
from fedmisp.store.log import put_record
from fedmisp.store.rows import uuid16

THREAT_ACTOR = "698774c7-8022-42c4-917f-8d6e4f06ada3"
CLUSTER = "7d6c5b4a-3928-4716-a504-f3e2d1c0b9a8"
ORG_A = "aaaaaaaa-0000-4000-8000-000000000001"
ORG_B = "bbbbbbbb-0000-4000-8000-000000000002"


def body(org_uuid: str = ORG_A, version: int = 1, **changes) -> dict:
    out = {"uuid": CLUSTER, "galaxy_uuid": THREAT_ACTOR, "type": "threat-actor", "value": "Acme Bear",
           "description": "", "tag_name": custom_tag("threat-actor", CLUSTER), "version": version,
           "distribution": 1, "sharing_group_uuid": None, "published": True, "deleted": False,
           "authors": ["Acme CERT"], "source": "Acme", "orgc_uuid": org_uuid, "orgc_name": "Org",
           "elements": [["synonyms", "Acme Panda"]], "relations": [], "extends_uuid": None, "extends_version": None}
    out.update(changes)
    return out


def of(node, **changes) -> dict:
    return body(node.config.org_uuid, orgc_name=node.config.org_name, **changes)


def held(node) -> list[tuple[int, int]]:
    """(version, level) of each cluster version the node holds."""
    return [(r.body["version"], level) for r, level, _ in node.store.clusters()]


# --- shape and rules -----------------------------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    ({"tag_name": 'misp-galaxy:threat-actor="Acme Bear"'}, "cluster.tag_name"),
    ({"distribution": 5}, "cluster.distribution"),
    ({"distribution": 4}, "cluster.sharing_group_uuid"),
    ({"sharing_group_uuid": CLUSTER}, "cluster.sharing_group_uuid"),
    ({"version": "2"}, "cluster.version"),
    ({"elements": [["synonyms"]]}, "cluster.elements[0]"),
    ({"relations": [{"referenced_galaxy_cluster_uuid": "x", "referenced_galaxy_cluster_type": "t", "tags": []}]},
     "cluster.relations[0].referenced_galaxy_cluster_uuid"),
    ({"extends_version": 3}, "cluster.extends_version"),
    ({"published": 1}, "cluster.published"),
    ({"colour": "red"}, "cluster.colour"),
])
def test_a_malformed_cluster_names_its_field(change, field):
    assert cluster_problem(body(**change)).startswith(field + ":")
    with pytest.raises(ClusterError):
        check_body(body(**change))
    assert cluster_problem(body()) is None


def test_the_version_rule():
    current, retired = KeyState(org=ORG_A), KeyState(org=ORG_A, retired_at=5)
    assert check_cluster_version(None, None, ORG_A, 1, current) is Reason.ALLOWED
    assert check_cluster_version(ORG_A, 1, ORG_A, 2, current) is Reason.ALLOWED
    assert check_cluster_version(ORG_A, 2, ORG_A, 2, current) is Reason.CLUSTER_NOT_NEWER
    assert check_cluster_version(ORG_A, 2, ORG_B, 3, KeyState(org=ORG_B)) is Reason.CLUSTER_OTHER_ORG
    assert check_cluster_version(ORG_A, 1, ORG_A, 2, retired) is Reason.ORG_KEY_NOT_CURRENT


def test_the_outbound_and_inbound_rules():
    peer = PeerPolicy("p", ORG_B)
    node = NodeState(ORG_A, {"g": SharingGroup("g", "g", ORG_A, 1, {ORG_A: True})})
    assert cluster_outbound(True, 1, None, (), peer, node) == (Reason.ALLOWED, 0)
    assert cluster_outbound(False, 3, None, (), peer, node)[0] is Reason.LOCAL_UNPUBLISHED
    assert cluster_outbound(True, 0, None, (), peer, node)[0] is Reason.HOP_BUDGET
    assert cluster_outbound(True, 4, "g", (), peer, node)[0] is Reason.SG_NOT_MEMBER
    assert cluster_outbound(True, 3, None, ("p",), peer, node)[0] is Reason.FROM_PEER
    capped = PeerPolicy("p", ORG_B, push=SyncFilter(max_distribution=1))
    assert cluster_outbound(True, 3, None, (), capped, node) == (Reason.ALLOWED, 1)
    assert cluster_outbound(True, 3, None, (), PeerPolicy("p", ORG_B, PeerMode.PULL_ONLY), node)[0] is Reason.PEER_MODE

    def inbound(**kw):
        args = dict(published=True, signer_org=ORG_B, orgc_uuid=ORG_B, offered=0, distribution=1,
                    sharing_group=None, blocked=False, peer=peer, node=node)
        args.update(kw)
        return cluster_inbound(**args)
    assert inbound() == (Reason.ALLOWED, 0)
    assert inbound(offered=1)[1] == 0  # a level-1 cluster has spent its hop on arriving
    assert inbound(published=False)[0] is Reason.LOCAL_UNPUBLISHED
    assert inbound(signer_org=ORG_A)[0] is Reason.CLUSTER_OTHER_ORG
    assert inbound(distribution=0)[0] is Reason.HOP_BUDGET
    assert inbound(blocked=True)[0] is Reason.CLUSTER_BLOCKED
    assert inbound(distribution=4, offered=4, sharing_group="g")[0] is Reason.SG_SENDER_NOT_MEMBER
    assert inbound(distribution=3, offered=3, peer=PeerPolicy("p", ORG_B, pull=SyncFilter(max_distribution=2))) \
        == (Reason.ALLOWED, 2)


# --- replication ---------------------------------------------------------------------------------------

def close(nodes) -> None:
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


def test_a_published_level_1_cluster_reaches_one_hop_and_an_unpublished_one_none(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    a = nodes["a"]
    assert sign(a.store, a.identity, of(a, published=False))[0] is Reason.ALLOWED
    settle(nodes)
    assert held(nodes["b"]) == held(nodes["c"]) == []
    sign(a.store, a.identity, of(a, version=2))
    settle(nodes)
    assert held(a) == [(2, 1)]
    assert held(nodes["b"]) == [(2, 0)]
    assert held(nodes["c"]) == []
    close(nodes)


def test_a_level_3_cluster_goes_everywhere_and_a_newer_version_replaces_the_older(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    a = nodes["a"]
    sign(a.store, a.identity, of(a, distribution=3))
    settle(nodes)
    assert held(nodes["c"]) == [(1, 3)]
    sign(a.store, a.identity, of(a, version=7, distribution=3, value="Acme Bear (renamed)"))
    settle(nodes)
    for node in nodes.values():
        [(record, _, _)] = node.store.clusters()
        assert record.body["version"] == 7 and record.body["value"] == "Acme Bear (renamed)"
        # the replaced version left the changes feed
        kinds = [node.store.record(rid).kind for _, rid in node.store.log_since(0)]
        assert kinds.count(KIND_CLUSTER) == 1
    # an older version is not taken again
    assert nodes["c"].store.accept_cluster(seal(a.identity, KIND_CLUSTER, of(a, distribution=3)), 3, "b") \
        is Reason.CLUSTER_NOT_NEWER
    close(nodes)


def test_a_sharing_group_cluster_reaches_its_members_only(tmp_path):
    from fedmisp.gossip.sharing_groups import create
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("a", "c")])
    orgs = {n: node.config.org_uuid for n, node in nodes.items()}
    settle(nodes)  # org records everywhere
    a = nodes["a"]
    group = create(a.store, a.identity, orgs["a"], "a and b", {orgs["b"]: False})
    sign(a.store, a.identity, of(a, distribution=4, sharing_group_uuid=group.uuid))
    settle(nodes)
    assert held(nodes["b"]) == [(1, 4)]
    assert held(nodes["c"]) == []
    close(nodes)


def _peer(node, name: str):
    return next(p for p in node.config.peers if p.name == name)


def test_a_forged_version_is_refused_and_the_pull_goes_on(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    sign(a.store, a.identity, of(a, distribution=3))
    settle(nodes)
    # a hostile B signs a "version 2" of A's cluster, past its own rules, and imports an event: C
    # refuses the forgery (signed by B's key for A's organisation) and takes the event
    forged = seal(b.identity, KIND_CLUSTER, of(a, version=2, distribution=3, value="hijacked"))
    assert b.store.accept_cluster(forged, 3, None) is Reason.ALLOWED
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(event(seed=9, attributes=2, objects=0)))
    import_paths(b, [path])
    recorder = Decisions()
    report = pull(Replica(c, recorder), _peer(c, "b"), InMemory(Replica(b), "c"))
    assert report.refused == {Reason.CLUSTER_OTHER_ORG.value: 1}
    assert report.stored == 1
    assert [r.body["value"] for r, _, _ in c.store.clusters()] == ["Acme Bear"]
    # and B's own organisation cannot take A's cluster uuid over with a version naming itself
    assert a.store.accept_cluster(seal(b.identity, KIND_CLUSTER, of(b, version=3, distribution=3)), 3, "b") \
        is Reason.CLUSTER_OTHER_ORG
    for node in nodes.values():
        node.close()


def test_a_malformed_cluster_from_a_peer_is_refused_naming_the_field(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    a, b = nodes["a"], nodes["b"]
    bad = seal(a.identity, KIND_CLUSTER, of(a, tag_name="misp-galaxy:threat-actor=\"x\""))
    with a.store.database.write() as t:  # held as a hostile or buggy node would, past the store's checks
        _, seq = put_record(t, bad, sequence(t))
        set_sequence(t, seq)
        store_clusters._put(t, uuid16(CLUSTER), bad.id, seq, 1, [])
    recorder = Decisions()
    report = pull(Replica(b, recorder), _peer(b, "a"), InMemory(Replica(a), "b"))
    assert report.refused == {Reason.MALFORMED.value: 1}
    [refusal] = [d for d in recorder.all if d.refusal]
    assert refusal.kind == KIND_CLUSTER and refusal.detail.startswith("cluster.tag_name")
    assert held(b) == []
    for node in nodes.values():
        node.close()


def test_an_event_tagged_with_a_custom_cluster_shows_its_block_where_the_cluster_is_held(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    a = nodes["a"]
    sign(a.store, a.identity, of(a, distribution=1))
    raw = event(seed=12, attributes=1, objects=0)
    raw["Event"]["distribution"] = 3
    raw["Event"]["Tag"] = [{"name": custom_tag("threat-actor", CLUSTER)}]
    path = tmp_path / "tagged.json"
    path.write_text(json.dumps(raw))
    import_paths(a, [path])
    settle(nodes)

    def blocks(name: str) -> list:
        node = nodes[name]
        shown = node.store.export_event(raw["Event"]["uuid"])
        with_galaxies(shown, SimpleNamespace(store=node.store, node=node))
        return shown["Event"].get("Galaxy", [])
    for name in ("a", "b"):
        [block] = blocks(name)
        [cluster] = block["GalaxyCluster"]
        assert block["uuid"] == THREAT_ACTOR and cluster["uuid"] == CLUSTER and cluster["default"] is False
        assert cluster["meta"] == {"synonyms": ["Acme Panda"]} and cluster["orgc_id"] != "0"
    # c holds the event (level 3) but not the level-1 cluster: the tag is only a tag there
    assert blocks("c") == []
    close(nodes)
