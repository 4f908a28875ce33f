"""What a model's files say about its size, read without loading any weights.

- a Hugging Face folder: ``config.json`` plus the safetensors headers (the first 8 + N bytes of
  each shard: every tensor's dtype and shape) or, when the shards are not there, the index's
  ``metadata.total_size``;
- a GGUF file (llama.cpp): its metadata and tensor table.

Files are data from the user's or the site's disk: sizes are capped and every parse error
becomes a ``ModelFilesError`` that says which file and why.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Optional

MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_HEADER_BYTES = 100 * 1024 * 1024     # safetensors refuses headers over 100 MB too
MAX_SHARDS = 4096
MAX_GGUF_ITEMS = 1_000_000
#: Bytes per element of the safetensors dtypes (packed integer weights count as what they store).
SAFETENSORS_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2,
                     "BF16": 2, "I16": 2, "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1,
                     "BOOL": 1}


class ModelFilesError(Exception):
    """The model's files cannot be read or make no sense: the message says which and why."""


@dataclass
class Tensors:
    """What the weight files hold: element count, stored bytes, and the dtypes seen."""

    parameters: int = 0
    stored_bytes: int = 0
    dtypes: set[str] = field(default_factory=set)
    source: str = ""


@dataclass
class ModelFiles:
    config: dict[str, Any] = field(default_factory=dict)
    tensors: Optional[Tensors] = None
    gguf: dict[str, Any] = field(default_factory=dict)   # GGUF metadata (no tensor data)
    kind: str = "huggingface"                             # or "gguf"


def read_model_files(path: str) -> ModelFiles:
    """What the folder (or GGUF file) at ``path`` says about the model."""
    where = Path(path)
    if where.is_file() and where.suffix == ".gguf":
        return _read_gguf_file(where)
    if not where.is_dir():
        raise ModelFilesError(f"{path}: not a folder or .gguf file on this server (a hub id or "
                              "a path only the compute nodes see cannot be sized here)")
    ggufs = sorted(where.glob("*.gguf"))
    if not (where / "config.json").exists() and ggufs:
        return _read_gguf_file(ggufs[0])
    return ModelFiles(config=_read_config(where / "config.json"), tensors=_read_tensors(where))


def _read_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ModelFilesError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ModelFilesError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes, not a model config")
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise ModelFilesError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ModelFilesError(f"{path}: must be a JSON object")
    return config


def _read_tensors(folder: Path) -> Optional[Tensors]:
    """The safetensors shards' headers; else the index's total size; None when neither is there."""
    shards = sorted(folder.glob("*.safetensors"))[:MAX_SHARDS + 1]
    if len(shards) > MAX_SHARDS:
        raise ModelFilesError(f"{folder}: more than {MAX_SHARDS} safetensors files")
    if shards:
        tensors = Tensors(source="safetensors headers")
        for shard in shards:
            _add_header(tensors, shard)
        return tensors
    index = folder / "model.safetensors.index.json"
    if index.exists():
        total = _read_config(index).get("metadata", {}).get("total_size")
        if isinstance(total, int) and not isinstance(total, bool) and total > 0:
            return Tensors(stored_bytes=total, source="safetensors index")
        raise ModelFilesError(f"{index}: no metadata.total_size")
    return None


def _add_header(tensors: Tensors, shard: Path) -> None:
    try:
        with shard.open("rb") as f:
            length = struct.unpack("<Q", _exactly(f, 8, shard))[0]
            if length > MAX_HEADER_BYTES:
                raise ModelFilesError(f"{shard}: header of {length} bytes, not safetensors")
            header = json.loads(_exactly(f, length, shard))
    except OSError as exc:
        raise ModelFilesError(f"{shard}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ModelFilesError(f"{shard}: header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ModelFilesError(f"{shard}: header must be a JSON object")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = str(info["dtype"]), [int(n) for n in info["shape"]]
            start, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelFilesError(f"{shard}: tensor {name!r} has no dtype, shape and "
                                  "data_offsets") from None
        if min(shape, default=0) < 0 or end < start:
            raise ModelFilesError(f"{shard}: tensor {name!r} has a negative size")
        tensors.parameters += math.prod(shape)
        tensors.stored_bytes += end - start
        tensors.dtypes.add(dtype)


def _exactly(f: BinaryIO, n: int, path: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ModelFilesError(f"{path}: ends early (truncated file?)")
    return data


# -- GGUF -----------------------------------------------------------------------------------------

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read_gguf_file(path: Path) -> ModelFiles:
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            return _parse_gguf(f, path, size)
    except OSError as exc:
        raise ModelFilesError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (struct.error, UnicodeDecodeError) as exc:
        raise ModelFilesError(f"{path}: not a readable GGUF file: {exc}") from None


def _parse_gguf(f: BinaryIO, path: Path, size: int) -> ModelFiles:
    """GGUF v2/v3: magic, version, tensor count, metadata count, metadata, tensor table."""
    if _exactly(f, 4, path) != b"GGUF":
        raise ModelFilesError(f"{path}: not a GGUF file (no GGUF magic)")
    version, n_tensors, n_meta = struct.unpack("<IQQ", _exactly(f, 20, path))
    if version not in (2, 3) or n_tensors > MAX_GGUF_ITEMS or n_meta > MAX_GGUF_ITEMS:
        raise ModelFilesError(f"{path}: GGUF version {version} with {n_tensors} tensors is not "
                              "one this reader knows (2 or 3)")
    meta = {}
    for _ in range(n_meta):
        key = _gguf_string(f, path)
        meta[key] = _gguf_value(f, path, struct.unpack("<I", _exactly(f, 4, path))[0])
    tensors, offsets = Tensors(source="GGUF tensor table"), []
    for _ in range(n_tensors):
        _gguf_string(f, path)
        n_dims = struct.unpack("<I", _exactly(f, 4, path))[0]
        if n_dims > 8:
            raise ModelFilesError(f"{path}: a tensor with {n_dims} dimensions")
        dims = struct.unpack(f"<{n_dims}Q", _exactly(f, 8 * n_dims, path))
        ggml_type, offset = struct.unpack("<IQ", _exactly(f, 12, path))
        tensors.parameters += math.prod(dims)
        tensors.dtypes.add(f"ggml:{ggml_type}")
        offsets.append(offset)
    alignment = int(meta.get("general.alignment", 32)) or 32
    data_start = -(-f.tell() // alignment) * alignment
    tensors.stored_bytes = max(0, size - data_start - min(offsets, default=0))
    return ModelFiles(tensors=tensors, gguf=meta, kind="gguf")


def _gguf_string(f: BinaryIO, path: Path) -> str:
    length = struct.unpack("<Q", _exactly(f, 8, path))[0]
    if length > MAX_CONFIG_BYTES:
        raise ModelFilesError(f"{path}: a GGUF string of {length} bytes")
    return _exactly(f, length, path).decode()


def _gguf_value(f: BinaryIO, path: Path, kind: int) -> Any:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, _exactly(f, struct.calcsize(fmt), path))[0]
    if kind == _STRING:
        return _gguf_string(f, path)
    if kind == _ARRAY:
        item_kind, count = struct.unpack("<IQ", _exactly(f, 12, path))
        if count > MAX_GGUF_ITEMS:
            raise ModelFilesError(f"{path}: a GGUF array of {count} items")
        items = [_gguf_value(f, path, item_kind) for _ in range(count)]
        return items if count <= 64 else len(items)   # vocabularies: only their length matters
    raise ModelFilesError(f"{path}: unknown GGUF value type {kind}")
