"""The de-identification rule table: what to do with each attribute, resolved from the standard.

Why a generated table: the actions come from DICOM PS3.15 Table E.1-1 (Basic Application Level
Confidentiality Profile and its option columns) and from TCIA's private tag knowledge base, never
typed by hand. ``python -m deid_core.rules.generate`` turns the read-only sources into
``ps315_table.json`` and ``private_kb.json`` (see ``SOURCE.md``); this module resolves them for one
profile + option set into a ``RuleTable`` that the composer asks once per element.

Resolution semantics (also in SOURCE.md):

* Option precedence follows the column order of Table E.1-1: basicProfile, rtnSafePrivOpt,
  rtnUIDsOpt, rtnDevIdOpt, rtnInstIdOpt, rtnPatCharsOpt, rtnLongFullDatesOpt,
  rtnLongModifDatesOpt, cleanDescOpt, cleanStructContOpt, cleanGraphOpt. The effective code of an
  attribute is the code of the *last* selected option column that lists it, else basicProfile.
  So with rtnPatChars PatientSex K overrides X; with rtnDevId + rtnLongModifDates a calibration
  date is shifted (C of the dates option wins over K of device identity); with rtnPatChars +
  cleanDesc, Allergies is cleaned.
* "C" from rtnLongModifDatesOpt means "modify dates" -> ``Action.SHIFT_DATE`` (the composer shifts
  DA and the date part of DT and keeps TM). On the few non-date VRs that column lists (OB
  timestamps, the SH timezone offset) it cannot be applied and is ignored (the earlier code
  stays). "C" from any other column -> ``Action.CLEAN``. K -> KEEP, U -> UID, X/Z/D as named.
* Combination codes of basicProfile resolve to ONE behaviour: TCIA's supplied attribute lists
  choose when their choice is one of the alternatives (remove->X, empty->Z, replace/lookup/
  hashname->D, hashuid->U, process->K for a U* sequence (kept; the UIDs inside are remapped by
  their own U rules) or D for a sequence whose alternatives include D); otherwise the default:
  X/Z->Z, X/D->D, X/Z/D->D, Z/D->D (type 1/2 attributes stay present with non-identifying
  content), X/Z/U*->U for UI VR else Z. The decision is recorded in ``Rule.source``.
* Private attributes (basicProfile X): without rtnSafePriv the table holds no private rules and
  ``private_rule`` returns None for everything (caller removes). With it, the TCIA KB decides:
  k keep, d delete, h hash as UID, o/oi date offset; na, empty or anything else -> d. The KB
  sometimes rates one signature by VR (LO k, UN d): without ``vr`` ``private_rule`` returns the
  most conservative disposition (d > h > o > k), with ``vr`` the VR-specific one.
* Nothing in the table: the caller keeps a public attribute and removes an unknown private one.
* UIDs ("U") are remapped by the composer regardless of options unless rtnUIDs is selected.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, TextIO

from deid_core.errors import ConfigError, RuleError

__all__ = [
    "Action",
    "Rule",
    "PrivateRule",
    "RuleTable",
    "PROFILES",
    "OPTION_NAMES",
    "OPTION_CODES",
    "COLUMN_PRECEDENCE",
    "load_rule_table",
    "parse_private_signature",
    "SigComponent",
]

_HERE = Path(__file__).resolve().parent
TABLE_FILE = _HERE / "ps315_table.json"
PRIVATE_KB_FILE = _HERE / "private_kb.json"


class Action(str, Enum):  # noqa: UP042 - the agreed interface; str() stays 'Action.X'
    """One behaviour per attribute, resolved from the standard's action codes."""

    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    KEEP = "K"
    CLEAN = "C"
    UID = "U"
    SHIFT_DATE = "S"


@dataclass(frozen=True)
class Rule:
    """The resolved action for one public attribute (or repeating-group mask) and why."""

    tag: str
    name: str
    action: Action
    source: str


@dataclass(frozen=True)
class PrivateRule:
    """TCIA KB disposition for one private element signature (k keep, d delete, h hash UID, o offset)."""

    signature: str
    vr: str
    disposition: str


