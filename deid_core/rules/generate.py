"""Generate the committed rule data from the read-only reference sources.

Why: the rule table must come from the standard and TCIA's KB, not be typed by hand, and the
committed data must be reproducible byte for byte (a test regenerates and compares). Run::

    python -m deid_core.rules.generate [--source DIR] [--out DIR]

Default source: ``<repo>/../shared/standard``; default output: this package directory. Writes
``ps315_table.json``, ``private_kb.json`` and ``SOURCE.md`` (edition, source hashes, counts and
the resolution semantics).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pydicom.datadict import RepeatersDictionary, dictionary_VR, keyword_for_tag

from deid_core.errors import ConfigError, RuleError
from deid_core.rules import (
    _PRIVATE_ORDER,
    COLUMN_PRECEDENCE,
    normalise_disposition,
    parse_private_signature,
    signature_text,
)

PS315_FILE = "ps315_e1_1_confidentiality_profile.json"
KB_FILE = "tcia_private_tag_kb_2024-02-01.csv"
TCIA_FILE = "tcia_deid_attribute_actions.json"
EDITION = "DICOM PS3.15 2024e, Table E.1-1 (innolitics/dicom-standard extraction)"
KB_EDITION = "TCIA Private Tag Knowledge Base, 2024-02-01"
_PKG = Path(__file__).resolve().parent
DEFAULT_SOURCE = _PKG.parent.parent.parent / "shared" / "standard"
_TAG = re.compile(r"\(([0-9A-Fa-fXx]{4}),([0-9A-Fa-fXx]{4})\)")
_TCIA_TAG = re.compile(r"\(0x([0-9A-Fa-fXx]{4}),\s*0x([0-9A-Fa-fXx]{4})\)")
_VALID_CODES = frozenset({"X", "Z", "D", "K", "C", "U", "X/Z", "X/D", "X/Z/D", "Z/D", "X/Z/U*"})


def _norm_tag(group: str, elem: str) -> str:
    """Hex digits upper case, repeat masks as lower-case x: '(50xx,xxxx)', '(0010,0010)'."""
    def one(s: str) -> str:
        return "".join("x" if ch in "xX" else ch.upper() for ch in s)

    return f"({one(group)},{one(elem)})"


def _keyword_vr(tag: str) -> tuple[str, str]:
    hexes = tag.strip("()").replace(",", "")
    if "x" in hexes:
        entry = RepeatersDictionary.get(hexes.replace("X", "x")) or RepeatersDictionary.get(hexes)
        if entry is None:
            return "", ""
        return str(entry[4]), str(entry[0])
    t = int(hexes, 16)
    try:
        return keyword_for_tag(t), dictionary_VR(t)
    except KeyError:
        return "", ""


def _tcia_lists(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    for list_name in sorted(data):
        for item in data[list_name]:
            m = _TCIA_TAG.fullmatch(item.strip())
            if m is None:
                continue  # the "(gggg,eeee) where gggg is odd" note: private handling is the KB's
            tag = _norm_tag(m.group(1), m.group(2))
            if tag in out and out[tag] != list_name:
                raise RuleError(f"TCIA lists disagree on {tag}")
            out[tag] = list_name
    return out


def build_table(source: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Normalised Table E.1-1 rows (codes per column, keyword, VR, TCIA list) sorted by tag."""
    raw = json.loads((source / PS315_FILE).read_text(encoding="utf-8"))
    tcia = _tcia_lists(source / TCIA_FILE)
    rows: list[dict[str, Any]] = []
    private_row: dict[str, Any] | None = None
    codes_seen: Counter[str] = Counter()
    for r in raw:
        codes = {c: str(r[c]).strip() for c in COLUMN_PRECEDENCE if r.get(c)}
        for c in codes.values():
            codes_seen[c] += 1
            if c not in _VALID_CODES:
                raise RuleError(f"unknown action code in Table E.1-1 row {r.get('id')}")
        m = _TAG.fullmatch(r["tag"].strip())
        if m is None:
            if "GGGG" in r["tag"].upper():
                private_row = {"tag": "(gggg,eeee) where gggg is odd", "name": r["name"], "codes": codes}
                continue
            raise RuleError(f"unparseable tag in Table E.1-1 row {r.get('id')}")
        tag = _norm_tag(m.group(1), m.group(2))
        keyword, vr = _keyword_vr(tag)
        row: dict[str, Any] = {"tag": tag, "name": r["name"], "keyword": keyword, "vr": vr,
                               "stdCompIOD": r.get("stdCompIOD", ""), "codes": codes}
        if tag in tcia:
            row["tcia"] = tcia[tag]
        rows.append(row)
    rows.sort(key=lambda x: x["tag"])
    if len({x["tag"] for x in rows}) != len(rows):
        raise RuleError("duplicate tag in Table E.1-1")
    table = {"edition": EDITION, "source": PS315_FILE, "tcia_lists": TCIA_FILE,
             "columns": list(COLUMN_PRECEDENCE), "private_attributes": private_row, "rows": rows}
    stats = {"rows": len(raw), "public_rules": len(rows), "tcia_tagged": sum(1 for x in rows if "tcia" in x)}
    stats.update({f"code {k}": v for k, v in sorted(codes_seen.items())})
    return table, stats


