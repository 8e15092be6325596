"""The ``broker`` command: serve, migrate, admin (and emit/events, in ``cli_http``).

``broker admin`` talks to the database directly (like ``manage.py``): operators can bootstrap
partners and keys before any HTTP listener exists.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from broker import __version__
from broker.config import ConfigError, Settings
from broker.logs import configure_logging


def _settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides: dict[str, Any] = {}
    for name in ("host", "port", "role", "database_url"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return settings.replace(**overrides) if overrides else settings


def _cmd_serve(args: argparse.Namespace) -> int:
    from broker.runtime import Runtime, serve
    from broker.store.db import database_url

    settings = _settings_from(args)
    configure_logging(settings)
    url = database_url(settings)
    where = (
        "embedded PostgreSQL in " + str(settings.data_dir)
        if not settings.database_url
        else "BROKER_DATABASE_URL"
    )
    print(f"database: {where}", flush=True)

    def started(runtime: Runtime) -> None:
        if runtime.generated_admin_token is not None:
            print(
                f"admin token (generated for this database, shown once): "
                f"{runtime.generated_admin_token}",
                flush=True,
            )
        elif settings.admin_token is None:
            print("admin token: the one generated when this database was first served", flush=True)

    def announce(runtime: Runtime) -> None:
        # Called once the socket is bound (after migrations): the line is true.
        print(
            f"broker {__version__} role={settings.role} listening on "
            f"http://{settings.host}:{settings.port}"
            f"  (portal: http://{settings.host}:{settings.port}/portal/)",
            flush=True,
        )

    from broker.loop import run  # uvloop where installed

    return run(serve(settings, url=url, on_started=started, on_listening=announce))


async def _with_store(settings: Settings, action: Callable[[Any], Awaitable[int]]) -> int:
    from broker.crypto import load_key_ring
    from broker.store.db import create_pool, database_url, migrate
    from broker.store.store import Store

    keys = load_key_ring(settings)
    pool = await create_pool(database_url(settings), size=2)
    try:
        async with pool.acquire() as conn:
            await migrate(conn, keys=keys)
        return await action(Store(pool, keys=keys))
    finally:
        await pool.close()


def _cmd_migrate(args: argparse.Namespace) -> int:
    from broker.crypto import load_key_ring
    from broker.store.db import create_pool, database_url, migrate

    settings = _settings_from(args)

    async def run() -> int:
        keys = load_key_ring(settings)  # migration 0003 seals existing secrets with it
        pool = await create_pool(database_url(settings), size=2)
        try:
            async with pool.acquire() as conn:
                applied = await migrate(conn, keys=keys)
        finally:
            await pool.close()
        print("applied: " + ", ".join(applied) if applied else "database is up to date")
        return 0

    return asyncio.run(run())


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _checked_text(value: str, what: str, *, min_len: int, max_len: int) -> str:
    """The same limits the admin API applies, checked before touching the database."""
    text = value.strip()
    if not min_len <= len(text) <= max_len:
        raise ValueError(f"{what} must be {min_len} to {max_len} characters (not blank)")
    return text


def _cmd_admin(args: argparse.Namespace) -> int:
    import uuid

    from broker.api.schema import DESCRIPTION_MAX_LENGTH as MAX_DESCRIPTION_LENGTH
    from broker.api.schema import NAME_MAX_LENGTH as MAX_NAME_LENGTH
    from broker.domain.ids import parse_uuid

    settings = _settings_from(args)

    async def create_partner(store: Any) -> int:
        partner, key = await store.create_partner(args.name)
        print(
            _table(
                ["partner id", "name", "api key (shown once)"],
                [[partner.id, partner.name, key.api_key]],
            )
        )
        return 0

    async def create_partner_key(store: Any) -> int:
        key = await store.create_partner_key(uuid.UUID(args.partner_id))
        if key is None:
            print(f"no partner {args.partner_id}", file=sys.stderr)
            return 1
        print(_table(["key id", "api key (shown once)"], [[key.id, key.api_key]]))
        return 0

    async def create_producer_key(store: Any) -> int:
        key = await store.create_producer_key(args.name)
        print(_table(["key id", "name", "api key (shown once)"], [[key.id, key.name, key.api_key]]))
        return 0

    async def revoke_key(store: Any) -> int:
        ok = await store.revoke_key(uuid.UUID(args.key_id))
        if not ok:
            print(f"no key {args.key_id}", file=sys.stderr)
            return 1
        print("revoked")
        return 0

    async def add_event_type(store: Any) -> int:
        from broker.api.schema import EVENT_NAME, check_value
        from broker.domain.operational import PREFIX as OPERATIONAL_PREFIX
        from broker.domain.operational import is_operational

        if check_value(EVENT_NAME, args.name, "name"):
            print(
                f"invalid event type name {args.name!r} (e.g. Core.Account.Opened)", file=sys.stderr
            )
            return 2
        if is_operational(args.name):
            print(
                f"{args.name}: the {OPERATIONAL_PREFIX} prefix is reserved for the broker's "
                "operational events",
                file=sys.stderr,
            )
            return 2
        event_type, created = await store.put_event_type(args.name, args.description)
        print(("created" if created else "updated") + f" event type {event_type.name}")
        return 0

    async def list_partners(store: Any) -> int:
        partners = await store.list_partners()
        print(
            _table(
                ["id", "name", "created"],
                [[p.id, p.name, p.created_at.isoformat()] for p in partners],
            )
        )
        return 0

    async def list_event_types(store: Any) -> int:
        types = await store.list_event_types()
        print(_table(["name", "description"], [[t.name, t.description] for t in types]))
        return 0

    async def reset_admin_token(store: Any) -> int:
        from broker.store.records import hash_key, new_api_key

        if settings.admin_token is not None:
            print("BROKER_ADMIN_TOKEN is set: change it there instead", file=sys.stderr)
            return 2
        token = new_api_key("admin")
        await store.replace_admin_token(hash_key(token))
        print(f"admin token (new, shown once; the previous one no longer works): {token}")
        return 0

    async def reencrypt(store: Any) -> int:
        await store.check_key_ring()  # names any key id the ring lacks before changing a row
        report = await store.reseal_secrets()
        print(
            f"re-sealed {report.registrations} registration(s); every stored secret is sealed "
            f"with key id {report.key_id} (the first of the key ring)"
        )
        return 0

    actions = {
        "reencrypt": reencrypt,
        "create-partner": create_partner,
        "create-partner-key": create_partner_key,
        "create-producer-key": create_producer_key,
        "revoke-key": revoke_key,
        "add-event-type": add_event_type,
        "list-partners": list_partners,
        "list-event-types": list_event_types,
        "reset-admin-token": reset_admin_token,
    }
    try:
        if args.admin_command in ("create-partner", "create-producer-key"):
            args.name = _checked_text(args.name, "name", min_len=1, max_len=MAX_NAME_LENGTH)
        if args.admin_command == "add-event-type":
            args.description = _checked_text(
                args.description, "--description", min_len=0, max_len=MAX_DESCRIPTION_LENGTH
            )
        for attr in ("partner_id", "key_id"):
            value = getattr(args, attr, None)
            if value is not None and parse_uuid(value) is None:  # fail before connecting
                raise ValueError(f"{attr.replace('_', ' ')} {value!r} is not a UUID")
        return asyncio.run(_with_store(settings, actions[args.admin_command]))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker", description="Aggregating event-batch webhook broker"
    )
    parser.add_argument("--version", action="version", version=f"broker {__version__}")
    parser.add_argument("--database-url", dest="database_url", help="overrides BROKER_DATABASE_URL")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the broker (API and/or workers)")
    serve.add_argument("--role", choices=["all", "api", "worker"])
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(func=_cmd_serve)

    migrate = sub.add_parser("migrate", help="apply pending SQL migrations")
    migrate.set_defaults(func=_cmd_migrate)

    admin = sub.add_parser("admin", help="create partners, keys and event types")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    p = admin_sub.add_parser("create-partner", help="create a partner and print its key")
    p.add_argument("name")
    p = admin_sub.add_parser("create-partner-key", help="issue another key for a partner")
    p.add_argument("partner_id")
    p = admin_sub.add_parser("create-producer-key", help="create a producer key")
    p.add_argument("name")
    p = admin_sub.add_parser("revoke-key", help="revoke a partner or producer key")
    p.add_argument("key_id")
    p = admin_sub.add_parser("add-event-type", help="add or update an event type")
    p.add_argument("name")
    p.add_argument("--description", default="")
    admin_sub.add_parser("list-partners", help="list partners")
    admin_sub.add_parser("list-event-types", help="list the event-type catalog")
    admin_sub.add_parser(
        "reset-admin-token", help="replace the generated admin token (when one was lost)"
    )
    admin_sub.add_parser(
        "reencrypt", help="re-seal every stored secret with the first BROKER_ENCRYPTION_KEYS key"
    )
    admin.set_defaults(func=_cmd_admin)

    from broker.cli_http import add_parsers  # emit, events tail, events resend-failed

    add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import asyncpg

    try:
        code = args.func(args)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        code = 2
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"database error: {exc}", file=sys.stderr)
        code = 1
    except OSError as exc:  # database unreachable, port already in use, ...
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
