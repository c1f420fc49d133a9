"""A node pulls from and pushes to a real MISP 2.5 instance (node/misp_sync.py, decision 0032), as a
MISP server syncs with another: what the node holds after a pull is what MISP's pull rules give
(1 held as 0, 2 as 1, unpublished not at all), what MISP holds after a push is what MISP's push rules
give for the policy's offer, a pull interrupted by a failing writer resumes from its checkpoint
without loss or duplicates, and a MISP that cannot be used gives one clear error."""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests

from misp_kit import MispInstance, free_port
from nodes import wait_for
from test_api import running

from fedmisp.gossip.sharing_groups import create
from fedmisp.model.records import KIND_EVENT, KIND_SIGHTINGS, seal
from fedmisp.node.home import Node, init_home
from fedmisp.node.importer import import_paths
from fedmisp.node.misp_client import MispClient, MispError
from fedmisp.node.misp_config import MispPeer
from fedmisp.node.misp_sync import parse_index, pull, pull_checkpoint, pull_rules
from fedmisp.policy.model import SyncFilter
from fedmisp.store.writer import Writer

pytestmark = pytest.mark.slow
FEDMISP = [sys.executable, "-m", "fedmisp"]


# -- a node with MISP A as a MISP peer ---------------------------------------------------------------

def _node_with_misp_peer(tmp_path: Path, misp: MispInstance, *, key: str | None = None, url: str | None = None,
                         extra: str = "") -> tuple[Path, str, str]:
    """A node home whose organisation is known to MISP A with a Sync user there; (home, node org
    uuid, the node's admin API key). `key`/`url` replace the sync user's key and MISP's URL."""
    org_uuid = str(uuid.uuid4())
    home = tmp_path / "node"
    node, api_key = init_home(home, f"node-{org_uuid[:8]}", "127.0.0.1:0", org_uuid)
    node.close()
    if key is None:
        org_id = misp.add_org(f"node-{org_uuid[:8]}", org_uuid)
        key = misp.add_sync_user(org_id, f"sync-{org_uuid[:8]}@node.test")
    with open(home / "fedmisp.toml", "a") as f:
        f.write(f'\n[[peer]]\nname = "misp-a"\nkind = "misp"\nurl = "{url or misp.url}"\nmisp_key = "{key}"\n'
                f'org_uuid = "{misp.org_uuid}"\ninterval_seconds = 3600\n{extra}')
    return home, org_uuid, api_key


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*FEDMISP, *args], capture_output=True, text=True, timeout=600)


def _misp_event(misp: MispInstance, distribution: int, *, published: bool = True, tags: tuple[str, ...] = (),
                sharing_group: int | None = None, timestamp: int | None = None, attributes: int = 2,
                info: str = "") -> str:
    """An event on `misp` (its host organisation the creator); its uuid."""
    event_uuid = str(uuid.uuid4())
    event = {"uuid": event_uuid, "info": info or f"dist {distribution}", "distribution": distribution,
             "threat_level_id": 2, "analysis": 1, "date": "2026-12-01", "published": published,
             "Attribute": [{"type": "ip-dst", "category": "Network activity", "value": f"203.0.113.{n + 1}",
                            "to_ids": True, "distribution": 5} for n in range(attributes)],
             "Tag": [{"name": t} for t in tags]}
    if sharing_group is not None:
        event["sharing_group_id"] = sharing_group
    if timestamp is not None:
        event["timestamp"] = timestamp
    answer = misp.call("POST", "/events/add", {"Event": event})
    if published:
        misp.call("POST", f"/events/publish/{answer['Event']['id']}")
    return event_uuid


def _sharing_group(misp: MispInstance, org_uuid: str) -> tuple[int, str]:
    """A sharing group on `misp` of its host organisation and the node's; (its id there, its uuid)."""
    sg_uuid = str(uuid.uuid4())
    answer = misp.call("POST", "/sharing_groups/add", {"SharingGroup": {
        "name": f"sg-{org_uuid[:8]}", "releasability": "test", "uuid": sg_uuid, "active": True}})
    sg_id = int(answer["SharingGroup"]["id"])
    org_id = misp.add_org(f"node-{org_uuid[:8]}", org_uuid)
    misp.call("POST", f"/sharing_groups/addOrg/{sg_id}/{org_id}")
    return sg_id, sg_uuid


