"""Overlay planes carrying text and the Icon Image Sequence are removed (PS3.15 profile: X for both)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence

from deid_core.config import DeidConfig
from deid_core.pipeline import deidentify_file
from deid_core.pixels.plant import _font
from tests.conftest import TEST_KEY

NAME = "KOWALSKI^GRACE"
OVERLAY_TEXT = "KOWALSKI GRACE 4829173"


def _overlay_bits(rows: int, cols: int) -> np.ndarray:
    img = Image.new("1", (cols, rows), 0)
    ImageDraw.Draw(img).text((4, 4), OVERLAY_TEXT, fill=1, font=_font(12))
    bits = np.asarray(img, dtype=np.uint8)
    assert bits.sum() > 50  # the overlay really carries text
    return bits


def _with_overlay_and_icon(path: Path) -> Path:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName, ds.PatientID = NAME, "4829173"
    rows, cols = int(ds.Rows), int(ds.Columns)
    for group in (0x6000, 0x6002):
        ds.add_new((group, 0x0010), "US", rows)
        ds.add_new((group, 0x0011), "US", cols)
        ds.add_new((group, 0x0022), "LO", "burned annotation")
        ds.add_new((group, 0x0040), "CS", "G")
        ds.add_new((group, 0x0050), "SS", [1, 1])
        ds.add_new((group, 0x0100), "US", 1)
        ds.add_new((group, 0x0102), "US", 0)
        ds.add_new((group, 0x3000), "OW", pack_bits(_overlay_bits(rows, cols)))
    icon = Dataset()
    icon.Rows = icon.Columns = 16
    icon.SamplesPerPixel = 1
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.BitsAllocated = icon.BitsStored = 8
    icon.HighBit = 7
    icon.PixelRepresentation = 0
    tiny = np.zeros((16, 16), dtype=np.uint8)
    tiny[4:12, 2:14] = 255
    icon.PixelData = tiny.tobytes()
    ds.IconImageSequence = Sequence([icon])
    ds.save_as(path, enforce_file_format=True)
    check = pydicom.dcmread(path)
    assert (0x6000, 0x3000) in check and "IconImageSequence" in check
    return path


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> pydicom.Dataset:
    base = tmp_path_factory.mktemp("overlay_icon")
    src = _with_overlay_and_icon(base / "in.dcm")
    out = deidentify_file(src, DeidConfig(key=TEST_KEY, output_dir=base / "out"))
    assert out.status == "written", (out.reason, out.error)
    final = base / "out" / out.output_path  # relative to the output directory
    data = final.read_bytes()
    assert b"KOWALSKI" not in data and b"4829173" not in data
    return pydicom.dcmread(final)


def test_overlay_planes_are_gone(written: pydicom.Dataset) -> None:
    groups = {e.tag.group for e in written.iterall() if 0x6000 <= e.tag.group <= 0x601E}
    assert groups == set()
    with pytest.raises(KeyError):
        written[0x6000, 0x3000]


def test_icon_image_sequence_is_gone(written: pydicom.Dataset) -> None:
    assert "IconImageSequence" not in written
    assert not [e for e in written.iterall() if e.tag == 0x00880200]
    assert written.PixelData  # the main image itself stays
