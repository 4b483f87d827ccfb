"""Test albums built on the fly from scikit-image's bundled photos (no shared data needed)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from photosort.sample import build_sample_album, save_jpeg, skimage_photo


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb_png(path: Path, width: int = 40000, height: int = 40000) -> Path:
    """A tiny file whose header declares a huge image, as decompression bombs do."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b""))
    return path


def add_broken_files(folder: Path) -> dict[str, Path]:
    """The bad inputs a real library contains; returns them by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "_source.jpg"
    save_jpeg(good, skimage_photo("coffee"))
    data = good.read_bytes()
    good.unlink()
    files = {
        "empty": folder / "zero.jpg",
        "text": folder / "notes.jpg",
        "truncated": folder / "truncated.jpg",
        "bomb": folder / "bomb.png",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("these are not the pixels you are looking for\n")
    files["truncated"].write_bytes(data[: len(data) // 2])
    write_bomb_png(files["bomb"])
    return files


def build_test_album(root: Path) -> dict[str, Path]:
    """Sample album plus broken files, odd names, formats, hidden files and a symlink loop."""
    paths = {p.name: p for p in build_sample_album(root)}
    broken = add_broken_files(root / "broken")
    paths.update({f"broken:{k}": v for k, v in broken.items()})
    nested = root / "trips" / "2021" / "日本 café 😀"
    unicode_photo = save_jpeg(
        nested / "チェルシー «cat» 😀.jpg", skimage_photo("chelsea"), quality=70
    )
    paths["unicode"] = unicode_photo
    gif = nested / "animated.gif"
    frames = [Image.fromarray(skimage_photo("coins")), Image.fromarray(skimage_photo("camera"))]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    paths["gif"] = gif
    bmp = root / "trips" / "horse.bmp"
    Image.fromarray(skimage_photo("horse").astype(np.uint8) * 255).save(bmp)
    paths["bmp"] = bmp
    tiff16 = root / "trips" / "moon16.tif"
    Image.fromarray(skimage_photo("moon").astype(np.uint16) * 257).save(tiff16)
    paths["tiff16"] = tiff16
    disguised = root / "trips" / "mystery.dat"
    Image.fromarray(skimage_photo("rocket")).save(disguised, "PNG")
    paths["disguised"] = disguised
    (root / "trips" / "README.txt").write_text("not a photo")
    hidden = root / ".thumbnails"
    hidden.mkdir()
    save_jpeg(hidden / "thumb.jpg", skimage_photo("astronaut")[::8, ::8])
    save_jpeg(root / "people" / "._astronaut.jpg", skimage_photo("astronaut")[::8, ::8])
    os.symlink("..", root / "trips" / "2021" / "loop")
    return paths


# Every entry of build_test_album that is a photo (good or broken) and not hidden.
ALBUM_PHOTOS = 16
ALBUM_BROKEN = 4


@pytest.fixture
def album(tmp_path: Path) -> Path:
    root = tmp_path / "album"
    build_test_album(root)
    return root


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'library.db'}"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
