"""The API-key table (`apikeys`): key hash (32) -> msgpack {role, comment, created, prefix[, peer]}
(`peer`: the MISP peer a sync key is bound to).

Its one owner: the REST API asks it for a key's entry, `fedmisp apikey` lists and revokes through
it, the node's home adds to it. A key itself is never stored, only its hash; which roles exist and
what each may do is node/'s (node/home.py ROLES, node/api.py)."""
from __future__ import annotations

from hashlib import blake2b
from typing import Any

from fedmisp.model import canonical
from fedmisp.store.db import Database


def hash_api_key(key: str) -> bytes:
    # Keys are random 40-character secrets, so a fast hash suffices (no password stretching).
    return blake2b(key.encode("utf-8"), digest_size=32, person=b"fedmisp-apikey").digest()


class ApiKeys:
    def __init__(self, database: Database):
        self._database = database

    def add(self, key: str, entry: dict[str, Any]) -> None:
        with self._database.write() as t:
            t.put("apikeys", hash_api_key(key), canonical.pack(entry))

    def entry(self, key: str) -> dict[str, Any] | None:
        """The stored entry of a key given by a client; None if it is not one of ours."""
        with self._database.read() as t:
            raw = t.get("apikeys", hash_api_key(key))
        return canonical.unpack(raw) if raw is not None else None

    def entries(self) -> list[tuple[bytes, dict[str, Any]]]:
        """(key hash, entry) of every key, in hash order."""
        with self._database.read() as t:
            return [(bytes(k), canonical.unpack(raw)) for k, raw in t.cursor("apikeys")]

    def revoke_peer(self, peer: str) -> int:
        """Remove every key bound to MISP peer `peer` (its peer was removed); how many there were."""
        with self._database.write() as t:
            bound = [bytes(k) for k, raw in t.cursor("apikeys") if canonical.unpack(raw).get("peer") == peer]
            for key_hash in bound:
                t.delete("apikeys", key_hash)
        return len(bound)

    def revoke(self, id_prefix: str) -> int:
        """Remove the one key whose hash (hex) starts with `id_prefix`; returns how many keys
        matched (nothing is removed unless exactly one did)."""
        with self._database.write() as t:
            matches = [bytes(k) for k, _ in t.cursor("apikeys") if bytes(k).hex().startswith(id_prefix)]
            if len(matches) == 1:
                t.delete("apikeys", matches[0])
        return len(matches)
