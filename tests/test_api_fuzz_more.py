"""Generated and mutated bodies thrown at the object, tag, sighting, organisation and sharing-group
endpoints of a real node: every answer is 2xx or a MISP-shaped 4xx, and a refusal changes nothing."""
from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings, strategies as st

from test_api import Server, json_values, new_event
from fedmisp.store.store import Store

_TARGET: dict[str, object] = {}


def target(server: Server) -> object:
    """One event of this node (with an object) the fuzzed requests aim at."""
    if not _TARGET:
        from pymisp import MISPObject
        misp = server.misp()
        event = misp.add_event(new_event("fuzz more"), pythonify=True)
        o = MISPObject("domain-ip")
        o.add_attribute("domain", "fuzz.objects.example")
        o.add_attribute("ip", "203.0.113.77")
        _TARGET["event"] = event
        _TARGET["object"] = misp.add_object(event.id, o, pythonify=True)
    return _TARGET


def state(server: Server) -> tuple:
    """What a refused request must leave as it was: the held revision of the target event, the
    sharing groups, the known organisations and the tag settings."""
    store = Store(server.home / "store", readonly=True)
    try:
        return (store.held(target(server)["event"].uuid).record_id, sorted(r.id for r in store.sharing_groups()),
                sorted(o["uuid"] for o in store.orgs()), store.tag_settings(),
                store.local_tags([target(server)["event"].uuid]), store.head_sequence())
    finally:
        store.close()


@st.composite
def mutated(draw: st.DrawFn, valid: dict) -> dict:
    """`valid` with one to three fields replaced by arbitrary JSON, removed, or added."""
    document = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        choice = draw(st.sampled_from(["replace", "remove", "add"]))
        key = draw(st.sampled_from(sorted(document))) if document else None
        if choice == "replace" and key is not None:
            document[key] = copy.deepcopy(draw(json_values))
        elif choice == "remove" and key is not None:
            del document[key]
        else:
            document[draw(st.text(max_size=12))] = copy.deepcopy(draw(json_values))
    return document


ENDPOINTS = {
    "/objects/add/{event}": {"name": "domain-ip", "Attribute": [{"object_relation": "domain", "type": "domain",
                                                                  "value": "x.fuzz.example"}]},
    "/objectReferences/add": {"object_uuid": "{object}", "referenced_uuid": "{event_uuid}",
                              "relationship_type": "related-to"},
    "/tags/attachTagToObject": {"uuid": "{event_uuid}", "tag": "fuzz:tag", "local": 1},
    "/tags/add": {"name": "fuzz:added", "colour": "#010203"},
    "/sightings/restSearch": {"type": "0", "last": "1d", "source": "s"},
    "/sightings/add": {"values": ["fuzz.objects.example"], "type": "1", "source": "fuzz"},
    "/sightings/listSightings": {"context": "event", "id": "{event}"},
    "/admin/organisations/add": {"name": "Fuzz Org", "uuid": "8c3a4a3e-7f4e-4b5e-9d1a-0f5b1f2d3c4e",
                                 "public_key": "A" * 43},
    "/sharingGroups/add": {"name": "Fuzz group", "releasability": "r", "SharingGroupOrg": []},
    "/sharingGroups/addOrg": {"sg_id": "1", "org_id": "1"},
}


def _fill(value: object, ids: dict[str, str]) -> object:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}") and value[1:-1] in ids:
        return ids[value[1:-1]]
    return value


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), path=st.sampled_from(sorted(ENDPOINTS)))
def test_fuzz_new_endpoints_answer_2xx_or_4xx_and_a_refusal_changes_nothing(server: Server, data: st.DataObject,
                                                                           path: str):
    t = target(server)
    ids = {"event": str(t["event"].id), "event_uuid": t["event"].uuid, "object": t["object"].uuid}
    valid = {k: _fill(v, ids) for k, v in ENDPOINTS[path].items()}
    body = data.draw(mutated(valid))
    before = state(server)
    response = server.post(path.replace("{event}", ids["event"]), body)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        answer = response.json()
        assert answer["saved"] is False and {"name", "message", "url", "errors"} <= set(answer)
        assert state(server) == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ref=st.one_of(st.integers(0, 2**70).map(str), st.uuids().map(str), st.text(
    st.characters(codec="ascii", exclude_characters="/?#%"), min_size=1, max_size=20)),
       path=st.sampled_from(["/objects/view/", "/tags/view/", "/organisations/view/", "/sharing_groups/view/"]))
def test_fuzz_unknown_ids_are_misp_shaped_404s(server: Server, ref: str, path: str):
    response = server.get(path + ref)
    assert response.status_code in (200, 404), response.text
    if response.status_code == 404:
        assert response.json()["saved"] is False
