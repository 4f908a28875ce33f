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
import shlex
import sys
from typing import Any, Optional

from IPython.core.magic import Magics, line_cell_magic, magics_class

from . import errors
from ._client.api import DeploymentFailed, OsireClient, WaitTimeout, describe, describe_batch
from ._client.chat import Chat, interpolate, openai_problem
from ._client.commands import (
    MAGIC,
    MAGIC_VERBS,
    Parser,
    Usage,
    add_verbs,
    batches_html,
    batches_table,
    deleted_line,
    deployment_line,
    deployments_html,
    deployments_table,
    estimate_text,
    launch_resources,
    own_model,
    models_html,
    models_table,
    reason_to_ask,
    scaled_line,
)

BATCH_VARIABLE = "_osire_batch"


class _MagicParser(Parser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise Usage(f"{self.prog}: {message}\n{self.format_usage().strip()}")

    def exit(self, status: int = 0, message: Optional[str] = None) -> None:  # type: ignore[override]
        raise Usage(message or self.format_help())


def _parser() -> argparse.ArgumentParser:
    p = _MagicParser(prog="%osire", description=__doc__.splitlines()[0])
    add_verbs(p, MAGIC, MAGIC_VERBS, parser_class=_MagicParser)
    return p


@magics_class
class OsireMagics(Magics):
    def __init__(self, shell: Any, api: Optional[OsireClient] = None) -> None:
        super().__init__(shell)
        self.api = api or OsireClient()
        self.chat = Chat(lambda: self.api.openai())

    @property
    def _user_ns(self) -> dict[str, Any]:
        assert self.shell is not None
        namespace: dict[str, Any] = self.shell.user_ns
        return namespace

    @line_cell_magic
    def osire(self, line: str, cell: Optional[str] = None) -> None:
        """Launch, watch, stop and chat with your models (``%osire --help``)."""
        try:
            args = _parser().parse_args(shlex.split(line))
            if (cell is None) == (args.command == "chat"):
                raise Usage("chat is a cell magic (%%osire chat MODEL); the others are line "
                             "magics (%osire ...)")
            getattr(self, "_" + args.command)(args, *([cell] if cell is not None else []))
        except Usage as exc:
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
            problem = openai_problem(exc)
            if problem is None:
                raise
            print(f"osire: {problem}", file=sys.stderr)

    # -- line magics ----------------------------------------------------------------------------

    def _models(self, args: argparse.Namespace) -> None:
        models = self.api.models()
        _show(models_table(models), models_html(models))

    def _ps(self, args: argparse.Namespace) -> None:
        deployments = self.api.deployments()
        _show(deployments_table(deployments), deployments_html(deployments))

    def _launch(self, args: argparse.Namespace) -> None:
        if args.estimate or not args.yes:
            e = self.api.estimate(args.model, replicas=args.replicas,
                                  resources=launch_resources(args), **own_model(args))
            why = reason_to_ask(e, args.force)
            if args.estimate or why:
                print(estimate_text(e))
            if args.estimate:
                return
            if why:   # a notebook cannot be asked mid-cell: the same line with --yes launches
                print(f"not launched: {why}. Run it again with --yes to launch anyway.")
                return
        d = self.api.launch(args.model, replicas=args.replicas, resources=launch_resources(args),
                            force=args.force, **own_model(args))
        if args.wait:
            self._wait_for(d["id"], args.timeout)
        else:
            print(f"{deployment_line(d)}  (%osire wait {d['id']})")

    def _wait(self, args: argparse.Namespace) -> None:
        self._wait_for(args.ref, args.timeout)

    def _stop(self, args: argparse.Namespace) -> None:
        for d in self.api.find(args.ref, live_only=True):
            d = self.api.stop(d["id"])
            print(deployment_line(d))

    def _scale(self, args: argparse.Namespace) -> None:
        d = self.api.find(args.ref, live_only=True)[0]
        d = self.api.scale(d["id"], args.replicas)
        print(scaled_line(d, args.replicas))

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
        _show(batches_table(batches), batches_html(batches))

    def _batch(self, args: argparse.Namespace) -> None:
        """A spec (a path) is uploaded and run; a batch id is followed, cancelled, resumed or
        deleted. The batch's record is kept in ``_osire_batch``."""
        b, output = self.api.batch_target(args.target, cancel=args.cancel, resume=args.resume,
                                          delete=args.delete, retry_failed=args.retry_failed)
        if args.delete:
            print(deleted_line(b))
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
        text = interpolate(cell, self._user_ns).strip()
        if not text:
            raise Usage("%%osire chat: the cell is empty; write your message in it")
        self.chat.start(args.system, keep=args.keep)
        self._user_ns[args.out] = self.chat.ask(
            args.model, text, _Stream(self.shell),
            max_tokens=args.max_tokens, temperature=args.temperature)


# -- output helpers -----------------------------------------------------------------------------

def _in_kernel(shell: Any) -> bool:
    return getattr(shell, "kernel", None) is not None


def _show(text: str, html_text: str) -> None:
    from IPython.display import display
    display({"text/plain": text, "text/html": html_text}, raw=True)


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


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(OsireMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    pass

