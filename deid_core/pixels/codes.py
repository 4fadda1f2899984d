"""Machine-readable codes burned into pixels (QR codes, 1D barcodes): found by OpenCV's detectors and masked
whole, whatever they encode.

Why: a slide's label image, a scanned requisition or a photographed wristband carries the accession number
or the patient's ID as a code that no OCR reads, and a code is an identifier far more often than not (an
audit's QR code holding "MRN, name, birth date" on a capture was written decodable). The detectors cost
3-30 ms a frame, so only the modalities of captures, photographs and slides are searched (``CODE_MODALITIES``);
CT, MR and US frames, which do not carry codes, pay nothing.
"""

from __future__ import annotations

import cv2
import numpy as np

from deid_core.pixels.prescreen import Rect

#: Modalities whose frames are searched for codes: secondary captures and scanned documents, photographs
#: (external, endoscopy, general microscopy), slide microscopy (label and overview images).
CODE_MODALITIES = frozenset({"SC", "OT", "DOC", "XC", "ES", "GM", "SM"})
#: Pixels added around a detected code (its quiet zone and the detector's corner error).
CODE_PAD = 6

_DETECTORS: dict[str, object] = {}


def _detector(kind: str) -> object:
    """One detector of each kind per process (created on first use: most runs never need one)."""
    if kind not in _DETECTORS:
        # the ArUco-based QR detector finds codes of 2 px per module, which the classic one missed
        _DETECTORS[kind] = cv2.QRCodeDetectorAruco() if kind == "qr" else cv2.barcode.BarcodeDetector()
    return _DETECTORS[kind]


def _rects(points: object, cols: int, rows: int) -> list[Rect]:
    out = []
    for quad in np.asarray(points, dtype=np.float64).reshape(-1, 4, 2):
        if not np.isfinite(quad).all():
            continue
        x0 = max(0, int(np.floor(quad[:, 0].min())) - CODE_PAD)
        y0 = max(0, int(np.floor(quad[:, 1].min())) - CODE_PAD)
        x1 = min(cols, int(np.ceil(quad[:, 0].max())) + CODE_PAD + 1)
        y1 = min(rows, int(np.ceil(quad[:, 1].max())) + CODE_PAD + 1)
        if x1 > x0 and y1 > y0:
            out.append(Rect(x0, y0, x1 - x0, y1 - y0))
    return out


def code_rects(gray: np.ndarray) -> list[Rect]:
    """Rectangles of the QR codes and 1D barcodes in an 8-bit gray frame (padded, clipped, sorted)."""
    if gray.ndim != 2 or min(gray.shape) < 21:  # smaller than the smallest QR code (21 modules)
        return []
    rows, cols = gray.shape
    img = np.ascontiguousarray(gray)
    found: list[Rect] = []
    ok, points = _detector("qr").detectMulti(img)  # type: ignore[attr-defined]
    if ok and points is not None:
        found += _rects(points, cols, rows)
    ok, points = _detector("barcode").detect(img)  # type: ignore[attr-defined]
    if ok and points is not None:
        found += [_whole_bars(img, r) for r in _rects(points, cols, rows) if _bar_runs(img, r) >= MIN_BAR_RUNS]
    return sorted(set(found), key=lambda r: (r.y, r.x, r.h, r.w))


#: A 1D barcode has at least this many bars and spaces across it (EAN-8: 43, Code 39 of 3 characters: 49); the
#: detector also took a display's grey-scale bars (5 runs) on pydicom's examples_jpeg2k.dcm for one.
MIN_BAR_RUNS = 20


def _bar_runs(gray: np.ndarray, rect: Rect) -> int:
    """Bars and spaces along the middle row or the middle column of a detected barcode's rectangle (the code
    may run either way), thresholded at the rectangle's mean; 0 for a line whose runs keep one width from one
    to the next (the line pairs of a display test pattern, SMPTE's on pydicom's vlut_04, which the detector
    takes for codes: a barcode's bars and spaces change width every other run, as it encodes in widths)."""
    crop = gray[rect.y:rect.y + rect.h, rect.x:rect.x + rect.w]
    if crop.size == 0:
        return 0
    dark = crop < float(np.mean(crop))
    best = 0
    for line in (dark[crop.shape[0] // 2, :], dark[:, crop.shape[1] // 2]):
        edges = np.flatnonzero(line[1:] != line[:-1]) + 1
        widths = np.diff(edges).astype(np.float64)  # the inner runs (the first and last touch the border)
        if widths.size < 3:
            continue
        a, b = widths[:-1], widths[1:]
        same = float(np.mean(np.abs(a - b) <= 0.25 * np.maximum(a, b)))
        if same <= BAR_SAME_WIDTH_MAX:
            best = max(best, int(edges.size) + 1)
    return best


#: The most a barcode's consecutive bars and spaces keep one width (EAN-13 measured 0.48; line pairs 0.95-1.0).
BAR_SAME_WIDTH_MAX = 0.75


#: Rows above and below a detected 1D barcode that repeat its middle row's bar pattern this closely belong
#: to it (``_whole_bars``).
BAR_ROW_MATCH = 0.9


def _whole_bars(gray: np.ndarray, rect: Rect) -> Rect:
    """A detected 1D barcode's rectangle grown up and down over the rest of its bars: the detector's box can
    be a band of them, and a 1D code reads from any one row across it (a box of 36 of 60 px of bar height
    left the code whole above and below it)."""
    crop = gray[:, rect.x:rect.x + rect.w]
    mid = rect.y + rect.h // 2
    threshold = float(np.mean(crop[rect.y:rect.y + rect.h]))
    bars = crop < threshold
    ref = bars[mid]

    def same(y: int) -> bool:
        return float(np.mean(bars[y] == ref)) >= BAR_ROW_MATCH

    y0, y1 = rect.y, rect.y + rect.h
    while y0 > 0 and same(y0 - 1):
        y0 -= 1
    while y1 < gray.shape[0] and same(y1):
        y1 += 1
    y0, y1 = max(0, y0 - CODE_PAD), min(gray.shape[0], y1 + CODE_PAD)
    return Rect(rect.x, y0, rect.w, y1 - y0)
