"""Reporting: a static HTML album of the top photos per emotion, with LIME explanations.

Everything the album shows is written into OUTDIR: resized, upright copies of the photos
(never the originals), face crops and heatmaps, and pages rendered from the Jinja2 templates
in ``templates/`` with autoescaping on, inline CSS and a Content-Security-Policy that allows
no network access, so the album works from ``file://`` anywhere. A manifest lists what
photosort wrote; a re-run replaces and cleans up only those files.

A pick page explains the pick's emotion on the face that earned the pick (ranking's deciding
face): one explanation per pick, however many faces the photo has. Its other faces show
their probabilities, an explanation for that emotion when the library has one cached (from
``photosort explain`` or an earlier report), and otherwise the command that makes one.

The album is browsed like one: each pick page links to the previous and next pick of its
emotion (in the order the index shows them, by year with ``by_year``, when the links and the
page's heading name the year) and back to the emotion's section; the index opens with a
summary of the library it comes from.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import secrets
import shlex
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from photosort import __version__
from photosort.defaults import DEFAULT_MIN_PROBABILITY, EMOTIONS, REPORT_MANIFEST
from photosort.errors import PhotosortError
from photosort.explaining import (
    DEFAULT_SAMPLES,
    DEFAULT_SEGMENTS,
    Explanation,
    FaceParts,
    Predictor,
    check_sentences,
    crop_landmarks,
    explain_face,
    explanation_card,
    face_parts,
    heatmap_image,
    png_bytes,
)
from photosort.images import DEFAULT_MAX_MEGAPIXELS, ImageError, read_image
from photosort.indexing import decode_crop
from photosort.ranking import (
    LibrarySummary,
    Period,
    RankedPhoto,
    RankingError,
    changed_since_scan,
    file_state,
    find_photo,
    library_summary,
    since_scan,
    top_photos,
)
from photosort.resources import resource_dir
from photosort.store import (
    LOCK_WAIT_SECONDS,
    ExplanationRow,
    FaceRow,
    Photo,
    is_read_only,
    photo_under,
    try_flock,
    try_for,
    utcnow,
)

MANIFEST = REPORT_MANIFEST
LARGE_SIDE = 1600
THUMB_SIDE = 480


class ReportError(PhotosortError):
    """The report cannot be written where asked."""


class ExplainingModel(Predictor):
    """What a report needs of the emotion model: predictions and an identity for the cache."""

    model_id: str


@cache
def templates() -> Any:
    """The one Jinja2 environment: templates from ``templates/``, autoescaped."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(resource_dir("templates"))),
        autoescape=select_autoescape(["html"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["version"] = __version__
    env.globals["emotions"] = EMOTIONS
    env.globals["check_sentences"] = check_sentences
    return env


def check_outdir(outdir: Path) -> Path:
    """Make sure OUTDIR is a writable folder (creating it), or say why not in one line."""
    if outdir.exists() and not outdir.is_dir():
        raise ReportError(f"{outdir} is a file, not a folder")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=outdir, prefix=".photosort-probe-"):
            pass
    except OSError as exc:
        raise ReportError(f"cannot write to {outdir}: {exc.strerror or exc}") from None
    return outdir


class _Output:
    """Writes files into OUTDIR atomically and remembers them for the manifest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: set[str] = set()
        try:
            self.before = set(json.loads((root / MANIFEST).read_text())["files"])
        except (OSError, ValueError, KeyError, TypeError):
            self.before = set()

    def reuse(self, relative: str) -> bool:
        """Keep a file an earlier run wrote under the same name (names carry content hashes)."""
        if relative in self.before and (self.root / relative).is_file():
            self.written.add(relative)
            return True
        return False

    def check_free(self, names: Iterable[str]) -> None:
        """Refuse before writing anything if a file of the user's has a name this run needs."""
        for relative in names:
            self._check_free(relative)

    def claim(self, names: Iterable[str]) -> None:
        """Check every name this run will write, then list them all before writing any, so
        that even a run killed outright (SIGKILL, power cut) leaves no file of ours unlisted."""
        needed = set(names)
        self.check_free(needed)
        self.save_manifest(self.before | self.written | needed)

    def _check_free(self, relative: str) -> None:
        # photos/ and faces/ too: a user's own faces/1.png would be overwritten, then listed
        # and removed by a later run.
        target = self.root / relative
        self._check_inside(target.parent)
        if relative in self.before or relative in self.written or not target.exists():
            return
        raise ReportError(
            f"{target} was not written by photosort and would be overwritten; "
            "write the album into a new or empty folder"
        )

    def write(self, relative: str, data: bytes) -> str:
        self._check_free(relative)
        return self._write(relative, data)

    def _write(self, relative: str, data: bytes) -> str:
        target = self.root / relative
        tmp = target.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(6)}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # Created with the umask's modes, as any file the user makes (mkstemp's are 0600).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ReportError(f"cannot write {target}: {exc.strerror or exc}") from None
        self.written.add(relative)
        return relative

    def _check_inside(self, folder: Path) -> None:
        """Refuse a subfolder of OUTDIR that is a symlink: writing through it would put the
        album's files (and later removals) outside OUTDIR."""
        for part in (folder, *folder.parents):
            if part == self.root:
                return
            if part.is_symlink():
                raise ReportError(
                    f"{part} is a symlink; photosort writes only inside {self.root}: "
                    "write the album into a new or empty folder"
                )

    def finish(self) -> None:
        """Remove what an earlier run wrote and this one did not; then save the manifest."""
        for stale in sorted(self.before - self.written):
            path = (self.root / stale).resolve()
            if self.root.resolve() in path.parents:
                path.unlink(missing_ok=True)
        self.save_manifest(self.written)

    def save_manifest(self, files: set[str]) -> None:
        data = {"generator": f"photosort {__version__}", "files": sorted(files - {MANIFEST})}
        self._write(MANIFEST, json.dumps(data, indent=1).encode())


