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
import subprocess
import sys
import tempfile
import time
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=300, help="12 MP JPEGs for the first scan")
    parser.add_argument("--rescan", type=int, default=10000, help="photos for the rescan goal")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="photosort-bench-") as tmp:
        tmp_path = Path(tmp)
        big = tmp_path / "big"
        t0 = time.perf_counter()
        nbytes = build_album(big, args.photos, (4000, 3000))
        built = time.perf_counter() - t0
        cold = drop_caches()
        big_run = run_scan(tmp_path / "big.db", big, args.workers)

        small = tmp_path / "small"
        build_small_album(small, args.rescan)
        small_run = run_scan(tmp_path / "small.db", small, args.workers)
        tenth = tmp_path / "tenth"
        build_small_album(tenth, args.rescan // 10)
        tenth_run = run_scan(tmp_path / "tenth.db", tenth, args.workers)

    first = big_run["first"]
    rows = [
        (
            "album",
            f"{args.photos} x 12 MP JPEG, {nbytes / args.photos / 1e6:.1f} MB each "
            f"(built in {built:.0f} s, page cache {'dropped' if cold else 'warm'})",
        ),
        (
            "first scan, 12 MP",
            f"{first['scanned'] / first['seconds']:.0f} photos/s "
            f"({nbytes / first['seconds'] / 1e6:.0f} MB/s hashed; goal >= 100)",
        ),
        (
            "rescan, 12 MP unchanged",
            f"{big_run['rescan']['scanned'] / big_run['rescan']['seconds']:.0f} photos/s",
        ),
        (
            f"rescan, {args.rescan} unchanged",
            f"{small_run['rescan']['seconds']:.2f} s (goal < 3 s)",
        ),
        (
            f"first scan, {args.rescan} small",
            f"{small_run['first']['scanned'] / small_run['first']['seconds']:.0f} photos/s",
        ),
        (
            "peak RSS",
            f"{tenth_run['peak_rss_mb']:.0f} MB at {args.rescan // 10} photos, "
            f"{small_run['peak_rss_mb']:.0f} MB at {args.rescan} photos "
            f"(x{small_run['peak_rss_mb'] / tenth_run['peak_rss_mb']:.2f} for x10 photos)",
        ),
        ("workers", str(args.workers)),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