def _held(home: Path, event_uuid: str) -> dict | None:
    with Node.open(home, readonly=True) as node:
        event = node.store.export_event(event_uuid)
        meta = node.store.event_meta(event_uuid)
    return None if event is None else {**event["Event"], "_source": meta.source}


# -- pull ------------------------------------------------------------------------------------------

def test_a_node_pulls_what_misps_pull_rules_give_keeps_the_creator_and_follows_an_edit(misp_kit, tmp_path):
    a = misp_kit["A"]
    home, org_uuid, api_key = _node_with_misp_peer(tmp_path, a)
    sg, sg_uuid = _sharing_group(a, org_uuid)
    events = {level: _misp_event(a, level) for level in (1, 2, 3)}
    events[4] = _misp_event(a, 4, sharing_group=sg)
    # made an hour ago and not published: older than any checkpoint this pull reaches
    unpublished = _misp_event(a, 3, published=False, timestamp=int(time.time()) - 3600)

    online = _cli("config", "check", "--online", "--home", str(home))
    assert online.returncode == 0 and "MISP 2.5.1, misp_key is a sync user's there" in online.stdout, online.stderr
    done = _cli("misp", "pull", "--home", str(home), "--name", "misp-a")
    assert done.returncode == 0, done.stderr
    assert "pull from MISP peer misp-a:" in done.stdout and "event(s) stored" in done.stdout

    held = {level: _held(home, u) for level, u in events.items()}
    # MISP's pull rules: 1 held as 0, 2 as 1, 3 and the sharing group as they are
    assert {level: e["distribution"] for level, e in held.items()} == {1: "0", 2: "1", 3: "3", 4: "4"}
    assert all(e["Orgc"]["uuid"] == a.org_uuid and e["_source"] == "misp:misp-a" for e in held.values())
    with Node.open(home, readonly=True) as node:  # MISP's group, held on the community's behalf
        assert held[4]["sharing_group_uuid"] == sg_uuid and node.store.sharing_group(sg_uuid) is not None
    assert _held(home, unpublished) is None

    # an edit on MISP (a new attribute, published again) and the event published late, then the
    # next pull (incremental: what changed or was published since the checkpoint) takes both
    view = a.call("GET", f"/events/view/{events[3]}")["Event"]
    time.sleep(1.1)  # MISP's timestamps are seconds: the edit must be newer than what the node holds
    a.call("POST", f"/attributes/add/{view['id']}", {"type": "domain", "category": "Network activity",
                                                     "value": "edited.example", "distribution": 5})
    a.call("POST", f"/events/publish/{view['id']}")
    # MISP publishes without changing an event's timestamp: the next pull finds it by publish_timestamp
    a.call("POST", f"/events/publish/{a.call('GET', f'/events/view/{unpublished}')['Event']['id']}")
    done = _cli("misp", "pull", "--home", str(home), "--name", "misp-a")
    assert done.returncode == 0 and " 2 event(s) stored" in done.stdout, done.stdout + done.stderr
    assert "edited.example" in {x["value"] for x in _held(home, events[3])["Attribute"]}
    assert _held(home, unpublished)["distribution"] == "3"

    # `fedmisp run` pulls at its start (and every interval_seconds), and shows how it went
    later = _misp_event(a, 3, info="made while the node was away")
    for server in running(home, {"admin": api_key}):
        def misp_a() -> dict:
            return requests.get(f"{server.url}/node/v1/peers", headers={"Authorization": api_key},
                                timeout=30).json()["misp-a"]
        wait_for(lambda: "last_push_to" in misp_a(), what="the first sync's outcome in /node/v1/peers")
        shown = misp_a()
        assert _held(home, later) is not None
        assert shown["kind"] == "misp" and shown["last_pull_from"]["events_stored"] >= 1, shown
        assert "error" not in shown["last_pull_from"] and "summary" in shown["last_push_to"], shown
        # (listening on port 0, the node is not found by `fedmisp status`: it shows the checkpoints)
        status = _cli("status", "--home", str(home))
        assert f"misp-a           full             MISP {a.url} pulled to MISP timestamp" in status.stdout, status
        # the node's API refuses a local edit of an event that came from the MISP peer
        edit = requests.post(f"{server.url}/events/edit/{events[3]}", headers={
            "Authorization": api_key, "Accept": "application/json"}, json={"Event": {"info": "rewritten here"}},
            timeout=30)
        assert edit.status_code == 403, edit.text
    assert _held(home, events[3])["info"] == "dist 3"


