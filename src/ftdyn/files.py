"""Files that are never half-written, and locks between processes.

Every file ftdyn writes for later reading (results, markers, manifests, fingerprint records,
reports) goes to a temporary name in its directory and is renamed into place (`atomic_path`;
`write_atomic` for text), so a reader never sees half a file. `file_lock` serialises processes
that share a file or a directory (jobs of one sweep, builds of one ladder).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path beside `path` (same directory, created if need be) to write to;
    rename it into place when the block ends normally, remove it when the block raises.

    The same directory keeps the rename on one file system, where it is atomic. The temporary
    name keeps `path`'s suffix, for writers that pick a format by it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same directory and a rename."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None):
    """Hold an exclusive fcntl lock on `path` (created with its directory); `on_wait` runs first
    if another process holds it, e.g. to log that this one waits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_json_atomic(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")
