"""The one exception tree of jupyter-osire-llm.

    OsireError
    ├── ConfigError            site configuration or catalog is unusable
    ├── RequestError           a caller's input is wrong (HTTP 400)
    │   ├── LimitExceeded      valid, but over a site limit (HTTP 400)
    │   │   └── RequestTooLarge    body over the proxy's limit (HTTP 413)
    │   └── MethodNotAllowed   a method the route does not take (HTTP 405, Allow)
    ├── NotFound               unknown model, deployment or route (HTTP 404)
    ├── Conflict               the request clashes with current state (HTTP 409)
    ├── StoreError             the state file cannot be read or written (full disk) (HTTP 503)
    ├── LeaseLost              this server stopped watching the scheduler mid-cycle (HTTP 409)
    ├── SchedulerError         the batch system failed us (HTTP 503)
    │   ├── SchedulerUnavailable   command missing, controller down
    │   ├── SchedulerTimeout       a command did not answer in time
    │   ├── SchedulerOutputError   output we cannot parse
    │   ├── SubmitRejected         the scheduler refused the job
    │   └── PermissionDenied       not the caller's job
    ├── UpstreamError          an engine failed us (HTTP 502)
    │   ├── ModelNotReady      queued or starting (HTTP 503, Retry-After)
    │   └── UpstreamTimeout    (HTTP 504)
    │   met only by the client (_client.py), never sent by the server:
    ├── ServerUnreachable      no answer from the Jupyter server (connection refused, DNS, TLS)
    │   └── ServerNotFound     no server to talk to was found at all
    ├── AuthenticationFailed   the server refused the token (HTTP 401/403 from Jupyter)
    ├── WaitTimeout            a wait ran past its timeout (the deployment keeps going)
    └── DeploymentFailed       the deployment failed or was stopped while we waited

Errors from libraries underneath are translated where they enter (``raise ... from exc``);
handlers map this tree to HTTP statuses in one place (``handlers/base.py``).
"""
from __future__ import annotations

from typing import Any, Optional


class OsireError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, field: Optional[str] = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI error shape: ``{"error": {"message", "type", "code", "param"}}``."""
        error: dict[str, Any] = {"message": self.message, "type": self.type, "code": self.code,
                                 "param": self.field}
        error.update(self.extra)
        return {"error": error}


class ConfigError(OsireError):
    code = "config_error"


class RequestError(OsireError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class LimitExceeded(RequestError):
    code = "limit_exceeded"


class RequestTooLarge(LimitExceeded):
    status = 413
    code = "request_too_large"


class MethodNotAllowed(RequestError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.allow = allow


class NotFound(OsireError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(OsireError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class StoreError(OsireError):
    status = 503
    type = "server_error"
    code = "state_unavailable"


class LeaseLost(OsireError):
    """A watch cycle outlived its lease (a slow ``squeue``, a slow state file): another server
    of this user may have taken over, so this one does not act on what it observed."""
    status = 409
    type = "server_error"
    code = "lease_lost"


class SchedulerError(OsireError):
    status = 503
    type = "scheduler_error"
    code = "scheduler_error"


class SchedulerUnavailable(SchedulerError):
    code = "scheduler_unavailable"


class SchedulerTimeout(SchedulerError):
    code = "scheduler_timeout"


class SchedulerOutputError(SchedulerError):
    code = "scheduler_bad_output"


class SubmitRejected(SchedulerError):
    status = 400
    code = "submit_rejected"


class PermissionDenied(SchedulerError):
    status = 403
    code = "permission_denied"


class UpstreamError(OsireError):
    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"


class ModelNotReady(UpstreamError):
    status = 503
    code = "model_not_ready"

    def __init__(self, message: str, *, retry_after: int = 5, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


# -- met only by the client ---------------------------------------------------------------

class ServerUnreachable(OsireError):
    status = 0
    type = "connection_error"
    code = "server_unreachable"


class ServerNotFound(ServerUnreachable):
    code = "server_not_found"


class AuthenticationFailed(OsireError):
    status = 403
    type = "authentication_error"
    code = "authentication_failed"


class WaitTimeout(OsireError):
    type = "timeout"
    code = "wait_timeout"

    def __init__(self, message: str, *, deployment: Optional[dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.deployment = deployment or {}


class DeploymentFailed(OsireError):
    type = "deployment_error"
    code = "deployment_failed"

    def __init__(self, message: str, *, deployment: Optional[dict[str, Any]] = None,
                 log_tail: str = "") -> None:
        super().__init__(message)
        self.deployment = deployment or {}
        self.log_tail = log_tail
