"""jupyter-osire-llm: large language models on HPC clusters, next to your notebooks."""
from __future__ import annotations

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict]:
    from .app import OsireLLM

    return [{"module": "jupyter_osire_llm", "app": OsireLLM}]


def _jupyter_labextension_paths() -> list[dict]:
    return [{"src": "labextension", "dest": "jupyter-osire-llm"}]
