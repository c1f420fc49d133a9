"""Peer request authentication: pinned keys, signatures, clock skew, replays, boxed bodies."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from fedmisp.gossip.auth import (
    MAX_CLOCK_SKEW, AuthError, ReplayCache, open_body, seal_body, sign_request, verify_request,
)
from fedmisp.model.identity import Identity

ALICE, BOB, MALLORY = Identity.generate(), Identity.generate(), Identity.generate()
PINNED = {ALICE.public_key: "alice"}
NOW = 1_800_000_000


def check(header, method="POST", path="/fed/v1/changes", body=b"x", now=NOW, replays=None):
    return verify_request(header, method, path, body, PINNED, replays or ReplayCache(), now=now)


def test_a_signed_request_from_a_pinned_key_is_accepted():
    header = sign_request(ALICE, "POST", "/fed/v1/changes", b"x", now=NOW)
    assert check(header).peer == "alice"


@pytest.mark.parametrize("change,reason", [
    ({"method": "GET"}, "bad-signature"),
    ({"path": "/fed/v1/bodies"}, "bad-signature"),
    ({"body": b"y"}, "bad-signature"),
    ({"now": NOW + MAX_CLOCK_SKEW + 1}, "stale"),
    ({"now": NOW - MAX_CLOCK_SKEW - 1}, "stale"),
])
def test_anything_changed_after_signing_is_refused(change, reason):
    header = sign_request(ALICE, "POST", "/fed/v1/changes", b"x", now=NOW)
    with pytest.raises(AuthError) as info:
        check(header, **change)
    assert info.value.reason == reason


def test_an_unknown_key_is_refused_by_name():
    with pytest.raises(AuthError) as info:
        check(sign_request(MALLORY, "POST", "/fed/v1/changes", b"x", now=NOW))
    assert info.value.reason == "unknown-key"


def test_a_replayed_request_is_refused():
    replays = ReplayCache()
    header = sign_request(ALICE, "POST", "/fed/v1/changes", b"x", now=NOW)
    check(header, replays=replays)
    with pytest.raises(AuthError) as info:
        check(header, replays=replays)
    assert info.value.reason == "replay"


def test_the_replay_cache_is_bounded_per_key_and_a_full_key_is_refused_not_forgotten():
    replays = ReplayCache(per_key=10)
    for i in range(10):
        assert replays.check_and_remember(b"k", i.to_bytes(16, "big"), NOW, NOW)
    with pytest.raises(AuthError) as info:
        replays.check(b"k", (99).to_bytes(16, "big"), NOW)
    assert info.value.reason == "too-many"
    assert replays.remembered(b"k") == 10
    # once the window has passed, the key's nonces age out and it may ask again
    assert replays.check_and_remember(b"k", (99).to_bytes(16, "big"), NOW, NOW + MAX_CLOCK_SKEW + 1)
    assert replays.remembered(b"k") == 1


def test_one_keys_flood_never_evicts_another_keys_nonces():
    replays = ReplayCache(per_key=10)
    assert replays.check_and_remember(b"y", b"n" * 16, NOW, NOW)
    for i in range(1000):
        replays.check_and_remember(b"x", i.to_bytes(16, "big"), NOW, NOW)
    assert not replays.check_and_remember(b"y", b"n" * 16, NOW, NOW)


def test_the_replay_cache_keeps_only_pinned_keys():
    replays = ReplayCache(per_key=10)
    replays.remember(b"gone", b"n" * 16, NOW, NOW, pinned={b"gone": "a"})
    replays.remember(b"new", b"n" * 16, NOW, NOW, pinned={b"new": "b"})
    assert replays.keys() == 1


def test_a_signature_by_another_key_under_a_pinned_key_is_refused():
    header = sign_request(MALLORY, "POST", "/fed/v1/changes", b"x", now=NOW)
    forged = ALICE.public_key_text + header[header.index("."):]
    with pytest.raises(AuthError) as info:
        check(forged)
    assert info.value.reason == "bad-signature"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_garbage_headers_raise_only_auth_errors(header):
    with pytest.raises(AuthError):
        check(header)


def test_bodies_are_boxed_between_the_two_keys():
    sealed = seal_body(ALICE, BOB.public_key, b"secret records")
    assert b"secret" not in sealed
    assert open_body(BOB, ALICE.public_key, sealed) == b"secret records"
    with pytest.raises(AuthError):
        open_body(MALLORY, ALICE.public_key, sealed)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(AuthError):
        open_body(BOB, ALICE.public_key, bytes(tampered))
