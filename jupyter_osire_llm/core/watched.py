"""What the monitor watches: a service whose records follow scheduler jobs.

The monitor (deployments/monitor.py) knows only this protocol. Deployments and batches each
implement it (``deployments/watch.py``, ``batches/watch.py``), so that the watch loop holds no
record type, no state name and no service's internals.
"""
from __future__ import annotations

from collections.abc import Awaitable, Hashable
from typing import Callable, NamedTuple, Protocol

from ..schedulers.base import Job, JobInfo


class WatchedJob(NamedTuple):
    """A live job on this server's scheduler, and what to do with the scheduler's word on it."""

    job: Job
    observe: Callable[[JobInfo], Awaitable[None]]


class Watched(Protocol):
    async def refresh(self) -> None:
        """Bring in what another Jupyter server of this user wrote (every server, each cycle)."""

    def watched_jobs(self) -> list[WatchedJob]:
        """The live jobs this server's scheduler runs (not another backend's or cluster's)."""

    def unsubmitted_by(self) -> set[str]:
        """Ids of the servers whose launches have no job id yet (perhaps cut off)."""

    async def reap_interrupted(self, alive: Callable[[str], bool]) -> None:
        """End what a server that is gone left half-submitted (``alive``: whether a server id
        still holds its heartbeat); the watcher calls it each cycle."""

    async def after_query(self) -> None:
        """A scheduler query just succeeded: a good time to retry what needs the controller."""

    async def housekeeping(self) -> None:
        """The watcher's cheap local work of each cycle (files the jobs write, health checks)."""

    def signature(self) -> Hashable:
        """A value that changes whenever a state the user sees moves."""

    async def close(self) -> None:
        """Stop what runs beside the cycle (probes, sessions)."""
