"""Plant burned-in text into real DICOM images: the ground truth for recall tests and the benchmark.

Text is drawn with Pillow into the decoded stored values (no display transform), so the planted
box is exact in stored coordinates. Used by ``tests/test_pixels_*`` and ``bench/pixel_speed.py``.
"""

from __future__ import annotations

import copy
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
    out = copy.deepcopy(ds)
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


def plant_stored(ds: Dataset, frame: int, text: str, x: int, y: int, size: int, bright: bool = True,
                 face: int = 0) -> Planted:
    """Draw text straight into native PixelData in its stored layout (any PI, planar configuration,
    YBR_FULL_422 pairs, palette); ``bright`` picks the displayed-white (else displayed-black) value."""
    from deid_core.pixels.mask import _native_view  # local: test/bench helper only

    rows, cols = int(ds.Rows), int(ds.Columns)
    canvas = Image.new("L", (cols, rows), 0)
    ImageDraw.Draw(canvas).text((x, y), text, fill=255, font=_font(size, face))
    ink = np.asarray(canvas) >= 128
    ys, xs = np.nonzero(ink)
    if ys.size == 0:
        raise ValueError("text falls outside the frame")
    buf = bytearray(ds.PixelData)
    view = _native_view(ds, buf)
    pi = str(ds.PhotometricInterpretation).strip()
    bits = int(ds.get("BitsStored", ds.BitsAllocated))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    top = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    low = int(view[frame].min())
    if pi in ("MONOCHROME2", "MONOCHROME1"):
        v = top if (bright == (pi == "MONOCHROME2")) else low
        view[frame][ink] = v
    elif pi == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        idx = np.arange(0, min(int(np.iinfo(view.dtype).max) + 1, 65536)).astype(view.dtype)
        lum = apply_color_lut(idx, ds).astype(np.float64).sum(axis=-1)
        view[frame][ink] = idx[int(np.argmax(lum) if bright else np.argmin(lum))]
    elif pi == "YBR_FULL_422":
        pair = ink[:, 0::2] | ink[:, 1::2]
        val = [255, 255, 128, 128] if bright else [0, 0, 128, 128]
        view[frame][pair[:, : view.shape[2]]] = val
    elif pi.startswith("YBR"):
        view[frame][ink] = [255, 128, 128] if bright else [0, 128, 128]
    elif view.ndim == 5 or (view.ndim == 4 and int(ds.get("PlanarConfiguration", 0)) == 1):
        for s in range(view.shape[1]):
            view[frame, s][ink] = 255 if bright else 0
    else:
        view[frame][ink] = 255 if bright else 0
    ds.PixelData = bytes(buf)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    return Planted(frame, x0, y0, x1 - x0, y1 - y0, True)


def coverage(planted: Planted, boxes: list, pad: int = 0) -> float:  # type: ignore[type-arg]
    """Share of a planted box covered by the mask boxes of its frame (boxes are the masked rectangles)."""
    m = np.zeros((planted.h, planted.w), dtype=bool)
    for b in boxes:
        if b.frame != planted.frame:
            continue
        x0, y0 = max(b.x - pad, planted.x), max(b.y - pad, planted.y)
        x1, y1 = min(b.x + b.w + pad, planted.x + planted.w), min(b.y + b.h + pad, planted.y + planted.h)
        if x1 > x0 and y1 > y0:
            m[y0 - planted.y:y1 - planted.y, x0 - planted.x:x1 - planted.x] = True
    return float(m.mean())
