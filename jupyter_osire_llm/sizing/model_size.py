"""One model's size as an engine would load it: parameters, weight bytes in the dtype or
quantization in use, KV-cache bytes per token and the context the engine will ask room for.

The dtype follows vLLM's rules: ``engine_args.dtype`` when set (not ``auto``), else the config's,
with float32 checkpoints served in bfloat16; a quantized checkpoint (a ``quantization_config``,
packed integer tensors, GGUF) takes the bytes its files hold. ``engine_args.kv-cache-dtype``
(fp8) halves the KV cache; ``engine_args.max-model-len`` caps the context.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .architecture import (Shape, dtype_size, kv_bytes_per_token, parameters, shape_from_config,
                           shape_from_gguf)
from .model_files import ModelFiles, ModelFilesError, read_model_files

PACKED = {"I32", "U32", "I8", "U8", "F8_E4M3", "F8_E5M2"}


@dataclass(frozen=True)
class ModelSize:
    parameters: Optional[int] = None
    weight_bytes: Optional[int] = None
    kv_bytes_per_token: Optional[int] = None
    context: Optional[int] = None         # tokens the engine makes room for (max-model-len)
    heads: Optional[int] = None           # tensor parallel sizes must divide it
    dtype: str = ""
    note: str = ""                        # why something is unknown (files unreadable...)

    def public(self) -> dict[str, Any]:
        """``{parameters, weight_bytes, kv_bytes_per_token, ...}``, unknown fields left out."""
        return {k: v for k, v in vars(self).items() if v not in (None, "") and k != "heads"}


def size_model(path: str, engine_args: Mapping[str, Any]) -> ModelSize:
    """The size of the model at ``path`` (folder or .gguf) served with ``engine_args``; a model
    that cannot be sized gets a ModelSize with only a note."""
    try:
        files = read_model_files(path)
    except ModelFilesError as exc:
        return ModelSize(note=f"size unknown: {exc}")
    shape = shape_from_gguf(files.gguf) if files.kind == "gguf" else shape_from_config(files.config)
    weight_bytes, dtype, count = _weights(files, shape, engine_args)
    context = _int_arg(engine_args, "max-model-len") or (shape.context if shape else None)
    kv = None
    if shape:
        kv_dtype = str(engine_args.get("kv-cache-dtype") or "auto")
        kv_size = dtype_size(kv_dtype) if kv_dtype != "auto" else \
            dtype_size(dtype) or dtype_size(_served_dtype(shape.dtype))
        kv = kv_bytes_per_token(shape, kv_size or 2)
    notes = [] if shape else ["the config's layout is not one known here: no KV-cache size"]
    if weight_bytes is None:
        notes.append("no weight files or index found: weight size unknown")
    return ModelSize(parameters=count, weight_bytes=weight_bytes, kv_bytes_per_token=kv,
                     context=context or None, heads=shape.heads if shape else None,
                     dtype=dtype, note="; ".join(notes))


def _weights(files: ModelFiles, shape: Optional[Shape],
             engine_args: Mapping[str, Any]) -> tuple[Optional[int], str, Optional[int]]:
    """(weight bytes, the dtype they are in, parameter count)."""
    tensors = files.tensors
    formula = parameters(shape) if shape else None
    count = tensors.parameters if tensors and tensors.parameters else formula
    quantization = files.config.get("quantization_config")
    if files.kind == "gguf" or quantization or (tensors and tensors.dtypes & PACKED):
        method = "gguf" if files.kind == "gguf" else \
            str((quantization or {}).get("quant_method", "packed"))
        if quantization or files.kind == "gguf":
            count = formula or (count if files.kind == "gguf" else None)
        return (tensors.stored_bytes if tensors else None), f"quantized ({method})", count
    wanted = str(engine_args.get("dtype") or "auto")
    dtype = wanted if wanted != "auto" else _served_dtype(shape.dtype if shape else "")
    size = dtype_size(dtype)
    if count is None and tensors and tensors.stored_bytes:   # only an index: convert its bytes
        stored = dtype_size(shape.dtype if shape else "") or 2
        count = tensors.stored_bytes // stored
    return (count * size if count and size else None), dtype, count


def _served_dtype(config_dtype: str) -> str:
    """vLLM's ``auto``: the config's dtype, but float32 checkpoints run in bfloat16."""
    name = (config_dtype or "bfloat16").lower().replace("torch.", "")
    return "bfloat16" if name in ("float32", "float") else name


def _int_arg(engine_args: Mapping[str, Any], name: str) -> Optional[int]:
    value = engine_args.get(name)
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


class SizeCache:
    """Sizes by (path, engine args), read again when the folder or its config changes."""

    def __init__(self) -> None:
        self._sizes: dict[tuple[str, str], tuple[tuple[float, ...], ModelSize]] = {}
        self._lock = threading.Lock()

    def get(self, path: str, engine_args: Mapping[str, Any]) -> ModelSize:
        key = (path, repr(sorted(engine_args.items())))
        stamp = _stamp(path)
        with self._lock:
            cached = self._sizes.get(key)
        if cached and cached[0] == stamp:
            return cached[1]
        size = size_model(path, engine_args)
        with self._lock:
            self._sizes[key] = (stamp, size)
        return size


def _stamp(path: str) -> tuple[float, ...]:
    stamps = []
    for name in (path, os.path.join(path, "config.json")):
        try:
            stamps.append(os.stat(name).st_mtime)
        except OSError:
            stamps.append(-1.0)
    return tuple(stamps)
