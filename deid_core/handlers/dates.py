"""Dates: shifted back by the patient's offset; times (TM, the time part of DT) kept."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from deid_core.errors import RuleError
from deid_core.handlers.base import ElementPath, delete
from deid_core.pseudonyms import shift_date_value


class DateShiftHandler:
    """Shift DA and DT values by ``days`` back; anything that is not a parseable date is removed."""

    name = "date_shift"

    def __init__(self, days: int) -> None:
        self.days = days

    def __call__(self, dataset: Dataset, element: DataElement, path: ElementPath) -> bool:
        vr = element.VR
        if vr == "TM":
            return False
        value = element.value
        if value is None or value == "":
            return False
        if isinstance(value, bytes):  # private/UN element: decode as text to shift it
            try:
                text = value.decode("ascii").strip("\0 ")
                shifted = shift_date_value("DT" if len(text) > 8 else "DA", text, self.days)
            except (UnicodeDecodeError, RuleError):
                delete(dataset, element)  # fail closed: an unparseable "date" may hold anything
                return True
            raw = str(shifted).encode("ascii")
            element.value = raw + (b" " if len(raw) % 2 else b"")
            return True
        if vr not in ("DA", "DT"):
            # A private "date" kept as text (LO/SH/CS...): shift it when it parses, else remove it.
            text = str(value).strip()
            try:
                element.value = str(shift_date_value("DT" if len(text) > 8 else "DA", text, self.days))
            except (RuleError, ValueError, TypeError):
                delete(dataset, element)
            return True
        try:
            element.value = shift_date_value(vr, value, self.days)
        except RuleError:
            delete(dataset, element)
        return True

    def describe_actions(self) -> Iterator[str]:
        yield "Shift DA and the date part of DT back by the patient's offset; keep TM and DT times"
