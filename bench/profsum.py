"""Summarize a ``py-spy record --format raw`` file: ``python -m bench.profsum FILE [--top N]``.

Prints the share of samples per leaf function (self time) and per function anywhere on the
stack (inclusive time), the two views used in ``bench/README.md``. Idle samples (the event loop
waiting in ``select``/``epoll``) are reported separately so the percentages are of busy time.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

IDLE = ("select (selectors.py", "_run_once (asyncio/base_events.py")
_FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^:)]+)(?::\d+)?\)$")


def short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def summarize(path: Path, top: int) -> str:
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";") if f.strip()]
        if frames and frames[-1].startswith("select (selectors.py"):
            idle += count
            continue
        total += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            incl[frame] += count
    out = [f"{path.name}: {total} busy samples, {idle} idle"]
    out.append("  self:")
    for name, n in own.most_common(top):
        out.append(f"    {100 * n / max(total, 1):5.1f}%  {name}")
    out.append("  inclusive:")
    for name, n in incl.most_common(top * 2):
        out.append(f"    {100 * n / max(total, 1):5.1f}%  {name}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for path in args.files:
        print(summarize(path, args.top))


if __name__ == "__main__":
    main()
