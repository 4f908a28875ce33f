"""A stand-in for Open OnDemand around the batch_connect app in ``etc/ood/jupyter-osire-llm``.

No OOD here (nor an official test harness for apps): the app's ERB files are rendered with Ruby's
own ``erb`` (``render.rb``, OOD's trim mode and contexts), the job script is assembled as
``ood_core``'s "basic" batch_connect template assembles it (``OodCore::BatchConnect::Template``:
cd to the session folder, helper functions, ``host=$(hostname)``, SOURCE before.sh, FORK
script.sh, SOURCE after.sh, write connection.yml with umask 077, wait), with small stand-ins for
its helpers of the same semantics, and submitted as ``ood_core``'s Slurm adapter submits it
(the script on sbatch's stdin, ``-D``/``-J``/``-o``/``-p``/``-A``/``-t``, ``--export=NONE``, then
``script.native``), as the session's user.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
APP = REPO / "etc" / "ood" / "jupyter-osire-llm"
RENDER = HERE / "render.rb"

#: ood_core's bash helpers, same names, arguments and answers; port_used tries bash's /dev/tcp
#: where ood_core tries nc (or python, lsof) with the same 2 s limit.
HELPERS = r"""
source_helpers () {
  random_number () {
    shuf -i ${1}-${2} -n 1
  }
  export -f random_number

  port_used () {
    local port="${1#*:}"
    local host=$((expr "${1}" : '\(.*\):' || echo "localhost") | awk 'END{print $NF}')
    timeout 2 bash -c "exec 3<>/dev/tcp/${host}/${port}" &> /dev/null
  }
  export -f port_used

  find_port () {
    local host="${1:-localhost}"
    local port=$(random_number "${2:-2000}" "${3:-65535}")
    while port_used "${host}:${port}"; do
      port=$(random_number "${2:-2000}" "${3:-65535}")
    done
    echo "${port}"
  }
  export -f find_port

  wait_until_port_used () {
    local port="${1}"
    local time="${2:-30}"
    for ((i=1; i<=time*2; i++)); do
      if port_used "${port}"; then
        return 0
      fi
      sleep 0.5
    done
    return 1
  }
  export -f wait_until_port_used

  create_passwd () {
    tr -cd '[:alnum:]' < /dev/urandom 2> /dev/null | head -c${1:-32}
  }
  export -f create_passwd
}
export -f source_helpers
"""

#: ood_core's base_script of the basic template (conn_params: host, port, password).
JOB_SCRIPT = """#!/bin/bash
cd {work_dir}

export host
export port

create_yml () {{
  echo "Generating connection YAML file..."
  (
    umask 077
    echo -e "host: $host\\nport: $port\\npassword: $password" > "connection.yml"
  )
}}

clean_up () {{
  echo "Cleaning up..."
  [[ -e "clean.sh" ]] && source "clean.sh"
  [[ ${{SCRIPT_PID}} ]] && pkill -P ${{SCRIPT_PID}} || :
  pkill -P $$
  exit ${{1:-0}}
}}
{helpers}
source_helpers

host=$(hostname)

[[ -e "before.sh" ]] && source "before.sh"

echo "Script starting..."
"./script.sh" &
SCRIPT_PID=$!

[[ -e "after.sh" ]] && source "after.sh"

create_yml

wait ${{SCRIPT_PID}} || clean_up 1

