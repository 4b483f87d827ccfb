"""Would equalising each face's grey levels let the network read photos of other people?

The per-face standardisation removes a face's exposure and contrast, but not the shape of
its histogram: a flat-lit scan and a contrasty phone photo of the same expression still
differ. Histogram equalisation maps each face's grey levels to their ranks, so only their
order is left, a common step before FER-2013 networks. It has no parameter to tune.

``--write DIR`` writes ``DIR/fer2013.csv.gz``, a copy of the FER-2013 CSV with every face
equalised; the shipped network fine-tuned on it, with the control's settings, is then read
on equalised faces (PublicTest and the photos' largest faces, cut as ``scan`` cuts them)
against the shipped network and, where given, the control on plain faces:

    .venv/bin/python bench/bench_equalise.py --write runs/equalised
    photosort train runs/equalised/fer2013.csv.gz --votes ../shared/data/fer2013new.csv \\
        --out runs/equalised/emotion.keras --init photosort/models/emotion.keras \\
        --lr 2e-4 --epochs 4 --augment flip --seed 1
    .venv/bin/python bench/bench_equalise.py --model runs/equalised/emotion.ckpt/last.keras

Each model's last epoch is measured, as ``bench_more_data.py`` measures its control, with
the same held-out offsets (fitted within each half of PublicTest). The photos (``wild/``)
are for evaluation only; nothing trains on them.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
from pathlib import Path

import numpy as np
from bench_more_data import by_halves, show
from bench_wild import evaluation_faces

from photosort.emotions import KERAS_MODEL, preprocess_faces

ROOT = Path(__file__).resolve().parent.parent


def equalise(faces: np.ndarray) -> np.ndarray:
    """Each face's grey levels replaced by their ranks, as ``cv2.equalizeHist`` maps them.

    Works on raw grey faces and on standardised ones alike (``(N, H, W)`` or with a channel
    axis): standardising keeps the order of a face's levels, so both give the same faces.
    """
    flat = faces.reshape(len(faces), -1)
    out = np.empty(flat.shape, np.uint8)
    for i, face in enumerate(flat):
        levels = np.sort(face)
        below = np.searchsorted(levels, face, side="right")
        lowest = np.searchsorted(levels, levels[0], side="right")
        if lowest == len(face):
            out[i] = 0
            continue
        out[i] = np.rint((below - lowest) * 255.0 / (len(face) - lowest))
    return out.reshape(faces.shape[:3])


def write_copy(source: Path, out: Path) -> None:
    """A copy of the FER-2013 CSV whose faces are equalised, every other column unchanged."""
    with gzip.open(source, "rt", newline="") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    column = header.index("pixels")
    pixels = np.array([row[column].split() for row in body], np.uint8)
    side = int(round(pixels.shape[1] ** 0.5))
    equalised = equalise(pixels.reshape(-1, side, side)).reshape(len(body), -1)
    out.mkdir(parents=True, exist_ok=True)
    with gzip.open(out / "fer2013.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row, face in zip(body, equalised, strict=True):
            writer.writerow([*row[:column], " ".join(map(str, face)), *row[column + 1 :]])
    print(f"{out / 'fer2013.csv.gz'}: {len(body)} faces equalised")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--write", type=Path, metavar="DIR")
    parser.add_argument("--model", type=Path, help="a network fine-tuned on equalised faces")
    parser.add_argument("--shipped", type=Path, default=KERAS_MODEL)
    parser.add_argument("--control", type=Path, help="the same fine-tune on plain faces")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.write:
        write_copy(args.data / "fer2013.csv.gz", args.write)
        return
    if args.model is None:
        parser.error("give --model, or --write")
    faces = evaluation_faces(args.data)
    flat = dataclasses.replace(
        faces,
        x_fer=preprocess_faces(equalise(faces.x_fer)),
        x_wild=preprocess_faces(equalise(faces.x_wild)),
    )
    models = {"shipped": faces.logits(args.shipped)}
    if args.control:
        models["control: fine-tuned on plain faces"] = faces.logits(args.control)
    models["shipped, given equalised faces"] = flat.logits(args.shipped)
    models["fine-tuned on equalised faces"] = flat.logits(args.model)
    table = by_halves(faces, {name: [read, read] for name, read in models.items()}, args.folds)
    show(table, args.json)


if __name__ == "__main__":
    main()
