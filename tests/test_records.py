"""Signed, strippable records: any altered byte fails, any stripped subset still verifies."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings, strategies as st

from fedmisp.model import canonical
from fedmisp.model.identity import Identity
from fedmisp.model.misp import ImportDefaults, parse_event
from fedmisp.model.records import (
    KIND_ORG, RecordError, open_record, seal, verify_revision,
)
from fedmisp.model.revision import sign_event

from factories import ORG, event

IDENTITY = Identity.generate()
DEFAULTS = ImportDefaults(org_uuid=ORG["uuid"], org_name=ORG["name"], now=1_700_000_000)


def _signed(attributes: int = 3, objects: int = 1):
    parsed = parse_event(event(seed=1, attributes=attributes, objects=objects)["Event"], DEFAULTS)
    return sign_event(IDENTITY, parsed)


def test_a_record_verifies_and_its_id_is_stable():
    record = seal(IDENTITY, KIND_ORG, {"name": "A", "uuid": ORG["uuid"], "key": IDENTITY.public_key}, created=5)
    again = open_record(record.wire())
    assert again.body == record.body and again.id == record.id
    # Ed25519 is deterministic: the same content signed twice is the same record.
    assert seal(IDENTITY, KIND_ORG, record.body, created=5).wire() == record.wire()


def test_every_altered_byte_of_a_revision_is_refused():
    signed = _signed()
    wire = signed.record.wire()
    bodies = {e.digest: e.body for e in signed.elements}
    verify_revision(wire, bodies)
    for i in range(len(wire)):
        altered = bytearray(wire)
        altered[i] ^= 0x01
        with pytest.raises(RecordError):
            verify_revision(bytes(altered), bodies)


def test_every_altered_byte_of_an_element_body_is_refused():
    signed = _signed(attributes=2, objects=1)
    wire = signed.record.wire()
    for element in signed.elements:
        for i in range(len(element.body)):
            altered = bytearray(element.body)
            altered[i] ^= 0x80
            with pytest.raises(RecordError):
                verify_revision(wire, {element.digest: bytes(altered)})


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_stripped_subset_of_elements_still_verifies(data):
    signed = _signed(attributes=6, objects=2)
    keep = data.draw(st.lists(st.sampled_from(signed.elements), unique_by=lambda e: e.digest))
    record, opened = verify_revision(signed.record.wire(), {e.digest: e.body for e in keep})
    assert set(opened) == {e.digest for e in keep}
    assert len(record.body["elements"]) == len(signed.elements)


def test_a_body_for_a_digest_the_revision_does_not_carry_is_refused():
    signed, other = _signed(), _signed()
    stray = other.elements[0]
    with pytest.raises(RecordError, match="does not carry"):
        verify_revision(signed.record.wire(), {stray.digest: stray.body})


def test_a_withheld_value_is_not_recoverable_from_its_digest():
    """Same element, two revisions signed separately: fresh salts give unrelated digests."""
    a, b = _signed(), _signed()
    assert {e.digest for e in a.elements}.isdisjoint({e.digest for e in b.elements})


def test_a_new_revision_shares_digests_of_unchanged_elements():
    first = _signed(attributes=5, objects=0)
    held = {e.element["uuid"]: (e.digest, e.body) for e in first.elements}
    raw = event(seed=1, attributes=5, objects=0)["Event"]
    raw["timestamp"] = str(int(raw["timestamp"]) + 10)
    raw["Attribute"][2]["comment"] = "changed"
    second = sign_event(IDENTITY, parse_event(raw, DEFAULTS), held.get)
    shared = {e.digest for e in first.elements} & {e.digest for e in second.elements}
    assert len(shared) == 4


def test_non_canonical_encoding_is_refused():
    record = seal(IDENTITY, KIND_ORG, {"b": 1, "a": 2}, created=1)
    import msgpack
    unsorted = msgpack.packb([1, KIND_ORG, IDENTITY.public_key, 1, {"b": 1, "a": 2}], use_bin_type=True)
    forged = canonical.pack_sorted([unsorted, IDENTITY.sign(unsorted)])
    assert open_record(record.wire()).body == {"a": 2, "b": 1}
    with pytest.raises(RecordError, match="canonical"):
        open_record(forged)


def test_a_signature_by_another_key_is_refused():
    record = seal(IDENTITY, KIND_ORG, {"x": 1}, created=1)
    other = Identity.generate()
    forged = canonical.pack_sorted([record.signed, other.sign(record.signed)])
    with pytest.raises(RecordError, match="signature"):
        open_record(forged)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_record_parser(data):
    with pytest.raises(RecordError):
        open_record(data)


def test_identity_key_file_is_private(tmp_path):
    path = tmp_path / "identity.key"
    IDENTITY.save(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert Identity.load(path).public_key == IDENTITY.public_key
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        Identity.load(path)
    with pytest.raises(FileExistsError):
        IDENTITY.save(path)
