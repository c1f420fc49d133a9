"""Signed records and strippable event revisions (docs DESIGN "Records").

Wire form of a record: canonical msgpack of ``[signed, signature]`` where ``signed`` is the canonical
encoding of ``[version, kind, author, created, body]``. The record id is BLAKE2b-256 of ``signed``:
the same content always has the same id, whoever relays it.

An event revision's body is ``{"event": header, "elements": [digest, ...]}``. Each element (attribute,
object, object reference) travels beside it as ``salt || canonical(element)`` and its digest is
BLAKE2b-256 keyed with the salt. A fresh 128-bit salt per element means a withheld element cannot be
recovered by hashing candidate values (as in SD-JWT), and a relay can leave any body out without
breaking the signature.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Iterable

import msgpack

from fedmisp.model import canonical
from fedmisp.model.identity import Identity, verify

RECORD_VERSION = 1

KIND_ORG = "org"
KIND_SHARING_GROUP = "sharing-group"
KIND_EVENT = "event"
KIND_SIGHTINGS = "sightings"
KIND_PROPOSAL = "proposal"
KIND_PROPOSAL_DECISION = "proposal-decision"
KIND_RETRACTION = "retraction"  # an author's word that earlier revisions of its event are superseded
KIND_ANALYST = "analyst-data"  # a note, opinion or relationship, signed by its creator (model/analyst.py)
KIND_TEMPLATE = "object-template"  # a custom MISP object template an organisation publishes (model/templates.py)
KIND_CLUSTER = "galaxy-cluster"  # a version of a custom galaxy cluster, signed by its creator (model/clusters.py)
KINDS = frozenset(
    {KIND_ORG, KIND_SHARING_GROUP, KIND_EVENT, KIND_SIGHTINGS, KIND_PROPOSAL, KIND_PROPOSAL_DECISION,
     KIND_RETRACTION, KIND_ANALYST, KIND_TEMPLATE, KIND_CLUSTER}
)

SALT_BYTES = 16  # 128 bits: out of reach of any dictionary over a value space (SD-JWT uses 128 too)
DIGEST_BYTES = 32
# One event's element list; MISP events of a few hundred thousand attributes exist in the wild.
MAX_ELEMENTS_PER_EVENT = 1_000_000
# One element body; an attribute value is at most 64 KiB but a malware-sample carries its file.
MAX_ELEMENT_BYTES = 32 * 1024 * 1024


class RecordError(ValueError):
    """A record or element that is malformed, altered or not validly signed."""


class SignatureError(RecordError):
    """A record well formed but whose signature does not verify (forged, or altered on the way):
    the one RecordError a receiver counts as a bad signature rather than as malformed."""


@dataclass(frozen=True, slots=True)
class Record:
    version: int
    kind: str
    author: bytes
    created: int
    body: Any
    signed: bytes
    signature: bytes

    @property
    def id(self) -> bytes:
        return blake2b(self.signed, digest_size=32).digest()

    def wire(self) -> bytes:
        return canonical.pack_sorted([self.signed, self.signature])


def seal(identity: Identity, kind: str, body: Any, created: int | None = None) -> Record:
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}")
    created = int(time.time()) if created is None else created
    signed = canonical.pack([RECORD_VERSION, kind, identity.public_key, created, body])
    return Record(RECORD_VERSION, kind, identity.public_key, created, body, signed, identity.sign(signed))


def record_author(wire: bytes) -> bytes:
    """The author key of a record whose wire form was verified before (stored, or opened already),
    read without decoding its body: a revision's body lists every element's digest."""
    signed = canonical.unpack(wire)[0]
    fields = msgpack.Unpacker(raw=False)
    fields.feed(signed)
    fields.read_array_header()
    fields.skip()  # version
    fields.skip()  # kind
    return fields.unpack()


def open_record(wire: bytes) -> Record:
    """Parse a record from its wire form and verify its signature; RecordError says what is wrong."""
    try:
        outer = canonical.unpack(wire)
    except canonical.CanonicalError as e:
        raise RecordError(f"record: {e}") from None
    if not (isinstance(outer, list) and len(outer) == 2
            and isinstance(outer[0], bytes) and isinstance(outer[1], bytes)):
        raise RecordError("record: expected [signed bytes, signature bytes]")
    signed, signature = outer
    try:
        inner = canonical.unpack_canonical(signed)
    except canonical.CanonicalError as e:
        raise RecordError(f"record: {e}") from None
    if not (isinstance(inner, list) and len(inner) == 5):
        raise RecordError("record: expected [version, kind, author, created, body]")
    version, kind, author, created, body = inner
    if version != RECORD_VERSION:
        raise RecordError(f"record: version {version!r} not supported (this node reads {RECORD_VERSION})")
    if kind not in KINDS:
        raise RecordError(f"record: unknown kind {kind!r}; accepted: {', '.join(sorted(KINDS))}")
    if not (isinstance(author, bytes) and len(author) == 32):
        raise RecordError("record: author must be a 32-byte Ed25519 public key")
    if not isinstance(created, int):
        raise RecordError("record: created must be an integer timestamp")
    if not verify(author, signed, signature):
        raise SignatureError("record: signature does not verify")
    return Record(version, kind, author, created, body, signed, signature)


# --- elements of an event revision -------------------------------------------------------------

def element_digest(body: bytes) -> bytes:
    return blake2b(memoryview(body)[SALT_BYTES:], key=body[:SALT_BYTES], digest_size=DIGEST_BYTES).digest()


def seal_element(element: dict[str, Any], salt: bytes) -> tuple[bytes, bytes]:
    """(digest, body) for one element; `salt` must be fresh unless the element is unchanged."""
    body = salt + canonical.pack(element)
    return element_digest(body), body


def open_element(body: bytes) -> dict[str, Any]:
    try:
        element = canonical.unpack(memoryview(body)[SALT_BYTES:], max_bytes=MAX_ELEMENT_BYTES)
    except canonical.CanonicalError as e:
        raise RecordError(f"element: {e}") from None
    if not isinstance(element, dict):
        raise RecordError("element: expected a map")
    return element


def fresh_salts(n: int) -> Iterable[bytes]:
    """n fresh salts from one urandom call (one syscall per event, not per element)."""
    pool = os.urandom(SALT_BYTES * n)
    return (pool[i:i + SALT_BYTES] for i in range(0, len(pool), SALT_BYTES))


def revision_elements(record: Record) -> list[bytes]:
    """The digest list of a verified event revision, checked for shape."""
    body = record.body
    if record.kind != KIND_EVENT or not isinstance(body, dict):
        raise RecordError("event revision: expected an event record")
    header, elements = body.get("event"), body.get("elements")
    if not isinstance(header, dict) or not isinstance(elements, list):
        raise RecordError("event revision: body must have 'event' (map) and 'elements' (list)")
    if len(elements) > MAX_ELEMENTS_PER_EVENT:
        raise RecordError(f"event revision: {len(elements)} elements; at most {MAX_ELEMENTS_PER_EVENT}")
    for d in elements:
        if not (isinstance(d, bytes) and len(d) == DIGEST_BYTES):
            raise RecordError("event revision: each element digest must be 32 bytes")
    if len(set(elements)) != len(elements):
        raise RecordError("event revision: duplicate element digests")
    return elements


def body_problem(expected_digest: bytes, body: bytes, *, digest: bytes | None = None) -> str | None:
    """What is wrong with a body as the content of the digest the signed skeleton carries (None:
    nothing; it is not decoded). `digest`: the body's digest, when the caller has hashed it already."""
    if len(body) <= SALT_BYTES or len(body) > MAX_ELEMENT_BYTES + SALT_BYTES:
        return "element: body size out of range"
    if (element_digest(body) if digest is None else digest) != expected_digest:
        return "element: body does not match its digest"
    return None


def check_element(expected_digest: bytes, body: bytes, *, digest: bytes | None = None) -> dict[str, Any]:
    """Verify a body against the digest the signed skeleton carries; return the element."""
    problem = body_problem(expected_digest, body, digest=digest)
    if problem is not None:
        raise RecordError(problem)
    return open_element(body)


def verify_revision(wire: bytes, bodies: dict[bytes, bytes]) -> tuple[Record, dict[bytes, dict[str, Any]]]:
    """Verify a (possibly stripped) event revision: one signature, then each body present.

    Bodies may be missing (withheld by a relay); a body that is present but does not match its
    digest, or a body for no digest in the skeleton, is an error.
    """
    record = open_record(wire)
    digests = revision_elements(record)
    wanted = set(digests)
    opened: dict[bytes, dict[str, Any]] = {}
    for digest, body in bodies.items():
        if digest not in wanted:
            raise RecordError("element: body for a digest the revision does not carry")
        opened[digest] = check_element(digest, body)
    return record, opened
