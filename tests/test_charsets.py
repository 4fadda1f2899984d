"""Identifiers in other character sets and spellings (an audit on data the tool had never seen).

Names, IDs and dates the header holds in one form and free text or kept bytes hold in another: accents
typed or not, decomposed accents, Greek and Cyrillic letter variants, full-width digits, kana of either
width, UTF-8 a file's character set misread, private bytes in UTF-16 or the file's own character set.
Each case runs the whole per-file pipeline and asserts what a reader of the output sees.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from deid_core.anonymizer import byte_texts
from deid_core.config import DeidConfig
from deid_core.pipeline import deidentify_file
from deid_core.terms import NAME, PhiTerms, TermMatcher, fold, fold_marks
from tests.conftest import TEST_KEY
from tests.test_unseen_placements import _run as _run_bytes

ROOT = "1.2.826.0.1.3680043.8.498."


def _base(charset: str, name: str, pid: str = "PX98765432") -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID = ROOT + "1001", ROOT + "77", ROOT + "88"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, pid, "19440217", "M"
    ds.StudyDate, ds.StudyTime, ds.Modality = "20210303", "101500", "CT"
    return ds


def _run(tmp_path: Path, ds: Dataset) -> tuple[str, pydicom.Dataset | None, bytes]:
    """The per-file pipeline as test_unseen_placements runs it, with the output also parsed."""
    status, _reason, data = _run_bytes(tmp_path, ds)
    return status, (pydicom.dcmread(io.BytesIO(data)) if data else None), data


@pytest.mark.parametrize(("charset", "name", "text", "gone"), [
    # accents typed or not, in any letter of Latin script (Romanian, Vietnamese, Croatian, Icelandic)
    ("ISO_IR 192", "Ștefănescu^Bogdan", "CT follow-up Stefanescu", "Stefanescu"),
    ("ISO_IR 192", "Nguyễn^Thị", "Ct for NGUYEN", "NGUYEN"),
    ("ISO_IR 192", "Đorđević^Milan", "Dordevic control", "Dordevic"),
    ("ISO_IR 192", "Þórðardóttir^Anna", "CT Thordardottir", "Thordardottir"),
    # the header in decomposed form (NFD), the text composed, and the reverse
    ("ISO_IR 192", "Mu\u0308ller^Ju\u0308rgen", "Kontrolle Müller", "Müller"),
    ("ISO_IR 192", "Müller^Jürgen", "Kontrolle Mu\u0308ller", "Mu\u0308ller"),
    # Greek written in upper case without its accents
    ("ISO_IR 126", "Παπαδόπουλος^Γιώργος", "ΑΞΟΝΙΚΗ ΘΩΡΑΚΟΣ ΠΑΠΑΔΟΠΟΥΛΟΣ", "ΠΑΠΑΔΟΠΟΥΛΟΣ"),
    # Cyrillic ё typed as е, Arabic alef with hamza typed plain
    ("ISO_IR 144", "Семёнов^Пётр", "КТ Семенов Петр", "Семенов"),
    ("ISO_IR 192", "أحمد^خالد", "فحص احمد", "احمد"),
])
def test_a_name_in_another_spelling_is_cleaned_from_free_text(tmp_path: Path, charset: str, name: str, text: str,
                                                              gone: str) -> None:
    ds = _base(charset, name)
    ds.StudyDescription = text
    status, out, _data = _run(tmp_path, ds)
    assert status == "written"
    assert out is not None
    assert fold_marks(gone)[0].casefold() not in fold_marks(str(out.StudyDescription))[0].casefold()


def test_full_width_ids_and_dates_in_cjk_text_are_cleaned(tmp_path: Path) -> None:
    ds = _base("ISO_IR 192", "Wang^Xiaodong=王^小东", pid="PID-7731942")
    ds.StudyDescription = "胸部CT ＰＩＤ－７７３１９４２"
    ds.ImageComments = "生年月日 １９４４－０２－１７ 复查"
    status, out, _data = _run(tmp_path, ds)
    assert status == "written" and out is not None
    assert "７７３１９４２" not in str(out.StudyDescription)
    assert "１９４４" not in str(out.ImageComments)
    assert "胸部CT" in str(out.StudyDescription) and "复查" in str(out.ImageComments)


def test_kana_of_either_width_and_hiragana_are_one_name() -> None:
    terms = PhiTerms()
    terms.add("ﾔﾏﾀﾞ", NAME)  # the phonetic group in half-width katakana
    m = TermMatcher(terms)
    for text in ("ヤマダ 様", "やまだ 様"):
        spans = m.find(text)
        assert [(s.start, s.end) for s in spans] == [(0, 3)], text
    assert fold("ＡＢＣ１２３") == "ABC123"


def test_spans_of_decomposed_text_cover_the_marks() -> None:
    terms = PhiTerms()
    terms.add("Müller", NAME)
    text = "Dr Mu\u0308ller today"
    (span,) = TermMatcher(terms).find(text)
    assert text[span.start:span.end] == "Mu\u0308ller"


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 192"])
def test_an_id_equal_to_the_charset_number_leaves_the_charset_alone(tmp_path: Path, charset: str) -> None:
    ds = _base(charset, "Weber^Anna")
    ds.StudyID = charset.split()[-1]  # "100" / "192": once rewrote the charset to "ISO_IR X"
    ds.StudyDescription = "CT THORAX Kontrolle ÄÖÜ" if charset == "ISO_IR 100" else "CT HRUDNÍKU kontrola"
    ds.ContrastBolusAgent = "ISOVUE300/100"
    status, out, _data = _run(tmp_path, ds)
    assert status == "written" and out is not None
    assert out.SpecificCharacterSet == charset
    assert str(out.StudyDescription) == str(ds.StudyDescription)
    assert str(out.ContrastBolusAgent) == "ISOVUE300/100"


@pytest.mark.parametrize("declared", ["ISO_IR 100", None])
def test_utf8_that_the_charset_misreads_still_names_the_patient(tmp_path: Path, declared: str | None) -> None:
    ds = _base("ISO_IR 192", "Müller^Jürgen")
    ds.StudyDescription = "CT THORAX MÜLLER"
    ds.ImageComments = "Kontrolle Muller J."
    ds.AdditionalPatientHistory = "Pat. Jurgen Mueller"
    src = tmp_path / "in" / "f.dcm"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    src.parent.mkdir(parents=True)
    ds.save_as(src, enforce_file_format=True)
    raw = src.read_bytes()  # the same UTF-8 bytes, labelled ISO_IR 100 or not labelled at all
    if declared is None:
        raw = raw.replace(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 192", b"\x08\x00\x05\x00CS\x00\x00")
    else:
        raw = raw.replace(b"ISO_IR 192", declared.encode())
    src.write_bytes(raw)
    out = deidentify_file(src, DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out", conformance="off"))
    assert out.status == "written"
    data = (tmp_path / "out" / out.output_path).read_bytes()
    for word in ("Müller".encode(), "MÜLLER".encode(), b"Muller", b"Jurgen", b"Mueller"):
        assert word not in data


def test_byte_texts_read_utf16_the_files_charset_and_utf8() -> None:
    assert "SMITH JOHN" in byte_texts("SMITH JOHN".encode("utf-16-le"))
    blob = b"\x01" * 5000 + "SMITH JOHN".encode("utf-16-le") + b"\x00\x00"
    assert any("SMITH JOHN" in t for t in byte_texts(blob))  # inside other binary data, at any offset
    assert "山田太郎" in byte_texts("山田太郎".encode("iso2022_jp"), ["iso8859", "iso2022_jp"])
    assert "Müller" in byte_texts("Müller".encode())
    assert byte_texts(b"PLAIN ASCII") == ["PLAIN ASCII"]


@pytest.mark.parametrize(("charset", "codec", "name", "words"), [
    (["", "ISO 2022 IR 87"], "iso2022_jp", "Yamada^Tarou=山田^太郎", ["山田", "太郎"]),
    ("ISO_IR 144", "iso8859_5", "Иванов^Сергей", ["Иванов", "Сергей"]),
    ("ISO_IR 192", "utf-8", "Müller^Jürgen", ["Müller", "Jürgen"]),
])
def test_kept_private_bytes_in_the_files_charset_lose_the_name(tmp_path: Path, charset: str | list[str], codec: str,
                                                               name: str, words: list[str]) -> None:
    ds = _base("", name)
    ds.SpecificCharacterSet = charset
    value = " ".join(words).encode(codec)
    value += b" " * (len(value) % 2)
    ds.add_new(0x00130010, "LO", "CTP")  # kept by TCIA's knowledge base, unknown to pydicom: stays bytes
    ds.add(DataElement(0x00131012, "UN", value))  # Site Name
    status, _out, data = _run(tmp_path, ds)
    assert status == "written"
    for w in words:
        assert w.encode(codec) not in data


@pytest.mark.parametrize("prefix", [b"", b"\x01" * 5000])
def test_kept_private_blob_with_utf16_text_loses_it(tmp_path: Path, prefix: bytes) -> None:
    ds = _base("ISO_IR 100", "SMITH^JOHN", pid="MRN7734521")
    value = prefix + "SMITH JOHN MRN7734521".encode("utf-16-le")
    ds.private_block(0x0009, "FDMS 1.0", create=True).add_new(0x90, "OB", value + b"\x00" * (len(value) % 2))
    status, _out, data = _run(tmp_path, ds)
    assert status == "written"
    assert "SMITH".encode("utf-16-le") not in data and "7734521".encode("utf-16-le") not in data


def test_cjk_addresses_and_one_part_names_yield_their_parts() -> None:
    from deid_core.terms import address_variants, name_variants

    parts = address_variants("北京市海淀区中关村大街27号")
    assert {"北京市", "海淀区", "中关村", "海淀区中关村大街27号"} <= set(parts)
    assert not {"大街", "27号"} & set(parts)  # a unit word or a bare number alone is no one's address
    assert "小东" in name_variants("王小东") and "철수" in name_variants("김철수")
    assert "小东" in name_variants("欧阳小东")  # a two-character family name


def test_a_cjk_address_without_its_city_is_cleaned(tmp_path: Path) -> None:
    ds = _base("ISO_IR 192", "王小东")
    ds.PatientAddress = "北京市海淀区中关村大街27号"
    ds.StudyDescription = "胸部CT 海淀区中关村大街27号 小东 复查"
    status, out, _data = _run(tmp_path, ds)
    assert status == "written" and out is not None
    assert "中关村" not in str(out.StudyDescription) and "小东" not in str(out.StudyDescription)
    assert "胸部CT" in str(out.StudyDescription)
