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
# GPU ids that this machine does not have are refused (a dry run notes them and still shows the plan);
# an id is an index or a UUID (letters, digits, - and /; a MIG id's / is _ in its queue's file names).
# Without GPUs (or with GPUS="") the jobs run here, JOBS at a time (a positive integer; default: one per
# CPU core), each with threads=1.
# Each job appends its output to <log_root>/jobs/<job name>.log (log_root defaults to logs/).
# Resumable: a run that already finished is skipped by the entry point (it prints `skipped:`), so
# after an interruption rerun the same command. FORCE=1 reruns finished runs (force=true).
# PYTHON picks the interpreter (default: .venv/bin/python if present, else python3).
# Groups: fig1 lr imbalanced depth_cm depth_cfm depth_cc depth_cm5k width shape cnn residual frozen original
# linearized nobn (and the aliases all, depth); a preset's own name works too.
set -eu
# Every value from the environment or the command line is data: it is never part of a sed or awk
# program (awk reads values from ENVIRON, files from stdin), never globbed (set -f), never printed
# with echo (which reads backslashes) and never evaluated; GPU ids split on blanks (and the commas of
# CUDA_VISIBLE_DEVICES) only.
set -f
IFS=$(printf ' \t\n.')
IFS=${IFS%.}
unset CDPATH

here=$(dirname -- "$0")
case $here in /*) ;; *) here=./$here ;; esac  # ./: never a CDPATH entry, never `cd -`
cd "$here"
repo=$(pwd)
self=$repo/${0##*/}
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=$repo/.venv/bin/python; else PYTHON=python3; fi
fi

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' < "$self"; }
# shown VALUE: VALUE on one line, each byte that is not printable ASCII (a line break, an escape) as ?
shown() { printf '%s' "$1" | LC_ALL=C tr -c '[:print:]' '[?*]'; }
# refuse KEY VALUE ALLOWED: the one line that refuses a value, then exit 2
refuse() { printf 'error: %s=%s: allowed: %s\n' "$1" "$(shown "$2")" "$3" >&2; exit 2; }

dry_run=0
skip_recorded=
expect_report=0
line_break='
'
for argument do
    shift
    case $argument in  # the plan holds one command per line: a line break would make a second one
        *"$line_break"*)
            printf 'error: %s: allowed: an argument on one line (no line break)\n' "$(shown "$argument")" >&2
            exit 2 ;;
    esac
    if [ "$expect_report" = 1 ]; then skip_recorded=$argument; expect_report=0; continue; fi
    case $argument in
        -n|--dry-run) dry_run=1 ;;
        --skip-recorded) expect_report=1 ;;
        --skip-recorded=*) skip_recorded=${argument#--skip-recorded=} ;;
        -h|--help) usage; exit 0 ;;
        -*) printf 'error: unknown option %s\n' "$(shown "$argument")" >&2; usage >&2; exit 2 ;;
        *) set -- "$@" "$argument" ;;
    esac
done
if [ "$expect_report" = 1 ]; then echo "error: --skip-recorded needs a report folder (docs/reproduction)" >&2; exit 2; fi
if [ $# -eq 0 ]; then usage >&2; exit 2; fi

# JOBS, when given, is a positive integer (xargs -P 0 would start every job at once); empty: the default.
if [ -n "${JOBS:-}" ]; then
    case $JOBS in
        '' | *[!0-9]*) jobs_ok=0 ;;
        *) if [ "$JOBS" -ge 1 ] 2>/dev/null; then jobs_ok=1; else jobs_ok=0; fi ;;
    esac
    if [ "$jobs_ok" = 0 ]; then refuse JOBS "$JOBS" "a positive integer (jobs run at a time on the CPU)"; fi
fi
case ${FORCE:-} in
    '' | 0 | 1) ;;
    *) refuse FORCE "$FORCE" "1 (rerun finished runs: force=true), 0 or empty" ;;
esac

gpu_source=GPUS
if [ "${GPUS+set}" = set ]; then
    gpu_value=$GPUS
    gpus=$GPUS
elif [ "${CUDA_VISIBLE_DEVICES+set}" = set ]; then
    gpu_source=CUDA_VISIBLE_DEVICES
    gpu_value=$CUDA_VISIBLE_DEVICES
    gpus=$(printf '%s\n' "$CUDA_VISIBLE_DEVICES" | tr ',' ' ')
elif command -v nvidia-smi >/dev/null 2>&1; then
    gpu_value=
    gpus=$(nvidia-smi -L 2>/dev/null | sed -n 's/^GPU \([0-9][0-9]*\):.*/\1/p' | tr '\n' ' ')
