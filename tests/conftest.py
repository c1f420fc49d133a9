"""Shared fixtures: real nodes in temporary folders, and real MISP events from the pymisp sdist."""
from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.errors import HypothesisSideeffectWarning
from hypothesis.internal.charmap import charmap

from fedmisp.node.home import init_home
from fedmisp.store.store import Store
from pymisp_sdist import CACHE, SdistUnavailable, fetch_pymisp_tests


# No timing is an assertion here (docs/architecture.md, Benchmarks): Hypothesis's per-example
# deadline (200 ms) fails a test whose example merely waited for a core that five other processes
# share, so no test has one. Health checks stay on.
settings.register_profile("fedmisp", deadline=None)
settings.load_profile("fedmisp")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Hypothesis builds its table of Unicode categories on the first st.text() draw and caches it
    in .hypothesis/: on a fresh clone that first draw took 5 s under load, and the too_slow health
    check failed whichever test drew it (test_keys.py's read_org property, in a run of that file).
    Built here, before any test is timed; a cached table loads in milliseconds. (Hypothesis warns
    about storage read while plugins load: that read is the point here.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", HypothesisSideeffectWarning)
        charmap()


@pytest.fixture
def store(tmp_path: Path):
    """An empty store of its own (1 GiB map)."""
    s = Store(tmp_path / "store", map_size=1 << 30)
    yield s
    s.close()


@pytest.fixture
def node(tmp_path: Path):
    n, _key = init_home(tmp_path / "node", "Test CSIRT", "127.0.0.1:0")
    yield n
    n.close()


def _fetch_pymisp_tests() -> Path:
    """The tests folder of the installed pymisp version's source distribution (its JSON files),
    cached (tests/pymisp_sdist.py).

    These are MISP events written by the MISP project, not by us: the round-trip tests use them as
    ground truth. Fetched from the package registry once; skipped with a clear message offline.
    """
    target = CACHE / f"pymisp-{importlib.metadata.version('pymisp')}-tests"
    try:
        return fetch_pymisp_tests(target, keep=lambda member: member.name.endswith(".json"))
    except SdistUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def pymisp_tests() -> Path:
    return _fetch_pymisp_tests()


# The real-node API fixture (`server`: one `fedmisp run` process per test module that uses it),
# shared by the test_api*.py modules.
from test_api import server  # noqa: E402, F401


@pytest.fixture(scope="session")
def misp_kit():
    """Two real MISP 2.5 instances, A and B, for the whole test session (tests/misp_kit.py), stopped
    at its end; skipped with the reason when the kit cannot run here."""
    from misp_kit import kit_unavailable, start_kit
    reason = kit_unavailable()
    if reason:
        pytest.skip(reason)
    kit = start_kit(("A", "B"))
    try:
        yield kit
    finally:
        kit.stop()
