"""HTTP handlers: /osire/api (REST) and /osire/v1 (OpenAI proxy). Thin; the core does the work."""
from __future__ import annotations

from .api import API_HANDLERS


def default_handlers() -> list[tuple]:
    handlers = list(API_HANDLERS)
    try:
        from .openai import OPENAI_HANDLERS
    except ImportError:  # the proxy handlers are optional while they are being built
        return handlers
    return handlers + list(OPENAI_HANDLERS)
