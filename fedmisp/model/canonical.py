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


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_sorted(v) for v in value]
    if isinstance(value, float):
        raise CanonicalError("floats have no canonical form here; encode the value as a string")
    return value


def pack(value: Any) -> bytes:
    """Encode `value` canonically (dict keys sorted, tuples as arrays)."""
    return msgpack.packb(_sorted(value), use_bin_type=True)


def pack_sorted(value: Any) -> bytes:
    """Encode a value the caller built with sorted keys already (the ingest hot path)."""
    return msgpack.packb(value, use_bin_type=True)


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
