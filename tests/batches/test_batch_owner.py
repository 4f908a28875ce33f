"""A batch belongs to the scheduler its job runs on (issue 17.7): a server of the same user on
another backend (no ``sbatch`` on its PATH, so it chose the local one) or another cluster that
shares the state file never takes the job for vanished, never cancels or resumes it, and says
where it runs."""
from __future__ import annotations

import asyncio

import pytest

from jupyter_osire_llm.errors import Conflict
from jupyter_osire_llm.schedulers.local import LocalScheduler
from jupyter_osire_llm.schedulers.slurm.cli import SlurmCLI
from test_batch_faults import Setup


def test_a_server_on_another_backend_leaves_a_slurm_batch_alone(slurm_cluster, tmp_path):
    on_slurm = Setup(tmp_path / "a", SlurmCLI(command_timeout=10),
                     store_path=tmp_path / "shared.sqlite")
    local = Setup(tmp_path / "b", LocalScheduler(tmp_path / "local", gpus=2),
                  store_path=tmp_path / "shared.sqlite")
    local.batches.lost_grace = 0     # one "vanished" answer would fail the batch at once

    async def scenario() -> None:
        batch = await on_slurm.create("fake-slow-tokens", 40)
        await on_slurm.until(batch.id, lambda b: b.status == "in_progress")
        for _ in range(5):
            await local.monitor.cycle()
        seen = local.batches.get(batch.id)
        assert local.monitor.leader          # it watches: its own lease, for local jobs
        assert seen.status == "in_progress", seen.reason
        assert seen.to_openai()["osire"]["owner"].startswith("slurm:")
        with pytest.raises(Conflict, match=r"runs on cluster .*\(slurm\); this server uses host"):
            await local.batches.cancel(batch.id)
        assert local.batches.get(batch.id).live
        await on_slurm.batches.cancel(batch.id)
        ended = await on_slurm.until(batch.id, lambda b: not b.live)
        assert ended.status == "cancelled"
        with pytest.raises(Conflict, match="resume it from a server there"):
            await local.batches.resume(batch.id)
        await on_slurm.monitor.stop()
        await local.monitor.stop()
    asyncio.run(scenario())
