"""Rules the REST API keeps about what leaves the node and whose event is whose (issue 21, items 2-4),
each pinned through the public interface: a real `fedmisp import`, real PyMISP calls, real node
processes pulling from each other over signed /fed/v1 requests.

- A tag marked `local` in an imported, added or edited event is a node-local annotation (decision
  0009): it is in neither the signed header nor any element body, and no peer receives it.
- The creator (Orgc) of an event added through the API is this node's organisation, whatever the
  client sends: the node signs the revision with its own key, so no role can make it claim another
  organisation's authorship (MISP lets a site admin pick the creator; docs/api.md says why here not).
- An event this node holds only for correlation (from a correlation-only peer) is never shown:
  events/view and attributes/view answer 404, events/index and both restSearches leave it out.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import requests
from pymisp import MISPEvent, MISPObject, PyMISP

from factories import event as factory_event
from federation import make_federation, settle
from nodes import configure, running, wait_for
from fedmisp.model import canonical
from fedmisp.model.records import open_record
from fedmisp.node.home import Node
from fedmisp.node.importer import import_paths
from fedmisp.store.store import Store
from test_api_federation import api

LOCAL = ["local:imported-event", "local:imported-attribute", "local:imported-member",
         "local:added-event", "local:added-attribute", "local:added-member", "local:edited-event",
         "local:edited-attribute"]


def _with_local_tags(seed: int) -> dict:
    """A published all-communities MISP event whose event, first attribute and first object member
    carry a local tag each (beside shared ones)."""
    raw = copy.deepcopy(factory_event(seed=seed, attributes=3, objects=1))
    e = raw["Event"]
    for a in e["Attribute"]:
        a["distribution"] = "5"
    e["Tag"].append({"name": "local:imported-event", "local": True})
    e["Attribute"][0]["Tag"] = [{"name": "shared:attribute"}, {"name": "local:imported-attribute", "local": 1}]
    e["Object"][0]["Attribute"][0]["Tag"] = [{"name": "local:imported-member", "local": "1"}]
    return raw


def _signed_content(store: Store, event_uuid: str) -> bytes:
    """The signed revision record this node holds for the event and every element body of it."""
    held = store.held(event_uuid)
    record = store.record(held.record_id)
    bodies = store.bodies(event_uuid, list(record.body["elements"]))
    assert len(bodies) == len(record.body["elements"])
    return canonical.pack(record.body) + b"".join(bodies.values())


def _all_bytes(home: Path) -> bytes:
    store = Store(home / "store", readonly=True)
    try:
        with store.database.env.begin() as txn:
            return b"".join(k + v for name in sorted(store.database.db) if store.database.db[name] is not None
                            for k, v in txn.cursor(db=store.database.db[name]))
    finally:
        store.close()


def _tag_names(event: dict) -> set[str]:
    e = event["Event"]
    names = {t["name"] for t in e.get("Tag", [])}
    for a in e.get("Attribute", []) + [m for o in e.get("Object", []) for m in o.get("Attribute", [])]:
        names |= {t["name"] for t in a.get("Tag", [])}
    return names


def test_local_tags_of_imported_added_and_edited_events_are_never_signed_and_never_reach_a_peer(tmp_path):
    nodes = configure(tmp_path, ["a", "b"], [("a", "b")])
    a, b = nodes["a"], nodes["b"]
    imported = _with_local_tags(31)
    path = tmp_path / "imported.json"
    path.write_text(json.dumps(imported))
    subprocess.run([sys.executable, "-m", "fedmisp", "import", "--home", str(a.home), str(path)],
                   check=True, capture_output=True, timeout=300)
    node = Node.open(a.home)
    keys = {"a": node.create_api_key("publisher", "local tags test")}
    node.close()
    with running(nodes):
        misp = PyMISP(f"http://127.0.0.1:{a.port}", keys["a"], ssl=False)
        e = MISPEvent()
        e.info = "added with local tags"
        e.distribution = 3
        e.published = True
        e.add_tag("tlp:green")
        e.add_tag({"name": "local:added-event", "local": True})
        attribute = e.add_attribute("ip-dst", "198.51.100.61", to_ids=True)
        attribute.add_tag({"name": "local:added-attribute", "local": True})
        o = MISPObject("domain-ip")
        o.add_attribute("domain", "local-tags.example").add_tag({"name": "local:added-member", "local": True})
        e.add_object(o)
        added = misp.add_event(e, pythonify=True)
        assert not isinstance(added, dict), added
        # events/edit of the same event: a local tag on the event and on a new attribute
        edit = {"Event": {"info": "edited with local tags", "Tag": [{"name": "tlp:green"},
                                                                       {"name": "local:edited-event", "local": True}],
                          "Attribute": [{"type": "domain", "value": "edited.example",
                                         "Tag": [{"name": "local:edited-attribute", "local": True}]}]}}
        answer = requests.post(f"http://127.0.0.1:{a.port}/events/edit/{added.uuid}", json=edit, timeout=30,
                               headers={"Authorization": keys["a"], "Accept": "application/json"})
        assert answer.status_code == 200, answer.text
        # as in MISP, an edit unpublishes the event; only a published revision travels
        published = requests.post(f"http://127.0.0.1:{a.port}/events/publish/{added.uuid}", timeout=30,
                                  headers={"Authorization": keys["a"], "Accept": "application/json"})
        assert published.status_code == 200, published.text
        # this node keeps them as its own annotations
        # (the edit's Tag list is the event's tag set: local:added-event is no longer among them)
        for uuid, names in ((imported["Event"]["uuid"], LOCAL[:3]), (added.uuid, LOCAL[4:])):
            assert set(names) <= _tag_names(misp.get_event(uuid)), names
        wait_for(lambda: {imported["Event"]["uuid"], added.uuid} <= b.events(), what="b to pull both events")
        store = Store(b.home / "store", readonly=True)
        try:
            wait_for(lambda: store.export_event(added.uuid)["Event"]["info"] == "edited with local tags",
                     what="b to pull the edit")
            received = {uuid: store.export_event(uuid) for uuid in (imported["Event"]["uuid"], added.uuid)}
        finally:
            store.close()
    for uuid, shared in ((imported["Event"]["uuid"], {"tlp:amber", "shared:attribute"}),
                         (added.uuid, {"tlp:green"})):
        assert shared <= _tag_names(received[uuid])  # the tags that are not local did travel
        assert not _tag_names(received[uuid]) & set(LOCAL), received[uuid]
    store = Store(a.home / "store", readonly=True)
    try:
        signed = _signed_content(store, imported["Event"]["uuid"]) + _signed_content(store, added.uuid)
    finally:
        store.close()
    assert b"shared:attribute" in signed
    for name in LOCAL:
        assert name.encode() not in signed, f"{name} is in a signed revision or an element body"
        assert name.encode() not in _all_bytes(b.home), f"{name} reached the peer"


def test_an_added_event_is_created_by_this_nodes_organisation_whatever_orgc_the_client_sends(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    a = nodes["a"]
    foreign = {"name": "Org b", "uuid": nodes["b"].config.org_uuid}
    own = {"name": a.config.org_name, "uuid": a.config.org_uuid}
    with api(a) as misp:  # an admin: MISP's site admin could choose; a node signs only as its own org
        e = MISPEvent()
        e.info = "claims to be b's"
        e.distribution = 3
        e.published = True
        e.add_attribute("domain", "orgc.example")
        e.Orgc = foreign
        e.orgc_id = "2"
        e.orgc_uuid = foreign["uuid"]
        added = misp.add_event(e, pythonify=True)
        assert not isinstance(added, dict), added
        assert {"name": added.Orgc.name, "uuid": added.Orgc.uuid} == own
        edited = misp.direct_call(f"events/edit/{added.uuid}", {"Event": {"info": "still a's", "Orgc": foreign}})
        assert {k: edited["Event"]["Orgc"][k] for k in ("name", "uuid")} == own, edited
        misp.publish(added.uuid)  # an edit unpublishes the event (as MISP's does); only published events move
        index = misp.search_index(eventinfo="still a's")
        assert [row["orgc_uuid"] if "orgc_uuid" in row else row["Orgc"]["uuid"] for row in index] == [own["uuid"]]
    held = a.store.held(added.uuid)
    header = a.store.record(held.record_id).body["event"]
    assert header["Orgc"]["uuid"] == own["uuid"] and header["Orgc"]["name"] == own["name"]
    settle(nodes)
    assert nodes["b"].store.export_event(added.uuid)["Event"]["Orgc"]["uuid"] == own["uuid"]
    for node in nodes.values():
        node.close()


def test_an_event_held_only_for_correlation_is_never_shown_by_the_api(tmp_path):
    nodes = make_federation(tmp_path, ["o", "c"], [("o", "c")], {("c", "o"): {"mode": "correlation-only"}})
    raw = copy.deepcopy(factory_event(seed=41, attributes=3, objects=1))
    for a in raw["Event"]["Attribute"]:
        a["distribution"] = "5"
    path = tmp_path / "correlation.json"
    path.write_text(json.dumps(raw))
    import_paths(nodes["o"], [path])
    settle(nodes)
    c = nodes["c"]
    uuid = raw["Event"]["uuid"]
    assert c.store.event_meta(uuid).correlation_only  # c holds it, for correlation only
    attribute = raw["Event"]["Attribute"][0]
    member = raw["Event"]["Object"][0]["Attribute"][0]
    with api(c) as misp:
        def status(path: str, body: object = None) -> tuple[int, object]:
            response = requests.request("POST" if body is not None else "GET", misp.root_url + path, json=body,
                                        headers={"Authorization": misp.key, "Accept": "application/json"},
                                        timeout=30)
            return response.status_code, response.json()
        held_id = c.store.held(uuid).id
        for ref in (uuid, str(held_id)):
            assert status(f"/events/view/{ref}")[0] == 404
        for ref in (attribute["uuid"], member["uuid"]):
            assert status(f"/attributes/view/{ref}")[0] == 404
        assert status(f"/objects/view/{raw['Event']['Object'][0]['uuid']}")[0] == 404
        assert status("/events/index")[1] == []
        assert status("/events/index", {"eventinfo": raw["Event"]["info"]})[1] == []
        assert status("/events/restSearch", {"uuid": uuid})[1] == {"response": []}
        assert status("/events/restSearch", {"value": attribute["value"]})[1] == {"response": []}
        assert status("/attributes/restSearch", {"value": attribute["value"]})[1] == {"response": {"Attribute": []}}
        assert status("/attributes/restSearch", {"eventid": uuid})[1] == {"response": {"Attribute": []}}
    for node in nodes.values():
        node.close()
