"""Galaxies and clusters as PyMISP scripts see them, against a real `fedmisp run` process: MISP's
default galaxies (pymispgalaxies), their ids, cluster search, attaching a cluster as its tag, the
Galaxy blocks an event view derives from cluster tags, an imported Galaxy block kept as tags, a
cluster tag replicated to a peer, and the catalogue read only by what shows galaxies."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pymisp import MISPEvent, MISPGalaxy, MISPGalaxyCluster

from test_api import Server, assert_misp_error, new_event
from fedmisp.model.galaxies import catalogue, cluster_tag
from fedmisp.node.api.render import cluster_id, galaxy_id, hashed_id
from fedmisp.store.store import Store

THREAT_ACTOR = "698774c7-8022-42c4-917f-8d6e4f06ada3"  # the threat-actor galaxy's uuid (misp-galaxy)
APT1 = "1cb7e1cc-d695-42b1-92f4-fd0112a3c9be"  # misp-galaxy:threat-actor="APT1"
APT1_TAG = cluster_tag("threat-actor", "APT1")
UNKNOWN_UUID = "0e6f2d5c-91a4-4b87-9c3e-5d2a1f0b7c64"


@pytest.fixture(scope="module")
def apt1(server: Server) -> MISPGalaxyCluster:
    found = server.misp().get_galaxy_cluster(APT1, pythonify=True)
    assert isinstance(found, MISPGalaxyCluster), found
    return found


def tag_names(entity) -> set[str]:
    return {t.name for t in entity.tags}


def cluster_values(entity) -> dict[str, set[str]]:
    """galaxy type -> values of the clusters in the entity's Galaxy blocks."""
    return {g.type: {c.value for c in g.clusters} for g in entity.galaxies}


# --- galaxies ----------------------------------------------------------------------------------------

def test_galaxies_are_listed_and_searched_as_pymisp_reads_them(server: Server):
    misp = server.misp("read-only")
    galaxies = misp.galaxies(pythonify=True)
    assert len(galaxies) == len(catalogue().galaxies) > 100
    by_uuid = {g.uuid: g for g in galaxies}
    assert all(isinstance(g, MISPGalaxy) for g in galaxies)
    assert by_uuid[THREAT_ACTOR].type == "threat-actor" and by_uuid[THREAT_ACTOR].name == "Threat Actor"
    found = misp.search_galaxy("threat actor", pythonify=True)
    assert THREAT_ACTOR in {g.uuid for g in found} and len(found) < len(galaxies)
    assert misp.search_galaxy("no galaxy says this", pythonify=True) == []


def test_a_galaxy_is_viewed_by_id_or_uuid_with_its_clusters(server: Server):
    misp = server.misp("read-only")
    galaxy = misp.get_galaxy(THREAT_ACTOR, withCluster=True, pythonify=True)
    assert galaxy.type == "threat-actor"
    # the id is the galaxy's uuid's (render.hashed_id): the same on every node and after a restart
    assert galaxy.id == str(hashed_id(THREAT_ACTOR))
    assert misp.get_galaxy(galaxy.id, pythonify=True).uuid == THREAT_ACTOR
    apt1 = next(c for c in galaxy.clusters if c.value == "APT1")
    assert apt1.uuid == APT1 and apt1.tag_name == APT1_TAG
    assert "Comment Crew" in {e.value for e in apt1.cluster_elements if e.key == "synonyms"}


@pytest.mark.parametrize("path", ["/galaxies/view/12345", f"/galaxies/view/{UNKNOWN_UUID}",
                                  "/galaxy_clusters/view/12345", f"/galaxy_clusters/view/{UNKNOWN_UUID}",
                                  "/galaxy_clusters/index/12345", f"/galaxyClusters/view/{UNKNOWN_UUID}"])
def test_an_unknown_galaxy_or_cluster_is_a_misp_shaped_404(server: Server, path: str):
    assert_misp_error(server.get(path), 404, "not found" if "/galaxies/" in path or "index" in path else "cluster")


def test_ids_are_unique_and_derived_from_uuids_alone():
    found = catalogue()
    assert len({galaxy_id(g) for g in found.galaxies}) == len(found.galaxies)
    assert len({cluster_id(c) for c in found.clusters}) == len(found.clusters)
    # two galaxies' uuids share their first 7 bytes, so uuid prefixes (element ids) would clash here
    prefixes = [g.uuid.replace("-", "")[:14] for g in found.galaxies]
    assert len(set(prefixes)) < len(prefixes)
    assert cluster_id(found.by_uuid(APT1)[0]) == str(hashed_id(THREAT_ACTOR, APT1))


# --- clusters ----------------------------------------------------------------------------------------

