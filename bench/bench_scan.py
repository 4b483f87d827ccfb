"""Benchmark the scanning stage: first scan and rescan rates, and memory as the library grows.

Builds albums in a temporary folder (nothing from ../shared is needed):
- N realistic 12 MP JPEGs (4000x3000, camera-like detail and noise, EXIF); a handful are
  encoded and the rest are byte-level variants with a unique comment segment, so every file
  has its own content hash while the album builds in seconds;
- 10,000 small JPEGs for the rescan goal (a rescan does not open unchanged files, so their
  size does not matter) and for memory at two library sizes.

Run: ``python bench/bench_scan.py [--photos 300] [--rescan 10000]``. Prints one table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from photosort.sample import save_jpeg, skimage_photo

BASES = ("astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry")


def camera_like(name: str, size: tuple[int, int], seed: int) -> np.ndarray:
    """An upscaled photo with sensor-like noise: compresses like a real camera frame."""
    pixels = skimage_photo(name)
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    big = np.asarray(Image.fromarray(pixels[..., :3]).resize(size, Image.Resampling.BICUBIC))
    noise = np.random.default_rng(seed).normal(0, 12, big.shape)
    return np.clip(big + noise, 0, 255).astype(np.uint8)


def variant(jpeg: bytes, index: int) -> bytes:
    """The same picture with a unique COM segment right after SOI: a distinct file and hash."""
    comment = f"photosort bench variant {index:08d}".encode()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    return jpeg[:2] + segment + jpeg[2:]


def build_album(folder: Path, count: int, size: tuple[int, int]) -> int:
    """Write ``count`` JPEGs in folders of 100; return the total bytes written."""
    encoded = []
    for i, name in enumerate(BASES[: min(len(BASES), count)]):
        path = save_jpeg(
            folder / f"_base{i}.jpg", camera_like(name, size, i), taken="2024:05:01 10:00:00"
        )
        encoded.append(path.read_bytes())
        path.unlink()
    total = 0
    for i in range(count):
        sub = folder / f"roll{i // 100:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        data = variant(encoded[i % len(encoded)], i)
        (sub / f"IMG_{i:05d}.jpg").write_bytes(data)
        total += len(data)
    return total


def small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(skimage_photo("astronaut")[::4, ::4]).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def build_small_album(folder: Path, count: int) -> None:
    data = small_jpeg()
    for i in range(count):
        sub = folder / f"roll{i // 200:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"IMG_{i:05d}.jpg").write_bytes(variant(data, i))


SCAN_CHILD = """
import json, re, sys
from photosort.indexing import scan_library
from photosort.store import open_engine
engine = open_engine(sys.argv[1])
first = scan_library(engine, [sys.argv[2]], workers=int(sys.argv[3]))
second = scan_library(engine, [sys.argv[2]], workers=int(sys.argv[3]))
status = open("/proc/self/status").read()
peak = int(re.search(r"VmHWM:\\s+(\\d+)", status)[1]) / 1024
print(json.dumps({"first": first.as_dict(), "rescan": second.as_dict(), "peak_rss_mb": peak}))
"""


def run_scan(db: Path, album: Path, workers: int) -> dict:
    """Scan twice in a fresh process, so peak memory belongs to this library alone."""
    out = subprocess.run(
        [sys.executable, "-c", SCAN_CHILD, f"sqlite:///{db}", str(album), str(workers)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def drop_caches() -> bool:
    """Ask the kernel to forget cached file pages (root only), so reads hit the disk."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def measure(photos: int, rescan: int, memory: tuple[int, int], workers: int) -> dict:
    """Run every scanning-stage measurement; returns the figures."""
    with tempfile.TemporaryDirectory(prefix="photosort-bench-") as tmp:
        tmp_path = Path(tmp)
        big = tmp_path / "big"
        nbytes = build_album(big, photos, (4000, 3000))
        cold = drop_caches()
        big_run = run_scan(tmp_path / "big.db", big, workers)
        small = tmp_path / "small"
        build_small_album(small, rescan)
        small_run = run_scan(tmp_path / "small.db", small, workers)
        peaks = {}
        for count in memory:
            album = tmp_path / f"mem{count}"
            build_small_album(album, count)
            peaks[count] = run_scan(tmp_path / f"mem{count}.db", album, workers)["peak_rss_mb"]
            shutil.rmtree(album)
    first = big_run["first"]
    return {
        "photos": photos,
        "mb_per_photo": round(nbytes / photos / 1e6, 2),
        "page_cache": "dropped" if cold else "warm",
        "first_scan_photos_per_s": round(first["scanned"] / first["seconds"], 1),
        "first_scan_mb_per_s": round(nbytes / first["seconds"] / 1e6),
        "rescan_photos_per_s": round(
            big_run["rescan"]["scanned"] / big_run["rescan"]["seconds"], 1
        ),
        "rescan_count": rescan,
        "rescan_seconds": round(small_run["rescan"]["seconds"], 3),
        "small_first_scan_photos_per_s": round(
            small_run["first"]["scanned"] / small_run["first"]["seconds"], 1
        ),
        "peak_rss_mb": {str(k): round(v, 1) for k, v in peaks.items()},
        "workers": workers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=300, help="12 MP JPEGs for the first scan")
    parser.add_argument("--rescan", type=int, default=10000, help="photos for the rescan goal")
    parser.add_argument("--memory", default="1000,20000", help="library sizes for peak memory")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    sizes = tuple(int(n) for n in args.memory.split(","))
    r = measure(args.photos, args.rescan, sizes, args.workers)  # type: ignore[arg-type]
    if args.json:
        print(json.dumps(r, indent=2))
        return
    peaks = ", ".join(f"{mb:.0f} MB at {n} photos" for n, mb in r["peak_rss_mb"].items())
    rows = [
        (
            "album",
            f"{r['photos']} x 12 MP JPEG, {r['mb_per_photo']} MB each, "
            f"page cache {r['page_cache']}",
        ),
        (
            "first scan, 12 MP",
            f"{r['first_scan_photos_per_s']:.0f} photos/s "
            f"({r['first_scan_mb_per_s']} MB/s hashed; goal >= 100)",
        ),
        ("rescan, 12 MP unchanged", f"{r['rescan_photos_per_s']:.0f} photos/s"),
        (f"rescan, {r['rescan_count']} unchanged", f"{r['rescan_seconds']:.2f} s (goal < 3 s)"),
        (
            f"first scan, {r['rescan_count']} small",
            f"{r['small_first_scan_photos_per_s']:.0f} photos/s",
        ),
        ("peak RSS", peaks),
        ("workers", str(r["workers"])),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