def test_a_pull_that_fails_half_way_resumes_from_its_checkpoint_without_loss_or_duplicates(misp_kit, tmp_path,
                                                                                          monkeypatch):
    a = misp_kit["A"]
    tag = f"fedmisp-test:resume-{uuid.uuid4().hex[:8]}"
    home, _org, _key = _node_with_misp_peer(tmp_path, a, extra=f'pull = {{ tags_include = ["{tag}"] }}\n')
    start = int(time.time()) - 1000
    made = [_misp_event(a, 3, tags=(tag,), timestamp=start + 10 * n) for n in range(6)]
    monkeypatch.setattr("fedmisp.node.misp_sync.BATCH_EVENTS", 2)

    async def run(node: Node, writer: Writer, fail_after: int | None):
        calls = 0

        async def submit(events, checkpoint):
            nonlocal calls
            calls += 1
            if fail_after is not None and calls > fail_after:
                raise OSError("the disk is full")  # the writer fails: this batch is not stored
            return await asyncio.wrap_future(writer.submit(events, checkpoint=checkpoint))

        async def run_blocking(fn, *args):
            return fn(*args)
        async with MispClient(node.config.misp_peers[0]) as client:
            return await pull(node, node.config.misp_peers[0], client, submit, run_blocking)

    with Node.open(home) as node, Writer(node.store) as writer:
        with pytest.raises(OSError, match="the disk is full"):
            asyncio.run(run(node, writer, fail_after=1))
        peer = node.config.misp_peers[0]
        held = [u for u in made if node.store.held(u) is not None]
        assert held == made[:2] and node.store.checkpoint(pull_checkpoint(peer)) == start + 10
        head = node.store.head_sequence()

        report = asyncio.run(run(node, writer, fail_after=None))
        # listed from the checkpoint on: changed at or after it, or published since (all six, just
        # published); the two stored are held at that timestamp already, so they are not fetched again
        assert report.listed == 6 and report.skipped == 2 and report.files == 4
        assert report.events_stored == 4 and report.events_unchanged == 0 and report.refused == []
        assert all(node.store.held(u) is not None for u in made)
        assert node.store.checkpoint(pull_checkpoint(peer)) == start + 50
        # one revision each: the log grew by the four events not held before
        assert len(node.store.log_since(head, 1000)) == 4


