"""Run-level guards: a SOPInstanceUID reused across incremental runs never replaces the earlier output,
and the output umask is checked (and applied to the output root) before any file is written."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from deid_core.batch import process_batch
from deid_core.errors import ConfigError
from deid_core.inventory import batch_records, find_files, inspect_file, sha256_file
from deid_core.provenance import audit_sql
from deid_core.run import bad_outcomes, finish_run, prepare_run, record_outcomes, split_done
from tests.badinputs import base_dataset, save
from tests.conftest import TEST_KEY


def _incremental_run(inp: Path, out: Path, prov: Path, key: str, **settings: object
                     ) -> dict[str, tuple[str, str]]:
    """The flow's order on the library path: inventory, split_done, batches; returns this run's rows."""
    plan = prepare_run(inp, out, provenance_dir=prov, key_file=key, **settings)  # type: ignore[arg-type]
    records = [inspect_file(p, plan.cfg.key) for p in find_files(inp)]
    summaries = [record_outcomes(plan, bad_outcomes(records), "inventory")]
    todo, decided = split_done(plan, [r for r in records if r.status == "ok"])
    summaries.append(record_outcomes(plan, decided, "skipped"))
    for batch in batch_records(todo, 16):
        summaries.append(process_batch(batch, plan.cfg, plan.provenance_dir, plan.run_id, plan.run_date))
    finish_run(plan, summaries)
    _, rows = audit_sql(prov, f"SELECT input_path, status, reason FROM records WHERE run_id = '{plan.run_id}'")
    return {Path(str(r[0])).name: (str(r[1]), str(r[2] or "")) for r in rows}


def test_same_sop_instance_in_a_later_run_does_not_replace_the_output(tmp_path: Path) -> None:
    (tmp_path / "key.bin").write_bytes(TEST_KEY)
    key = str(tmp_path / "key.bin")
    inp, out, prov = tmp_path / "in", tmp_path / "out", tmp_path / "prov"
    save(base_dataset(1, name="Panza^Sancho", pid="SP112233"), inp / "a.dcm")
    first = _incremental_run(inp, out, prov, key)
    assert first == {"a.dcm": ("written", "")}
    outputs = sorted(out.rglob("*.dcm"))
    assert len(outputs) == 1
    kept = sha256_file(outputs[0])

    # Run 2: a different object (other content) carrying A's SOPInstanceUID arrives.
    b = base_dataset(1, name="Panza^Sancho", pid="SP112233")
    b.SeriesDescription = "a different object with the same SOP instance UID"
    save(b, inp / "b.dcm")
    second = _incremental_run(inp, out, prov, key)
    assert second == {"a.dcm": ("skipped", "already_done"), "b.dcm": ("quarantined", "duplicate_sop_instance")}
    assert sorted(out.rglob("*.dcm")) == outputs and sha256_file(outputs[0]) == kept  # A's output intact

    # The same input path with new content is an update of that object: it may replace its output.
    (inp / "b.dcm").unlink()
    a2 = base_dataset(1, name="Panza^Sancho", pid="SP112233")
    a2.SeriesDescription = "corrected"
    save(a2, inp / "a.dcm")
    third = _incremental_run(inp, out, prov, key)
    assert third == {"a.dcm": ("written", "")}
    assert sorted(out.rglob("*.dcm")) == outputs and sha256_file(outputs[0]) != kept


def test_bad_umask_stops_the_run_before_anything_is_created(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key.bin").write_bytes(TEST_KEY)
    save(base_dataset(2), tmp_path / "in" / "x.dcm")
    monkeypatch.setenv("DEIDFLOW_UMASK", "rw-r-----")
    with pytest.raises(ConfigError, match="DEIDFLOW_UMASK must be an octal umask"):
        prepare_run(tmp_path / "in", tmp_path / "out", provenance_dir=tmp_path / "prov",
                    key_file=str(tmp_path / "key.bin"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "prov").exists()


@pytest.mark.parametrize(("setting", "message"), [
    ({"uid_root": "1.2.3.abc"}, "UID root is malformed"), ({"pixel_policy": "bogus"}, "unknown pixel policy"),
    ({"pixel_policy": "US=maybe"}, "unknown pixel policy")])
def test_bad_uid_root_or_pixel_policy_stops_the_run_before_anything(tmp_path: Path, setting: dict[str, str],
                                                                    message: str) -> None:
    """Checked per file, a bad setting quarantined every input as config_error and the run exited 0."""
    from deid_core.run import precheck

    (tmp_path / "key.bin").write_bytes(TEST_KEY)
    save(base_dataset(2), tmp_path / "in" / "x.dcm")
    with pytest.raises(ConfigError, match=message):
        precheck(tmp_path / "in", tmp_path / "out", key_file=str(tmp_path / "key.bin"), **setting)
    with pytest.raises(ConfigError, match=message):
        prepare_run(tmp_path / "in", tmp_path / "out", provenance_dir=tmp_path / "prov",
                    key_file=str(tmp_path / "key.bin"), **setting)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists() and not (tmp_path / "prov").exists()


def test_output_root_is_created_with_the_restrictive_mode(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key.bin").write_bytes(TEST_KEY)
    save(base_dataset(3), tmp_path / "in" / "x.dcm")
    monkeypatch.setenv("DEIDFLOW_UMASK", "077")
    prepare_run(tmp_path / "in", tmp_path / "deep" / "out", provenance_dir=tmp_path / "prov",
                key_file=str(tmp_path / "key.bin"))
    assert stat.S_IMODE((tmp_path / "deep").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "deep" / "out").stat().st_mode) == 0o700


def test_linkage_given_on_a_rerun_is_complete(tmp_path: Path) -> None:
    """--linkage on an incremental rerun must still map every input (skipping would leave gaps)."""
    import csv

    (tmp_path / "key.bin").write_bytes(TEST_KEY)
    key = str(tmp_path / "key.bin")
    inp, out, prov, link = tmp_path / "in", tmp_path / "out", tmp_path / "prov", tmp_path / "link"
    save(base_dataset(1, name="Panza^Sancho", pid="SP112233"), inp / "a.dcm")
    save(base_dataset(2, name="Quixote^Alonso", pid="AQ445566"), inp / "b.dcm")
    assert set(_incremental_run(inp, out, prov, key).values()) == {("written", "")}

    plan = prepare_run(inp, out, provenance_dir=prov, key_file=key, linkage_dir=str(link))
    records = [inspect_file(p, plan.cfg.key) for p in find_files(inp)]
    todo, decided = split_done(plan, records)
    assert len(todo) == 2 and not decided  # nothing skipped when the linkage is exported
    summaries = [process_batch(todo, plan.cfg, plan.provenance_dir, plan.run_id, plan.run_date)]
    finish_run(plan, summaries)
    with open(link / "patient_map.csv", newline="") as fh:
        pairs = {row["id_old"] for row in csv.DictReader(fh)}
    assert pairs == {"SP112233", "AQ445566"}
    with open(link / "uid_map.csv", newline="") as fh:
        old_uids = {row["id_old"] for row in csv.DictReader(fh)}
    assert {str(base_dataset(i, name="x", pid="y").SOPInstanceUID) for i in (1, 2)} <= old_uids


def test_no_incremental_still_refuses_sop_collisions(tmp_path: Path) -> None:
    (tmp_path / "key.bin").write_bytes(TEST_KEY)
    key = str(tmp_path / "key.bin")
    inp, out, prov = tmp_path / "in", tmp_path / "out", tmp_path / "prov"
    save(base_dataset(1, name="Panza^Sancho", pid="SP112233"), inp / "a.dcm")
    _incremental_run(inp, out, prov, key)
    b = base_dataset(1, name="Panza^Sancho", pid="SP112233")
    b.SeriesDescription = "another object, same SOP instance UID"
    save(b, inp / "b.dcm")
    plan = prepare_run(inp, out, provenance_dir=prov, key_file=key)
    records = [inspect_file(p, plan.cfg.key) for p in find_files(inp)]
    todo, decided = split_done(plan, records, skip_done=False)
    assert [Path(r.path).name for r in todo] == ["a.dcm"]
    assert [(Path(o.input_path).name, o.reason) for o in decided] == [("b.dcm", "duplicate_sop_instance")]


def test_a_second_run_into_the_same_output_is_refused(tmp_path: Path) -> None:
    """Overlapping runs into one output: the second would empty the first's staging folder at its start (an
    audit lost a file). The output folder is locked for the run; another process's run is refused before it
    touches anything, and the lock goes with the run (or with its process)."""
    import subprocess
    import sys

    (tmp_path / "key.bin").write_bytes(TEST_KEY)
    save(base_dataset(2), tmp_path / "in" / "x.dcm")
    out = tmp_path / "out"
    plan = prepare_run(tmp_path / "in", out, provenance_dir=tmp_path / "prov", key_file=str(tmp_path / "key.bin"))
    other = subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path.insert(0, '.')\n"
        "from deid_core.run import prepare_run\n"
        "from deid_core.errors import ConfigError\n"
        f"try:\n    prepare_run({str(tmp_path / 'in')!r}, {str(out)!r}, provenance_dir={str(tmp_path / 'p2')!r},"
        f" key_file={str(tmp_path / 'key.bin')!r})\nexcept ConfigError as e:\n    print('refused:', e)\n")],
        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True)
    said, _ = other.communicate(timeout=60)
    assert said.startswith("refused: another deidflow run is writing into this output directory"), said
    finish_run(plan, [])
    again = subprocess.run(other.args, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                           timeout=60, check=False)
    assert "refused" not in again.stdout and again.returncode == 0, again.stdout + again.stderr


def test_provenance_entries_are_private_and_a_key_change_is_refused_up_front(tmp_path: Path) -> None:
    """docs/provenance.md: provenance folders 0700, files 0600 (rules/, summaries/ and key_fingerprints.json
    were 0755/0644); the CLI's precheck refuses a different key before Prefect starts, writing nothing."""
    import os

    from deid_core.run import precheck

    (tmp_path / "key.bin").write_bytes(TEST_KEY)
    (tmp_path / "other.bin").write_bytes(b"another-key-0123456789")
    save(base_dataset(2), tmp_path / "in" / "x.dcm")
    plan = prepare_run(tmp_path / "in", tmp_path / "out", provenance_dir=tmp_path / "prov",
                       key_file=str(tmp_path / "key.bin"))
    finish_run(plan, [])
    loose = [f"{oct(p.stat().st_mode & 0o777)} {p.relative_to(tmp_path)}" for p in (tmp_path / "prov").rglob("*")
             if p.stat().st_mode & 0o077]
    assert loose == []
    before = sorted(os.listdir(tmp_path / "prov"))
    with pytest.raises(ConfigError, match="different key"):
        precheck(tmp_path / "in", tmp_path / "out", provenance_dir=tmp_path / "prov",
                 key_file=str(tmp_path / "other.bin"))
    precheck(tmp_path / "in", tmp_path / "out", provenance_dir=tmp_path / "prov", key_file=str(tmp_path / "other.bin"),
             new_key=True)
    assert sorted(os.listdir(tmp_path / "prov")) == before


