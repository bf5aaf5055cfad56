"""Warm workers for the CPU queue: a sweep pays Python's and torch's start-up once per worker, not per job.

    python sweep_worker.py pool FOLDER --workers 2     # what run_experiments.sh starts for a CPU queue

run_experiments.sh (without GPUs) starts one pool of JOBS workers and gives its folder to the queue's
jobs in EQUI_SEPARATION_WORKERS. A job line stays what it was, `python representation_dynamics_terminal.py
ARGS >> LOG 2>&1`; that process, seeing the variable, imports nothing heavy: it takes a free worker (an
flock on FOLDER/worker-K.lock), hands it its arguments, working directory, environment and its stdin,
stdout and stderr (the job log: file descriptors over a Unix socket), waits and exits with the job's exit
status. The worker (torch, Hydra and the project's code imported once, forked from the pool after the
imports) runs the job exactly as the entry point's own process would (representation_dynamics_terminal.
command_line: compose, validate, seed, set up, train, measure, write), with the job's file descriptors on
its 0, 1 and 2, then resets the global state the job set (JobState: torch threads, RNG states,
deterministic and denormal flags, default dtype, grad mode, matplotlib rcParams and figures, logging
handlers -- Hydra's job log file handler included --, warnings filters, signal handlers, Hydra's
singletons, cwd, environment, sys.argv) and waits for the next. So run folders, job logs, exit statuses
and results.json's numbers are those of a job run as its own process (tests/test_workers.py).

A job that fails (a traceback: exit 1) or is refused (exit 2) leaves its worker running. SIGTERM to a
job's process (the queue stopping it) stops the job inside its worker as it would stop its own process
(SystemExit(143): temporary files removed, no partial run); the worker then takes the next job. When no
worker answers (no pool, a worker that died, a different interpreter or start-up-only variable such as
OMP_NUM_THREADS), the job runs as its own process, as it always did. The pool ends with SIGTERM, or when
the script that started it is gone.
"""
from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import math
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path

WORKERS_ENV = "EQUI_SEPARATION_WORKERS"   # the pool's folder; set by run_experiments.sh for its CPU queue
ENTRY = Path(__file__).resolve().parent / "representation_dynamics_terminal.py"
# Environment variables that a process reads once, at start-up (threads, kernels, allocators, hashing):
# a job whose values differ from its worker's runs as its own process instead.
START_UP_ENV_PREFIXES = ("OMP_", "MKL_", "KMP_", "GOMP_", "ATEN_", "ONEDNN_", "DNNL_", "TORCH_", "PYTORCH_",
                         "CUDA_", "LD_", "MALLOC_", "PYTHON", "PIN_CPU_KERNELS")
STOP = b"stop\n"            # client -> worker: the job's process got SIGTERM (or HUP, INT): stop the job
STOPPED_STATUS = 128 + signal.SIGTERM   # the entry point's status when SIGTERM stops it


# ------------------------------------------------------------------------------------------ messages
def send_message(connection: socket.socket, message: dict, fds: list[int] = ()) -> None:
    data = json.dumps(message).encode()
    payload = struct.pack("!I", len(data)) + data
    sent = socket.send_fds(connection, [payload], list(fds)) if fds else connection.send(payload)
    if sent < len(payload):
        connection.sendall(payload[sent:])


def receive_message(connection: socket.socket, max_fds: int = 0) -> tuple[dict | None, list[int]]:
    """(message, the file descriptors that came with it); (None, []) when the peer closed first."""
    data, fds, _, _ = socket.recv_fds(connection, 65536, max_fds) if max_fds else (connection.recv(65536), [], 0, 0)
    while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
        more = connection.recv(65536)
        if not more:
            for fd in fds:
                os.close(fd)
            return None, []
        data += more
    return json.loads(data[4:4 + struct.unpack("!I", data[:4])[0]]), fds


def socket_address(folder: Path, number: int) -> str:
    return str(Path(folder) / f"worker-{number}.sock")


