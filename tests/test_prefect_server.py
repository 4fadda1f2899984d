"""A real Prefect server on loopback, started the way operators do (`make server` =
deployments/server.sh: server, work pool, `prefect deploy --all`, process worker). A run of the
`deidentify-cohort` deployment is triggered through the API as the UI does, and its outputs,
provenance, stored parameters and artifacts are checked: no key, no planted identifier.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _session_pids(sid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return [int(r[0]) for r in rows if r[1] == str(sid) and not r[2].startswith("Z")]


def _planted_phi(answer: dict) -> set[str]:
    """Identifying values the synthetic cohort planted (long enough not to match by chance)."""
    values: set[str] = set()
    for p in answer["patients"]:
        values.add(p["patient_id"])
        values.update(part for part in p["patient_name"].split("^") if len(part) >= 4)
    for f in answer["files"]:
        values.update(t["value"] for t in f.get("phi_tags", []) if len(str(t["value"])) >= 6)
        for k in ("sop_instance_uid", "study_instance_uid", "series_instance_uid"):
            if f.get(k):
                values.add(f[k])
    return {str(v) for v in values}


def test_deployment_run_through_the_api(tmp_path: Path) -> None:
    from deid_core import provenance as pv
    from deid_core.synth import generate_cohort

    t_start = time.perf_counter()
    answer = generate_cohort(tmp_path / "in", patients=1, seed=21)
    phi = _planted_phi(answer)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update({"PREFECT_HOME": str(tmp_path / "prefect-home"), "DEIDFLOW_SERVER_PORT": str(port),
                "DEIDFLOW_KEY": TEST_KEY.decode(), "BIN": str(Path(sys.executable).parent),
                "DEIDFLOW_WATCH_DIR": str(tmp_path / "watch"), "DEIDFLOW_OUTPUT_DIR": str(tmp_path / "wout"),
                "DEIDFLOW_PROVENANCE_DIR": str(tmp_path / "wprov"), "PREFECT_LOGGING_LEVEL": "INFO"})
    log = tmp_path / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(["bash", str(REPO / "deployments" / "server.sh")], cwd=REPO, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    timings: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 150
        while b"Worker 'ProcessWorker" not in log.read_bytes():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "server/worker not up: " + log.read_text()[-3000:]
            time.sleep(0.5)
        timings["server+deploy+worker up"] = time.perf_counter() - t_start
        text = log.read_text()
        for name in ("deidentify-cohort/deidentify-cohort", "deidentify-cohort/incremental",
                     "retry-failed/retry-failed"):
            assert f"Deployment '{name}' successfully created" in text

        from prefect.client.orchestration import get_client
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        out, prov = tmp_path / "out", tmp_path / "out-provenance"
        t0 = time.perf_counter()
        with temporary_settings({PREFECT_API_URL: api}):
            fr = run_deployment("deidentify-cohort/deidentify-cohort", timeout=240, parameters={
                "params": {"input_dir": str(tmp_path / "in"), "output_dir": str(out), "workers": 1}})
            timings["flow run"] = time.perf_counter() - t0
            assert fr.state is not None and fr.state.is_completed(), fr.state

            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs()
                artifacts = client.read_artifacts()
                dep = client.read_deployment_by_name("deidentify-cohort/incremental")
        # The nightly deployment carries its cron schedule and the watched folder from the environment.
        assert any(getattr(s.schedule, "cron", None) == "0 2 * * *" for s in dep.schedules)
        assert dep.parameters["params"]["input_dir"] == str(tmp_path / "watch")

        # Outputs and provenance of the run.
        written = list(out.rglob("*.dcm"))
        expected = sum(1 for f in answer["files"] if f["expect"] == "written")
        assert len(written) == expected
        summary = pv.audit_runs(prov)
        assert len(summary) == 1 and summary[0]["written"] == expected
        assert summary[0]["files"] == sum(1 for p in (tmp_path / "in").rglob("*") if p.is_file())

        # Nothing identifying, and never the key, in stored parameters or artifacts.
        stored = json.dumps([r.parameters for r in runs], default=str)
        assert any(r.id == fr.id for r in runs) and len(runs) >= 2  # the cohort flow and its Dask subflow
        keys = {a.key for a in artifacts}
        assert {"deidflow-progress", "deidflow-run-summary", "deidflow-actions"} <= keys
        blob = stored + json.dumps([[a.data, a.description, a.key] for a in artifacts], default=str)
        assert TEST_KEY.decode() not in blob
        leaked = sorted(v for v in phi if v in blob)
        assert not leaked, f"{len(leaked)} planted identifier(s) in Prefect parameters/artifacts"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # server.sh: SIGINT to the worker, SIGTERM to the server
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        left = _session_pids(proc.pid)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.wait(timeout=10)
    timings["total"] = time.perf_counter() - t_start
    print(f"\nprefect server test timings (s): { {k: round(v, 1) for k, v in timings.items()} }")
    assert not left, f"{len(left)} process(es) survived server.sh's shutdown"
