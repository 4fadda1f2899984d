"""Operations: retryable failures, batch-failure records (flow side and the task's on_failure hook),
`deidflow retry` end to end, and the prefect.yaml deployments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY, run_library

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def one_patient(tmp_path: Path) -> Path:
    from deid_core.synth import generate_cohort

    generate_cohort(tmp_path / "in", patients=1, seed=4)
    (tmp_path / "key.bin").write_bytes(TEST_KEY)
    return tmp_path


def _status(prov: Path, run_id: str) -> list[tuple[str, str, str, int]]:
    from deid_core.provenance import connect

    with connect(prov) as con:
        return [tuple(r) for r in con.execute(  # type: ignore[misc]
            "SELECT input_path, status, coalesce(reason, ''), attempt FROM records WHERE run_id = ? "
            "ORDER BY input_path", [run_id]).fetchall()]


def _run_with_write_errors(base: Path) -> tuple[object, object, str]:
    """A run where one patient's output directory is blocked by a file: its files are quarantined
    with write_error (retryable); the run record keeps the parameters a retry needs."""
    probe, _ = run_library(base / "in", base / "probe", base / "probe-prov", key_file=str(base / "key.bin"))
    patient_dir = sorted(p.name for p in (base / "probe").iterdir() if p.is_dir() and p.name[0] != ".")[0]
    (base / "out").mkdir()
    (base / "out" / patient_dir).write_bytes(b"blocks the directory")
    params = {"input_dir": str(base / "in"), "output_dir": str(base / "out"), "workers": 1}
    summary, plan = run_library(base / "in", base / "out", base / "prov", key_file=str(base / "key.bin"),
                                parameters=params)
    return summary, plan, patient_dir


def test_plan_retry_selects_only_retryable_failures(one_patient: Path) -> None:
    from deid_core.errors import ConfigError
    from deid_core.run import RETRYABLE_REASONS, latest_run_id, plan_retry

    base = one_patient
    summary, plan, _ = _run_with_write_errors(base)
    rows = _status(base / "prov", plan.run_id)  # type: ignore[attr-defined]
    write_errors = sorted(r[0] for r in rows if r[2] == "write_error")
    not_retryable = [r for r in rows if r[1] in ("quarantined", "failed") and r[2] not in RETRYABLE_REASONS]
    assert write_errors and not_retryable  # the cohort also plants bad inputs (bad_input: not retryable)
    assert "bad_input" not in RETRYABLE_REASONS and "leak_found" not in RETRYABLE_REASONS

    assert latest_run_id(base / "prov") == plan.run_id  # type: ignore[attr-defined]
    retry = plan_retry(base / "prov")
    assert retry.run_id == plan.run_id  # type: ignore[attr-defined]
    assert retry.paths == write_errors
    assert retry.attempt == 2 and retry.not_retryable == len(not_retryable)
    assert retry.parameters["output_dir"] == str(base / "out")
    with pytest.raises(ConfigError, match="no run record"):
        plan_retry(base / "prov", "20990101T000000Z-000000")
    with pytest.raises(ConfigError, match="holds no runs"):
        plan_retry(base / "empty")


def test_batch_failure_is_recorded_once_and_retryable(one_patient: Path) -> None:
    from deid_core.inventory import find_files, inspect_file
    from deid_core.provenance import connect
    from deid_core.run import plan_retry, prepare_run, record_batch_failure

    base = one_patient
    plan = prepare_run(base / "in", base / "out", provenance_dir=base / "prov", key_file=str(base / "key.bin"))
    recs = [inspect_file(p, plan.cfg.key) for p in find_files(base / "in")][:5]
    for _ in range(2):  # the hook and the flow both record it: same batch id, one copy
        s = record_batch_failure(plan.provenance_dir, plan.run_id, plan.run_date, recs, "worker_lost",
                                 "batch task failed (KilledWorker)", table_sha=plan.table_sha256,
                                 key_fp=plan.key_fp, attempt=3)
    assert s.counts == {"failed": 5} and s.reasons == {"worker_lost": 5}
    with connect(plan.provenance_dir) as con:
        rows = con.execute("SELECT status, reason, error, attempt, key_fingerprint FROM records").fetchall()
    assert len(rows) == 5
    assert {r[:4] for r in rows} == {("failed", "worker_lost", "batch task failed (KilledWorker)", 3)}
    assert {r[4] for r in rows} == {plan.key_fp}
    # A retry needs the run record (a finished run); then it takes the failed inputs, attempt 4.
    from deid_core.run import finish_run

    finish_run(plan, [s])
    retry = plan_retry(plan.provenance_dir, plan.run_id)
    assert sorted(retry.paths) == sorted(r.path for r in recs) and retry.attempt == 4


@pytest.mark.slow
def test_on_failure_hook_records_the_failed_batch(one_patient: Path) -> None:
    """A real Prefect task failure (ephemeral API): the batch cannot even build its context because
    the patient map vanished after the run was planned; the hook writes one failed row per input."""
    from prefect import flow

    from deid_core.inventory import find_files, inspect_file
    from deid_core.run import plan_retry, prepare_run
    from tasks.deid_tasks import deidentify_batch

    base = one_patient
    pmap = base / "map.csv"
    pmap.write_text("original_patient_id,new_patient_id,new_patient_name\nNOBODY,P1,Anon^One\n")
    plan = prepare_run(base / "in", base / "out", provenance_dir=base / "prov", key_file=str(base / "key.bin"),
                       patient_map=str(pmap))
    pmap.unlink()
    recs = [r for r in (inspect_file(p, plan.cfg.key) for p in find_files(base / "in")) if r.status == "ok"][:4]
    cfg = plan.cfg

    @flow(name="hook-probe")
    def probe() -> str:
        state = deidentify_batch.with_options(retries=0)(recs, cfg, str(plan.provenance_dir), plan.run_id,
                                                        plan.run_date, 2, return_state=True)
        return state.type.value

    from flows.cli import prefect_api

    with prefect_api():  # one API for this test, stopped at the end (not at interpreter exit)
        assert probe() == "FAILED"
    rows = _status(plan.provenance_dir, plan.run_id)
    assert [r[0] for r in rows] == sorted(r.path for r in recs)
    assert {r[1:] for r in rows} == {("failed", "batch_failed", 2)}
    from deid_core.provenance import connect

    with connect(plan.provenance_dir) as con:
        errors = {r[0] for r in con.execute("SELECT error FROM records").fetchall()}
    assert errors == {"batch task failed (ConfigError)"}  # the class, never a message or a value
    from deid_core.run import finish_run

    finish_run(plan, [])
    assert len(plan_retry(plan.provenance_dir).paths) == 4


@pytest.mark.slow
def test_cli_retry_redoes_only_retryable_failures(one_patient: Path) -> None:
    base = one_patient
    summary, plan, patient_dir = _run_with_write_errors(base)
    before = _status(base / "prov", plan.run_id)  # type: ignore[attr-defined]
    n_retry = sum(1 for r in before if r[2] == "write_error")
    (base / "out" / patient_dir).unlink()  # the operator fixed the cause
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.pop("DEIDFLOW_KEY", None)
    env["PREFECT_HOME"] = str(base / ".prefect")
    cmd = [sys.executable, "-m", "flows.cli", "retry", "--provenance", str(base / "prov")]
    r = subprocess.run([*cmd, "--key-file", str(base / "key.bin"), "--workers", "1"], cwd=base, env=env,
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert f"retrying {n_retry} file(s) of run {plan.run_id} (attempt 2)" in r.stdout  # type: ignore[attr-defined]
    from deid_core.run import latest_run_id

    new_run = latest_run_id(base / "prov")
    assert new_run and new_run != plan.run_id  # type: ignore[attr-defined]
    after = _status(base / "prov", new_run)
    assert sorted(x[0] for x in after) == sorted(x[0] for x in before if x[2] == "write_error")
    assert {x[3] for x in after} == {2}
    assert all(x[1] == "written" for x in after)
    assert f"{n_retry} written" in r.stdout
    # The retried outputs are the same bytes an uninterrupted run writes.
    probe = {p.relative_to(base / "probe"): p.read_bytes() for p in (base / "probe").rglob("*.dcm")}
    out = {p.relative_to(base / "out"): p.read_bytes() for p in (base / "out").rglob("*.dcm")}
    assert out == probe
    # Nothing retryable is left; a wrong key is refused before anything runs.
    r2 = subprocess.run([*cmd, "--key-file", str(base / "key.bin")], cwd=base, env=env, capture_output=True,
                        text=True, timeout=120, check=False)
    assert r2.returncode == 0 and "nothing to retry" in r2.stdout
    (base / "other.key").write_bytes(b"another-key-0123456789abcdef")
    r3 = subprocess.run([*cmd, plan.run_id, "--key-file", str(base / "other.key")],  # type: ignore[attr-defined]
                        cwd=base, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert r3.returncode == 2 and "key" in r3.stderr and "another-key" not in r3.stderr


def test_prefect_yaml_declares_the_three_deployments() -> None:
    import yaml

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    deps = {d["name"]: d for d in spec["deployments"]}
    assert set(deps) == {"deidentify-cohort", "incremental", "retry-failed"}
    assert {d["work_pool"]["name"] for d in deps.values()} == {"deidflow-pool"}
    assert deps["incremental"]["schedules"][0]["cron"] == "0 2 * * *"
    assert deps["incremental"]["parameters"]["params"]["incremental"] is True
    for d in deps.values():
        path, func = d["entrypoint"].split(":")
        assert f"def {func}(" in (REPO / path).read_text()
        assert "key" not in str(d.get("parameters", {})).replace("key_secret", "")
    assert spec["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"]
