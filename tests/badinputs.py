"""Bad and unusual inputs, generated at test time (never committed as .dcm).

Each builder writes one input under a directory and returns a :class:`Case` saying what the run must
do with it (``written``/``quarantined``/``skipped`` and, when refused, the reason class) and which
identifying strings were planted (they must not appear in any output, log or error).
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

UID_BASE = "1.2.826.0.1.3680043.8.498.77."
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR
GSPS_CLASS = "1.2.840.10008.5.1.4.1.1.11.1"
KO_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
MF_CLASS = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word SC


@dataclass
class Case:
    """One generated input and what must happen to it."""

    name: str
    relpath: str
    expect: str  # written | quarantined | skipped
    reason: str = ""  # reason class when not written
    phi: list[str] = field(default_factory=list)  # identifying strings planted in the input


def _uid(n: int) -> str:
    return f"{UID_BASE}{n}"


def base_dataset(n: int, sop_class: str = CT_CLASS, *, name: str = "Quixote^Alonso", pid: str = "QX445566",
                 modality: str = "OT") -> Dataset:
    """A small header-only dataset with a patient identity and unique UIDs derived from ``n``."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = _uid(1000 + n)
    ds.StudyInstanceUID = _uid(2000 + n)
    ds.SeriesInstanceUID = _uid(3000 + n)
    ds.PatientName = name
    ds.PatientID = pid
    ds.PatientBirthDate = "19610214"
    ds.StudyDate = "20200315"
    ds.AccessionNumber = f"ACC{900000 + n}"
    ds.Modality = modality
    ds.InstitutionName = "Rocinante General Hospital"
    return ds


