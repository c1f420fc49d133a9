"""Three parties, real processes: MISP A -> node n1 -> node n2 -> MISP B, with MISP's own sync code
at both ends (the kit's instances, tests/misp_kit.py) and fedmisp replication between the nodes.

n1 pulls from MISP A with a sync user's key (`fedmisp misp pull`); n1 and n2 are fedmisp peers;
MISP B pulls from and pushes to n2 (`cake Server pull|push`), n2 having printed B's sync key
(`fedmisp peer add --kind misp`). What B ends with is checked against an oracle written from the
distribution rules, one hop spent per transfer (DESIGN; MISP's pull downgrade), not from the code.
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from fedmisp.node.config import load_config
from fedmisp.store.store import Store

from nodes import configure, running, wait_for

LEVELS = (1, 2, 3)


def _cli(*args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "fedmisp", *args], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def after_hops(level: int, hops: int) -> int | None:
    """The level an item is held at `hops` transfers from its origin, None once it may go no further:
    0 never leaves, 1 and 2 spend a level per hop, 3 and inherit (5) stay."""
    for _ in range(hops):
        if level == 0:
            return None
        if level in (1, 2):
            level -= 1
    return level


def _held(home: Path, event_uuid: str) -> dict | None:
    store = Store(home / "store", readonly=True)
    try:
        found = store.export_event(event_uuid)
        return found["Event"] if found else None
    except KeyError:
        return None
    finally:
        store.close()


def _org(home: Path) -> tuple[str, str]:
    config = load_config(home)
    return config.org_uuid, config.org_name


def test_misp_a_to_two_nodes_to_misp_b_delivers_what_the_policy_allows_and_a_sighting_at_b_reaches_the_creator(
        misp_kit, tmp_path):
    a, b = misp_kit["A"], misp_kit["B"]
    nodes = configure(tmp_path, ["n1", "n2"], [("n1", "n2")], anti_entropy=1.0)
    n1, n2 = nodes["n1"].home, nodes["n2"].home
    n1_org, n2_org = _org(n1), _org(n2)
    key_on_a = a.add_sync_user(a.add_org(n1_org[1], n1_org[0]), f"n1-{uuid.uuid4().hex[:8]}@chain.test")
    _cli("peer", "add", "--home", str(n1), "--name", "misp-a", "--kind", "misp", "--url", a.url,
         "--org-uuid", a.org_uuid, "--misp-key", key_on_a, "--mode", "pull-only")
    sync_key = _cli("peer", "add", "--home", str(n2), "--name", "misp-b", "--kind", "misp", "--url", b.url,
                    "--org-uuid", b.org_uuid).strip().splitlines()[-1]

    # MISP A: one published event per level, each with an attribute per level and one inheriting;
    # a tlp:red one (n1 keeps it; its default push filter keeps it from n2); an unpublished one
    made: dict[str, dict] = {}
    for level in LEVELS:
        attributes = [{"type": "domain", "category": "Network activity", "to_ids": True, "distribution": d,
                       "value": f"l{level}-d{d}-{uuid.uuid4().hex[:8]}.chain.example"} for d in (*LEVELS, 5)]
        answer = a.call("POST", "/events/add", {"Event": {"info": f"chain level {level}", "distribution": level,
                                                          "published": True, "threat_level_id": 2, "analysis": 1,
                                                          "Attribute": attributes}})
        made[answer["Event"]["uuid"]] = {"level": level, "attributes": {x["value"]: x["distribution"] for x in attributes}}
    red = a.call("POST", "/events/add", {"Event": {"info": "chain red", "distribution": 3, "published": True,
                                                   "Tag": [{"name": "tlp:red"}], "Attribute": [
                                                       {"type": "ip-dst", "value": "203.0.113.77"}]}})["Event"]["uuid"]
    draft = a.call("POST", "/events/add", {"Event": {"info": "chain draft", "distribution": 3, "published": False,
                                                     "Attribute": [{"type": "ip-dst", "value": "203.0.113.78"}]}}
                   )["Event"]["uuid"]
    # n1's own event, for the sighting made at B to travel back to its creator
    own = {"Event": {"uuid": str(uuid.uuid4()), "info": "n1's own", "date": "2026-12-01", "distribution": "3",
                     "published": True, "threat_level_id": "2", "analysis": "1", "timestamp": "1765000000",
                     "Attribute": [{"uuid": str(uuid.uuid4()), "type": "url", "category": "Network activity",
                                    "value": "http://chain.example/own", "to_ids": True, "distribution": "5",
                                    "timestamp": "1765000000"}]}}
    (tmp_path / "own.json").write_text(json.dumps(own))
    _cli("import", "--home", str(n1), str(tmp_path / "own.json"))
    own_uuid, own_attribute = own["Event"]["uuid"], own["Event"]["Attribute"][0]["uuid"]

    summary = _cli("misp", "pull", "--home", str(n1), "--name", "misp-a")
    assert summary.strip(), "fedmisp misp pull printed no summary"
    for event_uuid, spec in made.items():
        held = _held(n1, event_uuid)
        assert held is not None and int(held["distribution"]) == after_hops(spec["level"], 1), (event_uuid, held)
        assert held["Orgc"]["uuid"] == a.org_uuid
    assert _held(n1, red) is not None and _held(n1, draft) is None

    with running(nodes):
        wait_for(lambda: all(_held(n2, u) is not None for u, s in made.items() if after_hops(s["level"], 2) is not None)
                 and _held(n2, own_uuid) is not None, timeout=60, what="n2 holds what n1 may send it")
        org_id = b.add_org(n2_org[1], n2_org[0])
        server = b.add_server(f"http://127.0.0.1:{nodes['n2'].port}", sync_key, org_id, f"n2-{uuid.uuid4().hex[:8]}", push=True, pull=True,
                              push_sightings=True)
        b.pull(server)
        # the oracle: three hops from MISP A (A -> n1 -> n2 -> B)
        for event_uuid, spec in made.items():
            level = after_hops(spec["level"], 3)
            held = b.event(event_uuid)
            if level is None:
                assert held is None, (spec, held)
                continue
            assert held is not None and int(held["distribution"]) == level and held["Orgc"]["uuid"] == a.org_uuid
            expected = {v: after_hops(d, 3) for v, d in spec["attributes"].items() if after_hops(d, 3) is not None}
            assert {x["value"]: int(x["distribution"]) for x in held["Attribute"]} == expected
        assert b.event(red) is None and b.event(draft) is None
        shown = b.event(own_uuid)
        assert shown is not None and shown["Orgc"]["uuid"] == n1_org[0]

        # a sighting made at MISP B on n1's event reaches n1 through n2
        made_sighting = b.call("POST", f"/sightings/add/{own_attribute}", {"type": "0", "source": "chain-test"})
        # (MISP shares another organisation's sighting with the organisations its policy says: by
        # default (0) only with the event's owner, which on B is B; 2 lets every organisation have them)
        b.cake("Admin", "setSetting", "Plugin.Sightings_policy", "2")
        try:
            # MISP offers sightings once they are published (the event's sighting_timestamp moves
            # then); with no background jobs, publishing them pushes them to the servers at once
            b.call("POST", f"/events/publishSightings/{made_sighting['Sighting']['event_id']}")
            pushed = b.push(server)
        finally:
            b.cake("Admin", "setSetting", "Plugin.Sightings_policy", "0")

        def sightings(home: Path) -> list[dict]:
            held = _held(home, own_uuid) or {}
            return [s for x in held.get("Attribute", []) for s in x.get("Sighting", []) if s.get("source") == "chain-test"]
        assert sightings(n2), ("MISP B's push brought n2 no sighting", made_sighting, pushed)
        wait_for(lambda: sightings(n1), timeout=60, what="the sighting made at MISP B on n1")
        (sighting,) = sightings(n1)
        assert sighting["Organisation"]["uuid"] == b.org_uuid
    assert nodes["n1"].integrity() == [] and nodes["n2"].integrity() == []
