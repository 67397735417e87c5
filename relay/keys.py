"""Client API keys: created by an operator, checked on every inference request.

A key is `mr-` followed by `secrets.token_urlsafe(32)` (256 random bits). The
relay shows it once, when it is created, and stores only its SHA-256 digest
with an opaque id, a name, a short prefix for recognition, and the times it
was created, last used and revoked.

Two databases hold keys, behind one small synchronous interface that runs in
a worker thread (`trio.to_thread.run_sync`, one call at a time per store), so
the trio loop never waits on disk or network:

- SQLite, the default: one file in `--data-dir` (directory 0700, file 0600);
- PostgreSQL with `--database-url postgresql://...` (psycopg 3, the optional
  `postgres` extra), which several relays can share.

The same database keeps two small tables beside the keys: the requests and
tokens each key has used (`Usage`, added to in batches from the relay's
in-memory per-key tallies, so it survives restarts and sums over relays), and
the names of cordoned workers (the console's and admin API's Cordon).

The hot path never touches the database. `KeyStore` keeps every key in a dict
from digest to record, loaded at start and updated at once when this relay
creates or revokes a key, so a revocation applies from the next request. Its
background task (`run`, started in the relay's root nursery) writes `last
used` times in batches every `sync_interval` seconds and, for PostgreSQL,
reloads the table so that keys created or revoked at another relay apply here
within that interval too.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import re
import secrets
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import attrs
import trio

from relay.errors import Unauthorized, Unavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import ModuleType

    import psycopg

    from relay.config import RelayConfig

__all__ = [
    "KEY_PREFIX",
    "SQLITE_FILE",
    "SYNC_INTERVAL_SECS",
    "ApiKey",
    "Database",
    "KeyStore",
    "KeyStoreError",
    "NewKey",
    "PostgresDatabase",
    "SqliteDatabase",
    "Usage",
    "hash_secret",
    "is_key_id",
    "rfc3339",
]

log = logging.getLogger("relay.keys")

KEY_PREFIX = "mr-"
SQLITE_FILE = "modelrelay.sqlite3"
SYNC_INTERVAL_SECS = 5.0
_PREFIX_CHARS = len(KEY_PREFIX) + 8
_KEY_ID = re.compile(r"key_[0-9a-f]{16}")
_TABLE = "modelrelay_api_keys"
_USAGE = "modelrelay_key_usage"
_CORDONS = "modelrelay_cordons"
_T = TypeVar("_T")


class KeyStoreError(Unavailable):
    """The key database could not be read or written (answered as 503)."""

    code = "key_store_unavailable"


def hash_secret(secret: str) -> bytes:
    """The digest a key is stored and looked up by.

    Plain SHA-256 is the right tool here, unlike for passwords: a key holds 256
    random bits, so no guessing or precomputed table can invert its digest,
    and a slow password hash (bcrypt, argon2) would only add milliseconds to
    every request on the hot path. A database leak reveals no usable key.
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def is_key_id(text: str) -> bool:
    """Whether `text` has the shape of a key id (`key_` + 16 hex digits)."""
    return _KEY_ID.fullmatch(text) is not None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(moment: dt.datetime | None) -> str | None:
    """`2026-11-26T20:31:48.761Z`, or None."""
    if moment is None:
        return None
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attrs.frozen
class ApiKey:
    """What an operator sees of a key: everything but the secret."""

    id: str
    name: str
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": rfc3339(self.created_at),
            "last_used_at": rfc3339(self.last_used_at),
            "revoked": self.revoked,
        }


@attrs.frozen
class NewKey:
    """A key just created: the only value that ever holds the whole secret."""

    key: ApiKey
    secret: str = attrs.field(repr=False)

    def to_json(self) -> dict[str, Any]:
        doc = self.key.to_json()
        del doc["last_used_at"], doc["revoked"]
        doc["key"] = self.secret
        return doc


@attrs.frozen
class Usage:
    """Requests and tokens one key has used (since it was created, over every relay)."""

    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.requests + other.requests,
            self.tokens_in + other.tokens_in,
            self.tokens_out + other.tokens_out,
        )

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.requests - other.requests,
            self.tokens_in - other.tokens_in,
            self.tokens_out - other.tokens_out,
        )

    def to_json(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
        }


