"""Burned-in text: find it (pre-screen + in-process OCR on candidate crops) and mask it.

The pipeline reads a file once, captures its identifiers from the original header, then calls
``find_text_boxes`` and ``apply_boxes`` before scrubbing tags. See docs/pixels.md for the layout,
re-encoding and pre-screen policies.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from deid_core.errors import ConfigError
from deid_core.pixels.codes import CODE_MODALITIES, code_rects
from deid_core.pixels.decode import frame_count, has_chroma_view, has_pixels, iter_gray_views
from deid_core.pixels.mask import PAD, apply_boxes_to
from deid_core.pixels.match import build_lines, is_text, phi_words
from deid_core.pixels.ocr import OcrEngine, OcrWord, get_engine
from deid_core.pixels.prescreen import (
    MAX_CHAR_H,
    MIN_CHAR_H,
    STROKE_CONTRAST,
    Rect,
    _covers,
    scored_regions,
    vertical_regions,
)
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


_POLICY_FORMS = "phi, all-text, or per modality: US=all-text,CT=phi"


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
                    raise ConfigError(f"unknown pixel policy {v!r} ({_POLICY_FORMS})")
                mapping[k.upper()] = v.lower()
            choice = mapping.get(mod, mapping.get("*", "auto"))
            if choice != "auto":
                return choice
        elif ov.lower() in (PHI, ALL_TEXT):
            return ov.lower()
        else:
            raise ConfigError(f"unknown pixel policy {ov!r} ({_POLICY_FORMS})")
    return ALL_TEXT if mod in ALL_TEXT_MODALITIES else PHI


class ReadingMemo(OrderedDict[bytes, list[OcrWord]]):
    """Readings of line crops by their exact pixels, shared by the files a process handles.

    Images of one study usually carry the same header lines on a flat background (name, ID, date):
    a crop whose bytes (and reading parameters) were read before is not read again. OCR is a pure
    function of the crop (Tesseract runs without adaptive state, see ocr.py), so this changes no result.
    Bounded (least recently used goes first); lives in the worker that handles the files anyway.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.misses = 0

    def __getitem__(self, key: bytes) -> list[OcrWord]:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key: bytes, value: list[OcrWord]) -> None:
        if key not in self:
            self.misses += 1
        super().__setitem__(key, value)
        while len(self) > self.size:
            self.popitem(last=False)


#: Crop readings kept per engine and process (a reading is a few words; 4096 is well under 10 MB).
MEMO_SIZE = 4096
_MEMOS: dict[int, ReadingMemo] = {}


def _memo_for(engine: OcrEngine) -> ReadingMemo:
    """The process-wide reading memo of one engine object (an engine's readings are its own)."""
    memo = _MEMOS.get(id(engine))
    if memo is None or getattr(memo, "engine", None) is not engine:
        memo = ReadingMemo(MEMO_SIZE)
        memo.engine = engine  # type: ignore[attr-defined]
        _MEMOS[id(engine)] = memo
    return memo


_SCREENS: OrderedDict[bytes, list[tuple[Rect, bool, bool]]] = OrderedDict()
#: Frames whose pre-screen result is kept (verification screens the same frame again when the pixel
#: stage left it unchanged).
SCREEN_MEMO_SIZE = 48


def screen_frame(gray: np.ndarray) -> list[tuple[Rect, bool, bool]]:
    """``scored_regions`` of a frame, remembered by its exact pixels for the last few frames."""
    key = hashlib.blake2b(gray.tobytes() + repr(gray.shape).encode(), digest_size=16).digest()
    hit = _SCREENS.get(key)
    if hit is not None:
        _SCREENS.move_to_end(key)
        return list(hit)
    scored = scored_regions(gray)
    _SCREENS[key] = scored
    while len(_SCREENS) > SCREEN_MEMO_SIZE:
        _SCREENS.popitem(last=False)
    return list(scored)


#: Context kept around a second view's ink when it is cropped (a 9x9 stroke kernel, a line's ring and pad).
INK_MARGIN = 24


