"""Indexing: bring the library database in line with the photo folders, incrementally.

This is the pipeline behind ``photosort scan``. It walks the folders, reads only what is new
or changed (same path, size and mtime means unchanged and the file is not opened, unless it
was unreadable last time: a higher size limit or a fixed permission may cure it), recognises
moved files by their content hash so they keep their identity and everything derived from
them, and marks files that are gone as missing. Work is committed in batches, so an
interrupted scan keeps what it did and the next one carries on from there.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from PIL import Image
from sqlalchemy import Engine, and_, case, not_, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from photosort.defaults import (
    DEFAULT_MIN_FACE,
    DEFAULT_MIN_PRESENCE,
    DEFAULT_MIN_SCORE,
    DETECTOR_NAMES,
    WORKING_SIDE,
)
from photosort.emotions import ModelError
from photosort.faces import FaceScan, FaceSettings, find_faces_with
from photosort.images import DEFAULT_MAX_MEGAPIXELS
from photosort.landmarks import pack_landmarks
from photosort.scanning import (
    DEFAULT_MAX_FILE_SIZE,
    FileEntry,
    FileFacts,
    Folder,
    InlineExecutor,
    WorkerPool,
    bounded_map,
    check_root,
    examine,
    walk,
)
from photosort.store import (
    EMOTION_COLUMNS,
    FaceRow,
    Photo,
    Scan,
    StoreError,
    chunked,
    dumps_counts,
    path_under,
    utcnow,
)

BATCH_PHOTOS = 500
BATCH_SECONDS = 2.0
CLASSIFY_BATCH = 256


class Classifier(Protocol):
    """What indexing needs of an emotion model (``photosort.emotions.load_model``)."""

    model_id: str

    def predict(self, faces: Any) -> np.ndarray: ...


class LazyClassifier:
    """The emotion model, loaded on first use: a rescan with nothing new never loads it."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._model: Classifier | None = None
        self._model_id: str | None = None
        self._load_error: Exception | None = None

    @property
    def model(self) -> Classifier:
        """The loaded model. A load that failed is not tried again: it would fail the same
        way (and a Keras model takes seconds to start)."""
        if self._model is None:
            if self._load_error is not None:
                raise self._load_error
            from photosort.emotions import load_model

            try:
                self._model = load_model(self.path)
            except Exception as exc:
                self._load_error = exc
                raise
        return self._model

    @property
    def model_id(self) -> str:
        """Worked out once: it hashes the whole model file."""
        if self._model_id is None:
            if self._model is not None:
                self._model_id = self._model.model_id
            else:
                from photosort.emotions import model_id_of

                self._model_id = model_id_of(self.path)
        return self._model_id

    def predict(self, faces: Any) -> np.ndarray:
        return self.model.predict(faces)


@dataclass(frozen=True)
class FaceOptions:
    """How ``scan`` finds and classifies faces; None in scan_library means files only."""

    classifier: Classifier
    detector: str = DETECTOR_NAMES[0]
    min_score: float = DEFAULT_MIN_SCORE
    min_face: float = DEFAULT_MIN_FACE
    working_side: int = WORKING_SIDE
    reclassify: bool = False
    min_presence: float = DEFAULT_MIN_PRESENCE

    def settings(self, max_megapixels: float) -> FaceSettings:
        return FaceSettings(
            self.detector,
            self.min_score,
            self.min_face,
            self.working_side,
            max_megapixels,
            self.min_presence,
        )


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
    redetected: int = 0
    """Photos counted above as unchanged or moved whose faces were found again, in place of
    those found with other detector settings: otherwise nothing would tell the user that
    the settings replaced every face (and its cached explanations)."""
    faces: int = 0
    classified: int = 0
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
            or row.status != "ok"  # missing, or unreadable: maybe readable with today's settings
            or row.size != self.entry.size
            or row.mtime_ns != self.entry.mtime_ns
        )


Progress = Callable[[str], None]


