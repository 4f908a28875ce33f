"""HTTP handlers: /osire/api (REST), /osire/v1 (OpenAI proxy; files and batches). Thin; the core
does the work."""
from __future__ import annotations

from .api import API_HANDLERS
from .batches import BATCH_HANDLERS
from .openai import OPENAI_HANDLERS
from .switched_off import SwitchedOffHandler
from .usage import USAGE_HANDLERS

__all__ = ["SwitchedOffHandler", "default_handlers"]


def default_handlers() -> list[tuple]:
    return [*API_HANDLERS, *USAGE_HANDLERS, *BATCH_HANDLERS, *OPENAI_HANDLERS]   # before /osire/v1/(.*)
