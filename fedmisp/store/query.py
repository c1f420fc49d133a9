"""Read-side search over the store's indexes: what the REST API's views and restSearch ask.

It reads through the store's transactions (`Store.read`, store/db.py `Txn`) and never writes: held
events and elements by key through store/reads.py, the indexes it plans with by cursor. Each search
narrows candidates with the indexes (value, type, tag, event tag, Orgc, event ids, element uuids)
and then checks every candidate against every criterion on the element body itself, so an index
only ever prunes and the body decides. A broad term (more than GATHERED_REFS refs, e.g. a common
type) is not gathered up front but looked up per event as each candidate event is read, so a
limited search costs what it returns, not what the term matches. Results are generators, one event
at a time, so a caller can stream a million attributes without holding them.

Numeric ids (MISP's ids, docs/decisions/0005-api-ids.md): events use the store's stable event id;
attributes and objects use the first 7 bytes of their uuid as a 56-bit integer, looked up by uuid
prefix in the `elements` database.
"""
from __future__ import annotations

import re
import threading
import uuid as _uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from fedmisp.model import canonical
from fedmisp.model.misp import element_kind
from fedmisp.model.values import ValueFormatError, normalise
from fedmisp.store import reads
from fedmisp.store.db import Txn
from fedmisp.store.rows import HeldEvent, index_key, uuid16
from fedmisp.store.store import Store

# 7 bytes of a random (v4) uuid: 2^56 ids, so a clash needs ~2^28 elements on one node (birthday
# bound) and is then reported as ambiguous rather than resolved wrongly (decision 0005).
ELEMENT_ID_BYTES = 7
MAX_ELEMENT_ID = (1 << (8 * ELEMENT_ID_BYTES)) - 1
# Wildcard patterns scan index keys; a scan stops after this many matching keys.
MAX_WILDCARD_KEYS = 100_000
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\Z")


# --- ids -----------------------------------------------------------------------------------------

def element_id(element_uuid: str) -> int:
    """An attribute's or object's numeric id: the first 7 bytes of its uuid (decision 0005)."""
    return int.from_bytes(uuid16(element_uuid)[:ELEMENT_ID_BYTES], "big")


def is_uuid(text: str) -> bool:
    return bool(_UUID_RE.match(text))


def element_uuid_for_id(store: Store, number: int) -> str | None:
    """The element whose uuid starts with `number`'s 7 bytes; None if none or (a clash) several."""
    if not 0 < number <= MAX_ELEMENT_ID:
        return None
    with store.read() as txn:
        found = reads.elements_from(txn, number.to_bytes(ELEMENT_ID_BYTES, "big"), 2)
    return str(_uuid.UUID(bytes=found[0])) if len(found) == 1 else None


def _is_id(ref: str) -> bool:
    """A numeric id: ASCII digits only (str.isdigit() also takes '¹' and '٣', which int() refuses)."""
    return ref.isascii() and ref.isdigit() and len(ref) < 20


def resolve_event(store: Store, ref: str) -> str | None:
    """An event uuid from MISP's `<id>` or `<uuid>` path parameter."""
    if _is_id(ref):
        return store.event_uuid_for_id(int(ref))
    if is_uuid(ref):
        event_uuid = str(_uuid.UUID(ref))
        return event_uuid if store.held(event_uuid) is not None else None
    return None


def resolve_element(store: Store, ref: str) -> str | None:
    """An element uuid from MISP's `<id>` or `<uuid>` path parameter (it must be held)."""
    if _is_id(ref):
        return element_uuid_for_id(store, int(ref))
    if is_uuid(ref):
        element_uuid = str(_uuid.UUID(ref))
        return element_uuid if element_event(store, element_uuid) is not None else None
    return None


def element_event(store: Store, element_uuid: str) -> str | None:
    with store.read() as txn:
        location = reads.element_at(txn, uuid16(element_uuid))
    return str(_uuid.UUID(bytes=location[:16])) if location is not None else None


def find_element(store: Store, element_uuid: str) -> tuple[str, dict[str, Any]] | None:
    """(event uuid, element body) of a held attribute, object or reference."""
    with store.read() as txn:
        location = reads.element_at(txn, uuid16(element_uuid))
        element = reads.element_body(txn, location) if location is not None else None
    return (str(_uuid.UUID(bytes=location[:16])), element) if location is not None and element is not None else None


