#!/usr/bin/env python
"""Build a MIDI-B-like synthetic cohort over real pixel data, with an answer key.

Usage: python build_cohort.py OUTDIR   (creates OUTDIR/input, OUTDIR/key/answer.json,
OUTDIR/key/masks/*.npz, OUTDIR/patient_map.csv)

Answer key actions (one dict each):
  file, patient, action in {text_removed, text_retained, date_shifted, uid_consistent,
  patid_consistent, tag_retained, pixels_retained, pixels_hidden}, path, value, group
path = list of steps; a step is "ggggeeee" (public), "gggg:CREATOR:ee" (private) or an int (sequence item).
"""

import copy
import json
import random
import re
import sys
from pathlib import Path

import cv2
import data_store
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

STORE = Path(data_store.__file__).parent / "data"
ROOT = "1.2.826.0.1.3680043.9.7777."
rng = random.Random(20240917)


def tf(name):
    p = STORE / name
    if p.exists():
        return str(p)
    return get_testdata_file(name)


def T(kw_or_tag):
    if isinstance(kw_or_tag, str) and ":" not in kw_or_tag and not re.fullmatch(r"[0-9A-Fa-f]{8}", kw_or_tag):
        t = pydicom.datadict.tag_for_keyword(kw_or_tag)
        return f"{t:08X}"
    return kw_or_tag


# ---------------------------------------------------------------- synthetic people
FIRST = [
    "John",
    "Maria",
    "Robert",
    "Aisha",
    "Wei",
    "Olga",
    "Carlos",
    "Fatima",
    "Henrik",
    "Priya",
    "Thomas",
    "Yuki",
    "Grace",
    "Emeka",
    "Lucia",
    "Dmitri",
    "Sofia",
    "Ahmed",
]
LAST = [
    "Whitfield",
    "Okonkwo",
    "Lindqvist",
    "Castellano",
    "Nakamura",
    "Petrovich",
    "Hargrove",
    "Abernathy",
    "Delacroix",
    "Ramaswamy",
    "Brannigan",
    "Kowalczyk",
    "Fairbanks",
    "Mbeki",
    "Thornberry",
    "Vasquez",
    "Oyelaran",
    "Ellsworth",
]
PHYS = [
    "Gideon^Marchetti",
    "Harriet^Blackwood",
    "Ignatius^Pemberton",
    "Rosalind^Achterberg",
    "Cornelius^Wexford",
    "Beatrix^Quimby",
    "Lysander^Okafor",
    "Millicent^Trevelyan",
]
INST = [
    ("Saint Aldhelm Regional Hospital", "4411 Larkspur Avenue, Millbrook, OH 44102", "+1 216 555 0188"),
    ("Harborview Lakeshore Clinic", "77 Quayside Road, Port Emory, ME 04011", "+1 207 555 0143"),
    ("Grantham Valley Medical Center", "1290 Orchard Bend, Fenwick, TX 75001", "+1 972 555 0166"),
]
STREETS = ["Wisteria Lane", "Copperfield Drive", "Juniper Court", "Halloway Street", "Bramblewood Road"]
CITIES = [("Ashcombe", "VT", "05401"), ("Dunmore", "PA", "18509"), ("Kestrel Falls", "OR", "97301")]


def pn_last_first(pn):  # "Last^First" -> (first, last)
    last, first = pn.split("^")[:2]
    return first, last


def fmt_dates(d):  # YYYYMMDD -> variants
    y, m, dd = d[:4], d[4:6], d[6:]
    return {"da": d, "us": f"{m}/{dd}/{y}", "iso": f"{y}-{m}-{dd}"}


def make_patients(n):
    pats = []
    for i in range(n):
        first, last = FIRST[i % len(FIRST)], LAST[i % len(LAST)]
        age = rng.choice([34, 45, 52, 61, 67, 73, 29, 88, 56, 40]) if i != 7 else 92
        dob_y = 2022 - age
        dob = f"{dob_y}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        street = f"{rng.randint(100, 9899)} {rng.choice(STREETS)}"
        city, st, zc = rng.choice(CITIES)
        p = dict(
            idx=i,
            pn=f"{last.upper()}^{first.upper()}",
            first=first,
            last=last,
            pid=f"MRN{rng.randint(1000000, 9999999)}",
            other_id=f"ALT-{rng.randint(100000, 999999)}",
            other_name=f"{last}^{first}^{rng.choice('ABCDEFGHJK')}",
            mother=f"{rng.choice(LAST)}^{rng.choice(FIRST)}",
            dob=dob,
            sex=rng.choice(["M", "F"]),
            age=f"{age:03d}Y",
            size=f"{rng.uniform(1.50, 1.95):.2f}",
            weight=f"{rng.randint(48, 112)}",
            address=f"{street}, {city}, {st} {zc}",
            phone=f"({rng.randint(201, 989)}) 555-{rng.randint(1000, 9999)}",
            new_id=f"MIDI-{i + 1:04d}",
            new_name=f"MIDI^{i + 1:04d}",
        )
        pats.append(p)
    return pats


