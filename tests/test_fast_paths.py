"""The tag path's fast forms give exactly what the plain pydicom/reference forms give.

``inventory.element`` replaces ``Dataset.__getitem__`` on the per-file path: the datasets it leaves
must be indistinguishable (types, VRs, values, private creators, pixel representation, encoded bytes),
including the cases it hands back to pydicom (sequences, ambiguous VRs, character sets, implicit VR).
"""

from __future__ import annotations

from collections.abc import Iterator

import pydicom
import pytest
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException

from deid_core import inventory
from deid_core.inventory import element
from deid_core.writer import encode

FILES = ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "rtplan.dcm", "nested_priv_SQ.dcm",
         "priv_SQ.dcm", "UN_sequence.dcm", "test-SR.dcm", "reportsi.dcm", "waveform_ecg.dcm", "rtdose.dcm",
         "badVR.dcm", "empty_charset_LEI.dcm", "no_meta.dcm", "ExplVR_BigEndNoMeta.dcm", "liver_1frame.dcm",
         "chrH31.dcm", "chrX2.dcm", "chrFrenMulti.dcm"]


def _path(name: str) -> str | None:
    if name.startswith("chr"):
        found = get_charset_files(name)
        return str(found[0]) if found else None
    return get_testdata_file(name)  # type: ignore[no-any-return]


def _encoded(ds: Dataset) -> bytes | str:
    try:
        return encode(ds)
    except Exception as exc:  # an incomplete file meta fails alike on both sides
        return type(exc).__name__


def _walk(ds: Dataset, get: object) -> Iterator[tuple[object, ...]]:
    for tag in list(ds.keys()):
        try:
            elem = get(ds, tag)  # type: ignore[operator]
        except Exception as exc:
            yield ("error", int(tag), type(exc).__name__)
            continue
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from _walk(item, get)


def _snapshot(ds: Dataset) -> list[object]:
    out: list[object] = [getattr(ds, "_pixel_rep", None), repr(ds.original_character_set)]
    for tag, elem in sorted(ds._dict.items()):
        out.append((int(tag), type(elem).__name__, elem.VR, getattr(elem, "private_creator", None),
                    getattr(elem, "is_undefined_length", None), getattr(elem, "file_tell", None),
                    type(elem.value).__name__, None if elem.VR == "SQ" else repr(elem.value)))
        if isinstance(elem, pydicom.DataElement) and elem.VR == "SQ":
            out.append([_snapshot(item) for item in elem.value])
    return out


@pytest.mark.parametrize("name", FILES)
def test_element_converts_exactly_as_getitem(name: str) -> None:
    path = _path(name)
    if path is None:
        pytest.skip(f"{name} not bundled")
    ref, fast = pydicom.dcmread(path, force=True), pydicom.dcmread(path, force=True)
    inventory._MEMO.clear()
    assert list(_walk(ref, lambda d, t: d[t])) == list(_walk(fast, element))
    assert _snapshot(fast) == _snapshot(ref)
    warm = pydicom.dcmread(path, force=True)  # every memo-able value now comes from the memo
    if name in ("CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm", "rtplan.dcm"):
        assert inventory._MEMO  # explicit and implicit VR alike
    assert list(_walk(warm, element)) == list(_walk(pydicom.dcmread(path, force=True), lambda d, t: d[t]))
    assert _snapshot(warm) == _snapshot(ref)
    assert any(type(e).__name__ == "DataElement" for e in fast._dict.values())
    assert _encoded(fast) == _encoded(ref)


def test_element_on_a_damaged_value_raises_like_getitem_and_keeps_the_raw_element() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rows = pydicom.tag.Tag(0x00280010)  # Rows, US: 3 bytes cannot be decoded
    ds._dict[rows] = ds._dict[rows]._replace(value=b"\x01\x02\x03", length=3)
    ref = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ref._dict[rows] = ds._dict[rows]
    with pytest.raises(BytesLengthException, match="even multiple of bytes per value"):
        ref[rows]
    with pytest.raises(BytesLengthException, match="even multiple of bytes per value"):
        element(ds, rows)
    assert type(ds._dict[rows]).__name__ == "RawDataElement"


