"""A batch of files: de-identify each, write the batch's provenance as one Parquet file.

This is the unit of work a Dask worker receives: file records in, a small summary out. PHI stays
inside the worker (it is read from the input and written only into the de-identified file); the
summary carries statuses, timings and counts — plus (old, new) pairs only when the run asked for
the linkage export.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from deid_core.config import DeidConfig
from deid_core.inventory import InventoryRecord
from deid_core.pipeline import Outcome, deidentify_file, get_context
from deid_core.provenance import ProvenanceWriter
from deid_core.termpool import unseal
from deid_core.writer import commit_staged, discard_staged


@dataclass
class BatchSummary:
    """What a batch reports back to the flow (no identifiers unless linkage was requested)."""

    batch_id: str
    counts: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    actions: dict[str, int] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)
    boxes: int = 0
    unmapped_patients: list[str] = field(default_factory=list)  # new pseudonymous ids, never originals
    uid_pairs: dict[str, str] = field(default_factory=dict, repr=False)
    patient_pairs: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def files(self) -> int:
        return sum(self.counts.values())


def batch_id_for(records: list[InventoryRecord]) -> str:
    """A deterministic id for a batch (so a retried batch replaces its provenance file)."""
    h = hashlib.sha256("\n".join(sorted(r.sha256 + r.path for r in records)).encode())
    return h.hexdigest()[:16]


def outcome_for_bad_input(rec: InventoryRecord) -> Outcome:
    """Inventory already knows this input cannot be de-identified: quarantine or skip it."""
    now = datetime.now(UTC)
    status = "skipped" if rec.status == "skip" else "quarantined"
    return Outcome(input_path=rec.path, input_sha256=rec.sha256, input_size=rec.size, status=status,
                   reason=rec.reason, error=rec.error, started_at=now, finished_at=now,
                   modality=rec.modality, sop_class_uid=rec.sop_class_uid, transfer_syntax=rec.transfer_syntax)


def summarise(batch_id: str, outcomes: list[Outcome]) -> BatchSummary:
    s = BatchSummary(batch_id)
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    stage: Counter[str] = Counter()
    unmapped: set[str] = set()
    for o in outcomes:
        counts[o.status] += 1
        if o.reason:
            reasons[o.reason] += 1
        actions.update(o.actions)
        for st in ("inventory_ms", "pixel_ms", "scrub_ms", "pseudonymize_ms", "write_ms", "verify_ms"):
            stage[st] += getattr(o, st)
        s.boxes += len(o.boxes)
        if o.unmapped_new_id and o.status == "written":
            unmapped.add(o.unmapped_new_id)
        s.uid_pairs.update(o.uid_pairs)
        if o.patient_pair:
            s.patient_pairs[o.patient_pair[0]] = o.patient_pair[1]
    s.counts, s.reasons, s.actions = dict(counts), dict(reasons), dict(sorted(actions.items()))
    s.stage_ms = {k: round(v, 3) for k, v in stage.items()}
    s.unmapped_patients = sorted(unmapped)
    return s


def process_batch(records: list[InventoryRecord], cfg: DeidConfig, prov_dir: Path, run_id: str,
                  run_date: str, attempt: int = 1, pools: Mapping[str, list[bytes]] | None = None) -> BatchSummary:
    """De-identify ``records`` (good inputs) and write their provenance as one Parquet file.
    ``pools``: the sealed identifiers of the batch's patients from all their files (``termpool``)."""
    ctx = get_context(cfg)
    outcomes = []
    sampled: set[str] = set()
    pooled = {k: unseal(cfg.key, blobs) for k, blobs in (pools or {}).items()}
    for r in records:
        if r.status != "ok":
            outcomes.append(outcome_for_bad_input(r))
            continue
        # conformance "sample": dciodvfy on the first file of each series in this batch (deterministic:
        # batches and their order are); pydicom-level conformance runs on every file regardless.
        first = r.series_key not in sampled
        sampled.add(r.series_key)
        want = cfg.conformance == "full" or (cfg.conformance == "sample" and first)
        outcomes.append(deidentify_file(r.path, cfg, r, dciodvfy=want, defer_commit=True,
                                        pooled=pooled.get(r.pool_key)))
    staged = [o for o in outcomes if o.staged is not None]
    t0 = time.perf_counter()
    try:
        errors = commit_staged([o.staged for o in staged if o.staged is not None])
    except BaseException:
        discard_staged([o.staged for o in staged if o.staged is not None])
        raise
    commit_ms = (time.perf_counter() - t0) * 1000.0 / max(1, len(staged))
    for o, err in zip(staged, errors, strict=True):
        o.staged = None
        o.write_ms = round(o.write_ms + commit_ms, 3)  # the batch's sync + renames, shared by its files
        if err is None:
            o.status = "written"
        else:  # retryable: the input is fine, the output could not be made durable or renamed
            o.status, o.reason, o.error = "failed", err.reason, str(err)
            o.output_path = o.output_sha256 = o.conformance = ""
            o.uid_pairs, o.patient_pair = {}, None
    bid = batch_id_for(records)
    rows = [o.to_record(run_id, run_date, ctx.table.sha256, ctx.key_fp, attempt, ctx.settings_sha)
            for o in outcomes]
    ProvenanceWriter(Path(prov_dir), run_id, run_date).write_batch(rows, bid)
    return summarise(bid, outcomes)
