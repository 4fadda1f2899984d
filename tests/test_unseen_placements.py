"""Identifiers placed where our own generator does not put them (an audit on data the tool had never seen):
URLs, kept private UIDs, unknown binary elements, labels and code meanings outside the table, nested
marker copies, accent-free and two-ideograph names, ages over 89, placeholder patient names.

Each case builds one file, runs the whole per-file pipeline, and asserts what a reader of the output
sees: written (not quarantined for something the tool can clean), and none of the planted values in
the output bytes.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from deid_core.config import DeidConfig
from deid_core.pipeline import deidentify_file
from deid_core.terms import PhiTerms
from deid_core.verify import LeakTerms, find_leaks
from tests.conftest import TEST_KEY

ROOT = "1.2.826.0.1.3680043.8.498."
STUDY, SERIES, SOP = ROOT + "77", ROOT + "88", ROOT + "1001"


def _base(name: str = "SMITHERS^JOHNATHAN", pid: str = "PX98765432") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = SOP, STUDY, SERIES
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, pid, "19440217", "M"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.Modality = "20210303", "101500", "ACC55443322", "CT"
    ds.InstitutionName = "Bramblewood General Hospital"
    ds.Manufacturer = "ACME"
    return ds


def _run(tmp_path: Path, ds: Dataset) -> tuple[str, str, bytes]:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    src = tmp_path / "in" / "f.dcm"
    src.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(src, enforce_file_format=True)
    out = deidentify_file(src, DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out"))
    data = (tmp_path / "out" / out.output_path).read_bytes() if out.status == "written" else b""
    return out.status, out.reason, data


def _plant_url(ds: Dataset) -> list[str]:
    ds.RetrieveURL = f"https://pacs.bramblewood.org/wado/studies/{STUDY}/series/{SERIES}"
    return [STUDY, SERIES, "bramblewood"]


def _plant_private_kept_uid(ds: Dataset) -> list[str]:
    # (0029,"MMCPrivate",D5) EnhancedSopInstanceUid: the TCIA KB keeps it ('k')
    ds.private_block(0x0029, "MMCPrivate", create=True).add_new(0xD5, "UI", SOP)
    return [SOP]


def _plant_unknown_binary(ds: Dataset) -> list[str]:
    ds.add_new(0x00089998, "OW", b"SMITHERS^JOHNATHAN PX98765432".ljust(30, b" "))
    return ["SMITHERS", "PX98765432"]


def _plant_labels(ds: Dataset) -> list[str]:
    ds.add_new(0x00620005, "LO", "SMITHERS liver")  # SegmentLabel, not in the table
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "X1", "99LOCAL", "CT for JOHNATHAN SMITHERS"
    ds.ProcedureCodeSequence = Sequence([item])
    return ["SMITHERS", "JOHNATHAN"]


def _plant_nested_marker(ds: Dataset) -> list[str]:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = ds.SOPClassUID, ROOT + "555"
    item.DeidentificationMethod = "Pseudonymised by J SMITHERS PX98765432"
    ds.SourceImageSequence = Sequence([item])
    return ["SMITHERS", "PX98765432"]


def _plant_unaccented(ds: Dataset) -> list[str]:
    ds.PatientName = "MÜLLER^JOSÉ"
    ds.StudyDescription = "CT MULLER JOSE"
    ds.ImageComments = "Patient Mueller, Jose"
    return ["MULLER", "Mueller", "JOSE", "Jose"]


def _plant_two_ideographs(ds: Dataset) -> list[str]:
    ds.PatientName = "Yamada^Taro=山田^太郎"
    ds.add_new(0x00620005, "LO", "山田 liver")
    return ["山田"]


def _plant_old_age(ds: Dataset) -> list[str]:
    ds.ImageComments = "92F with chest pain, ninety-two year old"
    return ["92F", "ninety-two"]


def _plant_unpadded_id(ds: Dataset) -> list[str]:
    ds.PatientID = "0004471"
    ds.SeriesDescription = "MRN 4471 follow up"
    return ["4471"]


CASES = {
    "retrieve-url": _plant_url, "private-kept-uid": _plant_private_kept_uid,
    "unknown-binary": _plant_unknown_binary, "labels-and-code-meanings": _plant_labels,
    "nested-marker-copy": _plant_nested_marker, "unaccented-name": _plant_unaccented,
    "two-ideograph-name": _plant_two_ideographs, "age-over-89": _plant_old_age,
    "id-without-leading-zeros": _plant_unpadded_id,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_planted_value_is_gone_and_the_file_is_written(tmp_path: Path, case: str) -> None:
    ds = _base()
    needles = CASES[case](ds)
    status, reason, data = _run(tmp_path, ds)
    assert (status, reason) == ("written", "")
    for n in needles:
        for enc in ("utf-8", "latin-1"):
            try:
                assert n.encode(enc) not in data, (n, enc)
            except UnicodeEncodeError:
                continue


@pytest.mark.parametrize("name", ["ANON^PATIENT", "PATIENT^TEST", "Anonymized^Patient", "PROFILE^BASIC"])
def test_placeholder_patient_names_are_not_our_own_markers(tmp_path: Path, name: str) -> None:
    """The markers we write (code meanings "Basic Application Confidentiality Profile", "Retain Patient
    Characteristics Option") are not the patient's name, even when the name is "PATIENT^TEST"."""
    status, reason, data = _run(tmp_path, _base(name=name))
    assert (status, reason) == ("written", "")
    assert pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).DeidentificationMethodCodeSequence


