"""An organisation's key set grows only with its consent (decision 0019): a new key that introduces
itself for an organisation a node already knows is refused unless a current key of that
organisation vouches for it, or the node's configuration pins it."""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from fedmisp.model.identity import Identity
from fedmisp.model.org import introduction, read_org, rotation, vouch
from fedmisp.model.records import KIND_SHARING_GROUP, RecordError, seal
from fedmisp.policy.reasons import Reason
from fedmisp.store.store import Store

from federation import make_federation, settle

ORG_A, ORG_B = "aaaaaaaa-0000-4000-8000-00000000000a", "bbbbbbbb-0000-4000-8000-00000000000b"
K0, K1, NEW, OTHER, STRANGER = (Identity.generate() for _ in range(5))


def _vouched(key: Identity, voucher: Identity, org: str = ORG_A, created: int = 10):
    return introduction(key, "A", org, created, (voucher.public_key, vouch(voucher, org, key.public_key)))


def _write(store: Store, record, pinned=None) -> Reason:
    refused: list = []
    store.write_records([record], refused, pinned)
    return refused[0][1] if refused else Reason.ALLOWED


def test_a_key_joins_a_known_organisation_only_vouched_by_a_current_key_or_pinned(tmp_path: Path):
    with Store(tmp_path / "s") as store:
        assert _write(store, introduction(K0, "A", ORG_A)) is Reason.ALLOWED  # first key of an unknown org
        assert _write(store, introduction(STRANGER, "A", ORG_A)) is Reason.ORG_KEY_NOT_VOUCHED
        assert _write(store, _vouched(STRANGER, OTHER)) is Reason.ORG_KEY_NOT_VOUCHED  # a voucher of no org
        assert store.key_state(STRANGER.public_key).org is None
        assert _write(store, _vouched(NEW, K0)) is Reason.ALLOWED
        assert store.key_state(NEW.public_key).org == ORG_A and store.key_state(K0.public_key).retired_at is None
        # once K0 is rotated away, it vouches for nobody; its successor does
        assert _write(store, rotation(K0, K1, "A", ORG_A, created=50)) is Reason.ALLOWED
        late = Identity.generate()
        assert _write(store, _vouched(late, K0, created=60)) is Reason.ORG_KEY_NOT_VOUCHED
        assert _write(store, _vouched(late, K1, created=60)) is Reason.ALLOWED
        # the configuration's word: a key this node pins to the org
        pinned = Identity.generate()
        assert _write(store, introduction(pinned, "A", ORG_A), {pinned.public_key: ORG_A}) is Reason.ALLOWED
        squatter = Identity.generate()
        assert _write(store, introduction(squatter, "A", ORG_A), {squatter.public_key: ORG_B}) \
            is Reason.ORG_KEY_NOT_VOUCHED
        assert _write(store, introduction(OTHER, "B", ORG_B)) is Reason.ALLOWED  # another unknown org
        assert store.check_integrity() == []


def test_a_vouch_binds_the_key_and_the_organisation():
    made = vouch(K0, ORG_A, NEW.public_key)
    assert read_org(introduction(NEW, "A", ORG_A, 1, (K0.public_key, made))).voucher == K0.public_key
    for record in (introduction(OTHER, "A", ORG_A, 1, (K0.public_key, made)),  # made for another key
                   introduction(NEW, "B", ORG_B, 1, (K0.public_key, made)),  # for another organisation
                   introduction(NEW, "A", ORG_A, 1, (K1.public_key, made)),  # not the voucher's signature
                   seal(K0, "org", {**rotation(K0, K1, "A", ORG_A, 1).body, "voucher": NEW.public_key, "vouch": made})):
        with pytest.raises(RecordError):
            read_org(record)


def test_a_peer_cannot_speak_for_another_organisation_and_take_its_sharing_group(tmp_path: Path):
    """m introduces a key of its own as a's organisation and signs a revision of a's sharing group
    adding m's organisation. Before, b accepted both (the key was "a's", a's revision came from the
    group's owner) and sent the group's data to m from then on. Now b refuses the introduction and
    so the revision; a's own further node, vouched for by a, is accepted at b."""
    from fedmisp.gossip import sharing_groups as sg
    from fedmisp.gossip.observe import Decision
    nodes = make_federation(tmp_path, ["a", "b", "m"], [("a", "b"), ("b", "m")])
    a, b, m = nodes["a"], nodes["b"], nodes["m"]
    org_a, org_b, org_m = a.config.org_uuid, b.config.org_uuid, m.config.org_uuid
    group = sg.create(a.store, a.identity, org_a, "banks", {org_b: False})
    mallory = Identity.generate()
    forged_group = dict(sg.to_body(group), revision=2, members=sorted([[org_a, True], [org_b, False], [org_m, False]]))
    forged = [introduction(mallory, "Org a", org_a), seal(mallory, KIND_SHARING_GROUP, forged_group)]
    m.store.write_records(forged)  # m knows nothing of org a yet: at m it is first-come
    decisions: list[Decision] = []
    observer = type("O", (), {"decided": lambda self, d: decisions.append(d)})()
    settle(nodes, observers={"b": observer})
    refused = {(d.kind, d.reason) for d in decisions if d.action == "refused"}
    assert ("org", "org-key-not-vouched") in refused and ("sharing-group", "unknown-author") in refused
    assert b.store.key_state(mallory.public_key).org is None
    held = sg.from_record(b.store.sharing_group(group.uuid))
    assert held.revision == 1 and org_m not in held.members
    # a's second node: the same organisation, a key of its own, vouched for by a
    a2 = Identity.generate()
    intro = introduction(a2, "Org a", org_a, 100, (a.identity.public_key, vouch(a.identity, org_a, a2.public_key)))
    a.store.write_records([intro])
    settle(nodes)
    assert b.store.key_state(a2.public_key).org == org_a
    for node in nodes.values():
        assert node.store.check_integrity() == []
        node.close()


