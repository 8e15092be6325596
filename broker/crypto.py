"""Secrets at rest: AES-256-GCM with a key ring.

Registration secrets and ``basicAuth`` are stored sealed: a database dump, a backup or a replica
gives an attacker nothing to sign with or to log in to receivers with. The key ring comes from
``BROKER_ENCRYPTION_KEYS`` (comma-separated base64 32-byte keys; the first seals, all open), or,
when that is unset, from a key file created once in ``BROKER_DATA_DIR`` (mode 0600).

A sealed value is ``version (1 byte) || key id (4) || nonce (12) || ciphertext || tag (16)``.
The key id (the first bytes of a hash of the key) lets opening pick the right key without trying
each one, lets start-up tell which stored keys the ring lacks, and lets ``broker admin
reencrypt`` find what a retired key still seals. The associated data binds a value to its
registration and column, so a sealed secret copied to another row, or into the ``basicAuth``
column of its own row, does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import stat
import uuid
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.config import ConfigError, Settings

log = logging.getLogger(__name__)

VERSION = b"\x01"
KEY_BYTES = 32
KEY_ID_BYTES = 4
NONCE_BYTES = 12
HEADER_BYTES = len(VERSION) + KEY_ID_BYTES
KEY_FILE_NAME = "encryption.key"
KEYS_VARIABLE = "BROKER_ENCRYPTION_KEYS"


class SecretsError(Exception):
    """Base of the errors of this module."""


class UnreadableSecret(SecretsError):
    """A sealed value does not open with this key ring (wrong key, or moved to another row)."""


class KeyConfigError(SecretsError, ConfigError):
    """The key ring configuration is unusable; the message names the variable or file (the CLI
    prints it as a configuration error and exits non-zero)."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"broker key id\x00" + key).digest()[:KEY_ID_BYTES]


def parse_key(text: str, *, position: int) -> bytes:
    """One base64 key; the error message never repeats the key."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(f"key {position} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyConfigError(
            f"key {position} decodes to {len(key)} bytes; AES-256 needs {KEY_BYTES}"
        )
    return key


def parse_keys(raw: str) -> tuple[bytes, ...]:
    """``BROKER_ENCRYPTION_KEYS``; the messages leave the variable name to the caller."""
    keys = tuple(parse_key(p, position=i) for i, p in enumerate(raw.split(","), start=1))
    if len(set(keys)) != len(keys):
        raise KeyConfigError("the same key is listed twice")
    return keys


def new_key_text() -> str:
    """A fresh key in the form ``BROKER_ENCRYPTION_KEYS`` takes."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()


class KeyRing:
    """The first key seals; every key opens what it sealed."""

    def __init__(self, keys: Sequence[bytes], *, source: str) -> None:
        if not keys:
            raise KeyConfigError(f"{source}: no key")
        self.source = source  # where the keys came from, for error messages
        self._primary_id = key_id(keys[0])
        self._ciphers = {key_id(k): AESGCM(k) for k in keys}
        if len(self._ciphers) != len(keys):
            raise KeyConfigError(f"{source}: two keys share a key id; generate new keys")

    @property
    def primary_id(self) -> bytes:
        return self._primary_id

    @property
    def ids(self) -> frozenset[bytes]:
        return frozenset(self._ciphers)

    def seal(self, plaintext: str, *, row: uuid.UUID, column: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        header = VERSION + self._primary_id
        sealed = self._ciphers[self._primary_id].encrypt(
            nonce, plaintext.encode(), _associated(header, row, column)
        )
        return header + nonce + sealed

    def open(self, blob: bytes, *, row: uuid.UUID, column: str) -> str:
        blob = bytes(blob)
        header = blob[:HEADER_BYTES]
        if len(blob) < HEADER_BYTES + NONCE_BYTES + 16 or header[:1] != VERSION:
            raise UnreadableSecret(f"registration {row}: {column} is not a sealed value")
        cipher = self._ciphers.get(header[1:])
        if cipher is None:
            raise UnreadableSecret(
                f"registration {row}: {column} is sealed with key id {header[1:].hex()}, "
                f"which {self.source} does not hold"
            )
        nonce = blob[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
        try:
            plain = cipher.decrypt(
                nonce, blob[HEADER_BYTES + NONCE_BYTES :], _associated(header, row, column)
            )
        except InvalidTag:
            raise UnreadableSecret(
                f"registration {row}: {column} does not open (tampered with, or moved from "
                "another row)"
            ) from None
        return plain.decode()

    def open_optional(self, blob: bytes | None, *, row: uuid.UUID, column: str) -> str | None:
        return None if blob is None else self.open(blob, row=row, column=column)

    def seal_optional(self, plaintext: str | None, *, row: uuid.UUID, column: str) -> bytes | None:
        return None if plaintext is None else self.seal(plaintext, row=row, column=column)


def sealed_key_id(blob: bytes) -> bytes:
    return bytes(blob[1:HEADER_BYTES])


def _associated(header: bytes, row: uuid.UUID, column: str) -> bytes:
    # The header is authenticated too, so a value cannot be relabelled with another key id.
    return header + row.bytes + column.encode()


def load_key_ring(settings: Settings) -> KeyRing:
    """``BROKER_ENCRYPTION_KEYS``, or the key file in ``BROKER_DATA_DIR`` (made on first use)."""
    if settings.encryption_keys:
        return KeyRing(settings.encryption_keys, source=KEYS_VARIABLE)
    if settings.database_url:
        log.warning(
            "%s is unset: secrets are sealed with a key file on this machine, which broker "
            "processes on other machines sharing BROKER_DATABASE_URL do not have",
            KEYS_VARIABLE,
        )
    path = (settings.data_dir / KEY_FILE_NAME).resolve()
    return KeyRing([_read_or_create_key_file(path)], source=f"key file {path}")


def _read_or_create_key_file(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        # Written aside, then linked into place: the link fails if another process made the
        # file first, and nobody ever reads a half-written key.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(new_key_text() + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.link(tmp, path)
        except FileExistsError:
            pass
        else:
            log.warning(
                "created encryption key file %s (mode 0600): registration secrets are sealed "
                "with it; back it up with the database, or set %s",
                path,
                KEYS_VARIABLE,
            )
        finally:
            tmp.unlink(missing_ok=True)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyConfigError(
            f"key file {path}: readable by group or others (mode {stat.S_IMODE(mode):04o}); "
            "chmod 600 it"
        )
    try:
        key = parse_key(path.read_text(), position=1)
    except KeyConfigError:
        raise KeyConfigError(f"key file {path}: not a base64 32-byte key") from None
    log.info("encryption key file: %s", path)
    return key
