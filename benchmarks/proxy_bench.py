#!/usr/bin/env python
"""The /osire/v1 proxy against a direct call and against jupyter-server-proxy, in one run.

    python benchmarks/proxy_bench.py [--quick]

Starts, each in its own process: two fake OpenAI engines (tests/fake_engine.py, aiohttp: one
as fast as it goes, one with 1 s between tokens), a tiny engine of this script whose stream
chunks carry the time they were sent (20 ms apart, for the forwarding delay), one Jupyter
server with this extension (static endpoints to the engines, token auth) and jupyter-server-proxy
(installed on first use into benchmarks/.venv, a venv over this environment, so nothing else sees
it), and the load client (aiohttp, or the openai SDK for time to first chunk). It measures the
same engine three ways: ``direct``, ``osire`` (/osire/v1) and ``jsp`` (/proxy/<port>/v1), prints a
table and writes JSON to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / "benchmarks" / ".venv"
RESULTS = REPO / "benchmarks" / "results"
FAKE_ENGINE = REPO / "tests" / "fake_engine.py"
PATHS = ("direct", "osire", "jsp")
MESSAGES = [{"role": "user", "content": "hello there"}]


# -- the stack: engines and the Jupyter server ---------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_python() -> str:
    """The benchmark venv's python (with jupyter-server-proxy), made on first use."""
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)],
                       check=True)
    probe = subprocess.run([str(python), "-c", "import jupyter_server_proxy"],
                           capture_output=True)
    if probe.returncode != 0:
        print("installing jupyter-server-proxy into benchmarks/.venv ...", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "jupyter-server-proxy"],
                       check=True)
    return str(python)