def test_surname_that_is_a_body_part_keeps_the_code(tmp_path: Path) -> None:
    ds = _base(name="HEAD^MARY")
    ds.BodyPartExamined = "HEAD"
    status, _reason, data = _run(tmp_path, ds)
    assert status == "written"
    assert pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).BodyPartExamined == "HEAD"


def test_a_name_inside_a_code_string_is_replaced_not_emptied(tmp_path: Path) -> None:
    """ContentLabel (CS, type 1 in presentation states and segmentations) "WHITAKER_MEAS" was emptied,
    which made the object invalid; the name part is replaced by the CS placeholder "X"."""
    ds = _base(name="WHITAKER^HAROLD")
    ds.ContentLabel = "WHITAKER_MEAS"
    assert _clean_one(tmp_path, ds).ContentLabel == "X_MEAS"


@pytest.mark.parametrize(("age", "out"), [("095Y", "090Y"), ("090Y", "090Y"), ("089Y", "089Y"),
                                          ("999M", "999M"), ("060M", "060M"), ("012W", "012W")])
def test_patient_age_over_89_is_aggregated(tmp_path: Path, age: str, out: str) -> None:
    ds = _base()
    ds.PatientAge = age
    status, _reason, data = _run(tmp_path, ds)
    assert status == "written"
    assert pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)).PatientAge == out


def test_verification_finds_an_original_uid_anywhere() -> None:
    """The safety net behind the URL and private-UID rules: any original UID the scrub remapped, left in
    any element (a URL, free text, a UI value), is a leak."""
    ds = Dataset()
    ds.RetrieveURL = f"https://x/studies/{STUDY}"
    lt = LeakTerms(PhiTerms())
    lt.uids = frozenset({STUDY})
    assert [lk.kind for lk in find_leaks(ds, lt)] == ["uid"]
    ds.RetrieveURL = f"https://x/studies/{STUDY}.5"  # a longer UID that merely starts with it
    ds.ImageComments = f"see {STUDY}"
    assert [lk.element for lk in find_leaks(ds, lt)] == ["(0020,4000)"]


def _clean_one(tmp_path: Path, ds: Dataset) -> Dataset:
    status, reason, data = _run(tmp_path, ds)
    assert (status, reason) == ("written", "")
    return pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))


