"""MISP warninglists (pymispwarninglists): known-benign values such as public resolvers or top domains.

Loading every list takes a few seconds, so it happens once per process, on first use; the
correlation, the export filters and the API's warninglists/* all read that one load.
"""
from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any, Mapping

log = logging.getLogger("fedmisp.correlate")


@lru_cache(maxsize=1)
def _lists() -> Any:
    from pymispwarninglists import WarningLists
    return WarningLists(slow_search=False)


def warninglists() -> Mapping[str, Any]:
    """Every warninglist by name (pymispwarninglists.api.WarningList: `name`, `type`, `version`,
    `description`, `list`, `matching_attributes`)."""
    return _lists().get_loaded_lists()


def warninglist_hits(value: str) -> list[str]:
    """Names of the warninglists `value` is on (empty when none, or when the lists cannot load)."""
    try:
        hits = _lists().search(value)
    except (ValueError, KeyError, TypeError, OSError) as e:  # a broken list must not break correlation
        log.warning("warninglist search for %r failed: %s", value, e)
        return []
    return sorted({hit.name for hit in hits})
