"""Burned-in text and pixel layouts our own planter does not make (an audit on data the tool had never
seen): anti-aliased TrueType text, text in the bits above HighBit, outlined labels over speckle, and the
other side of recall, a noisy text-free MR slice that must keep its anatomy.

Text is drawn with Pillow's own scalable font (no system font needed), anti-aliased and alpha-blended
into the stored values, as a PIL-based generator or a modern console renders it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from deid_core.config import DeidConfig
from deid_core.pipeline import deidentify_file
from deid_core.pixels.mask import clear_unused_bits
from tests.conftest import TEST_KEY

NAME, PID = "SMITH^JOHN", "MRN-482917"


def _ds(arr: np.ndarray, modality: str, bits_stored: int | None = None) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4",
                      "US": "1.2.840.10008.5.1.4.1.1.6.1"}[modality]
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[modality, str(arr.sum())])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = ds.SeriesInstanceUID = generate_uid(entropy_srcs=["study"])
    ds.Modality, ds.PatientName, ds.PatientID, ds.PatientBirthDate = modality, NAME, PID, "19610304"
    ds.StudyDate = "20240105"
    color = arr.ndim == 3
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 3 if color else 1
    ds.PhotometricInterpretation = "RGB" if color else "MONOCHROME2"
    if color:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
    return ds


def _alpha(shape: tuple[int, int], text: str, xy: tuple[int, int], size: int, *, stroke: int = 0,
           supersample: int = 1) -> np.ndarray:
    """Coverage (0..1) of ``text``; ``supersample`` k renders at k times the size and averages k x k blocks
    (box-filtered anti-aliasing: thin strokes spread over pixels of partial coverage)."""
    k = supersample
    img = Image.new("L", (shape[1] * k, shape[0] * k), 0)
    ImageDraw.Draw(img).text((xy[0] * k, xy[1] * k), text, fill=255, font=ImageFont.load_default(size=size * k),
                             stroke_width=stroke * k, stroke_fill=255)
    cover = np.asarray(img, dtype=np.float64).reshape(shape[0], k, shape[1], k).mean(axis=(1, 3))
    return cover / 255.0


def _run(tmp_path: Path, ds: Dataset) -> tuple[object, Dataset | None]:
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    out = deidentify_file(src, DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out"))
    return out, (pydicom.dcmread(tmp_path / "out" / out.output_path) if out.status == "written" else None)


def _assert_boxes_mask(tmp_path: Path, ds: Dataset, ink: np.ndarray) -> None:
    """``ds`` is written with 90 % of its ink (coverage >= 0.5) under the recorded boxes, which are the filled
    rectangles (filled with 0: black ink is "unchanged" there, so the boxes say what was masked)."""
    out, res = _run(tmp_path, ds)
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    masked = np.zeros(ink.shape, dtype=bool)
    for b in out.boxes:  # type: ignore[attr-defined]
        masked[b["y"]:b["y"] + b["h"], b["x"]:b["x"] + b["w"]] = True
    assert masked[ink >= 0.5].mean() >= 0.9
    assert (res.pixel_array[masked] == 0).all()


def _ct(seed: int = 0, bone: bool = True) -> np.ndarray:
    """A 512x512 CT slice in HU: air, a soft-tissue body and (``bone``) a vertebra."""
    rng = np.random.default_rng(seed)
    n = 512
    yy, xx = np.mgrid[:n, :n]
    arr = np.full((n, n), -1000.0)
    body = ((xx - n / 2) / (n * 0.38)) ** 2 + ((yy - n / 2) / (n * 0.3)) ** 2 <= 1
    arr[body] = 40 + rng.normal(0, 15, body.sum())
    if bone:
        spine = ((xx - n / 2) / (n * 0.05)) ** 2 + ((yy - n * 0.62) / (n * 0.05)) ** 2 <= 1
        arr[spine] = 900 + rng.normal(0, 40, spine.sum())
    return arr


@pytest.mark.parametrize("size", [9, 10, 12])
@pytest.mark.parametrize("text", ["SMITH, JOHN", "MRN-482917", "03/04/1961"])
def test_anti_aliased_small_text_is_masked(tmp_path: Path, size: int, text: str) -> None:
    """Anti-aliased glyphs of 9-12 px have few pixels at the ink value (ink uniformity 0.22-0.34 here, under
    the pre-screen's 0.35), but a contrast with their surroundings no anatomy reaches."""
    arr = _ct()
    a = _alpha(arr.shape, text, (10, 10), size, supersample=3)
    arr = arr * (1 - a) + 3071 * a
    out, ds = _run(tmp_path, _ds(np.round(arr).astype(np.int16), "CT"))
    assert out.status == "written" and ds is not None  # type: ignore[attr-defined]
    ink = a >= 0.5
    changed = ds.pixel_array != np.round(arr).astype(np.int16)
    assert changed[ink].mean() >= 0.9


def test_noisy_text_free_mr_keeps_its_anatomy(tmp_path: Path) -> None:
    """A noisy MR slice (SNR ~13): a hundred chains of noise grains used to be candidate lines, and OCR's
    low-confidence readings of some masked 10-31 % of the head as 'unsure'."""
    rng = np.random.default_rng(5)
    n = 512
    yy, xx = np.mgrid[:n, :n]
    head = ((xx - n / 2) / (n * 0.4)) ** 2 + ((yy - n / 2) / (n * 0.43)) ** 2 <= 1
    arr = (np.where(head, 800.0, 0.0) + rng.normal(0, 60, (n, n))).clip(0, 4095).astype(np.uint16)
    out, ds = _run(tmp_path, _ds(arr, "MR", bits_stored=12))
    assert out.status == "written" and ds is not None  # type: ignore[attr-defined]
    assert out.boxes == []  # type: ignore[attr-defined]
    assert np.array_equal(ds.pixel_array, arr)


def _declare_overlay_in_pixels(ds: Dataset, bit: int) -> None:
    """An overlay group of the retired convention: its plane is bit ``bit`` of PixelData (no OverlayData)."""
    ds.add_new(0x60000010, "US", ds.Rows)
    ds.add_new(0x60000011, "US", ds.Columns)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", bit)


def test_text_in_the_bits_above_high_bit_is_cleared(tmp_path: Path) -> None:
    """The retired overlay-in-pixel-data convention: 1-bit text in bit 15 of 12-bit data, declared by an
    overlay group without OverlayData. No view of the image shows it (readers honour BitsStored), so no
    OCR can find it: that plane is cleared."""
    rng = np.random.default_rng(9)
    arr = rng.normal(800, 20, (256, 256)).clip(0, 4095).astype(np.uint16)
    clean = arr.copy()
    arr[_alpha(arr.shape, "SMITH, JOHN MRN-482917", (5, 5), 14) >= 0.5] |= 0x8000
    ds = _ds(arr, "MR", bits_stored=12)
    _declare_overlay_in_pixels(ds, 15)
    out, res = _run(tmp_path, ds)
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    assert out.actions.get("unused_pixel_bits_cleared") == 1  # type: ignore[attr-defined]
    assert np.array_equal(np.frombuffer(res.PixelData, "<u2").reshape(256, 256), clean)


@pytest.mark.parametrize(("dtype", "signed"), [("<u2", False), ("<i2", True), (">u2", False)])
def test_clear_unused_bits_clears_only_declared_overlay_planes(dtype: str, signed: bool) -> None:
    """Bits above HighBit that no overlay declares are the image's own (values that overflow BitsStored,
    signed data stored without sign extension): byte-identical. A declared plane is cleared, nothing else."""
    rng = np.random.default_rng(1)
    values = rng.integers(-2048 if signed else 0, 2048 if signed else 4096, (32, 32)).astype(dtype)
    ds = _ds(values.astype(values.dtype.newbyteorder("=")), "MR", bits_stored=12)
    if dtype.startswith(">"):
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRBigEndian
    dirty = values.view(dtype.replace("i", "u")).copy()
    dirty[:4] ^= np.array(0x4000, dtype=dirty.dtype)  # bit 14: above HighBit 11
    dirty[4:8] ^= np.array(0x2000, dtype=dirty.dtype)  # bit 13, which no overlay declares
    ds.PixelData = dirty.tobytes()
    before = ds.PixelData
    assert not clear_unused_bits(ds) and ds.PixelData == before  # nothing declared: untouched
    _declare_overlay_in_pixels(ds, 14)
    assert clear_unused_bits(ds)
    expected = dirty.copy()
    expected &= np.array(0xFFFF ^ 0x4000, dtype=dirty.dtype)
    assert ds.PixelData == expected.tobytes()


@pytest.mark.parametrize("seed", [30, 31, 32])
def test_outlined_label_over_speckle_is_masked_under_all_text(tmp_path: Path, seed: int) -> None:
    """A white label with a 1-px black outline over US speckle: the screen is sure of the label, but joined
    with speckle fragments beside it the line went to a reading that found no glyph. All-text masks what
    the screen is sure of."""
    rng = np.random.default_rng(seed)
    g = rng.rayleigh(45, (480, 640)).clip(0, 255).astype(np.uint8)
    im = Image.fromarray(np.stack([g, g, g], -1))
    ImageDraw.Draw(im).text((250, 200), "SMITH, JOHN", font=ImageFont.load_default(size=20), fill=(255, 255, 255),
                            stroke_width=1, stroke_fill=(0, 0, 0))
    rgb = np.asarray(im).copy()
    ink = _alpha(g.shape, "SMITH, JOHN", (250, 200), 20) >= 0.5
    out, ds = _run(tmp_path, _ds(rgb, "US"))
    assert out.status == "written" and ds is not None  # type: ignore[attr-defined]
    assert (ds.pixel_array[..., 0] != rgb[..., 0])[ink].mean() >= 0.9


@pytest.mark.parametrize(("background", "ink"), [((0, 0, 0), (0, 0, 255)), ((60, 60, 60), (255, 0, 0)),
                                                 ((128, 128, 128), (255, 0, 255))])
@pytest.mark.parametrize("modality", ["US", "CT"])
def test_coloured_text_with_little_luminance_contrast_is_masked(tmp_path: Path, background: tuple[int, ...],
                                                                 ink: tuple[int, ...], modality: str) -> None:
    """Blue on black, red on dark grey, magenta on mid grey: plainly legible, yet within 30 gray levels of
    their background in luminance. The chroma view shows them alone (US: all-text; an RGB file of another
    modality: phi, the header's name)."""
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[:] = background
    rgb[80:] = np.random.default_rng(3).rayleigh(30, (160, 320, 1)).clip(0, 255).astype(np.uint8)
    a = _alpha(rgb.shape[:2], "SMITH, JOHN", (15, 10), 18)
    rgb = np.round(rgb * (1 - a[..., None]) + np.array(ink) * a[..., None]).astype(np.uint8)
    ds = _ds(rgb, "US")
    ds.Modality = modality
    _assert_boxes_mask(tmp_path, ds, a)


def _ct_with_text(text: str) -> tuple[np.ndarray, np.ndarray]:
    arr = _ct(seed=2, bone=False)
    ink = _alpha(arr.shape, text, (10, 10), 16) >= 0.5
    arr[ink] = 3071
    return arr.astype(np.int16), ink


@pytest.mark.parametrize(("text", "header"), [
    ("SMITH, JOHN", {"PatientName": "ANONYMOUS", "PatientID": "ANON0001"}),  # header anonymised upstream
    ("DOE, JANE", {}), ("Dr. Robert Jones", {}), ("St. Mary's Hospital", {}), ("12 Maple Avenue", {}),
    ("ID 48 29 17", {"PatientID": "482917"})])
def test_burned_in_phi_the_header_does_not_spell_is_masked(tmp_path: Path, text: str,
                                                           header: dict[str, str]) -> None:
    arr, ink = _ct_with_text(text)
    ds = _ds(arr, "CT")
    for k, v in header.items():
        setattr(ds, k, v)
    out, res = _run(tmp_path, ds)
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    assert (res.pixel_array != arr)[ink].mean() >= 0.9


@pytest.mark.parametrize("text", ["AXIAL T2 FLAIR", "LEFT, PA VIEW"])
def test_clinical_text_stays_under_phi(tmp_path: Path, text: str) -> None:
    arr, _ink = _ct_with_text(text)
    out, res = _run(tmp_path, _ds(arr, "CT"))
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    assert out.boxes == [] and np.array_equal(res.pixel_array, arr)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("words", "kind"), [
    (["DWI", "b1000"], None), (["Img:", "45/120"], None), (["kVp", "120", "m", "As", "200"], None),
    (["HR", "65bpm"], None), (["TIS0.4", "MI", "1.4"], None), (["12.5MHz"], None), (["30fps"], None),  # US/XA overlays
    (["ID", "AB12C"], "id"), (["07/14/2023"], "date"), (["92", "M"], "age")])
