"""Would averaging two exported networks read faces better than the shipped one alone?

An ensemble costs a second network per face (and per LIME sample), so it must earn that on
evidence: each model alone and the mean of all their mirrored logits, each with class
offsets and a temperature refitted on PublicTest as ``export`` fits them (in-sample, and on
the other half of PublicTest: the figure to expect on held-out faces), then read on the
labelled photos (largest face, as ``scan`` detects and crops it).

    .venv/bin/python bench/bench_ensemble.py runs/wide60/emotion.tflite
    .venv/bin/python bench/bench_ensemble.py photosort/models/emotion.tflite other.tflite --json

With one model given, the shipped one is the other member. The photos (``wild/``) are for
evaluation only; nothing here trains or fits on them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from bench_wild import cross_validated, evaluation_faces, fer_figures, photo_figures

from photosort.emotions import DEFAULT_MODEL, model_id_of
from photosort.exporting import calibrate

ROOT = Path(__file__).resolve().parent.parent


def compare(paths: list[Path], data: Path, folds: int) -> list[dict[str, Any]]:
    """Each exported model alone, then the mean of all their mirrored logits."""
    faces = evaluation_faces(data)
    members: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for path in paths:
        where = path.resolve()
        shown = where.relative_to(ROOT) if where.is_relative_to(ROOT) else path
        members[f"{shown} ({model_id_of(path)})"] = faces.logits(path)
    rows = dict(members)
    rows["mean of all"] = (
        np.mean([f for f, _ in members.values()], axis=0),
        np.mean([w for _, w in members.values()], axis=0),
    )
    table: list[dict[str, Any]] = []
    for name, (fer_logits, wild_logits) in rows.items():
        offsets, temperature = calibrate(fer_logits, faces.fer.labels)
        table.append(
            {
                "model": name,
                "fer": fer_figures((fer_logits + offsets) / temperature, faces.fer),
                "fer_held_out": cross_validated(fer_logits, faces.fer, folds),
                "wild": photo_figures(
                    (wild_logits + offsets) / temperature, faces.have, faces.labels, faces.groups
                ),
            }
        )
    return table


def show(table: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(table, indent=2))
        return
    print(
        f"{'model':<58}{'PT acc':>8}{'held out':>9}{'FER+':>7}{'min rec':>8}"
        f"{'wild acc':>10}{'P@10':>7}{'min rec':>8}"
    )
    for row in table:
        fer_row, wild = row["fer"], row["wild"]
        print(
            f"{row['model']:<58}{fer_row['accuracy']:>8.4f}"
            f"{row['fer_held_out']['accuracy']:>9.4f}{fer_row['ferplus_accuracy']:>7.4f}"
            f"{fer_row['min_recall']:>8.2f}{wild['accuracy']:>10.4f}"
            f"{wild['mean_precision_at_10']:>7.3f}{wild['min_recall']:>8.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="exported .tflite models")
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    paths = args.models if len(args.models) > 1 else [DEFAULT_MODEL, *args.models]
    show(compare(paths, args.data, args.folds), args.json)


if __name__ == "__main__":
    main()