# (short name, CID 7050 code, code meaning, column in Table E.1-1 or "" when it has none),
# in CID 7050 code order, which is the canonical order of ``RuleTable.options``.
_OPTION_DEFS: tuple[tuple[str, str, str, str], ...] = (
    ("cleanPixel", "113101", "Clean Pixel Data Option", ""),
    ("cleanRecogVisual", "113102", "Clean Recognizable Visual Features Option", ""),
    ("cleanGraph", "113103", "Clean Graphics Option", "cleanGraphOpt"),
    ("cleanStructCont", "113104", "Clean Structured Content Option", "cleanStructContOpt"),
    ("cleanDesc", "113105", "Clean Descriptors Option", "cleanDescOpt"),
    ("rtnLongFullDates", "113106", "Retain Longitudinal Temporal Information Full Dates Option",
     "rtnLongFullDatesOpt"),
    ("rtnLongModifDates", "113107", "Retain Longitudinal Temporal Information Modified Dates Option",
     "rtnLongModifDatesOpt"),
    ("rtnPatChars", "113108", "Retain Patient Characteristics Option", "rtnPatCharsOpt"),
    ("rtnDevId", "113109", "Retain Device Identity Option", "rtnDevIdOpt"),
    ("rtnUIDs", "113110", "Retain UIDs Option", "rtnUIDsOpt"),
    ("rtnSafePriv", "113111", "Retain Safe Private Option", "rtnSafePrivOpt"),
    ("rtnInstId", "113112", "Retain Institution Identity Option", "rtnInstIdOpt"),
)

PROFILES: dict[str, tuple[str, ...]] = {
    "basic": (),
    "tcia": ("cleanPixel", "cleanDesc", "rtnLongModifDates", "rtnPatChars", "rtnDevId", "rtnSafePriv"),
    # the same options, but where TCIA's supplied lists name an attribute their action wins over the option
    # columns: what TCIA's curation does, and what the MIDI-B validator scores (``resolve_row``)
    "tcia-lists": ("cleanPixel", "cleanDesc", "rtnLongModifDates", "rtnPatChars", "rtnDevId", "rtnSafePriv"),
}
#: Profiles in which TCIA's supplied attribute lists take precedence over the option columns.
TCIA_FIRST_PROFILES = frozenset({"tcia-lists"})
#: TCIA list -> action under those profiles ("process": a sequence recursed, its contents by their own rules;
#: "time": kept; "incrementdate": shifted, kept where the VR holds no date).
_TCIA_FIRST = {"remove": Action.REMOVE, "empty": Action.EMPTY, "replace": Action.DUMMY, "lookup": Action.DUMMY,
               "hashname": Action.DUMMY, "hashuid": Action.UID, "keep": Action.KEEP, "time": Action.KEEP,
               "incrementdate": Action.SHIFT_DATE, "process": Action.KEEP}

# Short option name -> column of Table E.1-1 ("" for the pixel options, which have no column:
# they are carried out by the pixel stage, not by attribute rules).
OPTION_NAMES: dict[str, str] = {short: col for short, _c, _m, col in _OPTION_DEFS}

OPTION_CODES: dict[str, tuple[str, str]] = {"basic": ("113100", "Basic Application Confidentiality Profile")}
OPTION_CODES.update({short: (code, meaning) for short, code, meaning, _col in _OPTION_DEFS})

# Columns in the order of the standard's table; a later selected column overrides an earlier one.
COLUMN_PRECEDENCE: tuple[str, ...] = (
    "basicProfile",
    "rtnSafePrivOpt",
    "rtnUIDsOpt",
    "rtnDevIdOpt",
    "rtnInstIdOpt",
    "rtnPatCharsOpt",
    "rtnLongFullDatesOpt",
    "rtnLongModifDatesOpt",
    "cleanDescOpt",
    "cleanStructContOpt",
    "cleanGraphOpt",
)

_CANONICAL = tuple(short for short, _c, _m, _col in _OPTION_DEFS)


def _alias_map() -> dict[str, str]:
    """Every accepted spelling (short, column, CID meaning with/without 'Option', code) -> short name."""
    out: dict[str, str] = {}
    for short, code, meaning, col in _OPTION_DEFS:
        names = [short, meaning, meaning.removesuffix(" Option"), code]
        if col:
            names.append(col)
        if short.endswith("Opt"):
            names.append(short)
        else:
            names.append(short + "Opt")
        for n in names:
            out[n.strip().lower()] = short
    return out


_ALIASES = _alias_map()

_SINGLE = {"X": Action.REMOVE, "Z": Action.EMPTY, "D": Action.DUMMY, "K": Action.KEEP, "U": Action.UID,
           "C": Action.CLEAN}
