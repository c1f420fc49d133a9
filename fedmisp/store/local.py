"""What this node keeps for itself only: local tags (`local`, by event or element uuid) and tag
settings (meta b"tag:" | name). Never in a revision or the log, so never signed or sent to a peer
(decision 0009)."""
from __future__ import annotations

from typing import Any

from fedmisp.model import canonical
from fedmisp.store.db import Txn
from fedmisp.store.rows import uuid16

_TAG_SETTING = b"tag:"  # meta key prefix: + tag name (utf-8) -> canonical settings


def local_tags(t: Txn, uuids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for u in uuids:
        raw = t.get("local", uuid16(u))
        if raw is not None:
            out[u] = canonical.unpack(raw)
    return out


def set_local_tags(t: Txn, target_uuid: str, tags: list[dict[str, Any]]) -> None:
    """Replace the node-local tags of one event or element (of any organisation's event): no
    revision, no log entry, so nothing of it is signed or sent to a peer."""
    if tags:
        t.put("local", uuid16(target_uuid), canonical.pack(tags))
    else:
        t.delete("local", uuid16(target_uuid))


def drop_local_tag(t: Txn, name: str) -> int:
    """Remove one tag name from every node-local tag list; returns how many lists changed."""
    changed = 0
    for key, raw in list(t.cursor("local")):
        tags = canonical.unpack(raw)
        kept = [tag for tag in tags if tag.get("name") != name]
        if len(kept) != len(tags):
            changed += 1
            if kept:
                t.put("local", bytes(key), canonical.pack(kept))
            else:
                t.delete("local", bytes(key))
    return changed


def tag_settings(t: Txn) -> dict[str, dict[str, Any]]:
    """Node-local tag settings (colour, exportable, hide_tag) by tag name."""
    out = {}
    cur = t.cursor("meta")
    if cur.set_range(_TAG_SETTING):
        for key, raw in cur:
            if not bytes(key).startswith(_TAG_SETTING):
                break
            out[bytes(key)[len(_TAG_SETTING):].decode("utf-8")] = canonical.unpack(raw)
    return out


def set_tag_settings(t: Txn, name: str, settings: dict[str, Any] | None) -> None:
    """Store (or with None remove) one tag's node-local settings."""
    key = _TAG_SETTING + name.encode("utf-8")
    if settings is None:
        t.delete("meta", key)
    else:
        t.put("meta", key, canonical.pack(settings))