def test_a_cluster_is_viewed_by_id_or_uuid_with_its_galaxy_elements_and_relations(server: Server, apt1):
    misp = server.misp("read-only")
    assert apt1.value == "APT1" and apt1.Galaxy.uuid == THREAT_ACTOR and apt1.default is True
    assert apt1.id == str(hashed_id(THREAT_ACTOR, APT1))
    assert misp.get_galaxy_cluster(apt1.id, pythonify=True).uuid == APT1
    assert apt1.cluster_relations and all(r.galaxy_cluster_uuid == APT1 for r in apt1.cluster_relations)
    assert "CN" in apt1.elements_meta["country"]


def test_a_galaxys_clusters_are_searched_by_context_and_searchall(server: Server):
    misp = server.misp("read-only")
    found = misp.search_galaxy_clusters(THREAT_ACTOR, searchall="Comment Crew", pythonify=True)  # a synonym
    assert "APT1" in {c.value for c in found}
    assert all(c.type == "threat-actor" for c in found)
    assert misp.search_galaxy_clusters(THREAT_ACTOR, context="custom", pythonify=True) == []  # no custom clusters
    every = misp.search_galaxy_clusters(THREAT_ACTOR, pythonify=True)
    assert len(every) == len(catalogue().clusters_of(catalogue().galaxy(THREAT_ACTOR)))
    assert_misp_error(server.post(f"/galaxy_clusters/index/{THREAT_ACTOR}", {"searchal": "x"}), 400, "searchal")
    # a context that is not a name (the API fuzz test sent a list: a 500 before)
    for context in (["all"], {"all": 1}, 3):
        assert_misp_error(server.post(f"/galaxy_clusters/index/{THREAT_ACTOR}", {"context": context}), 400, "context")


def test_cluster_rest_search_filters_as_misp_and_refuses_an_unknown_filter(server: Server):
    misp = server.misp("read-only")
    found = misp.direct_call("galaxy_clusters/restSearch", {"value": "apt1", "galaxy_uuid": THREAT_ACTOR})
    assert [c["GalaxyCluster"]["uuid"] for c in found] == [APT1]
    assert found[0]["GalaxyCluster"]["Galaxy"]["uuid"] == THREAT_ACTOR  # in full by default
    by_type = misp.direct_call("galaxy_clusters/restSearch", {"type": "threat-actor", "minimal": 1, "limit": 5})
    assert len(by_type) == 5 and set(by_type[0]["GalaxyCluster"]) == {"uuid", "version"}
    by_element = misp.direct_call("galaxy_clusters/restSearch", {"elements": {"synonyms": "comment crew"}})
    assert APT1 in {c["GalaxyCluster"]["uuid"] for c in by_element}
    refused = assert_misp_error(server.post("/galaxy_clusters/restSearch", {"value": "APT1", "valeu": "x"},
                                            role="read-only"), 400, "valeu")
    assert "valeu" in refused["errors"]
    assert_misp_error(server.post("/galaxy_clusters/restSearch", {"order": "value"}), 400, "order")
    # the whole catalogue in full is too much for one answer: a 400 naming limit, not a 190 MB body
    assert_misp_error(server.post("/galaxy_clusters/restSearch", {}), 400, "limit")


# --- attaching clusters, Galaxy blocks ------------------------------------------------------------------

def test_attach_cluster_to_an_event_and_an_attribute_puts_its_tag_and_galaxy_block(server: Server, apt1):
    misp = server.misp("user")
    event = misp.add_event(new_event("apt1 activity"), pythonify=True)
    attribute = event.attributes[0]
    answer = misp.attach_galaxy_cluster(event, apt1)
    assert answer == {"saved": True, "success": "Cluster attached.", "check_publish": True}
    assert misp.attach_galaxy_cluster(event, apt1)["success"] == "Cluster already attached."
    # values match as MISP's (case-insensitive) column does: the cluster is "MUSTANG PANDA"
    [mustang] = misp.direct_call("galaxy_clusters/restSearch", {"value": "Mustang Panda", "type": "threat-actor"})
    mustang = mustang["GalaxyCluster"]
    assert misp.attach_galaxy_cluster(attribute, mustang["id"])["success"] == "Cluster attached."
    shown = misp.get_event(event.id, pythonify=True)
    assert APT1_TAG in tag_names(shown)
    assert cluster_values(shown) == {"threat-actor": {"APT1"}}
    a = next(x for x in shown.attributes if x.uuid == attribute.uuid)
    assert tag_names(a) == {mustang["tag_name"]}
    assert cluster_values(a) == {"threat-actor": {mustang["value"]}}
    assert not any(x.galaxies for x in shown.attributes if x.uuid != attribute.uuid)
    cluster = shown.galaxies[0].clusters[0]
    assert cluster.uuid == APT1 and cluster.tag_name == APT1_TAG and "country" in cluster.meta
    # restSearch json derives the same blocks; excludeGalaxy leaves them out
    assert cluster_values(misp.search(eventid=event.id, pythonify=True)[0]) == {"threat-actor": {"APT1"}}
    assert not misp.search(eventid=event.id, excludeGalaxy=1, pythonify=True)[0].galaxies
    # attributes/restSearch with includeGalaxy: the attribute's clusters, then its event's (as MISP)
    found = misp.search(controller="attributes", eventid=event.id, includeGalaxy=1)["Attribute"]
    blocks = {x["uuid"]: [c["value"] for g in x.get("Galaxy", []) for c in g["GalaxyCluster"]] for x in found}
    assert blocks[attribute.uuid] == [mustang["value"], "APT1"]
    assert all(values == ["APT1"] for uuid, values in blocks.items() if uuid != attribute.uuid)
    assert not any("Galaxy" in x for x in misp.search(controller="attributes", eventid=event.id)["Attribute"])
    # clusters attached here are searched by the event they are on
    on_event = misp.direct_call("galaxy_clusters/restSearch", {"eventid": event.id, "minimal": 1})
    assert {c["GalaxyCluster"]["uuid"] for c in on_event} == {APT1, mustang["uuid"]}


