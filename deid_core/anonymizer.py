"""The composer: one walk of a dataset, each element sent to the handler its rule names.

Rules come from the generated PS3.15 table (``deid_core.rules``) with the chosen options;
private elements are decided by TCIA's private-tag knowledge base, matched by private creator
and element offset (never by raw tag), at every nesting level. File I/O stays out of here.
"""

from __future__ import annotations

import contextlib
import functools
import re
import struct
from collections import Counter
from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass

from pydicom.charset import decode_bytes
from pydicom.datadict import DicomDictionary, dictionary_has_tag, dictionary_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from deid_core import __version__
from deid_core.freetext import PLACEHOLDER, TextCleaner, truncate_for_vr, typed_phi
from deid_core.handlers import (
    CleanTextHandler,
    DateShiftHandler,
    DummyHandler,
    EmptyHandler,
    KeepHandler,
    RemoveHandler,
    UidHandler,
)
from deid_core.handlers.base import ElementPath
from deid_core.inventory import dataset_encodings, element
from deid_core.pseudonyms import PatientEntry
from deid_core.rules import DESCRIPTIVE_KEYWORD, REMOVED_BEYOND_TABLE, Action, Rule, RuleTable
from deid_core.terms import TermMatcher, dictionary_vr, significant, utf8_repaired
from deid_core.verify import CODED_NOT_TEXT, retained_tags, span_is_leak

#: UIDs of classes, transfer syntaxes and coding schemes: they name a kind of object or a vocabulary, never
#: an instance or a person, so they are kept even outside the DICOM root (a vendor's private SOP class
#: 1.3.12.2.1107.5.9.1, SNOMED's 2.16.840.1.113883.6.96); remapped, the object would lose its class.
CLASS_UID_TAGS = frozenset(
    tag for tag, entry in DicomDictionary.items()
    if entry[0] == "UI" and re.search(r"(Class|TransferSyntax|CodingScheme|MappingResource)UID", entry[4]))
PATIENT_ID = 0x00100020
CS_PLACEHOLDER = "X"  # what replaces an identifier inside a code string (CS: A-Z, 0-9, space, underscore)
LOCAL_NAMESPACE_ENTITY_ID = 0x00400031
PERSON_ID_CODES = 0x00401101  # PersonIdentificationCodeSequence
_CODE_VALUE_TAGS = frozenset({0x00080100, 0x00080104, 0x00080119, 0x00080120})
PATIENT_NAME = 0x00100010
PATIENT_AGE = 0x00101010
_DATE_VRS = ("DA", "DT")
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_OVERLAY_DATA = 0x60003000
_NATIVE_TS = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian)
_FREE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UC", "PN"})
#: Short text VRs of elements the table does not list (labels, code meanings, names of things): kept, but
#: a value holding one of the file's own identifiers is cleaned of it rather than quarantining the file.
_SHORT_TEXT_VRS = frozenset({"LO", "SH", "CS", "AE"})
#: Text VRs of kept elements searched for the file's own identifiers (``_own_identifiers``).
_KEPT_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT"})
#: File meta elements an output keeps (PS3.10's required ones; group length is recomputed): AE titles, presentation
#: addresses ("dicom://pacs01.<hospital>.org:104/...", an audit) and private information are the source's.
_FILE_META_KEEP = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013})


@dataclass
class PatientPseudonyms:
    """The new identity of the file's patient and the offset of its dates."""

    entry: PatientEntry
    date_offset_days: int


