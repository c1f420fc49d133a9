"""Push and pull filters: which check of a SyncFilter an event or element fails, if any.

Semantics follow MISP's server push/pull rules: tag and org lists are OR (at least one must
match) and NOT (none may match); `*` and `%` are wildcards; tag and org names compare
case-insensitively. A NOT tag on the event refuses the event; on an element it withholds just that
element, and the rest of the event goes.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Collection, Iterable

from fedmisp.policy.model import (
    KIND_ATTRIBUTE, KIND_OBJECT, PAP_ORDER, TLP_ORDER, ElementView, EventView, SyncFilter,
)


@lru_cache(maxsize=4096)
def _pattern(pattern: str) -> re.Pattern[str] | str:
    p = pattern.lower()
    if "*" not in p and "%" not in p:
        return p
    parts = re.split(r"[*%]", p)
    return re.compile(".*".join(re.escape(x) for x in parts) + r"\Z", re.DOTALL)


def matches(pattern: str, name: str) -> bool:
    compiled = _pattern(pattern)
    if isinstance(compiled, str):
        return compiled == name.lower()
    return compiled.match(name.lower()) is not None


def any_match(patterns: Iterable[str], names: Collection[str]) -> bool:
    """Whether any pattern matches any name (`names` is read once per pattern: a collection)."""
    return any(matches(p, n) for p in patterns for n in names)


def marking_level(tags: frozenset[str], order: dict[str, int]) -> int:
    """The highest TLP (or PAP) marking among `tags`; -1 when there is none."""
    return max((order[t] for t in tags if t in order), default=-1)


def _ceiling_exceeded(tags: frozenset[str], ceiling: str | None, order: dict[str, int]) -> bool:
    return ceiling is not None and marking_level(tags, order) > order[ceiling]


def event_check(f: SyncFilter, event: EventView) -> str | None:
    """The filter check the event header fails ("tag", "org", "tlp", "pap", "age"), or None."""
    if f.tags_exclude and any_match(f.tags_exclude, event.tags):
        return "tag"
    if f.tags_include and not any_match(f.tags_include, event.tags):
        return "tag"
    orgs = (event.orgc_uuid, event.orgc_name)
    if f.orgs_exclude and any_match(f.orgs_exclude, orgs):
        return "org"
    if f.orgs_include and not any_match(f.orgs_include, orgs):
        return "org"
    if _ceiling_exceeded(event.tags, f.tlp_ceiling, TLP_ORDER):
        return "tlp"
    if _ceiling_exceeded(event.tags, f.pap_ceiling, PAP_ORDER):
        return "pap"
    if event.timestamp < f.not_before:
        return "age"
    return None


def element_check(f: SyncFilter, element: ElementView) -> str | None:
    """The filter check one element fails ("tag", "type", "template", "tlp", "pap", "to_ids"), or None."""
    if element.tags:
        if f.tags_exclude and any_match(f.tags_exclude, element.tags):
            return "tag"
        if _ceiling_exceeded(element.tags, f.tlp_ceiling, TLP_ORDER):
            return "tlp"
        if _ceiling_exceeded(element.tags, f.pap_ceiling, PAP_ORDER):
            return "pap"
    if element.kind == KIND_ATTRIBUTE:
        if f.types_exclude and element.type in f.types_exclude:
            return "type"
        if f.to_ids_only and not element.to_ids:
            return "to_ids"
    elif element.kind == KIND_OBJECT and f.templates_exclude:
        if any(t in f.templates_exclude for t in (element.template, element.template_uuid) if t):
            return "template"
    return None
