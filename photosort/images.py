"""Reading images: the one place where a photo file becomes pixels.

Every later stage (faces, crops, reports) reads photos through :func:`read_image` so that EXIF
orientation, colour modes, decompression bombs and broken files are handled the same way
everywhere. :func:`probe_image` reads only the header, which is what the scanner can afford.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

import numpy as np
import pillow_heif
from PIL import Image, UnidentifiedImageError, features

from photosort.defaults import MAX_MEGAPIXELS
from photosort.errors import PhotosortError, first_line

# We enforce our own, configurable megapixel limit (see _check_bomb); Pillow's global one
# would otherwise refuse large panoramas before ours is even consulted.
Image.MAX_IMAGE_PIXELS = None
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

DEFAULT_MAX_MEGAPIXELS = MAX_MEGAPIXELS

pillow_heif.register_heif_opener()
AVIF = features.check("avif")
"""Whether this Pillow reads AVIF (built with libavif, as its current wheels are)."""

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "HEIF", *(("AVIF",) if AVIF else ()))
FORMAT_NAMES = "JPEG, PNG, WebP, BMP, TIFF, GIF, HEIC" + (", AVIF" if AVIF else "")
"""The formats photosort reads, in words for the user."""

# Pillow names a JPEG carrying a multi-picture segment (an embedded preview or HDR gain map,
# common in camera and phone photos) "MPO"; its first picture is an ordinary JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}

_TIFF_NEW_SUBFILE_TYPE = 254
_TIFF_STRIP_OFFSETS = 273
_TIFF_STRIP_BYTE_COUNTS = 279
_TIFF_TILE_OFFSETS = 324
_TIFF_TILE_BYTE_COUNTS = 325
_TIFF_DNG_VERSION = 50706

_EXIF_ORIENTATION = 0x0112
_EXIF_IFD = 0x8769
_EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_DATETIME_DIGITIZED = 0x9004
_EXIF_DATETIME = 0x0132


class ImageError(PhotosortError):
    """A file that cannot be used as a photo; the message is the reason shown to users."""


@dataclass(frozen=True)
class ImageInfo:
    """What the header says about a photo, without decoding its pixels."""

    format: str
    width: int
    height: int
    taken_at: datetime | None
    orientation: int


def sniff_format(head: bytes) -> str | None:
    """Recognise an image by its first bytes (its content, not its name)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:2] == b"BM" and len(head) >= 14:
        return "BMP"
    if head[4:8] == b"ftyp":
        return _STILL_BRANDS.get(head[8:12])
    return None