_COMBO_DEFAULT = {"X/Z": "Z", "X/D": "D", "X/Z/D": "D", "Z/D": "D"}
_TCIA_CHOICE = {"remove": "X", "empty": "Z", "replace": "D", "lookup": "D", "hashname": "D", "hashuid": "U",
                "keep": "K", "incrementdate": "S", "time": "S"}
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_PRIVATE_ORDER = {"d": 0, "h": 1, "o": 2, "k": 3}  # most conservative first
_PRIV_MARK = 1 << 32  # marks a private path component normalised to (group, low byte)


def canonical_options(options: Sequence[str]) -> tuple[str, ...]:
    """Resolve option aliases to short names in canonical (CID 7050) order; ConfigError if unknown."""
    found: set[str] = set()
    for name in options:
        short = _ALIASES.get(str(name).strip().lower())
        if short is None:
            raise ConfigError(
                f"unknown de-identification option {name!r}; valid options: {', '.join(_CANONICAL)}"
                " (column names and CID 7050 meanings are accepted too)"
            )
        found.add(short)
    return tuple(s for s in _CANONICAL if s in found)


# ---------------------------------------------------------------------------------------------
# Private signature parsing (shared by the generator, the loader and ``explain``)


@dataclass(frozen=True)
class SigComponent:
    """One step of a private signature: a public tag (creator None) or (group, creator, low byte)."""

    group: int
    element: int  # full element for public tags, low byte for private ones
    creator: str | None

    @property
    def text(self) -> str:
        """Normalised text: ``(0008,1084)`` or ``(0019,"SIEMENS MR HEADER",0c)``."""
        if self.creator is None:
            return f"({self.group:04x},{self.element:04x})"
        return f'({self.group:04x},"{self.creator}",{self.element:02x})'

    @property
    def path_key(self) -> int:
        """Key used to match an enclosing sequence given as an int tag (creator not carried by ints)."""
        if self.creator is None:
            return (self.group << 16) | self.element
        return _PRIV_MARK | (self.group << 16) | self.element


_DEPTH = re.compile(r"\[\s*<\s*\d+\s*>\s*\]")
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_PRIV_ELEM = re.compile(r"(?:[0-9a-fA-F]{2}|[xX]{2})?([0-9a-fA-F]{2})")


def _parse_component(part: str) -> SigComponent:
    s = part.strip()
    if not (s.startswith("(") and s.endswith(")")):
        raise RuleError("private signature component is not parenthesised")
    body = s[1:-1]
    first = body.find(",")
    last = body.rfind(",")
    if first < 0:
        raise RuleError("private signature component has no element")
    group_txt = body[:first].strip()
    if not _HEX4.fullmatch(group_txt):
        raise RuleError("private signature component has a malformed group")
    group = int(group_txt, 16)
    elem_txt = body[last + 1:].strip().strip('"').strip()
    if first == last:  # public tag inside a private sequence path
        if not _HEX4.fullmatch(elem_txt):
            raise RuleError("private signature component has a malformed element")
        return SigComponent(group, int(elem_txt, 16), None)
    creator = body[first + 1:last].strip().strip('"').strip()
    m = _PRIV_ELEM.fullmatch(elem_txt)
    if m is None:
        raise RuleError("private signature component has a malformed element")
    if group % 2 == 0:
        raise RuleError("private signature component has an even group")
    return SigComponent(group, int(m.group(1), 16), creator)


def parse_private_signature(text: str) -> tuple[SigComponent, ...]:
    """Parse a KB signature tolerantly (lost/missing quotes, ``100c``/``xx0c`` elements, paths).

    Sequence paths are written ``(0008,1084)[<0>](312f,"Creator",10)``: enclosing sequences first.
    Raises RuleError (naming the problem, not the text) when a component cannot be read.
    """
    parts = [p for p in _DEPTH.split(text.strip()) if p.strip()]
    if not parts:
        raise RuleError("empty private signature")
    return tuple(_parse_component(p) for p in parts)


def signature_text(comps: Sequence[SigComponent]) -> str:
    """Normalised signature text, depth markers renumbered from 0."""
    out = comps[0].text
    for i, c in enumerate(comps[1:]):
        out += f"[<{i}>]" + c.text
    return out


def normalise_disposition(raw: str) -> str:
    """KB disposition -> k/d/h/o (oi -> o; na, empty or anything unknown -> d, the safe choice)."""
    d = raw.strip().lower()
    if d == "oi":
        return "o"
    return d if d in _PRIVATE_ORDER else "d"


def _path_key(tag: int) -> int:
    group, elem = tag >> 16, tag & 0xFFFF
    if group % 2 == 1 and elem >= 0x1000:
        return _PRIV_MARK | (group << 16) | (elem & 0xFF)
    return tag


