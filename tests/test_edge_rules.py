"""Edges of the security rules (issue 21 items 6, 7, 8, 10 and 11), each pinned through the peer
protocol: a real pull over /fed/v1 (requests signed and boxed by a configured peer's key, the real
PeerProtocol handlers serving a real node's store), so what is checked is what a peer can do."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from factories import event
from federation import make_federation
from fedmisp.gossip import sharing_groups as sg
from fedmisp.model.identity import Identity
from fedmisp.model.misp import ImportDefaults, parse_event
from fedmisp.model.org import introduction, rotation
from fedmisp.model.records import KIND_SHARING_GROUP, seal
from fedmisp.model.revision import sign_event
from fedmisp.node.home import Node
from fedmisp.node.importer import import_paths
from fedmisp.policy.model import SharingGroup
from peer_protocol import Decisions, hostile_log, pull_over_http


def _pull(puller: Node, served: Node) -> Decisions:
    decisions = Decisions()
    asyncio.run(pull_over_http(puller, served, decisions))
    return decisions


def _import(node: Node, tmp_path: Path, misp: dict) -> str:
    path = tmp_path / f"{misp['Event']['uuid']}.json"
    path.write_text(json.dumps(misp))
    import_paths(node, [path], workers=0)
    return misp["Event"]["uuid"]


def _signed(node: Node, misp: dict, signer: Identity | None = None):
    """`misp` signed as a revision by `signer` (default: the node's key) for the node's organisation."""
    defaults = ImportDefaults(org_uuid=node.config.org_uuid, org_name=node.config.org_name)
    return sign_event(signer or node.identity, parse_event(misp["Event"], defaults))


def _close(nodes: dict[str, Node]) -> None:
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


# --- 10. a wildcard matches whole names ------------------------------------------------------------

def test_a_filter_wildcard_with_text_after_it_matches_only_names_ending_in_that_text(tmp_path: Path):
    """`*:red` in a push filter's NOT tags withholds an event tagged `ops:red`, never one tagged
    `tlp:red-team`: the pattern matches the whole tag name, as MISP's tag filters do (a tag rule is
    an SQL `Tag.name LIKE` pattern, app/Model/Tag.php findTagIdsByTagNames, which matches the whole
    name; `*` is fedmisp's spelling of LIKE's `%`)."""
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")],
                            {("a", "b"): {"push": {"tags_exclude": ["*:red", "%:secret"]}}})
    a, b = nodes["a"], nodes["b"]
    tagged = {}
    for seed, tag in enumerate(["ops:red", "tlp:red-team", "red", "ops:secret", "ops:secret-santa", "ops:redder"]):
        misp = event(seed=200 + seed, attributes=1, objects=0)
        misp["Event"]["Tag"] = [{"name": "tlp:green"}, {"name": tag}]
        tagged[tag] = _import(a, tmp_path, misp)
    decisions = _pull(b, a)
    held = set(b.store.event_uuids())
    assert {tag for tag, uuid in tagged.items() if uuid in held} == {"tlp:red-team", "red", "ops:secret-santa",
                                                                    "ops:redder"}
    assert decisions.refused("event") == []  # withheld by a's push filter: never offered at all
    _close(nodes)


# --- 6. a retired key signs nothing after its rotation ---------------------------------------------

def test_a_record_a_retired_key_signs_after_its_rotation_is_refused_as_unknown_author(tmp_path: Path):
    """a's organisation rotated from key `old` to `new` at time T (decision 0013). Whoever still
    holds `old` (a thief, a's forgotten node) serves b events signed by it: the one created before T
    is a's genuine past and is taken; the one created after T is refused as unknown-author, so the
    retired key cannot speak for a's organisation any more."""
    nodes = make_federation(tmp_path, ["a", "b"], [("a", "b")])
    a, b = nodes["a"], nodes["b"]
    old, new = a.identity, Identity.generate()
    rotated_at = 1_700_001_000
    assert a.store.write_records([rotation(old, new, a.config.org_name, a.config.org_uuid,
                                           created=rotated_at)]) == 1
    # a revision's `created` is its event's timestamp, the signer's word: one just before, one just after
    before = _signed(a, event(seed=61, attributes=2, objects=0, timestamp=rotated_at - 1), old)
    after = _signed(a, event(seed=62, attributes=2, objects=0, timestamp=rotated_at + 1), old)
    assert (before.record.created, after.record.created) == (rotated_at - 1, rotated_at + 1)
    hostile_log(a, events=[before, after])
    decisions = _pull(b, a)
    assert b.store.key_state(old.public_key).retired_at == rotated_at
    assert set(b.store.event_uuids()) == {before.uuid}
    assert decisions.refused("event") == ["unknown-author"]
    _close(nodes)