def test_a_pull_killed_half_way_resumes_after_a_restart_without_loss_or_duplicates(misp_kit, tmp_path):
    """`fedmisp misp pull` killed (SIGKILL) once a first batch is stored, then run again: every event
    once, the store whole, the checkpoint at the newest event. (If the first run finishes before it
    is killed, the second finds nothing new: the assertions hold either way.)"""
    import signal
    from fedmisp.node.misp_sync import BATCH_EVENTS
    a = misp_kit["A"]
    tag = f"fedmisp-test:kill-{uuid.uuid4().hex[:8]}"
    home, _org, _key = _node_with_misp_peer(tmp_path, a, extra=f'pull = {{ tags_include = ["{tag}"] }}\n')
    start = int(time.time()) - 5000
    made = [_misp_event(a, 3, tags=(tag,), timestamp=start + n, attributes=1) for n in range(BATCH_EVENTS + 10)]
    first = subprocess.Popen([*FEDMISP, "misp", "pull", "--home", str(home), "--name", "misp-a"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def stored() -> int:
            if not (home / "store" / "data.mdb").exists():
                return 0
            with Node.open(home, readonly=True) as node:
                return sum(node.store.held(u) is not None for u in made)
        wait_for(lambda: first.poll() is not None or stored() > 0, timeout=120, what="a first batch stored")
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)
    before = stored()
    again = _cli("misp", "pull", "--home", str(home), "--name", "misp-a")
    assert again.returncode == 0, again.stdout + again.stderr
    with Node.open(home, readonly=True) as node:
        assert all(node.store.held(u) is not None for u in made)
        assert node.store.check_integrity() == []
        assert node.store.checkpoint(pull_checkpoint(node.config.misp_peers[0])) == start + len(made) - 1
        # one revision of each event in the log: none fetched and signed again
        events = [rid for _, rid in node.store.log_since(0, 100_000) if node.store.record(rid).kind == KIND_EVENT]
        assert len(events) == len(made)
    assert f"{len(made) - before} event(s) stored" in again.stdout, (before, again.stdout)


# -- push ------------------------------------------------------------------------------------------

def _own_event(n: int, distribution: int, org: dict, *, tags: tuple[str, ...] = ()) -> dict:
    """An event of the node's own organisation, published, with one attribute at each level 0-3
    and one inheriting."""
    return {"uuid": str(uuid.uuid4()), "info": f"node event {n}", "date": "2026-12-02", "threat_level_id": "2",
            "analysis": "1", "distribution": str(distribution), "published": True, "timestamp": str(1796000000 + n),
            "Orgc": org, "Tag": [{"name": t} for t in tags],
            "Attribute": [{"uuid": str(uuid.uuid4()), "type": "ip-dst", "category": "Network activity",
                           "value": f"192.0.2.{10 * n + level}", "to_ids": True, "distribution": str(level)}
                          for level in (0, 1, 2, 3, 5)]}


def _push_oracle(event: dict, with_a: str) -> dict[str, str] | None:
    """What MISP holds of an event a node pushes to it (Event::__updateEventForSync for a server
    that is not internal, after the default push filter keeps tlp:red home): None when nothing;
    else attribute value -> level, the event's own level under "event"."""
    if any(t["name"] == "tlp:red" for t in event["Tag"]):
        return None
    pushed = {"2": "1", "3": "3", "5": "5"}  # 0 and 1 are never pushed; 2 goes as 1
    level = event["distribution"]
    if level == "4":  # to a member organisation only, with the group (the event's name says which)
        if event["sharing_group_uuid"] != with_a:
            return None
        pushed["4"] = "4"
    if level not in pushed:
        return None
    return {"event": pushed[level], **{a["value"]: pushed[a["distribution"]] for a in event["Attribute"]
                                       if a["distribution"] in pushed}}


def test_a_node_pushes_what_misps_push_rules_give_never_echoes_a_misp_event_and_gets_sightings_and_proposals(misp_kit, tmp_path):
    a = misp_kit["A"]
    home, org_uuid, _key = _node_with_misp_peer(tmp_path, a)
    with Node.open(home, readonly=True) as node:
        org = {"uuid": org_uuid, "name": node.config.org_name}
    own = [_own_event(n, level, org) for n, level in enumerate((0, 1, 2, 3))]
    own.append(_own_event(4, 3, org, tags=("tlp:red",)))
    with Node.open(home) as node:
        # a sharing group MISP A's organisation is in, and one it is not in
        with_a = create(node.store, node.identity, org_uuid, "with A", {a.org_uuid: False}).uuid
        without_a = create(node.store, node.identity, org_uuid, "without A", {str(uuid.uuid4()): False}).uuid
        for n, group in ((5, with_a), (6, without_a)):
            own.append({**_own_event(n, 4, org), "sharing_group_uuid": group})
        (tmp_path / "own.json").write_text(json.dumps({"response": [{"Event": e} for e in own]}))
        assert import_paths(node, [tmp_path / "own.json"], workers=0).events_stored == 7
        # a sighting made here of the level-3 attribute of the level-3 event
        level_3_attribute = next(x["uuid"] for x in own[3]["Attribute"] if x["distribution"] == "3")
        mine = {"uuid": str(uuid.uuid4()), "attribute_uuid": level_3_attribute, "date_sighting": int(time.time()),
                "source": "node-sensor", "type": 0, "Organisation": org}
        node.store.write_records([seal(node.identity, KIND_SIGHTINGS,
                                       {"event_uuid": own[3]["uuid"], "sightings": [mine]})])
    from_a = _misp_event(a, 3, info="made on MISP A")
    done = _cli("misp", "pull", "--home", str(home), "--name", "misp-a")
    assert done.returncode == 0 and _held(home, from_a) is not None, done.stderr
    before = a.event(from_a)

    done = _cli("misp", "push", "--home", str(home), "--name", "misp-a")
    assert done.returncode == 0, done.stderr
    for event in own:
        expected, held = _push_oracle(event, with_a), a.event(event["uuid"])
        if expected is None:
            assert held is None, event["info"]
            continue
        assert held is not None, event["info"]
        assert held["Orgc"]["uuid"] == org_uuid
        if held["distribution"] == "4":
            assert held["SharingGroup"]["uuid"] == with_a
        assert {"event": held["distribution"], **{x["value"]: x["distribution"] for x in held["Attribute"]}} \
            == expected, event["info"]
    # the node's sighting went after its event, on behalf of the node's organisation
    there = a.call("GET", f"/sightings/index/{a.event(own[3]['uuid'])['id']}")
    assert [(x["uuid"], x["attribute_uuid"], x["Organisation"]["uuid"]) for x in there] == [
        (mine["uuid"], level_3_attribute, org_uuid)]
    assert "1 sighting(s) pushed" in done.stdout
    # what came from MISP A (the event made there, and whatever else it holds) is not pushed back
    with Node.open(home, readonly=True) as node:
        pulled = sum(node.store.event_meta(u).source == "misp:misp-a" for u in node.store.event_uuids())
    assert re.search(rf"(?<!\d){pulled} from that peer", done.stdout) and pulled >= 1, done.stdout
    assert a.event(from_a)["timestamp"] == before["timestamp"]

    # a second push: nothing changed here, nothing to push
    again = _cli("misp", "push", "--home", str(home), "--name", "misp-a")
    assert again.returncode == 0 and "0 changed event(s)" in again.stdout, again.stdout

    # an attribute deleted here is deleted there by the next push (MISP's push sends deleted items)
    gone = next(x for x in own[3]["Attribute"] if x["distribution"] == "2")
    assert gone["value"] in {x["value"] for x in a.event(own[3]["uuid"])["Attribute"]}
    edited = {**own[3], "timestamp": str(int(own[3]["timestamp"]) + 100),
              "Attribute": [{**x, "deleted": x is gone} for x in own[3]["Attribute"]]}
    (tmp_path / "edited.json").write_text(json.dumps({"Event": edited}))
    with Node.open(home) as node:
        assert import_paths(node, [tmp_path / "edited.json"], workers=0).events_stored == 1
    again = _cli("misp", "push", "--home", str(home), "--name", "misp-a")
    assert again.returncode == 0 and "1 pushed" in again.stdout, again.stdout
    assert gone["value"] not in {x["value"] for x in a.event(own[3]["uuid"])["Attribute"]}

    # a sighting made on MISP A of the node's event reaches the node (MISP shows an event's
    # sightings to the organisation that made it) once MISP published the event's sightings
    level_3 = a.event(own[3]["uuid"])
    attribute = next(x for x in level_3["Attribute"] if x["distribution"] == "3")
    sighted = a.call("POST", f"/sightings/add/{attribute['uuid']}", {"source": "misp-a-sensor"})["Sighting"]
    a.call("POST", f"/events/publishSightings/{level_3['id']}")
    # and a proposal made there to it (MISP A's organisation proposes a new attribute)
    a.call("POST", f"/shadow_attributes/add/{level_3['id']}", {"ShadowAttribute": {
        "type": "ip-dst", "category": "Network activity", "value": "198.51.100.77", "to_ids": True}})
    for _ in range(2):  # the second pull finds the sighting and the proposal held: not taken twice
        done = _cli("misp", "pull", "--home", str(home), "--name", "misp-a")
        assert done.returncode == 0, done.stderr
    with Node.open(home, readonly=True) as node:
        sightings = [x for r in node.store.event_records(own[3]["uuid"]) if r.kind == "sightings"
                     for x in r.body["sightings"]]
        proposals = [r.body["proposal"] for r in node.store.event_records(own[3]["uuid"]) if r.kind == "proposal"]
    assert [(x["value"], x["Org"]["uuid"]) for x in proposals] == [("198.51.100.77", a.org_uuid)]
    assert sorted((x["uuid"], x["attribute_uuid"], x["source"], x["Organisation"]["uuid"]) for x in sightings) == sorted([
        (sighted["uuid"], attribute["uuid"], "misp-a-sensor", a.org_uuid),
        (mine["uuid"], level_3_attribute, "node-sensor", org_uuid)])


# -- errors ----------------------------------------------------------------------------------------

def _one_clear_error(done: subprocess.CompletedProcess, *needles: str, secret: str = "") -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    assert not secret or secret not in done.stdout + done.stderr
    return lines[0]


def test_a_wrong_key_a_url_that_is_not_misp_an_unreachable_port_and_a_key_without_sync_each_say_so(misp_kit,
                                                                                                   tmp_path):
    a = misp_kit["A"]
    wrong = "x" * 40
    home, _org, _key = _node_with_misp_peer(tmp_path / "wrong", a, key=wrong)
    _one_clear_error(_cli("misp", "pull", "--home", str(home), "--name", "misp-a"),
                     a.url, "HTTP 403", "misp_key was refused", secret=wrong)
    _one_clear_error(_cli("config", "check", "--online", "--home", str(home)), a.url, "HTTP 403", secret=wrong)

    port = free_port()
    home, _org, _key = _node_with_misp_peer(tmp_path / "closed", a, key=wrong, url=f"http://127.0.0.1:{port}")
    _one_clear_error(_cli("misp", "push", "--home", str(home), "--name", "misp-a"),
                     f"http://127.0.0.1:{port}", "unreachable")

    # not a MISP: a node's own API answers /servers/getVersion as a MISP would not (no sync user
    # of this key), so a plain web server is used: Python's, on a free port
    port = free_port()
    web = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                            "--directory", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(port), what="the web server")
        home, _org, _key = _node_with_misp_peer(tmp_path / "web", a, key=wrong, url=f"http://127.0.0.1:{port}")
        _one_clear_error(_cli("misp", "pull", "--home", str(home), "--name", "misp-a"),
                         f"http://127.0.0.1:{port}/servers/getVersion", "not a MISP instance")
    finally:
        web.terminate()
        web.wait(timeout=30)

    roles = a.call("GET", "/roles/index")
    user_role = next(int(r["Role"]["id"]) for r in roles if r["Role"]["name"] == "User")
    org_uuid = str(uuid.uuid4())
    org_id = a.add_org(f"no-sync-{org_uuid[:8]}", org_uuid)
    user = a.call("POST", "/admin/users/add", {"User": {"email": f"user-{uuid.uuid4().hex[:6]}@node.test",
                                                       "org_id": org_id, "role_id": user_role, "change_pw": False}})
    plain = user["User"].get("authkey") or a.call("POST", f"/auth_keys/add/{user['User']['id']}",
                                                   {"AuthKey": {}})["AuthKey"]["authkey_raw"]
    home, _org, _key = _node_with_misp_peer(tmp_path / "user", a, key=plain)
    _one_clear_error(_cli("misp", "pull", "--home", str(home), "--name", "misp-a"),
                     a.url, "no sync permission", secret=plain)


