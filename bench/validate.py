"""Ingest validation, microseconds per item, this tree against a git revision in one run.

    .venv/bin/python -m bench.validate [--against main] [--items 10000] [--rounds 15]

Times what the handler does with a request body before the store sees it: for this tree,
``check(RESOURCE_EVENT_BATCH, raw)`` (pydantic-core over the raw bytes) plus ``resource_events``
(the store's records); for the other revision, ``orjson.loads`` plus its
``parse_resource_events``, loaded from ``git show REV:broker/api/validation.py``. Both take the
same body (1000-item batches as `make bench` sends them: 8 partners, 4 event names, `occurredAt`
set), alternately, best of ``--rounds``; the last line is JSON with ``ingest_validation_us_per_item``.
The machine's other load shifts both figures alike; the ratio is the figure to quote.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import time
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from broker.api.schema import RESOURCE_EVENT_BATCH
from broker.api.validation import check, resource_events

ROOT = Path(__file__).resolve().parents[1]


def body(items: int) -> bytes:
    partners = [str(uuid.uuid4()) for _ in range(8)]
    names = [f"Core.Account.Event{i}" for i in range(4)]
    return orjson.dumps(
        {
            "events": [
                {
                    "partnerId": partners[i % 8],
                    "eventName": names[i % 4],
                    "resource": f"core/v1/dda/accounts/{i:010d}",
                    "occurredAt": "2026-01-01T00:00:00.123Z",
                }
                for i in range(items)
            ]
        }
    )


def old_validator(rev: str) -> Callable[[bytes], Any] | None:
    try:
        source = subprocess.run(
            ["git", "show", f"{rev}:broker/api/validation.py"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except subprocess.CalledProcessError:
        return None
    module = types.ModuleType("old_validation")
    exec(compile(source, f"{rev}:broker/api/validation.py", "exec"), module.__dict__)
    parse = getattr(module, "parse_resource_events", None)
    if parse is None:  # that revision validates with the models too
        return None
    return lambda raw: parse(orjson.loads(raw), max_events=1_000_000)


def new_validator(raw: bytes) -> Any:
    batch, errors = check(RESOURCE_EVENT_BATCH, raw)
    assert not errors
    return resource_events(batch.events)


def best(run: Callable[[bytes], Any], raw: bytes) -> float:
    gc.collect()
    started = time.perf_counter()
    run(raw)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.validate", description=__doc__)
    parser.add_argument("--against", default="main")
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    raw = body(args.items)
    old = old_validator(args.against)
    new_times: list[float] = []
    old_times: list[float] = []
    for _ in range(args.rounds):
        new_times.append(best(new_validator, raw))
        if old is not None:
            old_times.append(best(old, raw))
    per_item = 1e6 / args.items
    result: dict[str, Any] = {
        "ingest_validation_us_per_item": round(min(new_times) * per_item, 2),
        "items": args.items,
    }
    if old_times:
        result[f"ingest_validation_us_per_item_{args.against}"] = round(
            min(old_times) * per_item, 2
        )
        result["speedup"] = round(min(old_times) / min(new_times), 2)
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
