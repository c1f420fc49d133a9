"""Proposals, their decisions and anonymised sightings between real nodes (in one process)."""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest

from fedmisp.gossip.driver import InMemory, pull
from fedmisp.gossip.replica import Replica
from fedmisp.model.misp import parse_proposal
from fedmisp.model.records import KIND_PROPOSAL, KIND_PROPOSAL_DECISION, KIND_SIGHTINGS, seal
from fedmisp.node.config import ConfigError, load_config
from fedmisp.node.importer import import_paths
from fedmisp.store.proposals import DISCARDED, decision_body, find_proposal, open_proposals, proposal_id

from factories import event
from federation import make_federation, settle


def _shared_event(tmp_path: Path, seed: int) -> tuple[Path, dict]:
    raw = copy.deepcopy(event(seed=seed, attributes=3, objects=0))
    raw["Event"]["distribution"] = "3"
    for a in raw["Event"]["Attribute"]:
        a["distribution"] = "5"
    path = tmp_path / f"ev{seed}.json"
    path.write_text(json.dumps(raw))
    return path, raw["Event"]


def _propose(node, event_uuid: str, value: str):
    org = {"name": node.config.org_name, "uuid": node.config.org_uuid}
    proposal = parse_proposal({"type": "ip-dst", "value": value}, event_uuid, int(time.time()), None, org)
    record = seal(node.identity, KIND_PROPOSAL, {"event_uuid": event_uuid, "proposal": proposal})
    node.store.write_records([record])
    return record


def _open(node, event_uuid: str) -> set[bytes]:
    return {p.record.id for p in open_proposals(node.store, event_uuid)}


def _line_with_a_proposal_from_c(tmp_path: Path, seed: int):
    """a - b - c; a creates a shared event, c proposes an attribute; everything settled."""
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")])
    path, raw = _shared_event(tmp_path, seed)
    import_paths(nodes["a"], [path])
    settle(nodes)
    proposal = _propose(nodes["c"], raw["uuid"], f"192.0.2.{seed % 250}")
    settle(nodes)
    return nodes, raw, proposal


def test_a_proposal_reaches_the_creator_and_its_discard_comes_back_along_the_line(tmp_path):
    nodes, raw, proposal = _line_with_a_proposal_from_c(tmp_path, 200)
    assert all(_open(nodes[n], raw["uuid"]) == {proposal.id} for n in "abc")
    held = find_proposal(nodes["a"].store, proposal_id(proposal.id))
    assert held is not None and held.body["value"] == "192.0.2.200"
    decision = seal(nodes["a"].identity, KIND_PROPOSAL_DECISION, decision_body(raw["uuid"], proposal, DISCARDED))
    nodes["a"].store.write_records([decision])
    settle(nodes)
    for n in "abc":
        assert _open(nodes[n], raw["uuid"]) == set(), n
        assert not nodes[n].store.export_event(raw["uuid"])["Event"].get("ShadowAttribute")
        assert find_proposal(nodes[n].store, proposal_id(proposal.id)) is None
    for node in nodes.values():
        node.close()


def test_a_decision_not_signed_by_the_events_creator_is_refused(tmp_path):
    nodes, raw, proposal = _line_with_a_proposal_from_c(tmp_path, 201)
    forged = seal(nodes["b"].identity, KIND_PROPOSAL_DECISION, decision_body(raw["uuid"], proposal, DISCARDED))
    nodes["b"].store.write_records([forged])
    replicas = {n: Replica(node) for n, node in nodes.items()}
    for receiver in ("a", "c"):
        peer = next(p for p in nodes[receiver].config.peers if p.name == "b")
        report = pull(replicas[receiver], peer, InMemory(replicas["b"], receiver))
        assert report.refused.get("decision-not-creator") == 1, report
        assert _open(nodes[receiver], raw["uuid"]) == {proposal.id}
    for node in nodes.values():
        node.close()


def test_proposals_and_decisions_with_a_bad_body_are_refused_as_malformed(tmp_path):
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    path, raw = _shared_event(tmp_path, 202)
    import_paths(nodes["a"], [path])
    settle(nodes)
    bad = [seal(nodes["b"].identity, KIND_PROPOSAL, {"event_uuid": raw["uuid"], "proposal": {"type": 1}}),
           seal(nodes["a"].identity, KIND_PROPOSAL_DECISION,
                {"event_uuid": raw["uuid"], "proposal": b"short", "decision": "accepted"}),
           seal(nodes["a"].identity, KIND_PROPOSAL_DECISION,
                {"event_uuid": raw["uuid"], "proposal": b"x" * 32, "decision": "maybe"})]
    nodes["b"].store.write_records(bad[:1])
    nodes["a"].store.write_records(bad[1:])
    replicas = {n: Replica(node) for n, node in nodes.items()}
    for receiver, sender in (("a", "b"), ("b", "a")):
        peer = next(p for p in nodes[receiver].config.peers if p.name == sender)
        report = pull(replicas[receiver], peer, InMemory(replicas[sender], receiver))
        assert report.refused.get("malformed") == (1 if receiver == "a" else 2), report
    assert nodes["a"].store.export_event(raw["uuid"]) is not None
    for node in nodes.values():
        node.close()


