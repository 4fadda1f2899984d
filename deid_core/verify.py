"""Leak verification: search a de-identified output for the identifiers captured at the start.

Two checks, both run on the output *as written* — its exact encoded bytes parsed back as a reader
would, before they reach the disk (``verify_encoded``), or a file already on disk
(``verify_written``) — before it counts as written:

* **Elements** — every element at every depth (top level, sequences, private blocks, file meta,
  free text) is searched with the same flexible matcher used for cleaning (case, order and
  separator variants).
* **Pixels** — every frame that may carry text (the stroke pre-screen finds candidate lines) is
  OCR'd again and its words matched exactly and tolerantly (OCR misreads).

Dates: the output's dates are shifted, so an unrelated shifted date may coincide with an original
one. An original date is therefore a leak only when it is the patient's **birth date** (anywhere)
or when it appears in **free text, private/unknown bytes or pixels** (where nothing shifts dates).
In DA/DT/TM elements an original non-birth date is not reported.

Only the leak's class and location (tag path or frame) are reported, never the value.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from deid_core.conformance import PIXEL_TAGS, ConformanceResult
from deid_core.freetext import is_clinical_word
from deid_core.inventory import dataset_encodings, element
from deid_core.rules import Action, RuleTable
from deid_core.terms import DATE, NAME, PhiTerms, Span, TermMatcher, date_variants, significant

_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT",
                       "UN", "OB"})
#: VRs whose values are shifted/coded dates and times, where only the birth date counts as a leak.
_DATE_VRS = frozenset({"DA", "DT", "TM"})
# Top-level elements whose values are ours (the markers the anonymizer writes): "Basic Application
# Confidentiality Profile" is no patient's name, even the name of a patient registered as "PROFILE^BASIC"
# or "ANON^PATIENT". Only at the top level: a nested copy came with the input and is searched.
_SKIP = frozenset({0x00120063, 0x00120062, 0x00280301, 0x00120064})
#: Values that are codes of the standard, never text about anyone: SpecificCharacterSet names how every
#: other value is encoded. An ID equal to a number in it (StudyID "100" of "ISO_IR 100") once had it
#: rewritten to "ISO_IR X", and pydicom then wrote every non-ASCII value of the file as "?".
CODED_NOT_TEXT = frozenset({0x00080005})
#: Device identity, retained by the profile (Retain Device Identity): a maker's or model's name may
#: coincide with an institution's ("TOSHIBA" / "TOSHIBA_MEC") without being a patient identifier.
#: (Not ProtocolName: a description to clean, where a physician's single name word was forgiven.)
_DEVICE = frozenset({0x00080070, 0x00081090, 0x00181020, 0x00181000, 0x00081010})
_DEVICE_TOLERATED = frozenset({"institution", "other"})
BIRTH_DATE = "birth_date"
#: OCR confidence below which a word is noise (speckle, masked-box edges) for tolerant matching;
#: exact matches count at any confidence.
FUZZY_MIN_CONF = 50.0
#: Exact OCR matches at least this long count at any confidence.
EXACT_ANY_CONF_LEN = 6


@dataclass(frozen=True)
class Leak:
    """One identifier found in an output: its kind and where (tag path or frame), never the text."""

    kind: str
    element: str

    def describe(self) -> str:
        return f"{self.kind} in {self.element}"


#: A maximal run of digits and dots between digits, not preceded by a digit or a dot: exactly the strings an
#: original UID must equal to stand alone (``LeakTerms.has_original_uid``).
_DOTTED_NUMBER = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+)*")


@dataclass
class LeakTerms:
    """What verification searches for: the file's captured terms plus its birth date variants."""

    terms: PhiTerms
    birth_date: str = ""
    #: Original UIDs the anonymizer remapped in this file: none may stand anywhere in the output (in a
    #: URL, a kept private element, free text). Set by the pipeline after the scrub.
    uids: frozenset[str] = frozenset()
    #: Tags retained by Retain Device Identity / Retain Patient Characteristics (``retained_tags``).
    device_tags: frozenset[int] = frozenset()
    trait_tags: frozenset[int] = frozenset()
    matcher: TermMatcher = field(init=False)
    birth: TermMatcher = field(init=False)

    def has_original_uid(self, text: str) -> bool:
        """Whether an original UID stands in ``text``, not as part of a longer UID (a new ``2.25.`` UID may start
        with the digits of an original one). Every maximal dotted number is looked up in the set: one fixed
        pattern instead of an alternation of this file's UIDs compiled per file."""
        return bool(self.uids) and any(m.group(0) in self.uids for m in _DOTTED_NUMBER.finditer(text))

    def __post_init__(self) -> None:
        self.matcher = TermMatcher(self.terms)
        bd = PhiTerms()
        for v in date_variants(self.birth_date) if self.birth_date.strip() else []:
            bd.add(v, BIRTH_DATE)
        self.birth = TermMatcher(bd)

    @classmethod
    def capture(cls, ds: Dataset, terms: PhiTerms) -> LeakTerms:
        """Terms of an *original* dataset (call before it is scrubbed)."""
        return cls(terms, str(ds.get("PatientBirthDate", "") or "").strip())


