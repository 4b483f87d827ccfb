"""Ranking: the queries behind ``photosort top`` and ``photosort show``.

A photo's score for an emotion is the best probability of that emotion over its faces (ties
broken by the larger face), or with ``every_face`` the weakest, for group photos where
everyone should share it; the face that gives it is the photo's deciding face, the one the
album explains. Bursts of near-identical shots would fill a top-10 with one
moment, so by default only the best photo of each group of perceptually near-identical
photos is kept. Rows are streamed from SQL in score order; nothing loads the whole library.

A photo's date is its capture time (EXIF, in the camera's local time), or for a photo without
one its file's modification time in local time; :class:`Period` filters on that date.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select
from sqlalchemy.orm import Session

from photosort.defaults import DEFAULT_MIN_PROBABILITY, EMOTIONS
from photosort.errors import PhotosortError
from photosort.images import ImageError, hash_distance
from photosort.scanning import content_hash
from photosort.store import EMOTION_COLUMNS, FaceRow, Photo, chunked, path_under, stored_paths

DUPLICATE_BITS = 6
"""Perceptual hashes this close (of 64 bits) count as the same shot."""


class RankingError(PhotosortError):
    """The question cannot be answered yet (an empty library, a photo never scanned)."""


_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
DATE_FORMS = "a year (2023), a month (2023-06) or a day (2023-06-14)"


def date_span(text: str) -> tuple[datetime, datetime]:
    """The local time a year, month or day covers, as [start, end); ValueError with the
    reason, in words for the user, when ``text`` names none."""
    found = _DATE.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"{text!r} is not a date: use {DATE_FORMS}")
    year = int(found[1])
    month = int(found[2]) if found[2] else None
    day = int(found[3]) if found[3] else None
    try:
        start = datetime(year, month or 1, day or 1)
    except ValueError:
        raise ValueError(f"{text!r} is not a date in the calendar: use {DATE_FORMS}") from None
    try:
        if day is not None:
            end = start + timedelta(days=1)
        elif month is not None:
            end = datetime(year + (month == 12), month % 12 + 1, 1)
        else:
            end = datetime(year + 1, 1, 1)
        for bound in (start, end):  # the platform must turn it into a file time
            _epoch_ns(bound)
    except (ValueError, OverflowError, OSError):
        # A real day whose period ends past year 9999, or that file times cannot reach.
        raise ValueError(
            f"{text!r} is too far from today to compare with photos' dates: use {DATE_FORMS} "
            "nearer today"
        ) from None
    return start, end


def _epoch_ns(local: datetime) -> int:
    """A naive local time as file times count it (nanoseconds since the epoch, UTC)."""
    return int(local.timestamp()) * 1_000_000_000


def photo_date(taken_at: datetime | None, mtime_ns: int) -> tuple[datetime, bool]:
    """A photo's date and whether it is its file's time (the photo holds no capture time)."""
    if taken_at is not None:
        return taken_at, False
    return datetime.fromtimestamp(mtime_ns / 1e9), True


def _last_day(end: datetime) -> datetime:
    """The day an exclusive end closes: the period up to 2024-01-01 ends on 2023-12-31."""
    return datetime.fromordinal((end - timedelta(microseconds=1)).toordinal())


@dataclass(frozen=True)
class Period:
    """Photos dated from ``start`` up to, not including, ``end`` (local times; None: open)."""

    start: datetime | None = None
    end: datetime | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise RankingError(
                f"the period would start on {self.start:%Y-%m-%d}, after it ends on "
                f"{_last_day(self.end):%Y-%m-%d}"
            )

    @property
    def bounded(self) -> bool:
        return self.start is not None or self.end is not None

    def clause(self) -> ColumnElement[bool]:
        """SQL for "the photo's date is in the period": the capture time, or the file's
        time for photos without one, compared as local times."""
        taken: list[ColumnElement[bool]] = [Photo.taken_at.is_not(None)]
        by_file: list[ColumnElement[bool]] = [Photo.taken_at.is_(None)]
        if self.start is not None:
            taken.append(Photo.taken_at >= self.start)
            by_file.append(Photo.mtime_ns >= _epoch_ns(self.start))
        if self.end is not None:
            taken.append(Photo.taken_at < self.end)
            by_file.append(Photo.mtime_ns < _epoch_ns(self.end))
        return or_(and_(*taken), and_(*by_file))

    def describe(self) -> str:
        """The period in words, its last day included: "2023-01-01 to 2023-12-31"."""
        first = f"{self.start:%Y-%m-%d}" if self.start else None
        last = f"{_last_day(self.end):%Y-%m-%d}" if self.end else None
        if first and last:
            return first if first == last else f"{first} to {last}"
        return f"from {first}" if first else f"up to {last}"


@dataclass(frozen=True)
class RankedFace:
    number: int
    """1-based, as ``show`` lists and ``explain --face`` takes it."""
    box: tuple[float, float, float, float]
    score: float
    sharpness: float
    probabilities: dict[str, float] | None
    error: str | None = None

    @property
    def emotion(self) -> str | None:
        if not self.probabilities:
            return None
        return max(self.probabilities, key=self.probabilities.__getitem__)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "box": [round(v) for v in self.box],
            "emotion": self.emotion,
            "probabilities": (
                {k: round(v, 4) for k, v in self.probabilities.items()}
                if self.probabilities
                else None
            ),
        }
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True)
class RankedPhoto:
    photo_id: int
    path: str
    score: float
    faces: list[RankedFace]
    folded: int = 0
    """Near-identical shots of the same moment left out for this one."""
    deciding: RankedFace | None = None
    """The face whose probability is the photo's score."""
    date: datetime | None = None
    """Its capture time, or its file's time when ``date_from_file``."""
    date_from_file: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "score": round(self.score, 4),
            "date": self.date.isoformat(timespec="seconds") if self.date else None,
            "date_from": "file" if self.date_from_file else "capture",
            "faces": [f.as_dict() for f in self.faces],
        }


