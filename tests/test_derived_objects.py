"""Non-image objects as an audit built them: an SR's subject context, RT objects' required attributes, an
encapsulated document. Each case runs the per-file pipeline on a real or realistic file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deid_core.config import DeidConfig
from deid_core.pipeline import deidentify_file
from tests.conftest import TEST_KEY, deidentify_dataset

ROOT = "1.2.826.0.1.3680043.8.498.5151."


def _code(value: str, meaning: str, scheme: str = "DCM") -> Sequence:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return Sequence([c])


def _run(tmp_path: Path, ds: Dataset) -> pydicom.Dataset:
    out, written = deidentify_dataset(tmp_path, ds, conformance="off")
    assert out.status == "written" and written is not None, (out.reason, out.error)
    return written


def _sr(age: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.22", ROOT + "1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = ROOT + "2", ROOT + "3", "SR"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientAge = "OLDHAM^EDITH", "PX1", "19200105", age
    ds.StudyDate, ds.ValueType = "20230405", "CONTAINER"
    birth = Dataset()
    birth.RelationshipType, birth.ValueType, birth.Date = "HAS OBS CONTEXT", "DATE", "19200105"
    birth.ConceptNameCodeSequence = _code("121031", "Subject Birth Date")
    years = Dataset()
    years.RelationshipType, years.ValueType = "HAS OBS CONTEXT", "NUM"
    years.ConceptNameCodeSequence = _code("121033", "Subject Age")
    mv = Dataset()
    mv.NumericValue, mv.MeasurementUnitsCodeSequence = age[:3].lstrip("0"), _code("a", "year", "UCUM")
    years.MeasuredValueSequence = Sequence([mv])
    finding = Dataset()
    finding.RelationshipType, finding.ValueType, finding.TextValue = "CONTAINS", "TEXT", "No acute finding."
    finding.ConceptNameCodeSequence = _code("121071", "Finding")
    ds.ContentSequence = Sequence([birth, years, finding])
    return ds


@pytest.mark.parametrize(("age", "expected"), [("103Y", "90"), ("045Y", "45")])
def test_sr_subject_birth_date_goes_and_its_age_is_capped_like_the_header(tmp_path: Path, age: str,
                                                                          expected: str) -> None:
    out = _run(tmp_path, _sr(age))
    codes = [item.ConceptNameCodeSequence[0].CodeValue for item in out.ContentSequence]
    assert codes == ["121033", "121071"]  # the birth date item is gone, the others stay in order
    assert out.ContentSequence[0].MeasuredValueSequence[0].NumericValue == expected
    assert out.ContentSequence[1].TextValue == "No acute finding."
    assert out.PatientBirthDate == ""


@pytest.mark.parametrize(("value", "meaning", "scheme"), [("21112-8", "Birth date", "LN"),
                                                       ("184099003", "Date of birth", "SCT"),
                                                       ("L-77", "Geburtsdatum", "99LOCAL"), ("X1", "DOB", "99LOCAL")])
def test_a_birth_date_item_of_any_scheme_goes(tmp_path: Path, value: str, meaning: str, scheme: str) -> None:
    """An audit's SR kept a LOINC "Birth date" item, shifted: only DCM 121031 was known."""
    ds = _sr("045Y")
    ds.ContentSequence[0].ConceptNameCodeSequence = _code(value, meaning, scheme)
    out = _run(tmp_path, ds)
    assert [item.ConceptNameCodeSequence[0].CodeValue for item in out.ContentSequence] == ["121033", "121071"]


def test_a_date_item_of_another_concept_stays(tmp_path: Path) -> None:
    ds = _sr("045Y")
    ds.ContentSequence[0].ConceptNameCodeSequence = _code("111536", "Date of last menstrual period")
    out = _run(tmp_path, ds)
    assert [item.ConceptNameCodeSequence[0].CodeValue for item in out.ContentSequence][0] == "111536"


