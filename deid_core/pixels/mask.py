"""Mask boxes in the stored pixel layout and write PixelData back in the original layout.

Native (uncompressed) data is edited in place through a numpy view of the PixelData bytes, so
every pixel outside the boxes stays bit-identical (including unused high bits and the padding
byte). Encapsulated data is decoded, masked, and re-encoded losslessly to the same transfer
syntax when pydicom has an encoder (RLE Lossless, JPEG 2000 Lossless); otherwise it is written as
Explicit VR Little Endian. Lossy input is refused unless the caller accepts a lossy re-encode.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, decompress
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
)

from deid_core.errors import PixelError
from deid_core.pixels.decode import frame_count

if TYPE_CHECKING:
    from deid_core.pixels import Box

#: Encapsulated syntaxes whose pixels are exact: masking can be written back without loss.
LOSSLESS_SYNTAXES = frozenset({
    RLELossless, JPEG2000Lossless, UID("1.2.840.10008.1.2.4.57"), JPEGLosslessSV1,
    UID("1.2.840.10008.1.2.4.80"),
    UID("1.2.840.10008.1.2.4.92"), UID("1.2.840.10008.1.2.4.201"), UID("1.2.840.10008.1.2.4.202"),
})
#: Lossless syntaxes pydicom can encode: masked output keeps the input's transfer syntax.
REENCODABLE = frozenset({RLELossless, JPEG2000Lossless})
NATIVE_SYNTAXES = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
                             DeflatedExplicitVRLittleEndian})
#: Pixels ``find_text_boxes`` adds around every text box so anti-aliased glyph edges are covered too
#: (the recorded boxes include it; ``apply_boxes`` fills boxes exactly).
PAD = 2


def is_lossy(ds: Dataset) -> bool:
    """True when the stored pixels come from (or are) a lossy encoding we must not silently re-encode."""
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
    if ts in NATIVE_SYNTAXES or ts in LOSSLESS_SYNTAXES:
        return False
    if ts == UID("1.2.840.10008.1.2.4.91") or ts == UID("1.2.840.10008.1.2.4.203"):  # lossless or lossy J2K
        return str(ds.get("LossyImageCompression", "01")).strip() != "00"
    return True


def _native_layout(ds: Dataset) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """dtype, shape of one frame in stored order, bytes per frame, frame count of native PixelData.

    Frames are contiguous in native data (PS3.5 8.1.1), whatever the planar configuration; native
    YBR_FULL_422 stores two bytes-per-sample units per pixel (pairs share chroma). BitsAllocated 1
    (packed bits, a frame may start mid-byte) has its own path (``_mask_one_bit``).
    """
    bits = int(ds.BitsAllocated)
    if bits not in (8, 16, 32, 64):
        raise PixelError("BitsAllocated not supported for masking")
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
    order = ">" if ts == ExplicitVRBigEndian else "<"
    dtype = np.dtype(f"{order}{'i' if signed else 'u'}{bits // 8}")
    frames, rows, cols = frame_count(ds), int(ds.Rows), int(ds.Columns)
    spp = int(ds.get("SamplesPerPixel", 1))
    pi = str(ds.PhotometricInterpretation).strip()
    if pi == "YBR_FULL_422":
        per_frame = rows * cols * 2 * (bits // 8)
        shape: tuple[int, ...] = (rows, cols // 2, 4)
    else:
        per_frame = rows * cols * spp * (bits // 8)
        if spp == 1:
            shape = (rows, cols)
        elif int(ds.get("PlanarConfiguration", 0)) == 1:
            shape = (spp, rows, cols)
        else:
            shape = (rows, cols, spp)
    return dtype, shape, per_frame, frames


def _native_view(ds: Dataset, buf: bytes | bytearray | memoryview) -> np.ndarray:
    """A view (no copy; writable when ``buf`` is) of native PixelData shaped (frames, *frame shape)."""
    dtype, shape, per_frame, frames = _native_layout(ds)
    n = per_frame * frames
    if len(buf) < n:
        raise PixelError("PixelData shorter than the image geometry")
    return np.frombuffer(memoryview(buf)[:n], dtype=dtype).reshape((frames, *shape))


def _fill_value(ds: Dataset, view: np.ndarray) -> list[int]:
    """Stored value(s) that display as black; MONOCHROME1 uses the maximum (black after inversion)."""
    pi = str(ds.PhotometricInterpretation).strip()
    half = 1 << (int(ds.get("BitsStored", ds.BitsAllocated)) - 1)
    if pi == "MONOCHROME1":
        return [int(view.max())]
    if pi == "MONOCHROME2":
        return [int(view.min())]
    if pi == "PALETTE COLOR":
        desc = ds.RedPaletteColorLookupTableDescriptor
        entries = int(desc[0]) or 65536
        first = int(desc[1])
        idx = np.arange(first, first + entries, dtype=np.int64)
        idx = idx[(idx >= np.iinfo(view.dtype).min) & (idx <= np.iinfo(view.dtype).max)].astype(view.dtype)
        rgb = apply_color_lut(idx, ds).astype(np.float64)
        lum = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        return [int(idx[int(np.argmin(lum))])]
    if pi.startswith("YBR"):
        return [0, half, half]  # Y = 0, neutral chroma
    return [0] * int(ds.get("SamplesPerPixel", 3))


def _rects(ds: Dataset, boxes: Iterable[Box]) -> list[tuple[int, int, int, int, int]]:
    """Boxes as (frame, x0, y0, x1, y1), clipped: the boxes are the masked rectangles (already padded)."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    out = []
    for b in boxes:
        x0, y0 = max(0, b.x), max(0, b.y)
        x1, y1 = min(cols, b.x + b.w), min(rows, b.y + b.h)
        if x1 > x0 and y1 > y0:
            out.append((b.frame, x0, y0, x1, y1))
    return out