def test_class_and_coding_scheme_uids_are_kept(tmp_path: Path) -> None:
    """A vendor's private SOP class and SNOMED's OID name a kind of object and a vocabulary: remapped, the
    object would lose its class."""
    ds = _base()
    ds.SOPClassUID = "1.3.12.2.1107.5.9.1"
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "39607008", "SCT", "Lung"
    item.CodingSchemeUID = "2.16.840.1.113883.6.96"
    ds.AnatomicRegionSequence = Sequence([item])
    out = _clean_one(tmp_path, ds)
    assert out.SOPClassUID == out.file_meta.MediaStorageSOPClassUID == "1.3.12.2.1107.5.9.1"
    assert out.AnatomicRegionSequence[0].CodingSchemeUID == "2.16.840.1.113883.6.96"
    assert out.SOPInstanceUID != SOP


@pytest.mark.parametrize(("keyword", "value"), [
    ("SeriesDescription", "DWI_b0_1000"), ("SeriesDescription", "ep2d_diff_b50_400_800"),
    ("SeriesDescription", "CE-MRA 0.9x0.9x1.2"), ("ProtocolName", "TR/TE 12000/120"),
    ("ImageComments", "Total DLP 1234.5 mGy*cm"), ("ImageComments", "Pt Prone"),
    ("ImageComments", "Tech: Repeat due to motion"), ("ImageComments", "Seen by Radiology Team")])
def test_clinical_descriptors_are_not_over_cleaned(tmp_path: Path, keyword: str, value: str) -> None:
    ds = _base()
    setattr(ds, keyword, value)
    assert str(getattr(_clean_one(tmp_path, ds), keyword)) == value


def test_institution_named_for_a_body_part_keeps_the_body_part(tmp_path: Path) -> None:
    ds = _base()
    ds.InstitutionName, ds.StudyDescription, ds.BodyPartExamined = "Breast Imaging Center", "MR BREAST BILAT", "BREAST"
    out = _clean_one(tmp_path, ds)
    assert (out.StudyDescription, out.BodyPartExamined) == ("MR BREAST BILAT", "BREAST")


@pytest.mark.parametrize(("header", "text", "gone"), [
    ({"PatientAddress": "1261 Leawood Street, Little Rock AR 72223"}, "lives alone in Little Rock, AR",
     ["Little Rock"]),
    ({"PatientAddress": "1261 Leawood Street, Little Rock AR 72223"}, "home 1261 Leawood", ["1261", "Leawood"]),
    ({"PatientTelephoneNumbers": "501-555-0199"}, "call 555 0199 after 5pm", ["555 0199"]),
    ({"PatientName": "ONEILL^ROBERT"}, "pt Robert O'Neill unable to stand", ["O'Neill", "Robert"]),
    ({"PatientName": "MULLER^HANS"}, "pt Hans Müller unable to stand", ["Müller", "Hans"]),
    ({}, "CT CHEST W CONTRAST per Jennifer Walsh", ["Jennifer", "Walsh"]),
    ({"PatientID": "AB1234"}, "follow up ptAB1234_fu", ["AB1234"]),
    ({}, "Findings discussed with Kowalski, Anna by phone", ["Kowalski", "Anna"]),
    ({"PatientID": "12345678"}, "outside film ID 1234 5678 reviewed", ["1234 5678"]),
    ({"PatientID": "0044712839"}, "prior MRN 0044-712-839 see report", ["0044-712-839"]),
    ({"AccessionNumber": "20455871"}, "compare acc 20.45.58.71", ["20.45.58.71"]),
])
def test_parts_and_spellings_of_identifiers_leave_free_text(tmp_path: Path, header: dict[str, str], text: str,
                                                            gone: list[str]) -> None:
    ds = _base()
    for k, v in header.items():
        setattr(ds, k, v)
    ds.AdditionalPatientHistory = text
    cleaned = str(_clean_one(tmp_path, ds).get("AdditionalPatientHistory", ""))
    assert not [g for g in gone if g in cleaned], cleaned


