"""`fedmisp backup` and `fedmisp restore`: a node's home in one file, taken while the node runs.

The store is copied database by database in one read transaction (`Store.copy_compacted`; LMDB's
own compacting copy crashes on our dupfixed indexes, decision 0014): the copy is the store as of
one commit, whatever the node writes meanwhile, and free pages are left out. Beside it go fedmisp.toml, the identity key and the retired
keys, and a manifest (format version, creation time, the copy's log head sequence, a BLAKE2b-256
checksum per file and over all of them). The file holds the private key: it is written with mode
0600 and must be kept as secret as the key itself.

Restore verifies the whole backup (checksums, then the store's `check_integrity`) in a folder beside
the home before anything of the home changes, then renames the verified parts into place.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path
from typing import Any

from fedmisp import __version__
from fedmisp.model.identity import KEY_FILE_MODE, Identity
from fedmisp.node.config import CONFIG_FILE, KEY_FILE, STORE_DIR, load_config
from fedmisp.node.keys import RETIRED_DIR
from fedmisp.node.server import PID_FILE
from fedmisp.store.store import Store

BACKUP_FORMAT = "fedmisp-backup"
BACKUP_VERSION = 1
MANIFEST = "manifest.json"
_STORE_FILE = f"{STORE_DIR}/data.mdb"
_CHUNK = 1 << 20


class BackupError(Exception):
    pass


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    manifest: dict[str, Any]


def _digest(path: Path) -> str:
    h = blake2b(digest_size=32)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _overall(files: dict[str, dict[str, Any]]) -> str:
    return blake2b("".join(f"{name}\0{files[name]['blake2b']}\n" for name in sorted(files)).encode(),
                   digest_size=32).hexdigest()


def write_backup(home: Path, out: Path, now: float | None = None) -> BackupInfo:
    """Back up the node in `home` to the file `out` (refused if it exists), the node running or not."""
    config = load_config(home)
    Identity.load(config.key_path)  # refuses a key file others can read
    if out.exists():
        raise BackupError(f"{out}: exists; choose a new file (a backup is never overwritten)")
    if not (config.store_path / "data.mdb").exists():
        raise BackupError(f"{config.store_path}: no store to back up")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fedmisp-backup-", dir=out.parent) as tmp:
        work = Path(tmp)
        (work / STORE_DIR).mkdir()
        with Store(config.store_path, readonly=True) as store:
            head = store.copy_compacted(work / STORE_DIR)  # one read transaction
        members = {_STORE_FILE: work / _STORE_FILE, CONFIG_FILE: home / CONFIG_FILE, KEY_FILE: home / KEY_FILE}
        for key in sorted((home / RETIRED_DIR).glob("*.key")):
            members[f"{RETIRED_DIR}/{key.name}"] = key
        files = {name: {"bytes": path.stat().st_size, "blake2b": _digest(path)} for name, path in members.items()}
        created = time.time() if now is None else now
        manifest = {
            "format": BACKUP_FORMAT, "version": BACKUP_VERSION, "fedmisp": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
            "org_uuid": config.org_uuid, "org_name": config.org_name, "head_sequence": head,
            "files": files, "checksum": _overall(files),
        }
        partial = out.with_name(out.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)  # it holds the private key
        try:
            with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w") as tar:
                data = json.dumps(manifest, indent=2).encode()
                entry = tarfile.TarInfo(MANIFEST)
                entry.size, entry.mtime, entry.mode = len(data), int(created), 0o600
                tar.addfile(entry, io.BytesIO(data))
                for name, path in members.items():
                    tar.add(str(path), arcname=name, recursive=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return BackupInfo(out, manifest)


def node_running(home: Path) -> int | None:
    """The pid of the node serving `home`, if its pid file names a live process."""
    try:
        pid = int((home / PID_FILE).read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _store_holds_records(home: Path) -> bool:
    if not (home / _STORE_FILE).exists():
        return False
    with Store(home / STORE_DIR, readonly=True) as store:
        return store.head_sequence() > 0


def verify_backup(source: Path, into: Path) -> dict[str, Any]:
    """Unpack `source` into the empty folder `into` and check it whole; returns the manifest."""
    try:
        with tarfile.open(source, mode="r:") as tar:
            names = tar.getnames()
            if MANIFEST not in names:
                raise BackupError(f"{source}: not a fedmisp backup (no {MANIFEST})")
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise BackupError(f"{source}: not a readable backup: {e}") from None
    try:
        manifest = json.loads((into / MANIFEST).read_text("utf-8"))
    except ValueError as e:
        raise BackupError(f"{source}: {MANIFEST} is not valid JSON: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BACKUP_FORMAT:
        raise BackupError(f"{source}: {MANIFEST}: format is not {BACKUP_FORMAT!r}")
    if manifest.get("version") != BACKUP_VERSION:
        raise BackupError(f"{source}: backup version {manifest.get('version')!r}; this fedmisp reads {BACKUP_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not {_STORE_FILE, CONFIG_FILE, KEY_FILE} <= files.keys():
        raise BackupError(f"{source}: {MANIFEST}: files must list {_STORE_FILE}, {CONFIG_FILE} and {KEY_FILE}")
    if manifest.get("checksum") != _overall(files):
        raise BackupError(f"{source}: {MANIFEST}: checksum does not match its file list")
    present = {n for n in names if n != MANIFEST and (into / n).is_file()}
    if present != set(files):
        raise BackupError(f"{source}: holds {sorted(present ^ set(files))} that the manifest does not account for")
    for name, entry in files.items():
        if _digest(into / name) != entry.get("blake2b"):
            raise BackupError(f"{source}: {name}: checksum does not match the manifest (damaged backup)")
    if (into / RETIRED_DIR).is_dir():
        os.chmod(into / RETIRED_DIR, 0o700)  # as `fedmisp key rotate` makes it
    for name in files:
        if name == KEY_FILE or name.startswith(RETIRED_DIR + "/"):
            os.chmod(into / name, KEY_FILE_MODE)
            Identity.load(into / name)
    load_config(into)
    with Store(into / STORE_DIR, readonly=True) as store:
        problems = store.check_integrity()
        head = store.head_sequence()
    if problems:
        raise BackupError(f"{source}: the store fails its integrity check: {'; '.join(problems[:5])}")
    if head != manifest.get("head_sequence"):
        raise BackupError(f"{source}: the store's head sequence is {head}, the manifest says {manifest.get('head_sequence')}")
    return manifest


def restore_backup(source: Path, home: Path, force: bool = False) -> dict[str, Any]:
    """Replace the node in `home` by the backup `source`, verified first. Refused while a node runs
    there, and over a store that holds records unless `force`."""
    if not source.is_file():
        raise BackupError(f"{source}: no such backup file")
    pid = node_running(home)
    if pid is not None:
        raise BackupError(f"{home}: a node is running there (pid {pid}, {PID_FILE}); stop it first")
    if _store_holds_records(home) and not force:
        raise BackupError(f"{home}: its store holds records; restoring replaces them (add --force to do so)")
    home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fedmisp-restore-", dir=home) as tmp:
        work = Path(tmp)
        manifest = verify_backup(source, work)
        # everything verified: move each part into place, the store first (renames within one
        # file system); the replaced parts go to a folder that is removed at the end
        old = work / ".replaced"
        old.mkdir()
        for name in (STORE_DIR, RETIRED_DIR, KEY_FILE, CONFIG_FILE):
            if (home / name).exists():
                os.replace(home / name, old / name)
            if (work / name).exists():
                os.replace(work / name, home / name)
        shutil.rmtree(old)
    return manifest
