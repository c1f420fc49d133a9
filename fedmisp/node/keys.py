"""Key rotation for a node's home (`fedmisp key rotate`, decision 0013).

The new key is announced by an org record signed by the old key and countersigned by the new one
(model/org.py); the node stores it in its log, so it replicates to peers like any org record. The
old key is kept under ``retired-keys/`` (mode 0600): the node still answers peers that pin it until
they have pulled the rotation, and it is the only proof of what the org signed before.

Steps, each safe to interrupt: the new key is written beside the current one
(``identity.key.new``), the old one copied to ``retired-keys/``, the rotation stored, and only then
the new key renamed over ``identity.key``. A node that opens a home with a leftover
``identity.key.new`` finishes the rename if the rotation was stored, and drops the file if not;
unless a rotation holds ``rotation.lock`` (it is running, not interrupted).
"""
from __future__ import annotations

import base64
import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from fedmisp.model.identity import Identity, decode_key, encode_key
from fedmisp.model.org import introduction, read_org, rotation, vouch
from fedmisp.model.records import Record, RecordError
from fedmisp.node.config import KEY_FILE
from fedmisp.policy.reasons import Reason
from fedmisp.store.store import Store

if TYPE_CHECKING:
    from fedmisp.node.home import Node

RETIRED_DIR = "retired-keys"
PENDING_KEY = KEY_FILE + ".new"
LOCK_FILE = "rotation.lock"  # held by `fedmisp key rotate` while it runs


class KeyRotationError(Exception):
    pass


def retired_identities(home: Path) -> tuple[Identity, ...]:
    """The keys this node rotated away from, newest first (their file names start with the time)."""
    folder = home / RETIRED_DIR
    if not folder.is_dir():
        return ()
    return tuple(Identity.load(p) for p in sorted(folder.glob("*.key"), reverse=True))


@contextmanager
def _rotation_lock(home: Path, wait: bool) -> Iterator[bool]:
    """An exclusive lock on the home's rotation (True if held): a command that opens the home while
    `fedmisp key rotate` runs must not take its pending key for an interrupted rotation."""
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def finish_interrupted_rotation(home: Path, store: Store) -> None:
    """Complete or undo a rotation that stopped between storing it and renaming the key file."""
    if not (home / PENDING_KEY).exists():
        return
    with _rotation_lock(home, wait=False) as held:
        if held:
            _finish(home, store)


def _finish(home: Path, store: Store) -> None:
    pending = home / PENDING_KEY
    if not pending.exists():
        return
    new = Identity.load(pending)
    if store.key_state(new.public_key).org is not None:
        os.replace(pending, home / KEY_FILE)  # the rotation is stored: the new key is the node's
    else:
        pending.unlink()  # never announced: the current key stays


def rotate_key(node: "Node", now: int | None = None) -> tuple[Record, Path]:
    """Replace the node's key; returns the stored rotation record and where the old key was kept."""
    with _rotation_lock(node.config.home, wait=True):
        return _rotate(node, now)


def _rotate(node: "Node", now: int | None) -> tuple[Record, Path]:
    home = node.config.home
    _finish(home, node.store)
    old = node.identity
    if old.public_key != Identity.load(home / KEY_FILE).public_key:
        raise KeyRotationError(f"{home / KEY_FILE} changed since this node was opened; try again")
    created = int(time.time()) if now is None else now
    new = Identity.generate()
    pending = home / PENDING_KEY
    new.save(pending)
    folder = home / RETIRED_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(created))
    kept = folder / f"identity-{stamp}-{old.public_key_text[:8]}.key"
    if not kept.exists():
        old.save(kept)
    record = rotation(old, new, node.config.org_name, node.config.org_uuid, created)
    refused: list[tuple[Record, Reason]] = []
    node.store.write_records([record], refused)
    if refused:
        pending.unlink()
        raise KeyRotationError(f"the store refused the rotation ({refused[0][1].value}): "
                               f"{old.public_key_text} is not a current key of org {node.config.org_uuid}")
    os.replace(pending, home / KEY_FILE)
    node.identity = node.store.signer = new
    node.retired_identities = (old, *node.retired_identities)
    return record, kept


def reload_identity(node: "Node") -> bool:
    """Read identity.key again (after `fedmisp key rotate`); True if the key changed."""
    home = node.config.home
    current = Identity.load(home / KEY_FILE)
    if current.public_key == node.identity.public_key:
        return False
    node.identity = node.store.signer = current
    node.retired_identities = retired_identities(home)
    return True


# --- an organisation's further node (decision 0019) ---------------------------------------------

class VouchError(Exception):
    """A vouch cannot be made or taken; the message says why."""


def vouch_token(node: "Node", key_text: str) -> str:
    """What this node's operator hands the operator of the organisation's other node, whose public
    key is `key_text`: `<org uuid>.<this node's key>.<signature>` (none of it secret)."""
    key = decode_key(key_text)
    if key == node.identity.public_key:
        raise VouchError("that is this node's own key: vouch for the other node's key (its `fedmisp info`)")
    state = node.store.key_state(node.identity.public_key)
    if state.org is not None and state.org != node.config.org_uuid:
        raise VouchError(f"this node's key signs for org {state.org}, not {node.config.org_uuid}")
    signature = vouch(node.identity, node.config.org_uuid, key)
    return f"{node.config.org_uuid}.{node.identity.public_key_text}.{encode_key(signature)}"


def introduce_vouched(node: "Node", token: str) -> Record:
    """Store this node's introduction carrying the vouch of `token` (from `fedmisp key vouch` on a
    node of the same organisation); peers take it when they pull. Raises VouchError naming
    what is wrong."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise VouchError("--vouch: expected <org uuid>.<key>.<signature>, as `fedmisp key vouch` prints it")
    org_uuid, voucher_text, signature_text = parts
    if org_uuid != node.config.org_uuid:
        raise VouchError(f"--vouch: the vouch is for org {org_uuid}, this node's org is {node.config.org_uuid}: "
                         "a further node of an organisation is created with `fedmisp init --org-uuid`")
    try:
        voucher = decode_key(voucher_text)
        signature = base64.urlsafe_b64decode(signature_text + "=" * (-len(signature_text) % 4))
    except ValueError as e:
        raise VouchError(f"--vouch: {e}") from None
    record = introduction(node.identity, node.config.org_name, org_uuid, int(time.time()), (voucher, signature))
    try:
        read_org(record)
    except RecordError:
        raise VouchError("--vouch: the signature does not vouch for this node's key "
                               "(was it made for another key?)") from None
    refused: list[tuple[Record, Reason]] = []
    node.store.write_records([record], refused, {node.identity.public_key: node.config.org_uuid})
    if refused:
        raise VouchError(f"the store refused the introduction ({refused[0][1].value})")
    return record
