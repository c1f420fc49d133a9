"""MISP's sync routes (node/api/misp_sync.py) against what a careless or hostile MISP peer sends: each
bad value is refused with a 4xx naming the field, nothing is stored half-way, and the answers
MISP's sync code reads (ETag and 304, HEAD, the 'not newer' refusal) are MISP's. In process (the
real application over a real node's store); tests/test_misp_serve.py runs MISP itself against it."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from fedmisp.node.api.app import make_app
from fedmisp.node.api.helpers import ApiContext
from fedmisp.node.home import init_home
from fedmisp.node.misp_config import MispPeer
from fedmisp.policy.model import PeerMode
from fedmisp.store.writer import Writer

MISP_ORG = str(uuid.uuid4())


@pytest.fixture
def node(tmp_path):
    node, admin = init_home(tmp_path / "node", "Node CSIRT", "127.0.0.1:0")
    node.config = dataclasses.replace(node.config, misp_peers=(
        MispPeer("misp-x", "http://127.0.0.1:9", org_uuid=MISP_ORG),
        MispPeer("misp-ro", "http://127.0.0.1:9", org_uuid=MISP_ORG, mode=PeerMode.PUSH_ONLY)))
    keys = {"admin": admin, "sync": node.create_api_key("sync", "test", peer="misp-x"),
            "push-only": node.create_api_key("sync", "test", peer="misp-ro")}
    writer = Writer(node.store)
    yield node, writer, keys
    writer.close()
    node.close()


def calls(node, writer, keys: dict[str, str], requests: list[tuple[str, str, str, Any]]
          ) -> list[tuple[int, Any, Any]]:
    """(status, JSON or text, headers) of each (method, path, key, body or (body, headers))."""
    async def go() -> list[tuple[int, Any, Any]]:
        async with TestClient(TestServer(make_app(ApiContext(node, writer)))) as client:
            out = []
            for method, path, key, body in requests:
                body, extra = body if isinstance(body, tuple) else (body, {})
                data = body if isinstance(body, (bytes, str)) else json.dumps(body) if body is not None else None
                async with client.request(method, path, data=data, headers={
                        "Authorization": keys[key], "Accept": "application/json", **extra}) as r:
                    text = await r.text()
                    try:
                        answer = json.loads(text) if text else None
                    except ValueError:
                        answer = text
                    out.append((r.status, answer, r.headers.copy()))  # (case-insensitive)
            return out
    return asyncio.run(go())


@pytest.fixture
def api(node):
    """Send requests (method, path, key name, body or (body, headers)) to the node's application."""
    n, writer, keys = node
    return lambda *requests: calls(n, writer, keys, list(requests))


def misp_event(info: str = "pushed", stamp: int | None = None, **fields: Any) -> dict[str, Any]:
    return {"Event": {"uuid": str(uuid.uuid4()), "info": info, "distribution": "3", "threat_level_id": "2",
                      "analysis": "0", "published": True, "date": "2026-01-01",
                      "timestamp": str(stamp or int(time.time())), "Orgc": {"uuid": MISP_ORG, "name": "MISP X"},
                      "Attribute": [{"uuid": str(uuid.uuid4()), "type": "domain", "category": "Network activity",
                                     "value": f"{uuid.uuid4().hex}.example", "to_ids": True, "distribution": "5"}],
                      **fields}}


def test_the_index_has_an_etag_and_answers_304_to_it_and_head_says_what_the_peer_has(api):
    made = api(("POST", "/events/add", "admin", {"Event": {"info": "ours", "distribution": 3, "published": True,
                                                          "Attribute": [{"type": "domain", "value": "o.example"}]}}))
    ours = made[0][1]["Event"]["uuid"]
    (status, rows, headers), = api(("POST", "/events/index", "sync", {"minimal": 1, "published": 1}))
    assert status == 200 and [r["uuid"] for r in rows] == [ours] and rows[0]["sighting_timestamp"] == "0"
    again, = api(("POST", "/events/index", "sync", ({"minimal": 1, "published": 1},
                                                    {"If-None-Match": headers["ETag"]})))
    assert again[0] == 304
    heads = api(("HEAD", f"/events/view/{ours}", "sync", None),
                ("HEAD", f"/events/view/{uuid.uuid4()}", "sync", None))
    assert [h[0] for h in heads] == [200, 404]
    bad, = api(("POST", "/events/index", "sync", {"published": 1, "frobnicate": 1}))
    assert bad[0] == 400 and "frobnicate" in json.dumps(bad[1])
    # MISP's pull rules come as index filters (tags, org), applied on top of what the peer may have
    green = api(("POST", "/events/add", "admin", {"Event": {"info": "green", "distribution": 3, "published": True,
                                                           "Tag": [{"name": "tlp:green"}],
                                                           "Attribute": [{"type": "domain", "value": "g.example"}]}}))
    green_uuid = green[0][1]["Event"]["uuid"]
    ruled = api(("POST", "/events/index", "sync", {"minimal": 1, "published": 1, "tags": ["!tlp:green"]}),
                ("POST", "/events/index", "sync", {"minimal": 1, "published": 1, "tags": ["tlp:green"]}))
    assert [[r["uuid"] for r in answer[1]] for answer in ruled] == [[ours], [green_uuid]]


