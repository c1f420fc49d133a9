"""Bad input: the whole event is refused, the error names the element, field and what is accepted."""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fedmisp.model import canonical
from fedmisp.model.misp import EventError, ImportDefaults, parse_event, to_misp
from fedmisp.node.importer import import_paths

from factories import ORG, event

DEFAULTS = ImportDefaults(org_uuid=ORG["uuid"], org_name=ORG["name"], now=1_700_000_000)


def broken(mutate) -> dict:
    raw = copy.deepcopy(event(seed=42, attributes=4, objects=1)["Event"])
    mutate(raw)
    return raw


def _set(path, value):
    def mutate(raw):
        target = raw
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return mutate


CASES = {
    "unknown_type": (_set(["Attribute", 1, "type"], "ip-destination"), "Attribute[1]", "type", "not a MISP attribute type"),
    "category_that_does_not_fit_the_type": (_set(["Attribute", 0, "category"], "Financial fraud"), "Attribute[0]", "category", "accepted: "),
    "malformed_uuid": (_set(["Attribute", 0, "uuid"], "1234"), "Attribute[0]", "uuid", "8-4-4-4-12"),
    "missing_info": (_set(["info"], KeyError), "event", "info", "missing"),
    "empty_info": (_set(["info"], "  "), "event", "info", "empty"),
    "ip_dst_that_is_not_an_ip": (_set(["Attribute", 0, "value"], "300.1.2.3"), "Attribute[0]", "value", "300.1.2.3"),
    "md5_that_is_not_32_hex": (_set(["Attribute", 2, "value"], "abc"), "Attribute[2]", "value", "md5"),
    "oversized_value": (_set(["Attribute", 4 - 1, "value"], "https://a.example/" + "x" * 70_000), "Attribute[3]", "value", "65535"),
    "oversized_comment": (_set(["Attribute", 0, "comment"], "c" * 70_000), "Attribute[0]", "comment", "at most 65535"),
    "distribution_out_of_range": (_set(["distribution"], "7"), "event", "distribution", "0 to 4"),
    "timestamp_not_a_number": (_set(["timestamp"], "yesterday"), "event", "timestamp", "not an integer"),
    "bad_date": (_set(["date"], "02/01/2024"), "event", "date", "YYYY-MM-DD"),
    "sharing_group_level_without_group": (_set(["distribution"], "4"), "event", "sharing_group_uuid", "sharing group"),
    "object_missing_required_relation": (_set(["Object", 0, "Attribute"], [{"type": "text", "category": "Other", "value": "x", "object_relation": "text"}]), "Object[0]", "Attribute", "requires at least one of"),
    "object_relation_with_the_wrong_type": (_set(["Object", 0, "Attribute", 0, "type"], "hostname"), "Object[0]", "Attribute", "takes type domain"),
    "reference_without_target": (_set(["Object", 0, "ObjectReference", 0, "referenced_uuid"], None), "ObjectReference[0]", "referenced_uuid", "missing"),
    "tag_without_name": (_set(["Tag"], [{"colour": "#fff"}]), "event", "Tag[0].name", "missing"),
    "attribute_list_that_is_not_a_list": (_set(["Attribute"], {"value": 1}), "event", "Attribute", "expected a list"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_naming_where_field_and_what_is_accepted(case):
    mutate, where, field, accepted = CASES[case]
    with pytest.raises(EventError) as info:
        parse_event(broken(mutate), DEFAULTS)
    matching = [p for p in info.value.problems if where in p.where and p.field == field]
    assert matching, f"no problem at {where} / {field}: {info.value}"
    assert accepted in matching[0].message, str(matching[0])


def test_a_refused_event_leaves_nothing_in_the_store(node, tmp_path):
    raw = broken(_set(["Attribute", 3, "value"], "not a url at all \x00"))
    raw["Attribute"][3]["type"] = "ip-src"
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"Event": raw}))
    # strict: the bad attribute refuses the event (without --strict it is dropped alone:
    # tests/test_import_lenient.py)
    report = import_paths(node, [path], strict=True)
    assert report.events_stored == 0 and len(report.refused) == 1
    stats = node.store.stats()
    assert stats["events"] == 0 and stats["bodies"] == 0 and stats["attributes"] == 0


