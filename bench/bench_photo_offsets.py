"""Would class offsets fitted on photos, rather than on PublicTest, read photos better?

The shipped offsets balance the classes on PublicTest's 48x48 faces. On photos sad is
over-called and angry, disgust and fear are missed, so offsets fitted on labelled photos
are the obvious next step. They are fitted here on the labelled photo folder itself, so
every figure is cross-validated by person: each person's photos are read with offsets
fitted on everybody else's (JAFFE by the poser's initials, CFD by the model's id, each
web photo its own person). Rules, each on the network's mirrored logits:

- ``publictest``: the shipped offsets;
- ``photos``: seven offsets refitted on the photos (class-weighted cross-entropy, as
  ``export`` fits them on PublicTest);
- ``blend``: the mean of the two;
- ``scaled``: the shipped offsets times a factor picked on the other people's photos.

    .venv/bin/python bench/bench_photo_offsets.py                # the shipped model
    .venv/bin/python bench/bench_photo_offsets.py --model runs/wide/emotion.tflite

The photos (``wild/``) are for evaluation only; nothing here trains a network on them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from photosort.emotions import load_model, preprocess_faces, softmax
from photosort.evaluating import labelled_photos, largest_face_crops, photo_report
from photosort.exporting import fit_offsets

ROOT = Path(__file__).resolve().parent.parent
SCALES = np.linspace(0.5, 2.0, 7)
Rule = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def person(path: Path) -> str:
    """Who a labelled photo shows, as far as its file name tells."""
    if path.parent.name == "jaffe":
        return "jaffe:" + path.name[:2]
    if path.parent.name == "cfd":
        return "cfd:" + "-".join(path.name.split("-")[:3])
    return f"{path.parent.name}:{path.name}"


def leave_one_person_out(logits: np.ndarray, labels: np.ndarray, people: np.ndarray, rule: Rule):
    """Each person's logits moved by what ``rule`` fits on everyone else's."""
    out = np.empty_like(logits)
    for who in np.unique(people):
        held = people == who
        out[held] = logits[held] + rule(logits[~held], labels[~held], logits[held])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "wild")
    parser.add_argument("--model", default=None, help="default: the shipped model")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = args.data / "images" if (args.data / "images").is_dir() else args.data
    photos = labelled_photos(folder, args.data / "labels.csv")
    model = load_model(args.model)
    crops, _ = largest_face_crops(photos)
    have = np.array([crop is not None for crop in crops])
    logits = model.network_logits(
        preprocess_faces([c for c in crops if c is not None]), model.tta
    ).astype(np.float64)
    labels = np.array([p.label for p in photos])[have]
    people = np.array([person(p.path) for p in photos])[have]
    groups = [p.group for p in photos]
    shipped = np.asarray(model.offsets if model.offsets is not None else np.zeros(7))

    def scaled(z: np.ndarray, y: np.ndarray, _: np.ndarray) -> np.ndarray:
        hits = [((z + s * shipped).argmax(1) == y).mean() for s in SCALES]
        return SCALES[int(np.argmax(hits))] * shipped

    rules: dict[str, Rule] = {
        "publictest": lambda z, y, _: shipped,
        "photos": lambda z, y, _: fit_offsets(z, y),
        "blend": lambda z, y, _: (shipped + fit_offsets(z, y)) / 2,
        "scaled": scaled,
    }
    results: dict[str, Any] = {"model_id": model.model_id, "people": len(np.unique(people))}
    for name, rule in rules.items():
        probs = np.zeros((len(photos), logits.shape[1]))
        moved = leave_one_person_out(logits, labels, people, rule)
        probs[have] = softmax(moved, model.temperature)
        report = photo_report(probs, np.array([p.label for p in photos]), groups)
        results[name] = {
            key: report[key]
            for key in ("accuracy", "mean_precision_at_10", "min_recall", "accuracy_by_folder")
        } | {
            "recall": {k: v["recall"] for k, v in report["per_class"].items()},
            "precision_at_10": report["precision_at_10"],
        }
    results["photo_offsets_all"] = [round(float(v), 3) for v in fit_offsets(logits, labels)]
    results["publictest_offsets"] = [round(float(v), 3) for v in shipped]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"model {results['model_id']}, {results['people']} people, leave one person out")
    for name in rules:
        r = results[name]
        print(
            f"{name:11s} accuracy {r['accuracy']:.4f}  mean P@10 {r['mean_precision_at_10']:.3f}"
            f"  lowest recall {r['min_recall']:.2f}  by folder {r['accuracy_by_folder']}"
        )
        print(f"{'':11s} recall {r['recall']}  P@10 {r['precision_at_10']}")


if __name__ == "__main__":
    main()
