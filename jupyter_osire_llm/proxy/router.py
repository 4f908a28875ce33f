"""Which engine serves a request: ready replicas, least loaded of two, failed ones set aside.

The router reads endpoints from an ``EndpointSource`` (the deployment service) and from the
site's static endpoints; it never touches the scheduler and knows nothing of HTTP. It keeps two
small pieces of state per engine URL: requests in flight (for power-of-two-choices) and whether a
connection to it failed (the proxy's health probe clears that when ``/health`` passes again).
Per deployment it counts inference requests in flight and when the last one ended, for the idle
shutdown policy (policies.py); a stream counts until its last byte.
"""
from __future__ import annotations

import random
import time
from typing import Any, Callable, Collection, Mapping, Optional, Sequence

from ..errors import ModelNotReady, NotFound, UpstreamError
from .endpoints import Endpoint, EndpointSource, ModelStatus

STATIC_PREFIX = "static:"
# Seconds a client is told to wait, by deployment state (queued jobs take longer).
RETRY_AFTER = {"queued": 15, "starting": 5}
DEFAULT_RETRY_AFTER = 5


def static_endpoints(config: Mapping[str, Any]) -> tuple[dict[str, Endpoint], list[str]]:
    """``{name: {"url", "api_key"?, "model"?}}`` from the site config: endpoints and problems."""
    endpoints, problems = {}, []
    for name, entry in config.items():
        url = entry.get("url") if isinstance(entry, Mapping) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            problems.append(f"{name!r} needs an http(s) 'url', got {url!r}; ignored")
            continue
        url = url.rstrip("/")
        if url.endswith("/v1"):  # accept OpenAI-style base URLs; the proxy adds /v1 itself
            url = url[:-3]
        endpoints[name] = Endpoint(model=name, url=url, key=entry.get("api_key") or None,
                                   deployment_id=STATIC_PREFIX + name, replica=name)
    return endpoints, problems