class Anonymizer:
    """De-identifies a dataset in place according to ``table``.

    Build one per file (it holds that file's patient, date offset and text cleaner); the rule
    table and UID handler are shared and cached per process by the caller.
    """

    def __init__(self, table: RuleTable, uid_handler: UidHandler, patient: PatientPseudonyms,
                 cleaner: TextCleaner, resolve_patient_id: Callable[[str], str] | None = None,
                 retained: tuple[frozenset[int], frozenset[int]] | None = None) -> None:
        self.table = table
        #: tags kept by Retain Device Identity and by Retain Patient Characteristics (``verify.retained_tags``)
        self._device, self._traits = retained if retained is not None else _retained_tags(table)
        self.patient = patient
        self._resolve_patient_id = resolve_patient_id
        self.uids = uid_handler
        self.retain_uids = "rtnUIDs" in table.options
        # Full dates retained: dates outside the table stay as they are (no silent shifting).
        self.shift_untabled_dates = "rtnLongFullDates" not in table.options
        overlay_rule = table.rule_for(_OVERLAY_DATA)
        self.remove_overlays = overlay_rule is not None and overlay_rule.action is Action.REMOVE
        self.remove = RemoveHandler()
        self.empty = EmptyHandler()
        self.dummy = DummyHandler()
        self.keep = KeepHandler()
        self.dates = DateShiftHandler(patient.date_offset_days)
        self.text = CleanTextHandler(cleaner)
        self._phi = cleaner.matcher  # the same terms: one matcher per file
        self.actions: Counter[str] = Counter()
        #: class UID elements the walk kept (``_uid_unless_class``), checked once the walk is over
        self._class_kept: list[tuple[Dataset, DataElement]] = []
        self._sop_class = ""  # of the dataset being scrubbed (``_required_empty``)

    # ---------------------------------------------------------------- public
    def anonymize(self, ds: Dataset, *, pixels_clean: bool) -> Counter[str]:
        """Scrub ``ds`` (and its file meta), add the de-identification markers, return action counts."""
        own = self.uids.originals is None
        if own:
            self.uids.originals = set()
        self._class_kept = []
        self._sop_class = str(ds.get("SOPClassUID", "") or "")
        try:
            self._walk(ds, ())
            self._class_uids_that_are_instances()
            _document_length(ds)
        finally:
            if own:
                self.uids.originals = None
        self._markers(ds, pixels_clean)
        if getattr(ds, "file_meta", None) is None:
            ds.file_meta = FileMetaDataset()
        self._file_meta(ds)
        return self.actions

    def _class_uids_that_are_instances(self) -> None:
        """A class UID element kept by the walk whose value the walk remapped elsewhere is an instance UID
        in the wrong place (pydicom's reportsi.dcm has SR instance UIDs in nested ReferencedSOPClassUID):
        it is remapped like its other occurrences, else the original UID would stay in the output."""
        remapped = self.uids.originals or set()
        for ds, elem in self._class_kept:
            value = elem.value
            values = [str(v) for v in value] if isinstance(value, list | MultiValue) else [str(value)]
            if any(v.strip().rstrip("\0") in remapped for v in values):
                self._apply(self.uids, ds, elem, ())

    # ---------------------------------------------------------------- walk
    def _walk(self, ds: Dataset, path: ElementPath) -> None:
        elements = ds._dict
        creators: dict[int, str | None] = {}  # private creator text per creator tag, for this dataset
        for tag in list(elements):
            if tag not in elements:
                continue
            try:
                elem = element(ds, tag)
            except Exception:  # undecodable element: fail closed by removing it
                del ds[tag]
                self.actions["remove_undecodable"] += 1
                continue
            group, number = tag >> 16, tag & 0xFFFF
            if number == 0x0000:  # group length: recomputed or dropped
                del ds[tag]
                self.actions["group_length_removed"] += 1
                continue
            if group in (0x0000, 0x0002):
                # Command set (DIMSE) elements never belong in a stored instance, and file meta elements
                # in the body would make the output unwritable: the file meta is rebuilt separately.
                del ds[tag]
                self.actions["command_removed"] += 1
                continue
            if group & 1:  # private
                if not 0x0010 <= number < 0x0100:  # not a private creator
                    self._private(ds, elem, path, creators)
                continue
            self._public(ds, elem, path)
        self._drop_empty_private_creators(ds)

    def _apply(self, handler: object, ds: Dataset, elem: DataElement, path: ElementPath) -> None:
        if handler(ds, elem, path):  # type: ignore[operator]
            self.actions[handler.name] += 1  # type: ignore[attr-defined]

    def _public(self, ds: Dataset, elem: DataElement, path: ElementPath) -> None:
        tag = int(elem.tag)
        if self.remove_overlays and 0x6000 <= (tag >> 16) <= 0x601E and not (tag >> 16) & 1:
            # Overlay Data is removed (an overlay can carry burned-in text): the rest of the overlay
            # module (rows, origin, label, description) goes with it, else a dangling overlay remains.
            del ds[tag]
            self.actions["overlay_removed"] += 1
            return
        if tag == PATIENT_ID and (elem.value not in (None, "") or not path):  # an empty one: the pseudonym too
            self._patient_id(elem, path)
            return
        if tag == PATIENT_NAME and not path:
            elem.value = self.patient.entry.new_name
            self.actions["patient_name"] += 1
            return
        if tag == PATIENT_AGE and isinstance(elem.value, str) and _over_89(elem.value):
            # HIPAA Safe Harbor: ages over 89 are aggregated into one category of 90 or older. The profile
            # retains patient characteristics; the age stays, capped at 90 years.
            elem.value = "090Y"
            self.actions["age_capped"] += 1
            return
        if tag == LOCAL_NAMESPACE_ENTITY_ID or (path and path[-1] == PERSON_ID_CODES and tag in _CODE_VALUE_TAGS):
            # Beyond the table: the organisation or system that issued an identifier (IssuerOf...Sequence,
            # AssigningFacilitySequence, Order Placer/Filler), and the value and meaning of a code that
            # identifies a person (a staff or licence number, the person's name) are replaced by dummies
            self._apply(self.dummy, ds, elem, path)
            return
        rule = self.table.rule_for(tag)
        action = rule.action if rule is not None else None
        vr = _as_written_or_date(tag, elem.VR)
        if action is None:
            if tag in REMOVED_BEYOND_TABLE:
                self._apply(self.remove, ds, elem, path)
            elif vr == "SQ":
                self._recurse(elem, path)
            elif vr == "UI" and not self.retain_uids:
                self._uid_unless_class(ds, elem, path)
            elif vr in _DATE_VRS and self.shift_untabled_dates:
                self._apply(self.dates, ds, elem, path)
            elif vr in _FREE_TEXT_VRS or (vr == "LO" and _descriptive(tag)):
                # Free text the table does not list (SR TextValue, presentation UnformattedTextValue, a
                # DoseComment or LUTExplanation...) can name the patient: clean it instead of keeping it.
                self._apply(self.text, ds, elem, path)
            elif vr in _SHORT_TEXT_VRS:
                self._own_identifiers(elem)
            elif vr == "UR" or (vr in _BINARY_VRS and not dictionary_has_tag(tag)):
                # A URL points into the source's systems (host names, original UIDs in its path); an
                # element the DICOM dictionary does not know, in binary form, cannot be read to be
                # proven safe. Neither is standard content the profile vouches for: removed.
                self._apply(self.remove, ds, elem, path)
            return
        if action is Action.REMOVE and not path and self._required_empty(tag, rule):
            self._apply(self.empty, ds, elem, path)  # X/Z: Z where the IOD requires the attribute (type 2)
        elif action is Action.REMOVE or (action is Action.EMPTY and _optional_sequence(tag, rule, path)):
            # X/Z on a sequence that is type 3 where it stands: removed, as an empty type 3 sequence
            # (zero items where the module asks for 1-n) is an error to validators (``_optional_sequence``)
            self._apply(self.remove, ds, elem, path)
        elif action is Action.EMPTY:
            self._apply(self.empty, ds, elem, path)
        elif action is Action.DUMMY:
            if vr == "SQ":
                self._recurse(elem, path)
            elif vr == "UI":
                self._apply(self.uids, ds, elem, path)
            elif vr in _DATE_VRS:
                self._apply(self.dates, ds, elem, path)
            else:
                self._apply(self.dummy, ds, elem, path)
                if tag == ENCAPSULATED_DOCUMENT:
                    # the document (a scanned letter, a PDF report) is gone, replaced by a dummy as PS3.15 says:
                    # provenance names it, so a user can find the files whose content went (an audit: "silent")
                    self.actions["encapsulated_document_replaced"] += 1
        elif action is Action.UID:
            if vr == "UI":
                if not self.retain_uids:
                    self._apply(self.uids, ds, elem, path)
            elif vr == "SQ":
                self._recurse(elem, path)
            else:
                self._apply(self.empty, ds, elem, path)
        elif action is Action.SHIFT_DATE:
            if vr in _DATE_VRS:
                self._apply(self.dates, ds, elem, path)
            elif vr == "SQ":
                self._recurse(elem, path)
        elif action is Action.CLEAN:
            if vr == "SQ":
                self._recurse(elem, path)
            elif vr in _DATE_VRS:
                self._apply(self.dates, ds, elem, path)
            elif vr == "UI":
                self._apply(self.uids, ds, elem, path)
            elif vr in _BINARY_VRS or isinstance(elem.value, bytes):
                # Binary content (MakerNote, undecoded UN) cannot be cleaned word by word: remove it.
                self._apply(self.remove, ds, elem, path)
            else:
                self._apply(self.text, ds, elem, path)
        else:  # KEEP
            if vr == "SQ":
                self._recurse(elem, path)
            elif vr == "UI" and not self.retain_uids:
                self._uid_unless_class(ds, elem, path)
            elif vr in _KEPT_TEXT_VRS:
                # a kept value (device identity, patient characteristics...) that names the patient: the name
                # goes, the device identity stays (a file was quarantined for a LensMake naming the patient)
                self._own_identifiers(elem)

    def _required_empty(self, tag: int, rule: Rule | None) -> bool:
        """Whether an attribute the table removes must stay, empty, in this file: PS3.15's X/Z means "Z
        where the IOD needs the attribute (type 2)", and the table resolves it once for every IOD. An audit
        found OperatorsName removed from RT plans and structure sets, whose RT Series module requires it."""
        prefixes = TYPE2_WHERE_REMOVED.get(tag)
        return bool(prefixes and rule is not None and "X/Z" in rule.source
                    and self._sop_class.startswith(prefixes))

    def _uid_unless_class(self, ds: Dataset, elem: DataElement, path: ElementPath) -> None:
        """Remap a UID, except a class, transfer syntax or coding scheme UID (``CLASS_UID_TAGS``), which is
        kept unless the walk finds its value remapped elsewhere (``_class_uids_that_are_instances``)."""
        if int(elem.tag) in CLASS_UID_TAGS:
            self._class_kept.append((ds, elem))
        else:
            self._apply(self.uids, ds, elem, path)

    def _own_identifiers(self, elem: DataElement) -> None:
        """Remove the file's own identifiers (3+ characters, as verification counts them) from a short text
        value the table does not list (SegmentLabel, a nested DeidentificationMethod, a CodeMeaning):
        each is replaced by the placeholder, in a code string (CS) by "X" (the only placeholder CS allows:
        emptied, a type 1 ContentLabel "WHITAKER_MEAS" made its presentation state invalid), except where
        the match is a clinical word standing as a code (BodyPartExamined HEAD of a patient named Head)."""
        value = elem.value
        if value is None or value == "" or isinstance(value, bytes) or int(elem.tag) in CODED_NOT_TEXT:
            return
        values = [str(v) for v in value] if isinstance(value, list | MultiValue) else [str(value)]
        if not self._phi.contains("\n".join(values)):
            return
        vr = elem.VR
        tag = int(elem.tag)
        out = []
        for text in values:
            # exactly the spans verification counts as leaks: a coincidence it forgives stays ("BROWN_CT")
            spans = [sp for sp in self._phi.find(text) if span_is_leak(tag, vr, text, sp, self._device, self._traits)]
            parts, pos = [], 0
            for sp in sorted(spans, key=lambda sp: sp.start):
                if sp.start < pos:
                    continue
                parts += [text[pos:sp.start], CS_PLACEHOLDER if vr == "CS" else PLACEHOLDER]
                pos = sp.end
            out.append(truncate_for_vr("".join(parts) + text[pos:], vr) if spans else text)
        if out != values:
            elem.value = out if isinstance(value, list | MultiValue) else out[0]
            self.actions["clean_text"] += 1

    def _patient_id(self, elem: DataElement, path: ElementPath) -> None:
        if not path:
            elem.value = self.patient.entry.new_id
        else:  # a PatientID inside a sequence: same pseudonym rule as the file's patient
            elem.value = self.patient_id_for(str(elem.value))
        self.actions["patient_id"] += 1

    def patient_id_for(self, original: str) -> str:
        """Pseudonym for a PatientID met inside a sequence: another patient (a source patient, an
        alias) gets its own pseudonym through the same map/keyed rule; the file's own keeps its."""
        if self._resolve_patient_id is None or not original.strip():
            return self.patient.entry.new_id
        return self._resolve_patient_id(original)

    def _recurse(self, elem: DataElement, path: ElementPath) -> None:
        seq = elem.value
        if not isinstance(seq, Sequence):
            return
        if int(elem.tag) in _CONTENT_SEQUENCES:
            self._subject_items(elem)
            seq = elem.value
        sub = path + (int(elem.tag),)
        for item in seq:
            self._walk(item, sub)

    def _subject_items(self, elem: DataElement) -> None:
        """Structured content about the subject follows the header's rules for the same facts: a "Subject
        Birth Date" item (DCM 121031) goes, as PatientBirthDate is emptied (shifted, with the shifted study
        date it gave the exact age: 103 years); a "Subject Age" (DCM 121033) over 89 years is capped at 90,
        as PatientAge is (an audit found both kept in an SR's observation context)."""
        kept = []
        for item in elem.value:
            code = _concept_code(item)
            if code in BIRTH_DATE_CODES or _birth_meaning(item):
                self.actions["sr_birth_date_removed"] += 1
                continue
            if code == SUBJECT_AGE:
                self._cap_subject_age(item)
            if item.get("ValueType") == "TEXT" and item.get("TextValue") and _identity_concept(item):
                # a TEXT item whose concept is a person's or an organisation's name, address or phone: its value
                # is that identifier ("Recording Observer's Organization Name" = "Riverside Imaging Partners",
                # which no pattern of the text cleaner knows: an audit)
                item.TextValue = PLACEHOLDER
                self.actions["sr_identity_text"] += 1
            kept.append(item)
        if len(kept) != len(elem.value):
            elem.value = Sequence(kept)

    def _cap_subject_age(self, item: Dataset) -> None:
        for mv in item.get("MeasuredValueSequence") or []:
            unit = _concept_code(mv, "MeasurementUnitsCodeSequence")
            years = {"a": 1.0, "mo": 1 / 12, "wk": 7 / 365.25, "d": 1 / 365.25}.get(unit[1] if unit else "a", 1.0)
            for kw in ("NumericValue", "FloatingPointValue"):
                value = mv.get(kw)
                try:
                    over = value is not None and float(value) * years > 89
                except (TypeError, ValueError):
                    over = False
                if over:
                    setattr(mv, kw, str(round(90 / years)) if kw == "NumericValue" else 90 / years)
                    self.actions["age_capped"] += 1

    # ---------------------------------------------------------------- private
    def _private(self, ds: Dataset, elem: DataElement, path: ElementPath,
                 creators: dict[int, str | None] | None = None) -> None:
        tag = elem.tag
        block = (tag & 0xFF00) >> 8
        creator_tag = (tag & 0xFFFF0000) | block
        if creators is not None and creator_tag in creators:
            creator = creators[creator_tag]
        else:
            # Creators come before their block's elements and the walk never changes one: read once.
            creator = private_creator_of(ds, tag)
            if creators is not None:
                creators[creator_tag] = creator
        if creator is None or block < 0x10 or not self.table.retain_safe_private:
            self._apply(self.remove, ds, elem, path)
            return
        vr = elem.VR
        rule = self.table.private_rule(tag >> 16, creator, tag & 0xFF, path, vr=vr)
        disposition = rule.disposition if rule is not None else None
        if disposition == "k" and vr != "SQ" and rule is not None \
                and not _safe_private_value(elem.value, vr, rule.vr, self._phi, dataset_encodings(ds)):
            del ds[tag]  # "safe" by the KB, but this value is not what the KB vouched for
            self.actions["private_removed_unsafe"] += 1
            return
        if disposition == "k" and vr in _KEPT_TEXT_VRS and _typed_phi_value(elem.value):
            del ds[tag]  # typed text the KB vouched for, holding a date, a phone, a titled name...: not safe
            self.actions["private_removed_unsafe"] += 1
            return
        if disposition == "k":
            if vr == "SQ":
                self._recurse(elem, path)
            elif (vr == "UI" or (rule is not None and rule.vr == "UI")) and not self.retain_uids:
                # The KB keeps the element, but a UID kept verbatim (EnhancedSopInstanceUid...) links back
                # to the source: it is remapped like every other UID, so references stay consistent.
                self._apply(self.uids, ds, elem, path)
            self.actions["private_kept"] += 1
        elif disposition == "h":
            self._apply(self.uids, ds, elem, path)
        elif disposition == "o":
            self._apply(self.dates, ds, elem, path)
        else:  # "d" or unknown to the knowledge base
            del ds[tag]
            self.actions["private_removed"] += 1

    def _drop_empty_private_creators(self, ds: Dataset) -> None:
        creators = [t for t in ds._dict if t >> 16 & 1 and 0x0010 <= t & 0xFFFF < 0x0100]
        if not creators:
            return
        used = {(t >> 16, (t >> 8) & 0xFF) for t in ds._dict
                if t >> 16 & 1 and not 0x0010 <= t & 0xFFFF < 0x0100}
        for t in creators:
            if (t >> 16, t & 0xFF) not in used:
                del ds[t]
                self.actions["private_creator_removed"] += 1

    # ---------------------------------------------------------------- markers
    def _markers(self, ds: Dataset, pixels_clean: bool) -> None:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self.table.method_text()
        items = []
        for code, meaning in self.table.method_codes():
            item = Dataset()
            item.CodeValue = code
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        opts = self.table.options
        if "rtnLongModifDates" in opts or (
            "rtnLongFullDates" not in opts and self.actions.get("date_shift", 0) > 0
        ):  # basic profile: dates outside the table were shifted, so they are modified, not removed
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        elif "rtnLongFullDates" in opts:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"
        if "PixelData" in ds and pixels_clean:
            ds.BurnedInAnnotation = "NO"

    def _file_meta(self, ds: Dataset) -> None:
        meta: FileMetaDataset = ds.file_meta
        for tag in [t for t in meta.keys() if int(t) not in _FILE_META_KEEP]:
            del meta[tag]
        for tag in list(meta.keys()):
            if tag.element == 0x0000:
                continue  # (0002,0000) is recomputed by pydicom on write
            if meta[tag].VR == "UI" and tag not in (Tag(0x00020010), Tag(0x00020012), Tag(0x00020002)):
                if not self.retain_uids:
                    self.uids(meta, meta[tag], ())
        implicit, little = getattr(ds, "original_encoding", (None, None))
        ts = meta.get("TransferSyntaxUID")
        if ts is None or (little is not None and ts in _NATIVE_TS and ts.is_little_endian != little):
            # A file without file meta (no preamble), or one whose meta was completed with a guessed
            # syntax: record the encoding it was read in, so the output is written in that encoding
            # (pydicom refuses to switch endianness on write).
            if implicit is None:
                implicit, little = False, True
            meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                      ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "SOPClassUID" in ds:
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
        # The implementation that writes the file (PS3.10): ours, not the source's. The source's class UID
        # can also stand in the dataset (InstanceCreatorUID, remapped there), and kept here it was an
        # original UID left in the output (pydicom's test-SR.dcm and reportsi.dcm, quarantined).
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = f"DEIDFLOW_{__version__}"[:16]


