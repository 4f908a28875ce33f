"""Fixtures of the Open OnDemand app tests: Ruby (Debian `ruby`) for the ERB files."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest


@pytest.fixture(scope="session")
def ruby() -> str:
    """Ruby's erb, installed when missing and we are root (scripts/test.sh installs it too)."""
    if shutil.which("ruby") is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "ruby"], capture_output=True,
                       timeout=600, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    path = shutil.which("ruby")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("ruby is missing (Debian package `ruby`)")
        pytest.skip("ruby is missing (Debian package `ruby`)")
    return path
