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

HEADER = "Fedmisp-Auth"
# Clocks of peers drift; five minutes is the usual allowance (Kerberos, AWS SigV4 use 5 and 15).
MAX_CLOCK_SKEW = 300
NONCE_BYTES = 16
# Nonces remembered per window: a peer sending more requests than this in ten minutes is refused
# replays only within the most recent ones. Bounded so a flood cannot grow memory.
MAX_REMEMBERED_NONCES = 100_000
_CONTEXT = b"fedmisp-peer-request-v1"


class AuthError(Exception):
    """A request that is not accepted; `reason` is a short code for counters and logs."""

    def __init__(self, reason: str, message: str):
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
    """Nonces seen within the clock-skew window, oldest forgotten first."""

    def __init__(self, limit: int = MAX_REMEMBERED_NONCES):
        self.limit = limit
        self._seen: OrderedDict[tuple[bytes, bytes], int] = OrderedDict()

    def check_and_remember(self, key: bytes, nonce: bytes, timestamp: int, now: int) -> bool:
        """False if this (key, nonce) was seen within the window."""
        while self._seen:
            oldest = next(iter(self._seen.values()))
            if oldest < now - 2 * MAX_CLOCK_SKEW or len(self._seen) >= self.limit:
                self._seen.popitem(last=False)  # outside any window a fresh request can claim
            else:
                break
        if (key, nonce) in self._seen:
            return False
        self._seen[(key, nonce)] = timestamp
        return True


@dataclass(frozen=True, slots=True)
class Authenticated:
    peer: str  # the configured peer's name
    key: bytes


def verify_request(header: str | None, method: str, path: str, body: bytes, pinned: Mapping[bytes, str],
                   replays: ReplayCache, now: float | None = None) -> Authenticated:
    """Check a Fedmisp-Auth header; raise AuthError (unknown key -> reason 'unknown-key', etc.)."""
    if not header:
        raise AuthError("missing", f"no {HEADER} header")
    parts = header.split(".")
    if len(parts) != 4:
        raise AuthError("malformed", f"{HEADER}: expected key.time.nonce.signature")
    try:
        key = decode_key(parts[0])
        timestamp = int(parts[1])
        nonce = _unb64(parts[2])
        signature = _unb64(parts[3])
    except ValueError:
        raise AuthError("malformed", f"{HEADER}: expected key.time.nonce.signature") from None
    peer = pinned.get(key)
    if peer is None:
        raise AuthError("unknown-key", f"key {encode_key(key)} is not a configured peer's key")
    current = int(time.time() if now is None else now)
    if abs(current - timestamp) > MAX_CLOCK_SKEW:
        raise AuthError("stale", f"request time {timestamp} is more than {MAX_CLOCK_SKEW}s from {current}")
    if len(nonce) != NONCE_BYTES or len(signature) != 64:
        raise AuthError("malformed", f"{HEADER}: nonce or signature has the wrong length")
    if not verify(key, _signed_bytes(method, path, timestamp, nonce, body), signature):
        raise AuthError("bad-signature", "request signature does not verify")
    if not replays.check_and_remember(key, nonce, timestamp, current):
        raise AuthError("replay", "request nonce already seen")
    return Authenticated(peer, key)


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
        raise AuthError("bad-box", "body does not decrypt with this pair of keys") from None
