"""The ``%%osire chat`` conversation: the cell filled in from the notebook's variables, sent with
the messages so far, the answer streamed to an ``Answer`` (the magics show it, as plain text).
``openai`` is imported (through the client) at the first message only.
"""
from __future__ import annotations

import string
from typing import Any, Callable, Optional, Protocol

from .commands import Usage


class Answer(Protocol):
    """Where the answer is shown as it arrives (a notebook display, or a terminal)."""

    def add(self, delta: str) -> None: ...

    def finish(self, reply: str, interrupted: bool = False) -> None: ...


class Chat:
    """The messages of one notebook's conversation, and the OpenAI client made for it."""

    def __init__(self, make_openai: Callable[[], Any]) -> None:
        self.messages: list[dict[str, str]] = []
        self._make_openai = make_openai
        self._openai: Any = None

    def start(self, system: Optional[str], keep: bool) -> None:
        """A new conversation, or (``keep``) the last one, with ``system`` as its system prompt."""
        if not keep:
            self.messages = [{"role": "system", "content": system}] if system else []
        elif system:
            self.messages = [{"role": "system", "content": system},
                             *(m for m in self.messages if m["role"] != "system")]

    def ask(self, model: str, text: str, out: Answer, **params: Any) -> str:
        """The answer to ``text``, streamed into ``out``. Interrupted, the partial answer is
        returned and the conversation stays as it was."""
        messages = [*self.messages, {"role": "user", "content": text}]
        if self._openai is None:
            self._openai = self._make_openai()
        stream = self._openai.chat.completions.create(
            model=model, messages=messages, stream=True,
            **{k: v for k, v in params.items() if v is not None})
        answer = []
        try:
            for chunk in stream:
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    answer.append(delta)
                    out.add(delta)
        except KeyboardInterrupt:
            stream.close()
            out.finish("".join(answer), interrupted=True)
            return "".join(answer)
        reply = "".join(answer)
        out.finish(reply)
        self.messages = [*messages, {"role": "assistant", "content": reply}]
        return reply


def interpolate(text: str, namespace: dict[str, Any]) -> str:
    """``{name}`` (and ``{name.attr}``, ``{name[0]}``, ``{x:.2f}``) from the user's namespace."""
    try:
        return string.Formatter().vformat(text, (), _Namespace(namespace))
    except KeyError as exc:
        raise Usage(f"%%osire chat: {{{exc.args[0]}}} is not a variable of this notebook "
                    "(write {{ and }} for literal braces)") from None
    except (ValueError, IndexError, AttributeError) as exc:
        raise Usage(f"%%osire chat: cannot fill in the cell's {{...}}: {exc} "
                    "(write {{ and }} for literal braces)") from None


class _Namespace(dict[str, Any]):
    def __init__(self, namespace: dict[str, Any]) -> None:
        super().__init__()
        self.namespace = namespace

    def __getitem__(self, key: str) -> Any:
        return self.namespace[key]


def openai_problem(exc: Exception) -> Optional[str]:
    """An error of the openai SDK as one readable line (None when it is not one)."""
    if type(exc).__module__.split(".")[0] != "openai":
        return None
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        message = body.get("message") or (body.get("error") or {}).get("message")
        if message:
            status = getattr(exc, "status_code", None)
            return f"{message}" + (f" ({status})" if status else "")
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
