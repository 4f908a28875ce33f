"""``sbatch --test-only``'s answer, recorded from the real test cluster, and the billing units a
request comes to under the partition's TRESBillingWeights (checked against Slurm's own in
tests/deployments/test_estimate.py)."""
from __future__ import annotations

from datetime import datetime

from jupyter_osire_llm.core.billing import billing_units, cost
from jupyter_osire_llm.schedulers.base import Resources
from jupyter_osire_llm.schedulers.slurm.parse import parse_test_only

WEIGHTS = {"cpu": "1.0", "mem": "0.25G", "gres/gpu": "2.0"}


def test_the_expected_start_and_nodes():
    said = ("sbatch: Job 1765 to start at 2027-12-04T18:56:23 using 1 processors on nodes vm "
            "in partition debug\n")
    found = parse_test_only(said)
    assert found.start == datetime(2027, 12, 4, 18, 56, 23).timestamp()
    assert (found.nodes, found.partition, found.reason) == ("vm", "debug", None)
    nothing = parse_test_only("sbatch: something else entirely")
    assert nothing.start is None and "something else" in nothing.reason


def test_billing_units_as_slurm_counts_them():
    assert billing_units(WEIGHTS, Resources(gpus=1, cpus=2, memory="1G")) == 4   # 4.25
    assert billing_units(WEIGHTS, Resources(gpus=4, cpus=8, memory="64G", nodes=2)) == 64
    assert billing_units({"cpu": "1", "mem": "0.001"}, Resources(memory="2000M")) == 3
    assert billing_units({}, Resources(gpus=1)) is None
    eight_hours = cost(Resources(gpus=4, cpus=8, memory="64G", time="08:00:00"), 1, WEIGHTS,
                       0.1, "EUR")
    assert (eight_hours.gpu_hours, eight_hours.units) == (32.0, 32)
    assert eight_hours.billing() == {"units": 32, "unit_hours": 256.0, "price": 25.6,
                                     "currency": "EUR"}
