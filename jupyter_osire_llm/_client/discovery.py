"""Which Jupyter server the client talks to, found without a URL or token where possible.

First match wins (:func:`discover`):

1. ``OSIRE_URL`` with ``OSIRE_TOKEN`` (or ``OSIRE_TOKEN_FILE``, a file holding the token);
2. JupyterHub: ``JUPYTERHUB_API_TOKEN`` with ``JUPYTERHUB_SERVICE_URL`` (the single-user server's
   own URL, prefix included), or ``JUPYTERHUB_SERVICE_PREFIX`` on the server found below;
3. the runtime file (``jpserver-<pid>.json``) of the Jupyter server that started this process:
   the kernel's ``JPY_PARENT_PID``, then any ancestor process, then the server whose
   ``/api/kernels`` lists this kernel; failing those, the only running server, or the one whose
   root folder holds the current folder, or the newest.

The URL keeps the server's base URL (``/node/<host>/<port>/`` under Open OnDemand, ``/user/<name>/``
under JupyterHub). The token is kept out of ``repr``, messages and logs.

Only the user's own runtime files are trusted (as Jupyter writes them: a 0700 runtime folder,
0600 files, see ``jupyter_core.paths.secure_write``): a folder not owned by the user or writable
by group or others, and a file that is a symlink, not a regular file, not owned by the user or
writable by group or others, are skipped with a warning saying why. Otherwise another user could
plant a ``jpserver-*.json`` whose URL receives the token (the hub token under JupyterHub).
"""
from __future__ import annotations

import json
import logging
import os
import stat
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Optional

from .. import errors
from ..errors import OsireError, ServerNotFound
from .http import Server, call

log = logging.getLogger(__name__)


def discover(url: Optional[str] = None, token: Optional[str] = None,
             token_file: Optional[str] = None, env: Optional[dict[str, str]] = None) -> Server:
    """The Jupyter server to talk to (see the module's docstring for the order)."""
    env = dict(os.environ if env is None else env)
    if token is None and token_file:
        token = _read_token_file(token_file)
    if url:
        return Server(_normalise(url), token if token is not None else _token_for(url, env),
                      "given")
    if env.get("OSIRE_URL"):
        found = token if token is not None else _env_token(env)
        return Server(_normalise(env["OSIRE_URL"]),
                      found if found is not None else _token_for(env["OSIRE_URL"], env),
                      "OSIRE_URL")
    servers = running_servers(env)
    if env.get("JUPYTERHUB_API_TOKEN") and (env.get("JUPYTERHUB_SERVICE_URL")
                                            or env.get("JUPYTERHUB_SERVICE_PREFIX")):
        hub_token = token if token is not None else env["JUPYTERHUB_API_TOKEN"]
        if env.get("JUPYTERHUB_SERVICE_URL"):
            return Server(_normalise(env["JUPYTERHUB_SERVICE_URL"]), hub_token, "JupyterHub")
        prefix = "/" + env["JUPYTERHUB_SERVICE_PREFIX"].strip("/") + "/"
        mine = [s for s in servers if s.get("base_url", "/") == prefix]
        chosen = _choose(mine, env) if mine else None
        if chosen:
            return Server(_server_url(chosen[0]), hub_token, "JupyterHub + " + chosen[1])
    chosen = _choose(servers, env)
    if chosen:
        info, how = chosen
        return Server(_server_url(info), token if token is not None else info.get("token", ""),
                      how)
    raise ServerNotFound(
        "no running Jupyter server found: start one (jupyter lab), or set OSIRE_URL and "
        "OSIRE_TOKEN (or OSIRE_TOKEN_FILE)")


def runtime_dirs(env: dict[str, str]) -> list[Path]:
    """Where servers write ``jpserver-*.json``: beside this kernel's connection file first."""
    dirs: list[Path] = []
    connection = _connection_file()
    if connection:
        dirs.append(Path(connection).parent)
    if env.get("JUPYTER_RUNTIME_DIR"):      # what jupyter_core would answer too
        dirs.append(Path(env["JUPYTER_RUNTIME_DIR"]))
    else:
        dirs.append(_default_runtime_dir(env))
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _default_runtime_dir(env: dict[str, str]) -> Path:
    try:
        from jupyter_core.paths import jupyter_runtime_dir
        return Path(jupyter_runtime_dir())
    except Exception:  # jupyter_core missing or broken: its Linux default
        data = env.get("JUPYTER_DATA_DIR") or os.path.join(
            env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share"),
            "jupyter")
        return Path(data) / "runtime"


def running_servers(env: Optional[dict[str, str]] = None) -> list[dict[str, Any]]:
    """The runtime files of live servers (dead pids and unix-socket servers left out)."""
    env = dict(os.environ if env is None else env)
    found: dict[int, dict[str, Any]] = {}
    for folder in runtime_dirs(env):
        problem = untrusted_dir(folder)
        if problem:
            _skip(folder, problem)
            continue
        for path in sorted(folder.glob("jpserver-*.json")):
            read = _read_own_file(path)
            if read is None:
                continue
            text, mtime = read
            try:
                info = json.loads(text)
                pid = int(info["pid"])
                info["url"]
            except (ValueError, KeyError, TypeError):
                continue
            if pid in found or info.get("sock") or not _alive(pid):
                continue
            info["_mtime"] = mtime
            found[pid] = info
    return list(found.values())