def crop_to_ink(view: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The part of a second view that holds its strokes (pixels >= the stroke contrast, plus INK_MARGIN),
    with its offset in the frame; the whole view when that part is over half of it. A chroma view is
    black but for its few coloured pixels: screening only around them costs a fraction of the frame."""
    ys, xs = np.nonzero(view[::2, ::2] >= STROKE_CONTRAST)
    rows, cols = view.shape
    if ys.size == 0:
        return view[:0, :0], 0, 0
    y0, y1 = _span(2 * int(ys.min()) - INK_MARGIN, 2 * int(ys.max()) + 2 + INK_MARGIN, rows)
    x0, x1 = _span(2 * int(xs.min()) - INK_MARGIN, 2 * int(xs.max()) + 2 + INK_MARGIN, cols)
    if (y1 - y0) * (x1 - x0) > rows * cols // 2:
        return view, 0, 0
    return np.ascontiguousarray(view[y0:y1, x0:x1]), x0, y0


def _span(lo: int, hi: int, size: int) -> tuple[int, int]:
    """[lo, hi) clipped to [0, size) and grown to at least 2 * MAX_CHAR_H + 8 where the frame allows: in a
    crop no taller than a glyph, its flat background would itself pass for a glyph of the level maps."""
    need = 2 * MAX_CHAR_H + 8
    if hi - lo < need:
        lo, hi = lo - (need - (hi - lo)) // 2, lo - (need - (hi - lo)) // 2 + need
    lo, hi = max(0, lo), min(size, hi)
    if hi - lo < need:  # against an edge: grow the other way
        lo, hi = (0, min(size, need)) if lo == 0 else (max(0, size - need), size)
    return lo, hi


#: Frames at least this large on their short side are also screened at half resolution for large text.
LARGE_MIN_SIDE = 256
#: Half-resolution candidates are kept from this height (full-resolution pixels) up: glyphs this tall have
#: strokes near the stroke maps' 9-px kernel and heights near MAX_CHAR_H, where the full-size screen fails.
LARGE_LINE_H = 40


def _large_scored(gray: np.ndarray) -> list[tuple[Rect, bool, bool]]:
    """Candidate lines of large text: the screen of the frame at half resolution, scaled back, the tall
    ones only. A 90-px "SMITH" on a large DX has strokes wider than the stroke maps' kernel and glyphs taller
    than MAX_CHAR_H; at half size it is ordinary text."""
    rows, cols = gray.shape
    if min(rows, cols) < LARGE_MIN_SIDE:
        return []
    half = cv2.resize(gray, (cols // 2, rows // 2), interpolation=cv2.INTER_AREA)
    out = []
    for r, b, strong in screen_frame(half):
        if 2 * r.h < LARGE_LINE_H:
            continue
        x, y = 2 * r.x, 2 * r.y
        out.append((Rect(x, y, min(cols - x, 2 * r.w + 1), min(rows - y, 2 * r.h + 1)), b, strong))
    return out


def frame_scored(gray: np.ndarray) -> list[tuple[Rect, bool, bool]]:
    """``screen_frame`` of a frame plus the large-text candidates (``_large_scored``) it does not cover."""
    base = screen_frame(gray)
    large = [t for t in _large_scored(gray) if not any(_covers(o, t[0]) for o, _b, _s in base)]
    return base + large if large else base


def frame_lines(gray: np.ndarray, seen: list[Rect] | None = None) -> list[tuple[Rect, bool]]:
    """The joined candidate lines of a view, without those a line of ``seen`` (the lines of the frame's
    first view, when this is its second view of a stretched window) already covers: the second view is
    there for the lines the first lost, and the lines both show were read once already."""
    scored = frame_scored(gray)
    base = screen_frame(gray)
    # large-text lines are not joined with ordinary ones: they come from another scale
    lines = join_rows([(r, b) for r, b, _s in base]) + [(r, b) for r, b, _s in scored[len(base):]]
    if not seen:
        return lines
    return [(r, b) for r, b in lines if not any(_covers(o, r) for o in seen)]


def read_frame_lines(gray: np.ndarray, engine: OcrEngine, seen: list[Rect] | None = None,
                     only_bright: bool = False) -> tuple[list[OcrWord], bool]:
    """Every candidate line of a frame read as the pixel stage reads it (no early stop), and whether any
    reading needed OCR. Readings come from the process memo where the pixel stage already read the same
    crop: verification of a frame the pixel stage left unchanged costs no OCR, yet checks its readings.
    ``seen``, ``only_bright``: as for ``frame_lines`` and ``_frame_boxes``."""
    memo = _memo_for(engine)
    before = memo.misses
    words: list[OcrWord] = []
    lines = frame_lines(gray, seen)
    if only_bright:  # as ``_frame_boxes`` reads them
        bright_lines, grey = _chroma_lines(gray, lines)
        lines = bright_lines + grey
    for line, bright in lines:
        words += _read_line(gray, line, bright, engine, memo)
    if seen is None:
        for i, (vline, bright, _strong) in enumerate(frame_vertical(gray, [r for r, _b in lines])):
            # each vertical line's words on a band of their own, so that they form a line of their own
            words += [OcrWord(w.text, w.x, w.y - 100_000 * (i + 1), w.w, w.h, w.conf)
                      for w in _read_vertical(gray, vline, bright, engine, memo)]
    return words, memo.misses > before


def _chroma_lines(chroma: np.ndarray, lines: list[tuple[Rect, bool]]
                  ) -> tuple[list[tuple[Rect, bool]], list[tuple[Rect, bool]]]:
    """A chroma view's lines to read: the bright ones of ``lines`` (coloured text), and every dark line on a
    flat background, also where the first view has a line there (grey, white or black text on a flat coloured
    label, within 30 grey levels of it in luminance: the first view's line there is something else, a band of
    speckle, and read nothing). Dark lines on textured colour are the gaps of a Doppler map: not read."""
    grey: list[tuple[Rect, bool]] = [(r, b) for r, b in frame_lines(chroma)
                                     if not b and not _busy_background(chroma, r)]
    return [(r, b) for r, b in lines if b], grey


_VERTICAL: OrderedDict[bytes, list[tuple[Rect, bool, bool]]] = OrderedDict()


def frame_vertical(gray: np.ndarray, lines: list[Rect]) -> list[tuple[Rect, bool, bool]]:
    """``vertical_regions`` of a frame (remembered by its pixels for the last few frames), without those
    that horizontal candidate lines run across: a column of first letters down a block of text is no label."""
    key = hashlib.blake2b(gray.tobytes() + repr(gray.shape).encode(), digest_size=16).digest()
    found = _VERTICAL.get(key)
    if found is None:
        found = vertical_regions(gray)
        _VERTICAL[key] = found
        while len(_VERTICAL) > SCREEN_MEMO_SIZE:
            _VERTICAL.popitem(last=False)
    else:
        _VERTICAL.move_to_end(key)
    out = []
    blocks = _vertical_blocks([r for r, _b, _s in found])
    for (r, b, s), (bx0, bx1) in zip(found, blocks, strict=True):
        # horizontal lines running across it (not fragments of the vertical text itself); a "line" that stays
        # within the block of vertical candidates it belongs to is their rotated glyphs lined up (a side label
        # of several columns: an audit found every column of a 4-line vertical label dropped, the label unmasked)
        crossed = [_overlap(r, o) for o in lines if o.w > 1.5 * r.w and (o.x < bx0 - r.w or o.x + o.w > bx1 + r.w)]
        if sum(crossed) < 0.2 * r.w * r.h and sum(1 for a in crossed if a) < 2:
            out.append((r, b, s))
    return out


def _vertical_blocks(rects: list[Rect]) -> list[tuple[int, int]]:
    """For each vertical candidate, the horizontal extent (x0, x1) of the block of candidates it belongs to:
    candidates side by side (a gap up to twice the wider one: lines of text are spaced by a glyph height or
    so) that overlap vertically, chained."""
    parent = list(range(len(rects)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(rects):
        for j in range(i + 1, len(rects)):
            b = rects[j]
            if _overlap(a.pad(2 * max(a.w, b.w), 1 << 30, 1 << 30), b):
                parent[find(i)] = find(j)
    ext: dict[int, tuple[int, int]] = {}
    for i, r in enumerate(rects):
        x0, x1 = ext.get(find(i), (r.x, r.x + r.w))
        ext[find(i)] = (min(x0, r.x), max(x1, r.x + r.w))
    return [ext[find(i)] for i in range(len(rects))]


def _overlap(a: Rect, b: Rect) -> int:
    ix = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    iy = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    return ix * iy if ix > 0 and iy > 0 else 0


def _read_vertical(gray: np.ndarray, line: Rect, bright: bool, engine: OcrEngine,
                   cache: dict[bytes, list[OcrWord]], enough: int | None = None,
                   done: Callable[[list[OcrWord]], bool] | None = None) -> list[OcrWord]:
    """Best reading of a vertical candidate: its crop turned a quarter left (text running bottom to top)
    and a quarter right (top to bottom), each read as a line (``_read_line``); the reading with more
    confident letters wins. Word boxes are in the turned crop's coordinates (callers mask the whole line)."""
    rows, cols = gray.shape
    region = line.pad(max(3, line.w // 3), cols, rows)
    crop = gray[region.y:region.y + region.h, region.x:region.x + region.w]
    lx, ly = line.x - region.x, line.y - region.y
    best: list[OcrWord] = []
    best_score = -1.0
    for k, rect in ((1, Rect(ly, region.w - (lx + line.w), line.h, line.w)),  # quarter left
                    (3, Rect(region.h - (ly + line.h), lx, line.h, line.w))):  # quarter right
        turned = np.ascontiguousarray(np.rot90(crop, k))
        words = _read_line(turned, rect, bright, engine, cache, enough, done)
        score = sum(sum(c.isalnum() for c in w.text) * w.conf for w in words)
        if score > best_score:
            best, best_score = words, score
    return best


def _smoothed(crop: np.ndarray, line_h: int) -> np.ndarray:
    """The crop blurred over a fraction of a stroke (Gaussian, sigma = line height / 16, at least 0.8 px):
    pixel noise averages out, strokes a few pixels wide stay."""
    return cv2.GaussianBlur(crop, (0, 0), max(0.8, line_h / 16))


def _binarize(crop: np.ndarray, bright: bool) -> np.ndarray:
    """Dark text on white from the strokes of one polarity: busy or coloured backgrounds vanish."""
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (15, 15))
    hat = cv2.morphologyEx(crop, cv2.MORPH_TOPHAT if bright else cv2.MORPH_BLACKHAT, k)
    level = max(20, int(hat.max()) // 2)
    return np.where(hat >= level, 0, 255).astype(np.uint8)


#: Confidence from which all-text masks a line only its reading decides (``_read_decides``).
READ_SURE_CONF = 60.0
#: A line whose best reading has a mean word confidence below this is "unsure": masked whole.
SURE_CONF = 70.0
#: An unsure reading masks its line only where the line's ink stands this far from its ring (0-255 gray):
#: burned-in text is drawn to be read (anti-aliased text measured 140-255 against its ring), while OCR's
#: garble of anatomy (sulci, trabecular bone, vessels, speckle) stands 50-125 from it. Without this rule
#: unsure masks changed 8.8 % of emri_small's pixels, 1.1 % of eCT_Supplemental's and 2.3 % of a shoulder
#: MR's (text-free bundled images); with it none of theirs and the same pixel-benchmark recall.
UNSURE_MIN_CONTRAST = 140.0
#: ... or this far for a line whose centre lies within UNSURE_EDGE_BAND of the frame's size from an edge,
#: where annotation sits (planted dark text read "BASIS" at 23 % on a colour image stood 120 from its ring,
#: a shoulder MR's garble in the middle of the image 122).
UNSURE_EDGE_CONTRAST, UNSURE_EDGE_BAND = 100.0, 0.2
#: ... and only a reading of this many letters/digits: a 3-letter garble ("var" at 51 %) of a brain CT's
#: dark spaces stood 212 from its ring; identifiers read unsure are longer (pixel-benchmark recall equal).
UNSURE_MIN_CHARS = 4
#: A candidate whose best reading has fewer letters/digits is anatomy read as noise, not a text line.
MIN_LINE_CHARS = 3
#: Page segmentation for one candidate line (single text line: cheaper and steadier than sparse text).
LINE_PSM = 7


def _otsu_text_dark(crop: np.ndarray) -> np.ndarray:
    """Otsu-binarised crop as dark text on white; the text is the class that does not own the border."""
    _, binary = cv2.threshold(crop, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    border = np.concatenate([binary[0], binary[-1], binary[:, 0], binary[:, -1]])
    if float(border.mean()) < 128:  # background (border) came out black: the text is white
        binary = 255 - binary
    return binary


def _has_glyph(img: np.ndarray) -> bool:
    """Whether a binarised crop (dark on white) holds one dark component of character size (the
    pre-screen's minimum: 5 px high, 6 px of ink). Without one there is nothing to read."""
    dark = (img < 128).view(np.uint8) if img.dtype == np.uint8 else (img < 128).astype(np.uint8)
    if not dark.any():
        return False
    _, _, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(dark, 8, cv2.CV_32S, cv2.CCL_GRANA)
    s = stats[1:]
    return bool(((s[:, 3] >= MIN_CHAR_H) & (s[:, 4] >= 6)).any())


def _read_variant(img: np.ndarray, line_h: int, engine: OcrEngine) -> list[OcrWord]:
    """OCR one binarised line crop (upscaled for small glyphs, with a white border); crop coordinates.

    A crop with no dark component of character size is not handed to OCR: on US speckle a quarter of
    the readings were such crops, and what Tesseract made of them was at most a stray glyph or two."""
    if not _has_glyph(img):
        return []
    scale = max(1, min(4, math.ceil(TARGET_GLYPH_H / max(line_h, 1))))
    if scale > 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    img = cv2.copyMakeBorder(img, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT, value=255)
    h, w = img.shape[0] - 2 * BORDER, img.shape[1] - 2 * BORDER
    out = []
    for wd in engine.words(np.ascontiguousarray(img), psm=LINE_PSM):
        x0 = max(0, math.floor((wd.x - BORDER) / scale))
        y0 = max(0, math.floor((wd.y - BORDER) / scale))
        x1 = min(w // scale + 1, math.ceil((wd.x + wd.w - BORDER) / scale))
        y1 = min(h // scale + 1, math.ceil((wd.y + wd.h - BORDER) / scale))
        if x1 > x0 and y1 > y0:
            out.append(OcrWord(wd.text, x0, y0, x1 - x0, y1 - y0, wd.conf))
    return out


def _line_conf(words: list[OcrWord]) -> float:
    """Character-weighted mean confidence of the words that hold letters or digits (0 when none)."""
    ws = [(sum(c.isalnum() for c in w.text), w.conf) for w in words]
    n = sum(k for k, _ in ws)
    return sum(k * c for k, c in ws) / n if n else 0.0


def _read_line(gray: np.ndarray, line: Rect, bright: bool, engine: OcrEngine,
               cache: dict[bytes, list[OcrWord]], enough: int | None = None,
               done: Callable[[list[OcrWord]], bool] | None = None) -> list[OcrWord]:
    """Best reading of one candidate line, in frame coordinates.

    Variants, cheapest first, stop at the first sure one: Otsu (polarity from the crop border), then the
    stroke map of the pre-screen polarity (busy/coloured backgrounds vanish). Over a busy background the
    stroke map goes first and the opposite polarity is a third reading, tried only when the first two
    read some letter or digit (where neither reads a single glyph the candidate is speckle). On a flat
    background Otsu already reads either polarity cleanly and the opposite stroke map is not tried
    (recall unchanged on both benchmarks; a third LSTM pass saved on every anatomy edge).
    ``enough`` (policy all-text, which only asks "is this text?") also stops at the first reading with
    that many letters/digits: a better reading of a line that is masked anyway changes nothing.
    ``done`` (policy phi: "does this reading show an identifier?") stops at the first reading it accepts:
    the line is masked whole, so a surer reading could only add to the mask, never remove it.
    Each variant's reading is a pure function of the crop and is kept in ``cache`` by its bytes.
    """
    rows, cols = gray.shape
    region = line.pad(max(3, line.h // 3), cols, rows)
    crop = gray[region.y:region.y + region.h, region.x:region.x + region.w]
    # everything a variant's reading depends on: the crop, the line height (upscaling) and the polarity (the
    # stroke maps, the local threshold). A key without the polarity let one polarity's "local" reading answer
    # for the other: a US cine's masks then depended on what the process had read before (a test run found it).
    base = crop.tobytes() + repr((crop.shape, line.h, bright)).encode()
    # Large glyphs (over READ_MAX_H) are read from the crop scaled down to READ_DOWN_H: their strokes are wider
    # than the stroke maps' 15-px kernel, and at full size OCR read 80-94 px serif lines as fragments of 1-3
    # letters (an audit: names and dates on a CR written unmasked). Word boxes are scaled back.
    f = READ_DOWN_H / line.h if line.h > READ_MAX_H else 1.0
    line_h = line.h
    if f < 1.0:
        crop = cv2.resize(crop, (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f))),
                          interpolation=cv2.INTER_AREA)
        line_h = max(1, round(line.h * f))

    def reading(name: str, make: Callable[[], np.ndarray]) -> list[OcrWord]:
        key = hashlib.blake2b(base + name.encode(), digest_size=16).digest()
        if key not in cache:
            words = _read_variant(make(), line_h, engine)
            if f < 1.0:
                words = [OcrWord(w.text, math.floor(w.x / f), math.floor(w.y / f), math.ceil(w.w / f),
                                 math.ceil(w.h / f), w.conf) for w in words]
            cache[key] = words
        return cache[key]

    otsu = ("otsu", lambda: _otsu_text_dark(crop))
    strokes = (f"hat-{bright}", lambda: _binarize(crop, bright))
    opposite = (f"hat-{not bright}", lambda: _binarize(crop, not bright))
    smooth = (f"smooth-{bright}", lambda: _binarize(_smoothed(crop, line_h), bright))
    # Over a busy background (speckle, anatomy) Otsu keeps the texture and reads noise at 2-3x the
    # cost of a clean crop; the stroke map of the line's polarity is the reading that works there.
    # It goes first, and a busy line where it finds no glyph at all is texture: stop.
    busy = _busy_background(gray, line)
    ladder = [strokes, otsu, opposite] if busy else [otsu, strokes]
    if f < 1.0:  # large glyphs: the local threshold read the audit's serif lines best ("23-Jul-1961" at 85 %)
        ladder.append((f"local-{bright}", lambda: _local_binarize(crop, bright, line_h)))
    lx0, lx1 = line.x - region.x, line.x - region.x + line.w
    best: list[OcrWord] = []
    best_key = (False, -1.0)
    glyphs = 0
    partial = False  # a variant read the line confidently but only part of it
    i = 0
    while i < len(ladder):
        name, make = ladder[i]
        if (i == 2 or (busy and i == 1)) and glyphs == 0 and not ladder[i][0].startswith("local"):
            break
        words = reading(name, make)
        read = sum(c.isalnum() for w in words for c in w.text)
        glyphs += read
        conf = _line_conf(words)
        whole = _coverage(words, lx0, lx1) >= READ_COVERAGE
        key = (whole, conf)
        if key > best_key:
            best, best_key = words, key
        if (enough is not None and read >= enough) or (done is not None and done(words)):
            best = words
            break
        if conf >= SURE_CONF and whole:
            break
        partial = partial or (conf >= SURE_CONF and read >= 2 and not whole)
        if i == len(ladder) - 1 and partial and not ladder[-1][0].startswith("local"):
            # Every reading so far stops short of the line's end: a background that brightens along the line
            # (bone under a radiograph's large annotation) drops the rest of the glyphs out of one global
            # threshold. The local threshold reads them (an audit's "ID: MRN3805406" read as "ID: M )6").
            ladder.append((f"local-{bright}", lambda: _local_binarize(crop, bright, line_h)))
        i += 1
    if busy and sum(c.isalnum() for w in best for c in w.text) < MIN_LINE_CHARS:
        # Nothing legible over a busy background: thin strokes over pixel noise break up in every plain map
        # ("Born Nov 15, 1958" at 32 px over noise read nothing: an audit's fail-open sweep), while on the
        # crop smoothed they read whole. Only as a last resort: a reading that shows text is never replaced.
        words = reading(smooth[0], smooth[1])
        if sum(c.isalnum() for w in words for c in w.text) >= MIN_LINE_CHARS and _line_conf(words) >= SMOOTH_CONF:
            best = words
    return [OcrWord(w.text, w.x + region.x, w.y + region.y, w.w, w.h, w.conf) for w in best]


#: Confidence from which the smoothed reading of a busy line counts (``_read_line``): smoothed speckle reads as
#: garble at low confidence; text over pixel noise, once smoothed, reads cleanly.
SMOOTH_CONF = 45.0
#: Lines taller than READ_MAX_H are read scaled down to a line height of READ_DOWN_H (see ``_read_line``).
READ_MAX_H, READ_DOWN_H = 60, 32
#: A reading is of the whole line when its words span this share of the line's width; a sure reading of less
#: is no reason to stop reading.
READ_COVERAGE = 0.6


def _coverage(words: list[OcrWord], x0: int, x1: int) -> float:
    """Share of [x0, x1) that the boxes of the words holding a letter or digit cover."""
    spans = sorted((max(x0, w.x), min(x1, w.x + w.w)) for w in words if any(c.isalnum() for c in w.text))
    covered, end = 0, x0
    for a, b in spans:
        a = max(a, end)
        if b > a:
            covered += b - a
            end = b
    return covered / max(1, x1 - x0)


def _local_binarize(crop: np.ndarray, bright: bool, line_h: int) -> np.ndarray:
    """Dark text on white from the stroke map of the line's polarity, thresholded at 40 % of its *local*
    maximum (a window about a glyph wide) rather than at half of the crop's: strokes over a bright background
    stand out less, and one global threshold dropped them. The stroke map (top-hat) is flat over a step of
    the background (a collimator edge), where a threshold against the local mean drew a black bar."""
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (15, 15))
    hat = cv2.morphologyEx(crop, cv2.MORPH_TOPHAT if bright else cv2.MORPH_BLACKHAT, k)
    w = max(3, line_h) | 1  # about one glyph wide, two lines tall
    local_max = cv2.dilate(hat, np.ones((2 * w + 1, w), np.uint8))
    ink = (hat >= LOCAL_FLOOR) & (hat.astype(np.int16) * 5 >= local_max.astype(np.int16) * 2)
    return np.where(ink, 0, 255).astype(np.uint8)


#: Stroke contrast (of 255) below which nothing is ink in the local threshold.
LOCAL_FLOOR = 20


#: Share of a line's surroundings within BUSY_TOLERANCE of their median below which the background is
#: busy (speckle, anatomy); annotation bands and flat backgrounds are near 1.0.
BUSY_FLAT_SHARE = 0.6
BUSY_TOLERANCE = 16


def _busy_background(gray: np.ndarray, line: Rect) -> bool:
    """Whether the band around a candidate line (above, below and beside it, one line height wide) is
    textured rather than flat. Only the reading order depends on it (see ``_read_line``)."""
    rows, cols = gray.shape
    m = max(3, line.h)
    y0, y1 = max(0, line.y - m), min(rows, line.y + line.h + m)
    x0, x1 = max(0, line.x - m), min(cols, line.x + line.w + m)
    # histogram of the band minus the line itself: median and the share near it in O(256)
    hist = np.bincount(gray[y0:y1, x0:x1].ravel(), minlength=256)
    hist -= np.bincount(gray[line.y:line.y + line.h, line.x:line.x + line.w].ravel(), minlength=256)
    n = int(hist.sum())
    if n == 0:
        return False
    cum = np.cumsum(hist)
    lo_mid, hi_mid = int(np.searchsorted(cum, (n - 1) // 2 + 1)), int(np.searchsorted(cum, n // 2 + 1))
    med = (lo_mid + hi_mid) // 2  # numpy's median of integers, truncated as int(np.median(...)) did
    near = int(hist[max(0, med - BUSY_TOLERANCE):med + BUSY_TOLERANCE + 1].sum())
    return near / n < BUSY_FLAT_SHARE


def join_rows(lines: list[tuple[Rect, bool]]) -> list[tuple[Rect, bool]]:
    """Join candidates on the same row less than a line height apart (a line split where its background
    changes), whatever their polarity; the joined line keeps the polarity of its widest part. Where parts of
    both polarities were joined (grey text running from a dark border onto a bright exposed field: bright on
    the one, dark on the other), the parts stay candidates too: read in one polarity, the joined line read
    garble, and a name, an ID and a birth date on an XA frame were written unmasked (an audit)."""
    items = [(r, b, [(r, b)]) for r, b in sorted(lines, key=lambda t: (t[0].y, t[0].x, t[1]))]
    changed = True
    while changed:
        changed = False
        for i, (a, ab, a_parts) in enumerate(items):
            for j in range(i + 1, len(items)):
                b, bb, b_parts = items[j]
                if b.y >= a.y + a.h:
                    break  # sorted by top row, and a join keeps a's top: no later item shares a's rows
                overlap = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
                gap = max(a.x, b.x) - min(a.x + a.w, b.x + b.w)
                # (of about the same height: a 12-px line of text is no part of a 56-px band of speckle)
                if overlap >= 0.5 * min(a.h, b.h) and gap <= max(a.h, b.h) and max(a.h, b.h) <= 2 * min(a.h, b.h):
                    x0, y0 = min(a.x, b.x), min(a.y, b.y)
                    x1, y1 = max(a.x + a.w, b.x + b.w), max(a.y + a.h, b.y + b.h)
                    items[i] = (Rect(x0, y0, x1 - x0, y1 - y0), ab if a.w >= b.w else bb, a_parts + b_parts)
                    del items[j]
                    changed = True
                    break
            if changed:
                break
    out: list[tuple[Rect, bool]] = []
    for rect, polarity, parts in items:
        out.append((rect, polarity))
        if len({pb for _pr, pb in parts}) > 1:
            out += [p for p in parts if p[0] != rect]
    return sorted(dict.fromkeys(out), key=lambda t: (t[0].y, t[0].x, t[1]))


def _extend_line(gray: np.ndarray, line: Rect, bright: bool) -> Rect:
    """Grow a text line sideways while pixels at its ink level continue along its rows (gaps < height).

    Burned-in text is drawn in one value; over speckle or anatomy its strokes merge with the background's
    own thin structures and the screen sees only the part of the line over a flat background.
    """
    rows, cols = gray.shape
    band = gray[line.y:line.y + line.h]
    core = gray[line.y:line.y + line.h, line.x:line.x + line.w]
    level = int(core.max()) if bright else int(core.min())
    ink_cols = np.flatnonzero((np.abs(band.astype(np.int16) - level) <= 12).any(axis=0))
    if ink_cols.size == 0:
        return line
    x0, x1 = line.x, line.x + line.w
    gap = max(line.h, 4)
    right = ink_cols[ink_cols >= x1]
    for c in right:
        if c - x1 > gap:
            break
        x1 = int(c) + 1
    left = ink_cols[ink_cols < x0][::-1]
    for c in left:
        if x0 - c > gap:
            break
        x0 = int(c)
    return Rect(x0, line.y, min(cols, x1) - x0, line.h)


def _union(line: Rect, words: list[OcrWord]) -> tuple[int, int, int, int]:
    x0, y0 = min([line.x] + [w.x for w in words]), min([line.y] + [w.y for w in words])
    x1 = max([line.x + line.w] + [w.x + w.w for w in words])
    y1 = max([line.y + line.h] + [w.y + w.h for w in words])
    return x0, y0, x1 - x0, y1 - y0


def _frame_boxes(gray: np.ndarray, frame: int, matcher: TermMatcher, policy: str, engine: OcrEngine,
                 cache: dict[bytes, list[OcrWord]], seen: list[Rect] | None = None,
                 only_bright: bool = False) -> tuple[list[Box], bool]:
    """Boxes of one frame (view), and whether OCR ran at all.

    Each candidate line is read on its own. A line is masked whole when it holds PHI (policy phi), any
    text (policy all-text), or when OCR is unsure what it says (a missed identifier is a breach, an
    extra mask costs little). Only a line read with confidence as non-identifying text stays.
    ``seen``: lines of the frame's first view, skipped in its second (see ``frame_lines``).
    ``only_bright``: a chroma view, where coloured text is bright; its dark lines are grey showing through
    colour (gaps in a Doppler map), which the luminance view reads if they are text.
    """
    scored = frame_scored(gray)
    polar = frame_lines(gray, seen)
    if not polar and (seen is not None or not frame_vertical(gray, [])) and not (
            only_bright and _chroma_lines(gray, polar)[1]):
        return [], False

    def holds_phi(words: list[OcrWord]) -> bool:
        """The file's own identifiers or PHI patterns in a reading (Presidio is left for the final one).
        A reading of fewer than MIN_LINE_CHARS letters/digits is never masked as PHI (see below): it is
        not even matched, so frames whose candidates are anatomy never build the file's matcher."""
        read = [w for w in words if is_text(w)]
        if sum(sum(c.isalnum() for c in w.text) for w in read) < MIN_LINE_CHARS:
            return False
        return any(phi_words(ln, matcher, use_presidio=False) for ln in build_lines(read))

    boxes: list[Box] = []
    # half-size candidates (large text) and, in a chroma view, lines of grey on colour are weaker evidence
    # than a full-size line of uniform ink: only their reading decides (``_read_decides``)
    base = screen_frame(gray)
    large = {r for r, _b, _s in scored[len(base):]}
    # In a chroma view a dark line is grey showing through colour: the gaps of a Doppler map (textured colour
    # around it) are no text, but grey, white or black text on a flat coloured label is, and it can sit within
    # 30 grey levels of the label in luminance (white on yellow, black on blue: an audit, never read). Those on a
    # flat background are read (``_chroma_lines``), and only their reading decides, like large lines.
    grey_on_colour: set[Rect] = set()
    if only_bright:
        polar, grey = _chroma_lines(gray, polar)
        polar += grey
        grey_on_colour = {r for r, _b in grey}
    if policy == ALL_TEXT:
        # all-text masks every line the screen is sure is text, even where a join with weaker fragments
        # (speckle beside an outlined label) leaves the joined line to a reading that may find nothing
        for r, b, strong in base:
            if strong and (b or not only_bright) and not (seen and any(_covers(o, r) for o in seen)) \
                    and _glyph_pieces(gray, r, b) >= STRONG_MIN_PIECES:
                r = _extend_line(gray, r, b)
                boxes.append(Box(frame, r.x, r.y, r.w, r.h, "text", 100.0))
    for line, bright in polar:
        if line in large or line in grey_on_colour:
            box = _read_decides(gray, frame, line, bright, matcher, policy, engine, cache, holds_phi)
            boxes += [box] if box else []
            continue
        if policy == ALL_TEXT and _all_strong(line, scored) and _glyph_pieces(gray, line, bright) >= STRONG_MIN_PIECES:
            # all-text masks every text line whatever it says: OCR would only confirm what the screen
            # already knows (many uniform strokes at near-extreme contrast), so mask the line directly
            line = _extend_line(gray, line, bright)
            boxes.append(Box(frame, line.x, line.y, line.w, line.h, "text", 100.0))
            continue
        words = _read_line(gray, line, bright, engine, cache, MIN_LINE_CHARS if policy == ALL_TEXT else None,
                           None if policy == ALL_TEXT else holds_phi)
        read = [w for w in words if is_text(w)]
        conf = _line_conf(read)
        n_chars = sum(sum(c.isalnum() for c in w.text) for w in read)
        if n_chars < MIN_LINE_CHARS:
            # A line the screen calls strong that no reading makes out is not masked under phi (all-text masked
            # it above without reading): on real text-free images such lines were the sulci of a brain CT,
            # sternotomy wires, calcifications and collimator edges, grown into edge-to-edge bands.
            if read and (kind := _short_term(read, matcher)):
                # two letters that are the patient's whole name ("OB") read with confidence: what
                # verification would find in the output (it counts such a match), so it is masked
                x, y, w, h = _union(line, read)
                boxes.append(Box(frame, x, y, w, h, kind, conf))
            continue  # otherwise nothing (or one stray glyph) legible in any variant: a structure, not text
        longer = _extend_line(gray, line, bright)
        if longer != line and policy == ALL_TEXT:
            line = longer  # all-text masks the whole line whatever the rest says: no need to read it
        elif longer != line:  # the line runs on over a busy background the stroke screen could not separate
            line = longer
            longer_read = [w for w in _read_line(gray, line, bright, engine, cache, done=holds_phi) if is_text(w)]
            # the longer reading replaces the first unless it loses the identifier the first one showed
            # (a line run on across speckle reads as garble, "29173" of the line itself is then lost)
            if longer_read and (holds_phi(longer_read) or not holds_phi(read)):
                read = longer_read
            conf = _line_conf(read)
        if policy == ALL_TEXT:
            kind = "text"
        else:
            ocr_line = build_lines(read)
            found = [phi_words(ln, matcher) for ln in ocr_line]  # once: each call runs Presidio
            hits = sorted((i, k) for f in found for i, k in f.items())
            if hits:
                kinds = [k for f in found for k in f.values()]
                kind = min(kinds, key=lambda k: (-kinds.count(k), k))
            elif conf < SURE_CONF and n_chars >= UNSURE_MIN_CHARS and \
                    _line_contrast(gray, line, bright) >= _unsure_contrast(gray, line):
                kind = "unsure"
            else:
                continue
        x, y, w, h = _union(line, read)
        boxes.append(Box(frame, x, y, w, h, kind, conf))
    if seen is None:
        boxes += _vertical_boxes(gray, frame, [r for r, _b in polar], matcher, policy, engine, cache, holds_phi)
    return boxes, True


def _read_decides(gray: np.ndarray, frame: int, line: Rect, bright: bool, matcher: TermMatcher, policy: str,
                  engine: OcrEngine, cache: dict[bytes, list[OcrWord]],
                  holds_phi: Callable[[list[OcrWord]], bool], vertical: bool = False) -> Box | None:
    """The box of a line that only its reading may mask: all-text masks it when read as text with
    confidence (>= READ_SURE_CONF), phi when the reading holds an identifier; nothing is masked as unsure,
    on the screen's word alone, or extended along its ink. For candidates that are far more often
    structure than text: large (half-size) ones, which drew edge-to-edge bands when extended, and
    vertical ones (sector edges, a skull's sides). The whole line is masked."""
    read_fn = _read_vertical if vertical else _read_line
    words = read_fn(gray, line, bright, engine, cache, MIN_LINE_CHARS if policy == ALL_TEXT else None,
                    None if policy == ALL_TEXT else holds_phi)
    read = [w for w in words if is_text(w)]
    conf = _line_conf(read)
    kind: str | None = None
    if sum(sum(c.isalnum() for c in w.text) for w in read) < MIN_LINE_CHARS:
        kind = _short_term(read, matcher) if read else None
    elif policy == ALL_TEXT:
        kind = "text" if conf >= READ_SURE_CONF else None
    else:
        kinds = [k for ln in build_lines(read) for k in phi_words(ln, matcher).values() if k != "text"]
        kind = min(kinds, key=lambda k: (-kinds.count(k), k)) if kinds else None
    return Box(frame, line.x, line.y, line.w, line.h, kind, conf) if kind else None


def _vertical_boxes(gray: np.ndarray, frame: int, lines: list[Rect], matcher: TermMatcher, policy: str,
                    engine: OcrEngine, cache: dict[bytes, list[OcrWord]],
                    holds_phi: Callable[[list[OcrWord]], bool]) -> list[Box]:
    """Boxes of the vertical candidate lines (side labels): only their reading decides (``_read_decides``)."""
    boxes = []
    for line, bright, _strong in frame_vertical(gray, lines):
        box = _read_decides(gray, frame, line, bright, matcher, policy, engine, cache, holds_phi, vertical=True)
        boxes += [box] if box else []
    return boxes


#: OCR confidence from which a short reading's exact match of a term counts (verification's FUZZY_MIN_CONF).
SHORT_TERM_CONF = 50.0


def _short_term(words: list[OcrWord], matcher: TermMatcher) -> str | None:
    """Kind of a term a short reading spells exactly, read at SHORT_TERM_CONF or more (else None)."""
    if not any(w.conf >= SHORT_TERM_CONF and sum(c.isalnum() for c in w.text) >= 2 for w in words):
        return None  # a lone glyph, or garble read unsure: no need to build the file's matcher
    for ln in build_lines(words):
        for span in matcher.find(ln.text):
            confs = [w.conf for w, (a, b) in zip(ln.words, ln.offsets, strict=True) if a < span.end and span.start < b]
            if confs and min(confs) >= SHORT_TERM_CONF:
                return span.kind
    return None


def _unsure_contrast(gray: np.ndarray, line: Rect) -> float:
    """The contrast an unsure line needs: less near the frame's edges, where annotation is burned in."""
    rows, cols = gray.shape
    cx, cy = line.x + line.w / 2, line.y + line.h / 2
    near = min(cx, cols - cx) <= UNSURE_EDGE_BAND * cols or min(cy, rows - cy) <= UNSURE_EDGE_BAND * rows
    return UNSURE_EDGE_CONTRAST if near else UNSURE_MIN_CONTRAST


def _line_contrast(gray: np.ndarray, line: Rect, bright: bool) -> float:
    """How far a line's ink (its 90th percentile, or 10th for dark text) stands from the median of the
    3-px ring around it."""
    rows, cols = gray.shape
    crop = gray[line.y:line.y + line.h, line.x:line.x + line.w]
    if crop.size == 0:
        return 0.0
    ring = line.pad(3, cols, rows)
    outer = gray[ring.y:ring.y + ring.h, ring.x:ring.x + ring.w].astype(np.int32)
    total = int(outer.size) - int(crop.size)
    if total <= 0:
        return 255.0
    mask = np.ones(outer.shape, dtype=bool)
    mask[line.y - ring.y:line.y - ring.y + line.h, line.x - ring.x:line.x - ring.x + line.w] = False
    ink = float(np.percentile(crop, 90 if bright else 10))
    return abs(ink - float(np.median(outer[mask])))


#: A strong line is masked unread under all-text only when it holds this many glyph-sized pieces: one piece
#: (a depth-scale bar, a probe logo, a Doppler blob) is graphics more often than text, and is read instead
#: (an audit on 125 real images; pixel-bench recall unchanged).
STRONG_MIN_PIECES = 3


def _glyph_pieces(gray: np.ndarray, r: Rect, bright: bool) -> int:
    """Stroke components of character size (``MIN_CHAR_H`` tall, 6+ pixels) inside ``r``; over a busy
    background (speckle merges glyphs into one piece there: text over speckle lost its mask) no count is
    made and STRONG_MIN_PIECES is returned: the logos and scale bars sit on flat backgrounds."""
    if _busy_background(gray, r):
        return STRONG_MIN_PIECES
    crop = gray[r.y:r.y + r.h, r.x:r.x + r.w]
    if crop.size == 0:
        return 0
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (9, 9))
    hat = cv2.morphologyEx(crop, cv2.MORPH_TOPHAT if bright else cv2.MORPH_BLACKHAT, k)
    strokes = (hat >= STROKE_CONTRAST).view(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(strokes, 8, cv2.CV_32S, cv2.CCL_GRANA)
    s = stats[1:]
    return int(((s[:, 3] >= MIN_CHAR_H) & (s[:, 4] >= 6)).sum())


def _all_strong(line: Rect, scored: list[tuple[Rect, bool, bool]]) -> bool:
    """Whether every pre-screen candidate that makes up a (joined) line is strong."""
    parts = [s for r, _b, s in scored if r.x >= line.x and r.y >= line.y and r.x + r.w <= line.x + line.w
             and r.y + r.h <= line.y + line.h]
    return bool(parts) and all(parts)


def find_text_boxes(ds: Dataset, terms: PhiTerms, policy: str,
                    engine: OcrEngine | None = None, matcher: TermMatcher | None = None) -> PixelResult:
    """Find burned-in text to mask on every frame. Raises PixelError when pixels cannot be decoded.
    ``matcher``: the caller's ``TermMatcher`` of ``terms``, if it has one (else one is built on first use)."""
    if policy not in (PHI, ALL_TEXT):
        raise ConfigError(f"unknown pixel policy {policy!r}")
    if not has_pixels(ds):
        return PixelResult(frames=0, engine=(engine.name if engine else "tesseract"))
    eng = engine or get_engine("tesseract")
    matcher = matcher if matcher is not None and matcher.terms is terms else _LazyMatcher(terms)
    result = PixelResult(frames=frame_count(ds), engine=eng.name)
    seen: dict[bytes, list[Box]] = {}
    cache = _memo_for(eng)
    any_ocr = False
    colour = has_chroma_view(ds)
    codes = str(ds.get("Modality", "")).strip().upper() in CODE_MODALITIES
    for f, views in enumerate(iter_gray_views(ds)):
        gray, alt = views
        key = hashlib.blake2b(gray.tobytes() + (b"" if alt is None else alt.tobytes()), digest_size=16).digest()
        if key in seen:  # identical frame already searched
            result.boxes += [Box(f, b.x, b.y, b.w, b.h, b.kind, b.confidence) for b in seen[key]]
        else:
            before = cache.misses
            boxes, ran = _frame_boxes(gray, f, matcher, policy, eng, cache)
            if alt is not None:  # a stretched window or coloured pixels: text that shows only in this view
                sub, ox, oy = crop_to_ink(alt)
                first = [Rect(r.x - ox, r.y - oy, r.w, r.h) for r, _b in frame_lines(gray)]
                more, ran_alt = _frame_boxes(sub, f, matcher, policy, eng, cache, first, only_bright=colour)
                more = [Box(b.frame, b.x + ox, b.y + oy, b.w, b.h, b.kind, b.confidence) for b in more]
                boxes, ran = boxes + more, ran or ran_alt
            if codes:  # a QR code or barcode encodes what no OCR reads: masked whole (``codes``)
                boxes += [Box(f, r.x, r.y, r.w, r.h, "code", 100.0) for r in code_rects(gray)]
            if ran and cache.misses > before:
                result.frames_ocr += 1
            any_ocr = any_ocr or ran
            seen[key] = boxes
            result.boxes += boxes
        result.frames_checked += 1
    result.prescreen_skipped = not any_ocr
    result.boxes = sorted(set(masked_rects(ds, result.boxes)),
                          key=lambda b: (b.frame, b.y, b.x, b.h, b.w, b.kind))
    return result


def masked_rects(ds: Dataset, boxes: list[Box]) -> list[Box]:
    """The rectangles ``apply_boxes`` fills: padded by PAD, clipped to the image, and widened to whole
    pixel pairs for native YBR_FULL_422. Provenance records exactly these."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    pairs = str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422" and not (
        UID(str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian))).is_encapsulated)
    out = []
    for b in boxes:
        x0, y0 = max(0, b.x - PAD), max(0, b.y - PAD)
        x1, y1 = min(cols, b.x + b.w + PAD), min(rows, b.y + b.h + PAD)
        if pairs:
            x0, x1 = x0 - x0 % 2, min(cols, x1 + x1 % 2)
        if x1 > x0 and y1 > y0:
            out.append(Box(b.frame, x0, y0, x1 - x0, y1 - y0, b.kind, b.confidence))
    return out


class _LazyMatcher(TermMatcher):
    """TermMatcher built on first use: frames the pre-screen clears never pay for it."""

    def __init__(self, terms: PhiTerms) -> None:  # noqa: D107 - deliberately skips the parent's setup
        self._lazy_terms = terms
        self._inner: TermMatcher | None = None

    def _get(self) -> TermMatcher:
        if self._inner is None:
            self._inner = TermMatcher(self._lazy_terms)
        return self._inner

    def find(self, text: str) -> list:  # type: ignore[type-arg]
        return self._get().find(text)

    def fuzzy_token_kind(self, token: str) -> str | None:
        return self._get().fuzzy_token_kind(token)


def apply_boxes(ds: Dataset, result: PixelResult, *, allow_lossy_reencode: bool = False) -> None:
    """Mask every box of ``result`` in ``ds`` (stored layout kept; see docs/pixels.md)."""
    apply_boxes_to(ds, result.boxes, allow_lossy_reencode=allow_lossy_reencode)