def _face(row: FaceRow) -> RankedFace:
    probs = row.probabilities
    return RankedFace(
        number=row.idx + 1,
        box=(row.x, row.y, row.w, row.h),
        score=row.score,
        sharpness=row.sharpness,
        probabilities=dict(zip(EMOTIONS, probs, strict=True)) if probs else None,
        error=row.classify_error,
    )


def _check_library(session: Session) -> None:
    if session.scalar(select(func.count()).select_from(Photo)) == 0:
        raise RankingError("the library is empty: run `photosort scan PATH` first")
    classified = select(func.count()).select_from(FaceRow).where(FaceRow.p_happy.is_not(None))
    if session.scalar(classified) == 0:
        raise RankingError(
            "no classified faces in the library yet: run `photosort scan PATH` to find them"
        )


def top_photos(
    engine: Engine,
    emotion: str,
    n: int = 10,
    *,
    min_face: float = 0.0,
    min_probability: float = DEFAULT_MIN_PROBABILITY,
    under: str | None = None,
    every_face: bool = False,
    keep_duplicates: bool = False,
    period: Period | None = None,
) -> list[RankedPhoto]:
    """The ``n`` photos that show ``emotion`` best, each with a score of at least
    ``min_probability`` (and dated in ``period``); missing photos are left out."""
    if emotion not in EMOTIONS:
        raise RankingError(f"unknown emotion {emotion!r}; choose from {', '.join(EMOTIONS)}")
    column = getattr(FaceRow, EMOTION_COLUMNS[EMOTIONS.index(emotion)])
    score = (func.min(column) if every_face else func.max(column)).label("score")
    size = func.max(FaceRow.w * FaceRow.h).label("size")
    query = (
        select(Photo.id, Photo.path, Photo.phash, Photo.taken_at, Photo.mtime_ns, score, size)
        .join(FaceRow, FaceRow.photo_id == Photo.id)
        .where(Photo.status == "ok", column.is_not(None), FaceRow.w >= min_face)
        .group_by(Photo.id)
        .having(score >= min_probability)
        .order_by(score.desc(), size.desc(), Photo.id)
    )
    if under is not None:
        query = query.where(or_(*(path_under(Photo.path, p) for p in stored_paths(under))))
    if period is not None and period.bounded:
        query = query.where(period.clause())
    picked: list[tuple[int, str, float, tuple[datetime, bool]]] = []
    folded: list[int] = []
    hashes: list[tuple[str, int]] = []  # a kept photo's hash, and its place in ``picked``
    with Session(engine) as session:
        _check_library(session)
        # Closing the result releases a server-side cursor left open by stopping early.
        with session.execute(query.execution_options(yield_per=200)) as rows:
            for photo_id, path, phash, taken_at, mtime_ns, value, _size in rows:
                if not keep_duplicates and phash is not None:
                    twin = next(
                        (i for kept, i in hashes if hash_distance(phash, kept) <= DUPLICATE_BITS),
                        None,
                    )
                    if twin is not None:
                        folded[twin] += 1
                        continue
                    hashes.append((phash, len(picked)))
                picked.append((photo_id, path, value, photo_date(taken_at, mtime_ns)))
                folded.append(0)
                if len(picked) >= n:
                    break
        faces = _faces_of(session, [p[0] for p in picked], min_face)
    return [
        RankedPhoto(
            pid,
            path,
            value,
            faces.get(pid, []),
            extra,
            deciding_face(faces.get(pid, []), emotion, every_face=every_face),
            date,
            from_file,
        )
        for (pid, path, value, (date, from_file)), extra in zip(picked, folded, strict=True)
    ]


def deciding_face(
    faces: list[RankedFace], emotion: str, *, every_face: bool = False
) -> RankedFace | None:
    """The face that gives a photo its score for ``emotion``, as :func:`top_photos` scores
    it: the most likely classified face (``every_face``: the least likely), the larger one
    on a tie; None when no face is classified."""
    classified = [f for f in faces if f.probabilities]
    if not classified:
        return None
    sign = -1 if every_face else 1
    return max(
        classified,
        key=lambda f: (sign * f.probabilities[emotion], f.box[2] * f.box[3]),  # type: ignore[index]
    )