def _answers(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)
        return True
    except requests.RequestException:
        return False


# -- a hostile or broken MISP (a local aiohttp server: no kit needed) --------------------------------

async def _serve(routes: dict):
    """A local aiohttp server of `routes` ((method, path) -> handler); (its runner, its URL)."""
    from aiohttp import web
    app = web.Application()
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def test_an_index_entry_that_is_not_an_event_or_dated_ahead_is_refused_by_name_and_the_rest_listed():
    good = str(uuid.uuid4())
    listed, refused = parse_index([
        {"uuid": good, "timestamp": "1700000000", "published": True},
        {"uuid": "../../etc/passwd", "timestamp": "1700000000", "published": True},
        {"uuid": str(uuid.uuid4()), "timestamp": "yesterday", "published": True},
        {"uuid": str(uuid.uuid4()), "timestamp": str(int(time.time()) + 10 * 86400), "published": True},
        {"uuid": str(uuid.uuid4()), "timestamp": "1700000000", "published": False}, "junk"], "index")
    assert [(e.uuid, e.timestamp) for e in listed] == [(good, 1700000000)]
    assert len(refused) == 4 and "field 'uuid'" in refused[0] and "field 'timestamp'" in refused[1]
    assert "in the future" in refused[2] and "entry #5" in refused[3]
    with pytest.raises(MispError, match="expected a list of events"):
        parse_index({"Event": []}, "index")


