"""Face data sets for training and evaluation: FER-2013's CSV, FER+ votes, folders of faces.

Reads FER-2013 (the Kaggle ``emotion,pixels,Usage`` CSV, plain or gzipped; or its compact
copy, the faces stacked in one PNG beside an ``emotion,Usage`` CSV) or a folder tree
with one sub-folder per emotion, optionally with the row-aligned FER+ votes; a bad row is a
one-line DataError naming the file and line.
"""

from __future__ import annotations

import csv
import gzip
import math
import os
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from photosort.emotions import EMOTIONS
from photosort.errors import PhotosortError
from photosort.images import ImageError, read_array

USAGES = ("Training", "PublicTest", "PrivateTest")
FOLDER_SPLITS = (("Training", "train"), ("PublicTest", "test"))
FERPLUS_COLUMNS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
"""The FER+ vote columns in :data:`EMOTIONS` order."""
FERPLUS_OTHER_COLUMNS = ("contempt", "unknown", "NF")
"""Votes for no FER-2013 class: not targets, but they count against a majority."""
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class DataError(PhotosortError, ValueError):
    """Training or evaluation data that cannot be used; the message names the file and row."""


@dataclass(frozen=True)
class FaceData:
    """Labelled faces as read from a CSV or a folder tree, in file order."""

    faces: np.ndarray | list[np.ndarray]
    labels: np.ndarray
    usage: np.ndarray
    source: str
    votes: np.ndarray | None = None
    """FER+ vote counts ``(N, 7)`` in :data:`EMOTIONS` order; all zero where none are valid."""
    ferplus_labels: np.ndarray | None = None
    """The FER+ majority label of each face (:func:`ferplus_majority`), -1 where there is none."""

    def __len__(self) -> int:
        return len(self.labels)

    def select(self, mask: np.ndarray) -> FaceData:
        """The rows where ``mask`` is true."""
        faces = (
            self.faces[mask]
            if isinstance(self.faces, np.ndarray)
            else [f for f, keep in zip(self.faces, mask, strict=True) if keep]
        )
        votes = None if self.votes is None else self.votes[mask]
        majority = None if self.ferplus_labels is None else self.ferplus_labels[mask]
        return replace(
            self,
            faces=faces,
            labels=self.labels[mask],
            usage=self.usage[mask],
            votes=votes,
            ferplus_labels=majority,
        )


# --- reading data -------------------------------------------------------------------------


def _open_text(path: Path) -> Any:
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    # utf-8-sig: a CSV saved by a spreadsheet starts with a byte-order mark.
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _parse_pixels(text: str, where: str) -> np.ndarray:
    try:
        values = np.array(text.split(), dtype=np.int64)
    except (ValueError, OverflowError):
        raise DataError(f"{where}: malformed pixels: not a list of integers") from None
    side = math.isqrt(values.size)
    if values.size == 0 or side * side != values.size:
        raise DataError(
            f"{where}: malformed pixels: {values.size} values do not make a square face"
        )
    if values.min() < 0 or values.max() > 255:
        raise DataError(f"{where}: malformed pixels: values must be 0-255")
    return values.astype(np.uint8).reshape(side, side)


def _parse_label(text: str, where: str) -> int:
    try:
        label = int(text)
    except ValueError:
        raise DataError(f"{where}: emotion label {text!r} is not a number 0-6") from None
    if not 0 <= label < len(EMOTIONS):
        raise DataError(f"{where}: emotion label {label} out of range 0-6")
    return label


