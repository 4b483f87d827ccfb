"""Benchmark an emotion model: PublicTest accuracy, FER+ accuracy and batched faces/s.

The figures in MODEL_CARD.md come from this script, run from the repository root:

    .venv/bin/python bench/bench_model.py                      # the shipped LiteRT model
    .venv/bin/python bench/bench_model.py --model runs/emotion.keras --json

``--baseline`` (default: the shipped network's Keras file) is timed in the same run, with
the same calibration, so the LiteRT speed-up is a ratio of one run; the share of faces on
which the two disagree is what int8 quantisation changed. ``label_sets`` splits the faces
by whether the original label and the FER+ majority agree, and says what accuracy on the
agreeing faces both accuracy goals need at once.

It reads ``fer2013.csv.gz`` and ``fer2013new.csv`` from ``--data`` (default ``../shared/data``
relative to the repository) and times :meth:`EmotionModel.predict` (preprocessing included)
on all faces of the split, in batches, after a warm-up; the best of ``--repeat`` runs counts.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from photosort.datasets import load_data, split_usage
from photosort.emotions import BATCH_SIZE, DEFAULT_MODEL, KERAS_MODEL, load_model
from photosort.metrics import classification_report, label_set_split

ROOT = Path(__file__).resolve().parent.parent


def faces_per_s(model: Any, faces: Any, batch_size: int, repeat: int) -> float:
    """Best of ``repeat`` timed passes over all faces, after a warm-up batch."""
    model.predict(faces[:batch_size], batch_size)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        model.predict(faces, batch_size)
        best = min(best, time.perf_counter() - started)
    return len(faces) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--baseline", type=Path, default=KERAS_MODEL)
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--usage", default="PublicTest")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    data = split_usage(
        load_data(args.data / "fer2013.csv.gz", args.data / "fer2013new.csv"), args.usage
    )
    model = load_model(args.model)
    best = faces_per_s(model, data.faces, args.batch_size, args.repeat)
    baseline = load_model(args.baseline)
    baseline_speed = faces_per_s(baseline, data.faces, args.batch_size, args.repeat)
    logits = model.logits(data.faces, args.batch_size)
    changed = float((logits.argmax(1) != baseline.logits(data.faces).argmax(1)).mean())
    report = classification_report(
        logits, data.labels, model.temperature, data.votes, data.ferplus_labels
    )
    result = {
        "model": str(args.model),
        "model_id": model.model_id,
        "size_mb": round(args.model.stat().st_size / 1e6, 2),
        "params": model.metadata.get("params"),
        "backend": model.backend,
        "usage": args.usage,
        "n": report["n"],
        "accuracy": report["accuracy"],
        "ferplus_accuracy": report["ferplus_accuracy"],
        "ferplus_n": report["ferplus_n"],
        "ferplus_plurality_accuracy": report["ferplus_plurality_accuracy"],
        "ece": report["ece"],
        "ece_uncalibrated": report["ece_uncalibrated"],
        "temperature": model.temperature,
        "tta": model.tta,
        "offsets": model.offsets,
        "faces_per_s": round(best, 1),
        "baseline": str(args.baseline),
        "baseline_faces_per_s": round(baseline_speed, 1),
        "speedup_vs_baseline": round(best / baseline_speed, 2),
        "predictions_changed_vs_baseline": round(changed, 4),
        "batch_size": args.batch_size,
        "cpu_threads": os.cpu_count(),
        "per_class": report["per_class"],
        "label_sets": label_set_split(logits.argmax(1), data.labels, data.ferplus_labels),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{result['usage']} ({result['n']} faces): accuracy {result['accuracy']:.4f}, "
            f"FER+ majority accuracy {result['ferplus_accuracy']:.4f} "
            f"({result['ferplus_n']} faces with a clear majority; most-voted class "
            f"{result['ferplus_plurality_accuracy']:.4f} over all), ECE {result['ece']:.4f} "
            f"(uncalibrated {result['ece_uncalibrated']:.4f}), "
            f"{result['faces_per_s']:.0f} faces/s (batch {args.batch_size}, "
            f"{result['cpu_threads']} CPU threads; x{result['speedup_vs_baseline']} vs "
            f"{result['baseline']}, {result['predictions_changed_vs_baseline']:.2%} of "
            f"predictions changed); {result['params']:,} params, "
            f"{result['size_mb']} MB, model {result['model_id']}"
        )
        split = result["label_sets"]
        print(
            f"the label sets agree on {split['agree_n']} faces (accuracy "
            f"{split['agree_accuracy']:.4f}; {split['agree_accuracy_needed']:.4f} would meet "
            f"both goals {split['goals']} with the rest as it is), disagree on "
            f"{split['disagree_n']} (original {split['disagree_original']:.4f}, FER+ "
            f"{split['disagree_ferplus']:.4f}); predicting the FER+ majority exactly scores "
            f"{split['ferplus_oracle_accuracy']:.4f} on the original labels"
        )


if __name__ == "__main__":
    main()
