"""Burned-in text is found and masked on every pixel layout; everything else stays bit-identical."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import decompress, pixel_array
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from deid_core.errors import PixelError
from deid_core.pixels import Box, PixelResult, apply_boxes, find_text_boxes, has_pixels
from deid_core.pixels.plant import coverage, plant_stored
from deid_core.terms import PhiTerms, capture_terms


def load(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    assert path, name
    return pydicom.dcmread(path)


def native(name: str) -> pydicom.Dataset:
    ds = load(name)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        decompress(ds, as_rgb=False, generate_instance_uid=False)
    return ds


# (file, font size, bright) — covers MONOCHROME2 signed/unsigned 8/16 bit, RGB, planar 1, YBR_FULL,
# YBR_FULL_422 (native), PALETTE COLOR, big endian
LAYOUTS = [
    ("CT_small.dcm", 14, True),
    ("CT_small.dcm", 14, False),
    ("693_UNCR.dcm", 24, True),
    ("image_dfl.dcm", 32, True),
    ("color-pl.dcm", 16, True),
    ("SC_ybr_full_422_uncompressed.dcm", 14, True),
    ("SC_ybr_full_uncompressed.dcm", 14, False),
    ("examples_palette.dcm", 20, True),
    ("ExplVR_BigEnd.dcm", 12, False),
    ("US1_UNCR.dcm", 16, False),
]


@pytest.mark.parametrize("name,size,bright", LAYOUTS)
def test_planted_id_found_masked_rest_identical(name: str, size: int, bright: bool) -> None:
    ds = native(name)
    y = int(ds.Rows) // 2 if int(ds.Rows) > 100 else 2
    planted = plant_stored(ds, 0, "4829173", 2, y, size, bright=bright)
    before = pixel_array(ds, raw=True).copy()
    pi, ts = ds.PhotometricInterpretation, ds.file_meta.TransferSyntaxUID
    result = find_text_boxes(ds, PhiTerms(), "phi")
    assert result.complete and not result.prescreen_skipped
    assert coverage(planted, result.boxes) >= 0.9, result.boxes
    apply_boxes(ds, result)
    assert ds.PhotometricInterpretation == pi and ds.file_meta.TransferSyntaxUID == ts
    after = pixel_array(ds, raw=True)
    outside = np.ones(before.shape[:2], dtype=bool)
    for b in result.boxes:  # the recorded boxes are exactly the masked rectangles
        outside[b.y:b.y + b.h, b.x:b.x + b.w] = False
    assert np.array_equal(before[outside], after[outside])
    # the text is gone: the planted region is now (almost) one value
    region = after[planted.y:planted.y + planted.h, planted.x:planted.x + planted.w]
    assert len(np.unique(region.reshape(-1, *region.shape[2:]), axis=0)) == 1


@pytest.mark.parametrize("name,ts", [("SC_rgb_rle.dcm", RLELossless), ("MR_small_RLE.dcm", RLELossless),
                                     ("MR_small_jp2klossless.dcm", JPEG2000Lossless),
                                     ("MR_small_jpeg_ls_lossless.dcm", ExplicitVRLittleEndian)])
def test_lossless_compressed_round_trip(name: str, ts: str) -> None:
    ds = load(name)
    before = pixel_array(ds).copy()
    result = PixelResult(boxes=[Box(0, 3, 4, 10, 6, "id", 90.0)], frames=1, frames_checked=1, frames_ocr=1,
                         prescreen_skipped=False, engine="tesseract")
    apply_boxes(ds, result)
    assert ds.file_meta.TransferSyntaxUID == ts
    after = pixel_array(ds)
    assert after.shape == before.shape
    keep = np.ones(before.shape[:2], dtype=bool)
    keep[4:10, 3:13] = False  # exactly the box: apply_boxes adds no padding of its own
    assert np.array_equal(before[keep], after[keep])
    assert len(np.unique(after[4:10, 3:13].reshape(-1, *after.shape[2:]), axis=0)) == 1


def test_a_masked_ybr_rct_jpeg_2000_keeps_its_colour_transform() -> None:
    """Decoded to RGB for masking, examples_jpeg2k.dcm was re-encoded as "RGB" JPEG 2000: twice the size, and
    an error to dciodvfy. It is re-encoded with the reversible colour transform, as stored."""
    ds = load("examples_jpeg2k.dcm")
    assert ds.PhotometricInterpretation == "YBR_RCT"
    before = pixel_array(ds).copy()  # RGB
    apply_boxes(ds, PixelResult(boxes=[Box(0, 3, 4, 10, 6, "id", 90.0)], frames=1, frames_checked=1,
                                frames_ocr=1, prescreen_skipped=False, engine="tesseract"))
    assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless and ds.PhotometricInterpretation == "YBR_RCT"
    after = pixel_array(ds)
    keep = np.ones(before.shape[:2], dtype=bool)
    keep[4:10, 3:13] = False
    assert np.array_equal(before[keep], after[keep]) and not after[4:10, 3:13].any()


def test_planted_text_found_through_rle_and_j2k() -> None:
    for ts in (RLELossless, JPEG2000Lossless):
        ds = native("CT_small.dcm")
        planted = plant_stored(ds, 0, "55512873", 2, 100, 14)
        ds.compress(ts, generate_instance_uid=False)
        result = find_text_boxes(ds, PhiTerms(), "phi")
        assert coverage(planted, result.boxes) >= 0.9
        apply_boxes(ds, result)
        assert ds.file_meta.TransferSyntaxUID == ts


def test_multiframe_text_on_frame_3_only() -> None:
    ds = native("CT_small.dcm")
    one = ds.PixelData
    ds.PixelData = one * 5
    ds.NumberOfFrames = 5
    planted = plant_stored(ds, 3, "DOE JANE", 2, 100, 16)
    terms = PhiTerms()
    terms.add("Jane Doe", "name")
    terms.add("DOE", "name")
    terms.add("JANE", "name")
    result = find_text_boxes(ds, terms, "phi")
    assert result.frames == 5 and result.frames_checked == 5 and result.complete
    assert result.frames_ocr <= 2  # identical frames are not OCR'd twice
    assert {b.frame for b in result.boxes} == {3}
    assert coverage(planted, result.boxes) >= 0.9
    apply_boxes(ds, result)
    frames = pixel_array(ds)
    assert np.array_equal(frames[0], frames[4])
    assert not np.array_equal(frames[3], frames[0])


def test_phi_policy_keeps_annotation_masks_identifiers() -> None:
    ds = native("693_UNCR.dcm")
    ds.PatientName = "SMITH^JOHN"
    ds.PatientID = "4829173"
    ds.StudyDate = "20210314"
    name = plant_stored(ds, 0, "SMITH, JOHN", 10, 10, 18)
    pid = plant_stored(ds, 0, "4829173", 10, 40, 18)
    date = plant_stored(ds, 0, "03/14/2021", 300, 10, 18)
    keep = plant_stored(ds, 0, "5.0 MHz", 300, 470, 18)
    result = find_text_boxes(ds, capture_terms(ds), "phi")
    for p in (name, pid, date):
        assert coverage(p, result.boxes) >= 0.9
    assert coverage(keep, result.boxes) < 0.1
    kinds = {b.kind for b in result.boxes}
    assert "name" in kinds and "date" in kinds
    # all-text masks the annotation too
    everything = find_text_boxes(ds, capture_terms(ds), "all-text")
    assert coverage(keep, everything.boxes) >= 0.9


def test_prescreen_skips_text_free_and_never_planted() -> None:
    ds = load("rtdose.dcm")
    result = find_text_boxes(ds, PhiTerms(), "phi")
    assert result.prescreen_skipped and result.frames_ocr == 0 and not result.boxes and result.complete
    # a 1-bit segmentation is searched as 0/255 since 1-bit images can carry text (test_pixels_unseen): its
    # mask edges are candidates the reading clears
    result = find_text_boxes(load("liver_1frame.dcm"), PhiTerms(), "phi")
    assert not result.boxes and result.complete
    for size in (12, 16, 24, 32):
        for x, y, bright in ((2, 2, True), (300, 400, False), (150, 200, True)):
            ds = native("693_UNCR.dcm")
            plant_stored(ds, 0, "AB 12345", x, y, size, bright=bright)
            result = find_text_boxes(ds, PhiTerms(), "all-text")
            assert not result.prescreen_skipped, (size, x, y)


def test_lossy_refused_without_flag() -> None:
    ds = load("SC_rgb_dcmtk_+eb+cy+np.dcm")
    result = PixelResult(boxes=[Box(0, 10, 10, 20, 10, "text", 80.0)], frames=1, frames_checked=1,
                         frames_ocr=1, prescreen_skipped=False, engine="tesseract")
    with pytest.raises(PixelError, match="allow_lossy_reencode"):
        apply_boxes(ds, result)
    apply_boxes(ds, result, allow_lossy_reencode=True)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.LossyImageCompression == "01" and ds.PhotometricInterpretation == "RGB"
    arr = pixel_array(ds)
    assert (arr[10:20, 10:30] == 0).all()


def test_empty_result_leaves_pixels_untouched() -> None:
    ds = load("SC_rgb_rle.dcm")
    raw = ds.PixelData
    apply_boxes(ds, PixelResult(boxes=[], frames=1, frames_checked=1))
    assert ds.PixelData is raw and ds.file_meta.TransferSyntaxUID == RLELossless


def test_undecodable_pixels_raise() -> None:
    ds = load("CT_small.dcm")
    ds.PixelData = ds.PixelData[:100]
    with pytest.raises(PixelError, match="decoded"):
        find_text_boxes(ds, PhiTerms(), "phi")
    ds = load("SC_rgb_rle.dcm")
    ds.PixelData = ds.PixelData[:40] + b"\xff" * 40
    with pytest.raises(PixelError, match="decoded"):
        find_text_boxes(ds, PhiTerms(), "phi")
    assert has_pixels(load("CT_small.dcm")) and not has_pixels(load("rtplan.dcm"))