# ---------------------------------------------------------------- templates
# (key, file, modality override, SOP class override, force)
TEMPLATES = {
    "CT": [("CT_small.dcm", None, None), ("693_UNCI.dcm", None, None), ("693_J2KR.dcm", None, None)],
    "MR": [
        ("MR_small.dcm", None, None),
        ("MR_small_RLE.dcm", None, None),
        ("MR_small_jp2klossless.dcm", None, None),
        ("emri_small.dcm", None, None),
        ("MR-SIEMENS-DICOM-WithOverlays.dcm", None, None),
    ],
    "US": [
        ("US1_UNCR.dcm", None, None),
        ("OBXXXX1A.dcm", None, None),
        ("OBXXXX1A_rle_2frame.dcm", None, None),
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", None, None),
        ("color-px.dcm", None, None),
        ("examples_ybr_color.dcm", None, None),
        ("examples_rgb_color.dcm", None, None),
        ("US1_J2KR.dcm", None, None),
        ("gdcm-US-ALOKA-16.dcm", None, None),
        ("examples_palette.dcm", None, None),
    ],
    "CR": [("RG3_J2KR.dcm", None, None)],
    "DX": [("RG3_J2KI.dcm", "DX", "1.2.840.10008.5.1.4.1.1.1.1")],
    "MG": [("RG3_J2KR.dcm", "MG", "1.2.840.10008.5.1.4.1.1.1.2")],
    "NM": [("JPEG2000_UNC.dcm", None, None), ("JPEG-LL.dcm", None, None), ("JPEG-lossy.dcm", None, None)],
    "PT": [("JPEG2000_UNC.dcm", "PT", "1.2.840.10008.5.1.4.1.1.128")],
    "SC": [
        ("SC_rgb.dcm", "OT", None),
        ("SC_rgb_2frame.dcm", "OT", None),
        ("SC_rgb_rle.dcm", "OT", None),
        ("SC_rgb_jpeg_gdcm.dcm", "OT", None),
        ("vlut_04.dcm", "OT", None),
        ("mlut_18.dcm", "OT", None),
        ("SC_ybr_full_uncompressed.dcm", "OT", None),
    ],
    "XA": [("JPGLosslessP14SV1_1s_1f_8b.dcm", "XA", "1.2.840.10008.5.1.4.1.1.12.1")],
    "SEG": [("liver.dcm", None, None)],
    "SR": [("reportsi.dcm", None, None), ("test-SR.dcm", None, None)],
    "RT": [("rtplan.dcm", None, None), ("rtdose.dcm", None, None), ("rtstruct.dcm", None, None)],
}
CLINICAL = {
    "CT": ("CT CHEST ABDOMEN PELVIS WITH CONTRAST", "AXIAL SOFT TISSUE", "CHEST"),
    "MR": ("MRI BRAIN WITHOUT CONTRAST", "AX T2 FLAIR", "HEAD"),
    "US": ("US OBSTETRIC COMPLETE", "FETAL BIOMETRY", "ABDOMEN"),
    "CR": ("XR CHEST PA LATERAL", "CHEST PA", "CHEST"),
    "DX": ("XR CHEST PORTABLE", "CHEST AP", "CHEST"),
    "MG": ("MAMMOGRAM SCREENING BILATERAL", "LEFT CC", "BREAST"),
    "NM": ("NM BONE SCAN WHOLE BODY", "ANTERIOR POSTERIOR", "WHOLEBODY"),
    "PT": ("PET CT ONCOLOGY RESTAGING", "PET AC", "WHOLEBODY"),
    "SC": ("OUTSIDE IMAGES IMPORT", "SCANNED DOCUMENT", "CHEST"),
    "XA": ("ANGIOGRAM CORONARY LEFT HEART", "LAO CRANIAL", "HEART"),
    "SEG": ("CT CHEST ABDOMEN PELVIS WITH CONTRAST", "LIVER SEGMENTATION", "ABDOMEN"),
    "SR": ("CT CHEST ABDOMEN PELVIS WITH CONTRAST", "RADIOLOGY REPORT", "CHEST"),
    "RT": ("RADIATION THERAPY PLANNING", "TREATMENT PLAN", "PROSTATE"),
}

STUDY_PLANS = [
    ["CT", "SEG", "SR", "PR", "KOS"],
    ["MR"],
    ["US"],
    ["CR", "DX"],
    ["MG"],
    ["NM", "PT"],
    ["SC"],
    ["XA"],
    ["RT"],
]


class Key:
    def __init__(self):
        self.actions = []

    def add(self, file, patient, action, path, value, group):
        self.actions.append(dict(file=file, patient=patient, action=action, path=path, value=value, group=group))


def set_el(ds, kw, value):
    setattr(ds, kw, value)


def strip_existing_phi(ds):
    """Remove template values we do not plant so the answer key is about planted PHI only (keep structure)."""
    for kw in [
        "PatientName",
        "PatientID",
        "ReferringPhysicianName",
        "InstitutionName",
        "StationName",
        "OperatorsName",
        "PerformingPhysicianName",
        "InstitutionAddress",
        "DeviceSerialNumber",
    ]:
        if kw in ds:
            del ds[kw]


