"""The ``deidentify-cohort`` Prefect flow: orchestration only, all logic in ``deid_core``.

inventory (Dask) → incremental skip → per batch on Dask: capture terms, pixel redaction, tag
scrub, pseudonyms, verify, atomic write, provenance Parquet → run summary, artifacts, linkage.

The per-file work runs in a subflow whose task runner is chosen from the parameters: a
LocalCluster sized to the machine by default, or an existing Dask cluster by address.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect_dask import DaskTaskRunner
from pydantic import BaseModel, Field

from deid_core.batch import BatchSummary
from deid_core.errors import ConfigError
from deid_core.inventory import InventoryRecord, auto_batch_size, batch_records, find_files
from deid_core.rules import OPTION_NAMES
from deid_core.run import (
    RetryPlan,
    RunPlan,
    RunSummary,
    bad_outcomes,
    check_map_against_cohort,
    finish_run,
    plan_retry,
    prepare_run,
    record_batch_failure,
    record_outcomes,
    release_output,
    split_done,
)
from deid_core.termpool import merge_pools, pools_for
from flows.logfilters import quiet_config_errors
from tasks.deid_tasks import deidentify_batch, inventory_chunk

# a ConfigError (the user's input) is logged in one line, in a worker's deployment runs as in the CLI
quiet_config_errors()

INVENTORY_CHUNK = 256


class CohortParameters(BaseModel):
    """Parameters of a de-identification run (shown as a form in the Prefect UI)."""

    input_dir: str = Field(description=(
        "Folder of DICOM files to de-identify, searched recursively. Never modified."))
    output_dir: str = Field(description=(
        "Where de-identified files go, as <PatientID>/<Study>/<Series>/<SOP>.dcm built from new "
        "identifiers only."))
    provenance_dir: str | None = Field(None, description=(
        "Provenance (Parquet), run summaries and the rule table applied. Holds input paths: keep it "
        "in the secure zone. Default: <output_dir>-provenance."))
    patient_map: str | None = Field(None, description=(
        "CSV original_patient_id,new_patient_id,new_patient_name (or two columns original_patient_id,"
        "new_patient_id or id_old,id_new: the new name is then the new id). Unmapped patients get "
        "deterministic pseudonyms."))
    key_file: str | None = Field(None, description=(
        "File whose bytes (>= 16) are the pseudonymization key. Else $DEIDFLOW_KEY, a Prefect Secret "
        "(key_secret), or a key created once in the provenance directory."))
    key_secret: str | None = Field(None, description=(
        "Name of a Prefect Secret block holding the key."))
    new_key: bool = Field(False, description=(
        "Accept a key different from the one earlier runs into this provenance directory used "
        "(pseudonyms will not match theirs)."))
    profile: Literal["tcia", "tcia-lists", "basic"] = Field("tcia", description=(
        "Rule profile: 'tcia' (Basic + TCIA options), 'tcia-lists' (the same options with TCIA's supplied "
        "attribute lists first, as the MIDI-B validator scores) or 'basic'."))
    options: list[str] = Field(default_factory=list, description=(
        "Extra PS3.15 options to apply on top of the profile: " + ", ".join(OPTION_NAMES) +
        " (`deidflow explain --all --option NAME` shows the resulting table)."))
    uid_root: str = Field("2.25.", description=(
        "Root of new UIDs (2.25. + 128-bit decimal, or your org root)."))
    pixel_policy: str | None = Field(None, description=(
        "Burned-in text policy: 'phi', 'all-text', or per modality 'US=all-text,CT=phi'. Default: "
        "all-text for US and SC, phi elsewhere."))
    linkage_dir: str | None = Field(None, description=(
        "Write uid_map.csv and patient_map.csv (old→new) here for the honest broker. Refused inside "
        "the output tree."))
    workers: int | None = Field(None, ge=1, description=(
        "Dask worker processes of the local cluster (default: one per core)."))
    dask_address: str | None = Field(None, description=(
        "Run on an existing Dask cluster, e.g. tcp://10.0.0.5:8786, instead of a local one."))
    batch_size: int | None = Field(None, ge=1, le=2000, description=(
        "Files per Prefect task (a series stays together). Empty: automatic, about 4 batches per worker "
        "within 32-256 files."))
    incremental: bool = Field(True, description=(
        "Skip inputs already written with the same input hash, rules, key and version whose outputs "
        "still exist unchanged."))
    allow_lossy_reencode: bool = Field(True, description=(
        "Mask lossy-compressed images by writing them decompressed (LossyImageCompression kept '01'; "
        "never re-encoded lossy). Off: such images with text to mask are quarantined (pixel_error)."))
    max_frame_megapixels: float = Field(100.0, gt=0, description=(
        "Frames larger than this many megapixels are quarantined (pixel_error) before decoding: searching "
        "a frame takes ~14 MB of worker memory per megapixel. Raise it for workers with the memory."))
    conformance: Literal["full", "sample", "off"] = Field("sample", description=(
        "dciodvfy coverage of outputs: 'sample' (first file of each series per batch), 'full' (every "
        "file) or 'off'. Read-back, leak search and type 1/VR checks run on every file regardless."))
    ocr_engine: Literal["tesseract", "presidio"] = Field("tesseract", description=(
        "OCR behind the pixel stage: 'tesseract' (in-process, fast) or 'presidio' (Presidio's own "
        "TesseractOCR through pytesseract, one process per call: slow, for comparison)."))
    retry_of: str | None = Field(None, description=(
        "Run id: reprocess only the inputs that run left failed or quarantined for a retryable reason "
        "(write_error, internal_error, worker_lost, batch_failed). Needs the same key as that run."))


#: Set by the CLI: print a progress line (counts only) to stderr as each batch finishes.
CONSOLE_PROGRESS: list[bool] = []
#: Scheduler address of a LocalCluster this process already started and warmed for local runs (the CLI
#: starts it while the Prefect API starts; see flows/cli.py). Not a parameter: it is this process's own.
LOCAL_CLUSTER: list[str] = []
#: Called once a run's Dask work is over (its subflow returned or raised): the CLI releases the LocalCluster
#: it started then, so the cluster shuts down (~1 s) while the flow writes its summary and QA report.
DASK_DONE: list[Callable[[], None]] = []


def tune_local_workers() -> None:
    """Start local Dask workers without ``MALLOC_TRIM_THRESHOLD_``.

    Dask's nannies set it to 65536 in every worker by default. With it glibc stops adapting its mmap
    threshold, so every frame-sized numpy array is mapped and unmapped anew: the pixel stage ran 41 %
    slower in a worker than in-process (420 bench images: 5.5 s against 7.8 s CPU, same code). Workers
    started by ``dask worker`` elsewhere take the same setting from ``deployments/dask`` (``DASK_CONFIG``;
    docs/operator.md)."""
    import dask

    dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})


def make_task_runner(params: CohortParameters) -> DaskTaskRunner:
    """A Dask runner on the given cluster, or a LocalCluster of single-threaded worker processes."""
    tune_local_workers()
    if params.dask_address:
        return DaskTaskRunner(address=params.dask_address)
    if LOCAL_CLUSTER:
        return DaskTaskRunner(address=LOCAL_CLUSTER[-1])
    n = params.workers or os.cpu_count() or 1
    return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": "127.0.0.1:0"})  # not None: dask/distributed#8136


#: Paths of runs started from this process (the CLI): the Prefect API stores a flow run's parameters, and
#: folder and file names can name patients ("Smith_John_MRN123/"), so the parameters it sees hold a token
#: in their place (``with_local_paths``) and the flow takes the paths back from here. Runs started from the
#: UI or a deployment carry the paths their user typed in.
LOCAL_PATHS: dict[str, dict[str, str | None]] = {}
_LOCAL_PREFIX = "deidflow-cli:"
_PATH_FIELDS = ("input_dir", "output_dir", "provenance_dir", "patient_map", "key_file", "linkage_dir")


def with_local_paths(params: CohortParameters) -> CohortParameters:
    """``params`` with every path replaced by a token of this process (see LOCAL_PATHS)."""
    token = secrets.token_hex(8)
    LOCAL_PATHS[token] = {f: getattr(params, f) for f in _PATH_FIELDS}
    return params.model_copy(update={f: f"{_LOCAL_PREFIX}{token}:{f}" if getattr(params, f) else None
                                     for f in _PATH_FIELDS})


def _real_paths(params: CohortParameters) -> CohortParameters:
    if not params.input_dir.startswith(_LOCAL_PREFIX):
        return params
    token = params.input_dir[len(_LOCAL_PREFIX):].split(":", 1)[0]
    paths = LOCAL_PATHS.get(token)
    if paths is None:
        raise ConfigError("this run's folders are known only to the deidflow process that started it; "
                          "start a new run with the folders as parameters")
    return params.model_copy(update=paths)


# Plans and input paths stay in this process: a subflow's parameters are stored by the Prefect API,
# and neither the key nor input paths (which may name patients) belong there.
_PLANS: dict[str, tuple[RunPlan, list[str], list[str]]] = {}


@flow(name="deidentify-on-dask", log_prints=False)
def process_cohort(run_id: str, batch_size: int | None, incremental: bool,
                   progress_id: str | None = None) -> list[BatchSummary]:
    """Inventory and de-identify on the Dask task runner; summaries come back, PHI never does."""
    plan, paths, others = _PLANS[run_id]
    chunks = [paths[i:i + INVENTORY_CHUNK] for i in range(0, len(paths), INVENTORY_CHUNK)]
    # a retry redoes some files, yet checks them against the identifiers of all their patient's files
    more = [others[i:i + INVENTORY_CHUNK] for i in range(0, len(others), INVENTORY_CHUNK)]
    inv_futures = inventory_chunk.map(chunks + more, [plan.cfg.key] * (len(chunks) + len(more)),
                                      [True] * len(chunks) + [False] * len(more))
    found = [f.result() for f in inv_futures]
    records: list[InventoryRecord] = [r for recs, _pool in found for r in recs]
    pools = merge_pools(pool for _recs, pool in found)  # sealed: no identifier in clear in the flow
    check_map_against_cohort(plan, records)  # before any file is written
    summaries: list[BatchSummary] = [record_outcomes(plan, bad_outcomes(records), "inventory")]
    todo = [r for r in records if r.status == "ok"]
    # Skips what is already done (incremental) and always refuses SOP UID collisions with earlier outputs.
    todo, skipped = split_done(plan, todo, skip_done=incremental)
    summaries.append(record_outcomes(plan, skipped, "skipped"))
    batches = batch_records(todo, batch_size or auto_batch_size(len(todo), _dask_workers()))
    total = max(1, len(records))
    done = total - len(todo)
    if _console():  # counts only; a rerun that skips every file said nothing until its summary (an audit)
        bad = len(records) - len(todo) - len(skipped)
        print(f"  {len(records)} files found: {len(todo)} to process, {len(skipped)} already done or skipped, "
              f"{bad} set aside by the inventory", file=sys.stderr, flush=True)

    def submit(b: list[InventoryRecord]) -> Any:
        return deidentify_batch.submit(b, plan.cfg, str(plan.provenance_dir), plan.run_id, plan.run_date,
                                       plan.attempt, pools_for(b, pools))

    pending = {id(f): (f, b) for f, b in ((submit(b), b) for b in batches)}
    # Files of a batch whose worker died, redone one at a time (``alone``): one file can take its worker down
    # (memory), and the batch's other files are innocent. Alone, each is written or names itself as the one
    # that kills its worker (a retry would otherwise rebuild the same batch and fail the same way); one at a
    # time, the next worker death cannot take a queued innocent with it.
    alone: deque[InventoryRecord] = deque()
    single: Any = None  # the future of the file being redone alone
    while pending or alone:
        if alone and single is None:
            r = alone.popleft()
            single = submit([r])
            pending[id(single)] = (single, [r])
        for fut in as_completed([f for f, _b in pending.values()]):
            _f, batch = pending.pop(id(fut))
            if fut is single:
                single = None
            try:
                summary = fut.result()
            except Exception as exc:  # retries exhausted or the worker died: record, never lose the inputs
                if len(batch) > 1 and _worker_lost(exc):
                    get_run_logger().warning("run %s: a worker died on a batch of %d files (%s); redoing them "
                                             "one at a time", plan.run_id, len(batch), type(exc).__name__)
                    alone.extend(batch)
                    if single is None:
                        break
                    continue
                summary = _record_failed(plan, batch, exc)
            summaries.append(summary)
            done += summary.files
            if progress_id:
                update_progress_artifact(UUID(progress_id), progress=round(100.0 * done / total, 1))
            if _console():  # counts only
                print(f"  {done}/{total} files ({100.0 * done / total:.0f}%)", file=sys.stderr, flush=True)
            if alone and single is None:
                break  # the next file to redo alone goes out now
    return summaries


@flow(name="deidentify-cohort", log_prints=False)
def deidentify_cohort(params: CohortParameters) -> dict[str, object]:
    """De-identify a cohort: every input ends written, quarantined or skipped, with its reason."""
    logger = get_run_logger()
    params = _real_paths(params)
    plan = prepare_run(params.input_dir, params.output_dir, provenance_dir=params.provenance_dir,
                       key_file=params.key_file, key_secret=params.key_secret, secret_loader=_load_secret,
                       new_key=params.new_key, patient_map=params.patient_map, profile=params.profile,
                       options=params.options, uid_root=params.uid_root, pixel_policy=params.pixel_policy,
                       linkage_dir=params.linkage_dir, allow_lossy_reencode=params.allow_lossy_reencode,
                       max_frame_megapixels=params.max_frame_megapixels,
                       conformance=params.conformance, pixel_engine=params.ocr_engine,
                       parameters=params.model_dump(exclude={"key_secret", "key_file", "new_key"}))
    if params.retry_of:
        retry = plan_retry(plan.provenance_dir, params.retry_of)
        if retry.key_fingerprint and retry.key_fingerprint != plan.key_fp:
            raise ConfigError(f"run {params.retry_of} used another key (fingerprint "
                              f"{retry.key_fingerprint}); retry with the same key")
        paths, plan.attempt = retry.paths, retry.attempt
        redo = set(paths)
        others = [str(p) for p in find_files(plan.input_dir) if str(p) not in redo]
    else:
        paths, others = [str(p) for p in find_files(plan.input_dir)], []
    _supersede_killed_run(plan.provenance_dir, plan.cfg.output_dir, plan.run_id)  # (before the first log line)
    logger.info("run %s: %d input files, rules %s, key %s", plan.run_id, len(paths), plan.table_sha256[:12],
                plan.key_fp)
    progress_id = create_progress_artifact(progress=0.0, key="deidflow-progress",
                                           description=f"Files finished in run {plan.run_id}")
    runner = make_task_runner(params)
    _PLANS[plan.run_id] = (plan, paths, others)
    try:
        summaries = process_cohort.with_options(task_runner=runner)(  # type: ignore[arg-type]
            plan.run_id, params.batch_size, params.incremental, str(progress_id) if progress_id else None)
    except BaseException:
        release_output(plan.cfg.output_dir)  # finish_run releases it otherwise
        raise
    finally:
        _PLANS.pop(plan.run_id, None)
        for done in DASK_DONE:
            done()
    summary = finish_run(plan, summaries)
    active_flow_run_path(plan.provenance_dir, plan.cfg.output_dir).unlink(missing_ok=True)
    _artifacts(summary)
    _report_artifact(plan.provenance_dir, summary.run_id)
    logger.info("run %s finished: %s in %.1f s (%.2f files/s)", summary.run_id, summary.counts,
                summary.wall_s,
                summary.files_per_s)
    return summary.to_dict()


#: The flow run writing into an output (provenance folder): a run killed with SIGKILL never tells Prefect it stopped,
#: and its flow run stayed RUNNING for good (an audit at 10,000 files). The next run into the same output holds the
#: output's lock, so that process is gone: its flow run and subflow runs are marked CRASHED.
def active_flow_run_path(prov_dir: Path, output_dir: str | Path) -> Path:
    """Where the flow run writing into ``output_dir`` is named: one file per output folder, so runs into other
    outputs that share this provenance folder are never taken for killed ones."""
    import hashlib

    key = hashlib.sha256(str(Path(output_dir).resolve()).encode()).hexdigest()[:16]
    return prov_dir / f"active_flow_run-{key}.json"


def _supersede_killed_run(prov_dir: Path, output_dir: str | Path, run_id: str) -> None:
    """Mark the flow run of a killed earlier run into this output CRASHED, and record this run's as active."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.context import FlowRunContext
    from prefect.states import Crashed

    ctx = FlowRunContext.get()
    me = str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else ""
    marker = active_flow_run_path(prov_dir, output_dir)
    try:
        old = json.loads(marker.read_text())
    except (OSError, ValueError):
        old = {}
    try:
        if isinstance(old, dict) and old.get("flow_run_id") and old["flow_run_id"] != me:
            with get_client(sync_client=True) as client:
                stale = UUID(str(old["flow_run_id"]))
                subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[stale])))
                for fr in [client.read_flow_run(stale), *subflows]:
                    if fr.state is not None and fr.state.is_running():
                        client.set_flow_run_state(fr.id, Crashed(
                            message=f"its process was killed; run {run_id} took over the output"), force=True)
        if me:
            from deid_core.keys import atomic_write

            atomic_write(marker, json.dumps({"flow_run_id": me, "run_id": run_id}).encode(), 0o600)
    except Exception as exc:  # noqa: BLE001 - bookkeeping of Prefect's view only: the run itself goes on
        get_run_logger().warning("could not update the state of an earlier killed run (%s)", type(exc).__name__)


