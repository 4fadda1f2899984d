"""Conformance of a written output: it reads back, its IOD's type 1 attributes are there, values are valid.

De-identification removes and rewrites many elements; a release that viewers or archives reject
is a failed release even if it leaks nothing. This module checks every output after it is
written. Non-conformance is *recorded* (provenance column ``conformance``), not quarantined — the
data is still de-identified — except when the file cannot be read back at all.

pydicom has no IOD tables, so a small table of the type 1 attributes of the common modules of the
SOP classes we meet is kept here. If ``dciodvfy`` (Debian package ``dicom3tools``) is installed,
its error lines are recorded too, with values redacted: messages name attributes, never values.
"""

from __future__ import annotations

import functools
import io
import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.config import RAISE
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pydicom.valuerep import validate_value

from deid_core.errors import DeidError
from deid_core.inventory import element


class UnreadableOutputError(DeidError):
    """A written output does not read back as DICOM: it must not be released."""

    reason = "output_unreadable"


# Type 1 attributes per module (PS3.3). 1C attributes are handled in ``_conditional``.
_PATIENT: tuple[str, ...] = ()  # Patient module: all type 2/3
_GENERAL_STUDY = ("StudyInstanceUID",)
_GENERAL_SERIES = ("Modality", "SeriesInstanceUID")
_FRAME_OF_REFERENCE = ("FrameOfReferenceUID",)
_IMAGE_PIXEL = ("SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
                "BitsStored", "HighBit", "PixelRepresentation")
_SOP_COMMON = ("SOPClassUID", "SOPInstanceUID")
_IMAGE = _PATIENT + _GENERAL_STUDY + _GENERAL_SERIES + _IMAGE_PIXEL + _SOP_COMMON
_MULTI_FRAME = ("NumberOfFrames", "FrameIncrementPointer")

#: SOP Class UID -> (name, type 1 attributes of its IOD's mandatory modules we check).
IOD_TYPE1: dict[str, tuple[str, tuple[str, ...]]] = {
    "1.2.840.10008.5.1.4.1.1.2": ("CT Image", _IMAGE + _FRAME_OF_REFERENCE + (
        "ImageType", "RescaleIntercept", "RescaleSlope")),
    "1.2.840.10008.5.1.4.1.1.4": ("MR Image", _IMAGE + _FRAME_OF_REFERENCE + (
        "ImageType", "ScanningSequence", "SequenceVariant")),
    "1.2.840.10008.5.1.4.1.1.7": ("Secondary Capture Image", _IMAGE + ("ConversionType",)),
    "1.2.840.10008.5.1.4.1.1.6.1": ("US Image", _IMAGE + ("ImageType",)),
    "1.2.840.10008.5.1.4.1.1.3.1": ("US Multi-frame Image", _IMAGE + ("ImageType", "NumberOfFrames")),
    "1.2.840.10008.5.1.4.1.1.1": ("CR Image", _IMAGE),
    "1.2.840.10008.5.1.4.1.1.1.1": ("Digital X-Ray Image", _IMAGE + ("ImageType",)),
    "1.2.840.10008.5.1.4.1.1.12.1": ("X-Ray Angiographic Image", _IMAGE + ("ImageType",)),
    "1.2.840.10008.5.1.4.1.1.7.2": ("Multi-frame Grayscale Byte SC Image", _IMAGE + _MULTI_FRAME + (
        "ConversionType",)),
    "1.2.840.10008.5.1.4.1.1.7.4": ("Multi-frame True Color SC Image", _IMAGE + _MULTI_FRAME + (
        "ConversionType",)),
    "1.2.840.10008.5.1.4.1.1.20": ("NM Image", _IMAGE + ("ImageType",)),
    "1.2.840.10008.5.1.4.1.1.128": ("PET Image", _IMAGE + _FRAME_OF_REFERENCE + ("ImageType",)),
}
#: Any other SOP class: the modules every composite IOD has.
_DEFAULT = ("Composite", _GENERAL_STUDY + _GENERAL_SERIES + _SOP_COMMON)
_MAX_ISSUES = 50
#: Float Pixel Data, Double Float Pixel Data, Pixel Data: checked by decoding frames, not as values.
PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
#: Values at least this long are left unread by ``read_back(..., defer_pixels=True)`` until accessed.
DEFER_SIZE = 1 << 20
_DCIODVFY_TIMEOUT_S = 60


