"""Persisted deployments: one SQLite file under the Jupyter data dir.

One row per deployment, its replicas inside as JSON. The deployment service is the only writer.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import asdict, fields
from pathlib import Path
from typing import Iterator

from .states import Deployment, Replica

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    id      TEXT PRIMARY KEY,
    model   TEXT NOT NULL,
    state   TEXT NOT NULL,
    created REAL NOT NULL,
    doc     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deployments_state ON deployments(state);
"""


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        path.chmod(0o600)

    def save(self, deployment: Deployment) -> None:
        doc = json.dumps(asdict(deployment))
        with self._lock:
            self._db.execute(
                "INSERT INTO deployments (id, model, state, created, doc) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET state = excluded.state, doc = excluded.doc",
                (deployment.id, deployment.model, deployment.state, deployment.created, doc))

    def load_all(self) -> Iterator[Deployment]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM deployments ORDER BY created").fetchall()
        for (doc,) in rows:
            yield _from_doc(json.loads(doc))

    def delete(self, deployment_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _from_doc(doc: dict) -> Deployment:
    """Rows written by other versions load too: unknown fields are dropped, missing ones default."""
    replicas = tuple(Replica(**_known(Replica, r)) for r in doc.pop("replicas"))
    return Deployment(replicas=replicas, **_known(Deployment, doc))


def _known(cls: type, doc: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in doc.items() if k in names}
