"""The installed pymisp version's source distribution, fetched from the package registry with pip
and its tests folder cached in tests/.cache (never committed). Shared by conftest.py (the MISP events
the round-trip tests use as ground truth) and tests/pymisp_live/ (PyMISP's own live test suite)."""
from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

CACHE = Path(__file__).parent / ".cache"


class SdistUnavailable(Exception):
    """pip could not download the sdist (offline, or the version is not on the registry)."""


def fetch_pymisp_tests(target: Path, keep: Callable[[tarfile.TarInfo], bool], prefix: str = "") -> Path:
    """Extract the sdist's tests/ members that `keep` accepts into `target` (a member
    `pymisp-X/tests/a/b.json` lands at `target/<prefix>a/b.json`), once: a `.complete` marker
    says it is done."""
    version = importlib.metadata.version("pymisp")
    if (target / ".complete").exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "--dest", tmp, f"pymisp=={version}"],
            capture_output=True, text=True, timeout=300,
        )
        archives = list(Path(tmp).glob("pymisp-*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise SdistUnavailable(f"pymisp {version} source distribution not downloadable (offline?): "
                                   f"{result.stderr.strip()[-200:]}")
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if len(parts) > 2 and parts[1] == "tests" and member.isfile() and keep(member):
                    member.name = prefix + str(Path(*parts[2:]))
                    tar.extract(member, target, filter="data")
        (target / ".complete").touch()
    return target