# ---------------------------------------------------------------------------------------------
# Data loading


@lru_cache(maxsize=1)
def _table_data() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError("rule table ps315_table.json is missing or unreadable; regenerate it") from exc
    return data


@lru_cache(maxsize=1)
def _private_data() -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(PRIVATE_KB_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError("private tag KB private_kb.json is missing or unreadable; regenerate it") from exc
    return data


def _mask_parts(tag: str) -> tuple[int, int]:
    """'(50xx,xxxx)' -> (and-mask, value) over the 32-bit tag."""
    hexes = tag.strip("()").replace(",", "")
    mask = int("".join("0" if ch in "xX" else "F" for ch in hexes), 16)
    value = int("".join("0" if ch in "xX" else ch for ch in hexes), 16)
    return mask, value


#: Text VRs a kept description is cleaned in under tcia-lists (binary ones are kept as TCIA's list says).
_CLEANABLE_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})

#: Public attributes PS3.15's table does not list that still hold the patient's dates or the order's numbers:
#: removed beyond the table (an audit found them kept verbatim). Values say why (``deidflow explain``).
REMOVED_BEYOND_TABLE: dict[int, str] = {
    0x00100033: "a birth date (in another calendar)",
    0x00100034: "a death date (in another calendar)",
    0x00402006: "an order number (retired form)",
    0x00402007: "an order number (retired form)",
    0x00401006: "an order number (retired form)",
    0x00401007: "an order number (retired form)",
}
#: Keywords of typed text: an untabled LO element named so (DoseComment, LUTExplanation,
#: WindowCenterWidthExplanation, SubstanceAdministrationNotes...) is cleaned like a C descriptor, as untabled
#: LT/ST/UT already are (an audit found "Approved by Dr Petra Lindqvist 2/11/2003" kept in five of them).
DESCRIPTIVE_KEYWORD = re.compile(r"(?:Comments?|Description|Explanation|Notes|Remarks)$")


def resolve_row(row: dict[str, Any], columns: frozenset[str], tcia_first: bool = False) -> tuple[Action, str]:
    """Resolve one Table E.1-1 row for the selected columns to an Action and a provenance text.

    ``tcia_first`` (profile tcia-lists): an attribute TCIA's supplied lists name takes the list's action,
    whatever the option columns say (StationName: removed, not kept by Retain Device Identity)."""
    codes: dict[str, str] = row["codes"]
    vr: str = row.get("vr", "")
    tcia_action = _TCIA_FIRST.get(row.get("tcia") or "") if tcia_first else None
    if tcia_action is not None:
        if tcia_action is Action.SHIFT_DATE and vr.split(" or ")[0] not in ("DA", "DT"):
            return Action.KEEP, f"TCIA {row['tcia']} list first (VR {vr} holds no date: kept)"
        if tcia_action is Action.KEEP and "cleanDescOpt" in columns and codes.get("cleanDescOpt") == "C" \
                and vr.split(" or ")[0] in _CLEANABLE_TEXT_VRS:
            # A description TCIA keeps (after its curators read it) is cleaned: PHI out, clinical words kept.
            # Kept verbatim, "CHEST ROUTINE DR MILLICENT" leaked a physician's name (MIDI-B-like audit).
            return Action.CLEAN, f"TCIA {row['tcia']} list first; cleanDescOpt=C cleans what is kept"
        basic = codes.get("basicProfile", "")
        # the Basic Profile's combination stays on record: X/Z still means "empty where the IOD requires it"
        # (OperatorsName in RT objects: ``Anonymizer._required_empty``)
        return tcia_action, f"TCIA {row['tcia']} list first" + (f" (basicProfile={basic})" if "/" in basic else "")
    basic = codes["basicProfile"]
    notes = []
    if basic in _SINGLE:
        code = basic
        notes.append(f"basicProfile={basic}")
    else:
        alts = set(basic.replace("*", "").split("/"))
        tcia = row.get("tcia")
        choice = _TCIA_CHOICE.get(tcia or "")
        if tcia == "process":
            choice = "K" if "U*" in basic else ("D" if "D" in alts else None)
        if choice is not None and (choice in alts or (choice == "K" and "U*" in basic)):
            code = choice
            why = f"TCIA {tcia} list"
            if tcia == "process" and choice == "K":
                why += ": sequence kept, UIDs inside remapped by their own U rules"
        else:
            code = _COMBO_DEFAULT.get(basic) or ("U" if vr == "UI" else "Z")
            why = "default" + (f"; TCIA {tcia} list is not an alternative" if tcia else "")
        notes.append(f"basicProfile={basic} → {code} ({why})")
    action = _SINGLE[code]
    for col in COLUMN_PRECEDENCE[1:]:
        if col not in columns or col not in codes:
            continue
        c = codes[col]
        if col == "rtnLongModifDatesOpt" and c == "C":
            if vr not in _DATE_VRS:
                notes.append(f"{col}=C ignored (VR {vr} cannot be date-shifted)")
                continue
            action = Action.SHIFT_DATE
            notes.append(f"{col}=C → S (shift dates)")
            continue
        action = _SINGLE[c]
        notes.append(f"{col}={c} overrides → {c}")
    return action, "; ".join(notes)


