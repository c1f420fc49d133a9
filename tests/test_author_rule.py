"""Only an event's author revises it (DESIGN; decision 0017): a newer revision signed by any other
key is refused by the store, whichever way it arrives, and the held event stays as it was."""
from __future__ import annotations

import copy
import json

from fedmisp.gossip.driver import InMemory, pull
from fedmisp.gossip.replica import Replica
from fedmisp.model.identity import Identity
from fedmisp.model.misp import ImportDefaults, parse_event
from fedmisp.model.org import introduction, rotation
from fedmisp.model.revision import sign_event
from fedmisp.node.importer import import_paths
from fedmisp.policy.reasons import Reason
from fedmisp.store.events import WriteOutcome
from fedmisp.store.rows import event_write
from fedmisp.store.store import Store

from factories import ORG, event
from federation import make_federation


def _published(seed: int, attributes: int = 3) -> dict:
    raw = copy.deepcopy(event(seed=seed, attributes=attributes, objects=0))
    raw["Event"].update(distribution="3", published=True)
    for a in raw["Event"]["Attribute"]:
        a["distribution"] = "5"
    return raw


def _revised(raw: dict, seconds: int, info: str) -> dict:
    out = copy.deepcopy(raw)
    out["Event"]["timestamp"] = str(int(raw["Event"]["timestamp"]) + seconds)
    out["Event"]["info"] = info
    return out


def _signed(identity: Identity, raw: dict):
    return sign_event(identity, parse_event(raw["Event"], ImportDefaults(org_uuid=ORG["uuid"], org_name=ORG["name"])))


def test_the_store_takes_a_newer_revision_only_from_the_author_or_its_rotated_key(tmp_path):
    author, other, rotated = Identity.generate(), Identity.generate(), Identity.generate()
    raw = _published(31)
    store = Store(tmp_path / "store")
    try:
        store.write_records([introduction(author, ORG["name"], ORG["uuid"]),
                             introduction(other, "Org M", "6d1f1a43-0000-4000-8000-000000000031")])
        assert store.write_events([event_write(_signed(author, raw))]) == [WriteOutcome.STORED]
        forged = _signed(other, _revised(raw, 100, "forged"))
        assert store.write_events([event_write(forged)]) == [Reason.NOT_AUTHOR]
        held = store.export_event(raw["Event"]["uuid"])["Event"]
        assert held["info"] == raw["Event"]["info"] and held["timestamp"] == raw["Event"]["timestamp"]
        assert store.check_integrity() == []
        # the author's own newer revision goes in; after a rotation, the new key's does too
        assert store.write_events([event_write(_signed(author, _revised(raw, 200, "second")))]) == [WriteOutcome.STORED]
        store.write_records([rotation(author, rotated, ORG["name"], ORG["uuid"])])
        assert store.write_events([event_write(_signed(rotated, _revised(raw, 300, "third")))]) == [WriteOutcome.STORED]
        assert store.export_event(raw["Event"]["uuid"])["Event"]["info"] == "third"
        # and the other key still cannot, however new its timestamp
        assert store.write_events([event_write(_signed(other, _revised(raw, 10**6, "forged")))]) == [Reason.NOT_AUTHOR]
    finally:
        store.close()


def test_a_peer_cannot_rewrite_another_orgs_event_and_the_authors_next_revision_still_arrives(tmp_path):
    # b holds a's event; m (a peer of b) signs a newer revision of it with its own key.
    nodes = make_federation(tmp_path, ["a", "b", "m"], [("a", "b"), ("b", "m")])
    a, b, m = nodes["a"], nodes["b"], nodes["m"]
    replicas = {name: Replica(node) for name, node in nodes.items()}

    def b_pulls(name: str):
        peer = next(p for p in b.config.peers if p.name == name)
        return pull(replicas["b"], peer, InMemory(replicas[name], "b"))

    raw = _published(32)
    uuid = raw["Event"]["uuid"]
    files = tmp_path / "files"
    files.mkdir()

    def write(doc: dict, name: str):
        path = files / f"{name}.json"
        path.write_text(json.dumps(doc))
        return path

    import_paths(a, [write(raw, "original")])
    assert b_pulls("a").stored == 1
    assert import_paths(m, [write(_revised(raw, 100, "forged by m"), "forged")]).events_stored == 1
    report = b_pulls("m")
    assert report.stored == 0 and report.refused == {"not-author": 1}
    assert b.store.export_event(uuid)["Event"]["info"] == raw["Event"]["info"]
    assert replicas["b"].store.record(b.store.held(uuid).record_id).author == a.identity.public_key
    # b's operator importing the same event's file: refused, named, nothing changed
    imported = import_paths(b, [write(_revised(raw, 50, "local copy"), "local")])
    assert imported.events_stored == 0 and "only its author can revise it" in imported.refused[0]
    # a's own next revision still replaces it at b
    import_paths(a, [write(_revised(raw, 200, "revised by a"), "second")])
    assert b_pulls("a").stored == 1
    assert b.store.export_event(uuid)["Event"]["info"] == "revised by a"
    for node in nodes.values():
        node.close()


def test_an_event_from_a_misp_peer_is_revised_only_through_that_peer_and_a_misp_peer_revises_nothing_else(tmp_path):
    """Decision 0032: this node signs what a MISP peer sends (decision 0001), so the author rule alone
    would let any path of this node replace it; the store keeps each bridged event to its MISP peer."""
    me = Identity.generate()
    store = Store(tmp_path / "store")
    try:
        store.write_records([introduction(me, ORG["name"], ORG["uuid"])])
        bridged, own = _published(41), _published(42)
        write = lambda raw, seconds, source: store.write_events(  # noqa: E731
            [event_write(_signed(me, _revised(raw, seconds, f"{source} {seconds}")), source)])[0]
        assert write(bridged, 0, "misp:community-a") is WriteOutcome.STORED
        assert write(own, 0, "") is WriteOutcome.STORED
        # another MISP peer, a fedmisp peer's name, the API or an import (source ""): refused
        for seconds, source in ((10, "misp:community-b"), (20, ""), (30, "national-csirt")):
            assert write(bridged, seconds, source) is Reason.NOT_BRIDGE
        assert store.export_event(bridged["Event"]["uuid"])["Event"]["info"] == "misp:community-a 0"
        # the MISP peer it came from revises it
        assert write(bridged, 40, "misp:community-a") is WriteOutcome.STORED
        # and no MISP peer replaces this node's own event, however new
        assert write(own, 50, "misp:community-a") is Reason.NOT_BRIDGE
        assert store.export_event(own["Event"]["uuid"])["Event"]["info"] == " 0"
        assert store.check_integrity() == []
    finally:
        store.close()