def save(ds: Dataset, path: Path, ts: str = ExplicitVRLittleEndian) -> None:
    """Write ``ds`` as a DICOM file with the given transfer syntax."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _ct_bytes() -> bytes:
    return Path(get_testdata_file("CT_small.dcm")).read_bytes()  # type: ignore[arg-type]


def zero_length(d: Path) -> Case:
    p = d / "zero" / "empty.dcm"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"")
    return Case("zero_length", "zero/empty.dcm", "quarantined", "bad_input")


def truncated_header(d: Path) -> Case:
    p = d / "trunc" / "head.dcm"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(_ct_bytes()[:300])  # inside the header
    return Case("truncated_header", "trunc/head.dcm", "quarantined", "bad_input")


def truncated_pixels(d: Path) -> Case:
    p = d / "trunc" / "pixels.dcm"
    p.parent.mkdir(parents=True, exist_ok=True)
    data = _ct_bytes()
    p.write_bytes(data[: len(data) - 5000])  # PixelData value cut short
    return Case("truncated_pixels", "trunc/pixels.dcm", "quarantined", "")


def not_dicom(d: Path) -> Case:
    p = d / "junk" / "notes.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("Patient Quixote Alonso QX445566 called on 555-0147\n" * 20)
    return Case("not_dicom", "junk/notes.txt", "quarantined", "bad_input")


def random_bytes(d: Path) -> Case:
    p = d / "junk" / "noise.dcm"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return Case("random_bytes", "junk/noise.dcm", "quarantined", "bad_input")


def no_preamble(d: Path) -> Case:
    ds = base_dataset(1, name="Panza^Sancho", pid="PZ778899")
    p = d / "nopre" / "raw.dcm"
    p.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True)  # no preamble, no file meta
    p.write_bytes(buf.getvalue())
    assert not buf.getvalue()[128:132] == b"DICM"
    return Case("no_preamble", "nopre/raw.dcm", "written", "", ["Panza", "Sancho", "PZ778899"])


def dicomdir(d: Path) -> Case:
    p = d / "media" / "DICOMDIR"
    p.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(get_testdata_file("DICOMDIR"), p)  # type: ignore[arg-type]
    return Case("dicomdir", "media/DICOMDIR", "skipped", "dicomdir")


def _text_item(value_type: str, meaning: str, **values: object) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = value_type
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "121071", "DCM", meaning
    item.ConceptNameCodeSequence = Sequence([code])
    for k, v in values.items():
        setattr(item, k, v)
    return item


def structured_report(d: Path) -> Case:
    ds = base_dataset(2, SR_CLASS, name="Dulcinea^Toboso", pid="DT112233", modality="SR")
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate, ds.ContentTime = "20200316", "101500"
    nested = _text_item("CONTAINER", "Findings")
    nested.ContinuityOfContent = "SEPARATE"
    nested.ContentSequence = Sequence([
        _text_item("TEXT", "Finding",
                   TextValue="Dulcinea Toboso (DT112233) seen by Dr Carrasco, call 555-0199"),
    ])
    ds.ContentSequence = Sequence([
        _text_item("TEXT", "Finding", TextValue="Patient Dulcinea Toboso, MRN DT112233, no acute findings."),
        _text_item("PNAME", "Observer", PersonName="Carrasco^Sanson"),
        _text_item("DATE", "Date", Date="20200316"),
        nested,
    ])
    p = d / "nopix" / "sr.dcm"
    save(ds, p)
    return Case("structured_report", "nopix/sr.dcm", "written", "",
                ["Dulcinea", "Toboso", "DT112233", "Carrasco", "555-0199"])


def presentation_state(d: Path) -> Case:
    ds = base_dataset(3, GSPS_CLASS, modality="PR")
    ds.ContentLabel = "ANNOT"
    ds.ContentCreatorName = "Carrasco^Sanson"
    ds.PresentationCreationDate, ds.PresentationCreationTime = "20200317", "120000"
    ann = Dataset()
    ann.GraphicLayer = "L1"
    txt = Dataset()
    txt.UnformattedTextValue = "Quixote QX445566"
    txt.AnchorPointAnnotationUnits = "PIXEL"
    txt.AnchorPoint = [10.0, 10.0]
    txt.AnchorPointVisibility = "N"
    ann.TextObjectSequence = Sequence([txt])
    ds.GraphicAnnotationSequence = Sequence([ann])
    p = d / "nopix" / "gsps.dcm"
    save(ds, p)
    return Case("presentation_state", "nopix/gsps.dcm", "written", "",
                ["Quixote", "QX445566", "Carrasco", "Rocinante"])


def key_object(d: Path) -> Case:
    ds = base_dataset(4, KO_CLASS, modality="KO")
    ds.ValueType = "CONTAINER"
    ds.ContentDate, ds.ContentTime = "20200318", "090000"
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT_CLASS
    ref.ReferencedSOPInstanceUID = _uid(9999)
    series = Dataset()
    series.SeriesInstanceUID = _uid(3999)
    series.ReferencedSOPSequence = Sequence([ref])
    study = Dataset()
    study.StudyInstanceUID = _uid(2999)
    study.ReferencedSeriesSequence = Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([study])
    ds.ContentSequence = Sequence([_text_item("TEXT", "Key Object Description",
                                              TextValue="Selected for Quixote QX445566")])
    p = d / "nopix" / "ko.dcm"
    save(ds, p)
    return Case("key_object", "nopix/ko.dcm", "written", "", ["Quixote", "QX445566", _uid(9999)])


def rtstruct(d: Path) -> Case:
    ds = pydicom.dcmread(get_testdata_file("rtstruct.dcm"), force=True)  # type: ignore[arg-type]
    ds.PatientName = "Rocinante^Horse"
    ds.PatientID = "RH556677"
    ds.StructureSetLabel = "Plan RH556677"
    ds.SOPInstanceUID = _uid(1005)
    save(ds, d / "nopix" / "rtstruct.dcm")
    return Case("rtstruct", "nopix/rtstruct.dcm", "written", "", ["Rocinante", "RH556677"])


def _raw_element(tag: int, vr: str, value: bytes) -> bytes:
    """An Explicit VR Little Endian element with a short length field, byte for byte."""
    return (tag >> 16).to_bytes(2, "little") + (tag & 0xFFFF).to_bytes(2, "little") + vr.encode() + \
        len(value).to_bytes(2, "little") + value


def wrong_vrs(d: Path) -> Case:
    """Values that violate their VR: a non-date DA, an over-long LO, a bad IS, a 3-byte US, a name in a LO."""
    ds = base_dataset(6, name="Cardenio^Lucinda", pid="CL990011")
    ds.PatientBirthDate = "1961-02-14 approx"  # not a DA
    ds.add_new(0x00081030, "LO", "Study of Cardenio Lucinda " * 6)  # > 64 chars
    ds.add_new(0x00100021, "LO", "Cardenio^Lucinda")  # IssuerOfPatientID holding a name
    ds.add_new(0x00180015, "CS", "lower case body part with spaces and way too long for a code string")
    p = d / "vr" / "wrong.dcm"
    save(ds, p)
    tail = (_raw_element(0x00200011, "IS", b"12.5abc ")  # SeriesNumber: not an integer string
            + _raw_element(0x00321032, "PN", b"Fernando^Don"))  # RequestingPhysician
    with open(p, "ab") as fh:  # every base tag sorts before (0020,0011)
        fh.write(tail)
    return Case("wrong_vrs", "vr/wrong.dcm", "written", "", ["Cardenio", "Lucinda", "CL990011", "Fernando"])


def wrong_value_length(d: Path) -> Case:
    """A US element of 3 bytes: the value cannot be decoded, so the file is refused naming the tag."""
    ds = base_dataset(8, name="Zoraida^Mora", pid="ZM808080")
    p = d / "vr" / "oddus.dcm"
    save(ds, p)
    with open(p, "ab") as fh:
        fh.write(_raw_element(0x00280010, "US", b"\x01\x02\x03"))
    return Case("wrong_value_length", "vr/oddus.dcm", "quarantined", "bad_input")


def wrong_length(d: Path) -> Case:
    """An element whose declared length runs past the end of the file."""
    ds = base_dataset(7, name="Marcela^Pastora", pid="MP123098")
    p = d / "vr" / "badlen.dcm"
    save(ds, p)
    data = bytearray(p.read_bytes())
    i = data.find(b"\x08\x00\x50\x00SH")  # AccessionNumber header
    assert i > 0
    data[i + 6:i + 8] = (0xFFF0).to_bytes(2, "little")
    p.write_bytes(bytes(data))
    return Case("wrong_length", "vr/badlen.dcm", "quarantined", "")


#: (name, SpecificCharacterSet, patient name, planted components)
CHARSETS: list[tuple[str, str | list[str], str, list[str]]] = [
    ("latin1", "ISO_IR 100", "Müller^Jürgen", ["Müller", "Jürgen"]),
    ("utf8", "ISO_IR 192", "Wang^XiaoDong=王^小東", ["Wang", "XiaoDong", "王", "小東"]),
    ("gb18030", "GB18030", "Wang^XiaoDong=王^小东", ["Wang", "XiaoDong", "王", "小东"]),
    ("jis", ["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう",
     ["Yamada", "Tarou", "山田", "太郎", "やまだ", "たろう"]),
]


def charset(kind: str) -> Callable[[Path], Case]:
    spec = next(c for c in CHARSETS if c[0] == kind)

    def build(d: Path) -> Case:
        name, cs, pn, parts = spec
        n = 10 + [c[0] for c in CHARSETS].index(name)
        ds = base_dataset(n, pid=f"CS{n}4321")
        ds.SpecificCharacterSet = cs
        ds.PatientName = pn
        ds.ReferringPhysicianName = pn
        ds.StudyDescription = f"Study for {pn.split('=')[-1].replace('^', ' ')}"
        p = d / "charset" / f"{name}.dcm"
        save(ds, p)
        return Case(f"charset_{name}", f"charset/{name}.dcm", "written", "", parts + [f"CS{n}4321"])

    return build


def deflated(d: Path) -> Case:
    ds = base_dataset(20, name="Rodriguez^Maese", pid="RM202020")
    p = d / "ts" / "deflated.dcm"
    save(ds, p, DeflatedExplicitVRLittleEndian)
    return Case("deflated", "ts/deflated.dcm", "written", "", ["Rodriguez", "Maese", "RM202020"])


def big_endian(d: Path) -> Case:
    ds = pydicom.dcmread(get_testdata_file("MR_small_bigendian.dcm"))  # type: ignore[arg-type]
    ds.PatientName = "Pedro^Maese"
    ds.PatientID = "PM212121"
    # The file's institution equals its Manufacturer ("GE MEDICAL SYSTEMS"), which is kept: verification
    # would (rightly, fail closed) refuse it. This case is about the byte order, so use another name.
    ds.InstitutionName = "Barataria Clinic"
    ds.SOPInstanceUID = _uid(1021)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    p = d / "ts" / "bigendian.dcm"
    p.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(p)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    return Case("big_endian", "ts/bigendian.dcm", "written", "", ["Pedro", "PM212121"])


def implicit_le(d: Path) -> Case:
    ds = base_dataset(22, name="Gines^Pasamonte", pid="GP222222")
    p = d / "ts" / "implicit.dcm"
    save(ds, p, ImplicitVRLittleEndian)
    return Case("implicit", "ts/implicit.dcm", "written", "", ["Gines", "Pasamonte", "GP222222"])


def multiframe(path: Path, frames: int, rows: int = 512, cols: int = 512, n: int = 30) -> None:
    """A multi-frame 16-bit grayscale image written frame by frame (bounded memory while generating)."""
    ds = base_dataset(n, MF_CLASS, name="Sancho^Teresa", pid="ST303030", modality="CT")
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 40.0
    ds.PixelData = b""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    del ds.PixelData
    ds.save_as(buf, enforce_file_format=True)
    frame = (np.indices((rows, cols)).sum(axis=0) % 4096).astype("<u2").tobytes()
    length = len(frame) * frames
    with open(path, "wb") as fh:
        fh.write(buf.getvalue())
        fh.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
        for _ in range(frames):
            fh.write(frame)


def symlinks(d: Path, outside: Path) -> list[Case]:
    """A file symlink to a file outside the tree, a broken link and a directory loop."""
    ds = base_dataset(40, name="Altisidora^Duquesa", pid="AD404040")
    target = outside / "outside.dcm"
    save(ds, target)
    (d / "links").mkdir(parents=True, exist_ok=True)
    os.symlink(target, d / "links" / "to_outside.dcm")
    os.symlink(d / "links" / "missing.dcm", d / "links" / "broken.dcm")
    os.symlink(d, d / "links" / "loop")  # directory loop: must not be followed
    return [Case("symlink_file", "links/to_outside.dcm", "written", "", ["Altisidora", "AD404040"]),
            Case("symlink_broken", "links/broken.dcm", "quarantined", "unreadable")]


def duplicate_sop(d: Path) -> list[Case]:
    """Two different inputs sharing one SOPInstanceUID, and an identical copy of a third input."""
    a = base_dataset(50, name="Basilio^Quiteria", pid="BQ505050")
    save(a, d / "dup" / "a.dcm")
    b = base_dataset(50, name="Basilio^Quiteria", pid="BQ505050")
    b.StudyDescription = "different content, same SOP instance"
    save(b, d / "dup" / "b.dcm")
    c = base_dataset(51, name="Camacho^Rico", pid="CR515151")
    save(c, d / "dup" / "c1.dcm")
    shutil.copyfile(d / "dup" / "c1.dcm", d / "dup" / "c2.dcm")
    return [Case("duplicate_first", "dup/a.dcm", "written", "", ["Basilio", "BQ505050"]),
            Case("duplicate_second", "dup/b.dcm", "quarantined", "duplicate_sop_instance"),
            Case("identical_first", "dup/c1.dcm", "written", "", ["Camacho", "CR515151"]),
            Case("identical_copy", "dup/c2.dcm", "skipped", "duplicate_input")]


SINGLE_BUILDERS: list[Callable[[Path], Case]] = [
    zero_length, truncated_header, truncated_pixels, not_dicom, random_bytes, no_preamble, dicomdir,
    structured_report, presentation_state, key_object, rtstruct, wrong_vrs, wrong_value_length, wrong_length,
    *[charset(c[0]) for c in CHARSETS], deflated, big_endian, implicit_le,
]


def build_corpus(d: Path, outside: Path) -> list[Case]:
    """Write the whole corpus (except the large multi-frame file) under ``d``."""
    cases = [b(d) for b in SINGLE_BUILDERS]
    cases += symlinks(d, outside)
    cases += duplicate_sop(d)
    return cases


def is_dicom_uid(value: str) -> bool:
    return bool(value) and UID(value).is_valid
