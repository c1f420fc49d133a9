"""Custom MISP object templates that travel with the data (issue 15, part 4; decision 0030): an
organisation publishes a template as a signed record, it reaches every node, and a node validates
an object against the template it names, shipped or published, and refuses (then takes) an object
naming one it does not hold."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import uuid as uuidlib
from pathlib import Path

import pytest

from fedmisp.gossip import session as session_module
from fedmisp.gossip.driver import InMemory, pull
from fedmisp.gossip.replica import Replica
from fedmisp.gossip.templates import publish
from fedmisp.model.describe import object_templates
from fedmisp.model.misp import EventError, ImportDefaults, parse_event
from fedmisp.model.records import KIND_TEMPLATE, seal
from fedmisp.model.templates import TemplateError, resolve_template, template_problem, validate_definition
from fedmisp.node.importer import import_paths
from fedmisp.policy.reasons import Reason

from factories import event
from federation import make_federation, settle
from peer_protocol import Decisions

TEMPLATE_UUID = "0f3c7d5e-1a2b-4c3d-8e9f-001122334455"


def beacon(version: int = 1, **changes) -> dict:
    """A custom template as an analyst writes it in under 30 minutes: misp-objects' shape."""
    definition = {
        "name": "acme-beacon", "uuid": TEMPLATE_UUID, "version": version, "meta-category": "network",
        "description": "A command-and-control beacon seen by ACME's sensors",
        "attributes": {
            "c2": {"misp-attribute": "ip-dst", "ui-priority": 1, "description": "Where it calls",
                   "categories": ["Network activity"], "to_ids": True},
            "interval": {"misp-attribute": "counter", "ui-priority": 0, "description": "Seconds between calls",
                         "disable_correlation": True},
            "protocol": {"misp-attribute": "text", "ui-priority": 0, "description": "Transport",
                         "values_list": ["http", "https", "dns"], "multiple": True},
        },
        "required": ["c2"],
    }
    definition.update(changes)
    return definition


def beacon_object(c2: str = "198.51.100.7", relation_type: str = "ip-dst", uuid: str | None = None) -> dict:
    return {"uuid": uuid or str(uuidlib.uuid4()), "name": "acme-beacon", "template_uuid": TEMPLATE_UUID,
            "template_version": "1", "meta-category": "network", "distribution": "5",
            "Attribute": [{"type": relation_type, "object_relation": "c2", "value": c2, "category": "Network activity"},
                          {"type": "counter", "object_relation": "interval", "value": "60"}]}


def event_with_beacon(seed: int, **object_fields) -> dict:
    raw = copy.deepcopy(event(seed=seed, attributes=1, objects=0))
    raw["Event"]["Object"] = [beacon_object(**object_fields)]
    return raw


DEFAULTS = ImportDefaults(org_uuid="5a1b2c3d-0000-4000-8000-00000000abcd", org_name="Org A", now=1_700_000_000)


# --- the definition ------------------------------------------------------------------------------

def test_a_valid_definition_reads_as_its_template():
    template = validate_definition(beacon())
    assert (template.name, template.uuid, template.version, template.required) == (
        "acme-beacon", TEMPLATE_UUID, 1, ("c2",))
    assert template.relations["c2"].misp_attribute == "ip-dst"
    assert template_problem(beacon()) is None


