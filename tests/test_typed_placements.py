"""Identifiers typed where the header search looked only for the file's own captured spellings (an audit,
session 8): the patient's dates and IDs in other written forms, other people's names, phones and dates in
typed text the table does not list or the knowledge base keeps, a birth date in another calendar, retired
order numbers, an SR's observer organisation, the sender's address in the file meta, a date-time written
as text. The outcome asserted is what a reader of the output sees."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from deid_core.terms import TermMatcher, capture_terms
from tests.conftest import deidentify_dataset
from tests.test_unseen_placements import _run

ROOT = "1.2.826.0.1.3680043.8.498."
NAME, PID, DOB, ACC = "HALVORSEN^INGRID", "4471902", "19610305", "A20398811"


def _base(**kw: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = ROOT + "3001", ROOT + "377", ROOT + "388"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = NAME, PID, DOB, "F"
    ds.AccessionNumber, ds.StudyDate, ds.StudyTime, ds.Modality = ACC, "20040119", "101500", "CT"
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def _out(tmp_path: Path) -> Dataset:
    return pydicom.dcmread(next((tmp_path / "out").rglob("*.dcm")))


FORMS = ["1961/3/5", "1961-3-5", "5-3-1961", "3-5-1961", "March 5th, 1961", "5th March 1961", "05MAR61",
         "05-03-61", "610305", "05031961"]


@pytest.mark.parametrize("form", FORMS)
def test_the_birth_date_is_found_in_other_written_forms(form: str) -> None:
    """Unpadded and year-first forms, 2-digit years with dashes, ordinals, 6- and 8-digit runs."""
    assert TermMatcher(capture_terms(_base())).find(f"DOB {form} noted")


@pytest.mark.parametrize("form", ["1961/3/5", "5th March 1961", "610305"])
def test_the_birth_date_in_another_form_leaves_a_kept_private_value(tmp_path: Path, form: str) -> None:
    """A kept private batch description (TCIA keeps it) only loses the file's own identifiers: "610305" in it
    was kept."""
    ds = _base()
    ds.private_block(0x0009, "GEMS_PETD_01", create=True).add_new(0x37, "LO", f"batch {form}")
    status, _reason, data = _run(tmp_path, ds)
    assert status in ("written", "quarantined") and form.encode() not in data


@pytest.mark.parametrize(("text", "needle"), [("MRN 004471902", b"4471902"), ("acc 20398811", b"20398811")])
def test_a_zero_padded_id_and_an_accession_without_its_prefix_are_found(tmp_path: Path, text: str,
                                                                         needle: bytes) -> None:
    ds = _base()
    ds.private_block(0x0009, "GEMS_PETD_01", create=True).add_new(0x37, "LO", text)
    status, _reason, data = _run(tmp_path, ds)
    assert status in ("written", "quarantined") and needle not in data


TYPED = "Approved by Dr Petra Lindqvist 2/11/2003"


@pytest.mark.parametrize("place", ["DoseComment", "WindowCenterWidthExplanation", "SubstanceAdministrationNotes",
                                   "ContentDescription", "VOILUTSequence"])
def test_typed_text_in_an_untabled_descriptive_element_is_cleaned(tmp_path: Path, place: str) -> None:
    """LO elements the table does not list whose names say they hold typed text were kept verbatim; the same
    text in ImageComments was cleaned."""
    ds = _base()
    if place == "VOILUTSequence":
        lut = Dataset()
        lut.LUTDescriptor, lut.LUTExplanation = [2, 0, 16], TYPED
        lut.add(DataElement(0x00283006, "OW", b"\x00\x00\xff\x0f"))
        ds.VOILUTSequence = Sequence([lut])
    else:
        setattr(ds, place, TYPED)
    status, _reason, data = _run(tmp_path, ds)
    assert status == "written" and b"Lindqvist" not in data and b"2/11/2003" not in data
    assert b"Approved" in data  # the clinical/workflow words stay


@pytest.mark.parametrize("text", ["Referred by Dr. Petra Lindqvist", "call 501-555-0199", "Prior exam 2/11/2003"])
def test_typed_phi_in_a_kept_private_element_removes_it(tmp_path: Path, text: str) -> None:
    """GE Genie Study Comments, kept by TCIA's knowledge base, held a referrer, a phone and a prior exam's date
    that are not the file's own identifiers: kept verbatim."""
    ds = _base()
    block = ds.private_block(0x0013, "GEMS_GENIE_1", create=True)
    block.add_new(0x26, "LT", text)
    status, _reason, data = _run(tmp_path, ds)
    assert status == "written" and text.split()[-1].encode() not in data


