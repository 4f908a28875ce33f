"""What the router needs to know about callable models, and nothing more.

The deployment service (fed by the monitor) implements ``EndpointSource``; the router and the
OpenAI proxy read it and never touch the scheduler.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]{0,253}", re.ASCII)
_FINGERPRINT = re.compile(r"[0-9a-f]{64}", re.ASCII)
_TOKEN = re.compile(r"[A-Za-z0-9_.-]{1,128}", re.ASCII)


@dataclass(frozen=True)
class Endpoint:
    """One ready replica (or one site-configured static endpoint) serving ``model``."""

    model: str                 # the name callers put in the OpenAI ``model`` field
    url: str                   # base URL of the engine, e.g. https://node12:8123 (no trailing /)
    key: Optional[str]         # the engine's own API key, sent as Bearer; never the Jupyter token
    deployment_id: str         # "static:<name>" for static endpoints
    replica: str               # scheduler job id, or the static name
    #: SHA-256 (hex) of the engine's per-job TLS certificate: an engine that cannot present it
    #: gets no request and no key. None for static endpoints (verified by the system's CAs).
    fingerprint: Optional[str] = None


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


@dataclass(frozen=True)
class EngineEndpoint:
    """What a job script wrote into ``endpoint.json`` (in the 0700 job folder) for one run."""

    host: str
    port: int
    job_id: str                # the scheduler's job id, so a file of another job is never used
    run: str                   # a nonce per engine run (a requeued job writes a new one)
    fingerprint: Optional[str]  # SHA-256 of the run's TLS certificate; None: plain HTTP


def parse_endpoint_file(text: str) -> EngineEndpoint:
    """Parse and check ``endpoint.json``; ValueError says what is wrong with it."""
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    host, port = doc.get("host"), doc.get("port")
    job_id, run, fingerprint = doc.get("job_id"), doc.get("run"), doc.get("fingerprint") or None
    if not isinstance(host, str) or not _HOST.fullmatch(host):
        raise ValueError(f"bad host {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"bad port {port!r}")
    if not isinstance(job_id, str) or not _TOKEN.fullmatch(job_id):
        raise ValueError(f"bad job_id {job_id!r}")
    if not isinstance(run, str) or not _TOKEN.fullmatch(run):
        raise ValueError(f"bad run {run!r}")
    if fingerprint is not None and (not isinstance(fingerprint, str)
                                    or not _FINGERPRINT.fullmatch(fingerprint.lower())):
        raise ValueError("bad fingerprint")
    return EngineEndpoint(host, port, job_id, run, fingerprint.lower() if fingerprint else None)
