"""One request from the relay, run against the backend: a job.

A job owns a cancel scope (`Job.cancel_scope`) that the session's reader
cancels when the relay sends `cancel`. Cancelling it cancels the backend
call, which closes its HTTP connection, so the backend stops generating;
the job then sends exactly one ``response_complete`` with status 499.

The job checks the request, hands it to the session's `Exchange`
(agent/exchange.py) with a `Reply`, and logs one line when it ends; which
dialect the backend speaks is the exchange's business
(agent/dialect_exchange.py). Jobs never touch the socket: every frame goes
into the session's bounded outbox, which one writer task drains. A job's
failure becomes a ``response_complete`` with an error status and a JSON body
in the endpoint's dialect; it never ends the session.
"""

import logging

import attrs
import trio

from agent import metrics as agent_metrics
from agent.dialects import error_body, json_headers
from agent.errors import BackendBroken, BackendError, BackendTimeout, BackendUnreachable
from agent.exchange import Exchange, Reply, backend_headers
from agent.health import BackendHealth
from agent.logging import bind_log_context
from agent.outbox import Outbox
from wire import REFUSED_BACKEND_DOWN, REFUSED_HEADER, Request

__all__ = ["BACKEND_DOWN_MESSAGE", "Job", "path_problem", "refuse_backend_down", "run_job"]

log = logging.getLogger(__name__)

BACKEND_DOWN_MESSAGE = "This worker's model server is not answering; retry."


