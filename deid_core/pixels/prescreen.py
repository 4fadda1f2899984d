"""Cheap text pre-screen: find the few rectangles that may hold burned-in text.

Text is a row of small, high-contrast, thin-stroked blobs of similar height. We extract thin
bright and thin dark strokes with morphological top-hat / black-hat (strokes narrower than the
kernel survive, broad anatomy does not), keep connected components of character size, and chain
them horizontally into line candidates. Text drawn over texture (speckle, anatomy) merges with the
texture's own thin structures in those maps; maps of the pixels at the frame's extreme values (where
burned-in text is usually drawn) keep its glyphs apart and add the lines the stroke maps lost.
Only those crops go to OCR; a text-free CT/MR slice usually yields no candidate and skips OCR
entirely. The screen is tuned for recall: a spurious candidate costs one small OCR call, a missed
one would leak.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

cv2.setNumThreads(1)

#: Minimum local contrast (of 255) for a stroke pixel.
STROKE_CONTRAST = 40
#: Character height range in pixels (12-32 px fonts have 6-32 px glyphs; allow some slack).
MIN_CHAR_H, MAX_CHAR_H = 5, 60
#: Share of a line's ink pixels within ±12 of its ink level (burned-in text ≈ 1.0, anatomy ≈ 0.1-0.4).
MIN_INK_UNIFORMITY = 0.35
#: Ink pixels within this of the line's ink level count as uniform (anti-aliased cores vary a little).
INK_TOLERANCE = 32
#: Minimum difference between a line's ink level and the median of the ring around it.
MIN_RING_CONTRAST = 30
#: In a frame with more than NOISE_CROWD faint candidate lines (contrast below NOISE_CHECK_CONTRAST), a faint
#: line must stand out from the noise of its surroundings by NOISE_RATIO robust standard deviations
#: (IQR / 1.349) of its ring. On a noisy MR slice (SNR ~13) about 110 chains of noise grains at contrast
#: 30-42 were candidates, OCR read some as "nese" or "Gee", and unsure masks covered 10-31 % of the
#: anatomy. Frames of the pixel benchmark hold at most 8 faint candidates (faint planted text over texture
#: among them, which the check would lose); faint text on a flat band (ring deviation ~0) and text of
#: higher contrast are never affected.
NOISE_CHECK_CONTRAST, NOISE_RATIO, NOISE_CROWD = 60, 3.0, 24
#: A line of anti-aliased text (TrueType, 8-12 px) has few stroke pixels at the ink value itself (its
#: uniformity measures 0.2-0.35), but stands out from its surroundings like nothing else: a line of this
#: many characters at this ring contrast is a candidate down to HIGH_CONTRAST_UNIFORMITY. (Thin anatomy
#: measured 50-125, anti-aliased text 140-255; text at 140-180 was an audit's hole when this was 180.)
HIGH_CONTRAST, HIGH_CONTRAST_CHARS, HIGH_CONTRAST_UNIFORMITY = 140, 3, 0.15
#: Pixels this close to the frame's extreme value count as drawn at it (the cores of anti-aliased glyphs).
LEVEL_TOLERANCE = 2


@dataclass(frozen=True)
class Rect:
    """A candidate region in frame coordinates (x=column, y=row)."""

    x: int
    y: int
    w: int
    h: int

    def pad(self, m: int, width: int, height: int) -> Rect:
        x0, y0 = max(0, self.x - m), max(0, self.y - m)
        x1, y1 = min(width, self.x + self.w + m), min(height, self.y + self.h + m)
        return Rect(x0, y0, x1 - x0, y1 - y0)


def stroke_hats(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-hat (thin bright) and black-hat (thin dark) responses of a frame, uint8."""
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (9, 9))
    return cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, k), cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, k)


