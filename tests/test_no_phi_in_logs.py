"""No identifier in logs, errors, artifacts or parameters: a 1-patient synthetic cohort goes through the
real CLI (``python -m flows.cli --log-level DEBUG run``: Prefect, Dask, root and deidflow loggers at
DEBUG), then everything an operator or a log shipper can see is searched for the planted identifiers:

* the CLI's stdout and stderr (every log line of the CLI, its Dask workers and its Prefect API);
* the Prefect run logs, artifacts and flow-run parameters, read back through ``prefect.get_client()``
  from a real ``prefect server start`` on the Prefect database the run wrote;
* the provenance error strings.

The CLI runs with its own ephemeral Prefect API (the default mode): that is where buffered run logs
must be delivered before the API stops, and where a DEBUG run used to hang ~2 min at exit; the test
asserts the exit is prompt and that the final flow log reached the database.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
KINDS = ("name", "id", "phone", "address", "email", "institution")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def planted_identifiers(answer: dict, inp: Path) -> set[str]:
    """Identifying values the cohort planted. Pure digit strings shorter than 8 are left out (a PID, a
    port or a byte count in a DEBUG line can equal them by chance); their prefixed forms stay in."""
    values: set[str] = set()
    for p in answer["patients"]:
        values.add(p["patient_id"])
        values.update(part for part in p["patient_name"].split("^") if len(part) >= 4)
    for f in answer["files"]:
        for t in f.get("phi_tags", []):
            if t["kind"] not in KINDS:
                continue
            v = str(t["value"]).strip()
            parts = [v] + ([x.strip() for x in v.split("^")] if "^" in v else [])
            values.update(x for x in parts if len(x) >= 4 and not (x.isdigit() and len(x) < 8))
    # The input tree names patients: its folder and file names must not travel either.
    for p in inp.rglob("*"):
        if p.name != "answer.json" and not re.fullmatch(r"(IM\d+\.dcm|[A-Z]{2}_\d{8})", p.name):
            values.add(p.name)
    return {v for v in values if len(v) >= 4}


def find_planted(text: str, values: set[str]) -> list[str]:
    """The planted values found in ``text`` (exact case; not inside a longer alphanumeric word)."""
    found = []
    for v in sorted(values):
        if re.search(r"(?<![A-Za-z0-9])" + re.escape(v) + r"(?![A-Za-z0-9])", text):
            found.append(v)
    return found


def _read_back(api: str) -> dict[str, list[object]]:
    """Every log, artifact and flow run the Prefect API holds (paged), as plain JSON-able dicts."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    out: dict[str, list[object]] = {"logs": [], "artifacts": [], "flow_runs": []}
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        for name, read in (("logs", client.read_logs), ("artifacts", client.read_artifacts),
                           ("flow_runs", client.read_flow_runs)):
            offset = 0
            while True:
                page = read(limit=200, offset=offset)  # type: ignore[operator]
                out[name] += [m.model_dump(mode="json") for m in page]
                if len(page) < 200:
                    break
                offset += 200
    return out


def _last_flow_log_age(stderr: str, ended: datetime) -> float:
    """Seconds between the last 'Finished in state' log line and the CLI's exit (log times are local)."""
    stamps = re.findall(r"^(\d\d):(\d\d):(\d\d\.\d+) \| \w+\s*\| Flow run .* - Finished in state", stderr, re.M)
    assert stamps, "no flow run finished line in the DEBUG log"
    h, m, s = stamps[-1]
    last = int(h) * 3600 + int(m) * 60 + float(s)
    now = ended.hour * 3600 + ended.minute * 60 + ended.second + ended.microsecond / 1e6
    return (now - last) % 86400


def test_debug_run_leaves_no_identifier_in_logs_artifacts_or_parameters(tmp_path: Path) -> None:
    from deid_core.provenance import audit_sql
    from deid_core.synth import generate_cohort

    answer = generate_cohort(tmp_path / "in", patients=1, seed=11)
    planted = planted_identifiers(answer, tmp_path / "in")
    assert len(planted) >= 15 and any("_MRN" in v for v in planted)  # the net is really cast
    sample = min((tmp_path / "in").rglob("*.dcm"))
    assert find_planted(f"quarantined {sample}: reason", planted)  # an input path in a line is caught
    home = tmp_path / "prefect-home"
    env = dict(os.environ)
    for k in ("PREFECT_API_URL", "PREFECT_LOGGING_LEVEL", "PREFECT_LOGGING_ROOT_LEVEL"):
        env.pop(k, None)
    env.update({"PREFECT_HOME": str(home), "DEIDFLOW_KEY": TEST_KEY.decode(),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})

    t0 = time.monotonic()
    # the input folder is the patient's own export folder ("Smith_John_MRN123/"): the flow-run parameters the
    # Prefect API stores must not carry it (the CLI passes a token in place of its paths)
    patient_dir = next(p for p in sorted((tmp_path / "in").iterdir()) if p.is_dir())
    assert patient_dir.name in planted
    run = subprocess.run([sys.executable, "-m", "flows.cli", "--log-level", "DEBUG", "run", str(patient_dir),
                          str(tmp_path / "out"), "--workers", "1"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=240, check=False)
    took = time.monotonic() - t0
    ended = datetime.now()
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("| DEBUG ") > 1000  # DEBUG really was on (Prefect, libraries, deidflow)
    # Prompt exit: buffered API logs are drained before the ephemeral API stops (it used to hang ~2 min
    # retrying against the stopped server).
    tail = _last_flow_log_age(run.stderr, ended)
    assert tail < 30, f"CLI took {tail:.0f} s to exit after the flow finished ({took:.0f} s in all)"
    assert took < 180, took

    # A real Prefect server on the database the run wrote: what the UI and API users would see.
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_log = tmp_path / "server.log"
    with open(server_log, "wb") as fh:
        server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
                                   "127.0.0.1", "--port", str(port)], env=env | {"PREFECT_UI_ENABLED": "false"},
                                  stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server_log.read_text()[-2000:]
            time.sleep(0.5)
        seen = _read_back(api)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    messages = [str(lg["message"]) for lg in seen["logs"]]  # type: ignore[index]
    assert any("finished:" in m for m in messages), "the final flow log never reached the API"
    assert seen["artifacts"] and len(seen["flow_runs"]) >= 2  # summary artifact; cohort + dask subflow
    prov = tmp_path / "out-provenance"
    _, rows = audit_sql(prov, "SELECT DISTINCT coalesce(error, '') || ' ' || coalesce(reason, '') FROM records")
    errors = [str(r[0]) for r in rows]
    assert any(e.strip() for e in errors)  # the cohort has quarantines: their errors are searched too

    surfaces = {
        "stdout": run.stdout,
        "stderr": run.stderr,
        "prefect logs": json.dumps(seen["logs"]),
        "prefect artifacts": json.dumps(seen["artifacts"]),
        "flow run parameters": json.dumps([fr["parameters"] for fr in seen["flow_runs"]]),  # type: ignore[index]
        "flow runs": json.dumps(seen["flow_runs"]),
        "provenance errors": "\n".join(errors),
    }
    leaks = {where: find_planted(text, planted) for where, text in surfaces.items()}
    assert not {k: v for k, v in leaks.items() if v}, "planted identifiers found"
    key = TEST_KEY.decode()
    assert not [where for where, text in surfaces.items() if key in text], "the key was exposed"