def test_kept_private_text_without_typed_phi_stays(tmp_path: Path) -> None:
    ds = _base()
    ds.private_block(0x0013, "GEMS_GENIE_1", create=True).add_new(0x26, "LT", "Rest study, 30 min uptake")
    ds.private_block(0x0009, "GEMS_PETD_01", create=True).add_new(0x37, "LO", "HELICAL 5MM")
    status, _reason, data = _run(tmp_path, ds)
    assert status == "written" and b"Rest study, 30 min uptake" in data and b"HELICAL 5MM" in data


@pytest.mark.parametrize(("tag", "vr", "value"), [
    (0x00100033, "LO", "S36.03.05"), (0x00100034, "LO", "1402/01/01"),
    (0x00402006, "SH", "PO7781204"), (0x00402007, "SH", "FO7781205"),
    (0x00401006, "SH", "PP7781206"), (0x00401007, "SH", "FP7781207")])
def test_dates_in_another_calendar_and_retired_order_numbers_are_removed(tmp_path: Path, tag: int, vr: str,
                                                                         value: str) -> None:
    ds = _base()
    ds.add(DataElement(tag, vr, value))
    status, _reason, data = _run(tmp_path, ds)
    assert status == "written" and value.encode() not in data and tag not in _out(tmp_path)


def _sr_text_item(meaning: str, text: str) -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType, item.TextValue = "HAS OBS CONTEXT", "TEXT", text
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "IHE.05", "99_OFFIS_DCMTK", meaning
    item.ConceptNameCodeSequence = Sequence([code])
    return item


def test_an_sr_item_that_names_an_organisation_is_replaced_and_a_role_stays(tmp_path: Path) -> None:
    """"Recording Observer's Organization Name" = "Riverside Imaging Partners": no pattern of the text cleaner
    knows the organisation; the item's concept says what it is."""
    ds = _base(SOPClassUID="1.2.840.10008.5.1.4.1.1.88.11", Modality="SR", ValueType="CONTAINER")
    ds.ContentSequence = Sequence([_sr_text_item("Recording Observer's Organization Name",
                                                 "Riverside Imaging Partners"),
                                   _sr_text_item("Person Observer's Role in the Organization", "Radiologist")])
    status, _reason, data = _run(tmp_path, ds)
    assert status == "written" and b"Riverside" not in data
    assert _out(tmp_path).ContentSequence[1].TextValue == "Radiologist"


def test_the_file_meta_keeps_only_what_ps3_10_requires(tmp_path: Path) -> None:
    """SourcePresentationAddress named the sending PACS host; it was written verbatim."""
    ds = _base()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.SourcePresentationAddress = "dicom://pacs01.stbrendanrmc.org:104/store"
    ds.file_meta = meta
    out, written = deidentify_dataset(tmp_path, ds)
    assert out.status == "written" and written is not None
    assert b"stbrendanrmc" not in (tmp_path / "out" / out.output_path).read_bytes()
    assert {int(t) for t in written.file_meta.keys()} <= {0x00020000, 0x00020001, 0x00020002, 0x00020003,
                                                          0x00020010, 0x00020012, 0x00020013}