#: Raw values up to this size are searched in every reading of their bytes (``byte_texts``). The scrub
#: already checked every kept private value whatever its size; this bounds the cost of the backstop for
#: bulk data (a 4 KiB bound let a 5 KiB private blob holding a name pass unsearched).
MAX_SEARCHED_BYTES = 1 << 20


#: Runs of text inside a large binary value: 3+ printable Latin-1 bytes, or 3+ UTF-16 characters of them.
_TEXT_RUNS = re.compile(rb"[\x20-\x7e\xa0-\xff]{3,}|(?:[\x20-\x7e\xa0-\xff]\x00){3,}|(?:\x00[\x20-\x7e\xa0-\xff]){3,}")


def _text_runs(value: bytes) -> bytes:
    """The runs of text in a value over MAX_SEARCHED_BYTES (as ``strings`` finds them), newline-separated:
    such values were not searched at all, and an ICC profile of 1 MiB + a few bytes was written with the
    patient's name in its description (an audit). Every reading of the runs is then searched."""
    return b"\n".join(_TEXT_RUNS.findall(value))


def _texts(value: object, encodings: Sequence[str] = ()) -> list[str]:
    if isinstance(value, bytes):
        from deid_core.anonymizer import byte_texts

        return byte_texts(_text_runs(value) if len(value) > MAX_SEARCHED_BYTES else value, encodings)
    if isinstance(value, list | MultiValue):
        texts = [str(v) for v in value]
    else:
        texts = [str(value)] if value is not None else []
    if all(t.isascii() for t in texts):  # most values: nothing to read otherwise (this runs per element)
        return texts
    from deid_core.anonymizer import repaired_texts  # (anonymizer imports this module)

    # UTF-8 under a single-byte character set, native encodings read one byte per character: their readings
    return texts + [r for t in texts for r in repaired_texts(t, encodings)]


def _private_number_texts(value: object, vr: str, encodings: Sequence[str] = ()) -> list[str]:
    from deid_core.anonymizer import UNPACKABLE, value_texts

    if isinstance(value, bytes) and len(value) > MAX_SEARCHED_BYTES:
        value = _text_runs(value)
    return [t for t in value_texts(value, vr, encodings) if t != UNPACKABLE]