@dataclass
class FaceView:
    face_id: int
    number: int
    """1-based, as ``show`` lists and ``explain --face`` takes it."""
    box_pct: tuple[float, float, float, float]
    emotion: str | None
    """The face's own most likely emotion."""
    bars: list[tuple[str, float]]
    crop: str
    deciding: bool = False
    """This face earned the pick: its probability of the pick's emotion is the score."""
    explained: Explanation | None = None
    """The explanation of the pick's emotion on this face, when there is one."""
    heatmap: str | None = None
    parts: FaceParts | None = None
    """The face parts the explanation's regions cover."""
    hint: str | None = None
    """The command that explains this face for the pick's emotion, when none is cached."""
    error: str | None = None


@dataclass
class PickView:
    emotion: str
    rank: int
    score: float
    name: str
    path: str
    uri: str
    page: str
    thumb: str | None
    large: str | None
    note: str | None
    """Why the photo itself is not shown, in a sentence for its page."""
    badge: str | None
    """The same in a few words, for its card in the index."""
    date: datetime | None
    date_from_file: bool
    """The date is the file's time: the photo holds no capture time."""
    aspect: float
    """Width over height of the upright photo, which sizes its thumbnail's frame."""
    faces: list[FaceView] = field(default_factory=list)
    previous: PickView | None = None
    next: PickView | None = None
    """The neighbouring picks of the same emotion, in the index's order."""
    group: str | None = None
    """Its year group on the index ("2019", "undated") with ``by_year``, else None."""

    @property
    def deciding(self) -> FaceView | None:
        return next((f for f in self.faces if f.deciding), None)

    @property
    def percent(self) -> str:
        """The score as the album shows it: "96%"."""
        return f"{self.score * 100:.0f}%"

    @property
    def label(self) -> str:
        """The pick in a pager link: "happy #3", and with ``by_year`` "happy #3 (2019)", so
        that the year groups explain why the ranks come out of order."""
        name = f"{self.emotion} #{self.rank}"
        return f"{name} ({self.group})" if self.group else name


