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