class RuleTable:
    """The effective rules of one profile + options: public by tag, private by KB signature."""

    def __init__(self, profile: str, options: tuple[str, ...]) -> None:
        self.profile = profile
        self.options = options
        columns = frozenset(OPTION_NAMES[o] for o in options if OPTION_NAMES[o]) | {"basicProfile"}
        data = _table_data()
        self._exact: dict[int, Rule] = {}
        self._masks: dict[int, list[tuple[int, int, Rule]]] = {}
        self._by_keyword: dict[str, Rule] = {}
        self._by_tagtext: dict[str, Rule] = {}
        self._meta: dict[str, tuple[str, str]] = {}  # tag text -> (keyword, vr)
        self._public: list[Rule] = []
        for row in data["rows"]:
            action, source = resolve_row(row, columns, profile in TCIA_FIRST_PROFILES)
            rule = Rule(tag=row["tag"], name=row["name"], action=action, source=source)
            self._public.append(rule)
            self._by_tagtext[rule.tag.lower()] = rule
            self._meta[rule.tag] = (row.get("keyword", ""), row.get("vr", ""))
            if row.get("keyword"):
                self._by_keyword[row["keyword"]] = rule
            if "x" in rule.tag.lower():
                mask, value = _mask_parts(rule.tag)
                self._masks.setdefault(value >> 24, []).append((mask, value, rule))
            else:
                self._exact[int(rule.tag.strip("()").replace(",", ""), 16)] = rule
        for lst in self._masks.values():  # most specific mask first
            lst.sort(key=lambda m: (-bin(m[0]).count("1"), m[1]))
        # keys: (group, creator lower, low byte, path keys) and the same + (VR,)
        self._private: dict[tuple[Any, ...], PrivateRule] = {}
        self._private_vr: dict[tuple[Any, ...], PrivateRule] = {}
        self._private_names: dict[str, str] = {}
        self._private_rows: list[tuple[PrivateRule, str]] = []
        if "rtnSafePriv" in options:
            self._load_private()

    def _load_private(self) -> None:
        for sig, vr, disp, name in _private_data()["rows"]:
            comps = parse_private_signature(sig)
            last = comps[-1]
            rule = PrivateRule(signature=sig, vr=vr, disposition=disp)
            self._private_rows.append((rule, name))
            self._private_names.setdefault(sig, name)
            if last.creator is None:
                continue  # public attribute inside a private sequence: left to the public rules
            key = (last.group, last.creator.lower(), last.element, tuple(c.path_key for c in comps[:-1]))
            # Several rows can share a key (VR variants; distinct KB paths collapse because the
            # creators of enclosing sequences are not compared): keep the most conservative
            # disposition, ties broken by signature text and VR.
            for target, k in ((self._private, key), (self._private_vr, (*key, vr))):
                old = target.get(k)
                if old is None or (_PRIVATE_ORDER[disp], sig, vr) < (
                    _PRIVATE_ORDER[old.disposition], old.signature, old.vr
                ):
                    target[k] = rule

    def rule_for(self, tag: int) -> Rule | None:
        """The rule for a public tag (exact, then repeating-group mask); None = not in the table."""
        rule = self._exact.get(tag)
        if rule is not None:
            return rule
        masks = self._masks.get(tag >> 24)
        if masks is not None and not (tag >> 16) & 1:
            for mask, value, r in masks:
                if tag & mask == value:
                    return r
        return None

    def private_rule(
        self, group: int, creator: str, element_offset: int, path: tuple[int, ...] = (), vr: str | None = None
    ) -> PrivateRule | None:
        """KB rule for a private element: exact sequence path first, then the path-less signature.

        ``path`` holds the int tags of enclosing sequences, outermost first; private ones are
        matched by group and low byte (an int tag does not carry its creator). Without ``vr`` the
        most conservative disposition over the KB's VR variants is returned; with it, the
        VR-specific row when the KB has one. None = unknown (the caller removes the element).
        """
        base = (group, creator.strip().lower(), element_offset & 0xFF)
        if not path and not vr:  # the common case: one dict lookup
            return self._private.get((*base, ()))
        keys = [(*base, tuple(_path_key(t) for t in path)), (*base, ())] if path else [(*base, ())]
        for key in keys:
            if vr:
                rule = self._private_vr.get((*key, vr))
                if rule is not None:
                    return rule
            rule = self._private.get(key)
            if rule is not None:
                return rule
        return None

    @property
    def retain_safe_private(self) -> bool:
        """Whether private elements are kept according to the KB (else all are removed)."""
        return "rtnSafePriv" in self.options

    def rule_by_keyword(self, keyword: str) -> Rule | None:
        """Rule of a public attribute by its DICOM keyword (used by ``explain``)."""
        return self._by_keyword.get(keyword)

    def rule_by_tag_text(self, tag: str) -> Rule | None:
        """Rule by the standard's tag text, e.g. ``(60xx,3000)`` (case-insensitive)."""
        return self._by_tagtext.get(tag.strip().lower())

    def private_variants(self, signature: str) -> list[PrivateRule]:
        """All KB rows (one per VR) of a normalised signature, for ``explain``."""
        low = signature.lower()
        return [r for r, _n in self._private_rows if r.signature.lower() == low]

    def private_name(self, signature: str) -> str:
        """KB attribute name of a private signature ('' if unknown)."""
        return self._private_names.get(signature, "")

    def keyword_vr(self, tag: str) -> tuple[str, str]:
        """(keyword, VR) recorded for a public rule's tag text."""
        return self._meta.get(tag, ("", ""))

    def method_codes(self) -> list[tuple[str, str]]:
        """CID 7050 (code, meaning) of the profile and exactly the applied options, basic first."""
        return [OPTION_CODES["basic"], *(OPTION_CODES[o] for o in self.options)]

    def method_values(self) -> list[str]:
        """DeidentificationMethod values (each ≤ 64 chars): profile + table hash, then option names."""
        head = f"deidflow {self.profile} rules {self.sha256[:12]}"
        values = [head, OPTION_CODES["basic"][1], *(OPTION_CODES[o][1] for o in self.options)]
        return [v[:64] for v in values]

    def method_text(self) -> str:
        """DeidentificationMethod (LO, multi-valued, backslash-separated) naming profile + options."""
        return "\\".join(self.method_values())

    def rows(self) -> Iterator[dict[str, str]]:
        """The whole effective table, public rules then private ones, as flat string dicts."""
        for r in self._public:
            kw, vr = self._meta[r.tag]
            yield {"kind": "public", "tag": r.tag, "keyword": kw, "name": r.name, "vr": vr,
                   "action": r.action.value, "source": r.source}
        for p, name in self._private_rows:
            yield {"kind": "private", "tag": p.signature, "keyword": "", "name": name, "vr": p.vr,
                   "action": p.disposition, "source": "TCIA private tag KB 2024-02-01"}

    def to_csv(self, fp: TextIO) -> None:
        """Write the whole effective table (public + private) as CSV with a header row."""
        w = csv.DictWriter(fp, fieldnames=["kind", "tag", "keyword", "name", "vr", "action", "source"],
                           lineterminator="\n")
        w.writeheader()
        for row in self.rows():
            w.writerow(row)

    @cached_property
    def sha256(self) -> str:
        """Hash of the effective table (profile, options, public + private rules)."""
        buf = io.StringIO()
        buf.write(f"profile={self.profile}\noptions={','.join(self.options)}\n")
        self.to_csv(buf)
        return hashlib.sha256(buf.getvalue().encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return f"RuleTable(profile={self.profile!r}, options={self.options!r})"


@lru_cache(maxsize=32)
def _load_cached(profile: str, options: tuple[str, ...]) -> RuleTable:
    return RuleTable(profile, options)


def load_rule_table(profile: str = "tcia", options: Sequence[str] | None = None) -> RuleTable:
    """The cached table of a profile; explicit options are ADDED to the profile's own options."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown de-identification profile {profile!r}; valid: {', '.join(PROFILES)}")
    extra: Sequence[str] = () if options is None else options
    if isinstance(extra, str):
        extra = (extra,)
    return _load_cached(profile, canonical_options([*PROFILES[profile], *extra]))
