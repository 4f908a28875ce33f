#!/usr/bin/env bash
# Build the documentation (Sphinx, MyST, PyData theme) with warnings as errors.
#
#   scripts/docs.sh [extra sphinx-build arguments]     -> docs/_build/html/index.html
#
# Uses .venv (scripts/bootstrap.sh) when present, else the python3 on PATH; installs
# docs/requirements.txt there when Sphinx is missing.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
[ -x "$REPO/.venv/bin/python" ] && PY="$REPO/.venv/bin/python"
if ! "$PY" -c "import sphinx, myst_parser, pydata_sphinx_theme" 2>/dev/null; then
    "$PY" -m pip install -q -r "$REPO/docs/requirements.txt"
fi
exec "$PY" -m sphinx -W --keep-going -b html "$REPO/docs" "$REPO/docs/_build/html" "$@"
