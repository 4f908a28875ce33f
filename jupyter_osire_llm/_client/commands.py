"""The verbs of ``jupyter osire`` and ``%osire``, written once: their arguments, options and help,
and the text and HTML renderers both front ends print with.

A front end names the verbs it offers, in its order (``CLI_VERBS``, ``MAGIC_VERBS``), and
``add_verbs`` builds their subparsers; an option or help text that differs between the two is
given per front end (the shell has exit codes and ``--follow``, a notebook has chat).
Standard library only.
"""
from __future__ import annotations

import argparse
import html
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

CLI, MAGIC = "cli", "magic"
BOTH = frozenset({CLI, MAGIC})
ANSWER_VARIABLE = "_osire_answer"

#: A help text for both front ends, or one per front end (None: no help shown there).
Help = Union[str, None, Mapping[str, Optional[str]]]


class Usage(Exception):
    """A usage mistake: told to the user as it is, never as a failure of the server."""


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations (``--token`` must never match ``--token-file``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call: its names, argparse settings and help."""

    names: tuple[str, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    help: Help = None
    exclusive: bool = False        # one of the verb's mutually exclusive actions
    fronts: frozenset[str] = BOTH


def arg(*names: str, help: Help = None, exclusive: bool = False, only: Optional[str] = None,
        **settings: Any) -> Arg:
    return Arg(names, settings, help, exclusive, frozenset({only}) if only else BOTH)


@dataclass(frozen=True)
class Verb:
    help: Help
    args: tuple[Arg, ...] = ()


LAUNCH_FLAGS = (("gpus", int), ("time", str), ("partition", str), ("account", str),
                ("cpus", int), ("memory", str), ("gpu_type", str), ("qos", str),
                ("constraint", str))
_REF = arg("ref", metavar="ID|MODEL")

VERBS: dict[str, Verb] = {
    "models": Verb("the site's catalog"),
    "ps": Verb("your deployments and their state"),
    "launch": Verb("launch a model", (
        arg("model"),
        arg("--replicas", type=int, default=1),
        *(arg(f"--{name.replace('_', '-')}", dest=name, type=kind, metavar=name.upper())
          for name, kind in LAUNCH_FLAGS),
        arg("--force", action="store_true",
            help="launch even where the model's size says these GPUs cannot hold it"),
        arg("--model-path", dest="model_path", metavar="FOLDER",
            help="your own model folder, run with MODEL's engine and resources (where the site "
                 "allows it)"),
        arg("--name", help="with --model-path: the name to call it by (default: the folder's)"),
        arg("--estimate", action="store_true",
            help="print when it would start and what it would cost, and launch nothing"),
        arg("-y", "--yes", action="store_true",
            help="launch without asking, even where the estimate says it starts late or "
                 "costs more than the site's threshold"),
        arg("--wait", action="store_true", help="wait until the model is ready"),
        arg("--timeout", type=float, help="with --wait: give up waiting after S seconds"))),
    "stop": Verb("stop a deployment, or a model's", (_REF,)),
    "scale": Verb("change a deployment's replicas", (
        _REF, arg("replicas", type=int, metavar="N"))),
    "logs": Verb("a deployment's log", (
        arg("ref", metavar="ID"),
        arg("--tail", type=int, default=50),
        arg("-f", "--follow", action="store_true", help="keep printing new lines", only=CLI))),
    "wait": Verb("wait until a deployment is ready", (
        _REF, arg("--timeout", type=float, help={CLI: "give up after S seconds (exit 6)"}))),
    "batch": Verb({CLI: "run a YAML batch spec, or follow, cancel, resume or delete a batch",
                   MAGIC: "run a YAML batch spec, or act on a batch"}, (
        arg("target", metavar="SPEC|BATCH_ID"),
        arg("--cancel", action="store_true", exclusive=True, help={CLI: "cancel the batch"}),
        arg("--resume", action="store_true", exclusive=True,
            help={CLI: "run an ended batch's remaining requests, and its failed ones again"}),
        arg("--delete", action="store_true", exclusive=True,
            help={CLI: "forget an ended batch and remove its results"}),
        arg("--no-retry-failed", dest="retry_failed", action="store_false",
            help={CLI: "with --resume: leave the failed requests failed"}),
        arg("--no-wait", action="store_true", help={CLI: "do not wait for it to end"}),
        arg("--timeout", type=float, help={CLI: "give up waiting after S seconds (exit 6)"}))),
    "batches": Verb("your batches and their progress"),
    "url": Verb({CLI: "the OpenAI base URL of your server",
                 MAGIC: "the OpenAI base URL of this server"}),
    "status": Verb("the extension's health"),
    "chat": Verb("(cell magic) send the cell to MODEL", (
        arg("model"),
        arg("--max-tokens", type=int),
        arg("--temperature", type=float),
        arg("--system"),
        arg("--continue", dest="keep", action="store_true",
            help="continue the previous conversation"),
        arg("--out", default=ANSWER_VARIABLE, help="variable for the answer"))),
}
CLI_VERBS = ("models", "ps", "launch", "stop", "scale", "logs", "wait", "batch", "batches", "url",
             "status")
MAGIC_VERBS = ("models", "ps", "launch", "stop", "scale", "logs", "wait", "url", "batch",
               "batches", "chat")


def _help(text: Help, front: str) -> Optional[str]:
    return text.get(front) if isinstance(text, Mapping) else text


def add_verbs(top: argparse.ArgumentParser, front: str, names: Sequence[str],
              parser_class: type[argparse.ArgumentParser],
              parents: Sequence[argparse.ArgumentParser] = (),
              ) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The ``COMMAND`` subparsers of ``top``: the verbs ``names`` as ``front`` offers them."""
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=parser_class)
    sub.required = True
    for name in names:
        verb = VERBS[name]
        p = sub.add_parser(name, parents=list(parents), help=_help(verb.help, front))
        _add_args(p, [a for a in verb.args if front in a.fronts], front)
    return sub


