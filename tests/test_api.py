"""The REST API as PyMISP scripts see it: a real `fedmisp run` process on 127.0.0.1, the real PyMISP
client, a real LMDB store. One node serves the whole module and is stopped (SIGTERM) at its end."""
from __future__ import annotations

import copy
import json
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st
from pymisp import MISPEvent, MISPObject, PyMISP

from factories import ORG, event as factory_event
from fedmisp.model.identity import Identity
from fedmisp.model.misp import ImportDefaults, parse_event
from fedmisp.model.revision import sign_event
from fedmisp.node.home import ROLES, init_home
from fedmisp.store.query import element_id

MAX_REQUEST_BYTES = 1024 * 1024  # small, so the limit test sends little


@dataclass
class Server:
    url: str
    keys: dict[str, str]
    home: Path
    process: subprocess.Popen
    foreign_event: str  # uuid of an event another organisation's node signed

    def misp(self, role: str = "admin") -> PyMISP:
        return PyMISP(self.url, self.keys[role], ssl=False)

    def post(self, path: str, body: object = None, role: str = "admin", raw: bytes | None = None) -> requests.Response:
        if raw is not None:
            data = raw
        elif hasattr(body, "to_json"):  # a PyMISP object, serialised as PyMISP sends it
            data = body.to_json()
        else:
            data = json.dumps(body) if body is not None else None
        return requests.post(self.url + path, data=data, timeout=30,
                             headers={"Authorization": self.keys[role], "Accept": "application/json",
                                      "Content-Type": "application/json"})

    def get(self, path: str, role: str = "admin") -> requests.Response:
        return requests.get(self.url + path, headers={"Authorization": self.keys[role]}, timeout=30)

    def event_count(self) -> int:
        return len(self.get("/events/index").json())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("api") / "node"
    node, admin = init_home(home, "Test CSIRT", "127.0.0.1:0")  # port 0: the kernel picks a free port
    keys = {role: node.create_api_key(role, f"test {role}") for role in ROLES}
    keys["admin"] = admin
    # An event created by another organisation's node, held here as a peer would deliver it.
    other = Identity.generate()
    foreign = factory_event(seed=99, attributes=3, objects=0)["Event"]
    parsed = parse_event(foreign, ImportDefaults(org_uuid=ORG["uuid"], org_name=ORG["name"]))
    node.store.write_events([sign_event(other, parsed)])
    node.close()
    text = (home / "fedmisp.toml").read_text().replace("[limits]\n", f"[limits]\nmax_request_bytes = {MAX_REQUEST_BYTES}\n")
    (home / "fedmisp.toml").write_text(text)
    yield from running(home, keys, foreign["uuid"])


