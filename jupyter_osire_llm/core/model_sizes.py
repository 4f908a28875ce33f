"""Catalog models' sizes against the site's GPU types: the listing's ``size`` and the check a
launch passes before anything is submitted (``sizing/`` does the reading and the arithmetic)."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from ..errors import RequestError
from ..schedulers.base import Resources
from ..sizing.fit import UTILIZATION, GpuType, options, refusal, summary
from ..sizing.model_size import ModelSize, SizeCache
from .catalog import ModelEntry


class ModelSizes:
    def __init__(self, gpu_types: Optional[Mapping[str, GpuType]] = None,
                 cache: Optional[SizeCache] = None) -> None:
        self.gpu_types = dict(gpu_types or {})
        self.cache = cache or SizeCache()

    def of(self, entry: ModelEntry) -> ModelSize:
        """The model's size as its engine args serve it (read once, again when files change)."""
        return self.cache.get(entry.model, entry.engine_args)

    def describe(self, entry: ModelEntry) -> dict[str, Any]:
        """The listing's ``size``: ``{parameters, weight_bytes, kv_bytes_per_token, min_gpus,
        options, summary}``, fields the files do not give left out."""
        size = self.of(entry)
        doc = size.public()
        found = options(size, self.gpu_types, _utilization(entry))
        if found:
            doc["min_gpus"] = found[0].gpus
            doc["options"] = [o.public() for o in found]
        text = summary(size, found, self.gpu_types)
        if text:
            doc["summary"] = text
        return doc

    def check(self, entry: ModelEntry, wanted: Resources) -> None:
        """Refuse (400, ``param: resources.gpus``) GPUs that cannot hold the model."""
        why = refusal(self.of(entry), wanted.gpus * max(1, wanted.nodes), wanted.gpu_type,
                      self.gpu_types, _utilization(entry))
        if why:
            raise RequestError(f"model {entry.name!r} does not fit: {why}", field="resources.gpus")


def _utilization(entry: ModelEntry) -> float:
    value = entry.engine_args.get("gpu-memory-utilization")
    try:
        share = float(value) if value is not None and not isinstance(value, bool) else UTILIZATION
    except (TypeError, ValueError):
        return UTILIZATION
    return share if 0 < share <= 1 else UTILIZATION
