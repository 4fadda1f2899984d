"""Leak verification: search a de-identified dataset for the identifiers captured at the start.

Every element is searched — top level, sequences at any depth, private blocks, file meta — with
the same flexible matcher used for cleaning (case, order and separator variants). A hit means the
file must not be released: the caller quarantines it. Only the leak's class and element are
reported, never its value.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from deid_core.terms import DATE, TermMatcher

_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT", "UN",
                       "OB"})
# Elements whose values are ours (markers) or legitimately retained and cannot be a patient's.
_SKIP = frozenset({0x00120063, 0x00120062, 0x00280301})


@dataclass(frozen=True)
class Leak:
    """One identifier found in an output: its kind and where (tag path), never the text."""

    kind: str
    element: str

    def describe(self) -> str:
        return f"{self.kind} in {self.element}"


def find_leaks(ds: Dataset, matcher: TermMatcher, *, include_dates: bool = False) -> list[Leak]:
    """Leaks of the matcher's terms in ``ds`` and its file meta.

    Original dates are skipped by default: dates are shifted, and an unrelated shifted date may
    coincide with an original one, which is not a leak of this patient's identity.
    """
    leaks: list[Leak] = []

    def visit(d: Dataset, prefix: str) -> None:
        for elem in d:
            where = f"{prefix}({elem.tag.group:04X},{elem.tag.element:04X})"
            if elem.VR == "SQ":
                for i, item in enumerate(elem.value or []):
                    visit(item, f"{where}[{i}]>")
                continue
            if int(elem.tag) in _SKIP or elem.VR not in _TEXT_VRS or elem.tag == 0x7FE00010:
                continue
            value = elem.value
            if isinstance(value, bytes):
                if len(value) > 4096:
                    continue
                texts = [value.decode("latin-1", "replace")]
            elif isinstance(value, list | MultiValue):
                texts = [str(v) for v in value]
            else:
                texts = [str(value)] if value is not None else []
            for text in texts:
                for span in matcher.find(text):
                    if span.kind == DATE and not include_dates:
                        continue
                    leaks.append(Leak(span.kind, where))
                    break

    visit(ds, "")
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        visit(meta, "meta:")
    return leaks
