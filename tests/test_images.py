"""The one image reader: orientation, colour modes, bombs, broken files, draft decoding."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photosort.images import (
    FORMATS,
    ImageError,
    probe_image,
    read_array,
    read_image,
    shrink,
    sniff_format,
)
from photosort.sample import save_jpeg, skimage_photo, stored_sideways
from photosort.scanning import examine
from tests.conftest import add_broken_files, png_chunk, write_bomb_png


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_exif_orientation_gives_upright_pixels(tmp_path: Path) -> None:
    astronaut = skimage_photo("astronaut")[:, :400]  # not square, so a wrong turn shows
    upright = save_jpeg(tmp_path / "upright.jpg", astronaut)
    sideways = save_jpeg(tmp_path / "sideways.jpg", stored_sideways(astronaut), orientation=6)
    info = probe_image(sideways)
    assert (info.width, info.height) == (400, 512)
    assert info.orientation == 6
    pixels = read_array(sideways)
    assert pixels.shape == (512, 400, 3)
    assert mean_abs_diff(pixels, read_array(upright)) < 3
    # Not merely "some rotation": the other directions are far off.
    assert mean_abs_diff(pixels, np.rot90(read_array(upright), 2)) > 20


@pytest.mark.parametrize(("fmt", "suffix"), [("HEIF", ".heic"), ("AVIF", ".avif")])
def test_phone_formats_are_read_upright_with_their_capture_time(
    tmp_path: Path, fmt: str, suffix: str
) -> None:
    """HEIC (phones' default) and AVIF, held sideways and tagged so: read like a JPEG."""
    if fmt not in FORMATS:
        pytest.skip("this Pillow has no AVIF support")
    astronaut = skimage_photo("astronaut")[:, :400]
    upright = read_array(save_jpeg(tmp_path / "upright.jpg", astronaut))
    path = save_jpeg(
        tmp_path / f"IMG_0001{suffix}",
        stored_sideways(astronaut),
        orientation=6,
        taken="2020:02:29 13:14:15",
        fmt=fmt,
    )
    assert sniff_format(path.read_bytes()[:32]) == fmt
    info = probe_image(path)
    assert (info.format, info.width, info.height) == (fmt, 400, 512)
    assert info.taken_at is not None and info.taken_at.isoformat() == "2020-02-29T13:14:15"
    pixels = read_array(path)
    assert pixels.shape == (512, 400, 3)
    assert mean_abs_diff(pixels, upright) < 4
    assert mean_abs_diff(pixels, np.rot90(upright, 2)) > 20
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ImageError, match=r"^[^\n]+$"):  # one line, however libheif words it
        read_array(cut)


def test_capture_time_comes_from_exif(tmp_path: Path) -> None:
    path = save_jpeg(tmp_path / "a.jpg", skimage_photo("chelsea"), taken="2020:02:29 13:14:15")
    taken = probe_image(path).taken_at
    assert taken is not None and taken.isoformat() == "2020-02-29T13:14:15"
    plain = save_jpeg(tmp_path / "b.jpg", skimage_photo("chelsea"))
    assert probe_image(plain).taken_at is None


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "RGBA", "LA", "1", "I;16", "I", "F"])
def test_every_mode_becomes_rgb(tmp_path: Path, mode: str) -> None:
    rgb = Image.fromarray(skimage_photo("coffee")[:128, :128])
    if mode == "I;16":
        img = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    elif mode == "F":
        img = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.float32) / 255.0)
    else:
        img = rgb.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I;16", "I", "F", "LA") else "x.png")
    img.save(path)
    out = read_image(path)
    assert out.mode == "RGB"
    assert out.size == (128, 128)
    grey = np.asarray(out.convert("L")).astype(float)
    source = img.convert("RGB") if mode in ("P", "1") else rgb  # palettes lose colours
    expected = np.asarray(source.convert("L")).astype(float)
    # 16-bit and float data are scaled, not clipped to white
    assert np.abs(grey - expected).mean() < 12, mode


def test_transparency_is_flattened_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:16, :, :] = (255, 0, 0, 255)
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    pixels = read_array(path)
    assert tuple(pixels[0, 0]) == (255, 0, 0)
    assert tuple(pixels[31, 31]) == (255, 255, 255)


@pytest.mark.parametrize(("mode", "key"), [("RGB", (0, 0, 0)), ("L", 0)])
def test_trns_transparency_is_flattened_on_white(
    tmp_path: Path, mode: str, key: tuple[int, int, int] | int
) -> None:
    """RGB and L PNGs can be transparent without an alpha channel, through a tRNS colour."""
    pixels = np.full((32, 32), 128, np.uint8)
    pixels[16:, :] = 0  # the transparent colour
    img = Image.fromarray(pixels, "L").convert(mode)
    path = tmp_path / "a.png"
    img.save(path, transparency=key)
    out = read_array(path)
    assert tuple(out[0, 0]) == (128, 128, 128)
    assert tuple(out[31, 31]) == (255, 255, 255)


