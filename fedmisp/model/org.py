"""Org records: an organisation introducing its signing key, and rotating it (decisions 0013, 0019).

An introduction is self-signed: body ``{key, name, uuid}`` with ``key`` the author. It may carry a
vouch, ``{..., voucher, vouch}``: ``vouch`` is the voucher key's signature over (context, org uuid,
key), so a current key of the organisation says the new key is the organisation's too (its other
node). A rotation is signed by the key it retires and names it: body ``{key: new, previous: old,
proof, name, uuid}``, where ``proof`` is the new key's signature over (context, org uuid, old key,
new key), so the announcement proves possession of both keys and cannot hand someone else's key to
the org. Whether the old key (or the voucher) is the org's *current* key is the receiver's
question (policy/orgs.py).
"""
from __future__ import annotations

import uuid as _uuid
from dataclasses import dataclass

from fedmisp.model import canonical
from fedmisp.model.identity import Identity, verify
from fedmisp.model.records import KIND_ORG, Record, RecordError, seal

_ROTATION_CONTEXT = b"fedmisp-key-rotation-v1"
_VOUCH_CONTEXT = b"fedmisp-key-vouch-v1"
MAX_ORG_NAME = 255  # MISP's organisations.name is varchar(255)


@dataclass(frozen=True, slots=True)
class OrgClaim:
    """What a verified org record says: this key signs for this organisation."""
    uuid: str
    name: str
    key: bytes
    previous: bytes | None  # the key this one replaces (a rotation, signed by it); None: an introduction
    voucher: bytes | None = None  # an introduction's voucher: the key whose signature `vouch` verified


def _proof_message(org_uuid: str, previous: bytes, new: bytes) -> bytes:
    return canonical.pack([_ROTATION_CONTEXT, org_uuid, previous, new])


def _vouch_message(org_uuid: str, key: bytes) -> bytes:
    return canonical.pack([_VOUCH_CONTEXT, org_uuid, key])


def vouch(voucher: Identity, org_uuid: str, key: bytes) -> bytes:
    """`voucher`'s signature saying `key` signs for `org_uuid` too (for the new key's introduction)."""
    return voucher.sign(_vouch_message(org_uuid, key))


def introduction(identity: Identity, org_name: str, org_uuid: str, created: int = 0,
                 vouched: tuple[bytes, bytes] | None = None) -> Record:
    """The self-signed record that makes `identity`'s key known as `org_uuid`'s; `vouched`: (voucher
    key, its `vouch` signature) when the organisation already has a key that vouches for this one."""
    body: dict[str, object] = {"key": identity.public_key, "name": org_name, "uuid": org_uuid}
    if vouched is not None:
        body["voucher"], body["vouch"] = vouched
    return seal(identity, KIND_ORG, body, created)


def rotation(old: Identity, new: Identity, org_name: str, org_uuid: str, created: int | None = None) -> Record:
    """The announcement that `new` replaces `old`: signed by `old`, countersigned (proof) by `new`."""
    proof = new.sign(_proof_message(org_uuid, old.public_key, new.public_key))
    body = {"key": new.public_key, "name": org_name, "previous": old.public_key, "proof": proof, "uuid": org_uuid}
    return seal(old, KIND_ORG, body, created)


def read_org(record: Record) -> OrgClaim:
    """The claim of a verified org record; RecordError names what is wrong with its body."""
    body = record.body
    if record.kind != KIND_ORG or not isinstance(body, dict):
        raise RecordError("org record: expected a map body")
    key, name, org_uuid = body.get("key"), body.get("name"), body.get("uuid")
    if not (isinstance(key, bytes) and len(key) == 32):
        raise RecordError("org record: key must be a 32-byte Ed25519 public key")
    if not isinstance(name, str) or len(name) > MAX_ORG_NAME:
        raise RecordError(f"org record: name must be a string of at most {MAX_ORG_NAME} characters")
    try:
        canonical_uuid = str(_uuid.UUID(org_uuid)) if isinstance(org_uuid, str) else None
    except ValueError:
        canonical_uuid = None
    if canonical_uuid is None or canonical_uuid != org_uuid:
        raise RecordError("org record: uuid must be a lower-case UUID")
    previous = body.get("previous")
    if previous is None:
        if key != record.author:
            raise RecordError("org record: an introduction must be signed by its own key")
        voucher = body.get("voucher")
        if voucher is None and "vouch" not in body:
            return OrgClaim(org_uuid, name, key, None)
        signature = body.get("vouch")
        if not (isinstance(voucher, bytes) and len(voucher) == 32 and voucher != key and isinstance(signature, bytes)
                and verify(voucher, _vouch_message(org_uuid, key), signature)):
            raise RecordError("org record: the introduction's vouch does not verify with its voucher key")
        return OrgClaim(org_uuid, name, key, None, voucher)
    if "voucher" in body or "vouch" in body:
        raise RecordError("org record: a key rotation carries no vouch")
    if previous != record.author:
        raise RecordError("org record: a key rotation must be signed by the key it retires (previous)")
    if key == previous:
        raise RecordError("org record: a key rotation must name a new key")
    proof = body.get("proof")
    if not (isinstance(proof, bytes) and verify(key, _proof_message(org_uuid, previous, key), proof)):
        raise RecordError("org record: the rotation's proof does not verify with the new key")
    return OrgClaim(org_uuid, name, key, previous)