def _fedmisp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedmisp", *args], capture_output=True, text=True, timeout=120)


def test_vouch_and_introduce_from_the_command_line(tmp_path: Path):
    """The operator of an organisation's first node vouches for its second node's key; the second
    node stores its introduction with the vouch; a bad token is refused naming what is wrong."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert _fedmisp("init", "--home", str(first), "--org", "Org A", "--listen", "127.0.0.1:0").returncode == 0
    org = json.loads(_fedmisp("info", "--home", str(first), "--json").stdout)["org_uuid"]
    bad = _fedmisp("init", "--home", str(second), "--org", "Org A", "--org-uuid", "org-a")
    assert bad.returncode != 0 and "--org-uuid" in bad.stderr and not second.exists()
    made = _fedmisp("init", "--home", str(second), "--org", "Org A", "--org-uuid", org, "--listen", "127.0.0.1:0")
    assert made.returncode == 0, made.stderr
    key = json.loads(_fedmisp("info", "--home", str(second), "--json").stdout)["public_key"]
    made = _fedmisp("key", "vouch", "--home", str(first), f"--key={key}")  # (a key may begin with '-')
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith(org + ".")
    wrong = _fedmisp("key", "introduce", "--home", str(second), "--vouch", token.replace(org, str(uuid.uuid4())))
    assert wrong.returncode == 2 and "fedmisp init --org-uuid" in wrong.stderr
    mine = json.loads(_fedmisp("info", "--home", str(first), "--json").stdout)["public_key"]
    own = _fedmisp("key", "vouch", "--home", str(first), f"--key={mine}")
    assert own.returncode == 2 and "own key" in own.stderr
    done = _fedmisp("key", "introduce", "--home", str(second), "--vouch", token)
    assert done.returncode == 0, done.stderr
    assert "vouched by " + mine in done.stdout
    # a third node that knows the organisation by the first node's key takes the second's vouched one
    third = Store(tmp_path / "third")
    try:
        with Store(first / "store", readonly=True) as store:
            first_intro = _org_records(store)
        with Store(second / "store", readonly=True) as store:
            second_intros = _org_records(store)
        assert _write(third, first_intro[0]) is Reason.ALLOWED
        plain = next(r for r in second_intros if "voucher" not in r.body)
        vouched = next(r for r in second_intros if "voucher" in r.body)
        assert _write(third, plain) is Reason.ORG_KEY_NOT_VOUCHED
        assert _write(third, vouched) is Reason.ALLOWED and third.key_state(vouched.author).org == org
    finally:
        third.close()


# a public key that begins with '-' (one in 64 does): the seed bytes([41]) + 31 zero bytes
DASH_KEY = "-RZFNUe-jV2MIiFzc4dRnFQ06PbxbsAhob77eY-mIMo"


def test_a_key_that_begins_with_a_dash_is_given_as_key_equals_and_the_other_form_says_so(tmp_path: Path):
    """argparse reads `--key -RZF...` as two options; `--key=-RZF...` is the form that takes such a
    key, for `key vouch` and `peer add` alike, and the error for the other form names it."""
    home = tmp_path / "n"
    assert _fedmisp("init", "--home", str(home), "--org", "Org A", "--listen", "127.0.0.1:0").returncode == 0
    for command in (("key", "vouch"), ("peer", "add", "--name", "p", "--url", "http://127.0.0.1:1")):
        ambiguous = _fedmisp(*command, "--home", str(home), "--key", DASH_KEY)
        assert ambiguous.returncode == 2 and "given as --key=VALUE" in ambiguous.stderr
        done = _fedmisp(*command, "--home", str(home), f"--key={DASH_KEY}")
        assert done.returncode == 0, done.stderr
    token = _fedmisp("key", "vouch", "--home", str(home), f"--key={DASH_KEY}").stdout.strip()
    assert token.startswith(json.loads(_fedmisp("info", "--home", str(home), "--json").stdout)["org_uuid"] + ".")
    assert DASH_KEY in (home / "fedmisp.toml").read_text()


def _org_records(store: Store) -> list:
    from fedmisp.model.records import KIND_ORG, open_record
    out = []
    with store.database.env.begin() as txn:
        for _, wire in txn.cursor(db=store.database.db["records"]):
            record = open_record(bytes(wire))
            if record.kind == KIND_ORG:
                out.append(record)
    return out
