"""Resource values and site limits: validation of everything a user may ask for.

Every value here can end up on a scheduler command line or in a batch script, so each is checked
against a strict pattern (no whitespace, quotes, newlines or shell metacharacters) before use.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping, Optional, Sequence

from .errors import LimitExceeded, RequestError
from .schedulers.base import Resources

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
    """Validate a user's (or catalog's) ``resources`` mapping on top of ``base``."""
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
    checked = {name: _check_field(name, value) for name, value in raw.items()}
    return replace(base, **checked)


@dataclass(frozen=True)
class SiteLimits:
    """What the site allows one user. Empty allow-lists allow anything."""

    allowed_partitions: Sequence[str] = ()
    allowed_accounts: Sequence[str] = ()
    max_gpus: int = 8                 # per replica
    max_time: str = ""                # Slurm syntax; "" = no limit
    max_deployments: int = 4          # live deployments per user
    max_replicas: int = 4

    def check(self, resources: Resources, replicas: int) -> None:
        """Raise ``LimitExceeded`` naming the field and the limit."""
        if not 1 <= replicas <= self.max_replicas:
            raise LimitExceeded(f"replicas must be between 1 and {self.max_replicas} (site "
                                f"limit), got {replicas}", field="replicas")
        if resources.gpus > self.max_gpus:
            raise LimitExceeded(f"resources.gpus {resources.gpus} is over the site limit of "
                                f"{self.max_gpus}", field="resources.gpus")
        if self.max_time and resources.time and \
                time_to_minutes(resources.time) > time_to_minutes(self.max_time):
            raise LimitExceeded(f"resources.time {resources.time} is over the site limit of "
                                f"{self.max_time}", field="resources.time")
        _check_allowed("partition", resources.partition, self.allowed_partitions)
        _check_allowed("account", resources.account, self.allowed_accounts)

    def check_count(self, live: int) -> None:
        if live >= self.max_deployments:
            raise LimitExceeded(f"you already have {live} live deployment(s); the site limit is "
                                f"{self.max_deployments}. Stop one first.",
                                field="max_deployments")


def _check_allowed(name: str, value: Optional[str], allowed: Sequence[str]) -> None:
    if allowed and value is not None and value not in allowed:
        raise LimitExceeded(f"resources.{name} {value!r} is not allowed here; allowed: "
                            f"{', '.join(allowed)}", field=f"resources.{name}")
