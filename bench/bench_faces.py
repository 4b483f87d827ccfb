"""Benchmark face detectors on the annotated photos in ../shared/data/faces.

A face counts as found when a detection overlaps it at IoU >= 0.4 (each annotated face is
matched to its best remaining detection, each detection used once); detections on faces the
source left unannotated (``ignore``) count neither way. Prints recall, precision and
milliseconds per photo for each detector, as one run.

Run: ``python bench/bench_faces.py [--data ../shared/data/faces] [--detectors blazeface,haar]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from photosort.faces import DEFAULT_MIN_SCORE, DETECTORS, iou, make_detector
from photosort.images import read_array

ROOT = Path(__file__).resolve().parent.parent


def match(boxes: list, ignore: list, detections: list, threshold: float = 0.4) -> tuple[int, int]:
    """Return (faces found, false detections) for one photo."""
    unused = list(detections)
    found = 0
    for box in boxes:
        if not unused:
            break
        best = max(unused, key=lambda d: iou(box, d))
        if iou(box, best) >= threshold:
            found += 1
            unused.remove(best)
    false = [d for d in unused if not any(iou(d, g) >= threshold for g in ignore)]
    return found, len(false)


def evaluate(
    name: str, min_score: float, photos: list[dict], folder: Path
) -> tuple[float, float, float, float]:
    """Recall, precision, median and mean milliseconds per photo of one detector."""
    detector = make_detector(name, min_score)
    found = false = total = detected = 0
    times = []
    for item in photos:
        image = read_array(folder / item["path"])
        start = time.perf_counter()
        faces = detector.detect(image)  # type: ignore[attr-defined]
        times.append((time.perf_counter() - start) * 1000)
        boxes = [tuple(f.box) for f in faces]
        hit, fp = match([tuple(b) for b in item["boxes"]], item.get("ignore", []), boxes)
        found += hit
        false += fp
        total += len(item["boxes"])
        detected += hit + fp
    recall = found / total
    precision = found / detected if detected else 1.0
    return recall, precision, statistics.median(times), statistics.mean(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    parser.add_argument("--detectors", default=",".join(DETECTORS))
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE)
    args = parser.parse_args()
    photos = json.loads((args.data / "annotations.json").read_text())
    print(f"{len(photos)} photos, {sum(len(p['boxes']) for p in photos)} faces, IoU >= 0.4")
    print(f"{'detector':<18} {'recall':>7} {'precision':>9} {'ms median':>10} {'ms mean':>8}")
    for name in args.detectors.split(","):
        recall, precision, median, mean = evaluate(name, args.min_score, photos, args.data)
        print(f"{name:<18} {recall:>7.3f} {precision:>9.3f} {median:>10.1f} {mean:>8.1f}")


if __name__ == "__main__":
    main()
