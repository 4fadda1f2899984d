"""Shared fixtures: a synthetic cohort generated once per session and de-identified in-process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from deid_core.pipeline import Outcome

os.environ.setdefault("OMP_THREAD_LIMIT", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

TEST_KEY = b"deidflow-test-key-0123456789abcdef"


@dataclass
class CohortRun:
    """A synthetic cohort, its answer, and the result of de-identifying it with the library."""

    input_dir: Path
    output_dir: Path
    provenance_dir: Path
    answer: dict
    summary: object
    plan: object


def run_library(input_dir: Path, output_dir: Path, provenance_dir: Path, **kwargs: object) -> tuple[object, object]:
    """De-identify ``input_dir`` in this process (no Prefect, no Dask): the library path."""
    from deid_core.batch import process_batch
    from deid_core.inventory import batch_records, find_files
    from deid_core.run import bad_outcomes, finish_run, prepare_run, record_outcomes
    from deid_core.termpool import inspect_chunk, pools_for

    plan = prepare_run(input_dir, output_dir, provenance_dir=provenance_dir, **kwargs)  # type: ignore[arg-type]
    records, pools = inspect_chunk(list(find_files(input_dir)), plan.cfg.key)  # the flow's inventory, one chunk
    summaries = [record_outcomes(plan, bad_outcomes(records), "inventory")]
    for batch in batch_records([r for r in records if r.status == "ok"], 16):
        summaries.append(process_batch(batch, plan.cfg, plan.provenance_dir, plan.run_id, plan.run_date,
                                       pools=pools_for(batch, pools)))
    return finish_run(plan, summaries), plan


def deidentify_dataset(tmp_path: Path, ds: Dataset, **cfg: Any) -> tuple[Outcome, Dataset | None]:
    """De-identify one in-memory dataset as the file ``tmp_path/in.dcm`` (file meta added when it has none) into
    ``tmp_path/out``: the outcome, and the written dataset read back (None unless written)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from deid_core.config import DeidConfig
    from deid_core.pipeline import deidentify_file

    if getattr(ds, "file_meta", None) is None or "TransferSyntaxUID" not in ds.file_meta:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    out = deidentify_file(src, DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out", **cfg))
    written = pydicom.dcmread(tmp_path / "out" / out.output_path) if out.status == "written" else None
    return out, written


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortRun:
    """Two synthetic patients (every modality, bad inputs included), de-identified once."""
    from deid_core.synth import generate_cohort

    base = tmp_path_factory.mktemp("cohort")
    answer = generate_cohort(base / "input", patients=2, seed=7)
    key_file = base / "key.bin"
    key_file.write_bytes(TEST_KEY)
    summary, plan = run_library(base / "input", base / "output", base / "provenance", key_file=str(key_file))
    return CohortRun(base / "input", base / "output", base / "provenance", answer, summary, plan)
