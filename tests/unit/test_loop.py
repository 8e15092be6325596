"""The event loop switch: uvloop where installed, asyncio's own when asked (or without it)."""

from __future__ import annotations

import asyncio

import pytest

from broker import loop


def test_uvloop_is_used_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv("BROKER_EVENT_LOOP", raising=False)
    assert loop.loop_name() == "uvloop"
    created = loop.new_event_loop()
    try:
        assert isinstance(created, uvloop.Loop)
    finally:
        created.close()

    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert loop.run(which()).startswith("uvloop")


def test_the_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_EVENT_LOOP", "asyncio")
    assert loop.loop_name() == "asyncio"
    created = loop.new_event_loop()
    try:
        assert not type(created).__module__.startswith("uvloop")
    finally:
        created.close()
