"""A damaged state file is moved aside and its readable rows kept (issue 17, item 10), on real
SQLite files damaged the ways files get damaged: not SQLite at all, truncated, a page overwritten.
The server-level test (a deployment on real Slurm still watched) is in
tests/deployments/test_corrupt_state.py."""
from __future__ import annotations

import json
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
    keep = Deployment(id="keep", model="m", created=1.0, resources={},
                      replicas=(Replica(0, "/f", job_id="5"),))
    assert store.insert("deployments", keep.id, keep.created, keep.to_doc())
    for i in range(files):
        store.insert("files", f"file-{i:04d}", float(i), {"id": f"file-{i:04d}",
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
            db.execute("SELECT doc FROM records").fetchall()
    store = Store(path)
    assert [r.id for r in store.load("deployments")] == ["keep"]
    kept_files = len(store.load("files"))
    assert 100 < kept_files < 200                     # the pages that were there
    [problem] = store.problems
    assert f"the state file {path} is damaged" in problem and "malformed" in problem
    assert "deployments: 1 row(s)" in problem and f"files: {kept_files} row(s)" in problem
    assert "rows of records on damaged pages could not be read" in problem
    [old] = aside(path)
    assert old.read_bytes() == before and str(old) in problem   # kept, as it was, for the admin
    assert not list(tmp_path.glob("*.padded"))
    assert store.insert("deployments", "new", 2.0, {"id": "new"})
    store.close()
    again = Store(path)                               # the new file is sound: nothing to say
    assert again.problems == [] and set(again.versions("deployments")) == {"keep", "new"}
    again.close()


def test_a_file_that_is_not_sqlite_is_moved_aside_and_a_new_one_started(tmp_path):
    path = filled(tmp_path / "state.sqlite")
    before = damage(path, "not-sqlite")
    store = Store(path)
    assert store.load("deployments") == []
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
    holder.execute("DELETE FROM records")
    try:
        assert state_recovery._damage(path) is None
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert aside(path) == []


def test_unreadable_rows_are_skipped_and_reported(tmp_path):
    path = filled(tmp_path / "state.sqlite", files=1)
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO records (kind, id, created, doc, version) "
                   "VALUES ('deployments', 'bad', 2.0, '{not json', 1)")
    store = Store(path)
    assert [r.id for r in store.load("deployments")] == ["keep"]
    assert store.problems and "deployment bad: unreadable record skipped" in store.problems[0]
    assert aside(path) == []               # a bad row is no reason to move the file
    store.close()


def test_a_damaged_file_of_the_old_schema_keeps_its_rows_and_is_migrated(tmp_path):
    """The rows are salvaged into the tables the file had; the store then migrates them."""
    from test_store import OLD_SCHEMA
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        keep = Deployment(id="keep", model="m", created=1.0, resources={},
                          replicas=(Replica(0, "/f", job_id="5"),))
        db.execute("INSERT INTO deployments (id, model, state, created, doc, version) "
                   "VALUES ('keep', 'm', 'queued', 1.0, ?, 4)",
                   (json.dumps({**keep.to_doc(), "version": 4}),))
        for i in range(200):
            db.execute("INSERT INTO files VALUES (?, ?, 1, ?)",
                       (f"file-{i:04d}", float(i), json.dumps({"id": f"file-{i:04d}",
                                                               "pad": "x" * 1500})))
    damage(path, "truncated")
    store = Store(path)
    [record] = store.load("deployments")
    assert Deployment.from_doc(record.doc, record.version) == \
        Deployment(**{**vars(keep), "version": 4})
    kept_files = len(store.load("files"))
    assert 100 < kept_files < 200
    [problem] = store.problems
    assert "deployments: 1 row(s)" in problem and f"files: {kept_files} row(s)" in problem
    assert "rows of files on damaged pages could not be read" in problem
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
