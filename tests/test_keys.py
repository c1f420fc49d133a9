"""Key rotation: the org record rules, and a rotation between real peers (decision 0013)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from factories import ORG, event
from fedmisp.model.identity import Identity
from fedmisp.model.misp import ImportDefaults, parse_event
from fedmisp.model.org import introduction, read_org, rotation
from fedmisp.model.records import RecordError, seal, KIND_ORG
from fedmisp.model.revision import sign_event
from fedmisp.node.home import Node
from fedmisp.node.keys import PENDING_KEY, RETIRED_DIR, rotate_key
from fedmisp.policy.reasons import Reason
from fedmisp.store.db import sequence, set_sequence
from fedmisp.store.log import put_record
from fedmisp.store.rows import event_write
from fedmisp.store.store import Store
from nodes import configure, running, wait_for

ORG_A = "0a0a0a0a-0000-4000-8000-00000000000a"


def test_a_rotation_proves_both_keys_and_names_the_old_one():
    old, new, other = Identity.generate(), Identity.generate(), Identity.generate()
    claim = read_org(rotation(old, new, "A", ORG_A, created=5))
    assert (claim.key, claim.previous, claim.uuid) == (new.public_key, old.public_key, ORG_A)
    # the new key's proof binds org, old and new key: taken from another rotation it does not verify
    stolen = rotation(old, other, "A", ORG_A, created=5).body["proof"]
    forged = seal(old, KIND_ORG, {"key": new.public_key, "name": "A", "previous": old.public_key,
                                  "proof": stolen, "uuid": ORG_A}, created=5)
    with pytest.raises(RecordError, match="proof"):
        read_org(forged)
    # an introduction of someone else's key, or a rotation not signed by the key it retires
    with pytest.raises(RecordError, match="own key"):
        read_org(seal(old, KIND_ORG, {"key": new.public_key, "name": "A", "uuid": ORG_A}, created=5))
    with pytest.raises(RecordError, match="signed by the key it retires"):
        read_org(seal(other, KIND_ORG, dict(rotation(old, new, "A", ORG_A).body), created=5))


def test_the_store_accepts_a_rotation_only_from_a_current_key(tmp_path: Path):
    k1, k2, k3, mallory = (Identity.generate() for _ in range(4))
    with Store(tmp_path / "s") as store:
        assert store.write_records([introduction(k1, "A", ORG_A)]) == 1
        refused: list = []
        # not a key of the org: a forged announcement
        store.write_records([rotation(mallory, Identity.generate(), "A", ORG_A, created=10)], refused)
        assert [r for _, r in refused] == [Reason.ORG_KEY_NOT_CURRENT]
        store.write_records([rotation(k1, k2, "A", ORG_A, created=10)], refused)
        assert len(refused) == 1
        assert store.current_key(k1.public_key) == k2.public_key and store.key_state(k2.public_key).org == ORG_A
        assert store.key_state(k1.public_key).retired_at == 10 and store.key_state(k1.public_key).org == ORG_A
        # the retired key can neither rotate again nor be introduced again
        store.write_records([rotation(k1, k3, "A", ORG_A, created=11), introduction(k1, "A", ORG_A, created=12)],
                            refused)
        assert [r for _, r in refused[1:]] == [Reason.ORG_KEY_NOT_CURRENT, Reason.ORG_KEY_RETIRED]
        # a rotation to a key that signs for another org is refused; the current key rotates on
        store.write_records([introduction(mallory, "M", "0b0b0b0b-0000-4000-8000-00000000000b")])
        store.write_records([rotation(k2, mallory, "A", ORG_A, created=13)], refused)
        assert refused[-1][1] is Reason.ORG_KEY_CONFLICT
        store.write_records([rotation(k2, k3, "A", ORG_A, created=14)], refused)
        assert len(refused) == 4 and store.current_key(k1.public_key) == k3.public_key


def test_rotate_keeps_the_old_key_and_a_reopened_node_signs_with_the_new(tmp_path: Path, node: Node):
    old = node.identity
    record, kept = rotate_key(node, now=1_700_000_000)
    assert Identity.load(kept).public_key == old.public_key and os.stat(kept).st_mode & 0o777 == 0o600
    assert record.author == old.public_key and node.identity.public_key != old.public_key
    home = node.config.home
    node.close()
    with Node.open(home) as again:
        assert again.identity.public_key == record.body["key"]
        assert [i.public_key for i in again.retired_identities] == [old.public_key]
        assert again.store.org_for_key(again.identity.public_key) == again.config.org_uuid


def test_an_interrupted_rotation_is_finished_or_undone_when_the_node_opens(tmp_path: Path, node: Node):
    home = node.config.home
    old = node.identity
    # stopped after the new key was written beside the old, before the rotation was stored: undone
    Identity.generate().save(home / PENDING_KEY)
    node.close()
    with Node.open(home) as again:
        assert again.identity.public_key == old.public_key and not (home / PENDING_KEY).exists()
        # stopped after the rotation was stored, before the rename: finished
        new = Identity.generate()
        new.save(home / PENDING_KEY)
        again.store.write_records([rotation(old, new, again.config.org_name, again.config.org_uuid)])
    with Node.open(home) as finished:
        assert finished.identity.public_key == new.public_key and not (home / PENDING_KEY).exists()


def _fedmisp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fedmisp", *args], capture_output=True, text=True, timeout=120,
                          check=True)


def _write_event(folder: Path, seed: int) -> tuple[Path, str]:
    raw = event(seed=seed, attributes=3, objects=0)
    path = folder / f"e{seed}.json"
    path.write_text(json.dumps(raw))
    return path, raw["Event"]["uuid"]


def _inject(home: Path, records: list, events: list = ()) -> None:
    """Records written straight into a node's log, past every check (what a malicious node serves)."""
    store = Store(home / "store")
    try:
        with store.database.write() as txn:
            seq = sequence(txn)
            for record in records:
                _, seq = put_record(txn, record, seq)
            set_sequence(txn, seq)
        if events:
            store.write_events([event_write(e) for e in events])
    finally:
        store.close()


