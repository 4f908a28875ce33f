"""HTTP handlers: /osire/api (REST) and /osire/v1 (OpenAI proxy). Thin; the core does the work."""
from __future__ import annotations

from .api import API_HANDLERS
from .openai import OPENAI_HANDLERS


def default_handlers() -> list[tuple]:
    return [*API_HANDLERS, *OPENAI_HANDLERS]
