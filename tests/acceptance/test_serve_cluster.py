"""Several ``broker serve`` processes on one database: one admin token, one housekeeping leader."""

from __future__ import annotations

import asyncio
import hashlib
import re
import signal
import time

import aiohttp

from tests.acceptance.test_cli import broker, free_port, serving
from tests.conftest import bearer, wait_until


async def test_two_processes_share_one_generated_admin_token_shown_only_once(db_url, db):
    first_port, second_port = free_port(), free_port()
    async with serving(db_url, BROKER_PORT=str(first_port)) as (_first, first_lines):
        found = re.search(r"admin token \(generated.*?\): (\S+)", "".join(first_lines))
        assert found, first_lines
        token = found[1]
        async with serving(db_url, "--role", "api", BROKER_PORT=str(second_port)) as (
            _second,
            second_lines,
        ):
            second_output = "".join(second_lines)
            assert token not in second_output
            assert "bk_admin_" not in second_output  # no other token was made either
            assert "admin token: the one generated" in second_output
            async with aiohttp.ClientSession() as http:
                for port in (first_port, second_port):
                    url = f"http://127.0.0.1:{port}/admin/v1/partners"
                    async with http.get(url, headers=bearer(token)) as resp:
                        assert resp.status == 200, await resp.text()
                    async with http.get(url, headers=bearer("bk_admin_" + "x" * 43)) as resp:
                        assert resp.status == 401
    rows = await db.fetch("SELECT token_hash FROM admin_token")
    assert [bytes(r["token_hash"]) for r in rows] == [hashlib.sha256(token.encode()).digest()]


async def holder_pid(db) -> int | None:
    holder = await db.fetchval(
        "SELECT holder FROM leader_leases WHERE name = 'housekeeping' AND expires_at > now()"
    )
    return None if holder is None else int(holder.split(":")[1])


async def test_housekeeping_leader_is_one_process_and_another_takes_over_when_it_dies(db_url, db):
    env = {"BROKER_LEADER_LEASE_SECONDS": "1", "BROKER_LOG_LEVEL": "WARNING"}
    async with (
        serving(db_url, "--role", "worker", BROKER_PORT=str(free_port()), **env) as (a, _),
        serving(db_url, "--role", "worker", BROKER_PORT=str(free_port()), **env) as (b, _),
    ):
        by_pid = {a.pid: a, b.pid: b}

        async def elected() -> bool:
            return await holder_pid(db) is not None

        await wait_until(elected, timeout=10)
        leader = await holder_pid(db)
        assert leader in by_pid
        # It stays with that process while it lives (renewed every third of a second).
        for _ in range(10):
            await asyncio.sleep(0.15)
            assert await holder_pid(db) == leader
        by_pid[leader].send_signal(signal.SIGKILL)  # no release: its lease must expire
        await by_pid[leader].wait()
        (survivor,) = (pid for pid in by_pid if pid != leader)
        killed = time.monotonic()

        async def taken_over() -> bool:
            return await holder_pid(db) == survivor

        await wait_until(taken_over, timeout=10)
        # Taken over once the dead holder's lease ran out, not before and not much later.
        assert time.monotonic() - killed < 1 + 1 / 3 + 1.5


async def test_resetting_the_generated_admin_token_takes_effect_in_a_running_process(db_url):
    port = free_port()
    async with serving(db_url, BROKER_PORT=str(port)) as (_proc, lines):
        old = re.search(r"admin token \(generated.*?\): (\S+)", "".join(lines))
        assert old, lines
        run = await broker(db_url, "admin", "reset-admin-token")
        assert run.code == 0, run
        new = re.search(r"admin token \(new.*?\): (\S+)", run.out)
        assert new, run.out
        assert new[1] != old[1]
        url = f"http://127.0.0.1:{port}/admin/v1/partners"
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers=bearer(old[1])) as resp:
                assert resp.status == 401  # at once, without a restart
            async with http.get(url, headers=bearer(new[1])) as resp:
                assert resp.status == 200
    configured = await broker(
        db_url, "admin", "reset-admin-token", BROKER_ADMIN_TOKEN="configured-token-0123456789"
    )
    assert configured.code == 2
    assert "BROKER_ADMIN_TOKEN" in configured.err