@attrs.define(eq=False)
class Job:
    """Owns one in-flight request's cancel scope.

    Attributes:
        request: The request as the relay sent it.
        started_at: `trio.current_time()` when the job was accepted.
        cancel_scope: Cancelled when the relay sends `cancel` for this request.
        cancel_reason: Why it was cancelled, for the log.
    """

    request: Request
    started_at: float
    cancel_scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    cancel_reason: str | None = None

    def cancel(self, reason: str) -> None:
        """Cancel the backend call; the job answers 499 once it has stopped."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.cancel_scope.cancel()


async def run_job(
    job: Job,
    *,
    exchange: Exchange,
    outbox: Outbox,
    cache_tokens: bool = False,
    health: BackendHealth | None = None,
) -> None:
    """Run one request through `exchange` and answer the relay through `outbox`.

    Never raises for a failed request (the relay gets an error status
    instead); only cancellation of the whole session propagates.

    Args:
        job: The job; its cancel scope is entered here.
        exchange: Runs the request against the backend (the session's).
        outbox: The session's outbox.
        cache_tokens: The relay takes cache token counts (`Reply.cache_tokens`).
        health: The backend's health, marked down when a connect fails
            before any answer (then the request is refused, for the relay
            to requeue elsewhere, instead of answered 502).
    """
    request = job.request
    reply = Reply(request, outbox, cache_tokens=cache_tokens)
    agent_metrics.job_started()
    # The client's own x-request-id, if the relay passed it: a label for the log.
    label = (request.headers or {}).get("x-request-id")
    context = (
        {"request_id": request.request_id}
        if label is None
        else {"request_id": request.request_id, "client_request_id": label[:128]}
    )
    with bind_log_context(**context):
        try:
            with job.cancel_scope:
                await _answer(request, exchange, reply)
            if job.cancel_scope.cancelled_caught and not reply.completed:
                # The relay cancelled: no more chunks, one 499, no body. The
                # job's own scope has exited, so this send is not cancelled.
                # (A cancel that lands after the answer was queued, e.g. while
                # the backend response closes, changes nothing.)
                await reply.complete(499)
        except BackendError as exc:
            # The whole story (URL, addresses, the OS's words) is for the log;
            # the client learns what kind of failure it was, never where.
            reply.error = str(exc)
            if reply.completed:  # the answer is already out: only the log learns of it
                return
            if (
                health is not None
                and isinstance(exc, (BackendUnreachable, BackendBroken))
                and reply.backend_status is None
                and not reply.chunks
            ):
                # No byte of an answer came: refused, not connected in time,
                # or reset before answering (a server going down has
                # accepted connections it never serves). Another worker
                # can take it.
                health.mark_down(exc.message, exc.url)
                await refuse_backend_down(reply)
                return
            # The client may be anyone: the backend's address stays in our log.
            await reply.fail(
                502,
                "backend_unreachable" if reply.backend_status is None else "backend_error",
                f"{_public_reason(exc)}; the worker's operator can find the details "
                "in the agent's log.",
            )
        except Exception as exc:
            # A bug in the agent must cost one request, never the session.
            log.exception("request crashed inside the agent")
            reply.error = f"{type(exc).__name__}: {exc}"
            if reply.completed:
                return
            await reply.fail(
                500,
                "agent_error",
                f"The worker's agent failed on this request ({type(exc).__name__}).",
            )
        finally:
            _log_finished(job, reply)


async def refuse_backend_down(reply: Reply) -> None:
    """Refuse `reply`'s request because the backend is down: our relay requeues it.

    A 502 ``backend_unavailable``: the refusal header tells our relay that
    nothing ran; an upstream relay passes the 502 to its client, as before.
    Never the backend's address: that is for our log only.
    """
    headers = json_headers()
    headers["retry-after"] = "1"
    headers[REFUSED_HEADER] = REFUSED_BACKEND_DOWN
    body = error_body(
        reply.request.endpoint_path,
        502,
        BACKEND_DOWN_MESSAGE,
        REFUSED_BACKEND_DOWN,
    )
    await reply.complete(502, headers, body=body)


def _public_reason(exc: BackendError) -> str:
    """What a client may learn of a backend failure: its kind, no URL or address."""
    if exc.public:
        return f"The worker's backend failed: {exc.message}"
    if isinstance(exc, BackendUnreachable):
        return "The worker could not reach its backend"
    if isinstance(exc, BackendTimeout):
        return "The worker's backend stopped answering in time"
    return "The worker's backend failed this request"


def path_problem(endpoint_path: str) -> str | None:
    """Why `endpoint_path` must not reach the backend, or None for a normal path under /v1/.

    The relay refuses these already; the agent checks again so that a relay
    (or anything speaking the protocol) cannot reach backend paths outside
    ``/v1/``, or above a ``--backend-url`` prefix, with ``..`` or encodings.
    """
    path = endpoint_path.split("?", 1)[0]
    if not path.startswith("/v1/"):
        return "not under /v1/"
    if "%" in path or "\\" in path or "#" in path:
        return "an encoded or unusual character"
    if "/." in path:
        for segment in path.split("/"):
            if segment in (".", ".."):
                return "a dot segment"
    return None


async def _answer(request: Request, exchange: Exchange, reply: Reply) -> None:
    problem = path_problem(request.endpoint_path)
    if problem is not None:
        path = request.endpoint_path.split("?", 1)[0]
        reply.error = f"refused path ({problem})"
        await reply.fail(
            400,
            "invalid_request",
            f"Invalid endpoint path {path[:100]!r} ({problem}): "
            "only normal paths under /v1/ are forwarded.",
        )
        return
    await exchange.answer(request, backend_headers(request), reply)


def _log_finished(job: Job, reply: Reply) -> None:
    agent_metrics.job_finished(  # --metrics-listen (agent/metrics.py); a no-op without it
        job.request.model, reply.status, reply.error, trio.current_time() - job.started_at
    )
    if not log.isEnabledFor(logging.INFO if reply.completed else logging.WARNING):
        return  # e.g. --log-level warning: not even the fields are built
    request = job.request
    fields: dict[str, object] = {
        "model": request.model,
        # The same names as the relay's line for the same request.
        "path": request.endpoint_path,
        "stream": request.is_streaming,
        "status": reply.status,
        "duration_ms": round((trio.current_time() - job.started_at) * 1000, 1),
        "bytes": reply.bytes_in,
        "chunks": reply.chunks,
        "cancelled": job.cancel_reason is not None,
    }
    if job.cancel_reason is not None:
        fields["cancel_reason"] = job.cancel_reason
    if reply.error is not None:
        fields["error"] = reply.error
    fields.update(reply.notes)
    if reply.completed:
        log.info("request finished", extra=fields)
    else:
        log.warning("request abandoned: session ended or drain deadline passed", extra=fields)