def test_private_elements_carry_their_creator() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    private = [t for t in ds.keys() if t.is_private and not t.is_private_creator]
    assert private
    for tag in private:
        assert element(ds, tag).private_creator == pydicom.dcmread(
            get_testdata_file("CT_small.dcm"))[tag].private_creator


def _reference_value_issues(ds: Dataset) -> list[str]:
    """value_issues as it was before its fast paths (every value through validate_value)."""
    from pydicom.config import RAISE
    from pydicom.multival import MultiValue
    from pydicom.valuerep import validate_value

    from deid_core.conformance import PIXEL_TAGS

    out: list[str] = []

    def visit(d: Dataset, prefix: str) -> None:
        for tag in sorted(d.keys()):
            if int(tag) in PIXEL_TAGS:
                continue
            elem = d[tag]
            where = prefix + f"({tag.group:04X},{tag.element:04X})"
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value or []):
                    visit(item, f"{where}[{i}]>")
                continue
            if elem.VR in ("UN", "OB", "OW", "OF", "OD", "OL", "OV"):
                continue
            try:
                vals = elem.value if isinstance(elem.value, list | MultiValue) else [elem.value]
                for v in vals:
                    if v is None or v == "":
                        continue
                    validate_value(elem.VR, str(v) if elem.VR in ("DS", "IS") else v, RAISE)
            except Exception:
                out.append(f"invalid_value:{where}:{elem.VR}")

    visit(ds, "")
    return out


def _with_invalid_values() -> Dataset:
    from pydicom import config

    ds = pydicom.dcmread(get_testdata_file("rtplan.dcm"))
    with config.disable_value_validation():
        ds.Rows = 70000  # out of US range
        ds.add_new(0x00280011, "SS", [-5, 40000])  # second value out of SS range
        ds.add_new(0x00281052, "IS", "12345678901234")  # longer than IS allows
        ds.Modality = "rt plan"  # lower case code string
        ds.StationName = "S" * 20  # longer than SH
        ds.add_new(0x00181030, "LO", ["ok", "y" * 70])
        ds.add_new(0x00189087, "FD", "1.0")  # a string where a float belongs
        ds.BeamSequence[0].BeamName = "B" * 70
        ds.BeamSequence[0].add_new(0x300A00C2, "SH", "also fine")
    return ds


@pytest.mark.parametrize("name", ["CT_small.dcm", "rtplan.dcm", "test-SR.dcm", "MR_small_implicit.dcm", "invalid"])
def test_value_issues_fast_paths_report_what_validate_value_reports(name: str) -> None:
    from deid_core.conformance import value_issues

    ds = _with_invalid_values() if name == "invalid" else pydicom.dcmread(get_testdata_file(name))
    expected = _reference_value_issues(ds)
    assert value_issues(ds) == expected
    assert value_issues(ds) == expected  # the cached verdicts say the same the second time
    if name == "invalid":
        assert {i.rsplit(":", 1)[1] for i in expected} >= {"US", "SS", "IS", "CS", "SH", "LO", "FD"}


def _crafted(tmp_path: object) -> str:
    from pathlib import Path

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientName = "Quixote^Alonso^M"
    ds.OtherPatientIDs = ["QX-445566", "ALT 9988"]
    ds.InstitutionName = "Cedar Hills Hospital"
    ds.StudyDescription = "CT chest; results to a.quixote@example.org"
    ds.PatientTelephoneNumbers = "(555) 201-7788"
    ds.PatientAddress = "12 Maple Avenue, Springfield"
    ds.AcquisitionDateTime = "20210304101010"
    ds.add_new(0x00091010, "LO", "CREATOR X")
    ds.add_new(0x00091011, "DA", "20200101")  # a private date: not a captured date
    ds.add_new(0x00091012, "PN", "Sancho^Panza")  # a private person name is captured
    ds.add_new(0x00091013, "SH", "b@c.de")  # an e-mail in a private text element
    path = Path(str(tmp_path)) / "crafted.dcm"
    ds.save_as(path, enforce_file_format=True)
    return str(path)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm", "test-SR.dcm", "crafted"])
