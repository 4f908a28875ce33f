"""``jupyter osire``: the REST API from a shell, against your running Jupyter server.

    jupyter osire status | catalog | list
    jupyter osire launch MODEL [--replicas N] [--gpus N] [--time T] [--partition P] ...
    jupyter osire stop ID
    jupyter osire logs ID [--tail N]

The server is the first one `jupyter server list` knows, or --url and --token (or
$OSIRE_URL / $OSIRE_TOKEN).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any, Optional

RESOURCE_FLAGS = ("gpus", "gpu_type", "cpus", "memory", "time", "partition", "account", "qos",
                  "constraint")


def find_server() -> tuple[str, str]:
    url, token = os.environ.get("OSIRE_URL"), os.environ.get("OSIRE_TOKEN", "")
    if url:
        return url, token
    from jupyter_server.serverapp import list_running_servers
    for info in list_running_servers():
        return info["url"], info.get("token", "")
    raise SystemExit("no running Jupyter server found: start one, or pass --url and --token")


def call(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        url.rstrip("/") + "/osire/api/" + path, method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        try:
            message = json.loads(err.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = err.reason
        raise SystemExit(f"error {err.code}: {message}") from None
    except urllib.error.URLError as err:
        raise SystemExit(f"cannot reach {url}: {err.reason}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jupyter osire", description=__doc__.splitlines()[0])
    p.add_argument("--url"), p.add_argument("--token")
    p.add_argument("--json", action="store_true", help="print raw JSON")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status"), sub.add_parser("catalog"), sub.add_parser("list")
    launch = sub.add_parser("launch")
    launch.add_argument("model")
    launch.add_argument("--replicas", type=int, default=1)
    for flag in RESOURCE_FLAGS:
        launch.add_argument(f"--{flag.replace('_', '-')}", dest=flag,
                            type=int if flag in ("gpus", "cpus") else str)
    sub.add_parser("stop").add_argument("id")
    logs = sub.add_parser("logs")
    logs.add_argument("id"), logs.add_argument("--tail", type=int, default=50)
    return p


def run(args: argparse.Namespace) -> Any:
    url, token = (args.url, args.token or "") if args.url else find_server()
    if args.command == "status":
        return call(url, token, "GET", "health")
    if args.command == "catalog":
        return call(url, token, "GET", "catalog")
    if args.command == "list":
        return call(url, token, "GET", "deployments")
    if args.command == "launch":
        resources = {f: getattr(args, f) for f in RESOURCE_FLAGS if getattr(args, f) is not None}
        return call(url, token, "POST", "deployments",
                    {"model": args.model, "replicas": args.replicas, "resources": resources})
    if args.command == "stop":
        return call(url, token, "DELETE", f"deployments/{args.id}")
    return call(url, token, "GET", f"deployments/{args.id}/logs?tail={args.tail}")


def render(command: str, result: Any) -> str:
    if command == "list":
        rows = [f"{d['id']}  {d['model']:<28} {d['state']:<9} {d.get('reason') or ''}"
                for d in result["deployments"]]
        return "\n".join(rows) or "no deployments"
    if command == "catalog":
        return "\n".join(f"{m['name']:<28} {m['description']}" for m in result["models"])
    if command == "logs":
        return "\n".join(line for r in result["replicas"] for line in r["lines"])
    if command in ("launch", "stop"):
        return f"{result['id']}  {result['model']}  {result['state']}"
    return json.dumps(result, indent=2)


def main(argv: Optional[list[str]] = None) -> None:
    args = parser().parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else render(args.command, result))


if __name__ == "__main__":
    main(sys.argv[1:])
