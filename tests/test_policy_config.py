"""Peers and filters in fedmisp.toml: valid ones load; every mistake is named with its peer and field."""
from __future__ import annotations

from pathlib import Path

import pytest

from fedmisp.model.identity import Identity
from fedmisp.node.config import ConfigError, load_config
from fedmisp.policy.model import PeerMode, SyncFilter

ORG = "8f3a1c2e-5b6d-4e7f-9a0b-1c2d3e4f5a60"
BANK = "0c2d3e4f-5a60-4b7c-8d9e-0f1a2b3c4d5e"
KEY = Identity.generate().public_key_text

HEAD = f'''
[node]
org_name = "National CSIRT"
org_uuid = "{ORG}"
listen = "127.0.0.1:8480"
'''


def load(tmp_path: Path, text: str):
    (tmp_path / "fedmisp.toml").write_text(HEAD + text)
    return load_config(tmp_path)


def test_peers_with_filters_and_modes_load(tmp_path):
    config = load(tmp_path, f'''
[[peer]]
name = "bank-soc"
url = "http://127.0.0.1:8482"
key = "{KEY}"
org_uuid = "{BANK}"
mode = "full"
[peer.push]
tags_exclude = ["tlp:red", "internal:*"]
tlp_ceiling = "amber"
to_ids_only = true
[peer.pull]
types_exclude = ["email-src"]
max_distribution = 2

[[peer]]
name = "csirt-backup"
url = "https://10.0.0.2:8480"
key = "{KEY}"
org_uuid = "{ORG}"
mode = "internal"

[blocklist]
orgs = ["{BANK}"]
''')
    bank, backup = config.peers
    assert bank.name == "bank-soc" and bank.policy.mode is PeerMode.FULL
    assert bank.policy.push.tags_exclude == ("tlp:red", "internal:*")
    assert bank.policy.push.tlp_ceiling == "tlp:amber" and bank.policy.push.to_ids_only
    assert bank.policy.pull == SyncFilter(types_exclude=("email-src",), max_distribution=2)
    assert backup.policy.mode is PeerMode.INTERNAL
    assert backup.policy.push == SyncFilter.push_default()  # tlp:red stays unless allowed
    assert config.blocked_orgs == frozenset({BANK})


def test_every_mistake_is_reported_at_once_with_peer_and_field(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f'''
[[peer]]
name = "bank-soc"
url = "ftp://bank"
key = "not-a-key"
org_uuid = "{BANK}"
mode = "sometimes"
colour = "blue"
[peer.push]
tags_exclude = "tlp:red"
tlp_ceiling = "purple"
max_distribution = 9
sneaky = 1

[[peer]]
name = "bank-soc"
url = "http://127.0.0.1:1"
key = "{KEY}"
org_uuid = "{BANK}"
mode = "internal"

[blocklist]
events = ["nope"]
keys = ["short"]
''')
    text = str(info.value)
    expected = [
        "fedmisp.toml: peer 'bank-soc'.url: 'ftp://bank'; expected http://HOST:PORT",
        "peer 'bank-soc'.key: expected an Ed25519 public key",
        "peer 'bank-soc'.mode: 'sometimes' is not a peer mode; accepted: full, push-only, pull-only, correlation-only, internal",
        "peer 'bank-soc'.colour: unknown setting",
        "peer 'bank-soc'.push.tags_exclude: expected a list of non-empty strings",
        "peer 'bank-soc'.push.tlp_ceiling: 'purple' is not a level; accepted: tlp:clear",
        "peer 'bank-soc'.push.max_distribution: 9; expected 0, 1, 2, 3 or 4",
        "peer 'bank-soc'.push.sneaky: unknown filter setting",
        "peer 'bank-soc'.name: used by another peer",
        "peer 'bank-soc'.mode: internal is for this organisation's own other node",
        "blocklist.events[0]: 'nope' is not a UUID",
        "blocklist.keys[0]: 'short' is not a public key: expected an Ed25519 public key in url-safe base64",
    ]
    for line in expected:
        assert line in text, f"missing: {line}\n---\n{text}"
    assert len(info.value.problems) == len(expected)


def test_correlation_settings_load_and_bad_ones_are_named(tmp_path):
    config = load(tmp_path, '[correlation]\nssdeep_threshold = 60\nexclusions = ["%.example"]\n')
    assert config.correlation.ssdeep_threshold == 60 and config.correlation.exclusions == ("%.example",)
    with pytest.raises(ConfigError) as info:
        load(tmp_path, '[correlation]\nssdeep_threshold = 0\nmax_matches = "many"\ncolour = 1\n')
    text = str(info.value)
    assert "correlation.ssdeep_threshold: 0; expected 1 to 100" in text
    assert "correlation.max_matches: 'many'" in text and "correlation.colour: unknown setting" in text
