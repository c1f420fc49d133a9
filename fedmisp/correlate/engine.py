"""Correlation queries: exact, CIDR both ways, and ssdeep, answered from the store's indexes.

Correlations are computed locally and never shipped. Nothing is precomputed pairwise (MISP's
correlation table is what grows to 150 million rows): the indexes are written as data arrives
(correlate/keys.py, store/rows.py) and a query costs a few lookups plus one read per match.
A value matched more than `max_matches` times is reported as over-correlating instead of listed.
"""
from __future__ import annotations

import re
import uuid as _uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterator

import ppdeep

from fedmisp.correlate.keys import (
    IP_PARTS, SSDEEP_PARTS, correlates, correlation_values, ip_key, net_key, parse_ip, ssdeep_keys,
)
from fedmisp.model.records import RecordError, open_element
from fedmisp.model.values import ValueFormatError, normalise
from fedmisp.store.reads import IndexView
from fedmisp.store.rows import EventMeta, index_key
from fedmisp.store.store import Store

DEFAULT_SSDEEP_THRESHOLD = 40  # MISP's default ssdeep_correlation_threshold
# Above this many matches a value is over-correlating (a sinkhole IP, a common filename): it is
# reported as such, not listed, so one value cannot make every query touch a million rows.
DEFAULT_MAX_MATCHES = 1_000
_SSDEEP_SHAPE = re.compile(r"\d+:[^:\s]+:[^:\s]+\Z")


@dataclass(frozen=True)
class CorrelationConfig:
    ssdeep_threshold: int = DEFAULT_SSDEEP_THRESHOLD
    max_matches: int = DEFAULT_MAX_MATCHES
    exclusions: tuple[str, ...] = ()  # values never correlated; '%' is a wildcard (MISP's exclusions)


@dataclass(frozen=True, slots=True)
class Match:
    kind: str  # "exact", "cidr" or "ssdeep"
    event_uuid: str
    attribute_uuid: str
    type: str
    value: str
    score: int  # 100 for exact and CIDR; the ppdeep score for ssdeep
    event_info: str = ""
    org: str = ""
    source: str = ""  # where the event came from ("" for this node's own and plain imports)
    correlation_only: bool = False  # from a correlation-only source: matched, never shown


@dataclass
class Correlations:
    matches: list[Match] = field(default_factory=list)
    over_correlating: dict[str, int] = field(default_factory=dict)  # value -> how many matches it has
    excluded: list[str] = field(default_factory=list)  # values on the exclusion list


@lru_cache(maxsize=1024)
def _exclusion(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(p) for p in pattern.lower().split("%")) + r"\Z", re.DOTALL)


