"""Custom galaxy clusters as PyMISP scripts make them, against a real `fedmisp run` process:
add_galaxy_cluster, get_galaxy_cluster, update_galaxy_cluster, publish_galaxy_cluster,
fork_galaxy_cluster, delete_galaxy_cluster (soft and hard), galaxy_clusters/index and restSearch
beside the default clusters, attaching one to an event and its Galaxy block, and the refusals
(another organisation's cluster, a default one, a bad post) in MISP's words (decision 0031)."""
from __future__ import annotations


import pytest
from pymisp import MISPGalaxyCluster

from test_api import Server, assert_misp_error, new_event, running
from fedmisp.model.clusters import custom_tag
from fedmisp.model.identity import Identity
from fedmisp.model.records import KIND_CLUSTER, seal
from fedmisp.node.home import ROLES, init_home

THREAT_ACTOR = "698774c7-8022-42c4-917f-8d6e4f06ada3"
APT1 = "1cb7e1cc-d695-42b1-92f4-fd0112a3c9be"
FOREIGN = "5b1c2d3e-4f50-4a61-8b72-9c83d4e5f607"  # a cluster another organisation made
FOREIGN_ORG = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


def foreign_body() -> dict:
    return {"uuid": FOREIGN, "galaxy_uuid": THREAT_ACTOR, "type": "threat-actor", "value": "Their Bear",
            "description": "theirs", "tag_name": custom_tag("threat-actor", FOREIGN), "version": 5,
            "distribution": 3, "sharing_group_uuid": None, "published": True, "deleted": False, "authors": [],
            "source": "", "orgc_uuid": FOREIGN_ORG, "orgc_name": "Other CSIRT", "elements": [], "relations": [],
            "extends_uuid": None, "extends_version": None}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A node whose store holds, besides its own, a custom cluster another organisation's node signed."""
    home = tmp_path_factory.mktemp("clusters") / "node"
    node, admin = init_home(home, "Test CSIRT", "127.0.0.1:0")
    keys = {role: node.create_api_key(role, f"test {role}") for role in ROLES}
    keys["admin"] = admin
    node.store.accept_cluster(seal(Identity.generate(), KIND_CLUSTER, foreign_body()), 3, "peer")
    node.close()
    yield from running(home, keys)


def new_cluster(value: str = "Acme Bear", **fields) -> MISPGalaxyCluster:
    cluster = MISPGalaxyCluster()
    cluster.value = value
    cluster.description = "a made-up actor"
    cluster.authors = ["Acme CERT"]
    cluster.source = "Acme"
    cluster.distribution = 1
    cluster.add_cluster_element(key="synonyms", value="Acme Panda")
    for key, value_ in fields.items():
        setattr(cluster, key, value_)
    return cluster


def test_a_custom_cluster_is_added_viewed_edited_published_and_deleted_as_pymisp_does(server: Server):
    misp = server.misp("user")
    added = misp.add_galaxy_cluster(THREAT_ACTOR, new_cluster(), pythonify=True)
    assert isinstance(added, MISPGalaxyCluster), added
    assert added.default is False and added.published is False and added.distribution == 1
    assert added.tag_name == f'misp-galaxy:threat-actor="{added.uuid}"'
    assert added.Orgc.name == "Test CSIRT" and added.orgc_id == "1"
    assert {(e.key, e.value) for e in added.cluster_elements} == {("synonyms", "Acme Panda")}
    assert misp.get_galaxy_cluster(added.id, pythonify=True).uuid == added.uuid
    # an edit is a new version, left unpublished (MISP)
    added.description = "edited"
    edited = misp.update_galaxy_cluster(added, pythonify=True)
    assert edited.description == "edited" and int(edited.version) > int(added.version) and edited.published is False
    # a user does not publish; a publisher does, once
    assert_misp_error(server.post(f"/galaxy_clusters/publish/{added.uuid}", {}, role="user"), 403)
    publisher = server.misp("publisher")
    assert publisher.publish_galaxy_cluster(added.uuid)["success"] is True
    shown = misp.get_galaxy_cluster(added.uuid, pythonify=True)
    assert shown.published is True and int(shown.version) > int(edited.version)
    assert_misp_error(server.post(f"/galaxy_clusters/publish/{added.uuid}", {}, role="publisher"), 405,
                      "already published")
    # listed beside the default clusters of its galaxy, and searched
    listed = misp.search_galaxy_clusters(THREAT_ACTOR, context="custom", pythonify=True)
    assert added.uuid in {c.uuid for c in listed} and all(c.default is False for c in listed)
    assert added.uuid in {c.uuid for c in misp.search_galaxy_clusters(THREAT_ACTOR, searchall="acme panda",
                                                                      pythonify=True)}
    assert APT1 not in {c.uuid for c in listed}
    found = server.post("/galaxy_clusters/restSearch", {"custom": 1, "published": 1}, role="read-only").json()
    assert added.uuid in {c["GalaxyCluster"]["uuid"] for c in found["response"]}
    found = server.post("/galaxy_clusters/restSearch", {"orgc_id": "1", "type": "threat-actor"}).json()
    assert {c["GalaxyCluster"]["uuid"] for c in found["response"]} == {added.uuid}
    # soft delete: kept, marked deleted, listed only as deleted; hard delete: gone for good
    assert misp.delete_galaxy_cluster(added.uuid)["success"] is True
    assert misp.get_galaxy_cluster(added.uuid, pythonify=True).deleted is True
    assert added.uuid not in {c.uuid for c in misp.search_galaxy_clusters(THREAT_ACTOR, context="custom", pythonify=True)}
    assert added.uuid in {c.uuid for c in misp.search_galaxy_clusters(THREAT_ACTOR, context="deleted", pythonify=True)}
    assert misp.delete_galaxy_cluster(added.uuid, hard=True)["success"] is True
    assert_misp_error(server.get(f"/galaxy_clusters/view/{added.uuid}"), 404, "Invalid galaxy cluster")
    again = new_cluster("Back again")
    again.uuid = added.uuid
    assert_misp_error(server.post(f"/galaxy_clusters/add/{THREAT_ACTOR}", again, role="user"), 400, "uuid")