@dataclass
class Section:
    """One emotion's picks, in groups (one per year with ``by_year``, else a single one)."""

    emotion: str
    groups: list[tuple[int | None, list[PickView]]]

    @property
    def picks(self) -> list[PickView]:
        return [pick for _, picks in self.groups for pick in picks]


@dataclass(frozen=True)
class AlbumFacts:
    """The index's summary: the library's numbers and what this album leaves out."""

    library: LibrarySummary
    hidden: int
    """Near-identical shots left out for the picks shown."""
    model_id: str
    """The model the explanations are of."""
    period: str | None
    generated: str
    """When the album was written, in local time with its zone."""


def local_time(moment: datetime) -> str:
    """A moment as the reader's clock shows it, with the zone: "2024-05-01 14:03 CEST
    (UTC+02:00)"."""
    local = moment.astimezone()
    offset = local.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    zone = f"UTC{sign}{hours:02d}:{mins:02d}"
    stamp = f"{local:%Y-%m-%d %H:%M}"
    name = local.tzname() or ""
    # A zone without a name of its own is called by its offset ("+03"): say that once.
    if name == "UTC" or not name[:1].isalpha():
        return f"{stamp} {zone}"
    return f"{stamp} {name} ({zone})"


@dataclass(frozen=True)
class ReportSummary:
    index: Path
    picks: int
    explained: int
    cached: int
    changed: int = 0
    """Picked photos whose file changed since the scan: shown without their picture."""


def _cache_key(
    face: FaceRow, model: ExplainingModel, emotion: str, samples: int, segments: int, seed: int
) -> dict[str, Any]:
    return {
        "face_id": face.id,
        "model_id": model.model_id,
        "emotion": emotion,
        "samples": samples,
        "segments": segments,
        "seed": seed,
    }


def cached_explanation(
    session: Session,
    face: FaceRow,
    model: ExplainingModel,
    emotion: str,
    *,
    samples: int,
    segments: int,
    seed: int,
) -> Explanation | None:
    """The face's explanation if the library has it cached; never computes one."""
    key = _cache_key(face, model, emotion, samples, segments, seed)
    row = session.scalars(select(ExplanationRow).filter_by(**key)).first()
    if row is None:
        return None
    shape = json.loads(row.weights)
    segment_map = np.frombuffer(row.segment_map, np.int16).reshape(shape["shape"])
    return Explanation(
        emotion=emotion,
        probability=row.probability,
        segments=segment_map,
        weights={int(k): v for k, v in shape["weights"].items()},
        fit=row.fit,
        deletion_support=row.deletion_support,
        deletion_random=row.deletion_random,
        # An unknown spread never passes the check.
        deletion_spread=math.inf if row.deletion_spread is None else row.deletion_spread,
        deletion_rank=row.deletion_rank,
        deletion_draws=row.deletion_draws,
    )


def explanation_for(
    session: Session,
    face: FaceRow,
    model: ExplainingModel,
    emotion: str,
    *,
    samples: int,
    segments: int,
    seed: int,
) -> tuple[Explanation, bool]:
    """The face's explanation from the cache, or computed and cached; says if it was cached."""
    params = {"samples": samples, "segments": segments, "seed": seed}
    cached = cached_explanation(session, face, model, emotion, **params)
    if cached is not None:
        return cached, True
    key = _cache_key(face, model, emotion, samples, segments, seed)
    found = explain_face(
        decode_crop(face.crop), model, emotion, samples=samples, segments=segments, seed=seed
    )
    if is_read_only(session.get_bind()):  # a library in a read-only folder: not cached
        return found, False
    session.add(
        ExplanationRow(
            **key,
            probability=found.probability,
            fit=found.fit,
            deletion_support=found.deletion_support,
            deletion_random=found.deletion_random,
            deletion_spread=found.deletion_spread,
            deletion_rank=found.deletion_rank,
            deletion_draws=found.deletion_draws,
            segment_map=found.segments.astype(np.int16).tobytes(),
            weights=json.dumps({"shape": list(found.segments.shape), "weights": found.weights}),
            created_at=utcnow(),
        )
    )
    try:
        session.commit()
    except IntegrityError:
        # Another report (into another album) cached the same explanation meanwhile: with
        # the same seed it is the same one.
        session.rollback()
    return found, False


