#!/bin/sh
# Run the paper's experiment groups (the presets in conf/experiment/) as queues of single runs.
#
#   sh run_experiments.sh fig1                    # one group (9 runs)
#   sh run_experiments.sh depth_cm depth_cfm      # several; `all`: every group, `depth`: depth_*
#   sh run_experiments.sh --dry-run all           # list the jobs, the count per group and the plan
#   sh run_experiments.sh fig1 epochs=20 seed=1   # KEY=VALUE overrides go into every run
#   sh run_experiments.sh --skip-recorded docs/reproduction fig1 seed=666,1,2,3,4   # only runs the
#                                                 # report's runs.csv does not hold yet
#
# With GPUs (GPUS="0 1 2 3"; by default the entries of CUDA_VISIBLE_DEVICES if it is set, else every
# GPU `nvidia-smi -L` lists) the jobs are dealt round-robin to one queue per GPU; each queue runs in
# the background under nohup with CUDA_VISIBLE_DEVICES set to its GPU, one job after another, so no
# GPU runs two jobs at once. This script then returns; the queues go on after you log out.
# GPU ids that this machine does not have are refused (a dry run notes them and still shows the plan).
# Without GPUs (or with GPUS="") the jobs run here, JOBS at a time (a positive integer; default: one per
# CPU core), each with threads=1.
# Each job appends its output to <log_root>/jobs/<job name>.log (log_root defaults to logs/).
# Resumable: a run that already finished is skipped by the entry point (it prints `skipped:`), so
# after an interruption rerun the same command. FORCE=1 reruns finished runs (force=true).
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
# Groups: fig1 lr imbalanced depth_cm depth_cfm depth_cc depth_cm5k width shape cnn residual frozen original
# linearized nobn (and the aliases all, depth); a preset's own name works too.
set -eu

cd "$(dirname "$0")"
repo=$(pwd)
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=$repo/.venv/bin/python; else PYTHON=python3; fi
fi

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

dry_run=0
skip_recorded=
expect_report=0
for argument do
    shift
    if [ "$expect_report" = 1 ]; then skip_recorded=$argument; expect_report=0; continue; fi
    case $argument in
        -n|--dry-run) dry_run=1 ;;
        --skip-recorded) expect_report=1 ;;
        --skip-recorded=*) skip_recorded=${argument#--skip-recorded=} ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "error: unknown option $argument" >&2; usage >&2; exit 2 ;;
        *) set -- "$@" "$argument" ;;
    esac
done
if [ "$expect_report" = 1 ]; then echo "error: --skip-recorded needs a report folder (docs/reproduction)" >&2; exit 2; fi
if [ $# -eq 0 ]; then usage >&2; exit 2; fi

# JOBS, when given, is a positive integer (xargs -P 0 would start every job at once); empty: the default.
if [ -n "${JOBS:-}" ]; then
    case $JOBS in
        '' | *[!0-9]*) jobs_ok=0 ;;
        *) if [ "$JOBS" -ge 1 ]; then jobs_ok=1; else jobs_ok=0; fi ;;
    esac
    if [ "$jobs_ok" = 0 ]; then
        echo "error: JOBS=$JOBS: allowed: a positive integer (jobs run at a time on the CPU)" >&2
        exit 2
    fi
fi

gpu_source=GPUS
if [ "${GPUS+set}" = set ]; then
    gpus=$GPUS
elif [ "${CUDA_VISIBLE_DEVICES+set}" = set ]; then
    gpu_source=CUDA_VISIBLE_DEVICES
    gpus=$(printf '%s\n' "$CUDA_VISIBLE_DEVICES" | tr ',' ' ')
elif command -v nvidia-smi >/dev/null 2>&1; then
    gpus=$(nvidia-smi -L 2>/dev/null | sed -n 's/^GPU \([0-9][0-9]*\):.*/\1/p' | tr '\n' ' ')
else
    gpus=
fi
gpu_count=$(printf '%s\n' $gpus | grep -c . || true)

# This machine's GPUs: the indices and UUIDs (GPU-..., MIG-...) nvidia-smi lists, else the indices torch
# counts (without CUDA_VISIBLE_DEVICES, which the ids asked for refer to).
machine_gpus() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | sed -n -e 'h' -e 's/^GPU \([0-9][0-9]*\):.*/\1/p' \
            -e 'g' -e 's/.*(UUID: \([^)]*\)).*/\1/p'
    else
        env -u CUDA_VISIBLE_DEVICES "$PYTHON" -c \
            'import torch; print(*range(torch.cuda.device_count()), sep="\n")' 2>/dev/null || true
    fi
}
missing_gpus=
if [ "$gpu_count" -gt 0 ]; then
    available_gpus=$(machine_gpus)
    for gpu in $gpus; do
        if ! printf '%s\n' "$available_gpus" | grep -qxF -- "$gpu"; then missing_gpus="$missing_gpus $gpu"; fi
    done
fi
if [ -n "$missing_gpus" ]; then
    listed=$(printf '%s\n' $available_gpus | grep '^[0-9]' | tr '\n' ' ')
    gpu_problem="$gpu_source=$(echo $gpus): no GPU$missing_gpus on this machine; allowed: ${listed:+$listed(or their UUIDs), or }GPUS= (empty) to run on the CPU"
    if [ "$dry_run" = 0 ]; then echo "error: $gpu_problem" >&2; exit 2; fi
