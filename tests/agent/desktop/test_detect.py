"""The wizard's network helpers against real servers: the fake backend, a relay process."""

import socket

import trio

from agent.desktop.detect import check_relay, detect_backends, list_models
from agent.events import FailureKind
from tests.fake_backend import FakeBackend
from tests.integration.procs import SECRET, relay_process


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_detects_servers_and_their_models(nursery: trio.Nursery) -> None:
    openai_url = await nursery.start(FakeBackend(models=["m1", "m2"]).run)
    ollama_url = await nursery.start(FakeBackend(models=["llama3:8b"], ollama=True).run)
    nothing = f"http://127.0.0.1:{_closed_port()}"
    found = await detect_backends(
        (("vLLM", openai_url), ("LM Studio", nothing), ("Ollama", ollama_url))
    )
    assert [(f.name, f.models) for f in found] == [
        ("vLLM", ("m1", "m2")),
        ("Ollama", ("llama3:8b",)),
    ]
    assert await list_models(nothing) is None


async def test_relay_secret_is_tested_live() -> None:
    async with relay_process() as (_relay, url):
        ok = await check_relay(url, SECRET)
        assert ok.ok, ok.message
        wrong = await check_relay(url, "not-the-secret")
        assert wrong.kind is FailureKind.AUTH
        assert "Wrong secret" in wrong.message
        tls = await check_relay(url.replace("http://", "https://"), SECRET)
        assert tls.kind is FailureKind.TLS
        assert "TLS error" in tls.message
    gone = await check_relay(f"http://127.0.0.1:{_closed_port()}", SECRET)
    assert gone.kind is FailureKind.UNREACHABLE
    assert "Cannot reach the relay" in gone.message
    empty = await check_relay("http://127.0.0.1:1", "")
    assert empty.kind is FailureKind.AUTH
    bad = await check_relay("ftp://relay", SECRET)
    assert bad.kind is FailureKind.UNREACHABLE
    assert "must start with http" in bad.message
