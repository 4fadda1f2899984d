"""Audit sweep of deidflow's burned-in-text stage (fail-open search). Deterministic (seeded).

Usage: .venv/bin/python bench/failopen/sweep.py [N_CASES] [WORKERS] [START] [OUT_CSV]
       .venv/bin/python bench/failopen/analyze.py OUT_CSV   (the tables: fail-open rate by factor)
Written by an audit (session 6); OUT_CSV defaults to results.csv in a new temporary directory.

Each case: build a DICOM (synthetic or real-anatomy background), burn 1-4 lines of the header's PHI,
run deid_core.pipeline.deidentify_file, and measure per planted line the share of its *visible* ink
pixels inside the recorded mask rectangles (Outcome.boxes, which docs/pixels.md says are exactly the
filled rectangles; kept on the Outcome also when the file is quarantined).
found >= 90 %, partial 10-90 %, missed < 10 %.
Legibility oracle (independent of the pipeline's screen): the visible ink left unmasked is rendered clean
(black on white, upscaled) and read by Tesseract PSM 7; "legible" when the target token (surname / ID /
date) is recovered (edit distance <= 1 for tokens >= 5 chars). A planted line whose full visible ink the
oracle cannot read is "oracle_unreadable" and reported separately.
"""

from __future__ import annotations

import csv
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

HERE = Path(tempfile.mkdtemp(prefix="deidflow-failopen-"))
SEED = 20261127

SURNAMES = [
    "KOWALSKI",
    "NAKAMURA",
    "OKONKWO",
    "BRANDT",
    "FERREIRA",
    "LINDQVIST",
    "HARGREAVES",
    "MORETTI",
    "DUBOIS",
    "PETROVA",
    "GALLAGHER",
    "SANTIAGO",
]
GIVEN = ["MARTA", "HIROSHI", "CHIDI", "ANNA", "LUIS", "ERIK", "JANE", "PAOLO", "CLAIRE", "OLGA", "TOMAS", "ROSA"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
SOP = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "OT": "1.2.840.10008.5.1.4.1.1.7",
    "SC": "1.2.840.10008.5.1.4.1.1.7",
    "XA": "1.2.840.10008.5.1.4.1.1.12.1",
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
}
HERSHEY = {
    "h_simplex": cv2.FONT_HERSHEY_SIMPLEX,
    "h_plain": cv2.FONT_HERSHEY_PLAIN,
    "h_duplex": cv2.FONT_HERSHEY_DUPLEX,
    "h_complex": cv2.FONT_HERSHEY_COMPLEX,
    "h_triplex": cv2.FONT_HERSHEY_TRIPLEX,
}
TTF = {
    "pil_default": None,
    "dejavu_bold": "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "dejavu_mono": "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "liberation_serif": "/usr/share/fonts/truetype/liberation/LiberationSerif-Regular.ttf",
}
FONTS = list(HERSHEY) + list(TTF)
BACKGROUNDS = [
    "flat_dark",
    "flat_bright",
    "gradient",
    "noise",
    "speckle",
    "ct",
    "mr",
    "cr",
    "mr_large",
    "us_rgb",
    "sc_rgb",
    "emri_mf",
    "bone_air",
    "synthetic_mf",
]
POSITIONS = [
    "top_left",
    "top_right",
    "bottom_left",
    "bottom_right",
    "top_edge",
    "centre",
    "cut_off",
    "vertical_left",
    "vertical_right",
]
VALUES = ["range_max", "content_max", "near_content_max", "mid", "dark", "colour"]
HEIGHTS = [6, 7, 8, 9, 10, 12, 14, 16, 20, 24, 30, 36, 44, 52, 60, 70, 80, 100, 130]


# ----------------------------------------------------------------------------------------------- case
@dataclass
class Case:
    idx: int
    background: str
    size: int  # short side target (synthetic) / 0 = native
    bits: int
    signed: bool
    photometric: str
    modality: str
    font: str
    height: int  # requested glyph (cap) height, px
    thickness: int
    aa: bool
    n_lines: int
    value: str
    position: str
    colour: tuple = (255, 255, 255)
    surname: str = ""
    given: str = ""
    pid: str = ""
    birth: str = ""
    study: str = ""
    texts: list = field(default_factory=list)  # (kind, text, target)
    seed: int = 0


