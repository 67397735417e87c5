"""Changes to a shared key store reach every relay within a second or two.

Relays that share one PostgreSQL database (`--database-url`) never talk to
each other: the database tells them. A relay that creates or revokes a key,
or sets or lifts a cordon, sends `NOTIFY modelrelay_keys` in the same call
(`notify()`, run by `PostgresDatabase`); every relay keeps one extra
connection that `LISTEN`s on that channel (`follow_changes`) and reloads
the keys and cordons when a notification arrives, typically within tens of
milliseconds.

The periodic reload in `KeyStore.run` (every `SYNC_INTERVAL_SECS`, 5 s)
stays as the fallback: a notification sent while a listener was
reconnecting is not queued for it, so after every (re)connect the listener
reloads once, and while it cannot connect it reloads every
`RETRY_SECS` itself.

The listening connection is only read when its socket is readable
(`trio.lowlevel.wait_readable`), and each read is a non-blocking
`notifies(timeout=0)` in a worker thread: no thread sits blocked on the
database, and cancellation (relay shutdown) is immediate.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NoReturn

import trio

if TYPE_CHECKING:
    import psycopg

    from relay.keys import KeyStore

__all__ = ["CHANNEL", "RETRY_SECS", "follow_changes", "notify"]

log = logging.getLogger("relay.keys")

CHANNEL = "modelrelay_keys"
"""The PostgreSQL notification channel every relay of a fleet listens on."""

RETRY_SECS = 2.0
"""While the listener cannot connect: reload this often, and try again."""


def notify(conn: psycopg.Connection[Any], what: str) -> None:
    """Tell every listening relay that `what` (``keys`` or ``cordons``) changed."""
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, what))


def _listen(url: str, connect_timeout: int) -> psycopg.Connection[Any]:
    import psycopg  # the optional driver; KeyStore.run opened the database first

    conn = psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=connect_timeout,
        application_name="modelrelay-listen",
    )
    try:
        conn.execute(f"LISTEN {CHANNEL}")
    except BaseException:
        conn.close()
        raise
    return conn


def _pending(conn: psycopg.Connection[Any]) -> list[str]:
    """The payloads of the notifications already received (never waits)."""
    return [n.payload for n in conn.notifies(timeout=0)]


async def follow_changes(
    store: KeyStore, url: str, *, connect_timeout: int = 10, retry_secs: float = RETRY_SECS
) -> NoReturn:
    """Reload `store` whenever another relay (or this one) changes the shared tables.

    Runs until cancelled; never raises for a database failure (it logs the
    first one, reloads every `retry_secs` meanwhile, and reconnects).
    """
    failing = False
    while True:
        conn: psycopg.Connection[Any] | None = None
        try:
            conn = await trio.to_thread.run_sync(_listen, url, connect_timeout)
            if failing:
                log.info("key change listener connected again")
            failing = False
            # Anything changed while we were not listening is read now.
            await store.reload_quietly()
            while True:
                await trio.lowlevel.wait_readable(conn.fileno())
                payloads = await trio.to_thread.run_sync(_pending, conn)
                if payloads:
                    await store.reload_quietly()
        except store.db.errors as exc:
            if not failing:
                log.warning(
                    "key change listener lost; reloading every %g s until it is back",
                    retry_secs,
                    extra={"error": str(exc)},
                )
            failing = True
        finally:
            if conn is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(conn.close)
        await trio.sleep(retry_secs)
        await store.reload_quietly()