@functools.lru_cache(maxsize=8)
def _retained_tags(table: RuleTable) -> tuple[frozenset[int], frozenset[int]]:
    """``verify.retained_tags`` of a table, once per table (``load_rule_table`` hands out cached tables)."""
    return retained_tags(table)


_AGE_DAYS = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}


@functools.lru_cache(maxsize=4096)
def _as_written_or_date(tag: int, vr: str) -> str:
    """The VR an element is handled by: as written, except a date or date-time the file wrote as text (an
    AcquisitionDateTime as LO kept its original date: an audit), handled by the dictionary's DA/DT."""
    if vr in ("LO", "SH", "CS", "ST", "LT", "UC", "UT", "UN") and not (tag >> 16) & 1:
        dvr = dictionary_vr(tag)
        if dvr in _DATE_VRS:
            return dvr
    return vr


@functools.lru_cache(maxsize=4096)
def _descriptive(tag: int) -> bool:
    """Whether an untabled public element's keyword says it holds typed text (``DESCRIPTIVE_KEYWORD``)."""
    try:
        keyword = dictionary_keyword(tag)
    except KeyError:
        return False
    return bool(DESCRIPTIVE_KEYWORD.search(keyword))


def _typed_phi_value(value: object) -> bool:
    """Whether a kept text value holds a typed PHI shape (``freetext.typed_phi``), in any of its values."""
    if value is None or isinstance(value, bytes):
        return False
    values = [str(v) for v in value] if isinstance(value, list | MultiValue) else [str(value)]
    return any(len(v) >= 6 and typed_phi(v) for v in values)


