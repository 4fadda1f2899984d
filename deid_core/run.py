"""Run-level preparation and bookkeeping shared by the Prefect flow and library users.

Everything that can make a whole run impossible is checked here, before any file is written:
directories, the key (and that it matches earlier runs into the same tree), the patient map,
the rule table. The run then needs only per-file work, which never stops the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pydicom

from deid_core import __version__
from deid_core.batch import BatchSummary, outcome_for_bad_input, summarise
from deid_core.config import DeidConfig
from deid_core.errors import ConfigError
from deid_core.inventory import InventoryRecord
from deid_core.keys import check_key_history, key_fingerprint, load_key
from deid_core.pipeline import Outcome
from deid_core.provenance import (
    ProvenanceWriter,
    clean_stale_tmp,
    done_outputs,
    superseded_outputs,
    write_run_record,
)
from deid_core.pseudonyms import PatientMap
from deid_core.rules import load_rule_table
from deid_core.writer import TMP_DIRNAME, _makedirs, clean_tmp, output_umask


@dataclass
class RunPlan:
    """A validated run: its config (with the key), ids and directories."""

    cfg: DeidConfig
    input_dir: Path
    provenance_dir: Path
    run_id: str
    run_date: str
    started_at: datetime
    table_sha256: str
    key_fp: str
    linkage_dir: Path | None = None
    parameters: dict[str, object] = field(default_factory=dict)
    attempt: int = 1  # > 1 for ``deidflow retry`` runs


def default_provenance_dir(output_dir: Path) -> Path:
    """``<output>-provenance`` beside the output tree: provenance holds input paths, so it must not
    travel with the de-identified data."""
    output_dir = Path(output_dir).resolve()
    return output_dir.parent / f"{output_dir.name}-provenance"


def new_run_id(now: datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or child.is_relative_to(parent)


def check_paths(input_dir: str | Path, output_dir: str | Path, provenance_dir: str | Path | None = None,
                linkage_dir: str | Path | None = None) -> tuple[Path, Path, Path, Path | None]:
    """The run's directories, refused when they overlap in a way that would leak or loop."""
    for name, value in (("input_dir", input_dir), ("output_dir", output_dir)):
        if not str(value).strip():
            # an empty path is the current directory: a deployment deployed without DEIDFLOW_WATCH_DIR /
            # DEIDFLOW_OUTPUT_DIR got '' and would have run on the worker's checkout (an audit)
            raise ConfigError(f"{name} is empty: give an absolute path (a deployment deployed without its "
                              "DEIDFLOW_* folder variables has empty defaults)")
    inp = Path(input_dir)
    out = Path(output_dir)
    if not inp.exists():
        raise ConfigError(f"input {inp} does not exist")
    if _inside(out, inp) or (inp.is_dir() and _inside(inp, out)):
        raise ConfigError("the output directory must not be inside the input tree (or contain it)")
    prov = Path(provenance_dir) if provenance_dir else default_provenance_dir(out)
    if _inside(prov, out):
        raise ConfigError("the provenance directory must not be inside the output tree "
                          "(it holds input paths)")
    link = Path(linkage_dir) if linkage_dir else None
    if link is not None and _inside(link, out):
        raise ConfigError("the linkage directory must not be inside the output tree")
    return inp, out, prov, link


def precheck(input_dir: str | Path, output_dir: str | Path, *, provenance_dir: str | Path | None = None,
             linkage_dir: str | Path | None = None, key_file: str | None = None, key_secret: str | None = None,
             patient_map: str | None = None, profile: str = "tcia", options: Iterable[str] = (),
             uid_root: str = "2.25.", pixel_policy: str | None = None, new_key: bool = False) -> None:
    """Usage errors found in milliseconds, before Prefect and Dask start; creates nothing.

    ``prepare_run`` repeats these checks inside the flow (deployments skip this function)."""
    _inp, _out, prov, _link = check_paths(input_dir, output_dir, provenance_dir, linkage_dir)
    output_umask()
    if key_file is not None or (key_secret is None and "DEIDFLOW_KEY" in os.environ):
        key = load_key(key_file, secret_name=key_secret)
        # a different key than earlier runs into this tree: refused here, before Prefect starts (inside the
        # flow the refusal came with Prefect's traceback of the failed flow run)
        check_key_history(prov, key_fingerprint(key), new_key, record=False)
    if patient_map:
        PatientMap.load(patient_map)
    load_rule_table(profile, list(options) or None)
    check_settings(uid_root, pixel_policy)


