import pytest

from jupyter_osire_llm.errors import LimitExceeded, RequestError
from jupyter_osire_llm.schedulers.base import Resources
from jupyter_osire_llm.core.limits import SiteLimits, parse_resources, time_to_minutes


@pytest.mark.parametrize("value, minutes", [
    ("30", 30), ("1:30", 2), ("01:00:00", 60), ("4:00:00", 240), ("1-00", 1440),
    ("2-03:04", 2 * 1440 + 184), ("1-00:00:01", 1441),
])
def test_time_to_minutes(value, minutes):
    assert time_to_minutes(value) == minutes


@pytest.mark.parametrize("value", ["", "abc", "1h", "-5", "1:2:3:4", "1 0", "10;id"])
def test_bad_time_is_rejected_naming_the_field(value):
    with pytest.raises(RequestError) as err:
        parse_resources({"time": value})
    assert err.value.field == "resources.time"


def test_memory_as_megabytes():
    assert parse_resources({"memory": 512}).memory == "512M"
    assert parse_resources({"memory": "64G"}).memory == "64G"


@pytest.mark.parametrize("raw, field", [
    ({"gpus": -1}, "resources.gpus"), ({"gpus": "2"}, "resources.gpus"),
    ({"gpus": True}, "resources.gpus"), ({"cpus": 0}, "resources.cpus"),
    ({"partition": "gpu\n#SBATCH --uid=0"}, "resources.partition"),
    ({"partition": "gpu\n"}, "resources.partition"), ({"time": "10\n"}, "resources.time"),
    ({"gpu_type": "a100\u0661"}, "resources.gpu_type"),
    ({"account": "a b"}, "resources.account"), ({"qos": "$(id)"}, "resources.qos"),
    ({"memory": "lots"}, "resources.memory"), ({"constraint": "a;b"}, "resources.constraint"),
    ({"gpu_type": "../../etc"}, "resources.gpu_type"), ({"colour": "red"}, "resources.colour"),
])
def test_bad_resource_values(raw, field):
    with pytest.raises(RequestError) as err:
        parse_resources(raw)
    assert err.value.field == field
    assert field.split(".")[1] in err.value.message


def test_resources_override_base():
    base = Resources(gpus=1, time="01:00:00", partition="gpu")
    got = parse_resources({"time": "00:30:00"}, base=base)
    assert got == Resources(gpus=1, time="00:30:00", partition="gpu")


def test_not_a_mapping():
    with pytest.raises(RequestError) as err:
        parse_resources(["gpus", 1])
    assert err.value.field == "resources"


@pytest.mark.parametrize("resources, replicas, field", [
    (Resources(gpus=5), 1, "resources.gpus"),
    (Resources(time="2-00:00:00"), 1, "resources.time"),
    (Resources(partition="debug"), 1, "resources.partition"),
    (Resources(account="other"), 1, "resources.account"),
    (Resources(), 0, "replicas"), (Resources(), 9, "replicas"),
    (Resources(gpus=4, nodes=2), 1, "resources.gpus"),       # 8 GPUs asked of Slurm
])
def test_limits(resources, replicas, field):
    limits = SiteLimits(allowed_partitions=["gpu"], allowed_accounts=["proj"], max_gpus=4,
                        max_time="1-00:00:00", max_replicas=2)
    with pytest.raises(LimitExceeded) as err:
        limits.apply(resources, replicas)
    assert err.value.field == field and err.value.status == 400


def test_within_limits_passes():
    wanted = Resources(gpus=4, partition="gpu", time="04:00:00")
    assert SiteLimits(allowed_partitions=["gpu"], max_gpus=4, max_time="04:00:00").apply(
        wanted, 1) == wanted


def test_open_values_are_filled_by_the_limits():
    limits = SiteLimits(allowed_partitions=["gpu", "debug"], allowed_accounts=["proj"],
                        max_time="04:00:00")
    assert limits.apply(Resources(), 1) == Resources(time="04:00:00", partition="gpu",
                                                     account="proj")
    assert SiteLimits().apply(Resources(), 1) == Resources()   # no limits: Slurm's defaults


def test_null_means_the_catalog_default():
    base = Resources(gpus=1, time="01:00:00", partition="gpu", account="proj", nodes=1)
    raw = {"gpus": None, "time": None, "partition": None, "account": None, "nodes": None}
    assert parse_resources(raw, base=base) == base


def test_total_gpus_per_user():
    limits = SiteLimits(max_total_gpus=4)
    limits.check_total_gpus(2, 2)
    with pytest.raises(LimitExceeded) as err:
        limits.check_total_gpus(2, 3)
    assert err.value.field == "max_total_gpus" and "over the site limit of 4" in err.value.message


def test_deployment_count_limit():
    with pytest.raises(LimitExceeded) as err:
        SiteLimits(max_deployments=2).check_count(2)
    assert "limit is 2" in err.value.message
