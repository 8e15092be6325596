"""Soak: ``make soak`` (``python -m bench.soak --minutes 10``), not part of CI.

Real ``broker serve`` processes (one ``--role api``, two ``--role worker``) on a fresh database,
for ``--minutes`` of mixed load:

- producers ingest unique resources for two partners without pause;
- each partner has four registrations: a healthy receiver, a slow one (1 s per answer), one that
  always fails (it ends ``Suspended`` and is restarted now and then) and one that flaps (20 s up,
  20 s down: it is suspended and restarted over and over);
- every few seconds one of: pause and later unpause a healthy registration, restart the suspended
  ones, resend delivered events, replay a registration's recent history (when the API has
  replay), a test delivery;
- every ``--kill-every`` seconds one worker gets SIGKILL and is started again at once.

At the end the load stops, the flapping receivers stay up, suspended registrations (except the
always-failing ones) are restarted and paused ones unpaused, and the soak waits for the queue to
drain. It prints one JSON object and exits non-zero when a target is missed:

- the RSS of every process flat within +-15 % after its warm-up (``rss``);
- 0 acknowledged resources lost: every 202'd resource is in an event object of every
  registration of its partner (``lost``);
- 0 event objects left Pending for a deliverable registration (Active, with a receiver that
  answers: the always-failing ones keep their queue) (``pending_deliverable``);
- no 5xx answer other than 503 (``server_errors``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from bench.procs import Proc, base_env, broker_command, free_port, wait_http
from bench.run import _with_database, base_database_url

ADMIN_TOKEN = "soak-admin-token-0123456789"
EVENT_NAMES = ["Core.Account.Opened", "Core.Card.Issued", "Core.Ach.Settled"]
KINDS = ("healthy", "slow", "failing", "flapping")
WARM_UP_SECONDS = 45.0
RSS_TOLERANCE = 0.15
FLAP_PERIOD = 20.0


# ------------------------------------------------------------------------------ receivers


@dataclass
class Receivers:
    """One in-process aiohttp server; the path says how a receiver behaves."""

    port: int = 0
    started: float = field(default_factory=time.monotonic)
    flapping_up: bool = False  # forced up at the end
    ids: dict[str, Counter[str]] = field(default_factory=lambda: {k: Counter() for k in KINDS})
    answers: Counter[str] = field(default_factory=Counter)
    _runner: web.AppRunner | None = None

    def url(self, kind: str, partner: int) -> str:
        return f"http://127.0.0.1:{self.port}/{kind}/{partner}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{kind}/{partner}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _flapping_down(self) -> bool:
        if self.flapping_up:
            return False
        return int((time.monotonic() - self.started) / FLAP_PERIOD) % 2 == 1

    async def _handle(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        await request.read()
        if kind == "slow":
            await asyncio.sleep(1.0)
        ok = kind in ("healthy", "slow") or (kind == "flapping" and not self._flapping_down())
        self.answers[f"{kind}:{'ok' if ok else 'fail'}"] += 1
        if ok:
            self.ids[kind][request.headers.get("webhook-id", "")] += 1
            return web.Response(text="ok")
        return web.Response(status=500, text="down")


# ------------------------------------------------------------------------------ processes


class Fleet:
    """The broker processes: started, killed by pid, restarted, their RSS sampled."""

    def __init__(self, db_url: str, log_dir: Path, key: str) -> None:
        self.db_url = db_url
        self.log_dir = log_dir
        self.key = key
        self.procs: dict[str, Proc] = {}  # incarnation name -> process
        self.rss: dict[str, list[tuple[float, int]]] = {}
        self.started_at: dict[str, float] = {}
        self.ended_at: dict[str, float] = {}
        self.api_port = 0
        self.kills = 0

    def env(self, port: int) -> dict[str, str]:
        env = base_env()
        env.update(
            BROKER_DATABASE_URL=self.db_url,
            BROKER_ENCRYPTION_KEYS=self.key,
            BROKER_PORT=str(port),
            BROKER_ADMIN_TOKEN=ADMIN_TOKEN,
            BROKER_ALLOW_PRIVATE_URLS="true",
            BROKER_WINDOW_MIN_SECONDS="1",
            BROKER_WINDOW_MAX_SECONDS="5",
            BROKER_WINDOW_MAX_RESOURCES="500",
            BROKER_RETRY_SCHEDULE="1,2,4",
            BROKER_DELIVERY_TIMEOUT_SECONDS="3",
            BROKER_LEASE_MARGIN_SECONDS="2",
            BROKER_POLL_INTERVAL_SECONDS="0.5",
            BROKER_TEST_DELIVERY_PARTNER_RATE="0",
            BROKER_LOG_LEVEL="WARNING",
        )
        return env

    async def start(self, role: str, slot: str) -> Proc:
        port = free_port()
        incarnation = f"{slot}#{sum(1 for n in self.procs if n.startswith(slot + '#')) + 1}"
        proc = Proc(
            incarnation,
            [*broker_command(), "serve", "--role", role],
            self.env(port),
            self.log_dir,
        )
        self.procs[incarnation] = proc
        self.started_at[incarnation] = time.monotonic()
        self.rss[incarnation] = []
        await wait_http(proc, port, "/readyz" if role == "api" else "/healthz", timeout=60)
        if role == "api":
            self.api_port = port
        return proc

    def live(self, slot: str) -> str:
        return max(n for n in self.procs if n.startswith(slot + "#") and n not in self.ended_at)

    async def kill_and_restart(self, slot: str) -> None:
        name = self.live(slot)
        proc = self.procs[name]
        proc.popen.kill()  # SIGKILL, by pid
        proc.popen.wait(timeout=10)
        self.ended_at[name] = time.monotonic()
        self.kills += 1
        await self.start("worker", slot)

    def sample(self) -> None:
        now = time.monotonic()
        for name, proc in self.procs.items():
            if name not in self.ended_at and proc.alive():
                rss, _ = proc.rss_kb()
                if rss:
                    self.rss[name].append((now, rss))

    def stop_all(self) -> None:
        for name, proc in self.procs.items():
            with contextlib.suppress(Exception):
                proc.stop(timeout=15)
            self.ended_at.setdefault(name, time.monotonic())

    def rss_report(self) -> dict[str, Any]:
        """Per process: RSS after its warm-up and at its end, and the largest deviation from
        the after-warm-up value; only processes that lived at least a minute past warm-up."""
        report: dict[str, Any] = {}
        for name, samples in self.rss.items():
            start = self.started_at[name] + WARM_UP_SECONDS
            after = [rss for t, rss in samples if t >= start]
            if len(after) < 2 or samples[-1][0] - start < 60:
                continue
            base = after[0]
            deviation = max(abs(r - base) / base for r in after)
            report[name] = {
                "rss_after_warmup_mib": round(base / 1024, 1),
                "rss_end_mib": round(after[-1] / 1024, 1),
                "rss_max_mib": round(max(after) / 1024, 1),
                "max_deviation": round(deviation, 3),
                "flat": deviation <= RSS_TOLERANCE,
                "samples": len(after),
            }
        return report


# ------------------------------------------------------------------------------ the soak


@dataclass
class Partner:
    id: str
    key: str
    registrations: dict[str, str] = field(default_factory=dict)  # kind -> id

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Tally:
    acked: dict[str, set[str]] = field(default_factory=dict)  # partner id -> resources
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # any 5xx but 503
    errors: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)

    def note(self, where: str, status: int, body: bytes) -> None:
        self.statuses[status] += 1
        if status >= 500 and status != 503:
            self.server_errors.append(f"{where}: {status} {body[:200]!r}")


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.receivers = Receivers()
        self.tally = Tally()
        self.partners: list[Partner] = []
        self.producer_key = ""
        self.http: aiohttp.ClientSession | None = None
        self.stop = asyncio.Event()
        self.replay_supported = True

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.fleet.api_port}"

    async def call(
        self, method: str, path: str, *, headers: dict[str, str], json_body: Any = None
    ) -> tuple[int, Any]:
        assert self.http is not None
        try:
            async with self.http.request(
                method, self.api + path, json=json_body, headers=headers
            ) as resp:
                raw = await resp.read()
                self.tally.note(f"{method} {path}", resp.status, raw)
                try:
                    return resp.status, json.loads(raw) if raw else None
                except ValueError:
                    return resp.status, None
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.tally.errors[type(exc).__name__] += 1
            return 0, None

    async def setup(self) -> None:
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        for name in EVENT_NAMES:
            await self.call("PUT", f"/admin/v1/event-types/{name}", headers=admin, json_body={})
        _, producer = await self.call(
            "POST", "/admin/v1/producer-keys", headers=admin, json_body={"name": "soak"}
        )
        self.producer_key = producer["apiKey"]
        for index in range(2):
            _, body = await self.call(
                "POST", "/admin/v1/partners", headers=admin, json_body={"name": f"soak-{index}"}
            )
            partner = Partner(id=body["id"], key=body["apiKey"])
            for kind in KINDS:
                status, reg = await self.call(
                    "POST",
                    "/webhooks/v1/registrations",
                    headers=partner.auth,
                    json_body={"url": self.receivers.url(kind, index), "eventTypes": ["*"]},
                )
                assert status == 201, reg
                partner.registrations[kind] = reg["id"]
            self.partners.append(partner)
            self.tally.acked[partner.id] = set()

    async def produce(self, tag: str) -> None:
        seq = 0
        auth = {"Authorization": f"Bearer {self.producer_key}"}
        while not self.stop.is_set():
            seq += 1
            partner = self.partners[seq % len(self.partners)]
            name = EVENT_NAMES[seq % len(EVENT_NAMES)]
            resources = [f"{tag}/{seq}/{i}" for i in range(self.args.batch)]
            body = {
                "events": [
                    {"partnerId": partner.id, "eventName": name, "resource": r} for r in resources
                ]
            }
            status, _ = await self.call(
                "POST", "/internal/v1/resource-events", headers=auth, json_body=body
            )
            if status == 202:
                self.tally.acked[partner.id].update(resources)
            elif status in (0, 503):
                await asyncio.sleep(0.2)
            await asyncio.sleep(self.args.pause)

    async def act(self) -> None:
        """One partner action every few seconds, in turn."""
        turn = 0
        paused: list[tuple[float, Partner]] = []
        since = datetime.now(UTC)
        while not self.stop.is_set():
            await asyncio.sleep(3.0)
            turn += 1
            partner = self.partners[turn % len(self.partners)]
            regs = partner.registrations
            for at, who in list(paused):
                if time.monotonic() - at > 10:
                    await self.call(
                        "POST",
                        f"/webhooks/v1/registrations/{who.registrations['healthy']}/unpause",
                        headers=who.auth,
                    )
                    paused.remove((at, who))
                    self.tally.actions["unpause"] += 1
            step = turn % 5
            if step == 0 and not paused:
                status, _ = await self.call(
                    "POST",
                    f"/webhooks/v1/registrations/{regs['healthy']}/pause",
                    headers=partner.auth,
                )
                if status == 200:
                    paused.append((time.monotonic(), partner))
                    self.tally.actions["pause"] += 1
            elif step == 1:
                await self.restart_suspended(partner, include_failing=True)
            elif step == 2:
                status, page = await self.call(
                    "GET",
                    f"/webhooks/v1/events?registrationId={regs['slow']}&status=Success&limit=5",
                    headers=partner.auth,
                )
                for event in (page or {}).get("data", [])[:3]:
                    s, _ = await self.call(
                        "POST", f"/webhooks/v1/events/{event['id']}/resend", headers=partner.auth
                    )
                    self.tally.actions[f"resend:{s}"] += 1
            elif step == 3 and self.replay_supported:
                start = (datetime.now(UTC) - timedelta(seconds=20)).isoformat()
                status, _ = await self.call(
                    "POST",
                    f"/webhooks/v1/registrations/{regs['healthy']}/replay",
                    headers=partner.auth,
                    json_body={"since": max(start, since.isoformat())},
                )
                if status == 404:
                    self.replay_supported = False  # this API has no replay yet
                self.tally.actions[f"replay:{status}"] += 1
            elif step == 4:
                status, _ = await self.call(
                    "POST",
                    f"/webhooks/v1/registrations/{regs['healthy']}/test",
                    headers=partner.auth,
                )
                self.tally.actions[f"test:{status}"] += 1

    async def restart_suspended(self, partner: Partner, *, include_failing: bool) -> None:
        for kind, rid in partner.registrations.items():
            if kind == "failing" and not include_failing:
                continue
            status, reg = await self.call(
                "GET", f"/webhooks/v1/registrations/{rid}", headers=partner.auth
            )
            if status == 200 and reg["status"] == "Suspended":
                s, _ = await self.call(
                    "POST",
                    f"/webhooks/v1/registrations/{rid}/restart",
                    headers=partner.auth,
                    json_body={"resendFailed": kind != "failing"},
                )
                self.tally.actions[f"restart:{s}"] += 1
            elif status == 200 and reg["status"] == "Paused":
                await self.call(
                    "POST", f"/webhooks/v1/registrations/{rid}/unpause", headers=partner.auth
                )

    async def kill_workers(self) -> None:
        slot = 0
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=self.args.kill_every)
            if self.stop.is_set():
                return
            await self.fleet.kill_and_restart(f"worker{slot % 2}")
            slot += 1

    async def sample_rss(self) -> None:
        while not self.stop.is_set():
            self.fleet.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=5)

    async def drain(self, pool: asyncpg.Pool) -> tuple[int, float]:
        """Let everything deliverable be delivered; returns what is still Pending for an Active
        registration and how long the drain took."""
        self.receivers.flapping_up = True
        started = time.monotonic()
        pending = -1
        while time.monotonic() - started < self.args.drain_timeout:
            for partner in self.partners:
                await self.restart_suspended(partner, include_failing=False)
            # Deliverable: Active, and a receiver that answers (the always-failing ones stay
            # Active behind the circuit breaker, or Suspended, with their queue kept).
            pending = await pool.fetchval(
                "SELECT count(*) FROM events e JOIN registrations r ON r.id = e.registration_id"
                " WHERE e.status = 'Pending' AND r.status = 'Active'"
                " AND r.url NOT LIKE '%/failing/%'"
            )
            unsettled = await pool.fetchval(
                "SELECT count(*) FROM registrations r WHERE r.status IN ('Suspended', 'Restarting',"
                " 'Paused') AND r.url NOT LIKE '%/failing/%'"
            )
            windows = await pool.fetchval("SELECT count(*) FROM resource_events")
            if pending == 0 and unsettled == 0 and windows == 0:
                break
            await asyncio.sleep(2)
        return pending, time.monotonic() - started

    async def verdict(self, pool: asyncpg.Pool) -> dict[str, Any]:
        lost = 0
        undelivered = 0
        per_registration: dict[str, Any] = {}
        for index, partner in enumerate(self.partners):
            acked = self.tally.acked[partner.id]
            for kind, rid in partner.registrations.items():
                stored = {
                    r["res"]
                    for r in await pool.fetch(
                        "SELECT DISTINCT unnest(resources) AS res FROM events"
                        " WHERE registration_id = $1",
                        uuid.UUID(rid),
                    )
                }
                missing = len(acked - stored)
                lost += missing
                success = {
                    str(r["id"])
                    for r in await pool.fetch(
                        "SELECT id FROM events WHERE registration_id = $1 AND status = 'Success'"
                        " AND event_name <> 'test.event'",
                        uuid.UUID(rid),
                    )
                }
                not_seen = len(success - set(self.receivers.ids[kind]))
                if kind != "failing":
                    undelivered += not_seen
                status = await pool.fetchval(
                    "SELECT status FROM registrations WHERE id = $1", uuid.UUID(rid)
                )
                per_registration[f"{kind}/{index}"] = {
                    "status": status,
                    "lost": missing,
                    "success_not_received": not_seen,
                }
        return {
            "lost": lost,
            "success_not_received": undelivered,
            "registrations": per_registration,
        }

    async def run(self) -> dict[str, Any]:
        base_url, where = base_database_url()
        db_name = f"soak_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(base_url)
        await conn.execute(f'CREATE DATABASE "{db_name}"')
        await conn.close()
        db_url = _with_database(base_url, db_name)
        log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"broker-soak-{db_name}"
        log_dir.mkdir(parents=True, exist_ok=True)
        key = base64.b64encode(os.urandom(32)).decode()
        self.fleet = Fleet(db_url, log_dir, key)
        pool: asyncpg.Pool | None = None
        began = time.monotonic()
        try:
            await self.receivers.start()
            await self.fleet.start("api", "api")
            await self.fleet.start("worker", "worker0")
            await self.fleet.start("worker", "worker1")
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
            await self.setup()
            say(f"soak: {self.args.minutes} min on {where}, logs in {log_dir}")
            tasks = [asyncio.create_task(self.produce(f"p{i}")) for i in range(self.args.producers)]
            tasks += [
                asyncio.create_task(self.act()),
                asyncio.create_task(self.kill_workers()),
                asyncio.create_task(self.sample_rss()),
            ]
            deadline = began + self.args.minutes * 60
            while time.monotonic() < deadline:
                await asyncio.sleep(min(30, max(0.1, deadline - time.monotonic())))
                acked = sum(len(v) for v in self.tally.acked.values())
                say(f"  {int(time.monotonic() - began)} s: {acked} acked, kills {self.fleet.kills}")
            self.stop.set()
            await asyncio.gather(*tasks)
            pool = await asyncpg.create_pool(db_url, min_size=1, max_size=2)
            pending, drain_seconds = await self.drain(pool)
            self.fleet.sample()
            verdict = await self.verdict(pool)
            rss = self.fleet.rss_report()
            result = {
                "minutes": self.args.minutes,
                "kills": self.fleet.kills,
                "acked_resources": sum(len(v) for v in self.tally.acked.values()),
                "lost": verdict["lost"],
                "pending_deliverable": pending,
                "success_not_received": verdict["success_not_received"],
                "drain_seconds": round(drain_seconds, 1),
                "server_errors": len(self.tally.server_errors),
                "server_error_samples": self.tally.server_errors[:5],
                "statuses": dict(sorted(self.tally.statuses.items())),
                "client_errors": dict(self.tally.errors),
                "actions": dict(sorted(self.tally.actions.items())),
                "receiver_answers": dict(sorted(self.receivers.answers.items())),
                "duplicate_deliveries": sum(
                    n - 1 for ids in self.receivers.ids.values() for n in ids.values() if n > 1
                ),
                "rss": rss,
                "rss_flat": all(v["flat"] for v in rss.values()) and bool(rss),
                "registrations": verdict["registrations"],
            }
            result["ok"] = bool(
                result["lost"] == 0
                and result["pending_deliverable"] == 0
                and result["success_not_received"] == 0
                and result["server_errors"] == 0
                and result["rss_flat"]
            )
            return result
        finally:
            self.stop.set()
            if self.http is not None:
                await self.http.close()
            if pool is not None:
                await pool.close()
            self.fleet.stop_all()
            await self.receivers.close()
            if not self.args.keep:
                conn = await asyncpg.connect(base_url)
                await conn.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
                await conn.close()


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds between kills")
    parser.add_argument("--producers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=20, help="resources per ingest request")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between requests")
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--keep", action="store_true", help="keep the database at the end")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = asyncio.run(Soak(args).run())
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
