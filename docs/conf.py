"""Sphinx configuration: MyST Markdown pages, the PyData theme (the Jupyter ecosystem's choice).

Build: ``scripts/docs.sh`` (``python -m sphinx -W --keep-going -b html docs docs/_build/html``).
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

project = "jupyter-osire-llm"
author = "jupyter-osire-llm contributors"
copyright = "jupyter-osire-llm contributors"
version = release = re.search(r'__version__\s*=\s*"([^"]+)"',
                              (ROOT / "jupyter_osire_llm" / "_version.py").read_text()).group(1)

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "requirements.txt", "README.md"]
suppress_warnings: list[str] = []

html_theme = "pydata_sphinx_theme"
html_title = "jupyter-osire-llm"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": [],
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
