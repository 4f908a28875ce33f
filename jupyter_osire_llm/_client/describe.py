"""A deployment's or a batch's progress in one line of words (the command line and the magics)."""
from __future__ import annotations

import time
from typing import Any, Optional


def describe(d: dict[str, Any], now: Optional[float] = None) -> str:
    """One line on a deployment's progress: state, Slurm's reason and estimate, elapsed time."""
    now = time.time() if now is None else now
    replicas = d.get("replicas") or []
    head = f"{d['model']} ({d['id']}): {d['state']}"
    if d["state"] == "queued":
        reasons = sorted({r["reason"] for r in replicas if r.get("reason")})
        starts = [r["estimated_start"] for r in replicas if r.get("estimated_start")]
        parts = []
        if reasons:
            parts.append("reason " + ", ".join(reasons))
        if starts:
            start = min(starts)
            when = time.strftime("%H:%M", time.localtime(start))
            parts.append(f"estimated start {when}" +
                         (f" (in {_duration(start - now)})" if start > now else ""))
        parts.append(f"waiting {_duration(now - (d.get('created') or now))}")
        return head + ", " + ", ".join(parts)
    if d["state"] == "starting":
        started = [r["started_at"] for r in replicas if r.get("started_at")]
        since = min(started) if started else d.get("created") or now
        return head + f", {_duration(now - since)} since the job started"
    if d["state"] == "ready":
        ready = [r["ready_at"] for r in replicas if r.get("ready_at")]
        took = (max(ready) - d["created"]) if ready and d.get("created") else None
        return head + (f" after {_duration(took)}" if took is not None else "")
    if d.get("reason"):
        return head + f": {d['reason']}"
    return head


def describe_batch(b: dict[str, Any], now: Optional[float] = None) -> str:
    """One line on a batch: status, requests done of the total, Slurm's reason or why it ended."""
    now = time.time() if now is None else now
    counts, extra = b["request_counts"], b.get("osire") or {}
    line = f"{b.get('model', '')} batch ({b['id']}): {b['status']}, " \
           f"{counts['completed']}/{counts['total']} done"
    if counts.get("failed"):
        line += f", {counts['failed']} failed"
    if b["status"] == "queued" and extra.get("reason"):
        line += f", reason {extra['reason']}, waiting {_duration(now - b['created_at'])}"
    elif b["status"] == "in_progress" and b.get("in_progress_at"):
        line += f", running {_duration(now - b['in_progress_at'])}"
    elif b["status"] in ("failed", "expired") and extra.get("reason"):
        line += f": {extra['reason']}"
    return line


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
