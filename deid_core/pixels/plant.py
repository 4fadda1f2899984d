"""Plant burned-in text into real DICOM images: the ground truth for recall tests and the benchmark.

Text is drawn with Pillow into the decoded stored values (no display transform), so the planted
box is exact in stored coordinates. Used by ``tests/test_pixels_*`` and ``bench/pixel_speed.py``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian

_DEJAVU = "/usr/share/fonts/truetype/dejavu/"
_FONTS = (_DEJAVU + "DejaVuSans.ttf", _DEJAVU + "DejaVuSansMono.ttf", _DEJAVU + "DejaVuSans-Bold.ttf")


@dataclass(frozen=True)
class Planted:
    """One planted text: frame and ink box in stored coordinates, and whether it is PHI."""

    frame: int
    x: int
    y: int
    w: int
    h: int
    phi: bool


@functools.lru_cache(maxsize=32)
def _font(size: int, face: int = 0) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(_FONTS[face % len(_FONTS)], size)
    except OSError:
        return ImageFont.load_default()


def draw_text(frame: np.ndarray, text: str, x: int, y: int, size: int, value: float | tuple[float, ...],
              background: float | tuple[float, ...] | None = None,
              face: int = 0) -> tuple[int, int, int, int]:
    """Draw ``text`` into one frame (rows, cols[, samples]) in place; returns the ink box (x, y, w, h)."""
    rows, cols = frame.shape[:2]
    canvas = Image.new("L", (cols, rows), 0)
    ImageDraw.Draw(canvas).text((x, y), text, fill=255, font=_font(size, face))
    ink = np.asarray(canvas) >= 128
    ys, xs = np.nonzero(ink)
    if ys.size == 0:
        raise ValueError("text falls outside the frame")
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    if background is not None:
        m = max(2, size // 4)
        frame[max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m] = background
    frame[ink] = value
    return x0, y0, x1 - x0, y1 - y0


def native_copy(ds: Dataset) -> tuple[Dataset, np.ndarray]:
    """A deep copy of ``ds`` decompressed to Explicit VR LE, and its writable pixel array (frames first)."""
    out = ds.copy()
    out.file_meta = ds.file_meta.copy()
    arr = pixel_array(ds, raw=True)
    if int(out.get("NumberOfFrames", 1) or 1) == 1:
        arr = arr[np.newaxis]
    return out, np.array(arr, copy=True)


def store(ds: Dataset, frames: np.ndarray) -> None:
    """Write frames (frames, rows, cols[, samples]) back into ``ds`` as native little-endian pixels."""
    arr = frames if int(ds.get("NumberOfFrames", 1) or 1) > 1 else frames[0]
    pi = str(ds.PhotometricInterpretation)
    if pi in ("YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420"):
        ds.PhotometricInterpretation = "YBR_FULL" if pi == "YBR_FULL_422" else "RGB"
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        ds.PlanarConfiguration = 0
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
    if len(ds.PixelData) % 2:
        ds.PixelData += b"\x00"
    ds["PixelData"].VR = "OB" if int(ds.BitsAllocated) <= 8 else "OW"
    ds.pop("_pixel_array", None)


def extremes(ds: Dataset, frames: np.ndarray) -> tuple[float, float]:
    """Displayed-bright and displayed-dark stored values for drawing (max/min of the stored range)."""
    bits = int(ds.get("BitsStored", ds.BitsAllocated))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    hi = float(2 ** (bits - 1) - 1) if signed else float(2 ** bits - 1)
    hi = min(hi, float(np.iinfo(frames.dtype).max)) if frames.dtype.kind in "ui" else hi
    lo = float(frames.min())
    if str(ds.PhotometricInterpretation) == "MONOCHROME1":
        return lo, hi
    return hi, lo
