"""Turning a validated event into signed records: the revision, its sightings and proposals."""
from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, Callable

from fedmisp.model import canonical
from fedmisp.model.identity import Identity
from fedmisp.model.misp import ParsedEvent
from fedmisp.model.records import (
    DIGEST_BYTES, KIND_ANALYST, KIND_EVENT, KIND_PROPOSAL, KIND_SIGHTINGS, SALT_BYTES, Record, fresh_salts, seal,
)

# previous element of the same uuid in the held revision: (digest, body) or None
PreviousLookup = Callable[[str], "tuple[bytes, bytes] | None"]


@dataclass(slots=True)
class Element:
    digest: bytes
    body: bytes  # salt || canonical element: what travels and is stored
    element: dict[str, Any]  # decoded, for indexing
    keys: tuple[str, ...] | None = None  # normalised value(s) if known; the store computes them otherwise


@dataclass(slots=True)
class SignedEvent:
    """One event revision with everything that is stored beside it, ready for one transaction."""
    uuid: str
    timestamp: int
    level: int  # the distribution level this node holds the event at
    record: Record
    elements: list[Element]
    extra_records: list[Record] = field(default_factory=list)  # sightings, proposals, analyst data
    local_tags: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def attribute_count(self) -> int:
        return sum(1 for e in self.elements if "value" in e.element and "type" in e.element)


def sign_event(identity: Identity, parsed: ParsedEvent, previous: PreviousLookup | None = None) -> SignedEvent:
    """Sign `parsed` as a revision. An element identical to the held revision's keeps its salt, so
    the new revision shares its digest and a peer that holds it fetches nothing for it."""
    items = parsed.elements
    pack = canonical.sorted_packer().pack
    packed = [pack(item.body) for item in items]  # a list at a time: the ingest hot path
    salts = list(fresh_salts(len(items)))
    digests = [blake2b(p, key=salt, digest_size=DIGEST_BYTES).digest()  # = element_digest(salt + packed)
               for p, salt in zip(packed, salts)]
    elements = [Element(d, salt + p, item.body, item.keys) for d, salt, p, item in zip(digests, salts, packed, items)]
    if previous is not None:
        for i, item in enumerate(items):
            held = previous(item.uuid)
            if held is not None and held[1][SALT_BYTES:] == packed[i]:
                elements[i] = Element(held[0], held[1], item.body, item.keys)
    record = seal(identity, KIND_EVENT, {"event": parsed.header, "elements": [e.digest for e in elements]},
                  created=parsed.header["timestamp"])
    extra: list[Record] = []
    if parsed.sightings:
        extra.append(seal(identity, KIND_SIGHTINGS, {"event_uuid": parsed.uuid, "sightings": parsed.sightings}))
    for proposal in parsed.proposals:
        extra.append(seal(identity, KIND_PROPOSAL, {"event_uuid": parsed.uuid, "proposal": proposal}))
    for body in parsed.analyst:
        # created = the item's modified: the same item imported again is the same record
        extra.append(seal(identity, KIND_ANALYST, body, created=body["item"]["modified"]))
    return SignedEvent(parsed.uuid, parsed.timestamp, parsed.header["distribution"], record, elements,
                       extra, parsed.local_tags)