def _document_length(ds: Dataset) -> None:
    """EncapsulatedDocumentLength of the document the walk left (its dummy, when replaced): a length that
    still gave the original PDF's 342 bytes for a 2-byte dummy misdescribed the file (an audit)."""
    doc = ds.get("EncapsulatedDocument")
    if isinstance(doc, bytes) and "EncapsulatedDocumentLength" in ds:
        ds.EncapsulatedDocumentLength = len(doc)


#: Attributes the table removes (X/Z...) that these IODs require as type 2 (SOP Class UID prefixes): the RT
#: Series module of every RT object (PS3.3 C.8.8.1) holds OperatorsName.
TYPE2_WHERE_REMOVED: dict[int, tuple[str, ...]] = {0x00081070: ("1.2.840.10008.5.1.4.1.1.481.",)}
#: Sequences the table empties (X/Z resolved to Z) that are type 3 where they stand: key the sequence, value
#: the parents (0 = the top level) where it is type 3. A Referenced Study Sequence is type 3 in the General Study
#: module and in the Request Attributes macro, type 2 only in an SR's Referenced Request Sequence: emptied at
#: the top level, dciodvfy failed every output that had one ("Bad Sequence number of Items 0 (1-n Required)").
TYPE3_SEQUENCES: dict[int, frozenset[int]] = {0x00081110: frozenset({0, 0x00400275})}


