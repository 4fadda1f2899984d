"""Leak verification of written outputs and their conformance.

Each planted leak below is one an earlier stage misses on purpose (a test-only keep rule for an
unknown private creator; a pixel stage forced to miss frame 1); verification must catch it:
quarantined with reason ``leak_found``, the output removed, and the error naming the class and
place, never the value.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

import deid_core.pixels as pixels_mod
from deid_core.conformance import UnreadableOutputError, _redact, check_dataset, check_file, read_back
from deid_core.pipeline import deidentify_file
from deid_core.pixels.plant import plant_stored
from deid_core.rules import PrivateRule, RuleTable
from deid_core.run import prepare_run
from deid_core.terms import capture_terms
from deid_core.verify import LeakTerms, find_leaks, find_pixel_leaks, verify_written
from tests.conftest import TEST_KEY

NAME = "DOE^JANE"
PID = "MRN4829173"
BIRTH = "19610418"
STUDY = "20210314"


def _ct(frames: int = 1) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.decompress() if ds.file_meta.TransferSyntaxUID.is_compressed else None
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.StudyDate = NAME, PID, BIRTH, STUDY
    if frames > 1:
        ds.PixelData = ds.PixelData * frames
        ds.NumberOfFrames = frames
    return ds


def _plan(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "in").mkdir(exist_ok=True)
    key = tmp_path / "key.bin"
    key.write_bytes(TEST_KEY)
    return prepare_run(tmp_path / "in", tmp_path / "out", provenance_dir=tmp_path / "prov", key_file=str(key),
                       options=("rtnSafePriv",))


def _outputs(out: Path) -> list[Path]:
    return [p for p in out.rglob("*.dcm") if ".deidflow-tmp" not in p.parts]


def _assert_no_values(text: str) -> None:
    for value in ("DOE", "JANE", PID, BIRTH, STUDY, "4829173"):
        assert value.lower() not in text.lower()


# ------------------------------------------------------------------------------------ planted leaks


def test_private_name_kept_by_test_rule_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _ct()
    block = ds.private_block(0x0099, "ACME UNKNOWN CREATOR", create=True)
    block.add_new(0x10, "LO", "reviewed by JANE DOE")
    src = tmp_path / "in" / "a.dcm"
    src.parent.mkdir()
    ds.save_as(src, enforce_file_format=True)
    real = RuleTable.private_rule

    def keep_acme(self, group, creator, offset, path=(), vr=None):  # type: ignore[no-untyped-def]
        if creator.strip().lower() == "acme unknown creator":
            return PrivateRule("test", vr or "LO", "k")
        return real(self, group, creator, offset, path, vr)

    monkeypatch.setattr(RuleTable, "private_rule", keep_acme)
    # The anonymizer's own check of kept private values would remove it: switch it off too, so this
    # is the leak an earlier stage missed.
    monkeypatch.setattr("deid_core.anonymizer._safe_private_value", lambda *a: True)
    monkeypatch.setattr("deid_core.anonymizer._typed_phi_value", lambda *a: False)
    plan = _plan(tmp_path)
    out = deidentify_file(src, plan.cfg)
    assert out.status == "quarantined" and out.reason == "leak_found"
    assert "name in (0099,1010)" in out.error
    _assert_no_values(out.error)
    assert out.output_path == "" and _outputs(tmp_path / "out") == []
    assert out.actions.get("private_kept", 0) >= 1  # the scrub really kept it: only verification caught it


def _drop_frame(frame: int, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pixels_mod.find_text_boxes

    def missing(ds, terms, policy, engine=None, matcher=None):  # type: ignore[no-untyped-def]
        res = real(ds, terms, policy, engine, matcher)
        res.boxes = [b for b in res.boxes if b.frame != frame]
        return res

    monkeypatch.setattr(pixels_mod, "find_text_boxes", missing)


def test_text_in_second_frame_missed_by_pixel_stage_is_caught(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _ct(frames=2)
    plant_stored(ds, 1, "DOE JANE", 2, 100, 16)
    src = tmp_path / "in" / "mf.dcm"
    src.parent.mkdir()
    ds.save_as(src, enforce_file_format=True)
    _drop_frame(1, monkeypatch)
    plan = _plan(tmp_path)
    out = deidentify_file(src, plan.cfg)
    assert out.status == "quarantined" and out.reason == "leak_found", out.error
    assert "in frame 1" in out.error and "frame 0" not in out.error
    _assert_no_values(out.error)
    assert _outputs(tmp_path / "out") == []


def test_clean_multiframe_is_written_with_conformance(tmp_path: Path) -> None:
    ds = _ct(frames=2)
    plant_stored(ds, 1, "DOE JANE", 2, 100, 16)
    src = tmp_path / "in" / "ok.dcm"
    src.parent.mkdir()
    ds.save_as(src, enforce_file_format=True)
    out = deidentify_file(src, _plan(tmp_path).cfg)
    assert out.status == "written", out.error
    assert (tmp_path / "out" / out.output_path).is_file()
    assert '"iod":"CT Image"' in out.conformance
    assert "type1_missing" not in out.conformance


# ------------------------------------------------------------------------------------ element search


def _lt(ds: pydicom.Dataset) -> LeakTerms:
    return LeakTerms.capture(ds, capture_terms(ds))


def test_dates_rule_birth_date_anywhere_other_dates_only_in_free_text() -> None:
    orig = _ct()
    lt = _lt(orig)
    out = pydicom.Dataset()
    out.StudyDate = STUDY  # an original non-birth date in a DA element: shifted coincidence, no leak
    out.ContentDate = "20200101"
    assert find_leaks(out, lt) == []
    out.AcquisitionDate = BIRTH      # the birth date in any element: leak
    assert [(lk.kind, lk.element) for lk in find_leaks(out, lt)] == [("birth_date", "(0008,0022)")]
    del out.AcquisitionDate
    out.ImageComments = "scan of 03/14/2021 reviewed"  # an original date in free text: leak
    assert [lk.kind for lk in find_leaks(out, lt)] == ["date"]
    out.ImageComments = "born April 18, 1961"
    assert [lk.kind for lk in find_leaks(out, lt)] == ["birth_date"]


def test_nested_sequence_and_file_meta_variants() -> None:
    lt = _lt(_ct())
    out = pydicom.Dataset()
    item = pydicom.Dataset()
    item.ContentDescription = "jane doe"   # case and order variant
    out.ReferencedImageSequence = [item]
    out.file_meta = pydicom.dataset.FileMetaDataset()
    out.file_meta.SourceApplicationEntityTitle = "MRN4829173"
    where = sorted(lk.element for lk in find_leaks(out, lt))
    assert where == ["(0008,1140)[0]>(0070,0081)", "meta:(0002,0016)"]


def test_pixel_verify_no_false_alarm_on_non_phi_text() -> None:
    ds = _ct()
    plant_stored(ds, 0, "AXIAL 5MM", 2, 100, 16)
    assert find_pixel_leaks(ds, _lt(_ct())) == []
    plant_stored(ds, 0, "MRN4829173", 2, 40, 16)
    assert [lk.describe() for lk in find_pixel_leaks(ds, _lt(_ct()))] == ["id in frame 0"]


def test_verify_written_reads_back_the_file(tmp_path: Path) -> None:
    lt = _lt(_ct())
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", "2.25.1"
    ds.PatientName, ds.PatientID, ds.StudyDate = "DEID^0001", "DEID0001", "20210401"
    p = tmp_path / "x.dcm"
    ds.save_as(p, enforce_file_format=True)
    res = verify_written(p, lt, pixels_text_free=True)
    assert res.leaks == [] and res.pixel.frames == 0
    ds.StudyComments = "for Jane Doe"
    ds.save_as(p, enforce_file_format=True)
    assert [lk.describe() for lk in verify_written(p, lt, pixels_text_free=True).leaks] == [
        "name in (0032,4000)"]


# ------------------------------------------------------------------------------------ conformance


def test_conformance_type1_and_vr_issues_name_no_values() -> None:
    ds = _ct()
    assert check_dataset(ds).issues == []
    del ds.Modality
    ds.StudyDate = "2021-03-14"   # invalid DA
    ds.AccessionNumber = "X" * 20  # SH longer than 16
    res = check_dataset(ds)
    assert "type1_missing:Modality" in res.issues
    assert "invalid_value:(0008,0020):DA" in res.issues and "invalid_value:(0008,0050):SH" in res.issues
    assert "2021-03-14" not in res.to_json() and "XXXX" not in res.to_json()


def test_unreadable_output_raises(tmp_path: Path) -> None:
    p = tmp_path / "bad.dcm"
    p.write_bytes(b"DICM" * 10)
    with pytest.raises(UnreadableOutputError, match="does not read back"):
        read_back(p)


def test_dciodvfy_errors_recorded_with_values_redacted(tmp_path: Path) -> None:
    line = "Error - Unrecognized enumerated value <JANE> for value 1 of attribute <Patient's Sex>"
    assert _redact(line) == line.replace("<JANE>", "<?>")
    ds = _ct()
    del ds.SeriesInstanceUID
    p = tmp_path / "c.dcm"
    ds.save_as(p, enforce_file_format=True)
    res = check_file(p)
    import shutil

    if shutil.which("dciodvfy") is None:
        assert res.dciodvfy is None
    else:
        assert any("SeriesInstanceUID" in e for e in res.dciodvfy or [])
