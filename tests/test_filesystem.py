"""The filesystem contract: inputs untouched, outputs and provenance private, a full disk or a permission
error fails the affected files cleanly (nothing partial) and a rerun completes them."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from deid_core.errors import ConfigError
from deid_core.inventory import sha256_file
from deid_core.provenance import audit_sql
from deid_core.writer import TMP_DIRNAME, output_umask
from tests.badinputs import base_dataset, save
from tests.conftest import TEST_KEY, run_library


def _cohort(root: Path, n: int = 4) -> None:
    for i in range(n):
        ds = base_dataset(100 + i, name=f"Trifaldi^Condesa{i}", pid=f"TC{i:06d}")
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.77.3100"
        save(ds, root / f"Trifaldi_MRN{i}" / f"{i}.dcm")


def _hashes(root: Path) -> dict[str, tuple[str, int, float]]:
    return {str(p.relative_to(root)): (sha256_file(p), p.stat().st_mode, p.stat().st_mtime)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _key(tmp: Path) -> str:
    (tmp / "key.bin").write_bytes(TEST_KEY)
    return str(tmp / "key.bin")


def _rows(prov: Path) -> list[tuple[str, str, str]]:
    _, rows = audit_sql(prov, "SELECT input_path, status, reason FROM records ORDER BY run_id, input_path")
    return [(str(r[0]), str(r[1]), str(r[2] or "")) for r in rows]


def test_inputs_untouched_and_outputs_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEIDFLOW_UMASK", raising=False)
    _cohort(tmp_path / "in")
    before = _hashes(tmp_path / "in")
    summary, _ = run_library(tmp_path / "in", tmp_path / "out", tmp_path / "prov", key_file=_key(tmp_path))
    assert summary.counts == {"written": 4}  # type: ignore[attr-defined]
    assert _hashes(tmp_path / "in") == before  # content, mode and mtime of every input unchanged
    outs = [p for p in (tmp_path / "out").rglob("*") if p != tmp_path / "out"]
    assert outs
    for p in outs:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o007 == 0, (p.name, oct(mode))  # nothing for others (default umask 027)
        assert mode & 0o020 == 0  # never group-writable
    # Provenance holds input paths: its root is 0700 (nothing below is reachable by others) and the
    # Parquet files that name inputs are 0600 themselves.
    assert stat.S_IMODE((tmp_path / "prov").stat().st_mode) == 0o700
    parquet = list((tmp_path / "prov").rglob("*.parquet"))
    assert parquet and {stat.S_IMODE(p.stat().st_mode) for p in parquet} == {0o600}


def test_umask_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEIDFLOW_UMASK", "077")
    old = os.umask(0)  # a permissive process umask must not widen the outputs
    try:
        _cohort(tmp_path / "in", 1)
        run_library(tmp_path / "in", tmp_path / "out", tmp_path / "prov", key_file=_key(tmp_path))
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "out").rglob("*.dcm")]
    dirs = [p for p in (tmp_path / "out").rglob("*") if p.is_dir()]
    assert files and dirs
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    assert {stat.S_IMODE(p.stat().st_mode) for p in dirs} == {0o700}
    for bad in ("888", "abc", "700", "1777"):
        monkeypatch.setenv("DEIDFLOW_UMASK", bad)
        with pytest.raises(ConfigError, match="DEIDFLOW_UMASK"):
            output_umask()


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES])
def test_full_disk_or_permission_error_then_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  err: int) -> None:
    _cohort(tmp_path / "in")
    key = _key(tmp_path)
    real_replace = os.replace
    calls = {"n": 0}

    def failing_replace(src: object, dst: object) -> None:
        # the first output lands, then the disk is "full" (or the directory unwritable) for the rest
        if str(dst).endswith(".dcm") and TMP_DIRNAME not in str(dst):
            calls["n"] += 1
            if calls["n"] > 1:
                raise OSError(err, os.strerror(err))
        real_replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr("deid_core.writer.os.replace", failing_replace)
    summary, _ = run_library(tmp_path / "in", tmp_path / "out", tmp_path / "prov", key_file=key)
    assert summary.counts == {"written": 1, "failed": 3}  # type: ignore[attr-defined]
    assert summary.reasons == {"write_error": 3}  # type: ignore[attr-defined]
    dcm = list((tmp_path / "out").rglob("*.dcm"))
    assert len(dcm) == 1  # nothing partial: the failed files are not there, not even truncated
    tmp_dir = tmp_path / "out" / TMP_DIRNAME
    assert not tmp_dir.exists() or list(tmp_dir.iterdir()) == []
    rows = _rows(tmp_path / "prov")
    assert sorted(s for _, s, _ in rows) == ["failed", "failed", "failed", "written"]
    assert all(r == "write_error" for _, s, r in rows if s == "failed")

    monkeypatch.setattr("deid_core.writer.os.replace", real_replace)
    summary2, _ = run_library(tmp_path / "in", tmp_path / "out", tmp_path / "prov", key_file=key)
    assert summary2.counts.get("failed", 0) == 0  # type: ignore[attr-defined]
    assert len(list((tmp_path / "out").rglob("*.dcm"))) == 4


@pytest.mark.slow
def test_input_tree_of_synthetic_cohort_unchanged(tmp_path: Path) -> None:
    from deid_core.synth import generate_cohort

    generate_cohort(tmp_path / "in", patients=1, seed=11)
    before = _hashes(tmp_path / "in")
    run_library(tmp_path / "in", tmp_path / "out", tmp_path / "prov", key_file=_key(tmp_path))
    assert _hashes(tmp_path / "in") == before
