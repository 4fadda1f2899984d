"""The CLI starts the ephemeral Prefect API and a warmed LocalCluster side by side (flows/cli.py)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.cli import ApiStartError, prefect_api


def _worker_state() -> tuple[str, bool, bool, bool]:
    """In a worker: the API it reports to, whether Tesseract and Presidio are already loaded, and whether
    Prefect's task engine is (a fresh worker imported it when its first task came: ~1 s)."""
    from deid_core.pixels import ocr
    from deid_core.presidio_offline import get_analyzer

    return (os.environ.get("PREFECT_API_URL", ""), "tesseract" in ocr._ENGINES,
            get_analyzer.cache_info().currsize == 1, "prefect.task_engine" in sys.modules)


def _worker_origin() -> tuple[bool, int, str, bool]:
    """In a worker: whether its parent is a fork server, that parent's thread count, OMP_NUM_THREADS,
    and whether MALLOC_TRIM_THRESHOLD_ is set."""
    parent = os.getppid()
    cmdline = Path(f"/proc/{parent}/cmdline").read_bytes()
    return (b"multiprocessing.forkserver" in cmdline, len(os.listdir(f"/proc/{parent}/task")),
            os.environ.get("OMP_NUM_THREADS", ""), "MALLOC_TRIM_THRESHOLD_" in os.environ)


@pytest.mark.slow
def test_api_and_warm_cluster_start_together_and_stop_together() -> None:
    from distributed import Client

    assert not os.environ.get("PREFECT_API_URL")
    with prefect_api(workers=2) as address:
        api = os.environ["PREFECT_API_URL"]
        assert address and address.startswith("tcp://127.0.0.1:")
        with Client(address) as client:
            states = client.run(_worker_state)
            origins = client.run(_worker_origin)
        assert len(states) == 2
        # every worker reports to this run's API and loaded its engines before the first file
        assert set(states.values()) == {(api, True, True, True)}
        # forked from one fork server that imported their modules once, single-threaded when it forks
        # (a fork copies only the forking thread), with the variables Dask would have set when spawning
        assert set(origins.values()) == {(True, 1, "1", False)}
        import httpx

        assert httpx.get(f"{api}/health", timeout=5).status_code == 200
    assert not os.environ.get("PREFECT_API_URL")
    with pytest.raises(OSError), Client(address, timeout="2s"):
        pass  # the cluster is gone with the API


