"""Would the weight average of several fine-tunes of one network read faces better?

Fine-tunes of the shipped network that differ only in their seed (the order of the faces,
the mirror flips) end near one another. Averaging their weights, batch-norm statistics
included, costs nothing at inference, unlike averaging their outputs (``bench_ensemble``).
This writes the average as ``OUT/emotion.keras``, each member as ``OUT/memberK/emotion.keras``,
exports all of them as ``export`` does (int8, mirror averaging, offsets and temperature on
PublicTest) and compares them with the shipped model as ``bench_ensemble.py`` does:

    .venv/bin/python bench/bench_soup.py runs/control/emotion.ckpt/last.keras \\
        runs/seed2/emotion.ckpt/last.keras runs/seed3/emotion.ckpt/last.keras --out runs/soup

Its last row averages the logits of every row above it, the shipped model and the weight
average included: an ensemble at several times the cost, not the members' alone. The
photos (``wild/``) are for evaluation only.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from bench_ensemble import compare, show

from photosort.emotions import DEFAULT_MODEL, import_keras
from photosort.exporting import export_model
from photosort.training import average_weights

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+", type=Path, help=".keras fine-tunes of one network")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    keras = import_keras("bench_soup")
    args.out.mkdir(parents=True, exist_ok=True)
    soup = args.out / "emotion.keras"
    average_weights(keras, args.members).save(soup)
    models = []
    for k, member in enumerate(args.members):
        copy = args.out / f"member{k}" / "emotion.keras"
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(member, copy)
        models.append(copy)
    models.append(soup)
    for model in models:
        export_model(model, args.data / "fer2013.csv.gz", votes=args.data / "fer2013new.csv")
    exported = [model.with_suffix(".tflite") for model in models]
    show(compare([DEFAULT_MODEL, *exported], args.data, args.folds), args.json)


if __name__ == "__main__":
    main()