@dataclass
class ConformanceResult:
    """Issues found in one output, as short stable strings naming attributes (never values)."""

    iod: str = ""
    issues: list[str] = field(default_factory=list)
    dciodvfy: list[str] | None = None  # None: dciodvfy not run (see dciodvfy_mode)
    #: "run", "not_installed", "not_sampled" (conformance "sample": another file of the series in
    #: this batch was checked) or "off"; empty for results that never considered dciodvfy.
    dciodvfy_mode: str = ""

    @property
    def ok(self) -> bool:
        return not self.issues and not self.dciodvfy

    def to_json(self) -> str:
        """The provenance ``conformance`` column (canonical JSON)."""
        data: dict[str, object] = {"iod": self.iod, "issues": self.issues[:_MAX_ISSUES], "ok": self.ok}
        if self.dciodvfy is not None:
            data["dciodvfy"] = self.dciodvfy[:_MAX_ISSUES]
        if self.dciodvfy_mode:
            data["dciodvfy_mode"] = self.dciodvfy_mode
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _present(ds: Dataset, keyword: str) -> bool:
    if keyword not in ds:
        return False
    value = ds[keyword].value
    return value is not None and value != "" and value != b"" and not (
        isinstance(value, list | MultiValue) and len(value) == 0)


def _conditional(ds: Dataset) -> list[str]:
    out = []
    if "Rows" in ds and not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        out.append("type1c_missing:PixelData")
    spp = ds.get("SamplesPerPixel")
    if spp is not None and isinstance(spp, int) and spp > 1 and not _present(ds, "PlanarConfiguration"):
        out.append("type1c_missing:PlanarConfiguration")
    if str(ds.get("PhotometricInterpretation", "")).startswith("PALETTE") and not _present(
            ds, "RedPaletteColorLookupTableDescriptor"):
        out.append("type1c_missing:RedPaletteColorLookupTableDescriptor")
    return out


def _tag(elem_tag: int) -> str:
    return f"({elem_tag >> 16:04X},{elem_tag & 0xFFFF:04X})"


_UNCHECKED_VRS = frozenset({"UN", "OB", "OW", "OF", "OD", "OL", "OV"})
#: What ``validate_value`` accepts for binary numbers without a doubt (its type and range checks):
#: such values skip the call; anything else is validated by pydicom.
_INT_RANGE = {"US": (0, 0xFFFF), "SS": (-0x8000, 0x7FFF), "UL": (0, 0xFFFFFFFF), "SL": (-0x80000000, 0x7FFFFFFF),
              "UV": (0, 0xFFFFFFFFFFFFFFFF), "SV": (-0x8000000000000000, 0x7FFFFFFFFFFFFFFF)}
_FLOAT_VRS = frozenset({"FL", "FD"})


@functools.lru_cache(maxsize=16384)
def _valid_text(vr: str, text: str) -> bool:
    """Whether pydicom accepts a plain string for ``vr``; a pure function of the two, so cached (the same
    codes, numbers and words recur in every file)."""
    try:
        validate_value(vr, text, RAISE)
    except Exception:
        return False
    return True


def value_issues(ds: Dataset) -> list[str]:
    """Elements (any depth) whose value is invalid for its VR (characters or length)."""
    out: list[str] = []

    def visit(d: Dataset, prefix: str) -> None:
        for tag in sorted(d.keys()):
            t = int(tag)
            if t in PIXEL_TAGS:  # bulk pixel values (possibly deferred): never loaded for this
                continue
            elem = element(d, tag)
            vr = elem.VR
            if vr == "SQ":
                where = prefix + _tag(t)
                for i, item in enumerate(elem.value or []):
                    visit(item, f"{where}[{i}]>")
                continue
            if vr in _UNCHECKED_VRS:
                continue
            try:
                value = elem.value
                vals = value if isinstance(value, list | MultiValue) else [value]
                rng = _INT_RANGE.get(vr)
                for v in vals:
                    if v is None or v == "":
                        continue
                    if rng is not None and type(v) is int and rng[0] <= v <= rng[1]:
                        continue
                    if vr in _FLOAT_VRS and type(v) is float:
                        continue
                    # numbers are checked as their stored string (DSfloat/IS keep the original)
                    checked = str(v) if vr in ("DS", "IS") else v
                    if type(checked) is str:
                        if not _valid_text(vr, checked):
                            raise ValueError("invalid")
                    else:
                        validate_value(vr, checked, RAISE)
            except Exception:  # the message quotes the value: record the element and VR only
                out.append(f"invalid_value:{prefix + _tag(t)}:{vr}")

    visit(ds, "")
    return out