def check_settings(uid_root: str, pixel_policy: str | None) -> None:
    """A bad UID root or pixel policy stops the run before any file: checked per file, it had quarantined
    every input as ``config_error`` and the run exited 0 (an audit)."""
    from deid_core.pseudonyms import new_uid

    new_uid(b"settings-check-key", "1.2.3", uid_root)
    if pixel_policy and pixel_policy.strip().lower() not in ("", "auto"):
        from deid_core.pixels import pixel_policy_for

        pixel_policy_for("", pixel_policy)  # parses the whole policy (every MOD=policy entry) on any call


def prepare_run(input_dir: str | Path, output_dir: str | Path, *, provenance_dir: str | Path | None = None,
                key_file: str | None = None, key_secret: str | None = None,
                secret_loader: Callable[[str], bytes | str] | None = None, new_key: bool = False,
                patient_map: str | None = None, profile: str = "tcia", options: Iterable[str] = (),
                uid_root: str = "2.25.", pixel_policy: str | None = None, pixel_engine: str = "tesseract",
                linkage_dir: str | None = None, allow_lossy_reencode: bool = True,
                max_frame_megapixels: float = 100.0, conformance: str = "sample",
                date_shift_days: tuple[int, int] = (1, 365),
                pseudonym_prefix: str = "DEID",
                parameters: dict[str, object] | None = None) -> RunPlan:
    """Validate everything run-level and return the plan; raises ConfigError with a clear reason."""
    inp, out, prov, link = check_paths(input_dir, output_dir, provenance_dir, linkage_dir)
    check_settings(uid_root, pixel_policy)
    umask = output_umask()  # a bad DEIDFLOW_UMASK stops the run here, not in every worker
    # what needs no folder is checked before any folder is created: a run refused in a deployment (a bad map,
    # an unknown option, a missing key secret) left empty output and provenance folders behind (an audit)
    if patient_map:
        PatientMap.load(patient_map)  # refuse a bad map before any file is written
    if not max_frame_megapixels > 0:
        raise ConfigError("the frame size limit (megapixels) must be positive")
    lo, hi = date_shift_days
    if not 1 <= lo <= hi:
        raise ConfigError("date shift range must satisfy 1 <= min <= max")
    table = load_rule_table(profile, list(options) or None)
    created = [d for d in (out, prov) if not d.exists()]
    try:
        for d, what in ((out, "output"), (prov, "provenance")):
            try:
                if what == "output":
                    _makedirs(d, 0o777 & ~umask)  # folders this run creates get the restrictive mode
                d.mkdir(parents=True, exist_ok=True)
                os.chmod(d, 0o700) if what == "provenance" else None
            except OSError as exc:
                raise ConfigError(f"cannot create the {what} directory ({exc.strerror})") from None
            if not os.access(d, os.W_OK):
                raise ConfigError(f"the {what} directory is not writable")
        key = load_key(key_file, provenance_dir=prov, secret_loader=secret_loader, secret_name=key_secret)
        fp = key_fingerprint(key)
        check_key_history(prov, fp, new_key, record=False)
    except ConfigError:
        for d in reversed(created):  # the folders this refused run created, while still empty
            with contextlib.suppress(OSError):
                d.rmdir()
        raise
    cfg = DeidConfig(key=key, output_dir=out.resolve(), profile=profile, options=tuple(options),
                     uid_root=uid_root,
                     date_shift_min_days=lo, date_shift_max_days=hi,
                     patient_map=str(Path(patient_map).resolve()) if patient_map else None,
                     pseudonym_prefix=pseudonym_prefix, pixel_policy=pixel_policy, pixel_engine=pixel_engine,
                     allow_lossy_reencode=allow_lossy_reencode, max_frame_megapixels=max_frame_megapixels,
                     collect_linkage=link is not None,
                     conformance=conformance)
    lock_output(out)  # everything is valid: from here on this run changes the output and provenance trees
    try:
        check_key_history(prov, fp, new_key)
        table_dir = prov / "rules"
        table_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(table_dir, 0o700)  # provenance: folders 0700, files 0600 (docs/provenance.md)
        with open(table_dir / f"{table.sha256[:16]}.csv", "w", encoding="utf-8", newline="") as fh:
            table.to_csv(fh)
        os.chmod(table_dir / f"{table.sha256[:16]}.csv", 0o600)
        clean_tmp(out)
        clean_stale_tmp(prov)  # a run killed mid-write left its provenance temporary file behind
    except BaseException:
        release_output(out)
        raise
    now = datetime.now(UTC)
    return RunPlan(cfg=cfg, input_dir=inp.resolve(), provenance_dir=prov.resolve(), run_id=new_run_id(now),
                   run_date=now.date().isoformat(), started_at=now, table_sha256=table.sha256, key_fp=fp,
                   linkage_dir=link, parameters=dict(parameters or {}))