def test_a_map_giving_a_patient_another_patients_mrn_is_refused(tmp_path: Path) -> None:
    """A map row whose new_patient_id is another cohort patient's original PatientID would release that MRN
    on someone else's files (an audit): refused after the inventory, before any file is written. Compared as
    keyed hashes (InventoryRecord.patient_key), so no identifier leaves the workers."""
    from deid_core.run import check_map_against_cohort

    (tmp_path / "key.bin").write_bytes(TEST_KEY)
    save(base_dataset(1, pid="43-051-770", name="BEE^ANN"), tmp_path / "in" / "b.dcm")
    save(base_dataset(2, pid="12-000-001", name="AY^AL"), tmp_path / "in" / "a.dcm")
    records = [inspect_file(p, TEST_KEY) for p in find_files(tmp_path / "in")]
    for new_id, refused in (("43-051-770", True), ("12-000-001", False), ("STUDY-0001", False)):
        pmap = tmp_path / f"map-{new_id}.csv"
        pmap.write_text(f"original_patient_id,new_patient_id\n12-000-001,{new_id}\n")
        plan = prepare_run(tmp_path / "in", tmp_path / "out", provenance_dir=tmp_path / "prov",
                           key_file=str(tmp_path / "key.bin"), patient_map=str(pmap))
        if refused:
            with pytest.raises(ConfigError, match="original PatientID of another patient"):
                check_map_against_cohort(plan, records)
        else:  # its own id is left to verification (leak_found); a fresh id is fine
            check_map_against_cohort(plan, records)
        finish_run(plan, [])


