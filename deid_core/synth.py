"""A deterministic, PHI-laden synthetic DICOM cohort with its own answer key.

Real patient data cannot live in the repo or in CI, yet every stage of the pipeline needs inputs
that look like what hospitals send: identifiers in standard tags, in free text, in nested
sequences and private blocks, burned into pixels and overlays, plus files that must be refused.
``generate_cohort`` writes such a cohort and ``answer.json`` saying exactly what was planted and
where, so tests and benchmarks can prove that nothing identifying survives de-identification.

Everything derives from ``seed``: names, UIDs, dates and pixels; the same seed gives the same
bytes. The people are invented (names drawn from common first/last name lists, 555 phone numbers).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    RLELossless,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

from deid_core.errors import ConfigError

__all__ = ["generate_cohort", "ACME_CREATOR", "SAFE_CREATOR", "ANSWER_NAME"]

ANSWER_NAME = "answer.json"
# Private block holding identifiers: a de-identifier must remove it.
ACME_CREATOR = "ACME PHI 1.0"
# Creator known to the TCIA private tag KB; (0019,xx1E) Display Field Of View is a 'k' (keep) element.
SAFE_CREATOR = "GEMS_ACQU_01"
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."
_STUDY_COMPONENT_SOP = "1.2.840.10008.3.1.2.3.1"

_FIRST = tuple(
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan"
    " Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy Matthew Lisa Anthony Margaret Mark Sandra"
    " Donald Ashley Steven Emily Andrew Donna Kenneth Michelle Joshua Carol Kevin Amanda".split()
)
_LAST = tuple(
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez"
    " Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark"
    " Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores".split()
)
_STREETS = ("Maple Avenue", "Oak Street", "Pine Road", "Cedar Lane", "Elm Street", "Washington Boulevard",
            "Lakeview Drive", "Park Avenue", "Sunset Court", "Hickory Way")
_CITIES = (("Springfield", "IL", "62704", "217"), ("Peoria", "IL", "61602", "309"),
           ("Madison", "WI", "53703", "608"), ("Columbus", "OH", "43215", "614"),
           ("Dayton", "OH", "45402", "937"), ("Lansing", "MI", "48933", "517"))
_INSTITUTIONS = ("Springfield Memorial Hospital", "St. Mary's Medical Center", "Riverside Regional Clinic",
                 "Lakeshore University Hospital", "Mercy General Hospital")
_PHYS_FIRST = ("Robert", "Alice", "Henry", "Grace", "Victor", "Helen", "Oscar", "Irene")
_PHYS_LAST = ("Jones", "Patel", "Okafor", "Kowalski", "Lindqvist", "Moreau", "Tanaka", "Fischer")
_TECHS = ("Baker^Tom", "Reyes^Ana", "Cole^Dana", "Price^Lou", "Ford^Kim")
_EMAIL_DOMAINS = ("mailbox.example", "inbox.example", "post.example")


@dataclass
class _Person:
    pid: str
    last: str
    first: str
    birth: str
    sex: str
    other_id: str
    address: str
    phone: str
    email: str
    institution: str
    inst_address: str
    referring: str
    performing: str
    operator: str
    reader: str
    station: str
    serial: str
    folder: str

    @property
    def pn(self) -> str:
        return f"{self.last}^{self.first}"

    @property
    def display(self) -> str:
        return f"{self.last.upper()}, {self.first.upper()}"


@dataclass
class _Study:
    uid: str
    date: str
    time: str
    accession: str
    study_id: str
    description: str
    folder: str
    series_no: int = 0
    file_no: int = 0


@dataclass
class _Rec:
    """One answer.json 'files' entry under construction."""

    kind: str
    expect: str = "written"
    phi_tags: list[dict[str, str]] = field(default_factory=list)
    safe_private: list[dict[str, str]] = field(default_factory=list)
    pixel_boxes: list[dict[str, Any]] = field(default_factory=list)
    overlay_text: bool = False
    references: list[str] = field(default_factory=list)


def _tagstr(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _fmt_date(da: str) -> str:
    """DICOM DA -> the US style burned into screens and typed in notes (MM/DD/YYYY)."""
    return f"{da[4:6]}/{da[6:8]}/{da[0:4]}"


class _Gen:
    """Holds the seeded RNGs and UID counter so every value is reproducible.

    Each patient gets its own streams (``reseed``), so patient k is identical whether the cohort
    has 4 or 50 patients: a small cohort is a prefix of a bigger one with the same seed.
    """

    def __init__(self, out: Path, seed: int) -> None:
        self.out = out
        self.seed = seed
        self.files: list[dict[str, Any]] = []
        self.font_cache: dict[int, ImageFont.FreeTypeFont | ImageFont.ImageFont] = {}
        self.reseed("cohort")

    def reseed(self, scope: str) -> None:
        self.scope = scope
        self.rng = random.Random(f"deidflow-synth:{self.seed}:{scope}")
        self.np = np.random.default_rng(list(hashlib.sha256(f"{self.seed}:{scope}".encode()).digest()[:16]))
        self._uid_n = 0

    # -- primitives -----------------------------------------------------------------------------
    def uid(self) -> str:
        self._uid_n += 1
        # one source with separators: generate_uid joins its sources with nothing, so "patient:1" + "12" and
        # "patient:11" + "2" gave one UID to two files from 11 patients on (an audit)
        return str(generate_uid(prefix=_UID_PREFIX,
                                entropy_srcs=[f"deidflow-synth|{self.seed}|{self.scope}|{self._uid_n}"]))

    def font(self, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        if size not in self.font_cache:
            self.font_cache[size] = ImageFont.load_default(size=size)
        return self.font_cache[size]

    def digits(self, n: int) -> str:
        return "".join(str(self.rng.randrange(10)) for _ in range(n))

    def date(self, y0: int, y1: int) -> str:
        return f"{self.rng.randint(y0, y1):04d}{self.rng.randint(1, 12):02d}{self.rng.randint(1, 28):02d}"

    def time(self) -> str:
        return f"{self.rng.randint(7, 18):02d}{self.rng.randint(0, 59):02d}{self.rng.randint(0, 59):02d}"

    # -- people and studies ---------------------------------------------------------------------
    def people(self, n: int) -> list[_Person]:
        pairs = list(range(len(_FIRST) * len(_LAST)))
        self.rng.shuffle(pairs)  # independent of n, so patient k does not depend on the cohort size
        out = []
        for k, pair in enumerate(pairs[:n]):
            self.reseed(f"person:{k}")
            first, last = _FIRST[pair % len(_FIRST)], _LAST[pair // len(_FIRST)]
            if k % 2 == 0:
                pid = "MRN" + self.digits(8)
            else:
                d = self.digits(8)
                pid = f"{d[:2]}-{d[2:5]}-{d[5:]}"
            city, state, zipc, area = self.rng.choice(_CITIES)
            inst = self.rng.choice(_INSTITUTIONS)
            icity = self.rng.choice(_CITIES)
            pf, pl = self.rng.sample(range(len(_PHYS_FIRST)), 2), self.rng.sample(range(len(_PHYS_LAST)), 3)
            out.append(_Person(
                pid=pid, last=last, first=first, birth=self.date(1935, 2002), sex=self.rng.choice("MF"),
                other_id="H" + self.digits(7),
                address=f"{self.rng.randint(100, 9899)} {self.rng.choice(_STREETS)}, {city}, {state} {zipc}",
                phone=f"({area}) 555-{self.rng.randint(100, 199):04d}",
                email=f"{first.lower()}.{last.lower()}{self.rng.randint(10, 99)}"
                      f"@{self.rng.choice(_EMAIL_DOMAINS)}",
                institution=inst,
                inst_address=f"{self.rng.randint(1, 999)} Hospital Drive, {icity[0]}, {icity[1]} {icity[2]}",
                referring=f"{_PHYS_LAST[pl[0]]}^{_PHYS_FIRST[pf[0]]}^^Dr.",
                performing=f"{_PHYS_LAST[pl[1]]}^{_PHYS_FIRST[pf[1]]}",
                operator=self.rng.choice(_TECHS),
                reader=f"{_PHYS_LAST[pl[2]]}^{_PHYS_FIRST[pf[0]]}",
                station=f"{inst.split()[0].upper()[:6]}CT{self.rng.randint(1, 9)}",
                serial="SN" + self.digits(6),
                folder=f"{last}_{first}_{pid}",
            ))
        return out

    def study(self, p: _Person, prefix: str, description: str) -> _Study:
        date = self.date(2019, 2023)
        return _Study(uid=self.uid(), date=date, time=self.time(), accession="A" + self.digits(9),
                      study_id=str(self.rng.randint(1000, 99999)),
                      description=f"{description} for {p.first} {p.last}", folder=f"{prefix}_{date}")

    # -- header ---------------------------------------------------------------------------------
    def header(self, p: _Person, st: _Study, rec: _Rec, sop_class: str, modality: str, series_uid: str,
               series_no: int, instance_no: int, series_desc: str) -> Dataset:
        """Build a header rich in identifiers and record each one in ``rec.phi_tags``."""
        ds = Dataset()

        def put(keyword: str, value: Any, kind: str | None = None, into: Dataset = ds,
                path: str = "") -> None:
            setattr(into, keyword, value)
            if kind is not None:
                tag = into[keyword].tag
                rec.phi_tags.append({"path": path + _tagstr(tag), "value": str(into[keyword].value),
                                     "kind": kind})

        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY"] + (["AXIAL"] if modality in ("CT", "MR") else [])
        put("InstanceCreationDate", st.date, "date")
        ds.InstanceCreationTime = st.time
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = self.uid()
        put("StudyDate", st.date, "date")
        put("SeriesDate", st.date, "date")
        put("AcquisitionDate", st.date, "date")
        put("ContentDate", st.date, "date")
        ds.StudyTime = st.time
        ds.SeriesTime = st.time
        ds.AcquisitionTime = st.time
        ds.ContentTime = st.time
        put("AccessionNumber", st.accession, "id")
        ds.Modality = modality
        ds.Manufacturer = "GE MEDICAL SYSTEMS" if modality == "CT" else "ACME Imaging"
        put("InstitutionName", p.institution, "institution")
        put("InstitutionAddress", p.inst_address, "address")
        put("ReferringPhysicianName", p.referring, "name")
        put("ReferringPhysicianTelephoneNumbers", "(217) 555-0199", "phone")
        put("StationName", p.station, "other")
        put("StudyDescription", st.description, "free_text")
        put("SeriesDescription", series_desc, "free_text")
        put("InstitutionalDepartmentName", "Radiology", None)
        put("PhysiciansOfRecord", p.referring, "name")
        put("PerformingPhysicianName", p.performing, "name")
        put("NameOfPhysiciansReadingStudy", p.reader, "name")
        put("OperatorsName", p.operator, "name")
        ds.ManufacturerModelName = "SynthScan 3000"

        ref_study = Dataset()
        ref_study.ReferencedSOPClassUID = _STUDY_COMPONENT_SOP
        ref_study.ReferencedSOPInstanceUID = st.uid
        ds.ReferencedStudySequence = Sequence([ref_study])

        code = Dataset()
        code.CodeValue = {"CT": "CTCHEST", "MR": "MRBRAIN", "US": "USABD"}.get(modality, "XRCHEST")
        code.CodingSchemeDesignator = "99SYNTH"
        code.CodeMeaning = st.description.split(" for ")[0]
        ds.ProcedureCodeSequence = Sequence([code])

        put("PatientName", p.pn, "name")
        put("PatientID", p.pid, "id")
        put("IssuerOfPatientID", p.institution.split()[0].upper() + "_MRN", "institution")
        put("PatientBirthDate", p.birth, "date")
        ds.PatientSex = p.sex
        put("OtherPatientIDs", p.other_id, "id")
        other = Dataset()
        put("PatientID", p.other_id, "id", other, "(0010,1002)[0]>")
        put("IssuerOfPatientID", "STATE HIE", None, other)
        other.TypeOfPatientID = "TEXT"
        ds.OtherPatientIDsSequence = Sequence([other])
        ds.PatientAge = f"{int(st.date[:4]) - int(p.birth[:4]):03d}Y"
        put("PatientAddress", p.address, "address")
        put("PatientTelephoneNumbers", p.phone, "phone")
        put("PatientTelecomInformation", p.email, "email")
        put("AdditionalPatientHistory",
            f"{p.first} {p.last} ({p.pid}) reports cough since {_fmt_date(st.date)}; call {p.phone}",
            "free_text")
        put("PatientComments", f"Pt {p.last} prefers phone {p.phone}, lives at {p.address}", "free_text")

        put("DeviceSerialNumber", p.serial, "other")
        ds.SoftwareVersions = "4.2.1"
        put("ProtocolName", f"{st.description.split(' for ')[0]} ({p.last})", "free_text")
        put("AcquisitionDateTime", f"{st.date}{st.time}.000000", "date")
        ds.StudyInstanceUID = st.uid
        ds.SeriesInstanceUID = series_uid
        put("StudyID", st.study_id, "id")
        ds.SeriesNumber = series_no
        ds.InstanceNumber = instance_no
        put("ImageComments",
            f"Pt {p.last}, MRN {p.pid}, seen {_fmt_date(st.date)} by Dr. {p.referring.split('^')[0]}",
            "free_text")

        # RequestAttributesSequence > ScheduledProtocolCodeSequence > ProtocolContextSequence > PersonName
        req = Dataset()
        rq = "(0040,0275)[0]>"
        put("RequestedProcedureDescription", f"{code.CodeMeaning} - {p.last}, {p.first}", "free_text",
            req, rq)
        put("AccessionNumber", st.accession, "id", req, rq)
        put("RequestedProcedureID", "RP" + st.accession[1:], "id", req, rq)
        put("ScheduledProcedureStepID", "SPS" + st.study_id, "id", req, rq)
        rstudy = Dataset()
        rstudy.ReferencedSOPClassUID = _STUDY_COMPONENT_SOP
        rstudy.ReferencedSOPInstanceUID = st.uid
        req.ReferencedStudySequence = Sequence([rstudy])
        proto = Dataset()
        proto.CodeValue = code.CodeValue
        proto.CodingSchemeDesignator = "99SYNTH"
        proto.CodeMeaning = code.CodeMeaning
        ctx = Dataset()
        ctx.ValueType = "PNAME"
        cname = Dataset()
        cname.CodeValue = "121008"
        cname.CodingSchemeDesignator = "DCM"
        cname.CodeMeaning = "Person Observer Name"
        ctx.ConceptNameCodeSequence = Sequence([cname])
        put("PersonName", p.referring, "name", ctx, rq + "(0040,0008)[0]>(0040,0440)[0]>")
        proto.ProtocolContextSequence = Sequence([ctx])
        req.ScheduledProtocolCodeSequence = Sequence([proto])
        ds.RequestAttributesSequence = Sequence([req])
        put("RequestedProcedureDescription",
            f"{code.CodeMeaning} requested by Dr. {p.referring.split('^')[0]}", "free_text")

        # Private block with identifiers (must go) ...
        acme = ds.private_block(0x0029, ACME_CREATOR, create=True)
        acme.add_new(0x10, "LO", p.pn)
        acme.add_new(0x11, "LO", p.pid)
        acme.add_new(0x12, "LT", f"Scheduled by {p.operator.replace('^', ' ')} for {p.first} {p.last}")
        for el, kind in ((0x10, "name"), (0x11, "id"), (0x12, "free_text")):
            rec.phi_tags.append({"path": f'(0029,"{ACME_CREATOR}",{el:02X})', "value": str(acme[el].value),
                                 "kind": kind})
        # ... and one from the TCIA KB whose element is safe to keep.
        ge = ds.private_block(0x0019, SAFE_CREATOR, create=True)
        fov = f"{self.rng.choice((250, 320, 350, 400, 480))}"
        ge.add_new(0x1E, "DS", fov)
        rec.safe_private.append({"path": f'(0019,"{SAFE_CREATOR}",1E)', "value": fov, "kind": "safe_number"})
        return ds

    # -- writing --------------------------------------------------------------------------------
    def write(self, ds: Dataset, rel: str, rec: _Rec, patient_id: str | None,
              ts: str = ExplicitVRLittleEndian, truncate: bool = False) -> None:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = UID(ts)
        ds.file_meta = meta
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        data = buf.getvalue()
        if truncate:
            # Cut in the middle of the pixel data: header intact, Pixel Data value short.
            data = data[: len(data) - len(ds.PixelData) // 2]
        path.write_bytes(data)
        self.files.append({
            "path": rel,
            "expect": rec.expect,
            "kind": rec.kind,
            "patient_id": patient_id,
            "modality": ds.Modality,
            "sop_instance_uid": str(ds.SOPInstanceUID),
            "study_instance_uid": str(ds.StudyInstanceUID),
            "series_instance_uid": str(ds.SeriesInstanceUID),
            "frames": int(ds.get("NumberOfFrames", 1)),
            "photometric": str(ds.PhotometricInterpretation),
            "transfer_syntax": str(meta.TransferSyntaxUID),
            "phi_tags": rec.phi_tags,
            "safe_private": rec.safe_private,
            "pixel_boxes": rec.pixel_boxes,
            "overlay_text": rec.overlay_text,
            "references": rec.references,
        })

    def next_path(self, p: _Person, st: _Study) -> str:
        st.file_no += 1
        return f"{p.folder}/{st.folder}/IM{st.file_no:04d}.dcm"

    # -- text -----------------------------------------------------------------------------------
    def draw_lines(self, img: Image.Image, lines: list[tuple[int, int, str, str, bool]], size: int, fill: Any,
                   rec: _Rec | None, frame: int = 0) -> None:
        """Draw (x, y, text, kind, phi) lines and record their boxes, padded by 1 px and clipped."""
        d = ImageDraw.Draw(img)
        font = self.font(size)
        for x, y, text, kind, phi in lines:
            d.text((x, y), text, font=font, fill=fill)
            if rec is None:
                continue
            x0, y0, x1, y1 = d.textbbox((x, y), text, font=font)
            x0, y0 = max(0, x0 - 1), max(0, y0 - 1)
            x1, y1 = min(img.width, x1 + 1), min(img.height, y1 + 1)
            rec.pixel_boxes.append({"frame": frame, "x": int(x0), "y": int(y0), "w": int(x1 - x0),
                                    "h": int(y1 - y0), "text": text, "kind": kind, "phi": phi})

    # -- pixel helpers --------------------------------------------------------------------------
    def phantom(self, rows: int, cols: int, z: float, mr: bool) -> np.ndarray:
        """Anatomy-like ellipses (body, lungs/ventricles, spine) in float 'tissue' units; air is 0."""
        yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
        cy, cx = rows / 2, cols / 2
        img = np.zeros((rows, cols), np.float32)

        def ell(y: float, x: float, ry: float, rx: float) -> np.ndarray:
            return ((yy - y) / ry) ** 2 + ((xx - x) / rx) ** 2 <= 1.0

        body = ell(cy, cx, rows * 0.36, cols * 0.4)
        img[body] = 1040.0 if not mr else 600.0
        s = 1.0 - abs(z) * 0.08
        for side in (-1, 1):
            organ = ell(cy - rows * 0.02, cx + side * cols * 0.2, rows * 0.22 * s, cols * 0.13 * s)
            img[organ] = 200.0 if not mr else 1400.0
        img[ell(cy + rows * 0.22, cx, rows * 0.06, cols * 0.06)] = 2200.0 if not mr else 250.0
        img[ell(cy - rows * 0.05, cx - cols * 0.03, rows * 0.08, cols * 0.07)] = 1080.0 if not mr else 900.0
        noise = self.np.normal(0.0, 12.0, size=(rows, cols)).astype(np.float32)
        img[body] += noise[body]
        return img

    def us_frame(self, rows: int, cols: int, band: int, phase: float) -> np.ndarray:
        """Speckled ultrasound sector below a black header band, RGB uint8."""
        yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
        ay, ax = band + 8.0, cols / 2
        r = np.hypot(yy - ay, xx - ax)
        ang = np.arctan2(xx - ax, yy - ay)
        sector = (r < rows - band - 30) & (np.abs(ang) < 0.6) & (yy > ay)
        speck = self.np.rayleigh(40.0, size=(rows, cols)).astype(np.float32)
        tissue = 60 + 40 * np.sin(r / 18.0 + phase) + speck
        cyst = np.hypot(yy - (ay + (rows - band) * 0.45), xx - ax - 20 * np.sin(phase)) < rows * 0.08
        tissue[cyst] *= 0.15
        g = np.where(sector, np.clip(tissue, 0, 230), 0).astype(np.uint8)
        return np.stack([g, g, (g * 0.95).astype(np.uint8)], axis=-1)

    def to_label(self, arr: np.ndarray, lines: list[tuple[int, int, str, str, bool]], size: int,
                 band: tuple[int, int, int, int], band_val: int, text_val: int, rec: _Rec) -> np.ndarray:
        """Burn a label (filled box + text) into a grey-level array of any bit depth."""
        mask = Image.new("L", (arr.shape[1], arr.shape[0]), 0)
        self.draw_lines(mask, lines, size, 255, rec)
        a = np.asarray(mask, np.float32) / 255.0
        out = arr.astype(np.float32)
        x, y, w, h = band
        out[y:y + h, x:x + w] = band_val
        out = out * (1 - a) + text_val * a
        return np.rint(out).astype(arr.dtype)


def _set_mono(ds: Dataset, arr: np.ndarray, bits_stored: int, photometric: str = "MONOCHROME2") -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = arr.shape[-2], arr.shape[-1]
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    ds.PixelData = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()


def _set_rgb(ds: Dataset, arr: np.ndarray) -> None:
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = arr.shape[-3], arr.shape[-2]
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def _ref_seq(keyword: str, ds: Dataset, refs: list[tuple[str, str]], rec: _Rec) -> None:
    items = []
    for sop_class, sop_uid in refs:
        it = Dataset()
        it.ReferencedSOPClassUID = sop_class
        it.ReferencedSOPInstanceUID = sop_uid
        items.append(it)
        rec.references.append(sop_uid)
    setattr(ds, keyword, Sequence(items))


def _geometry(ds: Dataset, rows: int, spacing: float, z: float) -> None:
    ds.PixelSpacing = [f"{spacing:.4f}", f"{spacing:.4f}"]
    ds.ImagePositionPatient = [f"{-rows * spacing / 2:.2f}", f"{-rows * spacing / 2:.2f}", f"{z:.2f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = f"{z:.2f}"
    ds.PatientPosition = "HFS"


def _overlay(ds: Dataset, g: _Gen, p: _Person, st: _Study) -> None:
    """Overlay plane 6000 whose bits spell the patient's name and ID: invisible in Pixel Data."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    img = Image.new("1", (cols, rows), 0)
    d = ImageDraw.Draw(img)
    d.text((4, 4), p.display, font=g.font(14), fill=1)
    d.text((4, 24), p.pid, font=g.font(14), fill=1)
    d.text((4, rows - 20), _fmt_date(st.date), font=g.font(14), fill=1)
    bits = np.asarray(img, dtype=np.uint8)
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", cols)
    ds.add_new(0x60000022, "LO", "Annotation")
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", pack_bits(bits.ravel()))


