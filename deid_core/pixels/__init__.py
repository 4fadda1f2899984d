"""Burned-in text: find it (pre-screen + in-process OCR on candidate crops) and mask it.

The pipeline reads a file once, captures its identifiers from the original header, then calls
``find_text_boxes`` and ``apply_boxes`` before scrubbing tags. See docs/pixels.md for the layout,
re-encoding and pre-screen policies.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydicom.dataset import Dataset

from deid_core.errors import ConfigError, PixelError
from deid_core.pixels.decode import frame_count, has_pixels, iter_gray_frames
from deid_core.pixels.mask import apply_boxes_to
from deid_core.pixels.match import build_lines, is_text, phi_words
from deid_core.pixels.ocr import OcrEngine, OcrWord, get_engine
from deid_core.pixels.prescreen import Rect, merge_regions, polar_regions
from deid_core.terms import PhiTerms, TermMatcher

__all__ = ["Box", "PixelResult", "OcrEngine", "OcrWord", "get_engine", "has_pixels", "find_text_boxes",
           "apply_boxes", "pixel_policy_for", "PHI", "ALL_TEXT"]

PHI = "phi"
ALL_TEXT = "all-text"
#: Modalities whose burned-in text is mostly annotation worth hiding wholesale.
ALL_TEXT_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM", "SM", "IVUS"})
#: Tesseract reads glyphs best around this height; smaller text is upscaled before OCR.
TARGET_GLYPH_H = 24
BORDER = 8


@dataclass(frozen=True)
class Box:
    """A region to mask, in stored-image coordinates (x=column, y=row, frame 0-based).

    ``kind`` says what matched (name/id/date/time/phone/institution/address/pattern/text), never the text.
    """

    frame: int
    x: int
    y: int
    w: int
    h: int
    kind: str
    confidence: float

    def to_dict(self) -> dict[str, int | float | str]:
        """Plain form for provenance (contains no text)."""
        return {"frame": self.frame, "x": self.x, "y": self.y, "w": self.w, "h": self.h, "kind": self.kind,
                "confidence": round(self.confidence, 1)}


@dataclass
class PixelResult:
    """What the text search found and how much of the image it examined."""

    boxes: list[Box] = field(default_factory=list)
    frames: int = 0
    frames_checked: int = 0
    frames_ocr: int = 0
    prescreen_skipped: bool = False
    engine: str = "tesseract"

    @property
    def complete(self) -> bool:
        """Every frame examined; when False the caller must quarantine the file."""
        return self.frames > 0 and self.frames_checked == self.frames


def pixel_policy_for(modality: str | None, override: str | None = None) -> str:
    """"phi" or "all-text" for a modality; override "phi"/"all-text"/"auto"/None or "US=all-text,CT=phi"."""
    mod = (modality or "").strip().upper()
    if override and override.strip().lower() not in ("", "auto"):
        ov = override.strip()
        if "=" in ov:
            mapping: dict[str, str] = {}
            for part in ov.split(","):
                if not part.strip():
                    continue
                if "=" not in part:
                    raise ConfigError("pixel policy mapping entries must look like MOD=policy")
                k, v = (s.strip() for s in part.split("=", 1))
                if v.lower() not in (PHI, ALL_TEXT, "auto"):
                    raise ConfigError(f"unknown pixel policy {v!r}")
                mapping[k.upper()] = v.lower()
            choice = mapping.get(mod, mapping.get("*", "auto"))
            if choice != "auto":
                return choice
        elif ov.lower() in (PHI, ALL_TEXT):
            return ov.lower()
        else:
            raise ConfigError(f"unknown pixel policy {ov!r}")
    return ALL_TEXT if mod in ALL_TEXT_MODALITIES else PHI


def _binarize(crop: np.ndarray, bright: bool) -> np.ndarray:
    """Dark text on white from the strokes of one polarity: busy or coloured backgrounds vanish."""
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (15, 15))
    hat = cv2.morphologyEx(crop, cv2.MORPH_TOPHAT if bright else cv2.MORPH_BLACKHAT, k)
    level = max(20, int(hat.max()) // 2)
    return np.where(hat >= level, 0, 255).astype(np.uint8)


def _ocr_crop(gray: np.ndarray, region: Rect, line_h: int, engine: OcrEngine,
              cache: dict[bytes, list[OcrWord]], bright: bool | None = None) -> list[OcrWord]:
    """OCR one crop, normalised to dark text on light and upscaled for small glyphs; frame coordinates."""
    crop = gray[region.y:region.y + region.h, region.x:region.x + region.w]
    tag = repr((crop.shape, line_h, bright)).encode()
    key = hashlib.blake2b(crop.tobytes() + tag, digest_size=16).digest()
    if key in cache:
        words = cache[key]
    else:
        if bright is not None:
            img = _binarize(crop, bright)
        elif float(np.median(crop)) < 128:  # light text on dark background → invert
            img = 255 - crop
        else:
            img = crop
        scale = max(1, min(3, math.ceil(TARGET_GLYPH_H / max(line_h, 1))))
        if scale > 1:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        img = cv2.copyMakeBorder(img, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_REPLICATE)
        words = []
        for w in engine.words(np.ascontiguousarray(img)):
            x0 = math.floor((w.x - BORDER) / scale)
            y0 = math.floor((w.y - BORDER) / scale)
            x1 = math.ceil((w.x + w.w - BORDER) / scale)
            y1 = math.ceil((w.y + w.h - BORDER) / scale)
            x0, y0 = max(0, x0), max(0, y0)
            x1, y1 = min(region.w, x1), min(region.h, y1)
            if x1 > x0 and y1 > y0:
                words.append(OcrWord(w.text, x0, y0, x1 - x0, y1 - y0, w.conf))
        cache[key] = words
    return [OcrWord(w.text, w.x + region.x, w.y + region.y, w.w, w.h, w.conf) for w in words]


def _frame_boxes(gray: np.ndarray, frame: int, matcher: TermMatcher, policy: str, engine: OcrEngine,
                 cache: dict[bytes, list[OcrWord]]) -> tuple[list[Box], bool]:
    """Boxes of one frame, and whether OCR ran at all."""
    polar = polar_regions(gray)
    if not polar:
        return [], False
    lines = [r for r, _b in polar]
    rows, cols = gray.shape
    words: list[OcrWord] = []
    for bright in (True, False):  # each polarity read from its own stroke image
        group = [r for r, b in polar if b == bright]
        for region in merge_regions(group, cols, rows):
            inside = [r.h for r in group if r.x >= region.x and r.y >= region.y and
                      r.x + r.w <= region.x + region.w and r.y + r.h <= region.y + region.h]
            words += _ocr_crop(gray, region, min(inside) if inside else region.h, engine, cache, bright)
    boxes: list[Box] = []
    if policy == ALL_TEXT:
        text_words = [w for w in words if is_text(w)]
        for w in text_words:
            boxes.append(Box(frame, w.x, w.y, w.w, w.h, "text", w.conf))
        for r in lines:  # the whole candidate line where OCR read characters
            hits = [w for w in text_words if w.x < r.x + r.w and r.x < w.x + w.w and w.y < r.y + r.h and
                    r.y < w.y + w.h]
            if hits:
                boxes.append(Box(frame, r.x, r.y, r.w, r.h, "text", max(w.conf for w in hits)))
    else:
        for line in build_lines(words):
            for i, kind in sorted(phi_words(line, matcher).items()):
                w = line.words[i]
                boxes.append(Box(frame, w.x, w.y, w.w, w.h, kind, w.conf))
    return boxes, True


def find_text_boxes(ds: Dataset, terms: PhiTerms, policy: str,
                    engine: OcrEngine | None = None) -> PixelResult:
    """Find burned-in text to mask on every frame. Raises PixelError when pixels cannot be decoded."""
    if policy not in (PHI, ALL_TEXT):
        raise ConfigError(f"unknown pixel policy {policy!r}")
    if not has_pixels(ds):
        return PixelResult(frames=0, engine=(engine.name if engine else "tesseract"))
    if "PixelData" not in ds:
        raise PixelError("float pixel data is not supported for text search")
    eng = engine or get_engine("tesseract")
    matcher = TermMatcher(terms)
    result = PixelResult(frames=frame_count(ds), engine=eng.name)
    seen: dict[bytes, list[Box]] = {}
    cache: dict[bytes, list[OcrWord]] = {}
    any_ocr = False
    for f, gray in enumerate(iter_gray_frames(ds)):
        key = hashlib.blake2b(gray.tobytes(), digest_size=16).digest()
        if key in seen:  # identical frame already searched
            result.boxes += [Box(f, b.x, b.y, b.w, b.h, b.kind, b.confidence) for b in seen[key]]
        else:
            before = len(cache)
            boxes, ran = _frame_boxes(gray, f, matcher, policy, eng, cache)
            if ran and len(cache) > before:
                result.frames_ocr += 1
            any_ocr = any_ocr or ran
            seen[key] = boxes
            result.boxes += boxes
        result.frames_checked += 1
    result.prescreen_skipped = not any_ocr
    result.boxes = sorted(set(result.boxes), key=lambda b: (b.frame, b.y, b.x, b.h, b.w, b.kind))
    return result


def apply_boxes(ds: Dataset, result: PixelResult, *, allow_lossy_reencode: bool = False) -> None:
    """Mask every box of ``result`` in ``ds`` (stored layout kept; see docs/pixels.md)."""
    apply_boxes_to(ds, result.boxes, allow_lossy_reencode=allow_lossy_reencode)
