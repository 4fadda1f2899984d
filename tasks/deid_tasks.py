"""Thin Prefect tasks over deid_core. Each covers a chunk or batch of files, never one file.

Tasks take ``NO_CACHE``: their inputs include the run key, which must never be hashed into a
cache key or persisted. Retries cover transient errors (a worker lost, a filesystem hiccup);
per-file problems never raise — they come back as quarantined outcomes.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from deid_core.batch import BatchSummary, process_batch
from deid_core.config import DeidConfig
from deid_core.inventory import InventoryRecord, inspect_file


@task(name="inventory-chunk", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def inventory_chunk(paths: list[str], key: bytes) -> list[InventoryRecord]:
    """Header-only inventory of a chunk of paths."""
    return [inspect_file(p, key) for p in paths]


@task(name="deidentify-batch", retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def deidentify_batch(records: list[InventoryRecord], cfg: DeidConfig, prov_dir: str, run_id: str,
                     run_date: str) -> BatchSummary:
    """Pixel redaction, tag scrub, pseudonyms, verification and atomic writes for one batch."""
    return process_batch(records, cfg, Path(prov_dir), run_id, run_date)
