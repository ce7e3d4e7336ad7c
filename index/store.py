"""The versioned index directory: immutable versions, an atomically replaced CURRENT, retention.

Layout (CONTRACTS.md)::

    INDEX_DIR/CURRENT                  one line: the version being served
    INDEX_DIR/versions/<version>/      index.faiss, ids.parquet, manifest.json (+ see version_files)
    INDEX_DIR/holds/<holder>.json      versions loaded by live processes (retention skips them)
    INDEX_DIR/.lock                    writers (build, update, rebuild, rollback, gc) take it

Publishing writes every file into a hidden staging directory, fsyncs it, renames it to
``versions/<version>`` and only then replaces CURRENT (write temp + fsync + ``os.replace`` +
directory fsync). A process killed at any point leaves CURRENT naming the previous, intact version;
at worst it leaves a hidden staging directory, or a complete version that is not current, which
``gc`` cleans up.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from i2i.core.errors import Failure, InputError, TemporaryError
from i2i.core.io import atomic_write_text, fsync_path
from i2i.core.locks import LockHeld, exclusive_lock
from index.ids import IdMapError
from index.manifest import MANIFEST_FILE, ChecksumError, Manifest, checksum_files, verify_files
from index.search import LoadedIndex
from index.version_files import VersionContents, read_contents, write_contents

log = logging.getLogger(__name__)

CURRENT_FILE = "CURRENT"
VERSIONS_DIR = "versions"
HOLDS_DIR = "holds"
LOCK_FILE = ".lock"
STAGING_PREFIX = ".staging-"
VERSION_PATTERN = re.compile(r"^v(\d{6,})$")
# Crash-test hook: seconds to sleep after a version's files are written, before it is published.
PAUSE_ENV = "I2I_INDEX_PAUSE_BEFORE_PUBLISH"
DEFAULT_KEEP = 5


class IndexIntegrityError(Failure):
    """A version that cannot be trusted: checksum mismatch, missing file, inconsistent contents."""


class IndexLocked(TemporaryError):
    """Another index job holds the directory's writer lock: retry when it is done."""


