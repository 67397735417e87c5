"""Classifying the relay's refusals, over real sockets where they matter."""

from functools import partial

import pytest
import trio
import trio_websocket

from agent.errors import AuthRefused, RelayClosed, RelayUnreachable, VersionRejected
from agent.transport import closed_error, open_relay_transport
from tests.agent.fakes import fast_config


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        (1008, "worker authentication failed", AuthRefused),
        (1008, "Authentication temporarily rate limited", AuthRefused),
        (1008, "policy violation", RelayClosed),
        (1002, "protocol version mismatch: peer speaks 'x', we speak 'y'", VersionRejected),
        (1002, "frame is not valid JSON", RelayClosed),
        (1000, "", RelayClosed),
    ],
)
def test_close_classification(code: int, reason: str, kind: type[Exception]) -> None:
    error = closed_error(code, reason)
    assert type(error) is kind


async def _rejecting_server(
    nursery: trio.Nursery, status: int, headers: list[tuple[bytes, bytes]] | None = None
) -> str:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await request.reject(status, extra_headers=headers, body=b"no")

    server = await nursery.start(
        partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
    )
    return f"http://127.0.0.1:{server.port}"


@pytest.mark.parametrize(
    ("status", "headers", "kind", "retry_after"),
    [
        (401, None, AuthRefused, None),
        (403, None, AuthRefused, None),
        (429, [(b"Retry-After", b"42")], AuthRefused, 42.0),
        (404, None, RelayUnreachable, None),
        (503, None, RelayUnreachable, None),
    ],
)
async def test_rejected_upgrade(
    nursery: trio.Nursery,
    status: int,
    headers: list[tuple[bytes, bytes]] | None,
    kind: type[Exception],
    retry_after: float | None,
) -> None:
    url = await _rejecting_server(nursery, status, headers)
    config = fast_config(url, "http://127.0.0.1:1")
    with trio.fail_after(5), pytest.raises(kind) as info:
        async with open_relay_transport(config):
            raise AssertionError("the upgrade should have been refused")
    assert f"HTTP {status}" in str(info.value)
    assert config.worker_secret not in str(info.value)
    if isinstance(info.value, AuthRefused):
        assert info.value.status_code == status
        assert info.value.retry_after == retry_after


async def test_nobody_listening_is_unreachable() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = fast_config(f"http://127.0.0.1:{port}", "http://127.0.0.1:1")
    with trio.fail_after(5), pytest.raises(RelayUnreachable, match="cannot connect"):
        async with open_relay_transport(config):
            raise AssertionError("nobody listens there")
