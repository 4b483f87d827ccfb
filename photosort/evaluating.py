"""Evaluating an emotion model: on labelled face crops (FER-2013), or on labelled photos.

Photos go through the scan's own face detection and cropping (:func:`find_faces_with`), so
the figures describe what a user's library gets: the largest face of each photo is
classified, a photo where no face is found counts as a miss, and each emotion's ranking is
judged by the precision of its first ten photos, which is what ``top EMOTION`` shows.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from photosort.datasets import IMAGE_SUFFIXES, DataError, load_data, split_usage
from photosort.defaults import EMOTIONS
from photosort.emotions import EmotionModel, load_model, softmax
from photosort.faces import FaceSettings, find_faces_with
from photosort.images import ImageError, probe_image
from photosort.metrics import classification_report

TOP_K = 10
"""How many photos of each emotion's ranking are judged: a ``top EMOTION`` page."""


def evaluate(
    data_path: str | os.PathLike[str],
    model_path: str | os.PathLike[str] | None = None,
    *,
    usage: str = "PublicTest",
    votes: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], EmotionModel]:
    """Evaluate a model (default: the shipped one) on one split; returns the report and model."""
    data = split_usage(load_data(data_path, votes), usage)
    model = load_model(model_path)
    logits = model.logits(data.faces)
    report = classification_report(
        logits, data.labels, model.temperature, data.votes, data.ferplus_labels
    )
    return {"usage": usage, "model_id": model.model_id, **report}, model


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path
    label: int
    group: str
    """The first folder of its relative path (``jaffe/`` in ``jaffe/KA.AN1.jpg``), or ``.``."""


def is_photo_folder(path: str | os.PathLike[str], labels: str | os.PathLike[str] | None) -> bool:
    """Photos to evaluate (a labels CSV, or emotion sub-folders), not a face data set.

    A face data set is a CSV or a folder split into ``train/`` and ``test/``.
    """
    folder = Path(path)
    if not folder.is_dir():
        return False
    if labels is not None:
        return True
    return not any((folder / name).is_dir() for name in ("train", "test"))


def _group(relative: Path) -> str:
    return relative.parts[0] if len(relative.parts) > 1 else "."


def labelled_photos(
    folder: str | os.PathLike[str], labels: str | os.PathLike[str] | None = None
) -> list[LabelledPhoto]:
    """The photos under ``folder`` with their labels: from ``labels`` (``path,emotion``,
    paths relative to the folder) or from emotion-named sub-folders."""
    root = Path(folder)
    photos: list[LabelledPhoto] = []
    if labels is None:
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            name = sub.name.lower()
            if name not in EMOTIONS:
                raise DataError(
                    f"{sub}: unknown emotion folder {sub.name!r}; expected one of "
                    f"{', '.join(EMOTIONS)}, or give --labels"
                )
            for file in sorted(sub.rglob("*")):
                if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES:
                    if not any(part.startswith(".") for part in file.relative_to(root).parts):
                        photos.append(LabelledPhoto(file, EMOTIONS.index(name), "."))
    else:
        try:
            with open(labels, newline="", encoding="utf-8-sig") as handle:
                rows = list(csv.DictReader(handle))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{labels}: unreadable labels file: {exc}") from exc
        if rows and not {"path", "emotion"} <= set(rows[0]):
            raise DataError(f"{labels}: the header must name the columns path and emotion")
        seen: dict[str, tuple[int, str]] = {}
        for line, row in enumerate(rows, start=2):
            name = (row.get("emotion") or "").strip().lower()
            if name not in EMOTIONS:
                raise DataError(
                    f"{labels}, line {line}: unknown emotion {row.get('emotion')!r}; "
                    f"expected one of {', '.join(EMOTIONS)}"
                )
            relative = Path((row.get("path") or "").strip())
            if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                raise DataError(f"{labels}, line {line}: path must be relative to {root}")
            where = f"{labels}, line {line}"
            try:
                if not (root / relative).is_file():
                    raise DataError(f"{where}: no photo at {root / relative}")
                key = os.path.realpath(root / relative)
            except (OSError, ValueError) as exc:  # a name too long, a NUL byte, an I/O error
                reason = getattr(exc, "strerror", None) or exc
                raise DataError(f"{where}: cannot use {relative}: {reason}") from None
            if key in seen:
                # Counted twice it would weigh double; labelled twice it has no one truth.
                first, emotion = seen[key]
                same = "repeats" if emotion == name else f"labels it {name}, against {emotion} in"
                raise DataError(f"{where}: {relative} {same} line {first}; one row per photo")
            seen[key] = (line, name)
            photos.append(LabelledPhoto(root / relative, EMOTIONS.index(name), _group(relative)))
    if not photos:
        raise DataError(f"{root}: no labelled photos")
    return photos