def test_an_answer_too_large_too_slow_or_not_json_or_a_misp_too_old_is_one_error_naming_the_url():
    from aiohttp import web

    answers = [{"version": "2.5.1", "perm_sync": True}, {"version": "2.4.100", "perm_sync": True}]

    async def version(request):
        return web.json_response(answers.pop(0))

    async def index(request):
        what = (await request.json()).get("what")
        if what == "large":
            return web.Response(body=b"[" + b"{}," * 2000 + b"{}]", content_type="application/json")
        if what == "slow":
            await asyncio.sleep(5)
        return web.Response(text="<html>MISP login</html>", content_type="text/html")

    async def scenario():
        runner, url = await _serve({("GET", "/servers/getVersion"): version, ("POST", "/events/index"): index})
        peer = MispPeer(name="hostile", url=url, org_uuid=str(uuid.uuid4()), misp_key="k" * 40,
                        max_event_bytes=1024, timeout_seconds=1)
        errors = []
        try:
            async with MispClient(peer) as client:
                assert (await client.check()).version == "2.5.1"
                for what in ("large", "slow", "html"):
                    with pytest.raises(MispError) as caught:
                        await client.call("POST", "/events/index", {"what": what})
                    errors.append(str(caught.value))
                with pytest.raises(MispError, match=r"getVersion\): MISP 2\.4\.100 is too old; this node syncs with "
                                                    r"MISP 2\.4\.156 or later"):
                    await client.check()
        finally:
            await runner.cleanup()
        return peer, errors
    peer, (large, slow, html) = asyncio.run(scenario())
    assert all(e.startswith(f"MISP peer hostile ({peer.url}/events/index): ") for e in (large, slow, html))
    assert "at most 1024" in large or "more than 1024 bytes" in large
    assert "no answer within 1 s (timeout_seconds)" in slow
    assert "not JSON" in html
    assert all("k" * 40 not in e for e in (large, slow, html))


