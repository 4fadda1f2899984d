"""Dummy values valid for their VR (the standard's action D)."""

from __future__ import annotations

from pydicom.sequence import Sequence

_DUMMY: dict[str, object] = {
    "AE": "DEID",
    "AS": "000D",
    "AT": 0,
    "CS": "DEIDENTIFIED",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "FL": 0.0,
    "FD": 0.0,
    "IS": "0",
    "LO": "DEIDENTIFIED",
    "LT": "DEIDENTIFIED",
    # D is a non-zero length value: one zero value of the VR's width (empty would be Z)
    "OB": b"\x00\x00",
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "OW": b"\x00\x00",
    "PN": "DEIDENTIFIED",
    "SH": "DEIDENTIFIED",
    "SL": 0,
    "SS": 0,
    "ST": "DEIDENTIFIED",
    "SV": 0,
    "TM": "000000.00",
    "UC": "DEIDENTIFIED",
    "UL": 0,
    "UN": b"\x00\x00",
    "UR": "http://deidentified.invalid/",
    "US": 0,
    "UT": "DEIDENTIFIED",
    "UV": 0,
}


def dummy_value(vr: str) -> object:
    """A non-identifying value of ``vr`` (an empty sequence for SQ; UIDs are hashed elsewhere)."""
    if vr == "SQ":
        return Sequence([])
    return _DUMMY.get(vr, "")


def empty_value(vr: str) -> object:
    """The zero-length value of ``vr`` (the standard's action Z)."""
    if vr == "SQ":
        return Sequence([])
    if vr in ("OB", "OD", "OF", "OL", "OV", "OW", "UN"):
        return b""
    if vr in ("FL", "FD", "SL", "SS", "SV", "UL", "US", "UV", "AT"):
        return None
    return ""