def running(home: Path, keys: dict[str, str], foreign_event: str = "") -> Iterator[Server]:
    """`fedmisp run` on `home` as a Server, stopped by its pid afterwards (for module fixtures)."""
    process = subprocess.Popen([sys.executable, "-m", "fedmisp", "run", "--home", str(home)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if match is None:
        process.kill()
        raise AssertionError(f"fedmisp run did not start: {line!r} {process.stderr.read()}")
    try:
        yield Server(match.group(0), keys, home, process, foreign_event)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)


def new_event(info: str = "phishing wave", **fields: object) -> MISPEvent:
    e = MISPEvent()
    e.info = info
    e.distribution = 1
    e.add_attribute("ip-dst", "198.51.100.20", to_ids=True)
    e.add_attribute("domain", "login-bank.example", Tag=[{"name": "kill-chain:delivery"}])
    e.add_tag("tlp:green")
    for key, value in fields.items():
        setattr(e, key, value)
    return e


def assert_misp_error(response: requests.Response, status: int, *needles: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["saved"] is False and {"name", "message", "url", "errors"} <= set(body)
    for needle in needles:
        assert needle in json.dumps(body), (needle, body)
    return body


# --- connecting, authentication, roles ---------------------------------------------------------------

def test_pymisp_connects_and_sees_its_role_and_describe_types(server: Server):
    misp = server.misp("publisher")
    user, role, _settings = misp.get_user(pythonify=True, expanded=True)
    assert role.name == "publisher" and role.perm_publish and not role.perm_site_admin
    import pymisp
    theirs = json.loads((Path(pymisp.__file__).parent / "data" / "describeTypes.json").read_text())["result"]
    assert misp.describe_types_remote == theirs


def test_requests_without_a_valid_key_are_refused(server: Server):
    no_key = requests.get(server.url + "/events/index", timeout=10)
    assert_misp_error(no_key, 403, "Authentication failed")
    wrong = requests.get(server.url + "/events/index", headers={"Authorization": "x" * 40}, timeout=10)
    assert_misp_error(wrong, 403, "Authentication failed")


def test_unknown_endpoints_are_misp_shaped_404s(server: Server):
    assert_misp_error(server.get("/events/frobnicate/1"), 404, "no such endpoint")
    assert_misp_error(server.get("/events/view/999999"), 404, "Invalid event")
    assert_misp_error(server.get("/events/view/not-an-id"), 404)


def test_roles_are_enforced_and_a_refused_add_stores_nothing(server: Server):
    before = server.event_count()
    refused = server.post("/events/add", new_event(), role="read-only")
    assert_misp_error(refused, 403, "You do not have permission", "needs user")
    assert server.event_count() == before
    added = server.misp("user").add_event(new_event(published=True), pythonify=True)
    assert added.published is False  # a user may not publish: MISP drops the flag
    assert_misp_error(server.post(f"/events/publish/{added.id}", role="user"), 403, "needs publisher")
    assert server.misp("publisher").publish(added.id)["success"] is True
    assert server.misp("read-only").get_event(added.id, pythonify=True).published is True


# --- events ----------------------------------------------------------------------------------------------

def test_add_view_and_exists_with_numeric_ids(server: Server):
    misp = server.misp()
    e = new_event("add and view")
    obj = MISPObject("domain-ip")
    obj.add_attribute("domain", "c2.example")
    obj.add_attribute("ip", "203.0.113.9")
    e.add_object(obj)
    added = misp.add_event(e, pythonify=True)
    assert added.uuid == e.uuid and int(added.id) > 0
    assert added.Orgc.name == "Test CSIRT"
    by_uuid = {a.uuid: a for a in added.attributes}
    for a in e.attributes:
        # an attribute's id is the first 7 bytes of its uuid (decision 0005)
        assert int(by_uuid[a.uuid].id) == int(a.uuid.replace("-", "")[:14], 16) == element_id(a.uuid)
    assert int(added.objects[0].id) == element_id(obj.uuid)
    assert added.objects[0].attributes[0].object_id == added.objects[0].id
    assert misp.get_event(added.uuid, pythonify=True).id == added.id
    assert misp.event_exists(added.id) and misp.event_exists(added.uuid)
    assert not misp.event_exists(987654) and not misp.event_exists(str(uuid.uuid4()))
    one = misp.get_attribute(by_uuid[e.attributes[0].uuid].id, pythonify=True)
    assert one.value == "198.51.100.20" and one.event_id == added.id
    again = server.post("/events/add", e)
    assert_misp_error(again, 403, "Event already exists", f"/events/edit/{added.id}")


def test_a_bad_attribute_is_dropped_and_named_and_the_event_stored_as_misp_does(server: Server):
    """MISP's events/add saves the event and drops an attribute that fails validation; the answer
    here names it in `errors` (decision 0028)."""
    e = new_event("one bad attribute")
    bad = e.add_attribute("md5", "not-a-hash")
    response = server.post("/events/add", e)
    assert response.status_code == 200, response.text
    answer = response.json()
    where = f"Attribute[2] (uuid {bad.uuid})"
    assert list(answer["errors"]) == [where] and list(answer["errors"][where]) == ["value"]
    assert "'not-a-hash'" in answer["errors"][where]["value"][0]
    held = server.misp().get_event(e.uuid)["Event"]
    assert sorted(a["value"] for a in held["Attribute"]) == ["198.51.100.20", "login-bank.example"]
    assert held["id"] == answer["Event"]["id"]


def test_a_bad_event_header_is_refused_whole_naming_the_field(server: Server):
    before = server.event_count()
    e = new_event("bad header")
    e.add_attribute("md5", "not-a-hash")
    e.threat_level_id = 9
    response = server.post("/events/add", e)
    body = assert_misp_error(response, 400, "threat_level_id", "1 to 4")
    assert list(body["errors"]) == ["event"]  # the header's problem, not the attribute's
    assert server.event_count() == before
    assert not server.misp().event_exists(e.uuid)


def test_an_attribute_uuid_another_event_uses_is_dropped(server: Server):
    first = server.misp().add_event(new_event("first"), pythonify=True)
    second = new_event("second")
    taken = second.attributes[0].uuid = first.attributes[0].uuid
    response = server.post("/events/add", second)
    assert response.status_code == 200, response.text
    errors = response.json()["errors"]
    assert list(errors) == [f"Attribute (uuid {taken})"]
    assert f"already used by event {first.uuid}" in errors[f"Attribute (uuid {taken})"]["uuid"][0]
    held = server.misp().get_event(second.uuid)["Event"]
    assert [a["uuid"] for a in held["Attribute"]] == [second.attributes[1].uuid]
    assert taken in [a["uuid"] for a in server.misp().get_event(first.uuid)["Event"]["Attribute"]]
    reuse = server.post(f"/attributes/add/{first.id}", {"type": "ip-dst", "value": "192.0.2.1",
                                                        "uuid": server.misp().get_event(server.foreign_event)[
                                                            "Event"]["Attribute"][0]["uuid"]})
    assert_misp_error(reuse, 400, "already used by event")


def test_malformed_bodies_are_4xx_and_the_node_keeps_serving(server: Server):
    assert_misp_error(server.post("/events/add", raw=b'{"Event": {"info": '), 400, "not valid JSON")
    assert_misp_error(server.post("/events/add", raw=b"\xff\xfe"), 400)
    assert_misp_error(server.post("/events/add", raw=b"[" * 100_000 + b"]" * 100_000), 400)
    assert_misp_error(server.post("/events/add", [1, 2]), 400, "expected")
    assert_misp_error(server.post("/events/add", {"Event": {"info": "x", "Attribute": "nope"}}), 400, "Attribute")
    big = server.post("/events/add", raw=b" " * (MAX_REQUEST_BYTES + 1))
    assert_misp_error(big, 413, str(MAX_REQUEST_BYTES), "max_request_bytes")
    assert server.get("/servers/getVersion").status_code == 200


def test_edit_applies_only_newer_timestamps(server: Server):
    misp = server.misp()
    added = misp.add_event(new_event("to edit"), pythonify=True)
    held_ts = int(added.timestamp.timestamp())
    added.info = "edited"
    added.attributes[0].comment = "seen in the wild"
    added.add_attribute("url", "https://login-bank.example/verify")
    edited = misp.update_event(added, pythonify=True)
    assert edited.info == "edited" and edited.id == added.id
    assert int(edited.timestamp.timestamp()) > held_ts
    values = {a.value: a for a in edited.attributes}
    assert values["198.51.100.20"].comment == "seen in the wild"
    assert "https://login-bank.example/verify" in values
    # an edit whose event timestamp is not newer than the held one is refused, as MISP does
    stale = {"Event": {"info": "stale", "timestamp": str(held_ts)}}
    assert_misp_error(server.post(f"/events/edit/{added.id}", stale), 403, "not newer than the local copy")
    # an attribute posted with its old timestamp is kept as held (MISP ignores it)
    old = values["198.51.100.20"]
    post = {"Event": {"Attribute": [{"uuid": old.uuid, "type": "ip-dst", "value": "198.51.100.99",
                                     "timestamp": str(int(old.timestamp.timestamp()))}]}}
    assert server.post(f"/events/edit/{added.id}", post).status_code == 200
    assert {a.value for a in misp.get_event(added.id, pythonify=True).attributes} >= {"198.51.100.20"}


def test_events_of_another_organisation_are_not_revised_here(server: Server):
    misp = server.misp()
    before = misp.get_event(server.foreign_event)
    refused = server.post(f"/events/edit/{server.foreign_event}", {"Event": {"info": "hijacked"}})
    assert_misp_error(refused, 403, "created by another organisation", "proposal")
    attribute = before["Event"]["Attribute"][0]
    refused = server.post(f"/attributes/delete/{attribute['id']}")
    assert_misp_error(refused, 403, "only its creator can revise it")
    assert misp.get_event(server.foreign_event) == before


def test_delete_event_removes_it_from_views_and_search(server: Server):
    misp = server.misp()
    e = new_event("to delete")
    e.attributes[0].value = "192.0.2.77"
    added = misp.add_event(e, pythonify=True)
    assert misp.search(controller="attributes", value="192.0.2.77", pythonify=True)
    assert misp.delete_event(added.id)["success"] is True
    assert not misp.event_exists(added.id)
    assert misp.search(controller="attributes", value="192.0.2.77", pythonify=True) == []
    assert added.uuid not in {row["uuid"] for row in misp.events()}
    assert_misp_error(server.post(f"/events/delete/{added.id}"), 404)


# --- attributes, tags, sightings ------------------------------------------------------------------------

def test_attribute_add_edit_soft_and_hard_delete(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("attributes"), pythonify=True)
    a = misp.add_attribute(event.id, {"type": "sha256", "value": "ab" * 32, "comment": "dropper"}, pythonify=True)
    assert a.event_id == event.id and a.category == "Payload delivery"
    duplicate = server.post(f"/attributes/add/{event.id}", {"type": "sha256", "value": "ab" * 32})
    assert_misp_error(duplicate, 403, "similar attribute")
    bad = server.post(f"/attributes/add/{event.id}", {"type": "sha256", "value": "zz"})
    assert_misp_error(bad, 400, "sha256")
    a.comment = "dropper, second stage"
    assert misp.update_attribute(a, pythonify=True).comment == "dropper, second stage"
    misp.delete_attribute(a.id)
    view = misp.get_event(event.id, pythonify=True)
    assert a.uuid not in {x.uuid for x in view.attributes}
    with_deleted = misp.get_event(event.id, deleted=True, pythonify=True)
    assert [x.deleted for x in with_deleted.attributes if x.uuid == a.uuid] == [True]
    misp.delete_attribute(a.id, hard=True)
    with_deleted = misp.get_event(event.id, deleted=True, pythonify=True)
    assert a.uuid not in {x.uuid for x in with_deleted.attributes}
    assert_misp_error(server.get(f"/attributes/view/{a.id}"), 404)


def test_tags_attach_and_remove_and_local_tags_stay_local(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("tags"), pythonify=True)
    attribute = event.attributes[0]
    misp.tag(event.uuid, "tlp:amber")
    misp.tag(attribute.uuid, "analyst:checked", local=True)
    view = misp.get_event(event.id)["Event"]
    assert {t["name"] for t in view["Tag"]} == {"tlp:green", "tlp:amber"}
    a = next(x for x in view["Attribute"] if x["uuid"] == attribute.uuid)
    assert [t for t in a["Tag"] if t["name"] == "analyst:checked"] == [{"name": "analyst:checked", "local": True}]
    names = {t["name"] for t in misp.tags()}
    assert {"tlp:amber", "kill-chain:delivery"} <= names
    misp.untag(event.uuid, "tlp:green")
    misp.untag(attribute.uuid, "analyst:checked")
    view = misp.get_event(event.id)["Event"]
    assert {t["name"] for t in view["Tag"]} == {"tlp:amber"}
    a = next(x for x in view["Attribute"] if x["uuid"] == attribute.uuid)
    assert "analyst:checked" not in {t["name"] for t in a.get("Tag", [])}
    # the feed export leaves local tags home: run in a separate CLI process against the running node
    misp.tag(event.uuid, "internal:case-42", local=True)
    feed = server.home.parent / "feed"
    subprocess.run([sys.executable, "-m", "fedmisp", "export", "--home", str(server.home), "--format", "feed",
                    "--out", str(feed)], check=True, capture_output=True, timeout=120)
    exported = json.loads((feed / f"{event.uuid}.json").read_text())["Event"]
    assert "internal:case-42" not in {t["name"] for t in exported.get("Tag", [])}
    assert "tlp:amber" in {t["name"] for t in exported.get("Tag", [])}


def test_sightings_are_signed_records_of_this_node(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("sighted"), pythonify=True)
    attribute = event.attributes[0]
    s = misp.add_sighting({"source": "ids-1"}, attribute.id)
    assert s["Sighting"]["attribute_uuid"] == attribute.uuid and s["Sighting"]["source"] == "ids-1"
    misp.add_sighting({"value": attribute.value, "type": "1"})  # by value: every attribute with it
    view = misp.get_event(event.id)["Event"]
    sightings = next(a for a in view["Attribute"] if a["uuid"] == attribute.uuid)["Sighting"]
    assert sorted((x["type"], x["source"]) for x in sightings) == [("0", "ids-1"), ("1", "")]
    assert all(x["Organisation"]["name"] == "Test CSIRT" for x in sightings)
    bad = server.post(f"/sightings/add/{attribute.id}", {"type": 7})
    assert_misp_error(bad, 400, "type")
    assert_misp_error(server.post("/sightings/add", {"value": "no-such-value.example"}), 404)


# --- restSearch ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def searchable(server: Server) -> dict[str, MISPEvent]:
    misp = server.misp()
    a = MISPEvent()
    a.info = "search A"
    a.add_attribute("ip-dst", "10.66.0.1", to_ids=True)
    a.add_attribute("domain", "alpha.search.example", to_ids=True, Tag=[{"name": "tlp:red"}])
    a.add_attribute("url", "http://alpha.search.example/x.php", to_ids=False)
    a.add_tag("campaign:alpha")
    b = MISPEvent()
    b.info = "search B"
    b.add_attribute("ip-dst", "10.66.0.2", to_ids=True)
    b.add_attribute("domain", "beta.search.example", to_ids=True)
    b.add_tag("campaign:beta")
    b.add_tag("tlp:red")
    out = {"a": misp.add_event(a, pythonify=True), "b": misp.add_event(b, pythonify=True)}
    misp.publish(out["b"].id)
    return out


def values(result: list) -> set[str]:
    return {a.value for a in result}


def test_search_attributes_by_value_type_and_wildcard(server: Server, searchable):
    misp = server.misp("read-only")
    assert values(misp.search(controller="attributes", value="10.66.0.1", pythonify=True)) == {"10.66.0.1"}
    assert values(misp.search(controller="attributes", value="%.search.example", pythonify=True)) == {
        "alpha.search.example", "beta.search.example"}
    assert values(misp.search(controller="attributes", value="10.66.0.%", type_attribute="ip-dst",
                              pythonify=True)) == {"10.66.0.1", "10.66.0.2"}
    assert values(misp.search(controller="attributes", value=["10.66.0.1", "beta.search.example"],
                              pythonify=True)) == {"10.66.0.1", "beta.search.example"}
    assert values(misp.search(controller="attributes", value="%.search.example%", type_attribute="!url",
                              pythonify=True)) == {"alpha.search.example", "beta.search.example"}
    assert misp.search(controller="attributes", value="ALPHA.search.example", pythonify=True)  # domains fold case


def test_an_exact_value_lookup_answers_as_the_thread_pool_search_does(server: Server, searchable):
    # A few exact values are looked up on the event loop once their events' heads are verified
    # (decision 0016); with a type term the same search goes through the thread pool.
    misp = server.misp("read-only")
    for value, types in (("10.66.0.1", ["ip-dst"]), (["10.66.0.2", "alpha.search.example"], ["ip-dst", "domain"]),
                         ("beta.search.example", ["domain"])):
        for extra in ({}, {"to_ids": True, "limit": 1}, {"published": True}):
            for _ in range(2):  # the first answer verifies the heads; the second may come from the loop
                plain = misp.search(controller="attributes", value=value, **extra)
            assert plain == misp.search(controller="attributes", value=value, type_attribute=types, **extra)
            assert plain["Attribute"] or "published" in extra
    assert misp.search(controller="attributes", value="10.66.0.1", published=True)["Attribute"] == []


def test_search_tags_or_and_not_over_attribute_and_event_tags(server: Server, searchable):
    misp = server.misp("read-only")
    red = values(misp.search(controller="attributes", tags="tlp:red", pythonify=True))
    assert red == {"alpha.search.example", "10.66.0.2", "beta.search.example"}  # attribute tag, or event tag
    both = misp.build_complex_query(and_parameters=["tlp:red", "campaign:alpha"])
    assert values(misp.search(controller="attributes", tags=both, pythonify=True)) == {"alpha.search.example"}
    not_red = misp.build_complex_query(or_parameters=["campaign:%"], not_parameters=["tlp:red"])
    assert values(misp.search(controller="attributes", tags=not_red, pythonify=True)) == {
        "10.66.0.1", "http://alpha.search.example/x.php"}
    events = misp.search(tags="campaign:beta", pythonify=True)
    assert [e.info for e in events] == ["search B"]


def test_search_by_event_flags_ids_and_uuids(server: Server, searchable):
    misp = server.misp("read-only")
    a, b = searchable["a"], searchable["b"]
    assert values(misp.search(controller="attributes", eventid=a.id, to_ids=0, pythonify=True)) == {
        "http://alpha.search.example/x.php"}
    assert values(misp.search(controller="attributes", value="10.66.0.%", published=True, pythonify=True)) == {
        "10.66.0.2"}
    assert [e.uuid for e in misp.search(uuid=b.uuid, pythonify=True)] == [b.uuid]
    assert values(misp.search(controller="attributes", uuid=a.attributes[0].uuid, pythonify=True)) == {"10.66.0.1"}
    assert values(misp.search(controller="attributes", org="Test CSIRT", value="10.66.%", pythonify=True)) == {
        "10.66.0.1", "10.66.0.2"}
    assert misp.search(controller="attributes", org="Someone Else", value="10.66.%", pythonify=True) == []
    future = int(time.time()) + 10 * 365 * 86400
    assert misp.search(controller="attributes", value="10.66.%", timestamp=future, pythonify=True) == []
    page1 = misp.search(controller="attributes", value="%.search.example%", limit=1, page=1, pythonify=True)
    page2 = misp.search(controller="attributes", value="%.search.example%", limit=1, page=2, pythonify=True)
    assert len(page1) == len(page2) == 1 and page1[0].uuid != page2[0].uuid


def test_search_parameters_are_validated(server: Server):
    assert_misp_error(server.post("/attributes/restSearch", {"value": {"XOR": ["a"]}}), 400, "value", "OR")
    assert_misp_error(server.post("/attributes/restSearch", {"limit": "lots"}), 400, "limit")
    assert_misp_error(server.post("/attributes/restSearch", {"frobnicate": 1}), 400, "frobnicate")
    assert_misp_error(server.post("/attributes/restSearch", {"returnFormat": "yara"}), 400, "csv")


def test_search_export_formats(server: Server, searchable):
    misp = server.misp("read-only")
    text = misp.search(controller="attributes", return_format="text", value="10.66.0.%")
    assert sorted(text.split()) == ["10.66.0.1", "10.66.0.2"]
    rows = misp.search(controller="attributes", return_format="csv", value="10.66.0.1", pythonify=True)
    assert rows[0]["value"] == "10.66.0.1" and rows[0]["type"] == "ip-dst" and rows[0]["event_id"] == str(searchable["a"].id)
    assert rows[0]["to_ids"] == "1"
    suricata = misp.search(controller="attributes", return_format="suricata", value="%search.example%")
    assert 'dns.query; content:"alpha.search.example"' in suricata
    assert "x.php" not in suricata  # not flagged for IDS
    snort = misp.search(controller="attributes", return_format="snort", value="10.66.0.2")
    assert "alert ip $HOME_NET any -> 10.66.0.2 any" in snort


def test_search_streams_many_attributes(server: Server):
    misp = server.misp()
    e = MISPEvent()
    e.info = "bulk"
    for i in range(3000):
        e.add_attribute("ip-dst", f"10.77.{i // 256}.{i % 256}")
    misp.add_event(e)
    response = server.post("/attributes/restSearch", {"value": "10.77.%"}, role="read-only")
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert len(response.json()["response"]["Attribute"]) == 3000


# --- fuzzing: generated and mutated MISP JSON ----------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12)


@st.composite
def mutated_events(draw: st.DrawFn) -> dict:
    """A valid factory event with a few fields replaced by arbitrary JSON or removed."""
    # a deep copy: factory events share module-level dicts (factories.ORG) that must stay intact
    document = copy.deepcopy(factory_event(seed=draw(st.integers(0, 2**30)), attributes=draw(st.integers(0, 4)),
                                           objects=draw(st.integers(0, 1))))
    document["Event"]["uuid"] = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4))
    for element in document["Event"]["Attribute"] + document["Event"]["Object"]:
        element["uuid"] = str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)), version=4))
    for _ in range(draw(st.integers(1, 3))):
        target = document["Event"]
        while True:
            keys = list(target) if isinstance(target, dict) else list(range(len(target)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            if isinstance(target[key], (dict, list)) and target[key] and draw(st.booleans()):
                target = target[key]
                continue
            if isinstance(target, dict) and draw(st.booleans()):
                del target[key]
            else:
                target[key] = copy.deepcopy(draw(json_values))  # never mutate a drawn value later
            break
    return document


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=mutated_events())
def test_fuzz_add_answers_2xx_or_4xx_and_never_stores_half(server: Server, document: dict):
    before = server.event_count()
    response = server.post("/events/add", document)
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        answered = response.json()["Event"]
        # what the node answered with is what it holds, whole (the view adds correlations)
        viewed = server.get(f"/events/view/{answered['id']}").json()["Event"]
        viewed.pop("RelatedEvent", None)
        for a in viewed.get("Attribute", []) + [a for o in viewed.get("Object", []) for a in o.get("Attribute", [])]:
            a.pop("RelatedAttribute", None)
        assert viewed == answered
        assert server.event_count() == before + 1
    else:
        assert response.json()["saved"] is False
        assert server.event_count() == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=mutated_events(), strip_timestamps=st.booleans())
