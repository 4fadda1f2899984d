"""Pseudonymization primitives: keyed UIDs, date shifting, patient pseudonyms, PatientMap."""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom._uid_dict import UID_dictionary
from pydicom.data import get_testdata_file
from pydicom.multival import MultiValue

from deid_core.errors import ConfigError, RuleError
from deid_core.pseudonyms import (
    DEFAULT_UID_ROOT,
    PatientEntry,
    PatientMap,
    date_offset_days,
    is_well_known_uid,
    new_uid,
    pseudonym_patient_id,
    pseudonym_patient_name,
    shift_da,
    shift_date_value,
    shift_dt,
)

KEY = b"0123456789abcdef-test-key"
KEY2 = b"another-secret-key-of-length"
UID_RE = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")
ORG_ROOT = "1.2.826.0.1.3680043.10.999"


def _ct_small() -> pydicom.Dataset:
    path = get_testdata_file("CT_small.dcm")
    assert isinstance(path, str)
    return pydicom.dcmread(path)


def valid_uid(u: str) -> bool:
    return bool(UID_RE.match(u)) and len(u) <= 64


# ----------------------------------------------------------------------------- UIDs


def test_new_uid_is_deterministic_and_keyed() -> None:
    uid = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
    a = new_uid(KEY, uid)
    assert a == new_uid(KEY, uid)
    assert a != uid
    assert a != new_uid(KEY2, uid)
    assert a.startswith(DEFAULT_UID_ROOT)
    assert valid_uid(a)
    # the numeric part is the first 128 bits of the HMAC
    assert int(a[len(DEFAULT_UID_ROOT):]) < 2**128


def test_new_uid_ignores_padding_and_keeps_empty() -> None:
    uid = "1.2.3.4.5"
    assert new_uid(KEY, uid + "\0") == new_uid(KEY, uid) == new_uid(KEY, " " + uid + " ")
    assert new_uid(KEY, "") == ""
    assert new_uid(KEY, "\0") == ""


def test_new_uid_from_real_dicom_file_keeps_references_consistent() -> None:
    ds = _ct_small()
    study = new_uid(KEY, ds.StudyInstanceUID)
    assert study == new_uid(KEY, str(ds.StudyInstanceUID))
    assert valid_uid(study) and study != ds.StudyInstanceUID
    assert new_uid(KEY, ds.SOPClassUID) == ds.SOPClassUID
    assert new_uid(KEY, ds.file_meta.TransferSyntaxUID) == ds.file_meta.TransferSyntaxUID


def test_no_collisions_over_100k_realistic_uids() -> None:
    roots = ["1.2.840.113619.2.55.3", "1.3.12.2.1107.5.1.4", "1.2.276.0.7230010.3.1.4", "2.16.840.1.114362"]
    seen: dict[str, str] = {}
    n = 0
    for r, root in enumerate(roots):
        for i in range(250):
            for j in range(100):
                uid = f"{root}.{i + r * 17}.{j}"
                out = new_uid(KEY, uid)
                assert out not in seen, "collision"
                seen[out] = uid
                n += 1
    assert n == 100_000
    assert all(valid_uid(u) for u in seen)


@pytest.mark.parametrize(
    "uid",
    ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50", "1.2.840.10008.5.1.4.1.1.2",
     "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.1.1", "1.2.840.10008.1.2.4.90", "1.2.840.10008.2.16.4",
     "1.2.840.10008.1.4.1.1", "1.2.840.10008.5.1.4.1.1.88.22"]
    + sorted(UID_dictionary)[::40],
)
def test_registry_uids_untouched(uid: str) -> None:
    assert is_well_known_uid(uid)
    assert new_uid(KEY, uid) == uid
    assert new_uid(KEY, uid, root=ORG_ROOT) == uid


def test_all_registry_uids_are_well_known_and_dicom_root_prefix() -> None:
    assert all(is_well_known_uid(u) for u in UID_dictionary)
    assert is_well_known_uid("1.2.840.10008.9.9.9.9")  # future standard UID, not in pydicom's table
    assert is_well_known_uid("1.2.840.10008.1.2.1\0")
    assert not is_well_known_uid("1.2.840.100081.2")
    assert not is_well_known_uid("1.2.840.113619.2.55")


