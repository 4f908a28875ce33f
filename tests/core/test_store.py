import json
import sqlite3
import stat
from dataclasses import asdict

from jupyter_osire_llm.core.state_schema import SCHEMA_VERSION
from jupyter_osire_llm.core.store import Store
from jupyter_osire_llm.deployments.states import Deployment, Replica


def deployment(**changes) -> Deployment:
    d = Deployment(id="abc", model="m", created=1.0, resources={"gpus": 1},
                   replicas=(Replica(index=0, folder="/j/abc/r0", job_id="12", port=8000),))
    return Deployment(**{**vars(d), **changes})


def test_round_trip_and_permissions(tmp_path):
    path = tmp_path / "osire" / "state.sqlite"
    store = Store(path)
    d = deployment()
    assert store.insert("deployments", d.id, d.created, d.to_doc())
    assert not store.insert("deployments", d.id, d.created, d.to_doc())   # the id is taken
    assert store.save("deployments", d.id, deployment(state="ready").to_doc(), expected=1)
    store.close()
    [record] = Store(path).load("deployments")
    assert Deployment.from_doc(record.doc, record.version) == deployment(state="ready", version=2)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_write_on_a_moved_record_is_refused(tmp_path):
    a, b = Store(tmp_path / "s.sqlite"), Store(tmp_path / "s.sqlite")   # two servers
    assert a.insert("batches", "b1", 1.0, {"id": "b1", "status": "queued"})
    assert b.save("batches", "b1", {"id": "b1", "status": "cancelling"}, expected=1)
    assert not a.save("batches", "b1", {"id": "b1", "status": "failed"}, expected=1)
    assert a.load("batches", ["b1"])[0].doc["status"] == "cancelling"
    assert a.versions("batches") == {"b1": 2} and a.versions("deployments") == {}
    assert not a.delete("batches", "b1", expected=1)                  # moved on meanwhile
    assert a.delete("batches", "b1", expected=2) and a.load("batches") == []