def plant_common(ds, key, fname, pat, study, series, inst_no, mod):
    P = pat["idx"]
    def A(action, path, value, group):
        return key.add(fname, P, action, path, value, group)
    first, last = pat["first"], pat["last"]
    phys = study["phys"]
    strip_existing_phi(ds)
    # identity
    ds.PatientName = pat["pn"] if inst_no % 3 else f"{last}^{first}"
    A("text_removed", [T("PatientName")], str(ds.PatientName), "PatientName")
    ds.PatientID = pat["pid"]
    A("patid_consistent", [T("PatientID")], pat["pid"], "PatientID")
    ds.PatientBirthDate = pat["dob"]
    A("date_shifted", [T("PatientBirthDate")], pat["dob"], "PatientBirthDate")
    ds.OtherPatientIDs = pat["other_id"]
    A("text_removed", [T("OtherPatientIDs")], pat["other_id"], "OtherPatientIDs")
    ds.OtherPatientNames = pat["other_name"]
    A("text_removed", [T("OtherPatientNames")], pat["other_name"], "OtherPatientNames")
    it = Dataset()
    it.PatientID = pat["other_id"] + "-X"
    it.IssuerOfPatientID = study["inst"][0]
    it.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([it])
    A("text_removed", [T("OtherPatientIDsSequence"), 0, T("PatientID")], it.PatientID, "OtherPatientIDsSequence")
    ds.PatientAddress = pat["address"]
    A("text_removed", [T("PatientAddress")], pat["address"], "PatientAddress")
    ds.PatientTelephoneNumbers = pat["phone"]
    A("text_removed", [T("PatientTelephoneNumbers")], pat["phone"], "PatientTelephoneNumbers")
    ds.PatientMotherBirthName = pat["mother"]
    A("text_removed", [T("PatientMotherBirthName")], pat["mother"], "PatientMotherBirthName")
    ds.MedicalRecordLocator = f"CHART {pat['pid']}"
    A("text_removed", [T("MedicalRecordLocator")], pat["pid"], "MedicalRecordLocator")
    # characteristics (retain)
    ds.PatientSex = pat["sex"]
    A("tag_retained", [T("PatientSex")], pat["sex"], "PatientSex")
    ds.PatientAge = pat["age"]
    if int(pat["age"][:3]) <= 89:
        A("tag_retained", [T("PatientAge")], pat["age"], "PatientAge")
    else:
        A("info_age_over_89", [T("PatientAge")], pat["age"], "PatientAge>89")
    ds.PatientSize = pat["size"]
    A("tag_retained", [T("PatientSize")], pat["size"], "PatientSize")
    ds.PatientWeight = pat["weight"]
    A("tag_retained", [T("PatientWeight")], pat["weight"], "PatientWeight")
    # free text with PHI inside (TCIA keep list: AdditionalPatientHistory)
    dv = fmt_dates(study["date"])
    ds.AdditionalPatientHistory = (
        f"Pt {first} {last} seen {dv['us']} for cough; history of asthma, prior imaging {pat['pid']}"
    )
    A(
        "text_removed",
        [T("AdditionalPatientHistory")],
        f"{first} {last} {dv['us']} {pat['pid']}",
        "AdditionalPatientHistory",
    )
    A("text_retained", [T("AdditionalPatientHistory")], "asthma", "AdditionalPatientHistory")
    ds.PatientComments = f"Contact daughter {rng.choice(FIRST)} {last} at {pat['phone']}"
    A("text_removed", [T("PatientComments")], f"{last} {pat['phone']}", "PatientComments")
    # study level
    ds.AccessionNumber = study["acc"]
    A("text_removed", [T("AccessionNumber")], study["acc"], "AccessionNumber")
    ds.StudyID = study["sid"]
    A("text_removed", [T("StudyID")], study["sid"], "StudyID")
    inst = study["inst"]
    ds.InstitutionName = inst[0]
    A("text_removed", [T("InstitutionName")], inst[0], "InstitutionName")
    ds.InstitutionAddress = inst[1]
    A("text_removed", [T("InstitutionAddress")], inst[1], "InstitutionAddress")
    ds.InstitutionalDepartmentName = "Radiology - " + inst[0].split()[0] + " Wing"
    A("text_removed", [T("InstitutionalDepartmentName")], inst[0].split()[0], "InstitutionalDepartmentName")
    ds.ReferringPhysicianName = phys[0]
    A("text_removed", [T("ReferringPhysicianName")], phys[0], "ReferringPhysicianName")
    ds.ReferringPhysicianAddress = inst[1]
    A("text_removed", [T("ReferringPhysicianAddress")], inst[1], "ReferringPhysicianAddress")
    ds.ReferringPhysicianTelephoneNumbers = inst[2]
    A("text_removed", [T("ReferringPhysicianTelephoneNumbers")], inst[2], "ReferringPhysicianTelephoneNumbers")
    ds.PerformingPhysicianName = phys[1]
    A("text_removed", [T("PerformingPhysicianName")], phys[1], "PerformingPhysicianName")
    ds.NameOfPhysiciansReadingStudy = phys[2]
    A("text_removed", [T("NameOfPhysiciansReadingStudy")], phys[2], "NameOfPhysiciansReadingStudy")
    ds.PhysiciansOfRecord = phys[2]
    A("text_removed", [T("PhysiciansOfRecord")], phys[2], "PhysiciansOfRecord")
    ds.OperatorsName = study["operator"]
    A("text_removed", [T("OperatorsName")], study["operator"], "OperatorsName")
    ds.RequestingPhysician = phys[0]
    A("text_removed", [T("RequestingPhysician")], phys[0], "RequestingPhysician")
    ds.StationName = study["station"]
    A("text_removed", [T("StationName")], study["station"], "StationName")
    ds.DeviceSerialNumber = study["serial"]
    A("text_removed", [T("DeviceSerialNumber")], study["serial"], "DeviceSerialNumber")
    # request attributes
    ra = Dataset()
    ra.RequestedProcedureID = "RP" + study["acc"][-6:]
    ra.ScheduledProcedureStepID = "SPS" + study["acc"][-6:]
    ra.RequestedProcedureDescription = CLINICAL[mod][0]
    ra.AccessionNumber = study["acc"]
    ds.RequestAttributesSequence = Sequence([ra])
    A(
        "text_removed",
        [T("RequestAttributesSequence"), 0, T("RequestedProcedureID")],
        ra.RequestedProcedureID,
        "RequestAttributesSequence",
    )
    A(
        "text_removed",
        [T("RequestAttributesSequence"), 0, T("ScheduledProcedureStepID")],
        ra.ScheduledProcedureStepID,
        "RequestAttributesSequence",
    )
    A(
        "text_removed",
        [T("RequestAttributesSequence"), 0, T("AccessionNumber")],
        study["acc"],
        "RequestAttributesSequence",
    )
    # descriptions (TCIA keep, cleaned): clinical part retained, PHI removed
    sd, serd, body = CLINICAL[mod]
    ds.StudyDescription = f"{sd} {last.upper()} {dv['iso']}"
    A("text_removed", [T("StudyDescription")], f"{last} {dv['iso']}", "StudyDescription")
    A("text_retained", [T("StudyDescription")], sd.split()[1].lower(), "StudyDescription")
    ds.SeriesDescription = f"{serd} per Dr {phys[1].split('^')[0]}"
    A("text_removed", [T("SeriesDescription")], phys[1].split("^")[0], "SeriesDescription")
    A("text_retained", [T("SeriesDescription")], serd.split()[-1].lower(), "SeriesDescription")
    ds.ImageComments = f"Reviewed by {phys[2].split('^')[1]} {phys[2].split('^')[0]} on {dv['us']} for {first} {last}"
    A("text_removed", [T("ImageComments")], f"{phys[2].split('^')[0]} {dv['us']} {first} {last}", "ImageComments")
    ds.ProtocolName = f"{body} ROUTINE"
    A("tag_retained", [T("ProtocolName")], ds.ProtocolName, "ProtocolName")
    ds.BodyPartExamined = body
    A("tag_retained", [T("BodyPartExamined")], body, "BodyPartExamined")

    # ---- extra placements (round 2): descriptors kept by TCIA but cleaned by PS3.15, rarer PHI tags
    phl = phys[0].split("^")[0]
    ds.ProtocolName = f"{body} ROUTINE DR {phl.upper()}"
    A("text_removed", [T("ProtocolName")], phl, "ProtocolName (name inside)")
    A("text_retained", [T("ProtocolName")], "routine", "ProtocolName (name inside)")
    ds.PerformedProcedureStepDescription = f"{sd} performed on {last.upper()}, {first.upper()}"
    A("text_removed", [T("PerformedProcedureStepDescription")], f"{last} {first}", "PerformedProcedureStepDescription")
    ds.RequestedProcedureDescription = f"{sd} MRN {pat['pid']}"
    A("text_removed", [T("RequestedProcedureDescription")], pat["pid"], "RequestedProcedureDescription")
    ds.AcquisitionDeviceProcessingDescription = f"Processed for {first[0]}. {last} {dv['da']}"
    A(
        "text_removed",
        [T("AcquisitionDeviceProcessingDescription")],
        f"{last} {dv['da']}",
        "AcquisitionDeviceProcessingDescription",
    )
    ds.DerivationDescription = f"Derived by {study['operator'].replace('^', ' ')}"
    A("text_removed", [T("DerivationDescription")], study["operator"], "DerivationDescription")
    ds.ReasonForStudy = f"Follow-up nodule, requested by {phl}"
    A("text_removed", [T("ReasonForStudy")], phl, "ReasonForStudy")
    A("text_retained", [T("ReasonForStudy")], "nodule", "ReasonForStudy")
    ds.Occupation = "Schoolteacher at Ashcombe Elementary"
    A("text_removed", [T("Occupation")], "Ashcombe Elementary", "Occupation")
    ds.CurrentPatientLocation = f"Ward 5B bed {rng.randint(1, 30)} {inst[0]}"
    A("text_removed", [T("CurrentPatientLocation")], inst[0], "CurrentPatientLocation")
    ds.OrderCallbackPhoneNumber = inst[2]
    A("text_removed", [T("OrderCallbackPhoneNumber")], inst[2], "OrderCallbackPhoneNumber")
    ds.EthnicGroup = "Caucasian"
    A("tag_retained", [T("EthnicGroup")], "Caucasian", "EthnicGroup")
    ds.SmokingStatus = "NO"
    A("tag_retained", [T("SmokingStatus")], "NO", "SmokingStatus")
    ds.PregnancyStatus = 4
    A("tag_retained", [T("PregnancyStatus")], "4", "PregnancyStatus")
    ds.MedicalAlerts = "Contrast allergy"
    A("tag_retained", [T("MedicalAlerts")], "Contrast allergy", "MedicalAlerts")
    ds.ContrastBolusAgent = ds.get("ContrastBolusAgent") or "Omnipaque 350"
    ds.DateOfLastCalibration = study["date"]
    A("date_shifted", [T("DateOfLastCalibration")], study["date"], "DateOfLastCalibration")
    it.IssuerOfPatientID = inst[0]
    A("text_removed", [T("OtherPatientIDsSequence"), 0, T("IssuerOfPatientID")], inst[0], "OtherPatientIDsSequence")
    # dates
    for kw, v in [
        ("StudyDate", study["date"]),
        ("SeriesDate", study["date"]),
        ("AcquisitionDate", study["date"]),
        ("ContentDate", study["date"]),
        ("InstanceCreationDate", study["date"]),
    ]:
        setattr(ds, kw, v)
        A("date_shifted", [T(kw)], v, kw)
    ds.StudyTime = "093015"
    ds.SeriesTime = "093512"
    ds.AcquisitionDateTime = study["date"] + "093601.250000"
    A("date_shifted", [T("AcquisitionDateTime")], ds.AcquisitionDateTime, "AcquisitionDateTime")
    # UIDs
    ds.StudyInstanceUID = study["uid"]
    ds.SeriesInstanceUID = series["uid"]
    ds.SOPInstanceUID = series["sops"][inst_no]
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for kw in ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]:
        A("uid_consistent", [T(kw)], ds[kw].value, kw)
    if "FrameOfReferenceUID" in ds or mod in ("CT", "MR", "PT", "NM"):
        ds.FrameOfReferenceUID = study["for"]
        A("uid_consistent", [T("FrameOfReferenceUID")], study["for"], "FrameOfReferenceUID")
    ds.InstanceNumber = inst_no + 1
    # retained acquisition parameters that exist in the template
    ds.Manufacturer = ds.get("Manufacturer") or "GE MEDICAL SYSTEMS"
    ds.ManufacturerModelName = ds.get("ManufacturerModelName") or "LightSpeed VCT"
    ds.SoftwareVersions = ds.get("SoftwareVersions") or "07MW18.4"
    for kw in [
        "Modality",
        "Manufacturer",
        "ManufacturerModelName",
        "SoftwareVersions",
        "SliceThickness",
        "KVP",
        "PixelSpacing",
        "RepetitionTime",
        "EchoTime",
        "MagneticFieldStrength",
        "ConvolutionKernel",
        "ImagerPixelSpacing",
        "ContrastBolusAgent",
        "SeriesNumber",
        "Rows",
        "Columns",
    ]:
        if kw in ds and ds[kw].value not in (None, ""):
            A("tag_retained", [T(kw)], str(ds[kw].value), kw)
    # private tags of known creators + an unknown creator carrying PHI
    blk = ds.private_block(0x0009, "GEMS_IDEN_01", create=True)
    blk.add_new(0x04, "LO", "HiSpeed CT/i")
    A("tag_retained", ["0009:GEMS_IDEN_01:04"], "HiSpeed CT/i", "private GEMS_IDEN_01,04 (k)")
    blk.add_new(0x02, "SH", study["station"])
    A("text_removed", ["0009:GEMS_IDEN_01:02"], study["station"], "private GEMS_IDEN_01,02 (d)")
    blk2 = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    blk2.add_new(0x18, "LO", "S")
    A("tag_retained", ["0019:GEMS_ACQU_01:18"], "S", "private GEMS_ACQU_01,18 (k)")
    blk3 = ds.private_block(0x0031, "ACME RADIOLOGY PACS 2.1", create=True)
    blk3.add_new(0x10, "LO", f"{pat['pn']} {pat['pid']}")
    A("text_removed", ["0031:ACME RADIOLOGY PACS 2.1:10"], f"{pat['pn']} {pat['pid']}", "private unknown creator")


