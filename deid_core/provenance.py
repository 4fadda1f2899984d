"""Provenance: one record per input file per run, stored as Parquet and queried with DuckDB.

Why this shape: workers run in parallel on several machines' worth of processes, so each worker
writes its own Parquet file per *batch* of inputs (never one file per DICOM file, which would
drown the file system and DuckDB's glob) and nobody needs a database server or a lock held for
the whole run. Files are written atomically (temporary name, fsync, ``os.replace``) and named by a
caller-chosen deterministic ``batch_id``, so a retried batch overwrites its earlier attempt
instead of duplicating it. ``compact`` later merges a run's small files into one; the ``records``
view de-duplicates by ``(run_id, batch_id)`` so a reader never sees a batch twice, even while a
compaction is half-way (see docs/provenance.md for the full design).

The store sits in the hospital's secure zone but still holds no identifier except input paths:
no header values, no OCR text, only classes (reasons, box kinds, action names) and counts.

Layout::

    <prov_dir>/records/run_date=YYYY-MM-DD/run_id=<id>/part-<batch_id>.parquet
    <prov_dir>/records/run_date=YYYY-MM-DD/run_id=<id>/compacted.parquet   (after compact)
    <prov_dir>/runs/run_id=<id>.parquet                                    (one row per run)
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import math
import os
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from deid_core.errors import ConfigError, WriteError

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA",
    "STORE_SCHEMA",
    "RUN_SCHEMA",
    "STATUSES",
    "ProvenanceRecord",
    "ProvenanceWriter",
    "write_run_record",
    "connect",
    "audit_runs",
    "audit_failures",
    "audit_file",
    "audit_actions",
    "audit_sql",
    "done_outputs",
    "latest_status",
    "compact",
    "format_table",
]

SCHEMA_VERSION = 1

_TS = pa.timestamp("us", tz="UTC")

# The record columns, in order. Versioned by SCHEMA_VERSION; new columns are only ever appended
# (readers use union_by_name, so old and new files mix).
SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_date", pa.string(), nullable=False),
        pa.field("input_path", pa.string(), nullable=False),
        pa.field("input_sha256", pa.string()),
        pa.field("input_size", pa.int64()),
        pa.field("output_path", pa.string()),
        pa.field("output_sha256", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("error", pa.string()),
        pa.field("started_at", _TS),
        pa.field("finished_at", _TS),
        pa.field("inventory_ms", pa.float64()),
        pa.field("pixel_ms", pa.float64()),
        pa.field("scrub_ms", pa.float64()),
        pa.field("pseudonymize_ms", pa.float64()),
        pa.field("write_ms", pa.float64()),
        pa.field("verify_ms", pa.float64()),
        pa.field("modality", pa.string()),
        pa.field("sop_class_uid", pa.string()),
        pa.field("transfer_syntax", pa.string()),
        pa.field("frames", pa.int32()),
        pa.field("pixel_policy", pa.string()),
        pa.field("frames_ocr", pa.int32()),
        pa.field("prescreen_skipped", pa.bool_()),
        pa.field("boxes", pa.string()),
        pa.field("n_boxes", pa.int32()),
        pa.field("actions", pa.string()),
        pa.field("rule_table_sha256", pa.string()),
        pa.field("key_fingerprint", pa.string()),
        pa.field("deidflow_version", pa.string()),
        pa.field("patient_mapped", pa.bool_()),
        pa.field("attempt", pa.int16()),
        pa.field("conformance", pa.string()),
        pa.field("settings_sha256", pa.string()),
    ]
)

# What a part file really holds: the record columns plus two bookkeeping columns that let
# readers drop stale copies of a batch (see ``connect``). Filled by the writer, not the caller.
STORE_SCHEMA = SCHEMA.append(pa.field("batch_id", pa.string(), nullable=False)).append(
    pa.field("written_ns", pa.int64(), nullable=False)
)

# One row per run (runs/run_id=<id>.parquet).
RUN_SCHEMA = pa.schema(
    [
        pa.field("schema_version", pa.int16(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_date", pa.string()),
        pa.field("started_at", _TS),
        pa.field("finished_at", _TS),
        pa.field("input_dir", pa.string()),
        pa.field("output_dir", pa.string()),
        pa.field("profile", pa.string()),
        pa.field("options", pa.string()),
        pa.field("rule_table_sha256", pa.string()),
        pa.field("key_fingerprint", pa.string()),
        pa.field("deidflow_version", pa.string()),
        pa.field("files", pa.int64()),
        pa.field("written", pa.int64()),
        pa.field("quarantined", pa.int64()),
        pa.field("skipped", pa.int64()),
        pa.field("failed", pa.int64()),
        pa.field("wall_s", pa.float64()),
        pa.field("files_per_s", pa.float64()),
        pa.field("parameters", pa.string()),
    ]
)

STATUSES = ("written", "quarantined", "skipped", "failed")
BOX_KEYS = frozenset({"frame", "x", "y", "w", "h", "kind", "confidence"})
ERROR_MAX_CHARS = 2000
COMPACTED_NAME = "compacted.parquet"

_META = {b"deidflow.provenance.schema_version": str(SCHEMA_VERSION).encode()}
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ACTION = re.compile(r"^[A-Za-z][A-Za-z0-9_.:-]{0,63}$")
_SECRET_NAME = re.compile(r"(key|secret|password|passphrase|token|salt|hmac)", re.IGNORECASE)
_SECRET_NAME_OK = ("fingerprint", "_file", "_path", "_env", "_id", "_source", "_kind", "_type")
_GLOB_CHARS = re.compile(r"[*?\[\]{}]")
_STATUS_COLS = {s: s for s in STATUSES}


# ----------------------------------------------------------------------------------------------
# Records


@dataclass(kw_only=True)
class ProvenanceRecord:
    """One input file's outcome in one run. ``run_id``/``run_date`` may be left empty: the writer fills them.

    ``boxes`` may be a list of dicts (``frame, x, y, w, h, kind, confidence`` only, never the text)
    and ``actions`` a ``{action_name: count}`` dict; both are stored as canonical JSON strings.
    Timestamps are timezone-aware datetimes, ISO strings with an offset, or epoch seconds.
    """

    schema_version: int = SCHEMA_VERSION
    run_id: str = ""
    run_date: str = ""
    input_path: str
    input_sha256: str | None = None
    input_size: int | None = None
    output_path: str | None = None
    output_sha256: str | None = None
    status: str
    reason: str | None = None
    error: str | None = None
    started_at: _dt.datetime | str | float | None = None
    finished_at: _dt.datetime | str | float | None = None
    inventory_ms: float | None = None
    pixel_ms: float | None = None
    scrub_ms: float | None = None
    pseudonymize_ms: float | None = None
    write_ms: float | None = None
    verify_ms: float | None = None
    modality: str | None = None
    sop_class_uid: str | None = None
    transfer_syntax: str | None = None
    frames: int | None = None
    pixel_policy: str | None = None
    frames_ocr: int | None = None
    prescreen_skipped: bool | None = None
    boxes: str | list[dict[str, Any]] | None = None
    n_boxes: int | None = None
    actions: str | dict[str, int] | None = None
    rule_table_sha256: str | None = None
    key_fingerprint: str | None = None
    deidflow_version: str | None = None
    patient_mapped: bool | None = None
    attempt: int | None = None
    conformance: str | None = None
    settings_sha256: str | None = None

    def to_row(self) -> dict[str, Any]:
        """Validated, normalised row for SCHEMA, so bad values fail at the worker, not at audit time."""
        return _normalise_record(asdict(self))


_RECORD_FIELDS = frozenset(f.name for f in fields(ProvenanceRecord))
assert _RECORD_FIELDS == set(SCHEMA.names), "ProvenanceRecord and SCHEMA drifted apart"


def _bad(field_name: str, why: str) -> ConfigError:
    # Name the field and the rule, never the offending value (it might be PHI).
    return ConfigError(f"provenance: field {field_name!r} {why}")


def _to_ts(name: str, value: Any) -> _dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _bad(name, "must be a datetime, ISO string or epoch seconds")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _bad(name, "must be finite")
        return _dt.datetime.fromtimestamp(float(value), tz=_dt.UTC)
    if isinstance(value, str):
        try:
            value = _dt.datetime.fromisoformat(value)
        except ValueError:
            raise _bad(name, "is not an ISO-8601 timestamp") from None
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise _bad(name, "must be timezone-aware (naive datetimes are ambiguous)")
        return value.astimezone(_dt.UTC)
    raise _bad(name, "must be a datetime, ISO string or epoch seconds")


def _opt_str(row: dict[str, Any], name: str, pattern: re.Pattern[str] | None = None, why: str = "") -> None:
    value = row.get(name)
    if value is None:
        return
    if not isinstance(value, str):
        raise _bad(name, "must be a string")
    if pattern is not None and not pattern.match(value):
        raise _bad(name, why)


def _opt_num(
    row: dict[str, Any], name: str, integer: bool, lo: int | None = None, hi: int | None = None
) -> None:
    value = row.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(name, "must be a number")
    if integer:
        if isinstance(value, float):
            if not value.is_integer():
                raise _bad(name, "must be an integer")
            row[name] = value = int(value)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise _bad(name, "is out of range")
    else:
        if not math.isfinite(value):
            raise _bad(name, "must be finite")
        row[name] = float(value)


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _normalise_boxes(value: Any) -> tuple[str | None, int | None]:
    if value is None:
        return None, None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _bad("boxes", "is not valid JSON") from None
    if not isinstance(value, list):
        raise _bad("boxes", "must be a JSON list")
    clean: list[dict[str, Any]] = []
    for box in value:
        if not isinstance(box, Mapping):
            raise _bad("boxes", "entries must be objects")
        extra = set(box) - BOX_KEYS
        if extra:
            # The usual culprit is OCR 'text': refuse it, the store must never hold it.
            raise _bad("boxes", f"entries may only have keys {sorted(BOX_KEYS)}")
        for k in ("frame", "x", "y", "w", "h"):
            v = box.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise _bad("boxes", f"entry key {k!r} must be an integer")
        kind = box.get("kind")
        if kind is not None and (not isinstance(kind, str) or not _ACTION.match(kind)):
            raise _bad("boxes", "entry 'kind' must be a short class name")
        conf = box.get("confidence")
        if conf is not None and (isinstance(conf, bool) or not isinstance(conf, int | float)
                                 or not math.isfinite(conf)):
            raise _bad("boxes", "entry 'confidence' must be a finite number")
        clean.append(dict(box))
    return _canonical_json(clean), len(clean)


def _normalise_actions(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _bad("actions", "is not valid JSON") from None
    if not isinstance(value, Mapping):
        raise _bad("actions", "must be a JSON object {action: count}")
    for name, count in value.items():
        if not isinstance(name, str) or not _ACTION.match(name):
            raise _bad("actions", "keys must be short action names")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise _bad("actions", "counts must be non-negative integers")
    return _canonical_json(dict(value))


def _normalise_record(raw: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(raw) - _RECORD_FIELDS
    if unknown:
        raise ConfigError(f"provenance: unknown record field(s) {sorted(unknown)}")
    row: dict[str, Any] = {name: raw.get(name) for name in SCHEMA.names}
    if row["schema_version"] is None:
        row["schema_version"] = SCHEMA_VERSION
    for name in ("run_id", "run_date", "input_path", "status"):
        if row[name] is None:
            row[name] = ""
    if not isinstance(row["input_path"], str | os.PathLike) or not str(row["input_path"]):
        raise _bad("input_path", "is required")
    row["input_path"] = os.fspath(row["input_path"])
    if row["status"] not in STATUSES:
        raise _bad("status", f"must be one of {list(STATUSES)}")
    _opt_str(row, "reason", _REASON, "must be a short stable class like 'bad_input'")
    for name in ("input_sha256", "output_sha256", "rule_table_sha256", "settings_sha256"):
        _opt_str(row, name, _SHA256, "must be 64 lowercase hex digits")
    out = row["output_path"]
    if out is not None:
        out = os.fspath(out)
        if os.path.isabs(out):
            raise _bad("output_path", "must be relative to the output directory")
        row["output_path"] = out
    err = row["error"]
    if err is not None:
        if not isinstance(err, str):
            raise _bad("error", "must be a string")
        row["error"] = err[:ERROR_MAX_CHARS]
    for name in ("modality", "sop_class_uid", "transfer_syntax", "pixel_policy", "key_fingerprint",
                 "deidflow_version", "conformance"):
        _opt_str(row, name)
    for name in ("started_at", "finished_at"):
        row[name] = _to_ts(name, row[name])
    for name in ("inventory_ms", "pixel_ms", "scrub_ms", "pseudonymize_ms", "write_ms", "verify_ms"):
        _opt_num(row, name, integer=False)
    _opt_num(row, "input_size", integer=True, lo=0)
    _opt_num(row, "frames", integer=True, lo=0, hi=2**31 - 1)
    _opt_num(row, "frames_ocr", integer=True, lo=0, hi=2**31 - 1)
    _opt_num(row, "n_boxes", integer=True, lo=0, hi=2**31 - 1)
    _opt_num(row, "attempt", integer=True, lo=0, hi=2**15 - 1)
    _opt_num(row, "schema_version", integer=True, lo=1, hi=2**15 - 1)
    for name in ("prescreen_skipped", "patient_mapped"):
        if row[name] is not None and not isinstance(row[name], bool):
            raise _bad(name, "must be a boolean")
    boxes, n = _normalise_boxes(row["boxes"])
    row["boxes"] = boxes
    if n is not None:
        if row["n_boxes"] is None:
            row["n_boxes"] = n
        elif row["n_boxes"] != n:
            raise _bad("n_boxes", "does not match the number of boxes")
    row["actions"] = _normalise_actions(row["actions"])
    return row


# ----------------------------------------------------------------------------------------------
# Atomic files


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _SAFE_ID.match(value):
        raise ConfigError(f"provenance: {kind} must match {_SAFE_ID.pattern} (it becomes a path component)")
    return value


def _check_date(value: str) -> str:
    if not isinstance(value, str) or not _DATE.match(value):
        raise ConfigError("provenance: run_date must be YYYY-MM-DD")
    try:
        _dt.date.fromisoformat(value)
    except ValueError:
        raise ConfigError("provenance: run_date is not a valid calendar date") from None
    return value


def _mkdirs(path: Path) -> None:
    """Create missing directories 0700 (explicit chmod: the umask must not widen or narrow it)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another worker won the race; it chmods its own
        os.chmod(d, 0o700)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _partition_lock(directory: Path, exclusive: bool) -> Iterator[None]:
    """Advisory lock per run partition: writers share it to replace, compaction takes it alone to delete."""
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the flock


