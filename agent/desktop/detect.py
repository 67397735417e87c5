"""Finding the local LLM server and testing the relay secret, for the wizard.

`detect_backends` asks the usual servers on their default ports
(llama-server 8080, Ollama 11434, LM Studio 1234, vLLM 8000) for their
models, with the agent's own parsers (agent/discovery.py). `check_relay`
opens the agent's real connection to the relay (agent/transport.py) with the
secret and closes it at once: the relay checks the secret on the upgrade, so
a wrong secret, an unreachable relay and a TLS failure each come back as
their own `FailureKind`. Both are trio functions; the GUI runs them in a
worker thread.
"""

import attrs
import httpx
import trio

from agent.config import AgentConfig, Timeouts
from agent.discovery import parse_ollama_tags, parse_openai_models
from agent.errors import ConfigError, SessionError
from agent.events import FailureKind, failure_kind
from agent.transport import open_relay_transport

__all__ = [
    "KNOWN_BACKENDS",
    "FoundBackend",
    "RelayCheck",
    "check_relay",
    "detect_backends",
    "list_models",
]

KNOWN_BACKENDS: tuple[tuple[str, str], ...] = (
    ("llama-server", "http://127.0.0.1:8080"),
    ("Ollama", "http://127.0.0.1:11434"),
    ("LM Studio", "http://127.0.0.1:1234"),
    ("vLLM", "http://127.0.0.1:8000"),
)


@attrs.frozen
class FoundBackend:
    """A server that answered with a model list."""

    name: str
    url: str
    models: tuple[str, ...]


async def list_models(url: str, *, timeout_secs: float = 2.0) -> tuple[str, ...] | None:
    """The models `url` serves (OpenAI ``/v1/models``, else Ollama ``/api/tags``), or None."""
    base = url.rstrip("/")
    try:
        with trio.move_on_after(timeout_secs):
            async with httpx.AsyncClient(timeout=timeout_secs) as client:
                for path, parse in (
                    ("/v1/models", parse_openai_models),
                    ("/api/tags", parse_ollama_tags),
                ):
                    response = await client.get(base + path)
                    if response.status_code == 200:
                        found = parse(response.content)
                        if found is not None:
                            return found
    except httpx.HTTPError:
        return None
    return None


async def detect_backends(
    candidates: tuple[tuple[str, str], ...] = KNOWN_BACKENDS, *, timeout_secs: float = 2.0
) -> list[FoundBackend]:
    """Ask each candidate at once; the ones that answered, in the candidates' order."""
    results: dict[int, FoundBackend] = {}

    async def probe(index: int, name: str, url: str) -> None:
        models = await list_models(url, timeout_secs=timeout_secs)
        if models is not None:
            results[index] = FoundBackend(name, url, models)

    async with trio.open_nursery() as nursery:
        for index, (name, url) in enumerate(candidates):
            nursery.start_soon(probe, index, name, url)
    return [results[i] for i in sorted(results)]


@attrs.frozen
class RelayCheck:
    """What testing a secret against a relay found.

    Attributes:
        kind: None when the relay accepted the secret.
        message: One sentence for the user.
    """

    kind: FailureKind | None
    message: str

    @property
    def ok(self) -> bool:
        """Whether the relay accepted the secret."""
        return self.kind is None


async def check_relay(proxy_url: str, secret: str, *, timeout_secs: float = 10.0) -> RelayCheck:
    """Open the agent's connection to the relay with `secret`, then close it."""
    if not secret:
        return RelayCheck(FailureKind.AUTH, "Enter the worker secret the relay was started with.")
    try:
        config = AgentConfig.create(
            worker_secret=secret,
            proxy_url=proxy_url,
            timeouts=Timeouts(connect_secs=timeout_secs, close_secs=2.0),
        )
    except ConfigError as exc:
        return RelayCheck(FailureKind.UNREACHABLE, exc.message)
    try:
        async with open_relay_transport(config):
            pass
    except SessionError as exc:
        kind = failure_kind(exc, registered=False)
        return RelayCheck(kind, _check_message(kind, proxy_url, str(exc)))
    return RelayCheck(None, f"The relay at {proxy_url} accepted the secret.")


def _check_message(kind: FailureKind, url: str, detail: str) -> str:
    if kind is FailureKind.AUTH:
        return "Wrong secret: the relay refused it. Copy it again from the relay's operator."
    if kind is FailureKind.TLS:
        return (
            f"TLS error with {url}: the certificate is not trusted or the relay does not "
            f"speak https ({detail})."
        )
    return f"Cannot reach the relay at {url}: {detail}"
