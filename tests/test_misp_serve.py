"""A real MISP 2.5.1 (the kit's instance B, tests/misp_kit.py) pulls from and pushes to a running
node with MISP's own sync code (`cake Server pull|push`), the node registered on B as a sync
server with the key `fedmisp peer add --kind misp` printed (node/api/misp_sync.py).

What B holds after a pull is checked against an oracle written from the distribution rules
(DESIGN, MISP's pull downgrade), not from the code: an item at 0 stays home, 1 is held by B at 0,
2 at 1, 3 at 3, 5 inherits; sharing-group data reaches B only when B's organisation is a member;
a tlp:red event stays home (the default push filter), an unpublished one too, and local tags never
leave. MISP is slow-ish (a pull takes seconds), so the tests are few and each does much.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from misp_kit import MispError
from test_api import running

from fedmisp.node.config import STORE_DIR
from fedmisp.node.home import init_home

# the node's pull filter for B: an event tagged so is refused when B pushes it
REFUSED_TAG = "fedmisp-test:refuse"


def _cli(*args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "fedmisp", *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def served(misp_kit, tmp_path_factory):
    """A running node with MISP B as a MISP peer (and B with the node as a sync server)."""
    b = misp_kit["B"]
    home = tmp_path_factory.mktemp("misp-serve") / "node"
    node, admin = init_home(home, "Node CSIRT", "127.0.0.1:0")
    node.close()
    out = _cli("peer", "add", "--home", str(home), "--name", "misp-b", "--kind", "misp", "--url", b.url,
               "--org-uuid", b.org_uuid)
    sync_key = next(line for line in out.splitlines() if re.fullmatch(r"[A-Za-z0-9]{40}", line))
    assert "Remote Sync Organisation" in out and "Node CSIRT" in out
    text = (home / "fedmisp.toml").read_text()
    (home / "fedmisp.toml").write_text(text + f'\n[peer.pull]\ntags_exclude = ["{REFUSED_TAG}"]\n')
    groups = {name: _group(home, name, member) for name, member in (("with B", b.org_uuid),
                                                                    ("without B", str(uuid.uuid4())))}
    for server in running(home, {"admin": admin, "sync": sync_key}):
        org = server.get("/users/view/me").json()["Organisation"]
        org_id = b.add_org(org["name"], org["uuid"])
        server_id = b.add_server(server.url, sync_key, org_id, f"node-{uuid.uuid4().hex[:8]}", push_sightings=True,
                                 pull_galaxy_clusters=True)
        yield server, b, server_id, org, groups


def _group(home: Path, name: str, member: str) -> str:
    out = _cli("sharing-group", "create", "--home", str(home), "--name", name, "--member", member)
    return re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", out).group(0)


def _post(server, path: str, body: Any, key: str = "admin") -> dict[str, Any]:
    r = requests.post(server.url + path, json=body, headers={"Authorization": server.keys[key],
                                                             "Accept": "application/json"}, timeout=60)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def _object(domain: str) -> dict[str, Any]:
    """A domain-ip object (misp-objects), inheriting its event's level."""
    return {"name": "domain-ip", "meta-category": "network", "template_uuid": "43b3b146-77eb-4931-b4cc-b66c60f28734",
            "template_version": "11", "description": "A domain/hostname and IP address seen as a tuple",
            "distribution": 5, "Attribute": [{"object_relation": "domain", "type": "domain", "value": domain,
                                              "category": "Network activity", "distribution": 5}]}


def _attribute(value: str, level: int) -> dict[str, Any]:
    return {"type": "domain", "category": "Network activity", "value": value, "to_ids": True, "distribution": level}


def _event(server, info: str, level: int, attributes: list[dict[str, Any]], group: str | None = None,
           tags: tuple[str, ...] = (), published: bool = True, objects: tuple[dict[str, Any], ...] = ()) -> str:
    event: dict[str, Any] = {"info": info, "distribution": level, "threat_level_id": 2, "analysis": 0,
                             "published": published, "Attribute": attributes, "Object": list(objects),
                             "Tag": [{"name": t, "local": t.startswith("local:")} for t in tags]}
    if group:
        event["sharing_group_uuid"] = group
    return _post(server, "/events/add", {"Event": event})["Event"]["uuid"]


