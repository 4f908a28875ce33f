#!/usr/bin/env python
"""Reading the tail of a job log: the old ``read_tail`` (deployments.py until issue 8) against
``jupyter_osire_llm.core.logtail.read_tail``, in the same run, on the same files.

    python benchmarks/logtail_bench.py            # about 1 minute (old: up to 8 MiB)
    python benchmarks/logtail_bench.py --full     # old also on 32 MiB (minutes: it is quadratic)

Logs: ordinary lines (100 bytes each), and a progress bar that never writes a newline (tqdm's
"\\r" updates) of 1 to 32 MiB. Each case asks for the last 30 lines (what a failed replica shows),
best of 3 (old: 1 run when it takes over 2 s). Prints a table and writes JSON to
benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jupyter_osire_llm.core.logtail import read_tail  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
MIB = 1024 * 1024


def old_read_tail(path: Path, lines: int, block: int = 8192) -> str:
    """The baseline, verbatim from deployments.py before issue 8."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            data = b""
            while size > 0 and data.count(b"\n") <= lines:
                step = min(block, size)
                size -= step
                f.seek(size)
                data = f.read(step) + data
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def make_log(folder: Path, kind: str, size: int) -> Path:
    path = folder / f"{kind}-{size // MIB}MiB.log"
    unit = (b"x" * 99 + b"\n") if kind == "lines" else (b"\rLoading safetensors: " + b"#" * 78)
    with path.open("wb") as f:
        for _ in range(size // MIB):
            f.write(unit * (MIB // len(unit)))
    return path


def timed(fn, path: Path) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        fn(path, 30)
        best = min(best, time.perf_counter() - started)
        if best > 2:
            break
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="old read_tail on 32 MiB too")
    args = parser.parse_args()
    cases = [("lines", 32 * MIB)] + [("progress bar", s * MIB) for s in (1, 2, 4, 8, 32)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, size in cases:
            path = make_log(Path(tmp), kind.split()[0], size)
            new = timed(read_tail, path)
            run_old = args.full or kind == "lines" or size <= 8 * MIB
            old = timed(old_read_tail, path) if run_old else None
            rows.append({"log": kind, "MiB": size // MIB, "old_s": old, "new_s": new})
            path.unlink()
            ratio = f"{old / new:,.1f}x" if old else "-"
            print(f"{kind:>13} {size // MIB:>3} MiB  old {_fmt(old):>10}  new {_fmt(new):>10}  "
                  f"{ratio}", flush=True)
    print("\n| log | size | old read_tail | new read_tail | old / new |\n|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['old_s'] / r['new_s']:,.1f}x" if r["old_s"] else "-"
        print(f"| {r['log']} | {r['MiB']} MiB | {_fmt(r['old_s'])} | {_fmt(r['new_s'])} "
              f"| {ratio} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"logtail-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"\nwritten: {out}")


def _fmt(seconds) -> str:
    if seconds is None:
        return "not run"
    return f"{seconds * 1000:.2f} ms" if seconds < 1 else f"{seconds:.2f} s"


if __name__ == "__main__":
    main()
