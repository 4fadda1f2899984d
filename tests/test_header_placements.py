"""Identifiers the header holds in one form and another element holds in another (an audit, session 7).

Each case plants a patient's name, ID, birth date or phone in the standard fields *and* somewhere the
search for them could miss it: bytes in another encoding than the one declared, a name element with the
wrong VR, separators the header does not use, a non-canonical date, a NUL inside a name, a large binary
value. The outcome asserted is what a reader of the output sees: no written file holds the identifier
(a quarantined file is the fail-closed outcome and also passes).
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from tests.test_unseen_placements import _run as _run_bytes

ROOT = "1.2.826.0.1.3680043.8.498."
SUR, GIVEN, PID, DOB = "QUENTINVALE", "ROSALIND", "ZX77123", "19570311"


def _base(**kw: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = ROOT + "2001", ROOT + "277", ROOT + "288"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"{SUR}^{GIVEN}", PID, DOB, "F"
    ds.StudyDate, ds.StudyTime, ds.Modality = "20210303", "101500", "CT"
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def _kept_private(ds: Dataset, value: bytes | str, vr: str = "LO") -> None:
    """(0009,"GEMS_PETD_01",37) Batch Description: TCIA's knowledge base keeps it."""
    ds.private_block(0x0009, "GEMS_PETD_01", create=True).add_new(0x37, vr, value)


def _assert_clean(status: str, data: bytes, needles: list[bytes]) -> None:
    assert status in ("written", "quarantined")
    for needle in needles:
        assert needle.lower() not in data.lower(), needle


def test_utf8_text_under_a_single_byte_character_set_is_cleaned(tmp_path: Path) -> None:
    """ISO_IR 100 declared, the name read right from PatientName, and UTF-8 bytes of the same name in a
    description, a comment and a kept private element: the misread form matched no term, all three kept it."""
    ds = _base(SpecificCharacterSet="ISO_IR 100")
    ds.PatientName = f"QUENTINVÄLE^{GIVEN}"
    ds.add(DataElement(0x00081030, "LO", "CT QUENTINVÄLE ABDOMEN".encode()))
    ds.add(DataElement(0x00204000, "LT", "seen by QUENTINVÄLE".encode()))
    _kept_private(ds, "QUENTINVÄLE batch".encode())
    status, _reason, data = _run_bytes(tmp_path, ds)
    _assert_clean(status, data, ["QUENTINVÄLE".encode(), "QUENTINVÄLE".encode("latin-1")])
    assert status == "written"  # cleaned, not merely caught
    out = pydicom.dcmread(tmp_path / "out" / next(p for p in (tmp_path / "out").rglob("*.dcm")))
    assert "ABDOMEN" in str(out.StudyDescription)


def test_a_name_element_with_the_wrong_vr_still_names_the_patient(tmp_path: Path) -> None:
    """PatientName written with VR LO (explicit): no name term was captured, and a description and a kept
    private element kept the surname."""
    ds = _base()
    del ds.PatientName
    ds.add(DataElement(0x00100010, "LO", f"{SUR}^{GIVEN}"))
    ds.SeriesDescription = f"CT {SUR}"
    _kept_private(ds, f"{SUR} batch")
    status, _reason, data = _run_bytes(tmp_path, ds)
    _assert_clean(status, data, [SUR.encode()])


@pytest.mark.parametrize("text", ["call 555 0199 re ZX 77123", "555.0199 / ZX-77123", "ZX 77123"])
def test_phone_and_id_with_other_separators_are_found(tmp_path: Path, text: str) -> None:
    """The header's "555-0199" and "ZX77123" written with spaces, dots or hyphens elsewhere."""
    ds = _base(PatientTelephoneNumbers="555-0199", ImageComments=text)
    _kept_private(ds, text)
    status, _reason, data = _run_bytes(tmp_path, ds)
    _assert_clean(status, data, [b"555 0199", b"555.0199", b"ZX 77123", b"ZX-77123", b"77123"])


