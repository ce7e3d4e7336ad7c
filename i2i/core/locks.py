"""The one exclusive file lock of the project (``fcntl.flock``): the kernel releases it when its process dies.

Used by the daily run, the Parquet embedding table's writers and the index directory's jobs.
A small module rather than the ``filelock`` library: the index reports who holds its lock from a
note written into the lock file, which ``filelock`` truncates on every attempt.
"""
from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class LockHeld(Exception):
    """Another process holds the lock (only raised with ``wait=False``)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder or 'another process'}")
        self.path = path
        self.holder = holder


@contextmanager
def exclusive_lock(path: str | os.PathLike, wait: bool = True, note: str | None = None) -> Iterator[None]:
    """Holds an exclusive lock on ``path`` (created if absent) for the block.

    ``wait=False`` raises ``LockHeld`` at once when another process holds it, naming the holder by
    the ``note`` it wrote into the file (e.g. its pid and host).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise LockHeld(path, os.pread(fd, 256, 0).decode(errors="replace").strip()) from None
        if note is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