def test_fuzz_edit_answers_2xx_or_4xx_and_a_refusal_changes_nothing(server: Server, document: dict,
                                                                  strip_timestamps: bool):
    target = server.misp().get_event(_fuzz_target(server))
    body = document["Event"]
    if strip_timestamps and isinstance(body, dict):
        body.pop("timestamp", None)
    response = server.post(f"/events/edit/{target['Event']['id']}", document)
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert server.misp().get_event(target["Event"]["id"]) == target


_FUZZ_TARGET: list[str] = []


def _fuzz_target(server: Server) -> str:
    if not _FUZZ_TARGET:
        _FUZZ_TARGET.append(server.misp().add_event(new_event("fuzz target"), pythonify=True).uuid)
    return _FUZZ_TARGET[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.sampled_from(["value", "type", "tags", "org", "eventid", "uuid", "from", "to",
                                               "last", "timestamp", "published", "to_ids", "deleted", "limit",
                                               "page", "category", "returnFormat"]), json_values, max_size=4),
       controller=st.sampled_from(["events", "attributes"]))
def test_fuzz_search_answers_2xx_or_4xx(server: Server, params: dict, controller: str):
    response = server.post(f"/{controller}/restSearch", params, role="read-only")
    assert response.status_code < 500, response.text


# --- the process -------------------------------------------------------------------------------------

