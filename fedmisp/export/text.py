"""restSearch returnFormat text: one attribute value per line (MISP's TextExport).

Text lists feed blocklists (proxies, firewalls, DNS sinkholes), so a value is written as a tool must
match it: normalised like the Zeek and IDS exports (export/filters.indicator_parts: refanged,
lower-case domains and hashes), a composite kept as one line with its parts joined by "|" as MISP
writes it. MISP JSON, CSV and STIX keep the value as its author wrote it."""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from fedmisp.export.filters import indicator_parts
from fedmisp.store import query


def attributes_text(found: Iterable[tuple[query.EventHead, dict[str, Any]]]) -> Iterator[str]:
    for _head, a in found:
        # a value with a line break would read as two values: it is written on one line
        yield "|".join(indicator_parts(a)).replace("\r", " ").replace("\n", " ") + "\n"