def test_gif_gives_first_frame(tmp_path: Path) -> None:
    black, white = Image.new("L", (20, 20), 0), Image.new("L", (20, 20), 255)
    path = tmp_path / "a.gif"
    black.save(path, save_all=True, append_images=[white])
    assert read_array(path).max() == 0


def test_decompression_bomb_is_refused_with_reason(tmp_path: Path) -> None:
    bomb = write_bomb_png(tmp_path / "bomb.png", 40000, 40000)
    with pytest.raises(ImageError, match=r"decompression bomb: 40000x40000 is 1600 MP"):
        probe_image(bomb)
    with pytest.raises(ImageError, match="decompression bomb"):
        read_image(bomb)
    # The limit is configurable: a small one refuses an ordinary photo.
    photo = save_jpeg(tmp_path / "a.jpg", skimage_photo("astronaut"))
    with pytest.raises(ImageError, match="over the limit of 0.1 MP"):
        read_image(photo, max_megapixels=0.1)


def test_broken_files_raise_image_error_not_crash(tmp_path: Path) -> None:
    broken = add_broken_files(tmp_path)
    for kind in ("empty", "text", "truncated"):
        with pytest.raises(ImageError):
            read_image(broken[kind])
    with pytest.raises(ImageError, match="file not found"):
        read_image(tmp_path / "nope.jpg")


def test_a_photo_too_large_for_memory_is_an_image_error(tmp_path: Path) -> None:
    """A header promising more pixels than memory holds, let through by a high
    max_megapixels: the decode that finds no memory is this photo's reason, never a
    MemoryError that ends whatever was reading it."""
    wide = write_bomb_png(tmp_path / "wide.png", 600_000_000, 1)
    with Image.open(wide) as img, pytest.raises(MemoryError):  # a row Pillow cannot allocate
        img.load()
    with pytest.raises(ImageError, match=r"^out of memory decoding it \(600000000x1, 600 MP\)$"):
        read_image(wide, max_side=1000, max_megapixels=1000)


EXAMINE_WITH_LITTLE_MEMORY = """
import resource, sys
from photosort.scanning import examine

with open("/proc/self/status") as fh:
    size = next(int(line.split()[1]) << 10 for line in fh if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + (32 << 20), resource.RLIM_INFINITY))
print(examine(sys.argv[1], max_megapixels=1e4).error)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_jpeg_with_no_memory_to_check_its_end_is_unreadable_for_that(tmp_path: Path) -> None:
    """A JPEG whose tail has no end marker is decoded at 1/8 scale to see whether it is whole:
    64 MiB for a header of 65535x65535. A scanner with 32 MiB to spare (a real process under
    RLIMIT_AS) records it as out of memory, neither as cut short nor by crashing."""
    buf = io.BytesIO()
    Image.fromarray(skimage_photo("astronaut")[:16, :16]).save(buf, "JPEG")
    data = bytearray(buf.getvalue()[:-2])  # no end-of-image marker
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (65535).to_bytes(2, "big") * 2
    assert b"\xff\xd9" not in data
    tall = tmp_path / "tall.jpg"
    tall.write_bytes(bytes(data))
    done = subprocess.run(
        [sys.executable, "-c", EXAMINE_WITH_LITTLE_MEMORY, str(tall)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "out of memory decoding it (65535x65535, 4295 MP)"


def test_mpo_is_read_as_jpeg(tmp_path: Path) -> None:
    """Phone JPEGs with an embedded preview or gain map open as MPO in Pillow."""
    photo = Image.fromarray(skimage_photo("astronaut")[:, :400])
    path = tmp_path / "phone.jpg"
    photo.save(path, "MPO", save_all=True, append_images=[photo.resize((100, 128))])
    with Image.open(path) as img:
        assert img.format == "MPO"  # what made it "unsupported" before
    info = probe_image(path)
    assert (info.format, info.width, info.height) == ("JPEG", 400, 512)
    assert read_image(path).size == (400, 512)
    assert max(read_image(path, max_side=100).size) == 100  # the draft-mode path
    facts = examine(str(path))
    assert facts is not None and facts.error is None


def test_motion_photo_with_trailing_video_is_complete(tmp_path: Path) -> None:
    """Motion Photos append an MP4 after the JPEG, pushing its end marker out of the tail."""
    jpeg = save_jpeg(tmp_path / "source.jpg", skimage_photo("chelsea")).read_bytes()
    video = np.random.default_rng(0).integers(0, 255, 300_000, dtype=np.uint8)  # no FF byte
    motion = tmp_path / "PXL_motion.jpg"
    motion.write_bytes(jpeg + video.tobytes())
    facts = examine(str(motion))
    assert facts is not None and facts.error is None
    assert facts.info is not None and facts.info.format == "JPEG"

    cut = tmp_path / "cut.jpg"
    cut.write_bytes(jpeg[: len(jpeg) // 2])
    facts = examine(str(cut))
    assert facts is not None and facts.error == "truncated JPEG: no end-of-image marker"


def _tiff(path: Path, **params: object) -> Path:
    Image.fromarray(skimage_photo("coffee")).save(path, "TIFF", **params)
    return path


def _tiled_tiff(path: Path) -> None:
    """Pillow writes only striped TIFFs; scikit-image's own TIFF writer can tile."""
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(path, skimage_photo("coffee"), tile=(64, 64), photometric="rgb")