def _add_args(p: argparse.ArgumentParser, args: list[Arg], front: str) -> None:
    group: Optional[argparse._MutuallyExclusiveGroup] = None
    for a in args:
        target: argparse._ActionsContainer = p
        if a.exclusive:
            group = target = group or p.add_mutually_exclusive_group()
        target.add_argument(*a.names, help=_help(a.help, front), **a.settings)


def own_model(args: argparse.Namespace) -> dict[str, Any]:
    """``model_path`` and ``name`` of a launch of the user's own folder (empty otherwise)."""
    return {k: getattr(args, k) for k in ("model_path", "name")
            if getattr(args, k, None) is not None}


def launch_resources(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name, _ in LAUNCH_FLAGS
            if getattr(args, name, None) is not None}


# -- text -----------------------------------------------------------------------------------------

def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = [header, *rows]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip()
                     for line in lines)


def models_table(models: list[dict[str, Any]]) -> str:
    rows = []
    for m in models:
        r = m.get("resources") or {}
        rows.append([m["name"], str(r.get("gpus", 0)), str(r.get("time", "")),
                     str(r.get("partition") or ""), size_text(m), m.get("description") or ""])
    return table(rows, ["MODEL", "GPUS", "TIME", "PARTITION", "SIZE", "DESCRIPTION"]) if rows \
        else "the catalog is empty"


def size_text(model: Mapping[str, Any]) -> str:
    """"1.3B, 2.7 GB of weights: 1 x A100 40G (30k tokens of KV cache)", or why it is unknown."""
    size = model.get("size") or {}
    if "weight_bytes" not in size:
        return "unknown" if size.get("note") else ""
    text = str(size.get("summary") or "")
    if size.get("parameters"):
        text = f"{size['parameters'] / 1e9:.1f}B, {text}"
    options = size.get("options") or []
    if options and options[0].get("context_tokens") is not None:
        text += f" ({options[0]['context_tokens'] // 1000}k tokens of KV cache)"
    return text


def _jobs(d: dict[str, Any], sep: str) -> str:
    return sep.join(r.get("job_id") or "-" for r in d.get("replicas", []))