class Router:
    """Picks an endpoint for a model name; tracks load and failures per engine URL."""

    def __init__(self, source: EndpointSource, static: Mapping[str, Any] = {},
                 *, rng: Optional[random.Random] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.static, self.problems = static_endpoints(static)
        self._upstream_names = {name: static[name]["model"] for name in self.static
                                if static[name].get("model") not in (None, "", name)}
        self._in_flight: dict[str, int] = {}
        self._failed: dict[str, Endpoint] = {}
        self._rng = rng or random.Random()
        self._clock = clock
        self._busy: dict[str, int] = {}            # inference requests in flight, per deployment
        self._last_used: dict[str, float] = {}     # when the last one ended, per deployment

    # -- choosing ---------------------------------------------------------------------------

    def resolve(self, model: str, exclude: Collection[str] = ()) -> Endpoint:
        """A ready endpoint of ``model`` not in ``exclude`` (URLs), or the reason there is none."""
        candidates = self.candidates(model)
        if candidates:
            return self._choose(candidates, exclude, f"model {model!r}")
        status = self.source.model_status(model)
        if status is not None:
            raise not_ready(status)
        callable_now = self.callable_models()
        listing = ", ".join(callable_now) if callable_now else "none (launch one first)"
        raise NotFound(f"model {model!r} is not available; callable models: {listing}",
                       field="model", available=callable_now)

    def for_deployment(self, deployment_id: str, exclude: Collection[str] = ()) -> Endpoint:
        """A ready replica of one of the user's deployments, for engine passthrough.

        Static endpoints are left out on purpose: their key is the site's, and the passthrough
        would open every route of that server to every user, not only the OpenAI ones.
        """
        candidates = self.source.endpoint_for_deployment(deployment_id)
        if candidates:
            return self._choose(candidates, exclude, f"deployment {deployment_id!r}")
        raise NotFound(f"deployment {deployment_id!r} is unknown or has no ready replica",
                       field="deployment")

    def candidates(self, model: str) -> list[Endpoint]:
        static = self.static.get(model)
        ready = list(self.source.ready_endpoints(model))
        return [static, *ready] if static else ready

    def callable_models(self) -> list[str]:
        """Models callable now: static endpoints and models with a ready replica."""
        return sorted(set(self.static) | set(self.source.callable_models()))

    def upstream_model(self, endpoint: Endpoint) -> Optional[str]:
        """The name the engine expects when it differs from the caller's (static ``model``)."""
        if endpoint.deployment_id.startswith(STATIC_PREFIX):
            return self._upstream_names.get(endpoint.replica)
        return None

    # -- load and failures ------------------------------------------------------------------

    def acquire(self, endpoint: Endpoint) -> None:
        self._in_flight[endpoint.url] = self._in_flight.get(endpoint.url, 0) + 1

    def release(self, endpoint: Endpoint) -> None:
        left = self._in_flight.get(endpoint.url, 0) - 1
        if left > 0:
            self._in_flight[endpoint.url] = left
        else:
            self._in_flight.pop(endpoint.url, None)

    def in_flight(self, endpoint: Endpoint) -> int:
        return self._in_flight.get(endpoint.url, 0)

    def in_flight_at(self, url: str) -> int:
        return self._in_flight.get(url, 0)

    # -- inference activity per deployment (idle shutdown) -----------------------------------

    def begin_use(self, endpoint: Endpoint) -> None:
        self._busy[endpoint.deployment_id] = self._busy.get(endpoint.deployment_id, 0) + 1

    def end_use(self, endpoint: Endpoint) -> None:
        left = self._busy.get(endpoint.deployment_id, 0) - 1
        if left > 0:
            self._busy[endpoint.deployment_id] = left
        else:
            self._busy.pop(endpoint.deployment_id, None)
        self._last_used[endpoint.deployment_id] = self._clock()

    def busy(self, deployment_id: str) -> int:
        """Inference requests of this server running on the deployment now."""
        return self._busy.get(deployment_id, 0)

    def last_used(self, deployment_id: str) -> Optional[float]:
        """When this server's last inference request on the deployment ended."""
        return self._last_used.get(deployment_id)

    def mark_failed(self, endpoint: Endpoint) -> None:
        """Take an engine out of rotation until ``mark_healthy`` (the proxy's probe)."""
        self._failed[endpoint.url] = endpoint

    def mark_healthy(self, endpoint: Endpoint) -> None:
        self._failed.pop(endpoint.url, None)

    def failed(self) -> list[Endpoint]:
        return list(self._failed.values())

    def forget_gone(self) -> None:
        """Drop failure marks of engines that are no longer offered (stopped deployments)."""
        for endpoint in self.failed():
            if endpoint not in self._offered(endpoint):
                self._failed.pop(endpoint.url, None)

    def _offered(self, endpoint: Endpoint) -> Sequence[Endpoint]:
        if endpoint.deployment_id.startswith(STATIC_PREFIX):
            return list(self.static.values())
        return self.source.endpoint_for_deployment(endpoint.deployment_id)

    def _choose(self, candidates: Sequence[Endpoint], exclude: Collection[str],
                what: str) -> Endpoint:
        """Least loaded of two healthy ones; failed ones only when nothing else is left."""
        untried = [e for e in candidates if e.url not in exclude]
        healthy = [e for e in untried if e.url not in self._failed]
        if healthy or untried:
            return self._least_loaded_of_two(healthy or untried)
        raise UpstreamError(f"could not connect to any of the {len(candidates)} replica(s) of "
                            f"{what}")

    def _least_loaded_of_two(self, endpoints: Sequence[Endpoint]) -> Endpoint:
        if len(endpoints) == 1:
            return endpoints[0]
        first, second = self._rng.sample(endpoints, 2)
        return second if self.in_flight(second) < self.in_flight(first) else first


def not_ready(status: ModelStatus) -> ModelNotReady:
    """503 for a model that is queued or starting: the state, the reason, when to retry."""
    if status.state == "ready":
        message = (f"model {status.model!r} is not ready: no replica of deployment "
                   f"{status.deployment_id} passes its health check")
    else:
        message = (f"model {status.model!r} is not ready: deployment {status.deployment_id} "
                   f"is {status.state}")
    if status.reason:
        message += f" ({status.reason})"
    return ModelNotReady(message, retry_after=RETRY_AFTER.get(status.state, DEFAULT_RETRY_AFTER),
                         state=status.state, deployment=status.deployment_id)