def test_rt_objects_keep_operators_name_empty_where_their_series_module_requires_it(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    ds.OperatorsName = "ABERNATHY^WILHELMINA"
    out = _run(tmp_path, ds)
    assert "OperatorsName" in out and out.OperatorsName == ""  # X/Z: Z for the RT Series module (type 2)


def test_operators_name_is_removed_where_no_module_requires_it(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.OperatorsName = "ABERNATHY^WILHELMINA"
    assert "OperatorsName" not in _run(tmp_path, ds)


def test_a_replaced_encapsulated_document_states_its_own_length(tmp_path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.104.1", ROOT + "9"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = ROOT + "2", ROOT + "8", "DOC"
    ds.PatientName, ds.PatientID = "OLDHAM^EDITH", "PX1"
    pdf = b"%PDF-1.4 Patient: OLDHAM EDITH PX1 %%EOF"
    ds.EncapsulatedDocument, ds.EncapsulatedDocumentLength = pdf, len(pdf)
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    res, written = deidentify_dataset(tmp_path, ds, conformance="off")
    assert res.status == "written" and written is not None
    assert b"OLDHAM" not in written.EncapsulatedDocument
    assert written.EncapsulatedDocumentLength == len(written.EncapsulatedDocument)
    assert res.actions.get("encapsulated_document_replaced") == 1  # provenance says the document went


def test_rt_operators_name_stays_empty_under_tcia_lists_too(tmp_path: Path) -> None:
    """TCIA's list removes OperatorsName; its X/Z/D still means "empty where the IOD requires it"."""
    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    ds.OperatorsName = "ABERNATHY^WILHELMINA"
    src = tmp_path / "in.dcm"
    ds.save_as(src)
    out = deidentify_file(src, DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out", conformance="off",
                                          profile="tcia-lists"))
    assert out.status == "written"
    res = pydicom.dcmread(tmp_path / "out" / out.output_path)
    assert "OperatorsName" in res and res.OperatorsName == ""


def _ref_study() -> Sequence:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", ROOT + "77"
    return Sequence([item])


def test_a_referenced_study_sequence_is_removed_where_it_is_type_3(tmp_path: Path) -> None:
    """X/Z on a type 3 sequence is X: emptied, the General Study module's Referenced Study Sequence made
    dciodvfy fail the output ("Bad Sequence number of Items 0 (1-n Required by Module definition)")."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.ReferencedStudySequence = _ref_study()
    request = Dataset()
    request.RequestedProcedureID, request.ReferencedStudySequence = "RP1", _ref_study()
    ds.RequestAttributesSequence = Sequence([request])
    out = _run(tmp_path, ds)
    assert "ReferencedStudySequence" not in out
    assert "ReferencedStudySequence" not in out.RequestAttributesSequence[0]
    out.save_as(tmp_path / "checked.dcm")
    check = subprocess.run(["dciodvfy", str(tmp_path / "checked.dcm")], capture_output=True, text=True) \
        if shutil.which("dciodvfy") else None
    if check is not None:  # the Makefile installs dicom3tools; without it the structure above is the check
        assert "ReferencedStudySequence" not in check.stderr + check.stdout


def test_a_referenced_study_sequence_stays_empty_where_it_is_type_2(tmp_path: Path) -> None:
    """An SR's Referenced Request Sequence requires its Referenced Study Sequence (type 2): there X/Z is Z."""
    ds = _sr("045Y")
    request = Dataset()
    request.StudyInstanceUID, request.ReferencedStudySequence = ROOT + "2", _ref_study()
    ds.ReferencedRequestSequence = Sequence([request])
    out = _run(tmp_path, ds)
    kept = out.ReferencedRequestSequence[0]
    assert "ReferencedStudySequence" in kept and len(kept.ReferencedStudySequence) == 0


def test_an_enumerated_value_that_matches_the_patients_name_stays(tmp_path: Path) -> None:
    """ValueType CODE of a patient named CODE is the standard's word: replaced by X, the SR was invalid."""
    ds = _sr("045Y")
    ds.PatientName = "CODE^MARTHA"
    coded = Dataset()
    coded.RelationshipType, coded.ValueType = "CONTAINS", "CODE"
    coded.ConceptNameCodeSequence = _code("121071", "Finding")
    coded.ConceptCodeSequence = _code("17621005", "Normal", "SCT")
    note = Dataset()
    note.RelationshipType, note.ValueType, note.TextValue = "CONTAINS", "TEXT", "Seen with Martha Code today."
    note.ConceptNameCodeSequence = _code("121071", "Finding")
    ds.ContentSequence = Sequence([*ds.ContentSequence, coded, note])
    out = _run(tmp_path, ds)
    assert [item.ValueType for item in out.ContentSequence][-2:] == ["CODE", "TEXT"]
    assert "Code" not in out.ContentSequence[-1].TextValue and "Martha" not in out.ContentSequence[-1].TextValue