def scan_library(
    engine: Engine,
    paths: Sequence[str],
    *,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
    workers: int | None = None,
    progress: Progress | None = None,
    faces: FaceOptions | None = None,
    cluster: str | None = None,
) -> ScanReport:
    """Scan ``paths`` into the library and return what changed.

    Every path is checked before anything is written: a folder that cannot be reached is a
    WalkError, never a reason to mark its photos missing. ``progress`` is called with each
    file's path once it has been dealt with. With ``faces``, new and changed photos also get
    their faces detected, cropped and classified (batched across photos), as do photos whose
    detection failed or used other detector settings; stored faces with no probabilities from
    this model (failed, or another model's) are classified again from their crops. A model
    that cannot be loaded ends the scan with ModelError, after committing what was found.
    With ``cluster`` (a Dask scheduler's address) the per-photo work runs on that cluster's
    workers instead of local processes.
    """
    roots = scan_roots(paths)
    report = ScanReport()
    started = time.perf_counter()
    now = utcnow()
    unlisted: list[str] = []

    def on_walk_error(folder: str, path: str, reason: str) -> None:
        unlisted.append(folder)
        report.errors += 1
        report.problems.append((path, reason))

    workers = workers or os.cpu_count() or 1
    with Session(engine, expire_on_commit=False) as session:
        scan = Scan(started_at=now, roots=json.dumps(roots), state="running")
        session.add(scan)
        session.commit()
        named = {root for root in roots if not os.path.isdir(root)}
        writer = _Writer(session, now, report, faces, named)
        try:
            tasks = _plan(session, walk(roots, on_walk_error, unlisted.append))
            with _pool(workers, cluster) as (pool, slots, batch):
                examined = bounded_map(
                    pool,
                    examine,
                    tasks,
                    args=lambda t: (t.entry.path, max_megapixels, max_file_size),
                    needs_work=lambda t: t.needs_read,
                    window=8 * slots,
                    lost=lambda t, reason: FileFacts(None, None, reason),
                    batch=batch,
                )

                def face_jobs() -> Iterator[_FaceJob]:
                    for task, facts in examined:
                        job = writer.apply(task, facts)
                        if progress is not None:
                            progress(task.entry.path)
                        if job is not None:
                            yield job

                if faces is None:
                    for _ in face_jobs():
                        pass
                else:
                    settings = faces.settings(max_megapixels)
                    for job, found in bounded_map(
                        pool,
                        find_faces_with,
                        face_jobs(),
                        args=lambda j: (j.path, j.size, settings),
                        needs_work=lambda j: True,
                        window=4 * slots,
                        lost=lambda j, reason: FaceScan([], None, error=reason),
                        batch=batch,
                    ):
                        writer.store_faces(job, found)  # type: ignore[arg-type]
            writer.flush()
            # The walk is complete: record what is gone before a model that fails to load
            # can end the scan.
            report.missing = _mark_missing(session, roots, unlisted, now)
            if faces is not None:
                _reclassify(session, faces, report, roots)
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
            try:
                session.merge(scan)
                session.commit()
            except (DBAPIError, StoreError):
                session.rollback()  # the scan's own error is the one to report
    return report


def scan_roots(paths: Sequence[str]) -> list[str]:
    """The folders (and files) a scan of ``paths`` walks and claims: resolved, checked
    (WalkError), and without any inside another, so no folder is walked twice."""
    kept: list[str] = []
    for root in sorted({check_root(p) for p in paths}):
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


@dataclass(frozen=True)
class _FaceJob:
    """A photo to find faces in; plain values, so worker threads never touch the session."""

    row: Photo
    path: str
    size: tuple[int, int]
    redetect: bool = False
    """Its faces were found before, with other detector settings."""


@contextmanager
def _pool(workers: int, cluster: str | None) -> Iterator[tuple[Executor, int, int]]:
    """The executor for the per-photo work, how many photos it works on at once, and how
    many go to it per call (a cluster's round-trips are worth sharing between photos)."""
    if cluster is None:
        with _executor(workers) as pool:
            yield pool, workers, 1
        return
    from photosort.cluster import cluster_executor

    with cluster_executor(cluster) as remote:
        yield remote, remote.threads * remote.batch, remote.batch