def _key_state(home: Path, key: bytes):
    store = Store(home / "store", readonly=True)
    try:
        return store.key_state(key), store.current_key(key)
    finally:
        store.close()


@pytest.mark.slow
def test_a_rotation_reaches_a_running_peer_and_a_forged_one_is_refused(tmp_path: Path):
    nodes = configure(tmp_path, ["a", "b", "m"], [("a", "b"), ("b", "m")], anti_entropy=1.0)
    a, b, m = nodes["a"], nodes["b"], nodes["m"]
    files = tmp_path / "events"
    files.mkdir()
    first, first_uuid = _write_event(files, 1)
    second, second_uuid = _write_event(files, 2)
    third, third_uuid = _write_event(files, 3)
    old_key = Node.open(a.home, readonly=True)
    k1, org_a = old_key.identity, old_key.config.org_uuid
    old_key.close()
    with running(nodes):
        _fedmisp("import", "--home", str(a.home), str(first))
        wait_for(lambda: first_uuid in b.events(), what="the first event at b")
        out = _fedmisp("key", "rotate", "--home", str(a.home)).stdout
        assert "asked the running node" in out
        k2 = Identity.load(a.home / "identity.key")
        assert k2.public_key != k1.public_key and len(list((a.home / RETIRED_DIR).glob("*.key"))) == 1
        wait_for(lambda: "signing as" in a.log.read_text(), what="a to reload its key")
        # an event a signs with the new key reaches b, which holds it as from the same org
        _fedmisp("import", "--home", str(a.home), str(second))
        wait_for(lambda: second_uuid in b.events(), what="the event signed with the new key at b")
        state, current = _key_state(b.home, k1.public_key)
        assert current == k2.public_key and state.retired_at is not None
        assert _key_state(b.home, k2.public_key)[0].org == org_a
        listed = _fedmisp("peer", "list", "--home", str(b.home)).stdout
        assert f"key rotated: now {k2.public_key_text}" in listed
        # b -> a still works: a's requests are signed with the new key, which b now pins
        _fedmisp("import", "--home", str(b.home), str(third))
        wait_for(lambda: third_uuid in a.events(), what="b's event at a")
        # the retired key is revoked for the peer protocol: b answers a request it signs with 403
        assert _peer_request(b, k1) == (403, "unknown-key")
        assert _peer_request(b, k2)[0] == 200
        # forged rotations served by m: by a key that is not a's, and by a's retired key
        mallory, taken = Identity.generate(), Identity.generate()
        forged_event = sign_event(mallory, parse_event(event(seed=9, attributes=2, objects=0)["Event"],
                                                       ImportDefaults(org_uuid=ORG["uuid"], org_name=ORG["name"])))
        _inject(m.home, [rotation(mallory, Identity.generate(), "Org a", org_a), rotation(k1, taken, "Org a", org_a)],
                [forged_event])

        def refused_from_m() -> dict:
            status = b.operator()
            return status["m"]["refused"]
        wait_for(lambda: refused_from_m().get("org-key-not-current") == 2, what="b to refuse both forgeries")
        assert refused_from_m().get("unknown-author", 0) >= 1
        assert forged_event.uuid not in b.events()
        assert _key_state(b.home, k1.public_key)[1] == k2.public_key
        assert _key_state(b.home, taken.public_key)[0].org is None
        # b keeps the new key across a restart (it lives in b's store, not in memory)
        b.stop()
        b.start()
        fourth, fourth_uuid = _write_event(files, 4)
        _fedmisp("import", "--home", str(a.home), str(fourth))
        wait_for(lambda: fourth_uuid in b.events(), what="a's next event at the restarted b")
    assert b.integrity() == [] and a.integrity() == []
    # what b holds from before the rotation is still signed by the old key, and still verifies
    store = Store(b.home / "store", readonly=True)
    try:
        record, _ = store.revision(first_uuid)
        assert record.author == k1.public_key
        assert store.revision(second_uuid)[0].author == k2.public_key
    finally:
        store.close()