def test_clinical_annotation_is_no_phi_pattern(words: list[str], kind: str | None) -> None:
    """Under phi an audit's console annotation was masked as PHI: the b-value "b1000" as a letter+digit ID,
    the image counter "45/120" as a 5-digit ID, and "120 m" (OCR's split of "120 mAs") as an age over 89."""
    from deid_core.pixels.match import build_lines, phi_words
    from deid_core.pixels.ocr import OcrWord
    from deid_core.terms import TermMatcher, capture_terms

    line = build_lines([OcrWord(t, 40 * i, 0, 36, 12, 92.0) for i, t in enumerate(words)])[0]
    found = set(phi_words(line, TermMatcher(capture_terms(Dataset())), use_presidio=False).values())
    assert found == ({kind} if kind else set())


@pytest.mark.parametrize(("text", "size"), [("SMITH, JOHN", 90), ("MRN-482917", 80)])
def test_large_text_on_a_large_image_is_masked(tmp_path: Path, text: str, size: int) -> None:
    """A label scaled to a 1024-px radiograph: strokes wider than the stroke maps' 9-px kernel, glyphs taller
    than MAX_CHAR_H. The half-resolution screen sees ordinary text."""
    rng = np.random.default_rng(4)
    n = 1024
    yy, xx = np.mgrid[:n, :n]
    arr = np.where(((xx - 600) / 300) ** 2 + ((yy - 600) / 380) ** 2 <= 1, 2200.0, 300.0)
    arr += rng.normal(0, 30, (n, n))
    a = _alpha(arr.shape, text, (20, 20), size) >= 0.5
    arr[a] = 4095
    arr = arr.clip(0, 4095).astype(np.uint16)
    ds = _ds(arr, "CT", bits_stored=12)
    ds.Modality = "DX"
    out, res = _run(tmp_path, ds)
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    assert (res.pixel_array != arr)[a].mean() >= 0.9


