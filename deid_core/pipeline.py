"""De-identify one file end to end, and a batch of files with its provenance.

Per file, in order: full read → capture the file's identifiers from the original header → find
burned-in text and mask it → tag scrub + pseudonymize (one walk) → verify no captured identifier
remains → atomic write. Any failure quarantines the file (nothing is written) with a reason
class; only a run-level problem (no key, unwritable output) stops the run.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from deid_core import __version__
from deid_core.anonymizer import Anonymizer, PatientPseudonyms
from deid_core.config import DeidConfig
from deid_core.conformance import add_dciodvfy
from deid_core.errors import BadInputError, DeidError, LeakError, PixelError
from deid_core.freetext import TextCleaner
from deid_core.handlers import UidHandler
from deid_core.inventory import InventoryRecord, read_dataset
from deid_core.keys import key_fingerprint
from deid_core.pseudonyms import PatientMap, date_offset_days
from deid_core.rules import RuleTable, load_rule_table
from deid_core.termpool import patient_key_of
from deid_core.terms import PhiTerms, capture_terms
from deid_core.verify import LeakTerms, retained_tags, verify_encoded
from deid_core.writer import StagedWrite, encode, output_relpath, stage_atomic, write_atomic

os.environ.setdefault("OMP_THREAD_LIMIT", "1")


@dataclass
class Outcome:
    """What happened to one input: the provenance row of this file for this run (no PHI but paths)."""

    input_path: str
    input_sha256: str = ""
    input_size: int = 0
    status: str = "quarantined"  # written | quarantined | skipped | failed (| staged, inside a batch only)
    reason: str = ""
    error: str = ""
    output_path: str = ""
    output_sha256: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    inventory_ms: float = 0.0
    pixel_ms: float = 0.0
    scrub_ms: float = 0.0
    pseudonymize_ms: float = 0.0
    write_ms: float = 0.0
    verify_ms: float = 0.0
    modality: str = ""
    sop_class_uid: str = ""
    transfer_syntax: str = ""
    frames: int = 0
    pixel_policy: str = ""
    frames_ocr: int = 0
    prescreen_skipped: bool = False
    boxes: list[dict[str, int | float | str]] = field(default_factory=list)
    actions: dict[str, int] = field(default_factory=dict)
    patient_mapped: bool = False
    #: (old, new) pairs for the optional linkage export; empty unless the run asked for linkage.
    uid_pairs: dict[str, str] = field(default_factory=dict, repr=False)
    patient_pair: tuple[str, str] | None = field(default=None, repr=False)
    #: Whether the patient was unmapped: its pseudonymous new id (no original) for the summary.
    unmapped_new_id: str = ""
    #: Conformance of the written output (JSON, no values; see deid_core.conformance).
    conformance: str = ""
    #: With ``defer_commit``: the verified output waiting in the temporary directory (status "staged").
    staged: StagedWrite | None = field(default=None, repr=False)

    def to_record(self, run_id: str, run_date: str, table_sha: str, key_fp: str, attempt: int = 1,
                  settings_sha: str = "") -> dict[str, object]:
        """The provenance row (``deid_core.provenance.SCHEMA``)."""
        row = asdict(self)
        for k in ("uid_pairs", "patient_pair", "unmapped_new_id", "staged"):
            row.pop(k)
        row["boxes"] = json.dumps(self.boxes, sort_keys=True)
        row["n_boxes"] = len(self.boxes)
        row["actions"] = json.dumps(self.actions, sort_keys=True)
        row.update(run_id=run_id, run_date=run_date, rule_table_sha256=table_sha, key_fingerprint=key_fp,
                   deidflow_version=__version__, attempt=attempt, settings_sha256=settings_sha)
        return {k: (None if v == "" else v) for k, v in row.items()}


class Context:
    """Per-process state built once from a config: rule table, patient map, UID cache, OCR engine."""

    def __init__(self, cfg: DeidConfig) -> None:
        self.cfg = cfg
        self.table: RuleTable = load_rule_table(cfg.profile, list(cfg.options) or None)
        self.patient_map = PatientMap.load(cfg.patient_map) if cfg.patient_map else PatientMap.empty()
        self.settings_sha = cfg.settings_digest()
        self.uids = UidHandler(cfg.key, cfg.uid_root, collect_pairs=cfg.collect_linkage)
        self.device_tags, self.trait_tags = retained_tags(self.table)
        self.key_fp = key_fingerprint(cfg.key)
        self._engine: object | None = None
        self._sampled_series: set[str] = set()

    def wants_dciodvfy(self, record: InventoryRecord | None) -> bool:
        """Outside a batch: "full" checks every file, "sample" the first file of each series seen by this
        process (a lone file without an inventory record is its own sample), "off" none."""
        if self.cfg.conformance != "sample":
            return self.cfg.conformance == "full"
        if record is None or not record.series_key:
            return True
        if record.series_key in self._sampled_series:
            return False
        self._sampled_series.add(record.series_key)
        return True

    @property
    def engine(self) -> object:
        if self._engine is None:
            from deid_core.pixels import get_engine

            self._engine = get_engine(self.cfg.pixel_engine)
        return self._engine


_CONTEXTS: dict[tuple[bytes, str, str, tuple[int, int, int] | None], Context] = {}


def warm_process(engine: str = "tesseract") -> None:
    """Load what every worker needs before its first file (Presidio's analyzer ~1-2 s, Tesseract ~0.1 s,
    the default rule table): a run can do this while other start-up work is under way."""
    from deid_core.freetext import warm_up
    from deid_core.pixels import get_engine

    warm_up()
    get_engine(engine)
    load_rule_table()


def get_context(cfg: DeidConfig) -> Context:
    """The process-wide context for ``cfg`` (built on first use in each worker process). A patient map
    edited in place (same path) builds a new one: a worker of a long-lived cluster kept the old map."""
    key = (cfg.key, cfg.settings_hash(), str(cfg.output_dir) + str(cfg.collect_linkage), _map_stamp(cfg))
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        ctx = _CONTEXTS[key] = Context(cfg)
    return ctx


def _map_stamp(cfg: DeidConfig) -> tuple[int, int, int] | None:
    """The patient map file's (inode, size, mtime): cheap to read per file, changed by any edit."""
    if not cfg.patient_map:
        return None
    try:
        st = os.stat(cfg.patient_map)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)


