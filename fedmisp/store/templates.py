"""Published object templates as the store holds them (decision 0030), in `meta`:

  b"template:" | template uuid (16)      -> record id (32) | log sequence (8) of the version held
  b"template-wait:" | template uuid (16) -> msgpack {peer name: log sequence}: revisions a peer
                                            offered that name the template, refused until it comes
  b"recheck:" | peer name                -> log sequence (8): a template such a revision waited for
                                            arrived; the next pull of the peer starts before it

The version rules are policy/templates.py's; `accept_template` gathers their facts and applies the
answer in the caller's write transaction.
"""
from __future__ import annotations

from fedmisp.model import canonical
from fedmisp.model.describe import ObjectTemplate
from fedmisp.model.records import Record, open_record
from fedmisp.model.templates import TemplateError, check_not_shipped, validate_definition
from fedmisp.policy.reasons import Reason
from fedmisp.policy.templates import check_template_version
from fedmisp.store.db import Txn, sequence, set_sequence
from fedmisp.store.log import checkpoint, put_record, set_checkpoint
from fedmisp.store.orgs import key_state, org_for_key
from fedmisp.store.rows import BE8, uuid16

_TEMPLATE = b"template:"
_WAIT = b"template-wait:"
_RECHECK = b"recheck:"


def _held(t: Txn, key: bytes) -> tuple[Record, int] | None:
    raw = t.get("meta", _TEMPLATE + key)
    if raw is None:
        return None
    raw = bytes(raw)
    wire = t.get("records", raw[:32])
    return (open_record(wire), BE8.unpack(raw[32:])[0]) if wire is not None else None


def accept_template(t: Txn, record: Record) -> Reason:
    """Hold a template version if the rules allow it (policy/templates.py); a held one it
    replaces leaves the records and the log (decision 0003). A revision waiting for the template
    makes its peer's next pull start before that revision (`pull_from`)."""
    if t.get("records", record.id) is not None:
        return Reason.ALLOWED  # held already
    try:
        template = validate_definition(record.body)
        check_not_shipped(template)
    except TemplateError:
        return Reason.MALFORMED
    key = uuid16(template.uuid)
    held = _held(t, key)
    held_org = org_for_key(t, held[0].author) if held is not None else None
    reason = check_template_version(held_org if held is not None else None,
                                    int(held[0].body["version"]) if held is not None else None,
                                    template.version, key_state(t, record.author))
    if reason is not Reason.ALLOWED:
        return reason
    if held is not None:
        t.delete("records", held[0].id)
        t.delete("log", BE8.pack(held[1]))
    added, seq = put_record(t, record, sequence(t))
    t.put("meta", _TEMPLATE + key, record.id + BE8.pack(seq))
    set_sequence(t, seq)
    waiting = t.get("meta", _WAIT + key)
    if waiting is not None:
        for peer, at in canonical.unpack(bytes(waiting)).items():
            recheck = t.get("meta", _RECHECK + peer.encode("utf-8"))
            if recheck is None or BE8.unpack(bytes(recheck))[0] > at:
                t.put("meta", _RECHECK + peer.encode("utf-8"), BE8.pack(at))
        t.delete("meta", _WAIT + key)
    return reason


def await_template(t: Txn, template_uuid: str, peer: str, seq: int) -> None:
    """A revision `peer` offered at `seq` names a template this node does not hold: when it
    arrives, the peer's next pull starts before `seq` (the revision is taken then)."""
    key = _WAIT + uuid16(template_uuid)
    raw = t.get("meta", key)
    waiting: dict[str, int] = canonical.unpack(bytes(raw)) if raw is not None else {}
    waiting[peer] = min(waiting.get(peer, seq), seq)
    t.put("meta", key, canonical.pack(dict(sorted(waiting.items()))))


def recheck_due(t: Txn, peer: str) -> bool:
    return t.get("meta", _RECHECK + peer.encode("utf-8")) is not None


def pull_from(t: Txn, peer: str) -> int:
    """Where the next pull of `peer` starts: its checkpoint, moved back before the earliest
    revision that waited for a template which has arrived since (the mark is used up)."""
    at = checkpoint(t, peer)
    key = _RECHECK + peer.encode("utf-8")
    recheck = t.get("meta", key)
    if recheck is None:
        return at
    t.delete("meta", key)
    at = min(at, max(0, BE8.unpack(bytes(recheck))[0] - 1))
    set_checkpoint(t, peer, at)
    return at


def template_record(t: Txn, template_uuid: str) -> Record | None:
    held = _held(t, uuid16(template_uuid))
    return held[0] if held is not None else None


def template_records(t: Txn) -> list[Record]:
    out = []
    cursor = t.cursor("meta")
    if cursor.set_range(_TEMPLATE):
        for key, value in cursor:
            if not bytes(key).startswith(_TEMPLATE):
                break
            wire = t.get("records", bytes(value)[:32])
            if wire is not None:
                out.append(open_record(wire))
    return out


def published_templates(t: Txn) -> dict[str, ObjectTemplate]:
    """The published templates held, by uuid (what model/templates.py resolve_template reads)."""
    out: dict[str, ObjectTemplate] = {}
    for record in template_records(t):
        template = validate_definition(record.body)
        out[template.uuid] = template
    return out
