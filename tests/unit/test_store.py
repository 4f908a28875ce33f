import stat

from jupyter_osire_llm.states import Deployment, Replica
from jupyter_osire_llm.store import Store


def test_round_trip_and_permissions(tmp_path):
    path = tmp_path / "osire" / "state.sqlite"
    store = Store(path)
    d = Deployment(id="abc", model="m", created=1.0, resources={"gpus": 1},
                   replicas=(Replica(index=0, folder="/j/abc/r0", job_id="12", port=8000),))
    store.save(d)
    store.save(d.__class__(**{**vars(d), "state": "ready"}))
    store.close()
    again = list(Store(path).load_all())
    assert again == [d.__class__(**{**vars(d), "state": "ready"})]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rows_from_other_versions_load(tmp_path):
    import json
    import sqlite3
    store = Store(tmp_path / "s.sqlite")
    doc = {"id": "x", "model": "m", "created": 1.0, "resources": {}, "state": "queued",
           "future_field": 1, "replicas": [{"index": 0, "folder": "/f", "new_thing": True}]}
    db = sqlite3.connect(str(tmp_path / "s.sqlite"))
    db.execute("INSERT INTO deployments VALUES ('x', 'm', 'queued', 1.0, ?)", (json.dumps(doc),))
    db.commit()
    (loaded,) = store.load_all()
    assert loaded.id == "x" and loaded.replicas[0].folder == "/f"
