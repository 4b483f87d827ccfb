"""End-to-end scan rate with faces, against the way the tutorials do it, as one run.

The album: the annotated photos of ../shared/data/faces upscaled to 12 MP JPEGs (4000 px
on the long side, camera-like noise), so every frame holds real faces at realistic sizes.

- photosort: ``scan_library`` with faces (draft-mode decode to working size, tiled BlazeFace,
  crops, one batched LiteRT ``predict`` across photos), on all cores; the model is loaded
  inside the timing, as a ``scan`` command loads it.
- tutorial baseline: full-resolution ``cv2.imread``, OpenCV's Haar cascade on the full frame
  (skimage's LBP cascade where this OpenCV no longer has Haar cascades), and one Keras
  ``predict`` call per face. Timed on a few photos: it is slow.

- ``--heic``: the same album also as HEIC (phones' default format; libheif decodes it at
  full size, where a JPEG is decoded at a reduced scale), scanned in the same run.

Run: ``python bench/bench_pipeline.py [--photos 40] [--baseline-photos 4] [--heic]``
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from photosort.emotions import KERAS_MODEL, load_model, preprocess_faces
from photosort.indexing import FaceOptions, LazyClassifier, scan_library
from photosort.store import open_engine

ROOT = Path(__file__).resolve().parent.parent


def build_album(source: Path, folder: Path, count: int, fmt: str = "JPEG") -> list[Path]:
    """Upscale annotated photos to 12 MP JPEGs (or HEICs) with sensor-like noise."""
    items = json.loads((source / "annotations.json").read_text())[:count]
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for item in items:
        img = Image.open(source / item["path"]).convert("RGB")
        scale = 4000 / max(img.size)
        big = np.asarray(
            img.resize(
                (round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC
            )
        )
        noisy = np.clip(big + rng.normal(0, 4, big.shape), 0, 255).astype(np.uint8)
        suffix = ".jpg" if fmt == "JPEG" else ".heic"
        path = folder / f"{Path(item['path']).stem}_12mp{suffix}"
        Image.fromarray(noisy).save(path, fmt, quality=92 if fmt == "JPEG" else 80)
        paths.append(path)
    return paths


class TutorialDetector:
    """Haar cascade on the full grey frame (LBP where OpenCV 5 dropped Haar)."""

    def __init__(self) -> None:
        import cv2

        self.cv2 = cv2
        if hasattr(cv2, "CascadeClassifier"):
            self.name = "OpenCV Haar cascade"
            path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
            cascade = cv2.CascadeClassifier(path)
            self.detect = lambda grey: cascade.detectMultiScale(grey, 1.1, 5, minSize=(30, 30))
        else:
            from skimage import data
            from skimage.feature import Cascade

            self.name = "scikit-image LBP cascade (OpenCV 5 has no Haar cascades)"
            cascade = Cascade(data.lbp_frontal_face_cascade_filename())
            self.detect = lambda grey: [
                (d["c"], d["r"], d["width"], d["height"])
                for d in cascade.detect_multi_scale(
                    grey, scale_factor=1.2, step_ratio=1, min_size=(30, 30), max_size=(1500, 1500)
                )
            ]


def tutorial_scan(paths: list[Path]) -> tuple[float, int, str]:
    """The tutorials' loop, Keras included; returns seconds, faces and the detector's name."""
    detector = TutorialDetector()
    cv2 = detector.cv2
    keras_model = load_model(KERAS_MODEL).keras_model
    keras_model.predict(np.zeros((1, 48, 48, 1), np.float32), verbose=0)
    faces = 0
    start = time.perf_counter()
    for path in paths:
        frame = cv2.imread(str(path))
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        for x, y, w, h in detector.detect(grey):
            crop = grey[y : y + h, x : x + w]
            keras_model.predict(preprocess_faces([crop]), verbose=0)
            faces += 1
    return time.perf_counter() - start, faces, detector.name


def scan_rate(album: Path, db: str, workers: int) -> tuple[float, int]:
    """Photos per second of a first scan with faces, and the faces it found."""
    engine = open_engine(f"sqlite:///{db}")
    faces = FaceOptions(classifier=LazyClassifier())
    report = scan_library(engine, [str(album)], workers=workers, faces=faces)
    return report.scanned / report.seconds, report.faces


def measure(data: Path, photos: int, baseline_photos: int, heic: bool = False) -> dict:
    """End-to-end rates for 1 and all workers and for the tutorial loop, in one run."""
    workers = os.cpu_count() or 1
    rates = {}
    extra: dict = {}
    with tempfile.TemporaryDirectory(prefix="photosort-bench-") as tmp:
        album = Path(tmp) / "album"
        paths = build_album(data, album, photos)
        for n in sorted({1, workers}):
            rates[n], faces = scan_rate(album, f"{tmp}/bench{n}.db", n)
        if heic:
            phone = build_album(data, Path(tmp) / "heic", photos, "HEIF")
            rate, heic_faces = scan_rate(phone[0].parent, f"{tmp}/heic.db", workers)
            extra = {
                "heic_photos_per_s": round(rate, 2),
                "heic_vs_jpeg": round(rate / rates[workers], 2),
                "heic_faces": heic_faces,
            }
        base_seconds, base_faces, base_name = tutorial_scan(paths[:baseline_photos])
    base = baseline_photos / base_seconds
    return {
        **extra,
        "photos": photos,
        "faces": faces,
        "photos_per_s": round(rates[workers], 2),
        "photos_per_s_1_worker": round(rates[1], 2),
        "workers": workers,
        "worker_speedup": round(rates[workers] / rates[1], 2),
        "baseline": base_name,
        "baseline_photos": baseline_photos,
        "baseline_faces": base_faces,
        "baseline_photos_per_s": round(base, 3),
        "speedup_vs_baseline": round(rates[workers] / base, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--baseline-photos", type=int, default=4)
    parser.add_argument("--heic", action="store_true", help="also scan the album as HEIC")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    r = measure(args.data, args.photos, args.baseline_photos, args.heic)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"album: {r['photos']} JPEGs of 12 MP built from {args.data}, {r['faces']} faces")
    print(
        f"photosort scan, {r['workers']} workers: {r['photos_per_s']:.2f} photos/s "
        f"(1 worker: {r['photos_per_s_1_worker']:.2f}, x{r['worker_speedup']:.2f}; goal >= 8)"
    )
    if args.heic:
        print(
            f"the same photos as HEIC: {r['heic_photos_per_s']:.2f} photos/s, "
            f"x{r['heic_vs_jpeg']:.2f} the JPEG rate; {r['heic_faces']} faces"
        )
    print(
        f"tutorial ({r['baseline']}, {r['baseline_photos']} photos): "
        f"{r['baseline_photos_per_s']:.3f} photos/s; photosort is x{r['speedup_vs_baseline']:.1f}"
    )


if __name__ == "__main__":
    main()