def test_a_rerun_with_other_settings_redoes_the_files(tmp_path: Path) -> None:
    """The skip key held the input, rule table, key and version only: a rerun with a stricter pixel policy,
    another UID root or a patient map skipped every file and kept outputs made under the old settings (an
    audit: 27 text boxes left unmasked). The settings and the map's bytes are now part of it."""
    (tmp_path / "key.bin").write_bytes(TEST_KEY)
    key = str(tmp_path / "key.bin")
    inp, out, prov = tmp_path / "in", tmp_path / "out", tmp_path / "prov"
    save(base_dataset(1, name="Panza^Sancho", pid="SP112233"), inp / "a.dcm")
    written, skipped = {"a.dcm": ("written", "")}, {"a.dcm": ("skipped", "already_done")}
    assert _incremental_run(inp, out, prov, key) == written
    assert _incremental_run(inp, out, prov, key) == skipped
    assert _incremental_run(inp, out, prov, key, pixel_policy="phi") == written
    assert _incremental_run(inp, out, prov, key, pixel_policy="phi") == skipped
    assert _incremental_run(inp, out, prov, key, uid_root="1.2.826.0.1.3680043.8.498.") == written
    pmap = tmp_path / "map.csv"
    pmap.write_text("original_patient_id,new_patient_id,new_patient_name\nSP112233,SUBJ-001,SUBJ-001\n")
    assert _incremental_run(inp, out, prov, key, patient_map=str(pmap)) == written
    assert _incremental_run(inp, out, prov, key, patient_map=str(pmap)) == skipped
    pmap.write_text("original_patient_id,new_patient_id,new_patient_name\nSP112233,SUBJ-002,SUBJ-002\n")
    assert _incremental_run(inp, out, prov, key, patient_map=str(pmap)) == written  # same path, new content
    # ... and written with the new map: a process's cached context (a long-lived worker's) kept the old one;
    # the outputs the earlier settings gave the same input are gone (``remove_superseded``)
    assert [p.parts[len(out.parts)] for p in out.rglob("*.dcm")] == ["SUBJ-002"]


