"""read_tail: the end of a job log as displayed, bounded whatever the log looks like."""
from __future__ import annotations

from pathlib import Path

import pytest

from jupyter_osire_llm.core.logtail import displayed, read_tail


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "job.log"
    path.write_bytes(data)
    return path


def test_last_lines(tmp_path):
    path = write(tmp_path, b"".join(b"line %d\n" % i for i in range(1000)))
    assert read_tail(path, 3) == "line 997\nline 998\nline 999"
    assert read_tail(path, 1, block=7) == "line 999"      # blocks smaller than a line


def test_without_final_newline_and_crlf(tmp_path):
    assert read_tail(write(tmp_path, b"a\r\nb\r\nc"), 2) == "b\nc"


def test_short_file_and_more_lines_than_it_has(tmp_path):
    assert read_tail(write(tmp_path, b"only\n"), 50) == "only"
    assert read_tail(write(tmp_path, b""), 5) == ""


def test_missing_file_and_zero_lines(tmp_path):
    assert read_tail(tmp_path / "nope.log", 5) == ""
    assert read_tail(write(tmp_path, b"x\n"), 0) == ""


def test_progress_bar_shows_its_latest_state(tmp_path):
    bar = b"".join(b"\rLoading weights: %3d%%" % i for i in range(101))
    path = write(tmp_path, b"starting engine\n" + bar + b"\nready\n")
    assert read_tail(path, 3) == "starting engine\nLoading weights: 100%\nready"


def test_unfinished_progress_bar_at_the_end(tmp_path):
    path = write(tmp_path, b"starting\n" + b"\r 10%" + b"\r 20%")
    assert read_tail(path, 2) == "starting\n 20%"


def test_window_is_bounded_and_a_cut_first_line_is_dropped(tmp_path):
    path = write(tmp_path, b"x" * 5000 + b"\nlast\n")
    assert read_tail(path, 5, max_bytes=100) == "last"


def test_huge_line_without_any_newline_shows_its_end(tmp_path):
    path = write(tmp_path, b"y" * 50_000 + b"END")
    out = read_tail(path, 10, max_bytes=1000, max_line=50)
    assert out.endswith("END") and out.startswith("…") and len(out) == 50


def test_invalid_utf8_is_replaced(tmp_path):
    assert read_tail(write(tmp_path, b"ok\n\xff\xfe bad\n"), 2) == "ok\n\ufffd\ufffd bad"


def test_a_32_mib_log_without_newlines_reads_only_the_window(tmp_path, monkeypatch):
    """Linear and bounded: the reads stop at max_bytes, each byte read once (no wall clock)."""
    path = write(tmp_path, (b"\r" + b"p" * 99) * (32 * 1024 * 1024 // 100))
    reads: list[int] = []
    import builtins
    real_open = builtins.open

    class Counting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def seek(self, *args):
            return self.f.seek(*args)

        def read(self, n):
            reads.append(n)
            return self.f.read(n)

    monkeypatch.setattr(builtins, "open", lambda *a, **k: Counting(real_open(*a, **k)))
    assert read_tail(path, 30, max_bytes=4 * 1024 * 1024) == "p" * 99
    assert sum(reads) == 4 * 1024 * 1024


@pytest.mark.parametrize("row, shown", [("abc", "abc"), ("a\rb", "b"), ("a\rb\r", "b"),
                                        ("\r", ""), ("x" * 10, "…" + "x" * 4)])
def test_displayed(row, shown):
    assert displayed(row, max_line=5) == shown