def build_report(
    engine: Engine,
    outdir: Path,
    model: ExplainingModel,
    *,
    n: int = 10,
    emotions: Sequence[str] = EMOTIONS,
    min_probability: float = DEFAULT_MIN_PROBABILITY,
    samples: int = DEFAULT_SAMPLES,
    segments: int = DEFAULT_SEGMENTS,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    explain_options: Sequence[str] = (),
    period: Period | None = None,
    by_year: bool = False,
) -> ReportSummary:
    """Write the album for the top ``n`` photos of each emotion (dated in ``period``) into
    ``outdir``, each emotion's picks grouped by year with ``by_year``.

    ``explain_options`` are repeated in the ``photosort explain`` hints (``--db``,
    ``--model``), so that the command finds the same library and model as the report.
    """
    scanned = photo_under(engine, str(outdir))
    if scanned is not None:
        # A scan skips a folder holding an album: its photos would all turn missing.
        raise ReportError(
            f"{outdir} holds photos of the library (such as {scanned}); "
            "write the album into a folder of its own"
        )
    outdir = check_outdir(outdir)
    emotions = list(dict.fromkeys(emotions))  # --emotion happy --emotion happy: one section
    with album_lock(outdir):
        out = _Output(outdir)
        out.check_free(
            ["index.html"] + [page_name(e, r) for e in emotions for r in range(1, n + 1)]
        )
        try:
            faces = _FaceViews(out, model, samples, segments, seed, explain_options)
            choice = _Choice(n, emotions, min_probability, period or Period(), by_year)
            return _build(engine, out, faces, choice, progress)
        except BaseException:
            # What this run wrote stays known (a failure, Ctrl-C), so a re-run replaces or
            # removes it; a run refused before writing anything leaves the folder as it was.
            if out.written:
                with contextlib.suppress(ReportError):
                    out.save_manifest(out.before | out.written)
            raise


