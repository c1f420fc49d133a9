"""Keys an operator revokes ([blocklist] keys): nothing they sign, introduce or vouch for is taken,
and the peer protocol answers their requests with 403."""
from __future__ import annotations

import json
from pathlib import Path

from fedmisp.model.identity import Identity
from fedmisp.model.org import introduction, rotation
from fedmisp.model.revision import sign_event
from fedmisp.model.misp import ImportDefaults, parse_event
from fedmisp.node.config import CONFIG_FILE
from fedmisp.node.home import Node
from fedmisp.node.importer import import_paths

from factories import event
from federation import make_federation, settle
from nodes import configure, running


def _block(home: Path, *keys: Identity) -> None:
    path = home / CONFIG_FILE
    listed = ", ".join(f'"{k.public_key_text}"' for k in keys)
    path.write_text(path.read_text() + f"\n[blocklist]\nkeys = [{listed}]\n")


def test_what_a_blocked_key_signs_or_introduces_is_refused_and_the_rest_goes_on(tmp_path: Path):
    """a's key is stolen: the thief rotates a's organisation to a key of its own and signs an event
    with it, through a's node. b, whose operator has blocked the thief's key, refuses the rotation
    and the event (key-blocked) and keeps taking a's genuine events; c, which has not, takes all."""
    from fedmisp.gossip.observe import Decision
    nodes = make_federation(tmp_path, ["a", "b", "c"], [("a", "b"), ("a", "c")])
    a = nodes["a"]
    thief = Identity.generate()
    home_b = nodes["b"].config.home
    nodes["b"].close()
    _block(home_b, thief)
    nodes["b"] = Node.open(home_b)
    assert nodes["b"].config.blocked_keys == {thief.public_key}
    genuine = tmp_path / "genuine.json"
    genuine.write_text(json.dumps(event(seed=71, attributes=3, objects=0)))
    import_paths(a, [genuine])
    defaults = ImportDefaults(org_uuid=a.config.org_uuid, org_name=a.config.org_name)
    stolen = sign_event(thief, parse_event(event(seed=72, attributes=2, objects=0)["Event"], defaults))
    a.store.write_records([rotation(a.identity, thief, a.config.org_name, a.config.org_uuid, created=2_000_000_000)])
    a.store.write_events([stolen])
    decisions: list[Decision] = []
    observer = type("O", (), {"decided": lambda self, d: decisions.append(d)})()
    settle(nodes, observers={"b": observer})
    genuine_uuid = json.loads(genuine.read_text())["Event"]["uuid"]
    assert set(nodes["b"].store.event_uuids()) == {genuine_uuid}
    assert set(nodes["c"].store.event_uuids()) == {genuine_uuid, stolen.uuid}
    blocked = sorted(d.kind for d in decisions if d.reason == "key-blocked")
    assert blocked == ["event", "org"]
    assert nodes["b"].store.key_state(thief.public_key).org is None
    assert nodes["b"].store.current_key(a.identity.public_key) == a.identity.public_key
    # an introduction vouched for by a blocked key is refused too
    other = Identity.generate()
    from fedmisp.model.org import vouch
    vouched = introduction(other, "x", a.config.org_uuid, 5,
                           (thief.public_key, vouch(thief, a.config.org_uuid, other.public_key)))
    c_store = nodes["c"].store
    c_store.write_records([vouched])  # c took the thief's rotation: the vouch is good there
    assert c_store.key_state(other.public_key).org == a.config.org_uuid
    decisions.clear()
    settle(nodes, observers={"b": observer})
    assert nodes["b"].store.key_state(other.public_key).org is None
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


def test_a_blocked_key_gets_403_from_the_peer_protocol(tmp_path: Path):
    from test_keys import _peer_request
    nodes = configure(tmp_path, ["a", "b"], [("a", "b")])
    identity = Identity.load(nodes["a"].home / "identity.key")  # a's key, as a configured peer of b
    with running({"b": nodes["b"]}):
        assert _peer_request(nodes["b"], identity)[0] == 200
    _block(nodes["b"].home, identity)
    with running({"b": nodes["b"]}):
        assert _peer_request(nodes["b"], identity) == (403, "key-blocked")
