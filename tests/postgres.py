"""A throwaway Postgres for the tests: ``initdb`` and ``pg_ctl`` in a temporary directory, listening
on 127.0.0.1 (a free port) and on a unix socket in that directory, for the whole session; a fresh
database per test (:func:`_postgres_url`).

The binaries are found on ``PATH`` or in ``/usr/lib/postgresql/*/bin`` (Debian's ``postgresql``
package, which ``.ci/run`` installs). ``initdb`` refuses to run as root, and CI runs as root: then
the cluster runs as the ``postgres`` system user (``runuser``), in a directory it owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import psycopg
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "200",
    # a test cluster: durability costs time and proves nothing here
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def binaries() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (None: Postgres is not installed)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    """A TCP port nothing listens on now (for a server that cannot take port 0, or for none)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.define(eq=False)
class Cluster:
    """A Postgres cluster in ``folder`` (its data in ``folder/data``, its socket in ``folder``).

    Args:
        folder: an empty directory.
        settings: ``postgres -c`` settings (:data:`SETTINGS` for the tests).
    """

    folder: Path
    settings: dict[str, str] = attrs.field(factory=lambda: dict(SETTINGS))
    port: int = 0
    bin: Path = attrs.field(init=False)
    _as: list[str] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        found = binaries()
        if found is None:
            raise RuntimeError("Postgres is not installed (initdb not on PATH nor in /usr/lib)")
        self.bin = found
        if os.geteuid() == 0:  # initdb: "cannot be run as root"
            shutil.chown(self.folder, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str) -> None:
        done = subprocess.run(
            [*self._as, str(self.bin / command[0]), *command[1:]],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            log = self.folder / "postgres.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{command[0]} failed: {done.stdout}{done.stderr}{tail}")

    def init(self) -> None:
        self._run(
            "initdb", "-D", str(self.folder / "data"), "-U", "postgres", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        """Start the server (on the same port after a stop) and wait until it accepts connections."""
        for _ in range(5):
            if not self.port:
                self.port = free_port()
            options = [f"-p {self.port}", f"-k {self.folder}"]
            options += [f"-c {name}={value}" for name, value in self.settings.items()]
            try:
                self._run(
                    "pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "postgres.log"),
                    "-o", " ".join(options), "-w", "-t", "60", "start",
                )  # fmt: skip
                return
            except RuntimeError:
                if "could not bind" not in (self.folder / "postgres.log").read_text():
                    raise
                self.port = 0  # someone took the port in between: another
        raise RuntimeError("Postgres found no free port")

    def stop(self) -> None:
        """Stop the server now (``-m fast``: open connections are closed)."""
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def socket_url(self, database: str = "postgres") -> str:
        """The same database through the unix socket."""
        return f"postgresql://postgres@/{database}?host={self.folder}&port={self.port}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)


@contextlib.contextmanager
def running_cluster(settings: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A new cluster, started; stopped and deleted at the end."""
    folder = Path(tempfile.mkdtemp(prefix="proxycast-pg-"))  # /tmp: reachable by `postgres`
    try:
        cluster = Cluster(folder, dict(SETTINGS if settings is None else settings))
        cluster.init()
        cluster.start()
        try:
            yield cluster
        finally:
            with contextlib.suppress(RuntimeError):
                cluster.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(name="postgres", scope="session")
def _postgres() -> Iterator[Cluster]:
    """The session's Postgres (tests that need it are skipped where it is not installed, except
    in CI, where that is a failure)."""
    if binaries() is None and not os.environ.get("CI"):
        pytest.skip("Postgres is not installed (.ci/run installs it)")
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture(name="postgres_url")
def _postgres_url(postgres: Cluster) -> str:
    """A fresh database of the session's Postgres, for one test."""
    return postgres.create_database()
