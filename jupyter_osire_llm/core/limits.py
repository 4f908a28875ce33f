"""Resource values and site limits: validation of everything a user may ask for.

Every value here can end up on a scheduler command line or in a batch script, so each is checked
against a strict pattern (no whitespace, quotes, newlines or shell metacharacters) before use.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Optional, Sequence

from ..errors import LimitExceeded, RequestError
from ..schedulers.base import Resources

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)
_MEMORY = re.compile(r"[1-9][0-9]{0,8}[KMGT]?", re.ASCII)
_CONSTRAINT = re.compile(r"[A-Za-z0-9_.&|,:\[\]*()-]{1,128}", re.ASCII)
_TIME = re.compile(r"(?:(\d{1,3})-)?(\d{1,4})(?::(\d{1,2}))?(?::(\d{1,2}))?", re.ASCII)

INT_FIELDS = {"gpus": (0, 1024), "cpus": (1, 4096), "nodes": (1, 64)}
NAME_FIELDS = ("gpu_type", "partition", "account", "qos")
RESOURCE_FIELDS = tuple(f.name for f in fields(Resources))


def time_to_minutes(value: str) -> int:
    """Slurm time syntax (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) to whole minutes, rounded up."""
    m = _TIME.fullmatch(value)
    if not m:
        raise ValueError(f"{value!r} is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = m.groups()
    if days is not None:  # D-H[:M[:S]]
        hours, minutes, seconds = int(a), int(b or 0), int(c or 0)
        total = int(days) * 1440 + hours * 60 + minutes
    elif c is not None:   # H:M:S
        total, seconds = int(a) * 60 + int(b), int(c)
    elif b is not None:   # M:S
        total, seconds = int(a), int(b)
    else:                 # M
        total, seconds = int(a), 0
    return total + (1 if seconds else 0)


def _check_field(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in INT_FIELDS:
        low, high = INT_FIELDS[name]
        if isinstance(value, bool) or not isinstance(value, int):
            raise RequestError(f"resources.{name} must be an integer, got {value!r}",
                               field=f"resources.{name}")
        if not low <= value <= high:
            raise RequestError(f"resources.{name} must be between {low} and {high}, got {value}",
                               field=f"resources.{name}")
        return value
    if not isinstance(value, str):
        raise RequestError(f"resources.{name} must be a string, got {value!r}",
                           field=f"resources.{name}")
    if name in NAME_FIELDS and not _NAME.fullmatch(value):
        raise RequestError(f"resources.{name} {value!r} is not a valid name (letters, digits, "
                           "'_', '.', '-'; at most 64)", field=f"resources.{name}")
    if name == "memory" and not _MEMORY.fullmatch(value):
        raise RequestError(f"resources.memory {value!r} is not a size such as 64G or 4000M",
                           field="resources.memory")
    if name == "constraint" and not _CONSTRAINT.fullmatch(value):
        raise RequestError(f"resources.constraint {value!r} has characters Slurm features do "
                           "not use", field="resources.constraint")
    if name == "time":
        try:
            if time_to_minutes(value) < 1:
                raise ValueError("must be at least one minute")
        except ValueError as exc:
            raise RequestError(f"resources.time: {exc}", field="resources.time") from exc
    return value


def parse_resources(raw: Any, *, base: Optional[Resources] = None) -> Resources:
    """Validate a user's (or catalog's) ``resources`` mapping on top of ``base``.

    ``null`` for a field means "the default" (the catalog's): it never removes a value the
    catalog or the site limits rely on.
    """
    base = base or Resources()
    if raw is None:
        return base
    if not isinstance(raw, Mapping):
        raise RequestError("resources must be an object", field="resources")
    unknown = sorted(set(raw) - set(RESOURCE_FIELDS))
    if unknown:
        raise RequestError(f"unknown resource field(s) {', '.join(map(repr, unknown))}; known: "
                           f"{', '.join(RESOURCE_FIELDS)}", field=f"resources.{unknown[0]}")
    if "memory" in raw and isinstance(raw["memory"], int) and not isinstance(raw["memory"], bool):
        raw = {**raw, "memory": f"{raw['memory']}M"}
    checked = {name: _check_field(name, value) for name, value in raw.items()
               if value is not None}
    return replace(base, **checked)


@dataclass(frozen=True)
class SiteLimits:
    """What the site allows one user. Empty allow-lists allow anything."""

    allowed_partitions: Sequence[str] = ()
    allowed_accounts: Sequence[str] = ()
    max_gpus: int = 8                 # per replica: GPUs per node times nodes
    max_time: str = ""                # Slurm syntax; "" = no limit
    max_deployments: int = 4          # live deployments per user
    max_replicas: int = 4
    max_total_gpus: int = 0           # all live replicas of a user together; 0 = no limit

    def apply(self, resources: Resources, replicas: int) -> Resources:
        """What Slurm will be asked for, within the limits; ``LimitExceeded`` names the field.

        Where the request leaves a limited value open, the limit fills it: no time means the
        site's ``max_time`` (not the partition's default), no partition or account means the
        first allowed one.
        """
        if not 1 <= replicas <= self.max_replicas:
            raise LimitExceeded(f"replicas must be between 1 and {self.max_replicas} (site "
                                f"limit), got {replicas}", field="replicas")
        if job_gpus(resources) > self.max_gpus:
            raise LimitExceeded(f"{job_gpus(resources)} GPUs per replica (resources.gpus "
                                f"{resources.gpus} x resources.nodes {resources.nodes}) is over "
                                f"the site limit of {self.max_gpus}", field="resources.gpus")
        if self.max_time and not resources.time:
            resources = replace(resources, time=self.max_time)
        if self.max_time and time_to_minutes(resources.time or "0") > \
                time_to_minutes(self.max_time):
            raise LimitExceeded(f"resources.time {resources.time} is over the site limit of "
                                f"{self.max_time}", field="resources.time")
        resources = _allowed(resources, "partition", self.allowed_partitions)
        return _allowed(resources, "account", self.allowed_accounts)

    def check_count(self, live: int) -> None:
        if live >= self.max_deployments:
            raise LimitExceeded(f"you already have {live} live deployment(s); the site limit is "
                                f"{self.max_deployments}. Stop one first.",
                                field="max_deployments")

    def check_total_gpus(self, in_use: int, wanted: int) -> None:
        """``in_use``: GPUs of the user's live replicas and batches; ``wanted``: of the new
        ones."""
        if self.max_total_gpus and wanted and in_use + wanted > self.max_total_gpus:
            raise LimitExceeded(f"{wanted} more GPUs would make {in_use + wanted}, over the site "
                                f"limit of {self.max_total_gpus} GPUs per user ({in_use} in "
                                "use). Stop a deployment or cancel a batch first.",
                                field="max_total_gpus")


def job_gpus(resources: Resources) -> int:
    """GPUs one job holds: per node times nodes."""
    return resources.gpus * resources.nodes


def _allowed(resources: Resources, name: str, allowed: Sequence[str]) -> Resources:
    value = getattr(resources, name)
    if not allowed:
        return resources
    if value is None:
        first = allowed[0]
        return replace(resources, partition=first) if name == "partition" else \
            replace(resources, account=first)
    if value not in allowed:
        raise LimitExceeded(f"resources.{name} {value!r} is not allowed here; allowed: "
                            f"{', '.join(allowed)}", field=f"resources.{name}")
    return resources
