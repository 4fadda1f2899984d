"""Element handlers, one small class per kind of element (dicognito's shape).

Each handler is called as ``handler(dataset, element, path) -> bool`` and returns True when it
changed the element (so the composer can count actions); ``describe_actions()`` says in words
what it does, for ``deidflow explain`` and the QA report. The composer (``deid_core.anonymizer``)
walks the dataset once and picks the handler each element's rule names.
"""

from deid_core.handlers.base import ElementHandler, ElementPath
from deid_core.handlers.basic import DummyHandler, EmptyHandler, KeepHandler, RemoveHandler
from deid_core.handlers.dates import DateShiftHandler
from deid_core.handlers.dummy import dummy_value
from deid_core.handlers.text import CleanTextHandler
from deid_core.handlers.uids import UidHandler

__all__ = [
    "CleanTextHandler",
    "DateShiftHandler",
    "DummyHandler",
    "ElementHandler",
    "ElementPath",
    "EmptyHandler",
    "KeepHandler",
    "RemoveHandler",
    "UidHandler",
    "dummy_value",
]