def test_correlations_show_in_event_views_and_on_request_in_searches(server: Server):
    """MISP's RelatedEvent/RelatedAttribute, and includeCorrelations / enforceWarninglist in restSearch."""
    from pymisp import MISPEvent
    misp = server.misp()
    first, second = MISPEvent(), MISPEvent()
    for event, info in ((first, "correlation one"), (second, "correlation two")):
        event.info = info
        event.distribution = 0
        event.add_attribute("ip-dst", "203.0.113.200")
        event.add_attribute("ip-dst", "8.8.8.8", comment="a public resolver: on a warninglist")
    first = misp.add_event(first, pythonify=True)
    second = misp.add_event(second, pythonify=True)
    viewed = misp.get_event(second.uuid, pythonify=False)["Event"]
    assert first.uuid in {r["Event"]["uuid"] for r in viewed.get("RelatedEvent", [])}
    related = [a for a in viewed["Attribute"] if a["value"] == "203.0.113.200"][0]["RelatedAttribute"]
    assert any(r["event_uuid"] == first.uuid for r in related)
    found = misp.search(controller="attributes", value="203.0.113.200", includeCorrelations=True)["Attribute"]
    assert all(a.get("RelatedAttribute") for a in found) and len(found) >= 2
    plain = misp.search(controller="attributes", value="203.0.113.200")["Attribute"]
    assert not any("RelatedAttribute" in a for a in plain)
    both = misp.search(controller="attributes", eventid=[first.id], pythonify=False)["Attribute"]
    enforced = misp.search(controller="attributes", eventid=[first.id], enforceWarninglist=True)["Attribute"]
    assert {a["value"] for a in both} - {a["value"] for a in enforced} == {"8.8.8.8"}


def test_zz_sigterm_stops_the_node_cleanly(server: Server):
    server.process.send_signal(signal.SIGTERM)
    out, err = server.process.communicate(timeout=30)
    assert server.process.returncode == 0, err
    assert "stopped" in out
    check = subprocess.run([sys.executable, "-c", (
        "import sys; from pathlib import Path; from fedmisp.store.store import Store;"
        f"s = Store(Path({str(server.home / 'store')!r})); p = s.check_integrity(); print(p); sys.exit(bool(p))")],
        capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
