"""The store's own check of what it holds (`fedmisp check`, and after a restore: decision 0014).

Every held event whole and verified, its log entry and kept views agreeing with its revision, the
indexes agreeing with the bodies, and every event holding what the node is entitled to.
"""
from __future__ import annotations

import uuid as _uuid
from typing import Any, Iterable

from fedmisp.model import canonical
from fedmisp.model.identity import Identity
from fedmisp.model.records import RecordError, check_element, open_record, revision_elements
from fedmisp.policy.holding import holding_items, unpack_views
from fedmisp.policy.model import element_view
from fedmisp.store.db import Txn
from fedmisp.store.events import held_retraction
from fedmisp.store.orgs import current_key
from fedmisp.store.rows import BE8, HeldEvent


def check_integrity(t: Txn, own_keys: Iterable[bytes] = (), signer: Identity | None = None) -> list[str]:
    """Every held event whole and verified, the indexes agreeing with the held revisions, and
    every event holding what the node is entitled to: one made here (signed by `own_keys`, or
    by `signer`, or a key they rotated from) every body of its revision, a received
    one every element its holding lists. Returns the problems found (empty when sound)."""
    problems: list[str] = []
    referenced: set[bytes] = set()
    attributes = 0
    own = {current_key(t, k) for k in own_keys}
    if signer is not None:
        own.add(current_key(t, signer.public_key))
    for key, raw in t.cursor("events"):
        held = HeldEvent.decode(bytes(raw))
        event = str(_uuid.UUID(bytes=bytes(key)))
        wire = t.get("records", held.record_id)
        if wire is None:
            problems.append(f"event {event}: revision record missing")
            continue
        try:
            record = open_record(wire)
            digests = revision_elements(record)
        except RecordError as e:
            problems.append(f"event {event}: {e}")
            continue
        if t.get("log", BE8.pack(held.seq)) != held.record_id:
            problems.append(f"event {event}: log entry {held.seq} does not point at its revision")
        holding = t.get("holdings", bytes(key))
        made_here = current_key(t, record.author) in own
        if made_here and holding is not None:
            problems.append(f"event {event}: made here, but held as a copy received from a peer")
        stripped_allowed = holding is not None and not made_here
        retracted = held_retraction(t, bytes(key))
        if stripped_allowed and retracted is not None and retracted[0].supersedes(held.timestamp, held.record_id):
            problems.append(f"event {event}: its revision is superseded by its author's retraction, "
                            "yet held")
        blob = t.get("views", held.record_id)
        kept_views = dict(unpack_views(blob)) if blob is not None else None
        seen_views = 0
        held_uuids: set[str] = set()
        for digest in digests:
            body = t.get("bodies", bytes(key) + digest)
            if body is None:
                # A received revision holds only what policy let in; a local one is whole.
                if not stripped_allowed:
                    problems.append(f"event {event}: element body {digest.hex()[:16]} missing")
                continue
            try:
                element = check_element(digest, bytes(body))
            except RecordError as e:
                problems.append(f"event {event}: {e}")
                continue
            held_uuids.add(str(element.get("uuid")))
            referenced.add(bytes(key) + digest)
            attributes += "value" in element and "type" in element
            if kept_views is not None:
                seen_views += 1
                if kept_views.get(digest) != element_view(element):
                    problems.append(f"event {event}: the kept view of element {digest.hex()[:16]} "
                                    "does not match its body")
        if kept_views is not None and seen_views != len(kept_views):
            problems.append(f"event {event}: {len(kept_views)} element views kept for {seen_views} bodies")
        if stripped_allowed:
            listed = holding_items(canonical.unpack(holding)) - {event}
            if listed - held_uuids:
                problems.append(f"event {event}: {len(listed - held_uuids)} element(s) held at a level "
                                f"without their body (e.g. {sorted(listed - held_uuids)[0]})")
            if held_uuids - listed:
                problems.append(f"event {event}: {len(held_uuids - listed)} element bod(ies) held "
                                f"without a level (e.g. {sorted(held_uuids - listed)[0]})")
    bodies = t.entries("bodies")
    if bodies != len(referenced):
        problems.append(f"{bodies} element bodies stored, {len(referenced)} referenced")
    indexed = t.entries("ix_type")  # one row per attribute
    if indexed != attributes:
        problems.append(f"{indexed} attributes indexed, {attributes} held")
    return problems