# --- the oracle ------------------------------------------------------------------------------------

def held_by_misp(level: int, member: bool) -> int | None:
    """The level MISP holds an item at after pulling it from a node that holds it at `level`
    (DESIGN: 0 stays home, 1 and 2 spend a hop; MISP's downgrade: 1 -> 0, 2 -> 1), None: not at all."""
    return {0: None, 1: 0, 2: 1, 3: 3, 4: 4 if member else None, 5: 5}[level]


def expected(spec: dict[str, Any]) -> dict[str, Any] | None:
    """What B holds of an event the node made: its level and {value: level} of its attributes."""
    if not spec["published"] or "tlp:red" in spec["tags"]:
        return None
    level = held_by_misp(spec["level"], spec["member"])
    if level is None:
        return None
    attributes = {}
    for a in spec["attributes"]:
        held = held_by_misp(a["distribution"], spec["member"])
        if held is not None:
            attributes[a["value"]] = held
    return {"level": level, "attributes": attributes, "tags": sorted(t for t in spec["tags"] if not t.startswith("local:"))}


def on_misp(b, event_uuid: str) -> dict[str, Any] | None:
    event = b.event(event_uuid)
    if event is None:
        return None
    return {"level": int(event["distribution"]),
            "attributes": {a["value"]: int(a["distribution"]) for a in event.get("Attribute", [])},
            "tags": sorted(t["name"] for t in event.get("Tag", []))}


# --- MISP pulls ------------------------------------------------------------------------------------

