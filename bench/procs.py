"""Child processes of the benchmark: broker roles, the receiver, the ceiling client, py-spy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.httpclient import HttpConnection, build_request

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def broker_command() -> list[str]:
    script = Path(sys.executable).parent / "broker"
    return [str(script)] if script.exists() else [sys.executable, "-m", "broker"]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGTERM this child when the runner dies, even by SIGKILL (no orphans)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Proc:
    """A child process with its output in a log file; stopped by its own pid only."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            cmd,
            env=env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def rss_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in KiB from /proc; (0, 0) when gone."""
        rss = hwm = 0
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1])
                    elif line.startswith("VmHWM:"):
                        hwm = int(line.split()[1])
        except OSError:
            pass
        return rss, hwm

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)
        self._log.close()


async def wait_http(proc: Proc, port: int, path: str, timeout: float = 60.0) -> None:
    """Until ``GET path`` answers 200, the process dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    request = build_request("GET", path, port)
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.tail()}")
        conn = HttpConnection(port)
        try:
            reply = await conn.send(request, timeout=5)
            if reply.status == 200:
                return
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            await conn.close()
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready on port {port} after {timeout:.0f}s:\n{proc.tail()}")


class Profiler:
    """``py-spy record`` on one pid for a phase, in raw (collapsed stacks) format."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self._running: list[tuple[subprocess.Popen[bytes], Path]] = []
        exe = Path(sys.executable).parent / "py-spy"
        self.exe = str(exe) if exe.exists() else shutil.which("py-spy")

    @property
    def enabled(self) -> bool:
        return self.out_dir is not None and self.exe is not None

    def start(self, name: str, pid: int, seconds: float) -> None:
        if not self.enabled:
            return
        assert self.out_dir is not None and self.exe is not None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        out = self.out_dir / f"{name}.txt"
        popen = subprocess.Popen(
            [
                self.exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, int(seconds))),
                "--rate",
                "200",
                "--format",
                "raw",
                "--nonblocking",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._running.append((popen, out))

    def wait(self) -> None:
        for popen, _ in self._running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=30)
            if popen.poll() is None:
                popen.kill()
                popen.wait(timeout=5)
        self._running.clear()


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class CpuMeter:
    """CPU seconds per component, sampled every ``interval`` seconds in the background.

    Components: each child process by name, ``runner`` (this process), ``postgres`` (backends
    connected to the bench database plus the server's shared background processes: WAL writer,
    checkpointer, ...) and ``machine`` (all non-idle CPU time of the machine). ``other`` in a
    report is ``machine`` minus the rest: whatever else ran meanwhile (on a shared machine,
    someone's test suite). A process that exits loses at most one interval of its CPU time.
    """

    def __init__(self, procs: list[Proc], interval: float = 0.5) -> None:
        import psutil

        self._psutil = psutil
        self._procs = procs
        self._interval = interval
        self._last: dict[int, float] = {}
        self._handles: dict[int, Any] = {}
        self._machine_last = self._machine_busy()
        self.totals: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self.pool: Any = None
        self.db_name = ""

    def _machine_busy(self) -> float:
        t = self._psutil.cpu_times()
        return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.sample()
            await asyncio.sleep(self._interval)

    async def sample(self) -> None:
        names: dict[int, str] = {os.getpid(): "runner"}
        for proc in self._procs:
            if proc.alive():
                names[proc.pid] = proc.name
        if self.pool is not None:
            rows = await self.pool.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 OR datname IS NULL",
                self.db_name,
            )
            for row in rows:
                names.setdefault(row["pid"], "postgres")
        seen: dict[int, float] = {}
        for pid, name in names.items():
            handle = self._handles.get(pid)
            try:
                if handle is None:
                    handle = self._handles[pid] = self._psutil.Process(pid)
                t = handle.cpu_times()
            except self._psutil.Error:
                continue
            value = t.user + t.system
            seen[pid] = value
            if pid in self._last:
                self.totals[name] = self.totals.get(name, 0.0) + value - self._last[pid]
        self._last = seen
        machine = self._machine_busy()
        self.totals["machine"] = self.totals.get("machine", 0.0) + machine - self._machine_last
        self._machine_last = machine

    def snapshot(self) -> dict[str, float]:
        return dict(self.totals)


def cpu_delta(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    """Cores used per component over ``wall`` seconds (1.0 = one core busy all the time)."""
    wall = max(wall, 1e-6)
    used = {
        name: round((after[name] - before.get(name, 0.0)) / wall, 2)
        for name in after
        if after[name] - before.get(name, 0.0) > 0.005 * wall
    }
    ours = sum(v for k, v in used.items() if k != "machine")
    if "machine" in used:
        used["other"] = round(max(0.0, used["machine"] - ours), 2)
    return used
