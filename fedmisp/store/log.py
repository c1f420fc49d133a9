"""The local changes feed and the records it points at: `log` (sequence -> record id), `records`
(record id -> wire bytes), and how far this node has pulled each peer (`checkpoints`).

One log entry per held record; a replaced revision's entry is removed, as in CouchDB's changes
feed (decision 0003). The head sequence is meta b"seq" (store/db.py `sequence`)."""
from __future__ import annotations

from fedmisp.model.records import Record, open_record
from fedmisp.store.db import Txn
from fedmisp.store.rows import BE8


def put_record(t: Txn, record: Record, seq: int) -> tuple[bool, int]:
    """Hold a record not held yet and log it; (whether it was new, the log's new head)."""
    rid = record.id
    if not t.put("records", rid, record.wire(), overwrite=False):
        return False, seq
    seq += 1
    t.put("log", BE8.pack(seq), rid)
    return True, seq


def log_since(t: Txn, seq: int, limit: int = 1000) -> list[tuple[int, bytes]]:
    """(sequence, record id) of the log entries after `seq`, at most `limit` (at least one)."""
    page = t.items_from("log", BE8.pack(seq + 1), max(limit, 1))
    return [(BE8.unpack(key)[0], bytes(rid)) for key, rid in page]


def record(t: Txn, record_id: bytes) -> Record | None:
    raw = t.get("records", record_id)
    return open_record(raw) if raw is not None else None


def checkpoint(t: Txn, peer: str) -> int:
    raw = t.get("checkpoints", peer.encode("utf-8"))
    return BE8.unpack(raw)[0] if raw is not None else 0


def set_checkpoint(t: Txn, peer: str, seq: int) -> None:
    t.put("checkpoints", peer.encode("utf-8"), BE8.pack(seq))