def _sight(node, event_uuid: str, attribute_uuid: str, n: int):
    sighting = {"Organisation": {"name": node.config.org_name, "uuid": node.config.org_uuid},
                "attribute_uuid": attribute_uuid, "date_sighting": 1_800_000_000 + n, "source": "ids",
                "type": 0, "uuid": f"a5a5a5a5-0000-4000-8000-{n:012d}"}
    node.store.write_records([seal(node.identity, KIND_SIGHTINGS, {"event_uuid": event_uuid, "sightings": [sighting]})])
    return sighting


def _sightings(node, event_uuid: str) -> dict[str, dict]:
    exported = node.store.export_event(event_uuid)["Event"]
    return {s["uuid"]: s for a in exported["Attribute"] for s in a.get("Sighting", [])}


def test_a_peer_configured_to_strip_sighting_orgs_gets_sightings_without_the_reporter(tmp_path):
    """c - b - a in a line; b strips the reporting org from sightings it sends to a, not to c."""
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c")],
                            {("b", "a"): {"strip_sighting_org": True}})
    path, raw = _shared_event(tmp_path, 203)
    import_paths(nodes["a"], [path])
    settle(nodes)
    attribute = raw["Attribute"][0]["uuid"]
    from_c = _sight(nodes["c"], raw["uuid"], attribute, 1)
    from_b = _sight(nodes["b"], raw["uuid"], attribute, 2)
    from_a = _sight(nodes["a"], raw["uuid"], attribute, 3)
    settle(nodes)
    at_a = _sightings(nodes["a"], raw["uuid"])
    assert "Organisation" not in at_a[from_c["uuid"]] and "Organisation" not in at_a[from_b["uuid"]]
    assert at_a[from_c["uuid"]]["source"] == "ids" and at_a[from_c["uuid"]]["date_sighting"] == "1800000001"
    assert at_a[from_a["uuid"]]["Organisation"]["uuid"] == nodes["a"].config.org_uuid  # its own
    # the sighting records a holds from b are signed by b, not by the reporting orgs
    keys = {r.author for r in nodes["a"].store.event_records(raw["uuid"]) if r.kind == KIND_SIGHTINGS}
    assert nodes["c"].identity.public_key not in keys and nodes["b"].identity.public_key in keys
    # c, whose link does not strip, sees who reported
    at_c = _sightings(nodes["c"], raw["uuid"])
    assert at_c[from_b["uuid"]]["Organisation"]["name"] == "Org b"
    assert at_c[from_a["uuid"]]["Organisation"]["name"] == "Org a"
    before = nodes["a"].store.stats()
    settle(nodes)  # the anonymised copies are the same records when offered again
    assert nodes["a"].store.stats() == before
    for node in nodes.values():
        node.close()


def _config_with(tmp_path: Path, extra: str) -> Path:
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    home = nodes["a"].config.home
    for node in nodes.values():
        node.close()
    text = (home / "fedmisp.toml").read_text()
    (home / "fedmisp.toml").write_text(extra + "\n" + text)
    return home


def test_strip_sighting_org_in_gossip_is_the_default_for_every_peer(tmp_path):
    home = _config_with(tmp_path, "[gossip]\nstrip_sighting_org = true\n")
    assert [p.strip_sighting_org for p in load_config(home).peers] == [True]
    text = (home / "fedmisp.toml").read_text()
    (home / "fedmisp.toml").write_text(text.replace('mode = "full"', 'mode = "full"\nstrip_sighting_org = false'))
    assert [p.strip_sighting_org for p in load_config(home).peers] == [False]


def test_strip_sighting_org_must_be_true_or_false(tmp_path):
    home = _config_with(tmp_path, "[gossip]\nstrip_sighting_org = \"yes\"\n")
    with pytest.raises(ConfigError, match=r"gossip.strip_sighting_org: 'yes'; expected true or false"):
        load_config(home)


def test_a_decision_made_while_the_event_is_unpublished_travels_once_it_is_published(tmp_path):
    """Accepting unpublishes the event (MISP); its decision is held back with it and offered when
    the creator publishes, although the peers' checkpoints moved past it meanwhile."""
    from fedmisp.store.mutations import revise
    nodes, raw, proposal = _line_with_a_proposal_from_c(tmp_path, 204)
    a = nodes["a"]

    def republish(published: bool, extra=()):
        signed = revise(a.store, a.identity, a.import_defaults(), raw["uuid"], {},
                        set_header={"published": published}, extra_records=tuple(extra))
        a.store.write_events([signed])
    decision = seal(a.identity, KIND_PROPOSAL_DECISION, decision_body(raw["uuid"], proposal, DISCARDED))
    republish(False, [decision])
    settle(nodes)
    assert _open(nodes["c"], raw["uuid"]) == {proposal.id} and _open(a, raw["uuid"]) == set()
    republish(True)
    settle(nodes)
    assert _open(nodes["b"], raw["uuid"]) == set() and _open(nodes["c"], raw["uuid"]) == set()
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()
