"""Node-local state in the store: local tags, tag settings, introduced organisations, and the events
that have sightings. None of it is a record: nothing here enters the changes log."""
from __future__ import annotations

import uuid

from hypothesis import given, settings, strategies as st

from fedmisp.model.identity import Identity
from fedmisp.model.records import KIND_SIGHTINGS, seal
from fedmisp.store.store import Store

IDENTITY = Identity.generate()



def test_local_tags_are_set_replaced_and_dropped_without_a_log_entry(store):
    target, other = str(uuid.uuid4()), str(uuid.uuid4())
    store.set_local_tags(target, [{"name": "a"}, {"name": "b"}])
    store.set_local_tags(other, [{"name": "b"}])
    assert store.local_tags([target, other]) == {target: [{"name": "a"}, {"name": "b"}], other: [{"name": "b"}]}
    assert store.drop_local_tag("b") == 2
    assert store.local_tags([target, other]) == {target: [{"name": "a"}]}
    store.set_local_tags(target, [])
    assert store.local_tags([target]) == {}
    assert store.head_sequence() == 0


def test_tag_settings_are_kept_by_name_and_removed(store):
    store.set_tag_settings("tlp:red", {"colour": "#ff0000"})
    store.set_tag_settings("a:b", {})
    assert store.tag_settings() == {"a:b": {}, "tlp:red": {"colour": "#ff0000"}}
    store.set_tag_settings("tlp:red", None)
    assert store.tag_settings() == {"a:b": {}}


def test_an_introduced_organisation_makes_its_key_known_once(store):
    key = Identity.generate().public_key
    org = str(uuid.uuid4())
    assert store.introduce_org(org, "Partner", key)
    assert store.org_for_key(key) == org
    assert not store.introduce_org(org, "Again", Identity.generate().public_key)
    assert not store.introduce_org(str(uuid.uuid4()), "Same key", key)
    assert [(o["uuid"], o["name"], o["introduced"]) for o in store.orgs()] == [(org, "Partner", True)]
    assert store.head_sequence() == 0


@settings(max_examples=25, deadline=None)
@given(count=st.integers(0, 12), page=st.integers(1, 5))
def test_events_with_sightings_are_listed_once_each_across_pages(tmp_path_factory, count: int, page: int):
    store = Store(tmp_path_factory.mktemp("s") / "store", map_size=1 << 28)
    try:
        events = [str(uuid.uuid4()) for _ in range(count)]
        records = [seal(IDENTITY, KIND_SIGHTINGS, {"event_uuid": e, "sightings": [
            {"attribute_uuid": str(uuid.uuid4()), "date_sighting": i, "source": "", "type": 0,
             "uuid": str(uuid.uuid4())}]}) for i, e in enumerate(events) for _ in range(2)]
        store.write_records(records)
        assert sorted(store.events_with_records(page=page)) == sorted(events)
    finally:
        store.close()
