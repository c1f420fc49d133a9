"""The level each analyst-data record received from a peer is held at (decision 0029).

An item's own distribution is signed in its record; how far it may still go from here depends on
the path it came by (1 arrives as 0, 2 as 1), so the receiver keeps the level it took it at:
meta b"analyst-level:" | record id (32) -> level (1 byte). A record made or imported here has no
entry: it is held at the level its creator set (its distribution), as an event made here is.
Two paths: the higher level is kept (as a revision's holding keeps each item's highest).
"""
from __future__ import annotations

from fedmisp.store.db import Txn

_LEVEL = b"analyst-level:"


def put_level(t: Txn, record_id: bytes, level: int) -> None:
    key = _LEVEL + record_id
    held = t.get("meta", key)
    if held is None or bytes(held)[0] < level:
        t.put("meta", key, bytes([level]))


def level(t: Txn, record_id: bytes) -> int | None:
    held = t.get("meta", _LEVEL + record_id)
    return bytes(held)[0] if held is not None else None


def drop_level(t: Txn, record_id: bytes) -> None:
    t.delete("meta", _LEVEL + record_id)