def _mask_frame(frame: np.ndarray, rects: list[tuple[int, int, int, int]], fill: list[int], pi: str,
                planar: bool) -> None:
    """Fill ``rects`` (x0, y0, x1, y1) in one frame array in stored layout, in place."""
    for x0, y0, x1, y1 in rects:
        if pi == "YBR_FULL_422":  # pairs of pixels share chroma: widen to whole pairs
            frame[y0:y1, x0 // 2:(x1 + 1) // 2] = [fill[0], fill[0], fill[1], fill[2]]
        elif frame.ndim == 2:
            frame[y0:y1, x0:x1] = fill[0]
        elif planar:
            for s in range(frame.shape[0]):
                frame[s, y0:y1, x0:x1] = fill[s]
        else:
            frame[y0:y1, x0:x1] = fill


def _mask_native(ds: Dataset, boxes: Iterable[Box]) -> None:
    """Mask native PixelData frame by frame: only frames with boxes are copied (one frame at a time) and
    the new value is joined from views of the original, so peak memory is the PixelData twice (old and
    new value) plus one frame, never a decoded copy; every byte outside the boxes is unchanged.
    ``bytes`` from pydicom's reader are immutable (and pydicom does not take a bytearray as an OB/OW
    value), so that one full copy is the floor for a file with boxes."""
    src = ds.PixelData
    dtype, shape, per_frame, frames = _native_layout(ds)
    fill = _fill_value(ds, _native_view(ds, src))  # view over the original bytes: no copy
    pi = str(ds.PhotometricInterpretation).strip()
    planar = int(ds.get("PlanarConfiguration", 0)) == 1 and int(ds.get("SamplesPerPixel", 1)) > 1
    by_frame: dict[int, list[tuple[int, int, int, int]]] = {}
    for f, x0, y0, x1, y1 in _rects(ds, boxes):
        if not 0 <= f < frames:
            raise PixelError("box frame index outside the image")
        by_frame.setdefault(f, []).append((x0, y0, x1, y1))
    if not by_frame:
        return
    mv = memoryview(src)
    parts: list[bytes | memoryview] = []
    pos = 0
    for f in sorted(by_frame):
        off = f * per_frame
        frame = np.frombuffer(mv[off:off + per_frame], dtype=dtype).reshape(shape).copy()
        _mask_frame(frame, by_frame[f], fill, pi, planar)
        parts += [mv[pos:off], frame.tobytes()]
        pos = off + per_frame
    parts.append(mv[pos:])
    new = b"".join(parts)
    del parts, mv
    ds.PixelData = new


def _mask_one_bit(ds: Dataset, boxes: Iterable[Box]) -> None:
    """Mask native 1-bit PixelData (bits packed least significant first, frames back to back and possibly
    starting mid-byte, PS3.5 8.1.1): the boxes take the value that displays as black."""
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise PixelError("1-bit colour pixel data is not masked")
    rows, cols, frames = int(ds.Rows), int(ds.Columns), frame_count(ds)
    raw = ds.PixelData
    n = rows * cols * frames
    if len(raw) * 8 < n:
        raise PixelError("PixelData shorter than the image geometry")
    every = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")  # padding bits kept as they are
    bits = every[:n].reshape(frames, rows, cols)  # a view: masking it masks ``every``
    fill = 1 if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1" else 0
    for f, x0, y0, x1, y1 in _rects(ds, boxes):
        if not 0 <= f < frames:
            raise PixelError("box frame index outside the image")
        bits[f, y0:y1, x0:x1] = fill
    ds.PixelData = np.packbits(every, bitorder="little").tobytes()


def _mask_float(ds: Dataset, boxes: Iterable[Box]) -> None:
    """Mask Float / Double Float Pixel Data (parametric maps: native little endian, one sample): the boxes
    take the frame's lowest finite value, which displays as black like a MONOCHROME2 mask."""
    if UID(str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))) == ExplicitVRBigEndian:
        raise PixelError("big endian float pixel data is not masked")
    keyword = "FloatPixelData" if "FloatPixelData" in ds else "DoubleFloatPixelData"
    dtype = np.dtype("<f4" if keyword == "FloatPixelData" else "<f8")
    rows, cols, frames = int(ds.Rows), int(ds.Columns), max(1, int(ds.get("NumberOfFrames", 1) or 1))
    raw = getattr(ds, keyword)
    if len(raw) < rows * cols * frames * dtype.itemsize:
        raise PixelError("float pixel data shorter than the image geometry")
    arr = np.frombuffer(raw, dtype=dtype, count=rows * cols * frames).reshape(frames, rows, cols).copy()
    for f, x0, y0, x1, y1 in _rects(ds, boxes):
        if not 0 <= f < frames:
            raise PixelError("box frame index outside the image")
        finite = arr[f][np.isfinite(arr[f])]
        arr[f, y0:y1, x0:x1] = finite.min() if finite.size else 0.0
    setattr(ds, keyword, arr.tobytes() + bytes(raw)[arr.nbytes:])


