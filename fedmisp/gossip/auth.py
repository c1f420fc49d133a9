"""Peer request authentication and body encryption (docs DESIGN "Gossip").

Every peer request carries `Fedmisp-Auth: <key>.<time>.<nonce>.<signature>`: the sender's Ed25519
public key, the Unix time, a random nonce, and a signature over method, path, time, nonce and the
hash of the (encrypted) body. The receiver checks the key is pinned for a configured peer, the time
is within MAX_CLOCK_SKEW, the nonce was not seen in that window, and the signature. Bodies, both
ways, are NaCl boxes between the two nodes' keys (Ed25519 keys converted to Curve25519), so no
certificates are needed; TLS in front is still possible.

I/O-free: the aiohttp layer calls these with bytes and headers.
"""
from __future__ import annotations

import base64
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from hashlib import blake2b
from typing import Mapping

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import VerifyKey

from fedmisp.model import canonical
from fedmisp.model.identity import Identity, decode_key, encode_key, verify
from fedmisp.policy.reasons import Reason

HEADER = "Fedmisp-Auth"
# Clocks of peers drift; five minutes is the usual allowance (Kerberos, AWS SigV4 use 5 and 15).
MAX_CLOCK_SKEW = 300
NONCE_BYTES = 16
# Nonces remembered per peer key: every nonce is kept until its request's time is out of the
# clock-skew window (a replay of it would be refused as stale by then), so a key may make at most
# this many requests per 2 * MAX_CLOCK_SKEW (10 minutes: about 166 a second, well above what one
# pull makes: a 1,000,000-element event is 200 bodies requests). Past it the key is refused
# (Reason.TOO_MANY) until its oldest nonces age out, rather than a nonce being forgotten early: one peer's
# flood never makes anyone's captured request replayable. About 150 bytes each: 15 MB per key at most.
MAX_NONCES_PER_KEY = 100_000
_CONTEXT = b"fedmisp-peer-request-v1"


class AuthError(Exception):
    """A request that is not accepted; `reason` (policy/reasons.py) is what counters and logs show."""

    def __init__(self, reason: Reason, message: str):
        self.reason = reason
        super().__init__(message)


def _signed_bytes(method: str, path: str, timestamp: int, nonce: bytes, body: bytes) -> bytes:
    return canonical.pack([_CONTEXT, method.upper(), path, timestamp, nonce,
                           blake2b(body, digest_size=32).digest()])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_request(identity: Identity, method: str, path: str, body: bytes, now: float | None = None,
                 nonce: bytes | None = None) -> str:
    """The Fedmisp-Auth header value for a request."""
    timestamp = int(time.time() if now is None else now)
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    signature = identity.sign(_signed_bytes(method, path, timestamp, nonce, body))
    return f"{identity.public_key_text}.{timestamp}.{_b64(nonce)}.{_b64(signature)}"


class ReplayCache:
    """Nonces seen within the clock-skew window, kept per key: one key's requests never evict
    another's. Keys are those of configured peers (the caller passes the pinned keys; keys no
    longer pinned are forgotten when a new one is remembered), each holding at most `per_key`."""

    def __init__(self, per_key: int = MAX_NONCES_PER_KEY):
        self.per_key = per_key
        self._seen: dict[bytes, OrderedDict[bytes, int]] = {}

    def _window(self, key: bytes, now: int) -> OrderedDict[bytes, int] | None:
        nonces = self._seen.get(key)
        while nonces:
            oldest = next(iter(nonces.values()))
            if oldest >= now - MAX_CLOCK_SKEW:
                break  # (in arrival order: a later nonce with an older time waits behind it, kept longer)
            nonces.popitem(last=False)  # its request is stale now: a replay is refused as such
        return nonces

    def check(self, key: bytes, nonce: bytes, now: int) -> None:
        """AuthError if this key's nonce was seen within the window, or the key's window is full."""
        nonces = self._window(key, now)
        if nonces is None:
            return
        if nonce in nonces:
            raise AuthError(Reason.REPLAY, "request nonce already seen")
        if len(nonces) >= self.per_key:
            raise AuthError(Reason.TOO_MANY, f"more than {self.per_key} requests from this key within "
                                        f"{2 * MAX_CLOCK_SKEW}s; try again later")

    def remember(self, key: bytes, nonce: bytes, timestamp: int, now: int,
                 pinned: Mapping[bytes, object] | None = None) -> None:
        """Remember a nonce of a verified request (check() first)."""
        if key not in self._seen:
            if pinned is not None:
                for gone in [k for k in self._seen if k not in pinned]:
                    del self._seen[gone]  # a peer removed from the configuration
            self._seen[key] = OrderedDict()
        self._window(key, now)
        self._seen[key][nonce] = timestamp

    def check_and_remember(self, key: bytes, nonce: bytes, timestamp: int, now: int) -> bool:
        """False if this (key, nonce) was seen within the window (or the key's window is full)."""
        try:
            self.check(key, nonce, now)
        except AuthError:
            return False
        self.remember(key, nonce, timestamp, now)
        return True

    def keys(self) -> int:
        return len(self._seen)

    def remembered(self, key: bytes) -> int:
        return len(self._seen.get(key, ()))


