"""Client API-key checks (relay/auth.py `ClientAuth`) against a real SQLite key store."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from relay.auth import ClientAuth
from relay.errors import Unauthorized
from relay.keys import SQLITE_FILE, KeyStore, NewKey, SqliteDatabase

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
async def store(tmp_path: Path, nursery: trio.Nursery) -> KeyStore:
    keys = KeyStore(SqliteDatabase(tmp_path / "data" / SQLITE_FILE))
    with trio.fail_after(10):
        await nursery.start(keys.run)
    return keys


@pytest.fixture
async def key(store: KeyStore) -> NewKey:
    with trio.fail_after(10):
        return await store.create("alice")


def _raw(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in pairs]


async def test_without_required_keys_the_credential_is_forwarded(store: KeyStore) -> None:
    auth = ClientAuth(store, required=False)
    forwarded, key_id = auth.authorize(
        _raw(("authorization", "Bearer sk-x"), ("anthropic-version", "1"))
    )
    assert key_id is None
    assert forwarded["authorization"] == "Bearer sk-x"  # the backend's own key, maybe


async def test_a_valid_key_is_consumed_and_named(store: KeyStore, key: NewKey) -> None:
    auth = ClientAuth(store, required=True)
    for header in (("authorization", f"Bearer {key.secret}"), ("x-api-key", key.secret)):
        forwarded, key_id = auth.authorize(_raw(header, ("anthropic-version", "1")))
        assert key_id == key.key.id
        assert "authorization" not in forwarded
        assert "x-api-key" not in forwarded  # a relay key never reaches a worker
        assert forwarded["anthropic-version"] == "1"


async def test_one_valid_credential_among_two_is_enough(store: KeyStore, key: NewKey) -> None:
    auth = ClientAuth(store, required=True)
    headers = [("Authorization", "Bearer sk-ant-other"), ("X-Api-Key", key.secret)]
    assert auth.check_key(headers) == key.key.id


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ([], "requires an API key"),
        ([("authorization", "Basic abc")], "requires an API key"),
        ([("x-api-key", "sk-not-ours")], "start with 'mr-'"),
        ([("authorization", "Bearer mr-unknown")], "not valid"),
    ],
)
async def test_no_valid_key_is_unauthorized(store: KeyStore, headers, why) -> None:
    auth = ClientAuth(store, required=True)
    with pytest.raises(Unauthorized, match=why):
        auth.check_key(headers)


async def test_a_revoked_key_is_refused(store: KeyStore, key: NewKey) -> None:
    auth = ClientAuth(store, required=True)
    with trio.fail_after(10):
        assert await store.revoke(key.key.id)
    with pytest.raises(Unauthorized, match="revoked"):
        auth.check_key([("x-api-key", key.secret)])


async def test_without_a_key_store_no_key_is_valid() -> None:
    auth = ClientAuth(None, required=True)
    with pytest.raises(Unauthorized, match="start with 'mr-'"):
        auth.check_key([("x-api-key", "mr-anything")])
