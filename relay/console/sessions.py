"""Console sessions: signed cookies, CSRF tokens, and the login rate limit.

A session cookie is `<expires>.<nonce>.<mac>`: the expiry (Unix seconds), 16
random bytes, and an HMAC-SHA256 over both under a key derived from the admin
token. Nothing is stored per session, so a session outlives a relay restart
(the dashboard reconnects on its own) and changing `--admin-token` ends every
session at once. Logging out adds the nonce to a bounded in-memory revocation
list until the session would have expired anyway (the browser also drops
the cookie).

The CSRF token is an HMAC of the nonce under the same key: a page embeds it,
the browser's script sends it back in `X-CSRF-Token` on every state-changing
call, and a request from another site cannot know it (with SameSite=Strict
it does not carry the cookie either: two independent defences).

The token never appears in a cookie, a URL, or a log; the cookie holds no
secret an attacker could reuse beyond the session's own lifetime.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import attrs

from relay.auth import AuthVerdict, WorkerAuth

__all__ = ["COOKIE_NAME", "CSRF_HEADER", "Session", "Sessions"]

COOKIE_NAME = "modelrelay_console"
CSRF_HEADER = "x-csrf-token"
_MAX_REVOKED = 10_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@attrs.frozen
class Session:
    """A valid session: its nonce (its identity) and when it expires (Unix seconds)."""

    nonce: str
    expires: int


@attrs.define(eq=False)
class Sessions:
    """Owns the console's signing key, the logged-out sessions and the login limiter.

    Build with `Sessions.for_token(admin_token, lifetime)`.
    """

    key: bytes = attrs.field(repr=False)
    lifetime: float
    login: WorkerAuth = attrs.field(repr=False)
    _revoked: dict[str, int] = attrs.field(factory=dict)

    @classmethod
    def for_token(
        cls,
        admin_token: str,
        lifetime: float,
        *,
        limit: int = 10,
        window: float = 60.0,
        login: WorkerAuth | None = None,
    ) -> Sessions:
        token = admin_token.encode("utf-8", "surrogateescape")
        # A derived key: the cookie's MAC never uses the token itself.
        key = hmac.new(token, b"modelrelay console session v1", hashlib.sha256).digest()
        # The same per-address failure limit as worker auth; its "secret" is the
        # token. The relay passes the admin API's own (`Relay.admin_auth`): one
        # token, one count of wrong guesses per address.
        if login is None:
            login = WorkerAuth(token, limit=limit, window=window)
        return cls(key, lifetime, login)

    def check_login(self, peer: str, presented: str, monotonic: float) -> AuthVerdict:
        """Judge one login attempt: 200, 401, or 429 with `retry_after` (see `WorkerAuth`)."""
        return self.login.check(peer, presented, monotonic)

    def _mac(self, text: str) -> str:
        return _b64(hmac.new(self.key, text.encode("ascii"), hashlib.sha256).digest())

    def issue(self, now: float) -> str:
        """A new session cookie's value, valid for `lifetime` seconds from `now` (Unix)."""
        body = f"{int(now + self.lifetime)}.{_b64(secrets.token_bytes(16))}"
        return f"{body}.{self._mac(body)}"

    def check(self, cookie: str | None, now: float) -> Session | None:
        """The session `cookie` stands for, or None: forged, expired or logged out."""
        if not cookie or len(cookie) > 200:
            return None
        expires_text, _, rest = cookie.partition(".")
        nonce, _, mac = rest.partition(".")
        if not (expires_text.isdigit() and nonce and mac):
            return None
        if not hmac.compare_digest(mac, self._mac(f"{expires_text}.{nonce}")):
            return None
        expires = int(expires_text)
        if expires <= now or nonce in self._revoked:
            return None
        return Session(nonce, expires)

    def alive(self, session: Session, now: float) -> bool:
        """Whether `session` (checked earlier) is still valid: not expired, not logged out."""
        return session.expires > now and session.nonce not in self._revoked

    def revoke(self, session: Session, now: float) -> None:
        """Log `session` out (until it would have expired)."""
        if len(self._revoked) >= _MAX_REVOKED:
            self._revoked = {n: e for n, e in self._revoked.items() if e > now}
            if len(self._revoked) >= _MAX_REVOKED:  # all live: forget the soonest to expire
                for nonce in sorted(self._revoked, key=self._revoked.__getitem__)[
                    : _MAX_REVOKED // 2
                ]:
                    del self._revoked[nonce]
        self._revoked[session.nonce] = session.expires

    def csrf_token(self, session: Session) -> str:
        """The CSRF token the console's pages embed for `session`."""
        return self._mac(f"csrf.{session.nonce}")

    def check_csrf(self, session: Session, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "surrogateescape"),
            self.csrf_token(session).encode("ascii"),
        )
