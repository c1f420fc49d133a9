"""The store's LMDB environment: its named databases, their format, and the transactions over them.

This is the only module that holds LMDB handles. Every other store module reads and writes through
a `Txn` (one transaction, tables named by the names below); nothing outside fedmisp/store/ opens a
transaction or names a table (tests/test_store_layer.py walks the code to keep it so).

Named databases (key -> value):
  records      record id (32)                 -> record wire bytes (current revisions, orgs, sightings, ...)
  bodies       event uuid (16) | digest (32)  -> salt || canonical element (keyed under its event so
                                                 an event's bodies sit together: an import appends
                                                 runs of keys instead of scattering single pages)
  log          sequence (8, big-endian)       -> record id (32); the local changes feed, one entry per
                                                 held record (a replaced revision's entry is removed,
                                                 as in CouchDB's changes feed)
  events       event uuid (16)                -> record id (32) | level (1) | timestamp (8) | seq (8)
                                                 | local event id (8)
  event_ids    local event id (8)             -> event uuid (16); MISP's numeric ids, for the API
  event_meta   event uuid (16)                -> msgpack [source, correlation_only]: where it came
                                                 from; correlation-only events are matched, never shown
  ix_ip        family (1) | address (16), dupsort       -> event uuid | attribute uuid  (correlate/keys.py)
  ix_net       family | prefix length | network, dupsort -> event uuid | attribute uuid
  ix_ssdeep    block size (8) | 6-gram, dupsort         -> event uuid | attribute uuid (6-grams at
                                                            even positions; correlate/keys.py)
  elements     element uuid (16)              -> event uuid (16) | digest (32)
  event_extra  event uuid (16), dupsort       -> record id (32) of its sightings, proposals and
                                                 proposal decisions
  proposals    proposal record id (32)        -> event uuid (16); a proposal's API id is the first 7
                                                 bytes of its record id (store/proposals.py)
  decisions    proposal record id (32)        -> record id (32) of the decision (accept or discard)
                                                 that closed it
  extra_seqs   record id (32) of an event_extra record -> its log sequence (8), so it can be
                                                 logged again when its event is published
  orgs         org uuid (16)                  -> record id (32) of the org's latest org record
               b"key:" | public key (32)      -> org uuid (16): whose key signed a record
               b"retired:" | public key (32)  -> retired at (8) | successor key (32): a rotated key
                                                 (decision 0013)
               b"known:" | org uuid (16)      -> msgpack {uuid, name, key}: an organisation an admin
                                                 introduced by uuid, name and key (no record of its own)
  local        element or event uuid (16)     -> node-local annotations (local tags), msgpack; never
                                                 in a revision or the log, so never sent to a peer
  ix_value     normalised value, dupsort      -> event uuid (16) | attribute uuid (16)
  ix_type      attribute type, dupsort        -> event uuid (16) | attribute uuid (16)
  ix_tag       tag name, dupsort              -> event uuid (16) | attribute uuid (16)
  ix_event_tag tag name, dupsort              -> event uuid (16)
  ix_org       Orgc uuid (16), dupsort        -> event uuid (16)
  ix_event_time timestamp (8) | event uuid    -> b""
  checkpoints  peer name                      -> peer's sequence (8): how far this node has pulled
  sharing_groups group uuid (16)              -> record id (32) of its current revision
  holdings     event uuid (16)                -> msgpack {levels, sources, correlation_only}: the level
                                                 each item of a received event is held at (policy)
  retractions  event uuid (16)                -> msgpack [record id, level, source, seq] of the latest
                                                 retraction of the event held (model/retraction.py):
                                                 the level it is held at (-1: through its groups
                                                 only), the peer it came from ("" made here), its
                                                 log sequence
  views        record id (32) of a revision   -> the policy views of its bodies held (policy/model.py
                                                 pack_views), so a sender need not decode them
  apikeys      key hash (32)                  -> msgpack {role, comment, created}
  meta         name                           -> value (b"seq": last sequence number; b"format": the
                                                 store format (8), see STORE_FORMAT; b"tag:" | name:
                                                 node-local tag settings from tags/add and tags/edit)

Every write goes through `write_events` / `write_records` (store/events.py) in one transaction: an
event is stored whole or not at all, and a crash leaves the last committed transaction.
"""
from __future__ import annotations

