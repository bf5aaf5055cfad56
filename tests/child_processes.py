"""preexec_fn for the children that tests interrupt: the stop signals at their defaults, as in a terminal.

A suite started in the background (`make test &`: SIGINT and SIGQUIT ignored) or under nohup (SIGHUP
ignored) would pass the ignored signals on to its children, and a shell cannot trap a signal that was
ignored when it started: the tests that send them would fail for how the suite was started.
"""
from __future__ import annotations

import signal


def default_signals() -> None:
    for sent in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM):
        signal.signal(sent, signal.SIG_DFL)
