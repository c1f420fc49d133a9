"""MISP JSON and MISP feed output.

The feed layout is MISP's: ``manifest.json`` (event uuid -> summary), one ``<uuid>.json`` per event
in the feed form (no local ids, Orgc by name and uuid), and ``hashes.csv`` (md5 of each attribute
value, event uuid) that MISP uses to look up feed hits without downloading events.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from fedmisp.store.store import Store


def events(store: Store, *, include_local: bool = True) -> Iterator[dict[str, Any]]:
    for event_uuid in store.event_uuids():
        event = store.export_event(event_uuid)
        if event is None:
            continue
        if not include_local:
            _strip_local(event["Event"])
        yield event


def _strip_local(event: dict[str, Any]) -> None:
    """Local tags are node-local annotations: they never leave in a feed."""
    def keep(tags: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [t for t in tags if not t.get("local")]
    if "Tag" in event:
        event["Tag"] = keep(event["Tag"])
    for attribute in event.get("Attribute", []):
        if "Tag" in attribute:
            attribute["Tag"] = keep(attribute["Tag"])
    for obj in event.get("Object", []):
        for attribute in obj.get("Attribute", []):
            if "Tag" in attribute:
                attribute["Tag"] = keep(attribute["Tag"])


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, "utf-8")
    os.replace(tmp, path)


def write_misp_json(store: Store, out: Path, shown: Iterable[dict[str, Any]] | None = None) -> int:
    """One ``<uuid>.json`` per event, ``{"Event": ...}`` with local tags marked local (`shown`:
    the events as the caller completes them, by default `events(store)`)."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for event in events(store) if shown is None else shown:
        _write_atomic(out / f"{event['Event']['uuid']}.json", json.dumps(event, indent=1, ensure_ascii=False))
        n += 1
    return n


def manifest_entry(event: dict[str, Any]) -> dict[str, Any]:
    """An event's line in manifest.json: what MISP's feed fetcher reads to decide what to download
    (it fetches an event again when `timestamp` changed)."""
    e = event["Event"]
    return {"Orgc": e["Orgc"], "Tag": e.get("Tag", []), "info": e["info"], "date": e["date"],
            "analysis": e["analysis"], "threat_level_id": e["threat_level_id"], "timestamp": e["timestamp"]}


def hash_lines(event: dict[str, Any]) -> Iterator[str]:
    """hashes.csv lines of an event: md5 of each attribute value (each half of a composite), event uuid."""
    e = event["Event"]
    attributes = list(e.get("Attribute", []))
    for obj in e.get("Object", []):
        attributes.extend(obj.get("Attribute", []))
    for a in attributes:
        for part in a["value"].split("|") if "|" in a["type"] else [a["value"]]:
            yield f"{hashlib.md5(part.encode('utf-8')).hexdigest()},{e['uuid']}\n"


def write_feed(feed_events: Iterable[dict[str, Any]], out: Path) -> int:
    """A MISP feed folder of `feed_events` (`events(store, include_local=False)`, or a served feed's)."""
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {}
    hashes: list[str] = []
    for event in feed_events:
        e = event["Event"]
        _write_atomic(out / f"{e['uuid']}.json", json.dumps(event, ensure_ascii=False))
        manifest[e["uuid"]] = manifest_entry(event)
        hashes.extend(hash_lines(event))
    _write_atomic(out / "hashes.csv", "".join(hashes))
    _write_atomic(out / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False))
    return len(manifest)
