"""MISP taxonomies (pytaxonomies): the machine-tag vocabularies (`tlp:red`,
`admiralty-scale:source-reliability="a"`) a MISP instance installs, read from the installed package.

Loading all of them takes a fraction of a second, so it happens once per process, on first use.
As MISP's `Taxonomy::update` does, only taxonomies for events are taken (those whose `type` is
absent or names `event`); the package's others describe organisations or users.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

# MISP's Taxonomy::splitTagToComponents: namespace:predicate or namespace:predicate="value"
_MACHINE_TAG = re.compile(r'([^:="]+):([^:="]+)(?:="([^"]+)")?', re.I).fullmatch


@dataclass(frozen=True, slots=True)
class MachineTag:
    """One tag of a taxonomy: a predicate alone (`tlp:red`), or a predicate and one of its values."""
    tag: str
    predicate: Any  # pytaxonomies.api.Predicate
    entry: Any | None  # pytaxonomies.api.Entry, or None for a predicate without values


@dataclass(frozen=True, slots=True)
class TagComponents:
    namespace: str
    predicate: str
    value: str | None


@lru_cache(maxsize=1)
def _loaded() -> tuple[tuple[Any, ...], dict[str, Any]]:
    from pytaxonomies import Taxonomies
    kept = [t for t in Taxonomies().values() if _for_events(t.type)]
    kept.sort(key=lambda t: t.name.lower())
    return tuple(kept), {t.name.lower(): t for t in kept}


def _for_events(kind: Any) -> bool:
    if kind is None:
        return True
    return "event" in kind if isinstance(kind, list) else kind == "event"


def taxonomies() -> tuple[Any, ...]:
    """Every taxonomy for events (pytaxonomies.api.Taxonomy), by namespace."""
    return _loaded()[0]


def find_taxonomy(namespace: str) -> Any | None:
    """The taxonomy of `namespace`, compared without case (MISP compares in its database's
    case-insensitive collation); None if there is none."""
    return _loaded()[1].get(namespace.strip().lower())


def machine_tags(taxonomy: Any) -> list[MachineTag]:
    """The taxonomy's tags in its own order: each value of a predicate that has values, else the
    predicate itself (MISP's Taxonomy::__getTaxonomy `entries`)."""
    out = []
    for predicate in taxonomy.values():
        if predicate.entries:
            out.extend(MachineTag(taxonomy.make_machinetag(predicate.predicate, entry), predicate, entry)
                       for entry in predicate.entries.values())
        else:
            out.append(MachineTag(taxonomy.make_machinetag(predicate.predicate), predicate, None))
    return out


def split_tag(name: str) -> TagComponents | None:
    """A tag's namespace, predicate and value; None for a tag not in machine-tag form."""
    m = _MACHINE_TAG(name)
    return None if m is None else TagComponents(m.group(1), m.group(2), m.group(3))


def tag_taxonomy(name: str) -> tuple[Any, Any, Any | None] | None:
    """(taxonomy, predicate, entry or None) a tag belongs to, compared without case, as MISP's
    Taxonomy::getTaxonomyForTag: a known namespace and predicate make it the taxonomy's, whether
    or not the value is one the predicate lists (entry None then). None: no taxonomy applies."""
    parts = split_tag(name)
    if parts is None:
        return None
    taxonomy = find_taxonomy(parts.namespace)
    if taxonomy is None:
        return None
    predicate = next((p for p in taxonomy.values() if p.predicate.lower() == parts.predicate.lower()), None)
    if predicate is None:
        return None
    entry = None
    if parts.value is not None:
        entry = next((e for e in predicate.entries.values() if e.value.lower() == parts.value.lower()), None)
    return taxonomy, predicate, entry
