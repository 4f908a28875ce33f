"""What one user holds, as the site limits count it: GPUs of live replicas and running batches.

Deployments and batches both check ``OsireLLM.max_total_gpus`` against this one count, inside
the store's write transaction (``Store.insert``, ``Store.save``), so neither can be used to get
around the other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..batches.states import Batch
from ..deployments.states import Deployment
from .store import Check, Others


@dataclass(frozen=True)
class Holdings:
    """What one user holds, read inside the write transaction that would add to it."""

    deployments: list[Deployment]   # the live ones
    batches: list[dict[str, Any]]   # every batch's document, live or not

    @classmethod
    def of(cls, others: Others) -> "Holdings":
        deployments = []
        for doc in others.get("deployments", []):
            try:
                deployment = Deployment.from_doc(doc, 0)
            except (ValueError, TypeError, KeyError, AttributeError):   # not counted
                continue
            if deployment.live:
                deployments.append(deployment)
        return cls(deployments, list(others.get("batches", [])))


def within(check: Callable[[Holdings], None]) -> Check:
    """A check of what the user holds, as the store's write transaction calls it."""
    return lambda others: check(Holdings.of(others))


def resources_gpus(resources: dict[str, Any]) -> int:
    """GPUs one job asks for, from the resources as stored (per node times nodes)."""
    return int(resources.get("gpus") or 0) * int(resources.get("nodes") or 1)


def deployment_gpus(deployment: Deployment) -> int:
    return resources_gpus(deployment.resources) * sum(r.live for r in deployment.replicas)


def live_batches(holdings: Holdings) -> list[Batch]:
    batches = []
    for doc in holdings.batches:
        try:
            batch = Batch.from_doc(doc, 0)
        except TypeError:   # a record of another version, missing fields: not counted
            continue
        if batch.live:
            batches.append(batch)
    return batches


def gpus_in_use(holdings: Holdings) -> int:
    return (sum(deployment_gpus(d) for d in holdings.deployments) +
            sum(resources_gpus(b.resources) for b in live_batches(holdings)))