def test_attach_cluster_locally_and_its_refusals(server: Server, apt1):
    misp = server.misp("user")
    # a local cluster on another organisation's event: a node-local tag, shown with local true
    foreign = misp.get_event(server.foreign_event, pythonify=True)
    assert misp.attach_galaxy_cluster(foreign, apt1, local=True)["success"] == "Cluster attached."
    shown = misp.get_event(server.foreign_event)["Event"]
    assert shown["Galaxy"][0]["GalaxyCluster"][0]["local"] is True
    assert {t["name"]: t.get("local") for t in shown["Tag"]}[APT1_TAG] is True
    # shared on another organisation's event: refused as any edit of it
    assert_misp_error(server.post(f"/galaxies/attachCluster/{foreign.id}/event/local:0",
                                  {"Galaxy": {"target_id": apt1.id}}, role="user"), 403, "permission")
    assert_misp_error(server.post(f"/galaxies/attachCluster/{foreign.id}/event", {"Galaxy": {"target_id": "12345"}},
                                  role="user"), 404, "Invalid Galaxy cluster")
    assert_misp_error(server.post(f"/galaxies/attachCluster/{foreign.id}/tag_collection",
                                  {"Galaxy": {"target_id": apt1.id}}, role="user"), 400, "target_type")
    assert_misp_error(server.post(f"/galaxies/attachCluster/{foreign.id}/event", {"Galaxy": {}}, role="user"),
                      400, "target_id")
    assert_misp_error(server.post("/galaxies/attachCluster/999999/event", {"Galaxy": {"target_id": apt1.id}},
                                  role="user"), 404, "Invalid event")


# --- imports --------------------------------------------------------------------------------------------

def galaxy_block(*clusters: tuple[str, str]) -> list[dict]:
    """A Galaxy block as MISP exports one: per cluster its type, value, uuid and tag_name."""
    return [{"type": "threat-actor", "uuid": THREAT_ACTOR, "name": "Threat Actor",
             "GalaxyCluster": [{"type": "threat-actor", "value": value, "uuid": uuid, "tag_name": cluster_tag("threat-actor", value)}
                               for value, uuid in clusters]}]


def test_events_add_keeps_a_galaxy_blocks_clusters_as_tags(server: Server):
    misp = server.misp("user")
    event = MISPEvent()
    event.from_dict(info="imported from a MISP", distribution=1, Tag=[{"name": "tlp:green"}],
                    Galaxy=galaxy_block(("APT1", APT1)),
                    Attribute=[{"type": "domain", "value": "apt1.example", "Galaxy": galaxy_block(("APT1", APT1))}])
    added = misp.add_event(event, pythonify=True)
    assert tag_names(added) == {"tlp:green", APT1_TAG}
    assert tag_names(added.attributes[0]) == {APT1_TAG}
    assert cluster_values(added) == cluster_values(added.attributes[0]) == {"threat-actor": {"APT1"}}
    # a block whose cluster is tagged already adds nothing; a block with no tag is refused naming it
    again = MISPEvent()
    again.from_dict(info="tag and block", Tag=[{"name": APT1_TAG}], Galaxy=galaxy_block(("APT1", APT1)))
    assert [t.name for t in misp.add_event(again, pythonify=True).tags] == [APT1_TAG]
    bad = server.post("/events/add", {"Event": {"info": "bad block", "Galaxy": [{"GalaxyCluster": [{"value": "x"}]}]}},
                      role="user")
    assert_misp_error(bad, 400, "Galaxy[0].GalaxyCluster[0].tag_name")


