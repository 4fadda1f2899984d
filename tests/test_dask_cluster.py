"""The flow runs its per-file stage on an existing Dask cluster: a real `dask scheduler` and `dask worker`
on 127.0.0.1, and a real `prefect server` (tasks on an external worker report to a Prefect API)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.conftest import TEST_KEY

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: object, what: str, deadline: float, procs: list[subprocess.Popen[bytes]]) -> None:
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{what}: a helper process exited early ({p.returncode})")
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # noqa: S310 - local test server
        return bool(r.status == 200)


def _stop(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], Path]]:
    base = tmp_path_factory.mktemp("dask_cluster")
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update({"PREFECT_HOME": str(base / ".prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "OMP_THREAD_LIMIT": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                # task-run lines in the worker's log prove where the work ran (make test exports WARNING)
                "PREFECT_LOGGING_LEVEL": "INFO"})
    sport, pport = _free_port(), _free_port()
    api = f"http://127.0.0.1:{pport}/api"
    env["PREFECT_API_URL"] = api
    procs: list[subprocess.Popen[bytes]] = []
    logs = base / "logs"
    logs.mkdir()

    def start(name: str, *cmd: str) -> subprocess.Popen[bytes]:
        out = (logs / f"{name}.log").open("wb")
        p = subprocess.Popen(list(cmd), env=env, cwd=base, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        procs.append(p)
        return p

    try:
        deadline = time.monotonic() + 60
        start("prefect", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(pport))
        start("scheduler", str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(sport),
              "--no-dashboard")
        _wait(lambda: _port_open(sport), "dask scheduler", deadline, procs)
        # as docs/operator.md tells operators: the nanny must not set MALLOC_TRIM_THRESHOLD_ (41 % slower)
        worker_env = dict(env, DASK_CONFIG=str(Path(__file__).resolve().parents[1] / "deployments" / "dask"))
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", f"tcp://127.0.0.1:{sport}", "--nworkers", "1", "--nthreads", "1",
             "--no-dashboard"], env=worker_env, cwd=base, stdout=(logs / "worker.log").open("wb"),
            stderr=subprocess.STDOUT, start_new_session=True))
        _wait(lambda: _healthy(api), "prefect server health", deadline, procs)
        yield f"tcp://127.0.0.1:{sport}", env, base
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.mark.slow
def test_flow_runs_on_external_dask_cluster(cluster: tuple[str, dict[str, str], Path]) -> None:
    address, env, base = cluster
    from distributed import Client

    with Client(address, timeout=30) as client:  # the worker has joined before the flow starts
        client.wait_for_workers(1, timeout=30)
        assert len(client.scheduler_info()["workers"]) == 1
        # the documented environment variable reaches the worker process: no MALLOC_TRIM_THRESHOLD_
        assert list(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == [None]
    cli = [sys.executable, "-m", "flows.cli"]
    synth = subprocess.run([*cli, "synth", str(base / "in"), "--patients", "1"], env=env, cwd=base,
                           capture_output=True, text=True, timeout=60, check=False)
    assert synth.returncode == 0, synth.stderr[-2000:]
    n_inputs = sum(1 for p in (base / "in").rglob("*") if p.is_file())
    run_env = dict(env, DEIDFLOW_KEY=TEST_KEY.decode())
    r = subprocess.run([*cli, "run", "in", "out", "--dask-address", address], env=run_env, cwd=base,
                       capture_output=True, text=True, timeout=150, check=False)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    outputs = list((base / "out").rglob("*.dcm"))
    assert outputs
    prov = base / "out-provenance"
    rows = duckdb.sql(f"select input_path, status from read_parquet('{prov}/**/*.parquet', union_by_name=true)"
                      " where input_path is not null").fetchall()
    inputs = {str(p) for p in (base / "in").rglob("*") if p.is_file()}
    seen = [os.path.realpath(p) for p, _ in rows]
    assert len(seen) == len(set(seen)) == n_inputs
    assert set(seen) == {os.path.realpath(p) for p in inputs}
    assert sum(1 for _, s in rows if s == "written") == len(outputs)
    # the per-file stage really ran on the external worker, not in a local cluster
    worker_log = (base / "logs" / "worker.log").read_text(errors="replace")
    assert "Task run 'deidentify-batch" in worker_log and "Finished in state Completed" in worker_log