def wait_http(url: str, headers: dict[str, str], proc: subprocess.Popen, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not up after {timeout} s")


def start(stack: ExitStack, argv: list[str], env: dict[str, str], log: Path
          ) -> subprocess.Popen:
    out = open(log, "ab")
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    out.close()

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    stack.callback(stop)
    return proc


def start_engine(stack: ExitStack, tmp: Path, name: str, token_delay: float) -> int:
    port = free_port()
    env = {**os.environ, "OSIRE_FAKE_NO_AUTH": "1", "OSIRE_FAKE_TOKEN_DELAY": str(token_delay)}
    proc = start(stack, [sys.executable, str(FAKE_ENGINE), "--port", str(port),
                         "--served-model-name", name], env, tmp / f"engine-{name}.log")
    wait_http(f"http://127.0.0.1:{port}/health", {}, proc)
    return port


def start_stamp_engine(stack: ExitStack, tmp: Path) -> int:
    """This script's own tiny engine whose chunks carry the time they were sent (in ``id``)."""
    port = free_port()
    proc = start(stack, [sys.executable, __file__, "--stamp-engine", str(port)], dict(os.environ),
                 tmp / "engine-stamp.log")
    wait_http(f"http://127.0.0.1:{port}/health", {}, proc)
    return port


def serve_stamp_engine(port: int) -> None:
    """Chat streams of 10 chunks, 20 ms apart, each chunk's ``id`` = time.time() at sending."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(10):
            if i:
                await asyncio.sleep(0.02)
            event = {"id": f"{time.time():.6f}", "object": "chat.completion.chunk", "created": 0,
                     "model": body["model"], "choices": [{"index": 0, "finish_reason": None,
                                                          "delta": {"content": f"t{i} "}}]}
            await resp.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


SERVER_CONFIG = """
c.ServerApp.ip = "127.0.0.1"
c.ServerApp.port = {port}
c.ServerApp.open_browser = False
c.ServerApp.allow_root = True
c.ServerApp.root_dir = {root!r}
c.ServerApp.log_level = "WARN"
c.IdentityProvider.token = {token!r}
c.ServerApp.jpserver_extensions = {{"jupyter_osire_llm": True, "jupyter_server_proxy": True}}
c.OsireLLM.scheduler = "local"
c.OsireLLM.job_root = {jobs!r}
c.OsireLLM.db_path = {db!r}
c.OsireLLM.log_level_name = "WARNING"
c.OsireLLM.static_endpoints = {static!r}
"""


def start_server(stack: ExitStack, tmp: Path, engines: dict[str, int]) -> dict[str, Any]:
    port, token = free_port(), secrets.token_hex(16)
    static = {name: {"url": f"http://127.0.0.1:{p}", "api_key": "unused"}
              for name, p in engines.items()}
    config = tmp / "jupyter_server_config.py"
    config.write_text(SERVER_CONFIG.format(port=port, root=str(tmp), token=token,
                                           jobs=str(tmp / "jobs"), db=str(tmp / "state.sqlite"),
                                           static=static))
    env = {**os.environ, "PYTHONPATH": str(REPO), "JUPYTER_CONFIG_DIR": str(tmp / "cfg"),
           "JUPYTER_DATA_DIR": str(tmp / "data"), "JUPYTER_RUNTIME_DIR": str(tmp / "rt")}
    proc = start(stack, [bench_python(), "-m", "jupyter_server", f"--config={config}"], env,
                 tmp / "server.log")
    root = f"http://127.0.0.1:{port}/"
    auth = {"Authorization": f"token {token}"}
    wait_http(root + "osire/api/health", auth, proc)
    return {"root": root, "token": token, "auth": auth, "pid": proc.pid}


def targets(server: dict[str, Any], engine_port: int) -> dict[str, dict[str, Any]]:
    """Base URL (ending in /v1) and headers of each of the three paths to one engine."""
    return {"direct": {"base": f"http://127.0.0.1:{engine_port}/v1", "headers": {}},
            "osire": {"base": server["root"] + "osire/v1", "headers": server["auth"]},
            "jsp": {"base": server["root"] + f"proxy/{engine_port}/v1",
                    "headers": server["auth"]}}


# -- process statistics ------------------------------------------------------------------------

def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the load client (runs in its own process: --client SPEC) -----------------------------------

def run_client(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.pop("kind")
    return asyncio.run({"latency": latency, "interleaved": interleaved, "ttfc": ttfc,
                        "throughput": throughput, "hold": hold}[kind](**spec))


async def interleaved(paths: dict[str, dict[str, Any]], model: str, n: int) -> dict[str, Any]:
    """One request at a time, the paths taking turns, so that the machine's noise hits all
    alike; the added latency of a path is taken pairwise against the direct call of its turn."""
    import aiohttp
    body = json.dumps({"model": model, "messages": MESSAGES, "max_tokens": 4}).encode()
    times: dict[str, list[float]] = {p: [] for p in paths}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     cookie_jar=jar()) as session:
        for i in range(n + 50):
            for path, target in paths.items():
                headers = {**target["headers"], "Content-Type": "application/json"}
                t0 = time.perf_counter()
                async with session.post(target["base"] + "/chat/completions", data=body,
                                        headers=headers) as r:
                    await r.read()
                    assert r.status == 200, r.status
                if i >= 50:  # warm-up
                    times[path].append((time.perf_counter() - t0) * 1000)
    out: dict[str, Any] = {}
    for path, values in times.items():
        added = [v - d for v, d in zip(values, times["direct"])]
        out[path] = {"p50_ms": percentile(values, 50), "p99_ms": percentile(values, 99),
                     "added_p50_ms": percentile(added, 50), "added_p99_ms": percentile(added, 99),
                     "n": len(values)}
    return out


async def latency(base: str, headers: dict[str, str], model: str, n: int,
                  concurrency: int) -> dict[str, Any]:
    import aiohttp
    body = json.dumps({"model": model, "messages": MESSAGES, "max_tokens": 4}).encode()
    headers = {**headers, "Content-Type": "application/json"}
    times: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     cookie_jar=jar()) as session:
        async def one(record: bool) -> None:
            t0 = time.perf_counter()
            async with session.post(base + "/chat/completions", data=body,
                                    headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status
            if record:
                times.append((time.perf_counter() - t0) * 1000)

        async def worker(count: int, record: bool) -> None:
            for _ in range(count):
                await one(record)
        await asyncio.gather(*(worker(50 // concurrency + 1, False) for _ in range(concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(n // concurrency, True) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99),
            "rps": len(times) / wall, "n": len(times)}


async def ttfc(paths: dict[str, dict[str, Any]], model: str, n: int) -> dict[str, Any]:
    """openai SDK, stream=True (it sends Accept: application/json), the paths taking turns.

    ``first``: from sending the request to the first chunk. ``delay``: from the engine sending a
    chunk (its time stamp) to the SDK handing it over, for the first chunk and for all chunks."""
    import openai
    clients = {path: openai.AsyncOpenAI(base_url=t["base"], max_retries=0, api_key=t["headers"]
                                        .get("Authorization", "token none").split()[1])
               for path, t in paths.items()}
    first: dict[str, list[float]] = {p: [] for p in paths}
    delay_first: dict[str, list[float]] = {p: [] for p in paths}
    delay_all: dict[str, list[float]] = {p: [] for p in paths}
    for i in range(n + 3):
        for path, sdk in clients.items():
            t0 = time.perf_counter()
            stream = await sdk.chat.completions.create(model=model, messages=MESSAGES,
                                                       stream=True)
            delays = []
            async for chunk in stream:
                if not delays:
                    elapsed = time.perf_counter() - t0
                delays.append((time.time() - float(chunk.id)) * 1000)
            if i >= 3:  # warm-up
                first[path].append(elapsed * 1000)
                delay_first[path].append(delays[0])
                delay_all[path].extend(delays)
    out: dict[str, Any] = {}
    for path in paths:
        out[path] = {"first_p50_ms": percentile(first[path], 50),
                     "first_p99_ms": percentile(first[path], 99),
                     "delay_first_p50_ms": percentile(delay_first[path], 50),
                     "delay_first_p99_ms": percentile(delay_first[path], 99),
                     "delay_all_p50_ms": percentile(delay_all[path], 50),
                     "delay_all_p99_ms": percentile(delay_all[path], 99), "n": n}
    return out


async def throughput(base: str, headers: dict[str, str], model: str, streams: int,
                     tokens: int) -> dict[str, Any]:
    """SSE events per second over ``streams`` concurrent streams of ``tokens`` tokens each."""
    import aiohttp
    body = json.dumps({"model": model, "prompt": "x", "max_tokens": tokens, "stream": True})
    headers = {**headers, "Content-Type": "application/json", "Accept": "text/event-stream"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     cookie_jar=jar()) as session:
        async def one() -> int:
            events, tail = 0, b""
            async with session.post(base + "/completions", data=body, headers=headers) as r:
                async for chunk in r.content.iter_any():
                    events += (tail + chunk).count(b"\n\n")
                    tail = chunk[-1:]
            return events
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one() for _ in range(streams)))
        wall = time.perf_counter() - t0
    return {"events_per_s": sum(counts) / wall, "events": sum(counts), "seconds": wall}


async def hold(base: str, headers: dict[str, str], model: str, streams: int,
               seconds: int) -> dict[str, Any]:
    """``streams`` concurrent streams of one token a second, held ``seconds``."""
    import aiohttp
    body = json.dumps({"model": model, "prompt": "x", "max_tokens": seconds, "stream": True})
    headers = {**headers, "Content-Type": "application/json"}
    errors: list[str] = []
    timeout = aiohttp.ClientTimeout(total=seconds + 120)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), cookie_jar=jar(),
                                     timeout=timeout) as session:
        async def one() -> int:
            try:
                async with session.post(base + "/completions", data=body,
                                        headers=headers) as r:
                    data = await r.read()
                if r.status != 200 or not data.endswith(b"data: [DONE]\n\n"):
                    errors.append(f"status {r.status}, {data[-80:]!r}")
                return data.count(b"\n\n")
            except Exception as exc:  # every failure counts, whatever its kind
                errors.append(repr(exc))
                return 0

        async def ramp() -> list[int]:
            tasks = []
            for i in range(streams):
                tasks.append(asyncio.create_task(one()))
                if i % 100 == 99:
                    await asyncio.sleep(0.05)
            return await asyncio.gather(*tasks)
        t0 = time.perf_counter()
        counts = await ramp()
    return {"streams": streams, "errors": len(errors), "error_samples": errors[:5],
            "events": sum(counts), "seconds": time.perf_counter() - t0}


def jar() -> Any:
    """Keep Jupyter's login cookie as the openai SDK (httpx) does, also for 127.0.0.1."""
    import aiohttp
    return aiohttp.CookieJar(unsafe=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def client(spec: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--client", json.dumps(spec)],
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"load client failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


# -- the measurements --------------------------------------------------------------------------

def measure(quick: bool, server: dict[str, Any], ports: dict[str, int],
            only: set[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "latency" in only:
        results["latency"] = measure_latency(quick, server, ports)
    if "ttfc" in only:
        results["ttfc"] = client({"kind": "ttfc", "paths": targets(server, ports["stamp"]),
                                  "model": "stamp", "n": 30 if quick else 100})
        log(f"ttfc: {results['ttfc']}")
    if "throughput" in only:
        results["throughput"] = measure_throughput(quick, server, ports)
    if "hold" in only:
        results["hold"] = hold_streams(server, ports, 10 if quick else 30)
    return results


def measure_throughput(quick: bool, server: dict[str, Any], ports: dict[str, int]
                       ) -> dict[str, Any]:
    """Best of several rounds per path, the paths taking turns (throughput on a shared machine
    is only ever lowered by noise)."""
    fast = targets(server, ports["fast"])
    rounds: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
    for _ in range(2 if quick else 3):
        for path in PATHS:
            rounds[path].append(client({"kind": "throughput", **fast[path], "model": "fast",
                                        "streams": 8, "tokens": 20000}))
    best = {p: max(r, key=lambda x: x["events_per_s"]) for p, r in rounds.items()}
    for path in PATHS:
        best[path]["rounds_events_per_s"] = [r["events_per_s"] for r in rounds[path]]
        log(f"throughput {path}: {best[path]}")
    return best


def measure_latency(quick: bool, server: dict[str, Any], ports: dict[str, int]
                    ) -> dict[str, Any]:
    fast, pid = targets(server, ports["fast"]), server["pid"]
    results: dict[str, Any] = {}
    results["c1"] = client({"kind": "interleaved", "paths": fast, "model": "fast",
                            "n": 500 if quick else 2000})
    log(f"latency c1: {results['c1']}")
    for conc, n in ((64, 1500 if quick else 6000),):
        results[f"c{conc}"] = {}
        for path in PATHS:
            cpu0 = cpu_seconds(pid)
            r = client({"kind": "latency", **fast[path], "model": "fast", "n": n,
                        "concurrency": conc})
            r["server_cpu_ms_per_req"] = (cpu_seconds(pid) - cpu0) * 1000 / (n + 50)
            results[f"c{conc}"][path] = r
            log(f"latency c{conc} {path}: {r}")
    return results


def hold_streams(server: dict[str, Any], ports: dict[str, int], seconds: int) -> dict[str, Any]:
    pid = server["pid"]
    before = rss_mib(pid)
    spec = {"kind": "hold", **targets(server, ports["hold"])["osire"], "model": "hold",
            "streams": 1000, "seconds": seconds}
    proc = subprocess.Popen([sys.executable, __file__, "--client", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = before
    while proc.poll() is None:
        peak = max(peak, rss_mib(pid))
        time.sleep(0.5)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"hold client failed: {err[-2000:]}")
    result = json.loads(out)
    result.update(server_rss_before_mib=before, server_rss_peak_mib=peak,
                  server_rss_after_mib=rss_mib(pid))
    log(f"hold: {result}")
    return result


# -- report ------------------------------------------------------------------------------------

def table(results: dict[str, Any]) -> str:
    lines = ["| measure | direct | /osire/v1 | jupyter-server-proxy |", "|---|---|---|---|"]
    rows = {"latency": _rows_latency, "ttfc": _rows_ttfc, "throughput": _rows_throughput,
            "hold": _rows_hold}
    for part, make in rows.items():
        if part in results:
            lines += make(results[part])
    return "\n".join(lines)


def _rows_latency(latency: dict[str, Any]) -> list[str]:
    c1, c64 = latency["c1"], latency["c64"]
    lines = []
    for key in ("p50", "p99"):
        lines.append(f"| non-streaming {key}, concurrency 1 (added, paired) | "
                     f"{c1['direct'][key + '_ms']:.2f} ms | " + " | ".join(
                         f"{c1[p][key + '_ms']:.2f} ms (+{c1[p]['added_' + key + '_ms']:.2f})"
                         for p in ("osire", "jsp")) + " |")
    for key in ("p50_ms", "p99_ms"):
        d = c64["direct"][key]
        lines.append(f"| non-streaming {key[:3]}, concurrency 64 (added) | {d:.1f} ms | " +
                     " | ".join(f"{c64[p][key]:.1f} ms (+{c64[p][key] - d:.1f})"
                                for p in ("osire", "jsp")) + " |")
    lines.append("| req/s, concurrency 64 | " +
                 " | ".join(f"{c64[p]['rps']:.0f}" for p in PATHS) + " |")
    lines.append("| server CPU per request, concurrency 64 | - | " +
                 " | ".join(f"{c64[p]['server_cpu_ms_per_req']:.2f} ms"
                            for p in ("osire", "jsp")) + " |")
    return lines


def _rows_ttfc(t: dict[str, Any]) -> list[str]:
    def cell(p: str, key: str) -> str:
        text = f"{t[p][key + '_p50_ms']:.2f} / {t[p][key + '_p99_ms']:.2f} ms"
        added = t[p][key + "_p50_ms"] - t["direct"][key + "_p50_ms"]
        return text if p == "direct" else f"{text} (+{added:.2f})"
    return [f"| openai SDK stream=True, {label} p50 / p99 (added p50) | " +
            " | ".join(cell(p, key) for p in PATHS) + " |"
            for key, label in (("first", "request to first chunk"),
                               ("delay_first", "engine sent first chunk to SDK got it"),
                               ("delay_all", "engine sent a chunk to SDK got it"))]


def _rows_throughput(tp: dict[str, Any]) -> list[str]:
    d = tp["direct"]["events_per_s"]
    return ["| streamed chunks/s (8 streams) | " + " | ".join(
        f"{tp[p]['events_per_s']:.0f} ({tp[p]['events_per_s'] / d:.0%})" for p in PATHS) + " |"]


def _rows_hold(h: dict[str, Any]) -> list[str]:
    return [f"| {h['streams']} streams held {h['seconds']:.0f} s | - | {h['errors']} errors, "
            f"server RSS {h['server_rss_before_mib']:.0f} -> {h['server_rss_peak_mib']:.0f} MiB"
            " | - |"]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, 10 s hold")
    parser.add_argument("--only", default="latency,ttfc,throughput,hold",
                        help="comma-separated subset of: latency,ttfc,throughput,hold")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--stamp-engine", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stamp_engine:
        serve_stamp_engine(args.stamp_engine)
        return
    if args.client:
        print(json.dumps(run_client(json.loads(args.client))))
        return
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="osire-bench-") as tmpdir:
        tmp = Path(tmpdir)
        ports = {name: start_engine(stack, tmp, name, delay)
                 for name, delay in (("fast", 0.0), ("hold", 1.0))}
        ports["stamp"] = start_stamp_engine(stack, tmp)
        server = start_server(stack, tmp, ports)
        results = measure(args.quick, server, ports, set(args.only.split(",")))
    results["meta"] = {"quick": args.quick, "only": args.only, "cpus": os.cpu_count(),
                       "time": time.time(),
                       "python": sys.version.split()[0]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"proxy_bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"\nJSON: {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