def largest_face_crops(
    photos: list[LabelledPhoto], settings: FaceSettings | None = None
) -> tuple[list[np.ndarray | None], list[str | None]]:
    """The crop of each photo's largest face, as ``scan`` cuts it, or None with the reason."""
    settings = settings or FaceSettings()
    crops: list[np.ndarray | None] = []
    reasons: list[str | None] = []
    for photo in photos:
        try:
            info = probe_image(photo.path, max_megapixels=settings.max_megapixels)
        except ImageError as exc:
            crops.append(None)
            reasons.append(f"unreadable: {exc}")
            continue
        found = find_faces_with(str(photo.path), (info.width, info.height), settings)
        if found.error or not found.faces:
            crops.append(None)
            reasons.append(found.error or "no face found")
            continue
        largest = max(found.faces, key=lambda face: face.box[2] * face.box[3])
        crops.append(largest.crop)
        reasons.append(None)
    return crops, reasons


def photo_report(
    probs: np.ndarray, labels: np.ndarray, groups: list[str], k: int = TOP_K
) -> dict[str, Any]:
    """Accuracy, recall, precision and each emotion's precision among its first ``k``.

    ``probs`` has a row per photo, all zeros where no face was found: such a photo is a miss
    for accuracy and recall, and ranks last in every emotion.
    """
    found = probs.sum(axis=1) > 0
    pred = np.where(found, probs.argmax(axis=1), -1)
    hits = pred == labels
    per_class = {}
    precision_at_k = {}
    for i, name in enumerate(EMOTIONS):
        support, predicted = int((labels == i).sum()), int((pred == i).sum())
        per_class[name] = {
            "precision": round(float(hits[pred == i].mean()), 4) if predicted else 0.0,
            "recall": round(float(hits[labels == i].mean()), 4) if support else 0.0,
            "support": support,
        }
        order = np.lexsort((np.arange(len(probs)), -probs[:, i]))[:k]
        precision_at_k[name] = round(float((labels[order] == i).mean()), 4) if len(order) else 0.0
    matrix = np.zeros((len(EMOTIONS), len(EMOTIONS)), int)
    np.add.at(matrix, (labels[found], pred[found]), 1)
    by_group = {
        group: round(float(hits[[g == group for g in groups]].mean()), 4)
        for group in sorted(set(groups))
    }
    return {
        "photos": int(len(labels)),
        "faces_found": int(found.sum()),
        "accuracy": round(float(hits.mean()), 4) if len(labels) else 0.0,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        f"precision_at_{k}": precision_at_k,
        f"mean_precision_at_{k}": round(float(np.mean(list(precision_at_k.values()))), 4),
        "min_recall": min(row["recall"] for row in per_class.values()),
        "accuracy_by_folder": by_group,
    }


