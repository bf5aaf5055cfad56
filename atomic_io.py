"""Atomic file writes (a temporary file beside the target, then os.replace: readers see the old or the
new file, never half of one; stale temporaries of dead writers are removed by the next write of that
file) and advisory file locks.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Callable


def _writer_is_alive(temporary: Path) -> bool:
    """Whether the process that named `temporary` (.NAME.tmp-<pid>-*) is still running. Temporaries
    without a pid (older versions) count as stale."""
    pid = temporary.name.rsplit(".tmp-", 1)[-1].split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_stale_temporaries(path: Path | str) -> list[Path]:
    """Remove the temporaries of `path` (.NAME.tmp-*) whose writing process has died; returns them."""
    path = Path(path)
    removed = []
    for temporary in path.parent.glob(f".{glob.escape(path.name)}.tmp-*"):
        if not _writer_is_alive(temporary):
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
                removed.append(temporary)
    return removed


@contextlib.contextmanager
def atomic_path(path: Path | str):
    """Yield a temporary path beside `path`; on a clean exit fsync it, rename it onto `path` and remove
    the stale temporaries earlier writers of `path` left behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
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