def test_org_root_fills_64_chars_with_at_least_64_bits() -> None:
    for root in (ORG_ROOT, ORG_ROOT + ".", "1.2.3", "1.2.3."):
        out = new_uid(KEY, "1.2.3.4.5.6", root=root)
        prefix = root.rstrip(".") + "."
        assert out.startswith(prefix)
        assert valid_uid(out)
        assert len(out) <= 64
        digits = out[len(prefix):]
        assert len(digits) >= 20
        assert out == new_uid(KEY, "1.2.3.4.5.6", root=root)
    # a short root uses many more than 128 bits
    assert len(new_uid(KEY, "9.9", root="1.2")) > 50


def test_org_root_with_exactly_20_digits_left() -> None:
    root = "1." + "2" * (64 - 20 - 3) + "."
    assert len(root) == 44
    out = new_uid(KEY, "1.2.3", root=root)
    assert valid_uid(out) and len(out) <= 64


@pytest.mark.parametrize("root", ["1." + "2" * 43 + ".", "1.02.3", "1..2", "abc", "", "1.2.a", ".1.2",
                                  "1.2.840.10008.99"])
def test_bad_roots_refused(root: str) -> None:
    with pytest.raises(ConfigError, match="UID root"):
        new_uid(KEY, "1.2.3.4", root=root)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=80), st.sampled_from([DEFAULT_UID_ROOT, ORG_ROOT, "1.2", "2.25"]))
def test_new_uid_always_valid_syntax(uid: str, root: str) -> None:
    out = new_uid(KEY, uid, root=root)
    if not uid.strip().rstrip("\0").strip():
        assert out == ""
    else:
        assert valid_uid(out)


def test_empty_key_refused() -> None:
    with pytest.raises(ConfigError, match="key"):
        new_uid(b"", "1.2.3")


# ----------------------------------------------------------------------------- date offsets


def test_date_offset_in_range_and_stable() -> None:
    for i in range(300):
        d = date_offset_days(KEY, f"PID{i}")
        assert 1 <= d <= 365
        assert d == date_offset_days(KEY, f"PID{i}")
    assert date_offset_days(KEY, "PID1 ") == date_offset_days(KEY, "PID1")
    for i in range(100):
        assert 10 <= date_offset_days(KEY, f"P{i}", 10, 12) <= 12
    assert date_offset_days(KEY, "x", 7, 7) == 7


def test_date_offset_differs_across_patients_and_keys() -> None:
    offsets = [date_offset_days(KEY, f"patient-{i}") for i in range(1000)]
    assert len(set(offsets)) > 250  # ~1000 draws over 365 values
    assert 150 < sum(offsets) / len(offsets) < 215
    assert sum(1 for o in offsets if o <= 182) in range(400, 600)
    other = [date_offset_days(KEY2, f"patient-{i}") for i in range(1000)]
    assert sum(a == b for a, b in zip(offsets, other, strict=True)) < 20


def test_date_offset_bad_range() -> None:
    with pytest.raises(ConfigError, match="min_days"):
        date_offset_days(KEY, "p", 10, 5)
    with pytest.raises(ConfigError, match="min_days"):
        date_offset_days(KEY, "p", -1, 5)


# ----------------------------------------------------------------------------- DA


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20210304", 3, "20210301"),
        ("20210304", 0, "20210304"),
        ("20210301", 1, "20210228"),
        ("20200301", 1, "20200229"),  # leap year
        ("20200229", 365, "20190301"),
        ("20240229", 366, "20230228"),
        ("20210101", 1, "20201231"),
        ("20210304 ", 3, "20210301"),  # padding
        ("2021.03.04", 3, "20210301"),  # ACR-NEMA normalised
        ("2021", 10, "2021"),  # middle of 2021 (Jul 2) - 10 days
        ("2021", 200, "2020"),
        ("202103", 3, "202103"),  # middle of March (16th) - 3
        ("202103", 20, "202102"),
        ("202101", 20, "202012"),
        ("20210101-20210301", 1, "20201231-20210228"),
        ("-20210301", 1, "-20210228"),
        ("20210101-", 1, "20201231-"),
        ("2021-202103", 100, "2021-202012"),  # Mar 16 - 100 d = Dec 6
        ("", 5, ""),
    ],
)
def test_shift_da(value: str, days: int, expected: str) -> None:
    assert shift_da(value, days) == expected