@pytest.mark.parametrize("change, message", [
    ({"attributes": {"c2": {"misp-attribute": "ip-dsst", "ui-priority": 1, "description": "x"}}},
     "template.attributes.c2.misp-attribute: \"ip-dsst\" is not a MISP attribute type"),
    ({"attributes": {"c2": {"misp-attribute": "ip-dst", "ui-priority": 1, "description": "x",
                            "categories": ["Payload delivery", "Person"]}}},
     "template.attributes.c2.categories: \"Person\" is not a category of type ip-dst"),
    ({"required": ["c2", "beacon-id"]}, "template.required: \"beacon-id\" is not a relation of template.attributes"),
    ({"requiredOneOf": "c2"}, "template.requiredOneOf: expected a list of strings"),
    ({"version": "2"}, "template.version: \"2\" is not an integer 1 to"),
    ({"version": 0}, "template.version: 0 is not an integer 1 to"),
    ({"uuid": "not-a-uuid"}, "template.uuid: \"not-a-uuid\" is not a lower-case UUID"),
    ({"meta-category": "spaceships"}, "template.meta-category: \"spaceships\" is not a meta-category"),
    ({"name": ""}, "template.name: \"\" is not a non-empty string"),
    ({"colour": "red"}, "template.colour: not a field of a misp-objects definition"),
    ({"attributes": {}}, "template.attributes: expected a non-empty map"),
    ({"attributes": {"c2": {"misp-attribute": "ip-dst", "description": "x"}}},
     "template.attributes.c2.ui-priority: missing"),
    ({"attributes": {"c2": {"misp-attribute": "ip-dst", "ui-priority": 1, "description": "x", "multiple": "yes"}}},
     "template.attributes.c2.multiple: \"yes\" is not true or false"),
    ({"attributes": {"c2": {"misp-attribute": "ip-dst", "ui-priority": 1, "description": "x", "colour": 1}}},
     "template.attributes.c2.colour: not a field of a misp-objects attribute"),
])
def test_a_bad_definition_is_refused_naming_the_field(change, message):
    definition = beacon()
    definition.update(change)
    with pytest.raises(TemplateError) as e:
        validate_definition(definition)
    assert str(e.value).startswith(message)
    assert template_problem(definition).startswith(message)


def test_a_definition_missing_a_field_names_it():
    definition = beacon()
    del definition["description"]
    assert template_problem(definition) == "template.description: missing"


def test_a_shipped_templates_uuid_or_name_is_refused():
    domain_ip = object_templates()["domain-ip"]
    assert template_problem(beacon(uuid=domain_ip.uuid)).startswith(
        f"template.uuid: {domain_ip.uuid} is the shipped misp-objects template 'domain-ip'")
    assert template_problem(beacon(name="domain-ip")).startswith(
        "template.name: 'domain-ip' is a shipped misp-objects template")


# --- objects against templates (import, events/add) -------------------------------------------------

def test_an_object_is_validated_against_the_published_template_it_names():
    templates = {TEMPLATE_UUID: validate_definition(beacon())}
    defaults = ImportDefaults(**{**{f: getattr(DEFAULTS, f) for f in ("org_uuid", "org_name", "now")},
                                 "templates": templates})
    parsed = parse_event(event_with_beacon(1)["Event"], defaults)
    [obj] = [e for e in parsed.elements if e.body.get("template_uuid") == TEMPLATE_UUID]
    assert obj.body["meta-category"] == "network"
    # a relation of the wrong type, or a required relation missing: refused naming both
    with pytest.raises(EventError) as e:
        parse_event(event_with_beacon(2, relation_type="domain", c2="c2.example")["Event"], defaults)
    assert "relation 'c2' of object 'acme-beacon' takes type ip-dst, not domain" in str(e.value)
    raw = event_with_beacon(3)
    raw["Event"]["Object"][0]["Attribute"].pop(0)
    with pytest.raises(EventError) as e:
        parse_event(raw["Event"], defaults)
    assert "object 'acme-beacon' requires relation(s) c2" in str(e.value)


def test_an_object_naming_a_template_not_held_is_refused_or_dropped_in_a_lenient_import():
    raw = event_with_beacon(4)["Event"]
    with pytest.raises(EventError) as e:
        parse_event(raw, DEFAULTS)
    [problem] = e.value.problems
    assert problem.field == "template_uuid"
    assert f"names object template {TEMPLATE_UUID} ('acme-beacon'), which this node holds neither" in problem.message
    parsed = parse_event(raw, DEFAULTS, lenient=True)
    assert not any(e.body.get("template_uuid") == TEMPLATE_UUID for e in parsed.elements)
    assert len(parsed.elements) == 1  # the event's own attribute stays
    dropped = {d.kind for d in parsed.dropped}
    assert dropped == {"object", "attribute"}  # the object, and its two attributes with it


def test_an_object_naming_a_later_version_than_the_one_held_is_refused():
    template = validate_definition(beacon())
    assert resolve_template("acme-beacon", TEMPLATE_UUID, 1, {TEMPLATE_UUID: template})[1] is None
    assert resolve_template("acme-beacon", TEMPLATE_UUID, 2, {TEMPLATE_UUID: template})[1] == (
        f"names version 2 of object template {TEMPLATE_UUID} ('acme-beacon'); this node holds version 1")


