#!/usr/bin/env bash
# Re-records the real Slurm output the parser tests read. Needs the test cluster
# (scripts/slurm-cluster.sh start) and about 90 s (one job runs into its time limit).
# The cluster must be otherwise idle: the jobs below fill its 2 CPUs and 2 GPUs.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
W="$(mktemp -d)"; trap 'rm -rf "$W"' EXIT
cd "$W"
printf '#!/bin/bash\nsleep "${1:-100}"\n' > sleep.sh
printf '#!/bin/bash\nexit 3\n' > fail.sh
printf '#!/bin/bash\ntrue\n' > ok.sh
F='%i|%T|%r|%N|%V|%S|%e|%u'

sbatch --parsable ok.sh > "$HERE/sbatch_parsable.txt"
ok=$(cat "$HERE/sbatch_parsable.txt")
fail=$(sbatch --parsable fail.sh)
long=$(sbatch --parsable --gres=gpu:2 --time=5 sleep.sh)          # holds both GPUs
tlim=$(sbatch --parsable --time=1 sleep.sh)                        # runs into its limit
gpu=$(sbatch --parsable --gres=gpu:1 sleep.sh)                     # waits: Resources
big=$(sbatch --parsable -c 3 sleep.sh)                             # never runs: PartitionConfig
canc=$(sbatch --parsable --gres=gpu:1 sleep.sh); scancel "$canc"   # cancelled while pending
sleep 2
ids="$ok,$fail,$long,$tlim,$gpu,$big,$canc"
squeue -h -t all -j "$ids" -o "$F" > "$HERE/squeue_mixed.txt"
scontrol show job -o "$fail" > "$HERE/scontrol_failed.txt"
scontrol show job -o "$long" > "$HERE/scontrol_running.txt"
scontrol show job -o "$gpu" > "$HERE/scontrol_pending.txt"
for args in "--gres=gpu:5" "--partition=nope" "--time=bogus" "--mem=999999G"; do
    sbatch --parsable $args ok.sh 2>&1 | head -1 || true
done > "$HERE/sbatch_rejected.txt"
squeue -h -t all -j 999999 -o "$F" > "$HERE/squeue_unknown_single.txt" 2>&1 || true
sleep 85   # the time limit is checked every 30 s: TIMEOUT 60-80 s after start; backfill estimates
squeue -h -t all -j "$ids" -o "$F" > "$HERE/squeue_later.txt"
scontrol show job -o "$tlim" > "$HERE/scontrol_timeout.txt"
scontrol show job -o "$canc" > "$HERE/scontrol_cancelled.txt"
if sacct -n -j "$ok" > /dev/null 2>&1; then   # accounting on (slurm-cluster.sh's default)
    sacct --noheader --parsable2 --allocations --jobs="$ok,$fail,$canc,$tlim" \
        --format=JobID,State,ExitCode,NodeList,Submit,Start,End,User,Reason,WorkDir \
        | sed "s#$W#/tmp/osire-record#" > "$HERE/sacct_accounting.txt"
else
    sacct -j "$ok" > "$HERE/sacct_disabled.txt" 2>&1 || true
fi
scancel "$long" "$gpu" "$big"

# Job usage (Scheduler.job_usage), with the test partition's TRESBillingWeights: a finished job
# and a running one (End Unknown).
# sacct --noheader --parsable2 --allocations --jobs=A,B --format=JobID,ElapsedRaw,AllocTRES,End > sacct_usage.txt