@pytest.mark.parametrize("value", ["20211301", "20210230", "2021030", "abcdefgh", "2021-03-04", "20210101--",
                                   "-", "20210304T", "202", "00000101", "2021/03/04"])
def test_shift_da_invalid_raises_without_value(value: str) -> None:
    with pytest.raises(RuleError, match="DA value") as exc:
        shift_da(value, 3)
    assert value not in str(exc.value) or value == "-"


def test_shift_da_before_year_one() -> None:
    with pytest.raises(RuleError, match="cannot be shifted"):
        shift_da("00010105", 30)


@settings(max_examples=300, deadline=None)
@given(st.dates(min_value=__import__("datetime").date(1900, 1, 1)), st.integers(0, 3650))
def test_shift_da_matches_date_arithmetic(d: object, days: int) -> None:
    import datetime as dt

    assert isinstance(d, dt.date)
    out = shift_da(d.strftime("%Y%m%d"), days)
    assert out == (d - dt.timedelta(days=days)).strftime("%Y%m%d")
    assert len(out) == 8


# ----------------------------------------------------------------------------- DT


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20210304120000.123456+0100", 3, "20210301120000.123456+0100"),
        ("20210304120000.123456-0500", 3, "20210301120000.123456-0500"),
        ("20210304235959", 4, "20210228235959"),
        ("20200301000000.1", 1, "20200229000000.1"),
        ("20210304", 3, "20210301"),
        ("2021030412", 3, "2021030112"),
        ("202103041230", 3, "202103011230"),
        ("202103", 20, "202102"),
        ("2021", 200, "2020"),
        ("2021+0000", 1, "2021+0000"),
        ("2021-0500", 200, "2020-0500"),  # single DT with offset, not a range
        ("20210101-20210301", 1, "20201231-20210228"),
        ("20210101120000+0100-20210301130000-0500", 1, "20201231120000+0100-20210228130000-0500"),
        ("-20210301", 1, "-20210228"),
        ("20210101000000-", 1, "20201231000000-"),
        ("20210101-2022", 1, "20201231-2022"),  # "-2022" is not a valid offset, so a range
        ("  ", 1, ""),
    ],
)
def test_shift_dt(value: str, days: int, expected: str) -> None:
    assert shift_dt(value, days) == expected


@pytest.mark.parametrize("value", ["20210304250000", "2021030412.5", "20210304126000", "20210304+1500",
                                   "2021030412+01", "hello", "20210101--20210102", "202103041200000"])
def test_shift_dt_invalid(value: str) -> None:
    with pytest.raises(RuleError, match="DT value") as exc:
        shift_dt(value, 1)
    assert value not in str(exc.value)


# ----------------------------------------------------------------------------- dispatch


def test_shift_date_value_shapes() -> None:
    mv = MultiValue(str, ["20210304", "20200301"])
    out = shift_date_value("DA", mv, 1)
    assert isinstance(out, MultiValue)
    assert list(out) == ["20210303", "20200229"]
    assert shift_date_value("DA", ["20210304", "2021"], 1) == ["20210303", "2021"]
    assert shift_date_value("DA", ("20210304",), 1) == ("20210303",)
    assert shift_date_value("DT", "20210304120000+0100", 1) == "20210303120000+0100"
    assert shift_date_value("DA", "20210304\\20210305", 1) == "20210303\\20210304"
    assert shift_date_value("DA", b"20210304", 1) == b"20210303"
    assert shift_date_value("DA", None, 1) is None
    assert shift_date_value("DA", "", 1) == ""