@dataclass(frozen=True, slots=True)
class EventHead:
    """What a search needs of an event without its elements."""
    uuid: str
    id: int
    held: HeldEvent
    author: bytes
    header: dict[str, Any]

    @property
    def deleted(self) -> bool:
        return is_tombstone(self.header)


def is_tombstone(header: dict[str, Any]) -> bool:
    """An event its creator deleted: a last revision without elements (decision 0007)."""
    return bool((header.get("extra") or {}).get("deleted"))


# Verified revision heads kept per process, by record id (docs/decisions/0012-verified-revision-heads.md).
# A packed header is about 1 KiB, so this holds the heads of the events most searched for in a few MiB.
VERIFIED_HEADS = 4096


class _VerifiedHeads:
    """(author, packed header) of event revisions whose signature this process has verified.

    A record never changes under its id (the id is the BLAKE2b of its signed bytes, and a newer
    revision is another record), so its signature needs checking once, not on every search: opening
    a revision verifies the Ed25519 signature over the whole digest list, which for an event of
    thousands of attributes costs far more than finding one attribute in it. Each reader gets its
    own freshly unpacked header, so nothing a caller does to it reaches the cache.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()
        self._lock = threading.Lock()  # searches run in the API's thread pool

    def get(self, record_id: bytes) -> tuple[bytes, dict[str, Any]] | None:
        with self._lock:
            entry = self._entries.get(record_id)
            if entry is None:
                return None
            self._entries.move_to_end(record_id)
        return entry[0], canonical.unpack(entry[1])

    def __contains__(self, record_id: bytes) -> bool:
        with self._lock:
            return record_id in self._entries

    def put(self, record_id: bytes, author: bytes, header: dict[str, Any]) -> None:
        entry = (author, canonical.pack_sorted(header))  # already canonical: it was just verified
        with self._lock:
            self._entries[record_id] = entry
            self._entries.move_to_end(record_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)


_verified_heads = _VerifiedHeads(VERIFIED_HEADS)


def event_head(store: Store, event_uuid: str) -> EventHead | None:
    ev = uuid16(event_uuid)
    with store.read() as txn:
        held = reads.held_at(txn, ev)
        if held is None:
            return None
        verified = _verified_heads.get(held.record_id)
        if verified is None:
            record = reads.revision_record(txn, held)
            verified = record.author, record.body["event"]
            _verified_heads.put(held.record_id, *verified)
        meta = reads.event_meta_at(txn, ev)
    if meta is not None and (meta.correlation_only or meta.deleted):
        return None  # matched by correlation only, or deleted: never shown
    return EventHead(event_uuid, held.id, held, verified[0], verified[1])


def event_ids(store: Store) -> Iterator[tuple[int, str]]:
    """(event id, uuid) of every held event in id order, read a page at a time."""
    last = 0
    while True:
        with store.read() as txn:
            page = reads.event_ids_after(txn, last, 1000)
        if not page:
            return
        yield from ((n, str(_uuid.UUID(bytes=ev))) for n, ev in page)
        last = page[-1][0]


def event_elements(store: Store, event_uuid: str, only: Iterable[bytes] | None = None) -> list[dict[str, Any]]:
    """Element bodies of the held revision (verified), all or only the given element uuids;
    never the ones held for correlation only."""
    hidden = store.correlation_only_items(event_uuid)
    if hidden:
        return [e for e in _event_elements(store, event_uuid, only) if e["uuid"] not in hidden]
    return _event_elements(store, event_uuid, only)


def _event_elements(store: Store, event_uuid: str, only: Iterable[bytes] | None = None) -> list[dict[str, Any]]:
    with store.read() as txn:
        if only is not None:
            return reads.elements_of(txn, uuid16(event_uuid), only)
        found = reads.revision(txn, event_uuid)
    return found[1] if found is not None else []


# --- what a search asks (node/api/params.py reads MISP's parameters into a Query) -------------------

@dataclass(frozen=True, slots=True)
class Terms:
    """MISP's OR / AND / NOT lists; '%' is a wildcard (SQL LIKE), '!' before a term negates it."""
    any: tuple[str, ...] = ()
    all: tuple[str, ...] = ()
    none: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.any or self.all or self.none)

    @property
    def positive(self) -> bool:
        return bool(self.any or self.all)