def read_kb(path: Path) -> list[tuple[str, str, str, str, str]]:
    """Every KB row as (signature, name, VR, raw disposition, disposition); fails on any bad row."""
    out = []
    with path.open(encoding="utf-8-sig", newline="") as fp:
        reader = csv.reader(fp)
        header = next(reader)
        expected = ["element_sig_pattern", "tag_name", "vr", "private_disposition"]
        if [h.strip() for h in header[:4]] != expected:
            raise RuleError("private tag KB has an unexpected header")
        for lineno, rec in enumerate(reader, start=2):
            if not rec or not "".join(rec).strip():
                continue
            if len(rec) < 4:
                raise RuleError(f"private tag KB line {lineno} has {len(rec)} fields")
            try:
                comps = parse_private_signature(rec[0])
            except RuleError as exc:
                raise RuleError(f"private tag KB line {lineno}: {exc}") from exc
            out.append((signature_text(comps), rec[1].strip(), rec[2].strip().upper(), rec[3],
                        normalise_disposition(rec[3])))
    return out


def build_kb(source: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """KB rows [signature, VR, disposition, name], one per (signature, VR); conflicts keep the safest."""
    rows = read_kb(source / KB_FILE)
    stats: dict[str, int] = {"rows": len(rows)}
    for raw in sorted(Counter(repr(r[3]) for r in rows).items()):
        stats[f"raw disposition {raw[0]}"] = raw[1]
    for disp, n in sorted(Counter(r[4] for r in rows).items()):
        stats[f"normalised disposition {disp}"] = n
    # One row per (signature, VR): TCIA sometimes rates one signature by VR (e.g. LO k, UN d).
    best: dict[tuple[str, str], tuple[str, str, str, str]] = {}
    conflicts = 0
    for sig, name, vr, _raw, disp in rows:
        key = (sig.lower(), vr)
        old = best.get(key)
        if old is None:
            best[key] = (sig, vr, disp, name)
            continue
        if old[2] != disp:
            conflicts += 1
        if _PRIVATE_ORDER[disp] < _PRIVATE_ORDER[old[2]]:
            best[key] = (sig, vr, disp, name)
    out_rows = [list(best[k]) for k in sorted(best)]
    by_sig: dict[str, set[str]] = {}
    for r in out_rows:
        by_sig.setdefault(r[0].lower(), set()).add(r[2])
    stats["unique (signature, VR) rows"] = len(out_rows)
    stats["unique signatures"] = len(by_sig)
    stats["signatures whose disposition depends on the VR"] = sum(1 for v in by_sig.values() if len(v) > 1)
    stats["duplicate rows (same signature and VR) with a conflicting disposition"] = conflicts
    stats["signatures ending in a public attribute"] = sum(
        1 for k in by_sig if parse_private_signature(k)[-1].creator is None
    )
    for disp, n in sorted(Counter(r[2] for r in out_rows).items()):
        stats[f"(signature, VR) rows with disposition {disp}"] = n
    kb = {"source": KB_FILE, "edition": KB_EDITION, "columns": ["signature", "vr", "disposition", "name"],
          "rows": out_rows}
    return kb, stats


def _dump(obj: dict[str, Any], list_key: str) -> str:
    """JSON with one list row per line (diffable, deterministic)."""
    head = {k: v for k, v in obj.items() if k != list_key}
    lines = [json.dumps(r, ensure_ascii=False, sort_keys=True) for r in obj[list_key]]
    text = json.dumps(head, ensure_ascii=False, sort_keys=True, indent=1)[:-2]
    text += f',\n "{list_key}": [\n' + ",\n".join(lines) + "\n ]\n}\n"
    return text


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_SEMANTICS = """\
## Resolution semantics

- Option precedence is the column order of Table E.1-1: basicProfile, rtnSafePrivOpt, rtnUIDsOpt,
  rtnDevIdOpt, rtnInstIdOpt, rtnPatCharsOpt, rtnLongFullDatesOpt, rtnLongModifDatesOpt,
  cleanDescOpt, cleanStructContOpt, cleanGraphOpt. The effective code of an attribute is the code
  of the last *selected* option column that lists it, else its basicProfile code (e.g. with
  rtnPatChars, Patient's Sex K overrides X; with rtnDevId + rtnLongModifDates a calibration date
  is shifted; with rtnPatChars + cleanDesc, Allergies is cleaned).
- `C` from rtnLongModifDatesOpt = modify dates -> `Action.SHIFT_DATE` (the composer shifts DA and
  the date part of DT and keeps TM). On the non-date VRs that column lists (OB timestamps, SH
  Timezone Offset From UTC) it cannot be applied and is ignored (the earlier code stays).
  `C` from any other column -> `Action.CLEAN`. `K` -> KEEP, `U` -> UID, `X` REMOVE, `Z` EMPTY,
  `D` DUMMY.
- Combination codes (basicProfile only) resolve to one behaviour. TCIA's supplied lists
  (`tcia_deid_attribute_actions.json`) choose when their choice is one of the alternatives:
  remove->X, empty->Z, replace/lookup/hashname->D, hashuid->U, process->K for an X/Z/U* sequence
  (kept; the UIDs inside are remapped by their own U rules) or ->D for a sequence whose
  alternatives include D. Otherwise (not listed, or TCIA's keep/incrementdate/time which are no
  alternative) the default: X/Z->Z, X/D->D, X/Z/D->D, Z/D->D (type 1/2 attributes stay present with
  non-identifying content), X/Z/U*->U for UI VR else Z. `Rule.source` records the decision.
  The anonymizer then applies PS3.15's "Z only where the IOD requires it" per place, beyond the table:
  OperatorsName (X in the table) is emptied in RT objects (type 2 in the RT Series module), and a
  Referenced Study Sequence (Z) is removed where it is type 3 (the top level, a Request Attributes
  Sequence): an empty type 3 sequence fails validation. `deidflow explain` prints both as a `where:` line.
- Profile `tcia-lists` (the tcia options): where TCIA's supplied lists name an attribute, their action
  wins over every option column: remove->X, empty->Z, replace/lookup/hashname->D, hashuid->U,
  keep/time->K, incrementdate->S (K where the VR holds no date), process->K (a sequence recursed, its
  contents by their own rules); a text description TCIA keeps that Clean Descriptors marks C is cleaned
  (C: TCIA's curators read what they keep; here the cleaner does, so a physician's name in ProtocolName
  goes and the clinical words stay). TCIA's lists and PS3.15's option columns disagree on about a hundred
  attributes (StationName and other device identity, comments that Clean Descriptors would clean,
  version dates of coding resources); the MIDI-B validator scores TCIA's choice.
- UIDs (`U`) are remapped by the composer regardless of options unless rtnUIDs is selected.
- Private attributes: basicProfile X. Without rtnSafePriv the effective table holds no private
  rules (all private elements are removed). With it, the TCIA KB decides per signature: `k` keep,
  `d` delete, `h` hash as UID, `o`/`oi` date offset (both -> `o`); `na`, empty or anything else
  -> `d`. Signatures are normalised (quotes repaired, hex lower case, element reduced to its low
  byte, creator stripped; creators compare case-insensitively; a few KB rows have an empty
  creator, kept as `""`). The data keeps one row per (signature, VR) because TCIA sometimes
  rates a signature by VR (e.g. LO k but UN d); duplicates with the same signature and VR keep
  the most conservative disposition (d > h > o > k). `private_rule(..., vr=None)` returns the
  most conservative disposition over all VRs, or the VR-specific one when `vr` is given (falling
  back to the conservative one). Lookup prefers the
  exact sequence path, then the path-less signature; enclosing private sequences in a path are
  matched by group + low byte. KB signatures that end in a public attribute inside a private
  sequence are kept in the data but left to the public rules.
- Not in the table: the caller keeps a public attribute and removes an unknown private one. What
  the composer (`deid_core/anonymizer.py`) still does to a public attribute the table does not list:
  sequences are recursed, UIDs remapped, dates shifted, free text (LT/ST/UT/UC/PN) cleaned; a short
  text (LO/SH/CS/AE: SegmentLabel, CodeMeaning, a nested DeidentificationMethod) loses the file's own
  identifiers (a code that is a clinical word, such as BodyPartExamined HEAD for a patient named Head,
  stays); a URL (UR, e.g. RetrieveURL, which names the source's hosts and original UIDs) and a binary
  element the DICOM dictionary does not know are removed. An LO element whose keyword says it holds typed
  text (`...Comment(s)`, `...Description`, `...Explanation`, `...Notes`, `...Remarks`: DoseComment,
  LUTExplanation, ContentDescription) is cleaned like free text. A date or date-time written with a text VR
  (AcquisitionDateTime as LO) is shifted by its dictionary VR.
- Beyond the table: PatientBirthDateInAlternativeCalendar, PatientDeathDateInAlternativeCalendar and the
  retired order numbers (0040,2006/2007, 0040,1006/1007) are removed; a kept private text value (`k`) that
  holds a typed PHI shape (a date, a phone number, an e-mail, a titled or cued name, a labelled ID) is
  removed; an SR TEXT item whose concept names a person's or an organisation's name, address or phone
  gets the placeholder; a private element the KB keeps (`k`) with a UID value is remapped like every UID;
  PatientAge over 89 years becomes `090Y` (HIPAA Safe Harbor aggregates ages over 89), the only change
  to a retained patient characteristic.
- UIDs of classes, transfer syntaxes and coding schemes (SOPClassUID, ReferencedSOPClassUID,
  CodingSchemeUID...) name a kind of object or a vocabulary and are kept, even outside the DICOM root,
  unless the same value is remapped elsewhere in the file (an instance UID in the wrong element). The
  file meta names the writer: ImplementationClassUID is pydicom's, ImplementationVersionName
  `DEIDFLOW_<version>` (PS3.10); it keeps only the elements PS3.10 requires (the source's AE titles,
  presentation addresses and private information are dropped).
- A kept text value (K: Retain Device Identity, Retain Patient Characteristics, or outside the table)
  that holds one of the file's own identifiers loses that part (the placeholder `[X]`, `X` in a code
  string), exactly as verification counts leaks: a word a device name shares with the patient's name
  ("BROWN_CT" for BROWN^ALICE) is a coincidence and stays. Such files used to be quarantined.
- Also replaced by dummies though no row lists them: LocalNamespaceEntityID at any depth (the
  organisation or system that issued an identifier, in IssuerOf...Sequence, AssigningFacilitySequence,
  Order Placer/Filler identifier sequences), and the CodeValue, CodeMeaning, LongCodeValue and
  URNCodeValue of PersonIdentificationCodeSequence items (a staff or licence number and the person's
  name; the sequence's D is otherwise applied by recursing, as for SR content).
"""


def _source_md(source: Path, table_stats: dict[str, int], kb_stats: dict[str, int]) -> str:
    lines = [
        "# Rule data: source and generation",
        "",
        "Generated by `python -m deid_core.rules.generate --source ../shared/standard` (run from the",
        "repository root); do not edit `ps315_table.json`, `private_kb.json` or this file by hand.",
        "`tests/test_private_kb.py` regenerates them when the source directory exists and requires",
        "byte-identical output.",
        "",
        f"- Standard: {EDITION}",
        f"- Private KB: {KB_EDITION} (as formatted in MIC-DKFZ/miccai2024_midi-b-submission)",
        "- TCIA attribute lists: tcia_deid_attribute_actions.json (TCIA's lists supplied to MIDI-B)",
        "",
        "| source file | sha256 |",
        "| --- | --- |",
    ]
    for name in (PS315_FILE, TCIA_FILE, KB_FILE):
        lines.append(f"| `{name}` | `{_sha(source / name)}` |")
    lines += ["", "## Counts", "", "Table E.1-1:", ""]
    lines += [f"- {k}: {v}" for k, v in table_stats.items()]
    lines += ["", "Private tag KB (every row parsed):", ""]
    lines += [f"- {k}: {v}" for k, v in kb_stats.items()]
    lines += ["", _SEMANTICS]
    return "\n".join(lines)


def generate(source: Path = DEFAULT_SOURCE, out: Path = _PKG) -> dict[str, dict[str, int]]:
    """Write the three generated files into ``out``; returns the counts (also in SOURCE.md)."""
    source = Path(source)
    for name in (PS315_FILE, TCIA_FILE, KB_FILE):
        if not (source / name).is_file():
            raise ConfigError(f"reference source file {name} not found in the source directory")
    table, t_stats = build_table(source)
    kb, k_stats = build_kb(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ps315_table.json").write_text(_dump(table, "rows"), encoding="utf-8", newline="\n")
    (out / "private_kb.json").write_text(_dump(kb, "rows"), encoding="utf-8", newline="\n")
    (out / "SOURCE.md").write_text(_source_md(source, t_stats, k_stats), encoding="utf-8", newline="\n")
    return {"table": t_stats, "private_kb": k_stats}


def main(argv: list[str] | None = None) -> int:
    """CLI entry: regenerate the rule data and print the counts."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--out", type=Path, default=_PKG)
    args = ap.parse_args(argv)
    stats = generate(args.source, args.out)
    for part, counts in stats.items():
        for k, v in counts.items():
            print(f"{part}: {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