def _console() -> bool:
    """Whether the CLI asked for progress lines on stderr (it does, unless ``--json``)."""
    return bool(CONSOLE_PROGRESS and CONSOLE_PROGRESS[0])


def _dask_workers() -> int:
    """Worker threads of the Dask cluster this flow runs on (its task runner's client; prefect-dask does
    not make that client the default one), 1 if it cannot say: as many batches run at once."""
    from prefect.context import FlowRunContext

    try:
        ctx = FlowRunContext.get()
        runner = ctx.task_runner if ctx is not None else None
        if isinstance(runner, DaskTaskRunner):
            return max(1, sum(runner.client.nthreads().values()))
        from distributed import get_client

        return max(1, sum(get_client().nthreads().values()))
    except Exception:  # noqa: BLE001 - only the batch size depends on it
        return 1


def _worker_lost(exc: BaseException) -> bool:
    """Whether a batch failed because its Dask worker died or went away (not because of its own error)."""
    return type(exc).__name__ in ("KilledWorker", "CommClosedError", "CancelledError")


def _record_failed(plan: RunPlan, batch: list[InventoryRecord], exc: BaseException) -> BatchSummary:
    """A batch whose task raised in the flow (after retries, or its worker died): record it as failed.
    The hook of the task has usually written the same rows already (same batch id: one copy)."""
    name = type(exc).__name__
    reason = "worker_lost" if _worker_lost(exc) else "batch_failed"
    get_run_logger().warning("run %s: a batch of %d files failed (%s); recorded as %s", plan.run_id,
                             len(batch), name, reason)
    return record_batch_failure(plan.provenance_dir, plan.run_id, plan.run_date, batch, reason,
                                f"batch task failed ({name})", table_sha=plan.table_sha256,
                                key_fp=plan.key_fp, attempt=plan.attempt)