@dataclass(frozen=True)
class Query:
    value: Terms = Terms()
    type: Terms = Terms()
    category: Terms = Terms()
    org: Terms = Terms()
    tags: Terms = Terms()
    eventid: Terms = Terms()
    uuid: Terms = Terms()
    date_from: str | None = None  # event date, YYYY-MM-DD
    date_to: str | None = None
    publish_timestamp: tuple[int, int] | None = None  # `last` too
    timestamp: tuple[int, int] | None = None  # attribute timestamp (attributes), event (events)
    event_timestamp: tuple[int, int] | None = None
    published: bool | None = None
    to_ids: bool | None = None
    deleted: tuple[bool, ...] = (False,)  # which attributes: not deleted (MISP's default), deleted, both
    limit: int | None = None
    page: int = 1
    event_metadata: bool = False  # events: without attributes


# --- matching --------------------------------------------------------------------------------------

def _like(pattern: str) -> re.Pattern[str]:
    """MISP's '%' wildcard (SQL LIKE, case-insensitive as MySQL's default collation)."""
    return re.compile(".*".join(re.escape(part) for part in pattern.split("%")) + r"\Z", re.I | re.S)


class _Matcher:
    """One Terms list over a set of strings (a body's values, tags, ...)."""

    def __init__(self, terms: Terms, fold: bool = True):
        self.terms = terms
        self.fold = fold
        if not terms:  # most criteria of a search are not given
            self._any = self._all = self._none = []
            return
        self._any = [self._compile(t) for t in terms.any]
        self._all = [self._compile(t) for t in terms.all]
        self._none = [self._compile(t) for t in terms.none]

    def _compile(self, term: str) -> Any:
        if "%" in term:
            pattern = _like(term)
            return pattern.match
        needle = term.lower() if self.fold else term
        return (lambda s: s.lower() == needle) if self.fold else (lambda s: s == needle)

    def __call__(self, candidates: Iterable[str]) -> bool:
        items = list(candidates)
        if self._none and any(m(s) for m in self._none for s in items):
            return False
        if self._all and not all(any(m(s) for s in items) for m in self._all):
            return False
        if self._any and not any(m(s) for m in self._any for s in items):
            return False
        return True


def _value_forms(body: dict[str, Any]) -> list[str]:
    """The strings a value term is compared with: the value, and its normalised halves."""
    forms = [body["value"]]
    try:
        forms.extend(normalise(body["type"], body["value"]))
    except ValueFormatError:
        pass
    if "|" in body["type"] and "|" in body["value"]:
        forms.extend(body["value"].split("|", 1))
    return forms


def _index_keys(store: Store, txn: Txn, db_name: str, term: str) -> list[bytes]:
    """Index keys one term selects: itself (and its normalised forms), or a wildcard scan."""
    if "%" not in term:
        keys = {index_key(term), index_key(term.strip()), index_key(term.strip().lower())}
        return list(keys)
    prefix = term.split("%", 1)[0]
    pattern = _like(term)
    out: list[bytes] = []
    cur = txn.cursor(db_name)
    # A literal prefix bounds the scan; MySQL's LIKE folds case, so try the prefix as given and lower.
    starts = {prefix.encode(), prefix.lower().encode()} if prefix else {b""}
    for start in starts:
        positioned = cur.set_range(start) if start else cur.first()
        while positioned:
            key = bytes(cur.key())
            if start and not key.startswith(start):
                break
            try:
                if pattern.match(key.decode("utf-8")):
                    out.append(key)
            except UnicodeDecodeError:
                pass
            if len(out) >= MAX_WILDCARD_KEYS:
                break
            positioned = cur.next_nodup()
    return out


def _ref_count(store: Store, txn: Txn, db_name: str, keys: Iterable[bytes]) -> int:
    cur = txn.cursor(db_name)
    return sum(cur.count() for key in keys if cur.set_key(key))


def _ref_events(store: Store, txn: Txn, db_name: str, keys: Iterable[bytes]) -> set[bytes]:
    """The events (16-byte uuids) with refs under `keys`: a ref's values are sorted by event, so
    one seek per event skips past the rest of that event's attributes."""
    out: set[bytes] = set()
    cur = txn.cursor(db_name)
    for key in keys:
        positioned = cur.set_key(key)
        while positioned:
            event = bytes(cur.value()[:16])
            out.add(event)
            following = int.from_bytes(event, "big") + 1
            if following >> 128:
                break
            positioned = cur.set_range_dup(key, following.to_bytes(16, "big") + bytes(16))
    return out


