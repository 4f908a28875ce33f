"""Bad site configuration is refused at start-up with the trait's name and the reason."""
import pytest
from traitlets import TraitError

from jupyter_osire_llm.server.app import OsireLLM
from jupyter_osire_llm.server.wiring import read_catalog


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
    catalog = read_catalog(app.catalog, app.log)
    assert catalog.models == {} and "cannot read" in catalog.problems[0]


@pytest.mark.parametrize("trait", ["job_root", "db_path"])
def test_paths_with_tilde_are_expanded(trait, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    app = OsireLLM(**{trait: "~/osire/x"})
    assert getattr(app, trait) == str(tmp_path / "osire" / "x")


@pytest.mark.parametrize("trait", ["job_root", "db_path"])
def test_user_in_a_site_path_is_the_login_name(trait, monkeypatch):
    """One site setting (an OOD app's OSIRE_OOD_JOB_ROOT) gives each user a root of their own."""
    import os
    import pwd
    monkeypatch.setenv("USER", "someone-else")
    app = OsireLLM(**{trait: "/scratch/$USER/osire"})
    assert getattr(app, trait) == f"/scratch/{pwd.getpwuid(os.geteuid()).pw_name}/osire"


@pytest.mark.parametrize("trait", ["job_root", "db_path"])
def test_relative_paths_are_made_absolute_at_start_up(trait, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    app = OsireLLM(**{trait: "state/x"})
    monkeypatch.chdir("/")
    assert getattr(app, trait) == str(tmp_path / "state" / "x")


@pytest.mark.parametrize("trait", ["job_root", "db_path"])
@pytest.mark.parametrize("value", ["", "  ", "~no-such-user-osire/x"])
def test_unusable_paths_are_refused_naming_the_trait(trait, value):
    with pytest.raises(TraitError) as err:
        OsireLLM(**{trait: value})
    assert f"OsireLLM.{trait}" in str(err.value)


def test_default_paths_are_absolute():
    app = OsireLLM()
    assert app.job_root.startswith("/") and app.db_path.startswith("/")
