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
from agent.errors import BackendError
from agent.exchange import Exchange, Reply, backend_headers
from agent.logging import bind_log_context
from agent.outbox import Outbox
from wire import Request

__all__ = ["Job", "run_job"]

log = logging.getLogger(__name__)


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


async def run_job(job: Job, *, exchange: Exchange, outbox: Outbox) -> None:
    """Run one request through `exchange` and answer the relay through `outbox`.

    Never raises for a failed request (the relay gets an error status
    instead); only cancellation of the whole session propagates.

    Args:
        job: The job; its cancel scope is entered here.
        exchange: Runs the request against the backend (the session's).
        outbox: The session's outbox.
    """
    request = job.request
    reply = Reply(request, outbox)
    agent_metrics.job_started()
    with bind_log_context(request_id=request.request_id):
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
            reply.error = str(exc)
            if reply.completed:  # the answer is already out: only the log learns of it
                return
            await reply.fail(
                502,
                "backend_unreachable" if reply.backend_status is None else "backend_error",
                f"The worker's backend failed: {exc}. Check that the model "
                "server is running and reachable from the agent.",
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


async def _answer(request: Request, exchange: Exchange, reply: Reply) -> None:
    path = request.endpoint_path
    if not path.startswith("/") or "://" in path:
        await reply.fail(400, "invalid_request", f"Invalid endpoint path {path[:100]!r}.")
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
