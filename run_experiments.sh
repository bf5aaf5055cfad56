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
# GPU runs two jobs at once. This script then returns; the queues go on after you log out. `kill PID`
# (the PID it prints) stops a queue: its running job gets SIGTERM, its log ends with the summary.
# GPU ids that this machine does not have are refused (a dry run notes them and still shows the plan);
# an id is an index or a UUID (letters, digits, - and /; a MIG id's / is _ in its queue's file names).
# Without GPUs (or with GPUS="") the jobs run here, JOBS at a time (a positive integer; default: one per
# CPU core), each with threads=1, in JOBS warm worker processes (sweep_worker.py: torch imported once; each
# job's line hands its job to a free worker, which resets the global state after it), the same runs.
# Each job appends its output to <log_root>/jobs/<job name>.log (log_root defaults to logs/). A queue
# prints a start and an exit line per job ([k/N], the time taken, the jobs done and the time left) and
# ends with a summary (N finished, M failed, K not run, the logs of the failed jobs). A job the entry point
# refuses (exit 2: a missing dataset, an invalid value) stops its queue with its one-line reason (jobs
# running beside it finish; none starts). On the CPU the exit status is 0 when every job finished, 1 when
# some failed, 2 after a refusal; Ctrl-C (or HUP, TERM) stops the running jobs, prints the summary and
# the script dies of that signal.
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
plan_options=
if [ "$gpu_count" -eq 0 ]; then runner_overrides="threads=1"; plan_options="--warm-workers"; fi
if [ "${FORCE:-0}" = 1 ]; then runner_overrides="$runner_overrides force=true"; fi

