"""Free text (C under Clean Descriptors): clinical words kept, identifiers removed."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from deid_core.freetext import TextCleaner
from deid_core.handlers.base import ElementPath
from deid_core.terms import utf8_repaired

TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "PN", "CS", "AE"})


class CleanTextHandler:
    """Cleans text values with the file's own identifiers, patterns and Presidio."""

    name = "clean_text"

    def __init__(self, cleaner: TextCleaner) -> None:
        self.cleaner = cleaner

    def clean(self, text: str, vr: str) -> str:
        fixed = None if text.isascii() else utf8_repaired(text)
        if fixed is not None:
            # UTF-8 bytes under a single-byte character set: cleaned as the text they spell, written back as
            # the same kind of bytes (a name in them matched no term in its misread form: an audit)
            cleaned_fixed = self.cleaner.clean_for_vr(fixed, vr)
            cleaned = text if cleaned_fixed == fixed else cleaned_fixed.encode("utf-8").decode("latin-1")
        else:
            cleaned = self.cleaner.clean_for_vr(text, vr)
        if vr == "CS" and cleaned != text:
            return ""  # a code string cannot hold the placeholder: a changed code is emptied
        return cleaned

    def __call__(self, dataset: Dataset, element: DataElement, path: ElementPath) -> bool:
        value = element.value
        if value is None or value == "" or element.VR not in TEXT_VRS:
            return False
        if isinstance(value, list | MultiValue):
            new: object = [self.clean(str(v), element.VR) for v in value]
            changed = [str(v) for v in value] != new
        else:
            new = self.clean(str(value), element.VR)
            changed = new != str(value)
        if changed:
            element.value = new
        return changed

    def describe_actions(self) -> Iterator[str]:
        yield "Clean free text: remove the file's identifiers and PHI patterns, keep clinical words (C)"