import logging
import time
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable

import lmdb

from fedmisp.correlate.keys import SSDEEP_PARTS, correlation_rows
from fedmisp.model import canonical
from fedmisp.model.records import open_element
from fedmisp.store.rows import BE8, index_values, uuid16

# The map is address space, not memory: LMDB grows the file as data arrives. 1 TiB leaves room for
# tens of millions of attributes on a 64-bit machine without a resize.
DEFAULT_MAP_SIZE = 1 << 40

log = logging.getLogger("fedmisp.store")

# The layout of the stored indexes, recorded in meta b"format" when a store is made. Opening an
# older store (writable) brings it up to date (Database._upgrade):
#   1  ix_ssdeep held every 7-gram of a hash; ix_time (timestamp | attribute uuid) existed
#   2  ix_ssdeep holds the 6-grams at even positions; no ix_time (no query read it)
STORE_FORMAT = 2
_DROPPED_DBS = ("ix_time",)  # databases of older formats, removed by the upgrade

DB_NAMES = (
    "records", "bodies", "log", "events", "elements", "event_extra", "orgs", "local",
    "ix_value", "ix_type", "ix_tag", "ix_event_tag", "ix_org", "ix_event_time",
    "checkpoints", "apikeys", "meta", "event_ids", "event_meta", "ix_ip", "ix_net", "ix_ssdeep",
    "holdings", "sharing_groups", "proposals", "decisions", "extra_seqs", "views", "retractions",
)
# Databases a store written by an earlier version may lack: a read-only open reads it without them.
_LATER_DBS = frozenset({"views", "retractions"})
DUPSORT = frozenset({"event_extra", "ix_value", "ix_type", "ix_tag", "ix_event_tag", "ix_org",
                     "ix_ip", "ix_net", "ix_ssdeep"})
# Rows per write transaction of a compacted copy (bounds the copy's dirty pages, not its consistency:
# every row is read in one read transaction of the source).
_COPY_BATCH = 100_000


class StoreFormatError(Exception):
    """The store was written in a format this version cannot read."""