# The plan is this script's one temporary file: removed on every exit, also by HUP, INT, QUIT, PIPE (a
# dry run read by `| head`) or TERM (the planner is stopped too); then the script dies of that signal.
# Only SIGKILL leaves it behind.
plan=
planner=
worker_pool=
workers_dir=
remove_temporary_files() {
    if [ -n "$planner" ]; then kill "$planner" 2>/dev/null || true; planner=; fi
    if [ -n "$plan" ]; then rm -f -- "$plan"; plan=; fi
    if [ -n "$worker_pool" ]; then kill "$worker_pool" 2>/dev/null || true; wait "$worker_pool" 2>/dev/null || true; worker_pool=; fi
    if [ -n "$workers_dir" ]; then rm -rf -- "$workers_dir"; workers_dir=; fi
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
# A CPU queue's warm workers (sweep_worker.py): JOBS processes that import torch and the code once (while
# the planner plans) and run the queue's jobs; each job line's process hands its job to a free worker
# (EQUI_SEPARATION_WORKERS) and waits for it, or runs it itself when none answers. Stopped on every exit.
if [ "$gpu_count" -eq 0 ] && [ "$dry_run" = 0 ]; then
    workers_dir=$(mktemp -d "$temporary_root/run_experiments-workers.XXXXXX")
    "$PYTHON" sweep_worker.py pool "$workers_dir" --workers "${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}" \
        > "$workers_dir/pool.log" 2>&1 < /dev/null &
    worker_pool=$!
fi
# In the background so that a signal stops the wait at once (the trap then stops the planner).
# shellcheck disable=SC2086  # runner_overrides, plan_options: words without spaces, split on purpose
"$PYTHON" sweep_jobs.py --list --log --longest-first --python="$PYTHON" $plan_options \
    ${skip_recorded:+--skip-recorded "$skip_recorded"} $runner_overrides "$@" > "$plan" &
planner=$!
planned=0
wait "$planner" || planned=$?
planner=
if [ "$planned" != 0 ]; then exit "$planned"; fi
log_dir=$(sed -n 's/^# job logs: //p' < "$plan")
job_count=$(grep -vc '^#' < "$plan" || true)

# The queue runner: one shell program, kept in a variable (a queue under nohup keeps the program it started
# with, whatever happens to this file), that runs the job lines of a jobs file (each a complete shell
# command that appends to its log) and ends with a summary:
#   sh -c 'eval "$QUEUE_SCRIPT"' run_queue queue JOBS_FILE WORKERS [COPY]
# runs every line, WORKERS at a time, printing a start and an exit line per job (also appended to the file
# COPY when given) and a closing summary. A job that exits 2 (the entry point refused its input: a missing
# dataset, an invalid value) stops the queue: jobs running beside it finish, no further job starts, since
# the others would be refused alike. SIGTERM, SIGHUP (or SIGINT where not ignored) stop it too: its running
# jobs get SIGTERM (the entry point then removes its temporary files). Exit status: 0 every job finished,
# 1 some failed, 2 stopped after a refusal, 128+n stopped by signal n. While it runs its state is the folder
# JOBS_FILE less .jobs plus .state (K.pid: the shell and job process of job K; K.exit: its exit status;
# refused/, interrupted/, K.stopped/: what happened), removed after the summary.
# xargs calls it once per job as `sh -c 'eval "$QUEUE_SCRIPT"' run_queue line JOBS_FILE COPY STATE COUNT STARTED K`.
QUEUE_SCRIPT=$(cat <<'END_OF_QUEUE_SCRIPT'
set -u
mode=$1 jobs_file=$2
now() { date +%s; }
clock() { date '+%F %T'; }
duration() {  # duration SECONDS: 42s, 3m05s or 1h02m
    if [ "$1" -ge 3600 ]; then printf '%dh%02dm' $(($1 / 3600)) $(($1 % 3600 / 60))
    elif [ "$1" -ge 60 ]; then printf '%dm%02ds' $(($1 / 60)) $(($1 % 60))
    else printf '%ds' "$1"; fi
}
say() {  # say TEXT: to stdout, and to the copy when there is one
    printf '%s\n' "$1"
    if [ -n "$copy" ]; then printf '%s\n' "$1" >> "$copy"; fi
}
shown() { printf '%s' "$1" | LC_ALL=C tr -c '[:print:]' '[?*]'; }
job_files() {  # job_files K: sets job (line K), job_log (its `>> LOG 2>&1`, unquoted) and job_name
    job=$(sed -n "${1}p" < "$jobs_file")
    job_log=$(printf '%s\n' "$job" | sed -n 's/.* >> \(.*\) 2>&1$/\1/p')
    case $job_log in "'"*"'")  # quoted by the planner (shlex): unquoted where it holds no quote itself
        unquoted=${job_log#"'"}; unquoted=${unquoted%"'"}
        case $unquoted in *"'"*) ;; *) job_log=$unquoted ;; esac ;;
    esac
    job_name=${job_log##*/}; job_name=${job_name%.log}
    if [ -z "$job_name" ]; then job_name="job $1"; fi
}
stop_job() {  # stop_job K: SIGTERM to job K, once, whoever asks first (the queue stopping, or the job)
    if [ -f "$state/$1.pid" ] && mkdir "$state/$1.stopped" 2>/dev/null; then
        read -r line_shell job_pid < "$state/$1.pid"
        kill -s TERM "$job_pid" 2>/dev/null || true
    fi
}

if [ "$mode" = line ]; then  # one job: line K of the jobs file
    copy=$3 state=$4 count=$5 started=$6 k=$7
    if [ -e "$state/refused" ] || [ -e "$state/interrupted" ]; then exit 0; fi  # stopping: not run
    job_files "$k"
    say "[$(clock)] start: [$k/$count] $job"
    trap 'signalled=1' TERM HUP  # stay until the job has ended, to record how it ended
    begun=$(now)
    sh -c "exec $job" < /dev/null &  # exec: the job's own process gets the queue's SIGTERM
    job_pid=$!
    printf '%s %s\n' "$$" "$job_pid" > "$state/$k.pid"
    if [ -e "$state/interrupted" ]; then stop_job "$k"; fi  # the queue stopped while this one started
    while :; do
        status=0
        wait "$job_pid" 2>/dev/null || status=$?  # (2>: no "Terminated" from the shell)
        if [ "$status" -gt 128 ] && kill -0 "$job_pid" 2>/dev/null; then continue; fi  # a signal, not the end
        break
    done
    took=$(( $(now) - begun ))
    refused=
    if [ "$status" = 2 ] && mkdir "$state/refused" 2>/dev/null; then  # the first refusal stops the queue
        reason=$(grep '^error:' "$job_log" 2>/dev/null | tail -n 1)
        refused=$(shown "$job_name: ${reason:-exit status 2 (its log: $job_log)}")
        printf '%s\n' "$refused" > "$state/refused/reason"
    fi
    done_count=$(( $(ls "$state" | grep -c '^done\.') + 1 ))  # this job's place among those done:
    while ! mkdir "$state/done.$done_count" 2>/dev/null; do  # one each
        if [ ! -d "$state" ]; then break; fi
        done_count=$((done_count + 1))
    done
    elapsed=$(( $(now) - started ))
    progress="$done_count/$count done in $(duration "$elapsed")"
    if [ "$done_count" -lt "$count" ] && [ ! -e "$state/refused" ] && [ ! -e "$state/interrupted" ]; then
        progress="$progress, about $(duration $(( elapsed * (count - done_count) / done_count ))) left"
    fi
    say "[$(clock)] exit $status: [$k/$count] $job_name after $(duration "$took"); $progress"
    if [ -n "$refused" ]; then say "stopping the queue: $job_name refused its input, as the other jobs would; none starts"; fi
    printf '%s\n' "$status" > "$state/$k.exit"  # last: the queue's summary waits for it
    exit 0
fi

# the queue
workers=$3 copy=${4:-}
state=${jobs_file%.jobs}.state
count=$(grep -c '' < "$jobs_file")
if [ "$count" -eq 0 ]; then say "summary: no jobs to run"; exit 0; fi
mkdir -p -- "$state"
started=$(now)
stopping=
stop_queue() {  # stop_queue SIGNAL: no job starts any more; the running ones get SIGTERM
    if [ -n "$stopping" ]; then return; fi
    stopping=$1
    mkdir "$state/interrupted" 2>/dev/null
    say "stopping the queue (SIG$1): its running jobs get SIGTERM; the jobs not started are not run"
    for pid_file in "$state"/*.pid; do
        [ -f "$pid_file" ] || continue
        k=${pid_file##*/}; k=${k%.pid}
        [ -f "$state/$k.exit" ] || stop_job "$k"
    done
}
trap 'stop_queue INT' INT
trap 'stop_queue TERM' TERM
trap 'stop_queue HUP' HUP
awk 'END { for (i = 1; i <= NR; i++) print i }' < "$jobs_file" |
    xargs -n 1 -P "$workers" sh -c 'eval "$QUEUE_SCRIPT"' run_queue line "$jobs_file" "$copy" "$state" "$count" "$started" &
