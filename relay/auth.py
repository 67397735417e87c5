"""Who may use the relay: client API keys and worker secrets.

`ClientAuth` checks the API key an inference client presents (the proxy
and `/v1/models` ask it): with ``--require-api-keys`` a request needs a
valid, unrevoked key from the key store (relay/keys.py), and the credential
is consumed here, so a relay key never reaches a worker.

`WorkerAuth` checks an agent's worker secret, with a per-IP failure limit.
Secrets are compared in constant time. After `limit` failures from one IP
within `window` seconds, further *failing* attempts from it are answered 429
until the window passes; a correct secret is always accepted (several agents
may share a box with one bad one among them).

(The admin token is checked by the admin API's own guard, relay/admin_api.py.)
"""

from __future__ import annotations

import hmac
import math
from collections import deque
from typing import TYPE_CHECKING

import attrs

from relay.errors import Unauthorized
from relay.keys import KEY_PREFIX
from wire.limits import filter_headers

if TYPE_CHECKING:
    from collections.abc import Iterable

    from relay.keys import KeyStore

__all__ = ["AuthVerdict", "ClientAuth", "WorkerAuth"]

_MAX_TRACKED_IPS = 10_000
_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})
_NO_KEY = (
    "this relay requires an API key: send it as 'Authorization: Bearer mr-…' "
    "or 'x-api-key: mr-…'; the relay's operator issues keys"
)


@attrs.define(eq=False)
class ClientAuth:
    """Owns the client API-key check (keys live in `keys`, the relay's key store)."""

    keys: KeyStore | None
    required: bool  # --require-api-keys

    def authorize(self, headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, str], str | None]:
        """Check the client's credential; return the headers to forward and the key id.

        With `--require-api-keys` the credential (`Authorization: Bearer` or
        `x-api-key`) is consumed here: neither header is forwarded, so a relay
        key never reaches a worker.

        Raises:
            Unauthorized: keys are required and this request has no valid one.
        """
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]
        if not self.required:
            return filter_headers(pairs), None
        key_id = self.check_key(pairs)
        return filter_headers(pairs, drop=_CREDENTIAL_HEADERS), key_id

    def check_key(self, headers: Iterable[tuple[str, str]]) -> str:
        """The id of the valid client key among `headers` (any case of names).

        Any presented credential that is a valid key will do: a client may
        send both headers (one of them meant for something else).

        Raises:
            Unauthorized: none of them is a valid, unrevoked key.
        """
        keys = self.keys
        failure: Unauthorized | None = None
        for name, value in headers:
            lowered = name.lower()
            if lowered == "authorization":
                scheme, _, token = value.strip().partition(" ")
                if scheme.lower() != "bearer":
                    continue
                candidate = token.strip()
            elif lowered == "x-api-key":
                candidate = value.strip()
            else:
                continue
            if keys is None or not candidate.startswith(KEY_PREFIX):
                failure = failure or Unauthorized(
                    "the API key is not valid for this relay (relay keys start with 'mr-'); "
                    "ask the relay's operator for a key"
                )
                continue
            try:
                return keys.authenticate(candidate)
            except Unauthorized as exc:
                failure = exc
        raise failure or Unauthorized(_NO_KEY)


@attrs.frozen
class AuthVerdict:
    """The answer to one worker's upgrade attempt."""

    status: int  # 200 ok, 401 bad secret, 429 rate limited
    retry_after: int | None = None


@attrs.define(eq=False)
class WorkerAuth:
    """Owns the worker-secret check and the failures counted per IP."""

    secret: bytes = attrs.field(repr=False)
    limit: int = 10
    window: float = 60.0
    _failures: dict[str, deque[float]] = attrs.field(factory=dict)

    def check(self, ip: str, presented: str | None, now: float) -> AuthVerdict:
        """Judge one upgrade attempt from `ip` at time `now`."""
        if presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "surrogateescape"), self.secret
        ):
            return AuthVerdict(200)
        failures = self._failures.get(ip)
        if failures is not None:
            while failures and failures[0] <= now - self.window:
                failures.popleft()
            if len(failures) >= self.limit:
                # Not recorded: the window is not extended by the refusals.
                return AuthVerdict(
                    429, retry_after=max(1, math.ceil(failures[0] + self.window - now))
                )
        else:
            if len(self._failures) >= _MAX_TRACKED_IPS:
                self._prune(now)
            failures = self._failures.setdefault(ip, deque())
        failures.append(now)
        return AuthVerdict(401)

    def _prune(self, now: float) -> None:
        stale = [ip for ip, f in self._failures.items() if not f or f[-1] <= now - self.window]
        for ip in stale:
            del self._failures[ip]
        if len(self._failures) >= _MAX_TRACKED_IPS:  # all fresh: forget the oldest half
            for ip in list(self._failures)[: _MAX_TRACKED_IPS // 2]:
                del self._failures[ip]