def find_leaks(ds: Dataset, matcher: TermMatcher | LeakTerms, *, include_dates: bool = False) -> list[Leak]:
    """Leaks of the captured terms in ``ds`` and its file meta (at most one per element).

    With a bare ``TermMatcher`` original dates are skipped unless ``include_dates``; with
    ``LeakTerms`` the documented date rule applies (birth date anywhere, other dates in free text).
    """
    lt = matcher if isinstance(matcher, LeakTerms) else None
    m = lt.matcher if lt else matcher
    assert isinstance(m, TermMatcher)
    leaks: list[Leak] = []
    # Most texts hold no term at all: one search each (``TermMatcher.contains``: the terms' regex on the
    # accent-folded text, glued IDs) rules them out before the span-by-span pass.
    birth = lt.birth._regex if lt is not None else None
    uid_in = lt.has_original_uid if lt is not None and lt.uids else None
    device = lt.device_tags if lt is not None else frozenset()
    traits = lt.trait_tags if lt is not None else frozenset()

    def visit(d: Dataset, prefix: str) -> None:
        for tag in sorted(d.keys()):
            t = int(tag)
            if t in PIXEL_TAGS:  # pixel values are not text (OCR'd separately); never loaded here
                continue
            if (t in _SKIP and not prefix) or t in CODED_NOT_TEXT:
                continue
            elem = element(d, tag)
            vr = elem.VR
            if vr == "SQ":
                where = f"{prefix}({t >> 16:04X},{t & 0xFFFF:04X})"
                for i, item in enumerate(elem.value or []):
                    visit(item, f"{where}[{i}]>")
                continue
            # Private numbers are searched too, as the bytes they are written as: a kept private
            # element can hold text that reads back as DS or SS (fuzz find).
            private_number = (t >> 16) & 1 and vr not in _TEXT_VRS
            if vr == "UI":  # a UID: only an original one (``uids``) is a leak here
                if uid_in is not None and any(uid_in(x) for x in _texts(elem.value)):
                    leaks.append(Leak("uid", f"{prefix}({t >> 16:04X},{t & 0xFFFF:04X})"))
                continue
            if vr not in _TEXT_VRS and not private_number:
                continue
            try:
                raw = isinstance(elem.value, bytes)
                enc = dataset_encodings(d) if raw else ()
                texts = _private_number_texts(elem.value, vr, enc) if private_number else _texts(elem.value, enc)
            except Exception:  # an undecodable value cannot be searched: report it, fail closed
                leaks.append(Leak("undecodable", f"{prefix}({t >> 16:04X},{t & 0xFFFF:04X})"))
                continue
            if uid_in is not None and any(uid_in(x) for x in texts):
                leaks.append(Leak("uid", f"{prefix}({t >> 16:04X},{t & 0xFFFF:04X})"))
                continue
            if len(texts) > 1:  # one search over the texts joined rules them all out (a match in any one
                joined = "\n".join(texts)  # text is a match here: "\n" is not alphanumeric)
                if not ((birth is not None and birth.search(joined)) or m.contains(joined)):
                    continue
            dates_count = include_dates or (lt is not None and vr not in _DATE_VRS)
            for text in texts:
                kind = None
                if birth is not None and birth.search(text):
                    kind = BIRTH_DATE
                elif m.contains(text):
                    for span in m.find(text):
                        if span_is_leak(t, vr, text, span, device, traits, dates_count):
                            kind = span.kind
                            break
                if kind:
                    leaks.append(Leak(kind, f"{prefix}({t >> 16:04X},{t & 0xFFFF:04X})"))
                    break

    visit(ds, "")
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        visit(meta, "meta:")
    return leaks


def span_is_leak(tag: int, vr: str, text: str, span: Span, device: frozenset[int], traits: frozenset[int],
                 dates_count: bool = True) -> bool:
    """Whether a term matched in an element's value is an identifier left in the output. The anonymizer
    removes exactly these from the values it keeps (``Anonymizer._own_identifiers``), so what it writes
    passes this test and what it leaves is a coincidence this test forgives too."""
    if span.kind == DATE and not dates_count:
        return False
    if (tag in _DEVICE or tag in device) and span.kind in _DEVICE_TOLERATED:
        return False
    if span.kind == NAME and _coincidental_name(tag, text, span, device, traits):
        return False
    if not significant(text[span.start:span.end]):  # two letters ("OB") match too much
        return False
    if vr == "CS" and text.strip(" \0").upper() in ENUMERATED_CS.get(tag, ()):
        return False  # the standard's own value (ValueType TEXT of an SR whose observer's organisation is "Text...")
    # a code (BodyPartExamined HEAD) that is also the patient's name part (HEAD^MARY): kept as a code
    return not (vr == "CS" and span.kind == NAME and is_clinical_word(text[span.start:span.end]))


