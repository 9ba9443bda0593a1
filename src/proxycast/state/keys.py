"""Where client keys made at run time (``proxycast keys``, ``POST /admin/keys``) are kept: the machine's
SQLite file (``limits.db`` in the data directory, table ``client_keys``), or a store every instance
shares: the ledger's Postgres database (``[ledger] url = "postgresql://..."``, table ``client_keys``)
or Redis (``[state] redis_url``, one hash). With both, Postgres keeps them: it is the durable one.

Only a key's SHA-256 is stored, never the key. Every change bumps a version number, which each worker
reads every half second (one small read): a revocation is in effect everywhere within a second. The
calls are synchronous (the CLI makes them as they are; a server makes them in a worker thread), but
for :meth:`KeyStore.changed`, which says without a read whether there is anything to read: a gateway
whose keys do not change (most) pays a ``stat`` a poll, not a thread and a query.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from proxycast.core.redact import hide_password, without_password
from proxycast.state.sqlite import connect

log = logging.getLogger("proxycast")

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    import psycopg
    import redis
    from redis.cluster import RedisCluster


@attrs.frozen(kw_only=True)
class StoredKey:
    """One runtime key as stored: its settings and its digest (the hex SHA-256 of the key)."""

    name: str
    digest: str = attrs.field(repr=False)
    models: tuple[str, ...] = ()
    rpm: int | None = None
    tpm: int | None = None
    max_usd_per_day: float | None = None
    max_usd_per_month: float | None = None
    created: float
    """Unix seconds."""
    expires: float | None = None
    """Unix seconds; None: never."""

    def to_json(self) -> str:
        fields = attrs.asdict(self)
        fields["models"] = list(self.models)
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str | bytes) -> StoredKey:
        fields: dict[str, Any] = json.loads(text)
        fields["models"] = tuple(fields.get("models") or ())
        return cls(**fields)


class KeyExistsError(Exception):
    """A key of that name is already stored."""


class KeyStoreUnavailableError(Exception):
    """The store could not be reached or used; the message names it (never its password)."""


class KeyStore(Protocol):
    """The stored runtime keys (synchronous: call it in a thread from a trio program)."""

    where: str
    """Which store it is, for people (``proxycast keys`` says it): never a password."""

    def version(self) -> int:
        """A number that changes with every change of the keys (cheap: polled)."""
        ...

    def changed(self) -> bool:
        """Whether the keys may have changed since the last call (True when it cannot tell):
        called in the event loop before each poll, so it neither blocks nor reads the store."""
        ...

    def load(self) -> list[StoredKey]: ...

    def add(self, key: StoredKey) -> None:
        """Raises :class:`KeyExistsError` when the name is taken."""
        ...

    def remove(self, name: str) -> bool:
        """Whether there was one."""
        ...

    def replace(self, key: StoredKey) -> bool:
        """Store ``key`` over the one of its name; False when there is none."""
        ...

    def close(self) -> None: ...


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS client_keys (name TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS client_keys_version (id INTEGER PRIMARY KEY CHECK (id = 0), "
    "version INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO client_keys_version (id, version) VALUES (0, 0)",
)
_BUMP = "UPDATE client_keys_version SET version = version + 1 WHERE id = 0"
RECHECK_SECONDS = 30.0
"""How often the SQLite store's version is read even though its stamp says nothing changed."""


def _unavailable(what: str, url: str, exc: Exception) -> KeyStoreUnavailableError:
    return KeyStoreUnavailableError(
        f"{what} at {without_password(url)}: {hide_password(str(exc), url) or type(exc).__name__}"
    )