def _load_secret(name: str) -> str:
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get())  # type: ignore[union-attr]


def _artifacts(summary: RunSummary) -> None:
    """Run summary as a table, actions as markdown — counts only, never identifiers."""
    rows = [{"metric": "files", "value": summary.files}]
    rows += [{"metric": f"status: {k}", "value": v} for k, v in summary.counts.items()]
    rows += [{"metric": f"reason: {k}", "value": v} for k, v in summary.reasons.items()]
    rows += [{"metric": "leaks found (quarantined)", "value": summary.reasons.get("leak_found", 0)},
             {"metric": "pixel boxes masked", "value": summary.boxes},
             {"metric": "wall seconds", "value": summary.wall_s},
             {"metric": "files per second", "value": summary.files_per_s},
             {"metric": "unmapped patients (pseudonymized)", "value": len(summary.unmapped_patients)}]
    create_table_artifact(table=rows, key="deidflow-run-summary", description=f"Run {summary.run_id}")
    lines = [f"# Actions applied in run {summary.run_id}", "", "| action | count |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in summary.actions.items()]
    lines += ["", "| stage | total ms |", "| --- | ---: |"]
    lines += [f"| {k} | {v} |" for k, v in summary.stage_ms.items()]
    create_markdown_artifact(markdown="\n".join(lines), key="deidflow-actions",
                             description=f"Actions of run {summary.run_id}")


def _report_artifact(prov_dir: Path, run_id: str) -> None:
    """Write the visual QA report (secure zone) and link it: the link holds the report path only."""
    from deid_core.report import write_report

    try:
        path = write_report(prov_dir, run_id)
    except Exception as exc:  # the run's outputs stand without a report; say so (no values)
        get_run_logger().warning("QA report not written (%s)", type(exc).__name__)
        return
    create_link_artifact(link=path.resolve().as_uri(), link_text=f"QA report of run {run_id}",
                         key="deidflow-qa-report", description="Before/after pixel redactions (secure zone)")


def run_summary_path(summary: dict[str, object]) -> Path:
    return Path(str(summary["summary_path"]))


def retry_parameters(retry: RetryPlan, provenance_dir: str | Path, *, key_file: str | None = None,
                     key_secret: str | None = None, workers: int | None = None,
                     dask_address: str | None = None) -> CohortParameters:
    """The parameters of a retry run: the original run's, restricted to its retryable failures."""
    stored = {k: v for k, v in retry.parameters.items() if k in CohortParameters.model_fields}
    return CohortParameters.model_validate(stored | {
        "provenance_dir": str(Path(provenance_dir).resolve()), "retry_of": retry.run_id, "key_file": key_file,
        "key_secret": key_secret, "incremental": True, "workers": workers or stored.get("workers"),
        "dask_address": dask_address or stored.get("dask_address")})


@flow(name="retry-failed", log_prints=False)
def retry_failed(
    provenance_dir: Annotated[str, Field(description="Provenance directory of the run to retry.")],
    run_id: Annotated[str | None, Field(description="Run to retry (default: the latest run).")] = None,
    key_secret: Annotated[str | None, Field(description="Prefect Secret block holding the key (else "
                                                        "$DEIDFLOW_KEY or the provenance key).")] = None,
    workers: Annotated[int | None, Field(ge=1, description="Local Dask worker processes.")] = None,
    key_file: Annotated[str | None, Field(description="File holding the key, if the run used one (absolute "
                                                      "path on the worker).")] = None,
) -> dict[str, object]:
    """Reprocess the inputs a run left failed or quarantined for a retryable reason (attempt + 1).

    Args:
        provenance_dir: Provenance directory of the run to retry (absolute path on the worker).
        run_id: Run to retry (default: the latest run).
        key_secret: Prefect Secret block holding the key (else $DEIDFLOW_KEY or the provenance key).
        workers: Local Dask worker processes (default: the run's).
        key_file: File holding the key, if the run used one (absolute path on the worker).
    """
    if not str(provenance_dir).strip():
        raise ConfigError("provenance_dir is empty: give the run's provenance directory as an absolute path "
                          "(a deployment deployed without DEIDFLOW_PROVENANCE_DIR has an empty default)")
    retry = plan_retry(Path(provenance_dir), run_id)
    if not retry.paths:
        get_run_logger().info("run %s: nothing to retry (%d failures not retryable)", retry.run_id,
                              retry.not_retryable)
        return {"run_id": retry.run_id, "retried": 0, "not_retryable": retry.not_retryable}
    return deidentify_cohort(retry_parameters(retry, provenance_dir, key_file=key_file, key_secret=key_secret,
                                              workers=workers))