def test_a_check_sees_every_other_record_in_the_write_transaction(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.insert("deployments", "d1", 1.0, {"id": "d1"})
    store.insert("batches", "b1", 2.0, {"id": "b1"})
    seen = []
    store.insert("batches", "b2", 3.0, {"id": "b2"}, check=lambda others: seen.append(others))
    assert seen == [{"deployments": [{"id": "d1"}], "batches": [{"id": "b1"}], "files": []}]


def test_corrupt_records_are_skipped_and_reported(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    store.insert("deployments", "good", 1.0, {"id": "good"})
    db = sqlite3.connect(str(tmp_path / "s.sqlite"))
    db.execute("INSERT INTO records VALUES ('deployments', 'bad', 2.0, 1, '{not json')")
    db.execute("INSERT INTO records VALUES ('deployments', 'odd', 3.0, 1, '[1, 2]')")
    db.commit()
    assert [r.id for r in store.load("deployments")] == ["good"]
    assert len(store.problems) == 2 and "deployment bad: unreadable record skipped" in \
        store.problems[0]


def test_leases(tmp_path):
    a, b = Store(tmp_path / "s.sqlite"), Store(tmp_path / "s.sqlite")
    assert a.claim("monitor", "A", now=100.0, ttl=20)
    assert not b.claim("monitor", "B", now=110.0, ttl=20)       # A holds it
    assert b.holder("monitor", now=110.0) == "A"
    assert b.claim("monitor", "B", now=121.0, ttl=20)           # A stopped renewing
    a.release("monitor", "A")                                    # not A's any more: no effect
    assert a.holder("monitor", now=125.0) == "B"


def test_the_state_file_works_without_wal(tmp_path):
    """WAL needs shared memory between processes, which network file systems do not give."""
    Store(tmp_path / "s.sqlite")
    mode = sqlite3.connect(str(tmp_path / "s.sqlite")).execute("PRAGMA journal_mode").fetchone()
    assert mode == ("delete",)


# The schema of every state file written before the schema had a version (user_version 0), as
# the old store created it (its ALTERs included: the version and epoch columns came later).
OLD_SCHEMA = """
CREATE TABLE deployments (id TEXT PRIMARY KEY, model TEXT NOT NULL, state TEXT NOT NULL,
                          created REAL NOT NULL, doc TEXT NOT NULL);
CREATE INDEX deployments_state ON deployments(state);
CREATE TABLE batches (id TEXT PRIMARY KEY, created REAL NOT NULL, version INTEGER NOT NULL,
                      doc TEXT NOT NULL);
CREATE TABLE files (id TEXT PRIMARY KEY, created REAL NOT NULL, version INTEGER NOT NULL,
                    doc TEXT NOT NULL);
CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
ALTER TABLE deployments ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN epoch INTEGER NOT NULL DEFAULT 1;
"""


def old_state_file(path, *, versions: bool = True) -> dict:
    """A state file as the old code wrote it: a typed deployments table, document tables."""
    live = deployment(state="ready", launched_by="old:1:aa")
    ended = deployment(id="old", created=0.5, state="stopped")
    db = sqlite3.connect(str(path))
    db.executescript(OLD_SCHEMA if versions else OLD_SCHEMA.split("ALTER")[0])
    for d, version in ((live, 7), (ended, 2)):
        columns = "(id, model, state, created, doc, version)" if versions else \
            "(id, model, state, created, doc)"
        values = (d.id, d.model, d.state, d.created, json.dumps(asdict(d)), version)
        db.execute(f"INSERT INTO deployments {columns} VALUES (?, ?, ?, ?, ?{', ?' * versions})",
                   values if versions else values[:-1])
    batch = {"id": "batch_1", "status": "in_progress", "model": "m", "created_at": 5}
    db.execute("INSERT INTO batches VALUES ('batch_1', 5.0, 3, ?)", (json.dumps(batch),))
    for i in range(2):
        upload = {"id": f"file-{i}", "object": "file", "bytes": 10, "purpose": "batch"}
        db.execute("INSERT INTO files VALUES (?, ?, 1, ?)", (f"file-{i}", float(i),
                                                              json.dumps(upload)))
    db.execute("INSERT INTO leases VALUES ('monitor:slurm:x', 'old:1:aa', 99.0, 4)"
               if versions else "INSERT INTO leases VALUES ('monitor:slurm:x', 'old:1:aa', 99.0)")
    db.commit()
    db.close()
    return {"live": live, "ended": ended, "batch": batch}


def test_a_state_file_of_the_old_schema_is_migrated_when_opened(tmp_path):
    path = tmp_path / "state.sqlite"
    old = old_state_file(path)
    store = Store(path)
    found = {r.id: r for r in store.load("deployments")}
    assert list(found) == ["old", "abc"]                       # oldest first, as before
    assert Deployment.from_doc(found["abc"].doc, found["abc"].version) == \
        Deployment(**{**vars(old["live"]), "version": 7})
    assert found["old"].version == 2
    assert [(r.id, r.version, r.doc) for r in store.load("batches")] == \
        [("batch_1", 3, old["batch"])]
    assert [r.id for r in store.load("files")] == ["file-0", "file-1"]
    assert store.claim_epoch("monitor:slurm:x", "new", 100.0, ttl=10) == 5   # lease kept
    assert store.problems == []
    store.close()
    db = sqlite3.connect(str(path))
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"records", "leases"}
    db.close()
    again = Store(path)                                        # opened again: nothing to do
    assert again.versions("deployments") == {"abc": 7, "old": 2}


def test_a_state_file_from_before_versions_is_migrated_too(tmp_path):
    path = tmp_path / "state.sqlite"
    old_state_file(path, versions=False)
    store = Store(path)
    assert store.versions("deployments") == {"abc": 0, "old": 0}
    assert store.claim_epoch("monitor:slurm:x", "new", 100.0, ttl=10) == 2
    assert store.save("deployments", "abc", {"id": "abc"}, expected=0)