def check_dataset(ds: Dataset) -> ConformanceResult:
    """Type 1 presence (per IOD table) and VR/length validity of a read-back dataset."""
    sop = str(ds.get("SOPClassUID", "") or "")
    name, required = IOD_TYPE1.get(sop, _DEFAULT)
    res = ConformanceResult(iod=name)
    res.issues += [f"type1_missing:{kw}" for kw in required if not _present(ds, kw)]
    if name != "Composite" or "Rows" in ds:
        res.issues += _conditional(ds)
    res.issues += value_issues(ds)
    return res


_ANGLE = re.compile(r"<([^<>]*)>")
_NAMED = re.compile(r"(attribute|Element|Module|Macro|IOD|Class)\s*=?\s*$", re.IGNORECASE)


def _redact(line: str) -> str:
    """Keep attribute/module names in <...>, replace anything else in <...> (values) by <?>."""
    out, pos = [], 0
    for m in _ANGLE.finditer(line):
        before = line[pos:m.start()]
        out.append(before)
        keep = _NAMED.search(line[:m.start()]) is not None
        out.append(m.group(0) if keep else "<?>")
        pos = m.end()
    out.append(line[pos:])
    text = "".join(out)
    return re.sub(r"(value\s*=\s*)\S+", r"\1?", text, flags=re.IGNORECASE)[:300]


def dciodvfy_errors(path: Path) -> list[str] | None:
    """``dciodvfy`` error lines for ``path`` (values redacted), or None when it is not installed."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, str(path)], capture_output=True, text=True, errors="replace",
                              timeout=_DCIODVFY_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"dciodvfy did not run ({type(exc).__name__})"]
    lines = (proc.stdout + "\n" + proc.stderr).splitlines()
    return sorted({_redact(ln.strip()) for ln in lines if ln.strip().startswith("Error")})


def read_back(path: Path | bytes, *, defer_pixels: bool = False) -> Dataset:
    """Read a written output (a path, or the exact bytes about to be written); UnreadableOutputError
    when it cannot be.

    By default everything is loaded, pixels included. ``defer_pixels`` leaves values of 1 MiB or more
    unread until accessed (a whole-file copy of a large multi-frame image is not needed to search its
    elements; its frames are decoded one at a time from the same source): the pixel element is then
    checked to lie entirely within the file, so a truncated output still does not read back."""
    try:
        src = io.BytesIO(path) if isinstance(path, bytes) else path
        size = len(path) if isinstance(path, bytes) else Path(path).stat().st_size
        ds = pydicom.dcmread(src, defer_size=DEFER_SIZE if defer_pixels else None)
        if defer_pixels and ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            # offsets of a deflated file are in its inflated stream: no deferred reads from the source
            defer_pixels = False
            ds = pydicom.dcmread(io.BytesIO(path) if isinstance(path, bytes) else path)
        for tag in PIXEL_TAGS & set(ds.keys()):
            raw = ds.get_item(tag, keep_deferred=True)
            if defer_pixels and isinstance(raw, RawDataElement) and raw.value is None \
                    and raw.length != 0xFFFFFFFF:
                if raw.value_tell is None or raw.value_tell + raw.length > size:
                    raise EOFError("pixel data runs past the end of the file")
            elif not defer_pixels:
                ds[tag].value  # noqa: B018  force the value to load
        return ds
    except Exception as exc:
        raise UnreadableOutputError(f"written output does not read back ({type(exc).__name__})") from None


def check_file(path: Path, ds: Dataset | None = None, *, use_dciodvfy: bool = True) -> ConformanceResult:
    """Conformance of the written file at ``path`` (``ds`` is its read-back dataset, if already read)."""
    res = check_dataset(ds if ds is not None else read_back(path))
    if use_dciodvfy:
        add_dciodvfy(res, path)
    return res


def add_dciodvfy(res: ConformanceResult, path: Path) -> ConformanceResult:
    """Run dciodvfy on the file at ``path`` and record its errors (or that it is not installed) in ``res``."""
    res.dciodvfy = dciodvfy_errors(path)
    res.dciodvfy_mode = "not_installed" if res.dciodvfy is None else "run"
    return res