@pytest.mark.parametrize(("turn", "x"), [
    (1, 488), (3, 488),
    # away from the edges: vertical text was searched only in bands along the left and right edges (a fifth of
    # the width each), and labels further in (a turned capture, a label beside the anatomy) were written
    # unmasked (an audit: 11 lines); the whole frame is screened turned
    (1, 170),
])
def test_vertical_side_label_is_masked(tmp_path: Path, turn: int, x: int) -> None:
    """A name turned a quarter (as on a mammogram's or radiograph's side label): read on a turned crop,
    masked whole."""
    arr = _ct()
    label = _alpha((20, 140), "SMITH, JOHN", (2, 2), 14) >= 0.5
    label = np.rot90(label, turn)  # 140 x 20
    ink = np.zeros(arr.shape, bool)
    ink[150:290, x:x + 20] = label
    arr[ink] = 3071
    out, res = _run(tmp_path, _ds(np.round(arr).astype(np.int16), "CT"))
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    assert (res.pixel_array != np.round(arr).astype(np.int16))[ink].mean() >= 0.9


def test_text_block_columns_are_no_vertical_label(tmp_path: Path) -> None:
    """Left-aligned lines of clinical text: their first letters stack into columns, which are no side
    label; under phi the confidently read clinical lines stay as they are."""
    arr = _ct()
    ink = np.zeros(arr.shape, bool)
    for i, text in enumerate(["AXIAL T2 FLAIR", "CORONAL VIEW", "LEFT LATERAL VIEW", "CONTRAST AGENT"]):
        ink |= _alpha(arr.shape, text, (20, 20 + 30 * i), 16) >= 0.5
    arr[ink] = 3071
    out, res = _run(tmp_path, _ds(np.round(arr).astype(np.int16), "CT"))
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    assert out.boxes == []  # type: ignore[attr-defined]


def test_verification_reads_vertical_labels() -> None:
    """The verifier reads what the pixel stage reads: a name left on a side label is a leak."""
    from deid_core.terms import capture_terms
    from deid_core.verify import LeakTerms, find_pixel_leaks

    arr = _ct()
    label = np.rot90(_alpha((20, 140), "SMITH, JOHN", (2, 2), 14) >= 0.5, 1)
    arr[150:290, 488:508][label] = 3071
    ds = _ds(np.round(arr).astype(np.int16), "CT")
    leaks = find_pixel_leaks(ds, LeakTerms.capture(ds, capture_terms(ds)))
    assert [lk.kind for lk in leaks] == ["name"]