def _values_under(store: Store, txn: Txn, db_name: str, keys: Iterable[bytes]) -> set[bytes]:
    """Every value under `keys` in a dupsort index: event uuid (16) | attribute uuid (16) refs in
    ix_value / ix_type / ix_tag, event uuids in ix_event_tag / ix_org."""
    out: set[bytes] = set()
    cur = txn.cursor(db_name)
    for key in keys:
        if cur.set_key(key):
            out.update(bytes(v) for v in cur.iternext_dup())
    return out


# A term with more refs than this under at most PER_EVENT_KEYS index keys is not gathered up front:
# each candidate event looks up its own refs under those keys when it is read (one seek per event
# and key), so `type: ip-dst` on a million attributes costs per event read, not 140,000 refs before
# the first answer. Wildcard terms over many keys are gathered (a seek per key and event would not pay).
GATHERED_REFS = 2_000
PER_EVENT_KEYS = 8


@dataclass
class _Plan:
    """Candidates from the indexes: None means 'not narrowed by this'."""
    events: set[bytes] | None = None
    attributes: dict[bytes, set[bytes]] | None = None  # event -> attribute uuids
    # Broad terms, looked up per event: (index, keys); an attribute must be under one of the keys.
    per_event: list[tuple[str, list[bytes]]] = field(default_factory=list)

    def narrow(self, store: Store, txn: Any, db_name: str, keys: list[bytes]) -> None:
        """Narrow to the attributes under any of `keys` in the index `db_name`."""
        if len(keys) <= PER_EVENT_KEYS and _ref_count(store, txn, db_name, keys) > GATHERED_REFS:
            self.per_event.append((db_name, keys))
        else:
            self.narrow_attributes(_values_under(store, txn, db_name, keys))

    def candidates(self, store: Store, event: bytes) -> set[bytes] | None:
        """Attribute uuids of `event` the indexes allow; None if no attribute index narrowed."""
        only = None if self.attributes is None else self.attributes.get(event, set())
        if not self.per_event or (only is not None and not only):
            return only
        with store.read() as txn:
            for db_name, keys in self.per_event:
                found: set[bytes] = set()
                cur = txn.cursor(db_name)
                for key in keys:
                    if cur.set_range_dup(key, event):
                        for ref in cur.iternext_dup():
                            if ref[:16] != event:
                                break
                            found.add(bytes(ref[16:]))
                only = found if only is None else only & found
                if not only:
                    break
        return only

    def narrow_events(self, events: set[bytes]) -> None:
        self.events = events if self.events is None else self.events & events

    def narrow_attributes(self, refs: set[bytes]) -> None:
        by_event: dict[bytes, set[bytes]] = {}
        for ref in refs:
            by_event.setdefault(ref[:16], set()).add(ref[16:])
        if self.attributes is None:
            self.attributes = by_event
        else:
            self.attributes = {e: a & by_event[e] for e, a in self.attributes.items() if e in by_event}
            self.attributes = {e: a for e, a in self.attributes.items() if a}
        self.narrow_events(set(self.attributes))


def _plan(store: Store, q: Query) -> _Plan:
    plan = _Plan()
    with store.read() as txn:
        # positive terms only: an index tells where a term is, not where it is absent
        for terms, db in ((q.value, "ix_value"), (q.type, "ix_type")):
            if terms.any:
                plan.narrow(store, txn, db, list(dict.fromkeys(
                    key for term in terms.any for key in _index_keys(store, txn, db, term))))
            for term in terms.all:
                plan.narrow(store, txn, db, _index_keys(store, txn, db, term))
        if q.tags.any and not q.tags.all:
            # a tag on the attribute, or on its event (then every attribute of the event)
            events: set[bytes] = set()
            for term in q.tags.any:
                events |= _ref_events(store, txn, "ix_tag", _index_keys(store, txn, "ix_tag", term))
                events |= _values_under(store, txn, "ix_event_tag", _index_keys(store, txn, "ix_event_tag", term))
            plan.narrow_events(events)
        if q.org.any:
            events = set()
            for term in q.org.any:
                if is_uuid(term):
                    events |= _values_under(store, txn, "ix_org", [uuid16(str(_uuid.UUID(term)))])
                else:
                    events = None  # an org name: matched on the header
                    break
            if events is not None:
                plan.narrow_events(events)
        if q.eventid.any:
            events = set()
            for term in q.eventid.any:
                if term.isdigit() and len(term) < 20:
                    ev = reads.event_for_id(txn, int(term))
                    if ev is not None:
                        events.add(ev)
                elif is_uuid(term):
                    events.add(uuid16(str(_uuid.UUID(term))))
            plan.narrow_events(events)
        if q.uuid.any:
            events = set()
            refs = set()
            for term in q.uuid.any:
                if not is_uuid(term):
                    continue
                u = uuid16(str(_uuid.UUID(term)))
                if reads.held_at(txn, u) is not None:
                    events.add(u)
                location = reads.element_at(txn, u)
                if location is not None:
                    refs.add(location[:16] + u)
                    events.add(location[:16])
            plan.narrow_events(events)
    return plan


