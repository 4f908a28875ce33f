"""A batch described in YAML, for people who prefer files to the OpenAI Batch API (pure functions).

    model: smollm2-135m-instruct
    resources: {time: "01:00:00"}          # optional, as in a launch
    prompts:                                # or  input: questions.jsonl  (OpenAI batch lines)
      - What is the capital of France?
      - {id: q2, messages: [{role: user, content: Name a prime number.}]}
    system: Answer in one word.            # optional, before every prompt
    params: {temperature: 0, max_tokens: 32}
    endpoint: /v1/chat/completions          # the default; /v1/completions takes plain prompts
    output: answers.jsonl                   # written when the batch ends (beside the spec)
    metadata: {project: capitals}

``jupyter osire batch spec.yaml`` and ``%osire batch spec.yaml`` map it onto the same files and
batches routes as the ``openai`` SDK. Paths are relative to the spec's folder. A spec is a file
that may come from someone else, so its ``output`` stays inside the spec's folder (no ``..``, no
absolute path outside it, no symlink as the file), and results are written without following a
symlink (``write_result``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import RequestError
from ..formats.batch_input import ENDPOINTS, split_lines

FIELDS = {"model", "resources", "prompts", "input", "system", "params", "endpoint", "output",
          "metadata"}


@dataclass(frozen=True)
class BatchSpec:
    model: str
    lines: list[dict[str, Any]]
    endpoint: str = ENDPOINTS[0]
    resources: dict[str, Any] = field(default_factory=dict)
    output: Optional[Path] = None
    metadata: Optional[dict[str, Any]] = None

    def jsonl(self) -> bytes:
        return "".join(json.dumps(line) + "\n" for line in self.lines).encode()


def load_spec(path: Path) -> BatchSpec:
    """The spec in ``path``; ``RequestError`` naming the field that is wrong."""
    import yaml  # here, not above: kernels may lack it until a spec is read
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise RequestError(f"cannot read the batch spec {path}: {exc.strerror or exc}",
                           field="spec") from exc
    except yaml.YAMLError as exc:
        raise RequestError(f"the batch spec {path} is not valid YAML: {exc}", field="spec") \
            from exc
    return parse_spec(doc, path.parent)


def parse_spec(doc: Any, folder: Path) -> BatchSpec:
    if not isinstance(doc, dict):
        raise RequestError("a batch spec is a YAML mapping (model, prompts or input, ...)",
                           field="spec")
    unknown = sorted(set(map(str, doc)) - FIELDS)
    if unknown:
        raise RequestError(f"unknown field {unknown[0]!r} in the batch spec (known: "
                           f"{', '.join(sorted(FIELDS))})", field=unknown[0])
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("'model' is required: a catalog model's name", field="model")
    endpoint = doc.get("endpoint", ENDPOINTS[0])
    if endpoint not in ENDPOINTS:
        raise RequestError(f"'endpoint' must be one of {', '.join(ENDPOINTS)}", field="endpoint")
    params = _mapping(doc, "params")
    if ("prompts" in doc) == ("input" in doc):
        raise RequestError("give either 'prompts' (a list) or 'input' (a JSONL file)",
                           field="prompts")
    if "prompts" in doc:
        lines = _prompt_lines(doc["prompts"], model, endpoint, params, doc.get("system"))
    else:
        lines = _input_lines(folder / str(doc["input"]), model, params)
    output = doc.get("output")
    metadata = doc.get("metadata")
    if metadata is not None:
        metadata = {str(k): str(v) for k, v in _mapping(doc, "metadata").items()}
    return BatchSpec(model=model, lines=lines, endpoint=endpoint,
                     resources=_mapping(doc, "resources"),
                     output=None if output is None else output_path(output, folder),
                     metadata=metadata)


def output_path(output: Any, folder: Path) -> Path:
    """Where a spec's ``output`` goes: a file inside ``folder`` (the spec's), neither it nor its
    ``.errors.jsonl`` companion a symlink; ``RequestError`` (field ``output``) otherwise."""
    if not isinstance(output, str) or not output or "\0" in output:
        raise RequestError("'output' must be a file name", field="output")
    if ".." in Path(output).parts:
        raise RequestError(f"'output' {output!r} contains '..': results are written inside the "
                           f"spec's folder {folder}", field="output")
    path = folder / output
    inside = os.path.realpath(folder)
    if os.path.commonpath([inside, os.path.realpath(path.parent)]) != inside or \
            path.name in ("", ".") or path.is_dir():
        raise RequestError(f"'output' {output!r} is not a file inside the spec's folder "
                           f"{folder}", field="output")
    for target in (path, errors_path(path)):
        if target.is_symlink():
            raise RequestError(f"'output': {target} is a symlink; results are never written "
                               "through one (remove it, or name another file)", field="output")
    return path


def errors_path(output: Path) -> Path:
    """Where the failed requests go, beside the results: ``<name>.errors.jsonl``."""
    return output.with_suffix(".errors.jsonl")


def write_result(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600 if new), refusing a symlink there at the moment of opening
    (``O_NOFOLLOW``): one planted while the batch ran does not redirect the results."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        why = "it is a symlink" if path.is_symlink() else exc.strerror or str(exc)
        raise RequestError(f"cannot write the results to {path}: {why}", field="output") \
            from exc
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _mapping(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name) or {}
    if not isinstance(value, dict):
        raise RequestError(f"'{name}' must be a mapping", field=name)
    return value


def _prompt_lines(prompts: Any, model: str, endpoint: str, params: dict[str, Any],
                  system: Any) -> list[dict[str, Any]]:
    if not isinstance(prompts, list) or not prompts:
        raise RequestError("'prompts' must be a non-empty list", field="prompts")
    if system is not None and not isinstance(system, str):
        raise RequestError("'system' must be text", field="system")
    lines = []
    for number, prompt in enumerate(prompts, start=1):
        item = prompt if isinstance(prompt, dict) else {"prompt": prompt}
        custom_id = str(item.get("id", f"prompt-{number}"))
        body = {**params, "model": model, **_prompt_body(item, endpoint, system, number)}
        lines.append({"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body})
    return lines


def _prompt_body(item: dict[str, Any], endpoint: str, system: Optional[str],
                 number: int) -> dict[str, Any]:
    unknown = sorted(set(item) - {"id", "prompt", "messages", "input"})
    if unknown:
        raise RequestError(f"prompt {number}: unknown field {unknown[0]!r}", field="prompts")
    text = item.get("prompt", item.get("input"))
    if endpoint == "/v1/embeddings":
        return {"input": text}
    if endpoint == "/v1/completions":
        if not isinstance(text, str):
            raise RequestError(f"prompt {number}: /v1/completions takes text", field="prompts")
        return {"prompt": text}
    messages = item.get("messages")
    if messages is None:
        if not isinstance(text, str):
            raise RequestError(f"prompt {number}: give text or 'messages'", field="prompts")
        messages = [{"role": "user", "content": text}]
    if not isinstance(messages, list):
        raise RequestError(f"prompt {number}: 'messages' must be a list", field="prompts")
    return {"messages": ([{"role": "system", "content": system}] if system else []) + messages}


def _input_lines(path: Path, model: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """An OpenAI batch file's lines, each body given the spec's model and parameters where it
    has none of its own (the server checks everything else, naming the line)."""
    try:
        raw_lines = split_lines(path.read_bytes())
    except OSError as exc:
        raise RequestError(f"cannot read the input file {path}: {exc.strerror or exc}",
                           field="input") from exc
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError as exc:
            raise RequestError(f"{path.name} line {number}: not valid JSON ({exc})",
                               field="input") from exc
        if isinstance(line, dict) and isinstance(line.get("body"), dict):
            line["body"] = {**params, "model": model, **line["body"]}
        lines.append(line)
    return lines