@pytest.mark.parametrize(("name", "keyword", "value", "out"), [
    ("WHITE^BARRY", "EthnicGroup", "WHITE", "WHITE"), ("BROWN^ALICE", "StationName", "BROWN_CT", "BROWN_CT"),
    ("BROWN^ALICE", "StationName", "BROWN", "[X]"),  # the bare surname: not a coincidence to assume
    ("WHITMORE^ELEANOR", "LensMake", "Seen by Dr Eleanor Whitmore", "Seen by Dr [X]"),
    ("WHITMORE^ELEANOR", "XRaySourceID", "XRS-PX98765432", "XRS-[X]"),
    # a title before the name part, or a user's machine after it, names the person (session 10's audit: a referring
    # SCHNEIDER^KLAUS kept in "PRAXIS_DR_SCHNEIDER" and "SCHNEIDER-PC")
    ("BROWN^ALICE", "StationName", "PRAXIS_DR_BROWN", "PRAXIS_DR_[X]"),
    ("BROWN^ALICE", "StationName", "BROWN-PC", "[X]-PC"),
    ("BROWN^ALICE", "StationName", "CT_BROWNSVILLE", "CT_BROWNSVILLE"),
])
def test_retained_values_that_coincide_with_a_name(tmp_path: Path, name: str, keyword: str, value: str,
                                                   out: str) -> None:
    """Retained characteristics and device names may share a word with the patient's name without naming
    the patient, and are kept; a retained value that names the patient (the bare surname, the whole name, the
    ID) loses that part, as verification counts it. Such files used to be quarantined, losing every value."""
    ds = _base(name=name)
    setattr(ds, keyword, value)
    status, reason, data = _run(tmp_path, ds)
    assert (status, reason) == ("written", "")
    assert str(getattr(pydicom.dcmread(pydicom.filebase.DicomBytesIO(data)), keyword)) == out


def test_verification_searches_urls_for_names_too() -> None:
    from deid_core.terms import NAME as NAME_KIND

    ds = Dataset()
    ds.add_new(0x00080120, "UR", "https://x/patients/SMITHERS")  # URNCodeValue
    terms = PhiTerms()
    terms.add("SMITHERS", NAME_KIND)
    lt = LeakTerms(terms)
    lt.uids = frozenset({STUDY})
    assert [lk.kind for lk in find_leaks(ds, lt)] == ["name"]


def test_ids_in_digit_groups_are_leaks_and_short_runs_are_not() -> None:
    """An all-digit ID of 6+ digits typed in groups is the ID (verification finds what cleaning removes);
    a run of the same digits with another digit glued on, or a shorter ID in groups, is not."""
    from deid_core.terms import TermMatcher, capture_terms

    header = Dataset()
    header.PatientID, header.AccessionNumber = "12345678", "A77"
    m = TermMatcher(capture_terms(header))
    assert [(s.start, s.end, s.kind) for s in m.find("ID 1234 5678.")] == [(3, 12, "id")]
    assert m.contains("12-34-56-78") and not m.contains("1234 56789") and not m.contains("7 7")


def test_patients_without_a_patient_id_are_not_merged(tmp_path: Path) -> None:
    """Keyed on an empty PatientID alone, every patient without one got the same pseudonym and date shift;
    the name and birth date key them now, and the empty PatientID gets the pseudonym too."""
    outs = []
    # the third and fourth write the first's name as PS3.5 allows ("^^^" padding) and in another case: the
    # same patient, keyed once (they had their own pseudonyms and date shifts in one series: an audit)
    for i, (name, birth) in enumerate([("WHITAKER^HAROLD", "19580412"), ("NGUYEN^THANH", "19900101"),
                                       ("WHITAKER^HAROLD^^^", "19580412"), ("Whitaker^Harold", "19580412")]):
        ds = _base(name, "")
        ds.PatientBirthDate = birth
        ds.SOPInstanceUID = f"{SOP}{i}"
        outs.append(_clean_one(tmp_path / str(i), ds))
    ids = [(str(o.PatientName), str(o.PatientID), str(o.StudyDate)) for o in outs]
    assert ids[0] == ids[2] == ids[3] and ids[0][0] != ids[1][0] and ids[0][2] != ids[1][2]
    assert all(pid == name.replace("^", "-") for name, pid, _ in ids)


