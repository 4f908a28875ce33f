"""``%osire`` and ``%%osire chat``: your models from IPython (``%load_ext jupyter_osire_llm``).

    %osire models                      the catalog
    %osire ps                          your deployments and their state
    %osire launch MODEL [--gpus N] [--time HH:MM:SS] [--partition P] [--account A]
                        [--replicas N] [--wait]
    %osire stop ID|MODEL
    %osire scale ID|MODEL N            run N replicas (fewer drain, then are cancelled)
    %osire logs ID [--tail N]
    %osire wait ID|MODEL [--timeout S]
    %osire url                         the OpenAI base URL (use client() for a ready client)
    %osire batch SPEC.yaml [--no-wait]  run a batch; progress here, results to its output file
    %osire batch BATCH_ID [--cancel | --resume [--no-retry-failed] | --delete] [--no-wait]
    %osire batches                     your batches and their progress

    %%osire chat MODEL [--max-tokens N] [--temperature T] [--system TEXT] [--continue] [--out NAME]
    The cell is the user's message ({name} is replaced by the variable, {{ }} is a brace);
    the answer streams in as plain text and is kept in ``_osire_answer``. Model text is data:
    it is never shown as Markdown or HTML, so no markup in it renders or runs, now or when the
    saved notebook is opened (``IPython.display.Markdown(_osire_answer)`` if you trust it).

Kernel side only: imports IPython, the client and (for chat) ``openai``; never jupyter_server.
"""
from __future__ import annotations

import argparse
import html
import shlex
import string
import sys
from typing import Any, Optional

from IPython.core.magic import Magics, line_cell_magic, magics_class

from . import errors
from ._client.api import DeploymentFailed, OsireClient, WaitTimeout, describe, describe_batch
from .cli import (
    _Parser,
    add_launch_options,
    batches_table,
    deployments_table,
    launch_resources,
    models_table,
)

ANSWER_VARIABLE = "_osire_answer"
BATCH_VARIABLE = "_osire_batch"


class _Usage(Exception):
    pass


