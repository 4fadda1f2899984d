"""Inventory: find DICOM files in a tree, read headers only, note what each file needs.

Records carry no identifier except the input path: patient/study/series grouping keys are keyed
hashes, so batches can be formed (a series stays in one batch) without moving PHI around.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator, MutableSequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pydicom
from pydicom import config
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.hooks import hooks as _hooks
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pydicom.valuerep import AMBIGUOUS_VR, IS, DSfloat

from deid_core.errors import BadInputError


def quiet_pydicom() -> None:
    """Keep pydicom from printing values: its validation warnings quote them in full ("Invalid value for VR
    UI: '1.2.840.113619.2.055.3...'": an original UID on stderr, an audit found), and they reach logs,
    Dask workers' stderr and Prefect. Values are checked by deidflow's own conformance step, which names
    elements, never values. Its pixel decoders log every plugin that fails to decode a frame at ERROR, with
    a traceback (about 60 lines on stderr for three corrupt JPEG files of pydicom's own test set); the file's
    ``pixel_error`` reason in provenance says it once. Called when this module is imported: every reading
    path goes through it."""
    import logging
    import warnings

    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)


quiet_pydicom()

#: Modalities whose images commonly carry burned-in annotation (PS3.3 BurnedInAnnotation notes).
BURNED_IN_MODALITIES = frozenset({"US", "SC", "OT", "XC", "ES", "GM", "SM", "IVUS", "DOC", "RF", "XA", "CR",
                                  "DX", "MG", "IO", "PX"})
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_CHUNK = 1 << 20
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class InventoryRecord:
    """What the inventory learnt about one input, without any identifying value but the path."""

    path: str
    size: int
    sha256: str
    status: str  # "ok" | "bad" | "skip"
    reason: str = ""
    error: str = ""
    modality: str = ""
    sop_class_uid: str = ""
    transfer_syntax: str = ""
    frames: int = 0
    has_pixels: bool = False
    compressed: bool = False
    burned_in_possible: bool = False
    series_key: str = ""  # keyed hash of (PatientID, StudyInstanceUID, SeriesInstanceUID)
    sop_key: str = ""  # keyed hash of SOPInstanceUID: finds two inputs that would write one output
    patient_key: str = ""  # keyed hash of PatientID (``patient_id_key``): a map's new id must not be one
    pool_key: str = ""  # keyed hash of the patient whose pooled identifiers the file is checked against

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def find_files(root: str | Path) -> Iterator[Path]:
    """Every file under ``root`` in a stable (sorted) order, hidden ones and those under symlinked
    directories included: every input must end written, quarantined or skipped with its reason, and an
    audit found 10 of 22 files of a tree silently left out. A directory reached twice (a symlink loop, two
    links to one folder) is walked once, so loops cannot recurse.

    A file symlink is followed (its target is read, never modified). A broken symlink is yielded too,
    so that it ends in provenance as ``unreadable`` instead of vanishing from the run."""
    root = Path(root)
    if root.is_file():
        yield root
        return
    walked: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in walked:
            dirnames[:] = []
            continue
        walked.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_file() or (p.is_symlink() and not p.exists()):  # broken link: reported unreadable
                yield p


def read_header(path: str | Path) -> pydicom.Dataset:
    """Header-only read; raises BadInputError (with a reason, no values) for non-DICOM input."""
    return _read(path, stop_before_pixels=True)


def read_dataset(path: str | Path) -> pydicom.Dataset:
    """Full read for de-identification, with the same acceptance as the inventory: files without a
    preamble are read (file meta completed), truncated or undecodable elements raise BadInputError
    naming the element, so a damaged file is quarantined with a clear reason, never half-processed."""
    ds = _read(path, stop_before_pixels=False)
    _check_decodable(ds, "")
    return ds


def _read(path: str | Path, stop_before_pixels: bool) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        ds = None
    except Exception as exc:  # truncated header, bad lengths...
        raise BadInputError(f"unreadable DICOM header ({type(exc).__name__})") from None
    if ds is None:
        # No preamble/"DICM": accept only if a forced read finds a plausible dataset.
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        except Exception as exc:
            raise BadInputError(f"not a DICOM file ({type(exc).__name__})") from None
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            raise BadInputError("not a DICOM file (no preamble and no SOP identity)")
        _complete_meta(ds)
    _check_lengths(ds)
    return ds


def _complete_meta(ds: pydicom.Dataset) -> None:
    # A bare dataset (no file meta) is written back as a conformant file in its own encoding.
    meta = ds.file_meta
    if "TransferSyntaxUID" not in meta:
        implicit = getattr(ds, "is_implicit_VR", None)
        if implicit is None:
            implicit = ds.original_encoding[0]
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _check_lengths(ds: pydicom.Dataset) -> None:
    # pydicom reads a value cut short by the end of the file without complaint: the element then
    # swallows everything after it. A declared length longer than the bytes read means truncation.
    for tag, elem in ds._dict.items():
        if isinstance(elem, RawDataElement) and elem.length != _UNDEFINED and elem.value is not None \
                and len(elem.value) < elem.length:
            raise BadInputError(f"truncated file: element ({tag.group:04X},{tag.element:04X}) "
                                "is shorter than its declared length")


#: Elements ``element`` leaves to ``Dataset.__getitem__`` (pixel values reset pydicom's pixel cache;
#: the character set decides how the other values decode).
_DELEGATED = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010, 0x00080005})
#: Converted values of raw elements, by everything their conversion depends on (see ``_memo_key``): the
#: same encoded element recurs in the output read back for verification (every element the scrub left
#: as it was) and across the files of a series (private blocks, constants). Only immutable values (and
#: lists of numbers, handed out as copies) are kept; a hit gives what a conversion would give, so the
#: memo's content never changes a result. Bounded: emptied when full.
_MEMO: dict[tuple[object, ...], tuple[str, object]] = {}
_MEMO_MAX_ENTRIES = 16384
_MEMO_MAX_BYTES = 256
_MEMO_SCALARS = frozenset({str, int, float, bytes, UID, DSfloat, IS})  # not PersonName: no reuse, names
_DEFAULT_VR_HOOK, _DEFAULT_VALUE_HOOK = _hooks.raw_element_vr, _hooks.raw_element_value


def _memo_key(raw: RawDataElement, charset: str | MutableSequence[str]) -> tuple[object, ...] | None:
    """What the conversion of a raw element depends on: the element's own fields (an implicit VR is the
    public dictionary's for the tag), the character set and pydicom's conversion settings; None for
    conversions that also look at the dataset (implicit VR private elements, whose VR comes from their
    creator; UN; ambiguous VRs), empty or long values, and non-default pydicom hooks."""
    vr, value = raw.VR, raw.value
    if (vr is None and raw.tag >> 16 & 1) or vr == "UN" or vr in AMBIGUOUS_VR or not value \
            or len(value) > _MEMO_MAX_BYTES \
            or _hooks.raw_element_vr is not _DEFAULT_VR_HOOK or _hooks.raw_element_value is not _DEFAULT_VALUE_HOOK \
            or _hooks.raw_element_kwargs or config.data_element_callback is not None:
        return None
    return (int(raw.tag), vr, raw.length, bytes(value), raw.is_little_endian, raw.is_implicit_VR,
            charset if isinstance(charset, str) else tuple(charset), config.settings.reading_validation_mode,
            config.datetime_conversion, config.use_DS_decimal, config.use_DS_numpy, config.use_IS_numpy,
            config.convert_wrong_length_to_UN)


def _memo_value(value: object) -> object | None:
    """``value`` as the memo may keep it (immutable scalars; a list of numbers as a copy), else None."""
    if type(value) in _MEMO_SCALARS:
        return value
    if type(value) is list and all(type(v) in (int, float) for v in value):
        return list(value)
    return None


def _undecodable_utf8(elem: DataElement, raw: RawDataElement, charset: object) -> bool:
    """Whether pydicom decoded a text value under UTF-8 (ISO_IR 192) with replacement characters that the
    bytes do not hold themselves (bytes that are no UTF-8)."""
    value = elem.value
    if not isinstance(value, str | list | MultiValue) or not isinstance(raw.value, bytes):
        return False
    if charset not in (["UTF8"], "UTF8", ["utf_8"], "utf_8"):
        return False
    text = value if isinstance(value, str) else "\\".join(str(v) for v in value)
    return "\ufffd" in text and b"\xef\xbf\xbd" not in raw.value


def element(ds: Dataset, tag: BaseTag) -> DataElement:
    """``ds[tag]``, converted exactly as pydicom converts it, without the per-access overhead.

    Why: every element of every file is converted twice (the input, and the output read back for
    verification); pydicom's ``__getitem__`` re-enters itself and ``__setitem__`` several times per raw
    element, about as costly as the conversion itself. Here a plain raw element is converted with the
    same function, encoding and dataset (or its value taken from ``_MEMO``), and stored as ``__setitem__``
    would (private creator attached); anything unusual (deferred, sequence, ambiguous VR, pixel data, the
    character set itself) is left to ``ds[tag]``. A failed conversion raises what ``ds[tag]`` raises and
    leaves the raw element in place."""
    raw = ds._dict[tag]
    if not isinstance(raw, RawDataElement):
        return raw
    if (raw.value is None and raw.length != 0) or raw.VR == "SQ" or tag in _DELEGATED:
        return ds[tag]
    charset = ds.original_character_set or ds._character_set
    key = _memo_key(raw, charset)
    hit = _MEMO.get(key) if key is not None else None
    if hit is not None:
        vr, value = hit
        # what convert_raw_data_element builds from the converted VR and value
        elem = DataElement(raw.tag, vr, list(value) if type(value) is list else value,  # type: ignore[arg-type]
                           raw.value_tell, raw.length == 0xFFFFFFFF, already_converted=True)
    else:
        elem = convert_raw_data_element(raw, encoding=charset, ds=ds)
        if _undecodable_utf8(elem, raw, charset):
            # bytes that are no UTF-8 under ISO_IR 192: pydicom put U+FFFD for each bad byte, and a Latin-1
            # name in a description ("QUENTINV\ufffdLE") matched no term and was written all but whole (an
            # audit). Legacy systems write Latin-1 there: it is read so, and cleaned like any other text.
            elem = convert_raw_data_element(raw, encoding=["latin_1"], ds=ds)
        if elem.VR == "SQ" or elem.VR in AMBIGUOUS_VR:
            return ds[tag]  # pixel representation propagation / VR correction: pydicom's own path
        if key is not None:
            kept = _memo_value(elem.value)
            if kept is not None:
                if len(_MEMO) >= _MEMO_MAX_ENTRIES:
                    _MEMO.clear()
                _MEMO[key] = (elem.VR, kept)
    if tag & 0x10000:  # private: __setitem__ attaches the value of the block's creator, if any
        number = tag & 0xFFFF
        if number != number >> 8:  # the tag is not its own creator tag
            creator = ds._dict.get(BaseTag((tag & 0xFFFF0000) | (number >> 8)))
            if creator is not None:
                elem.private_creator = (ds[creator.tag] if isinstance(creator, RawDataElement) else creator).value
    ds._dict[tag] = elem
    return elem


def _check_decodable(ds: pydicom.Dataset, where: str) -> None:
    for tag in list(ds.keys()):
        try:
            elem = element(ds, tag)
        except Exception as exc:
            raise BadInputError(f"element {where}({tag.group:04X},{tag.element:04X}) cannot be decoded "
                                f"({type(exc).__name__})") from None
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or []):
                _check_decodable(item, f"{where}({tag.group:04X},{tag.element:04X})[{i}]>")


def dataset_encodings(ds: pydicom.Dataset) -> list[str]:
    """The Python encodings of ``ds``'s character set (its own or its parent's), [] when unknown."""
    try:
        found = ds._character_set  # a list, or the one default encoding as a string
    except Exception:  # noqa: BLE001 - an unknown character set: the fixed readings of bytes remain
        return []
    return [found] if isinstance(found, str) else list(found or [])


def inspect_file(path: str | Path, key: bytes) -> InventoryRecord:
    """Inventory one file: hash, header-only read, classification."""
    return inspect_header(path, key)[0]


def inspect_header(path: str | Path, key: bytes) -> tuple[InventoryRecord, pydicom.Dataset | None]:
    """``inspect_file``, and the header it read (None when there was none to read): the term pool
    (``termpool.inspect_chunk``) captures its identifiers without reading it twice."""
    path = Path(path)
    try:
        size = path.stat().st_size
        digest = sha256_file(path)
    except OSError as exc:
        return InventoryRecord(str(path), 0, "", "bad", "unreadable", f"cannot read file ({exc.strerror})"), None
    if size == 0:
        return InventoryRecord(str(path), 0, digest, "bad", "bad_input", "zero-length file"), None
    try:
        ds = read_header(path)
    except BadInputError as exc:
        return InventoryRecord(str(path), size, digest, "bad", exc.reason, str(exc)), None
    meta = getattr(ds, "file_meta", None)
    ts = str(getattr(meta, "TransferSyntaxUID", "") or "") if meta is not None else ""
    sop_class = str(ds.get("SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", "") or "")
    if sop_class == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in ds:
        return InventoryRecord(str(path), size, digest, "skip", "dicomdir",
                               "DICOMDIR (a media index, not an image): not copied"), None
    if "SOPInstanceUID" not in ds:
        return InventoryRecord(str(path), size, digest, "bad", "bad_input", "no SOPInstanceUID"), None
    try:
        return _classify(path, size, digest, ds, ts, sop_class, key), ds
    except Exception as exc:  # noqa: BLE001 - one malformed header must never stop a run's inventory
        # e.g. NumberOfFrames "1A" (pydicom's badVR.dcm): the value cannot be interpreted; the message
        # may quote the value, so only the exception class is kept
        return InventoryRecord(str(path), size, digest, "bad", "bad_input",
                               f"header cannot be interpreted ({type(exc).__name__})"), None


def _classify(path: Path, size: int, digest: str, ds: pydicom.Dataset, ts: str, sop_class: str,
              key: bytes) -> InventoryRecord:
    """What a readable header says the file needs (pixels, frames, compression, burned-in text risk)."""
    modality = str(ds.get("Modality", "") or "")
    has_pixels = any(t in ds for t in (0x7FE00010, 0x7FE00008, 0x7FE00009)) or _pixel_tag_follows(path, ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1) if has_pixels else 0
    compressed = bool(ts) and UID(ts).is_compressed
    burned = (modality in BURNED_IN_MODALITIES or str(ds.get("BurnedInAnnotation", "")).upper() == "YES"
              or "SECONDARY" in [str(v).upper() for v in (ds.get("ImageType") or [])])
    series_key = hmac.new(key, "\\".join(
        str(ds.get(k, "")) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")).encode(),
        hashlib.sha256).hexdigest()[:16]
    sop_key = hmac.new(key, str(ds.SOPInstanceUID).encode(), hashlib.sha256).hexdigest()[:24]
    return InventoryRecord(str(path), size, digest, "ok", "", "", modality, sop_class, ts, frames, has_pixels,
                           compressed, burned and has_pixels, series_key, sop_key,
                           patient_id_key(key, str(ds.get("PatientID", "") or "")))


def patient_id_key(key: bytes, patient_id: str) -> str:
    """Keyed hash of a PatientID (padding ignored; "" for none): lets the flow compare a patient map's new ids
    with the cohort's original ids without either leaving the workers."""
    pid = patient_id.strip().rstrip("\0").strip()
    return hmac.new(key, b"patient-id:" + pid.encode(), hashlib.sha256).hexdigest()[:24] if pid else ""


def _pixel_tag_follows(path: Path, ds: pydicom.Dataset) -> bool:
    # stop_before_pixels drops PixelData; image attributes tell us pixels were there.
    return "Rows" in ds and "Columns" in ds and ("BitsAllocated" in ds or "SamplesPerPixel" in ds)


def mark_duplicates(records: list[InventoryRecord]) -> list[InventoryRecord]:
    """Inputs sharing a SOPInstanceUID would write the same output (the new UID derives from the old):
    the first by path is kept; a byte-identical copy is skipped (``duplicate_input``), a different
    object is quarantined (``duplicate_sop_instance``) instead of silently overwriting the first.
    Deterministic: the decision depends on paths and content only, never on processing order."""
    first: dict[str, InventoryRecord] = {}
    out: list[InventoryRecord] = []
    for rec in sorted(records, key=lambda r: r.path):
        if rec.status != "ok" or not rec.sop_key:
            out.append(rec)
            continue
        kept = first.setdefault(rec.sop_key, rec)
        if kept is rec:
            out.append(rec)
        elif kept.sha256 == rec.sha256:
            out.append(replace(rec, status="skip", reason="duplicate_input",
                               error="identical to another input of this run (same content)"))
        else:
            out.append(replace(rec, status="bad", reason="duplicate_sop_instance",
                               error="another input of this run has the same SOPInstanceUID"))
    return out


#: Bounds of the automatic batch size (files per task; see ``auto_batch_size``).
AUTO_BATCH_MIN, AUTO_BATCH_MAX = 32, 256
#: Batches per worker the automatic size aims at.
AUTO_BATCHES_PER_WORKER = 4


def auto_batch_size(files: int, workers: int) -> int:
    """Files per batch when the user sets none: about AUTO_BATCHES_PER_WORKER batches per worker, within
    AUTO_BATCH_MIN..AUTO_BATCH_MAX.

    Why: each batch is one Prefect task, and a task costs its worker ~0.1 s of its own (settings, client,
    state) besides the files; on 2000 text-free CT files and 2 workers a whole run took 38.4 s with
    batches of 32, 35.3 s with 64 and 33.2-33.5 s with 128-256, and its batch phase 21.8-22.2 s in 20
    batches against 21.0 s in 10. Too few batches leave a worker idle at the end while the other
    finishes, and make a retry redo more files: 4 per worker keeps that tail to a quarter of a share."""
    per = -(-max(0, files) // max(1, workers * AUTO_BATCHES_PER_WORKER))
    return max(AUTO_BATCH_MIN, min(AUTO_BATCH_MAX, per))


def batch_records(records: list[InventoryRecord], batch_size: int) -> list[list[InventoryRecord]]:
    """Group records into batches of at most ``batch_size``, keeping a series together when it fits
    (multi-frame and series-level decisions stay local); order is deterministic. Duplicate SOP
    instances are marked first (``mark_duplicates``): they travel in their batch as refused records."""
    by_series: dict[str, list[InventoryRecord]] = {}
    for rec in mark_duplicates(records):
        by_series.setdefault(rec.series_key, []).append(rec)
    batches: list[list[InventoryRecord]] = []
    current: list[InventoryRecord] = []
    for key in sorted(by_series):
        series = sorted(by_series[key], key=lambda r: r.path)
        for start in range(0, len(series), batch_size):
            chunk = series[start:start + batch_size]
            if current and len(current) + len(chunk) > batch_size:
                batches.append(current)
                current = []
            current.extend(chunk)
    if current:
        batches.append(current)
    return batches
