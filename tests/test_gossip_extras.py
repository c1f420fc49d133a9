"""Sightings, proposals and decisions follow their event's newest revision in the changes log."""
from __future__ import annotations

import copy
import json

from fedmisp.model.records import KIND_SIGHTINGS, seal
from fedmisp.node.importer import import_paths

from factories import event
from federation import make_federation, settle


def _write(tmp_path, raw: dict, name: str):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(raw))
    return path


def _published(seed: int, attributes: int) -> dict:
    raw = copy.deepcopy(event(seed=seed, attributes=attributes, objects=0))
    raw["Event"].update(distribution="3", published=True)
    for a in raw["Event"]["Attribute"]:
        a["distribution"] = "5"
    return raw


def test_a_sighting_older_than_its_events_revision_reaches_a_peer_that_pulls_later(tmp_path):
    # a's log, in order: a sighting of x, a big event y (a changes page of its own), x's second revision.
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    x = _published(91, 3)
    import_paths(nodes["a"], [_write(tmp_path, x, "x1")])
    attribute = x["Event"]["Attribute"][0]
    sighting = {"Organisation": {"name": "Org a", "uuid": nodes["a"].config.org_uuid},
                "attribute_uuid": attribute["uuid"], "date_sighting": 1_800_000_000, "source": "ids",
                "type": 0, "uuid": "a5a5a5a5-0000-4000-8000-000000000091"}
    nodes["a"].store.write_records([seal(nodes["a"].identity, KIND_SIGHTINGS,
                                         {"event_uuid": x["Event"]["uuid"], "sightings": [sighting]})])
    import_paths(nodes["a"], [_write(tmp_path, _published(92, 6_000), "y")])
    x2 = copy.deepcopy(x)
    x2["Event"]["timestamp"] = str(int(x["Event"]["timestamp"]) + 10)
    x2["Event"]["info"] += " (revised)"
    import_paths(nodes["a"], [_write(tmp_path, x2, "x2")])

    settle(nodes)

    exported = nodes["b"].store.export_event(x["Event"]["uuid"])["Event"]
    assert exported["info"].endswith("(revised)")
    seen = [s["uuid"] for a in exported["Attribute"] for s in a.get("Sighting", [])]
    assert seen == [sighting["uuid"]]
    for node in nodes.values():
        node.close()


def test_an_extension_event_travels_to_the_extended_events_creator_as_an_event_of_its_own(tmp_path):
    # DESIGN: others contribute through extension events, their own events that extend another by uuid.
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    original = _published(93, 3)
    import_paths(nodes["a"], [_write(tmp_path, original, "original")])
    settle(nodes)
    extension = _published(94, 2)
    extension["Event"]["extends_uuid"] = original["Event"]["uuid"]
    import_paths(nodes["c"], [_write(tmp_path, extension, "extension")])
    settle(nodes)
    on_a = nodes["a"].store.export_event(extension["Event"]["uuid"])["Event"]
    assert on_a["extends_uuid"] == original["Event"]["uuid"]
    held = nodes["a"].store.held(extension["Event"]["uuid"])
    assert nodes["a"].store.record(held.record_id).author == nodes["c"].identity.public_key  # c's own event
    assert nodes["a"].store.export_event(original["Event"]["uuid"])["Event"]["info"] == original["Event"]["info"]
    for node in nodes.values():
        node.close()
