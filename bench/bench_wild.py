"""What each change to the emotion pipeline gains, on PublicTest and on labelled photos.

An ablation, all in one run: the crop (the detector's box with a margin, as photosort cut
faces before; its centre 60%; the FER-2013 framing from the landmarks at several scales),
the detector (without the short-range model's close-ups, as before), then the model as it
runs (Keras; int8 LiteRT; with mirrored-face averaging; with the per-class offsets). Each
row changes one thing. The last row is the real pipeline, ``evaluate`` on the folder,
exactly as ``scan`` detects and crops. The per-class offsets were fitted on PublicTest, so
its row there is in-sample: ``--folds`` also fits them on one half of PublicTest and
measures the other half, the figure to expect on held-out faces.

    .venv/bin/python bench/bench_wild.py                 # ../shared/data, the shipped model
    .venv/bin/python bench/bench_wild.py --json

The photos (``wild/``) are for evaluation only; nothing here trains on them.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import photosort.faces as faces_module
from photosort.datasets import load_data, split_usage
from photosort.defaults import EMOTIONS
from photosort.emotions import DEFAULT_MODEL, KERAS_MODEL, load_model, preprocess_faces, softmax
from photosort.evaluating import (
    evaluate_photos,
    labelled_photos,
    largest_face_crops,
    photo_report,
)
from photosort.exporting import calibrate
from photosort.faces import CROP_SIZE, BlazeFace, _box_crop, crop_face, make_detector
from photosort.images import read_image
from photosort.metrics import classification_report

ROOT = Path(__file__).resolve().parent.parent


def detect_largest(folder: Path, rows: list[dict[str, str]], detector: Any) -> list[Any]:
    """Each photo's largest face, found on the working-size image, and a large decode."""
    found = []
    for row in rows:
        working = read_image(folder / row["path"], max_side=1000)
        full = read_image(folder / row["path"], max_side=4000)
        faces = detector.detect(np.asarray(working))
        if not faces:
            found.append(None)
            continue
        face = max(faces, key=lambda f: f.w * f.h)
        found.append((full, face.scaled(full.width / working.width)))
    return found


def crops_by(found: list[Any], cut: Any) -> tuple[list[np.ndarray], list[int]]:
    have = [i for i, item in enumerate(found) if item is not None]
    return [cut(*found[i]) for i in have], have


def photo_figures(logits: np.ndarray, have: list[int], labels: np.ndarray, groups: list[str]):
    probs = np.zeros((len(labels), len(EMOTIONS)))
    probs[have] = softmax(logits)
    report = photo_report(probs, labels, groups)
    return {
        "accuracy": report["accuracy"],
        "mean_precision_at_10": report["mean_precision_at_10"],
        "min_recall": report["min_recall"],
        "recall": {k: v["recall"] for k, v in report["per_class"].items()},
    }