def test_the_pull_filter_narrows_misps_index_only_where_exact_names_say_the_same():
    def rules(**pull) -> dict:
        return pull_rules(MispPeer(name="p", url="http://127.0.0.1:1", org_uuid="", misp_key="k" * 40,
                                   pull=SyncFilter(**pull)))
    assert rules() == {}
    assert rules(tags_include=("tlp:green", "tlp:clear"), tags_exclude=("tlp:red", "osint:*"),
                 orgs_exclude=("ORG-X",)) == {"tag": ["tlp:green", "tlp:clear", "!tlp:red"], "org": ["!ORG-X"]}
    # a wildcard include cannot be sent as exact names (MISP would list too little): left to the filter
    assert rules(tags_include=("tlp:green", "osint:*"), tags_exclude=("tlp:red",)) == {"tag": ["!tlp:red"]}


def _fake_event(event_uuid: str, timestamp: int, **extra) -> dict:
    org = {"uuid": "5d0f3a52-0000-4000-8000-00000000000a", "name": "ORG-FAKE"}
    return {"Event": {"uuid": event_uuid, "info": "from a fake MISP", "date": "2026-12-01", "threat_level_id": "2",
                      "analysis": "1", "distribution": "3", "published": True, "timestamp": str(timestamp),
                      "Orgc": org, "Org": org,
                      "Attribute": [{"uuid": str(uuid.uuid4()), "type": "ip-dst", "category": "Network activity",
                                     "value": "198.51.100.9", "to_ids": True, "distribution": "5",
                                     "timestamp": str(timestamp)}], **extra}}