def test_duplicate_element_uuids_are_refused():
    raw = broken(lambda r: r["Attribute"][1].update(uuid=r["Attribute"][0]["uuid"]))
    with pytest.raises(EventError, match="appears twice"):
        parse_event(raw, DEFAULTS)


def test_missing_optional_fields_are_filled_as_misp_fills_them():
    parsed = parse_event({"info": "minimal", "Attribute": [{"type": "ip-dst", "value": "192.0.2.1"}]}, DEFAULTS)
    a = parsed.elements[0].body
    assert a["category"] == "Network activity" and a["to_ids"] is True and a["distribution"] == 5
    assert parsed.header["Orgc"] == {"name": ORG["name"], "uuid": ORG["uuid"]}
    assert parsed.header["distribution"] == 1 and parsed.header["threat_level_id"] == 4


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
_FIELDS = ["uuid", "type", "category", "value", "to_ids", "distribution", "timestamp", "Tag", "comment",
           "deleted", "first_seen", "object_relation", "info", "date", "Attribute", "Object"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_events_are_either_refused_cleanly_or_round_trip(data):
    """Whatever a file holds, parsing raises EventError or yields an event that re-exports and
    re-parses to the same bodies."""
    raw = copy.deepcopy(event(seed=data.draw(st.integers(0, 5)), attributes=3, objects=1)["Event"])
    targets = [raw] + raw["Attribute"] + raw["Object"] + raw["Object"][0]["Attribute"]
    for _ in range(data.draw(st.integers(1, 4))):
        target = data.draw(st.sampled_from(targets))
        target[data.draw(st.sampled_from(_FIELDS))] = data.draw(_json)
    try:
        parsed = parse_event(raw, DEFAULTS)
    except EventError as e:
        assert e.problems and all(p.message for p in e.problems)
        return
    for element in parsed.elements:  # bodies are built in canonical key order (the fast path relies on it)
        assert canonical.pack_sorted(element.body) == canonical.pack(element.body)
    out = to_misp(parsed.header, [e.body for e in parsed.elements], parsed.sightings, parsed.proposals,
                  parsed.local_tags)
    again = parse_event(out["Event"], DEFAULTS)
    assert [e.body for e in again.elements] == [e.body for e in parsed.elements]
    assert again.header == parsed.header


@pytest.mark.parametrize("timestamp", ["\u00b2", "\u0661\u0667\u0660\u0660"])  # superscript two; Arabic-Indic digits
def test_an_attribute_timestamp_of_non_ascii_digits_is_refused_naming_the_field(timestamp):
    raw = event(seed=3, attributes=2, objects=0)["Event"]
    raw["Attribute"][1]["timestamp"] = timestamp
    with pytest.raises(EventError) as refused:
        parse_event(raw, DEFAULTS)
    assert "Attribute[1]" in str(refused.value) and "timestamp" in str(refused.value)


@pytest.mark.parametrize("value", [-2**63 - 1, 2**64, 10**40, -(10**40)])
def test_an_unknown_field_with_an_integer_msgpack_cannot_hold_is_kept_as_its_decimal_text(value):
    """A MISP field this node does not know is kept as given (decision 0002), floats as their text;
    an integer beyond msgpack's range likewise, instead of failing the signature's encoding (the API
    fuzz test met a 500 for events/edit with {"Organisation": -9223372036854775809})."""
    raw = copy.deepcopy(event(seed=3, attributes=1, objects=0)["Event"])
    raw["Organisation"] = value
    raw["Attribute"][0]["x_count"] = value
    parsed = parse_event(raw, ImportDefaults(org_uuid=ORG["uuid"], org_name=ORG["name"]))
    canonical.pack(parsed.header)  # encodes
    assert parsed.header["extra"]["Organisation"] == str(value)
    assert parsed.elements[0].body["extra"]["x_count"] == str(value)
    for kept in (-2**63, 2**64 - 1, 7):
        raw["Organisation"] = kept
        assert parse_event(raw, ImportDefaults(org_uuid=ORG["uuid"], org_name=ORG["name"])).header["extra"]["Organisation"] == kept
