"""A small text progress bar for long CLI work (bulk resend, emit in batches, benchmarks).

On a terminal it redraws one line in place (at most ten times a second). When the stream is not a
terminal (CI logs, a pipe) it writes a plain line at each tenth of the way and at the end, so logs
stay short and readable. No dependency beyond the standard library.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """``with Progress(total, "resend") as bar: ... bar.advance()``."""

    def __init__(
        self,
        total: int,
        label: str = "",
        *,
        stream: TextIO | None = None,
        width: int = 30,
        interactive: bool | None = None,
    ) -> None:
        self.total = max(0, total)
        self.label = label
        self.done = 0
        self.width = width
        self._stream = stream if stream is not None else sys.stderr
        if interactive is None:
            isatty = getattr(self._stream, "isatty", None)
            interactive = bool(isatty and isatty())
        self._interactive = interactive
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._last_tenth = -1
        self._printed_done = -1
        self._closed = False

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def advance(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n) if self.total else self.done + n
        self._draw()

    def render(self) -> str:
        """The bar as text, e.g. ``resend [=========>          ]  31/100  31%  12.0/s  eta 6s``."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            fraction = self.done / self.total
            filled = int(fraction * self.width)
            arrow = ">" if filled < self.width else ""
            bar = "[" + "=" * filled + arrow + " " * (self.width - filled - len(arrow)) + "]"
            numbers = f"{self.done}/{self.total} {fraction:4.0%}"
        else:
            bar, numbers = "[" + " " * self.width + "]", f"{self.done}"
        if self.done >= self.total:
            tail = f"done in {_duration(elapsed)}"
        elif rate > 0:
            tail = f"eta {_duration((self.total - self.done) / rate)}"
        else:
            tail = "eta ?"
        prefix = f"{self.label} " if self.label else ""
        return f"{prefix}{bar} {numbers}  {rate:.1f}/s  {tail}"

    def _draw(self, *, force: bool = False) -> None:
        if self._closed:
            return
        finished = self.done >= self.total
        if self._interactive:
            now = time.monotonic()
            if force or finished or now - self._last_draw >= 0.1:
                self._last_draw = now
                self._stream.write("\r" + self.render() + "\x1b[K")
                self._stream.flush()
            return
        tenth = 10 if finished else int(10 * self.done / self.total) if self.total else 0
        if force or tenth > self._last_tenth:
            self._last_tenth = tenth
            self._printed_done = self.done
            self._stream.write(self.render() + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._closed:
            return
        if self._interactive:
            self._draw(force=True)
            self._stream.write("\n")
            self._stream.flush()
        elif self._printed_done != self.done:  # stopped early, or between two tenths
            self._draw(force=True)
        self._closed = True