def test_capture_terms_on_a_decoded_dataset_equals_capture_on_the_raw_one(name: str, tmp_path: object) -> None:
    """The pipeline captures after the decodability check (every element already decoded): skipping
    decoded elements by VR captures exactly what the raw path (proven against full decoding) captures."""
    from deid_core.inventory import read_dataset
    from deid_core.terms import EMAIL, capture_terms

    path = _crafted(tmp_path) if name == "crafted" else get_testdata_file(name)
    decoded = read_dataset(path)
    assert not any(type(e).__name__ == "RawDataElement" for e in decoded._dict.values())
    raw = pydicom.dcmread(path)
    got, ref = capture_terms(decoded), capture_terms(raw)
    assert got.terms == ref.terms and got.dates == ref.dates
    if name == "crafted":
        texts = {t.text for t in got.terms}
        assert {"Sancho", "Cedar Hills", "ALT 9988", "b@c.de"} <= texts
        assert any(t.kind == EMAIL and t.text == "a.quixote@example.org" for t in got.terms)
        assert "20200101" not in got.dates and "20210304" in got.dates


def _reference_value_texts(value: object, vr: str) -> list[str]:
    """anonymizer.value_texts before its one-value fast path, kept verbatim."""
    import struct

    from pydicom.multival import MultiValue

    from deid_core.anonymizer import _BINARY_NUMBERS, UNPACKABLE

    items = list(value) if isinstance(value, list | tuple | MultiValue) else [value]
    if isinstance(value, bytes | bytearray):
        return [bytes(value).decode("latin-1")]
    texts = ["\\".join("" if v is None else str(v) for v in items)]
    code = _BINARY_NUMBERS.get(vr)
    if code and items and all(isinstance(v, int | float) for v in items):
        for order in "<>":
            try:
                texts.append(struct.pack(f"{order}{len(items)}{code}", *items).decode("latin-1"))
            except struct.error:
                texts.append(UNPACKABLE)
    return texts


def test_value_texts_equals_its_former_form() -> None:
    from pydicom.multival import MultiValue
    from pydicom.valuerep import DSfloat, PersonName

    from deid_core.anonymizer import value_texts

    values: list[object] = [None, "", "SMITH", 7, -7, 70000, 2**40, 1.5, float("nan"), True, b"AB\x00", bytearray(b"x"),
                            [1, 2, 3], [], [None, "a"], (4, 5), MultiValue(int, [1, 2]), [1, "x"], [1.5, 2],
                            DSfloat("1.50"), PersonName("Doe^John"), [2**70]]
    vrs = ["SS", "US", "SL", "UL", "FL", "FD", "OW", "DS", "LO", "UN", "SV", "UV"]
    for value in values:
        for vr in vrs:
            assert value_texts(value, vr) == _reference_value_texts(value, vr), (repr(value), vr)


def test_memo_hands_out_copies_and_follows_pydicom_settings() -> None:
    from pydicom import config

    inventory._MEMO.clear()
    first = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    second = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    lists = [t for t in first.keys() if type(element(first, t).value) is list]
    assert lists  # CT_small has multi-valued binary numbers
    assert len(inventory._MEMO) > 100
    for t in lists:
        a, b = element(first, t).value, element(second, t).value
        assert a == b and a is not b  # a list from the memo is a copy: changing one changes no other
        a.append(1)
        assert element(pydicom.dcmread(get_testdata_file("CT_small.dcm")), t).value == b

    # A value pydicom would warn about is accepted without a word (deidflow sets pydicom's validation to
    # ignore: its warnings quote values, ``inventory.quiet_pydicom``) and refused once validation raises: the
    # memo is keyed by the validation mode.
    import warnings

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    tag = pydicom.tag.Tag(0x00200013)  # InstanceNumber, IS
    bad = ds._dict[tag]._replace(value=b"12a ", length=4)
    ds._dict[tag] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert element(ds, tag).value == "12a"
    strict = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    strict._dict[tag] = bad
    with config.strict_reading(), pytest.raises(ValueError, match="Invalid value for VR IS"):
        element(strict, tag)