#: Code strings whose values the standard enumerates (PS3.3): a value that is one of them is the standard's
#: word, never the patient's, whatever identifier it coincides with. An SR whose observer's organisation read
#: "Enter text" had every ValueType TEXT replaced by X, an invalid structured report (dciodvfy).
ENUMERATED_CS: dict[int, frozenset[str]] = {
    0x0040A040: frozenset({"TEXT", "NUM", "CODE", "DATETIME", "DATE", "TIME", "UIDREF", "PNAME", "COMPOSITE",
                           "IMAGE", "WAVEFORM", "SCOORD", "SCOORD3D", "TCOORD", "CONTAINER", "TABLE"}),  # ValueType
    0x0040A010: frozenset({"CONTAINS", "HAS PROPERTIES", "HAS OBS CONTEXT", "HAS ACQ CONTEXT", "INFERRED FROM",
                           "SELECTED FROM", "HAS CONCEPT MOD"}),  # RelationshipType
    0x0040A050: frozenset({"SEPARATE", "CONTINUOUS"}),  # ContinuityOfContent
    0x0040A491: frozenset({"PARTIAL", "COMPLETE"}),  # CompletionFlag
    0x0040A493: frozenset({"UNVERIFIED", "VERIFIED"}),  # VerificationFlag
    0x0040A496: frozenset({"PRELIMINARY", "FINAL"}),  # PreliminaryFlag
    0x0040A130: frozenset({"POINT", "MULTIPOINT", "SEGMENT", "MULTISEGMENT", "BEGIN", "END"}),  # TemporalRangeType
    0x00700023: frozenset({"POINT", "POLYLINE", "INTERPOLATED", "CIRCLE", "ELLIPSE", "MULTIPOINT", "POLYGON",
                           "ELLIPSOID"}),  # GraphicType
    0x00080068: frozenset({"FOR PRESENTATION", "FOR PROCESSING"}),  # PresentationIntentType
}


#: Values of EthnicGroup and similar retained characteristics that are also surnames (WHITE^BARRY).
_TRAIT_WORDS = frozenset({"white", "black", "asian", "hispanic", "latino", "latina", "caucasian", "african",
                          "american", "indian", "native", "pacific", "islander", "alaska", "hawaiian", "arab",
                          "jewish", "other", "unknown", "mixed", "english", "french", "german", "irish",
                          "italian", "polish", "russian", "chinese", "japanese", "korean"})


#: A title right before a name part ("DR_", "Dr. ", "PROF-"): the device is named after that person.
_TITLE_BEFORE = re.compile(r"(?i)(?:^|[^a-z])(?:dr|dra|doctor|prof|professor|mr|mrs|ms|mme|herr|frau)[\W_]*$")


#: A personal machine after a name part ("SCHNEIDER-PC", Windows' default "<user>-PC"; "JONES_LAPTOP").
_OWNED_AFTER = re.compile(r"(?i)[\W_]*(?:pc|laptop|notebook|desktop|macbook|imac|mac|'s)(?![a-z])")


def _coincidental_name(tag: int, text: str, span: Span, device: frozenset[int], traits: frozenset[int]) -> bool:
    """Whether a name part met in a value the profile retains is a coincidence, not the patient: one
    word of a longer device name (StationName "BROWN_CT" of patient BROWN^ALICE; the bare "BROWN" would
    still count), or a characteristic's vocabulary word (EthnicGroup "WHITE" of patient WHITE^BARRY)."""
    word = text[span.start:span.end]
    if not re.fullmatch(r"[^\W\d_]+", word):
        return False  # more than one word (a whole name), or not a word
    if _TITLE_BEFORE.search(text[:span.start]) or _OWNED_AFTER.match(text, span.end):
        return False  # a title or a user's machine names the person: "PRAXIS_DR_SCHNEIDER", "SCHNEIDER-PC" (an audit)
    if tag in traits:
        return word.casefold() in _TRAIT_WORDS
    return (tag in device or tag in _DEVICE) and len(text.strip(" \0")) > len(word)