def _executor(workers: int) -> Executor:
    """Worker processes for reading, hashing and face detection, or none for one worker.
    They never touch the model or the database, which stay in this process."""
    if workers <= 1:
        return InlineExecutor()
    return WorkerPool(workers, _worker_context)


def _worker_context() -> Any:
    """How to start a worker, asked each time one starts (a pool replaced mid-scan too).

    Workers are forked (cheap) while this process has not loaded TensorFlow, whose threads
    must not be forked; after that they come from a fork server.
    """
    import multiprocessing
    import sys

    if "tensorflow" in sys.modules:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["photosort.faces", "photosort.scanning"])
        return context
    return multiprocessing.get_context("fork")


def encode_crop(crop: np.ndarray) -> bytes:
    """Face crops are stored as small lossless greyscale PNGs."""
    buf = io.BytesIO()
    Image.fromarray(crop, "L").save(buf, "PNG", optimize=False)
    return buf.getvalue()


def decode_crop(data: bytes) -> np.ndarray:
    """A stored crop back as a greyscale uint8 array."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("L"))


def _set_probabilities(
    faces: list[FaceRow], crops: list[np.ndarray], classifier: Classifier
) -> int:
    """One ``predict`` for the whole batch.

    A failed batch is recorded on its faces, not raised, and leaves their model id and any
    earlier probabilities as they were, so the next scan tries them again. A model that
    cannot be loaded (ModelError) is raised: no face would get classified.
    """
    try:
        probs = np.asarray(classifier.predict(np.stack(crops)), dtype=np.float64)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad batch must not end the scan
        for face in faces:
            face.classify_error = f"classification failed: {exc}"
        return 0
    model_id = classifier.model_id
    for i, face in enumerate(faces):
        face.model_id = model_id
        face.classify_error = None
        for j, column in enumerate(EMOTION_COLUMNS):
            setattr(face, column, float(probs[i, j]))
    return len(faces)


def _reclassify(
    session: Session, options: FaceOptions, report: ScanReport, roots: list[str]
) -> None:
    """Classify stored crops under ``roots`` whose probabilities are missing, failed or came
    from another model. Only this scan's folders: a scan of other folders running beside it
    owns theirs, and may be replacing their faces."""
    under = select(Photo.id).where(or_(*(path_under(Photo.path, root) for root in roots)))
    stale = (
        select(FaceRow)
        .where(FaceRow.photo_id.in_(under))
        .order_by(FaceRow.id)
        .limit(CLASSIFY_BATCH)
    )
    if not options.reclassify:
        stale = stale.where(
            FaceRow.model_id.is_(None)
            | (FaceRow.model_id != options.classifier.model_id)
            | FaceRow.classify_error.is_not(None)
        )
    last = 0
    while batch := list(session.scalars(stale.where(FaceRow.id > last))):
        last = batch[-1].id
        report.classified += _set_probabilities(
            batch, [decode_crop(f.crop) for f in batch], options.classifier
        )
        session.commit()


class _Writer:
    """Applies examined files to the database and commits in batches."""

    def __init__(
        self,
        session: Session,
        now: datetime,
        report: ScanReport,
        faces: FaceOptions | None,
        named: set[str],
    ) -> None:
        self.session = session
        self.now = now
        self.report = report
        self.faces = faces
        self.seen_ids: list[int] = []
        self.to_classify: list[tuple[FaceRow, np.ndarray]] = []
        self.named = named
        """Files the user named one by one: one that is not a photo is worth a word."""
        self.detector_key = faces.settings(0).key if faces is not None else None
        """Photos whose faces were found with other settings are searched again."""
        self.pending = 0
        self.last_commit = time.monotonic()

    def apply(self, task: _Task, facts: FileFacts | None) -> _FaceJob | None:
        """Record one walked file; return a face job if its faces are still to be found."""
        row = self._apply(task, facts)
        self.pending += 1
        if self.pending >= BATCH_PHOTOS or time.monotonic() - self.last_commit > BATCH_SECONDS:
            self.flush()
        if (
            self.faces is None
            or row is None
            or row.status != "ok"
            or (row.faces_state == "done" and row.detector == self.detector_key)
            or row.width is None
            or row.height is None
        ):
            return None
        # Faces found before, and not with these settings (or it would have returned above).
        redetect = row.faces_state == "done"
        return _FaceJob(row, row.path, (row.width, row.height), redetect=redetect)

    def _apply(self, task: _Task, facts: FileFacts | None) -> Photo | None:
        report = self.report
        entry, row = task.entry, task.row
        if not task.needs_read:
            report.scanned += 1
            report.unchanged += 1
            self.seen_ids.append(row.id)  # type: ignore[union-attr]
            return row
        if facts is None:  # not a photo: a sidecar, a video, a text file
            if entry.path in self.named:
                report.errors += 1
                report.problems.append((entry.path, "not a photo photosort reads"))
            return None
        report.scanned += 1
        if facts.error is not None:
            report.errors += 1
            report.problems.append((entry.path, facts.error))
        if row is None:
            same_content = self._same_content(facts)
            known = self._same_file(entry, same_content)
            if known is not None:
                report.unchanged += 1
                self.seen_ids.append(known.id)
                return known
            moved = self._find_moved(entry, same_content)
            if moved is not None:
                report.moved += 1
                return moved
            report.new += 1
            return self._insert(entry, facts)
        # Same content and the same verdict; a file whose header passes and whose pixels
        # did not decode (faces_error) gets the same verdict again without decoding it.
        pixels_failed = (
            facts.error is None and row.error is not None and row.faces_error == row.error
        )
        if pixels_failed and row.content_hash == facts.content_hash:
            report.errors += 1
            report.problems.append((entry.path, row.error))  # type: ignore[arg-type]
        if row.content_hash == facts.content_hash and (row.error == facts.error or pixels_failed):
            self._touch(row, entry)
            report.unchanged += 1
            return row
        self._reread(row, entry, facts)
        report.changed += 1
        return row

    def store_faces(self, job: _FaceJob, found: FaceScan) -> None:
        """Record a photo's faces, in place of any found with other settings, and queue them
        for one batched classification."""
        row = job.row
        if found.error is not None:
            # Faces found earlier stay until a later scan's retry succeeds.
            row.faces_state = "error"
            row.faces_error = found.error
            if found.unreadable:  # its header passed, its pixels do not: never ``ok``
                row.status = "unreadable"
                row.error = found.error
            self.report.errors += 1
            self.report.problems.append((job.path, found.error))
            return
        row.detector = self.detector_key
        row.phash = found.phash
        row.faces.clear()  # with their cached explanations
        for idx, face in enumerate(found.faces):
            x, y, w, h = face.box
            face_row = FaceRow(
                idx=idx,
                x=x,
                y=y,
                w=w,
                h=h,
                score=face.score,
                sharpness=face.sharpness,
                crop=encode_crop(face.crop),
                landmarks=None if face.landmarks is None else pack_landmarks(face.landmarks),
                mesh_presence=face.presence,
            )
            row.faces.append(face_row)
            self.to_classify.append((face_row, face.crop))
        row.faces_state = "done"
        row.faces_error = None
        self.report.faces += len(found.faces)
        self.report.redetected += job.redetect
        if len(self.to_classify) >= CLASSIFY_BATCH:
            self._classify()

    def _classify(self) -> None:
        if not self.to_classify or self.faces is None:
            return
        queued, self.to_classify = self.to_classify, []
        # No write transaction stays open while the model loads (seconds, the first time)
        # or predicts: other commands would wait for it. The faces are committed without
        # probabilities first; a scan killed meanwhile leaves them to the next one.
        self.session.commit()
        try:
            self.report.classified += _set_probabilities(
                [f for f, _ in queued], [c for _, c in queued], self.faces.classifier
            )
        except ModelError:
            self.flush()  # keep the photos and faces found so far; a later scan classifies them
            raise

    def _same_content(self, facts: FileFacts) -> list[Photo]:
        """Rows recorded with the content this file has, oldest first."""
        if facts.content_hash is None:
            return []
        return list(
            self.session.scalars(
                select(Photo).where(Photo.content_hash == facts.content_hash).order_by(Photo.id)
            )
        )

    def _same_file(self, entry: FileEntry, same_content: list[Photo]) -> Photo | None:
        """A row recorded under another name of this very file, through a symlink (a
        symlinked folder scanned by both of its names): one photo, whichever name a scan
        meets first. Hard links stay photos of their own, as copies do."""
        real = os.path.realpath(entry.path)
        for candidate in same_content:
            if candidate.path != entry.path and os.path.realpath(candidate.path) == real:
                return candidate
        return None

    def _find_moved(self, entry: FileEntry, same_content: list[Photo]) -> Photo | None:
        """A row with the same content whose file is gone: the same photo, moved here and
        taken over (``_take_over``)."""
        for candidate in same_content:
            there = os.path.exists(candidate.path)
            if (candidate.status == "missing" or not there) and self._take_over(
                candidate, entry, still_missing=there
            ):
                return candidate
        return None

    def _take_over(self, row: Photo, entry: FileEntry, *, still_missing: bool) -> bool:
        """Give ``row`` the moved file's place, unless another scan moved it first.

        A scan of another folder may find a copy of the same photo at the same time: the
        row moves only if its path is still the one read (and, when its file is there, it
        is still missing: not found again meanwhile by the scan of its folder), so one row
        never ends up with two files, and the scan that loses records its copy as a new
        photo. The batch is committed first, so this scan holds no other row while it waits
        for this one (a scan marking its folder's photos missing holds it), and no two scans
        wait for each other; the move commits at once for the same reason.
        """
        self.session.commit()
        restored = case((Photo.error.is_(None), "ok"), else_="unreadable")
        unchanged = [Photo.id == row.id, Photo.path == row.path]
        if still_missing:
            unchanged.append(Photo.status == "missing")
        moved = self.session.execute(
            update(Photo)
            .where(*unchanged)
            .values(
                path=entry.path,
                folder=entry.folder,
                size=entry.size,
                mtime_ns=entry.mtime_ns,
                last_seen=self.now,
                status=restored,
            )
            .execution_options(synchronize_session=False)
        )
        self.session.commit()
        self.session.refresh(row)
        return moved.rowcount == 1

    def _touch(self, row: Photo, entry: FileEntry) -> None:
        """Same content, new timestamp: keep identity and derived data."""
        row.size = entry.size
        row.mtime_ns = entry.mtime_ns
        row.last_seen = self.now
        if row.status == "missing":
            row.status = "unreadable" if row.error else "ok"

    def _insert(self, entry: FileEntry, facts: FileFacts) -> Photo:
        row = Photo(path=entry.path, folder=entry.folder, first_seen=self.now)
        self._fill(row, entry, facts)
        self.session.add(row)
        return row

    def _reread(self, row: Photo, entry: FileEntry, facts: FileFacts) -> None:
        """New content at a known path: replace everything derived from the old content."""
        self._fill(row, entry, facts)
        row.faces.clear()
        row.phash = None
        row.detector = None

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
        row.faces_state = "pending"
        row.faces_error = None

    def flush(self) -> None:
        """Commit the batch: applied rows plus the last-seen stamp of unchanged ones."""
        self._classify()
        ids, self.seen_ids = self.seen_ids, []
        for chunk in chunked(ids):
            self.session.execute(
                update(Photo)
                .where(Photo.id.in_(chunk))
                .values(last_seen=self.now)
                .execution_options(synchronize_session=False)
            )
        self.session.commit()
        self.pending = 0
        self.last_commit = time.monotonic()


def _mark_missing(session: Session, roots: list[str], unlisted: list[str], now: datetime) -> int:
    """Mark photos under the walked roots that this scan did not see as missing.

    Only called after a complete walk; photos under folders that could not be listed keep
    their status, since we do not know they are gone.
    """
    condition = and_(
        or_(*(path_under(Photo.path, root) for root in roots)),
        Photo.last_seen < now,
        Photo.status != "missing",
        *(not_(path_under(Photo.path, folder)) for folder in unlisted),
    )
    result = session.execute(
        update(Photo)
        .where(condition)
        .values(status="missing")
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount or 0