def new_study(pat, k):
    y = 2019 + rng.randint(0, 4)
    date = f"{y}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    inst = rng.choice(INST)
    phys = rng.sample(PHYS, 3)
    return dict(
        uid=generate_uid(ROOT),
        for_=None,
        date=date,
        inst=inst,
        phys=phys,
        **{"for": generate_uid(ROOT)},
        acc=f"A{rng.randint(10**8, 10**9 - 1)}",
        sid=f"S{rng.randint(1000, 9999)}",
        operator=f"{rng.choice(LAST)}^{rng.choice(FIRST)}",
        station=f"{inst[0].split()[0].upper()}-RAD{rng.randint(1, 9)}",
        serial=f"SN{rng.randint(10**6, 10**7 - 1)}",
    )


def load_template(fname, mod_override, sop_override):
    ds = pydicom.dcmread(tf(fname), force=True)
    if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
        fm = ds.file_meta if hasattr(ds, "file_meta") else FileMetaDataset()
        fm.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.file_meta = fm
    if mod_override:
        ds.Modality = mod_override
    if sop_override:
        ds.SOPClassUID = sop_override
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    return ds


def burn(ds, pat, study, mask_path):
    """Decode, draw name/ID/date with cv2.putText, store uncompressed; save text mask."""
    arr = ds.pixel_array
    pi = ds.PhotometricInterpretation
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress(generate_instance_uid=False)  # pydicom 3: converts YBR -> RGB where relevant
        arr = ds.pixel_array
        pi = ds.PhotometricInterpretation
    nf = int(ds.get("NumberOfFrames", 1) or 1)
    orig = arr.copy()
    frames = arr if nf > 1 else arr[None]
    h, w = frames.shape[1], frames.shape[2]
    scale = max(0.4, w / 900.0)
    thick = max(1, int(round(scale * 1.5)))
    dv = fmt_dates(study["date"])
    lines = [
        (f"{pat['last'].upper()}, {pat['first'].upper()}", (int(0.02 * w), int(0.05 * h) + int(20 * scale))),
        (f"ID: {pat['pid']}", (int(0.02 * w), int(0.05 * h) + int(50 * scale))),
        (dv["us"], (int(0.62 * w), int(0.05 * h) + int(20 * scale))),
    ]
    if pi == "MONOCHROME1":
        val = 0
    elif pi == "PALETTE COLOR":
        # brightest index: use the palette's red+green+blue sum
        r = np.frombuffer(
            ds.RedPaletteColorLookupTableData, dtype="<u2" if ds.RedPaletteColorLookupTableDescriptor[2] == 16 else "u1"
        )
        g = np.frombuffer(ds.GreenPaletteColorLookupTableData, dtype=r.dtype)
        b = np.frombuffer(ds.BluePaletteColorLookupTableData, dtype=r.dtype)
        first_idx = ds.RedPaletteColorLookupTableDescriptor[1]
        val = int(np.argmax(r.astype(int) + g + b)) + first_idx
    else:
        bits = int(ds.BitsStored)
        val = (1 << bits) - 1 if not ds.get("PixelRepresentation", 0) else (1 << (bits - 1)) - 1
    for f in range(frames.shape[0]):
        img = np.ascontiguousarray(frames[f])
        colour = (val, val, val) if img.ndim == 3 else val
        for text, org in lines:
            cv2.putText(
                img,
                text,
                org,
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                colour,
                thick,
                cv2.LINE_AA if img.ndim == 3 and img.dtype == np.uint8 else cv2.LINE_8,
            )
        frames[f] = img
    new = frames if nf > 1 else frames[0]
    diff = new != orig
    spp = int(ds.get("SamplesPerPixel", 1))
    mask = diff.any(axis=-1) if spp > 1 else diff
    ds.PixelData = new.astype(orig.dtype).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "PlanarConfiguration" in ds:
        ds.PlanarConfiguration = 0
    ds.BurnedInAnnotation = "YES"
    np.savez_compressed(mask_path, mask=mask, planted=new, val=val)
    return [ln[0] for ln in lines]