def test_no_local_cluster_without_workers() -> None:
    """An external cluster (--dask-address) or a bare API: nothing is started beside it."""
    os.environ["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # an API the caller manages
    try:
        with prefect_api(workers=None) as address:
            assert address is None
    finally:
        os.environ.pop("PREFECT_API_URL", None)


_PROBE = """
import json, sys, time
import psutil
from flows.cli import _runtime_defaults, prefect_api
_runtime_defaults()
with prefect_api(workers=None) as address:
    kids = [p.pid for p in psutil.Process().children() if "uvicorn" in " ".join(p.cmdline())]
    print(json.dumps({"server_module": "prefect.server.api.server" in sys.modules, "children": kids,
                      "address": address}), flush=True)
    if sys.argv[1] == "hang":
        time.sleep(600)
"""


def _probe(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    """A fresh interpreter that enters ``prefect_api(workers=None)`` and prints what it sees."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return subprocess.Popen([sys.executable, "-c", _PROBE, mode], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE)


def _gone(pids: list[int], within: float = 15.0) -> bool:
    """True once none of ``pids`` runs any more (a zombie counts as gone: it no longer serves)."""
    import psutil

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_parent_never_imports_the_server_module(tmp_path: Path) -> None:
    """The child is launched without ``prefect.server.api.server`` in the parent (1.5-2.4 s of imports)."""
    proc = _probe(tmp_path, "exit")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["server_module"] is False
    assert len(seen["children"]) == 1 and seen["address"] is None
    assert _gone(seen["children"])  # stopped with the context, before the interpreter exited


@pytest.mark.slow
def test_server_child_is_gone_after_the_context_even_on_error() -> None:
    import psutil

    def servers() -> set[int]:
        return {p.pid for p in psutil.Process().children() if "uvicorn" in " ".join(p.cmdline())}

    before = servers()
    with pytest.raises(ZeroDivisionError), prefect_api(workers=None):
        api = os.environ["PREFECT_API_URL"]
        started = servers() - before
        assert len(started) == 1
        conn = http.client.HTTPConnection("127.0.0.1", int(api.split(":")[2].split("/")[0]), timeout=5)
        conn.request("GET", "/api/health")
        assert conn.getresponse().status == 200
        1 / 0  # noqa: B018 - the block fails: the server must stop all the same
    assert not os.environ.get("PREFECT_API_URL")
    assert _gone(sorted(started), within=1.0)  # stop() waited for it


@pytest.mark.slow
def test_server_child_dies_with_a_sigkilled_parent(tmp_path: Path) -> None:
    """PR_SET_PDEATHSIG: a ``kill -9`` of deidflow (OOM killer) must not leave the API server running."""
    proc = _probe(tmp_path, "hang")
    assert proc.stdout is not None
    seen = json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert _gone(seen["children"])


def test_a_server_that_cannot_start_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's exit code in a short message (no paths, no values); nothing left behind."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the child exits 1 at once
    with pytest.raises(ApiStartError, match="exited with code 1"), prefect_api(workers=None):
        pass
    assert not os.environ.get("PREFECT_API_URL")


def test_prestarted_cluster_is_released_when_the_dask_work_is_over() -> None:
    """The CLI lets its LocalCluster go once the flow's Dask work is over (it closes while the flow writes
    its summary and QA report: the run's end took ~1.2 s less), and no later flow is sent to it."""
    from flows import deidentify
    from flows.cli import _prestarted

    released = []
    with _prestarted("tcp://127.0.0.1:1", lambda: released.append(True)):
        assert deidentify.LOCAL_CLUSTER == ["tcp://127.0.0.1:1"] and len(deidentify.DASK_DONE) == 1
        for done in list(deidentify.DASK_DONE):
            done()
        assert released == [True] and deidentify.LOCAL_CLUSTER == []
    assert deidentify.LOCAL_CLUSTER == [] and deidentify.DASK_DONE == []
    with _prestarted(None, lambda: released.append(True)):  # no cluster of ours: nothing to release
        assert deidentify.DASK_DONE == []


def test_the_flow_signals_the_end_of_its_dask_work_even_when_it_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import deidentify
    from tests.conftest import TEST_KEY

    (tmp_path / "in").mkdir()
    monkeypatch.setenv("DEIDFLOW_KEY", TEST_KEY.decode())
    calls: list[str] = []

    def lost(*args: object, **kwargs: object) -> None:
        calls.append("subflow")
        raise RuntimeError("worker lost")

    class Subflow:  # stands in for process_cohort: no Dask needed to see the order
        def with_options(self, **kwargs: object) -> object:
            return lost

    monkeypatch.setattr(deidentify, "process_cohort", Subflow())
    monkeypatch.setattr(deidentify, "DASK_DONE", [lambda: calls.append("released")])
    params = deidentify.CohortParameters(input_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"),
                                         dask_address="tcp://127.0.0.1:1")
    with prefect_api(), pytest.raises(RuntimeError, match="worker lost"):
        deidentify.deidentify_cohort(params)
    assert calls == ["subflow", "released"]


def test_flow_runs_on_the_ephemeral_api_send_no_heartbeats() -> None:
    """Nobody outlives the ephemeral API to watch heartbeats, and Prefect's heartbeat thread cost every
    flow run up to 1 s at its end; a run against a server of its own keeps Prefect's setting."""
    from prefect.settings import get_current_settings

    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None
    with prefect_api(workers=None):
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == default
    os.environ["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # an API the caller manages
    try:
        with prefect_api(workers=None):
            assert get_current_settings().flows.heartbeat_frequency == default
    finally:
        os.environ.pop("PREFECT_API_URL", None)
