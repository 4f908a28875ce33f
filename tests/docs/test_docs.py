"""The documentation builds (Sphinx, MyST, PyData theme) with warnings as errors, as on Read the
Docs; `scripts/docs.sh` is the one command."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from docblocks import DOCS, REPO


def test_docs_build_without_warnings(tmp_path):
    missing = [m for m in ("sphinx", "myst_parser", "pydata_sphinx_theme")
               if subprocess.run([sys.executable, "-c", f"import {m}"]).returncode]
    if missing:
        message = f"docs requirements missing: {missing} (pip install -r docs/requirements.txt)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
         str(tmp_path / "html")], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    index = (tmp_path / "html" / "index.html").read_text()
    assert "jupyter-osire-llm" in index
    for page in ("researchers/errors", "admin/ood", "developers/architecture", "binder"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    assert (tmp_path / "html" / "_images" / "04-ready.png").is_file()


def test_docs_script_and_read_the_docs_config():
    script = (REPO / "scripts" / "docs.sh").read_text()
    assert "-W" in script and "sphinx" in script
    assert os.access(REPO / "scripts" / "docs.sh", os.X_OK)
    import yaml
    rtd = yaml.safe_load((REPO / ".readthedocs.yaml").read_text())
    assert rtd["version"] == 2 and rtd["sphinx"]["fail_on_warning"] is True
    assert rtd["sphinx"]["configuration"] == "docs/conf.py"
    requirements = (DOCS / "requirements.txt").read_text()
    for name in ("sphinx", "myst-parser", "pydata-sphinx-theme"):
        assert name in requirements
