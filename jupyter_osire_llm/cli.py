"""``jupyter osire``: your models from a shell, through the Jupyter server you are running.

    jupyter osire models                       the site's catalog
    jupyter osire ps                           your deployments and their state
    jupyter osire launch MODEL [--gpus N] [--time HH:MM:SS] [--partition P] [--account A]
                               [--replicas N] [--wait [--timeout S]]
    jupyter osire stop ID|MODEL
    jupyter osire logs ID [--tail N] [-f]
    jupyter osire wait ID|MODEL [--timeout S]
    jupyter osire batch SPEC.yaml [--no-wait] [--timeout S]
                                               run a batch (see batch_spec.py); results to its
                                               output file when it ends
    jupyter osire batch BATCH_ID [--cancel | --resume [--no-retry-failed] | --delete] [--no-wait]
    jupyter osire batches                      your batches and their progress
    jupyter osire url                          the OpenAI base URL (never the token)
    jupyter osire status                       the extension's health

``--json`` everywhere prints the server's JSON. The server is found as the kernel client finds it
(``jupyter_osire_llm._client.api``): $OSIRE_URL with $OSIRE_TOKEN or $OSIRE_TOKEN_FILE, JupyterHub's
environment, or the runtime files of your running Jupyter servers. A token is never taken on the
command line (every user on the machine could read it in ``ps``): use --token-file or the
environment.

Exit codes: 0 ok, 1 failed (the deployment failed or was stopped while waiting, or the server
failed), 2 usage, 3 not found, 4 refused (invalid, over a limit, conflict, token refused),
5 server unreachable (or none found), 6 timed out, 130 interrupted.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable, Optional, TextIO

from . import errors
from ._client.api import (
    TERMINAL_STATES,
    AuthenticationFailed,
    DeploymentFailed,
    OsireClient,
    ServerUnreachable,
    WaitTimeout,
    describe,
    describe_batch,
    discover,
)
from ._client.commands import (
    CLI,
    CLI_VERBS,
    Parser,
    add_verbs,
    batches_table,
    deleted_line,
    deployment_line,
    deployments_table,
    estimate_text,
    launch_resources,
    own_model,
    models_table,
    reason_to_ask,
    scaled_line,
)

OK, FAILED, USAGE, NOT_FOUND, REFUSED, UNREACHABLE, TIMED_OUT, INTERRUPTED = 0, 1, 2, 3, 4, 5, 6, 130
EXIT_CODES = {OK: "ok", FAILED: "failed", USAGE: "usage", NOT_FOUND: "not found",
              REFUSED: "refused", UNREACHABLE: "server unreachable", TIMED_OUT: "timed out",
              INTERRUPTED: "interrupted"}
OLD_NAMES = {"catalog": "models", "list": "ps"}


def exit_code(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, ServerUnreachable):
        return UNREACHABLE
    if isinstance(exc, WaitTimeout):
        return TIMED_OUT
    if isinstance(exc, errors.NotFound):
        return NOT_FOUND
    if isinstance(exc, (errors.RequestError, errors.Conflict, errors.PermissionDenied,
                        errors.SubmitRejected, AuthenticationFailed)):
        return REFUSED
    return FAILED


def _common_options(default: Any = None) -> Parser:
    """Options taken before or after the command (after it, they must not reset the defaults)."""
    common = Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the server's JSON",
                        default=False if default is None else default)
    common.add_argument("--url", help="the Jupyter server's URL, base URL included",
                        default=default)
    common.add_argument("--token-file", help="a file holding the Jupyter token",
                        default=default)
    return common


def parser() -> argparse.ArgumentParser:
    top, common = _common_options(), _common_options(argparse.SUPPRESS)
    p = Parser(prog="jupyter osire", description=__doc__.splitlines()[0], parents=[top],
               epilog="Exit codes: " + ", ".join(f"{k} {v}" for k, v in EXIT_CODES.items()),
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = add_verbs(p, CLI, CLI_VERBS, parser_class=Parser, parents=[common])
    for old in OLD_NAMES:
        sub.add_parser(old, parents=[common])
    return p


def _refuse_token_argument(argv: list[str]) -> Optional[str]:
    for arg in argv:
        if arg == "--token" or arg.startswith("--token="):
            return ("--token is not accepted: a token on the command line is visible to every "
                    "user in `ps`. Use OSIRE_TOKEN, --token-file FILE (or OSIRE_TOKEN_FILE), or "
                    "nothing: jupyter osire finds your running server and its token itself.")
    return None


# -- progress -----------------------------------------------------------------------------------

def _state_key(d: dict[str, Any]) -> Any:
    return d["state"], d.get("reason")   # elapsed time alone is no news in a log


def _batch_key(b: dict[str, Any]) -> Any:
    counts = b["request_counts"]   # a line per tenth done, not per request
    return b["status"], (counts["completed"] + counts["failed"]) * 10 // max(1, counts["total"])


class Progress:
    """One updating line on a terminal (``\\r``); a plain line per change otherwise."""

    def __init__(self, stream: TextIO, words: Callable[[dict[str, Any]], str] = describe,
                 news: Callable[[dict[str, Any]], Any] = _state_key) -> None:
        self.stream, self.last, self.width = stream, "", 0
        self.words, self.news = words, news
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def __call__(self, d: dict[str, Any]) -> None:
        if self.tty:
            line = self.words(d)
            self.stream.write("\r" + line.ljust(self.width))
            self.width = max(self.width, len(line))
            self.stream.flush()
        else:
            key = self.news(d)
            if key != self.last:
                self.stream.write(self.words(d) + "\n")
                self.stream.flush()
                self.last = key

    def done(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


# -- commands -----------------------------------------------------------------------------------

def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    command = OLD_NAMES.get(args.command, args.command)
    if command != args.command:
        err.write(f"note: `jupyter osire {args.command}` is now `jupyter osire {command}`\n")
    api = OsireClient(discover(url=args.url, token_file=args.token_file))
    def emit(doc: Any, text: str) -> None:
        out.write((json.dumps(doc, indent=2) if args.json else text) + "\n")

    if command == "models":
        models = api.models()
        emit({"models": models}, models_table(models))
    elif command == "ps":
        deployments = api.deployments()
        emit({"deployments": deployments}, deployments_table(deployments))
    elif command == "status":
        health = api.health()
        emit(health, json.dumps(health, indent=2))
    elif command == "url":
        info = api.server.public()
        emit(info, info["openai_base_url"])
    elif command == "launch":
        if args.estimate or not args.yes:
            e = api.estimate(args.model, replicas=args.replicas,
                             resources=launch_resources(args), **own_model(args))
            if args.estimate:
                emit(e, estimate_text(e))
                return OK
            why = reason_to_ask(e, args.force)
            if why and not _confirmed(why, estimate_text(e), err):
                err.write(f"not launched: {why} (--yes launches anyway)\n")
                return REFUSED
        d = api.launch(args.model, replicas=args.replicas, resources=launch_resources(args),
                       force=args.force, **own_model(args))
        if not args.wait:
            emit(d, deployment_line(d))
        else:
            if not args.json:
                out.write(deployment_line(d) + "\n")
            return _wait(api, d["id"], args, out, err)
    elif command == "wait":
        return _wait(api, args.ref, args, out, err)
    elif command == "stop":
        stopped = [api.stop(d["id"]) for d in api.find(args.ref, live_only=True)]
        emit({"deployments": stopped} if len(stopped) > 1 else stopped[0],
             "\n".join(deployment_line(d) for d in stopped))
    elif command == "scale":
        d = api.scale(api.find(args.ref, live_only=True)[0]["id"], args.replicas)
        emit(d, scaled_line(d, args.replicas))
    elif command == "batch":
        return _batch(api, args, out, err)
    elif command == "batches":
        batches = api.batches()
        emit({"batches": batches}, batches_table(batches))
    elif command == "logs":
        deployment_id = api.find(args.ref)[0]["id"]
        if args.follow:
            return _follow(api, deployment_id, args, out)
        replicas = api.logs(deployment_id, args.tail)
        emit({"id": deployment_id, "replicas": replicas}, "\n".join(
            line for r in replicas for line in r["lines"]))
    return OK


def _confirmed(why: str, estimate: str, err: TextIO) -> bool:
    """Ask on a terminal whether to launch anyway; elsewhere (a script) the answer is no."""
    err.write(estimate + "\n")
    if not (sys.stdin.isatty() and err.isatty()):
        return False
    err.write(f"{why}. Launch anyway? [y/N] ")
    err.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def _wait(api: OsireClient, ref: str, args: argparse.Namespace, out: TextIO,
          err: TextIO) -> int:
    progress = Progress(err if args.json else out)
    try:
        d = api.wait(ref, timeout=args.timeout, on_update=progress)
    finally:
        progress.done()
    if args.json:
        out.write(json.dumps(d, indent=2) + "\n")
    return OK


def _batch(api: OsireClient, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run a spec, or act on a batch by id; waits (with progress) unless --no-wait."""
    b, output = api.batch_target(args.target, cancel=args.cancel, resume=args.resume,
                                 delete=args.delete, retry_failed=args.retry_failed)
    if args.delete:
        out.write(json.dumps(b, indent=2) + "\n" if args.json else
                  deleted_line(b) + "\n")
        return OK
    if args.no_wait or args.cancel:
        out.write((json.dumps(b, indent=2) if args.json else describe_batch(b)) + "\n")
        return OK
    progress = Progress(err if args.json else out, describe_batch, _batch_key)
    try:
        b = api.wait_batch(b["id"], timeout=args.timeout, on_update=progress)
    finally:
        progress.done()
    written = api.save_results(b, output) if output else []
    if args.json:
        out.write(json.dumps(b, indent=2) + "\n")
    else:
        out.write("".join(f"wrote {path}\n" for path in written))
    return OK if b["status"] == "completed" else FAILED


