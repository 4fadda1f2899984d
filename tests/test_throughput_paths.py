"""The fast paths of the per-file pipeline keep their guarantees: sampled dciodvfy, verification of
the encoded bytes before writing, per-batch durability."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from deid_core.batch import process_batch
from deid_core.config import DeidConfig
from deid_core.errors import ConfigError
from deid_core.inventory import inspect_file
from deid_core.pipeline import deidentify_file
from tests.conftest import TEST_KEY

HAS_DCIODVFY = shutil.which("dciodvfy") is not None


def _series(tmp_path: Path, n: int, series: int = 1) -> list[Path]:
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    paths = []
    for i in range(n):
        ds = base.copy()
        ds.PatientName, ds.PatientID = "ROE^RICHARD", "MRN4455667"
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["series", str(i % series)])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(i)])
        p = tmp_path / "in" / f"f{i}.dcm"
        p.parent.mkdir(exist_ok=True)
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def _modes(tmp_path: Path, mode: str, n: int = 4, series: int = 2) -> list[dict[str, object]]:
    cfg = DeidConfig(key=TEST_KEY, output_dir=tmp_path / f"out-{mode}", conformance=mode)
    recs = [inspect_file(p, TEST_KEY) for p in _series(tmp_path, n, series)]
    process_batch(recs, cfg, tmp_path / f"prov-{mode}", "run1", "2026-01-01")
    import duckdb

    rows = duckdb.sql(f"SELECT input_path, status, conformance FROM read_parquet("
                      f"'{tmp_path}/prov-{mode}/**/*.parquet') ORDER BY input_path").fetchall()
    assert [r[1] for r in rows] == ["written"] * n
    return [json.loads(r[2]) for r in rows]


def test_conformance_sample_runs_dciodvfy_on_first_file_of_each_series_per_batch(tmp_path: Path) -> None:
    confs = _modes(tmp_path, "sample", n=4, series=2)
    first = "run" if HAS_DCIODVFY else "not_installed"
    # f0, f1 open series 0 and 1; f2, f3 belong to series already sampled in this batch
    assert [c["dciodvfy_mode"] for c in confs] == [first, first, "not_sampled", "not_sampled"]
    assert all(c["iod"] == "CT Image" for c in confs)  # pydicom-level checks on every file
    assert ("dciodvfy" in confs[0]) == HAS_DCIODVFY and "dciodvfy" not in confs[2]


def test_conformance_full_and_off(tmp_path: Path) -> None:
    full = _modes(tmp_path, "full", n=3, series=1)
    assert [c["dciodvfy_mode"] for c in full] == ["run" if HAS_DCIODVFY else "not_installed"] * 3
    off = _modes(tmp_path, "off", n=3, series=1)
    assert [c["dciodvfy_mode"] for c in off] == ["off"] * 3
    assert all("issues" in c for c in off)


def test_conformance_mode_validated_and_not_in_settings_hash(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="conformance must be one of"):
        DeidConfig(key=TEST_KEY, output_dir=tmp_path, conformance="most")
    a = DeidConfig(key=TEST_KEY, output_dir=tmp_path, conformance="full")
    b = DeidConfig(key=TEST_KEY, output_dir=tmp_path, conformance="off")
    assert a.settings_hash() == b.settings_hash()


def test_lone_file_is_its_own_sample_and_outputs_identical_across_modes(tmp_path: Path) -> None:
    (src,) = _series(tmp_path, 1)
    outs = {}
    for mode in ("full", "off"):
        cfg = DeidConfig(key=TEST_KEY, output_dir=tmp_path / mode, conformance=mode)
        o = deidentify_file(src, cfg)
        assert o.status == "written", o.error
        outs[mode] = (tmp_path / mode / o.output_path).read_bytes()
    assert outs["full"] == outs["off"]


def test_batch_commits_staged_outputs_once_and_leaves_no_temporaries(tmp_path: Path) -> None:
    cfg = DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out")
    recs = [inspect_file(p, TEST_KEY) for p in _series(tmp_path, 3)]
    summary = process_batch(recs, cfg, tmp_path / "prov", "run1", "2026-01-01")
    assert summary.counts == {"written": 3}
    outs = [p for p in (tmp_path / "out").rglob("*.dcm") if ".deidflow-tmp" not in p.parts]
    assert len(outs) == 3 and all(pydicom.dcmread(p).PatientIdentityRemoved == "YES" for p in outs)
    assert list((tmp_path / "out" / ".deidflow-tmp").iterdir()) == []


def test_commit_staged_reports_a_file_it_could_not_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deid_core import writer

    staged = [writer.stage_atomic(tmp_path, f"a/{i}.dcm", b"x" * (i + 1)) for i in range(3)]
    assert not (tmp_path / "a" / "0.dcm").exists()  # staged: not visible before the commit
    staged[1].tmp.unlink()  # lost before commit (disk trouble)
    monkeypatch.setattr(writer, "_syncfs", lambda path: False)  # the per-file fsync fallback
    errors = writer.commit_staged(staged)
    assert errors[0] is None and errors[2] is None
    assert errors[1] is not None and errors[1].reason == "write_error"
    assert (tmp_path / "a" / "0.dcm").read_bytes() == b"x" and (tmp_path / "a" / "2.dcm").read_bytes() == b"xxx"
    assert not (tmp_path / "a" / "1.dcm").exists()
    assert list((tmp_path / ".deidflow-tmp").iterdir()) == []


def test_leak_is_caught_on_encoded_bytes_before_anything_is_written(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import deid_core.pipeline as pipeline_mod

    def no_scrub(self, ds, pixels_clean=False):  # type: ignore[no-untyped-def]
        return {}

    def must_not_write(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a leaky output reached the writer")

    monkeypatch.setattr(pipeline_mod.Anonymizer, "anonymize", no_scrub)
    monkeypatch.setattr(pipeline_mod, "stage_atomic", must_not_write)
    monkeypatch.setattr(pipeline_mod, "write_atomic", must_not_write)
    cfg = DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out")
    recs = [inspect_file(p, TEST_KEY) for p in _series(tmp_path, 2)]
    summary = process_batch(recs, cfg, tmp_path / "prov", "run1", "2026-01-01")
    assert summary.counts == {"quarantined": 2} and summary.reasons == {"leak_found": 2}
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
