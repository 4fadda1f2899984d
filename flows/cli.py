"""The ``deidflow`` command line: one entry point, subcommands for every job.

Exit codes: 0 — every input accounted for (written, or quarantined/skipped with its reason);
3 — the run finished but some inputs ``failed`` (a batch crashed: retryable with ``deidflow retry``);
2 — usage or configuration error (nothing written); 1 — the run crashed (rerun the same command
to resume); 130 — interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from flows.logfilters import quiet_config_errors

EPILOG = """\
examples:
  deidflow demo                                   generate a demo cohort and de-identify it
  deidflow synth cohort/ --patients 10 --seed 1   write a synthetic PHI-laden cohort
  deidflow run cohort/ out/ --patient-map map.csv --key-file key.bin
  deidflow run cohort/ out/ --dask-address tcp://10.0.0.5:8786
  deidflow audit runs --provenance out-provenance
  deidflow retry --provenance out-provenance      redo the latest run's retryable failures
  deidflow explain PatientName
  deidflow explain '(0019,"SIEMENS MR HEADER",0c)'

Provenance (Parquet) goes to <OUTPUT>-provenance unless --provenance is given; it holds input
paths, so keep it in the secure zone. Operator guide: docs/operator.md (resume, retries, audits,
clusters); provenance schema and queries: docs/provenance.md; QA report: docs/qa.md.
"""


#: Dask dashboard address of the local clusters deidflow starts: loopback, any free port (see _local_cluster).
LOOPBACK_ANY_PORT = "127.0.0.1:0"


def _runtime_defaults() -> None:
    """Offline-safe defaults, set before Prefect is imported (an explicit environment wins)."""
    os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # no cluster chatter on the console
    os.environ.setdefault("TLDEXTRACT_CACHE", str(Path(os.environ["PREFECT_HOME"]) / "tldextract"))


@contextlib.contextmanager
def prefect_api(workers: int | None = None) -> Iterator[str | None]:
    """One Prefect API for the whole run, shared with Dask workers through PREFECT_API_URL.

    With no PREFECT_API_URL set, start Prefect's ephemeral server once here: otherwise every Dask
    worker process would start its own (measured: 20+ s per run instead of ~5 s).
    With ``workers`` (a local run), the LocalCluster is started and its workers warmed (imports, Tesseract,
    Presidio) while the server starts: both take seconds and neither needs the other. Yields the
    cluster's scheduler address (the flow runs on it; it is closed on exit), else None.
    """
    with _api_starting(workers) as ready:
        yield ready()


@contextlib.contextmanager
def _api_starting(workers: int | None) -> Iterator[Callable[[], str | None]]:
    """``prefect_api`` split in two: the server child is spawned and the cluster thread started on entry,
    ``ready()`` waits for both and returns the cluster's address.

    Why: the child takes ~3 s to become healthy; a caller spawns it first and imports Prefect and its
    flows (~1.5 s) before calling ``ready()``, so the two overlap. The cluster thread imports
    ``flows.deidentify`` first: a caller importing it too only waits for that import (one module lock,
    no other held), so the two threads cannot deadlock on import locks.
    """
    if os.environ.get("PREFECT_API_URL"):  # an API the caller manages: no server
        with _local_cluster(workers) as address:
            def ready_now() -> str | None:
                return address

            ready_now.release = lambda: None  # type: ignore[attr-defined]  # closed on exit only
            yield ready_now
        return
    api = _EphemeralApi()
    os.environ["PREFECT_API_URL"] = api.api_url  # before the cluster thread spawns its workers (inherited)
    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90"))
    try:
        api.spawn()  # from this (main) thread: its PR_SET_PDEATHSIG follows the spawning thread
        with _cluster_in_background(workers) as cluster, contextlib.ExitStack() as settings:
            def ready() -> str | None:
                api.wait_healthy(timeout)  # a respawn (port taken) also happens in this thread
                address = cluster()
                if api.api_url != os.environ["PREFECT_API_URL"]:  # the port was taken after all
                    os.environ["PREFECT_API_URL"] = api.api_url
                    address = None  # its workers were told the old address: the flow starts its own cluster
                settings.enter_context(_api_settings(api.api_url))
                return address

            # the cluster may be let go before the block ends (once the flow's Dask work is over): it then
            # closes in its thread while the flow finishes; the block's end waits for that as before
            ready.release = cluster.close  # type: ignore[attr-defined]
            try:
                yield ready
            finally:
                settings.close()
                _drain_api_workers()  # deliver buffered run logs and events before the API goes away
                cluster.close()  # the cluster closes in its thread while the server stops here (~1 s each)
                api.stop()
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        api.stop()  # when the cluster thread never started (a second call does nothing)


class ApiStartError(RuntimeError):
    """The ephemeral Prefect API never became healthy (the message holds no paths or values)."""


class _EphemeralApi:
    """Prefect's ephemeral API server as a uvicorn child, launched with the standard library only.

    Prefect's ``SubprocessASGIServer`` lives in ``prefect.server.api.server``: importing it here only to
    start the child cost 1.5-2.4 s (FastAPI, SQLAlchemy) before the child even started. This runs the same
    command with the same environment, as soon as the arguments are checked. The child gets
    ``PR_SET_PDEATHSIG``: a SIGKILLed ``deidflow run`` (OOM killer, ``kill -9``) left Prefect's server
    running forever (measured: the Dask workers died within 2 s, the server never).
    """

    def __init__(self) -> None:
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def spawn(self) -> None:
        """Start the child on ``self.port`` (as ``SubprocessASGIServer._run_uvicorn_command``)."""
        import importlib.util

        spec = importlib.util.find_spec("prefect")  # finds the package without importing it
        if spec is None or spec.origin is None:
            raise ApiStartError("the prefect package is not installed")
        app_dir = Path(spec.origin).parent.parent
        env = {**os.environ, "PREFECT_API_URL": self.api_url, "PREFECT_UI_ENABLED": "0",
               "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env=env, preexec_fn=_die_with_parent,
            # its own session: a Ctrl-C at the terminal (SIGINT to the foreground process group) must not stop
            # the API under the flow, which then retried the dead API for a minute and exited 1, not 130
            start_new_session=True)

    def wait_healthy(self, timeout: float) -> None:
        """Poll ``/api/health`` until 200; a child that could not bind its port (uvicorn exits 3) is
        restarted on a new one, as Prefect does. Raises ApiStartError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None, "spawn() first"
            code = self.process.poll()
            if code is None and self._healthy(min(5.0, max(0.1, deadline - time.monotonic()))):
                return
            expired = time.monotonic() >= deadline
            if code == 3 and not expired:  # uvicorn could not start: most likely the port was taken meanwhile
                self.port = _free_port()
                self.spawn()
                continue
            if code is not None:
                raise ApiStartError(f"the ephemeral Prefect API server exited with code {code} while "
                                    "starting (its own messages, if any, are above)")
            if expired:
                raise ApiStartError(f"the ephemeral Prefect API server was not healthy after {timeout:g} s "
                                    "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS); it was stopped")
            time.sleep(0.1)

    def _healthy(self, timeout: float) -> bool:
        """GET /api/health straight to the loopback port (http.client: no proxy settings apply)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", "/api/health")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        """Terminate the child (5 s grace, then kill) and reap it; safe to call twice."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _free_port() -> int:
    """A loopback port free right now (the kernel's choice: no guessing, no retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _cluster_in_background(workers: int | None) -> Iterator[Any]:
    """Start ``_local_cluster(workers)`` in a thread; yields a function that waits for its address, with
    a ``close()`` that lets the thread close the cluster without waiting. The block's end waits for it."""
    import threading

    box: dict[str, Any] = {}
    ready = threading.Event()
    release = threading.Event()

    def run() -> None:
        try:
            import flows.deidentify  # noqa: F401  # the run needs it: imported here while the server starts

            with _local_cluster(workers) as address:
                box["address"] = address
                ready.set()
                release.wait()
        except BaseException as exc:  # re-raised in the main thread
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="deidflow-cluster-start", daemon=True)
    thread.start()

    def wait() -> str | None:
        ready.wait()
        if "error" in box:
            raise box["error"]
        return box.get("address")

    wait.close = release.set  # type: ignore[attr-defined]
    try:
        yield wait
    finally:
        release.set()
        thread.join()