def test_misp_pulls_exactly_what_the_outbound_policy_allows_at_the_level_misp_expects(served):
    server, b, server_id, org, groups = served
    with_b, without_b = groups["with B"], groups["without B"]
    stamp = time.time_ns()
    specs = []
    for i, (level, group, tags, published) in enumerate([
            (0, None, (), True), (1, None, (), True), (2, None, (), True),
            (3, None, ("tlp:green", "local:triage"), True), (4, with_b, (), True), (4, without_b, (), True),
            (3, None, ("tlp:red",), True), (3, None, (), False)]):
        attributes = [_attribute(f"a{i}-{lv}-{stamp}.example", lv) for lv in (5, 0, 1, 2, 3)]
        spec = {"level": level, "attributes": attributes, "tags": tags, "published": published,
                "member": group == with_b}
        spec["uuid"] = _event(server, f"pulled {i} {stamp}", level, attributes, group, tags, published,
                              objects=(_object(f"o{i}-{stamp}.example"),) if level == 3 else ())
        specs.append(spec)
    # a note on the community event rides along in it (MISP captures the analyst data of an event it adds)
    _post(server, f"/analyst_data/add/Note/{specs[3]['uuid']}/Event", {"note": f"node note {stamp}", "distribution": 3})
    output = b.pull(server_id, "full")
    assert "Pull completed" in output, output
    wrong = {s["uuid"]: (expected(s), on_misp(b, s["uuid"])) for s in specs if expected(s) != on_misp(b, s["uuid"])}
    assert wrong == {}
    community = b.event(specs[3]["uuid"])
    assert [n["note"] for n in community.get("Note", [])] == [f"node note {stamp}"]
    assert [(o["name"], [a["value"] for a in o["Attribute"]]) for o in community["Object"]] == \
        [("domain-ip", [f"o3-{stamp}.example"])]
    shared = b.event(specs[4]["uuid"])
    assert shared["SharingGroup"]["uuid"] == with_b and shared["Orgc"]["uuid"] == org["uuid"]
    # the node counted what it sent and withheld for the MISP peer
    audit = [json.loads(line) for line in (server.home / "audit.log").read_text().splitlines()]
    mine = [a for a in audit if a["peer"] == "misp-b" and a["direction"] == "out"]
    assert {a["event_uuid"] for a in mine if a["action"] == "sent"} >= {s["uuid"] for s in specs if expected(s)}
    status = requests.get(server.url + "/node/v1/peers", headers={"Authorization": server.keys["admin"]}).json()
    assert status["misp-b"]["kind"] == "misp" and status["misp-b"]["last_pull"]

    # sightings both ways: the node's reach B on its next pull, B's reach the node on B's push
    edited = specs[3]["uuid"]
    community = next(a["value"] for a in specs[3]["attributes"] if a["distribution"] == 3)
    # (an hour ago: MISP pushes the sightings of an event only when its newest is newer than the node's)
    here = _post(server, "/sightings/add", {"value": community, "source": "node",
                                            "timestamp": int(time.time()) - 3600})["Sighting"]
    assert "Pull completed" in b.pull(server_id, "full")
    assert here["uuid"] in _sightings(b.call("POST", "/sightings/restSearch/event", {"uuid": [edited]})["response"])
    there = b.call("POST", "/sightings/add", {"value": community, "source": "misp-b"})
    # and a proposal made on B to the node's event goes with B's push
    proposed = b.call("POST", f"/shadow_attributes/add/{there['Sighting']['event_id']}", {"ShadowAttribute": {
        "type": "domain", "category": "Network activity", "value": f"proposed-{stamp}.example"}})
    # MISP shares a sighting of another organisation's event with the organisation its policy says:
    # by default (0) only the event owner's own sightings; 1 lets a reporter (the node) have them all
    b.cake("Admin", "setSetting", "Plugin.Sightings_policy", "1")
    try:
        b.call("POST", f"/events/publishSightings/{there['Sighting']['event_id']}")  # (MISP pushes them then too)
        b.push(server_id, "full")
    finally:
        b.cake("Admin", "setSetting", "Plugin.Sightings_policy", "0")
    held = _sightings(_post(server, f"/sightings/listSightings/{edited}/event", {}))
    assert held == {here["uuid"], there["Sighting"]["uuid"]}
    proposals = server.get(f"/shadow_attributes/index/{edited}").json()
    assert [(p["ShadowAttribute"]["value"], p["ShadowAttribute"]["Org"]["uuid"]) for p in proposals] == \
        [(proposed["ShadowAttribute"]["value"], b.org_uuid)]

    # an edit on the node: the next pull brings the new revision (MISP skips what it holds unchanged)
    _next_second(int(b.event(edited)["timestamp"]))
    _post(server, f"/events/edit/{edited}", {"Event": {"info": f"edited {stamp}", "published": True,
                                                       "Attribute": [_attribute(f"new-{stamp}.example", 5)]}})
    assert "Pull completed" in b.pull(server_id, "full")
    event = b.event(edited)
    assert event["info"] == f"edited {stamp}"
    assert {a["value"] for a in event["Attribute"]} == set(expected(specs[3])["attributes"]) | {f"new-{stamp}.example"}


def _next_second(stamp: int) -> None:
    """Wait until the clock is past `stamp` (MISP and the node keep timestamps in seconds)."""
    while int(time.time()) <= stamp:
        time.sleep(0.1)


def _sightings(answer: list[dict[str, Any]]) -> set[str]:
    return {s["Sighting"]["uuid"] for s in answer}


# --- MISP pushes -----------------------------------------------------------------------------------

def _misp_event(b, info: str, value: str, tags: tuple[str, ...] = ()) -> dict[str, Any]:
    event = b.call("POST", "/events/add", {"Event": {
        "info": info, "distribution": 3, "threat_level_id": 2, "analysis": 0,
        "Attribute": [_attribute(value, 5)], "Tag": [{"name": t} for t in tags]}})["Event"]
    try:
        b.call("POST", f"/events/publish/{event['id']}")  # (MISP pushes a published event at once, too)
    except MispError as e:  # published, and MISP says the push to the node failed: the node refused it
        assert "failed_servers" in str(e) and tags, e
    return event


def _on_node(server, event_uuid: str) -> dict[str, Any] | None:
    r = requests.get(server.url + f"/events/view/{event_uuid}",
                     headers={"Authorization": server.keys["admin"], "Accept": "application/json"}, timeout=30)
    return r.json()["Event"] if r.status_code == 200 else None