def at_address(action, address: str) -> None:
    """action(address) (a socket's connect or bind), from inside the address's folder where the path is
    longer than a socket address may be."""
    if len(os.fsencode(address)) < 100:
        action(address)
        return
    here = os.open(".", os.O_RDONLY)
    try:
        os.chdir(os.path.dirname(address))
        action(os.path.basename(address))
    finally:
        os.fchdir(here)
        os.close(here)


def start_up_environment(environment) -> dict:
    return {key: value for key, value in environment.items() if key.startswith(START_UP_ENV_PREFIXES)
            and key != WORKERS_ENV}


# --------------------------------------------------------------------------------------- the client
def run_in_worker_if_queued(argv: list[str]) -> None:
    """In a job's process: when a worker of the queue's pool (WORKERS_ENV) takes the job, wait for it and
    exit with the job's status; otherwise return, and the process runs the job itself."""
    folder = os.environ.get(WORKERS_ENV)
    if not folder or not os.path.isdir(folder):
        return
    for lock_path in sorted(Path(folder).glob("worker-*.lock")):
        try:
            lock = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            continue
        status = _run_in(socket_address(folder, int(lock_path.stem.rsplit("-", 1)[1])), argv)
        if status is not None:
            sys.stdout.flush()
            os._exit(status)   # the lock goes with the process
        os.close(lock)


def _run_in(address: str, argv: list[str]) -> int | None:
    """The job's exit status from the worker at `address`, or None when it does not take the job."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        at_address(connection.connect, address)
        send_message(connection, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                                  "executable": os.path.realpath(sys.executable)}, [0, 1, 2])
        answer, _ = receive_message(connection)
    except OSError:
        connection.close()
        return None
    if not answer or not answer.get("accepted"):
        connection.close()
        return None

    def stop(_signal_number, _frame):
        try:
            connection.sendall(STOP)
        except OSError:
            pass
    for stopping in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        if signal.getsignal(stopping) is not signal.SIG_IGN:
            signal.signal(stopping, stop)
    while True:
        try:
            answer, _ = receive_message(connection)
            break
        except InterruptedError:
            continue
        except OSError:
            answer = None
            break
    if answer is None or "status" not in answer:   # the worker died under the job
        print(f"error: the worker running this job (pid {answer and answer.get('pid')}) ended without its exit "
              "status; rerun the job", file=sys.stderr, flush=True)
        return 1
    return int(answer["status"])


# ----------------------------------------------------------------------------------- global state
class JobState:
    """The process-wide state a job may change, captured before it and put back after it, so that the next
    job starts as in a fresh process: torch threads, RNG states (torch, CUDA, random, numpy), the
    deterministic (and its memory fill), denormal and cuDNN flags, default dtype, grad mode, matplotlib's
    rcParams and open figures, every logger's handlers, level and propagation (handlers the job added are
    closed: Hydra's job log file handler), warnings filters, signal handlers, Hydra's global singletons,
    the working directory, the environment and sys.argv."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

    def __init__(self):
        import logging
        import random
        import warnings

        import numpy
        import torch

        self.cwd = os.getcwd()
        self.environment = dict(os.environ)
        self.argv = list(sys.argv)
        self.threads = torch.get_num_threads()
        self.torch_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.python_rng = random.getstate()
        self.numpy_rng = numpy.random.get_state()
        self.deterministic = (torch.are_deterministic_algorithms_enabled(),
                              torch.is_deterministic_algorithms_warn_only_enabled(),
                              torch.utils.deterministic.fill_uninitialized_memory)
        self.cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
        self.dtype = torch.get_default_dtype()
        self.grad = torch.is_grad_enabled()
        self.warnings = list(warnings.filters)
        self.signals = {number: signal.getsignal(number) for number in self.SIGNALS}
        self.loggers = {name: (logger.handlers[:], logger.level, logger.propagate, logger.disabled)
                        for name, logger in [("", logging.root), *logging.root.manager.loggerDict.items()]
                        if isinstance(logger, logging.Logger)}
        self.rc = None
        if "matplotlib" in sys.modules:
            import matplotlib

            self.rc = matplotlib.rcParams.copy()

    def restore(self, reset_hydra: bool = True) -> None:
        """Put the state back; reset_hydra: also clear Hydra's singletons (not inside a Hydra job, whose
        launcher still needs them)."""
        import logging
        import random
        import warnings

        import numpy
        import torch

        sys.stdout.flush()
        sys.stderr.flush()
        for name, logger in [("", logging.root), *logging.root.manager.loggerDict.items()]:
            if not isinstance(logger, logging.Logger):
                continue
            handlers, level, propagate, disabled = self.loggers.get(name, ([], logging.NOTSET, True, False))
            for handler in logger.handlers:
                if handler not in handlers:
                    handler.close()
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled
        if "matplotlib" in sys.modules:
            import matplotlib
            import matplotlib.pyplot as plt

            plt.close("all")
            if self.rc is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    matplotlib.rcParams.update(self.rc)
        warnings.filters[:] = self.warnings
        for number, handler in self.signals.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        if reset_hydra and "hydra" in sys.modules:
            from hydra.core.global_hydra import GlobalHydra
            from hydra.core.hydra_config import HydraConfig

            GlobalHydra.instance().clear()
            HydraConfig.instance().cfg = None
        torch.set_num_threads(self.threads)
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        random.setstate(self.python_rng)
        numpy.random.set_state(self.numpy_rng)
        torch.use_deterministic_algorithms(self.deterministic[0], warn_only=self.deterministic[1])
        torch.utils.deterministic.fill_uninitialized_memory = self.deterministic[2]
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = self.cudnn
        torch.set_default_dtype(self.dtype)
        torch.set_grad_enabled(self.grad)
        torch.set_flush_denormal(False)   # a fresh process's; torch cannot read it back
        os.chdir(self.cwd)
        os.environ.clear()
        os.environ.update(self.environment)
        sys.argv[:] = self.argv