class _HeaderCheck:
    def __init__(self, q: Query, for_events: bool):
        self.q = q
        self.for_events = for_events
        self.org = _Matcher(q.org)
        self.event_tags_none = _Matcher(Terms(none=q.tags.none))
        self.eventid = _Matcher(q.eventid)

    def __call__(self, head: EventHead) -> bool:
        q, h = self.q, head.header
        if head.deleted:
            return False
        if q.org and not self.org([h["Orgc"]["name"], h["Orgc"]["uuid"]]):
            return False
        if q.eventid and not self.eventid([str(head.id), head.uuid]):
            return False
        if q.date_from and h["date"] < q.date_from:
            return False
        if q.date_to and h["date"] > q.date_to:
            return False
        if q.published is not None and bool(h["published"]) != q.published:
            return False
        if q.publish_timestamp and not q.publish_timestamp[0] <= h["publish_timestamp"] <= q.publish_timestamp[1]:
            return False
        if q.event_timestamp and not q.event_timestamp[0] <= h["timestamp"] <= q.event_timestamp[1]:
            return False
        if self.for_events and q.timestamp and not q.timestamp[0] <= h["timestamp"] <= q.timestamp[1]:
            return False
        return True


class _AttributeCheck:
    def __init__(self, q: Query, for_events: bool):
        self.q = q
        self.for_events = for_events
        self.value = _Matcher(q.value)
        self.type = _Matcher(q.type, fold=False)
        self.category = _Matcher(q.category, fold=False)
        self.tags = _Matcher(q.tags)
        self.uuid = _Matcher(q.uuid)

    def __call__(self, body: dict[str, Any], event_tags: list[str], event_uuid: str) -> bool:
        q = self.q
        if body.get("deleted", False) not in q.deleted:
            return False
        if q.to_ids is not None and body["to_ids"] != q.to_ids:
            return False
        if not self.for_events and q.timestamp and not q.timestamp[0] <= body["timestamp"] <= q.timestamp[1]:
            return False
        if q.type and not self.type([body["type"]]):
            return False
        if q.category and not self.category([body["category"]]):
            return False
        if q.value and not self.value(_value_forms(body)):
            return False
        if q.tags and not self.tags([t["name"] for t in body.get("Tag", ())] + event_tags):
            return False
        if q.uuid and not self.for_events and not self.uuid([body["uuid"], event_uuid]):
            return False
        return True


def _events_in_order(store: Store, plan: _Plan) -> Iterator[tuple[int, str]]:
    if plan.events is None:
        yield from event_ids(store)
        return
    heads = []
    with store.read() as txn:
        for ev in plan.events:
            held = reads.held_at(txn, ev)
            if held is not None:
                heads.append((held.id, str(_uuid.UUID(bytes=ev))))
    yield from sorted(heads)


def search_attributes(store: Store, q: Query) -> Iterator[tuple[EventHead, dict[str, Any]]]:
    """(event, attribute body) pairs matching `q`, by event id then revision order, paged."""
    plan = _plan(store, q)
    header_ok = _HeaderCheck(q, for_events=False)
    attribute_ok = _AttributeCheck(q, for_events=False)
    skip = (q.page - 1) * q.limit if q.limit else 0
    left = q.limit
    for _, event_uuid in _events_in_order(store, plan):
        head = event_head(store, event_uuid)
        if head is None or not header_ok(head):
            continue
        only = plan.candidates(store, uuid16(event_uuid))
        if only is not None and not only:
            # narrowed by attribute indexes, yet the event came in by an event-level index only
            continue
        event_tags = [t["name"] for t in head.header.get("Tag", ())]
        for body in event_elements(store, event_uuid, sorted(only) if only is not None else None):
            if element_kind(body) != "attribute" or not attribute_ok(body, event_tags, event_uuid):
                continue
            if skip:
                skip -= 1
                continue
            yield head, body
            if left is not None:
                left -= 1
                if left == 0:
                    return


