"""MISP warninglists (pymispwarninglists): known-benign values such as public resolvers or top domains.

Loading every list takes a few seconds, so it happens once, on first use.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _lists() -> Any:
    from pymispwarninglists import WarningLists
    return WarningLists(slow_search=False)


def warninglist_hits(value: str) -> list[str]:
    """Names of the warninglists `value` is on (empty when none, or when the lists cannot load)."""
    try:
        hits = _lists().search(value)
    except Exception:  # noqa: BLE001 - a broken list must not break correlation
        return []
    return sorted({hit.name for hit in hits})