def test_shift_date_value_tm_unchanged_and_bad_vr() -> None:
    tm = MultiValue(str, ["120000", "235959.5"])
    assert shift_date_value("TM", tm, 100) is tm
    assert shift_date_value("TM", "120000", 100) == "120000"
    with pytest.raises(RuleError, match="VR 'LO'"):
        shift_date_value("LO", "20210304", 1)


def test_shift_date_value_on_real_file_elements() -> None:
    ds = _ct_small()
    days = date_offset_days(KEY, ds.PatientID)
    for elem in ds:
        if elem.VR in ("DA", "DT") and elem.value:
            shifted = shift_date_value(elem.VR, elem.value, days)
            assert shifted != elem.value
            elem.value = shifted
    ds.StudyDate = shift_date_value("DA", "20040119", days)
    assert ds.StudyDate < "20040119"


def test_shift_date_value_with_pydicom_date_objects() -> None:
    from pydicom.valuerep import DA, DT

    assert shift_date_value("DA", DA("20210304"), 3) == "20210301"
    assert shift_date_value("DT", DT("20210304120000+0100"), 3) == "20210301120000+0100"


# ----------------------------------------------------------------------------- patients


def test_patient_pseudonyms() -> None:
    pid = pseudonym_patient_id(KEY, "12345")
    name = pseudonym_patient_name(KEY, "12345")
    assert re.fullmatch(r"DEID-[A-Z2-7]{10}", pid)
    assert re.fullmatch(r"DEID\^[A-Z2-7]{10}", name)
    assert pid[5:] == name[5:]
    assert pid == pseudonym_patient_id(KEY, "12345 ")
    assert pid != pseudonym_patient_id(KEY2, "12345")
    assert pid != pseudonym_patient_id(KEY, "12346")
    assert pseudonym_patient_id(KEY, "12345", prefix="STUDY7").startswith("STUDY7-")
    assert "12345" not in pid
    ids = {pseudonym_patient_id(KEY, f"{i:08d}") for i in range(20000)}
    assert len(ids) == 20000


@pytest.mark.parametrize("prefix", ["", "A\\B", "A^B", "X" * 60, "A\nB"])
def test_bad_prefix(prefix: str) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        pseudonym_patient_id(KEY, "1", prefix=prefix)


def _write(tmp_path: Path, text: str, name: str = "map.csv", bom: bool = False) -> Path:
    p = tmp_path / name
    p.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return p


def test_patient_map_load_lookup_resolve(tmp_path: Path) -> None:
    p = _write(tmp_path, " original_patient_id , new_patient_id,new_patient_name\n"
                         "MRN001, SUBJ-01 ,Subject^One\n\nMRN002,SUBJ-02,\n", bom=True)
    m = PatientMap.load(p)
    assert len(m) == 2
    assert m.lookup("MRN001") == PatientEntry("SUBJ-01", "Subject^One")
    assert m.lookup("MRN001 ") == PatientEntry("SUBJ-01", "Subject^One")
    assert m.lookup("MRN003") is None
    assert m.resolve(KEY, "MRN002") == (PatientEntry("SUBJ-02", ""), True)
    entry, mapped = m.resolve(KEY, "MRN003")
    assert not mapped
    assert entry == PatientEntry(pseudonym_patient_id(KEY, "MRN003"), pseudonym_patient_name(KEY, "MRN003"))
    import hashlib

    assert m.sha256() == hashlib.sha256(p.read_bytes()).hexdigest()
    assert PatientMap.load(p).sha256() == m.sha256()
    e = PatientMap.empty()
    assert len(e) == 0 and e.lookup("MRN001") is None
    assert e.resolve(KEY, "MRN001")[1] is False
    assert len(e.sha256()) == 64


def test_patient_map_two_columns(tmp_path: Path) -> None:
    """``original_patient_id,new_patient_id`` or ``id_old,id_new`` (deidflow's own linkage file, MIDI-B's
    mapping): the new name is the new id."""
    for header in ("original_patient_id,new_patient_id", "id_old,id_new"):
        m = PatientMap.load(_write(tmp_path, f"{header}\nMRN001,SUBJ-01\nMRN002, SUBJ-02 \n"))
        assert m.lookup("MRN002") == PatientEntry("SUBJ-02", "SUBJ-02")
        assert m.resolve(KEY, "MRN001") == (PatientEntry("SUBJ-01", "SUBJ-01"), True)