def _nodes(d: dict[str, Any], sep: str) -> str:
    return sep.join(sorted({r["node"] for r in d.get("replicas", []) if r.get("node")}))


def deployments_table(deployments: list[dict[str, Any]], now: Optional[float] = None) -> str:
    now = time.time() if now is None else now
    rows = []
    for d in deployments:
        reason = d.get("reason") or ""
        if d.get("restarts"):
            reason = f"{reason} [{d['restarts']} restart(s)]".strip()
        rows.append([d["id"], d["model"], d["state"], _jobs(d, ","), _nodes(d, ",") or "-",
                     age(now - (d.get("created") or now)), reason])
    return table(rows, ["ID", "MODEL", "STATE", "JOBS", "NODE", "AGE", "REASON"]) if rows \
        else "no deployments"


def age(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def batches_table(batches: list[dict[str, Any]], now: Optional[float] = None) -> str:
    now = time.time() if now is None else now
    rows = []
    for b in batches:
        counts, extra = b["request_counts"], b.get("osire") or {}
        done = f"{counts['completed']}/{counts['total']}" + \
            (f" ({counts['failed']} failed)" if counts.get("failed") else "")
        rows.append([b["id"], b.get("model", ""), b["status"], done, extra.get("job_id") or "-",
                     age(now - b["created_at"]), extra.get("reason") or ""])
    return table(rows, ["ID", "MODEL", "STATUS", "DONE", "JOB", "AGE", "REASON"]) if rows \
        else "no batches"


def estimate_text(e: Mapping[str, Any]) -> str:
    """An estimate in a few lines: the summary, then what does not fit or is over a limit."""
    lines = [f"{e['model']}: {e.get('summary') or ''}".rstrip()]
    if e.get("start") is None and e.get("start_reason"):
        lines.append(f"  start: {e['start_reason']}")
    if e.get("fits") is False:
        lines.append(f"  does not fit: {e.get('fit_reason')}")
    if e.get("within_limits") is False:
        lines.append(f"  over a site limit: {e.get('limits_reason')}")
    return "\n".join(lines)


def reason_to_ask(e: Mapping[str, Any], force: bool) -> Optional[str]:
    """Why to ask before launching (None: go ahead); ``--force`` answers a size refusal."""
    if force and e.get("fits") is False:
        return None if e.get("confirm") == e.get("fit_reason") else e.get("confirm")
    return e.get("confirm")


def deployment_line(d: dict[str, Any]) -> str:
    return f"{d['id']}  {d['model']}  {d['state']}"


def scaled_line(d: dict[str, Any], asked: int) -> str:
    wanted = (d.get("policy") or {}).get("replicas_wanted", asked)
    return f"{deployment_line(d)}  replicas: {wanted}"


def deleted_line(b: dict[str, Any]) -> str:
    return f"deleted {b['id']} and its results"


# -- HTML (a notebook's rich view of the same listings) -------------------------------------------

def html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def models_html(models: list[dict[str, Any]]) -> str:
    rows = [[m["name"], (m.get("resources") or {}).get("gpus", 0),
             (m.get("resources") or {}).get("time", ""), size_text(m), m.get("description") or ""]
            for m in models]
    return html_table(["model", "GPUs", "time", "size", "description"], rows)


def deployments_html(deployments: list[dict[str, Any]]) -> str:
    rows: list[list[Any]] = [[d["id"], d["model"], d["state"], _jobs(d, ", "), _nodes(d, ", "),
                              d.get("reason") or ""] for d in deployments]
    return html_table(["id", "model", "state", "jobs", "node", "reason"], rows) if rows \
        else "<p>no deployments</p>"


def batches_html(batches: list[dict[str, Any]]) -> str:
    rows: list[list[Any]] = [[b["id"], b.get("model", ""), b["status"],
                              f"{b['request_counts']['completed']}/{b['request_counts']['total']}",
                              (b.get("osire") or {}).get("reason") or ""] for b in batches]
    return html_table(["id", "model", "status", "done", "reason"], rows) if rows \
        else "<p>no batches</p>"
