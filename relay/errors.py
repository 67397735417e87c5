"""Errors the relay answers clients with.

Each error knows its HTTP status and the words a client sees; `relay.dialects`
renders it in the endpoint's dialect (OpenAI or Anthropic)::

    RelayError
    ├── ClientError                 4xx: the request itself is at fault
    │   ├── BadRequest              400  body not JSON, no model, wrong types
    │   ├── Unauthorized            401  API key missing, unknown or revoked
    │   ├── ModelNotFound           404  no worker serves the model
    │   ├── NotFound                404  unknown path
    │   ├── RequestTimeout          408  the body did not arrive within --body-timeout
    │   ├── PayloadTooLarge         413  body (or the frame it makes) too large
    │   └── QueueFull               429  the queue is at --max-queue-len
    └── ServiceError                5xx: the relay or its workers could not serve
        ├── UpstreamError           502  a worker failed this request
        ├── Unavailable             503  draining, or requeue attempts exhausted
        └── GatewayTimeout          504  queue or request timeout
"""

from __future__ import annotations

__all__ = [
    "BadRequest",
    "ClientError",
    "GatewayTimeout",
    "ModelNotFound",
    "NotFound",
    "PayloadTooLarge",
    "QueueFull",
    "RelayError",
    "RequestTimeout",
    "ServiceError",
    "Unauthorized",
    "Unavailable",
    "UpstreamError",
]


class RelayError(Exception):
    """Root of the errors the relay turns into a client response.

    Attributes:
        status: HTTP status code.
        code: machine-readable code (OpenAI `error.code`, stats class).
        openai_type: OpenAI `error.type`.
        anthropic_type: Anthropic `error.type`.
        retry_after: seconds for a `Retry-After` header, or None.
    """

    status = 500
    code = "relay_error"
    openai_type = "server_error"
    anthropic_type = "api_error"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class ClientError(RelayError):
    status = 400
    code = "bad_request"
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class BadRequest(ClientError):
    pass


class Unauthorized(ClientError):
    status = 401
    code = "invalid_api_key"
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"


class ModelNotFound(ClientError):
    status = 404
    code = "model_not_found"
    anthropic_type = "not_found_error"


class NotFound(ClientError):
    status = 404
    code = "not_found"
    anthropic_type = "not_found_error"


class RequestTimeout(ClientError):
    status = 408
    code = "body_timeout"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"
    anthropic_type = "request_too_large"


class QueueFull(ClientError):
    status = 429
    code = "queue_full"
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"


class ServiceError(RelayError):
    status = 500


class UpstreamError(ServiceError):
    status = 502
    code = "upstream_error"
    anthropic_type = "api_error"


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"
    anthropic_type = "overloaded_error"


class GatewayTimeout(ServiceError):
    status = 504
    code = "timeout"
    anthropic_type = "api_error"
