"""Private PostgreSQL servers for the fault tests, so the shared server is never touched.

They use the server binaries the ``pgserver`` wheel ships (``pgserver/pginstall/bin``), else
Debian's. PostgreSQL refuses to run as root, so under root they run as the ``pgserver`` system
user, the way ``pgserver`` itself does. Each listens on 127.0.0.1 on a free port; ``stop`` and
``start`` are ``pg_ctl -m fast stop`` and ``pg_ctl start`` on the same data directory, ``kill``
is SIGKILL to the postmaster and every backend at once (the machine is gone).
:class:`ReplicatedPostgres` is a primary with a synchronous streaming standby.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from tests.fault.harness import free_port


class PrivatePostgres:
    def __init__(self) -> None:
        found = server_binaries()
        if found is None:
            raise RuntimeError("no PostgreSQL server binaries (neither pgserver's nor Debian's)")
        self.bin = found
        self.user: str | None = None
        self.root = Path(tempfile.mkdtemp(prefix="broker-pg-"))
        self.pgdata = self.root / "pgdata"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60, output: bool = False) -> str:
        # stdout is read only when asked for: pg_ctl start leaves a server running, which must
        # not hold a pipe this call waits on.
        done = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            user=self.user,
            stdout=subprocess.PIPE if output else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
        return done.stdout.decode() if output else ""

    def sql(self, *statements: str) -> None:
        for statement in statements:
            self.sql_value(statement)

    def sql_value(self, statement: str) -> str:
        return self._run(
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-XAtc",
            statement,
            output=True,
        ).strip()

    def prepare(self) -> None:
        """Make the data directory's parent usable by the server's user (root runs none)."""
        if os.geteuid() == 0:
            from pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            self.user = "pgserver"
            ensure_user_exists(self.user)
            ensure_prefix_permissions(self.bin)
            ensure_folder_permissions(self.bin, 0o055)
            ensure_folder_permissions(self.bin.parent / "lib", 0o044)
            shutil.chown(self.root, self.user, self.user)
            ensure_prefix_permissions(self.root)

    def init(self) -> PrivatePostgres:
        self.prepare()
        self._run(
            "initdb",
            "-D",
            str(self.pgdata),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=utf8",
            "--no-sync",
        )
        return self

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "30",
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "30", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster and all its children at once: no shutdown checkpoint, no
        goodbye to clients or the standby, as when the machine dies."""
        pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        psutil.wait_procs(procs, timeout=10)

    def promote(self) -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-t", "30", "promote")

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if (self.pgdata / "postmaster.pid").exists():
                self.stop("immediate")
        with contextlib.suppress(Exception):
            if (self.pgdata / "postmaster.pid").exists():
                self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def server_binaries() -> Path | None:
    """The PostgreSQL server binaries: the ``pgserver`` wheel's (a project dependency, so present
    on every machine that installed broker), else Debian's newest; None when neither exists."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from pgserver._commands import POSTGRES_BIN_PATH
        except ImportError:
            POSTGRES_BIN_PATH = None
    candidates = [Path(POSTGRES_BIN_PATH)] if POSTGRES_BIN_PATH else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for path in candidates:
        if all((path / tool).exists() for tool in ("initdb", "pg_ctl", "pg_basebackup")):
            return path
    return None


class ReplicatedPostgres:
    """A primary and a synchronous streaming-replication standby on two loopback ports.

    ``synchronous_standby_names = '*'`` with ``synchronous_commit = on``: a commit returns only
    once the standby has it, so promoting the standby after the primary dies loses nothing that
    was acknowledged. The standby is a ``pg_basebackup -R`` of the primary (hot standby, read-only
    until ``promote``)."""

    def __init__(self) -> None:
        self.primary = PrivatePostgres()
        self.standby = PrivatePostgres()

    @property
    def url(self) -> str:
        """The multi-host URL broker is given: whichever host accepts writes."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
            "/postgres?target_session_attrs=read-write"
        )

    def start(self) -> ReplicatedPostgres:
        self.primary.init()
        self.primary.start()
        self.standby.prepare()
        # -R writes standby.signal and primary_conninfo; -X stream copies the WAL made meanwhile.
        self.standby._run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.standby.pgdata),
            "-R",
            "-X",
            "stream",
            "--no-sync",
        )
        self.standby.start()
        self.primary.sql(
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "SELECT pg_reload_conf()",
        )
        deadline = time.monotonic() + 30
        while (
            self.primary.sql_value(
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'"
            )
            != "1"
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the standby did not become synchronous within 30 s")
            time.sleep(0.1)
        return self

    def destroy(self) -> None:
        self.primary.destroy()
        self.standby.destroy()
