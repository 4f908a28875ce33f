"""The checks a batch's input file passes before anything is submitted (pure functions).

Each line is one request in the OpenAI Batch input format::

    {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "smollm2-135m", "messages": [...], "max_tokens": 32}}

Every problem names its line; the first ``MAX_PROBLEMS`` are reported together.

A line ends at ``b"\\n"`` and nowhere else (``split_lines``; a binary file's iteration does the
same): never ``str.splitlines``, which also splits at a bare ``\\r``, U+2028 and others. The
server's check, the spec reader and the job-side runner (``batch_runner.read_requests``, binary
too) see the same requests: a ``\\r`` between JSON tokens is whitespace for all of them, a
bare ``\\r`` inside a string is refused here (a control character) and so never reaches the
runner, and a U+2028 inside a string is text.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable

from ..errors import RequestError

#: The OpenAI endpoints a batch may call, all served by vLLM and by OpenAI-compatible engines.
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
MAX_REQUESTS = 50_000      # OpenAI's own limit per batch
MAX_PROBLEMS = 10
MAX_ID_LENGTH = 512


@dataclass(frozen=True)
class BatchInput:
    model: str
    total: int


def split_lines(data: bytes) -> list[bytes]:
    """A batch file's lines: split at ``b"\\n"`` only (see the module's note)."""
    return data.split(b"\n")


def check_endpoint(endpoint: object) -> str:
    if endpoint not in ENDPOINTS:
        raise RequestError(f"'endpoint' must be one of {', '.join(ENDPOINTS)}, got {endpoint!r}",
                           field="endpoint")
    return str(endpoint)


def check_input(lines: Iterable[bytes], endpoint: str, models: Iterable[str]) -> BatchInput:
    """The model the lines call and how many requests there are; ``RequestError`` (field
    ``input_file_id``) naming each bad line otherwise."""
    known = sorted(models)
    problems: list[str] = []
    seen: set[str] = set()
    model = None
    total = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        total += 1
        try:
            line_model = _check_line(raw, endpoint, seen)
            if model is None and line_model not in known:
                raise ValueError(f"model {line_model!r} is not in the catalog (known: "
                                 f"{', '.join(known) or 'none'})")
            if model is None:
                model = line_model
            elif line_model != model:
                raise ValueError(f"body.model {line_model!r} differs from {model!r} of the lines "
                                 "before (a batch calls one model)")
        except ValueError as exc:
            problems.append(f"line {number}: {exc}")
            if len(problems) >= MAX_PROBLEMS:
                break
    if not problems and total == 0:
        problems.append("the file has no requests")
    if not problems and total > MAX_REQUESTS:
        problems.append(f"{total} requests, over the limit of {MAX_REQUESTS} per batch")
    if problems:
        more = " (and maybe more)" if len(problems) >= MAX_PROBLEMS else ""
        raise RequestError(f"the input file is not a valid batch: {'; '.join(problems)}{more}",
                           field="input_file_id")
    assert model is not None
    return BatchInput(model=model, total=total)


def _check_line(raw: bytes, endpoint: str, seen: set[str]) -> str:
    try:
        line = json.loads(raw)
    except json.JSONDecodeError as exc:   # its own "line 1" would only confuse: give the column
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError:
        raise ValueError("not valid JSON (not UTF-8 text)") from None
    if not isinstance(line, dict):
        raise ValueError("not a JSON object")
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_ID_LENGTH:
        raise ValueError(f"'custom_id' must be a non-empty string of at most {MAX_ID_LENGTH} "
                         "characters")
    if custom_id in seen:
        raise ValueError(f"duplicate custom_id {custom_id!r}")
    seen.add(custom_id)
    if line.get("method") != "POST":
        raise ValueError(f"'method' must be \"POST\", got {line.get('method')!r}")
    if line.get("url") != endpoint:
        raise ValueError(f"'url' {line.get('url')!r} is not the batch's endpoint {endpoint!r}")
    body = line.get("body")
    if not isinstance(body, dict):
        raise ValueError("'body' must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("'body.model' must name a catalog model")
    if body.get("stream"):
        raise ValueError("'body.stream' cannot be true in a batch")
    return model