# A search bounded by this many value refs (and value terms) may run on the API's event loop
# instead of the thread pool (small_exact_search): a few point reads and body checks, no signature.
INLINE_REFS = 8


def _has_wildcard(q: Query) -> bool:
    return any("%" in t for terms in (q.value, q.type, q.category, q.org, q.tags, q.eventid, q.uuid)
               for t in (*terms.any, *terms.all, *terms.none))


def small_exact_search(store: Store, q: Query) -> bool:
    """Whether search_attributes(q) is certain to be cheap: exact value terms (no wildcard
    anywhere) with at most INLINE_REFS refs in all, no other term read from an index, and the
    head of every event those refs are in already verified (in the cache). Its cost is then
    bounded by the refs: a few point reads and digest checks, no scan and no signature check."""
    if (not q.value.any or len(q.value.any) > INLINE_REFS or q.value.all or q.type.positive or q.tags.any
            or q.org.any or q.eventid.any or q.uuid.any or _has_wildcard(q)):
        return False
    events: set[bytes] = set()
    refs = 0
    with store.read() as txn:
        cur = txn.cursor("ix_value")
        for key in dict.fromkeys(k for term in q.value.any for k in _index_keys(store, txn, "ix_value", term)):
            if cur.set_key(key):
                refs += cur.count()
                if refs > INLINE_REFS:
                    return False
                events.update(bytes(ref[:16]) for ref in cur.iternext_dup())
        for ev in events:
            held = reads.held_at(txn, ev)
            if held is not None and held.record_id not in _verified_heads:
                return False
    return True


def search_events(store: Store, q: Query) -> Iterator[EventHead]:
    """Events matching `q`: the header criteria, and (when attribute criteria are given) at least
    one attribute matching them. Paged by event."""
    plan = _plan(store, q)
    header_ok = _HeaderCheck(q, for_events=True)
    attribute_ok = _AttributeCheck(q, for_events=True)
    attribute_level = bool(q.value or q.type or q.category or q.to_ids is not None or q.tags)
    tag_matcher = _Matcher(q.tags)
    skip = (q.page - 1) * q.limit if q.limit else 0
    left = q.limit
    for _, event_uuid in _events_in_order(store, plan):
        head = event_head(store, event_uuid)
        if head is None or not header_ok(head):
            continue
        if q.uuid and not _Matcher(q.uuid)([head.uuid]) and not _has_element(store, event_uuid, q.uuid):
            continue
        event_tags = [t["name"] for t in head.header.get("Tag", ())]
        if attribute_level:
            only_tags = not (q.value or q.type or q.category or q.to_ids is not None)
            if only_tags and tag_matcher(event_tags):
                pass  # the event's own tags match
            else:
                candidates = plan.candidates(store, uuid16(event_uuid))
                only = None if candidates is None else sorted(candidates)
                if not any(element_kind(b) == "attribute" and attribute_ok(b, event_tags, event_uuid)
                           for b in event_elements(store, event_uuid, only)):
                    continue
        if skip:
            skip -= 1
            continue
        yield head
        if left is not None:
            left -= 1
            if left == 0:
                return


def _has_element(store: Store, event_uuid: str, terms: Terms) -> bool:
    for term in terms.any:
        if is_uuid(term) and element_event(store, str(_uuid.UUID(term))) == event_uuid:
            return True
    return False


def tag_names(store: Store, limit: int = 100_000) -> list[str]:
    """Every tag name in use on attributes or events (tags/index), up to `limit`."""
    names: set[str] = set()
    with store.read() as txn:
        for db in ("ix_tag", "ix_event_tag"):
            cur = txn.cursor(db)
            positioned = cur.first()
            while positioned and len(names) < limit:
                names.add(bytes(cur.key()).decode("utf-8", "replace"))
                positioned = cur.next_nodup()
    return sorted(names)


def tag_in_use(store: Store, name: str) -> bool:
    """Whether a held revision carries the tag (shared, on an attribute or an event)."""
    key = index_key(name)
    with store.read() as txn:
        return any(txn.cursor(db).set_key(key) for db in ("ix_tag", "ix_event_tag"))
