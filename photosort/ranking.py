"""Ranking: the queries behind ``photosort top`` and ``photosort show``.

A photo's score for an emotion is the best probability of that emotion over its faces (ties
broken by the larger face), or with ``every_face`` the weakest, for group photos where
everyone should share it; the face that gives it is the photo's deciding face, the one the
album explains. Bursts of near-identical shots would fill a top-10 with one
moment, so by default only the best photo of each group of perceptually near-identical
photos is kept. Rows are streamed from SQL in score order; nothing loads the whole library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.orm import Session

from photosort.defaults import DEFAULT_MIN_PROBABILITY, EMOTIONS
from photosort.errors import PhotosortError
from photosort.images import hash_distance
from photosort.store import EMOTION_COLUMNS, FaceRow, Photo, chunked, path_under, stored_paths

DUPLICATE_BITS = 6
"""Perceptual hashes this close (of 64 bits) count as the same shot."""


class RankingError(PhotosortError):
    """The question cannot be answered yet (an empty library, a photo never scanned)."""


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "score": round(self.score, 4),
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
) -> list[RankedPhoto]:
    """The ``n`` photos that show ``emotion`` best, each with a score of at least
    ``min_probability``; missing photos are left out."""
    if emotion not in EMOTIONS:
        raise RankingError(f"unknown emotion {emotion!r}; choose from {', '.join(EMOTIONS)}")
    column = getattr(FaceRow, EMOTION_COLUMNS[EMOTIONS.index(emotion)])
    score = (func.min(column) if every_face else func.max(column)).label("score")
    size = func.max(FaceRow.w * FaceRow.h).label("size")
    query = (
        select(Photo.id, Photo.path, Photo.phash, score, size)
        .join(FaceRow, FaceRow.photo_id == Photo.id)
        .where(Photo.status == "ok", column.is_not(None), FaceRow.w >= min_face)
        .group_by(Photo.id)
        .having(score >= min_probability)
        .order_by(score.desc(), size.desc(), Photo.id)
    )
    if under is not None:
        query = query.where(or_(*(path_under(Photo.path, p) for p in stored_paths(under))))
    picked: list[tuple[int, str, float]] = []
    folded: list[int] = []
    hashes: list[tuple[str, int]] = []  # a kept photo's hash, and its place in ``picked``
    with Session(engine) as session:
        _check_library(session)
        # Closing the result releases a server-side cursor left open by stopping early.
        with session.execute(query.execution_options(yield_per=200)) as rows:
            for photo_id, path, phash, value, _size in rows:
                if not keep_duplicates and phash is not None:
                    twin = next(
                        (i for kept, i in hashes if hash_distance(phash, kept) <= DUPLICATE_BITS),
                        None,
                    )
                    if twin is not None:
                        folded[twin] += 1
                        continue
                    hashes.append((phash, len(picked)))
                picked.append((photo_id, path, value))
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
        )
        for (pid, path, value), extra in zip(picked, folded, strict=True)
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status,
            "faces_state": self.faces_state,
            "error": self.error,
            "faces": [
                {**f.as_dict(), "score": round(f.score, 4), "sharpness": round(f.sharpness, 1)}
                for f in self.faces
            ],
        }


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
        )