def _follow(api: OsireClient, deployment_id: str, args: argparse.Namespace, out: TextIO,
            interval: float = 1.0) -> int:
    """Print the tail, then new lines as they come, until the deployment has ended."""
    seen: dict[int, list[str]] = {}
    first = True
    while True:
        state = api.deployment(deployment_id)["state"]
        for r in api.logs(deployment_id, args.tail if first else 10000):
            lines = r["lines"]
            new = _new_lines(seen.get(r["index"], []), lines)
            seen[r["index"]] = lines
            for line in new:
                out.write((json.dumps({"replica": r["index"], "line": line}) if args.json
                           else line) + "\n")
        out.flush()
        first = False
        if state in TERMINAL_STATES:
            return OK
        time.sleep(interval)


def _new_lines(before: list[str], after: list[str]) -> list[str]:
    """Lines of ``after`` not in ``before``, where ``after`` is a later window of the same log."""
    if not before:
        return after
    for start in range(len(before)):
        overlap = before[start:]
        if after[:len(overlap)] == overlap:
            return after[len(overlap):]
    return after


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    refusal = _refuse_token_argument(argv)
    if refusal:
        sys.stderr.write(f"jupyter osire: error: {refusal}\n")
        raise SystemExit(USAGE)
    args = parser().parse_args(argv)
    try:
        code = run(args)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted (deployments keep running)\n")
        code = INTERRUPTED
    except DeploymentFailed as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        if exc.log_tail:
            sys.stderr.write("last lines of the log:\n" + exc.log_tail.rstrip() + "\n")
        code = FAILED
    except errors.OsireError as exc:
        status = f" ({exc.status})" if getattr(exc, "status", 0) else ""
        sys.stderr.write(f"error{status}: {exc.message}\n")
        code = exit_code(exc)
    raise SystemExit(code)


if __name__ == "__main__":
    main()
