"""Every /osire route while the extension's configuration is invalid: the reason, nothing else
(no scheduler call, no job, no proxying on limits that are not in force)."""
from __future__ import annotations

from typing import Any

from tornado import web

from ...errors import ConfigError
from .base import OsireHandler


class SwitchedOffHandler(OsireHandler):
    def initialize(self, problem: ConfigError) -> None:
        self.problem = problem

    @web.authenticated
    def get(self, *args: Any) -> None:
        raise self.problem

    post = put = patch = delete = get

    def log_exception(self, typ, value, tb) -> None:  # type: ignore[no-untyped-def]
        self.log.warning("%s %s: %s", self.request.method, self.request.path, self.problem.message)