@contextlib.contextmanager
def _api_settings(url: str) -> Iterator[None]:
    """Settings while the ephemeral API serves this run: its URL, and no flow-run heartbeats.

    Why no heartbeats: they let a server notice a crashed run, but this API lives and dies with this
    process, so nobody is left to notice; and Prefect's heartbeat thread sleeps in 1 s steps, so every
    flow run (the run and its Dask subflow) waited up to 1 s for it at its end (measured 0.4-1.0 s at the
    end of the run on 2000 files). A run against a server of its own (PREFECT_API_URL) keeps them."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings({PREFECT_API_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@contextlib.contextmanager
def _local_cluster(workers: int | None) -> Iterator[str | None]:
    """A LocalCluster of ``workers`` single-threaded processes, warmed; its address (None: no cluster)."""
    if not workers:
        yield None
        return
    from distributed import Client, LocalCluster

    from flows.deidentify import tune_local_workers

    tune_local_workers()
    with _fork_workers_from_a_warm_server():  # this cluster's workers only (a restarted one is spawned)
        # dashboard_address=None does not disable Dask's dashboard (dask/distributed#8136): it bound 8787 and
        # warned "Port 8787 is already in use" on every run when that port was taken; a free loopback port
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=LOOPBACK_ANY_PORT)
    try:
        with Client(cluster) as client:
            from tasks.deid_tasks import warm_worker

            try:
                client.run(warm_worker)
            except Exception as exc:  # noqa: BLE001 - warming is an optimisation: each file meets the same
                # problem on its own and ends failed or quarantined with its reason, as without warming
                print(f"deidflow: warning: workers not warmed ({type(exc).__name__})", file=sys.stderr)
        yield cluster.scheduler_address
    finally:
        cluster.close()


#: What the workers' fork server imports once, before any worker is forked from it (see below). Nothing
#: that starts a thread on import may be here: a fork copies only the forking thread (pyarrow starts one,
#: so the provenance writer, ``deid_core.batch`` and ``tasks`` are imported by each worker itself).
WORKER_PRELOAD = ("distributed", "numpy", "pydicom", "cv2", "tesserocr", "presidio_analyzer", "prefect.task_engine",
                  "deid_core.pipeline", "deid_core.pixels", "deid_core.freetext")


def _fork_workers_from_a_warm_server() -> Any:
    """Start the local workers by forking them from one server process that imported their modules once.

    Why: each spawned worker imported them itself (Prefect's task engine, Presidio, pydicom, OpenCV:
    ~2.5 s of CPU each) while the API child started beside them on the same cores. Dask's own forkserver
    preload is replaced by this list (its flag is set so it keeps ours). Variables Dask sets only when
    it spawns (``pre-spawn-environ``) are set here instead, before the fork server starts: the workers
    inherit the environment it had. Returns the Dask setting as a context manager: only the workers
    started inside it are forked."""
    import multiprocessing

    import dask
    import distributed.utils as du

    for name, value in (dask.config.get("distributed.nanny.pre-spawn-environ") or {}).items():
        if value is not None:
            os.environ.setdefault(name, str(value))
    multiprocessing.get_context("forkserver").set_forkserver_preload(list(WORKER_PRELOAD))
    du._forkserver_preload_set = True
    return dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})


def _drain_api_workers(timeout: float = 10.0) -> None:
    """Send what Prefect's background log and event workers still hold, then stop them.

    Left running, they retried against the stopped ephemeral API at interpreter exit: with DEBUG
    logging a finished run hung ~2 min. (``APILogHandler.flush`` is an instance method: calling it on
    the class raised TypeError, silently suppressed, so nothing was flushed.)"""
    if "prefect" not in sys.modules:  # never imported (an early error): nothing buffered, and no 1 s import
        return
    with contextlib.suppress(Exception):
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=timeout)
    with contextlib.suppress(Exception):
        from prefect.events.worker import EventsWorker

        EventsWorker.drain_all(timeout=timeout)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when its parent dies (even by SIGKILL)."""
    import ctypes
    import signal

    with contextlib.suppress(Exception):  # not Linux: the server is still stopped on a normal exit
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _bounded(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer within lo..hi, refused with a usage error (not a traceback) else."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is outside {lo}-{hi}")
        return value

    return parse