def _faces_of(
    session: Session, photo_ids: list[int], min_face: float
) -> dict[int, list[RankedFace]]:
    out: dict[int, list[RankedFace]] = {}
    for chunk in chunked(photo_ids):
        rows = session.scalars(
            select(FaceRow)
            .where(FaceRow.photo_id.in_(chunk), FaceRow.w >= min_face)
            .order_by(FaceRow.photo_id, FaceRow.idx)
        )
        for row in rows:
            out.setdefault(row.photo_id, []).append(_face(row))
    return out


@dataclass(frozen=True)
class PhotoFaces:
    path: str
    status: str
    faces_state: str
    error: str | None
    faces: list[RankedFace]
    since_scan: str | None = None
    """The file changed or went missing after the scan that found these faces."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "since_scan": self.since_scan,
            "faces_state": self.faces_state,
            "error": self.error,
            "faces": [
                {**f.as_dict(), "score": round(f.score, 4), "sharpness": round(f.sharpness, 1)}
                for f in self.faces
            ],
        }


def file_state(path: str) -> tuple[int, int, int, int] | None:
    """What tells one file at ``path`` from another: device, inode, size, mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def changed_since_scan(photo: Photo, state: tuple[int, int, int, int] | None) -> bool:
    """Whether the file at the photo's path is no longer the photo the library scanned.

    Its faces and boxes belong to the scanned content: drawn on another picture (a photo
    copied over it, an edit) they would point at the wrong people. The same size and mtime
    mean the same photo, as a rescan judges; otherwise the content hash decides (a file
    only touched is still the photo). A file that is gone (no ``state``) is not "changed":
    ``since_scan`` calls it missing.
    """
    if state is None:
        return False
    if (state[2], state[3]) == (photo.size, photo.mtime_ns):
        return False
    if state[2] != photo.size or photo.content_hash is None:
        return True
    try:
        return content_hash(photo.path) != photo.content_hash
    except (OSError, ImageError):
        return True


def since_scan(photo: Photo) -> str | None:
    """What became of a readable photo's file since its scan: "changed", "missing", or None
    while it is still the photo scanned. Stored faces belong to the scanned content."""
    if photo.status != "ok":
        return None
    state = file_state(photo.path)
    if state is None:
        return "missing"
    return "changed" if changed_since_scan(photo, state) else None


def find_photo(session: Session, path: str) -> Photo | None:
    """The library's photo at the user's ``path``, however a scan spelled it (symlinks)."""
    candidates = stored_paths(path)
    found = {p.path: p for p in session.scalars(select(Photo).where(Photo.path.in_(candidates)))}
    return next((found[c] for c in candidates if c in found), None)


def photo_faces(engine: Engine, path: str) -> PhotoFaces:
    """The faces found in one photo, looked up by its path."""
    with Session(engine) as session:
        photo = find_photo(session, path)
        if photo is None:
            raise RankingError(f"{path} is not in the library: run `photosort scan` on its folder")
        return PhotoFaces(
            path=photo.path,
            status=photo.status,
            faces_state=photo.faces_state,
            error=photo.error or photo.faces_error,
            faces=[_face(f) for f in photo.faces],
            since_scan=since_scan(photo),
        )


@dataclass(frozen=True)
class LibrarySummary:
    """What an album says about the library it comes from."""

    photos: int
    faces: int
    first: datetime | None
    last: datetime | None
    """The earliest and latest photo dates (capture time, else the file's time)."""
    dated_by_file: int
    """Photos without a capture time, dated by their file's time."""
    models: list[str]
    """The models the faces were classified with, the most used first."""


def library_summary(engine: Engine) -> LibrarySummary:
    """Count the library's readable photos and their faces, and find the dates they cover,
    in a few aggregate queries (no rows are loaded)."""
    ok = Photo.status == "ok"
    with Session(engine) as session:
        photos, first_taken, last_taken = session.execute(
            select(func.count(), func.min(Photo.taken_at), func.max(Photo.taken_at)).where(ok)
        ).one()
        by_file, first_ns, last_ns = session.execute(
            select(func.count(), func.min(Photo.mtime_ns), func.max(Photo.mtime_ns)).where(
                ok, Photo.taken_at.is_(None)
            )
        ).one()
        faces = session.scalar(select(func.count()).select_from(FaceRow).join(Photo).where(ok))
        used = func.count().label("used")
        models = session.execute(
            select(FaceRow.model_id, used)
            .join(Photo)
            .where(ok, FaceRow.model_id.is_not(None))
            .group_by(FaceRow.model_id)
            .order_by(used.desc(), FaceRow.model_id)
        ).all()
    dates = [d for d in (first_taken, last_taken) if d is not None]
    dates += [photo_date(None, ns)[0] for ns in (first_ns, last_ns) if ns is not None]
    return LibrarySummary(
        photos=photos,
        faces=faces or 0,
        first=min(dates, default=None),
        last=max(dates, default=None),
        dated_by_file=by_file,
        models=[m for m, _ in models],
    )