def deidentify_file(path: str | Path, cfg: DeidConfig, record: InventoryRecord | None = None, *,
                    dciodvfy: bool | None = None, defer_commit: bool = False,
                    pooled: PhiTerms | None = None) -> Outcome:
    """De-identify one input file and write it; never raises for a per-file problem.

    ``dciodvfy`` says whether this output is one the conformance sample checks with dciodvfy;
    None decides from ``cfg.conformance`` (``process_batch`` passes it explicitly per batch).
    ``defer_commit`` leaves the verified output staged (status "staged", ``Outcome.staged``) for the
    caller to make durable and rename with ``writer.commit_staged`` (one sync per batch).
    ``pooled``: identifiers of the patient's other files (``termpool``), cleaned and verified like its own."""
    ctx = get_context(cfg)
    run_dciodvfy = ctx.wants_dciodvfy(record) if dciodvfy is None else dciodvfy and cfg.conformance != "off"
    out = Outcome(input_path=str(path), started_at=datetime.now(UTC))
    if record is not None:
        out.input_sha256, out.input_size = record.sha256, record.size
        out.modality, out.sop_class_uid = record.modality, record.sop_class_uid
        out.transfer_syntax, out.frames = record.transfer_syntax, record.frames
    try:
        _deidentify(Path(path), cfg, ctx, out, run_dciodvfy, defer_commit, pooled)
        out.status, out.reason = ("staged" if out.staged is not None else "written"), ""
    except DeidError as exc:
        # A retryable problem (disk full, permission denied on output) is not the input's fault: failed,
        # so a rerun redoes it; everything else about the input is a quarantine.
        out.status = "failed" if exc.retryable else "quarantined"
        out.reason, out.error = exc.reason, str(exc)
    except Exception as exc:  # unexpected: quarantine with the exception class and where, not values
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        out.status, out.reason, out.error = "quarantined", "internal_error", f"{type(exc).__name__} at {where}"
    out.finished_at = datetime.now(UTC)
    if out.status not in ("written", "staged"):
        out.output_path = out.output_sha256 = ""
        out.uid_pairs, out.patient_pair = {}, None
    return out


