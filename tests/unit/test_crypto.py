"""The key ring: sealing round trips, binding to row and column, rotation, and bad key config."""

from __future__ import annotations

import base64
import uuid

import pytest

from broker.config import ConfigError, Settings
from broker.crypto import KeyRing, UnreadableSecret, new_key_text, parse_keys

ROW = uuid.uuid4()
# Fixed keys for parameters: pytest-xdist needs every worker to collect the same test ids.
KEY_A = base64.b64encode(bytes(range(32))).decode()


def ring(*texts: str) -> KeyRing:
    return KeyRing(parse_keys(",".join(texts)), source="BROKER_ENCRYPTION_KEYS")


def test_seal_opens_only_for_its_row_and_column():
    keys = ring(new_key_text())
    sealed = keys.seal("whsec_abc", row=ROW, column="secret")
    assert b"whsec_abc" not in sealed
    assert keys.open(sealed, row=ROW, column="secret") == "whsec_abc"
    assert keys.seal("whsec_abc", row=ROW, column="secret") != sealed  # fresh nonce each time
    with pytest.raises(UnreadableSecret, match="moved from another row"):
        keys.open(sealed, row=uuid.uuid4(), column="secret")
    with pytest.raises(UnreadableSecret):
        keys.open(sealed, row=ROW, column="basic_auth")
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(UnreadableSecret):
        keys.open(bytes(flipped), row=ROW, column="secret")
    for junk in (b"", b"whsec_abc", b"\x02" + sealed[1:]):
        with pytest.raises(UnreadableSecret, match="not a sealed value"):
            keys.open(junk, row=ROW, column="secret")


def test_first_key_seals_all_keys_open_and_a_missing_key_is_named():
    old, new = new_key_text(), new_key_text()
    sealed_old = ring(old).seal("s", row=ROW, column="secret")
    rotated = ring(new, old)
    assert rotated.open(sealed_old, row=ROW, column="secret") == "s"
    sealed_new = rotated.seal("s", row=ROW, column="secret")
    assert sealed_new[1:5] == rotated.primary_id != sealed_old[1:5]
    with pytest.raises(UnreadableSecret, match=sealed_new[1:5].hex()):
        ring(old).open(sealed_new, row=ROW, column="secret")
    # relabelling a value with another key id of the ring does not open it either
    relabelled = sealed_old[:1] + rotated.primary_id + sealed_old[5:]
    with pytest.raises(UnreadableSecret):
        rotated.open(relabelled, row=ROW, column="secret")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not base64!", "key 1 is not valid base64"),
        (base64.b64encode(bytes(16)).decode(), "key 1 decodes to 16 bytes"),
        (KEY_A + ",", "key 2"),
        ("," + KEY_A, "key 1"),
        (base64.b64encode(bytes(33)).decode(), "33 bytes"),
        ("A" * 10_000, "key 1"),
        ("\x00", "key 1"),
    ],
)
def test_bad_encryption_keys_are_a_config_error_naming_the_variable(raw, message):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({"BROKER_ENCRYPTION_KEYS": raw})
    text = str(err.value)
    assert text.startswith("BROKER_ENCRYPTION_KEYS: ") and message in text
    for part in raw.split(","):
        if len(part) > 8:
            assert part not in text  # a key is never echoed into logs


def test_a_key_listed_twice_is_refused_and_keys_never_show_in_repr():
    key = new_key_text()
    with pytest.raises(ConfigError, match="listed twice"):
        Settings.from_env({"BROKER_ENCRYPTION_KEYS": f"{key}, {key}"})
    settings = Settings.from_env({"BROKER_ENCRYPTION_KEYS": f" {key} , {new_key_text()}"})
    assert len(settings.encryption_keys) == 2
    assert key not in repr(settings) and repr(base64.b64decode(key)) not in repr(settings)
    with pytest.raises(ConfigError, match="32 bytes"):
        Settings().replace(encryption_keys=(b"short",))