class _MagicParser(_Parser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Usage(f"{self.prog}: {message}\n{self.format_usage().strip()}")

    def exit(self, status: int = 0, message: Optional[str] = None) -> None:  # type: ignore[override]
        raise _Usage(message or self.format_help())


def _parser() -> argparse.ArgumentParser:
    p = _MagicParser(prog="%osire", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_MagicParser)
    sub.required = True
    sub.add_parser("models", help="the site's catalog")
    sub.add_parser("ps", help="your deployments and their state")
    add_launch_options(sub.add_parser("launch", help="launch a model"))
    sub.add_parser("stop", help="stop a deployment, or a model's").add_argument(
        "ref", metavar="ID|MODEL")
    scale = sub.add_parser("scale", help="change a deployment's replicas")
    scale.add_argument("ref", metavar="ID|MODEL")
    scale.add_argument("replicas", type=int, metavar="N")
    logs = sub.add_parser("logs", help="a deployment's log")
    logs.add_argument("ref", metavar="ID")
    logs.add_argument("--tail", type=int, default=50)
    wait = sub.add_parser("wait", help="wait until a deployment is ready")
    wait.add_argument("ref", metavar="ID|MODEL")
    wait.add_argument("--timeout", type=float)
    sub.add_parser("url", help="the OpenAI base URL of this server")
    batch = sub.add_parser("batch", help="run a YAML batch spec, or act on a batch")
    batch.add_argument("target", metavar="SPEC|BATCH_ID")
    action = batch.add_mutually_exclusive_group()
    action.add_argument("--cancel", action="store_true")
    action.add_argument("--resume", action="store_true")
    action.add_argument("--delete", action="store_true")
    batch.add_argument("--no-retry-failed", dest="retry_failed", action="store_false")
    batch.add_argument("--no-wait", action="store_true")
    batch.add_argument("--timeout", type=float)
    sub.add_parser("batches", help="your batches and their progress")
    chat = sub.add_parser("chat", help="(cell magic) send the cell to MODEL")
    chat.add_argument("model")
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--system")
    chat.add_argument("--continue", dest="keep", action="store_true",
                      help="continue the previous conversation")
    chat.add_argument("--out", default=ANSWER_VARIABLE, help="variable for the answer")
    return p


@magics_class
class OsireMagics(Magics):
    def __init__(self, shell: Any, api: Optional[OsireClient] = None) -> None:
        super().__init__(shell)
        self.api = api or OsireClient()
        self.conversation: list[dict[str, str]] = []
        self._openai: Any = None

    @property
    def _user_ns(self) -> dict[str, Any]:
        assert self.shell is not None
        return self.shell.user_ns

    @line_cell_magic
    def osire(self, line: str, cell: Optional[str] = None) -> None:
        """Launch, watch, stop and chat with your models (``%osire --help``)."""
        try:
            args = _parser().parse_args(shlex.split(line))
            if (cell is None) == (args.command == "chat"):
                raise _Usage("chat is a cell magic (%%osire chat MODEL); the others are line "
                             "magics (%osire ...)")
            getattr(self, "_" + args.command)(args, *([cell] if cell is not None else []))
        except _Usage as exc:
            print(str(exc).rstrip(), file=sys.stderr)
        except DeploymentFailed as exc:
            print(f"osire: {exc.message}", file=sys.stderr)
            if exc.log_tail:
                print("last lines of the log:\n" + exc.log_tail.rstrip(), file=sys.stderr)
        except errors.OsireError as exc:
            print(f"osire: {exc.message}", file=sys.stderr)
        except KeyboardInterrupt:
            print("osire: interrupted", file=sys.stderr)
        except Exception as exc:
            problem = _openai_problem(exc)
            if problem is None:
                raise
            print(f"osire: {problem}", file=sys.stderr)

    # -- line magics ----------------------------------------------------------------------------

    def _models(self, args: argparse.Namespace) -> None:
        models = self.api.models()
        rows = [[m["name"], (m.get("resources") or {}).get("gpus", 0),
                 (m.get("resources") or {}).get("time", ""), m.get("description") or ""]
                for m in models]
        _show(models_table(models), _html_table(["model", "GPUs", "time", "description"], rows))

    def _ps(self, args: argparse.Namespace) -> None:
        deployments = self.api.deployments()
        rows = [[d["id"], d["model"], d["state"],
                 ", ".join(r.get("job_id") or "-" for r in d.get("replicas", [])),
                 ", ".join(sorted({r["node"] for r in d.get("replicas", []) if r.get("node")})),
                 d.get("reason") or ""] for d in deployments]
        _show(deployments_table(deployments),
              _html_table(["id", "model", "state", "jobs", "node", "reason"], rows)
              if rows else "<p>no deployments</p>")

    def _launch(self, args: argparse.Namespace) -> None:
        d = self.api.launch(args.model, replicas=args.replicas, resources=launch_resources(args))
        if args.wait:
            self._wait_for(d["id"], args.timeout)
        else:
            print(f"{d['id']}  {d['model']}  {d['state']}  (%osire wait {d['id']})")

    def _wait(self, args: argparse.Namespace) -> None:
        self._wait_for(args.ref, args.timeout)

    def _stop(self, args: argparse.Namespace) -> None:
        for d in self.api.find(args.ref, live_only=True):
            d = self.api.stop(d["id"])
            print(f"{d['id']}  {d['model']}  {d['state']}")

    def _scale(self, args: argparse.Namespace) -> None:
        d = self.api.find(args.ref, live_only=True)[0]
        d = self.api.scale(d["id"], args.replicas)
        print(f"{d['id']}  {d['model']}  {d['state']}  replicas: "
              f"{(d.get('policy') or {}).get('replicas_wanted', args.replicas)}")

    def _logs(self, args: argparse.Namespace) -> None:
        deployment_id = self.api.find(args.ref)[0]["id"]
        for r in self.api.logs(deployment_id, args.tail):
            for line in r["lines"]:
                print(line)

    def _url(self, args: argparse.Namespace) -> None:
        print(self.api.server.openai_url)
        print("(from jupyter_osire_llm import client; client() is an OpenAI client for it)")

    def _batches(self, args: argparse.Namespace) -> None:
        batches = self.api.batches()
        rows = [[b["id"], b.get("model", ""), b["status"],
                 f"{b['request_counts']['completed']}/{b['request_counts']['total']}",
                 (b.get("osire") or {}).get("reason") or ""] for b in batches]
        _show(batches_table(batches), _html_table(["id", "model", "status", "done", "reason"],
                                                  rows) if rows else "<p>no batches</p>")

    def _batch(self, args: argparse.Namespace) -> None:
        """A spec (a path) is uploaded and run; a batch id is followed, cancelled, resumed or
        deleted. The batch's record is kept in ``_osire_batch``."""
        b, output = self.api.batch_target(args.target, cancel=args.cancel, resume=args.resume,
                                          delete=args.delete, retry_failed=args.retry_failed)
        if args.delete:
            print(f"deleted {b['id']} and its results")
            return
        self._user_ns[BATCH_VARIABLE] = b
        if args.no_wait or args.cancel:
            print(describe_batch(b))
            return
        line = _Line(self.shell)
        try:
            b = self.api.wait_batch(b["id"], timeout=args.timeout,
                                    on_update=lambda b: line.show(describe_batch(b)))
        except KeyboardInterrupt:
            line.close()
            print(f"osire: stopped waiting; the batch keeps going (%osire batch {b['id']})",
                  file=sys.stderr)
            return
        line.close()
        self._user_ns[BATCH_VARIABLE] = b
        for path in self.api.save_results(b, output) if output else []:
            print(f"wrote {path}")

    def _wait_for(self, ref: str, timeout: Optional[float]) -> None:
        line = _Line(self.shell)
        try:
            d = self.api.wait(ref, timeout=timeout, on_update=lambda d: line.show(describe(d)))
        except KeyboardInterrupt:
            line.close()
            print("osire: stopped waiting; the model keeps going (%osire stop ID to stop it)",
                  file=sys.stderr)
            return
        except (WaitTimeout, DeploymentFailed):
            line.close()
            raise
        line.close()
        print(f"use it: from jupyter_osire_llm import client; client().chat.completions.create("
              f"model={d['model']!r}, ...)  or  %%osire chat {d['model']}")

    # -- chat -----------------------------------------------------------------------------------

    def _chat(self, args: argparse.Namespace, cell: str) -> None:
        text = _interpolate(cell, self._user_ns).strip()
        if not text:
            raise _Usage("%%osire chat: the cell is empty; write your message in it")
        if not args.keep:
            self.conversation = []
            if args.system:
                self.conversation.append({"role": "system", "content": args.system})
        elif args.system:
            self.conversation = [m for m in self.conversation if m["role"] != "system"]
            self.conversation.insert(0, {"role": "system", "content": args.system})
        messages = [*self.conversation, {"role": "user", "content": text}]
        extra: dict[str, Any] = {}
        if args.max_tokens is not None:
            extra["max_tokens"] = args.max_tokens
        if args.temperature is not None:
            extra["temperature"] = args.temperature
        if self._openai is None:
            self._openai = self.api.openai()
        stream = self._openai.chat.completions.create(model=args.model, messages=messages,
                                                      stream=True, **extra)
        out = _Stream(self.shell)
        answer = []
        try:
            for chunk in stream:
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    answer.append(delta)
                    out.add(delta)
        except KeyboardInterrupt:
            stream.close()
            out.finish("".join(answer), interrupted=True)
            self._user_ns[args.out] = "".join(answer)
            return
        reply = "".join(answer)
        out.finish(reply)
        self.conversation = [*messages, {"role": "assistant", "content": reply}]
        self._user_ns[args.out] = reply


# -- output helpers -----------------------------------------------------------------------------

def _in_kernel(shell: Any) -> bool:
    return getattr(shell, "kernel", None) is not None


def _show(text: str, html_text: str) -> None:
    from IPython.display import display
    display({"text/plain": text, "text/html": html_text}, raw=True)


def _html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Line:
    """One line that updates in place: a display in a notebook, ``\\r`` in a terminal."""

    def __init__(self, shell: Any) -> None:
        self.kernel = _in_kernel(shell)
        self.handle: Any = None
        self.last = ""
        self.width = 0

    def show(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.kernel:
            from IPython.display import display
            if self.handle is None:
                self.handle = display({"text/plain": text}, raw=True, display_id=True)
            else:
                self.handle.update({"text/plain": text}, raw=True)
        elif sys.stdout.isatty():
            sys.stdout.write("\r" + text.ljust(self.width))
            sys.stdout.flush()
            self.width = max(self.width, len(text))
        else:
            print(text)

    def close(self) -> None:
        if not self.kernel and self.width:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.width = 0


class _Stream:
    """The answer as it arrives, one updating display in a notebook: plain text only (a model's
    answer is data; a text/markdown or text/html bundle would let its markup run as the user)."""

    def __init__(self, shell: Any) -> None:
        self.kernel = _in_kernel(shell)
        self.handle: Any = None
        self.text = ""

    def add(self, delta: str) -> None:
        self.text += delta
        if not self.kernel:
            sys.stdout.write(delta)
            sys.stdout.flush()
            return
        from IPython.display import display
        if self.handle is None:
            self.handle = display({"text/plain": self.text}, raw=True, display_id=True)
        else:
            self.handle.update({"text/plain": self.text}, raw=True)

    def finish(self, reply: str, interrupted: bool = False) -> None:
        if not self.kernel:
            sys.stdout.write(("\n(interrupted)" if interrupted else "") + "\n")
            sys.stdout.flush()
            return
        from IPython.display import display
        bundle = {"text/plain": reply + ("\n\n(interrupted)" if interrupted else "")}
        if self.handle is None:
            display(bundle, raw=True)
        else:
            self.handle.update(bundle, raw=True)


def _interpolate(text: str, namespace: dict[str, Any]) -> str:
    """``{name}`` (and ``{name.attr}``, ``{name[0]}``, ``{x:.2f}``) from the user's namespace."""
    try:
        return string.Formatter().vformat(text, (), _Namespace(namespace))
    except KeyError as exc:
        raise _Usage(f"%%osire chat: {{{exc.args[0]}}} is not a variable of this notebook "
                     "(write {{ and }} for literal braces)") from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise _Usage(f"%%osire chat: cannot fill in the cell's {{...}}: {exc} "
                     "(write {{ and }} for literal braces)") from None


class _Namespace(dict):
    def __init__(self, namespace: dict[str, Any]) -> None:
        super().__init__()
        self.namespace = namespace

    def __getitem__(self, key: str) -> Any:
        return self.namespace[key]


def _openai_problem(exc: Exception) -> Optional[str]:
    """An error of the openai SDK as one readable line (None when it is not one)."""
    if type(exc).__module__.split(".")[0] != "openai":
        return None
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if message:
            status = getattr(exc, "status_code", None)
            return f"{message}" + (f" ({status})" if status else "")
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(OsireMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    pass

