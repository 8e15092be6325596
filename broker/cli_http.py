"""CLI commands that talk to a running broker over its HTTP API, as a producer or a partner would.

- ``broker emit``: send resource events from the shell (arguments, a file, or stdin).
- ``broker events tail``: follow a partner's event objects and their deliveries live.
- ``broker events resend-failed``: resend every Failed event (of one registration), with progress.

Unlike ``broker admin`` (which goes to the database), these use only the public API and a key,
so they work from any machine that can reach the broker, with exactly the rights of that key.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp

DEFAULT_URL = "http://127.0.0.1:8080"
TRACKED_PENDING_LIMIT = 50  # pending events followed individually once off the first page


class CliError(Exception):
    """Stops a command with a message on stderr and an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(CliError):
    """The broker did not answer (connection refused, timeout, 5xx): worth retrying."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def describe_problem(answer: Answer, *, index_offset: int = 0) -> str:
    """An RFC 9457 problem (or any error answer) as readable lines."""
    body = answer.body if isinstance(answer.body, dict) else {}
    title = body.get("title") or "error"
    lines = [f"error: HTTP {answer.status} {title}"]
    detail = body.get("detail") or (answer.body if isinstance(answer.body, str) else None)
    if detail:
        lines.append(f"  {str(detail)[:500]}")
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            field = _shift_index(str(error.get("field", "request")), index_offset)
            lines.append(f"  {field}: {error.get('message', '')}")
    return "\n".join(lines)


def _shift_index(field: str, offset: int) -> str:
    """``events[3].resource`` of a later batch names the item's place in the whole input."""
    if not offset:
        return field
    return re.sub(r"^events\[(\d+)\]", lambda m: f"events[{int(m.group(1)) + offset}]", field)


