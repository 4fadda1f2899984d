"""Deterministic pseudonyms: UIDs, patient IDs/names and per-patient date shifts.

Every pseudonym is a pure function of (secret key, original value), computed with HMAC-SHA256,
so parallel workers that never talk to each other still agree: the same study UID becomes the
same new UID in every file, on every worker, in every re-run with the same key. Nothing here
keeps state shared between files except an optional, explicit ``PatientMap`` loaded from CSV.

Values passed in never appear in exception messages: errors name the kind of value only.
"""

from __future__ import annotations

import calendar
import csv
import datetime as _dt
import functools
import hashlib
import hmac
import io
import re
from base64 import b32encode
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom._uid_dict import UID_dictionary
from pydicom.multival import MultiValue

from deid_core.errors import ConfigError, RuleError

DEFAULT_UID_ROOT = "2.25."
DICOM_ROOT = "1.2.840.10008."
_MAX_UID_LEN = 64
_MIN_UID_DIGITS = 20
_UID_RE = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")
_WELL_KNOWN = frozenset(UID_dictionary)
_PSEUDONYM_CHARS = 10  # base32 characters = 50 bits of the HMAC
_MAX_LO = 64
_MAX_PN_GROUP = 64
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _clean(value: str) -> str:
    """DICOM pads values with spaces or NULs; padding must not change a pseudonym."""
    return value.strip().rstrip("\0").strip()


def _check_key(key: bytes) -> None:
    """A missing or non-bytes key would silently give weak or wrong pseudonyms."""
    if not isinstance(key, bytes | bytearray) or len(key) == 0:
        raise ConfigError("pseudonymization key must be non-empty bytes")


def _hmac(key: bytes, message: str) -> bytes:
    """HMAC-SHA256 of a UTF-8 message: the single primitive behind every pseudonym."""
    return hmac.new(bytes(key), message.encode("utf-8"), hashlib.sha256).digest()


# --------------------------------------------------------------------------- UIDs


def is_well_known_uid(uid: str) -> bool:
    """True for standard UIDs (SOP classes, transfer syntaxes, ...) which identify no one and
    must stay unchanged, otherwise the output would no longer be readable DICOM."""
    u = _clean(uid)
    return u in _WELL_KNOWN or u == DICOM_ROOT[:-1] or u.startswith(DICOM_ROOT)


@functools.lru_cache(maxsize=16)
def _root_bits(root: str) -> tuple[str, int]:
    """Validate a UID root once and work out how many hash bits fit after it."""
    if not isinstance(root, str) or not root.strip():
        raise ConfigError("UID root must be a non-empty dotted numeric string")
    r = root.strip()
    if not r.endswith("."):
        r += "."
    if not _UID_RE.match(r[:-1]):
        raise ConfigError("UID root is malformed: expected dotted numeric components without leading zeros")
    if r.startswith(DICOM_ROOT) or r == DICOM_ROOT:
        raise ConfigError("UID root must not be under the DICOM standard root 1.2.840.10008")
    if r == DEFAULT_UID_ROOT:
        return r, 128  # 2.25 is defined for a 128-bit (UUID-sized) integer
    digits = _MAX_UID_LEN - len(r)
    if digits < _MIN_UID_DIGITS:
        raise ConfigError(f"UID root is too long: it leaves {max(digits, 0)} digits, at least "
                          f"{_MIN_UID_DIGITS} are needed")
    bits = min((10**digits).bit_length() - 1, 256)  # largest b with 2**b <= 10**digits
    return r, bits


@functools.lru_cache(maxsize=1 << 16)
def _new_uid_cached(key: bytes, uid: str, root: str) -> str:
    r, bits = _root_bits(root)
    digest = int.from_bytes(_hmac(key, uid), "big")
    return r + str(digest >> (256 - bits))


def new_uid(key: bytes, uid: str, root: str = DEFAULT_UID_ROOT) -> str:
    """Replace a UID by ``root`` + decimal of HMAC-SHA256(key, uid) so references between files
    (study, series, frame of reference, referenced SOP instances) stay consistent without any
    shared state. Well-known UIDs come back unchanged (without padding); "" stays ""."""
    _check_key(key)
    if not isinstance(uid, str):
        raise RuleError("UID value is not a string")
    u = _clean(uid)
    if not u:
        _root_bits(root)  # still refuse a bad root early
        return ""
    if is_well_known_uid(u):
        return u
    return _new_uid_cached(bytes(key), u, root)


# --------------------------------------------------------------------------- dates