def _positive(text: str) -> float:
    """An argparse type: a number above zero, refused with a usage error (not a traceback) else."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above zero")
    return value


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--provenance", metavar="DIR", help="provenance directory (default: OUTPUT-provenance)")
    p.add_argument("--patient-map", metavar="CSV",
                   help="CSV with header original_patient_id,new_patient_id,new_patient_name; or two "
                        "columns original_patient_id,new_patient_id or id_old,id_new (a linkage "
                        "patient_map.csv), where the new name is the new id")
    p.add_argument("--key-file", metavar="F",
                   help="file whose bytes (>= 16) are the key (else $DEIDFLOW_KEY, "
                                                   "--key-secret, or a key created in the provenance dir)")
    p.add_argument("--key-secret", metavar="NAME", help="name of a Prefect Secret block holding the key")
    p.add_argument("--new-key", action="store_true",
                   help="accept a key that differs from the one recorded for earlier runs")
    p.add_argument("--profile", default="tcia",
                   help="rule profile: tcia (default: Basic + TCIA's options, PS3.15 option columns), "
                        "tcia-lists (same options, TCIA's supplied attribute lists first, as MIDI-B scores: "
                        "e.g. StationName removed) or basic")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="NAME",
                   help="add a PS3.15 option (repeatable), e.g. rtnUIDs")
    p.add_argument("--uid-root", default="2.25.", help="root of new UIDs (default 2.25.)")
    p.add_argument("--pixel-policy", metavar="POLICY",
                   help="phi | all-text | per modality 'US=all-text,CT=phi' (default: all-text for US/SC)")
    p.add_argument("--linkage", metavar="DIR",
                   help="write uid_map.csv and patient_map.csv (old,new) here; a run with --linkage "
                        "reprocesses every input (no incremental skip), so that the linkage is complete")
    p.add_argument("--workers", type=_bounded(1, 1024), metavar="N",
                   help="local Dask worker processes (default: cores)")
    p.add_argument("--dask-address", metavar="ADDR", help="existing Dask scheduler, e.g. tcp://host:8786")
    p.add_argument("--batch-size", type=_bounded(1, 2000), metavar="N",
                   help="files per task, 1-2000 (default: automatic, about 4 batches per worker within "
                        "32-256 files; each task costs its worker ~0.1 s of Prefect bookkeeping)")
    p.add_argument("--no-incremental", dest="incremental", action="store_false",
                   help="reprocess inputs already written with the same rules and key")
    p.add_argument("--allow-lossy-reencode", dest="allow_lossy_reencode", action="store_true", default=True,
                   help="mask lossy-compressed images (JPEG baseline...) by writing them decompressed, "
                        "LossyImageCompression kept '01', never re-encoded lossy (already the default; the "
                        "flag only undoes an earlier --refuse-lossy)")
    p.add_argument("--refuse-lossy", dest="allow_lossy_reencode", action="store_false",
                   help="quarantine lossy-compressed images that have text to mask (pixel_error) instead of "
                        "writing them decompressed")
    p.add_argument("--max-frame-megapixels", type=_positive, default=100.0, metavar="MP",
                   help="quarantine frames larger than MP megapixels (pixel_error) before decoding them: "
                        "searching a frame takes ~14 MB of worker memory per megapixel (default 100)")
    p.add_argument("--conformance", choices=("full", "sample", "off"), default="sample",
                   help="dciodvfy on every output (full), the first of each series per batch (sample, "
                        "default) or none (off); the pydicom-level checks run on every output")
    p.add_argument("--ocr-engine", choices=("tesseract", "presidio"), default="tesseract",
                   help="OCR of the pixel stage: in-process Tesseract (default) or Presidio's TesseractOCR "
                        "(pytesseract, slow; for comparison)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deidflow", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="De-identify DICOM cohorts (PS3.15 Basic Profile + TCIA options): tags scrubbed, "
                    "identities pseudonymized, burned-in text masked, every file accounted for in "
                    "provenance.")
    from deid_core import __version__

    parser.add_argument("--version", action="version", version=f"deidflow {__version__}")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], type=str.upper,
                        default=os.environ.get("DEIDFLOW_LOG_LEVEL") or None,
                        help="log level of deidflow, Prefect and libraries (default: $DEIDFLOW_LOG_LEVEL, "
                             "else warnings only); logs never carry identifying values")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="de-identify INPUT into OUTPUT (a Prefect flow run)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="De-identify every DICOM file under INPUT into OUTPUT as "
                                   "<PatientID>/<StudyUID>/<SeriesUID>/<SOPUID>.dcm (new identifiers only). "
                                   "Files that cannot be fully de-identified are quarantined (not written) "
                                   "with their reason in provenance.")
    p.add_argument("input", help="input folder (searched recursively, never modified)")
    p.add_argument("output", help="output folder")
    _add_run_options(p)

    p = sub.add_parser("retry", help="reprocess the retryable failures of a run (new run, attempt + 1)",
                       description="Reprocess only the inputs RUN (default: the latest run) left failed or "
                                   "quarantined for a retryable reason (write_error, internal_error, "
                                   "worker_lost, batch_failed), with RUN's parameters and the same key. "
                                   "Inputs written since then are skipped (incremental).")
    p.add_argument("run", nargs="?", metavar="RUN", help="run id (default: the latest run)")
    p.add_argument("--provenance", metavar="DIR", required=True, help="provenance directory of the run")
    p.add_argument("--key-file", metavar="F", help="key file (else $DEIDFLOW_KEY, --key-secret, or the "
                                                   "key created in the provenance dir)")
    p.add_argument("--key-secret", metavar="NAME", help="name of a Prefect Secret block holding the key")
    p.add_argument("--workers", type=_bounded(1, 1024), metavar="N", help="local Dask worker processes")
    p.add_argument("--dask-address", metavar="ADDR", help="existing Dask scheduler")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")

    p = sub.add_parser("synth", help="write a synthetic PHI-laden demo cohort with its answer.json",
                       description="Write a synthetic cohort (18 files per patient: CT, MR, US, SC, CR, DX with "
                                   "header and burned-in PHI, patient 0 with two bad inputs) and OUT/answer.json "
                                   "(what each file holds and must end as; see data/README.md). The same "
                                   "--patients and --seed give byte-identical files. answer.json sits in the "
                                   "cohort: a run of OUT reports it as a bad input (not DICOM), like any stray file.")
    p.add_argument("out", help="folder to write into (must not exist or be empty)")
    p.add_argument("--patients", type=int, default=4, help="number of patients, 1-1600 (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default 0)")

    p = sub.add_parser("demo", help="generate a demo cohort and de-identify it",
                       description="synth into DIR/input, then run it into DIR/output with provenance in "
                                   "DIR/provenance, and print where everything is.")
    p.add_argument("--dir", default="demo", help="demo folder (default ./demo)")
    p.add_argument("--patients", type=int, default=4, help="number of patients (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--workers", type=_bounded(1, 1024), metavar="N", help="local Dask worker processes "
                                                                          "(default: cores)")

    p = sub.add_parser("audit", help="query provenance with DuckDB",
                       description="Query the provenance store. Commands: runs | failures [RUN] | "
                                   "file PATH | "
                                   "actions RUN | sql \"SELECT ... FROM records\"")
    p.add_argument("what", choices=["runs", "failures", "file", "actions", "sql"])
    p.add_argument("arg", nargs="?", help="RUN id, input PATH, or SQL text")
    p.add_argument("--provenance", metavar="DIR", required=True, help="provenance directory")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")

    p = sub.add_parser("report", help="write the visual QA report of a run (HTML, into the provenance dir)",
                       description="Write PROV/reports/RUN.html: run summary, status and action counts, and "
                                   "before/after thumbnails of every pixel redaction, riskiest first. "
                                   "It shows original burned-in text: keep it in the secure zone.")
    p.add_argument("run", nargs="?", metavar="RUN", help="run id (default: the latest run)")
    p.add_argument("--provenance", metavar="DIR", required=True, help="provenance directory of the run")
    p.add_argument("--output", metavar="DIR",
                   help="the run's OUTPUT folder, where its written files are read for the after thumbnails "
                        "(default: from the run record; the report itself always goes to PROV/reports)")

    p = sub.add_parser("compact", help="merge small provenance Parquet files",
                       description="Merge each run's per-batch Parquet files into one file per run and date "
                                   "(atomically; queries give the same rows before and after).")
    p.add_argument("--provenance", metavar="DIR", required=True, help="provenance directory")
    p.add_argument("--run", metavar="RUN", help="only this run (default: every run)")

    p = sub.add_parser("explain", help="show the action applied to an element and the rule behind it",
                       description="QUERY: a tag (0010,0010), a keyword PatientName, or a private element "
                                   "'(0019,\"SIEMENS MR HEADER\",0c)'. --all writes the whole effective "
                                   "table.")
    p.add_argument("query", nargs="?", help="tag, keyword or private signature")
    p.add_argument("--profile", default="tcia", help="tcia (default), tcia-lists or basic, as for run")
    p.add_argument("--option", dest="options", action="append", default=[], metavar="NAME",
                   help="add a PS3.15 option (repeatable), as for run")
    p.add_argument("--all", action="store_true", help="write the whole effective table as CSV")
    p.add_argument("--out", metavar="FILE", help="with --all: file to write (default stdout)")
    return parser


def _print_summary(summary: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2, sort_keys=True, default=str))
        return
    counts = summary["counts"]
    print(f"run {summary['run_id']}: {summary['files']} files — " +
          ", ".join(f"{v} {k}" for k, v in counts.items()))  # type: ignore[union-attr,attr-defined]
    if summary["reasons"]:
        print("  reasons: " + ", ".join(f"{k}={v}" for k, v in summary["reasons"].items()))  # type: ignore
    print(f"  wall {summary['wall_s']:.1f} s, {summary['files_per_s']:.2f} files/s, "
          f"{summary['boxes']} pixel boxes masked")
    if summary.get("superseded"):
        print(f"  {summary['superseded']} earlier output(s) of these inputs, under other names, removed")
    unmapped = summary.get("unmapped_patients") or []
    if unmapped and summary.get("patient_map"):
        print(f"  {len(unmapped)} patient(s) not in the map got pseudonyms: {', '.join(unmapped)}")  # type: ignore
    elif unmapped:
        print(f"  {len(unmapped)} patient(s) got keyed pseudonyms (no --patient-map)")  # type: ignore[arg-type]
    print(f"  outputs:    {summary['output_dir']}")
    print(f"  provenance: {summary['provenance_dir']}")
    print(f"  summary:    {summary['summary_path']}")


def cmd_run(args: argparse.Namespace) -> int:
    """Usage errors first (milliseconds); then the API child and the cluster start while Prefect loads."""
    from deid_core.run import precheck

    input_dir, output_dir = str(Path(args.input).resolve()), str(Path(args.output).resolve())
    provenance_dir = str(Path(args.provenance).resolve()) if args.provenance else None
    precheck(input_dir, output_dir, provenance_dir=provenance_dir, linkage_dir=args.linkage,
             key_file=args.key_file, key_secret=args.key_secret, patient_map=args.patient_map,
             profile=args.profile, options=args.options, uid_root=args.uid_root, pixel_policy=args.pixel_policy,
             new_key=args.new_key)
    workers = _local_workers(args)
    with _api_starting(workers) as ready:
        from flows.deidentify import CONSOLE_PROGRESS, CohortParameters, deidentify_cohort, with_local_paths

        params = CohortParameters(
            input_dir=input_dir, output_dir=output_dir, provenance_dir=provenance_dir,
            patient_map=args.patient_map, key_file=args.key_file, key_secret=args.key_secret,
            new_key=args.new_key,
            profile=args.profile, options=args.options, uid_root=args.uid_root, pixel_policy=args.pixel_policy,
            linkage_dir=args.linkage, workers=args.workers, dask_address=args.dask_address,
            batch_size=args.batch_size, incremental=args.incremental,
            allow_lossy_reencode=args.allow_lossy_reencode, conformance=args.conformance,
            max_frame_megapixels=args.max_frame_megapixels, ocr_engine=args.ocr_engine, retry_of=None)
        with _prestarted(_matching(ready(), workers, params), ready.release):  # type: ignore[attr-defined]
            CONSOLE_PROGRESS[:] = [not args.json]
            summary = deidentify_cohort(with_local_paths(params))
    _print_summary(summary, args.json)
    return _exit_code(summary)


def _local_workers(params: Any) -> int | None:
    """Workers of the LocalCluster a run needs (None when it runs on an existing cluster).

    ``params``: CohortParameters, or anything with ``workers`` and ``dask_address`` (the parsed arguments:
    the cluster starts before CohortParameters, whose module imports Prefect, exists)."""
    return None if params.dask_address else (params.workers or os.cpu_count() or 1)


def _matching(address: str | None, started_for: int | None, params: Any) -> str | None:
    """The prestarted cluster's address if it is the one ``params`` asks for, else None (the flow then
    starts its own): a guard in case the early guess from the arguments ever differs."""
    return address if _local_workers(params) == started_for else None


@contextlib.contextmanager
def _prestarted(address: str | None, release: Callable[[], None] | None = None) -> Iterator[None]:
    """Let the flow run on the LocalCluster started beside the API (flows.deidentify.LOCAL_CLUSTER), and
    ``release`` it as soon as the flow's Dask work is over (flows.deidentify.DASK_DONE)."""
    from flows import deidentify

    def done() -> None:  # a later flow in this process must not be sent to the released cluster
        if address in deidentify.LOCAL_CLUSTER:
            deidentify.LOCAL_CLUSTER.remove(address)
        if release is not None:
            release()

    if address:
        deidentify.LOCAL_CLUSTER.append(address)
        deidentify.DASK_DONE.append(done)
    try:
        yield
    finally:
        if address:
            if address in deidentify.LOCAL_CLUSTER:
                deidentify.LOCAL_CLUSTER.remove(address)
            deidentify.DASK_DONE.remove(done)