@pytest.mark.parametrize("name", ["emri_small.dcm", "eCT_Supplemental.dcm", "MR2_J2KR.dcm", "explicit_VR-UN.dcm",
                                  "MR-SIEMENS-DICOM-WithOverlays.dcm", "JPEG-LL.dcm"])
def test_text_free_bundled_images_keep_their_pixels(name: str) -> None:
    """Real text-free images: OCR's garble of sulci, bone and vessels, read unsure, used to be masked
    (up to 9 % of emri_small), and half-size candidates grown along their ink drew edge-to-edge bands on
    eCT_Supplemental. An unsure reading masks only a line that stands out like drawn text."""
    from pydicom.data import get_testdata_file

    from deid_core.pixels import find_text_boxes, pixel_policy_for
    from deid_core.terms import capture_terms

    ds = pydicom.dcmread(get_testdata_file(name))
    result = find_text_boxes(ds, capture_terms(ds), pixel_policy_for(str(ds.get("Modality", ""))))
    assert result.complete and result.boxes == []


@pytest.mark.parametrize("text", ["Siemens, Healthineers", "Philips, Ingenia", "Stress, Rest", "Inversion, Recovery"])
def test_maker_and_technique_pairs_are_no_display_names(tmp_path: Path, text: str) -> None:
    arr, _ink = _ct_with_text(text)
    out, res = _run(tmp_path, _ds(arr, "CT"))
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    assert out.boxes == []  # type: ignore[attr-defined]


def test_lossy_input_with_text_is_written_decompressed_unless_refused(tmp_path: Path) -> None:
    """A JPEG-baseline ultrasound cine with burned-in text: masked and written decompressed by default (never
    re-encoded lossy, LossyImageCompression kept "01"); ``allow_lossy_reencode=False`` (``--refuse-lossy``)
    quarantines it instead."""
    from pydicom.data import get_testdata_file

    src = Path(get_testdata_file("examples_ybr_color.dcm"))
    out = deidentify_file(src, DeidConfig(key=TEST_KEY, output_dir=tmp_path / "a"))
    assert out.status == "written" and out.boxes
    res = pydicom.dcmread(tmp_path / "a" / out.output_path)
    assert res.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and res.LossyImageCompression == "01"
    refused = deidentify_file(src, DeidConfig(key=TEST_KEY, output_dir=tmp_path / "b", allow_lossy_reencode=False))
    assert (refused.status, refused.reason) == ("quarantined", "pixel_error")


def test_cli_refuse_lossy_flag() -> None:
    from flows.cli import build_parser

    p = build_parser()
    assert p.parse_args(["run", "in", "out"]).allow_lossy_reencode is True
    assert p.parse_args(["run", "in", "out", "--refuse-lossy"]).allow_lossy_reencode is False