def date_offset_days(key: bytes, patient_id: str, min_days: int = 1, max_days: int = 365) -> int:
    """Days to shift this patient's dates back: stable per patient so intervals between the
    patient's studies are preserved, unrelated across patients, unguessable without the key."""
    _check_key(key)
    if min_days < 0 or max_days < min_days:
        raise ConfigError("date offset range must satisfy 0 <= min_days <= max_days")
    span = max_days - min_days + 1
    h = int.from_bytes(_hmac(key, "date-offset:" + _clean(patient_id)), "big")
    return min_days + h % span


def _mid_year(year: int) -> _dt.date:
    n = 366 if calendar.isleap(year) else 365
    return _dt.date(year, 1, 1) + _dt.timedelta(days=(n - 1) // 2)


def _mid_month(year: int, month: int) -> _dt.date:
    n = calendar.monthrange(year, month)[1]
    return _dt.date(year, month, 1) + _dt.timedelta(days=(n - 1) // 2)


def _shift_date_digits(digits: str, days: int, vr: str) -> str:
    """Shift a YYYY, YYYYMM or YYYYMMDD string back by ``days``, keeping its precision.

    A partial date stands for a whole period; we shift the middle of that period and report
    the period the shifted middle falls in, so "2021" shifted by a few days stays "2021" and
    by 200 days becomes "2020"."""
    try:
        if len(digits) == 8:
            d = _dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
            fmt = "%Y%m%d"
        elif len(digits) == 6:
            d = _mid_month(int(digits[:4]), int(digits[4:6]))
            fmt = "%Y%m"
        elif len(digits) == 4:
            d = _mid_year(int(digits))
            fmt = "%Y"
        else:
            raise ValueError("length")
        shifted = d - _dt.timedelta(days=days)
    except (ValueError, OverflowError):
        raise RuleError(f"{vr} value is not a valid date or cannot be shifted") from None
    return f"{shifted.year:04d}" + shifted.strftime(fmt)[4:]


_DA_ONE = re.compile(r"^(\d{8}|\d{6}|\d{4})$")
_DA_ACR = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})$")


def _shift_one_da(part: str, days: int) -> str:
    m = _DA_ACR.match(part)
    if m:
        part = "".join(m.groups())  # ACR-NEMA "YYYY.MM.DD" -> DICOM "YYYYMMDD"
    if not _DA_ONE.match(part):
        raise RuleError("DA value is not a valid date")
    return _shift_date_digits(part, days, "DA")


def shift_da(value: str, days: int) -> str:
    """Shift a DA value ``days`` back. Handles full dates, partial "YYYY"/"YYYYMM" (middle of
    the period is shifted, precision kept), ranges "A-B", "-B", "A-", and old ACR-NEMA
    "YYYY.MM.DD" (normalised to "YYYYMMDD"). Empty stays empty; anything else is a RuleError."""
    if not isinstance(value, str):
        raise RuleError("DA value is not a string")
    v = _clean(value)
    if not v:
        return ""
    if "-" in v:
        if v.count("-") != 1 or v == "-":
            raise RuleError("DA value is not a valid date range")
        a, b = v.split("-")
        return (_shift_one_da(a, days) if a else "") + "-" + (_shift_one_da(b, days) if b else "")
    return _shift_one_da(v, days)


_DT_ONE = re.compile(
    r"^(?P<date>\d{4}(?:\d{2}(?:\d{2})?)?)"
    r"(?P<time>(?:\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?)"
    r"(?P<tz>[+-]\d{4})?$"
)


def _dt_parts(part: str) -> tuple[str, str, str] | None:
    """Split one DT value into (date, time, tz) or None if it is not a valid DT."""
    m = _DT_ONE.match(part)
    if not m:
        return None
    date, time, tz = m.group("date"), m.group("time"), m.group("tz") or ""
    if time and len(date) != 8:
        return None  # time without a full date
    if time:
        hh = int(time[0:2])
        mm = int(time[2:4]) if len(time) >= 4 else 0
        ss = int(time[4:6]) if len(time) >= 6 else 0
        if hh > 23 or mm > 59 or ss > 60:
            return None
    if tz:
        th, tm = int(tz[1:3]), int(tz[3:5])
        if tm > 59 or (tz[0] == "+" and th > 14) or (tz[0] == "-" and th > 12):
            return None
    return date, time, tz


def _shift_one_dt(part: str, days: int) -> str:
    p = _dt_parts(part)
    if p is None:
        raise RuleError("DT value is not a valid date-time")
    date, time, tz = p
    return _shift_date_digits(date, days, "DT") + time + tz