@pytest.mark.parametrize(
    ("name", "reason"),
    [("a.bmp", "truncated BMP"), ("a.tif", "truncated TIFF"), ("tiled.tif", "truncated TIFF")],
)
def test_truncated_bmp_and_tiff_are_refused(tmp_path: Path, name: str, reason: str) -> None:
    """Probing reads only headers, so the file size must show a cut, not the decoder."""
    path = tmp_path / name
    if name == "tiled.tif":
        _tiled_tiff(path)
    else:
        Image.fromarray(skimage_photo("coffee")).save(path)
    assert probe_image(path).width == 600  # complete: fine
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(ImageError, match=reason):
        probe_image(path)
    with pytest.raises(ImageError, match=reason):
        read_image(path)


@pytest.mark.parametrize("tags", [{254: 1}, {50706: (1, 4, 0, 0)}])
def test_camera_raw_is_refused_not_indexed_as_its_preview(
    tmp_path: Path, tags: dict[int, object]
) -> None:
    """DNG and NEF are TIFFs whose first image is a small preview of the real picture."""
    path = _tiff(tmp_path / "raw.dng", tiffinfo=tags)
    with pytest.raises(ImageError, match="camera RAW file: not supported"):
        probe_image(path)
    assert probe_image(_tiff(tmp_path / "plain.tif")).format == "TIFF"


def test_draft_mode_decodes_large_jpeg_at_working_size(tmp_path: Path) -> None:
    big = np.asarray(Image.fromarray(skimage_photo("astronaut")).resize((4000, 3000)))
    path = save_jpeg(tmp_path / "big.jpg", big)
    with Image.open(path) as img:
        img.draft("RGB", (1000, 750))
        assert img.size == (1000, 750)  # the decoder itself scaled by 1/4
    small = read_image(path, max_side=1000)
    assert small.size == (1000, 750)
    assert max(read_image(path, max_side=600).size) == 600
    full = read_image(path)
    assert full.size == (4000, 3000)
    reduced = np.asarray(full.resize((1000, 750)))
    assert mean_abs_diff(np.asarray(small), reduced) < 4


def test_draft_respects_orientation(tmp_path: Path) -> None:
    big = np.asarray(Image.fromarray(skimage_photo("astronaut")).resize((3000, 2000)))
    path = save_jpeg(tmp_path / "side.jpg", stored_sideways(big), orientation=6)
    out = read_image(path, max_side=750)
    assert out.size == (750, 500)


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"\xff\xd8\xff\xe0rest", "JPEG"),
        (b"\x89PNG\r\n\x1a\n....", "PNG"),
        (b"GIF89a....", "GIF"),
        (b"RIFF\0\0\0\0WEBPVP8 ", "WEBP"),
        (b"II*\0....", "TIFF"),
        (b"MM\0*....", "TIFF"),
        (b"BM" + b"\0" * 20, "BMP"),
        (b"\0\0\0\x18ftypheic\0\0\0\0", "HEIF"),
        (b"\0\0\0\x18ftypmif1\0\0\0\0", "HEIF"),
        (b"\0\0\0\x18ftypisom\0\0\x02\0", None),  # a video
        (b"\0\0\0\x18ftypcrx \0\0\0\x01", None),  # Canon RAW: named, not read
        (b"%PDF-1.4", None),
        (b"", None),
    ],
)
def test_formats_are_recognised_by_content(head: bytes, fmt: str | None) -> None:
    assert sniff_format(head) == fmt