#: Output folders this process runs into, with the open descriptor that holds each one's lock.
_OUTPUT_LOCKS: dict[str, int] = {}
#: Output folders this process has locked at some time (a run's lock is released as soon as it stops).
_LOCKED_BEFORE: set[str] = set()


def holds_output_lock(out: Path) -> bool:
    """Whether this process holds the lock of output folder ``out`` (its run is the one writing there)."""
    return str(out.resolve()) in _OUTPUT_LOCKS


def lock_output(out: Path) -> None:
    """Take the output folder for this run: an exclusive ``flock`` on the folder itself (no file is added
    to the output tree), held until ``finish_run`` or until the process ends (a killed run leaves no stale
    lock). A second run into the same output, from another process, is refused: at its start it would
    empty the first run's staging folder (an audit's overlapping scheduled runs lost a file). A plan made
    earlier in this process for the same folder is superseded."""
    import fcntl

    key = str(out.resolve())
    release_output(key)
    fd = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError("another deidflow run is writing into this output directory; wait for it to "
                          "finish (or stop it) and start this run again") from None
    _OUTPUT_LOCKS[key] = fd
    _LOCKED_BEFORE.add(key)


def discard_staged(out: Path) -> int:
    """Remove the staged (never published) files of this process's stopped run from ``OUTPUT/.deidflow-tmp``;
    returns how many. Only for an output folder this process ran into, and only while no other run holds it:
    the stopped run has released its lock by now (an audit found 319 staged files left after SIGTERM, because
    the CLI asked whether it still held the lock). Call it once the run's workers are gone."""
    key = str(out.resolve())
    if key not in _LOCKED_BEFORE:
        return 0  # refused before its lock, or another process's run
    try:
        lock_output(out)
    except (ConfigError, OSError):
        return 0  # another run writes there now: its staged files are its own
    try:
        staging = Path(key) / TMP_DIRNAME
        removed = 0
        for part in staging.glob("*.part") if staging.is_dir() else ():
            with contextlib.suppress(OSError):
                part.unlink()
                removed += 1
        return removed
    finally:
        release_output(out)


def release_output(out: str | Path) -> None:
    fd = _OUTPUT_LOCKS.pop(str(Path(out).resolve()), None)
    if fd is not None:
        os.close(fd)


def check_map_against_cohort(plan: RunPlan, records: list[InventoryRecord]) -> None:
    """Refuse a patient map that gives a patient, as new id, the original PatientID of another patient of
    this cohort: that patient's real MRN would be released on someone else's files (an audit). Compared as
    keyed hashes, so no identifier leaves the workers; a patient mapped to its own id is left to
    verification, which quarantines its files (``leak_found``)."""
    if not plan.cfg.patient_map:
        return
    from deid_core.inventory import patient_id_key

    cohort = {r.patient_key for r in records if r.patient_key}
    pmap = PatientMap.load(plan.cfg.patient_map)
    for original in pmap.originals():
        entry = pmap.lookup(original)
        if entry is None:
            continue
        new_key = patient_id_key(plan.cfg.key, entry.new_id)
        if new_key in cohort and new_key != patient_id_key(plan.cfg.key, original):
            raise ConfigError("the patient map gives a patient a new_patient_id that is the original PatientID "
                              "of another patient in this cohort; fix the map (that ID would be released)")