def apply_boxes_to(ds: Dataset, boxes: list[Box], *, allow_lossy_reencode: bool = False) -> None:
    """Mask ``boxes`` in ``ds`` (see module docstring for the re-encoding policy)."""
    if not boxes:
        return
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            _mask_float(ds, boxes)
            return
        raise PixelError("no PixelData to mask")
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
    if int(ds.get("BitsAllocated", 8)) == 1 and not ts.is_encapsulated:
        _mask_one_bit(ds, boxes)
        return
    if ts in NATIVE_SYNTAXES or not ts.is_encapsulated:
        _mask_native(ds, boxes)
        return
    lossy = is_lossy(ds)
    if lossy and not allow_lossy_reencode:
        raise PixelError("lossy input needs allow_lossy_reencode")
    stored_pi = str(ds.get("PhotometricInterpretation", "")).strip()
    try:
        decompress(ds, as_rgb=True, generate_instance_uid=False)
    except Exception as exc:
        raise PixelError(f"pixel data could not be decoded for masking ({type(exc).__name__})") from exc
    if "PlanarConfiguration" in ds and int(ds.get("SamplesPerPixel", 1)) == 1:
        del ds.PlanarConfiguration
    _mask_native(ds, boxes)
    if lossy:
        ds.LossyImageCompression = "01"
        return
    if ts in REENCODABLE:
        if stored_pi == "YBR_RCT" and ts == JPEG2000Lossless:
            # decoded to RGB; re-encoded with the reversible colour transform again, as stored (exact; half the
            # size of plain RGB, and "RGB" in a JPEG 2000 stream is an error to dciodvfy)
            ds.PhotometricInterpretation = "YBR_RCT"
        try:
            ds.compress(ts, generate_instance_uid=False)
        except Exception as exc:  # keep the masked native pixels rather than fail: still lossless
            del exc
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def clear_unused_bits(ds: Dataset) -> bool:
    """Clear the overlay planes stored in the bits above HighBit of native monochrome pixels (the retired
    "overlay in pixel data" convention: an overlay group 60xx with an OverlayBitPosition above HighBit and
    no OverlayData of its own); returns whether it changed the pixels.

    Why: such a plane can hold burned-in text that no view of the image shows (readers honour BitsStored,
    so the text search cannot see it either), while a tool that ignores BitsStored displays it. Only the
    bit positions an overlay declares are cleared: other bits above HighBit (values that overflow
    BitsStored, signed data stored without sign extension) are the image's own and stay byte-identical."""
    if "PixelData" not in ds or "BitsStored" not in ds or "BitsAllocated" not in ds:
        return False
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))
    if ts.is_encapsulated or int(ds.get("SamplesPerPixel", 1)) != 1:
        return False
    bits, stored = int(ds.BitsAllocated), int(ds.BitsStored)
    high = int(ds.get("HighBit", stored - 1))
    if bits not in (16, 32):
        return False
    planes = 0
    for group in range(0x6000, 0x6020, 2):
        pos = ds.get((group, 0x0102))
        if pos is None or (group, 0x3000) in ds:
            continue  # no overlay here, or one with its own OverlayData (removed with its group)
        try:
            bit = int(pos.value)
        except (TypeError, ValueError):
            continue
        if high < bit < bits:
            planes |= 1 << bit
    if not planes:
        return False
    raw = ds.PixelData
    try:
        view = _native_view(ds, raw)
    except PixelError:
        return False
    unsigned = view.view(np.dtype(view.dtype.str.replace("i", "u")))  # same byte order, bits as they are
    mask = np.array(planes, dtype=unsigned.dtype)
    if not (unsigned & mask).any():
        return False
    buf = bytearray(raw)
    out = _native_view(ds, buf).view(unsigned.dtype)
    out &= ~mask
    ds.PixelData = bytes(buf)
    return True