def make_pr(ref_ds, pat, study, key, fname, series):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "PR"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ContentLabel = "ANNOTATION"
    ds.ContentDescription = f"Measurements by {study['phys'][2].split('^')[0]}"
    ds.PresentationCreationDate = study["date"]
    ds.PresentationCreationTime = "101500"
    ds.ContentCreatorName = study["operator"]
    rs = Dataset()
    rs.SeriesInstanceUID = ref_ds.SeriesInstanceUID
    ri = Dataset()
    ri.ReferencedSOPClassUID = ref_ds.SOPClassUID
    ri.ReferencedSOPInstanceUID = ref_ds.SOPInstanceUID
    rs.ReferencedImageSequence = Sequence([ri])
    ds.ReferencedSeriesSequence = Sequence([rs])
    ga = Dataset()
    ga.GraphicLayer = "LAYER1"
    to = Dataset()
    to.UnformattedTextValue = f"{pat['first']} {pat['last']} {pat['pid']}"
    to.BoundingBoxAnnotationUnits = "PIXEL"
    to.BoundingBoxTopLeftHandCorner = [5, 5]
    to.BoundingBoxBottomRightHandCorner = [60, 20]
    to.BoundingBoxTextHorizontalJustification = "LEFT"
    ga.TextObjectSequence = Sequence([to])
    rr = Dataset()
    rr.ReferencedSOPClassUID = ref_ds.SOPClassUID
    rr.ReferencedSOPInstanceUID = ref_ds.SOPInstanceUID
    ga.ReferencedImageSequence = Sequence([rr])
    ds.GraphicAnnotationSequence = Sequence([ga])
    gl = Dataset()
    gl.GraphicLayer = "LAYER1"
    gl.GraphicLayerOrder = 1
    ds.GraphicLayerSequence = Sequence([gl])
    ds.PresentationLUTShape = "IDENTITY"
    ds.SeriesNumber = 900
    plant_common(ds, key, fname, pat, study, series, 0, "CT")
    P = pat["idx"]
    key.add(fname, P, "text_removed", [T("ContentCreatorName")], study["operator"], "ContentCreatorName (PR)")
    key.add(
        fname, P, "text_removed", [T("ContentDescription")], study["phys"][2].split("^")[0], "ContentDescription (PR)"
    )
    key.add(
        fname,
        P,
        "text_removed",
        [T("GraphicAnnotationSequence"), 0, T("TextObjectSequence"), 0, T("UnformattedTextValue")],
        to.UnformattedTextValue,
        "GraphicAnnotation text (PR)",
    )
    key.add(fname, P, "date_shifted", [T("PresentationCreationDate")], study["date"], "PresentationCreationDate")
    key.add(
        fname,
        P,
        "uid_consistent",
        [T("ReferencedSeriesSequence"), 0, T("ReferencedImageSequence"), 0, T("ReferencedSOPInstanceUID")],
        ref_ds.SOPInstanceUID,
        "ReferencedSOPInstanceUID (nested)",
    )
    key.add(
        fname,
        P,
        "uid_consistent",
        [T("ReferencedSeriesSequence"), 0, T("SeriesInstanceUID")],
        ref_ds.SeriesInstanceUID,
        "SeriesInstanceUID (nested)",
    )
    return ds


