"""Thin Prefect tasks over deid_core. Each covers a chunk or batch of files, never one file.

Tasks take ``NO_CACHE``: their inputs include the run key, which must never be hashed into a
cache key or persisted. Retries cover transient errors (a worker lost, a filesystem hiccup);
per-file problems never raise — they come back as quarantined outcomes. When a batch still fails
after its retries, its ``on_failure`` hook records every input of the batch as ``failed`` in
provenance (reason ``batch_failed``, retryable with ``deidflow retry``), so nothing is lost.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import TaskRun
from prefect.context import TaskRunContext
from prefect.states import State

from deid_core.batch import BatchSummary, process_batch
from deid_core.config import DeidConfig
from deid_core.inventory import InventoryRecord
from deid_core.run import record_batch_failure
from deid_core.termpool import Pools, inspect_chunk

_log = logging.getLogger("deidflow.tasks")


def warm_worker(engine: str = "tesseract") -> None:
    """Warm a Dask worker before its first task: deid_core's models (``warm_process``) and Prefect's task
    engine, which a fresh worker otherwise imports when its first task arrives (~1 s each)."""
    import prefect.task_engine  # noqa: F401

    from deid_core.pipeline import warm_process

    warm_process(engine)


@task(name="inventory-chunk", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def inventory_chunk(paths: list[str], key: bytes, records: bool = True) -> tuple[list[InventoryRecord], Pools]:
    """Header-only inventory of a chunk of paths, and its patients' identifiers, sealed (``termpool``).
    ``records=False``: the sealed identifiers only (the files a retry does not redo)."""
    return inspect_chunk(paths, key, records=records)


def failure_error(state: State[Any]) -> str:
    """A PHI-free description of why a task failed: the exception class, never its message."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as err:  # the result itself may be unreadable
        exc = err
    if isinstance(exc, BaseException):
        return f"batch task failed ({type(exc).__name__})"
    return "batch task failed"


def record_failed_batch(tsk: Task[..., Any], task_run: TaskRun, state: State[Any]) -> None:
    """``on_failure`` hook of ``deidentify-batch``: one ``failed`` provenance row per input of the batch."""
    ctx = TaskRunContext.get()
    params: dict[str, Any] = dict(ctx.parameters) if ctx is not None and ctx.parameters else {}
    records = params.get("records") or []
    if not records:
        return
    table_sha = key_fp = None
    try:  # the configuration fingerprints, when the context can still be built
        from deid_core.pipeline import get_context

        c = get_context(params["cfg"])
        table_sha, key_fp = c.table.sha256, c.key_fp
    except Exception:
        _log.warning("batch failure recorded without rule/key fingerprints")
    record_batch_failure(Path(params["prov_dir"]), params["run_id"], params["run_date"], list(records),
                         "batch_failed", failure_error(state), table_sha=table_sha, key_fp=key_fp,
                         attempt=int(params.get("attempt", 1)))


@task(name="deidentify-batch", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE,
      on_failure=[record_failed_batch])
def deidentify_batch(records: list[InventoryRecord], cfg: DeidConfig, prov_dir: str, run_id: str,
                     run_date: str, attempt: int = 1, pools: Pools | None = None) -> BatchSummary:
    """Pixel redaction, tag scrub, pseudonyms, verification and atomic writes for one batch."""
    return process_batch(records, cfg, Path(prov_dir), run_id, run_date, attempt, pools)