def test_outputs_an_input_had_under_other_names_are_removed(tmp_path: Path) -> None:
    """A patient added to the map, and the rerun wrote the instance again under SUBJ-004 beside its DEID-...
    output: each instance stood twice in the output tree under two patient IDs (an audit). The earlier output
    goes once the new one is committed; a run killed before that leaves it, and the next rerun removes it."""
    (tmp_path / "key.bin").write_bytes(TEST_KEY)
    key = str(tmp_path / "key.bin")
    inp, out, prov = tmp_path / "in", tmp_path / "out", tmp_path / "prov"
    save(base_dataset(1, name="Panza^Sancho", pid="SP112233"), inp / "a.dcm")
    save(base_dataset(2, name="Quixote^Alonso", pid="AQ445566"), inp / "b.dcm")
    _incremental_run(inp, out, prov, key)
    first = sorted(p.relative_to(out) for p in out.rglob("*.dcm"))
    kept = {p: (out / p).read_bytes() for p in first}
    pmap = tmp_path / "map.csv"
    pmap.write_text("original_patient_id,new_patient_id,new_patient_name\nSP112233,SUBJ-004,SUBJ-004\n")
    assert _incremental_run(inp, out, prov, key, patient_map=str(pmap))["a.dcm"] == ("written", "")
    now = sorted(p.relative_to(out) for p in out.rglob("*.dcm"))
    assert len(now) == 2 and [p.parts[0] for p in now].count("SUBJ-004") == 1
    assert [p for p in first if p not in now] and all((out / p).read_bytes() == kept[p] for p in first if p in now)
    gone = next(p for p in first if p not in now)
    assert not (out / gone.parts[0]).exists()  # its emptied patient folder went too
    # a run killed between its commit and the removal: the rerun finds the files done and removes the rest
    (out / gone).parent.mkdir(parents=True)
    (out / gone).write_bytes(kept[gone])
    assert _incremental_run(inp, out, prov, key, patient_map=str(pmap))["a.dcm"] == ("skipped", "already_done")
    assert sorted(p.relative_to(out) for p in out.rglob("*.dcm")) == now


@pytest.mark.parametrize("setting", [{"key_secret": "no-such-block"}, {"profile": "tcia-list"},
                                     {"options": ["noSuchOption"]}])
def test_a_refused_run_leaves_no_folders_behind(tmp_path: Path, setting: dict[str, object]) -> None:
    """A run refused from the UI (a typo in the profile, an unknown secret) left empty output and provenance
    folders, and once a generated key, behind (an audit)."""
    inp = tmp_path / "in"
    save(base_dataset(1, name="Panza^Sancho", pid="SP112233"), inp / "a.dcm")

    def no_secret(name: str) -> bytes:
        raise ValueError(name)

    with pytest.raises(ConfigError):
        prepare_run(inp, tmp_path / "out", secret_loader=no_secret, **setting)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_the_active_flow_run_is_named_per_output_folder(tmp_path: Path) -> None:
    """Two outputs sharing one provenance folder: each run names its flow run in a file of its own output, so a
    run into one output never takes the other's live flow run for a killed one and marks it CRASHED."""
    from flows.deidentify import active_flow_run_path

    prov = tmp_path / "prov"
    a, b = active_flow_run_path(prov, tmp_path / "out-a"), active_flow_run_path(prov, tmp_path / "out-b")
    assert a != b and a.parent == b.parent == prov
    assert active_flow_run_path(prov, tmp_path / "out-a" / ".." / "out-a") == a  # the resolved path decides
