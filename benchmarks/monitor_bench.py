"""How hard the monitor leans on the scheduler, and how soon it still notices an engine.

    python benchmarks/monitor_bench.py [--hours 24] [--trials 5]

1. Three deployments queued for a day (virtual time: the monitor's clocks are injected, each tick
   advances them by its tick): scheduler queries in all and the most in any 30 s window, for the
   monitor as it is and for the previous policy (a query every 0.5 s while anything is queued),
   run in the same process.
2. A job the scheduler still reports as pending (its last answer) whose engine starts: seconds
   from the engine answering /health to the deployment being ready, in real time, with the
   monitor's own loop. The engine is tests/fake_engine.py over TLS with a certificate made as
   the job script makes it, and the endpoint file is written as the job script writes it.
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
from collections import deque
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "proxy")]

from engine_tools import fake_engine_command, free_port, start_process, stop_process_group  # noqa: E402
from jupyter_osire_llm.server.settings import Timing  # noqa: E402
from jupyter_osire_llm.schedulers.base import Job, JobInfo, JobRequest, JobState, Scheduler  # noqa: E402
from service_factory import make_context, one_model_catalog  # noqa: E402
from test_engine_tls import TLS_FLAGS, make_certificate  # noqa: E402


class Queue(Scheduler):
    """A scheduler whose jobs wait in the queue for ever; it counts the queries it answers."""

    name = "queue"

    def __init__(self) -> None:
        self.queries: list[float] = []
        self.now = 0.0
        self.next_id = 100

    def submit(self, request: JobRequest) -> Job:
        self.next_id += 1
        return Job(str(self.next_id), request.folder)

    def query(self, jobs: Sequence[Job]) -> dict[str, JobInfo]:
        self.queries.append(self.now)
        return {j.id: JobInfo(j.id, JobState.PENDING, reason="Priority") for j in jobs}

    def cancel(self, job: Job) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def queued_day(tmp: Path, hours: float, previous_policy: bool) -> dict:
    scheduler, clock = Queue(), Clock()
    context = make_context(tmp, one_model_catalog("true"), scheduler,
                           monitor_slow_interval=0.5 if previous_policy else 30.0,
                           timing=Timing(monitor_clock=clock,
                                         wall_clock=lambda: 1e9 + clock.now))
    service, monitor = context.service, context.monitor
    for _ in range(3):
        await service.launch("m")
    end = hours * 3600
    while clock.now < end:
        scheduler.now = clock.now
        await monitor.cycle()
        clock.now += monitor.tick
    await monitor.stop()
    return {"queries": len(scheduler.queries),
            "most_per_30s": most_in_window(scheduler.queries, 30),
            "settled_per_30s": most_in_window([t for t in scheduler.queries if t >= 300], 30)}


def most_in_window(times: list[float], seconds: float) -> int:
    window: deque = deque()
    most = 0
    for t in times:
        window.append(t)
        while window[0] <= t - seconds:
            window.popleft()
        most = max(most, len(window))
    return most


async def noticed_after(tmp: Path) -> float:
    """Seconds from the engine's first healthy answer to the deployment being ready."""
    scheduler = Queue()
    context = make_context(tmp, one_model_catalog(f"{sys.executable} -c pass", **TLS_FLAGS),
                           scheduler, engine_host="127.0.0.1")
    service, monitor = context.service, context.monitor
    d = await service.launch("m")
    monitor.start()
    await asyncio.sleep(3)                      # the monitor has settled into waiting
    crt, key, fingerprint = make_certificate(tmp / "tls")
    port = free_port()
    engine = start_process(fake_engine_command(port, "m") + [
        "--ssl-certfile", str(crt), "--ssl-keyfile", str(key)],
        env={**os.environ, "VLLM_API_KEY": "k"})
    replica = d.replicas[0]
    try:
        (Path(replica.folder) / "endpoint.json").write_text(json.dumps({
            "host": "127.0.0.1", "port": port, "job_id": replica.job_id, "run": "0-bench",
            "fingerprint": fingerprint}))
        healthy_at = await first_healthy(port)
        while service.get(d.id).state != "ready":
            await asyncio.sleep(0.01)
        return time.monotonic() - healthy_at
    finally:
        await monitor.stop()
        stop_process_group(engine, grace=5)


async def first_healthy(port: int) -> float:
    import ssl
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
            writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status = (await reader.readline()).split()
            writer.close()
            if len(status) > 1 and status[1] == b"200":
                return time.monotonic()
        except OSError:
            pass
        await asyncio.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        now = asyncio.run(queued_day(Path(tmp) / "now", args.hours, previous_policy=False))
        old = asyncio.run(queued_day(Path(tmp) / "old", args.hours, previous_policy=True))
        delays = [asyncio.run(noticed_after(Path(tmp) / f"n{i}")) for i in range(args.trials)]
    print(f"| 3 deployments queued for {args.hours:g} h | previous (0.5 s while queued) | "
          "now |")
    print("|---|---|---|")
    print(f"| scheduler queries in all | {old['queries']} | {now['queries']} |")
    print(f"| most queries in any 30 s (the first minutes poll fast) | {old['most_per_30s']} | "
          f"{now['most_per_30s']} |")
    print(f"| most queries in any 30 s after the first 5 minutes | {old['settled_per_30s']} | "
          f"{now['settled_per_30s']} |")
    print(f"| engine healthy -> deployment ready, {args.trials} trials (median, max) | | "
          f"{statistics.median(delays):.2f} s, {max(delays):.2f} s |")


if __name__ == "__main__":
    main()
