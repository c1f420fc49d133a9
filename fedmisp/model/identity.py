"""A node's signing identity: one Ed25519 key per organisation node."""
from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

KEY_FILE_MODE = 0o600


def encode_key(raw: bytes) -> str:
    """Public keys are shown and configured as unpadded url-safe base64 (as Matrix does)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_key(text: str) -> bytes:
    text = text.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise ValueError("expected an Ed25519 public key in url-safe base64 (43 characters)") from None
    if len(raw) != 32:
        raise ValueError("expected an Ed25519 public key in url-safe base64 (43 characters)")
    return raw


@dataclass(frozen=True)
class Identity:
    signing_key: SigningKey

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def public_key_text(self) -> str:
        return encode_key(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature

    @classmethod
    def generate(cls) -> "Identity":
        return cls(SigningKey.generate())

    def save(self, path: Path) -> None:
        """Write the private key with mode 0600, refusing to overwrite an existing key."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(bytes(self.signing_key)) + b"\n")

    @classmethod
    def load(cls, path: Path) -> "Identity":
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(
                f"{path}: private key is readable by others (mode {mode:o}); run chmod 600 {path}"
            )
        seed = base64.b64decode(path.read_bytes().strip())
        if len(seed) != 32:
            raise ValueError(f"{path}: not a fedmisp identity key (expected a 32-byte seed in base64)")
        return cls(SigningKey(seed))


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True