class Correlator:
    def __init__(self, store: Store, config: CorrelationConfig | None = None):
        self.store = store
        self.config = config or CorrelationConfig()

    # --- entry points ----------------------------------------------------------------------------

    def value(self, value: str, type_: str | None = None, *, exclude_event: str | None = None) -> Correlations:
        """Everything held that correlates with `value` (of `type_`, or guessed from its shape)."""
        value = value.strip()
        if type_ is None:
            type_ = _guess_type(value)
        if type_ is not None:
            try:
                keys = correlation_values(type_, normalise(type_, value))
            except ValueFormatError:
                keys = (value,)
        else:
            keys = tuple(dict.fromkeys((value, value.lower())))
        return self._correlate(type_, keys, exclude_event)

    def attribute(self, event_uuid: str, element: dict[str, Any], event_disabled: bool = False) -> Correlations:
        """What correlates with one held attribute, in other events (MISP's RelatedAttribute)."""
        return self._attribute(None, event_uuid, element, event_disabled)

    def _attribute(self, view: IndexView | None, event_uuid: str, element: dict[str, Any],
                   event_disabled: bool) -> Correlations:
        if not correlates(element, event_disabled):
            return Correlations()
        try:
            keys = correlation_values(element["type"], normalise(element["type"], element["value"]))
        except ValueFormatError:
            return Correlations()
        return self._correlate(element["type"], keys, event_uuid, view)

    def annotate(self, misp_event: dict[str, Any]) -> dict[str, Any]:
        """Add MISP's RelatedAttribute (per attribute) and RelatedEvent (per event) to an event view;
        correlation-only sources are named but their events are not shown as RelatedEvent."""
        event = misp_event["Event"]
        meta = self.store.event_meta(event["uuid"])
        disabled = bool(meta and meta.correlation_disabled)
        related: dict[str, dict[str, Any]] = {}
        attributes = list(event.get("Attribute", []))
        for obj in event.get("Object", []):
            attributes.extend(obj.get("Attribute", []))
        # one read transaction for the whole event: a view (and its cursors) per attribute was most
        # of the cost of correlating a large event's attributes that match nothing (bench/api.py)
        with self.store.index_view() as view:
            for attribute in attributes:
                found = self._attribute(view, event["uuid"], attribute, disabled)
                if found.matches:
                    attribute["RelatedAttribute"] = [related_attribute(m) for m in found.matches]
                for m in found.matches:
                    if not m.correlation_only:
                        related.setdefault(m.event_uuid, {"Event": {"uuid": m.event_uuid, "info": m.event_info,
                                                                    "Orgc": {"name": m.org}}})
        if related:
            event["RelatedEvent"] = list(related.values())
        return misp_event

    # --- the three kinds -------------------------------------------------------------------------

    def _correlate(self, type_: str | None, keys: tuple[str, ...], exclude_event: str | None,
                   view: IndexView | None = None) -> Correlations:
        if view is None:
            with self.store.index_view() as view:
                return self._correlate(type_, keys, exclude_event, view)
        out = Correlations()
        seen: set[bytes] = set()  # attribute uuids (16 bytes) already matched
        excluded = [k for k in keys if self._is_excluded(k)]
        out.excluded.extend(excluded)
        keys = tuple(k for k in keys if k not in excluded)
        for key in keys:
            self._collect(view, "exact", key, self._dups(view, "value", index_key(key), key, out),
                          exclude_event, seen, out)
        ip_half = IP_PARTS.get(type_ or "", None)
        if ip_half is not None and ip_half < len(keys):
            network = parse_ip(keys[ip_half])
            if network is not None:
                self._collect(view, "cidr", keys[ip_half], self._cidr(view, network, keys[ip_half], out),
                              exclude_event, seen, out)
        ssdeep_half = SSDEEP_PARTS.get(type_ or "", None)
        if ssdeep_half is not None and ssdeep_half < len(keys):
            self._ssdeep(view, keys[ssdeep_half], exclude_event, seen, out)
        return out

    def _dups(self, view: IndexView, index: str, key: bytes, label: str, out: Correlations) -> list[bytes]:
        count, refs = view.refs(index, key, self.config.max_matches)
        if count > self.config.max_matches:
            out.over_correlating[label] = out.over_correlating.get(label, 0) + count
        return refs

    def _cidr(self, view: IndexView, network: Any, label: str, out: Correlations) -> list[bytes]:
        """Stored networks containing `network` (an IP is a /32 or /128), and stored IPs and
        networks inside it."""
        refs: list[bytes] = []
        # Networks containing it: one lookup per prefix length the index holds at all (keys are
        # family | prefix length | address; the view reads which lengths once, by seeking),
        # instead of computing all 33 (or 129) supernets; a store usually holds a handful.
        family = net_key(network)[:1]
        lengths = view.prefix_lengths("net", family)
        bits, address = network.max_prefixlen, int(network.network_address)
        for prefix in lengths:
            if prefix > network.prefixlen:
                break
            masked = (address >> (bits - prefix)) << (bits - prefix)
            key = family + bytes([prefix]) + masked.to_bytes(bits // 8, "big").rjust(16, b"\x00")
            refs.extend(self._dups(view, "net", key, label, out))
        if network.prefixlen < network.max_prefixlen:
            refs.extend(self._range(view, "ip", ip_key(network.network_address),
                                    ip_key(network.broadcast_address), label, out))
            low_address = network.network_address.packed.rjust(16, b"\x00")
            high_address = network.broadcast_address.packed.rjust(16, b"\x00")
            for prefix in lengths:
                if network.prefixlen < prefix < network.max_prefixlen:
                    length = family + bytes([prefix])
                    refs.extend(self._range(view, "net", length + low_address, length + high_address, label, out))
        if len(refs) > self.config.max_matches:
            out.over_correlating[label] = len(refs)
            return []
        return refs

    def _range(self, view: IndexView, index: str, low: bytes, high: bytes, label: str,
               out: Correlations) -> list[bytes]:
        refs = view.refs_between(index, low, high, self.config.max_matches)
        if refs is None:
            out.over_correlating[label] = self.config.max_matches + 1
            return []
        return refs

    def _ssdeep(self, view: IndexView, query: str, exclude_event: str | None, seen: set[bytes],
                out: Correlations) -> None:
        candidates: dict[bytes, None] = {}
        # every position's gram of the query; the index holds every other position's (keys.py)
        for key in ssdeep_keys(query, query=True, legacy=self.store.format < 2):
            for ref in self._dups(view, "ssdeep", key, query, out):
                candidates[ref] = None
        for ref, element, meta in self._elements(view, candidates, exclude_event, seen):
            half = SSDEEP_PARTS.get(element["type"])
            parts = element["value"].split("|") if "|" in element["type"] else [element["value"]]
            if half is None or half >= len(parts):
                continue
            try:
                score = ppdeep.compare(query, parts[half].strip())
            except ValueError:
                continue
            if score >= self.config.ssdeep_threshold:
                seen.add(ref[16:])
                out.matches.append(_match("ssdeep", ref, element, meta, score))

    # --- reading matches ---------------------------------------------------------------------------

    def _collect(self, view: IndexView, kind: str, label: str, refs: list[bytes],
                 exclude_event: str | None, seen: set[bytes], out: Correlations) -> None:
        for ref, element, meta in self._elements(view, refs, exclude_event, seen):
            # The value index holds both halves of ip|port; only the address correlates (MISP's
            # PRIMARY_ONLY_CORRELATING_TYPES), so a match on the port half is no match.
            if kind == "exact" and "|" in element["type"] and \
                    label not in correlation_values(element["type"], _keys_of(element)):
                continue
            seen.add(ref[16:])
            out.matches.append(_match(kind, ref, element, meta, 100))

    def _elements(self, view: IndexView, refs: Any, exclude_event: str | None,
                  seen: set[bytes]) -> Iterator[tuple[bytes, dict[str, Any], EventMeta]]:
        exclude = _uuid_bytes(exclude_event) if exclude_event else None
        for ref in refs:
            ev, attribute = ref[:16], ref[16:]
            if ev == exclude or attribute in seen:
                continue
            body = view.attribute_body(ref)
            if body is None:
                continue
            try:
                element = open_element(body)
            except RecordError:
                continue
            meta = view.event_meta(ev)
            if meta is None or not correlates(element, meta.correlation_disabled):
                continue
            if self.config.exclusions and any(self._is_excluded(k) for k in _keys_of(element)):
                continue
            yield ref, element, meta

    def _is_excluded(self, value: str) -> bool:
        return any(_exclusion(p).match(value.lower()) for p in self.config.exclusions)


@lru_cache(maxsize=256)
def _uuid_bytes(text: str) -> bytes:
    return _uuid.UUID(text).bytes


def _keys_of(element: dict[str, Any]) -> tuple[str, ...]:
    try:
        return normalise(element["type"], element["value"])
    except ValueFormatError:
        return ()


def _match(kind: str, ref: bytes, element: dict[str, Any], meta: EventMeta, score: int) -> Match:
    return Match(kind=kind, event_uuid=str(_uuid.UUID(bytes=ref[:16])), attribute_uuid=element["uuid"],
                 type=element["type"], value=element["value"], score=score, event_info=meta.info,
                 org=meta.orgc_name, source=meta.source, correlation_only=meta.correlation_only)


def related_attribute(m: Match) -> dict[str, Any]:
    related = {"uuid": m.attribute_uuid, "event_uuid": m.event_uuid, "type": m.type, "value": m.value,
               "correlation": m.kind}
    if m.kind == "ssdeep":
        related["score"] = m.score
    if m.correlation_only:
        related["source"] = m.source  # a feed or peer used for correlation only: no event to open
    return related


def _guess_type(value: str) -> str | None:
    if parse_ip(value) is not None:
        return "ip-dst"
    if _SSDEEP_SHAPE.match(value):
        return "ssdeep"
    return None


__all__ = ["CorrelationConfig", "Correlations", "Correlator", "Match", "related_attribute"]
