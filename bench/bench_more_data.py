"""Would training on PublicTest's faces too read held-out faces better?

PublicTest (3,572 faces) is used for validation and for fitting the class offsets, so the
shipped network never trained on it: 13% more labelled faces than Training's 28,439. This
measures what they are worth without losing a held-out set. ``--write-folds`` writes two
copies of the FER-2013 CSV in which one half of PublicTest (the halves of
``bench_wild.cross_validated``) counts as Training. A model fine-tuned on the copy of fold
K is measured on the other half, against a control fine-tuned with the same settings on
Training alone and against the shipped network, all on the same faces:

    .venv/bin/python bench/bench_more_data.py --write-folds runs/folds
    photosort train runs/folds/fold0.csv.gz --votes ../shared/data/fer2013new.csv \
        --out runs/fold0/emotion.keras --init photosort/models/emotion.keras \
        --lr 2e-4 --epochs 4 --augment flip --seed 1      # fold1, and the control likewise
    .venv/bin/python bench/bench_more_data.py --control runs/control/emotion.ckpt/last.keras \
        --fold runs/fold0/emotion.ckpt/last.keras --fold runs/fold1/emotion.ckpt/last.keras

Each run's last epoch is measured, not its best: a fold run picks its best epoch on the
very half it is measured on. On each half the offsets and temperature are fitted on one
half of it and measured on the other (``--folds``), the way ``export`` fits them, for every
model alike; the rows "both" pool the two halves. The photos (``wild/``) are read with
offsets fitted on the whole half; they are for evaluation only, nothing trains on them.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
from bench_wild import (
    Faces,
    cross_fitted,
    evaluation_faces,
    fer_figures,
    fold_rows,
    photo_figures,
)

from photosort.emotions import KERAS_MODEL
from photosort.exporting import calibrate

ROOT = Path(__file__).resolve().parent.parent
HALVES = 2


def halves(count: int) -> list[np.ndarray]:
    """PublicTest's two halves, the folds ``bench_wild.cross_validated`` draws."""
    return fold_rows(count, HALVES)


def write_folds(source: Path, out: Path) -> None:
    """Copies of ``source`` in which one half of PublicTest is relabelled Training."""
    with gzip.open(source, "rt", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    usage = header.index("Usage")
    public = [i for i, row in enumerate(body) if row[usage] == "PublicTest"]
    out.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate(halves(len(public))):
        moved = {public[i] for i in part}
        copy = [
            [*row[:usage], "Training", *row[usage + 1 :]] if i in moved else row
            for i, row in enumerate(body)
        ]
        with gzip.open(out / f"fold{k}.csv.gz", "wt", newline="") as handle:
            csv.writer(handle).writerows([header, *copy])
        print(f"{out / f'fold{k}.csv.gz'}: {len(moved)} PublicTest faces count as Training")


def by_halves(
    faces: Faces, models: dict[str, list[tuple[np.ndarray, np.ndarray]]], folds: int
) -> list[dict[str, Any]]:
    """Each model read half by half of PublicTest, offsets fitted within the half (held out).

    ``models`` maps a name to the (PublicTest, photos) logits that read each half, so that a
    model trained on one half is read on the other. On each half the offsets and
    temperature are fitted on one part of it and measured on the other (``folds``); the
    photos are read with offsets fitted on the whole half. The rows "both" pool the halves.
    """
    first = next(iter(models.values()))[0][0]
    raw = {name: np.empty_like(first) for name in models}
    pooled = {name: np.empty_like(first) for name in models}
    table = []
    for k, held in enumerate(halves(len(faces.fer))):
        data = faces.fer.select(np.isin(np.arange(len(faces.fer)), held))
        for name, read in models.items():
            fer_logits, wild_logits = read[k]
            on_half = raw[name][held] = fer_logits[held]
            pooled[name][held] = cross_fitted(on_half, data.labels, folds)
            offsets, temperature = calibrate(on_half, data.labels)
            table.append(
                {
                    "half": str(k),
                    "model": name,
                    "raw": fer_figures(on_half, data),
                    "held_out": fer_figures(pooled[name][held], data),
                    "wild": photo_figures(
                        (wild_logits + offsets) / temperature,
                        faces.have,
                        faces.labels,
                        faces.groups,
                    ),
                }
            )
    for name in models:
        table.append(
            {
                "half": "both",
                "model": name,
                "raw": fer_figures(raw[name], faces.fer),
                "held_out": fer_figures(pooled[name], faces.fer),
            }
        )
    return table


def show(table: list[dict[str, Any]], as_json: bool = False) -> None:
    """The rows of ``by_halves`` as a text table, or as JSON."""
    if as_json:
        print(json.dumps(table, indent=2))
        return
    print(
        f"{'half':<5}{'model':<40}{'raw':>7}{'held out':>9}{'FER+':>7}{'min rec':>8}"
        f"{'wild acc':>10}{'P@10':>7}{'min rec':>8}"
    )
    for row in table:
        held, wild = row["held_out"], row.get("wild")
        print(
            f"{row['half']:<5}{row['model']:<40}{row['raw']['accuracy']:>7.4f}"
            f"{held['accuracy']:>9.4f}{held['ferplus_accuracy']:>7.4f}{held['min_recall']:>8.2f}"
            + (
                f"{wild['accuracy']:>10.4f}{wild['mean_precision_at_10']:>7.3f}"
                f"{wild['min_recall']:>8.2f}"
                if wild
                else ""
            )
        )


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    faces = evaluation_faces(args.data)
    shipped, control, *fold = (faces.logits(p) for p in (args.shipped, args.control, *args.fold))
    return by_halves(
        faces,
        {
            "shipped": [shipped, shipped],
            "control: fine-tuned on Training": [control, control],
            # each half is read by the fold model whose copy counted the other half as Training
            "+ the other half of PublicTest": [fold[1], fold[0]],
        },
        args.folds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--write-folds", type=Path, metavar="DIR")
    parser.add_argument("--shipped", type=Path, default=KERAS_MODEL)
    parser.add_argument("--control", type=Path)
    parser.add_argument("--fold", type=Path, action="append", default=[])
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.write_folds:
        write_folds(args.data / "fer2013.csv.gz", args.write_folds)
        return
    if args.control is None or len(args.fold) != HALVES:
        parser.error(f"give --control and --fold {HALVES} times, or --write-folds")
    table = measure(args)
    show(table, args.json)


if __name__ == "__main__":
    main()