def test_an_event_too_large_or_invalid_is_refused_a_failed_download_retried_and_the_rest_stored(tmp_path):
    """A MISP (here a local stand-in speaking its sync API) whose events are one good, one larger than
    max_event_bytes, one without a valid date, one whose download fails once."""
    from aiohttp import web
    good, large, invalid, flaky = (str(uuid.uuid4()) for _ in range(4))
    stamps = {good: 1_700_000_000, large: 1_700_000_001, invalid: 1_700_000_002, flaky: 1_700_000_003}
    views: dict[str, int] = {}

    async def version(request):
        return web.json_response({"version": "2.5.1", "perm_sync": True})

    async def index(request):
        query = await request.json()
        if "publish_timestamp" in query:
            return web.json_response([])
        return web.json_response([{"uuid": u, "timestamp": str(t), "published": True, "sighting_timestamp": "0"}
                                  for u, t in stamps.items() if t >= int(query.get("timestamp", 0))])

    async def view(request):
        event_uuid = request.match_info["uuid"]
        views[event_uuid] = views.get(event_uuid, 0) + 1
        if event_uuid == flaky and views[event_uuid] == 1:
            return web.json_response({"message": "Internal error"}, status=500)
        if event_uuid == large:
            return web.json_response(_fake_event(large, stamps[large], info="x" * 10_000))
        if event_uuid == invalid:
            return web.json_response(_fake_event(invalid, stamps[invalid], date="yesterday"))
        return web.json_response(_fake_event(event_uuid, stamps[event_uuid]))

    async def no_sightings(request):
        return web.json_response({"response": []})

    async def no_proposals(request):
        return web.json_response([])

    home = tmp_path / "node"
    init_home(home, "fake-test", "127.0.0.1:0")[0].close()

    async def scenario():
        runner, url = await _serve({
            ("GET", "/servers/getVersion"): version, ("POST", "/events/index"): index,
            ("GET", "/events/view/{uuid}/{params:.*}"): view, ("POST", "/sightings/restSearch/event"): no_sightings,
            ("GET", "/shadow_attributes/index/{params:.*}"): no_proposals})
        peer = MispPeer(name="fake", url=url, org_uuid=str(uuid.uuid4()), misp_key="k" * 40,
                        max_event_bytes=4096, timeout_seconds=10)
        reports = []
        try:
            with Node.open(home) as node, Writer(node.store) as writer:
                async def submit(events, checkpoint):
                    return await asyncio.wrap_future(writer.submit(events, checkpoint=checkpoint))

                async def run_blocking(fn, *args):
                    return fn(*args)
                for _ in range(2):
                    async with MispClient(peer) as client:
                        reports.append(await pull(node, peer, client, submit, run_blocking))
                held = {u: node.store.held(u) is not None for u in stamps}
        finally:
            await runner.cleanup()
        return reports, held
    (first, second), held = asyncio.run(scenario())
    assert first.events_stored == 1 and len(first.failed) == 1 and "HTTP 500" in first.failed[0]
    assert len(first.refused) == 2
    assert f"event {large}: MISP peer fake" in first.refused[0] and "max_event_bytes" in first.refused[0]
    assert invalid in first.refused[1] and "field 'date'" in first.refused[1]
    # the checkpoint stays at the failed download: the next pull lists it (and the invalid event,
    # which shares the listing's lower bound), not the good or the large one again
    assert first.checkpoint == stamps[invalid] and second.listed == 2 and second.events_stored == 1
    assert held == {good: True, large: False, invalid: False, flaky: True}
    assert views[good] == 1 and views[large] == 1 and views[flaky] == 2
