"""A real ``redis-server`` for the tests: started once per session on a free port (no persistence),
emptied before each test that uses it, and stoppable and restartable (outage tests)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis

if TYPE_CHECKING:
    from collections.abc import Iterator


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _binary() -> str:
    """``redis-server``, installed from Debian's package when missing and this is root (as
    ``.ci/run`` does); a clear failure otherwise."""
    found = shutil.which("redis-server")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "redis-server"], env=env, check=False)
        found = shutil.which("redis-server")
    if found is None:
        pytest.fail("redis-server is missing: `apt-get install redis-server` (.ci/run does)")
    return found


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self._process: subprocess.Popen[bytes] | None = None
        self._options: tuple[str, ...] = ()

    def start(self, *options: str) -> None:
        self._options = self._options or options
        self._process = subprocess.Popen(
            [
                _binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self._directory),
                *self._options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (as a crash would: no goodbye to its clients)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def client(self) -> redis.Redis:
        """A client (close it: ``with server.client() as client``)."""
        return redis.Redis.from_url(self.url, socket_timeout=2)


@pytest.fixture(scope="session")
def _redis_process() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="proxycast-redis-") as directory:
        server = RedisServer(Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(name="redis_server")
def _redis_server(_redis_process: RedisServer) -> RedisServer:
    """The session's Redis, running (restarted if a test stopped it) and empty."""
    if _redis_process._process is None:
        _redis_process.start()
    with _redis_process.client() as client:
        client.flushall()
    return _redis_process


@pytest.fixture(scope="session")
def _redis_cluster_nodes() -> Iterator[list[RedisServer]]:
    """A Redis Cluster of three masters (no replicas) on free ports."""
    with tempfile.TemporaryDirectory(prefix="proxycast-redis-cluster-") as directory:
        nodes = []
        try:
            for index in range(3):
                folder = Path(directory) / str(index)
                folder.mkdir()
                node = RedisServer(folder)
                nodes.append(node)
                node.start(
                    "--cluster-enabled", "yes",
                    "--cluster-port", str(_free_port()),  # not port + 10000: it may not exist
                    "--cluster-node-timeout", "2000",
                )  # fmt: skip
            subprocess.run(
                [
                    shutil.which("redis-cli") or "redis-cli",
                    "--cluster", "create",
                    *(f"127.0.0.1:{node.port}" for node in nodes),
                    "--cluster-replicas", "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
            )  # fmt: skip
            deadline = time.monotonic() + 20
            for node in nodes:
                with node.client() as client:
                    while client.cluster("info")["cluster_state"] != "ok":
                        assert time.monotonic() < deadline, "the cluster did not form"
                        time.sleep(0.05)
            yield nodes
        finally:
            for node in nodes:
                node.stop()


@pytest.fixture(name="redis_cluster")
def _redis_cluster(_redis_cluster_nodes: list[RedisServer]) -> str:
    """The URL of a node of the session's Redis Cluster, its masters emptied."""
    for node in _redis_cluster_nodes:
        with node.client() as client:
            client.flushall()
    return _redis_cluster_nodes[0].url