class Api:
    """A thin client for one broker URL and one bearer key."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._key = key

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = {"Authorization": f"Bearer {self._key}", "Accept": "application/json"}
        sent.update(headers or {})
        try:
            async with self._session.request(
                method, self._base + path, json=json, params=params, headers=sent
            ) as response:
                text = await response.text()
                body: Any = text
                if "json" in response.content_type and text:
                    try:
                        body = await response.json(content_type=None)
                    except ValueError:
                        body = text
                return Answer(response.status, body, dict(response.headers))
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(f"cannot reach the broker at {self._base}: {exc.os_error}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unreachable(f"request to {self._base}{path} failed: {exc!r}") from None

    async def expect(self, method: str, path: str, ok: int, **kwargs: Any) -> Answer:
        answer = await self.call(method, path, **kwargs)
        if answer.status != ok:
            raise CliError(describe_problem(answer))
        return answer


def _key(args: argparse.Namespace, env_var: str, what: str) -> str:
    key: str | None = args.key or os.environ.get(env_var)
    if not key:
        raise CliError(f"a {what} key is required: pass --key or set {env_var}", status=2)
    return key


def _session(timeout: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))


def _run(coro: Any) -> int:
    try:
        code: int = asyncio.run(coro)
        return code
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130


# --------------------------------------------------------------------------- emit


def read_resources(args: argparse.Namespace, stdin: TextIO) -> list[str]:
    """Resources from the arguments, then from ``--file`` (one per line; ``-`` is stdin).

    Blank lines and lines starting with ``#`` are skipped.
    """
    resources = list(args.resources)
    if args.file:
        if args.file == "-":
            resources.extend(_lines(stdin))
        else:
            try:
                with open(args.file, encoding="utf-8") as handle:
                    resources.extend(_lines(handle))
            except OSError as exc:
                raise CliError(f"cannot read {args.file}: {exc.strerror}", status=2) from None
    return resources


def _lines(lines: Iterable[str]) -> list[str]:
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


async def _emit(args: argparse.Namespace, resources: list[str]) -> int:
    from broker.progress import Progress

    key = _key(args, "BROKER_PRODUCER_KEY", "producer")
    if not resources:
        raise CliError("no resources given (arguments, --file PATH, or --file - for stdin)", 2)
    batches = [resources[i : i + args.batch] for i in range(0, len(resources), args.batch)]
    accepted = 0
    replayed = False
    async with _session(args.timeout) as session:
        api = Api(session, args.url, key)
        progress = Progress(len(resources), "emit") if len(batches) > 1 else None
        try:
            for number, batch in enumerate(batches):
                item: dict[str, str] = {"partnerId": args.partner, "eventName": args.event}
                if args.occurred_at:
                    item["occurredAt"] = args.occurred_at
                headers = {}
                if args.idempotency_key:
                    suffix = f"-{number + 1}" if len(batches) > 1 else ""
                    headers["Idempotency-Key"] = args.idempotency_key + suffix
                answer = await api.call(
                    "POST",
                    "/internal/v1/resource-events",
                    json={"events": [{**item, "resource": r} for r in batch]},
                    headers=headers,
                )
                if answer.status != 202:
                    done = f" ({accepted} accepted before this batch)" if accepted else ""
                    raise CliError(
                        describe_problem(answer, index_offset=number * args.batch) + done
                    )
                accepted += int(answer.body.get("accepted", len(batch)))
                replayed = replayed or answer.headers.get("Idempotent-Replayed") == "true"
                if args.json:
                    print(_json(answer.body))
                if progress is not None:
                    progress.advance(len(batch))
        finally:
            if progress is not None:
                progress.close()
    if not args.json:
        noun = "resource event" if accepted == 1 else "resource events"
        note = " (Idempotency-Key seen before: the first answer, nothing stored again)"
        print(f"accepted {accepted} {noun}" + (note if replayed else ""))
    return 0


def _cmd_emit(args: argparse.Namespace) -> int:
    try:
        resources = read_resources(args, sys.stdin)
    except CliError as exc:
        print(str(exc), file=sys.stderr)
        return exc.status
    return _run(_emit(args, resources))


def _json(body: Any) -> str:
    import orjson

    return orjson.dumps(body).decode()


# --------------------------------------------------------------------------- events tail


def event_line(event: dict[str, Any], previous: tuple[str, str | None] | None = None) -> str:
    """``<time>  <id>  <eventName>  <status>  <n> resources``, plus what changed since
    ``previous`` (the status and lastAttemptedAt printed before)."""
    when = event.get("lastAttemptedAt") or event.get("createdAt") or "-"
    count = len(event.get("resources") or [])
    noun = "resource" if count == 1 else "resources"
    line = (
        f"{when:<24}  {event.get('id')}  {event.get('eventName', ''):<28}  "
        f"{event.get('status', ''):<7}  {count:>4} {noun}"
    )
    if previous is not None:
        if previous[0] != event.get("status"):
            line += f"  (was {previous[0]})"
        elif previous[1] != event.get("lastAttemptedAt"):
            line += "  (attempted again)"
    return line


def _filters(args: argparse.Namespace) -> dict[str, str]:
    params: dict[str, str] = {}
    if args.registration:
        params["registrationId"] = args.registration
    if getattr(args, "status", None):
        params["status"] = args.status
    if args.event:
        params["eventName"] = args.event
    return params


class Tail:
    """Remembers what it printed; prints each event object again when its delivery moves."""

    def __init__(self, out: TextIO) -> None:
        self.seen: dict[str, tuple[str, str | None]] = {}
        self._out = out

    def show(self, events: Sequence[dict[str, Any]], *, quiet: bool = False) -> None:
        for event in sorted(events, key=lambda e: (e.get("createdAt") or "", e.get("id") or "")):
            ident = str(event.get("id"))
            state = (str(event.get("status")), event.get("lastAttemptedAt"))
            before = self.seen.get(ident)
            if before == state:
                continue
            self.seen[ident] = state
            if not quiet:
                print(event_line(event, before), file=self._out, flush=True)

    def pending_off_page(self, page_ids: set[str]) -> list[str]:
        ids = [
            i for i, (status, _) in self.seen.items() if status == "Pending" and i not in page_ids
        ]
        return ids[-TRACKED_PENDING_LIMIT:]


async def _tail(args: argparse.Namespace) -> int:
    key = _key(args, "BROKER_PARTNER_KEY", "partner")
    params = {**_filters(args), "limit": "100"}
    tail = Tail(sys.stdout)
    unreachable = False
    first = True
    async with _session(args.timeout) as session:
        api = Api(session, args.url, key)
        while True:
            try:
                answer = await api.call("GET", "/webhooks/v1/events", params=params)
                if answer.status >= 500:
                    raise Unreachable(describe_problem(answer).splitlines()[0])
                if answer.status != 200:  # a bad key or filter will not fix itself
                    raise CliError(describe_problem(answer))
                page: list[dict[str, Any]] = answer.body.get("data", [])
                if first:
                    # Like tail(1): the last few first, then everything new or changed.
                    recent = page[: args.last] if args.last > 0 else []
                    tail.show(page[len(recent) :], quiet=True)
                    tail.show(recent)
                    first = False
                else:
                    tail.show(page)
                # Events still Pending that newer ones pushed off the first page: ask for each.
                extra = []
                for ident in tail.pending_off_page({str(e.get("id")) for e in page}):
                    one = await api.call("GET", f"/webhooks/v1/events/{ident}")
                    if one.status == 200:
                        extra.append(one.body)
                    elif one.status == 404:  # purged, or its registration was deleted
                        tail.seen.pop(ident, None)
                tail.show(extra)
                if unreachable:
                    print("broker reachable again", file=sys.stderr, flush=True)
                    unreachable = False
            except Unreachable as exc:
                if args.once:
                    raise
                if not unreachable:
                    print(f"{exc}; retrying every {args.interval:g}s", file=sys.stderr, flush=True)
                    unreachable = True
            if args.once:
                return 0
            await asyncio.sleep(args.interval)


def _cmd_tail(args: argparse.Namespace) -> int:
    return _run(_tail(args))


# --------------------------------------------------------------------------- resend-failed


async def _failed_event_ids(api: Api, params: dict[str, str]) -> list[str]:
    ids: list[str] = []
    query = {**params, "status": "Failed", "limit": "500"}
    while True:
        answer = await api.expect("GET", "/webhooks/v1/events", 200, params=query)
        ids.extend(str(e["id"]) for e in answer.body.get("data", []))
        cursor = answer.body.get("nextCursor")
        if not cursor:
            return ids
        query["cursor"] = cursor


async def _resend_failed(args: argparse.Namespace) -> int:
    from broker.progress import Progress

    key = _key(args, "BROKER_PARTNER_KEY", "partner")
    async with _session(args.timeout) as session:
        api = Api(session, args.url, key)
        # Collect first, then resend: the list is fixed before anything changes status.
        ids = await _failed_event_ids(api, _filters(args))
        if not ids:
            print("no Failed events")
            return 0
        if args.dry_run:
            for ident in ids:
                print(ident)
            print(f"{len(ids)} Failed events would be resent", file=sys.stderr)
            return 0
        failures: list[str] = []
        gate = asyncio.Semaphore(args.concurrency)
        with Progress(len(ids), "resend") as progress:

            async def resend(ident: str) -> None:
                async with gate:
                    answer = await api.call("POST", f"/webhooks/v1/events/{ident}/resend")
                if answer.status != 202:
                    failures.append(f"{ident}: {describe_problem(answer).splitlines()[0]}")
                progress.advance()

            await asyncio.gather(*(resend(ident) for ident in ids))
    for failure in failures:
        print(failure, file=sys.stderr)
    print(f"resent {len(ids) - len(failures)} of {len(ids)} Failed events")
    if len(ids) > len(failures):
        print(
            "note: events of a Suspended registration wait for its restart; of a Paused one, "
            "for unpause",
            file=sys.stderr,
        )
    return 1 if failures else 0


def _cmd_resend_failed(args: argparse.Namespace) -> int:
    return _run(_resend_failed(args))


# --------------------------------------------------------------------------- parsers


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _connection_options(parser: argparse.ArgumentParser, env_var: str, what: str) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("BROKER_URL", DEFAULT_URL),
        help=f"broker base URL (env BROKER_URL, default {DEFAULT_URL})",
    )
    parser.add_argument("--key", help=f"{what} key (default: env {env_var})")
    parser.add_argument(
        "--timeout", type=_positive_float, default=30.0, help="seconds per request (default 30)"
    )


def add_parsers(sub: Any) -> None:
    """Add ``emit`` and ``events`` to the ``broker`` command's subparsers."""
    emit = sub.add_parser(
        "emit",
        help="send resource events to a broker (producer API)",
        description="Send resource events as a core system would: "
        "broker emit --partner ID --event Core.Account.Opened core/v1/dda/accounts/1 ...",
    )
    _connection_options(emit, "BROKER_PRODUCER_KEY", "producer")
    emit.add_argument("--partner", required=True, help="partner id (UUID)")
    emit.add_argument("--event", required=True, help="event type, e.g. Core.Account.Opened")
    emit.add_argument("--file", help="read resources from a file, one per line ('-': stdin)")
    emit.add_argument("--occurred-at", dest="occurred_at", help="RFC 3339 time for every item")
    emit.add_argument("--idempotency-key", dest="idempotency_key", help="Idempotency-Key header")
    emit.add_argument(
        "--batch", type=_positive_int, default=10000, help="items per request (default 10000)"
    )
    emit.add_argument("--json", action="store_true", help="print each answer as JSON")
    emit.add_argument("resources", nargs="*", metavar="RESOURCE", help="resource URI paths")
    emit.set_defaults(func=_cmd_emit)

    events = sub.add_parser("events", help="follow or resend a partner's events (partner API)")
    events_sub = events.add_subparsers(dest="events_command", required=True)

    tail = events_sub.add_parser(
        "tail",
        help="follow event objects and their delivery status live",
        description="Prints the latest events, then one line per new event or status change.",
    )
    _connection_options(tail, "BROKER_PARTNER_KEY", "partner")
    tail.add_argument("--registration", help="only this registration's events")
    tail.add_argument("--status", choices=["Pending", "Success", "Failed"])
    tail.add_argument("--event", help="only this event name")
    tail.add_argument(
        "--interval", type=_positive_float, default=1.0, help="seconds between polls (default 1)"
    )
    tail.add_argument(
        "--last", type=int, default=10, help="recent events shown at start (default 10)"
    )
    tail.add_argument("--once", action="store_true", help="print the recent events and exit")
    tail.set_defaults(func=_cmd_tail)

    resend = events_sub.add_parser(
        "resend-failed",
        help="resend every Failed event (optionally of one registration)",
    )
    _connection_options(resend, "BROKER_PARTNER_KEY", "partner")
    resend.add_argument("--registration", help="only this registration's events")
    resend.add_argument("--event", help="only this event name")
    resend.add_argument(
        "--concurrency", type=_positive_int, default=8, help="requests in flight (default 8)"
    )
    resend.add_argument("--dry-run", action="store_true", help="list the events, resend nothing")
    resend.set_defaults(func=_cmd_resend_failed)
