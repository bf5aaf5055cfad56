"""Helpers of the tests that start, interrupt or call commands: the stop signals of a child at their
defaults, whether a process still runs, a command's main() run in-process for its exit status and
output, and a call that must not block.

A suite started in the background (`make test &`: SIGINT and SIGQUIT ignored) or under nohup (SIGHUP
ignored) would pass the ignored signals on to its children, and a shell cannot trap a signal that was
ignored when it started: the tests that send them would fail for how the suite was started.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest


def default_signals() -> None:
    """preexec_fn of a child that a test interrupts."""
    for sent in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM):
        signal.signal(sent, signal.SIG_DFL)


def state_and_parent(pid: int) -> tuple[str, int] | None:
    """Process pid's state letter (Z: a zombie) and its parent's pid from /proc, or None when it is gone."""
    try:
        state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
        return state, int(parent)
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def running(pid: int) -> bool:
    """Whether process pid exists and is no zombie."""
    return (state_and_parent(pid) or ("Z", 0))[0] != "Z"


def running_children(pid: int) -> set[int]:
    """The running processes whose parent is pid."""
    return {child for child in (int(path.name) for path in Path("/proc").glob("[0-9]*"))
            if (found := state_and_parent(child)) is not None and found[1] == pid and found[0] != "Z"}


def main_outcome(capsys, main, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of main(argv) run in this process."""
    try:
        main([str(argument) for argument in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def finishes(function, seconds: float = 20):
    """function() run in a thread: its result or the exception it raised, or pytest.fail when it has not
    returned within `seconds` (a hang)."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function()
        except BaseException as error:   # noqa: BLE001  (handed to the test)
            outcome["error"] = error
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: it blocks")
    return outcome.get("error", outcome.get("value"))
