"""The one place where the core's errors become HTTP responses (OpenAI error shape)."""
from __future__ import annotations

import json
import time
from typing import Any

from jupyter_server.base.handlers import APIHandler
from tornado import web

from ...errors import MethodNotAllowed, ModelNotReady, OsireError, RequestError
from ..context import OsireContext


class OsireHandler(APIHandler):
    """Base for every /osire route: JSON in and out, errors as ``{"error": {...}}``."""

    @property
    def osire(self) -> OsireContext:
        return self.settings["osire"]

    def json_body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError as exc:
            raise RequestError(f"request body is not valid JSON: {exc}", field="body") from exc
        if not isinstance(body, dict):
            raise RequestError("request body must be a JSON object", field="body")
        return body

    def deployment_json(self, deployment: Any) -> dict[str, Any]:
        """A deployment as the API shows it, with its lifecycle policy state."""
        now = time.time()
        doc = deployment.to_json(now)
        elsewhere = self.osire.service.elsewhere(deployment)
        if elsewhere:   # another backend's or cluster's jobs: this server leaves them alone
            doc["elsewhere"] = elsewhere
            doc["reason"] = elsewhere + (f" ({doc['reason']})" if doc.get("reason") else "")
        if self.osire.policies is not None:
            doc["policy"] = self.osire.policies.view(deployment, now)
        return doc

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, OsireError):
            self.set_status(exc.status)
            if isinstance(exc, ModelNotReady):
                self.set_header("Retry-After", str(exc.retry_after))
            if isinstance(exc, MethodNotAllowed):
                self.set_header("Allow", exc.allow)
            payload = exc.to_openai()
        else:
            message = self._reason
            if isinstance(exc, web.HTTPError) and exc.log_message:
                message = exc.log_message % exc.args if exc.args else exc.log_message
            payload = {"error": {"message": message, "type": _error_type(status_code),
                                 "code": status_code, "param": None}}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[no-untyped-def]
        if isinstance(value, OsireError) and value.status < 500:
            self.log.info("%s %s: %s", self.request.method, self.request.path, value.message)
            return
        super().log_exception(typ, value, tb)


def _error_type(status: int) -> str:
    if status in (401, 403):
        return "authentication_error"
    return "invalid_request_error" if status < 500 else "server_error"