def make_kos(refs, pat, study, key, fname, series):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.59"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "KO"
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ValueType = "CONTAINER"
    cn = Dataset()
    cn.CodeValue = "113000"
    cn.CodingSchemeDesignator = "DCM"
    cn.CodeMeaning = "Of Interest"
    ds.ConceptNameCodeSequence = Sequence([cn])
    ds.ContinuityOfContent = "SEPARATE"
    items = []
    for r in refs:
        it = Dataset()
        it.RelationshipType = "CONTAINS"
        it.ValueType = "IMAGE"
        rs = Dataset()
        rs.ReferencedSOPClassUID = r.SOPClassUID
        rs.ReferencedSOPInstanceUID = r.SOPInstanceUID
        it.ReferencedSOPSequence = Sequence([rs])
        items.append(it)
    t = Dataset()
    t.RelationshipType = "CONTAINS"
    t.ValueType = "TEXT"
    tc = Dataset()
    tc.CodeValue = "113012"
    tc.CodingSchemeDesignator = "DCM"
    tc.CodeMeaning = "Key Object Description"
    t.ConceptNameCodeSequence = Sequence([tc])
    t.TextValue = f"Key images for {pat['first']} {pat['last']} flagged by Dr {study['phys'][2].split('^')[0]}"
    items.append(t)
    ds.ContentSequence = Sequence(items)
    ev = Dataset()
    ev.StudyInstanceUID = study["uid"]
    se = Dataset()
    se.SeriesInstanceUID = refs[0].SeriesInstanceUID
    se.ReferencedSOPSequence = Sequence([copy.deepcopy(items[i].ReferencedSOPSequence[0]) for i in range(len(refs))])
    ev.ReferencedSeriesSequence = Sequence([se])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([ev])
    ds.SeriesNumber = 901
    plant_common(ds, key, fname, pat, study, series, 0, "CT")
    P = pat["idx"]
    key.add(
        fname,
        P,
        "text_removed",
        [T("ContentSequence"), len(refs), T("TextValue")],
        f"{pat['first']} {pat['last']} {study['phys'][2].split('^')[0]}",
        "SR/KOS TextValue",
    )
    key.add(
        fname, P, "text_retained", [T("ContentSequence"), len(refs), T("TextValue")], "key images", "SR/KOS TextValue"
    )
    key.add(
        fname,
        P,
        "uid_consistent",
        [T("ContentSequence"), 0, T("ReferencedSOPSequence"), 0, T("ReferencedSOPInstanceUID")],
        refs[0].SOPInstanceUID,
        "ReferencedSOPInstanceUID (nested)",
    )
    key.add(
        fname,
        P,
        "uid_consistent",
        [T("CurrentRequestedProcedureEvidenceSequence"), 0, T("ReferencedSeriesSequence"), 0, T("SeriesInstanceUID")],
        refs[0].SeriesInstanceUID,
        "SeriesInstanceUID (nested)",
    )
    return ds