def _item(**values: object) -> Dataset:
    d = Dataset()
    for k, v in values.items():
        setattr(d, k, v)
    return d


def test_person_identification_codes_and_issuer_names_are_replaced(tmp_path: Path) -> None:
    """A requesting physician identified by a code (staff/licence number as CodeValue, the name as
    CodeMeaning) and issuers named in LocalNamespaceEntityID were kept: no table row covers them, and code
    meanings and namespaces yielded no term. Both are dummies now, and their values are terms (a mention
    in free text is cleaned, and verification would find one left anywhere)."""
    ds = _base()
    ident = _item(CodeValue="NPI1487654321", CodingSchemeDesignator="99NPI", CodeMeaning="Lindqvist, Anna")
    ds.RequestingPhysicianIdentificationSequence = [_item(PersonIdentificationCodeSequence=[ident])]
    staff = _item(CodeValue="E55821", CodingSchemeDesignator="99STAFF", CodeMeaning="Anna Lindqvist")
    ds.RequestAttributesSequence = [_item(
        RequestingPhysicianIdentificationSequence=[_item(PersonIdentificationCodeSequence=[staff])],
        IssuerOfAccessionNumberSequence=[_item(LocalNamespaceEntityID="StAgathaRIS")])]
    ds.IssuerOfPatientIDQualifiersSequence = [_item(AssigningFacilitySequence=[
        _item(LocalNamespaceEntityID="St Agatha Oncology Institute")])]
    ds.OrderPlacerIdentifierSequence = [_item(LocalNamespaceEntityID="RIS")]
    ds.AdditionalPatientHistory = "ordered by Dr Lindqvist at St Agatha Oncology"
    status, reason, data = _run(tmp_path, ds)
    assert (status, reason) == ("written", "")
    for gone in (b"Lindqvist", b"1487654321", b"E55821", b"Agatha", b"RIS"):
        assert gone not in data, gone
    out = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
    assert out.RequestingPhysicianIdentificationSequence[0].PersonIdentificationCodeSequence[0].CodingSchemeDesignator \
        == "99NPI"
    assert "ordered by" in out.AdditionalPatientHistory


@pytest.mark.parametrize("text", ["検査日 2021年3月15日 右肺結節", "検査日2021年03月15日", "2021년 3월 15일 촬영",
                                  "前回 令和3年3月15日", "前回 平成元年1月8日"])
def test_dates_with_cjk_units_leave_free_text(tmp_path: Path, text: str) -> None:
    """Dates written with 年月日 / 년월일 (Gregorian or in a Japanese era) stayed in free text while the same
    element's "2021/3/15" was removed."""
    ds = _base()
    ds.StudyDate = "20210315"
    ds.ImageComments = text
    cleaned = str(_clean_one(tmp_path, ds).get("ImageComments", ""))
    assert not any(u in cleaned for u in "年년"), cleaned
    if " " in text and not text[0].isdigit():  # the words around stay (a glued one goes with the date)
        assert cleaned.split()[0] == text.split()[0]


def test_tcia_lists_profile_end_to_end(tmp_path: Path) -> None:
    """--profile tcia-lists: StationName and ImageComments go (TCIA's remove list), descriptions are cleaned,
    dates shifted and the file written; the default profile keeps StationName (Retain Device Identity)."""
    outs = {}
    for profile in ("tcia", "tcia-lists"):
        ds = _base()
        ds.StationName, ds.ImageComments, ds.StudyDescription = "CT01", "seen by SMITHERS", "CT CHEST SMITHERS"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        src = tmp_path / profile / "f.dcm"
        src.parent.mkdir(parents=True)
        ds.save_as(src, enforce_file_format=True)
        o = deidentify_file(src, DeidConfig(key=TEST_KEY, output_dir=tmp_path / profile / "out", profile=profile))
        assert o.status == "written", o.error
        outs[profile] = pydicom.dcmread(tmp_path / profile / "out" / o.output_path)
    assert outs["tcia"].StationName == "CT01" and "StationName" not in outs["tcia-lists"]
    assert "ImageComments" not in outs["tcia-lists"] and outs["tcia"].ImageComments == "seen by [X]"
    assert outs["tcia-lists"].StudyDescription == outs["tcia"].StudyDescription == "CT CHEST [X]"
    assert outs["tcia-lists"].StudyDate == outs["tcia"].StudyDate != "20210303"