def _date_fmt(da: str, rng: np.random.Generator) -> str:
    y, m, d = da[:4], da[4:6], da[6:]
    opts = [
        f"{y}-{m}-{d}",
        f"{m}/{d}/{y}",
        f"{d}.{m}.{y}",
        f"{int(d)}-{MONTHS[int(m) - 1]}-{y}",
        da,
        f"{d}/{m}/{y}",
        f"{MONTHS[int(m) - 1]} {int(d)}, {y}",
    ]
    return opts[int(rng.integers(len(opts)))]


def make_case(idx: int) -> Case:
    rng = np.random.default_rng([SEED, idx])
    bg = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    size, bits, signed, pi = 0, 8, False, "MONOCHROME2"
    modality = "CT"
    if bg in ("flat_dark", "flat_bright", "gradient", "noise", "speckle", "synthetic_mf"):
        size = int(rng.choice([64, 96, 128, 256, 512, 512, 1024, 1024, 2048, 4000]))
        if bg in ("noise", "speckle"):  # full-frame noise above 512 px costs minutes per image (see REPORT)
            size = min(size, 512)
        if bg == "synthetic_mf":  # 3 noisy frames of 4000 px: > 5 min per file (see REPORT)
            size = min(size, 1024)
        bits = int(rng.choice([8, 12, 16, 16]))
        signed = bool(bits == 16 and rng.random() < 0.4)
        pi = "MONOCHROME1" if rng.random() < 0.25 else "MONOCHROME2"
        modality = str(rng.choice(["CT", "MR", "CR", "DX", "XA", "MG", "OT"]))
    elif bg in ("ct", "bone_air"):
        modality, bits, signed = "CT", 16, True
        size = int(rng.choice([0, 0, 512]))  # native 128 or upscaled 512
    elif bg == "mr":
        modality, bits, signed = "MR", 16, True
    elif bg == "mr_large":
        modality, bits = "MR", 16
    elif bg == "cr":
        modality, bits, pi = "CR", 16, "MONOCHROME1"
    elif bg == "emri_mf":
        modality, bits = "MR", 16
    elif bg == "us_rgb":
        modality, pi = "US", "RGB"
    elif bg == "sc_rgb":
        modality, pi = str(rng.choice(["SC", "OT"])), "RGB"
    font = FONTS[int(rng.integers(len(FONTS)))]
    height = int(rng.choice(HEIGHTS))
    thickness = int(rng.choice([1, 1, 2, 3])) if font in HERSHEY else int(rng.choice([0, 0, 1]))  # ttf: stroke
    aa = bool(rng.random() < 0.5)
    n_lines = int(rng.choice([1, 1, 2, 3, 4]))
    if pi == "RGB":
        value = str(rng.choice(["colour", "colour", "range_max", "dark"]))
    else:
        value = str(rng.choice(["range_max", "range_max", "content_max", "near_content_max", "mid", "dark"]))
    position = POSITIONS[int(rng.integers(len(POSITIONS)))]
    colour = tuple(
        int(c)
        for c in [
            (255, 255, 0),
            (0, 255, 0),
            (255, 0, 0),
            (0, 128, 255),
            (255, 0, 255),
            (255, 128, 0),
            (0, 255, 255),
            (255, 255, 255),
        ][int(rng.integers(8))]
    )
    surname = SURNAMES[int(rng.integers(len(SURNAMES)))]
    given = GIVEN[int(rng.integers(len(GIVEN)))]
    pid = str(rng.choice(["", "PX", "MRN"])) + "".join(
        str(int(d)) for d in rng.integers(0, 10, int(rng.integers(6, 9)))
    )
    birth = f"{int(rng.integers(1930, 2005))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    study = f"{int(rng.integers(2010, 2025))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    name_fmt = [
        f"{surname}^{given}",
        f"{surname}, {given}",
        f"{given} {surname}",
        f"{surname.title()}, {given.title()}",
        f"{surname} {given}",
        f"Name: {surname} {given}",
    ][int(rng.integers(6))]
    id_fmt = [pid, f"ID: {pid}", f"MRN {pid}", f"Pat ID {pid}"][int(rng.integers(4))]
    b = _date_fmt(birth, rng)
    s = _date_fmt(study, rng)
    items = [
        ("name", name_fmt, surname),
        ("id", id_fmt, pid),
        ("birth", str(rng.choice([b, f"DOB {b}", f"Born {b}"])), re.sub(r"\W", "", b)),
        ("study", s, re.sub(r"\W", "", s)),
    ]
    order = list(rng.permutation(4))[:n_lines]
    texts = [items[i] for i in order]
    return Case(
        idx,
        bg,
        size,
        bits,
        signed,
        pi,
        modality,
        font,
        height,
        thickness,
        aa,
        n_lines,
        value,
        position,
        colour,
        surname,
        given,
        pid,
        birth,
        study,
        texts,
        int(rng.integers(1 << 30)),
    )


# ----------------------------------------------------------------------------------------- backgrounds
_REAL: dict[str, np.ndarray] = {}


def _real(name: str) -> np.ndarray:
    if name not in _REAL:
        ds = pydicom.dcmread(get_testdata_file(name))
        arr = ds.pixel_array
        if name == "US1_J2KR.dcm" and str(ds.PhotometricInterpretation).startswith("YBR"):
            pass  # pydicom converts YBR_RCT to RGB on decode
        _REAL[name] = np.array(arr)
    return _REAL[name]


def _stored_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def background(c: Case, rng: np.random.Generator) -> tuple[np.ndarray, int, int, int]:
    """Frames (F, R, C[, 3]) in stored values and the dtype range; returns (frames, lo, hi, bits_stored)."""
    if c.background in ("ct", "bone_air"):
        a = _real("CT_small.dcm").astype(np.int32)
        if c.size:
            a = cv2.resize(a.astype(np.float32), (c.size, c.size), interpolation=cv2.INTER_LINEAR).astype(np.int32)
        return a[None].astype(np.int16), -32768, 32767, 16
    if c.background == "mr":
        return _real("MR_small.dcm")[None].astype(np.int16), -32768, 32767, 16
    if c.background == "mr_large":
        return _real("MR2_J2KR.dcm")[None].astype(np.uint16), 0, 4095, 12
    if c.background == "cr":
        return _real("RG3_J2KR.dcm")[None].astype(np.uint16), 0, 1023, 10
    if c.background == "emri_mf":
        return _real("emri_small.dcm").astype(np.uint16), 0, 4095, 12
    if c.background == "us_rgb":
        return _real("US1_J2KR.dcm")[None].astype(np.uint8), 0, 255, 8
    if c.background == "sc_rgb":
        return _real("SC_rgb.dcm")[None].astype(np.uint8), 0, 255, 8
    # synthetic, display-normalised [0, 1]
    n = c.size
    aspect = 1.0 if n <= 1024 else 0.8
    rows, cols = int(n * aspect), n
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    kind = c.background
    if kind == "flat_dark":
        d = np.full((rows, cols), 0.05, np.float32)
    elif kind == "flat_bright":
        d = np.full((rows, cols), 0.8, np.float32)
    elif kind == "gradient":
        d = 0.05 + 0.85 * (xx / cols * 0.6 + yy / rows * 0.4)
    elif kind == "noise":
        d = np.clip(0.3 + 0.08 * rng.standard_normal((rows, cols)).astype(np.float32), 0, 0.7)
    elif kind == "speckle":
        base = cv2.GaussianBlur(rng.random((rows, cols)).astype(np.float32), (0, 0), 1.2)
        d = np.clip(0.45 * rng.rayleigh(0.5, (rows, cols)).astype(np.float32) * (0.4 + base), 0, 0.85)
    else:  # synthetic_mf: gradient+noise, 3 frames
        d = np.clip(0.1 + 0.4 * xx / cols + 0.05 * rng.standard_normal((rows, cols)).astype(np.float32), 0, 0.8)
    lo, hi = _stored_range(c.bits, c.signed)
    top = hi if c.bits == 8 else lo + (hi - lo) * float(rng.choice([0.15, 0.6, 1.0]))  # content span of deep data
    if c.photometric == "MONOCHROME1":
        d = 1.0 - d
        stored = hi - d * (hi - lo) if c.bits == 8 else top - d * (top - lo)
    else:
        stored = lo + d * (top - lo)
    dtype = {(8, False): np.uint8, (12, False): np.uint16, (16, False): np.uint16, (16, True): np.int16}[
        (c.bits, c.signed)
    ]
    st = np.clip(np.round(stored), lo, hi).astype(dtype)
    frames = np.stack([st] * (3 if kind == "synthetic_mf" else 1))
    if kind == "synthetic_mf":
        for f in range(3):
            frames[f] = np.clip(frames[f].astype(np.int64) + rng.integers(-2, 3, frames[f].shape), lo, hi).astype(dtype)
    return frames, lo, hi, c.bits


# ---------------------------------------------------------------------------------------------- text
def render_line(text: str, c: Case) -> np.ndarray:
    """Alpha (0..1) of one text line, tight-ish, glyph cap height ~ c.height."""
    if c.font in HERSHEY:
        face = HERSHEY[c.font]
        scale = c.height / (cv2.getTextSize("H", face, 1.0, 1)[0][1])
        th = max(1, int(round(c.thickness * max(1.0, scale / 2))))
        (w, h), base = cv2.getTextSize(text, face, scale, th)
        pad = th + 4
        img = np.zeros((h + base + 2 * pad, w + 2 * pad), np.uint8)
        cv2.putText(img, text, (pad, pad + h), face, scale, 255, th, cv2.LINE_AA if c.aa else cv2.LINE_8)
    else:
        path = TTF[c.font]
        size = max(4, int(round(c.height / 0.72)))
        font = ImageFont.load_default(size=size) if path is None else ImageFont.truetype(path, size)
        draw = ImageDraw.Draw(Image.new("L", (1, 1)))
        left, t, r, b = draw.textbbox((0, 0), text, font=font, stroke_width=c.thickness)
        pad = 4
        im = Image.new("L", (r - left + 2 * pad, b - t + 2 * pad), 0)
        dr = ImageDraw.Draw(im)
        if not c.aa:
            dr.fontmode = "1"
        dr.text((pad - left, pad - t), text, fill=255, font=font, stroke_width=c.thickness, stroke_fill=255)
        img = np.asarray(im)
    a = img.astype(np.float32) / 255.0
    ys, xs = np.nonzero(a > 0)
    return a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def place(c: Case, frames: np.ndarray, rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """Per planted line: (frame index, full-frame alpha)."""
    F, R, C = frames.shape[:3]
    vertical = c.position.startswith("vertical")
    alphas = [render_line(t, c) for _k, t, _g in c.texts]
    # shrink the whole block to fit the frame (long axis: along the text; cut_off then overflows by 25 %)
    along, across = (R, C) if vertical else (C, R)
    widest = max(a.shape[1] for a in alphas)
    stack = sum(int(a.shape[0] * 1.4) + 2 for a in alphas)
    f = min(1.0, (along - 4) / widest, (across - 4) / stack)
    if f < 1.0:
        alphas = [
            cv2.resize(a, (max(1, int(a.shape[1] * f)), max(1, int(a.shape[0] * f))), interpolation=cv2.INTER_AREA)
            for a in alphas
        ]
    if vertical:
        alphas = [np.rot90(a, 1 if c.position == "vertical_left" else 3) for a in alphas]
    gap = lambda a: max(2, int(0.4 * (a.shape[1] if vertical else a.shape[0])))  # noqa: E731
    block_h = sum(a.shape[0] + gap(a) for a in alphas) if not vertical else max(a.shape[0] for a in alphas)
    block_w = max(a.shape[1] for a in alphas) if not vertical else sum(a.shape[1] + gap(a) for a in alphas)
    m = max(2, int(0.02 * min(R, C)))
    p = c.position
    if p == "top_left":
        x0, y0 = m, m
    elif p == "top_right":
        x0, y0 = C - block_w - m, m
    elif p == "bottom_left":
        x0, y0 = m, R - block_h - m
    elif p == "bottom_right":
        x0, y0 = C - block_w - m, R - block_h - m
    elif p == "top_edge":
        x0, y0 = (C - block_w) // 2, 0
    elif p == "centre":
        x0, y0 = (C - block_w) // 2, (R - block_h) // 2
    elif p == "cut_off":
        x0, y0 = C - int(0.75 * block_w), R - block_h - m  # a quarter of the widest line beyond the right edge
    elif p == "vertical_left":
        x0, y0 = m, (R - block_h) // 2
    else:
        x0, y0 = C - block_w - m, (R - block_h) // 2
    if c.background == "bone_air":  # straddle the skull edge of CT_small: centre line through the anatomy edge
        x0, y0 = max(0, min(C - block_w, int(0.12 * C))), max(0, min(R - block_h, int(0.45 * R)))
    x0, y0 = max(x0, 0) if p != "cut_off" else x0, max(y0, 0)
    frame_of_text = int(rng.integers(F)) if F > 1 else 0
    out = []
    cx, cy = x0, y0
    for a in alphas:
        full = np.zeros((R, C), np.float32)
        ah, aw = a.shape
        y_a, y_b, x_a, x_b = max(cy, 0), min(cy + ah, R), max(cx, 0), min(cx + aw, C)
        if y_b > y_a and x_b > x_a:
            full[y_a:y_b, x_a:x_b] = a[y_a - cy : y_b - cy, x_a - cx : x_b - cx]
        out.append((frame_of_text, full))
        if vertical:
            cx += aw + gap(a)
        else:
            cy += ah + gap(a)
    return out


def text_value(c: Case, frames: np.ndarray, lo: int, hi: int, f: int):
    if frames.ndim == 4:
        if c.value == "colour":
            return np.array(c.colour, np.float32)
        if c.value == "dark":
            return np.array((0, 0, 0), np.float32)
        return np.array((255, 255, 255), np.float32)
    fr = frames[f].astype(np.float64)
    cmin, cmax = float(fr.min()), float(fr.max())
    mono1 = c.photometric == "MONOCHROME1"
    # display-bright = stored high for MONOCHROME2, stored low for MONOCHROME1
    if c.value == "range_max":
        return float(lo if mono1 else hi)
    if c.value == "content_max":
        return cmin if mono1 else cmax
    if c.value == "near_content_max":
        return cmin + 0.1 * (cmax - cmin) if mono1 else cmax - 0.1 * (cmax - cmin)
    if c.value == "mid":
        return (cmin + cmax) / 2
    return float(hi if mono1 else lo)  # dark


def burn(frames: np.ndarray, planted: list, c: Case, lo: int, hi: int) -> None:
    for f, alpha in planted:
        v = text_value(c, frames, lo, hi, f)
        fr = frames[f].astype(np.float32)
        a = alpha[..., None] if fr.ndim == 3 else alpha
        fr = fr * (1 - a) + np.asarray(v, np.float32) * a
        frames[f] = np.clip(np.round(fr), lo, hi).astype(frames.dtype)


def build_dataset(c: Case, frames: np.ndarray, bits_stored: int) -> Dataset:
    ds = Dataset()
    fm = FileMetaDataset()
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.MediaStorageSOPClassUID = SOP.get(c.modality, SOP["OT"])
    ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(c.idx), "sop"])
    ds.file_meta = fm
    ds.SOPClassUID = fm.MediaStorageSOPClassUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[str(c.idx), "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(c.idx), "series"])
    ds.Modality = c.modality
    ds.PatientName = f"{c.surname}^{c.given}"
    ds.PatientID = c.pid
    ds.PatientBirthDate = c.birth
    ds.PatientSex = "F"
    ds.StudyDate = c.study
    ds.SeriesDate = c.study
    ds.ContentDate = c.study
    ds.StudyTime = "101500"
    ds.AccessionNumber = "A" + c.pid[-5:]
    F = frames.shape[0]
    ds.Rows, ds.Columns = int(frames.shape[1]), int(frames.shape[2])
    if F > 1:
        ds.NumberOfFrames = F
    if frames.ndim == 4:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit, ds.PixelRepresentation = 7, 0
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, c.photometric
        ds.BitsAllocated = 8 if frames.dtype == np.uint8 else 16
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 1 if frames.dtype.kind == "i" else 0
    arr = frames if F > 1 else frames[0]
    ds.PixelData = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
    return ds


def build(c: Case) -> tuple[Dataset, list[tuple[int, np.ndarray]], np.ndarray, np.ndarray, int, int]:
    rng = np.random.default_rng([SEED, c.idx, 7])
    frames, lo, hi, bits = background(c, rng)
    orig = frames.copy()
    planted = place(c, frames, rng)
    burn(frames, planted, c, lo, hi)
    return build_dataset(c, frames, bits), planted, orig, frames, lo, hi


# ----------------------------------------------------------------------------------------- measure
_ENGINE = None


def engine():
    global _ENGINE
    if _ENGINE is None:
        from deid_core.pixels import get_engine

        _ENGINE = get_engine("tesseract")
    return _ENGINE


def visible_ink(alpha: np.ndarray, orig: np.ndarray, burned: np.ndarray) -> np.ndarray:
    """Ink pixels (alpha >= 0.5) whose burned value stands out from the original background by >= 12/255 of
    the frame's full display range (a reader with the default window sees them)."""
    o, b = orig.astype(np.float64), burned.astype(np.float64)
    if o.ndim == 3:
        diff = np.abs(o - b).max(axis=2)
        rng_ = 255.0
    else:
        diff = np.abs(o - b)
        rng_ = max(float(b.max()) - float(b.min()), 1.0)
    return (alpha >= 0.5) & (diff / rng_ * 255.0 >= 12)


def line_contrast(alpha: np.ndarray, burned: np.ndarray) -> float:
    """|median ink - median surround| of a planted line in the frame's full display window (0-255); colour:
    the largest channel difference."""
    ink = alpha >= 0.5
    ys, xs = np.nonzero(ink)
    if ys.size == 0:
        return 0.0
    p = max(3, int(0.5 * min(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)))
    y0, y1, x0, x1 = max(0, ys.min() - p), ys.max() + 1 + p, max(0, xs.min() - p), xs.max() + 1 + p
    sub = burned[y0:y1, x0:x1].astype(np.float64)
    near = cv2.dilate((alpha[y0:y1, x0:x1] > 0.02).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    core = ink[y0:y1, x0:x1]
    if not (~near).any():
        return 0.0
    if sub.ndim == 3:
        return float(np.abs(np.median(sub[core], axis=0) - np.median(sub[~near], axis=0)).max())
    rng_ = max(float(burned.max()) - float(burned.min()), 1.0)
    return float(abs(np.median(sub[core]) - np.median(sub[~near])) / rng_ * 255)


def oracle_read(ink: np.ndarray, vertical: str | None) -> str:
    ys, xs = np.nonzero(ink)
    if ys.size == 0:
        return ""
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    if vertical == "vertical_left":
        crop = np.rot90(crop, 3)
    elif vertical == "vertical_right":
        crop = np.rot90(crop, 1)
    img = np.where(crop, 0, 255).astype(np.uint8)
    h = img.shape[0]
    s = 40.0 / max(h, 1)
    img = cv2.resize(
        img, (max(1, int(img.shape[1] * s)), 40), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    )
    img = cv2.copyMakeBorder(img, 20, 20, 20, 20, cv2.BORDER_CONSTANT, value=255)
    return " ".join(w.text for w in engine().words(np.ascontiguousarray(img), psm=7))


def pixel_oracle(frame: np.ndarray, alpha: np.ndarray, vertical: str | None) -> str:
    """Read the actual pixels around a planted line (as a viewer would window them): the crop around its ink,
    windowed on its own 1st-99th percentile, both polarities, PSM 7; the longer alphanumeric reading."""
    ys, xs = np.nonzero(alpha >= 0.5)
    if ys.size == 0:
        return ""
    h = (xs.max() - xs.min() + 1) if vertical else (ys.max() - ys.min() + 1)
    p = max(3, int(0.3 * h))
    y0, y1 = max(0, ys.min() - p), min(frame.shape[0], ys.max() + 1 + p)
    x0, x1 = max(0, xs.min() - p), min(frame.shape[1], xs.max() + 1 + p)
    crop = frame[y0:y1, x0:x1].astype(np.float32)
    if crop.ndim == 3:
        crop = crop.max(axis=2) - crop.min(axis=2) + 0.3 * crop.mean(axis=2)  # colour text stands out
    lo_, hi_ = np.percentile(crop, 1), np.percentile(crop, 99)
    g = np.clip((crop - lo_) / max(hi_ - lo_, 1e-6) * 255, 0, 255).astype(np.uint8)
    if vertical == "vertical_left":
        g = np.rot90(g, 3)
    elif vertical == "vertical_right":
        g = np.rot90(g, 1)
    s = 40.0 / max(int(h), 1)
    g = cv2.resize(
        g,
        (max(1, int(g.shape[1] * s)), max(1, int(g.shape[0] * s))),
        interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC,
    )
    best = ""
    for img in (g, 255 - g):
        img = cv2.copyMakeBorder(img, 12, 12, 12, 12, cv2.BORDER_REPLICATE)
        txt = " ".join(w.text for w in engine().words(np.ascontiguousarray(img), psm=7))
        if sum(ch.isalnum() for ch in txt) > sum(ch.isalnum() for ch in best):
            best = txt
    return best


def fill_boxes(frame: np.ndarray, boxes: list, f: int, photometric: str, lo: int, hi: int) -> np.ndarray:
    out = frame.copy()
    fill = 0 if frame.ndim == 3 else (int(frame.max()) if photometric == "MONOCHROME1" else int(frame.min()))
    for b in boxes:
        if int(b["frame"]) == f:
            out[int(b["y"]) : int(b["y"]) + int(b["h"]), int(b["x"]) : int(b["x"]) + int(b["w"])] = fill
    return out


def _lev(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def token_in(reading: str, target: str) -> bool:
    r = re.sub(r"[^0-9A-Z]", "", reading.upper())
    t = re.sub(r"[^0-9A-Z]", "", target.upper())
    if not t:
        return False
    if t in r:
        return True
    if len(t) < 5:
        return False
    n = len(t)
    return any(_lev(r[i : i + L], t) <= 1 for L in (n - 1, n, n + 1) for i in range(0, max(1, len(r) - L + 1)))


FIELDS = [
    "idx",
    "background",
    "rows",
    "cols",
    "frames",
    "bits",
    "signed",
    "photometric",
    "modality",
    "policy",
    "font",
    "height",
    "glyph_h_px",
    "thickness",
    "aa",
    "n_lines",
    "value",
    "position",
    "colour",
    "status",
    "reason",
    "n_boxes",
    "line",
    "contrast",
    "kind",
    "text_shape",
    "visible_px",
    "coverage",
    "outcome",
    "oracle_full",
    "oracle_residual",
    "legible_before",
    "legible_after",
    "fail_open",
    "fail_open_legible",
    "px_before",
    "px_after",
    "px_legible_before",
    "px_legible_after",
    "fail_open_px",
    "caught",
    "wall_ms",
    "pixel_ms",
    "verify_ms",
]


def _shape(text: str) -> str:
    return re.sub(r"[0-9]", "9", re.sub(r"[a-z]", "a", re.sub(r"[A-Z]", "A", text)))


def run_case(idx: int, outroot: Path | None = None) -> list[dict]:
    from deid_core.config import DeidConfig
    from deid_core.pipeline import deidentify_file
    from deid_core.pixels import pixel_policy_for

    c = make_case(idx)
    ds, planted, orig, burned, lo, hi = build(c)
    tmp = Path(tempfile.mkdtemp(prefix=f"c{idx}_", dir=outroot or str(HERE / "work")))
    src = tmp / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    cfg = DeidConfig(key=b"k" * 16, output_dir=tmp / "out", conformance="off")
    t0 = time.perf_counter()
    out = deidentify_file(src, cfg)
    wall = (time.perf_counter() - t0) * 1000
    rows = []
    F, R, C = burned.shape[:3]
    for li, ((f, alpha), (kind, text, target)) in enumerate(zip(planted, c.texts, strict=False)):
        vis = visible_ink(alpha, orig[f], burned[f])
        cov_mask = np.zeros((R, C), bool)
        for b in out.boxes:
            if int(b["frame"]) == f:
                cov_mask[int(b["y"]) : int(b["y"]) + int(b["h"]), int(b["x"]) : int(b["x"]) + int(b["w"])] = True
        nvis = int(vis.sum())
        cov = float((vis & cov_mask).sum() / nvis) if nvis else 1.0
        outcome = "found" if cov >= 0.9 else ("partial" if cov >= 0.1 else "missed")
        vert = c.position if c.position.startswith("vertical") else None
        full = oracle_read(vis, vert) if nvis else ""
        resid = oracle_read(vis & ~cov_mask, vert) if outcome != "found" else ""
        contrast = line_contrast(alpha, burned[f])
        px_before = pixel_oracle(burned[f], alpha, vert)
        px_after = (
            pixel_oracle(fill_boxes(burned[f], out.boxes, f, c.photometric, lo, hi), alpha, vert)
            if outcome != "found"
            else ""
        )
        leg_before = token_in(full, target)
        leg_after = token_in(resid, target) if outcome != "found" else False
        written = out.status == "written"
        ys, xs = np.nonzero(alpha >= 0.5)
        gh = int((ys.max() - ys.min() + 1) if not vert else (xs.max() - xs.min() + 1)) if ys.size else 0
        rows.append(
            dict(
                idx=idx,
                background=c.background,
                rows=R,
                cols=C,
                frames=F,
                bits=c.bits if burned.ndim == 4 or True else 0,
                signed=c.signed,
                photometric=c.photometric,
                modality=c.modality,
                policy=pixel_policy_for(c.modality),
                font=c.font,
                height=c.height,
                glyph_h_px=gh,
                thickness=c.thickness,
                aa=c.aa,
                n_lines=c.n_lines,
                value=c.value,
                position=c.position,
                colour="-".join(map(str, c.colour)) if c.value == "colour" else "",
                status=out.status,
                reason=out.reason,
                n_boxes=len(out.boxes),
                line=li,
                contrast=round(contrast, 1),
                kind=kind,
                text_shape=_shape(text),
                visible_px=nvis,
                coverage=round(cov, 3),
                outcome=outcome,
                oracle_full=full,
                oracle_residual=resid,
                legible_before=leg_before,
                legible_after=leg_after,
                px_before=px_before,
                px_after=px_after,
                px_legible_before=token_in(px_before, target),
                px_legible_after=token_in(px_after, target),
                fail_open_px=bool(written and outcome != "found" and token_in(px_after, target)),
                fail_open=bool(written and outcome != "found"),
                fail_open_legible=bool(written and outcome != "found" and leg_after),
                caught=bool(out.status == "quarantined" and outcome != "found"),
                wall_ms=round(wall, 1),
                pixel_ms=out.pixel_ms,
                verify_ms=out.verify_ms,
            )
        )
    for p in sorted(tmp.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    tmp.rmdir()
    return rows


def _worker(idx: int) -> list[dict]:
    try:
        return run_case(idx)
    except Exception as exc:  # a harness failure is recorded, not hidden
        c = make_case(idx)
        return [dict(idx=idx, background=c.background, status="harness_error", reason=repr(exc)[:200])]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    start = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    (HERE / "work").mkdir(exist_ok=True)
    out_csv = HERE / (sys.argv[4] if len(sys.argv) > 4 else "results.csv")
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    t0 = time.time()
    with ctx.Pool(workers, maxtasksperchild=40) as pool, open(out_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS, extrasaction="ignore")
        w.writeheader()
        done = 0
        for rows in pool.imap(_worker, range(start, start + n), chunksize=1):
            for r in rows:
                w.writerow(r)
            fh.flush()
            done += 1
            if done % 20 == 0:
                print(f"{done}/{n} {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
