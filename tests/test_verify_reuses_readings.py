"""Verification reads every candidate line of the output pixels, through the per-process memo of crop
readings: a frame the pixel stage left unchanged costs no second OCR, a masked frame is read afresh."""

from __future__ import annotations

import copy

import pydicom
from pydicom.data import get_testdata_file

from deid_core.pixels import PHI, apply_boxes, find_text_boxes
from deid_core.pixels.plant import plant_stored
from deid_core.terms import capture_terms
from deid_core.verify import LeakTerms, PixelVerifyStats, find_pixel_leaks
from tests.test_pixels_texture import CountingEngine, speckle_image


def test_unchanged_frame_is_verified_without_a_second_ocr() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # bone edges are candidate lines: OCR runs
    terms = capture_terms(ds)
    eng = CountingEngine()
    result = find_text_boxes(ds, terms, PHI, engine=eng)  # type: ignore[arg-type]
    assert eng.calls > 0 and not result.boxes
    calls = eng.calls
    stats = PixelVerifyStats()
    assert find_pixel_leaks(ds, LeakTerms.capture(ds, terms), eng, stats) == []
    assert eng.calls == calls and stats.frames_screened == 1 and stats.frames_ocr == 0


def test_masked_frame_is_read_again_and_a_left_identifier_is_found() -> None:
    ds = speckle_image(5)  # PatientID MRN4931421; the text goes on its flat black border
    plant_stored(ds, 0, "MRN4931421", 24, 1, 14)
    terms = capture_terms(ds)
    eng = CountingEngine()
    result = find_text_boxes(ds, terms, PHI, engine=eng)  # type: ignore[arg-type]
    assert result.boxes
    lt = LeakTerms.capture(ds, terms)
    # the unmasked original still shows the ID: verification reports it, from the memo alone
    calls = eng.calls
    assert [leak.kind for leak in find_pixel_leaks(ds, lt, eng)] == ["id"]
    assert eng.calls == calls
    masked = copy.deepcopy(ds)
    apply_boxes(masked, result)
    stats = PixelVerifyStats()
    assert find_pixel_leaks(masked, lt, eng, stats) == []
    assert stats.frames_screened == 1