@dataclass
class GcReport:
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    staging_removed: int = 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class IndexStore:
    """One index directory. Reading needs no lock; writers serialise on ``INDEX_DIR/.lock``."""

    def __init__(self, index_dir: str | os.PathLike) -> None:
        self.root = Path(index_dir)
        self.versions_dir = self.root / VERSIONS_DIR
        self.holds_dir = self.root / HOLDS_DIR

    # ---- reading ------------------------------------------------------------------------
    def current_version(self) -> str | None:
        try:
            name = (self.root / CURRENT_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        return name or None

    def versions(self) -> list[str]:
        """Published versions, oldest first."""
        if not self.versions_dir.is_dir():
            return []
        found = []
        for entry in self.versions_dir.iterdir():
            match = VERSION_PATTERN.match(entry.name)
            if match and (entry / MANIFEST_FILE).is_file():
                found.append((int(match.group(1)), entry.name))
        return [name for _, name in sorted(found)]

    def version_dir(self, version: str) -> Path:
        if not VERSION_PATTERN.match(version or ""):
            raise InputError(f"not a version name: {version!r} (expected e.g. v000001)")
        return self.versions_dir / version

    def manifest(self, version: str) -> Manifest:
        path = self.version_dir(version) / MANIFEST_FILE
        if not path.is_file():
            known = ", ".join(self.versions()) or "none"
            raise InputError(f"index version {version} not found in {self.root} (versions: {known})")
        try:
            return Manifest.read(path)
        except ChecksumError as exc:
            raise IndexIntegrityError(str(exc)) from exc

    def resolve(self, version: str | None) -> str:
        if version is not None:
            return version
        current = self.current_version()
        if current is None:
            raise InputError(f"no index published in {self.root} (no CURRENT file): run 'i2i index build' first")
        return current

    def verify(self, version: str) -> Manifest:
        """Checks every file of a version against its manifest's sha256."""
        manifest = self.manifest(version)
        try:
            verify_files(self.version_dir(version), manifest)
        except ChecksumError as exc:
            raise IndexIntegrityError(str(exc)) from exc
        return manifest

    def load(self, version: str | None = None, *, hold: bool = True, mmap_vectors: bool = True) -> LoadedIndex:
        """Loads a version (CURRENT by default) after verifying its checksums.

        With ``hold`` the process records that it serves this version, so retention never deletes
        it while the process lives; the hold ends with ``LoadedIndex.release()`` or garbage collection.
        """
        version = self.resolve(version)
        manifest = self.verify(version)
        directory = self.version_dir(version)
        try:
            contents = read_contents(directory, manifest.next_id, manifest.files, mmap_vectors=mmap_vectors)
        except (IdMapError, RuntimeError, OSError, ValueError) as exc:
            raise IndexIntegrityError(f"index version {version} in {directory} is unreadable: {exc}") from exc
        if contents.index.ntotal != manifest.ntotal or contents.index.d != manifest.dim or len(contents.ids) != manifest.ntotal:
            raise IndexIntegrityError(
                f"index version {version}: contents disagree with the manifest (index ntotal {contents.index.ntotal}, "
                f"ids {len(contents.ids)}, manifest ntotal {manifest.ntotal}, dim {contents.index.d} vs {manifest.dim})"
            )
        loaded = LoadedIndex(manifest, contents)
        if hold:
            hold_path = self._write_hold(version)
            if hold_path is not None:
                finalizer = weakref.finalize(loaded, _remove_quietly, hold_path)
                loaded._on_release = finalizer
        return loaded

    # ---- holds (versions being served) --------------------------------------------------
    def _write_hold(self, version: str) -> Path | None:
        try:
            self.holds_dir.mkdir(parents=True, exist_ok=True)
            path = self.holds_dir / f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
            record = {"version": version, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
            atomic_write_text(path, json.dumps(record))
            return path
        except OSError as exc:
            log.warning("could not record a hold on index version %s in %s: %s", version, self.holds_dir, exc)
            return None

    def held_versions(self, clean_stale: bool = False) -> dict[str, list[str]]:
        """Versions held by live processes -> holder descriptions. Holds of dead local processes are stale."""
        held: dict[str, list[str]] = {}
        if not self.holds_dir.is_dir():
            return held
        host = socket.gethostname()
        for path in self.holds_dir.glob("*.json"):
            try:
                record = json.loads(path.read_text())
                version, holder_host, pid = record["version"], record["host"], int(record["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if holder_host == host and not _pid_alive(pid):
                if clean_stale:
                    _remove_quietly(path)
                continue
            held.setdefault(version, []).append(f"{holder_host}:{pid}")
        return held

    # ---- writing ------------------------------------------------------------------------
    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Exclusive lock for jobs that change the directory; released by the kernel if the job dies."""
        with ExitStack() as stack:
            try:
                stack.enter_context(exclusive_lock(self.root / LOCK_FILE, wait=False,
                                                   note=f"pid {os.getpid()} on {socket.gethostname()}"))
            except LockHeld as exc:
                holder = exc.holder or "another process"
                raise IndexLocked(f"index directory {self.root} is locked by a running index job ({holder})") from exc
            yield

    def next_version(self) -> str:
        existing = self.versions()
        number = int(VERSION_PATTERN.match(existing[-1]).group(1)) + 1 if existing else 1
        return f"v{number:06d}"

    def publish(self, manifest: Manifest, contents: VersionContents, make_current: bool = True) -> Path:
        """Writes a new immutable version and (by default) points CURRENT at it. Call under writer_lock."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        final = self.version_dir(manifest.version)
        if final.exists():
            raise InputError(f"index version {manifest.version} already exists in {self.root}")
        staging = self.versions_dir / f"{STAGING_PREFIX}{manifest.version}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
        try:
            names = write_contents(staging, contents)
            manifest.files = checksum_files(staging, names)
            (staging / MANIFEST_FILE).write_text(manifest.to_json())
            fsync_path(staging / MANIFEST_FILE)
            fsync_path(staging)
            pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
            if pause > 0:
                log.info("pausing %.1fs before publishing %s (%s)", pause, manifest.version, PAUSE_ENV)
                time.sleep(pause)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_path(self.versions_dir)
        if make_current:
            self.set_current(manifest.version)
        return final

    def set_current(self, version: str) -> None:
        atomic_write_text(self.root / CURRENT_FILE, version + "\n")

    def rollback(self, to: str) -> str | None:
        """Points CURRENT at an older (verified) version; returns the version it replaced."""
        previous = self.current_version()
        self.verify(to)
        self.set_current(to)
        return previous

    def gc(self, keep: int = DEFAULT_KEEP) -> GcReport:
        """Deletes all but the newest ``keep`` versions, never CURRENT or a held one. Call under writer_lock."""
        if keep < 1:
            raise InputError(f"--keep must be at least 1, got {keep}")
        report = GcReport()
        if self.versions_dir.is_dir():
            for entry in self.versions_dir.iterdir():
                if entry.name.startswith(STAGING_PREFIX):
                    shutil.rmtree(entry, ignore_errors=True)
                    report.staging_removed += 1
        for leftover in self.root.glob(f".{CURRENT_FILE}.tmp-*"):  # a CURRENT write cut short
            _remove_quietly(leftover)
        held = self.held_versions(clean_stale=True)
        current = self.current_version()
        versions = self.versions()
        newest = set(versions[-keep:])
        for version in versions:
            if version in newest or version == current:
                report.kept.append(version)
            elif version in held:
                report.kept.append(version)
                report.held.append(version)
            else:
                # Rename first so a half-deleted version never looks published.
                doomed = self.versions_dir / f"{STAGING_PREFIX}gc-{version}-{uuid.uuid4().hex[:8]}"
                os.rename(self.version_dir(version), doomed)
                shutil.rmtree(doomed, ignore_errors=True)
                report.removed.append(version)
        return report
