"""`/admin/*`: the operator's JSON API, behind `--admin-token`.

Every path under `/admin` (unknown ones included, so the API does not reveal
its routes) needs `Authorization: Bearer <admin token>`, compared in constant
time. With no token configured every admin path answers 403; a missing or
wrong token 401, and after `auth_failure_limit` wrong tokens from one
address within `auth_failure_window` seconds, 429 until the window passes
(the same limiter as worker secrets, relay/auth.py; the right token always
gets in). Failures are logged once per address and window, not each.
Errors use the OpenAI shape like the rest of the relay.

    GET    /admin/workers               connected workers
    GET    /admin/stats                 totals, per model, per key
    GET    /admin/keys                  client API keys (never the secrets)
    POST   /admin/keys {"name"}         201, the new key's secret shown once
    DELETE /admin/keys/{id}             204; unknown or malformed id 404
    POST   /admin/workers/{id}/drain    202; graceful_shutdown to that worker
    POST   /admin/models/refresh        202; models_refresh to every worker
    POST   /admin/workers/{name}/cordon 200; the router skips workers of that name
    DELETE /admin/workers/{name}/cordon 200 lifted; 404 if it was not cordoned
    GET    /admin/cordons               the cordoned names

Views only read frozen snapshots of the relay's state (`Hub.statistics()`,
`Stats.snapshot()`) and answer; the key store's database calls run in its
worker thread.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import trio
from quart import Blueprint, Response, request

from relay.dialects import Dialect, error_body
from relay.errors import BadRequest, ClientError, NotFound, RelayError, Unauthorized
from relay.keys import KeyStoreError

if TYPE_CHECKING:
    from relay.core import Relay
    from relay.worker_hub import WorkerStatistics

__all__ = ["AdminDisabled", "AdminRateLimited", "AdminUnauthorized", "admin_blueprint"]

log = logging.getLogger("relay.admin")

_MAX_NAME = 200


class AdminDisabled(ClientError):
    """No admin token is configured: the admin API is off (403)."""

    status = 403
    code = "admin_disabled"
    openai_type = "permission_error"
    anthropic_type = "permission_error"


class AdminUnauthorized(Unauthorized):
    """The admin token is missing or wrong (401)."""

    code = "invalid_admin_token"


class AdminRateLimited(ClientError):
    """Too many wrong admin tokens from this address (429)."""

    status = 429
    code = "too_many_auth_failures"
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"


def _json(doc: object, status: int = 200) -> Response:
    return Response(json.dumps(doc), status=status, content_type="application/json")


def _error(exc: RelayError) -> Response:
    response = Response(
        error_body(Dialect.OPENAI, exc), status=exc.status, content_type="application/json"
    )
    if exc.retry_after is not None:
        response.headers["retry-after"] = str(exc.retry_after)
    if exc.status == 401:
        response.headers["www-authenticate"] = 'Bearer realm="modelrelay-admin"'
    return response


def _is_admin_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


def admin_blueprint(relay: Relay) -> Blueprint:
    """The admin routes, closing over `relay`; the token check guards all of /admin."""
    bp = Blueprint("admin", __name__, url_prefix="/admin")
    check = relay.admin_auth

    @bp.before_app_request
    async def check_admin_token() -> Response | None:
        if not _is_admin_path(request.path):
            return None
        if check is None:
            return _error(
                AdminDisabled(
                    "the admin API is disabled: start the relay with --admin-token "
                    "(or MODELRELAY_ADMIN_TOKEN) to use it"
                )
            )
        scheme, _, presented = request.headers.get("authorization", "").strip().partition(" ")
        peer = request.remote_addr or "unknown"
        verdict = check.check(
            peer,
            presented.strip() if scheme.lower() == "bearer" else None,
            trio.current_time(),
        )
        if verdict.status == 200:
            return None
        if verdict.status == 429:
            if verdict.report:  # once per address and window; the rest are collapsed
                log.warning(
                    "admin auth rate limited", extra={"peer": peer, "failures": verdict.failures}
                )
            return _error(
                AdminRateLimited(
                    "too many wrong admin tokens from this address; retry later",
                    retry_after=verdict.retry_after,
                )
            )
        if verdict.report:  # the first failure from this address in the window
            log.warning(
                "admin auth failed",
                extra={"peer": peer, "path": request.path[:200], "method": request.method},
            )
        return _error(
            AdminUnauthorized(
                "the admin API needs 'Authorization: Bearer <admin token>' with the "
                "relay's --admin-token"
            )
        )

    @bp.get("/workers")
    async def workers() -> Response:
        docs = [_worker_json(relay, w) for w in relay.hub.statistics().workers]
        return _json({"workers": docs})

    @bp.get("/stats")
    async def stats() -> Response:
        return _json(relay.stats.snapshot(relay.hub.statistics().queued).to_json())

    @bp.get("/keys")
    async def list_keys() -> Response:
        if relay.keys is None:  # pragma: no cover - an admin token always opens the store
            return _json({"keys": []})
        try:
            keys = await relay.keys.list_keys()
        except KeyStoreError as exc:
            return _error(exc)
        return _json({"keys": [k.to_json() for k in keys]})

    @bp.post("/keys")
    async def create_key() -> Response:
        doc = await request.get_json(force=True, silent=True)
        if not isinstance(doc, dict):
            return _error(BadRequest('the body must be a JSON object like {"name": "alice"}'))
        name = doc.get("name")
        if not isinstance(name, str) or not name.strip():
            return _error(BadRequest('"name" must be a non-empty string naming the key\'s holder'))
        name = name.strip()
        if len(name) > _MAX_NAME:
            return _error(BadRequest(f'"name" must be at most {_MAX_NAME} characters'))
        if relay.keys is None:  # pragma: no cover
            return _error(KeyStoreError("this relay has no key store"))
        try:
            new = await relay.keys.create(name)
        except KeyStoreError as exc:
            return _error(exc)
        return _json(new.to_json(), status=201)

    @bp.delete("/keys/<key_id>")
    async def revoke_key(key_id: str) -> Response:
        found = False
        if relay.keys is not None:
            try:
                found = await relay.keys.revoke(key_id)
            except KeyStoreError as exc:
                return _error(exc)
        if not found:
            return _error(NotFound(f"no API key has the id {key_id[:64]!r}"))
        return Response(b"", status=204)

    @bp.post("/workers/<worker_id>/drain")
    async def drain_worker(worker_id: str) -> Response:
        if not relay.hub.drain_worker(worker_id, "drained by an operator"):
            return _error(NotFound(f"no connected worker has the id {worker_id[:64]!r}"))
        log.info("worker drain requested by an operator", extra={"worker_id": worker_id})
        return _json({"id": worker_id, "draining": True}, status=202)

    @bp.route("/workers/<name>/cordon", methods=["POST", "DELETE"])
    async def cordon_worker(name: str) -> Response:
        # Keyed by name, not id: the cordon outlives the worker's reconnects.
        on = request.method == "POST"
        if len(name) > _MAX_NAME:
            return _error(BadRequest(f"a worker name has at most {_MAX_NAME} characters"))
        if relay.keys is None:  # pragma: no cover - an admin token always opens the store
            return _error(KeyStoreError("this relay has no key store"))
        try:
            changed = await relay.keys.set_cordon(name, on)
        except KeyStoreError as exc:
            return _error(exc)
        if not on and not changed:
            return _error(NotFound(f"no worker named {name[:64]!r} is cordoned"))
        log.info(
            "worker cordoned by an operator" if on else "worker uncordoned by an operator",
            extra={"worker_name": name},
        )
        connected = sum(1 for w in relay.hub.workers.values() if w.name == name)
        return _json({"name": name, "cordoned": on, "connected": connected})

    @bp.get("/cordons")
    async def cordons() -> Response:
        return _json({"cordons": sorted(relay.hub.cordons)})

    @bp.post("/models/refresh")
    async def refresh_models() -> Response:
        count = relay.hub.refresh_models("requested by an operator")
        log.info("models refresh requested by an operator", extra={"workers": count})
        return _json({"workers": count}, status=202)

    return bp


def _worker_json(relay: Relay, worker: WorkerStatistics) -> dict[str, Any]:
    return {
        "id": worker.id,
        "name": worker.name,
        "models": list(worker.models),
        "max_concurrent": worker.max_concurrent,
        "in_flight": worker.in_flight,
        "load": round(worker.load, 4),
        "reported_load": worker.reported_load,
        "draining": worker.draining,
        "cordoned": worker.cordoned,
        "backend_errors": worker.backend_errors,
        # Its model server failed before a first byte: why, and whether the
        # relay ejected it for a cool-down (max_fails within fail_timeout).
        "unhealthy": worker.unhealthy,
        "ejected": worker.ejected,
        "connected_since": relay.rfc3339(worker.connected_since),
        "last_heartbeat": relay.rfc3339(worker.last_seen),
        "requests_served": worker.requests_served,
        "peer": worker.peer,
    }
