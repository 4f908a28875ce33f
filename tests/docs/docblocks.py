"""The fenced code blocks of the docs' Markdown pages, with the test comment before each.

A block is exercised according to the MyST comment on the line before it (blank lines between
are allowed): ``% test: run`` (run it), ``% test: run-repo`` (run it in the repository's root),
``% test: catalog``, ``% test: config``, ``% test: usage cli|magics``, ``% test: mirror
tests/x.py::name ...`` (a test does what it shows). A ``text`` block without a comment is output
or a diagram. Directives (```{toctree}, ```{image}, ```{include} ...) are not code.
See docs/developers/docs.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*% test: (?P<spec>\S.*?)\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int            # 1-based line of the opening fence
    lang: str
    text: str
    spec: Optional[str]

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"

    @property
    def kind(self) -> str:
        return (self.spec or "").split()[0] if self.spec else ""

    @property
    def args(self) -> list[str]:
        return (self.spec or "").split()[1:]


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)


def blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m.group("indent"), m.group("fence"), m.group("info").strip()
        body, j = [], i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
                break
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j])
            j += 1
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = MARKER.match(lines[k]) if k >= 0 else None
        lang = info.split()[0] if info else ""
        if lang.startswith("{"):
            directive = lang[1:-1]
            lang = info.split()[1] if directive in ("code-block", "code") and \
                len(info.split()) > 1 else ""
            if not lang:                     # a directive, not code
                i = j + 1
                continue
        yield Block(page, i + 1, lang, "\n".join(body) + "\n",
                    marker.group("spec") if marker else None)
        i = j + 1


def all_blocks() -> list[Block]:
    return [b for page in pages() for b in blocks(page)]
