"""The re-identification linkage tables (original → pseudonym), written only on request.

These files are as sensitive as the original data: they must never land inside the
de-identified output tree (which gets shared), they are 0600, and they are merged across runs
so a second batch extends rather than overwrites the first. Sorted, de-duplicated output keeps
them byte-identical for identical inputs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from deid_core.errors import ConfigError
from deid_core.keys import atomic_write

HEADER = ("id_old", "id_new")
UID_MAP_NAME = "uid_map.csv"
PATIENT_MAP_NAME = "patient_map.csv"


def _read_existing(path: Path) -> dict[str, str]:
    """Rows of an existing linkage file (conflicts inside it are reported by row number)."""
    if not path.exists():
        return {}
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read existing linkage file {path.name} ({type(exc).__name__})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return {}
    if tuple(header) != HEADER:
        raise ConfigError(f"existing linkage file {path.name} does not have the header id_old,id_new")
    rows: dict[str, str] = {}
    try:
        for row in reader:
            if not row:
                continue
            if len(row) != 2:
                raise ConfigError(f"existing linkage file {path.name}: row {reader.line_num} "
                                  "does not have 2 columns")
            old, new = row
            if rows.get(old, new) != new:
                raise ConfigError(f"existing linkage file {path.name}: row {reader.line_num} maps an "
                                  "original value already mapped to a different pseudonym")
            rows[old] = new
    except csv.Error:
        raise ConfigError(f"existing linkage file {path.name} is not valid CSV") from None
    return rows


def _merge(rows: dict[str, str], pairs: Iterable[tuple[str, str]], what: str) -> dict[str, str]:
    for old, new in pairs:
        if not isinstance(old, str) or not isinstance(new, str):
            raise ConfigError(f"{what} linkage pairs must be (str, str)")
        if rows.get(old, new) != new:
            raise ConfigError(f"{what} linkage conflict: one original value maps to two different pseudonyms")
        rows[old] = new
    return rows


def _render(rows: dict[str, str]) -> bytes:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for old in sorted(rows):
        w.writerow((old, rows[old]))
    return buf.getvalue().encode("utf-8")


def write_linkage(
    linkage_dir: Path,
    output_dir: Path,
    uid_pairs: Iterable[tuple[str, str]],
    patient_pairs: Iterable[tuple[str, str]],
) -> None:
    """Write/merge ``uid_map.csv`` and ``patient_map.csv`` (id_old,id_new; sorted, unique,
    0600, atomic) in ``linkage_dir``, which must not be inside ``output_dir``. Both files are
    validated before either is written, so a conflict leaves the previous tables untouched."""
    link = Path(linkage_dir).resolve()
    out = Path(output_dir).resolve()
    if link == out or link.is_relative_to(out):
        raise ConfigError("the linkage directory must not be inside the output directory")
    uid_path = link / UID_MAP_NAME
    pat_path = link / PATIENT_MAP_NAME
    uid_rows = _merge(_read_existing(uid_path), uid_pairs, "UID")
    pat_rows = _merge(_read_existing(pat_path), patient_pairs, "patient")
    try:
        link.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(uid_path, _render(uid_rows), 0o600)
        atomic_write(pat_path, _render(pat_rows), 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot write linkage files ({type(exc).__name__})") from None
