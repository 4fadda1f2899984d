"""A file that kills its Dask worker (an audit: a 577 MB cine on a 1 GB worker) must not take its batch with
it: the batch's other files are redone one by one and written, and only the file that killed the worker
ends ``failed / worker_lost``. Staged outputs of the dead batch never stay in the output tree.

The worker death is real (``os._exit`` in a LocalCluster worker process, which its nanny replaces); the
batch task is the real one behind a wrapper that dies on the planted file (a fake beside the real thing).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import dask
import pytest
from prefect import task
from prefect.cache_policies import NO_CACHE

from tests.conftest import TEST_KEY

KILLER = "zz_kills_its_worker"


@task(name="deidentify-batch", cache_policy=NO_CACHE)
def _dying_batch(records: list[Any], cfg: Any, prov_dir: str, run_id: str, run_date: str, attempt: int = 1,
                 pools: Any = None) -> Any:
    """The real batch task, except that a worker handed the planted file dies (as under the OOM killer),
    after staging the files before it (a commit interrupted)."""
    from deid_core.batch import process_batch

    if any(KILLER in r.path for r in records):
        from deid_core.pipeline import deidentify_file

        for r in records:
            if KILLER not in r.path:
                deidentify_file(r.path, cfg, r, dciodvfy=False, defer_commit=True)  # staged, never committed
        os._exit(1)
    return process_batch(records, cfg, Path(prov_dir), run_id, run_date, attempt, pools)


cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests package


@pytest.mark.slow
def test_a_file_that_kills_its_worker_fails_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from deid_core.provenance import connect
    from deid_core.synth import generate_cohort
    from flows import deidentify
    from flows.cli import prefect_api

    generate_cohort(tmp_path / "in", patients=1, seed=4)
    files = sorted(p for p in (tmp_path / "in").rglob("*.dcm") if "bad" not in str(p))
    killer = files[0].with_name(f"{KILLER}.dcm")
    shutil.copy(files[0], killer)
    (tmp_path / "key.bin").write_bytes(TEST_KEY)
    monkeypatch.setattr(deidentify, "deidentify_batch", _dying_batch)
    params = deidentify.CohortParameters(input_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"),
                                         provenance_dir=str(tmp_path / "prov"), key_file=str(tmp_path / "key.bin"),
                                         workers=1, batch_size=64)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), prefect_api():
        summary = deidentify.deidentify_cohort(params)
    with connect(tmp_path / "prov") as con:
        rows = con.execute("SELECT input_path, status, reason FROM records WHERE run_id = ?",
                           [summary["run_id"]]).fetchall()
    failed = [(Path(p).name, r) for p, s, r in rows if s == "failed"]
    assert failed == [(killer.name, "worker_lost")]  # only the file that killed its worker
    assert len(rows) == len({p for p, _s, _r in rows})  # one row per input
    written = sum(1 for _p, s, _r in rows if s == "written")
    assert written == sum(1 for _ in (tmp_path / "out").rglob("*.dcm")) > 0
    assert not (tmp_path / "out" / ".deidflow-tmp").exists() or not any((tmp_path / "out" / ".deidflow-tmp").iterdir())