def _optional_sequence(tag: int, rule: Rule | None, path: ElementPath) -> bool:
    """Whether an X/Z sequence is type 3 where it stands (so X, not Z: PS3.15's X/Z means Z only where the
    IOD requires the attribute)."""
    parents = TYPE3_SEQUENCES.get(tag)
    return bool(parents and rule is not None and "X/Z" in rule.source and (path[-1] if path else 0) in parents)


#: Sequences of structured content items (SR content, acquisition and observation context).
_CONTENT_SEQUENCES = frozenset({0x0040A730, 0x00400555, 0x0040A504})
ENCAPSULATED_DOCUMENT = 0x00420011
SUBJECT_BIRTH_DATE, SUBJECT_AGE = ("DCM", "121031"), ("DCM", "121033")
#: The same concept in other schemes: LOINC "Birth date" (21112-8), SNOMED CT "Date of birth" (184099003).
BIRTH_DATE_CODES = frozenset({SUBJECT_BIRTH_DATE, ("LN", "21112-8"), ("SCT", "184099003"), ("SRT", "184099003")})
#: ... or any scheme's meaning saying so (a local code "Birth date", "Date of birth", "DOB", "Geburtsdatum").
_BIRTH_MEANING = re.compile(r"(?i)\s*(?:(?:patient'?s?|subject'?s?)\s+)?(?:birth\s*date|date\s+of\s+birth|dob"
                            r"|geburtsdatum|date\s+de\s+naissance|fecha\s+de\s+nacimiento|data\s+di\s+nascita)\s*")