class Txn:
    """One LMDB transaction over the store's named databases, each named by its name in DB_NAMES.

    A context manager like LMDB's own: it commits when the block ends and aborts on an exception.
    A database an earlier version's store lacks (opened read-only) reads as empty (`has`)."""
    __slots__ = ("_txn", "_dbs")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, Any]):
        self._txn = txn
        self._dbs = dbs

    def __enter__(self) -> "Txn":
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self._txn.commit()
        else:
            self._txn.abort()

    def commit(self) -> None:
        self._txn.commit()

    def abort(self) -> None:
        self._txn.abort()

    def has(self, table: str) -> bool:
        return self._dbs[table] is not None

    def get(self, table: str, key: bytes) -> Any:
        db = self._dbs[table]
        return self._txn.get(key, db=db) if db is not None else None

    def getter(self, table: str) -> Callable[[bytes], Any]:
        """`get` of one table as a C-level callable, for loops over many keys (once per element)."""
        db = self._dbs[table]
        return partial(self._txn.get, db=db) if db is not None else (lambda key: None)

    def put(self, table: str, key: bytes, value: bytes, overwrite: bool = True) -> bool:
        return self._txn.put(key, value, db=self._dbs[table], overwrite=overwrite)

    def putmulti(self, table: str, items: Iterable[tuple[bytes, bytes]], overwrite: bool = True,
                 append: bool = False) -> tuple[int, int]:
        """Many rows in one C-level loop; (consumed, added)."""
        return self._txn.cursor(db=self._dbs[table]).putmulti(items, dupdata=table in DUPSORT,
                                                              overwrite=overwrite, append=append)

    def delete(self, table: str, key: bytes, value: bytes = b"") -> bool:
        db = self._dbs[table]
        return self._txn.delete(key, value, db=db) if db is not None else False

    def pop(self, table: str, key: bytes) -> Any:
        return self._txn.pop(key, db=self._dbs[table])

    def cursor(self, table: str) -> lmdb.Cursor:
        return self._txn.cursor(db=self._dbs[table])

    def items_from(self, table: str, key: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to `limit` (key, value) rows from `key` on, in key order (a page of a table)."""
        cur = self._txn.cursor(db=self._dbs[table])
        return list(islice(cur.iternext(), limit)) if cur.set_range(key) else []

    def entries(self, table: str) -> int:
        db = self._dbs[table]
        return self._txn.stat(db)["entries"] if db is not None else 0


def sequence(t: Txn) -> int:
    """The last sequence number of the local log (meta b"seq")."""
    raw = t.get("meta", b"seq")
    return BE8.unpack(raw)[0] if raw else 0


def set_sequence(t: Txn, seq: int) -> None:
    t.put("meta", b"seq", BE8.pack(seq))


class Database:
    """The environment and its named databases, opened (and brought up to STORE_FORMAT) once."""

    def __init__(self, path: Path, *, map_size: int = DEFAULT_MAP_SIZE, readonly: bool = False):
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.env = lmdb.open(
            str(path), map_size=map_size, max_dbs=len(DB_NAMES) + 4, readonly=readonly,
            # Readers never wait for the writer; one process writes (the node or the CLI).
            max_readers=256, subdir=True,
            # Dirty pages are written in place in the file mapping instead of being copied from
            # heap buffers: a large transaction then costs page cache, not private memory, and
            # the importer's memory stays flat as the store grows. (LMDB's caveat: a stray write
            # through a wild pointer could corrupt the map; there is no C code of ours here.)
            writemap=not readonly,
        )
        self.db: dict[str, Any] = {}
        for name in DB_NAMES:
            try:
                self.db[name] = self.env.open_db(name.encode(), create=not readonly,
                                                 dupsort=name in DUPSORT, dupfixed=name in DUPSORT)
            except lmdb.NotFoundError:
                if name not in _LATER_DBS:
                    self.env.close()
                    raise
                self.db[name] = None
        try:
            self.format = self._open_format(readonly)
        except BaseException:
            self.env.close()
            raise

    def read(self) -> Txn:
        """A read transaction (a snapshot of the last commit): `with database.read() as t:`."""
        return Txn(self.env.begin(), self.db)

    def write(self) -> Txn:
        """The write transaction (one at a time): committed when its `with` block ends."""
        return Txn(self.env.begin(write=True), self.db)

    def close(self) -> None:
        self.env.close()

    def _open_format(self, readonly: bool) -> int:
        """The store's format (meta b"format"); a writable open records it in a new store and
        brings an older store up to date. A store without the key is a new one if it holds no
        record, else format 1 (written before formats were recorded). A read-only open of an older
        store reads it as it is (correlation looks ssdeep up the old way: `Store.format`)."""
        with self.read() as t:
            raw = t.get("meta", b"format")
            empty = t.get("meta", b"seq") is None and t.entries("records") == 0
        found = BE8.unpack(raw)[0] if raw is not None else (STORE_FORMAT if empty else 1)
        if found > STORE_FORMAT:
            raise StoreFormatError(f"{self.path}: store format {found} was written by a newer fedmisp; this one "
                                   f"reads formats up to {STORE_FORMAT} (upgrade fedmisp, or restore a backup "
                                   "made by this version)")
        if readonly or (raw is not None and found == STORE_FORMAT):
            return found
        if found < STORE_FORMAT:
            self._upgrade(found)
        else:
            with self.write() as t:
                t.put("meta", b"format", BE8.pack(STORE_FORMAT))
        return STORE_FORMAT

    def _upgrade(self, found: int) -> None:
        """Bring a format-1 store to STORE_FORMAT in one transaction: drop ix_time, and rebuild
        ix_ssdeep from the held element bodies (the rows `add_element_rows` writes today)."""
        started = time.monotonic()
        rebuilt = 0
        with self.env.begin(write=True) as txn:
            for name in _DROPPED_DBS:
                try:
                    dropped = self.env.open_db(name.encode(), txn=txn, create=False)
                except lmdb.NotFoundError:
                    continue
                txn.drop(dropped, delete=True)
            txn.drop(self.db["ix_ssdeep"], delete=False)
            t = Txn(txn, self.db)
            disabled = False
            last_ev = None
            rows: list[tuple[bytes, bytes]] = []
            for key, body in t.cursor("bodies"):
                if b"ssdeep" not in body:  # cheap: most bodies are not ssdeep attributes
                    continue
                element = open_element(body)
                if element.get("type") not in SSDEEP_PARTS or "value" not in element or "uuid" not in element:
                    continue
                ev = key[:16]
                if ev != last_ev:
                    raw = t.get("event_meta", ev)
                    disabled, last_ev = bool(raw is not None and canonical.unpack(raw)[2]), ev
                found_rows = correlation_rows(element, index_values(element), ev + uuid16(element["uuid"]), disabled)
                rows.extend((k, v) for name, k, v in found_rows if name == "ix_ssdeep")
                rebuilt += 1
            t.putmulti("ix_ssdeep", rows)
            t.put("meta", b"format", BE8.pack(STORE_FORMAT))
        log.warning("store %s: format %d upgraded to %d: ssdeep index rebuilt from %d attribute(s) "
                    "(%d rows), time index dropped, in %.1f s", self.path, found, STORE_FORMAT, rebuilt,
                    len(rows), time.monotonic() - started)

    def copy_compacted(self, dest: Path) -> int:
        """Every database as of one read transaction, rewritten densely into a new environment in
        the empty folder `dest`; returns the copy's head sequence. (LMDB's own compacting copy,
        ``Environment.copy(compact=True)``, crashes on a dupfixed database holding many values
        under one key, as ix_type does: decision 0014.) Written without writemap, so the copy's
        file is as large as its pages, not the map size."""
        out = lmdb.open(str(dest), map_size=self.env.info()["map_size"], max_dbs=len(DB_NAMES) + 4,
                        subdir=True, writemap=False, sync=False)
        try:
            with self.read() as t:
                head = sequence(t)
                for name in DB_NAMES:
                    dupsort = name in DUPSORT
                    target = out.open_db(name.encode(), dupsort=dupsort, dupfixed=dupsort)
                    if not t.has(name):
                        continue  # (an earlier version's store, opened read-only)
                    rows = t.cursor(name).iternext()
                    while batch := list(islice(rows, _COPY_BATCH)):
                        with out.begin(write=True) as w:
                            # rows come sorted: appended at the end of each page, so pages fill up
                            w.cursor(db=target).putmulti(batch, dupdata=dupsort, append=True)
            out.sync(True)
        finally:
            out.close()
        return head

    def store_bytes(self) -> int:
        """Bytes of the pages before the last one in use (what `fedmisp status` shows)."""
        return self.env.info()["last_pgno"] * self.env.stat()["psize"]

    def usage(self) -> dict[str, Any]:
        """The map's size and use, and the entries of each database (for metrics)."""
        info, stat = self.env.info(), self.env.stat()
        with self.read() as t:
            entries = {name: t.entries(name) for name in sorted(self.db) if t.has(name)}
        return {"map_used_bytes": (info["last_pgno"] + 1) * stat["psize"], "map_size": info["map_size"],
                "entries": entries}