class SQLiteKeys:
    """The keys in the machine's SQLite file (every worker and the CLI open it)."""

    def __init__(self, path: Path) -> None:
        self.where = f"the SQLite file {path}"
        self._db = connect(path)
        self._write(lambda db: [db.execute(statement) for statement in _SCHEMA])
        # The stamp: a small file beside the database, replaced after each change of the keys (by
        # any process: the CLI, another worker). The database itself is no sign: the limiter's
        # counts are written to it twice a second under load.
        self._stamp = f"{path}-keys"
        self._seen: tuple[int, int, int] | None = None
        self._read_at: float | None = None

    def changed(self) -> bool:
        """Whether the stamp was replaced since the last call, by its time, size and inode (the
        first call: True). A time within the last two seconds counts as a change: a file system's
        clock ticks coarsely, and a change just after the last look may have left the same time.
        And every :data:`RECHECK_SECONDS` whatever the stamp says (a process that changed the keys
        and could not replace it)."""
        seen = _stat(self._stamp)
        fresh = seen is not None and seen[0] >= (time.time() - 2.0) * 1e9
        now = time.monotonic()
        changed = (
            fresh
            or seen != self._seen
            or self._read_at is None
            or now - self._read_at >= RECHECK_SECONDS
        )
        self._seen = seen
        if changed:
            self._read_at = now
        return changed

    def _stamped(self, changed: bool) -> bool:
        """After a committed change (``changed``): a new stamp, for the pollers. The change is
        made either way: a stamp that cannot be written is said, not raised."""
        if changed:
            temporary = f"{self._stamp}.{os.getpid()}.{threading.get_ident()}"
            try:
                with open(temporary, "w") as stamp:
                    stamp.write(f"{time.time_ns()}\n")
                os.replace(temporary, self._stamp)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                log.warning(
                    "the client keys changed, but %s, which tells the workers, could not be "
                    "written (%s): they read the keys within %.0f s",
                    self._stamp,
                    exc,
                    RECHECK_SECONDS,
                )
        return changed

    def _write(self, change: Any) -> Any:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            result = change(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    def version(self) -> int:
        row = self._db.execute("SELECT version FROM client_keys_version WHERE id = 0").fetchone()
        return int(row[0]) if row else 0

    def load(self) -> list[StoredKey]:
        rows = self._db.execute("SELECT record FROM client_keys ORDER BY name").fetchall()
        return [StoredKey.from_json(row[0]) for row in rows]

    def add(self, key: StoredKey) -> None:
        def insert(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO client_keys (name, record) VALUES (?, ?)",
                    (key.name, key.to_json()),
                )
            except sqlite3.IntegrityError:
                raise KeyExistsError(key.name) from None
            db.execute(_BUMP)

        self._write(insert)
        self._stamped(True)

    def remove(self, name: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            gone = db.execute("DELETE FROM client_keys WHERE name = ?", (name,)).rowcount > 0
            if gone:
                db.execute(_BUMP)
            return gone

        return self._stamped(bool(self._write(delete)))

    def replace(self, key: StoredKey) -> bool:
        def update(db: sqlite3.Connection) -> bool:
            done = (
                db.execute(
                    "UPDATE client_keys SET record = ? WHERE name = ?", (key.to_json(), key.name)
                ).rowcount
                > 0
            )
            if done:
                db.execute(_BUMP)
            return done

        return self._stamped(bool(self._write(update)))

    def close(self) -> None:
        self._db.close()


def _stat(name: str) -> tuple[int, int, int] | None:
    """A file's time (ns), size and inode; None when it is not there."""
    try:
        found = os.stat(name)
    except OSError:
        return None
    return (found.st_mtime_ns, found.st_size, found.st_ino)


class RedisKeys:
    """The keys in Redis: a hash (name -> the stored record, JSON) and a version counter, in one
    hash slot (``{PREFIX:keys}``), so that a change and its version move together (MULTI)."""

    def __init__(self, url: str, prefix: str = "proxycast", cluster: bool = False) -> None:
        import redis  # imported only when configured
        from redis.cluster import RedisCluster

        options: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
        self._redis: redis.Redis | RedisCluster = (
            RedisCluster.from_url(url, **options)
            if cluster
            else redis.Redis.from_url(url, **options)
        )
        self.where = f"Redis at {without_password(url)}"
        self._hash = "{" + prefix + ":keys}"
        self._version = self._hash + ":version"
        self._url = url
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)

    @contextlib.contextmanager
    def _reached(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise _unavailable("Redis", self._url, exc) from None

    def version(self) -> int:
        with self._reached():
            value = self._redis.get(self._version)
            return int(value) if value is not None else 0

    def changed(self) -> bool:
        return True  # only a read can tell (in a thread: a request to Redis)

    def load(self) -> list[StoredKey]:
        with self._reached():
            records: dict[Any, Any] = self._redis.hgetall(self._hash)
            return sorted((StoredKey.from_json(v) for v in records.values()), key=lambda k: k.name)

    def add(self, key: StoredKey) -> None:
        with self._reached():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hsetnx(self._hash, key.name, key.to_json())
            pipe.incr(self._version)
            added, _ = pipe.execute()
            if not added:
                raise KeyExistsError(key.name)

    def remove(self, name: str) -> bool:
        with self._reached():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(self._hash, name)
            pipe.incr(self._version)
            gone, _ = pipe.execute()
            return bool(gone)

    def replace(self, key: StoredKey) -> bool:
        # the check and the write in one step: a key revoked meanwhile is not brought back
        script = (
            "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end "
            "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) redis.call('INCR', KEYS[2]) return 1"
        )
        with self._reached():
            done = self._redis.eval(script, 2, self._hash, self._version, key.name, key.to_json())
            return bool(done)

    def close(self) -> None:
        self._redis.close()


_PG_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS client_keys (name TEXT PRIMARY KEY, record TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS client_keys_version (id INTEGER PRIMARY KEY CHECK (id = 0), "
    "version BIGINT NOT NULL)",
    "INSERT INTO client_keys_version (id, version) VALUES (0, 0) ON CONFLICT DO NOTHING",
)
_PG_SCHEMA_LOCK = int.from_bytes(b"pckeys", "big")
"""The advisory lock held while the tables are made (instances starting together)."""


class PostgresKeys:
    """The keys in a Postgres database (the ledger's): the tables of :class:`SQLiteKeys`, made on
    first use. One connection, opened when first needed (the gateway starts while Postgres is
    away) and again after it broke; every change and its version in one transaction."""

    CONNECT_SECONDS = 3

    def __init__(self, url: str) -> None:
        import psycopg  # the [postgres] extra: imported only when configured

        self._url = url
        self.where = f"Postgres at {without_password(url)}"
        self._psycopg = psycopg
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._lock = threading.Lock()  # the CLI's thread and the server's worker threads

    def __repr__(self) -> str:
        return f"<PostgresKeys {without_password(self._url)!r}>"

    def _run(self, work: Callable[[psycopg.Connection[tuple[Any, ...]]], Any]) -> Any:
        """``work(connection)`` in one transaction; psycopg's errors as
        :class:`KeyStoreUnavailableError` (the connection is made anew next time)."""
        psycopg = self._psycopg
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(
                        self._url,
                        autocommit=True,
                        connect_timeout=self.CONNECT_SECONDS,
                        application_name="proxycast",
                    )
                    with self._conn.transaction():
                        self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
                        for statement in _PG_SCHEMA:
                            self._conn.execute(statement)
                with self._conn.transaction():
                    return work(self._conn)
            except psycopg.Error as exc:
                self._drop()
                raise _unavailable("Postgres", self._url, exc) from None

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def version(self) -> int:
        def read(conn: psycopg.Connection[tuple[Any, ...]]) -> int:
            row = conn.execute("SELECT version FROM client_keys_version WHERE id = 0").fetchone()
            return int(row[0]) if row else 0

        return int(self._run(read))

    def changed(self) -> bool:
        return True  # only a read can tell (in a thread: a query)

    def load(self) -> list[StoredKey]:
        def read(conn: psycopg.Connection[tuple[Any, ...]]) -> list[StoredKey]:
            rows = conn.execute("SELECT record FROM client_keys ORDER BY name").fetchall()
            return [StoredKey.from_json(row[0]) for row in rows]

        return list(self._run(read))

    def _changed(self, statement: str, values: tuple[str, ...]) -> bool:
        """Whether ``statement`` changed a row; the version moves with it."""

        def change(conn: psycopg.Connection[tuple[Any, ...]]) -> bool:
            done = conn.execute(statement.encode(), values).rowcount > 0
            if done:
                conn.execute(_BUMP)
            return done

        return bool(self._run(change))

    def add(self, key: StoredKey) -> None:
        insert = "INSERT INTO client_keys (name, record) VALUES (%s, %s) ON CONFLICT DO NOTHING"
        if not self._changed(insert, (key.name, key.to_json())):
            raise KeyExistsError(key.name)

    def remove(self, name: str) -> bool:
        return self._changed("DELETE FROM client_keys WHERE name = %s", (name,))

    def replace(self, key: StoredKey) -> bool:
        update = "UPDATE client_keys SET record = %s WHERE name = %s"
        return self._changed(update, (key.to_json(), key.name))

    def close(self) -> None:
        with self._lock:
            self._drop()
