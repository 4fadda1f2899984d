"""When a garbled, low-confidence reading is masked as "unsure" (issue 3: text-free images; issue 5: fail closed).

A candidate line that OCR reads with confidence as non-identifying text stays. One it reads only garbled,
at low confidence, is masked as "unsure" where text could be hiding behind the garble: over texture
(speckle, anatomy), or where the line's ink is drawn in one value, as burned-in text is. On a flat
background, where text reads well, garble read from ink that is not one value is anatomy: the bright
edges of the vertebra in pydicom's CT_small read as "IHF" at 14 % and were masked in 1 of 10 noisy copies
of that text-free slice.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from deid_core.pixels import PHI, find_text_boxes
from deid_core.pixels.ocr import OcrWord
from deid_core.pixels.plant import coverage, plant_stored
from deid_core.pixels.prescreen import SOLID_UNIFORMITY, scored_lines
from deid_core.terms import capture_terms

#: Rows of CT_small's vertebra, the candidate line its bone edges make.
VERTEBRA_ROWS = range(45, 80)


def noisy_ct(i: int) -> Dataset:
    """CT_small with faint noise of its own (±1 % of its range), as bench/tag_throughput.py builds its
    text-free CT files."""
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    px = ds.pixel_array.astype(np.int64)
    lo, hi = int(px.min()), int(px.max())
    amp = max(1, (hi - lo) // 100)
    noise = np.random.default_rng([11, i]).integers(-amp, amp + 1, size=px.shape)
    ds.PixelData = np.clip(px + noise, lo, hi).astype(ds.pixel_array.dtype).tobytes()
    return ds


def on_vertebra(boxes: list) -> list:  # type: ignore[type-arg]
    return [b for b in boxes if b.y + b.h > VERTEBRA_ROWS.start and b.y < VERTEBRA_ROWS.stop]


@pytest.mark.parametrize("i", [14, 19, 62, 72, 85])
def test_bone_edges_of_a_text_free_ct_are_not_masked(i: int) -> None:
    """Real Tesseract: these copies each had the vertebra masked as "unsure" before the rule."""
    ds = noisy_ct(i)
    result = find_text_boxes(ds, capture_terms(ds), PHI)
    assert result.complete
    assert on_vertebra(result.boxes) == []


class GarbleEngine:
    """Reads every crop as one garbled word at confidence 30 (what OCR makes of a hard crop), so the
    decision that follows such a reading is tested on its own."""

    name = "garble"

    def words(self, image: np.ndarray, psm: int | None = None) -> list[OcrWord]:
        h, w = image.shape
        return [OcrWord("XQZW", 4, 4, max(1, w - 8), max(1, h - 8), 30.0)]


def test_garble_from_solid_ink_on_a_flat_background_is_masked() -> None:
    """Text drawn in one value on a flat background that OCR can only garble: masked, fail closed."""
    ds = pydicom.dcmread(str(get_testdata_file("CT_small.dcm")))
    flat = np.full((int(ds.Rows), int(ds.Columns)), 900, dtype=ds.pixel_array.dtype)
    flat[0, 0] = 0  # a window with some depth below the background
    ds.PixelData = flat.tobytes()
    planted = plant_stored(ds, 0, "AXIAL 5MM", 20, 60, 12)
    result = find_text_boxes(ds, capture_terms(ds), PHI, GarbleEngine())
    unsure = [b for b in result.boxes if b.kind == "unsure"]
    assert unsure and coverage(planted, unsure) >= 0.9


def test_garble_from_bone_edges_on_a_flat_background_is_kept() -> None:
    """The same garbled reading of the vertebra's line (ink not drawn in one value) masks nothing there."""
    ds = noisy_ct(14)
    result = find_text_boxes(ds, capture_terms(ds), PHI, GarbleEngine())
    assert result.complete
    assert on_vertebra(result.boxes) == []


def test_solid_means_ink_in_one_value() -> None:
    """The screen's own measure: planted text is solid, the vertebra's edges are not."""
    from deid_core.pixels.decode import iter_gray_views

    gray, _ = next(iter(iter_gray_views(noisy_ct(14))))
    bone = [t for t in scored_lines(gray) if t[0].y in VERTEBRA_ROWS]
    assert bone and not any(solid for _r, _b, _s, solid in bone)
    plant_stored(ds := noisy_ct(14), 0, "AXIAL 5MM", 20, 100, 12)
    gray, _ = next(iter(iter_gray_views(ds)))
    text = [t for t in scored_lines(gray) if t[0].y >= 95]
    assert text and all(solid for _r, _b, _s, solid in text)
    assert 0.5 < SOLID_UNIFORMITY < 1.0


class Counting:
    """The real Tesseract engine, counting its calls."""

    name = "tesseract-counting"

    def __init__(self) -> None:
        from deid_core.pixels.ocr import get_engine

        self.inner = get_engine()
        self.calls = 0

    def words(self, image: np.ndarray, psm: int | None = None) -> list[OcrWord]:
        self.calls += 1
        return self.inner.words(image, psm)


def test_ink_not_in_one_value_on_a_flat_background_is_read_once() -> None:
    """The vertebra's line (flat background, ink not solid) gets the Otsu reading only; the same line
    taken as solid would also get the stroke map's reading (Otsu reads nothing sure there)."""
    from deid_core.pixels import _busy_background, _read_line, frame_lines
    from deid_core.pixels.decode import iter_gray_views

    gray, _ = next(iter(iter_gray_views(noisy_ct(14))))
    (line, bright), = [(r, b) for r, b in frame_lines(gray) if r.y in VERTEBRA_ROWS]
    assert not _busy_background(gray, line)
    calls = []
    for solid in (False, True):
        eng = Counting()
        _read_line(gray, line, bright, eng, {}, solid=solid)
        calls.append(eng.calls)
    assert calls == [1, 2]