def test_another_organisations_cluster_is_shown_but_not_changed(server: Server):
    misp = server.misp("user")
    theirs = misp.get_galaxy_cluster(FOREIGN, pythonify=True)
    assert theirs.default is False and theirs.Orgc.uuid == FOREIGN_ORG and theirs.version == "5"
    theirs.description = "mine now"
    for path, body, role in ((f"/galaxy_clusters/edit/{FOREIGN}", theirs, "user"),
                             (f"/galaxy_clusters/delete/{FOREIGN}", {}, "user")):
        assert_misp_error(server.post(path, body, role=role), 403,
                          "Only the creator organisation can modify the galaxy cluster")
    assert_misp_error(server.post(f"/galaxy_clusters/publish/{FOREIGN}", {}, role="publisher"), 403,
                      "Only the creator organisation with publishing capabilities")
    assert_misp_error(server.post(f"/galaxy_clusters/edit/{APT1}", {"value": "x"}, role="user"), 405,
                      "Default galaxy cluster cannot be edited")
    assert misp.get_galaxy_cluster(FOREIGN, pythonify=True).description == "theirs"


@pytest.mark.parametrize("body, field", [
    ({"description": "no value"}, "value"),
    ({"value": "x", "distribution": 5}, "distribution"),
    ({"value": "x", "distribution": 4}, "sharing_group_id"),
    ({"value": "x", "GalaxyElement": [{"key": "synonyms"}]}, "GalaxyElement[0]"),
    ({"value": "x", "elements": "not json"}, "elements"),
    ({"value": "x", "authors": 7}, "authors"),
    ({"value": "x", "uuid": "not-a-uuid"}, "uuid"),
    ({"value": "x", "GalaxyClusterRelation": [{"referenced_galaxy_cluster_uuid": "x",
                                               "referenced_galaxy_cluster_type": "similar"}]},
     "relations[0].referenced_galaxy_cluster_uuid"),
    ({"value": "x", "uuid": APT1}, "uuid"),
])
def test_a_bad_cluster_is_a_400_naming_the_field(server: Server, body: dict, field: str):
    assert_misp_error(server.post(f"/galaxy_clusters/add/{THREAT_ACTOR}", body, role="user"), 400, field)


def test_an_unknown_galaxy_is_a_404(server: Server):
    assert_misp_error(server.post("/galaxy_clusters/add/12345", {"value": "x"}, role="user"), 404, "Invalid galaxy")


def test_a_fork_names_its_parent(server: Server):
    misp = server.misp("user")
    parent = misp.get_galaxy_cluster(APT1, pythonify=True)
    fork = misp.fork_galaxy_cluster(THREAT_ACTOR, parent, pythonify=True)
    assert fork.extends_uuid == APT1 and fork.uuid != APT1 and fork.default is False
    assert fork.value == "APT1" and "Comment Crew" in {e.value for e in fork.cluster_elements}


def test_a_custom_cluster_is_attached_to_an_event_and_shown_in_its_galaxy_block(server: Server):
    misp = server.misp("user")
    cluster = misp.add_galaxy_cluster(THREAT_ACTOR, new_cluster("Tagged Bear"), pythonify=True)
    event = misp.add_event(new_event("custom cluster"), pythonify=True)
    assert misp.attach_galaxy_cluster(event, cluster)["success"] == "Cluster attached."
    shown = misp.get_event(event.uuid, pythonify=True)
    assert cluster.tag_name in {t.name for t in shown.tags}
    [block] = [g for g in shown.galaxies if g.type == "threat-actor"]
    [held] = block.clusters
    assert held.uuid == cluster.uuid and held.value == "Tagged Bear" and held.default is False
    assert held.meta == {"synonyms": ["Acme Panda"]}