def split_done(plan: RunPlan, records: list[InventoryRecord], skip_done: bool = True
               ) -> tuple[list[InventoryRecord], list[Outcome]]:
    """Incremental runs: inputs already written with this input hash, rule table, key, version and settings
    (``DeidConfig.settings_digest``: pixel policy, UID root, patient map...), whose output still exists with
    its recorded hash, are skipped; the rest is returned to do.
    With ``skip_done`` False — or when the run exports the linkage, which needs every input's pairs —
    nothing is skipped (outputs are rewritten byte-identically).

    The second list also holds inputs refused because an earlier run's output has the same
    SOPInstanceUID from a different input (``quarantined``/``duplicate_sop_instance``): writing them
    would silently replace that output (see ``sop_collisions``)."""
    good = [r for r in records if r.status == "ok"]
    skip_done = skip_done and plan.linkage_dir is None
    done = done_outputs(plan.provenance_dir, [r.sha256 for r in good]) if good and skip_done else {}
    todo: list[InventoryRecord] = []
    skipped: list[Outcome] = []
    settings = plan.cfg.settings_digest()
    from deid_core.inventory import sha256_file

    for r in records:
        hit = done.get((r.sha256, plan.table_sha256, plan.key_fp, __version__, settings)) \
            if r.status == "ok" else None
        if hit is not None:
            out_file = plan.cfg.output_dir / hit[0]
            if out_file.is_file() and sha256_file(out_file) == hit[1]:
                now = datetime.now(UTC)
                skipped.append(Outcome(input_path=r.path, input_sha256=r.sha256, input_size=r.size,
                                       status="skipped", reason="already_done", output_path=hit[0],
                                       output_sha256=hit[1], started_at=now, finished_at=now,
                                       modality=r.modality, sop_class_uid=r.sop_class_uid))
                continue
        todo.append(r)
    clash = sop_collisions(plan, todo)
    if clash:
        now = datetime.now(UTC)
        for r in todo:
            if r.path in clash:
                skipped.append(Outcome(input_path=r.path, input_sha256=r.sha256, input_size=r.size,
                                       status="quarantined", reason="duplicate_sop_instance",
                                       error="an output of an earlier run has the same SOPInstanceUID "
                                             "(written from a different input)", started_at=now,
                                       finished_at=now, modality=r.modality, sop_class_uid=r.sop_class_uid,
                                       transfer_syntax=r.transfer_syntax))
        todo = [r for r in todo if r.path not in clash]
    return todo, skipped


