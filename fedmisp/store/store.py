"""The node's store, as the rest of the node calls it: one facade over the store's modules.

  db.py         the LMDB environment, its named databases (their layout is listed there), the store
                format and its upgrade, transactions (`Txn`), compaction; the only module with LMDB
  rows.py       what is written, as plain values: index rows, stored entries, the worker blob
  events.py     the event write path (every rule the store applies), attached records, retractions
  reads.py      reads of held events; `IndexView` for correlation
  log.py        the changes feed, records, checkpoints
  orgs.py       organisations and their keys        groups.py   sharing groups
  local.py      local tags, tag settings            apikeys.py  the API-key table
  integrity.py  the store's check of what it holds    templates.py  published object templates
                                                      clusters.py   custom galaxy clusters
  query.py      search (restSearch and the views)   proposals.py  open proposals

Each `Store` method opens one transaction and asks a module; several reads that must agree share
one snapshot inside the module. Every write goes through `write_events` / `write_records` in one
transaction: an event is stored whole or not at all, and a crash leaves the last committed one.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from fedmisp.model.identity import Identity
from fedmisp.model.records import Record
from fedmisp.model.retraction import Retraction
from fedmisp.model.revision import SignedEvent
from fedmisp.policy.orgs import KeyState
from fedmisp.policy.reasons import Reason
from fedmisp.store import analyst, clusters, events, groups, integrity, local, log, orgs, reads, templates
from fedmisp.store.apikeys import ApiKeys
from fedmisp.store.db import DEFAULT_MAP_SIZE, STORE_FORMAT, Database, StoreFormatError, Txn, sequence
# The names callers import from here (the facade's public surface; their homes are the modules).
from fedmisp.store.events import EVENT_EXTRA_KINDS, EventBatch, WriteOutcome
from fedmisp.store.orgs import MAX_ROTATION_CHAIN
from fedmisp.store.reads import IndexView
from fedmisp.store.rows import (
    ROW_DBS, EventMeta, EventWrite, HeldEvent, Rows, element_rows, elements_rows, event_write, index_key,
    join_rows, pack_writes, received_write, unpack_element_rows, unpack_writes, uuid16,
)

__all__ = [
    "DEFAULT_MAP_SIZE", "EVENT_EXTRA_KINDS", "MAX_ROTATION_CHAIN", "ROW_DBS", "STORE_FORMAT", "EventBatch",
    "EventMeta", "EventWrite", "HeldEvent", "IndexView", "Rows", "Store", "StoreFormatError", "WriteOutcome",
    "element_rows", "elements_rows", "event_write", "index_key", "join_rows", "pack_writes", "received_write",
    "unpack_element_rows", "unpack_writes", "uuid16",
]


class Store:
    def __init__(self, path: Path, *, map_size: int = DEFAULT_MAP_SIZE, readonly: bool = False):
        self.path = path
        self.database = Database(path, map_size=map_size, readonly=readonly)
        self.format = self.database.format
        # The node's signing identity (Node.open sets it): a revision made here that replaces a
        # published one is stored with its retraction, signed by it. None (a bare store): none.
        self.signer: Identity | None = None
        self.api_keys = ApiKeys(self.database)

    def close(self) -> None:
        self.database.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self) -> Txn:
        """A read transaction, for the store's own modules (query.py, proposals.py)."""
        return self.database.read()

    @contextmanager
    def index_view(self) -> Iterator[IndexView]:
        """The correlation indexes over one read transaction (correlate/engine.py)."""
        with self.database.read() as t:
            yield IndexView(t)

    # --- writing ---------------------------------------------------------------------------------

    def write_events(self, events: list[EventWrite | SignedEvent],
                     checkpoint: tuple[str, int] | None = None) -> list[WriteOutcome]:
        """Store many event revisions in one transaction (each whole, or the batch not at all),
        with a peer's replication checkpoint when they came from that peer."""
        batch = self.begin_events()
        try:
            outcomes = batch.write(events, checkpoint)
        except BaseException:
            batch.abort()
            raise
        batch.commit()
        return outcomes

    def begin_events(self) -> EventBatch:
        """A write transaction that takes several `write` calls before one commit (the writer's:
        fewer commits write far fewer pages, see docs/decisions/0004)."""
        return EventBatch(self.database, self.signer)

    def write_records(self, records: list[Record], refused: list[tuple[Record, Reason]] | None = None,
                      pinned: Mapping[bytes, str] | None = None) -> int:
        """Store standalone records (org records, ...); returns how many were new (events.py
        `write_new_records`)."""
        return len(self.write_new_records(records, refused, pinned))

    def write_new_records(self, records: list[Record], refused: list[tuple[Record, Reason]] | None = None,
                          pinned: Mapping[bytes, str] | None = None,
                          levels: Mapping[bytes, int] | None = None) -> list[Record]:
        """`write_records`, returning the records that were new (the others were held already);
        `levels`: the level each received analyst-data record is held at."""
        with self.database.write() as t:
            return events.write_new_records(t, records, refused, pinned, levels)

    def analyst_level(self, record_id: bytes) -> int | None:
        """The level a received analyst-data record is held at (None: made or imported here, held
        at its own distribution; store/analyst.py)."""
        with self.database.read() as t:
            return analyst.level(t, record_id)

    def write_retraction(self, record: Record, level: int, source: str) -> Reason:
        """Take a retraction a peer sent (events.py `write_retraction`)."""
        with self.database.write() as t:
            return events.write_retraction(t, record, level, source)

    def drop_received(self, event_uuid: str) -> bool:
        """Remove a received event whole (this node may no longer hold it); False if it is not
        held or was made here (the origin keeps what it created)."""
        with self.database.write() as t:
            return events.drop_received(t, event_uuid)

    def drop_elements(self, event_uuid: str, digests: Iterable[bytes], holding: bytes) -> int:
        """Remove some bodies of a received event (this node may no longer hold them), with their
        index rows and kept views, and store the holding without them. Returns how many went."""
        with self.database.write() as t:
            return events.drop_elements(t, event_uuid, digests, holding)

    def put_sharing_group(self, record: Record, group_uuid: str) -> None:
        """Make `record` the group's current revision (the caller checked the revision rules)."""
        with self.database.write() as t:
            groups.put_sharing_group(t, record, group_uuid)

    def set_local_tags(self, target_uuid: str, tags: list[dict[str, Any]]) -> None:
        """Replace the node-local tags of one event or element (never signed or sent)."""
        with self.database.write() as t:
            local.set_local_tags(t, target_uuid, tags)

    def drop_local_tag(self, name: str) -> int:
        """Remove one tag name from every node-local tag list; returns how many lists changed."""
        with self.database.write() as t:
            return local.drop_local_tag(t, name)

    def set_tag_settings(self, name: str, settings: dict[str, Any] | None) -> None:
        """Store (or with None remove) one tag's node-local settings."""
        with self.database.write() as t:
            local.set_tag_settings(t, name, settings)

    def introduce_org(self, org_uuid: str, name: str, key: bytes) -> bool:
        """Know an organisation by uuid, name and public key, as an admin said; False if the uuid
        or the key is known already."""
        with self.database.write() as t:
            return orgs.introduce_org(t, org_uuid, name, key)

    # --- published object templates (store/templates.py) -----------------------------------------

    def accept_template(self, record: Record) -> Reason:
        """Hold a published template version if the rules allow it (policy/templates.py)."""
        with self.database.write() as t:
            return templates.accept_template(t, record)

    def await_template(self, template_uuid: str, peer: str, seq: int) -> None:
        """A revision `peer` offered at `seq` waits for a template this node does not hold."""
        with self.database.write() as t:
            templates.await_template(t, template_uuid, peer, seq)

    def pull_from(self, peer: str) -> int:
        """Where the next pull of `peer` starts (its checkpoint, or before a revision that waited
        for a template which has arrived since)."""
        with self.database.read() as t:
            if not templates.recheck_due(t, peer):  # (the usual case: no write transaction)
                return log.checkpoint(t, peer)
        with self.database.write() as t:
            return templates.pull_from(t, peer)

    def template_record(self, template_uuid: str) -> Record | None:
        with self.database.read() as t:
            return templates.template_record(t, template_uuid)

    def template_records(self) -> list[Record]:
        with self.database.read() as t:
            return templates.template_records(t)

    def published_templates(self) -> dict[str, Any]:
        """The published templates held, by uuid (model/templates.py resolve_template)."""
        with self.database.read() as t:
            return templates.published_templates(t)

    # --- custom galaxy clusters (store/clusters.py) -----------------------------------------------

    def accept_cluster(self, record: Record, level: int | None = None, source: str | None = None) -> Reason:
        """Hold a cluster version if the rules allow it (policy/clusters.py); `level` and
        `source`: the level a peer's version is taken at and the peer (None: made here)."""
        with self.database.write() as t:
            return clusters.accept_cluster(t, record, level, source)

    def hard_delete_cluster(self, cluster_uuid: str) -> bool:
        with self.database.write() as t:
            return clusters.hard_delete(t, cluster_uuid)

    def cluster_blocked(self, cluster_uuid: str) -> bool:
        with self.database.read() as t:
            return clusters.blocked(t, cluster_uuid)

    def cluster(self, cluster_uuid: str) -> tuple[Record, int, list[str]] | None:
        """The cluster version held, the level it is held at and the peers it came from."""
        with self.database.read() as t:
            return clusters.cluster(t, cluster_uuid)

    def clusters(self) -> list[tuple[Record, int, list[str]]]:
        with self.database.read() as t:
            return clusters.clusters(t)

    # --- organisations and groups ----------------------------------------------------------------

    def key_state(self, key: bytes) -> KeyState:
        """Which organisation a key signs for, and whether (when, by which key) it was rotated."""
        with self.database.read() as t:
            return orgs.key_state(t, key)

    def current_key(self, key: bytes) -> bytes:
        """The key that replaced `key` through its org's rotations (`key` itself if never rotated):
        what a peer pinned by `key` now authenticates with."""
        with self.database.read() as t:
            return orgs.current_key(t, key)

    def org_for_key(self, key: bytes) -> str | None:
        with self.database.read() as t:
            return orgs.org_for_key(t, key)

    def orgs(self) -> list[dict[str, Any]]:
        """Organisations this node knows (orgs.py `orgs`)."""
        with self.database.read() as t:
            return orgs.orgs(t)

    def sharing_group(self, group_uuid: str) -> Record | None:
        with self.database.read() as t:
            return groups.sharing_group(t, group_uuid)

    def sharing_groups(self) -> list[Record]:
        with self.database.read() as t:
            return groups.sharing_groups(t)

    def sharing_group_orgs_ever(self, group_uuid: str) -> set[str]:
        """Every organisation a revision of the group held here listed as a member."""
        with self.database.read() as t:
            return groups.sharing_group_orgs_ever(t, group_uuid)

    def events_with_group_items(self) -> list[str]:
        """Received events holding an item at level 4 (sharing group)."""
        with self.database.read() as t:
            return groups.events_with_group_items(t)

    # --- local annotations -----------------------------------------------------------------------

    def local_tags(self, uuids: list[str]) -> dict[str, list[dict[str, Any]]]:
        with self.database.read() as t:
            return local.local_tags(t, uuids)

    def tag_settings(self) -> dict[str, dict[str, Any]]:
        """Node-local tag settings (colour, exportable, hide_tag) by tag name."""
        with self.database.read() as t:
            return local.tag_settings(t)

    # --- the log ---------------------------------------------------------------------------------

    def head_sequence(self) -> int:
        """The last sequence number of the local log (what a fully caught-up peer has seen)."""
        with self.database.read() as t:
            return sequence(t)

    def log_since(self, seq: int, limit: int = 1000) -> list[tuple[int, bytes]]:
        with self.database.read() as t:
            return log.log_since(t, seq, limit)

    def record(self, record_id: bytes) -> Record | None:
        with self.database.read() as t:
            return log.record(t, record_id)

    def checkpoint(self, peer: str) -> int:
        with self.database.read() as t:
            return log.checkpoint(t, peer)

    # --- held events -----------------------------------------------------------------------------

    def held(self, event_uuid: str) -> HeldEvent | None:
        with self.database.read() as t:
            return reads.held(t, event_uuid)

    def holding(self, event_uuid: str) -> Any | None:
        """The stored policy holding of a received event (None for events made or imported here)."""
        with self.database.read() as t:
            return reads.holding(t, event_uuid)

    def revision(self, event_uuid: str) -> tuple[Record, list[dict[str, Any]]] | None:
        """The held revision and its element bodies (verified) in the revision's order."""
        with self.database.read() as t:
            return reads.revision(t, event_uuid)

    def revision_entries(self, event_uuid: str) -> tuple[Record, list[tuple[bytes, bytes, dict[str, Any]]]] | None:
        """The held revision and (digest, body, element) for each body held (reads.py)."""
        with self.database.read() as t:
            return reads.revision_entries(t, event_uuid)

    def revision_views(self, event_uuid: str) -> tuple[Record, list[tuple[bytes, Any]]] | None:
        """The held revision and the policy views kept for its bodies (reads.py)."""
        with self.database.read() as t:
            return reads.revision_views(t, event_uuid)

    def bodies(self, event_uuid: str, digests: list[bytes]) -> dict[bytes, bytes]:
        """The held bodies among `digests` (unverified: what is sent is checked by its receiver)."""
        with self.database.read() as t:
            return reads.bodies(t, event_uuid, digests)

    def held_digests(self, event_uuid: str) -> set[bytes]:
        """Digests of the element bodies held for an event's current revision."""
        with self.database.read() as t:
            return reads.held_digests(t, event_uuid)

    def event_uuid_for_id(self, event_id: int) -> str | None:
        """The uuid of the event this node numbers `event_id` (MISP's numeric event id)."""
        with self.database.read() as t:
            return reads.event_uuid_for_id(t, event_id)

    def previous_elements(self, event_uuid: str) -> dict[str, tuple[bytes, bytes]]:
        """element uuid -> (digest, body) of the held revision, for signing a new one."""
        with self.database.read() as t:
            return reads.previous_elements(t, event_uuid)

    def event_uuids(self, *, include_correlation_only: bool = False) -> Iterator[str]:
        """Held events; correlation-only ones only when asked for; deleted ones never."""
        return reads.event_uuids(self.database, include_correlation_only=include_correlation_only)

    def event_meta(self, event_uuid: str) -> EventMeta | None:
        """Where a held event came from and the few header fields correlation results show."""
        with self.database.read() as t:
            return reads.event_meta(t, event_uuid)

    def event_records(self, event_uuid: str) -> list[Record]:
        """Sightings and proposal records attached to an event."""
        with self.database.read() as t:
            return reads.event_records(t, event_uuid)

    def events_with_records(self, page: int = 1000) -> Iterator[str]:
        """Uuids of events that have sightings or proposals attached, a page at a time."""
        return reads.events_with_records(self.database, page)

    def correlation_only_items(self, event_uuid: str) -> set[str]:
        """Elements of a shown event held only for correlation: matched, never shown."""
        with self.database.read() as t:
            return reads.correlation_only_items(t, event_uuid)

    def retraction(self, event_uuid: str) -> tuple[Retraction, Record, int, str] | None:
        """The latest retraction held for an event: what it says, its record, the level it is held
        at and the peer it came from."""
        with self.database.read() as t:
            return reads.retraction(t, event_uuid)

    def export_event(self, event_uuid: str) -> dict[str, Any] | None:
        """The event as MISP JSON ``{"Event": ...}``, with its sightings, proposals and local tags."""
        with self.database.read() as t:
            return reads.export_event(t, event_uuid)

    def attributes_by(self, index: str, key: str) -> list[str]:
        """Attribute uuids under one key of ix_value (normalised), ix_type or ix_tag."""
        with self.database.read() as t:
            return reads.attributes_by(t, index, key)

    def find_value(self, value: str, type_: str | None = None) -> list[str]:
        """Attribute uuids whose normalised value (or one half of a composite) equals `value`'s."""
        with self.database.read() as t:
            return reads.find_value(t, value, type_)

    # --- the whole store -------------------------------------------------------------------------

    def copy_compacted(self, dest: Path) -> int:
        """Every database as of one read transaction, rewritten densely into `dest` (db.py)."""
        return self.database.copy_compacted(dest)

    def check_integrity(self, own_keys: Iterable[bytes] = ()) -> list[str]:
        """The problems found in what the store holds (integrity.py); empty when sound."""
        with self.database.read() as t:
            return integrity.check_integrity(t, own_keys, self.signer)

    def usage(self) -> dict[str, Any]:
        """The map's size and use and each database's entries (db.py `usage`), for metrics."""
        return self.database.usage()

    def stats(self) -> dict[str, int]:
        with self.database.read() as t:
            return {
                "events": t.entries("events"),
                "attributes": t.entries("ix_type"),  # one row per attribute
                "elements": t.entries("elements"),
                "bodies": t.entries("bodies"),
                "records": t.entries("records"),
                "orgs": orgs.org_count(t),
                "sequence": sequence(t),
                "store_bytes": self.database.store_bytes(),
            }
