"""Object templates through the API, driven by the real PyMISP client against a real node process
(the `server` fixture of test_api.py): objectTemplates/index, view and getRaw list the shipped
misp-objects templates and the published ones (decision 0030), and add_object builds on either."""
from __future__ import annotations

import json
import subprocess
import sys

from pymisp import MISPObject, MISPObjectTemplate

from test_api import Server, new_event
from test_object_templates import TEMPLATE_UUID, beacon
from fedmisp.node.api.render import hashed_id

DOMAIN_IP = "43b3b146-77eb-4931-b4cc-b66c60f28734"


def _publish(server: Server, tmp_path) -> None:
    path = tmp_path / "beacon.json"
    path.write_text(json.dumps(beacon(1)))
    done = subprocess.run([sys.executable, "-m", "fedmisp", "template", "add", "--home", str(server.home), str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_object_templates_lists_shipped_and_published_templates(server: Server, tmp_path):
    _publish(server, tmp_path)
    misp = server.misp("read-only")
    listed = misp.object_templates(pythonify=True)
    assert all(isinstance(t, MISPObjectTemplate) for t in listed)
    by_uuid = {t.uuid: t for t in listed}
    assert by_uuid[DOMAIN_IP].name == "domain-ip" and by_uuid[DOMAIN_IP].fixed is True
    published = by_uuid[TEMPLATE_UUID]
    assert (published.name, published.version, published.fixed, published.active) == ("acme-beacon", "1", False, True)
    assert published.requirements == {"required": ["c2"]}
    assert int(published.id) == hashed_id("object-template", TEMPLATE_UUID)
    raw = misp.object_templates()
    assert {row["Organisation"]["name"] for row in raw if row["ObjectTemplate"]["uuid"] == TEMPLATE_UUID} == {
        "Test CSIRT"}


def test_get_object_template_by_id_and_uuid_with_its_elements(server: Server, tmp_path):
    _publish(server, tmp_path)
    misp = server.misp("read-only")
    by_uuid = misp.get_object_template(TEMPLATE_UUID)
    by_id = misp.get_object_template(by_uuid["ObjectTemplate"]["id"], pythonify=True)
    assert by_id.uuid == TEMPLATE_UUID and by_id.name == "acme-beacon"
    elements = {e["object_relation"]: e for e in by_uuid["ObjectTemplateElement"]}
    assert set(elements) == {"c2", "interval", "protocol"}
    assert (elements["c2"]["type"], elements["c2"]["categories"]) == ("ip-dst", ["Network activity"])
    assert elements["protocol"]["values_list"] == ["http", "https", "dns"] and elements["protocol"]["multiple"]
    shipped = misp.get_object_template(DOMAIN_IP)
    assert shipped["ObjectTemplate"]["name"] == "domain-ip"
    assert {e["object_relation"] for e in shipped["ObjectTemplateElement"]} >= {"domain", "ip"}
    missing = misp.get_object_template("ffffffff-ffff-4fff-bfff-ffffffffffff")
    assert "errors" in missing and missing["errors"][0] == 404
    assert server.get("/objectTemplates/view/12345").status_code == 404


def test_an_object_on_a_published_template_is_added_through_pymisp(server: Server, tmp_path):
    _publish(server, tmp_path)
    misp = server.misp()
    # PyMISP builds the object from the definition the node serves (getRaw), as from a shipped one
    definition = misp.get_raw_object_template(TEMPLATE_UUID)
    assert definition == beacon(1)
    obj = MISPObject("acme-beacon", misp_objects_template_custom=definition)
    obj.add_attribute("c2", value="198.51.100.70")
    obj.add_attribute("interval", value=30)
    event = misp.add_event(new_event("beacons"), pythonify=True)
    added = misp.add_object(event.id, obj, pythonify=True)
    assert added.template_uuid == TEMPLATE_UUID and added.name == "acme-beacon"
    view = misp.get_event(event.id, pythonify=True)
    [held] = [o for o in view.objects if o.uuid == added.uuid]
    assert {a.object_relation: a.value for a in held.attributes} == {"c2": "198.51.100.70", "interval": "30"}
    # one whose c2 is of another type than the template says is refused, naming the relation
    bad = MISPObject("acme-beacon", misp_objects_template_custom=definition, strict=False)
    bad.add_attribute("c2", value="c2.example", type="domain")
    response = server.post(f"/objects/add/{event.id}", bad)
    assert response.status_code == 400, response.text
    assert "relation 'c2' of object 'acme-beacon' takes type ip-dst, not domain" in response.text


def test_an_object_naming_a_template_the_node_does_not_hold_is_refused_with_the_reason(server: Server):
    misp = server.misp()
    event = misp.add_event(new_event("unknown template"), pythonify=True)
    unknown = "0f3c7d5e-1a2b-4c3d-8e9f-00000000beef"
    body = {"Object": {"name": "acme-unknown", "template_uuid": unknown, "template_version": "1",
                       "Attribute": [{"object_relation": "c2", "type": "ip-dst", "value": "198.51.100.71"}]}}
    response = server.post(f"/objects/add/{event.id}", body)
    assert response.status_code == 400, response.text
    assert f"names object template {unknown} ('acme-unknown'), which this node holds neither" in response.text