def _deidentify(path: Path, cfg: DeidConfig, ctx: Context, out: Outcome, run_dciodvfy: bool,
                defer_commit: bool = False, pooled: PhiTerms | None = None) -> None:
    t0 = time.perf_counter()
    try:
        ds = read_dataset(path)  # same acceptance as the inventory; damaged elements refused by tag
    except BadInputError:
        raise
    except Exception as exc:
        raise BadInputError(f"cannot read DICOM file ({type(exc).__name__})") from None
    if "SOPInstanceUID" not in ds:
        raise BadInputError("no SOPInstanceUID")
    terms = capture_terms(ds)
    if pooled is not None:
        terms.terms |= pooled.terms  # the patient's other files' names, IDs, addresses (no dates)
    leak_terms = LeakTerms.capture(ds, terms)
    leak_terms.device_tags, leak_terms.trait_tags = ctx.device_tags, ctx.trait_tags
    original_pid = str(ds.get("PatientID", "") or "")
    patient_key = patient_key_of(ds)
    entry, mapped = ctx.patient_map.resolve(cfg.key, patient_key, cfg.pseudonym_prefix)
    out.patient_mapped = mapped
    if not mapped:
        out.unmapped_new_id = entry.new_id
    if cfg.collect_linkage and original_pid.strip():
        out.patient_pair = (original_pid, entry.new_id)
    offset = date_offset_days(cfg.key, patient_key, cfg.date_shift_min_days, cfg.date_shift_max_days)
    out.modality = str(ds.get("Modality", "") or out.modality)
    out.sop_class_uid = str(ds.get("SOPClassUID", "") or "")
    out.inventory_ms = _ms(t0)

    # Pixels: find burned-in text on every frame and mask it, before any header value changes.
    t0 = time.perf_counter()
    pixels_clean = False
    bits_cleared = False
    pixels_text_free = True  # no pixels, or the pre-screen proved every frame text-free and nothing changed
    if "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        from deid_core.pixels import apply_boxes, find_text_boxes, pixel_policy_for
        from deid_core.pixels.mask import clear_unused_bits

        mp = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) / 1e6
        if mp > cfg.max_frame_megapixels:
            raise PixelError(f"a frame of {mp:.0f} megapixels exceeds the limit of {cfg.max_frame_megapixels:g} "
                             "(--max-frame-megapixels; searching takes ~14 MB of worker memory per megapixel)")
        policy = pixel_policy_for(out.modality, cfg.pixel_policy)
        out.pixel_policy = policy
        result = find_text_boxes(ds, terms, policy, ctx.engine, leak_terms.matcher)  # type: ignore[arg-type]
        out.frames = result.frames
        out.frames_ocr = result.frames_ocr
        out.prescreen_skipped = result.prescreen_skipped
        if not result.complete:
            raise PixelError(f"only {result.frames_checked} of {result.frames} frames could be checked")
        apply_boxes(ds, result, allow_lossy_reencode=cfg.allow_lossy_reencode)
        # overlay bits stored above HighBit (retired convention) can spell text no view of the image shows
        bits_cleared = clear_unused_bits(ds)
        out.boxes = [b.to_dict() for b in result.boxes]
        pixels_text_free = result.prescreen_skipped and not result.boxes
        pixels_clean = True
    out.pixel_ms = _ms(t0)

    # Tags: one walk applies scrub and pseudonyms (UIDs, dates, patient identity).
    t0 = time.perf_counter()
    patient = PatientPseudonyms(entry, offset)
    anonymizer = Anonymizer(ctx.table, ctx.uids, patient, TextCleaner(terms, matcher=leak_terms.matcher),
                            lambda pid: ctx.patient_map.resolve(cfg.key, pid, cfg.pseudonym_prefix)[0].new_id,
                            retained=(ctx.device_tags, ctx.trait_tags))
    ctx.uids.originals = set()
    try:
        actions = anonymizer.anonymize(ds, pixels_clean=pixels_clean)
        if bits_cleared:
            actions["unused_pixel_bits_cleared"] += 1
        leak_terms.uids = frozenset(ctx.uids.originals)
    finally:
        ctx.uids.originals = None
    walk_ms = _ms(t0)
    pseudo_names = ("uid", "date_shift", "patient_id", "patient_name")
    pseudo_n = sum(actions.get(n, 0) for n in pseudo_names)
    total_n = max(1, sum(actions.values()))
    # The walk is shared: attribute its time to the two stages in proportion to their actions.
    out.pseudonymize_ms = round(walk_ms * pseudo_n / total_n, 3)
    out.scrub_ms = round(walk_ms - out.pseudonymize_ms, 3)
    out.actions = dict(sorted(Counter(actions).items()))
    if cfg.collect_linkage:
        out.uid_pairs = dict(ctx.uids.pairs)
        ctx.uids.pairs.clear()

    # Verify the exact bytes of the output before anything touches the disk: they are parsed back as a
    # reader would (one pass over every element at every depth and the file meta, OCR of the frames that
    # may carry text unless the pre-screen proved them text-free) and checked for conformance. Then the
    # same bytes are written atomically; dciodvfy (when this file is sampled) runs on the temporary file
    # before the rename. Fail closed: a leak or unreadable output never reaches the output tree.
    t0 = time.perf_counter()
    data = encode(ds)
    rel = output_relpath(ds)
    for tag in (0x7FE00008, 0x7FE00009, 0x7FE00010):
        if tag in ds:  # the encoded bytes hold the pixels now: drop the dataset's copy (peak memory)
            del ds[tag]
    encode_ms = _ms(t0)
    t0 = time.perf_counter()
    conf = None
    if cfg.verify:
        res, conf = verify_encoded(data, leak_terms, ctx.engine if not pixels_text_free else None,
                                   pixels_text_free=pixels_text_free)
        if res.leaks:
            raise LeakError("identifier found in output: " + "; ".join(sorted({lk.describe() for lk in res.leaks})))
        conf.dciodvfy_mode = "run" if run_dciodvfy else ("off" if cfg.conformance == "off" else "not_sampled")
    out.verify_ms = _ms(t0)
    dciodvfy_ms = 0.0

    def dciodvfy_tmp(tmp: Path) -> None:
        nonlocal dciodvfy_ms
        t_v = time.perf_counter()
        assert conf is not None
        add_dciodvfy(conf, tmp)
        dciodvfy_ms = _ms(t_v)

    t0 = time.perf_counter()
    check = dciodvfy_tmp if conf is not None and run_dciodvfy else None
    if defer_commit:
        out.staged = stage_atomic(Path(cfg.output_dir), rel, data, check=check)
        out.output_sha256 = out.staged.sha256
    else:
        out.output_sha256 = write_atomic(Path(cfg.output_dir), rel, data, check=check)
    out.output_path = rel
    if conf is not None:
        out.conformance = conf.to_json()
    out.transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
    out.write_ms = round(encode_ms + _ms(t0) - dciodvfy_ms, 3)
    out.verify_ms = round(out.verify_ms + dciodvfy_ms, 3)
