"""Parsing `--trusted-proxies` and choosing the client from X-Forwarded-For."""

from __future__ import annotations

import pytest

from relay.proxies import TrustedProxies, client_of


def _scope(peer: str, xff: str | None = None, proto: str | None = None) -> dict[str, object]:
    headers = []
    if xff is not None:
        headers.append((b"x-forwarded-for", xff.encode()))
    if proto is not None:
        headers.append((b"x-forwarded-proto", proto.encode()))
    return {"type": "http", "client": (peer, 5555), "headers": headers}


def test_parse_names_the_bad_entry() -> None:
    assert TrustedProxies.parse("127.0.0.1, 10.0.0.0/8,::1").trusts("10.2.3.4")
    assert not TrustedProxies.parse(None)
    with pytest.raises(ValueError, match="'nginx'"):
        TrustedProxies.parse("127.0.0.1,nginx")


@pytest.mark.parametrize(
    ("peer", "xff", "proto", "expected"),
    [
        ("127.0.0.1", "198.51.100.7", "https", ("198.51.100.7", "https")),
        # A client's own header is the leftmost: the nearest untrusted entry wins.
        ("127.0.0.1", "6.6.6.6, 198.51.100.7", None, ("198.51.100.7", None)),
        # Chains of trusted proxies are walked through.
        ("127.0.0.1", "198.51.100.7, 10.0.0.2", None, ("198.51.100.7", None)),
        # A peer that is not trusted is not believed.
        ("192.0.2.1", "198.51.100.7", "https", (None, None)),
        # Garbage stops the walk at the last good address.
        ("127.0.0.1", "junk", "gopher", ("127.0.0.1", None)),
    ],
)
def test_client_of(
    peer: str, xff: str | None, proto: str | None, expected: tuple[str | None, str | None]
) -> None:
    trusted = TrustedProxies.parse("127.0.0.1,10.0.0.0/8")
    assert client_of(_scope(peer, xff, proto), trusted) == expected


def test_flag_rejects_a_bad_cidr() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay",
            "serve",
            "--worker-secret",
            "s",
            "--trusted-proxies",
            "10.0.0.0/99",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--trusted-proxies" in done.stderr
    assert "10.0.0.0/99" in done.stderr