def test_a_pushed_event_is_stored_once_an_older_or_equal_one_is_misps_not_newer_and_bad_ones_name_why(api, node):
    n, _writer, _keys = node
    event = misp_event(stamp=int(time.time()) - 10)
    first, again = api(("POST", "/events/add/metadata:1", "sync", event),
                       ("POST", f"/events/edit/{event['Event']['uuid']}/metadata:1", "sync", event))
    assert first[0] == 200 and first[1]["Event"]["Orgc"]["uuid"] == MISP_ORG
    assert again[0] == 403 and "not newer than the local copy" in again[1]["errors"]
    assert n.store.event_meta(event["Event"]["uuid"]).source == "misp:misp-x"
    no_creator = misp_event()
    del no_creator["Event"]["Orgc"]
    other = misp_event()
    answers = api(("POST", "/events/add/metadata:1", "sync", no_creator),
                  ("POST", "/events/add/metadata:1", "sync", [1, 2]),
                  ("POST", "/events/add/metadata:1", "sync", b"{not json"),
                  ("POST", f"/events/edit/{uuid.uuid4()}/metadata:1", "sync", other),
                  ("POST", "/events/add/metadata:1", "push-only", misp_event()))
    assert [a[0] for a in answers] == [403, 400, 400, 400, 403]
    assert "Orgc" in answers[0][1]["message"] and "peer-mode" in answers[4][1]["message"]
    for refused in (no_creator, other):
        assert n.store.held(refused["Event"]["uuid"]) is None


def test_pushed_sightings_and_proposals_are_checked_field_by_field_and_kept_once(api, node):
    n, _writer, _keys = node
    event = misp_event()
    api(("POST", "/events/add/metadata:1", "sync", event))
    e = event["Event"]
    attribute = e["Attribute"][0]["uuid"]
    sighting = {"uuid": str(uuid.uuid4()), "attribute_uuid": attribute, "date_sighting": str(int(time.time())),
                "type": "0", "source": "misp", "org_id": "4", "Organisation": {"uuid": MISP_ORG, "name": "MISP X"}}
    stray = {**sighting, "uuid": str(uuid.uuid4()), "attribute_uuid": str(uuid.uuid4())}  # not in the event
    answers = api(("POST", f"/sightings/bulkSaveSightings/{e['uuid']}", "sync", [sighting, stray]),
                  ("POST", f"/sightings/bulkSaveSightings/{e['uuid']}", "sync", [sighting]),
                  ("POST", f"/sightings/filterSightingUuidsForPush/{e['uuid']}", "sync", [sighting["uuid"]]),
                  ("POST", f"/sightings/bulkSaveSightings/{e['uuid']}", "sync", [{**sighting, "type": "7"}]),
                  ("POST", f"/sightings/bulkSaveSightings/{e['uuid']}", "sync",
                   [{**sighting, "date_sighting": "yesterday"}]),
                  ("POST", f"/sightings/bulkSaveSightings/{e['uuid']}", "sync", {"Sighting": "x"}))
    assert [a[0] for a in answers] == [200, 200, 200, 400, 400, 400]
    assert answers[0][1]["success"] == "1 sightings added." and answers[1][1]["success"] == "No sightings added."
    assert answers[2][1] == [sighting["uuid"]]
    assert "[0].date_sighting" in json.dumps(answers[4][1])
    change = {"uuid": attribute, "old_id": "12", "event_uuid": e["uuid"], "type": "domain",
              "category": "Network activity", "value": "changed.example", "timestamp": str(int(time.time()))}
    wrong = {**change, "uuid": str(uuid.uuid4())}  # changes an attribute the event does not have
    pushed = api(("POST", f"/events/pushProposals/{e['uuid']}", "sync", [change, wrong, "x"]),
                 ("POST", f"/events/pushProposals/{e['uuid']}", "sync", [change]),
                 ("POST", f"/events/pushProposals/{e['uuid']}", "sync", {"not": "a list"}))
    assert [p[0] for p in pushed] == [200, 200, 400]
    assert pushed[0][1]["counter"] == 1 and "parent-withheld" in pushed[0][1]["message"]
    assert pushed[1][1]["counter"] == 0  # already open
    listed, = api(("GET", f"/shadow_attributes/index/{e['uuid']}", "admin", None))
    assert [(p["ShadowAttribute"]["value"], p["ShadowAttribute"]["Org"]["uuid"]) for p in listed[1]] == \
        [("changed.example", MISP_ORG)]


def test_the_push_candidates_and_proposal_pages_refuse_what_is_not_theirs_to_ask(api):
    answers = api(("POST", "/events/filterEventIdsForPush", "sync", [{"Event": {"uuid": "nope", "timestamp": "1"}}]),
                  ("POST", "/events/filterEventIdsForPush", "sync", {"Event": {}}),
                  ("POST", "/events/filterEventIdsForPush", "sync",
                   [{"Event": {"uuid": str(uuid.uuid4()), "timestamp": "1"}}]),
                  ("GET", "/shadow_attributes/index/all:1/timestamp:soon/limit:10/page:1.json", "sync", None),
                  ("GET", "/shadow_attributes/index/all:1/timestamp:0/limit:1000/page:1/deleted[]:0.json", "sync",
                   None),
                  ("POST", "/sightings/restSearch/attribute", "sync", {"uuid": []}),
                  ("POST", "/sightings/restSearch/event", "sync", {"uuid": ["x"]}))
    assert [a[0] for a in answers] == [400, 400, 200, 400, 200, 400, 400]
    assert "[0]" in json.dumps(answers[0][1]) and len(answers[2][1]) == 1 and answers[4][1] == []
    assert "timestamp" in json.dumps(answers[3][1])