xargs_pid=$!
while :; do  # in the background, so that a signal is acted on at once
    status=0
    wait "$xargs_pid" 2>/dev/null || status=$?
    if [ "$status" -gt 128 ] && kill -0 "$xargs_pid" 2>/dev/null; then continue; fi
    break
done
for pid_file in "$state"/*.pid; do  # a job whose xargs was killed: wait until its line has ended
    [ -f "$pid_file" ] || continue
    k=${pid_file##*/}; k=${k%.pid}
    read -r line_shell job_pid < "$pid_file"
    while [ ! -f "$state/$k.exit" ] && kill -0 "$line_shell" 2>/dev/null; do sleep 1; done
done

finished=0 failed=0 stopped=0 not_run=0 failed_logs=
k=1
while [ "$k" -le "$count" ]; do
    if [ -f "$state/$k.exit" ]; then
        read -r status < "$state/$k.exit"
        if [ "$status" = 0 ]; then finished=$((finished + 1))
        elif [ -d "$state/$k.stopped" ] || { [ -n "$stopping" ] && [ "$status" -gt 128 ]; }; then
            stopped=$((stopped + 1))  # by the queue, or by the signal that stopped it (sent to them all)
        else
            failed=$((failed + 1))
            if [ "$failed" -le 10 ]; then
                job_files "$k"
                failed_logs="$failed_logs
  $job_log (exit $status)"
            fi
        fi
    elif [ -f "$state/$k.pid" ]; then stopped=$((stopped + 1))  # its line was killed before it ended
    else not_run=$((not_run + 1)); fi
    k=$((k + 1))
done
if [ "$failed" -gt 10 ]; then failed_logs="$failed_logs
  and $((failed - 10)) more (their exit lines above)"; fi