def stroke_maps(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binary maps (uint8 0/1) of thin bright strokes and of thin dark strokes.

    The two polarities are kept apart: the gaps between bright letters are themselves thin dark
    "strokes", and OR-ing both maps would glue a whole text block into one blob.
    """
    top, black = stroke_hats(gray)
    return (top >= STROKE_CONTRAST).astype(np.uint8), (black >= STROKE_CONTRAST).astype(np.uint8)


def _char_components(strokes: np.ndarray) -> np.ndarray:
    """Stats rows (x, y, w, h, area) of stroke components of character size."""
    # Grana's block-based labelling (BBDT) explicitly: twice as fast as OpenCV's default (Spaghetti) on
    # stroke maps of US speckle, with the same labels and statistics (checked on the bench cohort)
    _, _, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(strokes, 8, cv2.CV_32S, cv2.CCL_GRANA)
    s = stats[1:]
    if s.size == 0:
        return s
    w, h, area = s[:, 2], s[:, 3], s[:, 4]
    fill = area / np.maximum(w * h, 1)
    # width is not limited: bold annotation fonts often touch, making a whole word one component
    keep = (h >= MIN_CHAR_H) & (h <= MAX_CHAR_H) & (area >= 6) & (
        (fill <= 0.9) | (w <= 6) | (h <= 6))
    return s[keep]


def _group_lines(chars: np.ndarray) -> list[list[int]]:
    """Chain character boxes into lines: vertical overlap, similar height, small horizontal gap.

    All pairs within horizontal reach are compared at once (US speckle gives thousands of components;
    a pair loop in Python was a third of the screen's time). Two boxes chain when the right
    one starts at most 1.5 heights (+2 px) after the left one ends, they overlap vertically by 40 % of
    the smaller height and neither is over 3 times as high. Groups are the connected components of that
    pair graph, so the result does not depend on the order pairs are visited.
    """
    n = len(chars)
    if n == 0:
        return []
    xywh = chars[:, :4].astype(np.int64)
    order = np.lexsort((xywh[:, 1], xywh[:, 0]))  # by x, then y (stable)
    x, y, w, h = (xywh[order, k] for k in range(4))
    right, bottom = x + w, y + h
    reach = right + int(1.5 * MAX_CHAR_H + 2)  # no partner can start further right than this
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    # every pair (a, b), a before b, whose b starts within reach of a: one flat array, no offset loop
    last = np.searchsorted(x, reach, side="right")  # x is sorted: partners of a are a+1 .. last[a]-1
    counts = np.maximum(last - np.arange(n) - 1, 0)
    a = np.repeat(np.arange(n), counts)
    b = a + 1 + (np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts))
    hmax, hmin = np.maximum(h[a], h[b]), np.minimum(h[a], h[b])
    gap = x[b] - right[a]
    overlap = np.minimum(bottom[a], bottom[b]) - np.maximum(y[a], y[b])
    ok = (gap <= 1.5 * hmax + 2) & (overlap >= 0.4 * hmin) & (hmax <= 3 * hmin)
    for i, j in zip(a[ok].tolist(), b[ok].tolist(), strict=True):
        ra, rb = find(i), find(j)
        if ra != rb:
            parent[ra] = rb
    groups: dict[int, list[int]] = {}
    for pos in range(n):
        groups.setdefault(find(pos), []).append(int(order[pos]))
    return sorted(groups.values(), key=lambda g: (int(chars[g[0]][1]), int(chars[g[0]][0])))


def _stacked_rows(chars: np.ndarray, group: list[int]) -> list[list[int]]:
    """The rows of a group that chains stacked lines of text, each as a group of its own (none when the
    group is one row). A tall glyph or a graphic that touches two rows joins them into one group, and a crop
    of two rows read as one line reads nothing: a name and an ID on a capture's coloured title bands, joined
    by a date drawn across them, were written unmasked (the MIDI-B-like benchmark). The joined group stays a
    candidate too; its rows are read on their own."""
    if len(group) < 4:
        return []
    xs = chars[group]
    h = xs[:, 3].astype(np.float64)
    mh = float(np.median(h))
    if int((xs[:, 1] + xs[:, 3]).max() - xs[:, 1].min()) < STACK_MIN_H * mh:
        return []
    # components of about one glyph's height, by their vertical centre; a gap between centres of more than
    # STACK_GAP glyph heights starts a new row (a component spanning rows belongs to none of them)
    glyphs = sorted((float(c[1] + c[3] / 2), i) for c, i in zip(xs, group, strict=True) if c[3] <= 1.5 * mh)
    rows: list[list[int]] = []
    last = -1e9
    for centre, i in glyphs:
        if centre - last > STACK_GAP * mh:
            rows.append([])
        rows[-1].append(i)
        last = centre
    rows = [r for r in rows if len(r) >= 2]
    return rows if len(rows) >= 2 else []


#: A group at least STACK_MIN_H median glyph heights tall may stack rows; rows are split where the vertical
#: centres of consecutive glyphs jump by more than STACK_GAP glyph heights (``_stacked_rows``).
STACK_MIN_H, STACK_GAP = 1.8, 0.6


def _quantile(values: np.ndarray, q: float) -> float:
    """Linear-interpolated quantile (numpy's default method) of a small array via one partition: the
    screen takes two per candidate line and ``np.percentile``'s overhead was 10 % of its time."""
    flat = values.ravel()
    pos = q * (flat.size - 1)
    lo = int(pos)
    hi = min(lo + 1, flat.size - 1)
    part = np.partition(flat, (lo, hi))
    a, b = float(part[lo]), float(part[hi])
    t = pos - lo
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t  # numpy's _lerp, bit for bit


def _char_count(comps: np.ndarray) -> int:
    """Characters in a line's components. A component wider than 1.5 heights is touching letters and
    counts as several; a 1-px-wide sliver (the seam between two anatomy regions) counts as none, so a
    lone blob beside a seam is not a two-character line. Thin glyphs of real text ("l", "1") sit among
    other letters, which keep their line a candidate."""
    n = 0
    for c in comps:
        w, h = int(c[2]), int(c[3])
        if w <= 1:
            continue
        n += max(1, int(w / (0.75 * h)))
    if len(comps) == 1 and n < 3:
        return 1  # one blob 1.5-2.25 heights wide: a speckle grain far more often than two touching glyphs
    return n


def line_stats(gray: np.ndarray, candidates_only: bool = False) -> list[tuple[Rect, int, float, float, bool]]:
    """Every line candidate of both polarities: character count, ink contrast, ink uniformity.

    ``candidates_only`` skips the measures of lines the screen drops anyway (fewer than 2 characters,
    then uniformity below MIN_INK_UNIFORMITY): speckle yields dozens of such groups per frame.

    Uniformity is measured on the stroke cores (hat ≥ half its line maximum) so anti-aliased glyph
    edges do not count against it. Contrast compares the ink level with the median of a ring around
    the line: real text differs from its surroundings, while the gaps between letters (which look
    like strokes of the other polarity) have the surroundings' own value.
    """
    return [(r, n, c, u, b) for r, n, c, u, b, _lvl, _f in _line_stats(gray, candidates_only)]


def level_maps(gray: np.ndarray) -> list[tuple[bool, np.ndarray]]:
    """Binary maps (uint8 0/1) of the pixels at the frame's extreme values, brightest then darkest.

    Burned-in text is drawn in one value, usually the extreme one. Over a textured background (US
    speckle, anatomy) its strokes touch the texture's own thin structures and the stroke maps see one
    large blob; the pixels at the ink's exact value still form separate glyphs.
    """
    out = []
    hi, lo = int(gray.max()), int(gray.min())
    for bright, ok, level in ((True, hi >= 128, gray >= hi - LEVEL_TOLERANCE),
                              (False, lo <= 127, gray <= lo + LEVEL_TOLERANCE)):
        if ok:
            out.append((bright, level.view(np.uint8)))
    return out


def _line_stats(gray: np.ndarray, candidates_only: bool = False
                ) -> list[tuple[Rect, int, float, float, bool, bool, float]]:
    """``line_stats`` plus whether each line came from a level map (else from a stroke map) and the mean
    fill of its components (ink pixels over their box: glyph strokes ~0.2-0.6, filled blobs ~0.8)."""
    out: list[tuple[Rect, int, float, float, bool, bool, float]] = []
    # faint candidate lines, and (by index in ``out``) those among them no stronger than their ring's noise
    faint, grains = 0, set[int]()
    rows, cols = gray.shape
    top, black = stroke_hats(gray)
    maps: list[tuple[bool, np.ndarray, np.ndarray | None]] = [
        (True, (top >= STROKE_CONTRAST).astype(np.uint8), top),
        (False, (black >= STROKE_CONTRAST).astype(np.uint8), black)]
    maps += [(b, m, None) for b, m in level_maps(gray)]
    for bright, strokes, hat in maps:
        chars = _char_components(strokes)
        if not len(chars):
            continue
        for g in [sub for whole in _group_lines(chars) for sub in [whole, *_stacked_rows(chars, whole)]]:
            xs = chars[g]
            n = _char_count(xs)
            if candidates_only and n < 2:
                continue
            if hat is None and (n < 3 or int((xs[:, 1] + xs[:, 3]).max() - xs[:, 1].min())
                                > 2 * float(np.median(xs[:, 3]))):
                continue  # a level line must look like printed text: 3+ glyphs on one straight row
            x0, y0 = int(xs[:, 0].min()), int(xs[:, 1].min())
            x1, y1 = int((xs[:, 0] + xs[:, 2]).max()), int((xs[:, 1] + xs[:, 3]).max())
            crop = gray[y0:y1, x0:x1]
            if hat is None:  # a level map: its pixels are the ink
                core = crop[strokes[y0:y1, x0:x1] > 0].astype(np.int16)
            else:
                h_crop = hat[y0:y1, x0:x1]
                core = crop[h_crop >= max(STROKE_CONTRAST, int(h_crop.max()) // 2)].astype(np.int16)
            ref = int(_quantile(core, 0.9 if bright else 0.1)) if core.size else 0
            uniform = float(np.mean(np.abs(core - ref) <= INK_TOLERANCE)) if core.size else 0.0
            if candidates_only and (uniform < HIGH_CONTRAST_UNIFORMITY
                                    or (uniform < MIN_INK_UNIFORMITY and n < HIGH_CONTRAST_CHARS)):
                continue
            m = 3
            ring = gray[max(0, y0 - m):y1 + m, max(0, x0 - m):x1 + m].astype(np.int16)
            inner = np.zeros(ring.shape, dtype=bool)
            inner[y0 - max(0, y0 - m):y0 - max(0, y0 - m) + (y1 - y0),
                  x0 - max(0, x0 - m):x0 - max(0, x0 - m) + (x1 - x0)] = True
            around = ring[~inner]
            contrast = float(abs(ref - _quantile(around, 0.5))) if around.size else 255.0
            if candidates_only and uniform < MIN_INK_UNIFORMITY and contrast < HIGH_CONTRAST:
                continue
            if candidates_only and contrast < NOISE_CHECK_CONTRAST:
                faint += 1
                # a level-map line (3+ glyphs in a straight row at the frame's extreme value: dark text on
                # speckle) is ink by its own test, not a grain of the noise around it
                if hat is not None and around.size >= 8 and contrast < NOISE_RATIO * (
                        _quantile(around, 0.75) - _quantile(around, 0.25)) / 1.349:
                    grains.add(len(out))  # ink that does not stand out from the noise around it
            fill = float(np.mean(xs[:, 4] / np.maximum(xs[:, 2] * xs[:, 3], 1)))
            out.append((Rect(x0, y0, x1 - x0, y1 - y0), n, contrast, uniform, bright, hat is None, fill))
    if faint > NOISE_CROWD:  # a frame full of faint lines is noise: drop those that are grains of it
        out = [t for i, t in enumerate(out) if i not in grains]
    out.sort(key=lambda t: (t[0].y, t[0].x, t[4], t[5]))
    return out


def candidate_regions(gray: np.ndarray) -> list[Rect]:
    """Rectangles (unpadded, sorted top-left first) that may contain text lines."""
    if gray.ndim != 2 or gray.size == 0:
        return []
    # burned-in text is drawn in one value: its ink is uniform, anatomy's thin structures are not
    return [r for r, _bright in polar_regions(gray)]


#: A line this distinct from its surroundings, with this many characters of uniform ink, is text beyond
#: doubt (burned-in annotation is drawn near the extreme value; speckle and anatomy seams stay far below).
STRONG_CONTRAST, STRONG_CHARS, STRONG_UNIFORMITY = 150, 3, 0.5
#: ... made of strokes: a row of filled blobs (an endoscope's specular highlights, stained nuclei: mean fill
#: of their boxes ~0.75-0.8) is no line of glyphs (~0.2-0.6), however bright; it is left to its reading.
STRONG_MAX_FILL = 0.7


#: A candidate of uniform ink standing out from its ring by this much is never shadowed by one of the other
#: polarity in the same place (``scored_regions``).
BOTH_POLARITIES_CONTRAST = 90


def polar_regions(gray: np.ndarray) -> list[tuple[Rect, bool]]:
    """Candidate lines with their polarity (True = bright text on darker background)."""
    return [(r, b) for r, b, _strong in scored_regions(gray)]


def scored_regions(gray: np.ndarray) -> list[tuple[Rect, bool, bool]]:
    """Candidate lines with their polarity and whether they are strong (text without OCR's opinion)."""
    if gray.ndim != 2 or gray.size == 0:
        return []
    stats = [t for t in _line_stats(gray, candidates_only=True)
             if t[1] >= 2 and t[2] >= MIN_RING_CONTRAST and (t[3] >= MIN_INK_UNIFORMITY or (
                 t[1] >= HIGH_CONTRAST_CHARS and t[2] >= HIGH_CONTRAST and t[3] >= HIGH_CONTRAST_UNIFORMITY))]
    strokes = [(t[0], t[4]) for t in stats if not t[5]]
    # a level-map line that a stroke-map line of its polarity already covers adds nothing (text on a flat
    # background is in both); only the lines the stroke maps lost in texture are added (dark text under a
    # bright speckle "line" is not covered by it)
    # a line let in by its contrast alone (anti-aliased text) never shadows one of uniform ink
    cands = [(r, b, (u >= MIN_INK_UNIFORMITY, c, u),
              n >= STRONG_CHARS and c >= STRONG_CONTRAST and u >= STRONG_UNIFORMITY and f <= STRONG_MAX_FILL)
             for r, n, c, u, b, lvl, f in stats
             if not (lvl and any(ob == b and _covers(o, r) for o, ob in strokes))]
    out = []
    for r, b, score, strong in cands:
        # the gaps between bright letters look like dark strokes (and vice versa): where candidates of
        # opposite polarity cover the same place keep the one whose ink stands out from its ring. The gaps have
        # their surroundings' value: a line whose uniform ink stands out by BOTH_POLARITIES_CONTRAST is ink of its
        # own (grey text running from a dark border onto a bright field is bright on one, dark on the other: an
        # XA audit's name, ID and birth date were written unmasked when the dark half shadowed the bright)
        shadowed = False
        if score[0] and score[1] >= BOTH_POLARITIES_CONTRAST:
            out.append((r, b, strong))
            continue
        for r2, b2, score2, _s2 in cands:
            if b2 == b or (score2, b2) <= (score, b):
                continue
            ix = min(r.x + r.w, r2.x + r2.w) - max(r.x, r2.x)
            iy = min(r.y + r.h, r2.y + r2.h) - max(r.y, r2.y)
            # ... of about the same place and size: a small blob of the other polarity inside a long line (the
            # gap in an "N" of 90-px text, ringed by ink) does not shadow the line, nor a wide region of bright
            # speckle the dark text line inside it
            if ix > 0 and iy > 0 and ix * iy >= 0.5 * min(r.w * r.h, r2.w * r2.h) and \
                    0.5 * r.w * r.h <= r2.w * r2.h <= 2 * r.w * r.h:
                shadowed = True
                break
        if not shadowed:
            out.append((r, b, strong))
    return out


#: Vertical text (side labels of radiographs and mammograms, rotated 90 degrees, turned pages and captures) is
#: searched over the whole frame, transposed (it was searched in bands along the left and right edges, a fifth
#: of the width each: an audit's sweep planted labels further in, 11 lines of PHI were written unmasked), on
#: frames at least VERTICAL_MIN_SIDE on their short side; a vertical candidate needs VERTICAL_MIN_CHARS
#: characters at ring contrast VERTICAL_MIN_CONTRAST (labels are drawn near the extreme value; a spine or a
#: rib edge seen end-on is not), and to run at least twice as long as it is wide. (VERTICAL_MIN_SIDE was 256:
#: an audit wrote 36 vertical lines of PHI unmasked on frames of 96-255 px.)
VERTICAL_MIN_SIDE, VERTICAL_MIN_CHARS, VERTICAL_MIN_CONTRAST = 96, 3, 150


def _straight(gray: np.ndarray, line: Rect, bright: bool) -> bool:
    """Whether a candidate line's stroke pixels keep to one band: their rows, column by column, stay
    within the line's middle (printed text sits on a baseline; an arc of bone drifts across the band)."""
    top, black = stroke_hats(gray[line.y:line.y + line.h, line.x:line.x + line.w])
    ink = (top if bright else black) >= STROKE_CONTRAST
    cols = np.flatnonzero(ink.any(axis=0))
    if cols.size < 4:
        return False
    rows = np.arange(line.h)[:, None]
    centres = (ink * rows).sum(axis=0)[cols] / ink.sum(axis=0)[cols]
    quarter = max(1, cols.size // 4)  # the mean centre of the first and last quarter of the columns
    return abs(float(centres[:quarter].mean()) - float(centres[-quarter:].mean())) <= 0.25 * line.h


def vertical_regions(gray: np.ndarray) -> list[tuple[Rect, bool, bool]]:
    """Candidate lines of text running top-to-bottom or bottom-to-top, in frame coordinates, with polarity
    and strength as ``scored_regions`` gives them. The frame is screened transposed, so a vertical line is
    an ordinary row of glyphs there."""
    if gray.ndim != 2 or min(gray.shape) < VERTICAL_MIN_SIDE:
        return []
    found: dict[Rect, tuple[bool, bool, float]] = {}
    t = np.ascontiguousarray(gray.T)
    for r, n, c, u, b, _lvl, f in _line_stats(t, candidates_only=True):
        if n < VERTICAL_MIN_CHARS or c < VERTICAL_MIN_CONTRAST or r.w < 2 * r.h or (
                u < MIN_INK_UNIFORMITY and (c < HIGH_CONTRAST or u < HIGH_CONTRAST_UNIFORMITY)):
            continue
        if not _straight(t, r, b):
            continue  # a curve (the side of a skull), not a row of glyphs
        rect = Rect(r.y, r.x, r.h, r.w)
        strong = n >= STRONG_CHARS and c >= STRONG_CONTRAST and u >= STRONG_UNIFORMITY and f <= STRONG_MAX_FILL
        if any(_covers(o, rect) and oc >= c for o, (_ob, _os, oc) in found.items()):
            continue  # the same line from a level map or the other polarity, standing out less
        found = {o: v for o, v in found.items() if not (_covers(rect, o) and v[2] <= c)}
        found[rect] = (b, strong, c)
    return sorted(((r, b, s) for r, (b, s, _c) in found.items()), key=lambda t: (t[0].x, t[0].y))


#: A candidate taller than this is no line of text but a region of merged texture (pixel noise whose grains
#: at the frame's extreme values chain into one component from edge to edge); it is read like any candidate,
#: but never stands for the lines inside it (``_covers``). An audit's sweep: "28-Dec-2022" in 26-px glyphs
#: over noise, a 512x512 "line" of the noise covered it in both views and it was never read.
MAX_LINE_H = 2 * MAX_CHAR_H


def _covers(outer: Rect, inner: Rect) -> bool:
    """Whether ``outer`` covers at least 80 % of ``inner`` (never when ``outer`` is taller than a line and
    ``inner`` is not: a region of merged texture does not stand for a line inside it)."""
    if outer.h > MAX_LINE_H and inner.h <= MAX_LINE_H:
        return False
    ix = min(outer.x + outer.w, inner.x + inner.w) - max(outer.x, inner.x)
    iy = min(outer.y + outer.h, inner.y + inner.h) - max(outer.y, inner.y)
    return ix > 0 and iy > 0 and ix * iy >= 0.8 * inner.w * inner.h
