"""The client key store: SQLite by default, PostgreSQL when one is available."""

from __future__ import annotations

import secrets
import sqlite3
import stat
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio

from relay.errors import Unauthorized
from relay.keys import (
    SQLITE_FILE,
    KeyStore,
    KeyStoreError,
    PostgresDatabase,
    Row,
    SqliteDatabase,
    Usage,
    hash_secret,
    is_key_id,
)
from tests.relay.conftest import make_config
from tests.relay.pg_cluster import PgCluster, pg_cluster_or_skip

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Iterator
    from pathlib import Path


def sqlite_store(tmp_path: Path) -> KeyStore:
    return KeyStore(SqliteDatabase(tmp_path / "data" / SQLITE_FILE))


@attrs.define(eq=False)
class Counting:
    """A database wrapper that counts calls and can fail on demand."""

    inner: Any
    calls: dict[str, int] = attrs.field(factory=dict)
    fail: set[str] = attrs.field(factory=set)
    touched: trio.Event = attrs.field(factory=trio.Event)

    @property
    def shared(self) -> bool:
        return bool(self.inner.shared)

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        return tuple(self.inner.errors)

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name in self.fail:
            raise sqlite3.OperationalError(f"{name} failed on purpose")

    def open(self) -> None:
        self._count("open")
        self.inner.open()

    def load(self) -> list[Row]:
        self._count("load")
        return list(self.inner.load())

    def insert(self, row: Row) -> None:
        self._count("insert")
        self.inner.insert(row)

    def revoke(self, key_id: str, when: dt.datetime) -> bool:
        self._count("revoke")
        return bool(self.inner.revoke(key_id, when))

    def touch(self, used: dict[str, dt.datetime]) -> None:
        self._count("touch")
        self.inner.touch(used)
        trio.from_thread.run_sync(self.touched.set)

    # The usage and cordon tables: passed through, not counted.
    def load_usage(self) -> dict[str, Usage]:
        return self.inner.load_usage()

    def add_usage(self, deltas: dict[str, Usage]) -> None:
        self.inner.add_usage(deltas)

    def load_cordons(self) -> set[str]:
        return self.inner.load_cordons()

    def set_cordon(self, name: str, on: bool, when: dt.datetime) -> bool:
        return self.inner.set_cordon(name, on, when)

    def close(self) -> None:
        self.inner.close()


# ------------------------------------------------------------------ SQLite


async def test_lifecycle_create_use_list_revoke(tmp_path: Path, nursery: trio.Nursery) -> None:
    store = sqlite_store(tmp_path)
    with trio.fail_after(10):
        await nursery.start(store.run)
        new = await store.create("alice")
        assert new.secret.startswith("mr-")
        assert len(new.secret) >= 3 + 43  # token_urlsafe(32): 256 random bits
        assert new.key.prefix == new.secret[:11]
        assert is_key_id(new.key.id)
        assert new.secret not in repr(new)
        doc = new.to_json()
        assert set(doc) == {"id", "name", "prefix", "created_at", "key"}
        assert doc["created_at"].endswith("Z")

        (listed,) = await store.list_keys()
        assert listed.last_used_at is None
        assert store.authenticate(new.secret) == new.key.id
        (listed,) = await store.list_keys()
        assert listed.last_used_at is not None
        assert listed.revoked is False
        assert "key" not in listed.to_json()

        assert await store.revoke(new.key.id) is True
        with pytest.raises(Unauthorized, match="revoked"):
            store.authenticate(new.secret)
        (listed,) = await store.list_keys()
        assert listed.revoked is True
        assert await store.revoke(new.key.id) is True  # already revoked: still known


async def test_unknown_and_malformed(tmp_path: Path, nursery: trio.Nursery) -> None:
    store = sqlite_store(tmp_path)
    with trio.fail_after(10):
        await nursery.start(store.run)
        with pytest.raises(Unauthorized, match="not valid"):
            store.authenticate("mr-" + "x" * 43)
        assert await store.revoke("nope") is False
        assert await store.revoke("key_" + "0" * 16) is False
        assert await store.revoke("key_" + "0" * 16 + "'; DROP TABLE x; --") is False


async def test_only_the_digest_is_stored(tmp_path: Path, nursery: trio.Nursery) -> None:
    store = sqlite_store(tmp_path)
    with trio.fail_after(10):
        await nursery.start(store.run)
        new = await store.create("bob")
    raw = (tmp_path / "data" / SQLITE_FILE).read_bytes()
    assert new.secret.encode() not in raw
    assert new.secret[11:].encode() not in raw  # not even the part after the prefix
    with sqlite3.connect(tmp_path / "data" / SQLITE_FILE) as db:
        (digest,) = db.execute("SELECT key_hash FROM modelrelay_api_keys").fetchone()
    assert digest == hash_secret(new.secret)


async def test_data_dir_and_file_are_private(tmp_path: Path, nursery: trio.Nursery) -> None:
    store = sqlite_store(tmp_path)
    with trio.fail_after(10):
        await nursery.start(store.run)
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "data" / SQLITE_FILE).stat().st_mode) == 0o600


