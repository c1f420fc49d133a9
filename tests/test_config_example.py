"""configs/single-node.toml: a commented example that passes `fedmisp config check` and names every
setting fedmisp reads (so a new setting without an example fails here)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from fedmisp.node.config import _PEER_FIELDS
from fedmisp.node.feed_config import _FEED_FIELDS, _SERVED_FIELDS, FEED_FILTER_FIELDS
from fedmisp.node.home import init_home
from fedmisp.node.misp_config import MISP_FIELDS
from fedmisp.policy.config import FILTER_FIELDS

EXAMPLE = Path(__file__).resolve().parent.parent / "configs" / "single-node.toml"
SETTINGS = {
    "node": {"org_name", "org_uuid", "listen"},
    "sharing": {"default_distribution"},
    "limits": {"max_import_file_bytes", "max_request_bytes", "header_timeout_seconds", "body_timeout_seconds",
               "max_connections"},
    "gossip": {"anti_entropy_seconds", "strip_sighting_org", "pull_deadline_seconds"},
    "log": {"format", "level", "file", "max_bytes", "backups"},
    "audit": {"enabled", "file", "max_bytes", "backups"},
    "metrics": {"require_api_key"},
    "correlation": {"ssdeep_threshold", "max_matches", "exclusions"},
    "blocklist": {"events", "orgs", "keys"},
}


def with_example(text: str, name: str) -> str:
    """The example with one of its commented blocks (peer, feed) switched on."""
    start, end = text.index(f"# --- {name} example ---"), text.index(f"# --- end of {name} example ---")
    block = "\n".join(re.sub(r"^# ?", "", line) for line in text[start:end].splitlines()[1:])
    return text[:start] + block + "\n" + text[end:]


def with_peer_example(text: str) -> str:
    return with_example(text, "peer")


def check(home: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedmisp", "config", "check", "--home", str(home)],
                          capture_output=True, text=True, timeout=60)


def test_the_single_node_example_passes_config_check_as_shipped_and_with_its_peer(tmp_path: Path):
    node, _ = init_home(tmp_path / "n", "Example CSIRT", "127.0.0.1:0")
    node.close()
    config = tmp_path / "n" / "fedmisp.toml"
    shutil.copy(EXAMPLE, config)
    shipped = check(tmp_path / "n")
    assert shipped.returncode == 0 and "ok (0 peer(s))" in shipped.stdout, shipped.stderr
    config.write_text(with_peer_example(EXAMPLE.read_text()))
    peered = check(tmp_path / "n")
    assert peered.returncode == 0 and "ok (1 peer(s))" in peered.stdout, peered.stderr
    # the feed example, switched on as it is
    config.write_text(with_example(EXAMPLE.read_text(), "feed"))
    fed = check(tmp_path / "n")
    assert fed.returncode == 0, fed.stderr
    # and a broken value in it is reported with its field
    config.write_text(EXAMPLE.read_text().replace("max_request_bytes = 33554432", "max_request_bytes = 12"))
    broken = check(tmp_path / "n")
    assert broken.returncode == 1 and "limits.max_request_bytes: 12" in broken.stderr


def test_the_single_node_example_names_every_setting():
    document = tomllib.loads(with_peer_example(EXAMPLE.read_text()))
    for section, names in SETTINGS.items():
        assert set(document[section]) == names, section
    (peer,) = document["peer"]
    assert set(peer) == set(_PEER_FIELDS)
    (misp,) = tomllib.loads(with_example(EXAMPLE.read_text(), "misp peer"))["peer"]
    assert set(misp) == set(MISP_FIELDS)
    assert set(peer["push"]) == set(FILTER_FIELDS) and set(peer["pull"]) == set(FILTER_FIELDS)
    assert set(document) == set(SETTINGS) | {"peer"}
    feeds = tomllib.loads(with_example(EXAMPLE.read_text(), "feed"))
    (served,), (fetched,) = feeds["served_feed"], feeds["feed"]
    assert set(served) == set(_SERVED_FIELDS)
    assert set(fetched) == set(_FEED_FIELDS) and set(fetched["filter"]) == set(FEED_FILTER_FIELDS)
