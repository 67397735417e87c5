"""Which models the backend serves: asked over HTTP, remembered across sessions.

With ``--models '*'`` the agent asks the backend's OpenAI-style
``GET /v1/models`` (``data[].id``) and, when that route is missing or
unusable, Ollama's ``GET /api/tags`` (``models[].name``). The session runs
the polling loop (it owns the outbox the updates go to); this module holds
the pure parsing, the one-shot query, and the `ModelCatalog` that outlives
sessions, so a reconnecting agent registers with what it last knew.
"""

import json
import logging
from collections.abc import Callable

import attrs

from agent.backend import Backend
from agent.errors import BackendError

__all__ = ["ModelCatalog", "discover_models", "parse_ollama_tags", "parse_openai_models"]

log = logging.getLogger(__name__)


@attrs.define(eq=False)
class ModelCatalog:
    """Owns the model list the agent advertises, across relay sessions.

    Attributes:
        models: The current list (the explicit ``--models`` list, or what
            discovery found last; empty until something is found).
        reachable: Whether the last discovery attempt got an answer, or None
            before the first one (used to log changes once, not every poll).
        on_change: Called with (models, reachable) after every discovery attempt
            (the desktop tray's live model list).
    """

    models: tuple[str, ...] = ()
    reachable: bool | None = None
    on_change: Callable[[tuple[str, ...], bool], None] | None = None

    def update(self, found: tuple[str, ...] | None, backend_url: str) -> None:
        """Record one discovery attempt's result and log what changed.

        Args:
            found: The models found, or None if the backend could not say.
            backend_url: For the log line.
        """
        if found is None:
            if self.reachable is not False:
                log.warning(
                    "model discovery failed; keeping the current model list",
                    extra={"backend": backend_url, "models": list(self.models)},
                )
            self.reachable = False
            if self.on_change is not None:
                self.on_change(self.models, False)
            return
        if found != self.models or self.reachable is not True:
            if found:
                log.info("models discovered", extra={"backend": backend_url, "models": list(found)})
            else:
                log.warning("the backend lists no model yet", extra={"backend": backend_url})
        self.reachable = True
        self.models = found
        if self.on_change is not None:
            self.on_change(found, True)


def _unique(names: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for name in names if name))


def parse_openai_models(body: bytes) -> tuple[str, ...] | None:
    """Model ids from an OpenAI list body (``{"data": [{"id": ...}, ...]}``).

    Args:
        body: The response body.

    Returns:
        The ids in order without duplicates, or None if the body is not that shape.
    """
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list):
        return None
    return _unique(
        [item["id"] for item in data if isinstance(item, dict) and isinstance(item.get("id"), str)]
    )


def parse_ollama_tags(body: bytes) -> tuple[str, ...] | None:
    """Model names from an Ollama ``/api/tags`` body (``{"models": [{"name": ...}, ...]}``).

    Args:
        body: The response body.

    Returns:
        The names in order without duplicates, or None if the body is not that shape.
    """
    try:
        obj = json.loads(body)
    except ValueError:
        return None
    models = obj.get("models") if isinstance(obj, dict) else None
    if not isinstance(models, list):
        return None
    names: list[str] = []
    for item in models:
        if isinstance(item, dict):
            name = item.get("name", item.get("model"))
            if isinstance(name, str):
                names.append(name)
    return _unique(names)


async def discover_models(backend: Backend) -> tuple[str, ...] | None:
    """Ask the backend which models it serves (no timeout here: bound the call site).

    Args:
        backend: The backend.

    Returns:
        The models (possibly none), or None when the backend is down or
        answers neither route usefully.
    """
    try:
        status, body = await backend.get("/v1/models")
    except BackendError as exc:
        log.debug("model discovery: backend unreachable", extra={"error": str(exc)})
        return None
    if 200 <= status < 300:
        found = parse_openai_models(body)
        if found is not None:
            return found
    try:
        status, body = await backend.get("/api/tags")
    except BackendError as exc:
        log.debug("model discovery: backend unreachable", extra={"error": str(exc)})
        return None
    if 200 <= status < 300:
        return parse_ollama_tags(body)
    return None