def fedmisp(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "fedmisp", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_fedmisp_import_keeps_a_galaxy_blocks_clusters_as_tags(tmp_path: Path):
    home = tmp_path / "n"
    fedmisp("init", "--home", str(home), "--org", "Import CSIRT")
    raw = {"Event": {"uuid": "4f0c1e2d-3b4a-4c5d-8e6f-7a8b9c0d1e2f", "info": "exported by MISP",
                     "date": "2024-05-01", "Galaxy": galaxy_block(("APT1", APT1), ("Mustang Panda", UNKNOWN_UUID)),
                     "Attribute": [{"type": "ip-dst", "value": "198.51.100.7",
                                    "Galaxy": galaxy_block(("APT1", APT1))}]}}
    (tmp_path / "event.json").write_text(json.dumps(raw))
    fedmisp("import", "--home", str(home), str(tmp_path / "event.json"))
    store = Store(home / "store", readonly=True)
    try:
        held = store.export_event(raw["Event"]["uuid"])["Event"]
    finally:
        store.close()
    assert {t["name"] for t in held["Tag"]} == {APT1_TAG, cluster_tag("threat-actor", "Mustang Panda")}
    assert [t["name"] for t in held["Attribute"][0]["Tag"]] == [APT1_TAG]
    assert "Galaxy" not in held and "Galaxy" not in held["Attribute"][0]  # derived on output, never stored


# --- across nodes, and who reads the catalogue ----------------------------------------------------------------

def test_a_cluster_attached_on_one_node_reaches_its_peer_as_a_tag_and_shows_there_as_a_galaxy(tmp_path: Path):
    from federation import make_federation, settle
    from test_api_federation import api, publish_on
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    a, b = nodes["a"], nodes["b"]
    raw = publish_on(a, 21)
    settle(nodes)
    with api(a) as misp:
        event = misp.get_event(raw["uuid"], pythonify=True)
        assert misp.attach_galaxy_cluster(event, str(hashed_id(THREAT_ACTOR, APT1)))["success"] == "Cluster attached."
        assert misp.get_event(raw["uuid"], pythonify=True).published  # an admin's tag keeps it published
    settle(nodes)
    assert APT1_TAG in {t["name"] for t in b.store.export_event(raw["uuid"])["Event"]["Tag"]}
    with api(b) as misp:
        shown = misp.get_event(raw["uuid"], pythonify=True)
        assert cluster_values(shown) == {"threat-actor": {"APT1"}}
        assert shown.galaxies[0].clusters[0].id == str(hashed_id(THREAT_ACTOR, APT1))  # b numbers it as a does
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


LAZY = """
import asyncio, json, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from aiohttp.test_utils import TestClient, TestServer
from factories import event as factory_event
from federation import make_federation, settle
from test_api_federation import publish_on
from fedmisp.model import galaxies
from fedmisp.model.misp import parse_event
from fedmisp.model.revision import sign_event
from fedmisp.node.api.app import make_app
from fedmisp.node.api.helpers import ApiContext
from fedmisp.store.writer import Writer

nodes = make_federation(Path({tmp!r}), ["a", "b"], [("a", "b")])
a, b = nodes["a"], nodes["b"]
plain = publish_on(a, 3)
tagged = factory_event(seed=4, attributes=2, objects=0)["Event"]
tagged.update(Orgc={{"name": a.config.org_name, "uuid": a.config.org_uuid}}, Galaxy={block!r})
a.store.write_events([sign_event(a.identity, parse_event(tagged, a.import_defaults()))])  # an import
settle(nodes)  # the peer protocol, both ways
seen = {{"after import and sync": galaxies.loaded()}}

async def views():
    writer = Writer(b.store)
    async with TestClient(TestServer(make_app(ApiContext(b, writer)))) as client:  # the app started
        headers = {{"Authorization": b.create_api_key("admin", "lazy")}}
        await (await client.get("/events/index", headers=headers)).read()
        await (await client.get("/events/view/" + plain["uuid"], headers=headers)).read()
        seen["after start, index and a view without clusters"] = galaxies.loaded()
        shown = await (await client.get("/events/view/" + tagged["uuid"], headers=headers)).json()
        seen["after a view with a cluster"] = galaxies.loaded() and len(shown["Event"]["Galaxy"]) == 1
    writer.close()
asyncio.run(views())
for node in nodes.values():
    node.close()
print(json.dumps(seen))
"""


def test_the_catalogue_is_read_only_by_what_shows_galaxies(tmp_path: Path):
    """A fresh process: importing an event with a Galaxy block, replicating it, starting the API
    and showing events without cluster tags never read pymispgalaxies' data; showing a cluster does."""
    script = LAZY.format(tests=str(Path(__file__).parent), tmp=str(tmp_path), block=galaxy_block(("APT1", APT1)))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "after import and sync": False, "after start, index and a view without clusters": False,
        "after a view with a cluster": True}