def load_csv(path: str | os.PathLike[str]) -> FaceData:
    """Read the Kaggle FER-2013 layout (``emotion,pixels[,Usage]``, plain or gzipped).

    Without a ``Usage`` column every row counts as Training. Raises DataError naming the file
    and row for missing columns, malformed pixels, labels out of range or unknown usages.
    """
    path = Path(path)
    faces: list[np.ndarray] = []
    labels: list[int] = []
    usage: list[str] = []
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            header = [name.strip() for name in next(reader, [])]
            missing = [c for c in ("emotion", "pixels") if c not in header]
            if missing:
                raise DataError(
                    f"{path}: missing column(s) {', '.join(missing)}; "
                    "expected the header emotion,pixels,Usage"
                )
            i_label, i_pixels = header.index("emotion"), header.index("pixels")
            i_usage = header.index("Usage") if "Usage" in header else None
            needed = max(i_label, i_pixels, -1 if i_usage is None else i_usage) + 1
            for row_no, row in enumerate(reader, start=1):
                where = f"{path}, row {row_no} (line {reader.line_num})"
                if not row:
                    continue
                if len(row) < needed:
                    raise DataError(f"{where}: {len(row)} fields, expected {len(header)}")
                face = _parse_pixels(row[i_pixels], where)
                if faces and face.shape != faces[0].shape:
                    raise DataError(
                        f"{where}: face is {face.shape[0]}x{face.shape[1]} but earlier rows "
                        f"are {faces[0].shape[0]}x{faces[0].shape[1]}"
                    )
                split = "Training" if i_usage is None else row[i_usage].strip()
                if split not in USAGES:
                    raise DataError(f"{where}: unknown Usage {split!r}, expected {USAGES}")
                faces.append(face)
                labels.append(_parse_label(row[i_label], where))
                usage.append(split)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as exc:
        raise DataError(f"{path}: cannot read CSV: {exc}") from exc
    if not faces:
        raise DataError(f"{path}: no data rows")
    return FaceData(np.stack(faces), np.array(labels), np.array(usage), str(path))


def strip_labels_path(path: str | os.PathLike[str]) -> Path:
    """The labels beside a strip of faces: ``fer2013_faces.png`` has ``fer2013_labels.csv``."""
    path = Path(path)
    stem = path.stem.removesuffix("_faces")
    return path.with_name(f"{stem}_labels.csv")


def load_strip(path: str | os.PathLike[str]) -> FaceData:
    """Read faces stacked top to bottom in one grey PNG (as wide as a face is high), with the
    ``emotion,Usage`` CSV :func:`strip_labels_path` names: the same data as the CSV in
    two-thirds of the bytes, small enough to carry to a training machine."""
    path, labels_path = Path(path), strip_labels_path(path)
    try:
        with Image.open(path) as image:
            strip = np.asarray(image.convert("L"))
    except (OSError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: unreadable image: {exc}") from exc
    side = strip.shape[1]
    if strip.ndim != 2 or strip.shape[0] % side:
        raise DataError(f"{path}: not a strip of square grey faces ({strip.shape})")
    faces = strip.reshape(-1, side, side)
    labels: list[int] = []
    usage: list[str] = []
    try:
        with open(labels_path, newline="") as fh:
            reader = csv.DictReader(fh)
            if not {"emotion", "Usage"} <= set(reader.fieldnames or ()):
                raise DataError(f"{labels_path}: expected the header emotion,Usage")
            for row in reader:
                where = f"{labels_path}, line {reader.line_num}"
                if row["Usage"] not in USAGES:
                    raise DataError(f"{where}: unknown Usage {row['Usage']!r}, expected {USAGES}")
                labels.append(_parse_label(row["emotion"], where))
                usage.append(row["Usage"])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{labels_path}: cannot read the labels of {path.name}: {exc}") from exc
    if len(labels) != len(faces):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(faces)} faces in {path}")
    return FaceData(faces, np.array(labels), np.array(usage), str(path))


