"""The shell tools as an operator runs them: the real ``broker`` console script in a subprocess,
against a broker listening on 127.0.0.1 (the test server), delivering to a real receiver.

Subprocesses are started with ``asyncio.create_subprocess_exec`` so the event loop keeps serving
the broker while the CLI talks to it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.conftest import make_world, wait_until

BROKER = str(Path(sys.executable).with_name("broker"))


def cli_env(**extra: str) -> dict[str, str]:
    # A clean slate: no BROKER_* from the developer's shell leaks into what is tested.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env.update(extra)
    return env


async def run_cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        BROKER,
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env if env is not None else cli_env(),
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def base_url(client: Any) -> str:
    return str(client.make_url("/")).rstrip("/")


async def delivered_resources(receiver: Any) -> set[str]:
    return {r for d in receiver.received for r in d.json()["resources"]}


async def test_emit_from_arguments_and_stdin_is_delivered(make_client, receiver):
    client = await make_client(workers=True)
    world = await make_world(client)
    await world.register(receiver.url)
    env = cli_env(BROKER_PRODUCER_KEY=world.producer_key)
    common = ("--url", base_url(client), "--partner", world.partner_id)
    common += ("--event", "Core.Account.Opened")

    code, out, err = await run_cli(
        "emit", *common, "core/v1/dda/accounts/1", "core/v1/dda/accounts/2", env=env
    )
    assert (code, out.strip(), err) == (0, "accepted 2 resource events", "")

    lines = "core/v1/dda/accounts/3\n# a comment\n\ncore/v1/dda/accounts/1\n"
    code, out, err = await run_cli("emit", *common, "--file", "-", stdin=lines, env=env)
    assert (code, out.strip()) == (0, "accepted 2 resource events"), err

    async def all_delivered() -> bool:
        return await delivered_resources(receiver) == {
            "core/v1/dda/accounts/1",
            "core/v1/dda/accounts/2",
            "core/v1/dda/accounts/3",
        }

    await wait_until(all_delivered)


async def test_emit_reports_problems_and_batches_with_progress(make_client, tmp_path):
    client = await make_client()
    world = await make_world(client)
    url = base_url(client)
    env = cli_env(BROKER_PRODUCER_KEY=world.producer_key)
    common = ("--url", url, "--partner", world.partner_id, "--event", "Core.Account.Opened")

    # The 400 problem, item by item; nothing stored.
    code, out, err = await run_cli("emit", *common, "ok/1", "has space", env=env)
    assert code == 1 and out == ""
    assert "HTTP 400" in err
    assert "events[1].resource" in err

    # In batches of 2 the bad fourth item is named by its place in the whole input.
    source = tmp_path / "resources.txt"
    source.write_text("a/1\na/2\na/3\nbad resource\na/5\n")
    code, out, err = await run_cli("emit", *common, "--batch", "2", "--file", str(source), env=env)
    assert code == 1
    assert "events[3].resource" in err
    assert "2 accepted before this batch" in err

    source.write_text("".join(f"core/v1/cards/{i}\n" for i in range(5)))
    code, out, err = await run_cli("emit", *common, "--batch", "2", "--file", str(source), env=env)
    assert (code, out.strip()) == (0, "accepted 5 resource events"), err
    assert "emit [" in err and "5/5 100%" in err  # the progress bar, plain lines off a terminal

    # Keys: none at all is a usage error; a wrong one is the API's 401.
    code, _, err = await run_cli("emit", *common, "x/1", env=cli_env())
    assert code == 2 and "BROKER_PRODUCER_KEY" in err
    code, _, err = await run_cli("emit", *common, "--key", world.partner_key, "x/1", env=cli_env())
    assert code == 1 and "HTTP 403" in err
    code, _, err = await run_cli("emit", *common, "x/1", env=cli_env(BROKER_PRODUCER_KEY="nope"))
    assert code == 1 and "HTTP 401" in err


async def read_line_with(stream: asyncio.StreamReader, *needles: str, timeout: float = 20) -> str:
    async with asyncio.timeout(timeout):
        while True:
            raw = await stream.readline()
            assert raw, "the tail process ended"
            line = raw.decode()
            if all(n in line for n in needles):
                return line


async def test_events_tail_follows_an_event_from_pending_to_success(make_client, receiver):
    client = await make_client(workers=True, delivery_timeout_seconds=30)
    world = await make_world(client)
    reg = await world.register(receiver.url)
    release = asyncio.Event()

    async def hold(request: web.Request, n: int) -> web.StreamResponse:
        await release.wait()  # the event stays Pending until the tail has shown it so
        return web.Response(text="ok")

    receiver.behaviour = hold
    tail = await asyncio.create_subprocess_exec(
        BROKER,
        "events",
        "tail",
        "--url",
        base_url(client),
        "--interval",
        "0.1",
        "--registration",
        reg["id"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_env(BROKER_PARTNER_KEY=world.partner_key),
    )
    try:
        await world.emit(["core/v1/dda/accounts/1", "core/v1/dda/accounts/2"])
        assert tail.stdout is not None
        pending = await read_line_with(tail.stdout, "Core.Account.Opened", "Pending")
        event_id = pending.split()[1]
        assert "2 resources" in pending
        release.set()
        done = await read_line_with(tail.stdout, event_id, "Success")
        assert "(was Pending)" in done
    finally:
        release.set()
        if tail.returncode is None:
            tail.terminate()
        await tail.wait()

    code, out, err = await run_cli(
        "events",
        "tail",
        "--once",
        "--url",
        base_url(client),
        "--key",
        world.partner_key,
        env=cli_env(),
    )
    assert code == 0, err
    [line] = out.splitlines()
    assert event_id in line and "Success" in line and "Core.Account.Opened" in line

    code, _, err = await run_cli(
        "events", "tail", "--once", "--url", base_url(client), "--key", "bad", env=cli_env()
    )
    assert code == 1 and "HTTP 401" in err


async def test_resend_failed_pages_resends_and_shows_progress(make_client, receiver):
    client = await make_client(workers=True, retry_schedule=(0.05,))
    world = await make_world(client)

    async def failing(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500, text="down")

    receiver.behaviour = failing
    regs = [await world.register(f"{receiver.url}/{i}") for i in range(3)]
    await world.emit(["core/v1/dda/accounts/1"])  # one event object per registration

    async def failed(count: int) -> bool:
        resp = await client.get("/webhooks/v1/events?status=Failed", headers=world.partner)
        return len((await resp.json())["data"]) == count

    await wait_until(lambda: failed(3))
    url = base_url(client)
    env = cli_env(BROKER_PARTNER_KEY=world.partner_key)

    code, out, err = await run_cli("events", "resend-failed", "--url", url, "--dry-run", env=env)
    assert code == 0 and len(out.split()) == 3
    assert await failed(3)

    one = ("--registration", regs[0]["id"])
    code, out, err = await run_cli("events", "resend-failed", "--url", url, *one, env=env)
    assert (code, out.strip()) == (0, "resent 1 of 1 Failed events"), err
    assert await failed(2)

    code, out, err = await run_cli("events", "resend-failed", "--url", url, env=env)
    assert (code, out.strip()) == (0, "resent 2 of 2 Failed events"), err
    assert "resend [" in err and "2/2 100%" in err
    assert "Suspended registration" in err  # they wait for a restart
    assert await failed(0)
    resp = await client.get("/webhooks/v1/events?status=Pending", headers=world.partner)
    assert len((await resp.json())["data"]) == 3

    code, out, _ = await run_cli("events", "resend-failed", "--url", url, env=env)
    assert (code, out.strip()) == (0, "no Failed events")


async def test_admin_prints_readable_tables(db_url):
    db = ("--database-url", db_url)
    code, out, err = await run_cli(*db, "admin", "create-partner", "Acme Bank")
    assert code == 0, err
    header, rule, row = out.splitlines()
    assert header.split() == ["partner", "id", "name", "api", "key", "(shown", "once)"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert "Acme Bank" in row and "bk_partner_" in row

    code, out, err = await run_cli(*db, "admin", "list-partners")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["id", "name", "created"]
    assert len(lines) == 3 and "Acme Bank" in lines[2]
