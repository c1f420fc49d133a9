"""Sharing-group revision records: the body codec round-trips, optional fields stay out of the
signed bytes when unset, and a malformed body is refused."""
from __future__ import annotations

import uuid

from hypothesis import given, strategies as st

from fedmisp.gossip import sharing_groups as sg
from fedmisp.model.identity import Identity
from fedmisp.model.records import KIND_SHARING_GROUP, open_record, seal
from fedmisp.policy.model import SharingGroup

IDENTITY = Identity.generate()
org_uuids = st.uuids(version=4).map(str)


@st.composite
def groups(draw: st.DrawFn) -> SharingGroup:
    owner = draw(org_uuids)
    members = draw(st.dictionaries(org_uuids, st.booleans(), max_size=6))
    return SharingGroup(uuid=draw(org_uuids), name=draw(st.text(max_size=30)), owner=owner,
                        revision=draw(st.integers(1, 2**31)), members={**members, owner: True},
                        releasability=draw(st.text(max_size=30)), description=draw(st.text(max_size=30)),
                        deleted=draw(st.booleans()))


@given(groups())
def test_a_group_survives_signing_and_opening(group: SharingGroup):
    record = open_record(seal(IDENTITY, KIND_SHARING_GROUP, sg.to_body(group)).wire())
    assert sg.from_record(record) == group


@given(groups())
def test_unset_description_and_deleted_are_not_in_the_signed_body(group: SharingGroup):
    body = sg.to_body(group)
    assert ("description" in body) == bool(group.description)
    assert ("deleted" in body) == group.deleted


@given(st.sampled_from(["description", "deleted"]), st.one_of(st.integers(-2**63, 2**63 - 1), st.none(), st.lists(st.text())))
def test_a_malformed_optional_field_is_refused(field: str, value: object):
    body = sg.to_body(SharingGroup(str(uuid.uuid4()), "g", str(uuid.uuid4()), 1, {}))
    body[field] = value
    record = seal(IDENTITY, KIND_SHARING_GROUP, dict(sorted(body.items())))
    try:
        sg.from_record(record)
    except sg.SharingGroupError as e:
        assert "description" in str(e)
    else:
        raise AssertionError(f"{field}={value!r} was accepted")
