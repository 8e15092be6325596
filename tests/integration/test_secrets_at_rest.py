"""Secrets at rest: sealed in PostgreSQL, bound to their row, opened only to sign a delivery.

What a user observes: the rows and a ``pg_dump`` hold no secret or credential in the clear; a
sealed value moved to another row does not open (and nothing is sent unsigned); a wrong key
stops ``broker serve`` at start-up with a clear message; key rotation plus ``broker admin
reencrypt`` moves every row to the new key; without ``BROKER_ENCRYPTION_KEYS`` a 0600 key file
is made once and reused.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest
from standardwebhooks import Webhook

from broker.crypto import KEY_FILE_NAME, KeyConfigError, KeyRing, UnreadableSecret, new_key_text
from broker.runtime import running
from broker.store.db import create_pool
from broker.store.store import Store
from tests.acceptance.test_cli import free_port
from tests.conftest import (
    TEST_ENCRYPTION_KEY,
    TEST_KEYS,
    make_settings,
    make_world,
    stored_secrets,
    wait_until,
)

BROKER = str(Path(sys.executable).with_name("broker"))
OTHER_KEY = new_key_text()
BASIC = base64.b64encode(b"receiver-user:receiver-password-123").decode()


def secret_key_hex(secret: str) -> str:
    return base64.b64decode(secret[len("whsec_") :]).hex()


async def run_broker(db_url: str, *args: str, timeout: float = 30, **env: str) -> tuple[int, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    full.update({"BROKER_DATABASE_URL": db_url, "BROKER_ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY})
    full.update(env)
    proc = await asyncio.create_subprocess_exec(
        BROKER,
        *args,
        env=full,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def pg_dump_binary(server_version: int) -> str:
    """pg_dump of the embedded server's own release, else Debian's when it is new enough."""
    import pgserver

    candidates = [Path(pgserver.__file__).parent / "pginstall" / "bin" / "pg_dump"]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"), reverse=True)
    for path in candidates:
        if not path.exists():
            continue
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True).stdout
        major = int(out.split()[-1].split(".")[0])
        if major >= server_version // 10000:
            return str(path)
    pytest.skip(f"no pg_dump for PostgreSQL {server_version} (pgserver's or Debian's)")


async def test_secrets_and_basic_auth_are_sealed_in_their_rows(make_client, receiver, db):
    client = await make_client(workers=True)
    world = await make_world(client)
    reg = await world.register(receiver.url, basicAuth=BASIC)
    row = await db.fetchrow(
        "SELECT secret_sealed, basic_auth_sealed FROM registrations WHERE id = $1::uuid",
        reg["id"],
    )
    for sealed in row.values():
        assert isinstance(sealed, bytes)
        assert reg["secret"].encode() not in sealed and BASIC.encode() not in sealed
        assert bytes.fromhex(secret_key_hex(reg["secret"])) not in sealed
    columns = {
        r["column_name"]
        for r in await db.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'registrations'"
        )
    }
    assert not {"secret", "previous_secret", "basic_auth"} & columns
    assert await stored_secrets(db, reg["id"]) == {
        "secret": reg["secret"],
        "previous_secret": None,
        "basic_auth": BASIC,
    }
    # and the delivery is signed with it and carries the credentials
    await world.emit(["r/1"])
    [delivery] = await receiver.wait_for(1)
    Webhook(reg["secret"]).verify(delivery.body, delivery.headers)
    assert delivery.headers["Authorization"] == f"Basic {BASIC}"


async def test_a_sealed_secret_moved_to_another_row_does_not_open_nor_stop_other_deliveries(
    make_client, receiver, db, db_url
):
    client = await make_client(workers=True)
    world = await make_world(client)
    donor = await world.register(receiver.url, basicAuth=BASIC)
    victim = await world.register(receiver.url)
    # An attacker with write access copies the donor's sealed secret and credentials over.
    await db.execute(
        "UPDATE registrations v SET secret_sealed = d.secret_sealed,"
        " basic_auth_sealed = d.basic_auth_sealed"
        " FROM registrations d WHERE d.id = $1::uuid AND v.id = $2::uuid",
        donor["id"],
        victim["id"],
    )
    pool = await create_pool(db_url, size=2)
    try:
        store = Store(pool, keys=TEST_KEYS)
        with pytest.raises(UnreadableSecret, match=victim["id"]):
            await store.delivery_target(uuid.UUID(victim["id"]))
        assert (await store.delivery_target(uuid.UUID(donor["id"]))) is not None
        # The same value swapped into the other column of its own row does not open either.
        await db.execute(
            "UPDATE registrations SET basic_auth_sealed = secret_sealed WHERE id = $1::uuid",
            donor["id"],
        )
        with pytest.raises(UnreadableSecret):
            await store.delivery_target(uuid.UUID(donor["id"]))
    finally:
        await pool.close()
    resp = await client.post(
        f"/webhooks/v1/registrations/{victim['id']}/test", headers=world.partner
    )
    # Nothing is sent unsigned; the partner is told why and how to repair it.
    assert resp.status == 200, await resp.text()
    answer = await resp.json()
    assert answer["success"] is False
    assert "rotate the secret" in answer["attempt"]["error"]
    assert receiver.received == []
    # A queued event for it fails the same way, while the other registrations (here another
    # partner's) are delivered: one bad row does not stop the claim for everyone.
    await db.execute("DELETE FROM registrations WHERE id = $1::uuid", donor["id"])
    other = await make_world(client)
    healthy = await other.register(receiver.url)
    await world.emit(["r/1"])
    await other.emit(["r/2"])
    [delivery] = await receiver.wait_for(1)
    assert delivery.json()["registrationId"] == healthy["id"]

    async def victim_attempted() -> bool:
        return bool(
            await db.fetchval(
                "SELECT count(*) FROM attempts a JOIN events e ON e.id = a.event_id"
                " WHERE e.registration_id = $1::uuid AND e.event_name <> 'test.event'",
                victim["id"],
            )
        )

    await wait_until(victim_attempted)
    error = await db.fetchval(
        "SELECT a.error FROM attempts a JOIN events e ON e.id = a.event_id"
        " WHERE e.registration_id = $1::uuid AND e.event_name <> 'test.event' LIMIT 1",
        victim["id"],
    )
    assert error.startswith("not sent:")
    assert [r.json()["registrationId"] for r in receiver.received] == [healthy["id"]]
    await wait_until(
        lambda: _count(db, "SELECT count(*) FROM registrations WHERE status = 'Suspended'", 1)
    )
    # Rotating the secret repairs it: after retries ran out (Suspended), a restart that resends
    # the failed event delivers it, signed with the new secret.
    resp = await client.post(
        f"/webhooks/v1/registrations/{victim['id']}/rotate-secret",
        json={"graceSeconds": 0},  # the unreadable one must not stay live as the previous
        headers=world.partner,
    )
    assert resp.status == 200, await resp.text()
    secret = (await resp.json())["secret"]
    resp = await client.patch(
        f"/webhooks/v1/registrations/{victim['id']}",
        json={"basicAuth": BASIC},
        headers=world.partner,
    )
    assert resp.status == 200, await resp.text()
    resp = await client.post(
        f"/webhooks/v1/registrations/{victim['id']}/restart",
        json={"resendFailed": True},
        headers=world.partner,
    )
    assert resp.status == 200, await resp.text()
    [_, repaired] = await receiver.wait_for(2)
    assert repaired.json()["registrationId"] == victim["id"]
    Webhook(secret).verify(repaired.body, repaired.headers)


async def _count(db: asyncpg.Connection, sql: str, want: int) -> bool:
    return bool(await db.fetchval(sql) == want)


async def test_pg_dump_holds_no_secret_or_credential(make_client, db, db_url):
    client = await make_client()
    world = await make_world(client)
    first = await world.register("https://93.184.216.34/a", basicAuth=BASIC)
    second = await world.register("https://93.184.216.34/b")
    resp = await client.post(
        f"/webhooks/v1/registrations/{second['id']}/rotate-secret",
        json={"graceSeconds": 3600},
        headers=world.partner,
    )
    rotated = (await resp.json())["secret"]
    assert (await stored_secrets(db, second["id"]))["previous_secret"] == second["secret"]

    parts = urlsplit(db_url)
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    env = {**os.environ, "PGHOST": host, "PGUSER": parts.username or "postgres"}
    if parts.port:
        env["PGPORT"] = str(parts.port)
    if parts.password:
        env["PGPASSWORD"] = parts.password
    server_version = int(await db.fetchval("SHOW server_version_num"))
    proc = await asyncio.create_subprocess_exec(
        pg_dump_binary(server_version),
        "--no-owner",
        parts.path.lstrip("/"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    dump = out.decode()
    assert "COPY public.registrations" in dump and first["id"] in dump  # the rows are there
    clear = {
        "secret": first["secret"],
        "rotated secret": rotated,
        "previous secret": second["secret"],
        "basicAuth": BASIC,
        "basicAuth decoded": "receiver-password-123",
        "partner key": world.partner_key,
        "producer key": world.producer_key,
    }
    for secret in (first["secret"], rotated, second["secret"]):
        # the HMAC key itself, as pg_dump writes bytea (hex) and as base64
        clear[f"key bytes of {secret[:12]}"] = secret_key_hex(secret)
        clear[f"key base64 of {secret[:12]}"] = secret[len("whsec_") :]
    found = [name for name, value in clear.items() if value in dump]
    assert found == []


async def test_a_wrong_key_stops_serve_at_start_up_with_a_clear_message(make_client, db_url):
    client = await make_client()
    world = await make_world(client)
    await world.register("https://93.184.216.34/a", basicAuth=BASIC)
    code, out = await run_broker(
        db_url, "serve", "--port", str(free_port()), BROKER_ENCRYPTION_KEYS=OTHER_KEY
    )
    assert code == 2, out
    assert "configuration error" in out and "cannot open" in out, out
    assert TEST_KEYS.primary_id.hex() in out  # names the key id that is missing
    assert "listening on" not in out
    assert OTHER_KEY not in out and TEST_ENCRYPTION_KEY not in out  # never echoes a key
    # In process too: the runtime does not start.
    wrong = make_settings(encryption_keys=(base64.b64decode(OTHER_KEY),))
    with pytest.raises(KeyConfigError, match="cannot open"):
        async with running(wrong, url=db_url, role="all"):
            pass


async def test_rotation_then_reencrypt_moves_every_secret_to_the_new_key(
    make_client, receiver, db, db_url
):
    client = await make_client()
    world = await make_world(client)
    regs = [await world.register(receiver.url, basicAuth=BASIC) for _ in range(3)]
    rotating = regs[0]
    resp = await client.post(
        f"/webhooks/v1/registrations/{rotating['id']}/rotate-secret",
        json={"graceSeconds": 3600},
        headers=world.partner,
    )
    new_secret = (await resp.json())["secret"]
    old_id = TEST_KEYS.primary_id
    ring = f"{OTHER_KEY},{TEST_ENCRYPTION_KEY}"  # new key first: it seals, both open
    code, out = await run_broker(db_url, "admin", "reencrypt", BROKER_ENCRYPTION_KEYS=ring)
    assert code == 0, out
    new_ring = KeyRing([base64.b64decode(OTHER_KEY)], source="test")
    assert "re-sealed 3 registration(s)" in out and new_ring.primary_id.hex() in out
    kids = await db.fetch(
        "SELECT DISTINCT substring(v FROM 2 FOR 4) AS kid FROM registrations,"
        " unnest(array[secret_sealed, previous_secret_sealed, basic_auth_sealed]) AS v"
        " WHERE v IS NOT NULL"
    )
    assert [bytes(r["kid"]) for r in kids] == [new_ring.primary_id] != [old_id]
    code, out = await run_broker(db_url, "admin", "reencrypt", BROKER_ENCRYPTION_KEYS=ring)
    assert code == 0 and "re-sealed 0 registration(s)" in out, out
    # The old key is retired: the new key alone opens everything, and a delivery verifies
    # against both live secrets of the rotating registration.
    pool = await create_pool(db_url, size=2)
    try:
        store = Store(pool, keys=new_ring)
        await store.check_key_ring()
        target = await store.delivery_target(uuid.UUID(rotating["id"]))
        assert target is not None
        assert target.secrets == (new_secret, rotating["secret"])
        assert target.basic_auth == BASIC
    finally:
        await pool.close()
    app_client = await make_client(encryption_keys=(base64.b64decode(OTHER_KEY),))
    resp = await app_client.post(
        f"/webhooks/v1/registrations/{rotating['id']}/test", headers=world.partner
    )
    assert resp.status == 200 and (await resp.json())["success"], await resp.text()
    [delivery] = await receiver.wait_for(1)
    Webhook(new_secret).verify(delivery.body, delivery.headers)
    Webhook(rotating["secret"]).verify(delivery.body, delivery.headers)
    # and the old key alone no longer opens anything: refused before any row is touched
    code, out = await run_broker(db_url, "admin", "reencrypt")
    assert code == 2 and "cannot open" in out, out


async def test_without_keys_a_0600_key_file_is_made_once_and_reused(
    make_client, db_url, tmp_path: Path
):
    data_dir = tmp_path / "data"
    env = {"BROKER_ENCRYPTION_KEYS": "", "BROKER_DATA_DIR": str(data_dir)}
    code, out = await run_broker(db_url, "migrate", **env)
    assert code == 0, out
    key_file = data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert str(key_file.resolve()) in out  # its path is logged
    key = key_file.read_text()
    code, out = await run_broker(db_url, "admin", "create-partner", "Acme", **env)
    assert code == 0, out
    assert key_file.read_text() == key and "created encryption key file" not in out
    # Secrets sealed by an app using that file open with it, and only with it.
    keys = base64.b64decode(key.strip())
    client = await make_client(encryption_keys=(keys,))
    world = await make_world(client)
    await world.register("https://93.184.216.34/a")
    code, out = await run_broker(db_url, "admin", "reencrypt", **env)
    assert code == 0 and "re-sealed 0" in out, out
    # A key file others can read is refused, naming it.
    key_file.chmod(0o644)
    code, out = await run_broker(db_url, "migrate", **env)
    assert code == 2 and str(key_file.resolve()) in out and "chmod 600" in out, out
    key_file.chmod(0o600)
    shutil.copy(key_file, tmp_path / "kept.key")
    key_file.write_text("not a key\n")
    code, out = await run_broker(db_url, "migrate", **env)
    assert code == 2 and "not a base64 32-byte key" in out, out