# --- publishing, the version rule -------------------------------------------------------------------

def test_a_later_version_replaces_the_held_one_only_from_the_same_org(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    a, b = nodes["a"], nodes["b"]
    publish(a.store, a.identity, beacon(1))
    settle(nodes)
    assert b.store.template_record(TEMPLATE_UUID).body["version"] == 1
    # B's organisation signs a "version 2" of A's template: a forgery, refused at B and at A
    with pytest.raises(TemplateError, match="another organisation published"):
        publish(b.store, b.identity, beacon(2, description="hijacked"))
    forged = seal(b.identity, KIND_TEMPLATE, beacon(2, description="hijacked"))
    assert a.store.accept_template(forged) is Reason.TEMPLATE_OTHER_ORG
    # A's own next version replaces it everywhere; an older one is not taken again
    publish(a.store, a.identity, beacon(2))
    settle(nodes)
    assert [r.body["version"] for r in b.store.template_records()] == [2]
    assert b.store.accept_template(seal(a.identity, KIND_TEMPLATE, beacon(1))) is Reason.TEMPLATE_NOT_NEWER
    with pytest.raises(TemplateError, match=r"template.version: 2 is not above the version held \(2\)"):
        publish(a.store, a.identity, beacon(2, description="changed"))
    # the replaced version left the log: one template record in each changes feed
    for node in nodes.values():
        kinds = [node.store.record(rid).kind for _, rid in node.store.log_since(0)]
        assert kinds.count(KIND_TEMPLATE) == 1
        node.close()


def _peer(node, name: str):
    return next(p for p in node.config.peers if p.name == name)


def test_a_forged_template_from_a_peer_is_refused_and_the_pull_goes_on(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    publish(a.store, a.identity, beacon(1))
    settle(nodes)
    # B's store takes a forged version 2 past the rules (a hostile or buggy B), then an event: C
    # refuses the forgery (signed by B's org, not A's) and takes the event
    forged = seal(b.identity, KIND_TEMPLATE, beacon(2, description="hijacked"))
    b.store.write_records([forged])
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(event(seed=9, attributes=2, objects=0)))
    import_paths(b, [path])
    recorder = Decisions()
    report = pull(Replica(c, recorder), _peer(c, "b"), InMemory(Replica(b), "c"))
    assert report.refused == {Reason.TEMPLATE_OTHER_ORG.value: 1}
    assert report.stored == 1
    assert c.store.template_record(TEMPLATE_UUID).body["version"] == 1
    for node in nodes.values():
        node.close()


def test_a_malformed_template_from_a_peer_is_refused_as_malformed_naming_the_field(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    a, b = nodes["a"], nodes["b"]
    bad = beacon(1, attributes={"c2": {"misp-attribute": "ip-dsst", "ui-priority": 1, "description": "x"}})
    a.store.write_records([seal(a.identity, KIND_TEMPLATE, bad)])  # (past publish's checks)
    recorder = Decisions()
    report = pull(Replica(b, recorder), _peer(b, "a"), InMemory(Replica(a), "b"))
    assert report.refused == {Reason.MALFORMED.value: 1}
    [refusal] = [d for d in recorder.all if d.refusal]
    assert refusal.kind == KIND_TEMPLATE and refusal.detail.startswith("template.attributes.c2.misp-attribute")
    assert b.store.template_records() == []
    for node in nodes.values():
        node.close()


# --- replication ---------------------------------------------------------------------------------------

def _import(node, tmp_path: Path, raw: dict, name: str) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(raw))
    result = import_paths(node, [path])
    assert not getattr(result, "refused", None), result


def _objects(node, event_uuid: str) -> list[dict]:
    exported = node.store.export_event(event_uuid)
    return exported["Event"].get("Object", []) if exported else []


def test_a_template_published_at_a_lets_c_two_hops_away_accept_an_object_built_on_it(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    a, c = nodes["a"], nodes["c"]
    publish(a.store, a.identity, beacon(1))
    raw = event_with_beacon(11)
    _import(a, tmp_path, raw, "beacon")
    settle(nodes)
    assert c.store.template_record(TEMPLATE_UUID).body == beacon(1)
    [obj] = _objects(c, raw["Event"]["uuid"])
    assert obj["template_uuid"] == TEMPLATE_UUID
    assert {m["object_relation"]: m["value"] for m in obj["Attribute"]} == {"c2": "198.51.100.7", "interval": "60"}
    # C validates an object built on it, as its own import does
    _import(c, tmp_path, event_with_beacon(12), "at-c")
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


def test_c_refuses_an_object_whose_template_it_does_not_hold_then_takes_it_when_the_template_arrives(
        tmp_path, monkeypatch):
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    replicas = {n: Replica(node) for n, node in nodes.items()}
    publish(a.store, a.identity, beacon(1))
    raw = event_with_beacon(13)
    event_uuid = raw["Event"]["uuid"]
    _import(a, tmp_path, raw, "beacon")
    pull(replicas["b"], _peer(b, "a"), InMemory(replicas["a"], "b"))
    assert _objects(b, event_uuid)
    # A revises its template: at B the new version follows the event in the changes feed, and
    # C pulls one change a page, so it meets the event before any version of the template
    publish(a.store, a.identity, beacon(2))
    pull(replicas["b"], _peer(b, "a"), InMemory(replicas["a"], "b"))
    order = [b.store.record(rid).kind for _, rid in b.store.log_since(0)]
    assert order.index("event") < order.index(KIND_TEMPLATE)
    monkeypatch.setattr(session_module, "CHANGES_PAGE", 1)
    recorder = Decisions()
    report = pull(Replica(c, recorder), _peer(c, "b"), InMemory(replicas["b"], "c"))
    assert c.store.held(event_uuid) is None
    [refusal] = [d for d in recorder.all if d.refusal and d.event_uuid == event_uuid]
    assert refusal.reason == Reason.TEMPLATE_NOT_HELD.value
    assert f"names object template {TEMPLATE_UUID} ('acme-beacon'), which this node holds neither" in refusal.detail
    assert report.refused == {Reason.TEMPLATE_NOT_HELD.value: 1}
    # the template came later in the same pull; the next pull goes back for the event
    assert c.store.template_record(TEMPLATE_UUID).body["version"] == 2
    again = pull(Replica(c), _peer(c, "b"), InMemory(replicas["b"], "c"))
    assert again.stored == 1 and not again.refused
    assert [o["template_uuid"] for o in _objects(c, event_uuid)] == [TEMPLATE_UUID]
    # and nothing is fetched again after that
    assert pull(Replica(c), _peer(c, "b"), InMemory(replicas["b"], "c")).stored == 0
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


# --- the CLI -----------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedmisp", *args], capture_output=True, text=True, timeout=120)


def test_cli_template_add_publishes_and_list_shows_it(tmp_path):
    home = tmp_path / "node"
    assert _cli("init", "--home", str(home), "--org", "ACME CERT").returncode == 0
    good = tmp_path / "definition.json"
    good.write_text(json.dumps(beacon(1)))
    added = _cli("template", "add", "--home", str(home), str(good))
    assert added.returncode == 0, added.stderr
    assert f"published object template 'acme-beacon' {TEMPLATE_UUID} version 1 (3 relations)" in added.stdout
    listed = _cli("template", "list", "--home", str(home))
    assert listed.returncode == 0
    assert f"{TEMPLATE_UUID}  acme-beacon v1 network  3 relations  by ACME CERT" in listed.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(beacon(2, attributes={"c2": {"misp-attribute": "ipv4", "ui-priority": 1,
                                                            "description": "x"}})))
    refused = _cli("template", "add", "--home", str(home), str(bad))
    assert refused.returncode == 2
    assert f"{bad}: template.attributes.c2.misp-attribute: \"ipv4\" is not a MISP attribute type" in refused.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert _cli("template", "add", "--home", str(home), str(broken)).returncode == 2
    # an event using the published template now imports at this node
    raw = tmp_path / "event.json"
    raw.write_text(json.dumps(event_with_beacon(20)))
    imported = _cli("import", "--home", str(home), "--strict", str(raw))
    assert imported.returncode == 0, imported.stdout + imported.stderr