def retained_tags(table: RuleTable) -> tuple[frozenset[int], frozenset[int]]:
    """Tags the table keeps because of Retain Device Identity, and because of Retain Patient
    Characteristics (their values may coincide with a name or an institution: see ``find_leaks``)."""
    device, traits = set(), set()
    for row in table.rows():
        text = row["tag"]
        if row["kind"] != "public" or row["action"] != Action.KEEP.value or not re.fullmatch(
                r"\([0-9A-Fa-f]{4},[0-9A-Fa-f]{4}\)", text):
            continue
        tag = int(text[1:5] + text[6:10], 16)
        if "rtnDevIdOpt=K" in row["source"]:
            device.add(tag)
        elif "rtnPatCharsOpt=K" in row["source"]:
            traits.add(tag)
    return frozenset(device), frozenset(traits)


@dataclass
class PixelVerifyStats:
    """How much pixel verification did (for timing reports; no content)."""

    frames: int = 0
    frames_screened: int = 0
    frames_ocr: int = 0


def _gray_frames(ds: Dataset, src: BinaryIO | None) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Frames of ``ds`` as 8-bit gray, decoded one at a time from ``src`` (the file ``ds`` was read from,
    so the whole PixelData value is never loaded) when given, else from ``ds`` itself."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from deid_core.pixels.decode import iter_gray_views

    tsyntax = str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "") or "")
    pixels = ds.get_item(0x7FE00010, keep_deferred=True) if "PixelData" in ds else None
    loaded = pixels is not None and pixels.value is not None  # a value under the deferral size: read already
    if src is None or tsyntax == DeflatedExplicitVRLittleEndian or not tsyntax or loaded:
        # a deflated stream cannot be read frame by frame; a loaded value is decoded where it is (decoding
        # from ``src`` parses the whole file again: 0.57 against 0.20 ms for a 128x128 CT slice)
        yield from iter_gray_views(ds)
        return
    yield from iter_gray_views(ds, src)


def find_pixel_leaks(ds: Dataset, lt: LeakTerms, engine: object | None = None,
                     stats: PixelVerifyStats | None = None, src: BinaryIO | None = None) -> list[Leak]:
    """OCR every frame of ``ds`` that the pre-screen cannot prove text-free; leaks per frame.

    ``src`` is the file-like ``ds`` was read from: frames are then decoded from it one at a time, so a
    deferred PixelData value is never loaded whole.
    Every candidate line is read the way the pixel stage reads it, through the same per-process memo of
    crop readings: a frame the pixel stage left unchanged is checked against the readings it already
    made (no second OCR), a frame with masks is read afresh around them.
    Matching is exact (flexible separators) on each OCR line plus tolerant per word (edit
    distance, digit/letter confusions), for every kind of term including every original date:
    nothing shifts dates burned into pixels.
    """
    from deid_core.pixels import Rect, crop_to_ink, frame_lines, get_engine, has_pixels, read_frame_lines
    from deid_core.pixels.codes import CODE_MODALITIES, code_rects
    from deid_core.pixels.decode import has_chroma_view
    from deid_core.pixels.match import build_lines
    from deid_core.pixels.ocr import OcrEngine

    st = stats if stats is not None else PixelVerifyStats()
    if not has_pixels(ds):
        return []
    eng: OcrEngine = engine or get_engine("tesseract")  # type: ignore[assignment]
    leaks: list[Leak] = []
    colour = has_chroma_view(ds)  # bright lines only in its second view, as the pixel stage reads it
    codes = str(ds.get("Modality", "")).strip().upper() in CODE_MODALITIES
    for f, (gray, alt) in enumerate(_gray_frames(ds, src)):
        st.frames += 1
        st.frames_screened += 1
        if codes and code_rects(gray):  # a code the pixel stage masked is gone; one still found was missed
            leaks.append(Leak("code", f"frame {f}"))
            continue
        words, ran = read_frame_lines(gray, eng)
        if alt is not None:  # a second view (stretched window, chroma): the pixel stage searched it too
            sub, ox, oy = crop_to_ink(alt)
            more, ran_alt = read_frame_lines(sub, eng, [Rect(r.x - ox, r.y - oy, r.w, r.h)
                                                        for r, _b in frame_lines(gray)], only_bright=colour)
            words, ran = words + more, ran or ran_alt
        st.frames_ocr += ran
        if not words:
            continue
        kind = _line_leak(build_lines(words), lt)
        if kind:
            leaks.append(Leak(kind, f"frame {f}"))
    return leaks


