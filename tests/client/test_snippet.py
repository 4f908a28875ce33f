"""The sidebar's "Copy snippet" text (labextension/src/snippet.ts), compiled by the project's own
TypeScript and checked by the node test labextension/test/snippet.test.mjs: the snippet made
for a token ``SECRET`` does not contain it, and it uses ``client()``."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

LABEXT = Path(__file__).resolve().parents[2] / "labextension"
TSC = LABEXT / "node_modules" / ".bin" / "tsc"


def test_snippet_holds_no_token(tmp_path):
    if shutil.which("node") is None or not TSC.exists():
        message = "node or labextension/node_modules missing (cd labextension && npm install)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    subprocess.run([str(TSC), str(LABEXT / "src" / "snippet.ts"), "--outDir", str(tmp_path),
                    "--target", "ES2020", "--module", "esnext", "--strict"],
                   check=True, capture_output=True, text=True, timeout=120)
    result = subprocess.run(["node", "--test", str(LABEXT / "test" / "snippet.test.mjs")],
                            capture_output=True, text=True, timeout=120, cwd=LABEXT,
                            env={**os.environ, "OSIRE_SNIPPET_JS": str(tmp_path / "snippet.js")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# pass 2" in result.stdout
