"""The README's first command: the demo federation holds and refuses exactly what DESIGN says."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from fedmisp.node.demo import run_demo

ROOT = Path(__file__).resolve().parent.parent
PHISHING = "5f1d0c9a-7b2e-4c3d-8e4f-0a1b2c3d4e01"  # CSIRT, level 3, tlp:green
RANSOMWARE = "5f1d0c9a-7b2e-4c3d-8e4f-0a1b2c3d4e02"  # CSIRT, level 1, one attribute at level 0
TROJAN = "5f1d0c9a-7b2e-4c3d-8e4f-0a1b2c3d4e03"  # police, level 2, tlp:red
GROUP_EVENT = "5f1d0c9a-7b2e-4c3d-8e4f-0a1b2c3d4e04"  # police, sharing group LE-CSIRT (police, CSIRT)


@pytest.mark.slow
def test_the_demo_federation_follows_the_design(tmp_path):
    out = io.StringIO()
    result = run_demo(ROOT / "configs" / "demo" / "federation.toml", tmp_path / "demo", once=True,
                      console=Console(file=out, width=200))
    held = {node: set(events) for node, events in result["held"].items()}
    assert held["police"] == {PHISHING, RANSOMWARE, TROJAN, GROUP_EVENT}
    assert held["csirt"] == {PHISHING, RANSOMWARE, TROJAN, GROUP_EVENT}
    assert held["bank"] == {PHISHING, RANSOMWARE}  # no tlp:red, no sharing-group data
    # levels: 3 stays 3; 1 arrives as 0; 2 arrives as 1; the group's data stays 4
    assert result["held"]["bank"][PHISHING] == 3 and result["held"]["bank"][RANSOMWARE] == 0
    assert result["held"]["csirt"][TROJAN] == 1 and result["held"]["csirt"][GROUP_EVENT] == 4
    refused = {(pair, event): reason for pair, items in result["refused"].items() for event, reason in items}
    assert refused[(("csirt", "bank"), GROUP_EVENT)] == "sg-not-member"
    assert refused[(("csirt", "bank"), TROJAN)] == "push-filter-tlp"
    assert refused[(("csirt", "bank"), RANSOMWARE)].startswith("hop-budget")  # its level-0 attribute
    # the police unit's seized server is the CSIRT's ransomware C2: found across organisations
    assert any(value.startswith("203.0.113.77") for _node, value, _event, _kind in result["correlations"])
    text = out.getvalue()
    assert "What each node holds" in text and "not sent, and why" in text and "Correlations across" in text


def test_free_port_never_hands_out_one_port_twice_in_a_process():
    # nothing holds a port between free_port's check and a node's bind: the nodes of one test
    # federation must still get distinct ports (a liveness test failed on "address already in use")
    from fedmisp.node.demo import free_port
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
