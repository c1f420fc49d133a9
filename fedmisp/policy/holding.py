"""The holding and views codecs: how the store keeps what policy decides on, read by everyone who
reads them (the sender and receiver in gossip/, the store, fedmisp demo).

A holding (policy/model.py Holding: the level each item of a received event is held at, and which
peers gave it) is kept per event; the views of an event's held elements (ElementView, the fields
policy reads of each body) are kept beside its revision, so a sender decides what a peer may have
without decoding every body. Nothing else decodes either format.
"""
from __future__ import annotations

from typing import Any, Iterable

import msgpack

from fedmisp.model import canonical
from fedmisp.policy.model import ElementView, Holding, element_view_fields, view_from_fields


# --- holdings ------------------------------------------------------------------------------------

def pack_holding(h: Holding) -> bytes:
    """The holding as stored: items grouped by (level, sources), `{c, g: [[level, sources or nil,
    [uuid, ...]], ...], k}`, every list sorted, so the same holding always packs to the same bytes.

    An event that arrived by one path is one or two groups whatever its size; the earlier form (a
    level and a source list per element, `{c, k, l, s}`, still read) was a third of the receiver's
    policy time in a bulk pull and 2-3 times the size of the event's skeleton."""
    groups: dict[tuple[int, frozenset[str] | None], list[str]] = {}
    sources = h.sources
    for uuid, level in h.levels.items():
        key = (level, sources.get(uuid))
        group = groups.get(key)
        if group is None:
            groups[key] = [uuid]
        else:
            group.append(uuid)
    packed = [[level, None if src is None else sorted(src), sorted(uuids)] for (level, src), uuids in groups.items()]
    packed.sort(key=lambda g: (g[0], g[1] is not None, g[1] or []))
    return canonical.pack_sorted({"c": h.correlation_only, "g": packed,
                                  "k": dict(sorted(h.correlation_levels.items()))})


def unpack_holding(raw: Any) -> Holding:
    """A stored holding (`pack_holding`'s form, or the earlier per-element one)."""
    if "g" not in raw:
        return Holding(levels=raw["l"], sources={k: frozenset(v) for k, v in raw["s"].items()},
                       correlation_only=raw["c"], correlation_levels=raw.get("k", {}))
    levels: dict[str, int] = {}
    sources: dict[str, frozenset[str]] = {}
    for level, src, uuids in raw["g"]:
        levels.update(dict.fromkeys(uuids, level))
        if src is not None:
            sources.update(dict.fromkeys(uuids, frozenset(src)))
    return Holding(levels=levels, sources=sources, correlation_only=raw["c"], correlation_levels=raw["k"])


def holding_all_from(raw: Any, peer_name: str) -> bool:
    """Whether every item of a stored holding came from `peer_name` (rule 5 for the whole event),
    read without unpacking it per element."""
    if "g" not in raw:
        sources = raw["s"]
        return bool(sources) and all(peer_name in sources.get(u, ()) for u in raw["l"])
    groups = raw["g"]
    return bool(groups) and all(src is not None and peer_name in src for _, src, _ in groups)


def holding_items(raw: Any, *, correlation: bool = True) -> set[str]:
    """Every uuid a stored holding gives a level (`correlation`: also those held for correlation
    only), read without unpacking it per element."""
    items = {u for _, _, uuids in raw["g"] for u in uuids} if "g" in raw else set(raw["l"])
    return items | set(raw.get("k", {})) if correlation else items


def correlation_only_items(raw: Any) -> set[str]:
    """The items of a stored holding held only for correlation (they came over correlation-only
    links at their held level): matched, never shown (Holding.correlation_levels)."""
    return set(raw.get("k", {})) - holding_items(raw, correlation=False)


def held_levels(raw: Any) -> tuple[bool, dict[str, int], dict[str, int]]:
    """What a stored holding says each item is held at (correlation only, the levels, the
    correlation levels), without the sources each level came from: two holdings that differ only
    in their sources let no peer receive more than the other."""
    levels = {u: g[0] for g in raw["g"] for u in g[2]} if "g" in raw else dict(raw["l"])
    return bool(raw.get("c")), levels, dict(raw.get("k", {}))


def holding_levels(raw: Any) -> set[int]:
    """The levels a stored holding holds any item at (for correlation too)."""
    levels = {g[0] for g in raw["g"]} if "g" in raw else set(raw["l"].values())
    return levels | set(raw.get("k", {}).values())


# --- views ---------------------------------------------------------------------------------------

def view_fields(view: ElementView) -> list[Any]:
    """An element view as `element_view_fields` gives it."""
    return [*view[:8], sorted(view.tags), view.to_ids]


# The views of an event's held elements, as the store keeps them beside the revision (a sender
# then decides what a peer may have without decoding every body): one msgpack array of
# `[digest, fields]`, in no particular order.

def views_of(items: Iterable[tuple[bytes, dict[str, Any]]]) -> bytes:
    """The kept views of (digest, element body) pairs."""
    return msgpack.packb([[digest, element_view_fields(body)] for digest, body in items], use_bin_type=True)


def pack_views(items: Iterable[tuple[bytes, ElementView]]) -> bytes:
    """The kept views of (digest, view) pairs."""
    return msgpack.packb([[digest, view_fields(view)] for digest, view in items], use_bin_type=True)


def unpack_views(blob: bytes) -> list[tuple[bytes, ElementView]]:
    return [(digest, view_from_fields(fields)) for digest, fields in msgpack.unpackb(blob, raw=False, use_list=False)]


def join_views(blobs: list[bytes]) -> bytes:
    """Kept views packed in parts (by different processes) as one: their arrays' items under one
    array header (msgpack: fixarray, array 16 or array 32)."""
    count, items = 0, []
    for blob in blobs:
        first = blob[0] if blob else None
        if first is None:
            raise ValueError("kept views: an empty part")
        if first & 0xF0 == 0x90:
            n, skip = first & 0x0F, 1
        elif first == 0xDC:
            n, skip = int.from_bytes(blob[1:3], "big"), 3
        elif first == 0xDD:
            n, skip = int.from_bytes(blob[1:5], "big"), 5
        else:
            raise ValueError("kept views: expected a msgpack array")
        count += n
        items.append(memoryview(blob)[skip:])
    header = bytes([0x90 | count]) if count < 16 else (b"\xdc" + count.to_bytes(2, "big") if count < 1 << 16
                                                       else b"\xdd" + count.to_bytes(4, "big"))
    return header + b"".join(items)
