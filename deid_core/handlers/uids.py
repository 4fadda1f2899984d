"""UIDs (U): replaced by a keyed hash, identical wherever the same UID stands."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from deid_core.handlers.base import ElementPath
from deid_core.pseudonyms import is_well_known_uid, new_uid


class UidHandler:
    """Remaps every UID value with HMAC(key, uid) under ``root``; well-known UIDs stay.

    ``pairs`` collects (old, new) for the optional linkage export; it stays empty otherwise.
    """

    name = "uid"

    def __init__(self, key: bytes, root: str, collect_pairs: bool = False) -> None:
        self._map = lru_cache(maxsize=65536)(lambda uid: new_uid(key, uid, root))
        self.collect_pairs = collect_pairs
        self.pairs: dict[str, str] = {}
        #: When a set, every original UID remapped is added to it (the pipeline sets one per file, so
        #: verification can search the output for any original UID left anywhere: URLs, kept private data).
        self.originals: set[str] | None = None

    def remap(self, uid: str) -> str:
        uid = str(uid).strip().rstrip("\0")
        if not uid or is_well_known_uid(uid):
            return uid
        new = self._map(uid)
        if self.originals is not None:
            self.originals.add(uid)
        if self.collect_pairs:
            self.pairs[uid] = new
        return new

    def __call__(self, dataset: Dataset, element: DataElement, path: ElementPath) -> bool:
        value = element.value
        if value is None or value == "":
            return False
        if isinstance(value, bytes):  # UN / private OB holding an ASCII UID
            text = value.decode("ascii", "replace").strip("\0 ")
            new_b = "\\".join(self.remap(v) for v in text.split("\\")).encode("ascii")
            element.value = new_b + (b"\0" if len(new_b) % 2 else b"")
            return True
        if isinstance(value, list | MultiValue):
            element.value = [self.remap(v) for v in value]
        else:
            element.value = self.remap(value)
        return True

    def describe_actions(self) -> Iterator[str]:
        yield "Replace the UID with HMAC-SHA256(key, UID) under the UID root (U); well-known UIDs kept"
