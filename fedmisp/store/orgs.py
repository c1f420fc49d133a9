"""Organisations and their keys as the store holds them (table `orgs`; decisions 0013, 0019).

Keys under `orgs`: an org uuid (16) -> the record id of its latest org record; b"key:" | public key
-> the org it signs for; b"retired:" | public key -> when it was rotated and by which key;
b"known:" | org uuid -> an organisation an admin introduced (no record of its own). The rules that
decide whether an org record is taken are policy/orgs.py's; this module gathers their facts.
"""
from __future__ import annotations

import uuid as _uuid
from typing import Any, Mapping

from fedmisp.model import canonical
from fedmisp.model.org import read_org
from fedmisp.model.records import Record, RecordError, open_record
from fedmisp.policy.orgs import KeyState, check_org_record
from fedmisp.policy.reasons import Reason
from fedmisp.store.db import Txn
from fedmisp.store.rows import BE8, uuid16

# Rotations followed from a pinned key to the current one; a key rotated yearly never gets near.
MAX_ROTATION_CHAIN = 1000


def org_reason(t: Txn, record: Record, pinned: Mapping[bytes, str]) -> Reason:
    if t.get("records", record.id) is not None:
        return Reason.ALLOWED  # held already: storing it again is a no-op
    try:
        claim = read_org(record)
    except RecordError:
        return Reason.MALFORMED
    return check_org_record(
        claim, key_state(t, record.author), key_state(t, claim.key),
        org_known=t.get("orgs", uuid16(claim.uuid)) is not None,
        voucher=key_state(t, claim.voucher) if claim.voucher is not None else None,
        pinned=pinned.get(claim.key) == claim.uuid)


def put_org(t: Txn, record: Record) -> None:
    """Index a new org record: the org's latest record, its key, the key it retired."""
    claim = read_org(record)
    org = uuid16(claim.uuid)
    t.put("orgs", org, record.id)
    t.put("orgs", b"key:" + claim.key, org)
    if claim.previous is not None:
        t.put("orgs", b"retired:" + claim.previous, BE8.pack(record.created) + claim.key)


def key_state(t: Txn, key: bytes) -> KeyState:
    """Which organisation a key signs for, and whether (when, by which key) it was rotated."""
    org = t.get("orgs", b"key:" + key)
    retired = t.get("orgs", b"retired:" + key)
    return KeyState(
        org=str(_uuid.UUID(bytes=bytes(org))) if org is not None else None,
        retired_at=BE8.unpack_from(retired)[0] if retired is not None else None,
        successor=bytes(retired[8:]) if retired is not None else None,
    )


def current_key(t: Txn, key: bytes) -> bytes:
    """The key that replaced `key` through its org's rotations (`key` itself if never rotated)."""
    for _ in range(MAX_ROTATION_CHAIN):
        retired = t.get("orgs", b"retired:" + key)
        if retired is None:
            return key
        key = bytes(retired[8:])
    raise RecordError(f"key rotation chain longer than {MAX_ROTATION_CHAIN}")


def org_for_key(t: Txn, key: bytes) -> str | None:
    raw = t.get("orgs", b"key:" + key)
    return str(_uuid.UUID(bytes=bytes(raw))) if raw is not None else None


def orgs(t: Txn) -> list[dict[str, Any]]:
    """Organisations this node knows: from their own signed org records ({uuid, name, key,
    ..., "introduced": False}) and those an admin introduced ("introduced": True)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in t.cursor("orgs"):
        key = bytes(key)
        if len(key) == 16:
            raw = t.get("records", bytes(value))
            if raw is not None:
                record = open_record(raw)
                out[str(_uuid.UUID(bytes=key))] = {**record.body, "key": record.author, "introduced": False}
        elif key.startswith(b"known:"):
            org = canonical.unpack(value)
            out.setdefault(org["uuid"], {**org, "introduced": True})
    return list(out.values())


def org_count(t: Txn) -> int:
    """Organisations with an org record held (one 16-byte key each)."""
    return sum(1 for k in t.cursor("orgs").iternext(values=False) if len(k) == 16)


def introduce_org(t: Txn, org_uuid: str, name: str, key: bytes) -> bool:
    """Know an organisation by uuid, name and public key, as an admin said (records signed by
    that key are then accepted from peers, as from an org record). False if the uuid or the key
    is known already."""
    u = uuid16(org_uuid)
    if t.get("orgs", u) is not None or t.get("orgs", b"known:" + u) is not None \
            or t.get("orgs", b"key:" + key) is not None:
        return False
    t.put("orgs", b"known:" + u, canonical.pack({"key": key, "name": name, "uuid": str(_uuid.UUID(bytes=u))}))
    t.put("orgs", b"key:" + key, u)
    return True