_IDENTITY_WORDS = re.compile(r"\b(?:names?|organi[sz]ation|institution|address|telephone|phone|e-?mail)\b")
_NOT_IDENTITY_WORDS = re.compile(r"\b(?:role|device|station|manufacturer|model|procedure|protocol|algorithm|software"
                                 r"|series|study|finding|code|concept|template)\b")


def _identity_concept(item: Dataset) -> bool:
    """Whether a content item's concept name is a person's or an organisation's identifier (its name, address,
    phone), judged from the concept's meaning (private coding schemes say it in words too), not a role, a
    device or a procedure that has a name."""
    try:
        seq = item.get("ConceptNameCodeSequence")
        meaning = str(seq[0].get("CodeMeaning", "")).casefold() if seq else ""
    except Exception:  # an unreadable code: no judgement
        return False
    return bool(_IDENTITY_WORDS.search(meaning)) and not _NOT_IDENTITY_WORDS.search(meaning)


def _birth_meaning(item: Dataset) -> bool:
    """Whether an item's concept name says "birth date" in words, whatever its code (an audit's LOINC item kept a
    shifted birth date)."""
    try:
        seq = item.get("ConceptNameCodeSequence")
        return bool(seq) and _BIRTH_MEANING.fullmatch(str(seq[0].get("CodeMeaning", "") or "")) is not None
    except Exception:  # noqa: BLE001 - a malformed code names no concept
        return False