def _peer_request(node, identity: Identity) -> tuple[int, str]:
    """One changes request to a running node's peer protocol, signed and boxed by `identity`: the
    HTTP status and the start of the answer (the refusal's reason code)."""
    import urllib.error
    import urllib.request

    from fedmisp.gossip.auth import HEADER, seal_body, sign_request
    from fedmisp.gossip.session import encode
    served = Node.open(node.home, readonly=True)
    key = served.identity.public_key
    served.close()
    body = seal_body(identity, key, encode({"since": 0, "limit": 1}))
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}/fed/v1/changes", data=body, method="POST",
                                     headers={HEADER: sign_request(identity, "POST", "/fed/v1/changes", body)})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as reply:
            return reply.status, ""
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace").split(":", 1)[0]


def test_events_signed_before_a_rotation_stay_editable_here_and_are_revised_with_the_new_key(node: Node):
    from fedmisp.store.mutations import revise
    raw = event(seed=5, attributes=2, objects=0)["Event"]
    signed = sign_event(node.identity, parse_event(raw, node.import_defaults()))
    node.store.write_events([signed])
    old = node.identity.public_key
    rotate_key(node)
    revised = revise(node.store, node.identity, node.import_defaults(), signed.uuid, set_header={"info": "renamed"})
    node.store.write_events([revised])
    record, _ = node.store.revision(signed.uuid)
    assert record.author == node.identity.public_key != old and record.body["event"]["info"] == "renamed"


# --- properties -------------------------------------------------------------------------------

KEYS = [Identity.generate() for _ in range(8)]  # generating keys is slow: a fixed pool, drawn from


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chain=st.integers(1, 4), forgeries=st.lists(st.tuples(st.sampled_from(["unknown", "retired", "squat"]),
                                                             st.integers(0, 3)), max_size=6),
       data=st.data())
def test_whatever_the_forgeries_only_the_genuine_chain_moves_an_org_key(tmp_path_factory, chain, forgeries, data):
    """A genuine chain k0 -> k1 -> ... delivered in order, forged rotations (by keys of no org, or by
    keys already retired) and unvouched introductions of other keys as the org's slipped in
    anywhere after its first key: the org ends at the chain's last key, no forged key signs for the
    org, and every forgery is refused."""
    keys = KEYS[: chain + 1]
    genuine = [rotation(keys[i], keys[i + 1], "A", ORG_A, created=100 + 10 * i) for i in range(chain)]
    deliveries: list = [("genuine", r) for r in genuine]
    for kind, which in forgeries:
        target = KEYS[chain + 1 + which % (len(KEYS) - chain - 1)]
        if kind == "unknown":
            forged = rotation(target, Identity.generate(), "A", ORG_A, created=500)
            at = data.draw(st.integers(0, len(deliveries)))
        elif kind == "squat":
            forged = introduction(target, "A", ORG_A, created=500 + which)
            at = data.draw(st.integers(0, len(deliveries)))
        else:
            # a key that was current once, rotating after its own rotation is known here
            old = data.draw(st.integers(0, chain - 1))
            forged = rotation(keys[old], target, "A", ORG_A, created=500)
            at = data.draw(st.integers(1 + [d[1] for d in deliveries].index(genuine[old]), len(deliveries)))
        deliveries.insert(at, ("forged", forged))
    with Store(tmp_path_factory.mktemp("s")) as store:
        store.write_records([introduction(keys[0], "A", ORG_A)])
        for kind, record in deliveries:
            refused: list = []
            store.write_records([record], refused)
            assert bool(refused) == (kind == "forged"), (kind, refused)
        assert store.current_key(keys[0].public_key) == keys[-1].public_key
        for kind, record in deliveries:
            if kind == "forged":
                assert store.key_state(record.body["key"]).org is None


@given(body=st.dictionaries(st.sampled_from(["key", "name", "uuid", "previous", "proof", "voucher", "vouch", "x"]),
                            st.one_of(st.binary(max_size=70), st.text(max_size=40), st.integers(-2**31, 2**31), st.none()),
                            max_size=6))
def test_read_org_refuses_any_malformed_body_with_a_record_error(body):
    record = seal(KEYS[0], KIND_ORG, body, created=1)
    try:
        claim = read_org(record)
    except RecordError:
        return
    assert claim.key == body["key"] and claim.uuid == body["uuid"]


def test_a_rotation_in_progress_is_not_taken_for_an_interrupted_one(tmp_path: Path, node: Node):
    from fedmisp.node.keys import _rotation_lock, finish_interrupted_rotation
    home = node.config.home
    Identity.generate().save(home / PENDING_KEY)
    with _rotation_lock(home, wait=True):  # as `fedmisp key rotate` holds it between its steps
        finish_interrupted_rotation(home, node.store)
        assert (home / PENDING_KEY).exists()
    finish_interrupted_rotation(home, node.store)
    assert not (home / PENDING_KEY).exists()
