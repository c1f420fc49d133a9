"""The kept-views codec of policy/holding.py: views packed in parts (by the row workers, each its
own msgpack array) are joined under one array header without re-encoding (`join_views`). A join
that misreads a part's header would drop, duplicate or garble the policy views of elements, so the
receiver would decide on the wrong ones: every msgpack array header form is crossed here, on the
parts' side (fixarray up to 15 items, array 16 up to 65,535, array 32 beyond) and on the joined side."""
from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from fedmisp.policy.holding import join_views, unpack_views, views_of


def _part(start: int, count: int) -> tuple[bytes, list[bytes]]:
    """A part of `count` kept views (digest = the index as 32 bytes) and the digests in order."""
    digests = [i.to_bytes(32, "big") for i in range(start, start + count)]
    bodies = [{"uuid": f"00000000-0000-4000-8000-{i:012x}", "type": "ip-dst", "value": "192.0.2.1",
               "distribution": i % 6} for i in range(start, start + count)]
    return views_of(zip(digests, bodies)), digests


@pytest.mark.parametrize("sizes", [
    [0], [1], [15], [16], [15, 1], [8, 8], [16, 0, 3], [65_535], [65_536], [65_535, 1], [70_000, 15],
    [0, 0], [1, 65_536, 16],
])
def test_joined_parts_read_as_every_view_of_every_part_in_order(sizes):
    blobs, expected, start = [], [], 0
    for count in sizes:
        blob, digests = _part(start, count)
        blobs.append(blob)
        expected.extend(digests)
        start += count
    joined = join_views(blobs)
    views = unpack_views(joined)
    assert [d for d, _ in views] == expected
    # each view is the one its own part held
    assert [(v.uuid, v.distribution) for _, v in views] == \
        [(f"00000000-0000-4000-8000-{i:012x}", i % 6) for i in range(start)]
    # and the join is what packing everything at once gives
    assert joined == _part(0, start)[0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=6))
def test_any_split_of_views_joins_to_the_whole(sizes):
    blobs, start = [], 0
    for count in sizes:
        blobs.append(_part(start, count)[0])
        start += count
    assert join_views(blobs) == _part(0, start)[0]


@pytest.mark.parametrize("blob", [b"", b"\x80", b"\xc0", msgpack.packb({"a": 1})])
def test_a_part_that_is_not_a_msgpack_array_is_refused(blob):
    with pytest.raises(ValueError, match="kept views"):
        join_views([blob])