def _concept_code(item: Dataset, keyword: str = "ConceptNameCodeSequence") -> tuple[str, str] | None:
    """(scheme, value) of an item's first code in ``keyword`` (None when absent or unreadable)."""
    try:
        seq = item.get(keyword)
        if not seq:
            return None
        code = seq[0]
        return str(code.get("CodingSchemeDesignator", "") or ""), str(code.get("CodeValue", "") or "")
    except Exception:  # noqa: BLE001 - a malformed code names no concept; the item is walked as it is
        return None


def _over_89(age: str) -> bool:
    """Whether an AS value (``nnnD/W/M/Y``) says 90 years or more."""
    m = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])\s*", age.upper())
    return m is not None and int(m.group(1)) * _AGE_DAYS[m.group(2)] >= 90 * 365.25


def _as_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1").strip("\0 ")
    if isinstance(value, list):
        return str(value[0]) if value else ""
    return str(value)


_NUMBER_TEXT = re.compile(r"[0-9+\-.eE\\ \x00]*")


UNPACKABLE = "\x00unpackable"
_BINARY_NUMBERS = {"SS": "h", "US": "H", "SL": "l", "UL": "L", "SV": "q", "UV": "Q", "FL": "f", "FD": "d",
                   "OW": "H", "OL": "L", "OV": "Q", "OF": "f", "OD": "d"}


_UTF16LE_RUN = re.compile(rb"(?:[\x20-\x7e\xa0-\xff]\x00){3,}")
_UTF16BE_RUN = re.compile(rb"(?:\x00[\x20-\x7e\xa0-\xff]){3,}")


def byte_texts(data: bytes, encodings: Seq[str] = ()) -> list[str]:
    """Every text raw bytes can show a reader: Latin-1 (one character per byte), UTF-8, UTF-16 when
    every other byte is mostly zero, and the dataset's own character sets (ISO 2022 escapes, GB18030,
    Cyrillic...). An audit found names kept verbatim in private bytes written as UTF-16LE, UTF-8,
    ISO 2022 IR 87, GB18030 and ISO_IR 144, which the Latin-1 reading alone shows as garble."""
    texts = [data.decode("latin-1")]
    if data.isascii() and b"\x00" not in data and b"\x1b" not in data:  # plain ASCII: one reading
        return texts
    seen = {texts[0]}

    def add(text: str) -> None:
        if text and text not in seen:
            seen.add(text)
            texts.append(text)

    add(data.decode("utf-8", "ignore"))
    if len(data) >= 4 and b"\x00" in data:
        zeros_odd, zeros_even = data[1::2].count(0), data[0::2].count(0)
        if zeros_odd >= len(data) // 4:
            add(data.decode("utf-16-le", "ignore").replace("\x00", ""))
        if zeros_even >= len(data) // 4:
            add(data.decode("utf-16-be", "ignore").replace("\x00", ""))
        # UTF-16 text inside other binary data ("strings -el"): each run of 3+ Latin characters, at any offset
        for rx, codec in ((_UTF16LE_RUN, "utf-16-le"), (_UTF16BE_RUN, "utf-16-be")):
            runs = [r.decode(codec) for r in rx.findall(data)]
            if runs:
                add("\n".join(runs))
    if encodings:
        with contextlib.suppress(Exception):  # bytes the character set cannot read: the readings above stay
            add(decode_bytes(data, list(encodings), set()))
        for codec in sorted(_NATIVE_CODECS.intersection(c for e in encodings for c in _NATIVE_FOR.get(e, ()))):
            # the native encodings of the file's language: Japanese vendors write private text in Shift-JIS
            # under ISO 2022 IR 87 (an audit: a kept Fuji element kept the patient's kanji name)
            add(data.decode(codec, "replace"))
    return texts


