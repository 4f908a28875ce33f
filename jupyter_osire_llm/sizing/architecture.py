"""Parameter and KV-cache counts of decoder-only transformers from their ``config.json`` (or a
GGUF file's metadata), for the families whose layout is known here.

The counts follow the layers each family's modelling code builds: embeddings (and an untied
output head), per layer the attention projections (with their biases where the family has
them), a gated MLP or a mixture of experts (router, experts, shared expert) and two norms, and
the final norm. Checked against published counts (Llama 3 8B/70B, Mixtral 8x7B, Qwen1.5-MoE) and
against the real small model's safetensors headers in tests/sizing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

#: Families with a Llama-like layout (gated MLP, RMSNorm, q/k/v/o projections).
LLAMA_LIKE = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe",
              "granite", "olmo2", "smollm3"}
#: Families whose q, k and v projections always carry a bias.
QKV_BIAS = {"qwen2", "qwen2_moe"}
#: Families with a per-head norm on q and k.
QK_NORM = {"qwen3", "qwen3_moe", "olmo2"}
DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "fp8": 1,
               "fp8_e4m3": 1, "fp8_e5m2": 1, "float8_e4m3fn": 1, "int8": 1}


@dataclass(frozen=True)
class Shape:
    """The numbers a size needs, whatever file they came from."""

    family: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int = 0
    intermediate: int = 0
    tied: bool = False
    experts: int = 0
    expert_intermediate: int = 0
    shared_intermediate: int = 0
    dense_layers: int = 0          # DeepSeek-style first_k_dense_replace
    context: int = 0               # max_position_embeddings
    dtype: str = ""                # what the config says the weights are


def shape_from_config(config: Mapping[str, Any]) -> Optional[Shape]:
    """The shape of a Hugging Face config, or None when its layout is not one known here."""
    inner = config.get("text_config")   # multimodal models: the language model's part
    text: Mapping[str, Any] = inner if isinstance(inner, Mapping) else config
    family = str(text.get("model_type", config.get("model_type", "")))
    try:
        hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
        shape = Shape(
            family=family, layers=int(text["num_hidden_layers"]), hidden=hidden, heads=heads,
            kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
            vocab=int(text.get("vocab_size") or 0),
            intermediate=int(text.get("intermediate_size") or 0),
            tied=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
            experts=int(text.get("num_local_experts") or text.get("num_experts") or
                        text.get("n_routed_experts") or 0),
            expert_intermediate=int(text.get("moe_intermediate_size") or
                                    text.get("intermediate_size") or 0),
            shared_intermediate=int(text.get("shared_expert_intermediate_size") or 0),
            dense_layers=int(text.get("first_k_dense_replace") or 0),
            context=int(text.get("max_position_embeddings") or 0),
            dtype=str(text.get("torch_dtype") or text.get("dtype") or
                      config.get("torch_dtype") or config.get("dtype") or ""))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    return shape if min(shape.layers, shape.hidden, shape.heads, shape.head_dim) > 0 else None


def shape_from_gguf(meta: Mapping[str, Any]) -> Optional[Shape]:
    """The shape a GGUF file's metadata gives (enough for the KV cache and the context)."""
    arch = str(meta.get("general.architecture", ""))

    def get(key: str, default: Any = 0) -> Any:
        return meta.get(f"{arch}.{key}", default)
    try:
        hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
        kv_heads = get("attention.head_count_kv") or heads
        return Shape(family=arch, layers=int(get("block_count")), hidden=hidden, heads=heads,
                     kv_heads=int(kv_heads if not isinstance(kv_heads, list) else max(kv_heads)),
                     head_dim=int(get("attention.key_length") or hidden // heads),
                     context=int(get("context_length")), experts=int(get("expert_count")))
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def parameters(shape: Shape) -> Optional[int]:
    """The parameter count of a known family's layout; None for others."""
    if shape.family not in LLAMA_LIKE or not shape.vocab or not shape.intermediate:
        return None
    h, d = shape.hidden, shape.head_dim
    attention = h * shape.heads * d + 2 * h * shape.kv_heads * d + shape.heads * d * h
    if shape.family in QKV_BIAS:
        attention += shape.heads * d + 2 * shape.kv_heads * d
    if shape.family in QK_NORM:
        attention += 2 * d
    dense_mlp = 3 * h * shape.intermediate
    moe_mlp = dense_mlp
    if shape.experts:
        moe_mlp = shape.experts * 3 * h * shape.expert_intermediate + h * shape.experts
        if shape.shared_intermediate:
            moe_mlp += 3 * h * shape.shared_intermediate + h   # the shared expert and its gate
    dense = min(shape.dense_layers, shape.layers)
    layers = (shape.layers - dense) * (attention + moe_mlp + 2 * h) + \
        dense * (attention + dense_mlp + 2 * h)
    embeddings = shape.vocab * h * (1 if shape.tied else 2)
    return embeddings + layers + h


def kv_bytes_per_token(shape: Shape, dtype_bytes: int) -> int:
    """Bytes of KV cache one token takes: K and V, per layer, per KV head."""
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * dtype_bytes


def dtype_size(name: str) -> Optional[int]:
    return DTYPE_BYTES.get(name.lower().replace("torch.", "")) if name else None