def test_an_inexact_decode_keeps_the_jpeg_reduced_scale(tmp_path: Path) -> None:
    """For cutting crops: no whole-image resampling, just the 1/2, 1/4 or 1/8 decode."""
    photo = np.asarray(Image.fromarray(skimage_photo("astronaut")).resize((4000, 4000)))
    path = save_jpeg(tmp_path / "big.jpg", photo)
    exact = read_image(path, max_side=900)
    loose = read_image(path, max_side=900, exact=False)
    assert exact.size == (900, 900)
    assert loose.size == (1000, 1000)  # 1/4 scale: the smallest at least 900 px
    shrunk = np.asarray(loose.resize((900, 900), Image.Resampling.LANCZOS), float)
    assert np.abs(shrunk - np.asarray(exact, float)).mean() < 2


def test_a_portrait_jpeg_decodes_at_the_smallest_scale_that_fits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """2667 x 4000 at max side 1000: 1/4 scale (667 x 1000) straight from the decoder, not a
    1/2-scale decode shrunk afterwards (2667 // 667 is 3, which a rounded-up request hit)."""
    photo = np.asarray(Image.fromarray(skimage_photo("astronaut")).resize((2667, 4000)))
    path = save_jpeg(tmp_path / "portrait.jpg", photo)
    resized: list[tuple[int, int]] = []
    real = Image.Image.thumbnail
    monkeypatch.setattr(
        Image.Image,
        "thumbnail",
        lambda self, *a, **k: resized.append(self.size) or real(self, *a, **k),
    )
    assert read_image(path, max_side=1000).size == (667, 1000)
    assert resized == [], "decoded larger and shrunk afterwards"
    assert read_image(path, max_side=2000, exact=False).size == (1334, 2000)


def test_shrink_reduces_by_whole_factors_then_resamples_the_rest() -> None:
    photo = Image.fromarray(skimage_photo("astronaut")).resize((2016, 1512))
    assert shrink(photo, 1000).size == (1008, 756)  # within its slack: not resampled
    np.testing.assert_array_equal(np.asarray(shrink(photo, 1000)), np.asarray(photo.reduce(2)))
    assert shrink(photo, 800).size == (800, 600)  # reduced by 2, then 1008 -> 800
    assert shrink(photo, 3000) is photo
    odd = photo.resize((1718, 1289))
    lanczos = odd.resize((1000, 750), Image.Resampling.LANCZOS)
    np.testing.assert_array_equal(np.asarray(shrink(odd, 1000)), np.asarray(lanczos))


@pytest.mark.parametrize(
    "where",
    ["eXIf before the pixels", "eXIf after the pixels", "ImageMagick's text", "XMP", "none"],
)
def test_a_png_header_is_read_without_decoding_its_pixels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """The eXIf chunk may follow the image data; finding it must not cost a decode, nor lose
    the other places a PNG keeps its orientation and capture time."""
    from PIL import PngImagePlugin

    astronaut = skimage_photo("astronaut")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: stored sideways
    exif.get_ifd(0x8769)[0x9003] = "2021:07:04 10:11:12"
    raw = exif.tobytes()
    text = PngImagePlugin.PngInfo()
    if where == "ImageMagick's text":
        text.add_text("Raw profile type exif", f"\nexif\n{len(raw):8d}\n{raw.hex()}\n")
    elif where == "XMP":
        text.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="6"/>')
    plain = io.BytesIO()
    Image.fromarray(stored_sideways(astronaut)).save(plain, "PNG", pnginfo=text)
    data = plain.getvalue()
    chunk = png_chunk(b"eXIf", raw)
    iend = data.rindex(b"IEND") - 4
    ihdr_end = 8 + 25  # signature, then IHDR: length, type, 13 bytes, CRC
    placed = {
        "eXIf before the pixels": data[:ihdr_end] + chunk + data[ihdr_end:],
        "eXIf after the pixels": data[:iend] + chunk + data[iend:],
    }.get(where, data)
    path = tmp_path / "screen.png"
    path.write_bytes(placed)

    decoded: list[object] = []

    def load(self: object) -> None:
        decoded.append(self)

    with monkeypatch.context() as patched:
        patched.setattr(PngImagePlugin.PngImageFile, "load", load)
        info = probe_image(path)
    assert not decoded, "the header was read by decoding the pixels"
    height, width = astronaut.shape[:2]
    if where == "none":
        assert (info.orientation, info.taken_at) == (1, None)
        return
    assert (info.orientation, info.width, info.height) == (6, width, height)
    if where != "XMP":  # XMP here says only how the photo is turned
        assert info.taken_at is not None and info.taken_at.isoformat() == "2021-07-04T10:11:12"
    upright = np.asarray(read_image(path))
    assert upright.shape[:2] == (height, width) and mean_abs_diff(upright, astronaut) < 1