_TMP_NAME = re.compile(r"\..+\.(?P<pid>\d+)\.[0-9a-f]{32}\.tmp")


def clean_stale_tmp(prov_dir: Path) -> int:
    """Remove the temporary Parquet files of writers that are gone (a run killed between a batch's write
    and its rename); returns how many. The writer's PID is in the name (``_atomic_write_table``): a file of
    a live process (another run writing into the same provenance directory) is left alone."""
    removed = 0
    for tmp in Path(prov_dir).rglob(".*.tmp"):
        m = _TMP_NAME.fullmatch(tmp.name)
        if m is None or _alive(int(m["pid"])):
            continue
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _atomic_write_table(table: pa.Table, dest: Path) -> None:
    """Write ``table`` to ``dest`` so readers see the old file or the new one, never a torn one."""
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        why = f"{type(exc).__name__}, errno {exc.errno}"
        raise WriteError(f"provenance: cannot write {dest.name} ({why})") from exc


class ProvenanceWriter:
    """Writes one run's records, one Parquet file per batch, into the run's hive partition."""

    def __init__(self, prov_dir: Path, run_id: str, run_date: str) -> None:
        """Validate names up front: they become path components."""
        self.prov_dir = Path(prov_dir)
        self.run_id = _check_id("run_id", run_id)
        self.run_date = _check_date(run_date)
        self.partition = _partition_dir(self.prov_dir, self.run_date, self.run_id)

    def rows(self, records: Sequence[ProvenanceRecord | Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Normalise records and stamp this run's id/date, refusing rows that belong to another run."""
        out: list[dict[str, Any]] = []
        for rec in records:
            row = rec.to_row() if isinstance(rec, ProvenanceRecord) else _normalise_record(rec)
            for name, mine in (("run_id", self.run_id), ("run_date", self.run_date)):
                if row[name] in ("", None):
                    row[name] = mine
                elif row[name] != mine:
                    raise _bad(name, "differs from the writer's (record belongs to another run)")
            out.append(row)
        return out

    def write_batch(self, records: Sequence[ProvenanceRecord | Mapping[str, Any]], batch_id: str) -> Path:
        """Write ``records`` as ``part-<batch_id>.parquet``; rewriting the same batch id replaces it."""
        _check_id("batch_id", batch_id)
        rows = self.rows(records)
        written_ns = time.time_ns()
        for row in rows:
            row["batch_id"] = batch_id
            row["written_ns"] = written_ns
        table = pa.Table.from_pylist(rows, schema=STORE_SCHEMA.with_metadata(_META))
        _mkdirs(self.partition)
        dest = self.partition / f"part-{batch_id}.parquet"
        with _partition_lock(self.partition, exclusive=False):
            _atomic_write_table(table, dest)
        return dest


def _partition_dir(prov_dir: Path, run_date: str, run_id: str) -> Path:
    return Path(prov_dir) / "records" / f"run_date={run_date}" / f"run_id={run_id}"


# ----------------------------------------------------------------------------------------------
# Run records


_RUN_KEYS = frozenset(
    {"run_id", "run_date", "started_at", "finished_at", "input_dir", "output_dir", "profile", "options",
     "rule_table_sha256", "key_fingerprint", "version", "deidflow_version", "counts", "wall_s",
     "files_per_s", "parameters"}
)


def _refuse_secrets(where: str, value: Any, path: str = "") -> None:
    """Reject anything that looks like key material: the run record is read by auditors, the key is not."""
    if isinstance(value, bytes | bytearray | memoryview):
        raise ConfigError(f"provenance: {where}{path} holds raw bytes (key material is never recorded)")
    if isinstance(value, Mapping):
        for k, v in value.items():
            name = str(k)
            low = name.lower()
            if _SECRET_NAME.search(low) and not low.endswith(_SECRET_NAME_OK):
                msg = f"provenance: {where} entry {name!r} looks like a secret (record a fingerprint)"
                raise ConfigError(msg)
            _refuse_secrets(where, v, f"{path}.{name}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _refuse_secrets(where, v, f"{path}[{i}]")


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise ConfigError(f"provenance: value of type {type(value).__name__} is not JSON-serialisable")


def _run_row(run: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(run) - _RUN_KEYS
    if unknown:
        raise ConfigError(f"provenance: unknown run field(s) {sorted(unknown)}")
    run_id = _check_id("run_id", run.get("run_id", ""))
    started = _to_ts("started_at", run.get("started_at"))
    finished = _to_ts("finished_at", run.get("finished_at"))
    run_date = run.get("run_date") or (started.date().isoformat() if started else None)
    if run_date is not None:
        _check_date(run_date)
    for part in ("options", "parameters"):
        _refuse_secrets(part, run.get(part))
    counts = run.get("counts") or {}
    if not isinstance(counts, Mapping) or set(counts) - set(STATUSES):
        raise ConfigError(f"provenance: run counts must be a mapping with keys among {list(STATUSES)}")
    for v in counts.values():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError("provenance: run counts must be non-negative integers")
    files = sum(counts.values())
    wall_s = run.get("wall_s")
    if wall_s is None and started is not None and finished is not None:
        wall_s = (finished - started).total_seconds()
    files_per_s = run.get("files_per_s")
    if files_per_s is None and wall_s:
        files_per_s = files / wall_s
    version = run.get("deidflow_version", run.get("version"))
    row: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "run_date": run_date,
        "started_at": started,
        "finished_at": finished,
        "input_dir": None if run.get("input_dir") is None else os.fspath(run["input_dir"]),
        "output_dir": None if run.get("output_dir") is None else os.fspath(run["output_dir"]),
        "profile": run.get("profile"),
        "options": None if run.get("options") is None
        else json.dumps(run["options"], sort_keys=True, default=_json_default),
        "rule_table_sha256": run.get("rule_table_sha256"),
        "key_fingerprint": run.get("key_fingerprint"),
        "deidflow_version": version,
        "files": files,
        **{_STATUS_COLS[s]: int(counts.get(s, 0)) for s in STATUSES},
        "wall_s": None if wall_s is None else float(wall_s),
        "files_per_s": None if files_per_s is None else float(files_per_s),
        "parameters": None if run.get("parameters") is None
        else json.dumps(run["parameters"], sort_keys=True, default=_json_default),
    }
    _opt_str(row, "rule_table_sha256", _SHA256, "must be 64 lowercase hex digits")
    for name in ("profile", "key_fingerprint", "deidflow_version"):
        _opt_str(row, name)
    return row


def write_run_record(prov_dir: Path, run: dict[str, Any]) -> None:
    """Write the run summary to ``runs/run_id=<id>.parquet`` atomically (rewrite = replace).

    Parquet rather than JSON so the ``runs`` view is typed and needs no JSON reader; ``options``
    and ``parameters`` are kept as canonical JSON strings. Anything that looks like key material
    is refused with ConfigError.
    """
    row = _run_row(run)
    table = pa.Table.from_pylist([row], schema=RUN_SCHEMA.with_metadata(_META))
    runs_dir = Path(prov_dir) / "runs"
    _mkdirs(runs_dir)
    _atomic_write_table(table, runs_dir / f"run_id={row['run_id']}.parquet")


# ----------------------------------------------------------------------------------------------
# Reading


def _sql_path(path: Path) -> str:
    text = os.fspath(path.absolute())
    if _GLOB_CHARS.search(text):
        raise ConfigError("provenance: the provenance directory path must not contain glob characters")
    return text.replace("'", "''")


def _has_parquet(directory: Path, pattern: str) -> bool:
    return directory.is_dir() and next(iter(directory.glob(pattern)), None) is not None


def connect(prov_dir: Path) -> duckdb.DuckDBPyConnection:
    """In-memory DuckDB with views ``records`` (de-duplicated), ``records_raw`` and ``runs``.

    The views glob the files at query time, so one connection sees later batches. If the store
    has no file yet, the view is an empty one with the right columns (a snapshot: reconnect
    after the first write). ``records`` keeps, for each ``(run_id, batch_id)``, only the rows of
    the newest copy (largest ``written_ns``, then first file name): that hides the transient
    duplicate left between compaction's write and its deletes, and a stale compacted copy of a
    batch retried afterwards. Timestamps come back in UTC.
    """
    prov_dir = Path(prov_dir)
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone='UTC'")
    rec_dir, runs_dir = prov_dir / "records", prov_dir / "runs"
    if _has_parquet(rec_dir, "**/*.parquet"):
        glob = _sql_path(rec_dir) + "/**/*.parquet"
        con.execute(
            "CREATE VIEW records_raw AS SELECT * FROM read_parquet("
            f"'{glob}', hive_partitioning=true, union_by_name=true, filename=true, "
            "hive_types={'run_date': 'VARCHAR', 'run_id': 'VARCHAR'})"
        )
    else:
        con.register("_empty_records", STORE_SCHEMA.empty_table())
        con.execute("CREATE VIEW records_raw AS SELECT *, NULL::VARCHAR AS filename FROM _empty_records")
    con.execute(
        "CREATE VIEW records AS SELECT * EXCLUDE (filename) FROM records_raw "
        "QUALIFY dense_rank() OVER (PARTITION BY run_id, batch_id ORDER BY written_ns DESC, filename) = 1"
    )
    if _has_parquet(runs_dir, "*.parquet"):
        glob = _sql_path(runs_dir) + "/*.parquet"
        con.execute(
            f"CREATE VIEW runs AS SELECT * FROM read_parquet('{glob}', union_by_name=true, "
            "hive_partitioning=false)"
        )
    else:
        con.register("_empty_runs", RUN_SCHEMA.empty_table())
        con.execute("CREATE VIEW runs AS SELECT * FROM _empty_runs")
    return con


def _dicts(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description or []]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


_RUNS_SQL = """
WITH r AS (
    SELECT run_id,
           min(started_at) AS first_start,
           max(finished_at) AS last_finish,
           count(*) AS files,
           count(*) FILTER (WHERE status = 'written') AS written,
           count(*) FILTER (WHERE status = 'quarantined') AS quarantined,
           count(*) FILTER (WHERE status = 'skipped') AS skipped,
           count(*) FILTER (WHERE status = 'failed') AS failed
    FROM records GROUP BY run_id
), j AS (
    SELECT coalesce(r.run_id, u.run_id) AS run_id,
           coalesce(u.started_at, r.first_start) AS started_at,
           coalesce(u.wall_s, date_diff('microsecond', r.first_start, r.last_finish) / 1e6) AS wall_s,
           coalesce(r.files, u.files, 0) AS files,
           coalesce(r.written, u.written, 0) AS written,
           coalesce(r.quarantined, u.quarantined, 0) AS quarantined,
           coalesce(r.skipped, u.skipped, 0) AS skipped,
           coalesce(r.failed, u.failed, 0) AS failed,
           u.run_id IS NOT NULL AS finished
    FROM r FULL OUTER JOIN runs AS u ON r.run_id = u.run_id
)
SELECT run_id, started_at, wall_s, files, written, quarantined, skipped, failed,
       -- an unfinished run's wall time comes from its records; under a second it is no basis for a rate
       -- (a killed run showed 64516 files/s over 2 records: an audit)
       CASE WHEN wall_s > 0 AND (finished OR wall_s >= 1) THEN files / wall_s END AS files_per_s, finished
FROM j ORDER BY started_at NULLS LAST, run_id
"""


def audit_runs(prov_dir: Path) -> list[dict[str, Any]]:
    """One line per run: counts from the records (the truth), timing from the run record if any.

    A run that crashed or was killed before its run record still shows up, with ``finished`` false (its
    counts are those of the files it recorded; the others were never reached): its start and wall time are
    then taken from its records' earliest start and latest finish.
    """
    with connect(prov_dir) as con:
        return _dicts(con.execute(_RUNS_SQL))


def run_exists(prov_dir: Path, run_id: str) -> bool:
    """Whether ``run_id`` has a run record or any file record in ``prov_dir`` (a typo in a run id must not
    read as "no failures")."""
    with connect(prov_dir) as con:
        row = con.execute("SELECT count(*) FROM (SELECT run_id FROM runs WHERE run_id = ? UNION ALL "
                          "SELECT run_id FROM records WHERE run_id = ? LIMIT 1)", [run_id, run_id]).fetchone()
    return bool(row and row[0])


def _latest_run_id(con: duckdb.DuckDBPyConnection) -> str | None:
    row = con.execute(
        "SELECT run_id FROM (SELECT run_id, started_at FROM runs UNION ALL "
        "SELECT run_id, min(started_at) FROM records GROUP BY run_id) "
        "ORDER BY started_at DESC NULLS LAST, run_id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else str(row[0])


def audit_failures(prov_dir: Path, run_id: str | None = None) -> list[dict[str, Any]]:
    """Quarantined and failed inputs of ``run_id`` (the latest run if None), for the operator's to-do list."""
    with connect(prov_dir) as con:
        if run_id is None:
            run_id = _latest_run_id(con)
            if run_id is None:
                return []
        return _dicts(con.execute(
            "SELECT input_path, status, reason, error, run_id FROM records "
            "WHERE run_id = ? AND status IN ('quarantined', 'failed') "
            "ORDER BY input_path, status, reason",
            [run_id],
        ))


def audit_file(prov_dir: Path, input_path: str) -> list[dict[str, Any]]:
    """History of one input across runs, oldest first; matches the path as given or made absolute."""
    raw = os.fspath(input_path)
    candidates = sorted({raw, os.path.abspath(raw), os.path.realpath(raw)})
    with connect(prov_dir) as con:
        return _dicts(con.execute(
            "SELECT run_id, run_date, input_path, status, reason, error, attempt, output_path, "
            "input_sha256, output_sha256, started_at, finished_at FROM records "
            "WHERE list_contains(?::VARCHAR[], input_path) "
            "ORDER BY started_at NULLS LAST, run_id, attempt NULLS FIRST, batch_id",
            [candidates],
        ))


def audit_actions(prov_dir: Path, run_id: str) -> list[dict[str, Any]]:
    """Total count per de-identification action over one run (the ``actions`` JSON unnested)."""
    with connect(prov_dir) as con:
        return _dicts(con.execute(
            "SELECT k AS action, sum(v)::BIGINT AS count, count(DISTINCT rid)::BIGINT AS files FROM ("
            "  SELECT rid, unnest(map_keys(m)) AS k, unnest(map_values(m)) AS v FROM ("
            "    SELECT row_number() OVER () AS rid, actions::JSON::MAP(VARCHAR, BIGINT) AS m "
            "    FROM records WHERE run_id = ? AND actions IS NOT NULL)) "
            "GROUP BY k ORDER BY count DESC, action",
            [run_id],
        ))


def audit_sql(prov_dir: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read-only query (SELECT/WITH/DESCRIBE/EXPLAIN) against the views.

    The connection may only touch the store's own directories and is locked, so an audit
    query cannot read other files or write anything (COPY, ATTACH, SET are refused).
    """
    prov_dir = Path(prov_dir)
    con = connect(prov_dir)
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        con.close()
        raise ConfigError(f"provenance: SQL does not parse ({type(exc).__name__})") from exc
    if len(statements) != 1:
        con.close()
        raise ConfigError("provenance: audit_sql takes exactly one statement")
    kind = statements[0].type
    if kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
        con.close()
        raise ConfigError(f"provenance: audit_sql only runs read-only queries, not {kind.name}")
    with con:
        allowed = [_sql_path(prov_dir / "records") + "/", _sql_path(prov_dir / "runs") + "/"]
        con.execute("SET allowed_directories = " + "[" + ", ".join(f"'{a}'" for a in allowed) + "]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        cur = con.execute(sql)
        cols = [d[0] for d in cur.description or []]
        return cols, [tuple(r) for r in cur.fetchall()]


def done_outputs(
    prov_dir: Path, input_sha256s: Iterable[str] | None = None
) -> dict[tuple[str, str, str, str, str], tuple[str, str]]:
    """For incremental runs: what was already written with this exact configuration.

    Key ``(input_sha256, rule_table_sha256, key_fingerprint, deidflow_version, settings_sha256)`` →
    ``(output_path, output_sha256)`` of the latest 'written' record. Records missing any key part are
    ignored (they cannot prove the configuration matched: records of versions before settings_sha256 are
    redone once). The caller should still check that the output file exists with that hash before skipping.
    """
    params: list[Any] = []
    where = ""
    if input_sha256s is not None:
        wanted = sorted(set(input_sha256s))
        if not wanted:
            return {}
        where = "AND list_contains(?::VARCHAR[], input_sha256) "
        params.append(wanted)
    with connect(prov_dir) as con:
        columns = {r[0] for r in con.execute("DESCRIBE records").fetchall()}
        if "settings_sha256" not in columns:  # only records of earlier versions: none can prove its settings
            return {}
        rows = con.execute(
            "SELECT input_sha256, rule_table_sha256, key_fingerprint, deidflow_version, settings_sha256, "
            "output_path, output_sha256 FROM records WHERE status = 'written' AND input_sha256 IS NOT NULL "
            "AND rule_table_sha256 IS NOT NULL AND key_fingerprint IS NOT NULL "
            "AND deidflow_version IS NOT NULL AND settings_sha256 IS NOT NULL "
            "AND output_path IS NOT NULL AND output_sha256 IS NOT NULL "
            + where
            + "QUALIFY row_number() OVER (PARTITION BY input_sha256, rule_table_sha256, key_fingerprint, "
            "deidflow_version, settings_sha256 ORDER BY finished_at DESC NULLS LAST, run_id DESC, output_path) = 1",
            params,
        ).fetchall()
    return {(r[0], r[1], r[2], r[3], r[4]): (r[5], r[6]) for r in rows}


def superseded_outputs(prov_dir: Path, run_id: str) -> list[str]:
    """Outputs an earlier run wrote for an input that ``run_id`` wrote or found done under another output
    path, and that ``run_id`` did not write or keep: replaced outputs (another patient map, UID root or key
    gives the same input another name). Left in place, each instance stood twice in the output tree, under
    two patient IDs (an audit added a patient to the map and reran). Paths are relative to the output folder."""
    with connect(prov_dir) as con:
        rows = con.execute(
            "WITH cur AS (SELECT input_path, output_path FROM records WHERE run_id = ? "
            "  AND status IN ('written', 'skipped') AND coalesce(output_path, '') <> ''), "
            "old AS (SELECT DISTINCT r.output_path FROM records r JOIN cur c ON r.input_path = c.input_path "
            "  WHERE r.run_id <> ? AND r.status = 'written' AND coalesce(r.output_path, '') <> '' "
            "  AND r.output_path <> c.output_path) "
            "SELECT output_path FROM old WHERE output_path NOT IN (SELECT output_path FROM cur) ORDER BY 1",
            [run_id, run_id]).fetchall()
    return [r[0] for r in rows]


def latest_status(
    prov_dir: Path, input_sha256s: Iterable[str] | None = None
) -> dict[tuple[str, str, str, str, str], tuple[str, str]]:
    """Alias of ``done_outputs`` (the name used in the original brief)."""
    return done_outputs(prov_dir, input_sha256s)


# ----------------------------------------------------------------------------------------------
# Compaction


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _compact_partition(part_dir: Path) -> int:
    files = sorted(part_dir.glob("*.parquet"))
    if len(files) < 2:
        return 0
    snapshot = {f: _stat_key(f) for f in files}
    tables = {f: pq.ParquetFile(f).read() for f in files}  # not read_table: no hive inference
    # Winner per batch_id: newest written_ns, then first file name (same rule as the records view).
    best: dict[str, tuple[int, str]] = {}
    for f, t in tables.items():
        pairs = t.select(["batch_id", "written_ns"]).group_by(["batch_id", "written_ns"]).aggregate([])
        for b, w in zip(pairs["batch_id"].to_pylist(), pairs["written_ns"].to_pylist(), strict=True):
            cand = (-int(w), f.name)
            if b not in best or cand < best[b]:
                best[b] = cand
    kept: list[pa.Table] = []
    for f, t in tables.items():
        mine = sorted(b for b, (_, name) in best.items() if name == f.name)
        if not mine:
            continue
        wn = {b: -best[b][0] for b in mine}
        mask = pc.is_in(t["batch_id"], value_set=pa.array(mine, pa.string()))
        sub = t.filter(mask)
        # A file could hold an older copy of a batch alongside (impossible today, cheap to guard).
        ok = [wn[b] == w for b, w in zip(sub["batch_id"].to_pylist(), sub["written_ns"].to_pylist(),
                                          strict=True)]
        kept.append(sub.filter(pa.array(ok, pa.bool_())))
    merged = pa.concat_tables(kept, promote_options="default")
    # Records first, by schema order; unknown newer columns (written by a newer version) kept after.
    cols = [n for n in STORE_SCHEMA.names if n in merged.column_names]
    cols += [n for n in merged.column_names if n not in STORE_SCHEMA.names]
    merged = merged.select(cols)
    order = pc.sort_indices(merged, sort_keys=[("batch_id", "ascending"), ("written_ns", "ascending")])
    merged = merged.take(order)
    target = STORE_SCHEMA if cols == STORE_SCHEMA.names else None
    if target is not None:
        merged = merged.cast(target)
    merged = merged.replace_schema_metadata(_META)
    dest = part_dir / COMPACTED_NAME
    _atomic_write_table(merged, dest)
    removed = 0
    with _partition_lock(part_dir, exclusive=True):
        for f in files:
            if f.name == COMPACTED_NAME:
                continue
            # Unchanged since we read it? Then its rows are in the merged file. A batch rewritten
            # meanwhile has a new inode and a newer written_ns: keep it, the view prefers it.
            if _stat_key(f) == snapshot[f]:
                f.unlink()
                removed += 1
    _fsync_dir(part_dir)
    return removed


def compact(prov_dir: Path, run_id: str | None = None) -> int:
    """Merge each run partition's part files into ``compacted.parquet``; return the number of files removed.

    Write-then-delete: the merged file replaces any earlier ``compacted.parquet`` atomically, then
    the merged parts are deleted. In between, readers see each batch twice with identical
    ``(batch_id, written_ns)`` and the ``records`` view keeps one copy. A crash in between is
    repaired by the next ``compact``. Best run when the run has finished.
    """
    rec_dir = Path(prov_dir) / "records"
    if run_id is not None:
        _check_id("run_id", run_id)
    if not rec_dir.is_dir():
        return 0
    pattern = f"run_date=*/run_id={run_id}" if run_id is not None else "run_date=*/run_id=*"
    removed = 0
    for part_dir in sorted(p for p in rec_dir.glob(pattern) if p.is_dir()):
        removed += _compact_partition(part_dir)
    return removed


# ----------------------------------------------------------------------------------------------
# Display


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.3f}"
    if isinstance(value, _dt.datetime):
        return value.isoformat(timespec="seconds")
    text = str(value)
    return text.replace("\r", " ").replace("\n", " ").replace("\t", " ")


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Aligned plain-text table (numbers right-aligned) for the CLI; no trailing spaces."""
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
    if not columns:
        return "(no rows)"
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        any(_is_num(row.get(c)) for row in rows)
        and all(row.get(c) is None or _is_num(row.get(c)) for row in rows)
        for c in columns
    ]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line(list(columns)), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    return "\n".join(out)
