"""Every public attribute of TCIA's supplied lists, planted one at a time, against what the list says.

    .venv/bin/python bench/tcia_lists.py [--profile tcia|tcia-lists|both] [--show-failures N]

TCIA gave MIDI-B participants lists of attributes by action (remove, empty, keep, hashuid, incrementdate,
time, replace, lookup, hashname, process); the MIDI-B validator scores outputs against TCIA's curation,
which follows them. For each attribute the generated rule table marks with a TCIA list (``ps315_table.json``,
field ``tcia``), a value of its VR is planted in pydicom's CT_small.dcm, the file goes through
``deidentify_file``, and the output element is checked:

* remove: absent; empty: absent or zero length; keep, time: unchanged;
* incrementdate: a date moved by the file's own shift (StudyDate's), the time of a DT kept;
* hashuid: a different valid UID; replace, lookup, hashname: present, different, not empty;
* process: a sequence still present with its item (its contents follow their own rules);
* and in every case: the file is written (a quarantine loses every check of a file).

Prints pass/fail per list and profile. The default profile ``tcia`` follows PS3.15's option columns where
they and TCIA's lists disagree (Retain Device Identity keeps StationName, Clean Descriptors cleans
comments TCIA removes); ``tcia-lists`` lets the lists decide.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydicom  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.datadict import dictionary_VR, keyword_for_tag  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402

from deid_core.config import DeidConfig  # noqa: E402
from deid_core.pipeline import deidentify_file  # noqa: E402
from deid_core.rules import PRIVATE_KB_FILE  # noqa: E402

KEY = b"tcia-lists-bench-key-0123456789"
TABLE_FILE = PRIVATE_KB_FILE.with_name("ps315_table.json")
#: Identifying values by VR (a third party's name, serials, dates): what a list that removes or replaces
#: them must not leave. Keep-list attributes get a neutral value of the VR instead.
PLANT: dict[str, object] = {
    "AE": "CTSCAN01", "AS": "045Y", "CS": "CTSCANNER01", "DA": "20190417", "DS": "12.5", "DT": "20190417093015",
    "FD": 1.5, "FL": 1.5, "IS": "7", "LO": "SN-48213-B", "LT": "Call Dr Alan Grant at 555-0142",
    "OB": b"SN48213\x00", "OW": b"SN48213\x00", "PN": "GRANT^ALAN", "SH": "CTSCAN01", "SL": 7, "SS": 7,
    "ST": "Call Dr Alan Grant at 555-0142", "TM": "093015", "UC": "XRS-48213", "UL": 7, "UN": b"SN48213\x00",
    "UR": "https://pacs.example.org/wado?sn=48213", "US": 7, "UT": "Call Dr Alan Grant at 555-0142",
    "UV": 7, "SV": 7,
}
NEUTRAL: dict[str, object] = {"CS": "NEUTRAL", "LO": "NEUTRAL", "SH": "NEUTRAL", "ST": "Neutral text",
                              "LT": "Neutral text", "UT": "Neutral text", "UC": "NEUTRAL", "PN": "NEUTRAL",
                              "AE": "NEUTRAL"}
#: Attributes that make the file another kind of file or unreadable when planted: checked only as they are.
STRUCTURAL = frozenset({0x00080016, 0x00080018, 0x00280010, 0x00280011, 0x00280100, 0x00280101, 0x00280102,
                        0x00280103, 0x00280002, 0x00280004, 0x7FE00010, 0x00080005})


def _tag(text: str) -> int:
    return int(text[1:5] + text[6:10], 16)


def listed() -> list[tuple[int, str, str]]:
    """(tag, VR, TCIA list) of every public, instantiable attribute the table marks with a TCIA list."""
    rows = json.loads(TABLE_FILE.read_text(encoding="utf-8"))["rows"]
    out = []
    for row in rows:
        lst, text = row.get("tcia"), row["tag"]
        if not lst or "x" in text.lower() or text.startswith("(0000,") or text.startswith("(0002,"):
            continue
        tag = _tag(text)
        try:
            vr = dictionary_VR(tag).split(" or ")[0]
        except KeyError:
            continue
        out.append((tag, vr, lst))
    return out


def _item() -> Dataset:
    it = Dataset()
    it.CodeValue, it.CodingSchemeDesignator, it.CodeMeaning = "48213", "99LOCAL", "Grant, Alan"
    it.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.48213"
    return it


def _shift(before: str, after: str) -> int:
    from datetime import date

    d0 = date(int(before[:4]), int(before[4:6]), int(before[6:8]))
    d1 = date(int(after[:4]), int(after[4:6]), int(after[6:8]))
    return (d1 - d0).days


def check(tag: int, vr: str, lst: str, base: Dataset, work: Path, profile: str) -> tuple[bool, str]:
    """Plant, de-identify, compare: (passed, what was seen)."""
    ds = copy.deepcopy(base)  # Dataset.copy() shares the element dict with ``base``
    planted: object = None
    if tag not in STRUCTURAL and not (lst in ("keep", "time") and tag in ds):
        if vr == "SQ":
            planted = Sequence([_item()])
        elif lst == "hashuid" or vr == "UI":
            planted = f"1.2.826.0.1.3680043.8.498.{tag}"
        else:
            planted = NEUTRAL.get(vr, PLANT.get(vr)) if lst in ("keep", "time") else PLANT.get(vr)
        if planted is None:
            return True, "skipped (VR)"
        ds.add_new(tag, vr, planted)
    original = ds[tag].value if tag in ds else None
    src = work / "in" / f"{tag:08X}.dcm"
    src.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(src, enforce_file_format=True)
    out = deidentify_file(src, DeidConfig(key=KEY, output_dir=work / "out", profile=profile))
    if out.status != "written":
        return False, f"quarantined ({out.reason})"
    res = pydicom.dcmread(work / "out" / out.output_path)
    elem = res.get(tag) if tag in res else None
    value = None if elem is None else elem.value
    empty = value in (None, "", b"") or (vr == "SQ" and not len(value))
    if lst == "remove":
        return elem is None, "absent" if elem is None else "present"
    if lst == "empty":
        return elem is None or empty, "absent" if elem is None else ("empty" if empty else "a value")
    if original is None:
        return elem is None, "not planted"
    if lst in ("keep", "time"):
        return value == original, "unchanged" if value == original else "changed"
    if lst == "incrementdate":
        if vr not in ("DA", "DT"):
            return value == original, "kept" if value == original else "changed"
        if empty:
            return False, "emptied or removed"
        moved = _shift(str(original), str(value)) == _shift(str(ds.StudyDate), str(res.StudyDate))
        kept_time = vr != "DT" or str(value)[8:] == str(original)[8:]
        return moved and kept_time, "shifted" if moved and kept_time else f"{value!r}"
    if lst == "hashuid":
        ok = not empty and str(value) != str(original) and re.fullmatch(r"[0-9]+(\.[0-9]+)*", str(value))
        return bool(ok), "remapped" if ok else f"{value!r}"[:40]
    if lst in ("replace", "lookup", "hashname"):
        return not empty and value != original, "replaced" if not empty and value != original else "kept or empty"
    if lst == "process":
        return elem is not None and not empty, "recursed" if elem is not None and not empty else "emptied/removed"
    return True, f"list {lst} not checked"


def sweep(profile: str, work: Path) -> tuple[Counter[tuple[str, bool]], list[tuple[str, str, str]]]:
    """Pass/fail counts per TCIA list, and the failures (keyword, list, what was seen)."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    counts: Counter[tuple[str, bool]] = Counter()
    failures = []
    for tag, vr, lst in listed():
        ok, seen = check(tag, vr, lst, base, work / profile, profile)
        counts[(lst, ok)] += 1
        if not ok:
            failures.append((keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})", lst, seen))
    return counts, failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="both", choices=["tcia", "tcia-lists", "both"])
    ap.add_argument("--show-failures", type=int, default=20, metavar="N", help="list up to N failures per profile")
    args = ap.parse_args(argv)
    profiles = ["tcia", "tcia-lists"] if args.profile == "both" else [args.profile]
    with tempfile.TemporaryDirectory(prefix="deidflow-tcia-lists-") as tmp:
        for profile in profiles:
            counts, failures = sweep(profile, Path(tmp))
            lists = sorted({lst for lst, _ok in counts})
            total = sum(counts.values())
            passed = sum(v for (_l, ok), v in counts.items() if ok)
            print(f"profile {profile}: {passed}/{total} attributes as TCIA's lists say")
            print("  " + "  ".join(f"{lst} {counts[(lst, True)]}/{counts[(lst, True)] + counts[(lst, False)]}"
                                   for lst in lists))
            for kw, lst, seen in failures[:args.show_failures]:
                print(f"    {lst:13s} {kw}: {seen}")
            if len(failures) > args.show_failures:
                print(f"    ... {len(failures) - args.show_failures} more")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