summary="summary: $finished finished, $failed failed, "
if [ "$stopped" -gt 0 ]; then summary="${summary}$stopped stopped, "; fi
summary="${summary}$not_run not run (of $count jobs, $(duration $(( $(now) - started ))))"
if [ -n "$failed_logs" ]; then summary="$summary; logs of the failed jobs:$failed_logs"; fi
if [ -f "$state/refused/reason" ]; then
    read -r reason < "$state/refused/reason"
    say "stopped after a refused job: $reason"
fi
say "$summary"
if [ -f "$state/refused/reason" ]; then
    say "fix what the error names, then rerun the same command (finished runs are skipped)"
    result=2
elif [ -n "$stopping" ]; then
    say "rerun the same command to go on (finished runs are skipped)"
    case $stopping in HUP) result=129 ;; INT) result=130 ;; *) result=143 ;; esac
elif [ "$failed" -gt 0 ] || [ "$stopped" -gt 0 ]; then
    say "rerun the same command to run the failed jobs again (finished runs are skipped)"
    result=1
else
    result=0
fi
rm -rf -- "$state"
exit "$result"
END_OF_QUEUE_SCRIPT
)
export QUEUE_SCRIPT

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
    # plan_time WORKERS [QUEUE COUNT]: the estimated wall time of the plan's jobs, from the line
    # `# job estimate: SECONDS s ...` that sweep_jobs.py puts before each job (one CPU thread, start-up
    # included, or with --warm-workers paid once per worker: `# worker start-up:`): WORKERS at a time, each worker taking the next job in plan order when it is free (as
    # xargs -P does), or, given QUEUE and COUNT, the jobs of queue QUEUE of COUNT (dealt round-robin, as
    # jobs_of_queue deals them) one after another. Prints e.g. "about 3.5 h"; nothing when a job has none.
    plan_time() {
        workers=$1 queue_index=${2:-0} queue_count=${3:-1} awk '
            function shown(seconds) {
                if (seconds < 90) return sprintf("%.0f s", seconds)
                if (seconds < 5400) return sprintf("%.0f min", seconds / 60)
                return sprintf("%.1f h", seconds / 3600)
            }
            BEGIN { workers = ENVIRON["workers"] + 0; for (w = 1; w <= workers; w++) free[w] = 0; cost = "" }
            /^# worker start-up: [0-9]/ { for (w = 1; w <= workers; w++) free[w] = $4 + 0; next }
            /^# job estimate: [0-9]/ { cost = $4 + 0; next }
            /^#/ { next }
            {
                if (job++ % ENVIRON["queue_count"] == ENVIRON["queue_index"] + 0) {
                    if (cost == "") unknown = 1
                    else {
                        first = 1
                        for (w = 2; w <= workers; w++) if (free[w] < free[first]) first = w
                        free[first] += cost
                    }
                }
                cost = ""
            }
            END {
                if (unknown || job == 0) exit
                wall = 0
                for (w = 1; w <= workers; w++) if (free[w] > wall) wall = free[w]
                print "about " shown(wall)
            }' < "$plan"
    }
    (  # a subshell: a reader that stops early (| head) ends it quietly (SIGPIPE); the EXIT trap cleans up
        cat < "$plan"
        if [ -n "$missing_gpus" ]; then printf '%s\n' "# note: a real run refuses this plan: $gpu_problem"; fi
        if [ "$gpu_count" -gt 0 ]; then
            printf '%s\n' "# plan: $gpu_count GPU queues (GPUS=\"$gpus_shown\"), each running its jobs one after another in the background (nohup)"
            if [ -n "$(plan_time 1)" ]; then
                printf '%s\n' "# GPU times: no GPU run's time is committed, so a queue's time is the sum of its jobs' one-thread CPU estimates: CNNs and ResNets take far less on a GPU, the small MLPs as long or longer (README, GPUs and clusters)"
            fi
            queue=0
            for gpu in $gpus; do
                queue_name "$gpu" "$queue"
                took=$(plan_time 1 "$queue" "$gpu_count")
                printf '%s\n' "# queue gpu$gpu: $(jobs_of_queue "$queue" "$gpu_count" | grep -c . || true) jobs${took:+, $took at the CPU estimates}, follow: tail -f $log_dir/queue-<time>-$queue_stem.log"
                jobs_of_queue "$queue" "$gpu_count" "CUDA_VISIBLE_DEVICES=$gpu "
                queue=$((queue + 1))
            done
        else
            workers=${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}
            took=$(plan_time "$workers")
            echo "# plan: $job_count jobs on the CPU, $workers at a time, threads=1 each${took:+; $took of wall time (the estimates above)}"
            printf '%s\n' "# follow: tail -f $log_dir/<job name>.log"
        fi
    )
    exit 0
