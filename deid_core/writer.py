"""Atomic writes into the output tree.

A file is written to a temporary name inside ``OUTPUT/.deidflow-tmp`` (same filesystem), made
durable (fsync per file, or one syncfs per batch with ``stage_atomic``/``commit_staged``), then
renamed to its final name, so a reader or a crash never sees half a file; ``clean_tmp``
removes leftovers of a killed run before the next one starts. Output names are built only from
new identifiers: nothing of the input's names survives in the output tree.

Permissions are set explicitly (not left to the process umask, which differs between a CLI, a Dask
worker and a service): files ``0o666 & ~umask``, directories ``0o777 & ~umask`` with the umask from
``DEIDFLOW_UMASK`` (octal, default ``027``: owner read/write, group read, nothing for others).
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from deid_core.errors import ConfigError, WriteError

TMP_DIRNAME = ".deidflow-tmp"
UMASK_ENV = "DEIDFLOW_UMASK"
DEFAULT_UMASK = 0o027
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_component(value: str) -> str:
    """A path component from a pseudonym: only [A-Za-z0-9._-], never empty, never '.'/'..'."""
    cleaned = _UNSAFE.sub("_", value.strip())[:64].strip(".")
    return cleaned or "_"


def output_relpath(ds: Dataset) -> str:
    """``<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` of a de-identified ds."""
    parts = [str(ds.get(k, "") or "") for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID",
                                                 "SOPInstanceUID")]
    if not parts[3]:
        raise WriteError("de-identified dataset has no SOPInstanceUID")
    return "/".join(safe_component(p or "NONE") for p in parts[:3]) + f"/{safe_component(parts[3])}.dcm"


#: Pixel values at least this long are written from a buffer view (see ``encode``).
_BUFFERED_MIN = 1 << 20
_PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)


def encode(ds: Dataset) -> bytes:
    """Serialise ``ds`` as a DICOM file (preamble, file meta) deterministically.

    pydicom encodes each element into a temporary buffer before copying it to the output, which for a
    large image means a third copy of the pixels at the peak; a large pixel value is therefore handed to
    it as a buffered value (a view of the same bytes, written straight to the output: same bytes out),
    and restored afterwards."""
    buf = io.BytesIO()
    swapped: list[tuple[int, bytes]] = []
    try:
        for tag in _PIXEL_TAGS:
            elem = ds.get_item(tag, keep_deferred=True) if tag in ds else None
            if elem is None or getattr(elem, "is_raw", False):
                continue
            value = elem.value
            if isinstance(value, bytes) and len(value) >= _BUFFERED_MIN and len(value) % 2 == 0:
                swapped.append((tag, value))
                elem.value = io.BytesIO(value)  # shares the bytes until written (no copy)
        ds.save_as(buf, enforce_file_format=True)
    finally:
        for tag, value in swapped:
            ds[tag].value = value
    return buf.getvalue()


def output_umask() -> int:
    """The umask applied to outputs: ``DEIDFLOW_UMASK`` (octal, e.g. ``077``) or 027."""
    raw = os.environ.get(UMASK_ENV, "").strip()
    if not raw:
        return DEFAULT_UMASK
    try:
        value = int(raw, 8)
    except ValueError:
        raise ConfigError(f"{UMASK_ENV} must be an octal umask such as 027 or 077") from None
    if not 0 <= value <= 0o777 or value & 0o600:
        raise ConfigError(f"{UMASK_ENV} must be within 000-777 and leave the owner read/write")
    return value


def _makedirs(path: Path, mode: int) -> None:
    # mkdir's mode is filtered by the process umask: chmod each directory we create explicitly.
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
        except FileExistsError:
            continue  # another worker created it (and set its mode)
        os.chmod(d, mode)


@dataclass
class StagedWrite:
    """A complete, checked output in ``OUTPUT/.deidflow-tmp`` waiting for its batch's commit."""

    tmp: Path
    final: Path
    sha256: str


def stage_atomic(output_dir: Path, relpath: str, data: bytes, mode: int | None = None,
                 check: Callable[[Path], None] | None = None, *, sync: bool = False) -> StagedWrite:
    """Write ``data`` to a temporary file of ``output_dir`` (not yet visible under ``relpath``).

    ``mode`` defaults to ``0o666 & ~output_umask()``; it is applied with fchmod, whatever the umask.
    ``check(tmp_path)`` runs on the complete temporary file; if it raises, the file is removed.
    ``sync`` fsyncs the file now; otherwise ``commit_staged`` makes a whole batch durable at once."""
    umask = output_umask()
    fmode = (0o666 & ~umask) if mode is None else mode
    final = output_dir / relpath
    tmp_dir = output_dir / TMP_DIRNAME
    try:
        _makedirs(tmp_dir, 0o700)
        _makedirs(final.parent, 0o777 & ~umask)
        tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, fmode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                if sync:
                    os.fsync(fh.fileno())
            if check is not None:
                check(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise WriteError(f"cannot write output ({exc.strerror or type(exc).__name__})") from None
    return StagedWrite(tmp, final, hashlib.sha256(data).hexdigest())


def write_atomic(output_dir: Path, relpath: str, data: bytes, mode: int | None = None,
                 check: Callable[[Path], None] | None = None) -> str:
    """Write ``data`` to ``output_dir/relpath`` atomically and durably; returns the SHA-256 of the bytes.

    ``check(tmp_path)`` runs on the complete temporary file before it is renamed into place (the
    verification of the file as written): if it raises, nothing reaches the output tree."""
    staged = stage_atomic(output_dir, relpath, data, mode, check, sync=True)
    try:
        os.replace(staged.tmp, staged.final)
    except OSError as exc:
        staged.tmp.unlink(missing_ok=True)
        raise WriteError(f"cannot write output ({exc.strerror or type(exc).__name__})") from None
    return staged.sha256


def _syncfs(path: Path) -> bool:
    """One ``syncfs(2)`` for the filesystem holding ``path`` (Linux); False when unavailable or failed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        return bool(fn(fd) == 0)
    finally:
        os.close(fd)


def commit_staged(staged: list[StagedWrite]) -> list[WriteError | None]:
    """Make a batch of staged outputs durable, then rename each into place (atomic per file).

    Durability is paid once per batch: one ``syncfs`` of the output filesystem instead of one fsync
    per file (falls back to fsync per file when syncfs is unavailable or reports an error); the
    directories that received files are fsynced after the renames. Returns, per staged write, None
    or the WriteError that kept it out of the output tree (its temporary file is removed)."""
    errors: list[WriteError | None] = [None] * len(staged)
    if not staged:
        return errors
    if not _syncfs(staged[0].tmp.parent):
        for i, st in enumerate(staged):
            try:
                fd = os.open(st.tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                errors[i] = WriteError(f"cannot write output ({exc.strerror or type(exc).__name__})")
    dirs: set[Path] = set()
    for i, st in enumerate(staged):
        if errors[i] is None:
            try:
                os.replace(st.tmp, st.final)
                dirs.add(st.final.parent)
                continue
            except OSError as exc:
                errors[i] = WriteError(f"cannot write output ({exc.strerror or type(exc).__name__})")
        st.tmp.unlink(missing_ok=True)
    for d in sorted(dirs):
        try:
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass  # the files are renamed and their data durable; a directory fsync is best effort
    return errors


def discard_staged(staged: list[StagedWrite]) -> None:
    """Remove staged temporary files of a batch that will not be committed."""
    for st in staged:
        st.tmp.unlink(missing_ok=True)


def clean_tmp(output_dir: Path) -> int:
    """Remove temporary files a killed run left behind; returns how many were removed."""
    tmp_dir = Path(output_dir) / TMP_DIRNAME
    if not tmp_dir.exists():
        return 0
    n = sum(1 for _ in tmp_dir.iterdir())
    shutil.rmtree(tmp_dir, ignore_errors=True)
    return n
