"""restSearch returnFormat text: one attribute value per line (MISP's TextExport)."""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from fedmisp.store import query


def attributes_text(found: Iterable[tuple[query.EventHead, dict[str, Any]]]) -> Iterator[str]:
    for _head, a in found:
        # a value with a line break would read as two values: it is written on one line
        yield a["value"].replace("\r", " ").replace("\n", " ") + "\n"
