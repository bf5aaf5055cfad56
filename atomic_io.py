"""Atomic file writes (a temporary file beside the target, then os.replace: readers see the old or the
new file, never half of one; a temporary whose name proves its writer dead is removed by the next write
of that file, nothing else is) and advisory file locks.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import math
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Callable


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot, /proc/PID/stat field 22), or None."""
    fields = _read(f"/proc/{pid}/stat")
    return fields.rpartition(")")[2].split()[19] if fields else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:
        return None


_BOOT_ID = (_read("/proc/sys/kernel/random/boot_id") or "").replace("-", "").strip()[:8]
_PID_MAX = int((_read("/proc/sys/kernel/pid_max") or "0").strip() or 0)


def owner_token(pid: int | None = None) -> str:
    """Who writes a temporary: boot, PID namespace, pid and the process's start time. Two processes
    alive at once never share it, and a pid reused after its writer died gets another start time."""
    pid = os.getpid() if pid is None else pid
    return f"{_BOOT_ID or '0' * 8}.{_pid_namespace() or 0}.{pid}.{_start_time(pid) or 0}"


_OWNER = r"(?P<boot>[0-9a-f]{8})\.(?P<ns>[0-9]+)\.(?P<pid>[0-9]+)\.(?P<start>[0-9]+)"
# .NAME.tmp-<owner token>-<mkstemp's 8 random characters>, ASCII only.
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.tmp-" + _OWNER + r"-[A-Za-z0-9_]{8}", re.ASCII)


def is_dead_owner(token: str) -> bool:
    """Whether the owner token (owner_token) provably names a process that has ended: it names this boot
    and this PID namespace (a writer in another container is never judged), a pid this system can
    give, and that pid is gone or
    belongs to another process now (another start time). Anything else is never judged dead."""
    match = re.fullmatch(_OWNER, token, re.ASCII)
    if not match or not _BOOT_ID or match["boot"] != _BOOT_ID or match["ns"] != _pid_namespace():
        return False
    if not 0 < int(match["pid"]) <= _PID_MAX:  # no process of this system ever had it
        return False
    return _start_time(int(match["pid"])) != match["start"]


def is_stale_temporary(path: Path) -> bool:
    """Whether `path` is provably a temporary of this module whose writer has died: a regular file (not
    a link or a folder) named with a full owner token that is_dead_owner judges dead."""
    match = _TEMPORARY.fullmatch(path.name)
    try:
        regular = stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False
    return bool(match) and regular and is_dead_owner(path.name[match.start("boot"):match.end("start")])


def read_small_text(path: Path | str, limit: int = 4096) -> str | None:
    """The stripped text of the regular file `path` if it holds at most `limit` bytes of UTF-8, else None
    (missing, a folder, a FIFO, too big, unreadable): for marker files, which anyone may have planted."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as handle:
            content = handle.read(limit + 1)
        return content.decode().strip() if len(content) <= limit else None
    except (OSError, UnicodeDecodeError):
        return None


def remove_stale_temporaries(path: Path | str) -> list[Path]:
    """Remove the temporaries of `path` (.NAME.tmp-...) that is_stale_temporary proves dead; returns them.
    Errors are ignored: a leftover never stops a write."""
    path = Path(path)
    removed = []
    for temporary in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        match = _TEMPORARY.fullmatch(temporary.name)
        if match and match["target"] == path.name and is_stale_temporary(temporary):
            with contextlib.suppress(OSError):
                temporary.unlink()
                removed.append(temporary)
    return removed


@contextlib.contextmanager
def atomic_path(path: Path | str):
    """Yield a temporary path beside `path`; on a clean exit fsync it, rename it onto `path` and remove
    the stale temporaries earlier writers of `path` left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.tmp-{owner_token()}-", dir=path.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(temporary)
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
        remove_stale_temporaries(path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def atomic_write(path: Path | str, write: Callable[[Path], None]) -> Path:
    """Run write(temporary_path) and move the result onto `path` atomically."""
    with atomic_path(path) as temporary:
        write(temporary)
    return Path(path)


def _json_safe(value):
    """JSON has no inf/nan: write them as the strings "inf", "-inf", "nan"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def atomic_write_json(path: Path | str, payload: dict) -> Path:
    text = json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n"
    return atomic_write(path, lambda temporary: temporary.write_text(text))


def atomic_torch_save(obj, path: Path | str) -> Path:
    import torch

    return atomic_write(path, lambda temporary: torch.save(obj, temporary))


def atomic_savefig(figure, path: Path | str, **kwargs) -> Path:
    suffix = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda temporary: figure.savefig(temporary, format=suffix, **kwargs))


@contextlib.contextmanager
def file_lock(path: Path | str, wait: bool = True):
    """Hold an exclusive advisory lock on `path` (created if missing) for the with-block; yields True.
    With wait=False it does not wait: yields False at once when another process holds the lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_held_elsewhere(path: Path | str) -> bool:
    """Whether another process holds the lock on the existing file `path` right now."""
    if not Path(path).is_file():
        return False
    with file_lock(path, wait=False) as acquired:
        return not acquired
