"""What pinned TLS to the engine costs the proxy: the same engine, plain and over TLS, in one run.

    python benchmarks/tls_bench.py [--requests N] [--rounds R]

Two fake engines (tests/fake_engine.py), one plain HTTP and one serving HTTPS with a certificate
made as the job script makes it, are called through the proxy's core (``UpstreamProxy``, the
code the /osire/v1 handler runs) with non-streaming chat completions at concurrency 1,
interleaved request by request so that both see the same machine. The goal (issue 7): at most
0.3 ms added p50 with TLS; keep-alive pooling must keep the handshake off the per-request path,
so the table also counts the TLS connections opened.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "proxy")]

from engine_tools import fake_engine_command, free_port, start_process, stop_process_group  # noqa: E402
from jupyter_osire_llm.proxy.endpoints import Endpoint  # noqa: E402
from jupyter_osire_llm.proxy.upstream import ProxyConfig, UpstreamProxy  # noqa: E402
from jupyter_osire_llm.proxy.router import Router  # noqa: E402
from test_engine_tls import make_certificate, wait_port  # noqa: E402
from proxy_support import FakeSource  # noqa: E402

KEY = "bench-key"
BODY = json.dumps({"model": "m", "max_tokens": 4,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()
HEADERS = {"Content-Type": "application/json"}


async def one(proxy: UpstreamProxy) -> float:
    start = time.perf_counter()
    async with proxy.for_model("m", None, BODY, "POST", "/v1/chat/completions",
                               HEADERS) as upstream:
        await upstream.read()
        assert upstream.status == 200
    return (time.perf_counter() - start) * 1000


def connections(proxy: UpstreamProxy) -> int:
    connector = proxy._ensure_session().connector
    return sum(len(v) for v in connector._conns.values())  # idle pooled connections


async def measure(plain_port: int, tls_port: int, fingerprint: str, n: int, rounds: int) -> dict:
    results: dict[str, list[float]] = {"plain": [], "tls": []}
    proxies = {
        "plain": UpstreamProxy(Router(FakeSource([Endpoint(
            "m", f"http://127.0.0.1:{plain_port}", KEY, "d", "1")])), ProxyConfig()),
        "tls": UpstreamProxy(Router(FakeSource([Endpoint(
            "m", f"https://127.0.0.1:{tls_port}", KEY, "d", "1", fingerprint=fingerprint)])),
            ProxyConfig()),
    }
    for proxy in proxies.values():
        for _ in range(50):                      # warm up: connection, caches
            await one(proxy)
    rounds_p50: dict[str, list[float]] = {"plain": [], "tls": []}
    for _ in range(rounds):
        batch: dict[str, list[float]] = {"plain": [], "tls": []}
        for _ in range(n):
            for name, proxy in proxies.items():
                batch[name].append(await one(proxy))
        for name in batch:
            results[name] += batch[name]
            rounds_p50[name].append(statistics.median(batch[name]))
    pooled = {name: connections(proxy) for name, proxy in proxies.items()}
    for proxy in proxies.values():
        await proxy.close()
    return {"samples": results, "round_p50": rounds_p50, "pooled": pooled}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def table(result: dict, n: int, rounds: int) -> str:
    s, r = result["samples"], result["round_p50"]
    added_rounds = [t - p for p, t in zip(r["plain"], r["tls"])]
    rows = [
        "| measure (concurrency 1, non-streaming chat) | plain HTTP | pinned TLS | added |",
        "|---|---|---|---|",
        f"| p50 over {len(s['plain'])} requests | {percentile(s['plain'], .5):.3f} ms | "
        f"{percentile(s['tls'], .5):.3f} ms | "
        f"{percentile(s['tls'], .5) - percentile(s['plain'], .5):+.3f} ms |",
        f"| p99 | {percentile(s['plain'], .99):.3f} ms | {percentile(s['tls'], .99):.3f} ms | "
        f"{percentile(s['tls'], .99) - percentile(s['plain'], .99):+.3f} ms |",
        f"| added p50 per round ({rounds} x {n}), median [min, max] | | | "
        f"{statistics.median(added_rounds):+.3f} ms [{min(added_rounds):+.3f}, "
        f"{max(added_rounds):+.3f}] |",
        f"| pooled connections after the run | {result['pooled']['plain']} | "
        f"{result['pooled']['tls']} | |",
    ]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="per engine per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        crt, key, fingerprint = make_certificate(Path(tmp))
        env = {**os.environ, "VLLM_API_KEY": KEY}
        plain_port, tls_port = free_port(), free_port()
        procs = [start_process(fake_engine_command(plain_port, "m"), env=env),
                 start_process(fake_engine_command(tls_port, "m") + [
                     "--ssl-certfile", str(crt), "--ssl-keyfile", str(key)], env=env)]
        try:
            asyncio.run(wait_port(plain_port))
            asyncio.run(wait_port(tls_port))
            result = asyncio.run(measure(plain_port, tls_port, fingerprint, args.requests,
                                         args.rounds))
        finally:
            for proc in procs:
                stop_process_group(proc, grace=5)
    print(table(result, args.requests, args.rounds))


if __name__ == "__main__":
    main()