@dataclass(frozen=True)
class Faces:
    """PublicTest and the labelled photos' largest faces, preprocessed for a network."""

    fer: Any
    x_fer: np.ndarray
    x_wild: np.ndarray
    have: list[int]
    """The photos a face was found in, in the order of ``x_wild``."""
    labels: np.ndarray
    groups: list[str]

    def logits(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """A model's mirrored logits on PublicTest and on the photos."""
        model = load_model(path)
        return (
            model.network_logits(self.x_fer, True).astype(np.float64),
            model.network_logits(self.x_wild, True).astype(np.float64),
        )


def evaluation_faces(data: Path) -> Faces:
    """The faces every model comparison reads: photos cut as ``scan`` detects and crops."""
    fer = split_usage(load_data(data / "fer2013.csv.gz", data / "fer2013new.csv"), "PublicTest")
    photos = labelled_photos(data / "wild" / "images", data / "wild" / "labels.csv")
    crops, _ = largest_face_crops(photos)
    have = [i for i, crop in enumerate(crops) if crop is not None]
    return Faces(
        fer,
        preprocess_faces(fer.faces),
        preprocess_faces([crops[i] for i in have]),
        have,
        np.array([p.label for p in photos]),
        [p.group for p in photos],
    )


def fer_figures(logits: np.ndarray, data: Any) -> dict[str, Any]:
    report = classification_report(logits, data.labels, 1.0, data.votes, data.ferplus_labels)
    recall = {k: v["recall"] for k, v in report["per_class"].items()}
    return {
        "accuracy": report["accuracy"],
        "ferplus_accuracy": report["ferplus_accuracy"],
        "min_recall": min(recall.values()),
        "recall": recall,
    }


def fold_rows(count: int, folds: int, seed: int = 0) -> list[np.ndarray]:
    """The rows of each fold, drawn at random once for every benchmark that splits PublicTest."""
    order = np.random.default_rng(seed).permutation(count)
    return [np.sort(part) for part in np.array_split(order, folds)]


def cross_fitted(logits: np.ndarray, labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Logits moved by offsets and a temperature fitted on the other folds, fold by fold."""
    shifted = np.empty_like(logits)
    for part in fold_rows(len(logits), folds, seed):
        rest = np.setdiff1d(np.arange(len(logits)), part)
        offsets, temperature = calibrate(logits[rest], labels[rest])
        shifted[part] = (logits[part] + offsets) / temperature
    return shifted


def cross_validated(logits: np.ndarray, data: Any, folds: int, seed: int = 0) -> dict[str, Any]:
    """Offsets and temperature fitted on the other folds of PublicTest, measured on each."""
    return fer_figures(cross_fitted(logits, data.labels, folds, seed), data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--keras", type=Path, default=KERAS_MODEL)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    folder = args.data / "wild" / "images"
    with open(args.data / "wild" / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = np.array([EMOTIONS.index(r["emotion"]) for r in rows])
    groups = [r["path"].split("/")[0] for r in rows]
    fer = split_usage(
        load_data(args.data / "fer2013.csv.gz", args.data / "fer2013new.csv"), "PublicTest"
    )
    lite, keras = load_model(args.model), load_model(args.keras)
    offsets = np.asarray(lite.offsets if lite.offsets is not None else np.zeros(len(EMOTIONS)))
    found = detect_largest(folder, rows, make_detector())

    def framed(scale: float):
        def cut(image: Any, face: Any) -> np.ndarray:
            faces_module.FRAME_SCALE = scale
            try:
                return crop_face(image, face)
            finally:
                faces_module.FRAME_SCALE = 1.0

        return cut

    cuts = {
        "box, margin 25% (before)": lambda im, f: _box_crop(im, f, CROP_SIZE),
        "box, centre 60%": lambda im, f: _box_crop(im, f, CROP_SIZE)[19:77, 19:77],
        "FER framing x0.9": framed(0.9),
        "FER framing x1.1": framed(1.1),
        "FER framing (shipped)": framed(1.0),
    }
    x_fer = preprocess_faces(fer.faces)
    table = []
    for name, cut in cuts.items():
        crops, have = crops_by(found, cut)
        wild = photo_figures(
            keras.network_logits(preprocess_faces(crops), False), have, labels, groups
        )
        table.append({"change": f"crop: {name}; Keras", "wild": wild})
    crops, have = crops_by(found, framed(1.0))
    x_wild = preprocess_faces(crops)
    models = (
        ("Keras", keras, False, False),
        ("int8 LiteRT", lite, False, False),
        ("int8 LiteRT + mirror averaging", lite, True, False),
        ("int8 LiteRT + mirror averaging + class offsets", lite, True, True),
    )
    for name, model, tta, shift in models:
        add = offsets if shift else 0.0
        fer_logits = model.network_logits(x_fer, tta) + add
        table.append(
            {
                "change": f"model: {name}",
                "fer": fer_figures(fer_logits, fer),
                "wild": photo_figures(
                    model.network_logits(x_wild, tta) + add, have, labels, groups
                ),
            }
        )
    # The detector before close-ups: the full-range model alone, on tiles as scan runs it.
    crops, have = crops_by(detect_largest(folder, rows, BlazeFace(close_ups=False)), framed(1.0))
    table.insert(
        len(cuts),
        {
            "change": "detector: full-range only (before close-ups); Keras",
            "wild": photo_figures(
                keras.network_logits(preprocess_faces(crops), False), have, labels, groups
            ),
        },
    )
    held_out = cross_validated(lite.network_logits(x_fer, True), fer, args.folds)
    pipeline, _ = evaluate_photos(folder, args.model, labels=args.data / "wild" / "labels.csv")
    result = {
        "model_id": lite.model_id,
        "ablation": table,
        "offsets_cross_validated": held_out,
        "pipeline": {
            k: pipeline[k]
            for k in (
                "photos",
                "faces_found",
                "accuracy",
                "mean_precision_at_10",
                "min_recall",
                "accuracy_by_folder",
                "per_class",
                "precision_at_10",
            )
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{'change':<58}{'PT acc':>8}{'FER+':>8}{'min rec':>8}"
        f"{'wild acc':>10}{'P@10':>7}{'min rec':>8}"
    )
    for row in table:
        f, w = row.get("fer"), row["wild"]
        fer_cols = (
            f"{f['accuracy']:>8.4f}{f['ferplus_accuracy']:>8.4f}{f['min_recall']:>8.2f}"
            if f
            else " " * 24
        )
        print(
            f"{row['change']:<58}{fer_cols}{w['accuracy']:>10.4f}"
            f"{w['mean_precision_at_10']:>7.3f}{w['min_recall']:>8.2f}"
        )
    h = held_out
    print(
        f"offsets fitted on {args.folds - 1} of {args.folds} PublicTest folds, measured on the "
        f"other: accuracy {h['accuracy']:.4f}, FER+ {h['ferplus_accuracy']:.4f}, lowest "
        f"recall {h['min_recall']:.2f}"
    )
    p = result["pipeline"]
    print(
        f"evaluate (scan's own detection and crops): {p['photos']} photos, faces in "
        f"{p['faces_found']}, accuracy {p['accuracy']:.4f}, mean P@10 "
        f"{p['mean_precision_at_10']:.3f}, lowest recall {p['min_recall']:.2f}"
    )


if __name__ == "__main__":
    main()
