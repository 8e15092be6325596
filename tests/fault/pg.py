"""A private PostgreSQL for the database-restart test, so the shared server is never touched.

It uses the server binaries the ``pgserver`` wheel ships (``pgserver/pginstall/bin``). PostgreSQL
refuses to run as root, so under root it runs as the ``pgserver`` system user, the way
``pgserver`` itself does. It listens on 127.0.0.1 on a free port; ``stop`` and ``start`` are
``pg_ctl -m fast stop`` and ``pg_ctl start`` on the same data directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.fault.harness import free_port


class PrivatePostgres:
    def __init__(self) -> None:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH

        self.bin = Path(POSTGRES_BIN_PATH)
        self.user: str | None = None
        self.root = Path(tempfile.mkdtemp(prefix="broker-pg-"))
        self.pgdata = self.root / "pgdata"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            check=True,
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )

    def init(self) -> PrivatePostgres:
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

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if (self.pgdata / "postmaster.pid").exists():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
