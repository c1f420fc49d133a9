"""Canonical msgpack: the one byte form every node produces for the same value.

Signatures and content ids are computed over bytes, so two nodes must encode a value identically:
map keys are sorted (by their UTF-8 bytes), strings are str, binary is bin, integers use msgpack's
smallest form (the library's default), and nothing else (no floats: MISP's values are strings, and a
float's encoding is a source of disagreement between implementations).
"""
from __future__ import annotations

from typing import Any

import msgpack

# Records are bounded long before this; the unpacker limits guard against hostile input
# (msgpack's defaults allow 2**31 entries).
MAX_RECORD_BYTES = 64 * 1024 * 1024


class CanonicalError(ValueError):
    pass


def sorted_value(value: Any, *, floats_as_text: bool = False) -> Any:
    """`value` with every map's keys in sorted order and tuples as lists, ready for pack_sorted.
    `floats_as_text` (a MISP field this node does not know, kept as given: decision 0002): floats,
    and integers msgpack cannot hold, become their decimal text."""
    if isinstance(value, dict):
        return {k: sorted_value(value[k], floats_as_text=floats_as_text) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        if value and all(v.__class__ is bytes for v in value):
            return value if isinstance(value, list) else list(value)  # a revision's digest list
        return [sorted_value(v, floats_as_text=floats_as_text) for v in value]
    if isinstance(value, float):
        if floats_as_text:
            return repr(value)
        raise CanonicalError("floats have no canonical form here; encode the value as a string")
    if floats_as_text and value.__class__ is int and not -2**63 <= value < 2**64:
        return str(value)  # beyond msgpack's integers: kept as its decimal text, as a float is
    return value


def pack(value: Any) -> bytes:
    """Encode `value` canonically (dict keys sorted, tuples as arrays)."""
    return msgpack.packb(sorted_value(value), use_bin_type=True)


def pack_sorted(value: Any) -> bytes:
    """Encode a value the caller built with sorted keys already (the ingest hot path: the model
    builds element bodies in key order, and tests check pack_sorted(body) == pack(body))."""
    return msgpack.packb(value, use_bin_type=True)


def sorted_packer() -> "msgpack.Packer":
    """A reusable encoder for values built with sorted keys (msgpack.packb makes a new Packer per
    call, which costs about as much as encoding a small element). Not thread-safe: one per loop."""
    return msgpack.Packer(use_bin_type=True)


def unpack(data: bytes, *, max_bytes: int = MAX_RECORD_BYTES) -> Any:
    if len(data) > max_bytes:
        raise CanonicalError(f"encoded value is {len(data)} bytes; at most {max_bytes} accepted")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise CanonicalError(f"not valid msgpack: {e}") from None


def unpack_canonical(data: bytes, *, max_bytes: int = MAX_RECORD_BYTES) -> Any:
    """Decode and insist that `data` is the canonical encoding of what it decodes to.

    A second byte form of the same value would give the same content two ids; refusing it keeps
    "re-sent data is a no-op" true.
    """
    value = unpack(data, max_bytes=max_bytes)
    try:
        again = pack(value)
    except CanonicalError:
        raise
    if again != data:
        raise CanonicalError("not in canonical form (map keys must be sorted, smallest integer forms)")
    return value