def _line_leak(lines: list, lt: LeakTerms) -> str | None:  # type: ignore[type-arg]
    """Kind of the first identifier found in OCR lines (birth date, exact, then tolerant)."""
    from deid_core.pixels.match import split_tokens

    for line in lines:
        if lt.birth.contains(line.text):
            return BIRTH_DATE
        for span in lt.matcher.find(line.text):
            # a long exact match is not chance; a short one counts only where OCR is fairly sure
            # (speckle read as "ana" at confidence 21 matched a 3-letter given name)
            confs = [w.conf for w, (a, b) in zip(line.words, line.offsets, strict=True)
                     if a < span.end and span.start < b]
            if span.end - span.start >= EXACT_ANY_CONF_LEN or (confs and min(confs) >= FUZZY_MIN_CONF):
                return span.kind
        for w in line.words:  # tolerant matching only where OCR is fairly sure it read a word
            if w.conf < FUZZY_MIN_CONF or sum(c.isalnum() for c in w.text) < 4:
                continue
            k = lt.matcher.fuzzy_token_kind(w.text)
            if k:
                return k
        for i, j, joined in split_tokens(line):  # "1961-" "03-02": a date OCR split at its separator
            conf = min(w.conf for w in line.words[i:j + 1])
            if lt.birth.contains(joined):
                return BIRTH_DATE
            for span in lt.matcher.find(joined):
                if span.end - span.start >= EXACT_ANY_CONF_LEN or conf >= FUZZY_MIN_CONF:
                    return span.kind
    return None


@dataclass
class VerifyResult:
    """Verification of one written output: leaks (class + place) and its conformance record."""

    leaks: list[Leak]
    conformance: str
    pixel: PixelVerifyStats


def verify_written(path: Path, lt: LeakTerms, engine: object | None = None, *,
                   pixels_text_free: bool = False, use_dciodvfy: bool = True) -> VerifyResult:
    """Read the written file back and search it (elements, then pixels) for the captured identifiers.

    ``pixels_text_free`` is True when the pixel stage's pre-screen proved every input frame
    text-free and nothing was masked: the output pixels are the input's, so OCR is not repeated.
    Raises ``UnreadableOutputError`` when the file does not read back.
    """
    from deid_core.conformance import add_dciodvfy

    res, conf = _verify(path.read_bytes(), lt, engine, pixels_text_free)
    if use_dciodvfy:
        add_dciodvfy(conf, path)
    res.conformance = conf.to_json()
    return res


def verify_encoded(data: bytes, lt: LeakTerms, engine: object | None = None, *,
                   pixels_text_free: bool = False) -> tuple[VerifyResult, ConformanceResult]:
    """Verify the exact bytes of an output *before* they are written: parse them as a reader would
    (one pass over every element, then pixels unless proven text-free) and check conformance at the
    pydicom level. Nothing leaky reaches the disk; the caller writes these same bytes, and may add
    dciodvfy on the written file to the returned ``ConformanceResult``.
    Raises ``UnreadableOutputError`` when the bytes do not read back."""
    return _verify(data, lt, engine, pixels_text_free)


def _verify(data: bytes, lt: LeakTerms, engine: object | None, pixels_text_free: bool
            ) -> tuple[VerifyResult, ConformanceResult]:
    from deid_core.conformance import check_dataset, read_back

    # Pixel values stay in ``data`` (deferred, bounds-checked): elements are searched from the parsed
    # dataset and frames decoded one at a time from the same bytes, so no second copy of a large image.
    ds = read_back(data, defer_pixels=True)
    leaks = find_leaks(ds, lt)
    stats = PixelVerifyStats()
    if not leaks and not pixels_text_free:
        leaks += find_pixel_leaks(ds, lt, engine, stats, src=io.BytesIO(data))
    conf = check_dataset(ds)
    return VerifyResult(leaks, conf.to_json(), stats), conf
