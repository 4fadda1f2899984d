"""Remove (X), empty (Z), dummy (D) and keep (K)."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from deid_core.handlers.base import ElementPath, delete
from deid_core.handlers.dummy import dummy_value, empty_value


class RemoveHandler:
    name = "remove"

    def __call__(self, dataset: Dataset, element: DataElement, path: ElementPath) -> bool:
        delete(dataset, element)
        return True

    def describe_actions(self) -> Iterator[str]:
        yield "Remove the element (X)"


class EmptyHandler:
    name = "empty"

    def __call__(self, dataset: Dataset, element: DataElement, path: ElementPath) -> bool:
        element.value = empty_value(element.VR)
        return True

    def describe_actions(self) -> Iterator[str]:
        yield "Replace the value with a zero-length value (Z)"


class DummyHandler:
    name = "dummy"

    def __call__(self, dataset: Dataset, element: DataElement, path: ElementPath) -> bool:
        value = dummy_value(element.VR)
        vm = element.VM
        if vm > 1 and element.VR not in ("SQ", "OB", "OD", "OF", "OL", "OV", "OW", "UN"):
            value = [value] * vm  # keep the multiplicity: a fixed-VM attribute stays valid
        element.value = value
        return True

    def describe_actions(self) -> Iterator[str]:
        yield "Replace the value with a non-identifying dummy valid for its VR (D)"


class KeepHandler:
    name = "keep"

    def __call__(self, dataset: Dataset, element: DataElement, path: ElementPath) -> bool:
        return False

    def describe_actions(self) -> Iterator[str]:
        yield "Keep the element unchanged (K)"
