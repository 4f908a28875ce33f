"""What the router needs to know about callable models, and nothing more.

The deployment service (fed by the monitor) implements ``EndpointSource``; the router and the
OpenAI proxy read it and never touch the scheduler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence


@dataclass(frozen=True)
class Endpoint:
    """One ready replica (or one site-configured static endpoint) serving ``model``."""

    model: str                 # the name callers put in the OpenAI ``model`` field
    url: str                   # base URL of the engine, e.g. http://node12:8123 (no trailing /)
    key: Optional[str]         # the engine's own API key, sent as Bearer; never the Jupyter token
    deployment_id: str         # "static:<name>" for static endpoints
    replica: str               # scheduler job id, or the static name


@dataclass(frozen=True)
class ModelStatus:
    """Why a model the user has is not callable now (queued, starting...)."""

    model: str
    state: str                 # a deployment state: queued, starting, stopping, failed...
    deployment_id: str
    reason: Optional[str] = None


class EndpointSource(Protocol):
    def ready_endpoints(self, model: str) -> Sequence[Endpoint]:
        """Ready replicas of ``model`` now (possibly empty)."""

    def model_status(self, model: str) -> Optional[ModelStatus]:
        """The most advanced not-ready deployment of ``model``, or None if the user has none."""

    def callable_models(self) -> Sequence[str]:
        """Names with at least one ready replica."""

    def endpoint_for_deployment(self, deployment_id: str) -> Sequence[Endpoint]:
        """Ready replicas of one deployment (for /osire/engines/<deployment>/...)."""
