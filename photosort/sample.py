"""A small sample album built from scikit-image's bundled photos, for the demo and the tests.

Nothing is downloaded: these pictures ship inside the scikit-image wheel. The album mixes
formats, a greyscale and a transparent image, nested folders, EXIF capture times and a copy
stored sideways with an EXIF orientation tag, as phones do. The demo's album adds portraits
and group photos made from the LFW faces scikit-image also ships, so that it shows every
emotion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112
EXIF_IFD = 0x8769
EXIF_DATETIME_ORIGINAL = 0x9003


def skimage_photo(name: str) -> np.ndarray:
    """One of scikit-image's bundled photos as an array (``astronaut``, ``chelsea``...)."""
    from skimage import data

    return getattr(data, name)()


def save_jpeg(
    path: Path,
    pixels: np.ndarray,
    *,
    taken: str | None = None,
    orientation: int | None = None,
    quality: int = 90,
    fmt: str = "JPEG",
) -> Path:
    """Write a JPEG (or another ``fmt`` Pillow writes: HEIF, AVIF) with optional EXIF capture
    time ("YYYY:MM:DD HH:MM:SS") and orientation."""
    exif = Image.Exif()
    if orientation is not None:
        exif[EXIF_ORIENTATION] = orientation
    if taken is not None:
        exif.get_ifd(EXIF_IFD)[EXIF_DATETIME_ORIGINAL] = taken
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt, quality=quality, exif=exif.tobytes())
    return path


def stored_sideways(pixels: np.ndarray) -> np.ndarray:
    """The pixels a camera held upright but tagged orientation 6 would store."""
    return np.ascontiguousarray(np.rot90(pixels, 1))


def build_sample_album(folder: Path) -> list[Path]:
    """Write the sample album into ``folder`` and return the photo paths."""
    folder = Path(folder)
    astronaut = skimage_photo("astronaut")
    paths = [
        save_jpeg(folder / "people" / "astronaut.jpg", astronaut, taken="2019:07:20 20:17:40"),
        save_jpeg(
            folder / "people" / "astronaut-sideways.jpg",
            stored_sideways(astronaut),
            taken="2019:07:20 20:18:02",
            orientation=6,
        ),
        save_jpeg(folder / "pets" / "chelsea.jpg", skimage_photo("chelsea")),
        save_jpeg(folder / "things" / "rocket.jpg", skimage_photo("rocket")),
    ]
    extra = {
        folder / "people" / "cameraman.png": skimage_photo("camera"),
        folder / "things" / "coffee.webp": skimage_photo("coffee"),
        folder / "things" / "logo.png": skimage_photo("logo"),
    }
    for path, pixels in extra.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


LFW_PORTRAITS: dict[str, tuple[int, ...]] = {
    "angry": (97, 22),
    "disgust": (77, 33),
    "fear": (56, 76),
    "happy": (81, 85),
    "sad": (6, 95),
    "surprise": (55, 29),
    "neutral": (72, 7),
}
"""Faces of scikit-image's LFW subset, two per emotion: the two the shipped model scores
highest for it once scanned, so that every section of the demo's album has photos."""
LFW_GROUPS = {"friends": (53, 27, 31), "team": (5, 19, 25)}
"""Group photos: three smiling faces (``top happy --every-face``), and three that differ
(angry, happy, sad), each of them found in the row by the detector and the face mesh."""
LFW_SCALE = 6
"""The LFW crops are 25x25: scaled up, the detector sees faces of about 150 px."""


def lfw_face(index: int) -> np.ndarray:
    """One of the 100 faces in scikit-image's LFW subset, with a margin, as an RGB photo."""
    from skimage import data

    face = np.rint(data.lfw_subset()[index] * 255).astype(np.uint8)
    face = np.pad(face, 8, mode="edge")
    side = face.shape[0] * LFW_SCALE
    big = Image.fromarray(face).resize((side, side), Image.Resampling.BICUBIC)
    return np.asarray(big.convert("RGB"))


def build_demo_album(folder: Path) -> list[Path]:
    """The sample album plus portraits and group photos from the LFW faces scikit-image
    ships, so that the demo shows every emotion (nothing is downloaded).

    Each portrait carries a capture time, a few months apart from 2021 on.
    """
    folder = Path(folder)
    paths = build_sample_album(folder)
    month = 0
    for emotion, indices in LFW_PORTRAITS.items():
        for n, index in enumerate(indices, 1):
            year, mon = 2021 + month // 12, month % 12 + 1
            taken = f"{year}:{mon:02d}:15 12:00:00"
            path = folder / "portraits" / f"{emotion}-{n}.jpg"
            paths.append(save_jpeg(path, lfw_face(index), taken=taken))
            month += 3
    for name, indices in LFW_GROUPS.items():
        row = np.concatenate([lfw_face(i) for i in indices], axis=1)
        paths.append(save_jpeg(folder / "groups" / f"{name}.jpg", row))
    return paths
