"""The sidebar's logic in TypeScript, unit-tested by node's own test runner (labextension/test/).

The pure modules (metrics parsing and rates, state wording, form validation, the playground's
stream handling, log search, the snippet, batch progress and wording, the poll cadence, the
settings' defaults) are compiled by the project's own TypeScript into a temporary folder and
`node --test` runs every labextension/test/*.test.mjs over them. Needs node and
labextension/node_modules (`cd labextension && npm install`); no browser.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

LABEXT = Path(__file__).resolve().parents[2] / "labextension"
TSC = LABEXT / "node_modules" / ".bin" / "tsc"
PURE = ["types", "metrics", "states", "validate", "chat", "logsearch", "snippet", "batches",
        "health", "cadence", "settings", "sizes", "estimate", "usagecalc", "idle"]


def test_typescript_units(tmp_path: Path) -> None:
    if shutil.which("node") is None or not TSC.exists():
        message = "node or labextension/node_modules missing (cd labextension && npm install)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    compiled = subprocess.run(
        [str(TSC), *(str(LABEXT / "src" / f"{name}.ts") for name in PURE), "--outDir",
         str(tmp_path), "--target", "ES2020", "--module", "esnext", "--strict",
         "--noUnusedLocals", "--skipLibCheck"],
        capture_output=True, text=True, timeout=180)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    for name in PURE:  # pure: nothing imported at run time, so node can load each alone
        source = (tmp_path / f"{name}.js").read_text()
        assert not re.search(r"^\s*import\s", source, re.M), f"{name}.ts imports at run time"
    tests = sorted(str(p) for p in (LABEXT / "test").glob("*.test.mjs"))
    result = subprocess.run(["node", "--test", *tests], capture_output=True, text=True,
                            timeout=180, cwd=LABEXT,
                            env={**os.environ, "OSIRE_LIB_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    passed = int(re.search(r"^# pass (\d+)", result.stdout, re.M).group(1))
    assert passed >= 56 and "# fail 0" in result.stdout, result.stdout[-3000:]
