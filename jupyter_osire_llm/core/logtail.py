"""The tail of a job's log, for display: bounded and linear whatever the log looks like.

A job log can be large and have few newlines: progress bars (tqdm, vLLM's weight loading) rewrite
one line with carriage returns for minutes. ``read_tail`` reads backwards in growing blocks,
never copying what it has already read, and stops after ``max_bytes`` (a few MiB) whatever it
has found; each line is shown as a terminal shows it: the text after its last carriage return
(the bar's latest state), at most ``max_line`` characters of it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

#: Most bytes read from the end of a log.
MAX_BYTES = 4 * 1024 * 1024
#: Most characters shown of one line (its end: a cut line is only known by its end).
MAX_LINE = 8192
#: First read; each further read doubles, up to MAX_BLOCK (few reads, nothing read twice).
BLOCK = 8 * 1024
MAX_BLOCK = 1024 * 1024


def read_tail(path: Union[str, Path], lines: int, max_bytes: int = MAX_BYTES,
              max_line: int = MAX_LINE, block: int = BLOCK) -> str:
    """The last ``lines`` lines of the file at ``path`` as displayed ("" if it cannot be read).

    Lines end at "\\n" (a "\\r\\n" too); within a line, "\\r" goes back to its start, so only the
    text after the last one shows. A line cut by the ``max_bytes`` window is dropped unless it is
    all there is (a single huge progress line), and then only its end shows."""
    if lines <= 0:
        return ""
    chunks: list[bytes] = []
    newlines = 0
    try:
        with open(path, "rb") as f:
            end = pos = f.seek(0, 2)
            while pos > 0 and end - pos < max_bytes and newlines <= lines:
                step = min(block, pos, max_bytes - (end - pos))
                pos -= step
                f.seek(pos)
                chunk = f.read(step)
                newlines += chunk.count(b"\n")
                chunks.append(chunk)
                block = min(block * 2, MAX_BLOCK)
    except OSError:
        return ""
    rows = b"".join(reversed(chunks)).decode("utf-8", "replace").split("\n")
    if rows and rows[-1] == "":
        rows.pop()                      # the file ends with a newline
    if pos > 0 and len(rows) > 1:
        rows = rows[1:]                 # the first row started before the window
    return "\n".join(displayed(row, max_line) for row in rows[-lines:])


def displayed(row: str, max_line: int = MAX_LINE) -> str:
    """One line as a terminal leaves it: after its last carriage return, at most ``max_line``
    characters (the end)."""
    row = row.rstrip("\r")
    row = row[row.rfind("\r") + 1:]
    return row if len(row) <= max_line else "…" + row[-(max_line - 1):]


#: The other ranks of a replica across nodes log to ``rank-N.log`` in its folder (engine.sh.j2).
MAX_RANKS = 64


def rank_logs(folder: Path, lines: int) -> list[tuple[int, str]]:
    """``(rank, last lines)`` of each other rank's log in a job folder, by rank; none for a
    single-node replica."""
    found = []
    for path in folder.glob("rank-*.log"):
        rank = path.stem.removeprefix("rank-")
        if rank.isdigit():
            found.append((int(rank), path))
    return [(rank, read_tail(path, lines)) for rank, path in sorted(found)[:MAX_RANKS]]
