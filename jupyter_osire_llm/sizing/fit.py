"""Which GPUs hold a model: the site's GPU types against a model's size.

A request holds a model when its GPUs' usable memory (``gpu-memory-utilization`` of each, 0.9 by
default as in vLLM) takes the weights plus the KV cache for the context the engine makes room
for: vLLM refuses to start otherwise. Tensor parallel sizes must divide the attention heads; past
one node, whole nodes are added (pipeline parallel across them).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .model_size import ModelSize

UTILIZATION = 0.9
MAX_GPUS = 4096
_BYTES = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


@dataclass(frozen=True)
class GpuType:
    name: str                          # the Slurm GRES type (gpu:<name>:N)
    memory: int                        # bytes per GPU
    per_node: Optional[int] = None     # GPUs of this type on one node
    memory_text: str = ""              # as the site wrote it ("80G")

    @property
    def label(self) -> str:
        return f"{self.name.upper()} {self.memory_text or _gb(self.memory)}"


@dataclass(frozen=True)
class Option:
    """The smallest request of one GPU type that holds the model."""

    gpu_type: str
    gpus: int
    nodes: int
    context_tokens: Optional[int]       # KV-cache room left, in tokens, at that size

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


def parse_gpu_types(raw: Any) -> dict[str, GpuType]:
    """``{"a100": {"memory": "80G", "per_node": 4}}``; ValueError naming the bad field."""
    if not isinstance(raw, Mapping):
        raise ValueError("gpu_types: must be a mapping of GRES type -> {memory, per_node}")
    types = {}
    for name, spec in raw.items():
        where = f"gpu_types.{name}"
        if not isinstance(spec, Mapping) or set(spec) - {"memory", "per_node"}:
            raise ValueError(f"{where}: must be a mapping with 'memory' and optional 'per_node'")
        per_node = spec.get("per_node")
        if per_node is not None and (isinstance(per_node, bool) or not isinstance(per_node, int)
                                     or per_node < 1):
            raise ValueError(f"{where}.per_node: must be a whole number of GPUs, got {per_node!r}")
        memory = spec.get("memory")
        types[str(name)] = GpuType(str(name), parse_bytes(memory, f"{where}.memory"), per_node,
                                   str(memory).strip())
    return types


def parse_bytes(value: Any, where: str) -> int:
    """``80G``, ``40GB``, ``81920M``, ``1.5T`` (binary units) or a number of bytes."""
    match = _BYTES.fullmatch(str(value).strip()) if value is not None else None
    if not match or isinstance(value, bool) or float(match.group(1)) <= 0:
        raise ValueError(f"{where}: must be a size such as 80G, got {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def needed_bytes(size: ModelSize) -> Optional[int]:
    if size.weight_bytes is None:
        return None
    return size.weight_bytes + (size.kv_bytes_per_token or 0) * (size.context or 0)


def smallest(size: ModelSize, gpu: GpuType, utilization: float = UTILIZATION) -> Optional[Option]:
    """The fewest GPUs of ``gpu`` that hold the model, or None (size unknown, or too big)."""
    need = needed_bytes(size)
    if need is None:
        return None
    per_node = gpu.per_node or MAX_GPUS
    for gpus in _counts(per_node, size.heads):
        if gpus * gpu.memory * utilization >= need:
            return Option(gpu.name, gpus, -(-gpus // per_node),
                          _context_left(size, gpus * gpu.memory * utilization))
    return None


def _counts(per_node: int, heads: Optional[int]) -> list[int]:
    """GPU counts worth trying: within a node, tensor-parallel sizes that divide the heads;
    beyond it, whole nodes."""
    within = [n for n in range(1, min(per_node, MAX_GPUS) + 1)
              if not heads or heads % n == 0]
    tp = max(within)
    nodes = [tp * k for k in range(2, MAX_GPUS // per_node + 1)] if per_node < MAX_GPUS else []
    return within + nodes


def _context_left(size: ModelSize, usable: float) -> Optional[int]:
    if not size.kv_bytes_per_token or size.weight_bytes is None:
        return None
    return max(0, int((usable - size.weight_bytes) // size.kv_bytes_per_token))


def options(size: ModelSize, gpu_types: Mapping[str, GpuType],
            utilization: float = UTILIZATION) -> list[Option]:
    """The smallest request of each GPU type that holds the model, fewest GPUs first."""
    found = [o for o in (smallest(size, t, utilization) for t in gpu_types.values()) if o]
    return sorted(found, key=lambda o: (o.gpus, o.gpu_type))


def summary(size: ModelSize, found: list[Option], gpu_types: Mapping[str, GpuType]) -> str:
    """"141.1 GB of weights: 2 x H100 80G, or 1 node of 4 x A100 40G"."""
    if size.weight_bytes is None:
        return ""
    head = f"{_gb(size.weight_bytes)} of weights"
    if not found:
        return head + (": more than any request of the site's GPU types holds" if gpu_types
                       else "")
    return head + ": " + ", or ".join(_request_text(o, gpu_types[o.gpu_type]) for o in found)


def _request_text(option: Option, gpu: GpuType) -> str:
    if option.nodes > 1 and gpu.per_node:
        return f"{option.nodes} nodes of {gpu.per_node} x {gpu.label}"
    return f"{option.gpus} x {gpu.label}"


def refusal(size: ModelSize, gpus: int, gpu_type: Optional[str],
            gpu_types: Mapping[str, GpuType], utilization: float = UTILIZATION) -> Optional[str]:
    """Why ``gpus`` GPUs (of ``gpu_type``, or of any type the site has) cannot hold the model,
    or None when they can or nobody can tell (no GPUs asked, size or GPU memory unknown)."""
    need = needed_bytes(size)
    if gpu_type:
        types = [gpu_types[gpu_type]] if gpu_type in gpu_types else []
    else:
        types = list(gpu_types.values())
    if not gpus or need is None or not types:
        return None
    if any(gpus * t.memory * utilization >= need for t in types):
        return None
    best = max(types, key=lambda t: t.memory)
    kv = f" + {_gb(need - (size.weight_bytes or 0))} of KV cache for {size.context} tokens" \
        if need > (size.weight_bytes or 0) else ""
    wanted = [o for o in (smallest(size, t, utilization) for t in types) if o]
    ask = ("ask for " + " or ".join(f"{o.gpus} x {gpu_types[o.gpu_type].label}" for o in wanted)
           if wanted else "no request of these GPU types holds it")
    return (f"{gpus} x {best.label} hold {_gb(gpus * best.memory * utilization)} at "
            f"{utilization:.0%} use, but the model needs {_gb(size.weight_bytes or 0)} of "
            f"weights{kv}: {ask}, lower engine_args max-model-len, or send \"force\": true to "
            "launch anyway")


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n < 1e12 else f"{n / 1e12:.2f} TB"