HEADER = "original_patient_id,new_patient_id,new_patient_name\n"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("original_patient_id,new_patient_name\nMRN9001,S1\n", "header must be exactly"),
        ("id_old,id_new\nMRN9001,S1,N^1\n", r"row 2: expected 2 columns, found 3"),
        (HEADER.replace("\n", ",extra\n") + "MRN9001,S1,N^1,x\n", "header must be exactly"),
        ("", "header must be exactly"),
        ("pid,new_patient_id,new_patient_name\nMRN9001,S1,N\n", "header must be exactly"),
        (HEADER + "MRN9001,S1\n", r"row 2: expected 3 columns, found 2"),
        (HEADER + "MRN9001,S1,N^1,EXTRA9\n", r"row 2: expected 3 columns, found 4"),
        (HEADER + " ,S1,N^1\n", r"row 2: empty original_patient_id or new_patient_id"),
        (HEADER + "MRN9001,,N^1\n", r"row 2: empty original_patient_id or new_patient_id"),
        (HEADER + "MRN9001,S1,N^1\nMRN9002,S2,N^2\nMRN9001,S3,N^3\n", r"row 4: original_patient_id already "
                                                                      r"mapped in row 2"),
        (HEADER + "MRN9001,S1,N^1\nMRN9001,S1,N^1\n", r"row 3: original_patient_id already mapped in row 2"),
        (HEADER + "MRN9001,S1,N^1\nMRN9002,S1,N^2\n", r"row 3: new_patient_id already used .* row 2"),
        (HEADER + "MRN9001," + "S" * 65 + ",N^1\n", r"row 2: new_patient_id is not a valid LO"),
        (HEADER + "MRN9001,S\\1,N^1\n", r"row 2: new_patient_id is not a valid LO"),
        (HEADER + "MRN9001,\"S\x011\",N^1\n", r"row 2: new_patient_id is not a valid LO"),
        (HEADER + "MRN9001,S1,N\\1\n", r"row 2: new_patient_name is not a valid PN"),
        (HEADER + "MRN9001,S1," + "N" * 65 + "\n", r"row 2: new_patient_name is not a valid PN"),
        (HEADER + "MRN9001,S1,\"N\x07Q\"\n", r"row 2: new_patient_name is not a valid PN"),
        (HEADER + "MRN9001,S1,A^B^C^D^E^F\n", r"row 2: new_patient_name is not a valid PN"),
    ],
)
def test_patient_map_refusals_never_show_ids(tmp_path: Path, text: str, match: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=match) as exc:
        PatientMap.load(p)
    msg = str(exc.value)
    for value in ("MRN9001", "MRN9002", "S1", "S2", "S3", "N^1", "EXTRA9", "SSSS", "NNNN"):
        assert value not in msg


def test_patient_map_reports_several_rows(tmp_path: Path) -> None:
    p = _write(tmp_path, HEADER + "A1,S1,N\nA1,S2,N\nA3,S3,N\\x\n")
    with pytest.raises(ConfigError, match=r"row 3: .*row 4: ") as exc:
        PatientMap.load(p)
    assert "A1" not in str(exc.value) and "A3" not in str(exc.value)


def test_patient_map_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read patient map"):
        PatientMap.load(tmp_path / "missing.csv")
    p = tmp_path / "latin1.csv"
    p.write_bytes(HEADER.encode() + "M\xe9RN,S1,N\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        PatientMap.load(p)


def test_resolve_refuses_collision_with_explicit_new_id(tmp_path: Path) -> None:
    clash = pseudonym_patient_id(KEY, "OTHER-PATIENT")
    p = _write(tmp_path, HEADER + f"MRN1,{clash},N^1\n")
    m = PatientMap.load(p)
    with pytest.raises(ConfigError, match="generated patient pseudonym equals"):
        m.resolve(KEY, "OTHER-PATIENT")