@contextlib.contextmanager
def job_state(reset_hydra: bool = False):
    """Run the body with JobState captured before it and restored after it, however it ends."""
    state = JobState()
    try:
        yield
    finally:
        state.restore(reset_hydra)


def global_state() -> dict:
    """What JobState resets, as comparable values (tests compare a worker's job with a fresh process's):
    the RNG states as hashes (a fresh process's differ from the next one's: Python and numpy seed from the
    OS, torch too), flush-denormal by its effect (a subnormal times 1 is 0 when flushed), logging
    by each logger's level and handler classes, and the open log files."""
    import hashlib
    import logging
    import random
    import warnings

    import numpy
    import torch

    def digest(value) -> str:
        return hashlib.sha256(repr(value).encode()).hexdigest()[:16]

    state = {
        "threads": torch.get_num_threads(),
        "torch_rng": digest(torch.get_rng_state().tolist()),
        "python_rng": digest(random.getstate()),
        "numpy_rng": digest([array.tolist() if hasattr(array, "tolist") else array
                             for array in numpy.random.get_state()]),
        "deterministic": [torch.are_deterministic_algorithms_enabled(),
                          torch.is_deterministic_algorithms_warn_only_enabled(),
                          torch.utils.deterministic.fill_uninitialized_memory],
        "cudnn": [torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic],
        "flush_denormal": float(torch.tensor([1e-40]) * torch.tensor([1.0])) == 0.0,
        "dtype": str(torch.get_default_dtype()),
        "grad": torch.is_grad_enabled(),
        "warnings": len(warnings.filters),
        "signals": {signal.Signals(number).name: getattr(signal.getsignal(number), "__qualname__",
                                                          str(signal.getsignal(number)))
                    for number in (signal.SIGINT, signal.SIGHUP)},
        "loggers": {name: [logger.level, logger.propagate, sorted(type(h).__name__ for h in logger.handlers)]
                    for name, logger in [("", logging.root), *logging.root.manager.loggerDict.items()]
                    if isinstance(logger, logging.Logger) and (logger.handlers or logger.level)},
        "open_log_files": sorted(str(handler.baseFilename) for reference in logging._handlerList
                                 if isinstance(handler := reference(), logging.FileHandler)
                                 and handler.stream is not None),
        "cwd": os.getcwd(),
        "environment": digest(sorted((key, value) for key, value in os.environ.items()
                                     if key not in ("EQUI_SEPARATION_NEW_RUN_DIRS", "PYTHONPATH", WORKERS_ENV))),
    }
    if "matplotlib" in sys.modules:
        import matplotlib
        import matplotlib.pyplot as plt

        state["matplotlib"] = [digest(sorted((k, str(v)) for k, v in matplotlib.rcParams.items())),
                               len(plt.get_fignums())]
    return state


