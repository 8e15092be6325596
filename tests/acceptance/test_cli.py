"""The real ``broker`` console script, run as a subprocess against a test database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from broker.domain.operational import EVENT_TYPES
from tests.conftest import TEST_ENCRYPTION_KEY, bearer, with_database

BROKER = Path(sys.executable).parent / "broker"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    code: int
    out: str
    err: str


def broker_env(db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env["BROKER_DATABASE_URL"] = db_url
    env["BROKER_ENCRYPTION_KEYS"] = TEST_ENCRYPTION_KEY
    env.update(extra)
    return env


async def broker(db_url: str, *args: str, **env: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        str(BROKER),
        *args,
        env=broker_env(db_url, **env),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # Generous: several of these start at once on a shared, busy machine (Python start-up).
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_migrate_reports_up_to_date(db_url):
    run = await broker(db_url, "migrate")
    assert run.code == 0, run.err
    assert "up to date" in run.out


async def test_version(db_url):
    run = await broker(db_url, "--version")
    assert run.code == 0
    assert re.fullmatch(r"broker \d+\.\d+\.\d+\S*\n", run.out)


async def test_admin_commands_make_working_keys(db_url, make_client, db):
    run = await broker(db_url, "admin", "create-partner", "Acme")
    assert run.code == 0, run.err
    partner_key = re.search(r"bk_partner_\S+", run.out)
    partner_id = re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", run.out)
    assert partner_key and partner_id, run.out
    assert (
        await db.fetchval("SELECT name FROM partners WHERE id = $1::uuid", partner_id[0]) == "Acme"
    )

    producer_run, type_run, list_run = await asyncio.gather(
        broker(db_url, "admin", "create-producer-key", "core-ledger"),
        broker(db_url, "admin", "add-event-type", "Core.Account.Opened", "--description", "opened"),
        broker(db_url, "admin", "list-partners"),
    )
    assert producer_run.code == 0, producer_run.err
    producer_key = re.search(r"bk_producer_\S+", producer_run.out)
    assert producer_key and "core-ledger" in producer_run.out
    assert type_run.code == 0, type_run.err
    assert "Core.Account.Opened" in type_run.out
    assert list_run.code == 0, list_run.err
    assert "Acme" in list_run.out and partner_id[0] in list_run.out
    assert partner_key[0] not in list_run.out  # keys are shown once, at creation

    types_run = await broker(db_url, "admin", "list-event-types")
    assert types_run.code == 0 and "Core.Account.Opened" in types_run.out
    assert "test.event" in types_run.out

    # the keys work against a broker app on the same database
    client = await make_client()
    resp = await client.get("/webhooks/v1/registrations", headers=bearer(partner_key[0]))
    assert resp.status == 200, await resp.text()
    resp = await client.post(
        "/internal/v1/resource-events",
        json={
            "events": [
                {"partnerId": partner_id[0], "eventName": "Core.Account.Opened", "resource": "a/1"}
            ]
        },
        headers=bearer(producer_key[0]),
    )
    assert resp.status == 202, await resp.text()

    # a second partner key, then revoking it
    run = await broker(db_url, "admin", "create-partner-key", partner_id[0])
    assert run.code == 0, run.err
    second = re.search(r"bk_partner_\S+", run.out)
    key_id = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", run.out)
    assert second and key_id
    assert (await client.get("/webhooks/v1/registrations", headers=bearer(second[0]))).status == 200
    run = await broker(db_url, "admin", "revoke-key", key_id[0])
    assert run.code == 0, run.err
    assert (await client.get("/webhooks/v1/registrations", headers=bearer(second[0]))).status == 401


async def test_admin_commands_refuse_bad_input(db_url, db):
    missing = "00000000-0000-0000-0000-000000000000"
    runs = await asyncio.gather(
        broker(db_url, "admin", "add-event-type", "Core..Bad"),
        broker(db_url, "admin", "add-event-type", "NoDots"),
        broker(db_url, "admin", "add-event-type", "Broker.Registration.Mine"),
        broker(db_url, "admin", "create-partner-key", "not-a-uuid"),
        broker(db_url, "admin", "create-partner-key", missing),
        broker(db_url, "admin", "revoke-key", missing),
        broker(db_url, "admin", "create-partner", ""),
        broker(db_url, "admin", "create-partner", "x" * 201),
        broker(db_url, "admin", "create-producer-key", "   "),
        broker(db_url, "admin", "no-such-command"),
    )
    for run in runs:
        assert run.code != 0, run
        assert "Traceback" not in run.err, run.err
        assert run.err.strip(), run
    assert await db.fetchval("SELECT count(*) FROM event_types") == 1 + len(
        EVENT_TYPES
    )  # built-ins
    assert await db.fetchval("SELECT count(*) FROM partners") == 0
    assert await db.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_bad_configuration_exits_2_naming_the_variable(db_url):
    run = await broker(db_url, "serve", BROKER_PORT="abc")
    assert run.code == 2
    assert "BROKER_PORT" in run.err
    assert "Traceback" not in run.err
    run = await broker(db_url, "migrate", BROKER_RETRY_SCHEDULE="a,b")
    assert run.code == 2
    assert "BROKER_RETRY_SCHEDULE" in run.err


async def test_unreachable_database_is_a_message_not_a_traceback(db_url):
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/broker"
    runs = await asyncio.gather(
        broker(db_url, "migrate", BROKER_DATABASE_URL=nowhere),
        broker(db_url, "admin", "list-partners", BROKER_DATABASE_URL=nowhere),
        broker(db_url, "migrate", BROKER_DATABASE_URL=with_database(db_url, "no_such_db")),
    )
    for run in runs:
        assert run.code == 1, run
        assert "Traceback" not in run.err
        assert "error" in run.err
    assert "no_such_db" in runs[2].err


@contextlib.asynccontextmanager
async def serving(
    db_url: str, *args: str, **env: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, list[str]]]:
    """``broker serve`` as a subprocess, yielded once it has printed "listening on" (with the
    lines it printed so far); killed on the way out if the test did not stop it."""
    proc = await asyncio.create_subprocess_exec(
        str(BROKER),
        "serve",
        *args,
        env=broker_env(db_url, **env),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(15):
            while not any("listening on" in line for line in lines):
                line = (await proc.stdout.readline()).decode()
                assert line, f"broker serve exited early: {lines}"
                lines.append(line)
        yield proc, lines
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_prints_token_and_address_answers_and_stops_on_sigterm(db_url):
    port = free_port()
    async with serving(db_url, BROKER_PORT=str(port), BROKER_LOG_LEVEL="WARNING") as (
        proc,
        lines,
    ):
        output = "".join(lines)
        token = re.search(r"admin token.*?: (\S+)", output)
        assert token, output
        assert f"http://127.0.0.1:{port}" in output
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as session:

            async def get(path: str, **headers: str) -> int:
                # no retry: "listening on" is printed once the socket is bound
                async with session.get(base + path, headers=headers) as resp:
                    return resp.status

            assert await get("/healthz") == 200
            assert await get("/readyz") == 200
            assert await get("/admin/v1/partners", **bearer(token[1])) == 200
            assert await get("/admin/v1/partners", **bearer("wrong-token-wrong-token")) == 401
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), timeout=10)
        assert code == 0
        assert proc.stdout is not None
        rest = (await proc.stdout.read()).decode()
        assert "Traceback" not in output + rest


async def test_serve_does_not_print_a_configured_token(db_url):
    token = "configured-admin-token-123456"
    async with serving(
        db_url, "--role", "api", BROKER_PORT=str(free_port()), BROKER_ADMIN_TOKEN=token
    ) as (_proc, lines):
        assert token not in "".join(lines)
        assert "role=api" in "".join(lines)