# ISO media "ftyp" major brands of still images: HEIF (HEIC, phones' default; "mif1" and
# "msf1" are generic and may hold AV1, which Pillow's AVIF reader takes first) and AVIF.
# Videos carry other brands and stay ignored.
_AVIF_BRANDS = dict.fromkeys((b"avif", b"avis"), "AVIF")
_STILL_BRANDS = {
    **dict.fromkeys((b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"), "HEIF"),
    **(_AVIF_BRANDS if AVIF else {}),
}
_UNSUPPORTED_BRANDS = {b"crx ": "camera RAW (CR3)", **({} if AVIF else _AVIF_BRANDS)}


def sniff_unsupported(head: bytes) -> str | None:
    """Name a photo format photosort cannot read, so the user hears why it was skipped."""
    if head[4:8] == b"ftyp":
        return _UNSUPPORTED_BRANDS.get(head[8:12])
    return None


def check_complete(fmt: str, tail: bytes, source: Source) -> None:
    """Reject files cut short, judged from their last bytes (cheap: mostly no decoding).

    A JPEG ends with an EOI marker (FF D9) that cannot occur inside entropy-coded data, a
    PNG with its IEND chunk and a GIF with a trailer byte; camera files may append data after
    the image, hence a search in the tail rather than a test of the very last bytes. Motion
    Photos append megabytes of video, which pushes the EOI out of any tail, so a JPEG whose
    tail lacks it is decoded (at 1/8 scale, which is cheap) before being called truncated.
    """
    if fmt == "JPEG" and b"\xff\xd9" not in tail and not _jpeg_decodes(source):
        raise ImageError("truncated JPEG: no end-of-image marker")
    if fmt == "PNG" and b"IEND" not in tail:
        raise ImageError("truncated PNG: no IEND chunk")
    if fmt == "GIF" and b"\x3b" not in tail[-16:]:
        raise ImageError("truncated GIF: no trailer")


def _jpeg_decodes(source: Source) -> bool:
    """Whether a JPEG's image data is all there, by a reduced (draft-mode) decode.

    Raises ImageError when the file cannot be opened or there is no memory for the decode:
    neither says the file was cut short.
    """
    with _opened(source) as fh:
        try:
            with Image.open(fh) as img, _decoding(img):
                img.draft("L", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()  # raises on data cut short: Pillow's LOAD_TRUNCATED_IMAGES is off
        except (OSError, SyntaxError, ValueError, EOFError):
            return False
    return True


class OutOfMemory(ImageError):
    """No memory for the pixels a header promises: the machine's state as much as the
    file's, so a later scan (another machine, less load) tries again."""


@contextmanager
def _decoding(img: Image.Image) -> Iterator[None]:
    """Turn a decode of ``img`` that finds no memory for its pixels into an ImageError.

    A header can promise more pixels than the machine holds, under any --max-megapixels
    high enough to let it through: that is this photo's failure, and every caller already
    records a photo's ImageError and goes on with the next one.
    """
    width, height = img.size  # as the header says, before a draft decode shrinks it
    try:
        yield
    except MemoryError as exc:
        raise OutOfMemory(
            f"out of memory decoding it ({width}x{height}, {width * height / 1e6:.0f} MP)"
        ) from exc


def _check_bomb(width: int, height: int, max_megapixels: float) -> None:
    megapixels = width * height / 1e6
    if not megapixels <= max_megapixels:  # a NaN limit refuses, never lets all through
        raise ImageError(
            f"decompression bomb: {width}x{height} is {megapixels:.0f} MP, "
            f"over the limit of {max_megapixels:g} MP"
        )


Source = str | os.PathLike[str] | BinaryIO
"""A photo by path, or a file already open on it (the scanner reads each file once)."""

_NOT_REGULAR = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a file for reading, refusing anything but a regular file without blocking.

    A FIFO or a device that took a photo's place after the walk listed it would block a
    plain ``open()`` (or the first read) forever. Raises OSError when the file cannot be
    opened and ImageError when it is not a regular file.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = _NOT_REGULAR.get(stat.S_IFMT(mode), "a special file")
            raise ImageError(f"not a regular file ({kind})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _open_file(path: str | os.PathLike[str]) -> BinaryIO:
    """:func:`open_regular`, its failures as the reason a photo cannot be used."""
    try:
        return open_regular(path)
    except PermissionError as exc:
        raise ImageError("permission denied") from exc
    except FileNotFoundError as exc:
        raise ImageError("file not found") from exc
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from exc


@contextmanager
def _opened(source: Source) -> Iterator[BinaryIO]:
    """``source`` as an open file from its start; one opened here is closed after."""
    if not isinstance(source, (str, os.PathLike)):
        source.seek(0)
        yield source
        return
    with _open_file(source) as fh:
        yield fh


def _open(fh: BinaryIO) -> Image.Image:
    try:
        return Image.open(fh)
    except UnidentifiedImageError as exc:
        raise ImageError("not an image Pillow can read") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"decompression bomb: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"corrupt image: {first_line(exc)}") from exc


def _parse_exif_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None


def _png_exif(fp: BinaryIO) -> bytes | None:
    """A PNG's eXIf chunk, found by walking the chunk headers. Pillow's ``getexif`` decodes
    every pixel of a PNG to look for it past the image data: a third of a second for a
    12 MP screenshot, on every probe."""
    start = fp.tell()
    try:
        fp.seek(8)  # the signature
        while len(head := fp.read(8)) == 8:
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"eXIf":
                return fp.read(length)
            if kind == b"IEND":
                return None
            fp.seek(length + 4, os.SEEK_CUR)  # the data and its CRC
        return None
    finally:
        fp.seek(start)


def _exif_facts(img: Image.Image) -> tuple[int, datetime | None]:
    try:
        if img.format == "PNG" and "exif" not in img.info and img.fp is not None:
            # Pillow's own reading of what the header gave (an ImageMagick "Raw profile type
            # exif" text, XMP's tiff:Orientation), with the eXIf chunk found without a decode.
            found = _png_exif(img.fp)
            if found is not None:
                img.info["exif"] = found
            exif = Image.Image.getexif(img)
        else:
            exif = img.getexif()
        orientation = int(exif.get(_EXIF_ORIENTATION, 1) or 1)
        sub = exif.get_ifd(_EXIF_IFD)
    except Exception:  # noqa: BLE001 - broken EXIF must not make a photo unreadable
        return 1, None
    taken = None
    for value in (
        sub.get(_EXIF_DATETIME_ORIGINAL),
        sub.get(_EXIF_DATETIME_DIGITIZED),
        exif.get(_EXIF_DATETIME),
    ):
        taken = _parse_exif_time(value)
        if taken is not None:
            break
    return (orientation if 1 <= orientation <= 8 else 1), taken


def _check_tiff(img: Image.Image, file_size: int) -> None:
    """Refuse camera RAW files and TIFFs cut short, from the first image's tags alone.

    DNG and NEF are TIFFs whose first image is a small preview: indexed as photos they would
    stand for the picture at thumbnail size. A TIFF's strips or tiles say where its pixel
    data ends, which a truncated file no longer reaches.
    """
    tags = img.tag_v2  # type: ignore[attr-defined]
    if _TIFF_DNG_VERSION in tags or int(tags.get(_TIFF_NEW_SUBFILE_TYPE, 0) or 0) & 1:
        raise ImageError("camera RAW file: not supported")
    for offsets_tag, counts_tag in (
        (_TIFF_STRIP_OFFSETS, _TIFF_STRIP_BYTE_COUNTS),
        (_TIFF_TILE_OFFSETS, _TIFF_TILE_BYTE_COUNTS),
    ):
        offsets, counts = tags.get(offsets_tag), tags.get(counts_tag)
        if offsets is None or counts is None:
            continue
        if isinstance(offsets, int):
            offsets, counts = (offsets,), (counts,)
        end = max((o + c for o, c in zip(offsets, counts, strict=False)), default=0)
        if end > file_size:
            raise ImageError(f"truncated TIFF: pixel data ends at byte {end} of {file_size}")


def _check_bmp(img: Image.Image, file_size: int) -> None:
    """Refuse an uncompressed BMP cut short: its rows say where its pixel data ends.

    Only the start of the last row must be there (some writers drop its padding); the
    header's file-size field is too often wrong to judge by, so compressed (RLE) BMPs are
    left to the decoder.
    """
    if not img.tile or img.tile[0][0] != "raw":
        return
    offset, stride = img.tile[0][2], img.tile[0][3][1]
    end = offset + abs(stride) * (img.height - 1) + 1
    if end > file_size:
        raise ImageError(f"truncated BMP: pixel data ends at byte {end} of {file_size}")


def _check_header(img: Image.Image, fh: BinaryIO, max_megapixels: float) -> str:
    """Refuse what no later stage can use, from the header alone; returns the format."""
    fmt = _FORMAT_ALIASES.get(img.format or "", img.format or "unknown")
    if fmt not in FORMATS:
        raise ImageError(f"unsupported format {fmt}")
    if img.width < 1 or img.height < 1:
        raise ImageError("image has no pixels")
    _check_bomb(img.width, img.height, max_megapixels)
    if fmt in ("TIFF", "BMP"):
        file_size = os.fstat(fh.fileno()).st_size
        (_check_tiff if fmt == "TIFF" else _check_bmp)(img, file_size)
    return fmt


def probe_image(source: Source, *, max_megapixels: float = DEFAULT_MAX_MEGAPIXELS) -> ImageInfo:
    """Read a photo's header: format, oriented size and capture time.

    Raises ImageError with the reason when the file is not a usable photo.
    """
    with _opened(source) as fh, _open(fh) as img:
        fmt = _check_header(img, fh, max_megapixels)
        width, height = img.size
        orientation, taken = _exif_facts(img)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return ImageInfo(fmt, width, height, taken, orientation)


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map a 16-bit or float single-channel image onto 0..255 without clipping to white."""
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        hi = float(np.nanmax(arr)) if arr.size else 1.0
        scale = 255.0 if hi <= 1.0 else 255.0 / hi
        return np.clip(np.nan_to_num(arr) * scale, 0, 255).astype(np.uint8)
    hi = 255 if arr.max(initial=0) <= 255 else 65535
    return (arr.astype(np.uint32) * 255 // hi).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is flattened onto white."""
    transparent = "transparency" in img.info  # a palette entry or a tRNS colour (RGB, L)
    if img.mode == "RGB" and not transparent:
        return img
    if transparent and img.mode in ("P", "L", "1", "RGB"):
        img = img.convert("RGBA")
    elif img.mode == "P":
        img = img.convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = Image.fromarray(_scale_to_uint8(np.asarray(img)), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def read_image(
    path: str | os.PathLike[str],
    *,
    max_side: int | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    exact: bool = True,
) -> Image.Image:
    """Decode a photo as an upright 8-bit RGB image.

    With ``max_side``, the longer side is reduced to at most that many pixels; a JPEG is then
    decoded straight at a reduced scale (Pillow's draft mode), which is several times faster
    than decoding 12 MP and shrinking afterwards. ``exact=False`` keeps that decode as it
    comes (at least ``max_side``, and less than twice it for a JPEG; other formats full
    size) rather than shrinking the whole image: for a caller that cuts a few small regions
    and resizes only those. GIFs give their first frame. Raises ImageError for truncated,
    corrupt, oversized (over ``max_megapixels``, or more than memory holds) or unreadable
    files.
    """
    fh = _open_file(path)
    try:
        src = _open(fh)
    except ImageError:
        fh.close()
        raise
    img = src
    try:
        with _decoding(src):
            fmt = _check_header(img, fh, max_megapixels)
            orientation, _ = _exif_facts(img)
            if max_side is not None:
                if fmt == "JPEG" and img.mode in ("RGB", "L", "CMYK", "YCbCr"):
                    # Rounded down: JPEG reduces by 1/2, 1/4 or 1/8 only where the source divides
                    # by the request, so a 2667 x 4000 photo asked for 667 x 1000 (2667 // 667 is
                    # 3) would decode at 1/2 and be shrunk afterwards, twice the work.
                    longest = max(img.size)
                    wanted = (
                        max(1, img.width * max_side // longest),
                        max(1, img.height * max_side // longest),
                    )
                    img.draft("RGB" if img.mode != "L" else "L", wanted)
                img.load()
                if exact and max(img.size) > max_side:
                    img = to_rgb(img)
                    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            img.load()
            img = to_rgb(img)
            if orientation != 1:
                img = _orient(img, orientation)
            # The caller owns the result; the file handle behind ``src`` is closed below.
            return img.copy() if img is src else img
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        message = first_line(exc)
        if "truncated" in message or "broken data stream" in message or isinstance(exc, EOFError):
            raise ImageError(f"truncated image: {message}") from exc
        raise ImageError(f"corrupt image: {message}") from exc
    finally:
        src.close()
        fh.close()


SHRINK_SLACK = 1.01
""":func:`shrink` leaves an image this much over the size asked rather than resample it:
a 4032 px phone photo reduced by 2 after a half-scale decode is 1008 px, and a Lanczos pass
to 1000 would cost two thirds of what the decode did."""


def shrink(img: Image.Image, max_side: int) -> Image.Image:
    """``img`` with its longer side at most ``max_side`` (within SHRINK_SLACK): by a whole
    factor first (``Image.reduce``, a box filter, a few milliseconds), the rest with Lanczos
    as ``read_image`` shrinks."""
    factor = max(img.size) // max_side
    if factor >= 2:
        img = img.reduce(factor)
    if max(img.size) > max_side * SHRINK_SLACK:
        scale = max_side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def _orient(img: Image.Image, orientation: int) -> Image.Image:
    """Apply an EXIF orientation to pixels whose EXIF may have been lost by draft or convert."""
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }[orientation]
    return img.transpose(method)


def read_array(
    path: str | os.PathLike[str],
    *,
    max_side: int | None = None,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
) -> np.ndarray:
    """:func:`read_image` as an ``(H, W, 3)`` uint8 array, the form detectors want."""
    return np.asarray(read_image(path, max_side=max_side, max_megapixels=max_megapixels))


def perceptual_hash(img: Image.Image) -> str:
    """A 64-bit difference hash (dHash) as 16 hex digits: near-identical shots differ in few bits.

    Bursts and re-encoded copies of one scene hash within a few bits of each other, which is
    how rankings keep one photo per burst.
    """
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hash_distance(a: str, b: str) -> int:
    """Number of differing bits between two perceptual hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
