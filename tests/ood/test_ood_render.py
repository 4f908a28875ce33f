"""The Open OnDemand app's ERB files, rendered by Ruby as OOD renders them, for sample form values:
valid YAML and shell (``bash -n``), the site catalog in the form, OOD's submit options, quoting of
hostile values, and the Connect button. The session itself runs in test_ood_session.py."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ood_stub
from lifecycle_catalog import write_catalog

HOSTILE = "x'; touch /tmp/osire-pwned; echo \"$(id)\" `id` $HOME \\ \n#SBATCH --mem=1T"


@pytest.fixture
def site(tmp_path: Path, ruby: str) -> dict[str, str]:
    return {"OSIRE_OOD_CATALOG": str(write_catalog(tmp_path / "catalog.yaml")),
            "OSIRE_OOD_SETUP": f"export PATH={Path(sys.executable).parent}:$PATH",
            "OSIRE_OOD_CLUSTER": "testcluster", "OSIRE_OOD_ORIGIN": "https://ood.example.edu"}


def test_form_lists_the_catalog_and_carries_the_site_settings(site):
    form = ood_stub.render_form(site)
    assert form["cluster"] == "testcluster"
    for name in ("auto_accounts", "auto_queues", "bc_num_hours", "num_cores", "osire_model"):
        assert name in form["form"]
    options = form["attributes"]["osire_model"]["options"]
    assert options[0] == ["(none)", ""]
    assert ["fake-chat - the fake OpenAI engine", "fake-chat"] in options
    assert [o[1] for o in options[1:]] == ["fake-chat", "fake-slow-start", "fake-crash",
                                          "fake-one-minute", "fake-gpu"]
    assert form["attributes"]["osire_catalog"]["value"] == site["OSIRE_OOD_CATALOG"]
    assert form["attributes"]["osire_setup"]["value"] == site["OSIRE_OOD_SETUP"]
    assert form["attributes"]["osire_origin"]["value"] == "https://ood.example.edu"


def test_form_without_a_readable_catalog_offers_no_model(ruby, tmp_path):
    form = ood_stub.render_form({"OSIRE_OOD_CATALOG": str(tmp_path / "missing.yaml")})
    assert form["attributes"]["osire_model"]["options"] == [["(none)", ""]]


def test_submit_options_are_what_ood_core_gives_sbatch(site, tmp_path):
    values = ood_stub.form_values(ood_stub.render_form(site), {
        "auto_accounts": "proj1", "auto_queues": "gpu", "bc_num_hours": "3", "num_cores": "4",
        "memory_gb": "16"})
    submit = ood_stub.render_submit(values, tmp_path)
    assert submit["batch_connect"] == {"template": "basic"}
    args = ood_stub.sbatch_args(submit, Path("/s"), "name")
    assert args[args.index("-p") + 1] == "gpu"
    assert args[args.index("-A") + 1] == "proj1"
    assert args[args.index("-t") + 1] == "03:00:00"
    assert args[-4:] == ["--nodes=1", "--ntasks=1", "--cpus-per-task=4", "--mem=16G"]
    # no account or partition chosen: none asked for (the cluster's defaults apply)
    values.update(auto_accounts="", auto_queues="", num_cores="-3", memory_gb="x")
    submit = ood_stub.render_submit(values, tmp_path)
    assert "accounting_id" not in submit["script"] and "queue_name" not in submit["script"]
    assert submit["script"]["native"][2:] == ["--cpus-per-task=1", "--mem=1G"]


@pytest.mark.parametrize("model", ["", "fake-chat", HOSTILE])
def test_templates_render_to_valid_shell_and_quote_every_value(site, tmp_path, model):
    values = ood_stub.form_values(ood_stub.render_form(site), {"osire_model": model})
    values["osire_catalog"] = values["osire_job_root"] = HOSTILE if model == HOSTILE else ""
    session = tmp_path / "session"
    session.mkdir()
    ood_stub.stage(values, session)
    assert sorted(p.name for p in session.iterdir()) == ["after.sh", "before.sh", "script.sh"]
    assert (session / "script.sh").stat().st_mode & 0o111, "script.sh is forked: executable"
    for name in ("before.sh", "script.sh", "after.sh"):
        check = subprocess.run(["bash", "-n", str(session / name)], capture_output=True, text=True)
        assert check.returncode == 0, f"{name}: {check.stderr}"
    job = tmp_path / "job.sh"
    job.write_text(ood_stub.job_script(session))
    assert subprocess.run(["bash", "-n", str(job)], capture_output=True).returncode == 0
    # The form's values reach the shell as the very strings chosen, never as code.
    before = (session / "before.sh").read_text()
    start = before.index("export OSIRE_OOD_MODEL=")
    line = before[start:before.index("export CONFIG_FILE=")]
    echoed = subprocess.run(["bash", "-c", line + 'printf "%s" "$OSIRE_OOD_MODEL"'],
                            capture_output=True, text=True)
    assert echoed.stdout == model
    assert not Path("/tmp/osire-pwned").exists()


def test_before_sh_writes_a_private_config_and_no_secret_on_argv(site, tmp_path):
    """before.sh sourced with stand-ins of OOD's helpers: the config is 0600 Python holding the
    base URL, port, the argon2 hash (not the password) and the token's file (not the token)."""
    values = ood_stub.form_values(ood_stub.render_form(site), {"osire_model": "fake-chat"})
    values["osire_catalog"] = HOSTILE
    values["osire_origin"] = "https://ondemand.example.edu/"
    session = tmp_path / "session"
    session.mkdir()
    ood_stub.stage(values, session)
    script = (f"cd {session}\n{ood_stub.HELPERS}\nsource_helpers\nhost=node7\n"
              "clean_up () { echo CLEANUP; exit ${1:-0}; }\n"
              "source before.sh\nprintf 'PASSWORD=%s\\n' \"$password\"\n"
              "env | grep -c '^password=' || true\n")
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "CLEANUP" not in run.stdout, run.stdout + run.stderr
    password = re.search(r"^PASSWORD=(\w+)$", run.stdout, re.M).group(1)
    assert len(password) == 16
    assert run.stdout.strip().endswith("0"), "the password is not exported"
    config = session / "jupyter-config" / "jupyter_server_config.py"
    token_file = session / "osire_token"
    assert config.stat().st_mode & 0o777 == 0o600 and token_file.stat().st_mode & 0o777 == 0o600
    text = config.read_text()
    token = token_file.read_text().strip()
    assert len(token) == 32 and token not in text and password not in text
    from traitlets.config import Config
    namespace = {"c": Config()}
    exec(compile(text, str(config), "exec"), namespace)   # the file Jupyter will load
    c = namespace["c"]
    port = c.ServerApp.port
    assert 2000 <= port <= 65535 and c.ServerApp.port_retries == 0
    assert c.ServerApp.base_url == f"/node/node7/{port}/"
    assert c.IdentityProvider.token == token
    assert c.OsireLLM.catalog == HOSTILE
    assert c.PasswordIdentityProvider.allow_password_change is False
    assert c.ServerApp.allow_origin == "https://ondemand.example.edu"   # exact, never "*"
    from jupyter_server.auth.security import passwd_check
    assert passwd_check(c.PasswordIdentityProvider.hashed_password, password)
    assert c.PasswordIdentityProvider.hashed_password.startswith("argon2:")


def test_view_posts_the_password_to_the_login_page_with_xsrf(ruby, tmp_path):
    view = ood_stub.render_view({"host": "node7", "port": 34567, "password": "abcDEF123"},
                                tmp_path)
    assert 'action="/node/node7/34567/login?next=%2Fnode%2Fnode7%2F34567%2Flab"' in view
    assert 'name="password" value="abcDEF123"' in view
    assert 'method="post"' in view and 'name="_xsrf"' in view
    assert 'var loginUrl = "/node/node7/34567/login";' in view and "fetch(loginUrl" in view


def test_info_renders(ruby, tmp_path):
    (tmp_path / "v.json").write_text("{}")
    text = ood_stub.ruby("info", str(ood_stub.APP), str(tmp_path / "v.json"))
    assert "client()" in text and "osire/v1" in text