def _patient(g: _Gen, p: _Person, index: int) -> None:
    pid = p.pid
    # ---------------- CT study (+ screenshot) ----------------
    ct = g.study(p, "CT", "CT CHEST W/O CONTRAST")
    ct_series, n_ct = g.uid(), 6
    ct_uids: list[str] = []
    for i in range(n_ct):
        rec = _Rec("ct")
        ds = g.header(p, ct, rec, CTImageStorage, "CT", ct_series, 1, i + 1, f"AXIAL 2.5mm {p.last}")
        z = -50.0 + 2.5 * i
        hu = g.phantom(128, 128, (i - n_ct / 2) / n_ct * 4, mr=False)
        _set_mono(ds, np.clip(hu, 0, 4000).astype(np.int16), 16)
        ds.FrameOfReferenceUID = str(generate_uid(prefix=_UID_PREFIX, entropy_srcs=[f"{ct_series}|for"]))
        _geometry(ds, 128, 2.7, z)
        ds.SliceThickness = "2.5"
        ds.KVP = "120"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        if i == 2:
            _overlay(ds, g, p, ct)
            rec.overlay_text = True
        if i > 0:
            _ref_seq("ReferencedImageSequence", ds, [(CTImageStorage, ct_uids[0])], rec)
        ct_uids.append(str(ds.SOPInstanceUID))
        g.write(ds, g.next_path(p, ct), rec, pid)

    # Secondary capture: report screenshot, dark text on light background.
    rec = _Rec("sc")
    ds = g.header(p, ct, rec, SecondaryCaptureImageStorage, "OT", g.uid(), 90, 1, "Report screenshot")
    ds.ConversionType = "WSD"
    img = Image.new("L", (512, 384), 232)
    g.draw_lines(img, [
        (16, 14, f"PATIENT: {p.display}", "name", True),
        (16, 44, f"MRN: {pid}", "id", True),
        (16, 74, f"DOB: {_fmt_date(p.birth)}", "date", True),
        (16, 104, p.institution.upper(), "institution", True),
        (16, 150, f"Seen {_fmt_date(ct.date)} by Dr. {p.referring.split('^')[0]}: no acute findings",
         "other", True),
    ], 18, 20, rec)
    g.draw_lines(img, [(16, 350, "PAGE 1 OF 1", "other", False)], 16, 20, rec)
    _set_mono(ds, np.asarray(img, np.uint8), 8)
    _ref_seq("SourceImageSequence", ds, [(CTImageStorage, ct_uids[3])], rec)
    g.write(ds, g.next_path(p, ct), rec, pid)

    # ---------------- MR study ----------------
    mr = g.study(p, "MR", "MRI BRAIN WITH AND WITHOUT CONTRAST")
    mr_series = g.uid()
    mr_uids: list[str] = []
    for i in range(5):
        rec = _Rec("mr")
        ds = g.header(p, mr, rec, MRImageStorage, "MR", mr_series, 1, i + 1, "T2 AX FSE")
        sig = g.phantom(128, 128, (i - 2.5) / 5 * 4, mr=True)
        _set_mono(ds, np.clip(sig, 0, 4095).astype(np.uint16), 12)
        ds.FrameOfReferenceUID = str(generate_uid(prefix=_UID_PREFIX, entropy_srcs=[f"{mr_series}|for"]))
        _geometry(ds, 128, 1.8, 10.0 + 5.0 * i)
        ds.SliceThickness = "5"
        ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "SE", "SK", "2D"
        ds.RepetitionTime, ds.EchoTime, ds.MagneticFieldStrength = "4000", "90", "1.5"
        ds.WindowCenter, ds.WindowWidth = "700", "1400"
        if i > 0:
            _ref_seq("ReferencedImageSequence", ds, [(MRImageStorage, mr_uids[0])], rec)
        mr_uids.append(str(ds.SOPInstanceUID))
        g.write(ds, g.next_path(p, mr), rec, pid)

    # ---------------- US study ----------------
    us = g.study(p, "US", "US ABDOMEN COMPLETE")
    band = 70

    def header_lines(cols: int) -> list[tuple[int, int, str, str, bool]]:
        return [
            (8, 6, p.display, "name", True),
            (cols // 2 + 10, 6, pid, "id", True),
            (8, 26, f"DOB {_fmt_date(p.birth)}", "date", True),
            (cols // 2 + 10, 26, _fmt_date(us.date), "date", True),
            (cols // 2 + 140, 26, f"{us.time[:2]}:{us.time[2:4]}:{us.time[4:]}", "time", True),
            (8, 46, p.institution.upper(), "institution", True),
        ]

    us_series, us_uids = g.uid(), []
    for i in range(2):
        rec = _Rec("us")
        ds = g.header(p, us, rec, UltrasoundImageStorage, "US", us_series, 1, i + 1, "ABD LIVER")
        img = Image.fromarray(g.us_frame(480, 640, band, i * 0.7), "RGB")
        g.draw_lines(img, header_lines(640), 18, (255, 255, 255), rec)
        g.draw_lines(img, [(560, 450, "5.0 MHz", "other", False), (20, 450, "L", "other", False)], 16,
                     (255, 255, 0), rec)
        _set_rgb(ds, np.asarray(img))
        us_uids.append(str(ds.SOPInstanceUID))
        g.write(ds, g.next_path(p, us), rec, pid)

    rec = _Rec("us_multiframe")
    ds = g.header(p, us, rec, UltrasoundMultiFrameImageStorage, "US", g.uid(), 2, 1, "ABD CINE")
    n_frames, frames = 5, []
    for f in range(n_frames):
        img = Image.fromarray(g.us_frame(384, 512, band, f * 0.5), "RGB")
        g.draw_lines(img, header_lines(512), 18, (255, 255, 255), rec, frame=f)
        g.draw_lines(img, [(440, 358, "3.5 MHz", "other", False)], 16, (255, 255, 0), rec, frame=f)
        if f == 2:  # PHI typed by the sonographer on one frame only
            g.draw_lines(img, [(40, 300, f"PT {p.last.upper()} {p.first.upper()}", "name", True),
                               (40, 324, f"CALL {p.phone}", "other", True)],
                         18, (255, 255, 255), rec, frame=f)
        frames.append(np.asarray(img))
    _set_rgb(ds, np.stack(frames))
    ds.NumberOfFrames = n_frames
    ds.FrameTime = "33.3"
    ds.FrameIncrementPointer = 0x00181063
    _ref_seq("ReferencedImageSequence", ds, [(UltrasoundImageStorage, u) for u in us_uids], rec)
    g.write(ds, g.next_path(p, us), rec, pid)

    # ---------------- XR study: CR (MONOCHROME1), DX (MONOCHROME2) ----------------
    xr = g.study(p, "XR", "XR CHEST PA AND LATERAL")

    def xray(rows: int, cols: int) -> np.ndarray:
        yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
        body = np.exp(-(((xx - cols / 2) / (cols * 0.33)) ** 4)) * 2600
        lungs = sum(np.exp(-(((xx - cols / 2 - s * cols * 0.17) / (cols * 0.11)) ** 2
                             + ((yy - rows * 0.45) / (rows * 0.28)) ** 2)) for s in (-1, 1))
        ribs = 120 * (np.sin(yy / 9.0) > 0.6)
        img = 300 + body - 1500 * lungs + ribs * (lungs > 0.2) + g.np.normal(0, 20, (rows, cols))
        return np.clip(img, 0, 4095).astype(np.uint16)

    def xr_lines(rows: int, x0: int, y0: int) -> list[tuple[int, int, str, str, bool]]:
        return [(x0, y0, p.display, "name", True), (x0, y0 + 22, f"ID {pid}", "id", True),
                (x0, y0 + 44, _fmt_date(xr.date), "date", True)]

    rec = _Rec("cr")
    ds = g.header(p, xr, rec, ComputedRadiographyImageStorage, "CR", g.uid(), 1, 1, "CHEST PA")
    # Built as displayed (black label box, white text), then stored inverted as MONOCHROME1 requires.
    arr = g.to_label(xray(512, 512), xr_lines(512, 10, 8), 16, (4, 4, 230, 72), 0, 4095, rec)
    mark = Image.new("L", (512, 512), 0)
    g.draw_lines(mark, [(470, 12, "L", "other", False)], 28, 255, rec)
    arr = np.where(np.asarray(mark) > 127, 4095, arr).astype(np.uint16)
    _set_mono(ds, (4095 - arr).astype(np.uint16), 12, "MONOCHROME1")
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PixelSpacing = ["0.35", "0.35"]
    g.write(ds, g.next_path(p, xr), rec, pid)

    def dx(kind: str) -> Dataset:
        rec = _Rec(kind)
        ds = g.header(p, xr, rec, DigitalXRayImageStorageForPresentation, "DX", g.uid(), 2, 1, "CHEST LAT")
        arr = g.to_label(xray(448, 512), xr_lines(448, 290, 366), 16, (284, 362, 226, 84), 0, 4095, rec)
        mark2 = Image.new("L", (512, 448), 0)
        g.draw_lines(mark2, [(12, 12, "R", "other", False)], 28, 255, rec)
        arr = np.where(np.asarray(mark2) > 127, 4095, arr).astype(np.uint16)
        _set_mono(ds, arr, 12)
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImagerPixelSpacing = ["0.15", "0.15"]
        ds.DetectorType = "SCINTILLATOR"
        ds.BodyPartExamined = "CHEST"
        ds.ViewPosition = "LL"
        ds.WindowCenter, ds.WindowWidth = "2048", "4096"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
        ds.PresentationLUTShape = "IDENTITY"
        ds.BurnedInAnnotation = "YES"
        ds.setdefault("ImageLaterality", "U")
        g.write(ds, g.next_path(p, xr), rec, pid)
        return ds

    dx("dx")

    # ---------------- one lossless-compressed file per patient ----------------
    rec = _Rec("compressed")
    if index % 2 == 0:
        ds = g.header(p, us, rec, UltrasoundImageStorage, "US", us_series, 1, 3, "ABD KIDNEY")
        img = Image.fromarray(g.us_frame(480, 640, band, 2.1), "RGB")
        g.draw_lines(img, header_lines(640), 18, (255, 255, 255), rec)
        g.draw_lines(img, [(560, 450, "5.0 MHz", "other", False)], 16, (255, 255, 0), rec)
        arr = np.asarray(img)
        _set_rgb(ds, arr)
        ds.compress(RLELossless, arr, generate_instance_uid=False)
        ds.PlanarConfiguration = 1  # RLE encodes colour by plane (PS3.5 G.2)
        st = us
    else:
        ds = g.header(p, xr, rec, DigitalXRayImageStorageForPresentation, "DX", g.uid(), 3, 1,
                      "CHEST AP PORT")
        arr = g.to_label(xray(448, 512), xr_lines(448, 8, 8), 16, (4, 4, 226, 72), 0, 4095, rec)
        mark = Image.new("L", (512, 448), 0)
        g.draw_lines(mark, [(470, 410, "AP", "other", False)], 24, 255, rec)
        arr = np.where(np.asarray(mark) > 127, 4095, arr).astype(np.uint16)
        _set_mono(ds, arr, 12)
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImagerPixelSpacing = ["0.15", "0.15"]
        ds.DetectorType = "SCINTILLATOR"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1
        ds.PresentationLUTShape = "IDENTITY"
        ds.ImageLaterality = "U"
        ds.compress(JPEG2000Lossless, arr, generate_instance_uid=False)
        st = xr
    g.write(ds, g.next_path(p, st), rec, pid, ts=ds.file_meta.TransferSyntaxUID)

    if index == 0:
        # A truncated copy of a CT slice (refused) ...
        rec = _Rec("truncated", expect="quarantined")
        ds = g.header(p, ct, rec, CTImageStorage, "CT", ct_series, 1, n_ct + 1, f"AXIAL 2.5mm {p.last}")
        _set_mono(ds, np.clip(g.phantom(128, 128, 1.5, mr=False), 0, 4000).astype(np.int16), 16)
        ds.RescaleIntercept, ds.RescaleSlope = "-1024", "1"
        rec.phi_tags = []  # file is refused, nothing of it is written
        g.write(ds, g.next_path(p, ct), rec, pid, truncate=True)
        # ... and a PNG export named like a DICOM file (refused).
        img = Image.new("RGB", (320, 80), (0, 0, 0))
        ImageDraw.Draw(img).text((6, 8), f"{p.display} {pid}", font=g.font(16), fill=(255, 255, 255))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        rel = f"{p.folder}/export_{p.last}.dcm"
        (g.out / rel).write_bytes(buf.getvalue())
        g.files.append({"path": rel, "expect": "quarantined", "kind": "not_dicom", "patient_id": None,
                        "modality": None, "sop_instance_uid": None, "study_instance_uid": None,
                        "series_instance_uid": None, "frames": 0, "photometric": None,
                        "transfer_syntax": None,
                        "phi_tags": [], "safe_private": [], "pixel_boxes": [], "overlay_text": False,
                        "references": []})


def generate_cohort(out: Path, patients: int = 4, seed: int = 0) -> dict[str, Any]:
    """Write a synthetic PHI-laden cohort under ``out`` plus ``out/answer.json``; return the answer.

    Deterministic: the same ``patients`` and ``seed`` give byte-identical files.
    """
    if not isinstance(patients, int) or patients < 1 or patients > len(_FIRST) * len(_LAST):
        raise ConfigError("patients must be an integer between 1 and 1600")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError("seed must be a non-negative integer")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    g = _Gen(out, seed)
    people = g.people(patients)
    for i, p in enumerate(people):
        g.reseed(f"patient:{i}")
        _patient(g, p, i)
    answer: dict[str, Any] = {
        "seed": seed,
        "patients": [{"patient_id": p.pid, "patient_name": p.pn, "birth_date": p.birth} for p in people],
        "files": g.files,
    }
    (out / ANSWER_NAME).write_text(json.dumps(answer, indent=1, ensure_ascii=True) + "\n", encoding="utf-8")
    return answer