def plant_sr(ds, pat, study, key, fname):
    P = pat["idx"]
    t = Dataset()
    t.RelationshipType = "CONTAINS"
    t.ValueType = "TEXT"
    c = Dataset()
    c.CodeValue = "121071"
    c.CodingSchemeDesignator = "DCM"
    c.CodeMeaning = "Finding"
    t.ConceptNameCodeSequence = Sequence([c])
    dv = fmt_dates(study["date"])
    t.TextValue = (
        f"Comparison with study of {dv['us']}. Patient {pat['first']} {pat['last']} (MRN {pat['pid']}) "
        f"has a stable 4 mm nodule in the right upper lobe. Discussed with Dr {study['phys'][0].split('^')[0]}."
    )
    p = Dataset()
    p.RelationshipType = "HAS OBS CONTEXT"
    p.ValueType = "PNAME"
    c2 = Dataset()
    c2.CodeValue = "121008"
    c2.CodingSchemeDesignator = "DCM"
    c2.CodeMeaning = "Person Observer Name"
    p.ConceptNameCodeSequence = Sequence([c2])
    p.PersonName = study["phys"][2]
    d = Dataset()
    d.RelationshipType = "CONTAINS"
    d.ValueType = "DATE"
    c3 = Dataset()
    c3.CodeValue = "111060"
    c3.CodingSchemeDesignator = "DCM"
    c3.CodeMeaning = "Study Date"
    d.ConceptNameCodeSequence = Sequence([c3])
    d.Date = study["date"]
    cs = ds.get("ContentSequence") or Sequence([])
    n = len(cs)
    cs.append(t)
    cs.append(p)
    cs.append(d)
    ds.ContentSequence = cs
    key.add(
        fname,
        P,
        "text_removed",
        [T("ContentSequence"), n, T("TextValue")],
        f"{dv['us']} {pat['first']} {pat['last']} {pat['pid']} {study['phys'][0].split('^')[0]}",
        "SR/KOS TextValue",
    )
    key.add(fname, P, "text_retained", [T("ContentSequence"), n, T("TextValue")], "nodule", "SR/KOS TextValue")
    key.add(fname, P, "text_removed", [T("ContentSequence"), n + 1, T("PersonName")], study["phys"][2], "SR PersonName")
    key.add(fname, P, "date_shifted", [T("ContentSequence"), n + 2, T("Date")], study["date"], "SR content Date")
    vo = Dataset()
    vo.VerifyingObserverName = study["phys"][2]
    vo.VerifyingOrganization = study["inst"][0]
    vo.VerificationDateTime = study["date"] + "120000"
    ic = Dataset()
    ic.CodeValue = "PHY" + pat["pid"][-4:]
    ic.CodingSchemeDesignator = "LOCAL"
    ic.CodeMeaning = study["phys"][2].replace("^", " ")
    vo.VerifyingObserverIdentificationCodeSequence = Sequence([ic])
    ds.VerifyingObserverSequence = Sequence([vo])
    ds.VerificationFlag = "VERIFIED"
    key.add(
        fname,
        P,
        "text_removed",
        [T("VerifyingObserverSequence"), 0, T("VerifyingObserverName")],
        study["phys"][2],
        "VerifyingObserverName",
    )
    key.add(
        fname,
        P,
        "text_removed",
        [T("VerifyingObserverSequence"), 0, T("VerifyingOrganization")],
        study["inst"][0],
        "VerifyingOrganization",
    )
    key.add(
        fname,
        P,
        "date_shifted",
        [T("VerifyingObserverSequence"), 0, T("VerificationDateTime")],
        vo.VerificationDateTime,
        "VerificationDateTime",
    )


HASHUID = set()
INCDATE = set()


def _load_tcia():
    """TCIA's hashuid and incrementdate lists, as the committed rule data records them (row "tcia")."""
    table = Path(__file__).resolve().parents[2] / "deid_core" / "rules" / "ps315_table.json"
    for row in json.loads(table.read_text(encoding="utf-8"))["rows"]:
        dest = {"hashuid": HASHUID, "incrementdate": INCDATE}.get(row.get("tcia") or "")
        if dest is None:
            continue
        g, e = row["tag"].strip("()").split(",")
        try:
            dest.add((int(g, 16) << 16) | int(e, 16))
        except ValueError:
            pass  # a repeating group (50xx)


def generic_actions(ds, key, fname, P, planted_paths):
    """uid_consistent / date_shifted / text_removed for template-native values at any depth."""

    def walk(d, prefix):
        for el in d:
            path = prefix + [f"{el.tag:08X}"]
            if el.VR == "SQ":
                for i, item in enumerate(el.value):
                    walk(item, path + [i])
                continue
            if el.tag.is_private or el.value in (None, "", b""):
                continue
            if json.dumps(path) in planted_paths:
                continue
            if el.tag in HASHUID and el.VR == "UI" and not isinstance(el.value, (list, pydicom.multival.MultiValue)):
                key.add(fname, P, "uid_consistent", path, str(el.value), "template-native UID " + (el.keyword or ""))
            elif el.tag in INCDATE and el.VR in ("DA", "DT") and isinstance(el.value, str) and len(el.value) >= 8:
                key.add(fname, P, "date_shifted", path, str(el.value), "template-native date " + (el.keyword or ""))
            elif el.VR == "PN" and len(prefix) > 0 or (el.VR == "PN" and el.keyword not in ("PatientName",)):
                key.add(fname, P, "text_removed", path, str(el.value), "template-native PN " + (el.keyword or ""))

    walk(ds, [])