# ---------------------------------------------------------------------------------------- the worker
class Worker:
    """Serves the jobs that come to one socket, one at a time, each inside this process (run_job)."""

    def __init__(self, listener: socket.socket, start_up: dict, ready: Path):
        self.listener = listener
        self.start_up = start_up    # the pool's start-up variables, before its imports set any
        self.ready = ready          # removed by the pool when it ends
        self.executable = os.path.realpath(sys.executable)
        self.running = False        # a job runs (the main thread is inside run_job)
        self.stop_sent = False      # its client asked to stop it (the watcher sent this process SIGTERM)
        self.exit_requested = False
        self.guard = threading.Lock()

    def terminate(self, _signal_number, _frame):
        """SIGTERM outside a job's own handler (the entry point's, once per job): end this worker, stopping
        a job that has not yet installed its handler as that handler would."""
        if not self.stop_sent:
            self.exit_requested = True
        raise SystemExit(STOPPED_STATUS if self.running else 0)

    def serve(self, parent: int) -> None:
        signal.signal(signal.SIGTERM, self.terminate)
        self.listener.settimeout(1.0)
        while not self.exit_requested and os.getppid() == parent and self.ready.exists():
            try:
                connection, _ = self.listener.accept()
            except (socket.timeout, InterruptedError):
                continue
            except SystemExit:
                break
            connection.settimeout(None)
            with connection:
                try:
                    self.serve_one(connection)
                except SystemExit:   # SIGTERM between jobs
                    break
                except OSError:
                    continue

    def serve_one(self, connection: socket.socket) -> None:
        request, fds = receive_message(connection, max_fds=3)
        if request is None:
            return
        try:
            if len(fds) != 3 or request["executable"] != self.executable or (
                    start_up_environment(request["env"]) != self.start_up):
                send_message(connection, {"accepted": False, "pid": os.getpid()})
                return
            send_message(connection, {"accepted": True, "pid": os.getpid()})
            done = threading.Event()

            def watch():   # the client's STOP (or its end) while the job runs: SIGTERM, as to a process
                try:
                    while not done.is_set():
                        data = connection.recv(64)
                        if not data or STOP in data:
                            break
                except OSError:
                    return
                with self.guard:
                    if self.running and not self.stop_sent:
                        self.stop_sent = True
                        os.kill(os.getpid(), signal.SIGTERM)
            threading.Thread(target=watch, daemon=True).start()
            status = self.run_job(request, fds)
            done.set()
            try:
                send_message(connection, {"status": status, "pid": os.getpid()})
            except OSError:
                pass
        finally:
            for fd in fds:
                os.close(fd)

    def run_job(self, request: dict, fds: list[int]) -> int:
        """The job's exit status, run as `python representation_dynamics_terminal.py ARGV` would run it,
        with the job's stdin, stdout and stderr, cwd and environment; the global state reset after it."""
        import traceback

        import representation_dynamics_terminal as entry
        from cpu_kernels import pin_cpu_kernels

        state = JobState()   # restored with reset_hydra: the next job's Hydra starts afresh
        sys.stdout.flush()
        sys.stderr.flush()
        saved = [os.dup(fd) for fd in (0, 1, 2)]
        status = 0
        try:
            for fd, target in zip(fds, (0, 1, 2)):
                os.dup2(fd, target)
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            pin_cpu_kernels()   # as the job's own process sets them at its start (cpu_kernels.py)
            sys.argv[:] = [str(ENTRY), *request["argv"]]
            with self.guard:
                self.stop_sent, self.running = False, True
            try:
                entry.command_line(list(request["argv"]))
            except SystemExit as ended:
                status = exit_status(ended.code)
            except KeyboardInterrupt:
                traceback.print_exc()
                status = 128 + signal.SIGINT
            except BaseException:   # noqa: BLE001  (what an uncaught exception does to a process)
                traceback.print_exc()
                status = 1
            finally:
                with self.guard:
                    self.running = False
        finally:
            try:
                state.restore()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, target in zip(saved, (0, 1, 2)):
                    os.dup2(fd, target)
                    os.close(fd)
        return status