@attrs.frozen
class Row:
    """One key as the database holds it."""

    id: str
    name: str
    prefix: str
    digest: bytes = attrs.field(repr=False)
    created_at: dt.datetime
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


class Database(Protocol):
    """Blocking access to the key table; called in a worker thread, one call at a time."""

    shared: bool  # other relays may change the table: reload it periodically
    errors: tuple[type[BaseException], ...]  # what its driver raises

    def open(self) -> None: ...
    def load(self) -> list[Row]: ...
    def insert(self, row: Row) -> None: ...
    def revoke(self, key_id: str, when: dt.datetime) -> bool: ...
    def touch(self, used: dict[str, dt.datetime]) -> None: ...
    def load_usage(self) -> dict[str, Usage]: ...
    def add_usage(self, deltas: dict[str, Usage]) -> None: ...
    def load_cordons(self) -> set[str]: ...
    def set_cordon(self, name: str, on: bool, when: dt.datetime) -> bool: ...
    def close(self) -> None: ...


# ---------------------------------------------------------------- SQLite

_SQLITE_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_TABLE} (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash BLOB NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
)
"""
_SQLITE_EXTRA = (
    f"CREATE TABLE IF NOT EXISTS {_USAGE} (id TEXT PRIMARY KEY, requests INTEGER NOT NULL, "
    "tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {_CORDONS} (name TEXT PRIMARY KEY, created_at TEXT NOT NULL)",
)
_COLUMNS = "id, name, prefix, key_hash, created_at, last_used_at, revoked_at"
# Adds to a key's counts (the row is created on first use); the same text in both dialects.
_ADD_USAGE = (
    f"INSERT INTO {_USAGE} (id, requests, tokens_in, tokens_out) "
    "VALUES ({p}, {p}, {p}, {p}) "
    f"ON CONFLICT (id) DO UPDATE SET requests = {_USAGE}.requests + excluded.requests, "
    f"tokens_in = {_USAGE}.tokens_in + excluded.tokens_in, "
    f"tokens_out = {_USAGE}.tokens_out + excluded.tokens_out"
)


def _to_text(moment: dt.datetime | None) -> str | None:
    # Fixed width and UTC, so SQLite's text comparison orders times correctly.
    return None if moment is None else moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _from_text(text: str | None) -> dt.datetime | None:
    return None if text is None else dt.datetime.fromisoformat(text)


@attrs.define(eq=False)
class SqliteDatabase:
    """The key table in one SQLite file, private to the relay's user."""

    path: Path
    shared: bool = False
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, OSError)
    _conn: sqlite3.Connection | None = None

    def open(self) -> None:
        directory = self.path.parent
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            directory.chmod(0o700)  # whatever the umask
        elif directory.stat().st_mode & 0o077:
            log.warning(
                "the data directory is readable by other users; chmod 700 it",
                extra={"data_dir": str(directory)},
            )
        # Created 0600 before SQLite opens it (SQLite would honour the umask).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(self.path, 0o600)
        # One call at a time (the store's limiter), from varying worker threads.
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute(_SQLITE_SCHEMA)
        for statement in _SQLITE_EXTRA:
            conn.execute(statement)
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the key store is not open")
        return self._conn

    def load(self) -> list[Row]:
        cursor = self._db().execute(f"SELECT {_COLUMNS} FROM {_TABLE} ORDER BY created_at, id")
        return [
            Row(
                id=r[0],
                name=r[1],
                prefix=r[2],
                digest=bytes(r[3]),
                created_at=_from_text(r[4]) or _now(),
                last_used_at=_from_text(r[5]),
                revoked_at=_from_text(r[6]),
            )
            for r in cursor.fetchall()
        ]

    def insert(self, row: Row) -> None:
        self._db().execute(
            f"INSERT INTO {_TABLE} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                row.id,
                row.name,
                row.prefix,
                row.digest,
                _to_text(row.created_at),
                _to_text(row.last_used_at),
                _to_text(row.revoked_at),
            ),
        )

    def revoke(self, key_id: str, when: dt.datetime) -> bool:
        cursor = self._db().execute(
            f"UPDATE {_TABLE} SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
            (_to_text(when), key_id),
        )
        return cursor.rowcount > 0

    def touch(self, used: dict[str, dt.datetime]) -> None:
        db = self._db()
        db.execute("BEGIN")
        try:
            db.executemany(
                f"UPDATE {_TABLE} SET last_used_at = MAX(COALESCE(last_used_at, ''), ?) "
                "WHERE id = ?",
                [(_to_text(when), key_id) for key_id, when in used.items()],
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def load_usage(self) -> dict[str, Usage]:
        rows = self._db().execute(f"SELECT id, requests, tokens_in, tokens_out FROM {_USAGE}")
        return {r[0]: Usage(r[1], r[2], r[3]) for r in rows.fetchall()}

    def add_usage(self, deltas: dict[str, Usage]) -> None:
        db = self._db()
        db.execute("BEGIN")
        try:
            db.executemany(
                _ADD_USAGE.format(p="?"),
                [(k, u.requests, u.tokens_in, u.tokens_out) for k, u in deltas.items()],
            )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def load_cordons(self) -> set[str]:
        return {r[0] for r in self._db().execute(f"SELECT name FROM {_CORDONS}").fetchall()}

    def set_cordon(self, name: str, on: bool, when: dt.datetime) -> bool:
        if on:
            cursor = self._db().execute(
                f"INSERT INTO {_CORDONS} (name, created_at) VALUES (?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, _to_text(when)),
            )
        else:
            cursor = self._db().execute(f"DELETE FROM {_CORDONS} WHERE name = ?", (name,))
        return cursor.rowcount > 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# ------------------------------------------------------------ PostgreSQL

_PG_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_TABLE} (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    prefix TEXT NOT NULL,
    key_hash BYTEA NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    last_used_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
)
"""
_PG_EXTRA = (
    f"CREATE TABLE IF NOT EXISTS {_USAGE} (id TEXT PRIMARY KEY, requests BIGINT NOT NULL, "
    "tokens_in BIGINT NOT NULL, tokens_out BIGINT NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {_CORDONS} (name TEXT PRIMARY KEY, "
    "created_at TIMESTAMPTZ NOT NULL)",
)
# Relays starting together must not race on CREATE TABLE (PostgreSQL can fail
# a concurrent CREATE TABLE IF NOT EXISTS); an advisory lock serialises them.
_PG_SCHEMA_LOCK = 0x6D72_6B65_7973  # "mrkeys"


def _psycopg() -> ModuleType:
    try:
        import psycopg  # an optional dependency: imported only when configured
    except ImportError:
        raise KeyStoreError(
            "--database-url needs the PostgreSQL driver: pip install 'modelrelay-server[postgres]'"
        ) from None
    return psycopg


@attrs.define(eq=False)
class PostgresDatabase:
    """The key table in PostgreSQL, shared by every relay that points at it.

    One connection in autocommit mode; it is reopened on the next call after
    it breaks (the server restarted, a network blip), so the relay recovers
    by itself.
    """

    url: str = attrs.field(repr=False)
    connect_timeout: int = 10
    shared: bool = True
    errors: tuple[type[BaseException], ...] = (OSError,)
    _conn: psycopg.Connection[Any] | None = None
    _driver: ModuleType | None = None

    def open(self) -> None:
        self._driver = _psycopg()
        self.errors = (self._driver.Error, OSError)
        conn = self._db()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
            conn.execute(_PG_SCHEMA)
            for statement in _PG_EXTRA:
                conn.execute(statement)

    def _db(self) -> psycopg.Connection[Any]:
        if self._driver is None:
            raise KeyStoreError("the key store is not open")
        if self._conn is None or self._conn.closed:
            self._conn = self._driver.connect(
                self.url,
                autocommit=True,
                connect_timeout=self.connect_timeout,
                application_name="modelrelay",
            )
        return self._conn

    def _run(self, fn: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run `fn(conn)`; once more on a fresh connection if the old one broke."""
        assert self._driver is not None
        try:
            return fn(self._db())
        except self._driver.OperationalError:
            if self._conn is not None and not self._conn.broken:
                raise
            self._discard()
            return fn(self._db())

    def _discard(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def load(self) -> list[Row]:
        def query(conn: psycopg.Connection[Any]) -> list[Row]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM {_TABLE} ORDER BY created_at, id"
            ).fetchall()
            return [
                Row(
                    id=r[0],
                    name=r[1],
                    prefix=r[2],
                    digest=bytes(r[3]),
                    created_at=r[4],
                    last_used_at=r[5],
                    revoked_at=r[6],
                )
                for r in rows
            ]

        return self._run(query)

    def insert(self, row: Row) -> None:
        self._run(
            lambda conn: conn.execute(
                f"INSERT INTO {_TABLE} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (
                    row.id,
                    row.name,
                    row.prefix,
                    row.digest,
                    row.created_at,
                    row.last_used_at,
                    row.revoked_at,
                ),
            )
        )

    def revoke(self, key_id: str, when: dt.datetime) -> bool:
        cursor = self._run(
            lambda conn: conn.execute(
                f"UPDATE {_TABLE} SET revoked_at = COALESCE(revoked_at, %s) WHERE id = %s",
                (when, key_id),
            )
        )
        return bool(cursor.rowcount > 0)

    def touch(self, used: dict[str, dt.datetime]) -> None:
        def update(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(
                    f"UPDATE {_TABLE} SET last_used_at = GREATEST(last_used_at, %s) WHERE id = %s",
                    [(when, key_id) for key_id, when in used.items()],
                )

        self._run(update)

    def load_usage(self) -> dict[str, Usage]:
        rows = self._run(
            lambda conn: conn.execute(
                f"SELECT id, requests, tokens_in, tokens_out FROM {_USAGE}"
            ).fetchall()
        )
        return {r[0]: Usage(r[1], r[2], r[3]) for r in rows}

    def add_usage(self, deltas: dict[str, Usage]) -> None:
        def update(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(
                    _ADD_USAGE.format(p="%s"),
                    [(k, u.requests, u.tokens_in, u.tokens_out) for k, u in deltas.items()],
                )

        self._run(update)

    def load_cordons(self) -> set[str]:
        rows = self._run(lambda conn: conn.execute(f"SELECT name FROM {_CORDONS}").fetchall())
        return {r[0] for r in rows}

    def set_cordon(self, name: str, on: bool, when: dt.datetime) -> bool:
        if on:
            cursor = self._run(
                lambda conn: conn.execute(
                    f"INSERT INTO {_CORDONS} (name, created_at) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO NOTHING",
                    (name, when),
                )
            )
        else:
            cursor = self._run(
                lambda conn: conn.execute(f"DELETE FROM {_CORDONS} WHERE name = %s", (name,))
            )
        return bool(cursor.rowcount > 0)

    def close(self) -> None:
        self._discard()


# ------------------------------------------------------------------ store


def _to_key(row: Row, pending: float | None) -> ApiKey:
    last_used = row.last_used_at
    if pending is not None:
        moment = dt.datetime.fromtimestamp(pending, dt.UTC)
        if last_used is None or moment > last_used:
            last_used = moment
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=last_used,
        revoked=row.revoked_at is not None,
    )


@attrs.define(eq=False)
class KeyStore:
    """Owns the in-memory key map and the database connection behind it.

    Args:
        db: the database; opened by `run()`.
        sync_interval: seconds between batched `last used` writes (and, for
            a shared database, reloads of the table).
    """

    db: Database
    sync_interval: float = SYNC_INTERVAL_SECS
    _by_hash: dict[bytes, Row] = attrs.field(factory=dict)
    _by_id: dict[str, Row] = attrs.field(factory=dict)
    # key id -> time.time() of its last use not yet written
    _pending: dict[str, float] = attrs.field(factory=dict)
    _limiter: trio.CapacityLimiter = attrs.field(factory=lambda: trio.CapacityLimiter(1))
    # bumped by each local change: a reload that overlapped one is discarded
    _version: int = 0
    _failing: bool = False
    # Per-key usage: what the database held at the last sync, and the
    # in-memory counts (usage_source) already added to it. usage_source is
    # the relay's per-key tallies, read only at a sync: no hot-path work.
    usage_source: Callable[[], dict[str, Usage]] | None = None
    _usage: dict[str, Usage] = attrs.field(factory=dict)
    _usage_written: dict[str, Usage] = attrs.field(factory=dict)
    # The cordoned worker names; on_cordons hears of each change (the hub).
    cordons: frozenset[str] = frozenset()
    on_cordons: Callable[[frozenset[str]], None] | None = None

    @classmethod
    def from_config(cls, config: RelayConfig) -> KeyStore:
        """The store `config` asks for: PostgreSQL for a database URL, else SQLite.

        Raises:
            KeyStoreError: the database URL is not a PostgreSQL one.
        """
        url = config.database_url
        if url:
            if not url.startswith(("postgresql://", "postgres://")):
                raise KeyStoreError(
                    "--database-url must be a PostgreSQL URL (postgresql://user@host/db)"
                )
            return cls(PostgresDatabase(url))
        return cls(SqliteDatabase(Path(config.data_dir) / SQLITE_FILE))

    # ---------------------------------------------------------- hot path

    def authenticate(self, secret: str) -> str:
        """The id of the valid key `secret` is; records its use.

        Raises:
            Unauthorized: no such key, or it was revoked.
        """
        digest = hash_secret(secret)
        row = self._by_hash.get(digest)
        # The dict lookup already matched the digest; compare_digest keeps the
        # final check constant-time whatever the map's internals do.
        if row is None or not hmac.compare_digest(row.digest, digest):
            raise Unauthorized(
                "the API key is not valid for this relay; check it, or ask the "
                "relay's operator for a key"
            )
        if row.revoked_at is not None:
            raise Unauthorized(
                f"the API key {row.prefix}… was revoked; ask the relay's operator for a new one"
            )
        self._pending[row.id] = time.time()
        return row.id

    def __len__(self) -> int:
        return len(self._by_id)

    def counts(self) -> tuple[int, int]:
        """(active, revoked) keys known to this relay."""
        revoked = sum(1 for row in self._by_id.values() if row.revoked_at is not None)
        return len(self._by_id) - revoked, revoked

    def usage(self, key_id: str) -> Usage:
        """What `key_id` has used: the database's sums plus counts not written yet."""
        stored = self._usage.get(key_id, Usage())
        if self.usage_source is None:
            return stored
        current = self.usage_source().get(key_id)
        if current is None:
            return stored
        return stored + (current - self._usage_written.get(key_id, Usage()))

    def snapshot(self) -> list[ApiKey]:
        """Every key this relay has loaded, oldest first, without a database call."""
        rows = sorted(self._by_id.values(), key=lambda r: (r.created_at, r.id))
        return [_to_key(row, self._pending.get(row.id)) for row in rows]

    def usage_all(self) -> dict[str, Usage]:
        """`usage()` of every key at once (reads the in-memory counts once)."""
        current = self.usage_source() if self.usage_source is not None else {}
        out = dict(self._usage)
        for key_id, now in current.items():
            unwritten = now - self._usage_written.get(key_id, Usage())
            out[key_id] = out.get(key_id, Usage()) + unwritten
        return out

    async def set_cordon(self, name: str, on: bool) -> bool:
        """Cordon (or lift the cordon on) the workers named `name`; persisted.

        Returns:
            Whether that changed anything.

        Raises:
            KeyStoreError: the database failed (nothing changed).
        """
        changed = await self._call(self.db.set_cordon, name, on, _now())
        self._set_cordons(self.cordons | {name} if on else self.cordons - {name})
        return changed

    def _set_cordons(self, names: frozenset[str] | set[str]) -> None:
        names = frozenset(names)
        if names != self.cordons:
            self.cordons = names
            if self.on_cordons is not None:
                self.on_cordons(names)

    # -------------------------------------------------------- management

    async def create(self, name: str) -> NewKey:
        """Make a new key and store its digest.

        Raises:
            KeyStoreError: the database failed.
        """
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        row = Row(
            id="key_" + secrets.token_hex(8),
            name=name,
            prefix=secret[:_PREFIX_CHARS],
            digest=hash_secret(secret),
            created_at=_now(),
        )
        await self._call(self.db.insert, row)
        self._version += 1
        self._put(row)
        log.info("api key created", extra={"key_id": row.id, "key_name": name})
        return NewKey(_to_key(row, None), secret)

    async def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first, with up-to-date `last_used_at`.

        Raises:
            KeyStoreError: the database failed.
        """
        await self.flush()
        version = self._version
        rows = await self._call(self.db.load)
        if version == self._version:
            self._replace(rows)
        return [_to_key(row, self._pending.get(row.id)) for row in rows]

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key; True if it exists. Applies here from the next request.

        Raises:
            KeyStoreError: the database failed (a key this relay knows is
                refused here all the same).
        """
        if not is_key_id(key_id):
            return False
        when = _now()
        self._version += 1
        known = self._by_id.get(key_id)
        if known is not None and known.revoked_at is None:
            # Refused from now on, even before (or if) the database agrees.
            self._put(attrs.evolve(known, revoked_at=when))
        found = await self._call(self.db.revoke, key_id, when)
        if found and known is None:
            self._version += 1
            rows = await self._call(self.db.load)
            self._replace(rows)
        if found:
            log.info("api key revoked", extra={"key_id": key_id})
        return found or known is not None

    # ---------------------------------------------------------- service

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Open the database, load the keys, then sync every `sync_interval`.

        `task_status.started()` once the keys are loaded. On cancellation the
        pending `last used` times are written (bounded) and the database closed.

        Raises:
            KeyStoreError: the database cannot be opened or read at start.
        """
        try:
            await self._call(self.db.open)
        except KeyStoreError as exc:
            raise KeyStoreError(
                f"cannot open the key store ({self._describe()}): {exc.__cause__ or exc}"
            ) from exc.__cause__
        try:
            self._replace(await self._call(self.db.load))
            self._usage = await self._call(self.db.load_usage)
            cordons = await self._call(self.db.load_cordons)
            self.cordons = frozenset()
            self._set_cordons(cordons)
            log.info(
                "key store ready",
                extra={"keys": len(self._by_id), "database": self._describe()},
            )
            task_status.started()
            while True:
                await trio.sleep(self.sync_interval)
                await self._sync_logged()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await self.flush()
                    await self.flush_usage()
                except KeyStoreError as exc:
                    log.warning(
                        "last-used times not written at shutdown", extra={"error": str(exc)}
                    )
                await trio.to_thread.run_sync(self.db.close, limiter=self._limiter)

    async def sync(self) -> None:
        """Write pending `last used` times; reload the table if it is shared.

        Raises:
            KeyStoreError: the database failed.
        """
        await self.flush()
        await self.flush_usage()
        if self.db.shared:
            version = self._version
            rows = await self._call(self.db.load)
            if version == self._version:
                self._replace(rows)
            self._usage = await self._call(self.db.load_usage)
            self._set_cordons(await self._call(self.db.load_cordons))

    async def flush_usage(self) -> None:
        """Add the per-key counts gathered since the last flush to the database.

        Raises:
            KeyStoreError: the database failed (the counts go in the next try).
        """
        if self.usage_source is None:
            return
        current = self.usage_source()
        deltas = {}
        for key_id, now in current.items():
            delta = now - self._usage_written.get(key_id, Usage())
            if delta != Usage():
                deltas[key_id] = delta
        if not deltas:
            return
        await self._call(self.db.add_usage, deltas)
        for key_id, delta in deltas.items():
            self._usage[key_id] = self._usage.get(key_id, Usage()) + delta
            self._usage_written[key_id] = current[key_id]

    async def flush(self) -> None:
        """Write the `last used` times gathered since the last flush.

        Raises:
            KeyStoreError: the database failed (the times are kept for the next try).
        """
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        used = {key_id: dt.datetime.fromtimestamp(t, dt.UTC) for key_id, t in pending.items()}
        try:
            await self._call(self.db.touch, used)
        except KeyStoreError:
            for key_id, t in pending.items():
                if self._pending.get(key_id, 0.0) < t:
                    self._pending[key_id] = t
            raise

    async def _sync_logged(self) -> None:
        try:
            await self.sync()
        except KeyStoreError as exc:
            if not self._failing:
                log.warning(
                    "key store unreachable; serving the keys already loaded",
                    extra={"error": str(exc)},
                )
            self._failing = True
        else:
            if self._failing:
                log.info("key store reachable again")
            self._failing = False

    # ---------------------------------------------------------- helpers

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        """Run a blocking database call in a worker thread, mapping its errors."""
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except KeyStoreError:
            raise
        except self.db.errors as exc:
            raise KeyStoreError(f"the key store failed: {exc}", retry_after=5) from exc

    def _put(self, row: Row) -> None:
        self._by_id[row.id] = row
        self._by_hash[row.digest] = row

    def _replace(self, rows: Iterable[Row]) -> None:
        by_id: dict[str, Row] = {}
        by_hash: dict[bytes, Row] = {}
        for row in rows:
            by_id[row.id] = row
            by_hash[row.digest] = row
        self._by_id, self._by_hash = by_id, by_hash

    def _describe(self) -> str:
        db = self.db
        if isinstance(db, SqliteDatabase):
            return f"sqlite:{db.path}"
        return "postgresql"
