"""The console's routes: pages, the live SSE stream, and the JSON actions behind the buttons.

    GET    /console                       dashboard
    GET    /console/setup                 add-a-machine wizard
    GET    /console/integrate             client snippets and the try-it box
    GET    /console/login  POST /console/login  POST /console/logout
    GET    /console/events                the dashboard's live state (text/event-stream)
    GET    /console/api/state             the same state, once (JSON)
    POST   /console/api/workers/<id>/drain
    POST   /console/api/workers/<name>/cordon    DELETE the same to lift it
    POST   /console/api/keys {"name"}     DELETE /console/api/keys/<id>
    GET    /console/static/...            CSS, JS (no CDN)

Every page needs a session (else 303 to the login page); every action needs
the session and its CSRF token in `X-CSRF-Token`, and a same-origin
`Origin`/`Sec-Fetch-Site` where the browser sends one. Every response carries
a strict Content-Security-Policy (scripts only from /console/static: no
inline script, no eval) and `Cache-Control: no-store`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio
from quart import Blueprint, Response, render_template, request

from relay.console.sessions import COOKIE_NAME, CSRF_HEADER, Session, Sessions
from relay.console.state import Rates, keys_doc, state_doc
from relay.keys import KeyStoreError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from quart.wrappers import Request

    from relay.core import Relay

__all__ = ["CSP", "console_blueprint", "console_off_blueprint", "request_is_tls"]

log = logging.getLogger("relay.console")

_HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}
MAX_STREAMS = 32  # open dashboards at once, over all sessions
MAX_STREAMS_PER_SESSION = 4  # tabs of one admin; a fifth replaces the oldest
_TICK = 1.0  # the stream's aggregation period: at most one event a second
_KEEPALIVE_TICKS = 15
_MAX_NAME = 200


def request_is_tls(req: Request) -> bool:
    """Whether the browser reached us over TLS: decides the cookie's `Secure` flag.

    The ASGI scope's scheme says so: behind a TLS proxy listed in
    `--trusted-proxies`, `relay.proxies.ClientApp` has already set it from
    that proxy's `X-Forwarded-Proto`; anyone else's header is ignored.
    """
    return req.scheme in ("https", "wss")


def client_addr(req: Request) -> str:
    """The address login attempts are counted against (hook for trusted proxies, as above)."""
    return req.remote_addr or "unknown"


def _same_origin(req: Request) -> bool:
    """False when the browser says the request came from another site."""
    site = req.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = req.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == req.host


def _json(doc: object, status: int = 200) -> Response:
    return Response(json.dumps(doc), status=status, content_type="application/json")


def _see_other(target: str) -> Response:
    return Response("", status=303, headers={"location": target})


def _problem(status: int, message: str) -> Response:
    return _json({"error": {"message": message}}, status)


def console_off_blueprint(relay: Relay) -> Blueprint:
    """What /console says when it is off: how to turn it on."""
    bp = Blueprint("console_off", __name__, url_prefix="/console")
    why = (
        "the console is off (--no-console)"
        if relay.config.admin_token
        else "the console is off: start the relay with --admin-token (or MODELRELAY_ADMIN_TOKEN)"
    )

    def answer() -> Response:
        return Response(why + "\n", status=404, content_type="text/plain; charset=utf-8")

    @bp.route("", strict_slashes=False)
    async def off_root() -> Response:
        return answer()

    @bp.route("/<path:rest>")
    async def off(rest: str) -> Response:
        return answer()

    return bp


def console_blueprint(relay: Relay) -> Blueprint:
    """The console's routes, closing over `relay`. Needs `relay.config.admin_token`."""
    assert relay.config.admin_token
    bp = Blueprint(
        "console",
        __name__,
        url_prefix="/console",
        template_folder=str(_HERE / "templates"),
        static_folder=str(_HERE / "static"),
        static_url_path="/static",
    )
    config = relay.config
    assert config.admin_token is not None
    sessions = Sessions.for_token(
        config.admin_token,
        config.console_session_secs,
        limit=config.auth_failure_limit,
        window=config.auth_failure_window,
        login=relay.admin_auth,
    )
    # session nonce -> the events that end that session's open streams, oldest first
    streams: dict[str, list[trio.Event]] = {}

    def current() -> Session | None:
        return sessions.check(request.cookies.get(COOKIE_NAME), time.time())

    def action_guard() -> tuple[Session | None, Response | None]:
        session = current()
        if session is None:
            return None, _problem(401, "not logged in (or the session expired): log in again")
        if not _same_origin(request) or not sessions.check_csrf(
            session, request.headers.get(CSRF_HEADER)
        ):
            log.warning(
                "console action refused: CSRF check failed",
                extra={"peer": client_addr(request), "path": request.path},
            )
            return None, _problem(403, "refused: the request did not come from this console")
        return session, None

    @bp.after_request
    async def security_headers(response: Response) -> Response:
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    async def page(template: str, session: Session, **extra: object) -> Response:
        body = await render_template(
            f"console/{template}",
            csrf=sessions.csrf_token(session),
            relay_url=request.host_url.rstrip("/"),
            version=relay.version,
            provider=config.provider,
            page=template.removesuffix(".html"),
            **extra,
        )
        return Response(body, content_type="text/html; charset=utf-8")

    def login_redirect() -> Response:
        target = request.path if request.path.startswith("/console") else "/console"
        return _see_other(f"/console/login?next={target}")

    @bp.get("")
    @bp.get("/")
    async def dashboard() -> Response:
        session = current()
        if session is None:
            return login_redirect()
        return await page("dashboard.html", session)

    @bp.get("/setup")
    async def setup() -> Response:
        session = current()
        if session is None:
            return login_redirect()
        return await page(
            "setup.html",
            session,
            worker_secret=config.worker_secret,
            models=relay.hub.served_models(),
        )

    @bp.get("/integrate")
    async def integrate() -> Response:
        session = current()
        if session is None:
            return login_redirect()
        models = relay.hub.served_models()
        return await page(
            "integrate.html",
            session,
            model=models[0] if models else "your-model",
            models=models,
            require_api_keys=config.require_api_keys,
        )

    def safe_next(target: str | None) -> str:
        # Only a path of ours: never an open redirect.
        if target and target.startswith("/console") and "//" not in target and "\\" not in target:
            return target
        return "/console"

    async def login_page(message: str | None, status: int, target: str) -> Response:
        body = await render_template(
            "console/login.html", message=message, next=target, version=relay.version, page="login"
        )
        return Response(body, status=status, content_type="text/html; charset=utf-8")

    @bp.get("/login")
    async def login_form() -> Response:
        target = safe_next(request.args.get("next"))
        if current() is not None:
            return _see_other(target)
        return await login_page(None, 200, target)

    @bp.post("/login")
    async def login() -> Response:
        form = await request.form
        target = safe_next(form.get("next"))
        if not _same_origin(request):
            return await login_page("Refused: the form was not sent from this relay.", 403, target)
        presented = form.get("token", "")
        peer = client_addr(request)
        verdict = sessions.check_login(peer, presented.strip(), trio.current_time())
        if verdict.status == 429:
            if verdict.report:  # once per address and window; the rest are collapsed
                log.warning("console login rate limited", extra={"peer": peer})
            limited = await login_page(
                f"Too many failed attempts from your address. Try again in "
                f"{verdict.retry_after} s.",
                429,
                target,
            )
            limited.headers["retry-after"] = str(verdict.retry_after)
            return limited
        if verdict.status != 200:
            if verdict.report:  # the first failure from this address in the window
                log.warning("console login failed", extra={"peer": peer})
            return await login_page(
                "That is not this relay's admin token (the value of --admin-token "
                "or MODELRELAY_ADMIN_TOKEN).",
                401,
                target,
            )
        log.info("console login", extra={"peer": peer})
        response = _see_other(target)
        response.set_cookie(
            COOKIE_NAME,
            sessions.issue(time.time()),
            max_age=int(config.console_session_secs),
            path="/console",
            secure=request_is_tls(request),
            httponly=True,
            samesite="Strict",
        )
        return response

    @bp.post("/logout")
    async def logout() -> Response:
        session = current()
        form = await request.form
        if session is not None:
            if not _same_origin(request) or not sessions.check_csrf(session, form.get("csrf")):
                return _problem(403, "refused: the request did not come from this console")
            sessions.revoke(session, time.time())
            log.info("console logout", extra={"peer": client_addr(request)})
        response: Response = _see_other("/console/login")
        response.delete_cookie(
            COOKIE_NAME, path="/console", httponly=True, samesite="Strict",
            secure=request_is_tls(request),
        )  # fmt: skip
        return response

    @bp.get("/api/state")
    async def state() -> Response:
        if current() is None:
            return _problem(401, "not logged in (or the session expired): log in again")
        doc = state_doc(relay, Rates())
        doc["series"] = relay.series.to_json() if relay.series is not None else None
        return _json(doc)

    @bp.get("/events")
    async def events() -> Response:
        session = current()
        if session is None:
            return _problem(401, "not logged in (or the session expired): log in again")
        mine = streams.setdefault(session.nonce, [])
        if len(mine) >= MAX_STREAMS_PER_SESSION:
            mine.pop(0).set()  # the oldest tab's stream ends (it says so, and stops)
        if sum(len(s) for s in streams.values()) >= MAX_STREAMS:
            if not mine:
                del streams[session.nonce]
            return _problem(503, f"too many open dashboards (at most {MAX_STREAMS})")
        superseded = trio.Event()
        mine.append(superseded)
        body = _stream(relay, sessions, session, superseded, streams)
        return Response(
            body,
            content_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    @bp.post("/api/workers/<worker_id>/drain")
    async def drain(worker_id: str) -> Response:
        _, refused = action_guard()
        if refused is not None:
            return refused
        if not relay.hub.drain_worker(worker_id, "drained from the console"):
            return _problem(404, f"no connected worker has the id {worker_id[:64]!r}")
        log.info("worker drain requested from the console", extra={"worker_id": worker_id})
        return _json({"id": worker_id, "draining": True}, 202)

    @bp.route("/api/workers/<name>/cordon", methods=["POST", "DELETE"])
    async def cordon(name: str) -> Response:
        _, refused = action_guard()
        if refused is not None:
            return refused
        on = request.method == "POST"
        if relay.keys is None or len(name) > _MAX_NAME:
            return _problem(400, "cannot cordon that name")
        try:
            await relay.keys.set_cordon(name, on)
        except KeyStoreError as exc:
            return _problem(503, str(exc))
        log.info(
            "worker cordoned from the console" if on else "worker uncordoned from the console",
            extra={"worker_name": name},
        )
        return _json({"name": name, "cordoned": on})

    @bp.post("/api/keys")
    async def create_key() -> Response:
        _, refused = action_guard()
        if refused is not None:
            return refused
        doc = await request.get_json(force=True, silent=True)
        name = doc.get("name") if isinstance(doc, dict) else None
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > _MAX_NAME:
            return _problem(400, f"give the key a name (1 to {_MAX_NAME} characters)")
        if relay.keys is None:
            return _problem(503, "this relay has no key store")
        try:
            new = await relay.keys.create(name.strip())
        except KeyStoreError as exc:
            return _problem(503, str(exc))
        return _json(new.to_json(), 201)

    @bp.delete("/api/keys/<key_id>")
    async def revoke_key(key_id: str) -> Response:
        _, refused = action_guard()
        if refused is not None:
            return refused
        try:
            found = relay.keys is not None and await relay.keys.revoke(key_id)
        except KeyStoreError as exc:
            return _problem(503, str(exc))
        if not found:
            return _problem(404, f"no API key has the id {key_id[:64]!r}")
        return _json({"id": key_id, "revoked": True, "keys": keys_doc(relay)})

    return bp


async def _stream(
    relay: Relay,
    sessions: Sessions,
    session: Session,
    superseded: trio.Event,
    streams: dict[str, list[trio.Event]],
) -> AsyncIterator[bytes]:
    """The dashboard's events, one stream per open page.

    `state` when it changed (at most once per tick), `series` when a new
    bucket closed, `expired` when the session ends, `superseded` when the
    same admin opened too many pages, `restarting` when the relay drains;
    comments keep a quiet stream alive.
    """
    rates = Rates()
    last = ""
    generation = -1
    quiet = 0
    try:
        # The browser reconnects on its own after a relay restart; 2 s between tries.
        yield b"retry: 2000\n\n"
        while not superseded.is_set():
            if relay.hub.draining:
                # End the response cleanly so the server's shutdown does not cut
                # it mid-chunk; the browser reconnects to the next relay itself.
                yield b"event: restarting\ndata: {}\n\n"
                return
            if not sessions.alive(session, time.time()):  # expired or logged out
                yield b"event: expired\ndata: {}\n\n"
                return
            text = json.dumps(state_doc(relay, rates), separators=(",", ":"))
            if text != last:
                last, quiet = text, 0
                yield f"event: state\ndata: {text}\n\n".encode()
            series = relay.series
            if series is not None and series.generation != generation:
                generation = series.generation
                doc = json.dumps(series.to_json(), separators=(",", ":"))
                yield f"event: series\ndata: {doc}\n\n".encode()
            quiet += 1
            if quiet >= _KEEPALIVE_TICKS:
                quiet = 0
                yield b": keepalive\n\n"
            with trio.move_on_after(_TICK):
                await superseded.wait()
        yield b"event: superseded\ndata: {}\n\n"
    finally:
        mine = streams.get(session.nonce, [])
        if superseded in mine:
            mine.remove(superseded)
        if not mine:
            streams.pop(session.nonce, None)