def exit_status(code) -> int:
    """The exit status of a process that ends with SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr, flush=True)
    return 1


def warm_up() -> None:
    """Import what jobs use, once: torch, Hydra, the project's modules, matplotlib (through plotting) and
    torch._dynamo, which torch.optim imports at a job's first optimizer (1 s on the 2-core Xeon). Imports
    only: no torch operation runs before the fork."""
    sys.path.insert(0, str(ENTRY.parent))
    import torch._dynamo  # noqa: F401

    import plotting  # noqa: F401
    import representation_dynamics_terminal  # noqa: F401


def pool(folder: Path, workers: int) -> None:
    """Bind one socket per worker in `folder` (and its lock file), import once, fork the workers and keep
    them running (a worker that dies is replaced) until SIGTERM or until this process's parent is gone."""
    folder = Path(folder)
    parent = os.getppid()
    start_up = start_up_environment(os.environ)
    listeners = {}
    for number in range(1, workers + 1):
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        at_address(listener.bind, socket_address(folder, number))
        listener.listen(8)
        (folder / f"worker-{number}.lock").touch()
        listeners[number] = listener
    (folder / "ready").touch()        # clients may connect now: they wait in the backlog until the imports end
    ending = []
    signal.signal(signal.SIGTERM, lambda *_: ending.append(True))
    gc.disable()   # the imports' objects are frozen, never scanned by a worker's collections
    warm_up()
    gc.freeze()
    gc.enable()
    children: dict[int, int] = {}     # pid -> worker number
    me = os.getpid()
    # SIGTERM and a worker's end (SIGCHLD) write to this pipe, which wakes the loops below at once
    wake_up, woken = os.pipe()
    os.set_blocking(woken, False)
    signal.set_wakeup_fd(woken)
    signal.signal(signal.SIGCHLD, lambda *_: None)

    def wait_for_a_signal(seconds: float) -> None:
        if select.select([wake_up], [], [], seconds)[0]:
            os.read(wake_up, 512)

    def start(number: int) -> None:
        pid = os.fork()
        if pid == 0:
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.close(wake_up)
                os.close(woken)
                for other, listener in listeners.items():
                    if other != number:
                        listener.close()
                Worker(listeners[number], start_up, folder / "ready").serve(me)
            finally:
                os._exit(0)
        children[pid] = number

    def reaped() -> int | None:
        """The pid of a child that ended (now reaped), else None; with no child left, none is a worker."""
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return None
        if pid:
            children.pop(pid, None)
            return pid
        return None

    for number in listeners:
        start(number)
    while not ending and os.getppid() == parent and children:
        numbers = dict(children)
        if (pid := reaped()) is not None:
            if not ending and pid in numbers:
                start(numbers[pid])   # a worker that died: a new one, forked warm
            continue
        wait_for_a_signal(1.0)
    (folder / "ready").unlink(missing_ok=True)   # a worker that missed its SIGTERM ends at its next look
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while children:
        if reaped() is not None:
            continue
        if time.monotonic() > deadline:
            for pid in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            deadline = math.inf
        wait_for_a_signal(0.5)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("pool", help="serve the jobs of a CPU queue from FOLDER's sockets")
    serve.add_argument("folder", type=Path)
    serve.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    pool(args.folder, max(args.workers, 1))
    # The workers are reaped and the pool holds no file of its own: an exit without the interpreter's
    # teardown of torch, Hydra and matplotlib (1-2 s at the end of every CPU sweep on the 2-core Xeon).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
