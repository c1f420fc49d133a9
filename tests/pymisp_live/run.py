"""PyMISP's own live test suite (`tests/testlive_comprehensive.py` of the installed pymisp version's
sdist, 86 tests) against fresh fedmisp nodes: `make pymisp-live`.

The upstream module is run unmodified: it is fetched from the package registry into tests/.cache
(tests/pymisp_sdist.py; never committed) and imported as it is. Only its setup is adapted, in
`OnAFreshNode` below, each adaptation commented: upstream's setUpClass provisions a MISP instance
with its site-admin key (server settings, an update from GitHub, organisations and users); a node
has no MISP users, it has API keys with roles (docs/api.md), and serves one organisation.

Each test runs on a fresh node (its own home in a temporary folder, its own `fedmisp run` process on
127.0.0.1, stopped by pid after the test), as issue 17 counts: a test sees nothing another test left.
Prints one line per test and the passed/failed/errored/skipped counts, and writes the table with
each failure's traceback to bench/pymisp-live/<date>.txt (or --out).

    python tests/pymisp_live/run.py [-k substring ...] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import types
import unittest
import uuid
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from pymisp import MISPOrganisation, MISPUser, PyMISP  # noqa: E402

from fedmisp.model.identity import Identity, encode_key  # noqa: E402
from fedmisp.node.home import ROLES, init_home  # noqa: E402
from pymisp_sdist import CACHE, fetch_pymisp_tests  # noqa: E402

VERSION = importlib.metadata.version("pymisp")
SDIST = CACHE / f"pymisp-{VERSION}-sdist"  # holds tests/ as in the sdist: upstream opens 'tests/...' paths
VIPER = "https://github.com/viper-framework/viper-test-files.git"
TEST_TIMEOUT = 300  # seconds; a hung test is reported as an error, not left to hang the run
REQUEST_TIMEOUT = 60  # seconds, for the connectors the harness makes (upstream's have none)


# The node's refusals during the current test (method, path, status, the message), for the table:
# they say which endpoint or parameter a failure comes from. Recorded by wrapping requests'
# Session.send, which every PyMISP request goes through; what the test receives is unchanged.
REFUSALS: list[str] = []
_send = requests.Session.send


def _recording_send(self: requests.Session, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
    response = _send(self, request, **kwargs)
    if response.status_code >= 400:
        try:
            body = response.json()
            message = body.get("message") or body.get("name") if isinstance(body, dict) else str(body)
        except ValueError:
            message = response.text
        path = re.sub(r"^https?://[^/]+", "", request.url or "")
        REFUSALS.append(f"{request.method} {path} -> {response.status_code} {str(message)[:300]}")
    return response


requests.Session.send = _recording_send  # type: ignore[method-assign]


def prepare() -> Path:
    """The sdist's whole tests folder in tests/.cache, and the viper test files upstream needs."""
    fetch_pymisp_tests(SDIST, keep=lambda member: True, prefix="tests/")
    viper = SDIST / "tests" / "viper-test-files"
    if not viper.exists():
        # Upstream clones these sample binaries at import time, into its working directory, when
        # they are missing; done here instead, once, into the cache, so that a failed clone
        # (offline) is said once and upstream does not retry it. Tests that read the files then
        # error with FileNotFoundError; put a checkout at this path to run them.
        done = subprocess.run(["git", "clone", "--quiet", "--depth", "1", VIPER, str(viper)],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            print(f"note: {VIPER} not cloned ({done.stderr.strip()[-120:]}); the tests that read "
                  f"its sample binaries will error", file=sys.stderr)
            viper.mkdir()
    return SDIST


def load_upstream(root: Path) -> types.ModuleType:
    # Upstream reads the MISP URL and site-admin key from a `keys` module of its own (`from keys
    # import url, key`); this one holds placeholders, and each test's setUp below sets the module's
    # `url` and `key` globals to its fresh node's URL and admin key.
    sys.modules["keys"] = types.SimpleNamespace(url="http://127.0.0.1:1", key="unset")  # type: ignore[assignment]
    os.chdir(root)  # upstream opens its data files by paths relative to the sdist root
    spec = importlib.util.spec_from_file_location("testlive_comprehensive", root / "tests" / "testlive_comprehensive.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FreshNode:
    """A node of its own: home in a temporary folder, one API key per role, `fedmisp run` on
    127.0.0.1 (port 0: the kernel picks), stopped by its pid. As tests/test_api.py's `server`."""

    def __init__(self, org_name: str) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="pymisp-live-")
        home = Path(self.tmp.name) / "node"
        node, admin = init_home(home, org_name, "127.0.0.1:0")
        self.keys = {role: node.create_api_key(role, f"pymisp-live {role}") for role in ROLES if role != "admin"}
        self.keys["admin"] = admin
        node.close()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        self.stderr = open(Path(self.tmp.name) / "stderr.log", "w+")
        self.process = subprocess.Popen([sys.executable, "-m", "fedmisp", "run", "--home", str(home)],
                                        stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"fedmisp run did not start: {line!r}")
        self.url = match.group(0)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.stderr.close()
        self.tmp.cleanup()


class NoUserOfAnotherOrganisation:
    """Upstream's delegate_user_misp_connector: a user of a second organisation on the same MISP.
    A node serves one organisation, so no API key of another organisation exists; a test that uses
    this connector errors here, saying so (out of scope: delegation between organisations of one
    instance)."""

    def __getattr__(self, name: str):
        raise RuntimeError("harness: a node serves one organisation, so there is no user of a second "
                           f"organisation (upstream's delegate_user_misp_connector.{name})")


def adapted(upstream: types.ModuleType) -> type[unittest.TestCase]:
    base = upstream.TestComprehensive

    class OnAFreshNode(base):  # type: ignore[misc, valid-type]
        @classmethod
        def setUpClass(cls) -> None:
            # Replaces upstream's setUpClass, which (with the site-admin key) sets MISP server
            # settings (self-registration, debug), updates MISP from GitHub, adds the 'Test Org' and
            # 'Test Org - delegate' organisations and three users, and updates object templates,
            # galaxies, noticelists, warninglists, taxonomies and default feeds from GitHub. A node
            # has no server settings, no update, no users (API keys with roles instead) and ships
            # the MISP data from the pymisp, pymispwarninglists and pytaxonomies packages. The setup
            # is done per test in setUp, on a fresh node.
            cls.maxDiff = None

        @classmethod
        def tearDownClass(cls) -> None:
            # Replaces upstream's tearDownClass (deletes its users and organisations): each test's
            # node is stopped, and its folder removed, in tearDown.
            pass

        def setUp(self) -> None:
            # The node's own organisation is the test organisation: named as upstream names it.
            REFUSALS.clear()
            self.node = FreshNode("Test Org")
            # The upstream module's globals `url` and `key` (the MISP URL and site-admin key, read
            # by tests that make connectors of their own, e.g. test_roles_expanded, test_servers,
            # test_registrations) point at this test's node and its admin key.
            upstream.url, upstream.key = self.node.url, self.node.keys["admin"]
            connect = lambda role, **kw: PyMISP(self.node.url, self.node.keys[role], False,  # noqa: E731
                                                timeout=REQUEST_TIMEOUT, **kw)
            # MISP role -> node API key role: site admin -> admin; Publisher (role 4, upstream's
            # testpub) -> publisher; User (role 3, testusr) -> user. The upstream connectors are
            # made as upstream makes them (debug flags, the user's global pythonify), plus a
            # request timeout.
            self.admin_misp_connector = connect("admin", debug=False)
            self.user_misp_connector = connect("user", debug=True)
            self.user_misp_connector.toggle_global_pythonify()
            self.pub_misp_connector = connect("publisher")
            # The read-only role has no upstream connector of its own (test_roles_expanded makes
            # a user and sets role 6 itself); it is made here for completeness only.
            self.read_only_misp_connector = connect("read-only")
            # Upstream's test_usr / test_pub are the MISPUser records admin/users/add returned; here
            # each is what users/view/me answers to that role's key (its id, org_id, email, role).
            self.test_usr = self._me(self.node.keys["user"])
            self.test_pub = self._me(self.node.keys["publisher"])
            # Upstream's test_org is the organisation admin/organisations/add returned: here the
            # node's own organisation, as organisations/view answers it.
            self.test_org = self.admin_misp_connector.get_organisation(self.test_usr.org_id, pythonify=True)
            # Upstream adds 'Test Org - delegate' and an Org Admin user in it (the delegation
            # recipient). The organisation is added with the same call upstream makes; its user
            # cannot exist on a node (one organisation per node), see NoUserOfAnotherOrganisation.
            delegate = MISPOrganisation()
            delegate.name = "Test Org - delegate"
            # A node records another organisation by the uuid it has everywhere and the signing key
            # of its node, so it refuses an organisation without them (400 naming `uuid`, then
            # `public_key`), where MISP makes a uuid up: both given here (a key of no node).
            delegate.uuid = str(uuid.uuid4())
            delegate.public_key = encode_key(Identity.generate().public_key)
            self.test_org_delegate = self.admin_misp_connector.add_organisation(delegate, pythonify=True)
            self.test_usr_delegate = None
            self.delegate_user_misp_connector = NoUserOfAnotherOrganisation()
            # A watchdog, not an adaptation of upstream: a test still running after TEST_TIMEOUT
            # seconds is interrupted and counted as an error.
            signal.signal(signal.SIGALRM, self._timed_out)
            signal.alarm(TEST_TIMEOUT)

        def _me(self, key: str) -> MISPUser:
            me = PyMISP(self.node.url, key, False, timeout=REQUEST_TIMEOUT).get_user(pythonify=True)
            assert isinstance(me, MISPUser), me
            return me

        @staticmethod
        def _timed_out(signum: int, frame: object) -> None:
            raise TimeoutError(f"harness: test still running after {TEST_TIMEOUT} s")

        def tearDown(self) -> None:
            signal.alarm(0)
            self.node.stop()

    OnAFreshNode.__name__ = OnAFreshNode.__qualname__ = "TestComprehensive"
    return OnAFreshNode


class Recorder(unittest.TextTestResult):
    """Keeps each test's outcome and time, for the table."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows: list[tuple[str, str, float, str, list[str]]] = []
        self._started = 0.0

    def startTest(self, test: unittest.TestCase) -> None:
        self._started = time.monotonic()
        super().startTest(test)

    def _row(self, test: unittest.TestCase, outcome: str, detail: str = "") -> None:
        refused = list(REFUSALS) if outcome in ("failed", "errored") else []
        self.rows.append((test.id().rsplit(".", 1)[-1], outcome, time.monotonic() - self._started, detail, refused))

    def addSuccess(self, test):  # noqa: N802
        super().addSuccess(test)
        self._row(test, "passed")

    def addFailure(self, test, err):  # noqa: N802
        super().addFailure(test, err)
        self._row(test, "failed", self._exc_info_to_string(err, test))

    def addError(self, test, err):  # noqa: N802
        super().addError(test, err)
        self._row(test, "errored", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):  # noqa: N802
        super().addSkip(test, reason)
        self._row(test, "skipped", reason)


def summary_line(detail: str) -> str:
    """The exception line of a traceback, shortened, for the table."""
    lines = [line for line in detail.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]+(Error|Exception|Timeout|Expired)\b|^AssertionError|^[a-z_.]*\.[A-Z]\w+:", line):
            return line.strip()[:160]
    return lines[-1].strip()[:160] if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", action="append", default=[], help="run only tests whose name contains this (repeatable)")
    parser.add_argument("--out", type=Path, help="result file (default bench/pymisp-live/<date>.txt)")
    args = parser.parse_args()
    out = args.out or REPO / "bench" / "pymisp-live" / f"{datetime.date.today().isoformat()}.txt"
    out = out.resolve()
    root = prepare()
    upstream = load_upstream(root)
    cls = adapted(upstream)
    names = [n for n in unittest.TestLoader().getTestCaseNames(cls) if not args.k or any(k in n for k in args.k)]
    suite = unittest.TestSuite(cls(n) for n in names)
    stream = io.StringIO()
    started = time.monotonic()
    result = unittest.TextTestRunner(stream=stream, verbosity=0, resultclass=Recorder).run(suite)
    elapsed = time.monotonic() - started
    assert isinstance(result, Recorder)
    counts = {k: sum(1 for r in result.rows if r[1] == k) for k in ("passed", "failed", "errored", "skipped")}
    head = (f"PyMISP {VERSION} tests/testlive_comprehensive.py against fresh fedmisp nodes (one per test), "
            f"{datetime.datetime.now().isoformat(timespec='seconds')}, {elapsed:.0f} s\n"
            f"{len(result.rows)} tests: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    table = "\n".join(f"{name:<54} {outcome:<8} {secs:6.1f}s  {summary_line(detail) if outcome != 'passed' else ''}".rstrip()
                      for name, outcome, secs, detail, _r in result.rows)
    details = "\n\n".join(
        f"=== {name}: {outcome}\n{detail.strip()}" + "".join(f"\n  refused: {r}" for r in refused)
        for name, outcome, _s, detail, refused in result.rows if outcome in ("failed", "errored"))
    print(table)
    print(head)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{head}\n\n{table}\n\n{details}\n")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