@pytest.mark.parametrize(("keyword", "vr"), [("AcquisitionDateTime", "LO"), ("ContentDate", "SH")])
def test_a_date_written_with_a_text_vr_is_shifted(tmp_path: Path, keyword: str, vr: str) -> None:
    """AcquisitionDateTime written as LO kept its original date: the shift applied to DA/DT only."""
    from pydicom.datadict import tag_for_keyword

    value = "20040119103015" if keyword == "AcquisitionDateTime" else "20040119"
    ds = _base()
    ds.add(DataElement(tag_for_keyword(keyword), vr, value))
    status, _reason, data = _run(tmp_path, ds)
    assert status in ("written", "quarantined") and b"20040119" not in data
    if status == "written":
        assert str(_out(tmp_path).get(keyword, "")).startswith(("2003", "2004"))


@pytest.mark.parametrize(("query", "says"), [
    ("PatientBirthDateInAlternativeCalendar", "removed (beyond the table"),
    ("DoseComment", "cleaned as free text"), ("TextValue", "cleaned as free text"),
    ("SegmentLabel", "kept, less the file's own identifiers"), ("Rows", "kept (public)")])
def test_explain_says_what_happens_to_an_untabled_attribute(query: str, says: str) -> None:
    from deid_core.rules import load_rule_table
    from deid_core.rules.explain import explain

    assert says in explain(query, load_rule_table())


def _item(**values: object) -> Dataset:
    d = Dataset()
    for k, v in values.items():
        setattr(d, k, v)
    return d


@pytest.mark.parametrize(("place", "value", "needle"), [
    ("BeamSequence", "HI19610305_AP", b"19610305"),  # initials + birth date: a planning key
    ("RTImageLabel", "KV20040119101500", b"20040119"),  # a DT stamp glued to letters
    ("SegmentSequence", "Liver 20040119T1015", b"20040119"),
    ("StructureSetLabel", "CBCT20040119", b"20040119")])
def test_a_date_glued_to_letters_in_a_label_is_found(tmp_path: Path, place: str, value: str, needle: bytes) -> None:
    """RT and SEG labels are stamped with dates glued to letters; the matcher wanted a boundary on both sides
    ("CT_20040119" was found, "CT20040119" not)."""
    ds = _base()
    if place == "BeamSequence":
        ds.BeamSequence = Sequence([_item(BeamName=value, BeamNumber=1)])
    elif place == "SegmentSequence":
        ds.SegmentSequence = Sequence([_item(SegmentLabel=value, SegmentNumber=1)])
    else:
        setattr(ds, place, value)
    status, _reason, data = _run(tmp_path, ds)
    assert status in ("written", "quarantined") and needle not in data


@pytest.mark.parametrize(("text", "date"), [("CT chest 2004_01_19", "2004_01_19"), ("DOB 1961_03_05", "1961_03_05"),
                                            ("exam 2004 01 19", "2004 01 19"), ("prior 2004Jan19", "2004Jan19")])
def test_dates_with_underscores_spaces_or_month_names_are_cleaned(tmp_path: Path, text: str, date: str) -> None:
    ds = _base(PerformedProcedureStepDescription=text)
    status, _reason, data = _run(tmp_path, ds)
    assert status == "written" and date.encode() not in data and text.split()[0].encode() in data


@pytest.mark.parametrize(("name", "label", "needle"), [("VAN DER BERG^JAN", "VANDERBERG_J", b"VANDERBERG"),
                                                       ("GARCIA LOPEZ^MARIA", "GarciaLopez1", b"GarciaLopez"),
                                                       ("DIAZ^ANA", "Diaz2023 liver", b"Diaz")])
def test_compound_and_short_surnames_written_solid_or_glued_to_digits_are_found(tmp_path: Path, name: str,
                                                                                 label: str, needle: bytes) -> None:
    ds = _base(PatientName=name, StructureSetLabel=label)
    status, _reason, data = _run(tmp_path, ds)
    assert status in ("written", "quarantined") and needle.lower() not in data.lower()


@pytest.mark.parametrize("text", ["Setup image, Saint Agatha Memorial linac 2", "Location St. Agatha Memorial, CT 2"])
def test_the_institution_in_another_spelling_of_saint_is_found(tmp_path: Path, text: str) -> None:
    ds = _base(InstitutionName="St Agatha Memorial Hospital", RTImageDescription=text)
    status, _reason, data = _run(tmp_path, ds)
    assert status == "written" and b"Agatha" not in data