#: Python codecs of the character sets DICOM declares, and the native encodings their languages' software
#: also writes (not DICOM's, but found in private elements).
_NATIVE_FOR: dict[str, tuple[str, ...]] = {
    "iso2022_jp": ("shift_jis", "euc_jp"), "shift_jis": ("shift_jis", "euc_jp"),
    "iso_ir_87": ("shift_jis", "euc_jp"), "iso_ir_159": ("shift_jis", "euc_jp"), "iso_ir_13": ("shift_jis",),
    "iso2022_kr": ("euc_kr",), "euc_kr": ("euc_kr",), "iso_ir_149": ("euc_kr",),
}
_NATIVE_CODECS = frozenset({"shift_jis", "euc_jp", "euc_kr"})


def value_texts(value: object, vr: str, encodings: Seq[str] = ()) -> list[str]:
    """What a value can show a reader: its text, or its raw bytes in every reading (``byte_texts``).
    Binary numbers (e.g. UN bytes the private dictionary turned into SS) are re-packed in both byte
    orders: the bytes written are the same ones, and a name survives in them."""
    if isinstance(value, bytes | bytearray):
        return byte_texts(bytes(value), encodings)
    code = _BINARY_NUMBERS.get(vr)
    if not isinstance(value, list | tuple | MultiValue):  # one value (most elements): no joins, no loops
        texts = ["" if value is None else str(value)]
        items = [value]
        if not (code and isinstance(value, int | float)):
            return texts + repaired_texts(texts[0], encodings)
    else:
        items = list(value)
        texts = ["\\".join("" if v is None else str(v) for v in items)]
        if not (code and items and all(isinstance(v, int | float) for v in items)):
            return texts + repaired_texts(texts[0], encodings)
    for order in "<>":
        try:
            texts.append(struct.pack(f"{order}{len(items)}{code}", *items).decode("latin-1"))
        except struct.error:
            texts.append(UNPACKABLE)  # cannot be proven safe
    return texts


def repaired_texts(text: str, encodings: Seq[str] = ()) -> list[str]:
    """Other readings of a decoded text's bytes: as UTF-8 when a single-byte character set misread UTF-8
    (``utf8_repaired``), and in the native encodings of the file's language (``_NATIVE_FOR``) when it was
    read one byte per character (Shift-JIS bytes without escapes under ISO 2022 IR 87 read as Latin-1)."""
    if text.isascii():
        return []
    fixed = utf8_repaired(text)
    out = [fixed] if fixed else []
    codecs = _NATIVE_CODECS.intersection(c for e in encodings for c in _NATIVE_FOR.get(e, ()))
    if codecs:
        try:
            raw = text.encode("latin-1")
        except UnicodeEncodeError:
            return out
        out += [raw.decode(codec, "replace") for codec in sorted(codecs)]
    return out


def _safe_private_value(value: object, vr: str, kb_vr: str, phi: TermMatcher,
                        encodings: Seq[str] = ()) -> bool:
    """Whether a private element the KB keeps may really be kept: the KB vouches for an element of a
    known meaning (e.g. a decimal string), not for whatever bytes stand there. A value carrying one of
    the file's captured identifiers (3+ characters; text, raw bytes or re-packed binary numbers read
    as Latin-1), or a numeric-text VR (DS/IS) holding anything but a number, is not safe: the caller
    removes it."""
    texts = value_texts(value, vr, encodings)
    if UNPACKABLE in texts:
        return False
    if kb_vr in ("DS", "IS") and not _NUMBER_TEXT.fullmatch(texts[0]):
        return False
    # No term in the texts joined ("\n" is no letter or digit: a match in one text is a match there): no
    # span to weigh.
    if not phi.contains(texts[0] if len(texts) == 1 else "\n".join(texts)):
        return True
    return not any(significant(t[s.start:s.end]) for t in texts for s in phi.find(t))


def private_creator_of(ds: Dataset, tag: BaseTag) -> str | None:
    """The private creator string owning ``tag`` in ``ds`` (None when absent)."""
    creator_tag = BaseTag((tag & 0xFFFF0000) | ((tag >> 8) & 0xFF))
    creator_elem = ds._dict.get(creator_tag)
    if creator_elem is None or isinstance(creator_elem, RawDataElement):
        creator_elem = ds.get(creator_tag)  # absent, or still raw: pydicom converts it
    return None if creator_elem is None else _as_text(creator_elem.value)