def test_misp_pushes_to_the_node_through_its_inbound_policy_and_only_that_peer_revises(served):
    server, b, server_id, _org, _groups = served
    stamp = time.time_ns()
    good = _misp_event(b, f"from B {stamp}", f"pushed-{stamp}.example")
    bad = _misp_event(b, f"refused {stamp}", f"refused-{stamp}.example", (REFUSED_TAG,))
    b.push(server_id, "full")
    held = _on_node(server, good["uuid"])
    assert held is not None and held["Orgc"]["uuid"] == b.org_uuid and held["info"] == f"from B {stamp}"
    assert _on_node(server, bad["uuid"]) is None  # refused, with its reason counted
    audit = [json.loads(line) for line in (server.home / "audit.log").read_text().splitlines()]
    refusals = [a for a in audit if a.get("event_uuid") == bad["uuid"] and a["action"] == "refused"]
    assert refusals and refusals[0]["peer"] == "misp-b" and refusals[0]["reason"] == "pull-filter"
    stored = [a for a in audit if a.get("event_uuid") == good["uuid"] and a["action"] == "stored"]
    assert stored and stored[0]["peer"] == "misp-b"
    from fedmisp.store.store import Store
    with Store(server.home / STORE_DIR, readonly=True) as store:
        assert store.event_meta(good["uuid"]).source == "misp:misp-b"

    # an edit on B, pushed again, replaces it (made a second later: MISP's timestamps are in seconds,
    # and only a newer one replaces what is held)
    _next_second(int(held["timestamp"]))
    b.call("POST", f"/events/edit/{good['id']}", {"Event": {"info": f"edited on B {stamp}"}})
    b.call("POST", f"/events/publish/{good['id']}")
    b.push(server_id, "full")
    assert _on_node(server, good["uuid"])["info"] == f"edited on B {stamp}"

    # a proposal made on the node to B's event reaches B on its next pull
    attribute = held["Attribute"][0]["uuid"]
    _post(server, f"/shadow_attributes/edit/{attribute}", {"ShadowAttribute": {"comment": f"node says {stamp}"}})
    assert "1 proposals pulled" in b.pull(server_id, "full")
    on_b = b.call("GET", f"/shadow_attributes/index/{good['id']}")
    assert [(p["ShadowAttribute"]["comment"], p["ShadowAttribute"].get("old_id") != "0") for p in on_b] == \
        [(f"node says {stamp}", True)]

    # the node's own API may not revise it: only the MISP peer, through the bridge (not-bridge)
    r = requests.post(server.url + f"/events/edit/{good['uuid']}", json={"Event": {"info": "local edit"}},
                      headers={"Authorization": server.keys["admin"], "Accept": "application/json"}, timeout=30)
    assert r.status_code == 403 and "MISP" in r.json()["message"], r.text
    assert _on_node(server, good["uuid"])["info"] == f"edited on B {stamp}"


def test_a_sync_key_cannot_administer_the_node_nor_revise_its_events(served):
    server, _b, _server_id, _org, _groups = served
    own = _event(server, f"the node's own {time.time_ns()}", 3, [_attribute(f"own-{time.time_ns()}.example", 5)])
    headers = {"Authorization": server.keys["sync"], "Accept": "application/json"}
    admin = requests.post(server.url + "/admin/organisations/add", headers=headers, timeout=30,
                          json={"Organisation": {"name": "Intruder", "uuid": str(uuid.uuid4())}})
    assert admin.status_code == 403 and "sync key" in admin.text
    deleted = requests.post(server.url + f"/events/delete/{own}", headers=headers, timeout=30)
    assert deleted.status_code == 403 and "sync key" in deleted.text
    # events/edit with a sync key is MISP's push, and a MISP peer revises only what came from it
    event = _on_node(server, own)
    pushed = requests.post(server.url + f"/events/edit/{own}/metadata:1", headers=headers, timeout=30,
                           json={"Event": {**event, "info": "rewritten", "timestamp": str(int(time.time()) + 60),
                                           "Orgc": event["Orgc"]}})
    assert pushed.status_code == 403 and "not-bridge" in pushed.text, pushed.text
    assert _on_node(server, own)["info"].startswith("the node's own")