def load_votes(path: str | os.PathLike[str], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Read FER+ votes (``fer2013new.csv``), row-aligned with data of ``rows`` rows.

    Returns vote counts ``(rows, 7)`` float32 in :data:`EMOTIONS` order, and each face's
    FER+ majority label (:func:`ferplus_majority`, -1 where there is none). The contempt,
    unknown and not-a-face votes are not targets, but they count against a majority.
    """
    path = Path(path)
    votes: list[list[float]] = []
    try:
        with _open_text(path) as fh:
            reader = csv.reader(fh)
            header = [name.strip() for name in next(reader, [])]
            missing = [c for c in FERPLUS_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{path}: missing FER+ vote column(s) {', '.join(missing)}")
            names = FERPLUS_COLUMNS + tuple(c for c in FERPLUS_OTHER_COLUMNS if c in header)
            columns = [header.index(c) for c in names]
            for row_no, row in enumerate(reader, start=1):
                where = f"{path}, row {row_no} (line {reader.line_num})"
                if not row:
                    continue
                try:
                    counts = [float(row[i] or 0) for i in columns]
                except (ValueError, IndexError):
                    raise DataError(f"{where}: malformed vote counts") from None
                if min(counts) < 0 or not all(math.isfinite(c) for c in counts):
                    raise DataError(f"{where}: vote counts must be non-negative numbers")
                votes.append(counts)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as exc:
        raise DataError(f"{path}: cannot read CSV: {exc}") from exc
    if len(votes) != rows:
        raise DataError(
            f"{path}: {len(votes)} vote rows but the data has {rows}; "
            "FER+ votes must be row-aligned with fer2013.csv"
        )
    counts = np.array(votes, np.float32).reshape(rows, len(names))
    return counts[:, : len(EMOTIONS)].copy(), ferplus_majority(counts)


def ferplus_majority(counts: np.ndarray) -> np.ndarray:
    """Each face's FER+ majority label (an :data:`EMOTIONS` index), or -1 where it has none.

    The rule of the FER+ paper (Barsoum et al. 2016) and of Microsoft's FERPlus code: a
    class with a single vote is dropped as an outlier, then a class holding more than half
    of the remaining votes is the face's label. ``counts`` holds the seven emotions in
    :data:`EMOTIONS` order, then optionally contempt, unknown and not-a-face: a face whose
    majority is one of those, or which has no majority, gets no label and is left out of
    the FER+ accuracy, as in the paper's test set.
    """
    kept = np.where(counts > 1, counts, 0)
    top = kept.argmax(axis=1)
    clear = kept.max(axis=1) > kept.sum(axis=1) / 2
    return np.where(clear & (top < len(EMOTIONS)), top, -1)


def _load_class_folders(folder: Path, usage: str) -> tuple[list[np.ndarray], list[int]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"{folder}: no class folders; expected one sub-folder per emotion "
            f"({', '.join(EMOTIONS)})"
        )
    faces: list[np.ndarray] = []
    labels: list[int] = []
    for class_dir in classes:
        name = class_dir.name.lower()
        if name not in EMOTIONS:
            raise DataError(
                f"{class_dir}: unknown emotion folder {class_dir.name!r}; "
                f"expected one of {', '.join(EMOTIONS)}"
            )
        for file in sorted(class_dir.iterdir()):
            if file.name.startswith(".") or file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                faces.append(read_array(file))
            except ImageError as exc:
                raise DataError(f"{file}: unreadable image: {exc}") from exc
            labels.append(EMOTIONS.index(name))
    if not faces:
        raise DataError(f"{folder}: no {usage} images in its emotion folders")
    return faces, labels


def load_folder(path: str | os.PathLike[str]) -> FaceData:
    """Read ``train/<emotion>/*.jpg`` (and ``test/<emotion>/*`` as PublicTest) under ``path``.

    A folder whose sub-folders are emotions itself counts as Training data.
    """
    root = Path(path)
    splits = [(u, root / name) for u, name in FOLDER_SPLITS if (root / name).is_dir()]
    if not splits:
        splits = [("Training", root)]
    faces: list[np.ndarray] = []
    labels: list[int] = []
    usage: list[str] = []
    for split, folder in splits:
        split_faces, split_labels = _load_class_folders(folder, split)
        faces += split_faces
        labels += split_labels
        usage += [split] * len(split_faces)
    return FaceData(faces, np.array(labels), np.array(usage), str(root))


def load_data(
    path: str | os.PathLike[str], votes: str | os.PathLike[str] | None = None
) -> FaceData:
    """Read a FER-2013 CSV, its PNG strip or a folder tree, with FER+ votes when given."""
    if Path(path).is_dir():
        if votes is not None:
            raise DataError(f"{votes}: FER+ votes are row-aligned with fer2013.csv, not a folder")
        return load_folder(path)
    data = load_strip(path) if Path(path).suffix.lower() == ".png" else load_csv(path)
    if votes is None:
        return data
    counts, majority = load_votes(votes, len(data))
    return replace(data, votes=counts, ferplus_labels=majority)


def split_usage(data: FaceData, usage: str) -> FaceData:
    """The rows of one split (Training, PublicTest, PrivateTest); DataError if there are none."""
    part = data.select(data.usage == usage)
    if not len(part):
        raise DataError(f"{data.source}: no {usage} rows")
    return part
