"""Reading and writing contract tables and files, atomically: the one home of write-then-rename."""
from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from i2i.core.errors import InputError


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """Reads a table directory (or one .parquet file) as one Arrow table; hidden and temp files are ignored."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"table not found: {path}")
    try:
        dataset = ds.dataset(str(path), format="parquet", exclude_invalid_files=False,
                             ignore_prefixes=[".", "_"])
        return dataset.to_table(columns=columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"cannot read Parquet table {path}: {exc}") from exc


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary sibling directory; on success it replaces ``final`` in one rename step.

    A crash or kill inside the block leaves ``final`` as it was (the temporary directory is
    hidden by its leading dot, so readers never see it).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)


def replace_dir(new: Path, final: Path) -> None:
    """Moves ``new`` to ``final``; an existing ``final`` is moved aside first and deleted after."""
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
    os.rename(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fsync_path(path: str | os.PathLike) -> None:
    """Flushes a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(final: str | os.PathLike) -> Iterator[Path]:
    """Yields a hidden temporary sibling path to write; on success it is fsynced and renamed over ``final``.

    Readers see the old file or the new one, never half of one, and a crash leaves the old one.
    The temporary name keeps the suffix (``.png``, ``.parquet``) for writers that read it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{final.suffix}")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(final.parent)


def atomic_write_text(final: str | os.PathLike, text: str) -> Path:
    """Replaces ``final`` with ``text`` in one rename (see ``atomic_file``)."""
    with atomic_file(final) as tmp:
        tmp.write_text(text)
    return Path(final)


def write_table(table: pa.Table, final: str | os.PathLike, rows_per_file: int = 1_000_000) -> Path:
    """Writes ``table`` as a Parquet table directory, atomically replacing any previous one."""
    with atomic_dir(final) as tmp:
        if table.num_rows == 0:
            pq.write_table(table, tmp / "part-00000.parquet")
        for i, start in enumerate(range(0, table.num_rows, rows_per_file)):
            pq.write_table(table.slice(start, rows_per_file), tmp / f"part-{i:05d}.parquet")
    return Path(final)


def write_events_by_day(events: pa.Table, final: str | os.PathLike) -> Path:
    """Writes an events table hive-partitioned by UTC day (``dt=YYYY-MM-DD/``), atomically as a whole.

    Daily jobs read one partition; ``read_table`` on the directory still reads all of them.
    """
    import pyarrow.compute as pc

    day = pc.strftime(events.column("ts"), format="%Y-%m-%d", locale="C")
    with atomic_dir(final) as tmp:
        for value in sorted(set(day.to_pylist())):
            part = events.filter(pc.equal(day, value))
            (tmp / f"dt={value}").mkdir()
            pq.write_table(part, tmp / f"dt={value}" / "part-00000.parquet")
    return Path(final)