def evaluate_photos(
    folder: str | os.PathLike[str],
    model_path: str | os.PathLike[str] | None = None,
    *,
    labels: str | os.PathLike[str] | None = None,
    settings: FaceSettings | None = None,
) -> tuple[dict[str, Any], EmotionModel]:
    """Detect, crop and classify the largest face of each labelled photo, as a scan would."""
    photos = labelled_photos(folder, labels)
    model = load_model(model_path)
    crops, reasons = largest_face_crops(photos, settings)
    probs = np.zeros((len(photos), len(EMOTIONS)))
    have = [i for i, crop in enumerate(crops) if crop is not None]
    if have:
        logits = model.logits([crops[i] for i in have])
        probs[have] = softmax(logits, model.temperature)
    label_array = np.array([photo.label for photo in photos])
    report = photo_report(probs, label_array, [photo.group for photo in photos])
    root = Path(folder)
    report["no_face"] = [
        {"path": str(photo.path.relative_to(root)), "reason": reason}
        for photo, reason in zip(photos, reasons, strict=True)
        if reason is not None
    ]
    return {"usage": "photos", "folder": str(root), "model_id": model.model_id, **report}, model


def _format_ferplus(report: dict[str, Any]) -> str:
    if "ferplus_n" not in report:
        return ""
    majority = (
        f"FER+ majority accuracy {report['ferplus_accuracy']:.4f} "
        f"({report['ferplus_n']} faces with a clear majority)"
        if "ferplus_accuracy" in report
        else "no face has a clear FER+ majority"
    )
    plurality = report.get("ferplus_plurality_accuracy")
    return f"   {majority}" + (
        "" if plurality is None else f"; most-voted class {plurality:.4f} (every voted face)"
    )


def _class_table(report: dict[str, Any], extra: dict[str, float] | None = None) -> list[str]:
    head = f"{'emotion':<10}{'precision':>10}{'recall':>10}{'support':>10}"
    lines = [head + (f"{'P@' + str(TOP_K):>8}" if extra else "")]
    for name, row in report["per_class"].items():
        line = f"{name:<10}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['support']:>10}"
        lines.append(line + (f"{extra[name]:>8.2f}" if extra else ""))
    lines += ["", "confusion matrix (rows: true, columns: predicted)"]
    lines.append(" " * 10 + "".join(f"{name[:8]:>9}" for name in EMOTIONS))
    for name, row in zip(EMOTIONS, report["confusion_matrix"], strict=True):
        lines.append(f"{name:<10}" + "".join(f"{v:>9}" for v in row))
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The evaluation report as a human-readable text table."""
    if report["usage"] == "photos":
        return _format_photo_report(report)
    lines = [
        f"{report['usage']}: {report['n']} faces, model {report['model_id']}",
        f"accuracy {report['accuracy']:.4f}" + _format_ferplus(report),
        f"ECE {report['ece']:.4f} (uncalibrated {report['ece_uncalibrated']:.4f}, "
        f"temperature {report['temperature']:g})",
        "",
    ]
    return "\n".join(lines + _class_table(report))


def _format_photo_report(report: dict[str, Any]) -> str:
    at_k = report[f"precision_at_{TOP_K}"]
    lines = [
        f"{report['folder']}: {report['photos']} photos, a face found in "
        f"{report['faces_found']}, model {report['model_id']}",
        f"largest-face accuracy {report['accuracy']:.4f} (a photo without a face is a miss); "
        f"mean precision of each emotion's first {TOP_K} "
        f"{report[f'mean_precision_at_{TOP_K}']:.4f}; lowest recall {report['min_recall']:.4f}",
    ]
    if len(report["accuracy_by_folder"]) > 1:
        lines.append(
            "accuracy by folder: "
            + ", ".join(f"{g} {v:.4f}" for g, v in report["accuracy_by_folder"].items())
        )
    lines.append("")
    lines += _class_table(report, at_k)
    if report["no_face"]:
        lines += ["", f"no face found in {len(report['no_face'])}:"]
        lines += [f"  {row['path']}: {row['reason']}" for row in report["no_face"]]
    return "\n".join(lines)
