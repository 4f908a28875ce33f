"""A damaged state file is moved aside and its readable rows kept (issue 17, item 10), on real
SQLite files damaged the ways files get damaged: not SQLite at all, truncated, a page overwritten.
The server-level test (a deployment on real Slurm still watched) is in
tests/deployments/test_corrupt_state.py."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from jupyter_osire_llm.core import state_recovery
from jupyter_osire_llm.deployments.states import Deployment, Replica
from jupyter_osire_llm.core.store import Store

PAGE = 4096


def filled(path: Path, files: int = 200) -> Path:
    """A state file with one deployment (first, so on the first pages) and many file records."""
    store = Store(path)
    assert store.save(Deployment(id="keep", model="m", created=1.0, resources={},
                                 replicas=(Replica(0, "/f", job_id="5"),)))
    for i in range(files):
        store.insert_doc("files", f"file-{i:04d}", float(i), {"id": f"file-{i:04d}",
                                                               "pad": "x" * 1500})
    store.close()
    return path


def damage(path: Path, kind: str) -> bytes:
    data = bytearray(path.read_bytes())
    if kind == "not-sqlite":
        data = bytearray(b"this was never a database\n" * 500)
    elif kind == "truncated":
        data = data[:len(data) - 20 * PAGE]
    elif kind == "overwritten-page":
        at = (len(data) // PAGE - 30) * PAGE
        data[at:at + PAGE] = os.urandom(PAGE)
    path.write_bytes(bytes(data))
    return bytes(data)


def aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(path.name + ".corrupt-*"))


@pytest.mark.parametrize("kind", ["truncated", "overwritten-page"])
def test_a_malformed_file_is_moved_aside_and_its_readable_rows_kept(tmp_path, kind):
    path = filled(tmp_path / "state.sqlite")
    before = damage(path, kind)
    with pytest.raises(sqlite3.DatabaseError, match="malformed"):
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA quick_check").fetchall()
            db.execute("SELECT doc FROM files").fetchall()
    store = Store(path)
    assert [d.id for d in store.load_all()] == ["keep"]
    kept_files = len(store.load_docs("files"))
    assert 100 < kept_files < 200                     # the pages that were there
    [problem] = store.problems
    assert f"the state file {path} is damaged" in problem and "malformed" in problem
    assert "deployments: 1 row(s)" in problem and f"files: {kept_files} row(s)" in problem
    assert "rows of files on damaged pages could not be read" in problem
    [old] = aside(path)
    assert old.read_bytes() == before and str(old) in problem   # kept, as it was, for the admin
    assert not list(tmp_path.glob("*.padded"))
    assert store.save(Deployment(id="new", model="m", created=2.0, resources={}, replicas=()))
    store.close()
    again = Store(path)                               # the new file is sound: nothing to say
    assert again.problems == [] and {d.id for d in again.load_all()} == {"keep", "new"}
    again.close()


def test_a_file_that_is_not_sqlite_is_moved_aside_and_a_new_one_started(tmp_path):
    path = filled(tmp_path / "state.sqlite")
    before = damage(path, "not-sqlite")
    store = Store(path)
    assert list(store.load_all()) == []
    [problem] = store.problems
    assert "is not an SQLite database (file is not a database)" in problem
    assert "scancel them by hand" in problem
    [old] = aside(path)
    assert old.read_bytes() == before and oct(path.stat().st_mode & 0o777) == "0o600"
    store.close()


def test_a_sound_file_and_a_busy_one_are_left_alone(tmp_path):
    path = filled(tmp_path / "state.sqlite", files=3)
    store = Store(path)
    assert store.problems == [] and aside(path) == []
    store.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")      # another server in the middle of a write
    holder.execute("DELETE FROM files")
    try:
        assert state_recovery._damage(path) is None
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert aside(path) == []


def test_unreadable_rows_are_skipped_and_reported(tmp_path):
    path = filled(tmp_path / "state.sqlite", files=1)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO deployments (id, model, state, created, doc, version) "
                   "VALUES ('bad', 'm', 'ready', 2.0, '{not json', 1)")
    store = Store(path)
    assert [d.id for d in store.load_all()] == ["keep"]
    assert store.problems and "deployment bad: unreadable record skipped" in store.problems[0]
    assert aside(path) == []               # a bad row is no reason to move the file
    store.close()
