"""Custom galaxy clusters as the store holds them (decision 0031), in `meta`:

  b"cluster:" | cluster uuid (16)       -> msgpack [record id, log sequence, level, [peer names]]:
                                           the version held, the level it is held at, and the
                                           peers that gave it at that level (none: made here)
  b"cluster-block:" | cluster uuid (16) -> b"": hard-deleted here; no version is taken again

One version per uuid; a version it replaces leaves the records and the log (decision 0003). The
version rules are policy/clusters.py's; `accept_cluster` gathers their facts and applies the
answer in the caller's write transaction.
"""
from __future__ import annotations

from typing import Any

from fedmisp.model import canonical
from fedmisp.model.clusters import ClusterError, check_body
from fedmisp.model.records import Record, open_record
from fedmisp.policy.clusters import check_cluster_version
from fedmisp.policy.reasons import Reason
from fedmisp.store.db import Txn, sequence, set_sequence
from fedmisp.store.log import put_record
from fedmisp.store.orgs import key_state
from fedmisp.store.rows import BE8, uuid16

_CLUSTER = b"cluster:"
_BLOCK = b"cluster-block:"


def _held(t: Txn, key: bytes) -> tuple[Record, int, int, list[str]] | None:
    raw = t.get("meta", _CLUSTER + key)
    if raw is None:
        return None
    record_id, seq, level, sources = canonical.unpack(bytes(raw))
    wire = t.get("records", bytes(record_id))
    return (open_record(bytes(wire)), seq, level, list(sources)) if wire is not None else None


def _put(t: Txn, key: bytes, record_id: bytes, seq: int, level: int, sources: list[str]) -> None:
    t.put("meta", _CLUSTER + key, canonical.pack([record_id, seq, level, sorted(set(sources))]))


def accept_cluster(t: Txn, record: Record, level: int | None, source: str | None) -> Reason:
    """Hold a cluster version if the rules allow it. `level`: the level it is taken at (None:
    made here, held at its distribution); `source`: the peer it came from (None: made here). The
    same version by another path keeps the higher level and the peers that gave it at it."""
    try:
        body = check_body(record.body)
    except ClusterError:
        return Reason.MALFORMED
    key = uuid16(body["uuid"])
    if t.get("meta", _BLOCK + key) is not None:
        return Reason.CLUSTER_BLOCKED
    level = body["distribution"] if level is None else level
    held = _held(t, key)
    if held is not None and held[0].id == record.id:
        _, seq, held_level, sources = held
        if level > held_level:
            _put(t, key, record.id, seq, level, [source] if source else [])
        elif level == held_level and source and source not in sources:
            _put(t, key, record.id, seq, level, [*sources, source])
        return Reason.ALLOWED
    reason = check_cluster_version(held[0].body["orgc_uuid"] if held is not None else None,
                                   held[0].body["version"] if held is not None else None,
                                   body["orgc_uuid"], body["version"], key_state(t, record.author))
    if reason is not Reason.ALLOWED:
        return reason
    if held is not None:
        _remove(t, held[0].id, held[1])
    _, seq = put_record(t, record, sequence(t))
    _put(t, key, record.id, seq, level, [source] if source else [])
    set_sequence(t, seq)
    return reason


def _remove(t: Txn, record_id: bytes, seq: int) -> None:
    t.delete("records", record_id)
    t.delete("log", BE8.pack(seq))


def hard_delete(t: Txn, cluster_uuid: str) -> bool:
    """Remove a cluster here and refuse its versions from then on (MISP's hard delete, which adds
    the uuid to its cluster blocklist); what peers hold stays theirs. False: not held."""
    key = uuid16(cluster_uuid)
    held = _held(t, key)
    if held is None:
        return False
    _remove(t, held[0].id, held[1])
    t.delete("meta", _CLUSTER + key)
    t.put("meta", _BLOCK + key, b"")
    return True


def blocked(t: Txn, cluster_uuid: str) -> bool:
    return t.get("meta", _BLOCK + uuid16(cluster_uuid)) is not None


def cluster(t: Txn, cluster_uuid: str) -> tuple[Record, int, list[str]] | None:
    """The version held of a cluster, its level and the peers it came from."""
    held = _held(t, uuid16(cluster_uuid))
    return (held[0], held[2], held[3]) if held is not None else None


def clusters(t: Txn) -> list[tuple[Record, int, list[str]]]:
    out: list[Any] = []
    cursor = t.cursor("meta")
    if cursor.set_range(_CLUSTER):
        for key, _ in cursor:
            key = bytes(key)
            if not key.startswith(_CLUSTER):
                break
            held = _held(t, key[len(_CLUSTER):])
            if held is not None:
                out.append((held[0], held[2], held[3]))
    return out