@contextlib.contextmanager
def album_lock(outdir: Path) -> Iterator[None]:
    """Hold OUTDIR for one report at a time.

    Two reports into one folder would each clean up the other's files by their own
    manifest, leaving pages whose links point nowhere. The lock is a ``flock`` on the
    folder itself (no file of ours to leave behind), which the kernel drops when the
    process ends, however it ends. A second report waits ``LOCK_WAIT_SECONDS`` and is then
    refused.
    """
    try:
        fd = os.open(outdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ReportError(f"cannot open {outdir}: {exc.strerror or exc}") from None
    try:
        if not try_for(LOCK_WAIT_SECONDS, lambda: try_flock(fd)):
            raise ReportError(
                f"another photosort report is writing {outdir}; wait for it to finish"
            )
        yield
    finally:
        os.close(fd)  # releases the lock


def page_name(emotion: str, rank: int) -> str:
    """The file name of one pick's page."""
    return f"{emotion}-{rank:02d}.html"


class _Choice(NamedTuple):
    """Which photos the album shows, and how it groups them."""

    n: int
    emotions: Sequence[str]
    min_probability: float
    period: Period
    by_year: bool


def _build(
    engine: Engine,
    out: _Output,
    faces: _FaceViews,
    choice: _Choice,
    progress: Callable[[str], None] | None,
) -> ReportSummary:
    sections: list[Section] = []
    empty_reason = None
    copies: dict[int, _Copies] = {}
    with Session(engine) as session:
        chosen: list[tuple[str, list[tuple[RankedPhoto, Photo]]]] = []
        for emotion in choice.emotions:
            try:
                ranked = top_photos(
                    engine,
                    emotion,
                    choice.n,
                    min_probability=choice.min_probability,
                    period=choice.period,
                )
            except RankingError as exc:
                empty_reason = str(exc)
                break
            chosen.append((emotion, [(r, _photo_row(session, r.photo_id)) for r in ranked]))
        out.claim(_files_needed(chosen))
        for emotion, ranked_rows in chosen:
            picks = []
            for rank, (ranked_photo, photo) in enumerate(ranked_rows, 1):
                if photo.id not in copies:
                    copies[photo.id] = _photo_images(out, photo)
                copy = copies[photo.id]
                pick = PickView(
                    emotion=emotion,
                    rank=rank,
                    score=ranked_photo.score,
                    name=Path(photo.path).name,
                    path=photo.path,
                    uri=Path(photo.path).as_uri(),
                    page=page_name(emotion, rank),
                    thumb=copy.thumb,
                    large=copy.large,
                    note=copy.note,
                    badge=copy.badge,
                    date=ranked_photo.date,
                    date_from_file=ranked_photo.date_from_file,
                    aspect=(photo.width or 1) / (photo.height or 1),
                )
                deciding = ranked_photo.deciding
                for face in photo.faces:
                    earned = deciding is not None and face.idx + 1 == deciding.number
                    pick.faces.append(faces.view(session, photo, face, emotion, deciding=earned))
                picks.append(pick)
                if progress is not None:
                    progress(f"{emotion} #{rank}")
            sections.append(_section(emotion, picks, by_year=choice.by_year))
        hidden = sum(ranked.folded for _, rows in chosen for ranked, _ in rows)
    facts = AlbumFacts(
        library=library_summary(engine),
        hidden=hidden,
        model_id=faces.model.model_id,
        period=choice.period.describe() if choice.period.bounded else None,
        generated=local_time(datetime.now().astimezone()),
    )
    env = templates()
    for section in sections:
        for pick in section.picks:
            page = env.get_template("pick.html").render(pick=pick, samples=faces.samples)
            out.write(pick.page, page.encode())
    changed = sum(copy.changed for copy in copies.values())
    index = env.get_template("index.html").render(
        sections=sections,
        empty_reason=empty_reason,
        min_probability=choice.min_probability,
        by_year=choice.by_year,
        facts=facts,
        changed=changed,
    )
    out.write("index.html", index.encode())
    out.finish()
    return ReportSummary(
        index=out.root / "index.html",
        picks=sum(len(s.picks) for s in sections),
        explained=faces.explained,
        cached=faces.cached,
        changed=changed,
    )


def _section(emotion: str, picks: list[PickView], *, by_year: bool) -> Section:
    """An emotion's picks as the index shows them: by rank, or by year (the latest first,
    by rank within a year); each pick learns its neighbours in that order, and its year
    group, which its page and its neighbours' links name."""
    if by_year:
        years: dict[int | None, list[PickView]] = {}
        for pick in picks:
            year = pick.date.year if pick.date else None
            pick.group = str(year) if year else "undated"
            years.setdefault(year, []).append(pick)
        groups = sorted(years.items(), key=lambda item: -(item[0] or 0))
    else:
        groups = [(None, picks)]
    section = Section(emotion, groups)
    ordered = section.picks
    for before, after in zip(ordered, ordered[1:], strict=False):
        before.next, after.previous = after, before
    return section


def _photo_row(session: Session, photo_id: int) -> Photo:
    """A ranked photo's row, whose faces name the files the album writes."""
    photo = session.get(Photo, photo_id)
    assert photo is not None, "ranked photos come from the same library"
    return photo


def _copy_names(photo: Photo) -> tuple[str, str]:
    """The thumbnail's and the large copy's names; they carry the photo's content hash, so a
    re-run reuses them without decoding."""
    stem = f"photos/{photo.id}-{(photo.content_hash or 'x')[:12]}"
    return f"{stem}-thumb.jpg", f"{stem}.jpg"


def _crop_name(face: FaceRow) -> str:
    return f"faces/{face.id}.png"


def _heatmap_name(face: FaceRow, emotion: str) -> str:
    return f"faces/{face.id}-{emotion}-lime.png"


def predicted_emotion(face: FaceRow) -> str | None:
    """The emotion a face was classified as, or None when it is not classified."""
    probs = face.probabilities
    return None if probs is None else EMOTIONS[int(np.argmax(probs))]


def _files_needed(chosen: list[tuple[str, list[tuple[RankedPhoto, Photo]]]]) -> list[str]:
    """Every file the album may write, known before any is written."""
    names = ["index.html"]
    for emotion, ranked in chosen:
        for rank, (_, photo) in enumerate(ranked, 1):
            names += [page_name(emotion, rank), *_copy_names(photo)]
            for face in photo.faces:
                names.append(_crop_name(face))
                if face.probabilities is not None:
                    names.append(_heatmap_name(face, emotion))
    return names


class _Copies(NamedTuple):
    thumb: str | None
    large: str | None
    note: str | None
    badge: str | None
    changed: bool = False


CHANGED = _Copies(
    None,
    None,
    "The file was changed or replaced since it was scanned, so it is left out: the faces "
    "and scores are the scanned photo's, shown from the stored crops. Scan its folder again "
    "to rank the new one.",
    "changed since the scan: left out",
    changed=True,
)


def _photo_images(out: _Output, photo: Photo) -> _Copies:
    """Upright resized copies of a photo for the album, or a note when it cannot be read or
    is no longer the photo that was scanned."""
    names = _copy_names(photo)
    before = file_state(photo.path)
    if changed_since_scan(photo, before):
        return CHANGED
    if before is not None and all(out.reuse(name) for name in names):
        return _Copies(names[0], names[1], None, None)
    try:
        # The scan accepted the photo at its size, maybe under a higher --max-megapixels.
        stored = (photo.width or 0) * (photo.height or 0) / 1e6
        limit = max(DEFAULT_MAX_MEGAPIXELS, stored)
        large = read_image(photo.path, max_side=LARGE_SIDE, max_megapixels=limit)
    except ImageError as exc:
        gone = not os.path.exists(photo.path)
        note = "The photo has gone missing since it was scanned" if gone else f"Unreadable: {exc}"
        badge = "missing since the scan" if gone else "unreadable since the scan"
        return _Copies(None, None, note + "; its faces are shown from the stored crops.", badge)
    if file_state(photo.path) != before:  # replaced while it was read
        return CHANGED
    thumb = large.copy()
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return _Copies(out.write(names[0], _jpeg(thumb)), out.write(names[1], _jpeg(large)), None, None)


def _jpeg(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=88)
    return buf.getvalue()


class _FaceViews:
    """The faces of the pick pages: each crop written once, each explanation made once, and
    only for the faces that earned a pick; the others get one only from the cache."""

    def __init__(
        self,
        out: _Output,
        model: ExplainingModel,
        samples: int,
        segments: int,
        seed: int,
        explain_options: Sequence[str],
    ) -> None:
        self.out = out
        self.model = model
        self.samples, self.segments, self.seed = samples, segments, seed
        self.explain_options = list(explain_options)
        self.crops: dict[int, str] = {}
        self.heatmaps: dict[tuple[int, str], tuple[Explanation, str, FaceParts]] = {}
        self.explained = 0
        self.cached = 0

    def view(
        self, session: Session, photo: Photo, face: FaceRow, emotion: str, *, deciding: bool
    ) -> FaceView:
        """One face on the page of a pick for ``emotion``."""
        width, height = photo.width or 1, photo.height or 1
        box = (
            100 * face.x / width,
            100 * face.y / height,
            100 * face.w / width,
            100 * face.h / height,
        )
        if face.id not in self.crops:
            self.crops[face.id] = self.out.write(_crop_name(face), face.crop)
        number = face.idx + 1
        probs = face.probabilities
        predicted = predicted_emotion(face)
        if probs is None or predicted is None:
            error = face.classify_error or "not classified yet"
            return FaceView(face.id, number, box, None, [], self.crops[face.id], error=error)
        view = FaceView(
            face.id,
            number,
            box,
            predicted,
            list(zip(EMOTIONS, probs, strict=True)),
            self.crops[face.id],
            deciding=deciding,
        )
        found = self._explanation(session, face, emotion, compute=deciding)
        if found is None:
            view.hint = self.hint(photo.path, number, emotion)
        else:
            view.explained, view.heatmap, view.parts = found
        return view

    def _explanation(
        self, session: Session, face: FaceRow, emotion: str, *, compute: bool
    ) -> tuple[Explanation, str, FaceParts] | None:
        key = (face.id, emotion)
        if key in self.heatmaps:
            return self.heatmaps[key]
        params = {"samples": self.samples, "segments": self.segments, "seed": self.seed}
        if compute:
            found, cached = explanation_for(session, face, self.model, emotion, **params)
        else:
            found = cached_explanation(session, face, self.model, emotion, **params)
            cached = True
            if found is None:
                return None
        if cached:
            self.cached += 1
        else:
            self.explained += 1
        crop = decode_crop(face.crop)
        heat = png_bytes(heatmap_image(crop, found))
        parts = face_parts(found, crop_landmarks(crop, face.landmarks), crop.shape[0])
        self.heatmaps[key] = found, self.out.write(_heatmap_name(face, emotion), heat), parts
        return self.heatmaps[key]

    def hint(self, path: str, number: int, emotion: str) -> str:
        """The ``photosort explain`` command that explains (and caches) one face."""
        args = ["photosort", "explain", path, "--face", str(number), "--emotion", emotion]
        args += ["--out", f"face{number}-{emotion}.png"]
        if self.samples != DEFAULT_SAMPLES:
            args += ["--samples", str(self.samples)]
        if self.segments != DEFAULT_SEGMENTS:
            args += ["--segments", str(self.segments)]
        return shlex.join(args + self.explain_options)


def _no_face(photo: Photo, number: int) -> str:
    """Why a photo has no face ``number``: unreadable and not yet looked at are not "0 faces"."""
    count = len(photo.faces)
    if count:  # kept faces count, whatever became of the file since
        return f"has {count} face{'' if count == 1 else 's'}; there is no face {number}"
    if photo.status == "unreadable":
        return f"could not be read when it was scanned ({photo.error}): it has no faces"
    if photo.faces_state == "pending":
        return "has no faces yet: scan its folder again (without --no-faces) to look for them"
    if photo.faces_state == "error":
        return f"has no faces: detecting them failed ({photo.faces_error})"
    return "has no faces"


def explain_photo_face(
    engine: Engine,
    photo_path: str,
    model: ExplainingModel,
    *,
    face_number: int = 1,
    emotion: str | None = None,
    samples: int = DEFAULT_SAMPLES,
    segments: int = DEFAULT_SEGMENTS,
    seed: int = 0,
) -> tuple[Explanation, FaceParts, Any, str | None]:
    """Explain one face of one photo (1-based), for its predicted emotion unless one is given:
    the explanation, the face parts it covers, the picture with its caption and key, and what
    became of the file since the scan (``ranking.since_scan``: the crop explained is the
    scanned photo's)."""
    with Session(engine, expire_on_commit=False) as session:
        photo = find_photo(session, photo_path)
        if photo is None:
            raise ReportError(f"{photo_path} is not in the library: run `photosort scan` first")
        if not 1 <= face_number <= len(photo.faces):
            raise ReportError(f"{photo_path} {_no_face(photo, face_number)}")
        face = photo.faces[face_number - 1]
        emotion = emotion or predicted_emotion(face)
        if emotion is None:
            raise ReportError(f"face {face_number} of {photo_path} is not classified yet")
        explanation, _ = explanation_for(
            session, face, model, emotion, samples=samples, segments=segments, seed=seed
        )
        crop = decode_crop(face.crop)
        parts = face_parts(explanation, crop_landmarks(crop, face.landmarks), crop.shape[0])
        card = explanation_card(crop, explanation, parts)
        return explanation, parts, card, since_scan(photo)