def _exit_code(summary: dict[str, object]) -> int:
    """3 when some inputs ended ``failed`` (retryable), else 0: every input is accounted for."""
    failed = int(summary["counts"].get("failed", 0))  # type: ignore[attr-defined]
    if failed:
        print(f"  {failed} file(s) failed: deidflow retry {summary['run_id']} --provenance "
              f"{summary['provenance_dir']}", file=sys.stderr)
        return 3
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    """Like ``cmd_run``: the API child and the cluster start before Prefect is imported."""
    from deid_core.run import plan_retry

    prov = Path(args.provenance).resolve()
    retry = plan_retry(prov, args.run)
    if not retry.paths:
        print(f"run {retry.run_id}: nothing to retry ({retry.not_retryable} failure(s) not retryable: "
              f"deidflow audit failures {retry.run_id} --provenance {args.provenance})")
        return 0
    stored = retry.parameters  # what retry_parameters falls back on
    workers = _local_workers(argparse.Namespace(workers=args.workers or stored.get("workers"),
                                                dask_address=args.dask_address or stored.get("dask_address")))
    print(f"retrying {len(retry.paths)} file(s) of run {retry.run_id} (attempt {retry.attempt})")
    with _api_starting(workers) as ready:
        from flows.deidentify import CONSOLE_PROGRESS, deidentify_cohort, retry_parameters, with_local_paths

        params = retry_parameters(retry, prov, key_file=args.key_file, key_secret=args.key_secret,
                                  workers=args.workers, dask_address=args.dask_address)
        with _prestarted(_matching(ready(), workers, params), ready.release):  # type: ignore[attr-defined]
            CONSOLE_PROGRESS[:] = [not args.json]
            summary = deidentify_cohort(with_local_paths(params))
    _print_summary(summary, args.json)
    return _exit_code(summary)