def test_pydicom_prints_no_value_of_an_invalid_uid(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                   recwarn: pytest.WarningsRecorder) -> None:
    """A legacy UID with leading-zero components is invalid: pydicom's validation warning quoted it in full,
    and a default-level CLI run printed the original StudyInstanceUID to stderr."""
    import logging

    legacy = "1.2.840.113619.2.055.3.0274877906.0917"
    ds = _base()
    ds.StudyInstanceUID = legacy
    with caplog.at_level(logging.DEBUG):
        status, reason, data = _run(tmp_path, ds)
    assert (status, reason) == ("written", "") and legacy.encode() not in data
    assert "0274877906" not in caplog.text
    assert not [w for w in recwarn if "0274877906" in str(w.message)]


def test_a_frame_no_decoder_reads_is_quarantined_without_the_decoders_tracebacks(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """pydicom logs each decoder plugin that fails at ERROR with a traceback (about 20 lines per file on a
    run's stderr): the reason in provenance says it once."""
    import logging

    from pydicom.data import get_testdata_file

    from tests.conftest import TEST_KEY

    with caplog.at_level(logging.DEBUG):
        out = deidentify_file(Path(get_testdata_file("JPEG-lossy.dcm")), DeidConfig(key=TEST_KEY,
                                                                                    output_dir=tmp_path / "o"))
    assert (out.status, out.reason) == ("quarantined", "pixel_error")
    assert not [r for r in caplog.records if r.name.startswith("pydicom")]


@pytest.mark.parametrize("text", ["see also series {uid}", "Ref study {uid} on prior", "frame of ref {uid}"])
def test_a_uid_written_in_free_text_goes_whatever_word_stands_before_it(tmp_path: Path, text: str) -> None:
    """An audit: after "series" the UID was taken for a series number and kept; the file's own one then made
    verification quarantine an ordinary CT. Both the file's own UID and another's are removed."""
    for uid in (SERIES, "1.3.6.1.4.1.99996.77.3"):
        ds = _base()
        ds.ImageComments = text.format(uid=uid)
        out = str(_clean_one(tmp_path / uid, ds).ImageComments)
        assert uid not in out and "[X]" in out


@pytest.mark.parametrize(("keyword", "value"), [("ROIName", "White_matter"), ("SeriesDescription",
                                                                          "t1_vibe_dixon_tra gray white matter"),
                                              ("ImageComments", "No white matter or gray matter abnormality")])
def test_a_colour_surname_of_staff_leaves_the_colour_of_a_tissue(tmp_path: Path, keyword: str, value: str) -> None:
    """An audit: "White_matter" became "[X]_matter" for an operator WHITE^SUSAN and a referring GRAY^MATTHEW; a
    colour surname still counts alone or after a title ("Dr White", "scanned by White")."""
    ds = _base()
    ds.OperatorsName, ds.ReferringPhysicianName = "WHITE^SUSAN", "GRAY^MATTHEW"
    if keyword == "ROIName":
        ds.ImageComments = value  # (no ROI module on a CT: the same text where a CT carries it)
    else:
        setattr(ds, keyword, value)
    ds.AdditionalPatientHistory = "called Dr White; scanned by Gray"
    out = _clean_one(tmp_path, ds)
    kept = str(out.get("ImageComments" if keyword == "ROIName" else keyword, ""))
    assert kept == value
    assert "White" not in str(out.AdditionalPatientHistory) and "Gray" not in str(out.AdditionalPatientHistory)
