"""Bad site configuration is refused at start-up with the trait's name and the reason."""
import pytest
from traitlets import TraitError

from jupyter_osire_llm.app import OsireLLM


@pytest.mark.parametrize("trait, value, fragment", [
    ("max_time", "forever", "max_time"),
    ("allowed_partitions", ["gpu", "a b"], "allowed_partitions"),
    ("max_gpus", -1, "max_gpus"),
    ("scheduler", "sge", "scheduler"),
])
def test_bad_traits(trait, value, fragment):
    with pytest.raises(TraitError) as err:
        OsireLLM(**{trait: value})
    assert fragment in str(err.value)


def test_good_traits():
    app = OsireLLM(max_time="1-00:00:00", allowed_partitions=["gpu", "gpu-a100"], max_gpus=4)
    assert app.max_time == "1-00:00:00"


def test_missing_catalog_file_leaves_an_empty_catalog_with_the_reason(tmp_path):
    app = OsireLLM(catalog=str(tmp_path / "nope.yaml"))
    catalog = app._load_catalog()
    assert catalog.models == {} and "cannot read" in catalog.problems[0]
