"""restSearch returnFormat csv: MISP's attribute CSV (app/Lib/Export/CsvExport.php columns)."""
from __future__ import annotations

import csv
import io
from typing import Any, Iterable, Iterator

from fedmisp.store import query
from fedmisp.store.store import Store

COLUMNS = ("uuid", "event_id", "category", "type", "value", "comment", "to_ids", "date", "object_relation",
           "attribute_tag", "object_uuid", "object_name", "object_meta_category")


def attributes_csv(store: Store, found: Iterable[tuple[query.EventHead, dict[str, Any]]]) -> Iterator[str]:
    """A header line, then one line per attribute; `date` is the attribute's timestamp (epoch)."""
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(COLUMNS)
    objects: dict[str, dict[str, Any]] = {}  # object uuid -> body, for the object columns
    for head, a in found:
        object_uuid = a.get("object_uuid", "")
        obj: dict[str, Any] = {}
        if object_uuid:
            if object_uuid not in objects:
                if len(objects) > 10_000:
                    objects.clear()
                held = query.find_element(store, object_uuid)
                objects[object_uuid] = held[1] if held else {}
            obj = objects[object_uuid]
        out.writerow((a["uuid"], head.id, a["category"], a["type"], a["value"], a.get("comment", ""),
                      int(a["to_ids"]), a["timestamp"], a.get("object_relation", ""),
                      ",".join(t["name"] for t in a.get("Tag", ())), object_uuid, obj.get("name", ""),
                      obj.get("meta-category", "")))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()