clean_up
"""


def ruby(*args: str, env: Optional[dict[str, str]] = None) -> str:
    result = subprocess.run(["ruby", str(RENDER), *args], capture_output=True, text=True,
                            env={**os.environ, **(env or {})}, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"ruby render.rb {' '.join(args)}: {result.stderr}")
    return result.stdout


def render_form(site_env: dict[str, str]) -> dict[str, Any]:
    """form.yml.erb as the dashboard renders it (site settings from the PUN's environment)."""
    return yaml.safe_load(ruby("form", str(APP), env=site_env))


def form_values(form: dict[str, Any], chosen: dict[str, str]) -> dict[str, str]:
    """What the browser posts: every attribute's value (hidden ones as rendered), the user's
    choices over them. Every value is a string, as from an HTML form."""
    values = {}
    for name in form["form"]:
        attr = (form.get("attributes") or {}).get(name) or {}
        values[name] = str(chosen.get(name, attr.get("value", "")))
    return values


def render_submit(values: dict[str, str], tmp: Path) -> dict[str, Any]:
    path = tmp / "values.json"
    path.write_text(json.dumps(values))
    return yaml.safe_load(ruby("submit", str(APP), str(path)))


def stage(values: dict[str, str], session_dir: Path) -> None:
    """template/ into the session folder, *.erb rendered with ``context`` (as OOD stages it)."""
    path = session_dir.parent / f"{session_dir.name}.values.json"
    path.write_text(json.dumps(values))
    try:
        ruby("stage", str(APP), str(path), str(session_dir))
    finally:
        path.unlink()


def render_view(connection: dict[str, Any], tmp: Path) -> str:
    path = tmp / "connection.json"
    path.write_text(json.dumps({k: str(v) for k, v in connection.items()}))
    try:
        return ruby("view", str(APP), str(path))
    finally:
        path.unlink()


def job_script(work_dir: Path) -> str:
    return JOB_SCRIPT.format(work_dir=work_dir, helpers=HELPERS)


def seconds_to_duration(seconds: int) -> str:
    return "%02d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def sbatch_args(submit: dict[str, Any], work_dir: Path, job_name: str) -> list[str]:
    """ood_core's Slurm adapter: options from submit.yml's ``script``, then ``native``."""
    script = submit.get("script") or {}
    args = ["-D", str(work_dir), "-J", job_name, "-o", str(work_dir / "output.log")]
    if script.get("queue_name"):
        args += ["-p", str(script["queue_name"])]
    if script.get("accounting_id"):
        args += ["-A", str(script["accounting_id"])]
    if script.get("wall_time"):
        args += ["-t", seconds_to_duration(int(script["wall_time"]))]
    args += ["--export", "NONE"]
    return args + [str(a) for a in script.get("native") or []]


@dataclass
class Session:
    user: str
    home: Path
    work_dir: Path
    job_id: str = ""

    def as_user(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        if os.geteuid() == 0 and self.user != "root":
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kwargs)

    def connection(self) -> Optional[dict[str, Any]]:
        path = self.work_dir / "connection.yml"
        if not path.exists():
            return None
        return yaml.safe_load(path.read_text())

    def output(self) -> str:
        try:
            return (self.work_dir / "output.log").read_text(errors="replace")
        except OSError:
            return ""


def session_user() -> tuple[str, Path]:
    """The session runs as whoever runs the tests (root in CI: see ``site_setup``)."""
    entry = pwd.getpwuid(os.geteuid())
    return entry.pw_name, Path(entry.pw_dir)


def site_setup(python: Path, scratch: Path) -> str:
    """OSIRE_OOD_SETUP as a site would write it (a module or a venv's activate: the Jupyter
    environment with the extension first on PATH), plus, for the test only, a data folder of
    its own (the extension's state and Jupyter's runtime files, apart from the user's). Under
    root (CI containers), Jupyter's refusal to run as root is lifted by a config file on
    JUPYTER_CONFIG_PATH; OOD never runs sessions as root."""
    lines = [f"export PATH={python.parent}:$PATH", f"export JUPYTER_DATA_DIR={scratch / 'data'}"]
    if os.geteuid() == 0:
        folder = scratch / "root-only-jupyter-config"
        folder.mkdir(exist_ok=True)
        (folder / "jupyter_server_config.json").write_text('{"ServerApp": {"allow_root": true}}')
        lines.append(f"export JUPYTER_CONFIG_PATH={folder}")
    return "; ".join(lines)


def new_session(user: str, home: Path) -> Session:
    """The session folder OOD's dashboard makes (under ~/ondemand of ``home``), owned by them."""
    work_dir = (home / "ondemand" / "data" / "sys" / "dashboard" / "batch_connect" / "sys" /
                "jupyter-osire-llm" / "output" / str(uuid.uuid4()))
    work_dir.mkdir(parents=True)
    if os.geteuid() == 0 and user != "root":
        entry = pwd.getpwnam(user)
        for path in [work_dir, *work_dir.parents]:
            if path == home or home not in path.parents:
                break
            os.chown(path, entry.pw_uid, entry.pw_gid)
    work_dir.chmod(0o700)
    return Session(user=user, home=home, work_dir=work_dir)


def chown_tree(path: Path, user: str) -> None:
    if os.geteuid() == 0 and user != "root":
        shutil.chown(path, user, user)
        for child in path.rglob("*"):
            shutil.chown(child, user, user)


def submit(session: Session, submit_doc: dict[str, Any]) -> str:
    script = job_script(session.work_dir)
    args = sbatch_args(submit_doc, session.work_dir, "sys/dashboard/sys/jupyter-osire-llm")
    result = session.as_user(["sbatch", "--parsable", *args], input=script,
                             cwd=str(session.work_dir))
    if result.returncode != 0:
        raise AssertionError(f"sbatch {args}: {result.stderr}")
    session.job_id = result.stdout.strip().split(";")[0]
    return session.job_id


class Portal:
    """The OOD web node, enough for the Connect button: a dashboard page holding the session's
    rendered view.html, and the ``/node/<host>/<port>/...`` reverse proxy, which keeps the path
    and, as Apache's mod_proxy does by default (ProxyPreserveHost Off), sends the node's
    ``host:port`` as Host. Runs an aiohttp server on 127.0.0.1 in its own thread."""

    HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
           "proxy-authorization", "proxy-authenticate", "content-length", "host"}

    def __init__(self) -> None:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.view_html = ""
        self._loop = None
        self._thread = None
        self._runner = None

    def start(self) -> "Portal":
        import asyncio
        import threading
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(30), "portal did not start"
        return self

    async def _serve(self) -> None:
        import aiohttp
        from aiohttp import web
        self._client = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/pun/sys/dashboard/session", self._dashboard)
        app.router.add_route("*", r"/node/{host}/{port:\d+}/{tail:.*}", self._node)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _dashboard(self, request):
        from aiohttp import web
        return web.Response(content_type="text/html", text=(
            "<!doctype html><html><head><title>OnDemand</title></head><body>"
            f"<div class='card'>{self.view_html}</div></body></html>"))

    async def _node(self, request):
        from aiohttp import web
        host, port = request.match_info["host"], request.match_info["port"]
        target = f"http://{host}:{port}{request.rel_url}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in self.HOP}
        headers["Host"] = f"{host}:{port}"
        body = await request.read()
        async with self._client.request(request.method, target, headers=headers, data=body,
                                        allow_redirects=False) as upstream:
            payload = await upstream.read()
            response = web.Response(status=upstream.status, body=payload)
            for name, value in upstream.headers.items():
                if name.lower() not in self.HOP:
                    response.headers.add(name, value)
            return response

    def stop(self) -> None:
        import asyncio
        if self._loop is None:
            return

        async def close() -> None:
            await self._client.close()
            await self._runner.cleanup()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
