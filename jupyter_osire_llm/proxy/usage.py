"""Tokens the proxy counts: the engine's own ``usage``, for JSON answers and for streams.

A JSON answer carries ``usage``. A stream carries it only when asked for
(``stream_options.include_usage``): when the caller did not ask, the proxy asks the engine for it
and takes the extra last event (``choices`` empty, ``usage`` set) out of what the caller gets; when
the caller asked, that event passes and is counted. Nothing else of the bytes changes, and chunks
go on as they come: only the bytes of an event not yet complete wait for its end, and only while
the proxy must be able to take that event out.

Counts stay in memory (``TokenTally``), per UTC day and model; the control plane takes them out
now and then and writes them to the state file (``core/usage_log.py``). The hot path never
touches disk.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Optional

#: Routes (after ``/v1/``) whose streams give a usage event when asked (``stream_options``).
STREAM_USAGE_ROUTES = frozenset({"chat/completions", "completions"})
#: The end of a server-sent event: a blank line (LF, CRLF or CR line ends).
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")

Key = tuple[str, str]   # (UTC day as an ISO date, model)


@dataclass
class Counts:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: "Counts") -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


def utc_day(when: float) -> str:
    """The UTC day of an epoch time, as an ISO date."""
    return datetime.fromtimestamp(when, timezone.utc).date().isoformat()


class TokenTally:
    """Requests and tokens per (UTC day, model) since the last ``take``; in memory only."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counts: dict[Key, Counts] = {}

    def add(self, model: str, prompt_tokens: int, completion_tokens: int,
            requests: int = 1) -> None:
        key = (utc_day(self._clock()), model)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = Counts()
        counts.add(Counts(requests, prompt_tokens, completion_tokens))

    def take(self) -> dict[Key, Counts]:
        """Everything counted so far, leaving the tally empty."""
        taken, self._counts = self._counts, {}
        return taken

    def give_back(self, counts: dict[Key, Counts]) -> None:
        """Counts that could not be written: kept for the next try."""
        for key, value in counts.items():
            self._counts.setdefault(key, Counts()).add(value)

    def __bool__(self) -> bool:
        return bool(self._counts)

    def snapshot(self) -> dict[Key, Counts]:
        return {key: Counts(c.requests, c.prompt_tokens, c.completion_tokens)
                for key, c in self._counts.items()}


def route_of(path: str) -> str:
    """``/v1/chat/completions?x=1`` -> ``chat/completions``."""
    route = path.split("?", 1)[0]
    if route.startswith("/v1/"):
        route = route[4:]
    return route.strip("/")


class RequestUsage:
    """One inference request's usage, read from the engine's answer on its way to the caller.

    ``feed`` takes each chunk of an event stream and answers the bytes to send now; ``finish``
    the bytes left at the end; ``answer`` reads a whole (JSON) answer; ``close`` counts the
    request once, with its tokens (the last usage the engine reported: vLLM's continuous usage
    statistics are running totals)."""

    __slots__ = ("tally", "model", "strip", "usage", "_tail", "_closed")

    def __init__(self, tally: TokenTally, model: str, strip: bool = False) -> None:
        self.tally, self.model, self.strip = tally, model, strip
        self.usage: Optional[dict[str, Any]] = None
        self._tail = b""
        self._closed = False

    def answer(self, body: bytes) -> None:
        if b'"usage"' not in body:
            return
        try:
            doc = json.loads(body)
        except ValueError:
            return
        if isinstance(doc, dict):
            self._note(doc)

    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk if self._tail else chunk
        start, kept = 0, []
        for end in _EVENT_END.finditer(data):
            event = data[start:end.end()]
            start = end.end()
            if not self._usage_only(event) or not self.strip:
                kept.append(event)
        self._tail = data[start:]
        if not self.strip:
            return chunk            # the bytes as they came; the events were only read
        if not kept:
            return b""
        return kept[0] if len(kept) == 1 else b"".join(kept)

    def finish(self) -> bytes:
        """What is left of a stream that ended without a last blank line."""
        tail, self._tail = self._tail, b""
        if not self.strip or (tail and self._usage_only(tail)):
            return b""
        return tail

    def close(self, status: int) -> None:
        """Count the request (only an answered one: status 2xx) and its tokens, once."""
        if self._closed:
            return
        self._closed = True
        if not 200 <= status < 300:
            return
        prompt, completion = _tokens(self.usage)
        self.tally.add(self.model, prompt, completion)

    def _usage_only(self, event: bytes) -> bool:
        """Whether the event carries usage (noted) and no choices: the extra last event."""
        if b'"usage"' not in event:
            return False
        data = b"\n".join(line[5:].lstrip(b" ") for line in event.splitlines()
                          if line.startswith(b"data:"))
        try:
            doc = json.loads(data)
        except ValueError:
            return False
        if not isinstance(doc, dict) or not self._note(doc):
            return False
        return doc.get("choices") == []

    def _note(self, doc: dict[str, Any]) -> bool:
        usage = doc.get("usage")
        if not isinstance(usage, dict):   # the Responses API: in the response.completed event
            response = doc.get("response")
            usage = response.get("usage") if isinstance(response, dict) else None
        if isinstance(usage, dict):
            self.usage = usage
            return True
        return False


def _tokens(usage: Optional[dict[str, Any]]) -> tuple[int, int]:
    if usage is None:
        return 0, 0
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    return _count(prompt), _count(completion)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def plan_usage(tally: TokenTally, model: str, path: str, payload: Optional[dict[str, Any]]
               ) -> tuple[Optional[dict[str, Any]], RequestUsage]:
    """The request's usage reader, and the body to send instead when the engine must be asked
    for the usage event (a stream whose caller did not ask for it); None: send it as it is."""
    if payload is None or payload.get("stream") is not True or \
            route_of(path) not in STREAM_USAGE_ROUTES:
        return None, RequestUsage(tally, model)
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):   # the engine's 400 to give
        return None, RequestUsage(tally, model)
    if options is not None and options.get("include_usage") is True:
        return None, RequestUsage(tally, model)
    asked = {**payload, "stream_options": {**(options or {}), "include_usage": True}}
    return asked, RequestUsage(tally, model, strip=True)