else
    gpu_value=
    gpus=
fi
# The ids, one word each (split on blanks, never globbed); an id is an index or a GPU-/MIG- UUID.
gpu_count=0
gpus_shown=
for gpu in $gpus; do
    case $gpu in
        *[!0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz/-]*)
            refuse "$gpu_source" "$gpu_value" "GPU indices and UUIDs as nvidia-smi -L lists them (letters, digits, - and /), or GPUS= (empty) to run on the CPU" ;;
    esac
    gpu_count=$((gpu_count + 1))
    gpus_shown=${gpus_shown:+$gpus_shown }$gpu
done

# This machine's GPUs: the indices and UUIDs (GPU-..., MIG-...) nvidia-smi lists, else the indices torch
# counts (without CUDA_VISIBLE_DEVICES, which the ids asked for refer to).
machine_gpus() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | sed -n -e 'h' -e 's/^GPU \([0-9][0-9]*\):.*/\1/p' \
            -e 'g' -e 's/.*(UUID: \([^)]*\)).*/\1/p'
    else
        (unset CUDA_VISIBLE_DEVICES; "$PYTHON" -c \
            'import torch; print(*range(torch.cuda.device_count()), sep="\n")') 2>/dev/null || true
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
    gpu_problem="$gpu_source=$gpus_shown: no GPU$missing_gpus on this machine; allowed: ${listed:+$listed(or their UUIDs), or }GPUS= (empty) to run on the CPU"
    if [ "$dry_run" = 0 ]; then printf 'error: %s\n' "$gpu_problem" >&2; exit 2; fi
fi

# Overrides every job gets, before the user's (a user's KEY=VALUE wins).
runner_overrides=
if [ "$gpu_count" -eq 0 ]; then runner_overrides="threads=1"; fi
if [ "${FORCE:-0}" = 1 ]; then runner_overrides="$runner_overrides force=true"; fi

