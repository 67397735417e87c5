"""Console sessions: signed cookies, CSRF tokens, the login limit (pure logic)."""

from __future__ import annotations

from relay.console.sessions import Sessions

NOW = 1_800_000_000.0


def sessions(token: str = "admin-token", lifetime: float = 3600) -> Sessions:
    return Sessions.for_token(token, lifetime, limit=3, window=60)


def test_issued_cookie_checks_until_it_expires() -> None:
    s = sessions()
    cookie = s.issue(NOW)
    session = s.check(cookie, NOW + 10)
    assert session is not None
    assert session.expires == int(NOW + 3600)
    assert s.check(cookie, NOW + 3599) is not None
    assert s.check(cookie, NOW + 3600) is None  # expired


def test_a_session_outlives_a_relay_restart() -> None:
    # Nothing is stored per session: a relay restarted with the same token
    # accepts the cookie, so an open dashboard reconnects without a new login.
    cookie = sessions().issue(NOW)
    assert sessions().check(cookie, NOW + 60) is not None


def test_cookie_holds_no_token_and_differs_per_login() -> None:
    s = sessions("my-admin-token")
    a, b = s.issue(NOW), s.issue(NOW)
    assert a != b
    assert "my-admin-token" not in a


def test_forged_tampered_or_foreign_cookies_are_refused() -> None:
    s = sessions()
    cookie = s.issue(NOW)
    expires, nonce, mac = cookie.split(".")
    # a longer life with the old MAC
    assert s.check(f"{int(expires) + 10_000}.{nonce}.{mac}", NOW) is None
    assert s.check(f"{expires}.{nonce}x.{mac}", NOW) is None
    assert s.check(f"{expires}.{nonce}.{mac[:-1]}A", NOW) is None
    # signed under another admin token: changing the token ends every session
    assert sessions("another-token").check(cookie, NOW) is None
    for junk in (None, "", "abc", "1.2", "x.y.z", "..", "9" * 300):
        assert s.check(junk, NOW) is None


def test_logout_revokes_that_session_only() -> None:
    s = sessions()
    first, second = s.issue(NOW), s.issue(NOW)
    session = s.check(first, NOW)
    assert session is not None
    s.revoke(session, NOW)
    assert s.check(first, NOW) is None
    assert not s.alive(session, NOW)
    assert s.check(second, NOW) is not None


def test_csrf_token_is_bound_to_the_session() -> None:
    s = sessions()
    a = s.check(s.issue(NOW), NOW)
    b = s.check(s.issue(NOW), NOW)
    assert a is not None
    assert b is not None
    token = s.csrf_token(a)
    assert s.check_csrf(a, token)
    assert not s.check_csrf(b, token)
    assert not s.check_csrf(a, None)
    assert not s.check_csrf(a, "")
    assert not s.check_csrf(a, token[:-1])
    assert not s.check_csrf(a, "é" + token)


def test_login_failures_are_limited_per_address_but_the_token_always_works() -> None:
    s = sessions("right")
    for _ in range(3):
        assert s.check_login("10.0.0.1", "wrong", 0.0).status == 401
    limited = s.check_login("10.0.0.1", "wrong", 1.0)
    assert limited.status == 429
    assert limited.retry_after == 59
    assert s.check_login("10.0.0.2", "wrong", 1.0).status == 401  # another address
    assert s.check_login("10.0.0.1", "right", 1.0).status == 200
    assert s.check_login("10.0.0.1", "wrong", 61.0).status == 401  # the window passed
