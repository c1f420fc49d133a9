"""A node's home folder: configuration, identity key and store, opened together."""
from __future__ import annotations

import secrets
import time
import uuid as _uuid
from dataclasses import dataclass
from pathlib import Path

from fedmisp.model.identity import Identity
from fedmisp.model.misp import ImportDefaults
from fedmisp.model.org import introduction
from fedmisp.model.records import Record
from fedmisp.node.config import KEY_FILE, NodeConfig, load_config, parse_listen, write_config
from fedmisp.store.store import Store

ROLES = ("read-only", "user", "publisher", "admin")
# A MISP instance's key for MISP's server sync with this node, bound to one MISP peer (`peer` in its
# entry): outside the ladder of ROLES, it may call only the sync routes (node/api/misp_sync.py).
SYNC_ROLE = "sync"
# MISP API keys are 40 characters; the same length keeps tools that check it happy.
API_KEY_CHARS = 40


class HomeError(Exception):
    pass


def new_api_key() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(API_KEY_CHARS))


def org_record(identity: Identity, config: NodeConfig) -> Record:
    return introduction(identity, config.org_name, config.org_uuid)


@dataclass
class Node:
    config: NodeConfig
    identity: Identity
    store: Store
    # keys this node rotated away from, newest first: used only to talk to peers that still pin them
    retired_identities: tuple[Identity, ...] = ()

    @classmethod
    def open(cls, home: Path, *, readonly: bool = False) -> "Node":
        from fedmisp.node.keys import finish_interrupted_rotation, retired_identities
        config = load_config(home)
        Identity.load(config.key_path)  # a key file others can read is refused before anything opens
        if readonly and not (config.store_path / "data.mdb").exists():
            raise HomeError(f"{config.store_path}: no store yet")
        store = Store(config.store_path, map_size=config.map_size, readonly=readonly)
        if not readonly:
            finish_interrupted_rotation(home, store)
        identity = Identity.load(config.key_path)
        if not readonly:
            store.signer = identity  # signs the retractions of revisions made here (model/retraction.py)
        return cls(config, identity, store, retired_identities(home))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def import_defaults(self) -> ImportDefaults:
        return ImportDefaults(org_uuid=self.config.org_uuid, org_name=self.config.org_name,
                              distribution=self.config.default_distribution,
                              templates=self.store.published_templates())

    def create_api_key(self, role: str, comment: str = "", peer: str = "") -> str:
        """A new key of `role`; a sync key names the MISP peer it is bound to (`peer`), no other does."""
        if role not in (*ROLES, SYNC_ROLE):
            raise HomeError(f"role {role!r} unknown; accepted: {', '.join(ROLES)}, {SYNC_ROLE}")
        if (role == SYNC_ROLE) != bool(peer):
            raise HomeError(f"a {SYNC_ROLE} key is bound to one MISP peer, and only a {SYNC_ROLE} key is")
        key = new_api_key()
        entry = {"comment": comment, "created": int(time.time()), "role": role, "prefix": key[:4]}
        if peer:
            entry["peer"] = peer
        self.store.api_keys.add(key, entry)
        return key


def init_home(home: Path, org_name: str, listen: str, org_uuid: str | None = None) -> tuple[Node, str]:
    """Create a node: identity key (0600), config, store with its own org record, an admin API key.
    `org_uuid`: the organisation's, when this is a further node of it (default: a new organisation)."""
    if not org_name.strip():
        raise HomeError("--org: expected the organisation's name")
    parse_listen(listen)  # raises ValueError naming what is accepted
    if org_uuid is not None:
        try:
            org_uuid = str(_uuid.UUID(org_uuid))
        except ValueError:
            raise HomeError(f"--org-uuid: {org_uuid!r} is not a uuid (expected 8-4-4-4-12 hex digits)") from None
    home.mkdir(parents=True, exist_ok=True)
    if (home / KEY_FILE).exists():
        raise HomeError(f"{home}: a node already lives here (found {KEY_FILE}); choose another --home")
    identity = Identity.generate()
    identity.save(home / KEY_FILE)
    write_config(home, org_name.strip(), org_uuid or str(_uuid.uuid4()), listen)
    node = Node.open(home)
    node.store.write_records([org_record(identity, node.config)])
    return node, node.create_api_key("admin", "created by fedmisp init")