# The plan is this script's one temporary file: removed on every exit, also by HUP, INT, QUIT, PIPE (a
# dry run read by `| head`) or TERM (the planner is stopped too); then the script dies of that signal.
# Only SIGKILL leaves it behind.
plan=
planner=
remove_temporary_files() {
    if [ -n "$planner" ]; then kill "$planner" 2>/dev/null || true; planner=; fi
    if [ -n "$plan" ]; then rm -f -- "$plan"; plan=; fi
}
died_of() {  # died_of SIGNAL STATUS
    remove_temporary_files
    trap - "$1" EXIT
    kill -s "$1" $$
    exit "$2"
}
trap remove_temporary_files EXIT
trap 'died_of HUP 129' HUP
trap 'died_of INT 130' INT
trap 'died_of QUIT 131' QUIT
trap 'died_of PIPE 141' PIPE
trap 'died_of TERM 143' TERM
temporary_root=${TMPDIR:-/tmp}
case $temporary_root in /*) ;; *) temporary_root=./$temporary_root ;; esac  # never an option
plan=$(mktemp "$temporary_root/run_experiments.XXXXXX")
# In the background so that a signal stops the wait at once (the trap then stops the planner).
# shellcheck disable=SC2086  # runner_overrides: words without spaces, split on purpose
"$PYTHON" sweep_jobs.py --list --log --longest-first --python="$PYTHON" \
    ${skip_recorded:+--skip-recorded "$skip_recorded"} $runner_overrides "$@" > "$plan" &
planner=$!
planned=0
wait "$planner" || planned=$?
planner=
if [ "$planned" != 0 ]; then exit "$planned"; fi
log_dir=$(sed -n 's/^# job logs: //p' < "$plan")
job_count=$(grep -vc '^#' < "$plan" || true)

# RUN_LINE runs line $2 of the jobs file $1 (a complete shell command that appends to its log),
# framed by start and exit lines; RUN_QUEUE runs every line of the jobs file $1, $2 at a time.
RUN_LINE='job=$(sed -n "${2}p" < "$1")
printf "[%s] start: %s\n" "$(date "+%F %T")" "$job"
sh -c "$job" < /dev/null
status=$?
printf "[%s] exit %s: %s\n" "$(date "+%F %T")" "$status" "$job"
[ "$status" -eq 0 ]'
RUN_QUEUE='awk "END { for (i = 1; i <= NR; i++) print i }" < "$1" | xargs -n 1 -P "$2" sh -c "$RUN_LINE" run_line "$1"'
export RUN_LINE

# jobs_of_queue Q N [PREFIX]: the job lines of queue Q of N (jobs dealt round-robin), each after PREFIX.
jobs_of_queue() {
    queue_index=$1 queue_count=$2 line_prefix=${3:-} awk '!/^#/ {
        if (job++ % ENVIRON["queue_count"] == ENVIRON["queue_index"] + 0) print ENVIRON["line_prefix"] $0
    }' < "$plan"
}
# queue_name GPU Q: sets queue_stem, the file names' part for queue Q: gpu<id>, each character of the
# id outside [A-Za-z0-9._-] as _ (a MIG id's / would make folders), .qQ added when the id came before.
seen_gpus=' '
queue_name() {
    queue_stem=gpu$(printf '%s' "$1" | LC_ALL=C tr -c '._0-9A-Za-z-' '[_*]')
    case $seen_gpus in *" $1 "*) queue_stem=$queue_stem.q$2 ;; esac
    seen_gpus="$seen_gpus$1 "
}

if [ "$dry_run" = 1 ]; then
    (  # a subshell: a reader that stops early (| head) ends it quietly (SIGPIPE); the EXIT trap cleans up
        cat < "$plan"
        if [ -n "$missing_gpus" ]; then printf '%s\n' "# note: a real run refuses this plan: $gpu_problem"; fi
        if [ "$gpu_count" -gt 0 ]; then
            printf '%s\n' "# plan: $gpu_count GPU queues (GPUS=\"$gpus_shown\"), each running its jobs one after another in the background (nohup)"
            queue=0
            for gpu in $gpus; do
                queue_name "$gpu" "$queue"
                printf '%s\n' "# queue gpu$gpu: $(jobs_of_queue "$queue" "$gpu_count" | grep -c . || true) jobs, follow: tail -f $log_dir/queue-<time>-$queue_stem.log"
                jobs_of_queue "$queue" "$gpu_count" "CUDA_VISIBLE_DEVICES=$gpu "
                queue=$((queue + 1))
            done
        else
            echo "# plan: $job_count jobs on the CPU, ${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)} at a time, threads=1 each"
            printf '%s\n' "# follow: tail -f $log_dir/<job name>.log"
        fi
    )
    exit 0
fi

mkdir -p -- "$log_dir"
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
        queue_name "$gpu" "$queue"
        jobs_file=$log_dir/queue-$stamp-$queue_stem.jobs
        queue_log=$log_dir/queue-$stamp-$queue_stem.log
        jobs_of_queue "$queue" "$gpu_count" > "$jobs_file"
        CUDA_VISIBLE_DEVICES=$gpu $launch sh -c "$RUN_QUEUE" run_queue "$jobs_file" 1 \
            > "$queue_log" 2>&1 < /dev/null &
        pids="$pids $!"
        printf '%s\n' "queue gpu$gpu: $(grep -c . < "$jobs_file" || true) jobs, pid $!, log $queue_log"
        queue=$((queue + 1))
    done
    remove_temporary_files
    echo "started $job_count jobs on $gpu_count GPUs in the background."
    printf '%s\n' "follow:  tail -f $log_dir/queue-$stamp-gpu*.log      (each job: $log_dir/<job name>.log)"
    echo "stop:    $stop; queue PIDs:$pids"
else
    workers=${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}
    run=$log_dir/run-$(date +%Y%m%d-%H%M%S)-$$
    grep -v '^#' < "$plan" > "$run.jobs"
    # the plan is copied: no temporary file is left, so signals again act as they would without traps
    remove_temporary_files
    trap - EXIT HUP INT QUIT PIPE TERM
    printf '%s\n' "# command: sh run_experiments.sh $*" > "$run.log"
    printf '%s\n' "running $job_count jobs on the CPU, $workers at a time (threads=1 each); start and exit lines: $run.log"
    printf '%s\n' "follow:  tail -f $log_dir/<job name>.log      (all: tail -f $log_dir/*.log)"
    # the queue's start/exit lines go to the terminal and to $run.log (the report reads its wall time)
    { sh -c "$RUN_QUEUE" run_queue "$run.jobs" "$workers"; echo $? > "$run.status"; } | tee -a -- "$run.log"
    status=$(cat < "$run.status")
    rm -f -- "$run.status"
    if [ "$status" = 0 ]; then
        printf '%s\n' "done: $job_count jobs. Summary: $PYTHON summarize_runs.py ${log_dir%/jobs} --out summaries/"
    else
        printf '%s\n' "finished, but some jobs failed: see the 'exit' lines above and their logs in $log_dir/" >&2
        exit 1
    fi
fi
