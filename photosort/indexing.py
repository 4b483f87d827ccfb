"""Indexing: bring the library database in line with the photo folders, incrementally.

This is the pipeline behind ``photosort scan``. It walks the folders, reads only what is new
or changed (same path, size and mtime means unchanged and the file is not opened), recognises
moved files by their content hash so they keep their identity and everything derived from
them, and marks files that are gone as missing. Work is committed in batches, so an
interrupted scan keeps what it did and the next one carries on from there.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import Engine, and_, not_, or_, select, update
from sqlalchemy.orm import Session

from photosort.images import DEFAULT_MAX_MEGAPIXELS
from photosort.scanning import (
    FileEntry,
    FileFacts,
    Folder,
    bounded_map,
    check_root,
    examine,
    walk,
)
from photosort.store import Photo, Scan, dumps_counts, utcnow

BATCH_PHOTOS = 500
BATCH_SECONDS = 2.0


@dataclass
class ScanReport:
    """The outcome of a scan, as ``scan --json`` prints it."""

    scanned: int = 0
    new: int = 0
    changed: int = 0
    moved: int = 0
    missing: int = 0
    unchanged: int = 0
    errors: int = 0
    seconds: float = 0.0
    problems: list[tuple[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, int | float]:
        out = asdict(self)
        out.pop("problems")
        out["seconds"] = round(self.seconds, 3)
        return out


@dataclass(frozen=True)
class _Task:
    entry: FileEntry
    row: Photo | None

    @property
    def needs_read(self) -> bool:
        row = self.row
        return (
            row is None
            or row.status == "missing"
            or row.size != self.entry.size
            or row.mtime_ns != self.entry.mtime_ns
        )


Progress = Callable[[str], None]


def scan_library(
    engine: Engine,
    paths: Sequence[str],
    *,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    workers: int | None = None,
    progress: Progress | None = None,
) -> ScanReport:
    """Scan ``paths`` into the library and return what changed.

    Every path is checked before anything is written: a folder that cannot be reached is a
    WalkError, never a reason to mark its photos missing. ``progress`` is called with each
    file's path once it has been dealt with.
    """
    roots = _dedupe_roots([check_root(p) for p in paths])
    report = ScanReport()
    started = time.perf_counter()
    now = utcnow()
    unlisted: list[str] = []

    def on_walk_error(folder: str, reason: str) -> None:
        unlisted.append(folder)
        report.errors += 1
        report.problems.append((folder, reason))

    workers = workers or os.cpu_count() or 1
    with Session(engine, expire_on_commit=False) as session:
        scan = Scan(started_at=now, roots=json.dumps(roots), state="running")
        session.add(scan)
        session.commit()
        writer = _Writer(session, now, report)
        try:
            tasks = _plan(session, walk(roots, on_walk_error))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for task, facts in bounded_map(
                    pool,
                    lambda t: examine(t.entry.path, max_megapixels=max_megapixels),
                    tasks,
                    needs_work=lambda t: t.needs_read,
                    window=8 * workers,
                ):
                    writer.apply(task, facts)
                    if progress is not None:
                        progress(task.entry.path)
            writer.flush()
            report.missing = _mark_missing(session, roots, unlisted, now)
            scan.state = "done"
        except BaseException:
            # Keep the committed batches; the open one may hold a half-applied photo.
            session.rollback()
            scan.state = "interrupted"
            raise
        finally:
            report.seconds = time.perf_counter() - started
            scan.finished_at = utcnow()
            scan.counts = dumps_counts(report.as_dict())
            session.merge(scan)
            session.commit()
    return report


def _dedupe_roots(roots: list[str]) -> list[str]:
    """Drop roots inside other roots, so no folder is walked twice."""
    kept: list[str] = []
    for root in sorted(set(roots)):
        if not any(root.startswith(k.rstrip(os.sep) + os.sep) for k in kept):
            kept.append(root)
    return kept


def _plan(session: Session, folders: Iterable[Folder]) -> Iterator[_Task]:
    """Pair each file on disk with its row, looked up one folder at a time."""
    for folder in folders:
        query = select(Photo).where(Photo.folder == folder.path)
        known = {row.path: row for row in session.scalars(query)}
        for entry in folder.files:
            yield _Task(entry, known.get(entry.path))


class _Writer:
    """Applies examined files to the database and commits in batches."""

    def __init__(self, session: Session, now: datetime, report: ScanReport) -> None:
        self.session = session
        self.now = now
        self.report = report
        self.seen_ids: list[int] = []
        self.pending = 0
        self.last_commit = time.monotonic()

    def apply(self, task: _Task, facts: FileFacts | None) -> None:
        report = self.report
        entry, row = task.entry, task.row
        if not task.needs_read:
            report.scanned += 1
            report.unchanged += 1
            self.seen_ids.append(row.id)  # type: ignore[union-attr]
        elif facts is None:
            return  # not a photo: a sidecar, a video, a text file
        else:
            report.scanned += 1
            if facts.error is not None:
                report.errors += 1
                report.problems.append((entry.path, facts.error))
            if row is None:
                moved = self._find_moved(entry, facts)
                if moved is not None:
                    self._touch(moved, entry)
                    report.moved += 1
                else:
                    self._insert(entry, facts)
                    report.new += 1
            elif row.content_hash is not None and row.content_hash == facts.content_hash:
                self._touch(row, entry)
                report.unchanged += 1
            else:
                self._reread(row, entry, facts)
                report.changed += 1
        self.pending += 1
        if self.pending >= BATCH_PHOTOS or time.monotonic() - self.last_commit > BATCH_SECONDS:
            self.flush()

    def _find_moved(self, entry: FileEntry, facts: FileFacts) -> Photo | None:
        """A row with the same content whose file is gone: the same photo, moved here."""
        if facts.content_hash is None:
            return None
        candidates = self.session.scalars(
            select(Photo).where(Photo.content_hash == facts.content_hash).order_by(Photo.id)
        )
        for candidate in candidates:
            if candidate.status == "missing" or not os.path.exists(candidate.path):
                return candidate
        return None

    def _touch(self, row: Photo, entry: FileEntry) -> None:
        """Same content, new place or new timestamp: keep identity and derived data."""
        row.path = entry.path
        row.folder = entry.folder
        row.size = entry.size
        row.mtime_ns = entry.mtime_ns
        row.last_seen = self.now
        if row.status == "missing":
            row.status = "unreadable" if row.error else "ok"

    def _insert(self, entry: FileEntry, facts: FileFacts) -> None:
        row = Photo(path=entry.path, folder=entry.folder, first_seen=self.now)
        self._fill(row, entry, facts)
        self.session.add(row)

    def _reread(self, row: Photo, entry: FileEntry, facts: FileFacts) -> None:
        """New content at a known path: replace everything derived from the old content."""
        self._fill(row, entry, facts)

    def _fill(self, row: Photo, entry: FileEntry, facts: FileFacts) -> None:
        info = facts.info
        row.size = entry.size
        row.mtime_ns = entry.mtime_ns
        row.content_hash = facts.content_hash
        row.format = info.format if info else None
        row.width = info.width if info else None
        row.height = info.height if info else None
        row.taken_at = info.taken_at if info else None
        row.status = "ok" if facts.error is None else "unreadable"
        row.error = facts.error
        row.last_seen = self.now
        row.read_at = self.now

    def flush(self) -> None:
        """Commit the batch: applied rows plus the last-seen stamp of unchanged ones."""
        ids, self.seen_ids = self.seen_ids, []
        for start in range(0, len(ids), 900):
            self.session.execute(
                update(Photo)
                .where(Photo.id.in_(ids[start : start + 900]))
                .values(last_seen=self.now)
                .execution_options(synchronize_session=False)
            )
        self.session.commit()
        self.pending = 0
        self.last_commit = time.monotonic()


def _under(column: object, folder: str) -> object:
    """SQL for "this path is ``folder`` or inside it", as an index-friendly range."""
    prefix = folder.rstrip(os.sep) + os.sep
    upper = prefix[:-1] + chr(ord(os.sep) + 1)
    return or_(column == folder, and_(column >= prefix, column < upper))  # type: ignore[operator]


def _mark_missing(session: Session, roots: list[str], unlisted: list[str], now: datetime) -> int:
    """Mark photos under the walked roots that this scan did not see as missing.

    Only called after a complete walk; photos under folders that could not be listed keep
    their status, since we do not know they are gone.
    """
    condition = and_(
        or_(*(_under(Photo.path, root) for root in roots)),
        Photo.last_seen < now,
        Photo.status != "missing",
        *(not_(_under(Photo.path, folder)) for folder in unlisted),
    )
    result = session.execute(
        update(Photo)
        .where(condition)
        .values(status="missing")
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount or 0
