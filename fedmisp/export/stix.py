"""restSearch returnFormat stix2: a STIX 2.1 bundle made by misp-stix (MISP's own converter).

misp-stix maps each MISP event to a report with its indicators (attributes with to_ids), observed
data (the others), the creator org as an identity and tags as markings or labels; an attribute
search becomes a collection of the same objects without the report. The bundle is written a piece
at a time: each event (or each ATTRIBUTES_PER_CHUNK attributes) is converted on its own and its
objects are added to the one bundle, an object already written (the creator's identity, a TLP
marking) only once.
"""
from __future__ import annotations

import json
import logging
import uuid
from itertools import islice
from typing import Any, Iterable, Iterator

log = logging.getLogger("fedmisp.export")

ATTRIBUTES_PER_CHUNK = 500  # the converter holds one chunk's objects at a time


def _parser() -> Any:
    from misp_stix_converter import MISPtoSTIX21Parser
    return MISPtoSTIX21Parser()


def _objects(parser: Any) -> list[Any]:
    """The objects converted since the last call (reading `bundle` resets the converter)."""
    for error in parser.errors.values() if isinstance(parser.errors, dict) else ():
        log.warning("STIX conversion: %s", error)
    return list(parser.bundle.objects)


def _bundle(chunks: Iterator[list[Any]]) -> Iterator[str]:
    yield f'{{"type": "bundle", "id": "bundle--{uuid.uuid4()}", "objects": ['
    written: set[str] = set()
    for objects in chunks:
        for obj in objects:
            if obj.id in written:
                continue
            yield ("," if written else "") + "\n" + obj.serialize()
            written.add(obj.id)
    yield "\n]}\n"


def events_bundle(events: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A bundle of MISP JSON events ``{"Event": ...}``: one report per event."""
    def chunks() -> Iterator[list[Any]]:
        parser = _parser()
        for event in events:
            parser.parse_misp_event(json.loads(json.dumps(event)))  # it edits what it converts
            yield _objects(parser)
    return _bundle(chunks())


def attributes_bundle(attributes: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A bundle of MISP JSON attributes, each with its ``Event`` (for the creator's identity)."""
    def chunks() -> Iterator[list[Any]]:
        parser = _parser()
        it = iter(attributes)
        while chunk := list(islice(it, ATTRIBUTES_PER_CHUNK)):
            parser.parse_misp_attributes(json.loads(json.dumps(chunk)))
            yield _objects(parser)
    return _bundle(chunks())