fi

mkdir -p -- "$log_dir"
if [ "$gpu_count" -gt 0 ]; then
    stamp=$(date +%Y%m%d-%H%M%S)
    launch=nohup
    if command -v setsid >/dev/null 2>&1; then launch="setsid nohup"; fi  # each queue in a session of its own
    queue=0
    pids=
    for gpu in $gpus; do
        queue_name "$gpu" "$queue"
        jobs_file=$log_dir/queue-$stamp-$queue_stem.jobs
        queue_log=$log_dir/queue-$stamp-$queue_stem.log
        jobs_of_queue "$queue" "$gpu_count" > "$jobs_file"
        CUDA_VISIBLE_DEVICES=$gpu $launch sh -c 'eval "$QUEUE_SCRIPT"' run_queue queue "$jobs_file" 1 \
            > "$queue_log" 2>&1 < /dev/null &
        pids="$pids $!"
        printf '%s\n' "queue gpu$gpu: $(grep -c . < "$jobs_file" || true) jobs, pid $!, log $queue_log"
        queue=$((queue + 1))
    done
    remove_temporary_files
    echo "started $job_count jobs on $gpu_count GPUs in the background."
    printf '%s\n' "follow:  tail -f $log_dir/queue-$stamp-gpu*.log      (each job: $log_dir/<job name>.log)"
    echo "stop:    kill PID (the queue stops its running job with SIGTERM, then ends its log with a summary); queue PIDs:$pids"
    echo "each queue's log ends with its summary: N finished, M failed, K not run (a refused job stops its queue)"
else
    workers=${JOBS:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)}
    run=$log_dir/run-$(date +%Y%m%d-%H%M%S)-$$
    grep -v '^#' < "$plan" > "$run.jobs"
    rm -f -- "$plan"  # the plan is copied; the workers are stopped on the way out (EXIT trap)
    plan=
    trap - PIPE
    printf '%s\n' "# command: sh run_experiments.sh $*" > "$run.log"
    printf '%s\n' "running $job_count jobs on the CPU, $workers at a time (threads=1 each); start and exit lines: $run.log"
    printf '%s\n' "follow:  tail -f $log_dir/<job name>.log      (all: tail -f $log_dir/*.log)"
    # The queue's start, exit and summary lines go to the terminal and to $run.log (the report reads its
    # wall time). It runs in the background (its jobs ignore SIGINT, as background jobs do): a HUP, INT,
    # QUIT or TERM to this script stops it (its running jobs get SIGTERM, it prints its summary), then this
    # script dies of that signal.
    EQUI_SEPARATION_WORKERS=$workers_dir sh -c 'eval "$QUEUE_SCRIPT"' run_queue queue "$run.jobs" "$workers" "$run.log" < /dev/null &
    queue_pid=$!
    signalled=
    stop_queue() {  # stop_queue SIGNAL STATUS
        if [ -n "$signalled" ]; then return; fi
        signalled="$1 $2"
        printf '%s\n' "interrupted (SIG$1): stopping the queue" | tee -a -- "$run.log"
        kill -s TERM "$queue_pid" 2>/dev/null || true
    }
    trap 'stop_queue HUP 129' HUP
    trap 'stop_queue INT 130' INT
    trap 'stop_queue QUIT 131' QUIT
    trap 'stop_queue TERM 143' TERM
    while :; do
        status=0
        wait "$queue_pid" || status=$?
        if [ "$status" -gt 128 ] && kill -0 "$queue_pid" 2>/dev/null; then continue; fi  # a signal, not its end
        break
    done
    if [ -n "$signalled" ]; then
        # shellcheck disable=SC2086  # signalled: a signal name and a number, split on purpose
        died_of $signalled
    fi
    if [ "$status" = 0 ]; then
        printf '%s\n' "done: $job_count jobs. Summary: $PYTHON summarize_runs.py ${log_dir%/jobs} --out summaries/"
    fi
    exit "$status"
fi
