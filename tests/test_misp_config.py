"""MISP instances as peers in fedmisp.toml ([[peer]] kind = "misp", node/misp_config.py)."""
from __future__ import annotations

import pytest

from fedmisp.node.config import ConfigError, load_config
from fedmisp.policy.model import PeerMode

ORG_A = "3c21e55a-edac-4321-960b-cda533f50a78"
KEY = "Y2xCeyOaFtxfhmbwDVtsb654bfxTeMum7SR9lQ4f"


def _with(node, text: str):
    path = node.config.home / "fedmisp.toml"
    path.write_text(path.read_text() + "\n" + text)
    return load_config(node.config.home)


def test_a_misp_peer_is_read_beside_the_fedmisp_peers_with_its_key_out_of_its_repr(node):
    config = _with(node, f'''
[[peer]]
name = "community-a"
kind = "misp"
url = "http://127.0.0.1:8190/"
org_uuid = "{ORG_A}"
misp_key = "{KEY}"
mode = "pull-only"
interval_seconds = 60
[peer.push]
tags_exclude = ["tlp:amber"]
''')
    assert config.peers == ()
    (peer,) = config.misp_peers
    assert (peer.name, peer.url, peer.org_uuid, peer.mode, peer.interval_seconds) == \
        ("community-a", "http://127.0.0.1:8190", ORG_A, PeerMode.PULL_ONLY, 60.0)
    assert peer.may_call and peer.policy.org_uuid == ORG_A and "tlp:amber" in peer.push.tags_exclude
    assert KEY not in repr(peer) and KEY not in repr(config)


def test_every_problem_of_a_misp_peer_is_named_at_once(node):
    with pytest.raises(ConfigError) as e:
        _with(node, '''
[[peer]]
name = "community-a"
kind = "misp"
url = "ftp://x"
key = "abc"
misp_key = "short"
mode = "internal"
interval_seconds = 1
tls_verify = "yes"

[[peer]]
name = "community-a"
kind = "mist"
url = "http://x"
''')
    text = str(e.value)
    for expected in ("peer 'community-a'.url: 'ftp://x'", "peer 'community-a'.key: not a setting of a MISP peer",
                     "misp_key: not a MISP auth key", "mode: 'internal' is not for a MISP peer",
                     "interval_seconds: 1; expected a number from 10 to 86400", "tls_verify: 'yes'",
                     "org_uuid: missing", "name: used by another peer", "kind: 'mist'; accepted: fedmisp, misp"):
        assert expected in text, expected


def test_a_misp_peer_with_a_key_may_leave_out_its_org_and_a_fedmisp_peer_refuses_misp_settings(node):
    with pytest.raises(ConfigError) as e:
        _with(node, f'''
[[peer]]
name = "community-a"
kind = "misp"
url = "https://misp.example.org"
misp_key = "{KEY}"

[[peer]]
name = "csirt"
url = "http://127.0.0.1:9000"
key = "XWJ24lALu15EWGPt1uGgslWVqeZCRlzdJ10GmOLnW40"
misp_key = "{KEY}"
''')
    assert str(e.value).count("\n") == 0 and "peer 'csirt'.misp_key: not a setting of a fedmisp peer" in str(e.value)