def cmd_synth(args: argparse.Namespace) -> int:
    from deid_core.synth import generate_cohort

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print("deidflow: error: synth writes into a new or empty folder (a second cohort merged into the "
              "first one, and its answer.json replaced the first's)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    answer = generate_cohort(out, patients=args.patients, seed=args.seed)
    n = len(answer["files"])
    print(f"wrote {n} files for {args.patients} patients to {args.out} in {time.perf_counter() - t0:.1f} s "
          f"(answer: {Path(args.out) / 'answer.json'})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from deid_core.synth import generate_cohort

    base = Path(args.dir).resolve()
    inp, out, prov = base / "input", base / "output", base / "provenance"
    answer = generate_cohort(inp, patients=args.patients, seed=args.seed)
    print(f"demo cohort: {len(answer['files'])} files for {args.patients} patients in {inp}")
    run_args = build_parser().parse_args(["run", str(inp), str(out), "--provenance", str(prov)] +
                                         (["--workers", str(args.workers)] if args.workers else []))
    rc = cmd_run(run_args)
    print(f"  audit:      deidflow audit runs --provenance {prov}")
    return rc


def cmd_audit(args: argparse.Namespace) -> int:
    from deid_core import provenance as pv

    prov = Path(args.provenance)
    if args.what in ("file", "actions", "sql") and not args.arg:
        print(f"deidflow: error: audit {args.what} needs an argument", file=sys.stderr)
        return 2
    if _bad_provenance_or_run(args.provenance, args.arg if args.what in ("failures", "actions") else None):
        return 2
    try:
        rows = _audit_rows(pv, prov, args)
    except pv.duckdb.Error as exc:  # a typo in the user's own SQL: DuckDB's message, not a traceback
        print(f"deidflow: error: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.json:
        for r in rows:
            print(json.dumps(r, default=str, sort_keys=True))
    else:
        print(pv.format_table(rows) if rows else "(no rows)")
    return 0


def _audit_rows(pv: Any, prov: Path, args: argparse.Namespace) -> list[dict[str, object]]:
    if args.what == "runs":
        rows = pv.audit_runs(prov)
    elif args.what == "failures":
        rows = pv.audit_failures(prov, args.arg)
    elif args.what == "file":
        rows = pv.audit_file(prov, args.arg)
    elif args.what == "actions":
        rows = pv.audit_actions(prov, args.arg)
    else:
        cols, tuples = pv.audit_sql(prov, args.arg)
        rows = [dict(zip(cols, t, strict=True)) for t in tuples]
    return list(rows)


def _bad_provenance_or_run(provenance: str, run: str | None) -> bool:
    """Print the usage error of a missing provenance directory or an unknown run id (a typo in a run id
    must not read as "no failures"); True when there is one."""
    from deid_core.provenance import run_exists

    if not Path(provenance).is_dir():
        print("deidflow: error: the provenance directory does not exist", file=sys.stderr)
        return True
    if run and not run_exists(Path(provenance), run):
        print(f"deidflow: error: unknown run {run!r} (deidflow audit runs --provenance {provenance})",
              file=sys.stderr)
        return True
    return False


def cmd_report(args: argparse.Namespace) -> int:
    from deid_core.report import write_report

    if _bad_provenance_or_run(args.provenance, args.run):
        return 2
    if args.output and not Path(args.output).is_dir():
        print("deidflow: error: --output is the run's OUTPUT folder, which does not exist", file=sys.stderr)
        return 2
    path = write_report(Path(args.provenance), args.run, args.output)
    print(f"QA report: {path}")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from deid_core.provenance import compact

    if _bad_provenance_or_run(args.provenance, args.run):
        return 2
    n = compact(Path(args.provenance), args.run)
    print(f"compacted: {n} small files merged")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from deid_core.rules import load_rule_table
    from deid_core.rules.explain import explain

    table = load_rule_table(args.profile, args.options or None)
    if args.all:
        if args.out:
            with open(args.out, "w", encoding="utf-8", newline="") as fh:
                table.to_csv(fh)
            print(f"wrote the effective table ({table.profile}, sha256 {table.sha256[:12]}) to {args.out}")
        else:
            table.to_csv(sys.stdout)
        return 0
    if not args.query:
        print("deidflow: error: explain needs a tag, keyword or private signature, or --all", file=sys.stderr)
        return 2
    print(explain(args.query, table))
    return 0


def _remove_staged(output: Path) -> None:
    """Remove the staged (not yet published) files of an interrupted run from OUTPUT/.deidflow-tmp: its
    cluster is closed by now, so nothing writes there any more, and a staged file is never an output."""
    from deid_core.run import discard_staged

    with contextlib.suppress(OSError):
        discard_staged(output)


COMMANDS = {"run": cmd_run, "retry": cmd_retry, "synth": cmd_synth, "demo": cmd_demo, "audit": cmd_audit,
            "report": cmd_report, "compact": cmd_compact,
            "explain": cmd_explain}


def _apply_log_level(level: str | None) -> None:
    """``--log-level`` / ``$DEIDFLOW_LOG_LEVEL``: Prefect's loggers and the root logger (deidflow.*,
    libraries) at that level, here and in Dask workers (they inherit the environment). Must run
    before Prefect is imported: it reads these settings when it configures logging."""
    if not level:
        return
    level = level.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        print("deidflow: error: DEIDFLOW_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR", file=sys.stderr)
        raise SystemExit(2)  # a usage error, like argparse's
    os.environ["PREFECT_LOGGING_LEVEL"] = level
    os.environ["PREFECT_LOGGING_ROOT_LEVEL"] = level
    os.environ["DEIDFLOW_LOG_LEVEL"] = level

    logging.getLogger().setLevel(level)
    logging.getLogger("deidflow").setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    _runtime_defaults()
    args = build_parser().parse_args(argv)
    _apply_log_level(args.log_level)
    from deid_core.errors import ConfigError

    quiet_config_errors()
    interrupted: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        # SIGINT (Ctrl-C) and SIGTERM (a scheduler stopping the job) end the run the same way: the cluster
        # and the API are closed by their context managers, staged files are removed, the user told how to
        # resume. SIGTERM used to kill the process outright: staged files stayed, nothing was printed.
        interrupted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def stopped() -> int:
        if args.command == "run":
            _remove_staged(Path(args.output))
        print("deidflow: " + ("terminated" if signal.SIGTERM in interrupted else "interrupted") +
              "; rerun the same command to resume", file=sys.stderr)
        return 143 if signal.SIGTERM in interrupted else 130

    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return stopped()
    except BrokenPipeError:  # `deidflow explain --all | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if _termination(exc):  # Prefect's own SIGTERM handler (during a flow run), wrapped by pydantic
            interrupted.append(signal.SIGTERM)
        if interrupted:  # the interrupt surfaced wrapped (pydantic turned it into a serialization error)
            return stopped()
        if isinstance(exc, ConfigError):
            print(f"deidflow: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, ApiStartError):
            print(f"deidflow: error: {exc}", file=sys.stderr)
            return 1
        raise
    except BaseException as exc:
        if not _termination(exc):
            raise
        interrupted.append(signal.SIGTERM)  # Prefect's own SIGTERM handler, active while a flow runs
        return stopped()


def _termination(exc: BaseException) -> bool:
    """Whether ``exc`` is (or wraps) Prefect's TerminationSignal: while a flow runs, Prefect replaces the
    SIGTERM handler with its own, which raises it (pydantic may wrap it in a serialization error)."""
    return type(exc).__name__ == "TerminationSignal" or "TerminationSignal" in str(exc)[:300]


if __name__ == "__main__":
    sys.exit(main())
