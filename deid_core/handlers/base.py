"""The handler protocol shared by every element handler."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

#: Tags of the sequences enclosing an element, outermost first (empty at top level).
ElementPath = tuple[int, ...]


class ElementHandler(Protocol):
    """Changes one element in place; returns True when it did something."""

    name: str

    def __call__(self, dataset: Dataset, element: DataElement, path: ElementPath) -> bool: ...

    def describe_actions(self) -> Iterator[str]: ...


def delete(dataset: Dataset, element: DataElement) -> None:
    """Remove ``element`` from ``dataset`` (tolerant of an already-removed element)."""
    if element.tag in dataset:
        del dataset[element.tag]
