"""The origin never loses what it created: a copy of its own revision that comes back from a peer
with fewer bodies adds nothing and removes nothing (DESIGN "The pipeline at each hop", issue 13)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from fedmisp.node.importer import import_paths

from factories import event
from federation import make_federation, settle


def _mixed_event(tmp_path: Path, seed: int) -> dict:
    """An event of distribution 3 whose attributes are at 0, 1, 2, 3 and one tagged tlp:red."""
    raw = copy.deepcopy(event(seed=seed, attributes=5, objects=0))
    for a, level in zip(raw["Event"]["Attribute"], (0, 1, 2, 3, 3)):
        a["distribution"] = str(level)
        a.pop("Tag", None)
    raw["Event"]["Attribute"][4]["Tag"] = [{"name": "tlp:red"}]
    (tmp_path / f"ev{seed}.json").write_text(json.dumps(raw))
    return raw["Event"]


def test_the_origin_keeps_every_element_when_its_revision_comes_back_stripped(tmp_path):
    # a -> b -> c -> a: c serves a (push-only on c's side), so a's own revision returns from c
    # carrying only what c may hold
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a")],
                            {("c", "a"): {"mode": "push-only"}, ("a", "c"): {"mode": "pull-only"}})
    ev = _mixed_event(tmp_path, 1)
    import_paths(nodes["a"], [tmp_path / "ev1.json"])
    settle(nodes)
    exported = nodes["a"].store.export_event(ev["uuid"])["Event"]
    assert {a["uuid"] for a in exported["Attribute"]} == {a["uuid"] for a in ev["Attribute"]}
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


def _revise(tmp_path: Path, ev: dict, name: str, timestamp: int, **attribute_levels: int) -> Path:
    """A newer version of `ev` (as the origin's analyst would import it) with some attributes'
    distribution changed: `attribute_levels` maps an attribute's index (as `a0`, `a1`...) to a level."""
    raw = copy.deepcopy({"Event": ev})
    raw["Event"]["timestamp"] = raw["Event"]["publish_timestamp"] = str(timestamp)
    for key, level in attribute_levels.items():
        attribute = raw["Event"]["Attribute"][int(key[1:])]
        attribute["distribution"] = str(level)
        attribute["timestamp"] = str(timestamp)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(raw))
    return path


def test_a_newer_revision_is_held_at_its_own_levels_not_those_of_the_one_it_replaces(tmp_path):
    # a-b, b-c, a-c, c-d. The first revision has every attribute at 3; the second lowers a1 to 1:
    # c (a's direct peer) may hold it at 0, and d must not get it. If c kept the old revision's
    # levels, the copy it gets from a at 0 would be held at 3 and relayed to d.
    nodes = make_federation(tmp_path, ["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d")])
    raw = copy.deepcopy(event(seed=2, attributes=3, objects=0))
    for a in raw["Event"]["Attribute"]:
        a["distribution"] = "3"
        a.pop("Tag", None)
    ev = raw["Event"]
    (tmp_path / "v1.json").write_text(json.dumps(raw))
    import_paths(nodes["a"], [tmp_path / "v1.json"])
    settle(nodes)
    assert len(nodes["d"].store.export_event(ev["uuid"])["Event"]["Attribute"]) == 3
    import_paths(nodes["a"], [_revise(tmp_path, ev, "v2", int(ev["timestamp"]) + 10, a1=1)])
    # b's copy first (without a1: b holds it at 0), then a's (a1 at 0), then d pulls from c
    from fedmisp.gossip.driver import InMemory, pull
    from fedmisp.gossip.replica import Replica
    replicas = {n: Replica(node) for n, node in nodes.items()}

    def pull_from(receiver: str, sender: str) -> None:
        peer = next(p for p in nodes[receiver].config.peers if p.name == sender)
        pull(replicas[receiver], peer, InMemory(replicas[sender], receiver))
    for receiver, sender in (("b", "a"), ("c", "b"), ("c", "a"), ("d", "c")):
        pull_from(receiver, sender)
    lowered = ev["Attribute"][1]["uuid"]
    at_c = {a["uuid"] for a in nodes["c"].store.export_event(ev["uuid"])["Event"]["Attribute"]}
    at_d = {a["uuid"] for a in nodes["d"].store.export_event(ev["uuid"])["Event"]["Attribute"]}
    assert lowered in at_c and lowered not in at_d
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


def test_the_store_only_adds_bodies_when_the_same_revision_arrives_with_fewer(tmp_path):
    # The store's own rule, whatever its caller: the same revision written again with a subset of
    # its bodies keeps every body held.
    from fedmisp.model import canonical
    from fedmisp.store.store import received_write
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    ev = _mixed_event(tmp_path, 3)
    import_paths(nodes["a"], [tmp_path / "ev3.json"])
    settle(nodes)
    b = nodes["b"].store
    record, entries = b.revision_entries(ev["uuid"])
    held = {d for d, _, _ in entries}
    assert len(held) >= 2
    holding = canonical.pack_sorted(b.holding(ev["uuid"]))
    b.write_events([received_write(record, entries[:1], holding, "a", False)])
    assert b.held_digests(ev["uuid"]) == held
    assert b.check_integrity() == []
    for node in nodes.values():
        node.close()

