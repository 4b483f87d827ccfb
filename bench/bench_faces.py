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


def measure(data: Path, detectors: list[str], min_score: float) -> dict:
    photos = json.loads((data / "annotations.json").read_text())
    rows = []
    for name in detectors:
        recall, precision, median, mean = evaluate(name, min_score, photos, data)
        rows.append(
            {
                "detector": name,
                "recall": round(recall, 3),
                "precision": round(precision, 3),
                "ms_median": round(median, 1),
                "ms_mean": round(mean, 1),
            }
        )
    faces = sum(len(p["boxes"]) for p in photos)
    return {"photos": len(photos), "faces": faces, "min_score": min_score, "detectors": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    parser.add_argument("--detectors", default=",".join(DETECTORS))
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    r = measure(args.data, args.detectors.split(","), args.min_score)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"{r['photos']} photos, {r['faces']} faces, IoU >= 0.4, min score {r['min_score']}")
    print(f"{'detector':<18} {'recall':>7} {'precision':>9} {'ms median':>10} {'ms mean':>8}")
    for row in r["detectors"]:
        print(
            f"{row['detector']:<18} {row['recall']:>7.3f} {row['precision']:>9.3f} "
            f"{row['ms_median']:>10.1f} {row['ms_mean']:>8.1f}"
        )


if __name__ == "__main__":
    main()