@pytest.mark.parametrize("index", [8, 776, 1571])
def test_garble_of_noisy_ct_slices_is_no_date_or_id(index: int) -> None:
    """CT_small with faint noise (the throughput benchmark's slices): OCR read its spine as "I-97" and
    "23=-?F". The first came within one edit of the study's year 1997 and the second passed as an
    alphanumeric ID, so 14 of 2,000 text-free slices were masked. A 4-character term now counts only
    spelled out (digit confusions allowed), and an ID is letters and digits only."""
    from pydicom.data import get_testdata_file

    from deid_core.pixels import find_text_boxes
    from deid_core.terms import capture_terms

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    pixels = ds.pixel_array.astype(np.int64)
    lo, hi = int(pixels.min()), int(pixels.max())
    amp = max(1, (hi - lo) // 100)
    noise = np.random.default_rng([11, index]).integers(-amp, amp + 1, size=pixels.shape)
    ds.PixelData = np.clip(pixels + noise, lo, hi).astype(ds.pixel_array.dtype).tobytes()
    ds.PatientBirthDate = "19521225"
    result = find_text_boxes(ds, capture_terms(ds), "phi")
    assert result.complete and result.boxes == []


def test_short_terms_match_only_spelled_out() -> None:
    from deid_core.pixels.match import _pattern_kind
    from deid_core.terms import TermMatcher, capture_terms

    header = Dataset()
    header.PatientName, header.StudyDate = "NGUYEN^GRACE", "19970430"
    matcher = TermMatcher(capture_terms(header))
    assert matcher.fuzzy_token_kind("I-97") is None
    assert matcher.fuzzy_token_kind("I997") == "date"  # OCR's letter for a digit still counts
    assert _pattern_kind("23=-?F") is None
    assert _pattern_kind("AB12C") == "id"


def _parametric_map(text: str, nan: bool = False) -> Dataset:
    """A float parametric map (ADC-like values around 2.5e-3) with ``text`` burned in at 3e-3 on frame 0."""
    yy, xx = np.mgrid[:256, :256]
    base = (np.exp(-((yy - 128) ** 2 + (xx - 128) ** 2) / 3000.0) * 2.5e-3).astype(np.float32)
    rng = np.random.default_rng(3)
    arr = np.stack([base + rng.normal(0, 5e-5, base.shape).astype(np.float32) for _ in range(2)])
    if text:
        arr[0][_alpha((256, 256), text, (10, 10), 14) > 0.5] = 3.0e-3
    if nan:
        arr[1, 200:210, 200:210] = np.nan
    ds = _ds(np.zeros((256, 256), np.uint8), "MR")
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.30"
    ds.BitsAllocated, ds.NumberOfFrames = 32, 2
    ds.FloatPixelData = arr.astype("<f4").tobytes()
    return ds


@pytest.mark.parametrize(("text", "nan"), [("SMITH, JOHN  MRN-482917", False), ("", True)])
def test_float_parametric_maps_are_searched_and_masked(tmp_path: Path, text: str, nan: bool) -> None:
    """Float Pixel Data (parametric maps) was quarantined unsearched: now every frame is searched (NaN shown
    as the floor), burned-in PHI masked with the frame's lowest value, and a text-free map kept bit for bit."""
    ds = _parametric_map(text, nan)
    src = tmp_path / "pm.dcm"
    ds.save_as(src, enforce_file_format=True)
    out = deidentify_file(src, DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out"))
    assert out.status == "written", out.error
    written = pydicom.dcmread(tmp_path / "out" / out.output_path)
    if text:
        assert [b["kind"] for b in out.boxes] == ["name"] and written.FloatPixelData != ds.FloatPixelData
        masked = np.frombuffer(written.FloatPixelData, "<f4").reshape(2, 256, 256)[0, 10:26, 10:180]
        assert not (masked >= 2.9e-3).any()
    else:
        assert out.boxes == [] and written.FloatPixelData == ds.FloatPixelData


def test_verification_reads_float_pixel_data() -> None:
    from deid_core.terms import capture_terms
    from deid_core.verify import LeakTerms, find_pixel_leaks

    ds = _parametric_map("SMITH, JOHN")
    assert [lk.kind for lk in find_pixel_leaks(ds, LeakTerms.capture(ds, capture_terms(ds)))] == ["name"]


def _planted_run(tmp_path: Path, ds: Dataset) -> tuple[object, Dataset]:
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    out = deidentify_file(src, DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out"))
    assert out.status == "written", out.error
    return out, pydicom.dcmread(tmp_path / "out" / out.output_path)


@pytest.mark.parametrize(("top", "bits_stored"), [(15, 4), (31, 5), (35, 8)])
def test_text_at_the_top_of_a_narrow_8_bit_range_is_masked(tmp_path: Path, top: int, bits_stored: int) -> None:
    """8-bit frames were screened unscaled: on an NM image of counts up to 15-35 (or BitsStored 4-5) text drawn
    at the top of the stored range stood less than 40 gray levels from its background and was never a
    candidate. A frame spanning less than NARROW_RANGE is windowed like deeper data."""
    rng = np.random.default_rng(top)
    yy, xx = np.mgrid[:256, :256]
    body = np.exp(-((yy - 140) ** 2 + (xx - 128) ** 2) / 4000.0)
    arr = np.clip(rng.poisson(body * top * 0.6), 0, top).astype(np.uint8)
    ink = _alpha((256, 256), "SMITH, JOHN", (8, 6), 12) > 0.5
    arr[ink] = top
    out, written = _planted_run(tmp_path, _ds(arr, "CT", bits_stored))
    assert [b["kind"] for b in out.boxes] == ["name"]  # type: ignore[attr-defined]
    assert not (written.pixel_array[ink] == top).any()


@pytest.mark.parametrize("text", ["SMITH, JOHN", ""])
def test_one_bit_images_are_searched_and_masked(tmp_path: Path, text: str) -> None:
    """BitsAllocated 1: decoded as 0/1, the screen saw nothing and a burned-in name was written unmasked;
    masking was refused too. Now searched as 0/255 and masked in the packed bits (padding bits kept)."""
    arr = np.zeros((2, 100, 200), np.uint8)
    arr[:, 60:90, 20:180] = 1  # a shape, not text
    ink = _alpha((100, 200), text, (6, 8), 14) > 0.5 if text else np.zeros((100, 200), bool)
    arr[0][ink] = 1
    ds = _ds(np.zeros((100, 200), np.uint8), "CT")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.NumberOfFrames = 1, 1, 0, 2
    ds.PixelData = np.packbits(arr.ravel(), bitorder="little").tobytes()
    out, written = _planted_run(tmp_path, ds)
    if not text:
        assert out.boxes == [] and written.PixelData == pydicom.dcmread(tmp_path / "in.dcm").PixelData  # type: ignore[attr-defined]
        return
    assert [b["kind"] for b in out.boxes] == ["name"]  # type: ignore[attr-defined]
    after = written.pixel_array
    assert not after[0][ink].any() and (after[1] == arr[1]).all() and (after[0, 60:90, 20:180] == 1).all()


def test_a_date_ocr_split_at_its_separator_is_phi_and_a_leak() -> None:
    """At 13 px in a monospace font OCR read "DOB: 1961-03-02" as "DOB:" "1961-" "03-02" (an audit's console
    stacks): no single word and no span of the joined line text is a date then. The words are joined back
    at the separator: a date pattern (phi) and the file's own dates (phi and verification) are found."""
    from deid_core.pixels.match import build_lines, phi_words
    from deid_core.pixels.ocr import OcrWord
    from deid_core.terms import TermMatcher, capture_terms
    from deid_core.verify import LeakTerms, _line_leak

    def line(*texts: str, conf: float = 90.0):  # type: ignore[no-untyped-def]
        return build_lines([OcrWord(t, 40 * i, 0, 36, 12, conf) for i, t in enumerate(texts)])[0]

    header = Dataset()
    header.PatientName, header.StudyDate = "SMITH^JOHN", "20230714"
    terms = capture_terms(header)
    none = TermMatcher(capture_terms(Dataset()))
    assert set(phi_words(line("Study:", "2023-", "07-14"), none, use_presidio=False)) == {1, 2}
    assert set(phi_words(line("2023", "-07", "-14"), none, use_presidio=False)) == {0, 1, 2}
    assert _line_leak([line("Study:", "2023-", "07-14", conf=30.0)], LeakTerms.capture(header, terms)) == "date"
    assert phi_words(line("L4-", "L5"), none, use_presidio=False) == {}


def test_large_lines_over_bright_bone_are_read_to_their_end(tmp_path: Path) -> None:
    """Three ~60-px lines on a real radiograph (pydicom-data's RG3 CR), over bone that brightens and darkens
    under them (a MIDI-B-like audit): one global threshold dropped the glyphs over the bone, OCR read
    "ID: M )6" and "05/1." with confidence, the ID and date lines stayed, and verification, which reads the
    same way, passed the file. A sure reading that stops short of its line is no longer final; a threshold
    that follows the background reads the rest."""
    import cv2
    from pydicom.data import get_testdata_file

    arr = (1023 - pydicom.dcmread(get_testdata_file("RG3_J2KR.dcm")).pixel_array).astype(np.uint16)
    lines = ["SMITH, JOHN", f"ID: {PID}", "03/04/1961"]
    for i, text in enumerate(lines):
        cv2.putText(arr, text, (606, 300 + 60 * i), cv2.FONT_HERSHEY_SIMPLEX, 2.0, 1023, 4)
    ds = _ds(arr, "CT", bits_stored=10)
    ds.Modality = "CR"
    out, res = _run(tmp_path, ds)
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    changed = res.pixel_array != arr
    for i in range(3):  # every line is masked along its whole length
        rows = slice(300 + 60 * i - 45, 300 + 60 * i + 5)
        ink = np.zeros(arr.shape, dtype=bool)
        ink[rows, 600:1150] = arr[rows, 600:1150] == 1023
        assert changed[ink].mean() >= 0.9, lines[i]


def test_a_vertical_label_of_several_columns_is_masked(tmp_path: Path) -> None:
    """A side label of three turned lines side by side (name, ID, birth date): each column is a vertical
    candidate, and the rotated glyphs of neighbouring columns line up into horizontal "lines" across them.
    Those were taken for text running across a column of first letters, and every column was dropped (an
    audit). A horizontal line within the block of columns is their own glyphs."""
    arr = _ct()
    ink = np.zeros(arr.shape, bool)
    for i, text in enumerate(["SMITH, JOHN", PID, "03/04/1961"]):
        label = np.rot90(_alpha((20, 140), text, (2, 2), 14) >= 0.5, 1)  # 140 x 20, bottom to top
        ink[150:290, 440 + 22 * i:460 + 22 * i] = label
    arr[ink] = 3071
    out, res = _run(tmp_path, _ds(np.round(arr).astype(np.int16), "CT"))
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    assert (res.pixel_array != np.round(arr).astype(np.int16))[ink].mean() >= 0.9


def test_vertical_text_on_a_small_frame_is_masked(tmp_path: Path) -> None:
    """Vertical text was searched only on frames of 256 px and more: on a 128-px CT slice a name running down
    the right edge was written unmasked (an audit: 36 such lines)."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    arr = ds.pixel_array.copy()
    label = np.rot90(_alpha((14, 110), "SMITH, JOHN", (1, 1), 11) >= 0.5, 3)  # 110 x 14, top to bottom
    ink = np.zeros(arr.shape, bool)
    ink[8:118, 112:126] = label
    arr[ink] = arr.max()
    ds.PixelData = arr.tobytes()
    ds.PatientName = NAME
    out, res = _run(tmp_path, ds)
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    assert (res.pixel_array != arr)[ink].mean() >= 0.9


def test_large_anti_aliased_lines_on_a_radiograph_are_not_written_legible(tmp_path: Path) -> None:
    """~85-px anti-aliased lines over a real CR (an audit): read at full size, OCR saw fragments of 1-3 letters
    and the date and birth date were written legible. Large lines are now read scaled down, with the local
    threshold among the variants: each line is masked, or verification refuses the file."""
    from pydicom.data import get_testdata_file

    arr = (1023 - pydicom.dcmread(get_testdata_file("RG3_J2KR.dcm")).pixel_array).astype(np.uint16)
    texts = ["Oct 27, 2016", "Born 04-Mar-1961"]
    inks = []
    for i, text in enumerate(texts):
        ink = _alpha(arr.shape, text, (430, 760 + 130 * i), 85) >= 0.5
        arr[ink] = 1023
        inks.append(ink)
    ds = _ds(arr, "CT", bits_stored=10)
    ds.Modality, ds.StudyDate = "CR", "20161027"
    out, res = _run(tmp_path, ds)
    if out.status == "written":  # type: ignore[attr-defined]
        assert res is not None
        for text, ink in zip(texts, inks, strict=True):
            assert (res.pixel_array != arr)[ink].mean() >= 0.9, text
    else:
        assert out.reason == "leak_found"  # type: ignore[attr-defined]


def _noise_dx(seed: int, lines: list[str], height: int) -> tuple[np.ndarray, np.ndarray]:
    """An 8-bit DX of pixel noise (mean 0.56, sd 0.1 of the range: a low-dose or fluoroscopy frame) with
    ``lines`` in a thin Hershey face at the top of the range; returns (pixels, ink)."""
    import cv2

    rng = np.random.default_rng(seed)
    arr = np.clip(np.round(255 * (0.56 + 0.1 * rng.standard_normal((512, 512)))), 0, 255).astype(np.uint8)
    ink = np.zeros(arr.shape, np.uint8)
    scale = height / cv2.getTextSize("H", cv2.FONT_HERSHEY_PLAIN, 1.0, 1)[0][1]
    for i, text in enumerate(lines):
        cv2.putText(ink, text, (10, 10 + height + int(1.5 * height) * i), cv2.FONT_HERSHEY_PLAIN, scale, 255, 2)
    arr[ink > 0] = 255
    return arr, ink > 0


@pytest.mark.parametrize("height", [24, 28])
def test_thin_text_over_pixel_noise_is_masked(tmp_path: Path, height: int) -> None:
    """Thin 2-px strokes over pixel noise break up in every plain binarisation, and OCR read nothing there:
    "Born Nov 15, 1958" at 24 px, plainly legible, was written unmasked (an audit's fail-open sweep). The
    crop smoothed is read when nothing else was legible."""
    arr, ink = _noise_dx(0, ["SMITH, JOHN", "Born Mar 4, 1961"], height)
    ds = _ds(arr, "CT")
    ds.Modality = "DX"
    out, res = _run(tmp_path, ds)
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    changed = res.pixel_array != arr
    assert changed[ink].mean() >= 0.9


def test_smoothed_reading_never_replaces_a_legible_one() -> None:
    """The smoothed crop is a last resort: a busy line whose plain readings show text keeps them, however sure
    a reading of the smoothed crop is (a sure garble could otherwise stand in for the reading of a name)."""
    import deid_core.pixels as px

    arr, _ink = _noise_dx(0, ["SMITH, JOHN"], 28)
    line = px.Rect(10, 10, 200, 30)
    smoothed: list[bool] = []
    real_smoothed, real_variant = px._smoothed, px._read_variant

    def mark(crop: np.ndarray, line_h: int) -> np.ndarray:
        smoothed.append(True)
        return real_smoothed(crop, line_h)

    def variant(img: np.ndarray, line_h: int, engine: object) -> list:  # type: ignore[type-arg]
        if smoothed:
            return [px.OcrWord("XQZWVK", 0, 0, 200, 20, 95.0)]
        return [px.OcrWord("SMITH", 0, 0, 200, 20, 50.0)]

    px._smoothed, px._read_variant = mark, variant  # type: ignore[assignment]
    try:
        assert px._busy_background(arr, line)
        words = px._read_line(arr, line, True, px.get_engine("tesseract"), {})
    finally:
        px._smoothed, px._read_variant = real_smoothed, real_variant  # type: ignore[assignment]
    assert [w.text for w in words] == ["SMITH"]
    assert not smoothed


@pytest.mark.parametrize(("name", "pid", "date"), [("ABERNATHY, FATIMA", "MRN6956549", "07/18/2022"),
                                                   ("SMITH, JOHN", "MRN-482917", "03/04/1961")])
def test_stacked_rows_joined_by_a_glyph_are_read_row_by_row(tmp_path: Path, name: str, pid: str, date: str) -> None:
    """A name and an ID on the coloured bands of a small capture, with a date drawn across both rows: the
    pre-screen chained the two rows into one candidate, read as one line it read nothing, and the file was
    written with every planted pixel unchanged (the MIDI-B-like benchmark). Each row is now read as well."""
    import cv2
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("SC_rgb_rle.dcm"))
    ds.decompress(generate_instance_uid=False)
    img = np.ascontiguousarray(ds.pixel_array)
    orig = img.copy()
    for text, org in ((name, (2, 13)), ("ID: " + pid, (2, 25)), (date, (62, 13))):
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    ds.PixelData = img.tobytes()
    last, first = name.split(", ")
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.Modality = f"{last}^{first}", pid, "19610304", "SC"
    out, res = _run(tmp_path, ds)
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    planted = (img != orig).any(axis=-1)
    assert (res.pixel_array != img).any(axis=-1)[planted].mean() >= 0.9


@pytest.mark.parametrize(("ink", "label"), [((255, 255, 255), (255, 255, 0)), ((128, 128, 128), (0, 200, 0)),
                                            ((0, 0, 0), (0, 0, 255))])
@pytest.mark.parametrize("modality", ["US", "CT"])
def test_grey_text_on_a_flat_coloured_label_is_masked(tmp_path: Path, ink: tuple[int, ...], label: tuple[int, ...],
                                                      modality: str) -> None:
    """White on yellow, grey on green, black on blue: within 30 grey levels of the label in luminance, and a
    dark line in the chroma view, whose dark lines were never read (they are the gaps of a Doppler map there).
    On a flat label they are read; 16 of 16 such lines were written legible (an audit)."""
    rgb = np.random.default_rng(5).rayleigh(30, (240, 320, 1)).clip(0, 255).astype(np.uint8).repeat(3, axis=2)
    rgb[150:210, 130:310] = label
    a = np.maximum(_alpha(rgb.shape[:2], "SMITH, JOHN", (138, 156), 13), _alpha(rgb.shape[:2], PID, (138, 178), 13))
    rgb = np.round(rgb * (1 - a[..., None]) + np.array(ink) * a[..., None]).astype(np.uint8)
    ds = _ds(rgb, "US")
    ds.Modality = modality
    _assert_boxes_mask(tmp_path, ds, a)


@pytest.mark.parametrize(("grey", "y", "x"), [(128, 30, 120), (128, 34, 100), (145, 34, 100)])
def test_grey_text_running_from_the_border_onto_the_exposed_field_is_masked(tmp_path: Path, grey: int, y: int,
                                                                            x: int) -> None:
    """An XA frame's grey annotation where the edge of the round exposed field runs through it: bright on the
    dark border, dark on the bright field. Joined into one line of one polarity, it read as garble and the
    name, ID and birth date were written unmasked (an audit: 4 of 18 placements untouched)."""
    import cv2

    yy, xx = np.mgrid[0:512, 0:512]
    field = np.where((yy - 256) ** 2 + (xx - 256) ** 2 < 230 ** 2, 200, 10).astype(np.float32)
    frame = cv2.GaussianBlur(field, (0, 0), 3)
    frame += cv2.GaussianBlur(np.random.default_rng(y + x).normal(0, 1, (512, 512)).astype(np.float32), (0, 0), 2) * 6
    a = _alpha((512, 512), "SMITH, JOHN   MRN-482917   03/04/1961", (x, y), 14)
    img = np.clip(np.round(frame * (1 - a) + grey * a), 0, 255).astype(np.uint8)
    ds = _ds(img, "CT")
    ds.Modality, ds.SOPClassUID = "XA", "1.2.840.10008.5.1.4.1.1.12.1"
    out, res = _run(tmp_path, ds)
    assert out.status in ("written", "quarantined")
    if res is not None:
        assert (res.pixel_array != img)[a >= 0.5].mean() >= 0.9


def _ean13(code: str, module: int = 2, height: int = 60) -> np.ndarray:
    """An EAN-13 barcode (quiet zone included), black bars on white."""
    left = ["0001101", "0011001", "0010011", "0111101", "0100011", "0110001", "0101111", "0111011", "0110111",
            "0001011"]
    even = ["".join("1" if c == "0" else "0" for c in reversed(p)) for p in left]
    right = ["".join("1" if c == "0" else "0" for c in p) for p in left]
    parity = ["LLLLLL", "LLGLGG", "LLGGLG", "LLGGGL", "LGLLGG", "LGGLLG", "LGGGLL", "LGLGLG", "LGLGGL", "LGGLGL"]
    d = [int(c) for c in code]
    bits = "101" + "".join((left if p == "L" else even)[x] for p, x in zip(parity[d[0]], d[1:7], strict=True)) \
        + "01010" + "".join(right[x] for x in d[7:]) + "101"
    row = np.array([0 if b == "1" else 255 for b in bits], np.uint8).repeat(module)
    img = np.full((height + 20, row.size + 20 * module), 255, np.uint8)
    img[10:10 + height, 10 * module:10 * module + row.size] = row
    return img


@pytest.mark.parametrize("modality", ["SC", "SM", "XC"])
@pytest.mark.parametrize("module", [2, 4])
def test_a_qr_code_in_a_capture_is_masked_whole(tmp_path: Path, modality: str, module: int) -> None:
    """A QR code holding the MRN, name and birth date on a capture: no OCR reads it, and the file was written
    with the code decodable."""
    import cv2

    qr = cv2.resize(cv2.QRCodeEncoder.create().encode(f"{PID} {NAME} 19610304"), None, fx=module, fy=module,
                    interpolation=cv2.INTER_NEAREST)
    img = np.full((400, 600, 3), 235, np.uint8)
    img[40:40 + qr.shape[0], 300:300 + qr.shape[1]] = qr[..., None]
    ds = _ds(img, "US")
    ds.Modality = modality
    out, res = _run(tmp_path, ds)
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    assert cv2.QRCodeDetector().detectAndDecode(img)[0]  # the input's code reads
    assert not cv2.QRCodeDetector().detectAndDecode(res.pixel_array)[0]
    assert not cv2.QRCodeDetectorAruco().detectAndDecode(res.pixel_array)[0]
    assert (res.pixel_array[40:40 + qr.shape[0], 300:300 + qr.shape[1]] == 0).all()
    assert any(b["kind"] == "code" for b in out.boxes)  # type: ignore[attr-defined]


def test_a_barcode_in_a_capture_is_masked_over_its_whole_height(tmp_path: Path) -> None:
    bars = _ean13("4006381333931")
    img = np.full((400, 600), 235, np.uint8)
    img[200:200 + bars.shape[0], 100:100 + bars.shape[1]] = bars
    ds = _ds(np.repeat(img[..., None], 3, axis=2), "US")
    ds.Modality = "SC"
    out, res = _run(tmp_path, ds)
    assert out.status == "written" and res is not None  # type: ignore[attr-defined]
    region = res.pixel_array[210:270, 120:310]  # every bar, top to bottom
    assert (region == 0).all()


def test_ct_frames_are_not_searched_for_codes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The detectors cost 3-30 ms a frame: modalities that carry no codes do not pay for them."""
    import deid_core.pixels as px

    calls: list[int] = []
    monkeypatch.setattr(px, "code_rects", lambda gray: calls.append(1) or [])
    out, _res = _run(tmp_path, _ds(np.round(_ct()).astype(np.int16), "CT"))
    assert out.status == "written" and calls == []  # type: ignore[attr-defined]


def test_a_test_patterns_line_pairs_are_no_barcode() -> None:
    """The SMPTE pattern of vlut_04.dcm: OpenCV's barcode detector takes its line pairs for five codes; their
    bars keep one width from one to the next, a barcode's do not."""
    from pydicom.data import get_testdata_file

    from deid_core.pixels.codes import code_rects
    from deid_core.pixels.decode import iter_gray_views

    gray, _alt = next(iter_gray_views(pydicom.dcmread(get_testdata_file("vlut_04.dcm"))))
    assert code_rects(gray) == []


def test_verification_quarantines_a_capture_whose_code_was_left(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    """Fail closed: with the pixel stage's code search switched off, verification still finds the QR code."""
    import cv2

    import deid_core.pixels as px

    monkeypatch.setattr(px, "code_rects", lambda gray: [])
    qr = cv2.resize(cv2.QRCodeEncoder.create().encode(f"{PID} {NAME}"), None, fx=3, fy=3,
                    interpolation=cv2.INTER_NEAREST)
    img = np.full((300, 400, 3), 235, np.uint8)
    img[40:40 + qr.shape[0], 200:200 + qr.shape[1]] = qr[..., None]
    ds = _ds(img, "US")
    ds.Modality = "SC"
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    # policy phi: all-text would mask part of the code as a line of text, and a code with a bar across it
    # is no longer found (nor decoded)
    out = deidentify_file(src, DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out", pixel_policy="phi"))
    assert (out.status, out.reason) == ("quarantined", "leak_found")
    assert "code in frame 0" in out.error