def shift_dt(value: str, days: int) -> str:
    """Shift the date part of a DT value ``days`` back; the time of day, fraction and "&ZZZZ"
    offset are kept exactly, as is the precision. Ranges "A-B", "-B", "A-" are supported.
    A value that reads both as one DT with a valid UTC offset and as a range is taken as the
    single DT (e.g. "2021-0500" is the year 2021 at offset -05:00)."""
    if not isinstance(value, str):
        raise RuleError("DT value is not a string")
    v = _clean(value)
    if not v:
        return ""
    if _dt_parts(v) is not None:
        return _shift_one_dt(v, days)
    # A range: try every '-' as the separator; each side may itself carry a '-ZZZZ' offset.
    for i, ch in enumerate(v):
        if ch != "-":
            continue
        a, b = v[:i], v[i + 1:]
        if (a or b) and (not a or _dt_parts(a) is not None) and (not b or _dt_parts(b) is not None):
            return (_shift_one_dt(a, days) if a else "") + "-" + (_shift_one_dt(b, days) if b else "")
    raise RuleError("DT value is not a valid date-time or range")


def _shift_scalar(vr: str, value: object, days: int) -> object:
    if value is None:
        return None
    if isinstance(value, bytes):
        text = value.decode("ascii", errors="strict") if value.isascii() else None
        if text is None:
            raise RuleError(f"{vr} value is not ASCII")
        return str(_shift_scalar(vr, text, days)).encode("ascii")
    # pydicom's DA/DT objects (datetime conversion on) keep the original string.
    text = getattr(value, "original_string", None)
    if not isinstance(text, str):
        text = value if isinstance(value, str) else str(value)
    if "\\" in text:  # multi-valued string not yet split by pydicom
        return "\\".join(str(_shift_scalar(vr, t, days)) for t in text.split("\\"))
    return shift_da(text, days) if vr == "DA" else shift_dt(text, days)


def shift_date_value(vr: str, value: object, days: int) -> object:
    """Shift an element value of VR DA or DT, single or multi-valued, returning the same
    container shape (MultiValue, list, tuple, str). TM is returned unchanged because a time
    of day alone does not move when whole days are subtracted."""
    if vr == "TM":
        return value
    if vr not in ("DA", "DT"):
        raise RuleError(f"cannot shift a value of VR {vr!r}; expected DA, DT or TM")
    if isinstance(value, MultiValue):
        return MultiValue(str, [_shift_scalar(vr, v, days) for v in value])
    if isinstance(value, list):
        return [_shift_scalar(vr, v, days) for v in value]
    if isinstance(value, tuple):
        return tuple(_shift_scalar(vr, v, days) for v in value)
    return _shift_scalar(vr, value, days)


# --------------------------------------------------------------------------- patients


def _check_prefix(prefix: str) -> None:
    if (not isinstance(prefix, str) or not prefix or len(prefix) > _MAX_LO - _PSEUDONYM_CHARS - 1
            or _CONTROL_RE.search(prefix) or any(c in prefix for c in "\\^=")):
        raise ConfigError("pseudonym prefix must be 1-53 printable characters without '\\', '^' or '='")


def _patient_code(key: bytes, patient_id: str) -> str:
    """10 base32 characters (50 bits) of HMAC(key, "patient:" + id): short, readable, and
    collision-free in practice (~4e-6 chance of any collision among 100 000 patients)."""
    _check_key(key)
    digest = _hmac(key, "patient:" + _clean(patient_id))
    return b32encode(digest).decode("ascii")[:_PSEUDONYM_CHARS]


def pseudonym_patient_id(key: bytes, patient_id: str, prefix: str = "DEID") -> str:
    """Deterministic replacement PatientID, e.g. "DEID-K3QZ7TBM2A" (valid LO)."""
    _check_prefix(prefix)
    return f"{prefix}-{_patient_code(key, patient_id)}"


def pseudonym_patient_name(key: bytes, patient_id: str, prefix: str = "DEID") -> str:
    """Deterministic replacement PatientName derived from the *ID* (names are too unstable to
    key on), e.g. "DEID^K3QZ7TBM2A" (valid PN); same code as the pseudonymous ID."""
    _check_prefix(prefix)
    return f"{prefix}^{_patient_code(key, patient_id)}"


def is_valid_lo(value: str) -> bool:
    """LO: at most 64 characters, no backslash (value separator) and no control characters."""
    return len(value) <= _MAX_LO and "\\" not in value and not _CONTROL_RE.search(value)


def is_valid_pn(value: str) -> bool:
    """PN: at most 3 '='-groups of at most 5 '^'-components, each group <= 64 characters,
    no backslash and no control characters."""
    if "\\" in value or _CONTROL_RE.search(value):
        return False
    groups = value.split("=")
    return len(groups) <= 3 and all(len(g) <= _MAX_PN_GROUP and g.count("^") <= 4 for g in groups)


@dataclass(frozen=True)
class PatientEntry:
    """The replacement identity of one patient."""

    new_id: str
    new_name: str