@pytest.mark.parametrize("dob", ["1957.03.11", "19570311-", "1957-03-11"])
def test_a_birth_date_not_in_dicom_form_is_still_a_term(tmp_path: Path, dob: str) -> None:
    """A legacy ACR-NEMA date ("1957.03.11") or a range in PatientBirthDate: the date was captured only as
    8 digits, and a kept private element kept "19570311"."""
    ds = _base()
    ds.add(DataElement(0x00100030, "DA", dob))
    _kept_private(ds, f"{DOB} batch")
    status, _reason, data = _run_bytes(tmp_path, ds)
    _assert_clean(status, data, [DOB.encode()])


def test_a_nul_inside_a_name_component_is_no_part_of_the_term(tmp_path: Path) -> None:
    ds = _base()
    ds.PatientName = f"{SUR}\x00^{GIVEN}"
    _kept_private(ds, f"{SUR} batch")
    status, _reason, data = _run_bytes(tmp_path, ds)
    _assert_clean(status, data, [SUR.encode()])


def test_a_large_binary_value_is_searched_whole(tmp_path: Path) -> None:
    """An ICC profile over 1 MiB whose description names the patient: values over the 1 MiB decoding limit
    were not searched at all, and the file was written with the name."""
    ds = _base()
    ds.ICCProfile = b"\0" * (1 << 20) + f"descScanner of {SUR} {PID}".encode()
    status, _reason, data = _run_bytes(tmp_path, ds)
    _assert_clean(status, data, [SUR.encode(), PID.encode()])


def test_shift_jis_bytes_in_a_kept_private_element_are_read(tmp_path: Path) -> None:
    """A Japanese name in Shift-JIS (as Japanese vendors write private text) in an element the knowledge base
    keeps, under ISO 2022 IR 87: only Latin-1, UTF-8, UTF-16 and the declared sets were read."""
    ds = _base(SpecificCharacterSet=["", "ISO 2022 IR 87"])
    ds.PatientName = f"{SUR}^{GIVEN}=山田^花子"
    ds.private_block(0x0009, "FDMS 1.0", create=True).add_new(0x92, "SH", "山田花子".encode("shift_jis"))
    status, _reason, data = _run_bytes(tmp_path, ds)
    _assert_clean(status, data, ["山田".encode("shift_jis"), "花子".encode("shift_jis")])


@pytest.mark.parametrize("value", [f"{SUR}seg", f"{SUR.title()}2", f"seg{SUR.lower()}v1"])
def test_a_long_name_glued_to_other_characters_is_found(tmp_path: Path, value: str) -> None:
    """A segmentation's algorithm name "QUENTINVALEseg" kept the surname: names matched only as whole words.
    One-word names of 7+ letters are now found inside longer words too (shorter ones would be chance)."""
    ds = _base(ImageComments=f"model {value}")
    _kept_private(ds, value)
    status, _reason, data = _run_bytes(tmp_path, ds)
    _assert_clean(status, data, [SUR.encode()])


def test_a_short_name_inside_a_longer_word_is_no_match() -> None:
    from deid_core.terms import TermMatcher, capture_terms

    ds = _base()
    ds.PatientName = "LEE^ANN"
    matcher = TermMatcher(capture_terms(ds))
    assert matcher.find("fleet annular") == []


def test_latin1_bytes_under_utf8_are_read_as_latin1(tmp_path: Path) -> None:
    """ISO_IR 192 declared, a description in Latin-1 bytes: pydicom decoded it with a replacement character
    for the "Ä", no term matched "QUENTINV\\ufffdLE", and all of the name but one letter was written."""
    ds = _base(SpecificCharacterSet="ISO_IR 192")
    ds.PatientName = f"QUENTINVÄLE^{GIVEN}"
    ds.add(DataElement(0x00081030, "LO", "CT QUENTINVÄLE ABDOMEN".encode("latin-1")))
    _kept_private(ds, "QUENTINVÄLE batch".encode("latin-1"))
    status, _reason, data = _run_bytes(tmp_path, ds)
    _assert_clean(status, data, [b"QUENTINV", "QUENTINVÄLE".encode(), "QUENTINVÄLE".encode("latin-1")])
    assert status == "written"