def untrusted_dir(folder: Path) -> Optional[str]:
    """Why the runtime folder cannot be trusted (None: it can, or it does not exist)."""
    try:
        st = folder.stat()
    except OSError:
        return None                     # nothing to read there
    if not stat.S_ISDIR(st.st_mode):
        return "not a folder"
    return _foreign(st)


def _read_own_file(path: Path) -> Optional[tuple[str, float]]:
    """The text and mtime of a runtime file that only this user can have written (None, with
    a warning, for any other; None quietly for one that went away)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(
            os, "O_NONBLOCK", 0))
    except OSError:
        if path.is_symlink():
            _skip(path, "a symlink (Jupyter writes none)")
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        problem = "not a regular file" if not stat.S_ISREG(st.st_mode) else _foreign(st)
        if problem:
            _skip(path, problem)
            return None
        try:
            return f.read(1 << 20).decode("utf-8", "replace"), st.st_mtime
        except OSError:
            return None


def _foreign(st: os.stat_result) -> Optional[str]:
    """Why a file or folder with this status may hold what another user wrote."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    if uid is not None and st.st_uid != uid:
        return f"owned by uid {st.st_uid}, not by you (uid {uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by {'others' if st.st_mode & stat.S_IWOTH else 'its group'} " \
               f"(mode {stat.S_IMODE(st.st_mode):04o})"
    return None


_warned: set[tuple[str, str]] = set()


def _skip(path: Path, why: str) -> None:
    """Say once per process why a runtime folder or file was not trusted (never its content)."""
    if (str(path), why) not in _warned:
        _warned.add((str(path), why))
        log.warning("jupyter-osire-llm: ignoring %s: %s", path, why)


def _choose(servers: list[dict[str, Any]], env: dict[str, str]
            ) -> Optional[tuple[dict[str, Any], str]]:
    if not servers:
        return None
    by_pid = {int(s["pid"]): s for s in servers}
    parent = env.get("JPY_PARENT_PID", "")
    if parent.isdigit() and int(parent) in by_pid:
        return by_pid[int(parent)], "the server that started this kernel"
    for pid in _ancestors():
        if pid in by_pid:
            return by_pid[pid], "the server this process runs under"
    kernel_id = _kernel_id()
    if kernel_id and len(servers) > 1:
        for info in servers:
            if _lists_kernel(info, kernel_id):
                return info, "the server running this kernel"
    if len(servers) == 1:
        return servers[0], "the only running server"
    cwd = os.path.realpath(os.getcwd())
    holding = [s for s in servers if s.get("root_dir") and
               (cwd + os.sep).startswith(os.path.realpath(s["root_dir"]).rstrip(os.sep) + os.sep)]
    if holding:
        best = max(holding, key=lambda s: (len(os.path.realpath(s["root_dir"])), s["_mtime"]))
        return best, "the server whose root folder holds the current folder"
    return max(servers, key=lambda s: s["_mtime"]), "the newest running server"


def _server_url(info: dict[str, Any]) -> str:
    url = _normalise(info["url"])
    base = "/" + str(info.get("base_url") or "/").strip("/")
    parts = urllib.parse.urlsplit(url)
    if base != "/" and not parts.path.rstrip("/").endswith(base.rstrip("/")):
        url = urllib.parse.urlunsplit(parts._replace(path=base.rstrip("/") + "/"))
    return url


def _normalise(url: str) -> str:
    """``http://host:port/base/`` with a trailing slash; a wildcard bind address made local."""
    parts = urllib.parse.urlsplit(url.strip())
    host = parts.hostname or ""
    if host in ("0.0.0.0", "::", ""):
        netloc = "127.0.0.1" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urllib.parse.urlunsplit((parts.scheme or "http", parts.netloc, path, "", ""))


def _env_token(env: dict[str, str]) -> Optional[str]:
    if "OSIRE_TOKEN" in env:
        return env["OSIRE_TOKEN"]
    if env.get("OSIRE_TOKEN_FILE"):
        return _read_token_file(env["OSIRE_TOKEN_FILE"])
    return None


def _token_for(url: str, env: dict[str, str]) -> str:
    """A URL given without a token: the token of the running server at that URL, if any."""
    token = _env_token(env)
    if token is not None:
        return token
    wanted = _normalise(url)
    for info in running_servers(env):
        if _server_url(info) == wanted or _normalise(info["url"]) == wanted:
            server_token: str = info.get("token", "")
            return server_token
    return ""


def _read_token_file(path: str) -> str:
    try:
        return Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise errors.RequestError(f"cannot read the token file {path}: {exc.strerror}",
                                  field="token_file") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _ancestors(limit: int = 64) -> Iterable[int]:
    """This process's parent, grandparent, ... (Linux /proc; elsewhere only the parent)."""
    pid = os.getppid()
    for _ in range(limit):
        if pid <= 1:
            return
        yield pid
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return


def _connection_file() -> Optional[str]:
    try:
        from ipykernel.connect import get_connection_file
        return get_connection_file()
    except Exception:  # not in a kernel, or no ipykernel
        return None


def _kernel_id() -> Optional[str]:
    connection = _connection_file()
    if not connection:
        return None
    name = Path(connection).stem
    return name[len("kernel-"):] if name.startswith("kernel-") else None


def _lists_kernel(info: dict[str, Any], kernel_id: str) -> bool:
    try:
        kernels = call(Server(_server_url(info), info.get("token", "")), "GET",
                        _server_url(info) + "api/kernels", timeout=5)
    except OsireError:
        return False
    return any(isinstance(k, dict) and k.get("id") == kernel_id for k in kernels or [])