_MAP_HEADER = ("original_patient_id", "new_patient_id", "new_patient_name")
#: Two-column headers also accepted: the new name is then the new id (TCIA's convention). ``id_old,id_new``
#: is the form of deidflow's own linkage file and of MIDI-B's patient id mapping, so either feeds back in.
_MAP_HEADERS_2 = (("original_patient_id", "new_patient_id"), ("id_old", "id_new"))


class PatientMap:
    """An explicit original → (new id, new name) mapping supplied by the data owner, with a
    deterministic keyed pseudonym as the fallback for patients not in the map."""

    def __init__(self, entries: dict[str, PatientEntry], digest: str) -> None:
        self._entries = dict(entries)
        self._digest = digest
        self._new_ids = frozenset(e.new_id for e in entries.values())

    @classmethod
    def empty(cls) -> PatientMap:
        """A map with no rows: every patient gets the keyed pseudonym."""
        return cls({}, hashlib.sha256(b"").hexdigest())

    @classmethod
    def load(cls, path: str | Path) -> PatientMap:
        """Read and validate the CSV; any problem is a ConfigError that names rows, never ids."""
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read patient map file ({type(exc).__name__})") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ConfigError("patient map is not valid UTF-8") from None
        return cls._parse(text, hashlib.sha256(raw).hexdigest())

    @classmethod
    def _parse(cls, text: str, digest: str) -> PatientMap:
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader, None)
            head = tuple(h.strip() for h in header) if header is not None else ()
            if head != _MAP_HEADER and head not in _MAP_HEADERS_2:
                raise ConfigError("patient map header must be exactly: " + ",".join(_MAP_HEADER) + " (or "
                                  + " or ".join(",".join(h) for h in _MAP_HEADERS_2) + ")")
            ncols = len(head)
            entries: dict[str, PatientEntry] = {}
            row_of_original: dict[str, int] = {}
            row_of_new: dict[str, int] = {}
            errors: list[str] = []
            for row in reader:
                n = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != ncols:
                    errors.append(f"row {n}: expected {ncols} columns, found {len(row)}")
                    continue
                orig, new_id = row[0].strip(), row[1].strip()
                new_name = row[2].strip() if ncols == 3 else new_id
                if not orig or not new_id:
                    errors.append(f"row {n}: empty original_patient_id or new_patient_id")
                    continue
                if not is_valid_lo(new_id):
                    errors.append(f"row {n}: new_patient_id is not a valid LO "
                                  "(max 64 characters, no backslash or control characters)")
                if not is_valid_pn(new_name):
                    errors.append(f"row {n}: new_patient_name is not a valid PN "
                                  "(max 64 characters per group, no backslash or control characters)")
                if orig in row_of_original:
                    errors.append(f"row {n}: original_patient_id already mapped in row "
                                  f"{row_of_original[orig]}")
                    continue
                if new_id in row_of_new:
                    errors.append(f"row {n}: new_patient_id already used for another patient in row "
                                  f"{row_of_new[new_id]}")
                    continue
                row_of_original[orig] = n
                row_of_new[new_id] = n
                entries[orig] = PatientEntry(new_id, new_name)
        except csv.Error:
            raise ConfigError(f"patient map is not valid CSV near row {reader.line_num}") from None
        if errors:
            shown = errors[:20]
            more = f"; and {len(errors) - 20} more" if len(errors) > 20 else ""
            raise ConfigError("invalid patient map: " + "; ".join(shown) + more)
        return cls(entries, digest)

    def lookup(self, original_id: str) -> PatientEntry | None:
        """The explicit mapping for this patient, if the map has one."""
        return self._entries.get(_clean(original_id))

    def resolve(self, key: bytes, original_id: str, prefix: str = "DEID") -> tuple[PatientEntry, bool]:
        """(entry, was_mapped): the map's entry, else the keyed pseudonyms. Refuses the (rare)
        case where a keyed pseudonym equals an explicit new id, which would merge two patients."""
        entry = self.lookup(original_id)
        if entry is not None:
            return entry, True
        generated = PatientEntry(pseudonym_patient_id(key, original_id, prefix),
                                 pseudonym_patient_name(key, original_id, prefix))
        if generated.new_id in self._new_ids:
            raise ConfigError("a generated patient pseudonym equals a new_patient_id of the patient map; "
                              "use another pseudonym prefix")
        return generated, False

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, original_id: object) -> bool:
        return isinstance(original_id, str) and _clean(original_id) in self._entries

    def originals(self) -> Iterable[str]:
        """Mapped original ids, sorted (for verification term lists; never log them)."""
        return sorted(self._entries)

    def sha256(self) -> str:
        """Hex SHA-256 of the map file bytes, recorded in provenance to tell which map was used."""
        return self._digest
