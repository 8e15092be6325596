"""Which event loop broker runs on: uvloop where it is installed, asyncio's own otherwise.

uvloop (libuv) makes the socket work of every role cheaper (bench/README.md has the figures).
It is a dependency only where it builds (CPython on Linux and macOS); anywhere else, or when
``BROKER_EVENT_LOOP=asyncio`` asks for the standard loop, broker runs on asyncio's loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """The constructor of the event loop to run on."""
    if os.environ.get("BROKER_EVENT_LOOP", "auto").strip().lower() != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return factory
    return asyncio.new_event_loop


def loop_name() -> str:
    return "uvloop" if loop_factory() is not asyncio.new_event_loop else "asyncio"


def new_event_loop() -> asyncio.AbstractEventLoop:
    return loop_factory()()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