fi

# Overrides every job gets, before the user's (a user's KEY=VALUE wins).
runner_overrides=
if [ "$gpu_count" -eq 0 ]; then runner_overrides="threads=1"; fi
if [ "${FORCE:-0}" = 1 ]; then runner_overrides="$runner_overrides force=true"; fi

plan=$(mktemp "${TMPDIR:-/tmp}/run_experiments.XXXXXX")
trap 'rm -f "$plan"' EXIT
# shellcheck disable=SC2086  # runner_overrides: words without spaces, split on purpose
"$PYTHON" sweep_jobs.py --list --log --longest-first --python "$PYTHON" \
    ${skip_recorded:+--skip-recorded "$skip_recorded"} $runner_overrides "$@" > "$plan"
log_dir=$(sed -n 's/^# job logs: //p' "$plan")
job_count=$(grep -vc '^#' "$plan" || true)

# RUN_LINE runs line $2 of the jobs file $1 (a complete shell command that appends to its log),
# framed by start and exit lines; RUN_QUEUE runs every line of the jobs file $1, $2 at a time.
RUN_LINE='job=$(sed -n "${2}p" "$1")
printf "[%s] start: %s\n" "$(date "+%F %T")" "$job"
sh -c "$job" < /dev/null
status=$?
printf "[%s] exit %s: %s\n" "$(date "+%F %T")" "$status" "$job"
[ "$status" -eq 0 ]'
RUN_QUEUE='awk "END { for (i = 1; i <= NR; i++) print i }" "$1" | xargs -n 1 -P "$2" sh -c "$RUN_LINE" run_line "$1"'
export RUN_LINE

# jobs_of_queue Q N: the job lines of queue Q of N (jobs dealt round-robin).
jobs_of_queue() { awk -v queue="$1" -v queues="$2" '!/^#/ { if (job++ % queues == queue) print }' "$plan"; }

if [ "$dry_run" = 1 ]; then
    cat "$plan"
    if [ -n "$missing_gpus" ]; then echo "# note: a real run refuses this plan: $gpu_problem"; fi
    if [ "$gpu_count" -gt 0 ]; then
        echo "# plan: $gpu_count GPU queues (GPUS=\"$(echo $gpus)\"), each running its jobs one after another in the background (nohup)"
        queue=0
        for gpu in $gpus; do
            echo "# queue gpu$gpu: $(jobs_of_queue $queue "$gpu_count" | grep -c . || true) jobs, follow: tail -f $log_dir/queue-<time>-gpu$gpu.log"
            jobs_of_queue $queue "$gpu_count" | sed "s/^/CUDA_VISIBLE_DEVICES=$gpu /"
            queue=$((queue + 1))
        done
    else
        echo "# plan: $job_count jobs on the CPU, ${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)} at a time, threads=1 each"
        echo "# follow: tail -f $log_dir/<job name>.log"
    fi
    exit 0
fi

mkdir -p "$log_dir"
if [ "$gpu_count" -gt 0 ]; then
    stamp=$(date +%Y%m%d-%H%M%S)
    launch=nohup
    stop="kill PID and its child processes (see: ps -ef | grep run_queue)"
    if command -v setsid >/dev/null 2>&1; then  # each queue in its own process group
        launch="setsid nohup"
        stop="kill -- -PID (the queue and the job it is running)"
    fi
    queue=0
    pids=
    for gpu in $gpus; do
        jobs_file=$log_dir/queue-$stamp-gpu$gpu.jobs
        jobs_of_queue $queue "$gpu_count" > "$jobs_file"
        CUDA_VISIBLE_DEVICES=$gpu $launch sh -c "$RUN_QUEUE" run_queue "$jobs_file" 1 \
            > "$log_dir/queue-$stamp-gpu$gpu.log" 2>&1 < /dev/null &
        pids="$pids $!"
        echo "queue gpu$gpu: $(grep -c . "$jobs_file" || true) jobs, pid $!, log $log_dir/queue-$stamp-gpu$gpu.log"
        queue=$((queue + 1))
    done
    echo "started $job_count jobs on $gpu_count GPUs in the background."
    echo "follow:  tail -f $log_dir/queue-$stamp-gpu*.log      (each job: $log_dir/<job name>.log)"
    echo "stop:    $stop; queue PIDs:$pids"
else
    workers=${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}
    run=$log_dir/run-$(date +%Y%m%d-%H%M%S)-$$
    grep -v '^#' "$plan" > "$run.jobs"
    echo "# command: sh run_experiments.sh $*" > "$run.log"
    echo "running $job_count jobs on the CPU, $workers at a time (threads=1 each); start and exit lines: $run.log"
    echo "follow:  tail -f $log_dir/<job name>.log      (all: tail -f $log_dir/*.log)"
    # the queue's start/exit lines go to the terminal and to $run.log (the report reads its wall time)
    { sh -c "$RUN_QUEUE" run_queue "$run.jobs" "$workers"; echo $? > "$run.status"; } | tee -a "$run.log"
    status=$(cat "$run.status")
    rm -f "$run.status"
    if [ "$status" = 0 ]; then
        echo "done: $job_count jobs. Summary: $PYTHON summarize_runs.py ${log_dir%/jobs} --out summaries/"
    else
        echo "finished, but some jobs failed: see the 'exit' lines above and their logs in $log_dir/" >&2
        exit 1
    fi
fi