def sop_collisions(plan: RunPlan, records: list[InventoryRecord]) -> set[str]:
    """Paths of ``records`` whose output would replace an existing output of an earlier run written
    from a different input (another path and another content) with the same SOPInstanceUID.

    The output name derives from the new SOP UID only, so file B sharing A's SOPInstanceUID would
    overwrite A's output in a later run (``mark_duplicates`` only sees one run). The same input path
    with new content is an update of that object and may replace its output. Costs nothing on a
    first run; otherwise one header read per input still to do."""
    from deid_core.provenance import connect
    from deid_core.pseudonyms import new_uid
    from deid_core.writer import safe_component

    if not records or not (plan.provenance_dir / "records").is_dir():
        return set()
    with connect(plan.provenance_dir) as con:
        rows = con.execute(
            "SELECT output_path, input_path, input_sha256 FROM records WHERE status = 'written' "
            "AND output_path IS NOT NULL QUALIFY row_number() OVER (PARTITION BY output_path "
            "ORDER BY finished_at DESC NULLS LAST, run_id DESC, input_path) = 1").fetchall()
    earlier: dict[str, list[tuple[str, str, str]]] = {}
    for out_path, in_path, in_sha in rows:
        if (plan.cfg.output_dir / out_path).is_file():
            earlier.setdefault(Path(out_path).name, []).append((str(in_path), str(in_sha or ""), out_path))
    if not earlier:
        return set()
    clash: set[str] = set()
    for r in records:
        try:
            ds = pydicom.dcmread(r.path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"], force=True)
            name = safe_component(new_uid(plan.cfg.key, str(ds.SOPInstanceUID), plan.cfg.uid_root)) + ".dcm"
        except Exception:  # unreadable now: the per-file stage decides and records why
            continue
        if any(p != r.path and sha != r.sha256 for p, sha, _ in earlier.get(name, ())):
            clash.add(r.path)
    return clash


def record_outcomes(plan: RunPlan, outcomes: list[Outcome], batch_id: str) -> BatchSummary:
    """Write provenance for outcomes decided without de-identification (bad inputs, skips)."""
    if outcomes:
        rows = [o.to_record(plan.run_id, plan.run_date, plan.table_sha256, plan.key_fp, plan.attempt,
                            plan.cfg.settings_digest())
                for o in outcomes]
        ProvenanceWriter(plan.provenance_dir, plan.run_id, plan.run_date).write_batch(rows, batch_id)
    return summarise(batch_id, outcomes)


def bad_outcomes(records: list[InventoryRecord]) -> list[Outcome]:
    return [outcome_for_bad_input(r) for r in records if r.status != "ok"]


@dataclass
class RunSummary:
    """The whole run in numbers (no identifiers): what the CLI prints and the artifacts show."""

    run_id: str
    counts: dict[str, int]
    reasons: dict[str, int]
    actions: dict[str, int]
    stage_ms: dict[str, float]
    boxes: int
    unmapped_patients: list[str]
    wall_s: float
    files_per_s: float
    output_dir: str
    provenance_dir: str
    summary_path: str = ""
    patient_map: bool = False  # whether a --patient-map was given (the unmapped patients are then news)
    superseded: int = 0  # earlier outputs of this run's inputs under another name, removed (``remove_superseded``)

    @property
    def files(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"files": self.files}


def finish_run(plan: RunPlan, summaries: list[BatchSummary]) -> RunSummary:
    """Merge batch summaries, write the run record, summary JSON and (if asked) the linkage."""
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    stage: Counter[str] = Counter()
    unmapped: set[str] = set()
    uid_pairs: dict[str, str] = {}
    patient_pairs: dict[str, str] = {}
    boxes = 0
    for s in summaries:
        counts.update(s.counts)
        reasons.update(s.reasons)
        actions.update(s.actions)
        stage.update(s.stage_ms)
        unmapped.update(s.unmapped_patients)
        uid_pairs.update(s.uid_pairs)
        patient_pairs.update(s.patient_pairs)
        boxes += s.boxes
    superseded = remove_superseded(plan)
    finished = datetime.now(UTC)
    wall = max((finished - plan.started_at).total_seconds(), 1e-6)
    files = sum(counts.values())
    summary = RunSummary(run_id=plan.run_id, counts=dict(sorted(counts.items())),
                         reasons=dict(sorted(reasons.items())), actions=dict(sorted(actions.items())),
                         stage_ms={k: round(v, 1) for k, v in sorted(stage.items())}, boxes=boxes,
                         unmapped_patients=sorted(unmapped), wall_s=round(wall, 3),
                         files_per_s=round(files / wall, 3), output_dir=str(plan.cfg.output_dir),
                         provenance_dir=str(plan.provenance_dir), patient_map=bool(plan.cfg.patient_map),
                         superseded=superseded)
    write_run_record(plan.provenance_dir, {
        "run_id": plan.run_id, "run_date": plan.run_date, "started_at": plan.started_at,
        "finished_at": finished,
        "input_dir": str(plan.input_dir), "output_dir": str(plan.cfg.output_dir), "profile": plan.cfg.profile,
        "options": list(plan.cfg.options), "rule_table_sha256": plan.table_sha256,
        "key_fingerprint": plan.key_fp, "deidflow_version": __version__,
        "counts": {k: v for k, v in counts.items() if k in ("written", "quarantined", "skipped", "failed")},
        "wall_s": wall, "parameters": plan.parameters,
    })
    if plan.linkage_dir is not None:
        from deid_core.linkage import write_linkage

        write_linkage(plan.linkage_dir, plan.cfg.output_dir, sorted(uid_pairs.items()),
                      sorted(patient_pairs.items()))
    sdir = plan.provenance_dir / "summaries"
    sdir.mkdir(parents=True, exist_ok=True)
    os.chmod(sdir, 0o700)
    path = sdir / f"{plan.run_id}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True, default=str))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    summary.summary_path = str(path)
    # staged outputs of a batch whose worker died before its commit: complete files, but not released ones
    # (the batch's files were redone or recorded failed); nothing of the run may stay in the output tree
    clean_tmp(plan.cfg.output_dir)
    release_output(plan.cfg.output_dir)
    return summary


def remove_superseded(plan: RunPlan) -> int:
    """Remove the outputs this run's inputs replaced (``provenance.superseded_outputs``); their number.

    An input redone under other settings (a patient added to the map, another UID root) gets an output of
    another name; the earlier one is the same instance under the earlier pseudonyms and goes. Only files
    inside the output folder that an earlier run wrote for one of this run's inputs are touched, and only
    after this run's own outputs are committed: a run killed before this step leaves both, and its rerun
    (which finds the new outputs done) removes the old ones. Emptied folders go too."""
    out = plan.cfg.output_dir.resolve()
    removed = 0
    for rel in superseded_outputs(plan.provenance_dir, plan.run_id):
        path = (out / rel).resolve()
        if not _inside(path, out) or not path.is_file():
            continue
        path.unlink()
        removed += 1
        parent = path.parent
        while parent != out and _inside(parent, out) and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
    return removed


# ----------------------------------------------------------------------------------------------
# Failures of whole batches, and retries

#: Reasons worth retrying unchanged: the cause was outside the file (a full disk, a lost worker, a
#: crashed batch). ``bad_input``, ``pixel_error``, ``rule_error``, ``leak_found`` and
#: ``config_error`` are properties of the file or the configuration: retrying them would fail again.
RETRYABLE_REASONS = frozenset({"write_error", "internal_error", "worker_lost", "batch_failed"})


def record_batch_failure(prov_dir: Path, run_id: str, run_date: str, records: list[InventoryRecord],
                         reason: str, error: str, *, table_sha: str | None = None, key_fp: str | None = None,
                         attempt: int = 1) -> BatchSummary:
    """Record every input of a batch whose task failed for good as ``failed`` (retryable), so a crashed
    batch still leaves one provenance row per input. Uses the batch's own id: a later successful write
    of the same batch replaces it, and a failure written twice (hook and flow) stays one copy."""
    from deid_core.batch import batch_id_for

    now = datetime.now(UTC)
    outcomes = [Outcome(input_path=r.path, input_sha256=r.sha256, input_size=r.size, status="failed",
                        reason=reason, error=error, started_at=now, finished_at=now, modality=r.modality,
                        sop_class_uid=r.sop_class_uid, transfer_syntax=r.transfer_syntax) for r in records]
    bid = batch_id_for(records)
    rows = [o.to_record(run_id, run_date, table_sha or "", key_fp or "", attempt) for o in outcomes]
    ProvenanceWriter(Path(prov_dir), run_id, run_date).write_batch(rows, bid)
    return summarise(bid, outcomes)


@dataclass(frozen=True)
class RetryPlan:
    """What ``deidflow retry RUN`` redoes: input paths (kept out of Prefect), the attempt number,
    and the original run's parameters and configuration fingerprints."""

    run_id: str
    paths: list[str]
    attempt: int
    parameters: dict[str, object]
    key_fingerprint: str
    not_retryable: int


def latest_run_id(prov_dir: Path) -> str | None:
    """The most recently started run recorded in ``prov_dir`` (None for an empty store)."""
    from deid_core.provenance import connect

    with connect(Path(prov_dir)) as con:
        row = con.execute("SELECT run_id FROM runs ORDER BY started_at DESC NULLS LAST, run_id DESC LIMIT 1"
                          ).fetchone()
    return None if row is None else str(row[0])


def plan_retry(prov_dir: Path, run_id: str | None = None) -> RetryPlan:
    """The inputs of ``run_id`` (default: the latest run) whose latest status in that run is
    ``failed`` or ``quarantined`` for a retryable reason; ConfigError if the run is unknown."""
    from deid_core.provenance import connect

    prov_dir = Path(prov_dir)
    if not (prov_dir / "runs").is_dir() and not (prov_dir / "records").is_dir():
        raise ConfigError("the provenance directory holds no runs")
    run_id = run_id or latest_run_id(prov_dir)
    if run_id is None:
        raise ConfigError("the provenance directory holds no finished run")
    with connect(prov_dir) as con:
        run = con.execute("SELECT parameters, key_fingerprint FROM runs WHERE run_id = ?",
                          [run_id]).fetchone()
        if run is None:
            raise ConfigError(f"run {run_id} has no run record (unknown, or it did not finish: rerun the "
                              "same `deidflow run` command to resume it)")
        rows = con.execute(
            "SELECT input_path, status, reason, coalesce(attempt, 1) FROM records WHERE run_id = ? "
            "QUALIFY row_number() OVER (PARTITION BY input_path ORDER BY finished_at DESC NULLS LAST, "
            "written_ns DESC) = 1 ORDER BY input_path", [run_id]).fetchall()
    bad = [r for r in rows if r[1] in ("failed", "quarantined")]
    redo = [r for r in bad if r[2] in RETRYABLE_REASONS]
    attempt = max((int(r[3]) for r in redo), default=1) + 1
    params = json.loads(run[0]) if run[0] else {}
    return RetryPlan(run_id=run_id, paths=[str(r[0]) for r in redo], attempt=attempt, parameters=params,
                     key_fingerprint=str(run[1] or ""), not_retryable=len(bad) - len(redo))
