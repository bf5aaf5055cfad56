"""Atomic file writes (a temporary file beside the target, then os.replace: readers see the old or the
new file, never half of one; a temporary whose name proves its writer dead is removed by the next write
of that file, nothing else is) and advisory file locks. A lock file is never followed: a symbolic link,
named pipe, device or folder at its name is refused (NotRegularFile) before it could be opened, and the
open itself neither follows a link nor blocks (O_NOFOLLOW | O_NONBLOCK, then fstat). RegularFileHandler
is logging's FileHandler under the same discipline (Hydra's job log: conf/config.yaml).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import logging
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


class NotRegularFile(OSError):
    """A name taken by a symbolic link, named pipe, device or folder where a regular file is read or
    locked; str() is one line: 'PATH: KIND, not a regular file: WHY'."""

    def __init__(self, path, kind: str, why: str):
        super().__init__(errno.EPERM, f"{kind}, not a regular file: {why}", str(path))

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


LOCK_REFUSAL = "a lock file is never followed or opened (remove it)"
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def file_kind(mode: int) -> str:
    """What an lstat/fstat st_mode that is no regular file is, in words: 'a symbolic link', 'a named pipe'..."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


_kind = file_kind


def open_regular(path: Path | str, flags: int, why: str, mode: int = 0o666) -> int:
    """A descriptor of the regular file `path` opened with `flags` (O_CREAT among them: created if
    missing). Never follows a link and never blocks: what is at the name is checked first (lstat), the
    open adds O_NOFOLLOW and O_NONBLOCK (a link or pipe put there meanwhile fails or is caught) and its
    result is checked again (fstat); NotRegularFile(path, kind, why) for anything but a regular file.
    A missing file without O_CREAT is FileNotFoundError, as open() gives it."""
    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise NotRegularFile(path, _kind(info.st_mode), why)
    try:
        descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENXIO):   # a link, or a pipe with no reader, put there meanwhile
            raise NotRegularFile(path, "a symbolic link" if error.errno == errno.ELOOP else "a named pipe",
                                 why) from None
        raise
    kind = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(kind):
        os.close(descriptor)
        raise NotRegularFile(path, _kind(kind), why)
    return descriptor


@contextlib.contextmanager
def file_lock(path: Path | str, wait: bool = True):
    """Hold an exclusive advisory lock on `path` (a regular file, created if missing; never followed
    or blocked on: open_regular) for the with-block; yields True. With wait=False it does not wait: yields False at once when another
    process holds the lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, LOCK_REFUSAL)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def folder_lock(folder: Path | str):
    """Hold an exclusive advisory lock on the folder itself for the with-block (flock on its descriptor:
    no lock file to plant a link at); waits for another holder. The folder must exist."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)   # closing releases the lock


def lock_held_elsewhere(path: Path | str) -> bool:
    """Whether another process holds the lock on the existing regular file `path` right now (a link or
    other special file at the name is no lock of ours: False, nothing opened)."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    with file_lock(path, wait=False) as acquired:
        return not acquired


LOG_REFUSAL = "a log file is never followed or opened (remove it)"


class RegularFileHandler(logging.FileHandler):
    """logging.FileHandler whose file is opened by open_regular (O_NOFOLLOW | O_NONBLOCK, fstat: a regular
    file, created if missing; mode 'a' appends, 'w' truncates). A name taken by a symbolic link, named
    pipe, device, socket or folder is not opened and not followed, nothing is created where a link
    points, and nothing raises: the handler emits nothing (`refused` holds the NotRegularFile). So a
    dictConfig (Hydra's job logging) never hangs, follows a link or crashes on a planted file; other
    errors (a folder that cannot be written) raise as FileHandler's do."""

    def __init__(self, filename, mode: str = "a", encoding: str | None = None, delay: bool = False,
                 errors: str | None = None):
        if mode not in ("a", "w"):
            raise ValueError(f"RegularFileHandler: mode={mode!r}: allowed: 'a' (append) or 'w' (truncate)")
        self.refused: OSError | None = None
        super().__init__(filename, mode, encoding, delay=True, errors=errors)
        if not delay:
            self.stream = self._open()

    def _open(self):
        if self.refused is not None:
            return None
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if self.mode == "a" else os.O_TRUNC)
        try:
            descriptor = open_regular(self.baseFilename, flags, LOG_REFUSAL)
        except (NotRegularFile, IsADirectoryError) as error:   # a folder put there after the lstat: EISDIR
            self.refused = error
            return None
        return os.fdopen(descriptor, self.mode, encoding=self.encoding, errors=self.errors)

    def emit(self, record: logging.LogRecord) -> None:
        if self.refused is None:   # FileHandler.emit opens a delayed stream; a refused one stays silent
            super().emit(record)
