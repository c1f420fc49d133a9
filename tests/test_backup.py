"""Backup while the node writes, and restore: verified before it replaces anything."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from fedmisp.node.backup import BackupError, _digest, _overall, restore_backup, write_backup
from fedmisp.node.home import init_home
from fedmisp.store.store import Store
from nodes import configure, running, wait_for

TESTS = Path(__file__).resolve().parent

# Writes one event per transaction until the stop file appears; logs each uuid once committed.
WRITER = """
import sys
from pathlib import Path
from factories import event
from fedmisp.model.misp import parse_event
from fedmisp.model.revision import sign_event
from fedmisp.node.home import Node
home, log, stop = map(Path, sys.argv[1:4])
with Node.open(home) as node, open(log, "a") as out:
    i = 0
    while not stop.exists():
        raw = event(seed=10_000 + i, attributes=20, objects=1)["Event"]
        signed = sign_event(node.identity, parse_event(raw, node.import_defaults()))
        node.store.write_events([signed])
        out.write(signed.uuid + "\\n")
        out.flush()
        i += 1
"""


def _fedmisp(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "fedmisp", *args], capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"fedmisp {' '.join(args)}: {result.stderr}")
    return result


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _events(home: Path) -> set[str]:
    with Store(home / "store", readonly=True) as store:
        return set(store.event_uuids())


def test_a_backup_taken_while_events_are_written_restores_a_consistent_prefix(tmp_path: Path):
    node, _ = init_home(tmp_path / "live", "Police Cybercrime Unit", "127.0.0.1:0")
    home = node.config.home
    node.close()
    log, stop = tmp_path / "written.txt", tmp_path / "stop"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS)]))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(home), str(log), str(stop)], env=env)
    try:
        wait_for(lambda: len(_lines(log)) >= 10, what="the writer to get going")
        out = _fedmisp("backup", "--home", str(home), "--out", str(tmp_path / "during.fedmisp")).stdout
        assert "private key" in out
        at_backup = len(_lines(log))
        wait_for(lambda: len(_lines(log)) >= at_backup + 10, what="writes after the backup")
    finally:
        stop.touch()
        writer.wait(timeout=60)
    assert writer.returncode == 0
    written = _lines(log)
    backup = tmp_path / "during.fedmisp"
    assert os.stat(backup).st_mode & 0o777 == 0o600
    _fedmisp("restore", "--home", str(tmp_path / "restored"), "--from", str(backup))
    restored = tmp_path / "restored"
    with Store(restored / "store", readonly=True) as store:
        assert store.check_integrity() == []
        held = set(store.event_uuids())
        head = store.head_sequence()
    # one read transaction: exactly the first k events the writer committed, none after, none torn
    k = len(held)
    assert 0 < k < len(written) and held == set(written[:k])
    with tarfile.open(backup) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
    assert manifest["head_sequence"] == head and manifest["version"] == 1 and manifest["created"]
    assert os.stat(restored / "identity.key").st_mode & 0o777 == 0o600
    info = json.loads(_fedmisp("info", "--home", str(restored), "--json").stdout)
    assert info["org_name"] == "Police Cybercrime Unit"


@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[Path, Path]:
    """A node with the sample events and a rotated key, and a backup of it."""
    node, _ = init_home(tmp_path / "n", "Bank SOC", "127.0.0.1:0")
    home = node.config.home
    node.close()
    _fedmisp("import", "--home", str(home), str(TESTS.parent / "configs" / "samples"))
    _fedmisp("key", "rotate", "--home", str(home))
    return home, write_backup(home, tmp_path / "n.fedmisp").path


def test_restore_refuses_a_store_with_records_unless_forced(tmp_path: Path, backed_up):
    home, backup = backed_up
    other, _ = init_home(tmp_path / "other", "CSIRT", "127.0.0.1:0")
    other.close()
    refused = _fedmisp("restore", "--home", str(tmp_path / "other"), "--from", str(backup), check=False)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert _events(tmp_path / "other") == set()
    _fedmisp("restore", "--home", str(tmp_path / "other"), "--from", str(backup), "--force")
    assert _events(tmp_path / "other") == _events(home)
    restored = tmp_path / "other"
    assert (restored / "identity.key").read_bytes() == (home / "identity.key").read_bytes()
    assert os.stat(restored / "identity.key").st_mode & 0o777 == 0o600
    (kept,) = (restored / "retired-keys").iterdir()
    assert os.stat(kept).st_mode & 0o777 == 0o600 and os.stat(kept.parent).st_mode & 0o777 == 0o700
    assert kept.read_bytes() == (home / "retired-keys" / kept.name).read_bytes()
    assert not [p for p in (tmp_path / "other").iterdir() if p.name.startswith(".fedmisp-restore")]


def test_restore_refuses_the_home_of_a_running_node(tmp_path: Path, backed_up):
    _, backup = backed_up
    nodes = configure(tmp_path / "fed", ["a"], [])
    with running(nodes):
        wait_for(lambda: (nodes["a"].home / "fedmisp.pid").exists(), what="the pid file")
        with pytest.raises(BackupError, match="a node is running there"):
            restore_backup(backup, nodes["a"].home, force=True)
        # a backup while it runs is fine
        assert write_backup(nodes["a"].home, tmp_path / "a.fedmisp").manifest["head_sequence"] >= 1


def _rewrite(backup: Path, out: Path, change) -> None:
    """A copy of `backup` with `change(folder)` applied to its files and the manifest recomputed."""
    folder = out.with_suffix(".d")
    with tarfile.open(backup) as tar:
        tar.extractall(folder, filter="data")
    change(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in manifest["files"]:
        manifest["files"][name] = {"bytes": (folder / name).stat().st_size, "blake2b": _digest(folder / name)}
    manifest["checksum"] = _overall(manifest["files"])
    with tarfile.open(out, "w") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name in manifest["files"]:
            tar.add(folder / name, arcname=name)


def test_restore_verifies_checksums_and_integrity_before_touching_the_home(tmp_path: Path, backed_up):
    home, backup = backed_up
    target = tmp_path / "target"
    # a flipped byte in the store: the checksum catches it
    damaged = tmp_path / "damaged.fedmisp"
    raw = bytearray(backup.read_bytes())
    at = raw.index(b"data.mdb") + 4096 + 600  # inside the store file's content
    raw[at] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match="checksum does not match the manifest"):
        restore_backup(damaged, target)

    # an element body altered and the checksums made to match: the integrity check catches it
    def alter_a_body(folder: Path) -> None:
        with Store(folder / "store") as store:
            with store.database.env.begin(write=True) as txn:
                key, body = next(iter(txn.cursor(db=store.database.db["bodies"])))
                txn.put(key, bytes(body)[:-1] + b"\x00", db=store.database.db["bodies"])
            # a writable store maps its file at full size: keep a dense copy, as a backup holds
            (folder / "dense").mkdir()
            store.copy_compacted(folder / "dense")
        os.replace(folder / "dense" / "data.mdb", folder / "store" / "data.mdb")
    forged = tmp_path / "forged.fedmisp"
    _rewrite(backup, forged, alter_a_body)
    with pytest.raises(BackupError, match="integrity"):
        restore_backup(forged, target)
    assert not target.exists() or not (target / "store").exists()
    # the untouched backup restores
    restore_backup(backup, target)
    assert _events(target) == _events(home)


def test_a_backup_is_never_written_over_an_existing_file(tmp_path: Path, backed_up):
    home, backup = backed_up
    before = backup.read_bytes()
    refused = _fedmisp("backup", "--home", str(home), "--out", str(backup), check=False)
    assert refused.returncode == 2 and "exists" in refused.stderr and backup.read_bytes() == before
