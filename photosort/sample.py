"""A small sample album built from scikit-image's bundled photos, for the demo and the tests.

Nothing is downloaded: these pictures ship inside the scikit-image wheel. The album mixes
formats, a greyscale and a transparent image, nested folders, EXIF capture times and a copy
stored sideways with an EXIF orientation tag, as phones do.
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
) -> Path:
    """Write a JPEG with optional EXIF capture time ("YYYY:MM:DD HH:MM:SS") and orientation."""
    exif = Image.Exif()
    if orientation is not None:
        exif[EXIF_ORIENTATION] = orientation
    if taken is not None:
        exif.get_ifd(EXIF_IFD)[EXIF_DATETIME_ORIGINAL] = taken
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, "JPEG", quality=quality, exif=exif.tobytes())
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
