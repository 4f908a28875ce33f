import stat

from jupyter_osire_llm.deployments.states import Deployment, Replica
from jupyter_osire_llm.core.store import Store


def test_round_trip_and_permissions(tmp_path):
    path = tmp_path / "osire" / "state.sqlite"
    store = Store(path)
    d = Deployment(id="abc", model="m", created=1.0, resources={"gpus": 1},
                   replicas=(Replica(index=0, folder="/j/abc/r0", job_id="12", port=8000),))
    assert store.save(d)
    assert store.save(d.__class__(**{**vars(d), "state": "ready", "version": 1}), expected=0)
    store.close()
    again = list(Store(path).load_all())
    assert again == [d.__class__(**{**vars(d), "state": "ready", "version": 1})]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rows_from_other_versions_load(tmp_path):
    """A file written by an older version (no version column) with fields this one lacks."""
    import json
    import sqlite3
    doc = {"id": "x", "model": "m", "created": 1.0, "resources": {}, "state": "queued",
           "future_field": 1, "replicas": [{"index": 0, "folder": "/f", "new_thing": True}]}
    db = sqlite3.connect(str(tmp_path / "s.sqlite"))
    db.execute("CREATE TABLE deployments (id TEXT PRIMARY KEY, model TEXT NOT NULL, "
               "state TEXT NOT NULL, created REAL NOT NULL, doc TEXT NOT NULL)")
    db.execute("INSERT INTO deployments VALUES ('x', 'm', 'queued', 1.0, ?)", (json.dumps(doc),))
    db.commit()
    store = Store(tmp_path / "s.sqlite")
    (loaded,) = store.load_all()
    assert loaded.id == "x" and loaded.replicas[0].folder == "/f" and loaded.version == 0


def test_a_write_on_a_moved_row_is_refused(tmp_path):
    a, b = Store(tmp_path / "s.sqlite"), Store(tmp_path / "s.sqlite")   # two servers
    d = Deployment(id="abc", model="m", created=1.0, resources={}, replicas=())
    assert a.save(d)
    assert b.save(d.__class__(**{**vars(d), "state": "stopping", "version": 1}), expected=0)
    assert not a.save(d.__class__(**{**vars(d), "state": "ready", "version": 1}), expected=0)
    assert a.load("abc").state == "stopping" and a.versions() == {"abc": 1}


def test_corrupt_rows_are_skipped_and_reported(tmp_path):
    import sqlite3
    store = Store(tmp_path / "s.sqlite")
    store.save(Deployment(id="good", model="m", created=1.0, resources={}, replicas=()))
    db = sqlite3.connect(str(tmp_path / "s.sqlite"))
    db.execute("INSERT INTO deployments VALUES ('bad', 'm', 'queued', 2.0, '{not json', 0)")
    db.execute("INSERT INTO deployments VALUES ('odd', 'm', 'queued', 3.0, '[1, 2]', 0)")
    db.commit()
    assert [d.id for d in store.load_all()] == ["good"]
    assert len(store.problems) == 2 and "bad" in store.problems[0]


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
    import sqlite3
    Store(tmp_path / "s.sqlite")
    mode = sqlite3.connect(str(tmp_path / "s.sqlite")).execute("PRAGMA journal_mode").fetchone()
    assert mode == ("delete",)
