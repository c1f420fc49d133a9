"""Sharing groups as the store holds them: the current revision of each (`sharing_groups`), and
every organisation any revision held here listed (meta b"sg-orgs-ever:" | group uuid). The
revision rules are gossip/sharing_groups.py's; the caller checks them before `put_sharing_group`."""
from __future__ import annotations

import uuid as _uuid

from fedmisp.model import canonical
from fedmisp.model.records import Record, open_record
from fedmisp.policy.holding import holding_levels
from fedmisp.policy.model import SHARING_GROUP
from fedmisp.store.db import Txn, sequence, set_sequence
from fedmisp.store.log import put_record
from fedmisp.store.rows import uuid16

_SG_EVER = b"sg-orgs-ever:"  # meta key prefix: + group uuid (16) -> canonical list of org uuids


def put_sharing_group(t: Txn, record: Record, group_uuid: str) -> None:
    """Make `record` the group's current revision (the caller checked the revision rules)."""
    seq = sequence(t)
    key = uuid16(group_uuid)
    old = t.get("sharing_groups", key)
    if old is not None:
        t.delete("records", bytes(old))
        cur = t.cursor("log")
        for k, v in cur:  # the replaced revision's log entry (groups are few and change rarely)
            if bytes(v) == bytes(old):
                cur.delete()
                break
    added, seq = put_record(t, record, seq)
    t.put("sharing_groups", key, record.id)
    ever = _orgs_ever(t, key) | {m[0] for m in record.body["members"]}
    t.put("meta", _SG_EVER + key, canonical.pack(sorted(ever)))
    set_sequence(t, seq)


def _orgs_ever(t: Txn, key: bytes) -> set[str]:
    raw = t.get("meta", _SG_EVER + key)
    return set(canonical.unpack(raw)) if raw is not None else set()


def sharing_group_orgs_ever(t: Txn, group_uuid: str) -> set[str]:
    """Every organisation a revision of the group held here listed as a member: its revisions go
    to these, so a member a revision removes learns that it was removed."""
    return _orgs_ever(t, uuid16(group_uuid))


def sharing_group(t: Txn, group_uuid: str) -> Record | None:
    rid = t.get("sharing_groups", uuid16(group_uuid))
    raw = t.get("records", bytes(rid)) if rid is not None else None
    return open_record(raw) if raw is not None else None


def sharing_groups(t: Txn) -> list[Record]:
    return [open_record(t.get("records", bytes(rid))) for rid in t.cursor("sharing_groups").iternext(keys=False)]


def events_with_group_items(t: Txn) -> list[str]:
    """Received events holding an item at level 4 (sharing group), for a node that leaves a
    group (their holdings say so without opening the revisions)."""
    out = []
    for key, raw in t.cursor("holdings"):
        if SHARING_GROUP in holding_levels(canonical.unpack(raw)):
            out.append(str(_uuid.UUID(bytes=bytes(key))))
    return out
