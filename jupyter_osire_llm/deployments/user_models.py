"""Users' own model folders (fine-tuned checkpoints) served by a catalog engine.

A site lets users launch a catalog model's engine, resources and settings on a folder of their
own under the prefixes it allows (``c.OsireLLM.user_models``, off when empty). The folder is
checked before anything is submitted: inside an allowed prefix once every symlink is resolved,
readable, with a ``config.json`` the engine understands; the deployment keeps where its weights
came from and a content hash of the config and the weight index, so a result can be reproduced.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional, Sequence

from ..core.catalog import Catalog, ModelEntry
from ..core.private_folder import expand_user
from ..errors import RequestError
from ..sizing.model_files import ModelFilesError, read_model_files

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", re.ASCII)
#: Files whose bytes make the content hash (the weights themselves are named and sized).
HASHED = ("config.json", "model.safetensors.index.json", "generation_config.json")


@dataclass(frozen=True)
class UserModel:
    name: str          # what the OpenAI ``model`` field says
    path: str          # the folder, every symlink resolved
    digest: str        # sha256 of the config, the index and the weight files' names and sizes

    def source(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.digest}


class UserModels:
    def __init__(self, prefixes: Sequence[str] = ()) -> None:
        self.prefixes = [os.path.realpath(expand_user(p)) for p in prefixes if p]

    def entry(self, base: ModelEntry, model_path: Any, name: Any,
              catalog: Catalog) -> tuple[ModelEntry, UserModel]:
        """The catalog entry ``base`` serving the user's folder, and the folder as checked."""
        user = self.check(model_path, name, catalog)
        return replace(base, name=user.name, model=user.path), user

    def check(self, model_path: Any, name: Any, catalog: Catalog) -> UserModel:
        if not self.prefixes:
            raise RequestError("this site does not let users launch their own model folders "
                               "(c.OsireLLM.user_models is empty)", field="model_path")
        if not isinstance(model_path, str) or not model_path.strip() or \
                not model_path.isprintable():
            raise RequestError("'model_path' must be the path of a model folder",
                               field="model_path")
        real = os.path.realpath(expand_user(model_path.strip()))
        if not any(real == p or real.startswith(p.rstrip(os.sep) + os.sep)
                   for p in self.prefixes):
            raise RequestError(f"model_path {model_path!r} is outside the folders this site "
                               f"allows for your own models: {', '.join(self.prefixes)}",
                               field="model_path")
        if not os.path.isdir(real) or not os.access(real, os.R_OK | os.X_OK):
            raise RequestError(f"model_path {model_path!r}: not a folder you can read",
                               field="model_path")
        try:
            files = read_model_files(real)
        except ModelFilesError as exc:
            raise RequestError(f"model_path: {exc}", field="model_path") from None
        if not (files.config.get("architectures") or files.config.get("model_type")):
            raise RequestError(f"model_path {model_path!r}: config.json names no architecture "
                               "or model_type, so no engine can load it", field="model_path")
        return UserModel(self._name(name, real, catalog), real, content_hash(Path(real)))

    @staticmethod
    def _name(name: Any, path: str, catalog: Catalog) -> str:
        chosen = Path(path).name if name is None else name
        if not isinstance(chosen, str) or not _NAME.fullmatch(chosen):
            raise RequestError(f"'name' {chosen!r} must be 1-64 of letters, digits, '_.:-' (the "
                               "name the OpenAI model field will say)", field="name")
        if chosen in catalog.models:
            raise RequestError(f"'name' {chosen!r} is a catalog model's; choose another",
                               field="name")
        return chosen


def content_hash(folder: Path) -> str:
    """sha256 over the config, index and generation config bytes, and each weight file's name
    and size (the weights are too large to read at launch)."""
    digest = hashlib.sha256()
    for name in HASHED:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.gguf")):
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
    return digest.hexdigest()


def entry_of(catalog: Catalog, model: str, base_model: Optional[str],
             source: Optional[dict[str, Any]]) -> Optional[ModelEntry]:
    """The catalog entry a deployment runs: its own, or its base serving the user's folder."""
    entry = catalog.models.get(base_model or model)
    if entry is not None and source:
        return replace(entry, name=model, model=str(source["path"]))
    return entry