@dataclass(frozen=True, slots=True)
class Authenticated:
    peer: str  # the configured peer's name
    key: bytes


@dataclass(frozen=True, slots=True)
class Claim:
    """What a Fedmisp-Auth header claims, checked for everything but the signature (which covers
    the body, so it is verified once the body is read)."""
    peer: str
    key: bytes
    timestamp: int
    nonce: bytes
    signature: bytes


def check_header(header: str | None, pinned: Mapping[bytes, str], replays: ReplayCache,
                 now: float | None = None) -> Claim:
    """Everything about a request that needs no body: the header well-formed, the key a configured
    peer's, the time within MAX_CLOCK_SKEW, the nonce not seen for that key. Raises AuthError.
    Checked before a body is read, so an unauthenticated client costs no body bytes."""
    if not header:
        raise AuthError(Reason.AUTH_MISSING, f"no {HEADER} header")
    parts = header.split(".")
    if len(parts) != 4:
        raise AuthError(Reason.MALFORMED, f"{HEADER}: expected key.time.nonce.signature")
    try:
        key = decode_key(parts[0])
        timestamp = int(parts[1])
        nonce = _unb64(parts[2])
        signature = _unb64(parts[3])
    except ValueError:
        raise AuthError(Reason.MALFORMED, f"{HEADER}: expected key.time.nonce.signature") from None
    peer = pinned.get(key)
    if peer is None:
        raise AuthError(Reason.UNKNOWN_KEY, f"key {encode_key(key)} is not a configured peer's key")
    current = int(time.time() if now is None else now)
    if abs(current - timestamp) > MAX_CLOCK_SKEW:
        raise AuthError(Reason.STALE, f"request time {timestamp} is more than {MAX_CLOCK_SKEW}s from {current}")
    if len(nonce) != NONCE_BYTES or len(signature) != 64:
        raise AuthError(Reason.MALFORMED, f"{HEADER}: nonce or signature has the wrong length")
    replays.check(key, nonce, current)
    return Claim(peer, key, timestamp, nonce, signature)


def verify_claim(claim: Claim, method: str, path: str, body: bytes, pinned: Mapping[bytes, str],
                 replays: ReplayCache, now: float | None = None) -> Authenticated:
    """The signature over method, path, time, nonce and body; the nonce is remembered only once it
    verifies (a forged header cannot use up a peer's nonces)."""
    if not verify(claim.key, _signed_bytes(method, path, claim.timestamp, claim.nonce, body), claim.signature):
        raise AuthError(Reason.BAD_SIGNATURE, "request signature does not verify")
    current = int(time.time() if now is None else now)
    replays.check(claim.key, claim.nonce, current)  # (again: a twin request may have verified meanwhile)
    replays.remember(claim.key, claim.nonce, claim.timestamp, current, pinned)
    return Authenticated(claim.peer, claim.key)


def verify_request(header: str | None, method: str, path: str, body: bytes, pinned: Mapping[bytes, str],
                   replays: ReplayCache, now: float | None = None) -> Authenticated:
    """Check a Fedmisp-Auth header; raise AuthError (unknown key -> reason 'unknown-key', etc.)."""
    return verify_claim(check_header(header, pinned, replays, now), method, path, body, pinned, replays, now)


def _box(identity: Identity, peer_key: bytes) -> Box:
    private: PrivateKey = identity.signing_key.to_curve25519_private_key()
    public: PublicKey = VerifyKey(peer_key).to_curve25519_public_key()
    return Box(private, public)


def seal_body(identity: Identity, peer_key: bytes, plaintext: bytes) -> bytes:
    """Encrypt and authenticate a body for one peer (a fresh random nonce is prepended)."""
    return bytes(_box(identity, peer_key).encrypt(plaintext))


def open_body(identity: Identity, peer_key: bytes, sealed: bytes) -> bytes:
    try:
        return _box(identity, peer_key).decrypt(sealed)
    except (CryptoError, ValueError, TypeError):
        raise AuthError(Reason.BAD_BOX, "body does not decrypt with this pair of keys") from None
