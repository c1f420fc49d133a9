"""Proposals (MISP's shadow attributes) and their decisions as the store holds them.

A proposal is a `proposal` record signed by the proposing org, attached to its event; it is open
until a `proposal-decision` record for it (accepted or discarded, signed by the event's creator)
is held. Both are kept, so a relay passes both on and every node that holds the decision stops
listing the proposal, whatever order the two arrive in.

A proposal's numeric id (MISP's ShadowAttribute.id) is the first 7 bytes of its record id as an
integer: the same on every node, looked up with one `set_range` on the `proposals` database, and
nothing written for it (as for attribute ids, decision 0005).
"""
from __future__ import annotations

import uuid as _uuid
from dataclasses import dataclass
from typing import Any, Iterator

from fedmisp.model.records import KIND_PROPOSAL, Record
from fedmisp.store import log
from fedmisp.store.db import Txn
from fedmisp.store.events import attached_ids
from fedmisp.store.rows import uuid16
from fedmisp.store.store import Store

PROPOSAL_ID_BYTES = 7  # as attribute ids (decision 0005): below 2^56, sent as strings
MAX_PROPOSAL_ID = 2 ** (8 * PROPOSAL_ID_BYTES) - 1

ACCEPTED = "accepted"
DISCARDED = "discarded"
DECISIONS = (ACCEPTED, DISCARDED)


@dataclass(frozen=True, slots=True)
class HeldProposal:
    record: Record
    event_uuid: str

    @property
    def id(self) -> int:
        return proposal_id(self.record.id)

    @property
    def body(self) -> dict[str, Any]:
        return self.record.body["proposal"]


def proposal_id(record_id: bytes) -> int:
    return int.from_bytes(record_id[:PROPOSAL_ID_BYTES], "big")


def _open(txn: Txn, store: Store, record_id: bytes, ev: bytes) -> HeldProposal | None:
    if txn.get("decisions", record_id) is not None:
        return None  # accepted or discarded
    record = log.record(txn, record_id)
    if record is None or record.kind != KIND_PROPOSAL:
        return None
    return HeldProposal(record, str(_uuid.UUID(bytes=bytes(ev))))


def open_proposals(store: Store, event_uuid: str | None = None, limit: int = 10_000,
                   offset: int = 0) -> list[HeldProposal]:
    """Open proposals, of one event or of all, in record id order (stable across calls), at most
    `limit` of them after skipping `offset`."""
    out: list[HeldProposal] = []
    skipped = 0
    with store.read() as txn:
        if event_uuid is None:
            candidates: Iterator[tuple[bytes, bytes]] = (
                (bytes(rid), bytes(ev)) for rid, ev in txn.cursor("proposals"))
        else:
            ev = uuid16(event_uuid)
            ids = sorted(attached_ids(txn, ev))
            candidates = ((rid, ev) for rid in ids if txn.get("proposals", rid) is not None)
        for record_id, ev in candidates:
            found = _open(txn, store, record_id, ev)
            if found is None:
                continue
            if skipped < offset:
                skipped += 1
                continue
            out.append(found)
            if len(out) >= limit:
                break
    return out


def find_proposal(store: Store, number: int) -> HeldProposal | None:
    """The open proposal numbered `number`; None if none, decided, or (a clash) ambiguous."""
    if not 0 < number <= MAX_PROPOSAL_ID:
        return None
    prefix = number.to_bytes(PROPOSAL_ID_BYTES, "big")
    with store.read() as txn:
        cur = txn.cursor("proposals")
        matches = []
        if cur.set_range(prefix):
            for record_id, ev in cur:
                if bytes(record_id[:PROPOSAL_ID_BYTES]) != prefix or len(matches) > 1:
                    break
                matches.append((bytes(record_id), bytes(ev)))
        if len(matches) != 1:
            return None
        return _open(txn, store, *matches[0])


def decision_for(store: Store, proposal_record_id: bytes) -> Record | None:
    """The decision that closed a proposal, if this node holds one."""
    with store.read() as txn:
        rid = txn.get("decisions", proposal_record_id)
        return log.record(txn, bytes(rid)) if rid is not None else None


def decision_body(event_uuid: str, proposal: Record, decision: str) -> dict[str, Any]:
    """The body of a `proposal-decision` record."""
    if decision not in DECISIONS:
        raise ValueError(f"decision {decision!r}; accepted: {', '.join(DECISIONS)}")
    return {"decision": decision, "event_uuid": event_uuid, "proposal": proposal.id}


def proposal_shape_problem(body: Any) -> str | None:
    """What is wrong with a received proposal's body (None when well-formed): views and the API
    read these fields."""
    if not isinstance(body, dict) or not isinstance(body.get("event_uuid"), str) \
            or not isinstance(body.get("proposal"), dict):
        return "expected {event_uuid, proposal}"
    proposal = body["proposal"]
    for key in ("uuid", "type", "category", "value"):
        if not isinstance(proposal.get(key), str):
            return f"proposal.{key} must be a string"
    if isinstance(proposal.get("timestamp"), bool) or not isinstance(proposal.get("timestamp"), int):
        return "proposal.timestamp must be an integer"
    if "attribute_uuid" in proposal and not isinstance(proposal["attribute_uuid"], str):
        return "proposal.attribute_uuid must be a uuid"
    try:
        uuid16(body["event_uuid"])
    except ValueError:
        return "event_uuid must be a uuid"
    return None


def decision_shape_problem(body: Any) -> str | None:
    """What is wrong with a received decision's body (None when well-formed)."""
    if not isinstance(body, dict) or set(body) != {"decision", "event_uuid", "proposal"}:
        return "expected {decision, event_uuid, proposal}"
    if body["decision"] not in DECISIONS:
        return f"decision must be one of {', '.join(DECISIONS)}"
    if not isinstance(body["event_uuid"], str) or not isinstance(body["proposal"], bytes) \
            or len(body["proposal"]) != 32:
        return "event_uuid must be a uuid and proposal a 32-byte record id"
    try:
        uuid16(body["event_uuid"])
    except ValueError:
        return "event_uuid must be a uuid"
    return None
