"""The real thing from the command line: `deidflow run` starts Prefect's ephemeral API and a Dask
LocalCluster, and its outputs, provenance, exit codes and incremental reruns are checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from tests.conftest import TEST_KEY

DEIDFLOW = [sys.executable, "-m", "flows.cli"]


def deidflow(*args: str, cwd: Path, env_extra: dict[str, str] | None = None,
             timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update({"PREFECT_HOME": str(cwd / ".prefect"), "DEIDFLOW_KEY": TEST_KEY.decode()})
    env.update(env_extra or {})
    return subprocess.run([*DEIDFLOW, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cli")
    r = deidflow("synth", str(base / "in"), "--patients", "1", "--seed", "3", cwd=base)
    assert r.returncode == 0, r.stderr
    return base


@pytest.mark.slow
def test_run_flow_then_incremental_rerun(small_cohort: Path) -> None:
    base = small_cohort
    n_inputs = sum(1 for p in (base / "in").rglob("*") if p.is_file())
    r = deidflow("run", "in", "out", "--workers", "2", cwd=base)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"{n_inputs} files" in r.stdout and "written" in r.stdout and "quarantined" in r.stdout
    assert "provenance:" in r.stdout and str(base / "out-provenance") in r.stdout
    assert f"{n_inputs}/{n_inputs} files (100%)" in r.stderr  # progress, batch by batch, counts only
    assert f"{n_inputs} files found: " in r.stderr  # what the run will do, before the first batch
    outputs = {p.relative_to(base / "out"): p.read_bytes() for p in (base / "out").rglob("*.dcm")}
    assert outputs and all(pydicom.dcmread(base / "out" / p).PatientIdentityRemoved == "YES" for p in outputs)
    assert not (base / "out" / ".deidflow-tmp").exists() or not any((base / "out" / ".deidflow-tmp").iterdir())

    # Same inputs, key and rules: nothing is redone, every good input is skipped as already done.
    r2 = deidflow("run", "in", "out", "--workers", "1", cwd=base)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert f"{len(outputs)} skipped" in r2.stdout
    assert f"{len(outputs)} already done or skipped" in r2.stderr  # a rerun says what it skips before its summary

    audit = deidflow("audit", "runs", "--provenance", "out-provenance", cwd=base)
    assert audit.returncode == 0 and audit.stdout.count("\n") >= 4  # header, rule, two runs
    # a typo in the user's own SQL, or a wrong provenance folder: a one-line error, exit 2, no traceback
    for args in (("audit", "sql", "SELECT nosuch FROM records", "--provenance", "out-provenance"),
                 ("audit", "runs", "--provenance", "no-such-folder"), ("compact", "--provenance", "no-such-folder")):
        bad = deidflow(*args, cwd=base)
        assert bad.returncode == 2 and bad.stderr.startswith("deidflow: error:"), bad.stderr[-2000:]
        assert "Traceback" not in bad.stderr

    # A fresh output with the same key is byte-identical (determinism across runs).
    r3 = deidflow("run", "in", "out2", "--workers", "1", "--provenance", "prov2", cwd=base)
    assert r3.returncode == 0, r3.stderr[-3000:]
    again = {p.relative_to(base / "out2"): p.read_bytes() for p in (base / "out2").rglob("*.dcm")}
    assert again == outputs


def test_usage_errors_exit_2_and_write_nothing(small_cohort: Path) -> None:
    base = small_cohort
    r = deidflow("run", "does-not-exist", "o", cwd=base)
    assert r.returncode == 2 and "does not exist" in r.stderr
    bad_map = base / "bad_map.csv"
    bad_map.write_text("original_patient_id,new_patient_id,new_patient_name\nA,P1,X\nB,P1,Y\n")
    r = deidflow("run", "in", "o2", "--patient-map", str(bad_map), cwd=base)
    assert r.returncode == 2 and "error" in r.stderr
    assert not list((base / "o2").rglob("*.dcm")) if (base / "o2").exists() else True
    r = deidflow("run", "in", "in/inside", cwd=base)
    assert r.returncode == 2 and "inside" in r.stderr
    r = deidflow("run", "in", "o3", cwd=base, env_extra={"DEIDFLOW_KEY": "short"})
    assert r.returncode == 2 and "DEIDFLOW_KEY" in r.stderr and "short" not in r.stderr.replace("too short", "")
    for opt, value, said in (("--batch-size", "5000", "outside 1-2000"), ("--workers", "0", "outside 1-1024"),
                             ("--batch-size", "many", "not a whole number")):
        r = deidflow("run", "in", "o4", opt, value, cwd=base)
        assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr, r.stderr[-500:]
    assert not (base / "o4").exists()


def test_help_teaches() -> None:
    r = subprocess.run([*DEIDFLOW, "--help"], capture_output=True, text=True, check=True)
    for word in ("run", "synth", "demo", "audit", "explain", "examples:"):
        assert word in r.stdout
    r = subprocess.run([*DEIDFLOW, "run", "--help"], capture_output=True, text=True, check=True)
    assert "--patient-map" in r.stdout and "--dask-address" in r.stdout and "quarantined" in r.stdout


def test_a_reader_that_leaves_early_is_no_error() -> None:
    """`deidflow explain --all | head`: the pipe closes early; a BrokenPipeError traceback used to follow."""
    proc = subprocess.Popen([*DEIDFLOW, "explain", "--all"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(100).startswith(b"kind,tag,")
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err, err[-2000:]
