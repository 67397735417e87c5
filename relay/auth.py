"""Who may use the relay: client API keys and worker secrets.

`ClientAuth` checks the API key an inference client presents (the proxy
and `/v1/models` ask it): with ``--require-api-keys`` a request needs a
valid, unrevoked key from the key store (relay/keys.py), and the credential
is consumed here, so a relay key never reaches a worker.

`SecretCheck` checks a shared secret with a per-IP failure limit: an
agent's worker secret (`WorkerAuth`, relay/worker_socket.py) and the admin
token (relay/admin_api.py), each with its own limiter. Secrets are compared
in constant time. After `limit` failures from one IP within `window`
seconds, further *failing* attempts from it are answered 429 until the
window passes; a correct secret is always accepted (several agents may
share a box with one bad one among them). Each verdict says whether it is
worth a log line (`AuthVerdict.report`): the first failure from an address
in a window, and the first refusal once it is limited; the rest are
counted, not logged, so a guessing client cannot flood the log.
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

__all__ = ["AuthVerdict", "ClientAuth", "SecretCheck", "WorkerAuth"]

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
    """The answer to one attempt at a secret."""

    status: int  # 200 ok, 401 bad secret, 429 rate limited
    retry_after: int | None = None
    # Worth a log line: the first failure from this address in the window, or
    # the first refusal once it is limited (later ones are collapsed into it).
    report: bool = False
    failures: int = 0  # failures from this address within the window


@attrs.define(eq=False)
class _Failures:
    times: deque[float] = attrs.field(factory=deque)
    limit_reported: bool = False


@attrs.define(eq=False)
class SecretCheck:
    """Owns one secret's check and the failures counted per IP."""

    secret: bytes = attrs.field(repr=False)
    limit: int = 10
    window: float = 60.0
    _failures: dict[str, _Failures] = attrs.field(factory=dict)

    def check(self, ip: str, presented: str | None, now: float) -> AuthVerdict:
        """Judge one attempt from `ip` at time `now`."""
        if presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "surrogateescape"), self.secret
        ):
            return AuthVerdict(200)
        record = self._failures.get(ip)
        if record is not None:
            times = record.times
            while times and times[0] <= now - self.window:
                times.popleft()
            if len(times) >= self.limit:
                # Not recorded: the window is not extended by the refusals.
                report = not record.limit_reported
                record.limit_reported = True
                return AuthVerdict(
                    429,
                    retry_after=max(1, math.ceil(times[0] + self.window - now)),
                    report=report,
                    failures=len(times),
                )
            if not times:
                record.limit_reported = False
        else:
            if len(self._failures) >= _MAX_TRACKED_IPS:
                self._prune(now)
            record = self._failures.setdefault(ip, _Failures())
        record.times.append(now)
        return AuthVerdict(401, report=len(record.times) == 1, failures=len(record.times))

    def _prune(self, now: float) -> None:
        stale = [
            ip
            for ip, f in self._failures.items()
            if not f.times or f.times[-1] <= now - self.window
        ]
        for ip in stale:
            del self._failures[ip]
        if len(self._failures) >= _MAX_TRACKED_IPS:  # all fresh: forget the oldest half
            for ip in list(self._failures)[: _MAX_TRACKED_IPS // 2]:
                del self._failures[ip]


WorkerAuth = SecretCheck
"""The worker secret's check (the name the worker socket knows it by)."""
