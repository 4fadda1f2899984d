"""Decode any pixel layout into 8-bit grayscale frames for text finding.

Coordinates are preserved: frame f, row y, column x of the gray image is the same pixel in the
stored image, whatever the photometric interpretation, planar configuration or compression.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, iter_pixels

from deid_core.errors import PixelError


def has_pixels(ds: Dataset) -> bool:
    """True when the dataset carries an image (PixelData, FloatPixelData or DoubleFloatPixelData)."""
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def frame_count(ds: Dataset) -> int:
    """Number of frames (NumberOfFrames, default 1)."""
    try:
        n = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise PixelError("NumberOfFrames is not an integer") from exc
    return max(n, 1)


def to_gray8(frame: np.ndarray, photometric: str, ds: Dataset | None = None) -> np.ndarray:
    """One decoded frame → 2-D uint8, bright = high displayed intensity.

    Monochrome data is windowed from its 0.5th percentile to its maximum (burned-in text is
    usually the maximum value, so it stays at 255); MONOCHROME1 is inverted.
    """
    pi = photometric.upper()
    arr = frame
    if pi == "PALETTE COLOR":
        if ds is None:
            raise PixelError("palette image needs its dataset for the lookup table")
        arr = apply_color_lut(frame, ds)
    if arr.ndim == 3:  # colour, already converted to RGB by the decoder
        rgb = arr.astype(np.float32)
        if rgb.shape[-1] >= 3:
            lum = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
        else:
            lum = rgb[..., 0]
        top = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2 else float(
            max(lum.max(), 1.0))
        if arr.dtype.itemsize > 1 and top > 255:
            top = max(float(lum.max()), 1.0)  # 16-bit colour: scale by the content
        return np.clip(lum * (255.0 / top), 0, 255).astype(np.uint8)
    if arr.dtype == np.uint8 and pi != "MONOCHROME1" and not _narrow(arr):
        return np.ascontiguousarray(arr)
    return _mono_views(arr, pi, stretched=False)[0]


#: An 8-bit monochrome frame whose values span less than this is windowed like deeper data (0.5th percentile
#: to maximum): BitsStored 1-5, or nuclear medicine counts up to 20-35, put text drawn at the top of the
#: stored range within 40 gray levels of its background, below the pre-screen's stroke contrast.
NARROW_RANGE = 128


def _narrow(arr: np.ndarray) -> bool:
    lo, hi, _, _ = cv2.minMaxLoc(arr)
    return hi - lo < NARROW_RANGE


#: The content below the frame's top values must span at least this share of the window; else the
#: window is "stretched" by a few extreme values (bright text at the top of the stored range) and a
#: second view windowed on the content is screened too.
STRETCH_SHARE = 0.4


def _windowed(arr: np.ndarray, lo: float, scale: float) -> np.ndarray:
    """``clip((arr - lo) * scale, 0, 255)`` as uint8, computed in float32 as ever, but for 8- and 16-bit
    integer frames through a lookup table of every possible value (bit for bit the same result): the
    float32 temporaries cost ~13 bytes per pixel (an audit's 20000x20000 frame took 5.2 GB)."""
    if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2:
        bits = 8 * arr.dtype.itemsize
        first = 0 if arr.dtype.kind == "u" else -(1 << (bits - 1))
        values = np.arange(first, first + (1 << bits), dtype=np.int64).astype(np.float32)
        lut = np.clip((values - np.float32(lo)) * np.float32(scale), 0, 255).astype(np.uint8)
        index = arr if arr.dtype.kind == "u" else arr.view(f"u{arr.dtype.itemsize}") ^ np.array(
            1 << (bits - 1), dtype=f"u{arr.dtype.itemsize}")  # signed order as unsigned: -32768 -> 0
        return lut[index]
    data = arr.astype(np.float32)
    data -= np.float32(lo)
    data *= np.float32(scale)
    np.clip(data, 0, 255, out=data)
    return data.astype(np.uint8)


def _mono_views(arr: np.ndarray, pi: str, stretched: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Monochrome frame → (gray windowed 0.5th percentile..max, gray windowed on the content when the
    first is stretched by a few extreme values, else None; only computed when ``stretched``)."""
    if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2:
        if arr.size == 0:
            raise PixelError("empty frame")
        sample = arr[:: max(1, arr.shape[0] // 256)].astype(np.float32)
        lo = float(np.percentile(sample, 0.5))
        hi = float(arr.max())
        if hi <= lo:
            lo = float(arr.min())
        return _mono_finish(arr, sample, lo, hi, pi, stretched)
    data = arr.astype(np.float32)
    if data.size == 0:
        raise PixelError("empty frame")
    if arr.dtype.kind == "f" and not np.isfinite(data).all():  # float pixel data: NaN/inf shown as the floor
        finite = data[np.isfinite(data)]
        data = np.nan_to_num(data, nan=float(finite.min()) if finite.size else 0.0,
                             posinf=float(finite.max()) if finite.size else 0.0,
                             neginf=float(finite.min()) if finite.size else 0.0)
    sample = data[:: max(1, data.shape[0] // 256)]
    lo = float(np.percentile(sample, 0.5))
    hi = float(data.max())
    if hi <= lo:
        lo = float(data.min())
    return _mono_finish(data, sample, lo, hi, pi, stretched)


def _mono_finish(data: np.ndarray, sample: np.ndarray, lo: float, hi: float, pi: str, stretched: bool
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    gray = _windowed(data, lo, scale)
    alt = None
    if stretched and hi > lo:
        below = sample[sample < hi - 0.01 * (hi - lo)]  # all but the values at the top (text drawn at max)
        top = float(np.percentile(below, 99.5)) if below.size else hi
        if lo < top < lo + STRETCH_SHARE * (hi - lo):
            alt = _windowed(data, lo, 255.0 / (top - lo))
    if pi == "MONOCHROME1":
        gray = 255 - gray
        alt = None if alt is None else 255 - alt
    return gray, alt


#: A colour frame whose most coloured pixel has at least this chroma (max - min of R, G, B, on 0-255) gets
#: a second view of its chroma (64 missed purple or orange text of chroma 40-63 on grey).
CHROMA_MIN = 40


def has_chroma_view(ds: Dataset) -> bool:
    """Whether the second view ``gray_views`` gives this dataset's frames is of chroma (colour data), where
    only bright lines are coloured text (see ``pixels._frame_boxes``)."""
    return int(ds.get("SamplesPerPixel", 1)) > 1 or str(ds.get("PhotometricInterpretation", "")).strip() == (
        "PALETTE COLOR")


def _chroma_view(rgb: np.ndarray) -> np.ndarray | None:
    """Chroma (max - min of the channels) of a colour frame as 8-bit gray, or None when nothing in it is
    coloured. Grey content (speckle, anatomy) is 0 there, so coloured text stands alone: blue on black or
    magenta on mid grey have almost no luminance contrast, and green text over speckle merges with it."""
    if rgb.shape[-1] < 3:
        return None
    chans = rgb[..., :3]
    if rgb.dtype == np.uint8:  # OpenCV per plane: numpy's reduction over a 3-long last axis is ~10x slower
        r, g, b = cv2.split(np.ascontiguousarray(chans))
        chroma = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
    else:
        chroma = chans.max(axis=-1) - chans.min(axis=-1)
    if rgb.dtype != np.uint8:
        top = float(np.iinfo(rgb.dtype).max) if rgb.dtype.kind in "ui" and rgb.dtype.itemsize <= 2 else 255.0
        if rgb.dtype.itemsize > 1 and top > 255:
            top = max(float(chans.max()), 1.0)
        chroma = np.clip(chroma.astype(np.float32) * (255.0 / top), 0, 255).astype(np.uint8)
    if int(chroma.max()) < CHROMA_MIN:
        return None
    return np.ascontiguousarray(chroma, dtype=np.uint8)


def gray_views(frame: np.ndarray, photometric: str, ds: Dataset | None = None
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """``to_gray8`` of a frame, plus a second view where the first can hide text: for monochrome data
    deeper than 8 bits whose window a few extreme values stretch (bright text at the top of the stored
    range squeezes the anatomy into a few gray levels, and dark text over it loses its contrast) a view
    windowed on the content; for colour with coloured pixels, its chroma (``_chroma_view``)."""
    pi = photometric.upper()
    if frame.ndim == 3 or pi == "PALETTE COLOR":
        rgb = apply_color_lut(frame, ds) if pi == "PALETTE COLOR" and frame.ndim == 2 and ds is not None \
            else frame
        return to_gray8(frame, photometric, ds), (_chroma_view(rgb) if rgb.ndim == 3 else None)
    if frame.dtype == np.uint8:
        return to_gray8(frame, photometric, ds), None
    return _mono_views(frame, pi, stretched=True)


def iter_gray_frames(ds: Dataset, src: BinaryIO | None = None) -> Iterator[np.ndarray]:
    """Every frame as 8-bit gray (see ``iter_gray_views``, whose first view this is)."""
    for gray, _alt in iter_gray_views(ds, src):
        yield gray


def iter_gray_views(ds: Dataset, src: BinaryIO | None = None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield every frame as 8-bit gray, decoding one frame at a time (large cine loops fit in memory).

    ``src`` is the encoded file ``ds`` was read from with its pixels deferred: frames are then read
    from it one by one, so the whole PixelData value is never loaded. Raises PixelError when the pixel
    data cannot be decoded: the caller must not publish a file whose pixels were not examined.
    """
    if src is None and not has_pixels(ds):
        raise PixelError("no PixelData to decode")
    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    n = frame_count(ds)
    seen = 0
    try:
        for frame in iter_pixels(src if src is not None else ds):
            if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[-1] in (3, 4) and
                                   int(ds.get("SamplesPerPixel", 1)) > 1):
                yield gray_views(frame, pi, ds)
            else:
                raise PixelError("unexpected decoded frame shape")
            seen += 1
    except PixelError:
        raise
    except Exception as exc:  # decoder plugins raise many types; never leak their messages (may echo data)
        raise PixelError(f"pixel data could not be decoded ({type(exc).__name__})") from exc
    if seen != n:
        raise PixelError("decoded frame count differs from NumberOfFrames")