async def test_keys_and_last_use_survive_a_restart(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            first = sqlite_store(tmp_path)
            await nursery.start(first.run)
            kept = await first.create("kept")
            gone = await first.create("gone")
            assert await first.revoke(gone.key.id)
            first.authenticate(kept.secret)  # pending: written by the shutdown flush
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            second = sqlite_store(tmp_path)
            await nursery.start(second.run)
            assert second.authenticate(kept.secret) == kept.key.id
            with pytest.raises(Unauthorized, match="revoked"):
                second.authenticate(gone.secret)
            listed = {k.name: k for k in await second.list_keys()}
            assert listed["kept"].last_used_at is not None
            assert listed["gone"].revoked
            nursery.cancel_scope.cancel()


async def test_last_use_is_written_in_batches(tmp_path: Path, nursery: trio.Nursery) -> None:
    db = Counting(SqliteDatabase(tmp_path / "data" / SQLITE_FILE))
    store = KeyStore(db, sync_interval=0.05)
    with trio.fail_after(10):
        await nursery.start(store.run)
        new = await store.create("busy")
        for _ in range(1000):
            store.authenticate(new.secret)
        assert db.calls.get("touch", 0) == 0  # nothing written per request
        await db.touched.wait()  # the background task's next sync
        assert db.calls["touch"] == 1
        (listed,) = await store.list_keys()
        assert listed.last_used_at is not None


async def test_database_failure_is_503_and_loses_nothing(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    db = Counting(SqliteDatabase(tmp_path / "data" / SQLITE_FILE))
    store = KeyStore(db)
    with trio.fail_after(10):
        await nursery.start(store.run)
        new = await store.create("a")
        db.fail.add("insert")
        with pytest.raises(KeyStoreError) as info:
            await store.create("b")
        assert info.value.status == 503
        store.authenticate(new.secret)
        db.fail.add("touch")
        with pytest.raises(KeyStoreError):
            await store.flush()
        db.fail.clear()
        await store.flush()  # the use recorded before the failure is written now
        with sqlite3.connect(tmp_path / "data" / SQLITE_FILE) as conn:
            (used,) = conn.execute("SELECT last_used_at FROM modelrelay_api_keys").fetchone()
        assert used is not None
        # A key this relay knows is refused at once, even if the database is down.
        db.fail.add("revoke")
        with pytest.raises(KeyStoreError):
            await store.revoke(new.key.id)
        with pytest.raises(Unauthorized):
            store.authenticate(new.secret)


async def test_unopenable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = KeyStore(SqliteDatabase(blocker / "sub" / SQLITE_FILE))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            with pytest.raises(KeyStoreError, match="cannot open the key store") as info:
                await nursery.start(store.run)
    assert str(blocker) in str(info.value)


def test_from_config_picks_the_database(tmp_path: Path) -> None:
    sqlite = KeyStore.from_config(make_config(tmp_path))
    assert isinstance(sqlite.db, SqliteDatabase)
    assert sqlite.db.path == tmp_path / "data" / SQLITE_FILE
    pg = KeyStore.from_config(make_config(tmp_path, database_url="postgresql://u@h/db"))
    assert isinstance(pg.db, PostgresDatabase)
    assert "u@h" not in repr(pg.db)  # the URL may hold a password
    with pytest.raises(KeyStoreError, match="PostgreSQL URL"):
        KeyStore.from_config(make_config(tmp_path, database_url="mysql://u@h/db"))


# -------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    yield from pg_cluster_or_skip()


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    import psycopg

    name = "keys_" + secrets.token_hex(6)
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_cluster.url(name)
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def test_postgres_keys_are_shared_between_relays(pg_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            # Two relays starting at once: the schema lock keeps them from racing.
            a = KeyStore(PostgresDatabase(pg_url))
            b = KeyStore(PostgresDatabase(pg_url))
            async with trio.open_nursery() as starting:
                starting.start_soon(nursery.start, a.run)
                starting.start_soon(nursery.start, b.run)

            new = await a.create("shared")
            assert a.authenticate(new.secret) == new.key.id
            with pytest.raises(Unauthorized):
                b.authenticate(new.secret)  # b has not reloaded yet
            await b.sync()
            assert b.authenticate(new.secret) == new.key.id
            await b.flush()  # b's use reaches the shared table
            (listed,) = await a.list_keys()
            assert listed.last_used_at is not None

            assert await a.revoke(new.key.id)
            with pytest.raises(Unauthorized, match="revoked"):
                a.authenticate(new.secret)  # at once where it was revoked
            await b.sync()
            with pytest.raises(Unauthorized, match="revoked"):
                b.authenticate(new.secret)  # and at the other relay after its sync

            # A key created at a and revoked through b (which never saw it).
            other = await a.create("other")
            assert await b.revoke(other.key.id)
            await a.sync()
            with pytest.raises(Unauthorized, match="revoked"):
                a.authenticate(other.secret)
            nursery.cancel_scope.cancel()


async def test_postgres_keys_survive_a_restart(pg_url: str) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            first = KeyStore(PostgresDatabase(pg_url))
            await nursery.start(first.run)
            new = await first.create("kept")
            first.authenticate(new.secret)
            nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            second = KeyStore(PostgresDatabase(pg_url))
            await nursery.start(second.run)
            assert second.authenticate(new.secret) == new.key.id
            (listed,) = await second.list_keys()
            assert listed.last_used_at is not None
            assert listed.created_at.tzinfo is not None
            nursery.cancel_scope.cancel()


async def test_postgres_reconnects_after_the_connection_drops(pg_url: str) -> None:
    import psycopg

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            store = KeyStore(PostgresDatabase(pg_url))
            await nursery.start(store.run)
            await store.create("before")

            def kill_others() -> None:
                with psycopg.connect(pg_url, autocommit=True) as conn:
                    conn.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'modelrelay'"
                    )

            await trio.to_thread.run_sync(kill_others)
            await store.create("after")  # one retry on a fresh connection
            assert {k.name for k in await store.list_keys()} == {"before", "after"}
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)]
)
def test_missing_postgres_skips_loudly_but_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    import tests.relay.pg_cluster as pg

    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(pg, "_bin_dir", lambda: None)
    with pytest.raises(outcome, match="PostgreSQL"):
        next(pg.pg_cluster_or_skip())