def main(out):
    out = Path(out)
    inp = out / "input"
    keyd = out / "key"
    (keyd / "masks").mkdir(parents=True, exist_ok=True)
    inp.mkdir(parents=True, exist_ok=True)
    key = Key()
    pats = make_patients(15)
    files = []
    burn_targets = 0
    burn_pool_count = 0
    for pat in pats:
        P = pat["idx"]
        # each patient: 3 study plans (rotating), CT study for 2/3 of patients
        plans = [STUDY_PLANS[(P + j * 4) % len(STUDY_PLANS)] for j in range(3)]
        if P % 3 != 2 and ["CT", "SEG", "SR", "PR", "KOS"] not in plans:
            plans[0] = ["CT", "SEG", "SR", "PR", "KOS"]
        for si, plan in enumerate(plans):
            study = new_study(pat, si)
            ct_refs = []
            for sn, mod in enumerate(plan):
                if mod in ("PR", "KOS"):
                    if not ct_refs:
                        continue
                    series = dict(uid=generate_uid(ROOT), sops=[generate_uid(ROOT)])
                    fname = f"p{P:02d}/s{si}/{mod}_{sn}_0.dcm"
                    ds = (
                        make_pr(ct_refs[0], pat, study, key, fname, series)
                        if mod == "PR"
                        else make_kos(ct_refs, pat, study, key, fname, series)
                    )
                    files.append((fname, ds, None))
                    continue
                pool = TEMPLATES[mod]
                if mod in ("US", "SC"):
                    n = 4
                elif mod in ("CT", "MR", "RT", "NM"):
                    n = 3 if mod != "MR" else 4
                elif mod == "SR":
                    n = 1
                else:
                    n = 1
                picks = [pool[(P + i) % len(pool)] for i in range(n)] if mod not in ("CT", "RT") else pool[:n]
                series = dict(uid=generate_uid(ROOT), sops=[generate_uid(ROOT) for _ in range(n)])
                for i, (tfile, mo, so) in enumerate(picks):
                    ds = load_template(tfile, mo, so)
                    fname = f"p{P:02d}/s{si}/{mod}_{sn}_{i}_{Path(tfile).stem}.dcm"
                    plant_common(ds, key, fname, pat, study, series, i, mod)
                    if mod in ("SEG", "RT", "SR") and "ReferencedSeriesSequence" in ds:
                        pass
                    if mod == "SR":
                        plant_sr(ds, pat, study, key, fname)
                    if mod == "MR" and i > 0:
                        ri = Dataset()
                        ri.ReferencedSOPClassUID = ds.SOPClassUID
                        ri.ReferencedSOPInstanceUID = series["sops"][0]
                        ds.ReferencedImageSequence = Sequence([ri])
                        key.add(
                            fname,
                            P,
                            "uid_consistent",
                            [T("ReferencedImageSequence"), 0, T("ReferencedSOPInstanceUID")],
                            series["sops"][0],
                            "ReferencedSOPInstanceUID (nested)",
                        )
                    burned = None
                    if "PixelData" in ds:
                        if mod in ("US", "SC", "CR", "DX"):
                            burn_pool_count += 1
                            if burn_pool_count % 6 == 3 or (
                                mod == "CR" and not any("CR_" in f[0] and f[2] for f in files)
                            ):  # ~12-14% of US/SC/CR/DX images
                                mp = keyd / "masks" / (fname.replace("/", "__") + ".npz")
                                try:
                                    burned = burn(ds, pat, study, mp)
                                except Exception as e:  # noqa
                                    print("burn failed", fname, e)
                                    burned = None
                        if burned:
                            key.add(fname, P, "pixels_hidden", ["7FE00010"], " | ".join(burned), "burned-in " + mod)
                            burn_targets += 1
                        else:
                            key.add(fname, P, "pixels_retained", ["7FE00010"], None, "pixels " + mod)
                    if mod == "CT":
                        ct_refs.append(ds)
                    files.append((fname, ds, burned))
    _load_tcia()
    for fname, ds, _ in files:
        P = int(fname[1:3])
        planted = {json.dumps(a["path"]) for a in key.actions if a["file"] == fname}
        generic_actions(ds, key, fname, P, planted)
    for fname, ds, _ in files:
        p = inp / fname
        p.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(p, enforce_file_format=True)
    # pixel digests of what was written (raw PixelData bytes + decoded array hash)
    import hashlib

    for a in key.actions:
        if a["action"] == "pixels_retained":
            d = pydicom.dcmread(inp / a["file"])
            a["value"] = hashlib.sha256(d.PixelData).hexdigest()
            try:
                arr = d.pixel_array
                a["decoded_sha"] = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
            except Exception:
                a["decoded_sha"] = None
    with open(out / "patient_map.csv", "w") as f:
        f.write("original_patient_id,new_patient_id,new_patient_name\n")
        for p in pats:
            f.write(f"{p['pid']},{p['new_id']},{p['new_name']}\n")
    json.dump(dict(patients=pats, actions=key.actions), open(keyd / "answer.json", "w"), indent=1)
    from collections import Counter

    print("files", len(files), "burned", burn_targets, "actions", len(key.actions))
    print(Counter(a["action"] for a in key.actions))
    print(Counter(f.split("/")[-1].split("_")[0] for f, _, _ in files))


if __name__ == "__main__":
    main(sys.argv[1])
