"""Sightings through the API with the real PyMISP client against a real node process: by value on
every matching attribute, listSightings and sightings/restSearch."""
from __future__ import annotations

import time

from pymisp import MISPEvent

from test_api import Server, assert_misp_error


def two_events_with(server: Server, value: str) -> list[MISPEvent]:
    misp = server.misp()
    out = []
    for info in ("sighted one", "sighted two"):
        e = MISPEvent()
        e.info = info
        e.add_attribute("domain", value)
        e.add_attribute("ip-dst", "192.0.2.200")
        out.append(misp.add_event(e, pythonify=True))
    return out


def test_a_sighting_by_value_goes_to_every_attribute_with_that_value(server: Server):
    misp = server.misp("user")
    foreign = misp.get_event(server.foreign_event, pythonify=True)
    value = foreign.attributes[0].value  # held in another organisation's event too
    mine = two_events_with(server, value)
    misp.add_sighting({"value": value, "source": "sensor-9"})
    for event in [*mine, foreign]:
        sightings = misp.sightings(misp.get_event(event.uuid, pythonify=True), pythonify=True)
        assert [(s.source, s.type) for s in sightings] == [("sensor-9", "0")], event.info
        assert {s.attribute_uuid for s in sightings} <= {a.uuid for a in event.attributes}


def test_list_sightings_of_an_attribute_and_by_org(server: Server):
    misp = server.misp()
    (event, _other) = two_events_with(server, "list.sightings.example")
    attribute = next(a for a in event.attributes if a.value == "list.sightings.example")
    ip = next(a for a in event.attributes if a.type == "ip-dst")
    misp.add_sighting({"source": "a", "type": "1"}, attribute.id)
    misp.add_sighting({"source": "b"}, ip.uuid)
    listed = misp.sightings(attribute, pythonify=True)
    assert [(s.source, s.type, s.attribute_uuid) for s in listed] == [("a", "1", attribute.uuid)]
    assert {s.source for s in misp.sightings(misp.get_event(event.id, pythonify=True), pythonify=True)} >= {"a", "b"}
    assert misp.sightings(attribute, org=1, pythonify=True)[0].Organisation["name"] == "Test CSIRT"
    # the path form, whose context defaults to attribute as in MISP
    assert [s["Sighting"]["source"] for s in server.post(f"/sightings/listSightings/{attribute.id}", {}).json()] == ["a"]
    response = server.post("/sightings/listSightings", {"context": "attribute", "id": attribute.id, "org_id": 999})
    assert_misp_error(response, 404, "org_id")
    assert_misp_error(server.post("/sightings/listSightings", {"context": "event", "id": 987654}), 404, "Invalid event")
    assert_misp_error(server.post("/sightings/listSightings", {"context": "galaxy", "id": 1}), 400, "context")


def test_search_sightings_by_context_type_and_time(server: Server):
    misp = server.misp("read-only")
    writer = server.misp()
    (event, _other) = two_events_with(server, "search.sightings.example")
    attribute = next(a for a in event.attributes if a.value == "search.sightings.example")
    old = int(time.time()) - 10 * 86400
    writer.add_sighting({"source": "old", "timestamp": old}, attribute.id)
    writer.add_sighting({"source": "fp", "type": "1"}, attribute.id)
    found = misp.search_sightings(context="attribute", context_id=attribute.id, include_attribute=True,
                                  include_event_meta=True, pythonify=True)
    assert sorted(f["sighting"].source for f in found) == ["fp", "old"]
    assert {f["attribute"].uuid for f in found} == {attribute.uuid}
    assert {f["event"].uuid for f in found} == {event.uuid}
    recent = misp.search_sightings(context="event", context_id=event.id, publish_timestamp="2d")
    assert [s["Sighting"]["source"] for s in recent] == ["fp"]
    false_positives = misp.search_sightings(type_sighting="1", source="fp")
    assert {s["Sighting"]["attribute_uuid"] for s in false_positives} == {attribute.uuid}
    assert_misp_error(server.post("/sightings/restSearch", {"type": "7"}), 400, "type")
    assert_misp_error(server.post("/sightings/restSearch", {"last": "yesterday-ish"}), 400, "last")
    assert_misp_error(server.post("/sightings/restSearch", {"colour": "red"}), 400, "colour")
    assert_misp_error(server.post("/sightings/restSearch/attribute", {"id": "987654321"}), 404)
    page = server.post("/sightings/restSearch", {"source": "old", "limit": 1}).json()["response"]
    assert len(page) == 1


def test_a_sighting_of_an_unknown_attribute_is_a_404_and_stores_nothing(server: Server):
    response = server.post("/sightings/add/987654321", {"source": "x"})
    assert_misp_error(response, 404)
    assert server.post("/sightings/restSearch", {"source": "x"}).json()["response"] == []


def test_a_list_of_sightings_and_a_values_list_are_stored_together_or_not_at_all(server: Server):
    misp = server.misp()
    (event, other) = two_events_with(server, "batch.sightings.example")
    a = next(x for x in event.attributes if x.type == "ip-dst")
    response = server.post("/sightings/add", [{"uuid": a.uuid, "source": "batch-1"},
                                              {"values": ["batch.sightings.example"], "source": "batch-2", "type": 2}])
    assert response.status_code == 200, response.text
    answered = response.json()
    assert [s["Sighting"]["source"] for s in answered] == ["batch-1", "batch-2", "batch-2"]
    assert {(s["Sighting"]["source"], s["Sighting"]["type"]) for s in
            misp.search_sightings(context="event", context_id=other.id)} == {("batch-2", "2")}
    refused = server.post("/sightings/add", [{"uuid": a.uuid, "source": "never"}, {"uuid": a.uuid, "type": 9}])
    assert_misp_error(refused, 400, "Sighting[1].type")
    huge = server.post(f"/sightings/add/{a.uuid}", {"source": "never", "timestamp": "9" * 30})
    assert_misp_error(huge, 400, "timestamp")
    not_found = server.post("/sightings/add", [{"uuid": a.uuid, "source": "never"}, {"value": "nowhere.example"}])
    assert_misp_error(not_found, 404, "Sighting[1].value")
    assert server.post("/sightings/restSearch", {"source": "never"}).json()["response"] == []


def test_a_sighting_by_value_matches_the_value_not_a_pattern(server: Server):
    two_events_with(server, "pattern.sightings.example")
    assert_misp_error(server.post("/sightings/add", {"value": "%.sightings.example", "source": "p"}), 404)
    assert server.post("/sightings/restSearch", {"source": "p"}).json()["response"] == []
    assert server.post("/sightings/add", {"value": "PATTERN.sightings.example", "source": "p"}).status_code == 200
    assert len(server.post("/sightings/restSearch", {"source": "p"}).json()["response"]) == 2
