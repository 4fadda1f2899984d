"""Provenance store: Parquet batches, DuckDB views, audit queries, compaction, concurrency, permissions."""

from __future__ import annotations

import datetime as dt
import hashlib
import multiprocessing as mp
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.data import get_testdata_file

from deid_core import provenance as P
from deid_core.errors import ConfigError

T0 = dt.datetime(2024, 5, 1, 10, 0, 0, tzinfo=dt.UTC)
SETTINGS = "e" * 64
RULES = "a" * 64
KEYFP = "kf-0123"
VER = "0.1.0"


def sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def rec(
    i: int, status: str = "written", run_id: str = "", start: dt.datetime = T0, **kw: object
) -> P.ProvenanceRecord:
    base: dict[str, object] = dict(
        input_path=f"/in/p{i % 3}/f{i}.dcm",
        input_sha256=sha(i),
        input_size=1000 + i,
        output_path=f"out/{i}.dcm" if status == "written" else None,
        output_sha256=sha(10_000 + i) if status == "written" else None,
        status=status,
        reason=None if status == "written" else {"quarantined": "leak_found", "skipped": "already_done",
                                                 "failed": "bad_input"}.get(status),
        started_at=start + dt.timedelta(seconds=i),
        finished_at=start + dt.timedelta(seconds=i, milliseconds=500),
        actions={"X": 3, "D": 1, "U": i % 2},
        rule_table_sha256=RULES,
        key_fingerprint=KEYFP,
        deidflow_version=VER,
        settings_sha256=SETTINGS,
        run_id=run_id,
    )
    base.update(kw)
    return P.ProvenanceRecord(**base)  # type: ignore[arg-type]


def files_of(prov: Path) -> list[Path]:
    return sorted((prov / "records").rglob("*.parquet"))


# ---------------------------------------------------------------------------------------------- writing


def test_round_trip_every_column_type(tmp_path: Path) -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    raw = Path(path).read_bytes()
    ds = pydicom.dcmread(path)
    full = P.ProvenanceRecord(
        input_path=str(path), input_sha256=hashlib.sha256(raw).hexdigest(), input_size=len(raw),
        output_path="a/b.dcm", output_sha256=sha(1), status="quarantined", reason="pixel_error",
        error="PixelError: frame 0 could not be decoded\nsecond line",
        started_at=T0, finished_at="2024-05-01T12:00:01.250000+02:00",
        inventory_ms=1.5, pixel_ms=2.25, scrub_ms=3.0, pseudonymize_ms=4, write_ms=5.5, verify_ms=6.75,
        modality=ds.Modality, sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax=str(ds.file_meta.TransferSyntaxUID), frames=int(getattr(ds, "NumberOfFrames", 1)),
        pixel_policy="ocr", frames_ocr=1, prescreen_skipped=False,
        boxes=[{"frame": 0, "x": 1, "y": 2, "w": 30, "h": 8, "kind": "name", "confidence": 0.91}],
        actions={"X": 5, "Z": 2}, rule_table_sha256=RULES, key_fingerprint=KEYFP, deidflow_version=VER,
        patient_mapped=True, attempt=2,
    )
    minimal = P.ProvenanceRecord(input_path="/in/x.dcm", status="failed", reason="bad_input")
    out = P.ProvenanceWriter(tmp_path, "run-1", "2024-05-01").write_batch([full, minimal], "b0")

    table = pq.ParquetFile(out).read()
    assert table.schema.remove_metadata() == P.STORE_SCHEMA
    assert table.schema.metadata[b"deidflow.provenance.schema_version"] == b"1"
    a, b = table.to_pylist()
    assert a["schema_version"] == 1 and a["run_id"] == "run-1" and a["run_date"] == "2024-05-01"
    assert a["modality"] == "CT" and a["input_size"] == len(raw) and a["frames"] == 1
    assert a["finished_at"] == dt.datetime(2024, 5, 1, 10, 0, 1, 250000, tzinfo=dt.UTC)  # normalised to UTC
    assert a["n_boxes"] == 1 and a["boxes"].startswith('[{"confidence":0.91')
    assert a["actions"] == '{"X":5,"Z":2}' and a["attempt"] == 2 and a["patient_mapped"] is True
    assert a["prescreen_skipped"] is False and a["pseudonymize_ms"] == 4.0 and a["batch_id"] == "b0"
    assert b["output_path"] is None and b["started_at"] is None
    assert b["boxes"] is None and b["n_boxes"] is None

    con = P.connect(tmp_path)
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE records)").fetchall())
    assert types["schema_version"] == "SMALLINT" and types["frames"] == "INTEGER"
    assert types["started_at"] == "TIMESTAMP WITH TIME ZONE" and types["prescreen_skipped"] == "BOOLEAN"
    assert types["run_date"] == "VARCHAR" and types["input_size"] == "BIGINT"
    got = con.execute(
        "SELECT finished_at, error, verify_ms FROM records WHERE status = 'quarantined'"
    ).fetchone()
    assert got == (a["finished_at"], "PixelError: frame 0 could not be decoded\nsecond line", 6.75)
    con.close()


def test_dict_records_and_hive_partition_columns(tmp_path: Path) -> None:
    w1 = P.ProvenanceWriter(tmp_path, "r1", "2024-05-01")
    w2 = P.ProvenanceWriter(tmp_path, "r2", "2024-05-02")
    w1.write_batch([rec(i).to_row() | {"run_id": "", "run_date": ""} for i in range(3)], "b0")
    w2.write_batch([{"input_path": "/x.dcm", "status": "skipped", "reason": "already_done"}], "b0")
    assert [p.relative_to(tmp_path).as_posix() for p in files_of(tmp_path)] == [
        "records/run_date=2024-05-01/run_id=r1/part-b0.parquet",
        "records/run_date=2024-05-02/run_id=r2/part-b0.parquet",
    ]
    _, rows = P.audit_sql(
        tmp_path, "SELECT run_date, run_id, count(*) FROM records GROUP BY ALL ORDER BY run_date"
    )
    assert rows == [("2024-05-01", "r1", 3), ("2024-05-02", "r2", 1)]
    _, rows = P.audit_sql(tmp_path, "SELECT count(*) FROM records WHERE run_date = '2024-05-02'")
    assert rows == [(1,)]


def test_one_file_per_batch_and_rerun_replaces(tmp_path: Path) -> None:
    w = P.ProvenanceWriter(tmp_path, "r1", "2024-05-01")
    for b in range(4):
        w.write_batch([rec(b * 10 + i) for i in range(10)], f"b{b:03d}")
    assert len(files_of(tmp_path)) == 4
    # The retry of batch 2 has fewer rows and a different status: it must replace, not add.
    w.write_batch([rec(20 + i, status="failed", attempt=2) for i in range(3)], "b002")
    assert len(files_of(tmp_path)) == 4
    _, rows = P.audit_sql(tmp_path, "SELECT status, count(*) FROM records GROUP BY status ORDER BY status")
    assert rows == [("failed", 3), ("written", 30)]
    assert not list(tmp_path.rglob("*.tmp"))


def test_records_of_another_run_are_refused(tmp_path: Path) -> None:
    w = P.ProvenanceWriter(tmp_path, "r1", "2024-05-01")
    with pytest.raises(ConfigError, match="'run_id' differs"):
        w.write_batch([rec(1, run_id="r2")], "b0")
    with pytest.raises(ConfigError, match="batch_id must match"):
        w.write_batch([rec(1)], "../evil")
    with pytest.raises(ConfigError, match="run_date must be YYYY-MM-DD"):
        P.ProvenanceWriter(tmp_path, "r1", "01/05/2024")
    assert files_of(tmp_path) == []


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"boxes": [{"frame": 0, "x": 1, "y": 1, "w": 1, "h": 1, "text": "DOE^JOHN"}]},
            "'boxes' entries may only",
        ),
        ({"started_at": dt.datetime(2024, 5, 1, 10)}, "'started_at' must be timezone-aware"),
        ({"status": "done", "reason": None}, "'status' must be one of"),
        ({"reason": "Patient DOE^JOHN not found"}, "'reason' must be a short stable class"),
        ({"input_sha256": "not-a-hash"}, "'input_sha256' must be 64 lowercase hex"),
        ({"output_path": "/abs/out.dcm"}, "'output_path' must be relative"),
        ({"actions": {"X": -1}}, "'actions' counts must be non-negative"),
        ({"n_boxes": 3, "boxes": []}, "'n_boxes' does not match"),
    ],
)
def test_invalid_records_fail_without_echoing_values(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        rec(1, **kw).to_row()
    assert "DOE" not in str(info.value) and "not-a-hash" not in str(info.value)


def test_unknown_field_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown record field\(s\) \['PatientName'\]"):
        P.ProvenanceWriter(Path("/nonexistent"), "r", "2024-01-01").rows(
            [{"input_path": "/x", "status": "failed", "PatientName": "DOE^JOHN"}]
        )


def test_permissions_files_0600_dirs_0700(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        prov = tmp_path / "prov"
        P.ProvenanceWriter(prov, "r1", "2024-05-01").write_batch([rec(1)], "b0")
        P.write_run_record(prov, {"run_id": "r1", "started_at": T0, "counts": {"written": 1}})
    finally:
        os.umask(old)
    for p in [prov, *prov.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), (p.name, oct(mode))


# ---------------------------------------------------------------------------------------------- queries


def test_empty_store_queries(tmp_path: Path) -> None:
    prov = tmp_path / "never-written"
    assert P.audit_runs(prov) == []
    assert P.audit_failures(prov) == []
    assert P.audit_file(prov, "/in/x.dcm") == []
    assert P.audit_actions(prov, "r1") == []
    assert P.done_outputs(prov) == {}
    assert P.compact(prov) == 0
    cols, rows = P.audit_sql(prov, "SELECT * FROM records")
    assert cols == P.STORE_SCHEMA.names and rows == []
    cols, rows = P.audit_sql(prov, "SELECT * FROM runs")
    assert cols == P.RUN_SCHEMA.names and rows == []
    assert not prov.exists()  # reading never creates the store


def _two_runs(prov: Path) -> None:
    w1 = P.ProvenanceWriter(prov, "r1", "2024-05-01")
    w1.write_batch([rec(i, "written" if i < 6 else "failed") for i in range(8)], "b0")
    w1.write_batch([rec(8, "quarantined"), rec(9, "skipped")], "b1")
    P.write_run_record(prov, {
        "run_id": "r1", "started_at": T0, "finished_at": T0 + dt.timedelta(seconds=20),
        "input_dir": "/in", "output_dir": Path("/out"), "profile": "basic+retain_dates",
        "options": {"ocr": True, "key_fingerprint": KEYFP}, "rule_table_sha256": RULES,
        "key_fingerprint": KEYFP, "version": VER, "counts": {"written": 6, "failed": 2, "quarantined": 1,
                                                             "skipped": 1},
        "parameters": {"workers": 2, "batch_size": 8},
    })
    # Second run: no run record (it "crashed"); f1 now fails, f8 now written.
    t1 = T0 + dt.timedelta(days=1)
    w2 = P.ProvenanceWriter(prov, "r2", "2024-05-02")
    w2.write_batch([rec(1, "failed", start=t1, error="BadInputError: truncated file"),
                    rec(8, "written", start=t1, actions={"X": 7})], "b0")


def test_audit_runs_counts_and_rate(tmp_path: Path) -> None:
    _two_runs(tmp_path)
    runs = P.audit_runs(tmp_path)
    assert [r["run_id"] for r in runs] == ["r1", "r2"]
    r1, r2 = runs
    assert (r1["files"], r1["written"], r1["quarantined"], r1["skipped"], r1["failed"]) == (10, 6, 1, 1, 2)
    assert r1["wall_s"] == 20.0 and r1["files_per_s"] == pytest.approx(0.5)
    assert r1["started_at"] == T0
    # r2 has no run record: wall time from its records (start of f1 .. end of f8).
    assert (r2["files"], r2["written"], r2["failed"]) == (2, 1, 1)
    assert r2["wall_s"] == pytest.approx(7.5) and r2["files_per_s"] == pytest.approx(2 / 7.5)
    assert (r1["finished"], r2["finished"]) == (True, False)  # r2 was killed before its run record
    text = P.format_table(runs)
    header, rule, line1, _ = text.splitlines()
    assert header.split() == ["run_id", "started_at", "wall_s", "files", "written", "quarantined", "skipped",
                              "failed", "files_per_s", "finished"]
    assert line1.split()[2:] == ["20.000", "10", "6", "1", "1", "2", "0.500", "true"]
    assert len(header) == len(rule.rstrip())


def test_audit_failures_latest_and_named_run(tmp_path: Path) -> None:
    _two_runs(tmp_path)
    latest = P.audit_failures(tmp_path)
    assert latest == [{"input_path": "/in/p1/f1.dcm", "status": "failed", "reason": "bad_input",
                       "error": "BadInputError: truncated file", "run_id": "r2"}]
    r1 = P.audit_failures(tmp_path, "r1")
    assert [(r["input_path"], r["status"]) for r in r1] == [
        ("/in/p0/f6.dcm", "failed"), ("/in/p1/f7.dcm", "failed"), ("/in/p2/f8.dcm", "quarantined")]


def test_audit_file_history_across_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _two_runs(tmp_path)
    hist = P.audit_file(tmp_path, "/in/p2/f8.dcm")
    assert [(h["run_id"], h["status"], h["reason"]) for h in hist] == [
        ("r1", "quarantined", "leak_found"), ("r2", "written", None)]
    assert hist[1]["output_path"] == "out/8.dcm"
    # A relative path given on the command line matches the stored absolute path.
    monkeypatch.chdir("/in" if os.path.isdir("/in") else "/")
    rel = os.path.relpath("/in/p2/f8.dcm")
    assert [h["run_id"] for h in P.audit_file(tmp_path, rel)] == ["r1", "r2"]
    assert P.audit_file(tmp_path, "/in/p2/nope.dcm") == []


def test_audit_actions_unnests_json(tmp_path: Path) -> None:
    _two_runs(tmp_path)
    acts = P.audit_actions(tmp_path, "r1")
    # X: 3 per record, D: 1 per record, U: i % 2 over i = 0..9.
    assert acts == [{"action": "X", "count": 30, "files": 10}, {"action": "D", "count": 10, "files": 10},
                    {"action": "U", "count": 5, "files": 10}]
    assert P.audit_actions(tmp_path, "r2") == [{"action": "X", "count": 10, "files": 2},
                                               {"action": "D", "count": 1, "files": 1},
                                               {"action": "U", "count": 1, "files": 1}]


def test_audit_sql_read_only(tmp_path: Path) -> None:
    _two_runs(tmp_path)
    cols, rows = P.audit_sql(tmp_path, "SELECT run_id, profile, files FROM runs")
    assert cols == ["run_id", "profile", "files"] and rows == [("r1", "basic+retain_dates", 10)]
    cols, rows = P.audit_sql(
        tmp_path, "WITH f AS (SELECT * FROM records WHERE status <> 'written') SELECT count(*) AS n FROM f")
    assert cols == ["n"] and rows == [(5,)]  # r1: 2 failed + quarantined + skipped; r2: 1 failed
    with pytest.raises(ConfigError, match="not COPY"):
        P.audit_sql(tmp_path, f"COPY (SELECT * FROM records) TO '{tmp_path}/leak.csv'")
    with pytest.raises(ConfigError, match="exactly one statement"):
        P.audit_sql(tmp_path, "SELECT 1; SELECT 2")
    with pytest.raises(ConfigError, match="does not parse"):
        P.audit_sql(tmp_path, "SELEKT everything")
    with pytest.raises(Exception, match="Permission"):
        P.audit_sql(tmp_path, "SELECT * FROM read_csv('/etc/passwd')")
    assert not (tmp_path / "leak.csv").exists()


def test_run_record_refuses_key_material(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'hmac_key' looks like a secret"):
        P.write_run_record(tmp_path, {"run_id": "r1", "options": {"hmac_key": "s3cret"}})
    with pytest.raises(ConfigError, match="raw bytes"):
        P.write_run_record(tmp_path, {"run_id": "r1", "parameters": {"material": b"\x00\x01"}})
    with pytest.raises(ConfigError, match=r"unknown run field\(s\) \['key'\]"):
        P.write_run_record(tmp_path, {"run_id": "r1", "key": "s3cret"})
    assert not (tmp_path / "runs").exists()
    P.write_run_record(tmp_path, {"run_id": "r1", "options": {"key_fingerprint": KEYFP, "key_file": "/k"}})
    _, rows = P.audit_sql(tmp_path, "SELECT options, files, run_date FROM runs")
    assert rows == [('{"key_file": "/k", "key_fingerprint": "kf-0123"}', 0, None)]


def test_done_outputs_latest_written_per_config(tmp_path: Path) -> None:
    _two_runs(tmp_path)
    # Third run with a different rule table rewrites f2 to another output.
    w3 = P.ProvenanceWriter(tmp_path, "r3", "2024-05-03")
    newer = rec(2, start=T0 + dt.timedelta(days=2), rule_table_sha256="c" * 64, output_path="new/2.dcm")
    w3.write_batch([newer], "b0")
    done = P.done_outputs(tmp_path)
    # f8: quarantined in r1, written in r2.
    assert done[(sha(8), RULES, KEYFP, VER, SETTINGS)] == ("out/8.dcm", sha(10_008))
    assert done[(sha(2), RULES, KEYFP, VER, SETTINGS)] == ("out/2.dcm", sha(10_002))
    assert done[(sha(2), "c" * 64, KEYFP, VER, SETTINGS)] == ("new/2.dcm", sha(10_002))
    assert (sha(6), RULES, KEYFP, VER, SETTINGS) not in done  # failed, never written
    assert len(done) == 8  # f0..f5 and f8 with RULES, f2 with the new rules
    only = P.done_outputs(tmp_path, [sha(8), sha(99)])
    assert list(only) == [(sha(8), RULES, KEYFP, VER, SETTINGS)]
    assert P.latest_status(tmp_path, []) == {}
    # other settings (a pixel policy, a UID root, a patient map): another key, so no skip (an audit)
    w4 = P.ProvenanceWriter(tmp_path, "r4", "2024-05-04")
    w4.write_batch([rec(3, start=T0 + dt.timedelta(days=3), settings_sha256="d" * 64, output_path="p/3.dcm")], "b0")
    done = P.done_outputs(tmp_path)
    assert done[(sha(3), RULES, KEYFP, VER, "d" * 64)] == ("p/3.dcm", sha(10_003))
    assert done[(sha(3), RULES, KEYFP, VER, SETTINGS)] == ("out/3.dcm", sha(10_003))


def test_done_outputs_of_records_without_settings_prove_nothing(tmp_path: Path) -> None:
    """Records of a version before settings_sha256 (the column absent from every part file): all redone."""
    w = P.ProvenanceWriter(tmp_path, "old", "2024-05-01")
    w.write_batch([rec(1, settings_sha256=None)], "b0")
    assert P.done_outputs(tmp_path) == {}


# ---------------------------------------------------------------------------------------------- compaction


def test_compaction_preserves_rows_and_reduces_files(tmp_path: Path) -> None:
    _two_runs(tmp_path)
    w = P.ProvenanceWriter(tmp_path, "r1", "2024-05-01")
    for b in range(2, 6):
        w.write_batch([rec(100 + b * 10 + i) for i in range(5)], f"b{b}")
    query = "SELECT run_id, input_path, status, started_at, actions FROM records ORDER BY ALL"
    before = P.audit_sql(tmp_path, query)
    assert len(files_of(tmp_path)) == 7
    assert P.compact(tmp_path, "r1") == 6
    assert len(files_of(tmp_path)) == 2  # r1 compacted, r2 untouched
    assert P.audit_sql(tmp_path, query) == before
    assert P.compact(tmp_path, "r1") == 0  # nothing left to merge
    # New batches after compaction are merged into the same compacted file.
    w.write_batch([rec(500)], "b9")
    assert P.compact(tmp_path) == 1
    _, rows = P.audit_sql(tmp_path, "SELECT count(*) FROM records")
    assert rows == [(len(before[1]) + 1,)]
    assert stat.S_IMODE(files_of(tmp_path)[0].stat().st_mode) == 0o600


def test_interrupted_compaction_shows_no_duplicates_and_heals(tmp_path: Path) -> None:
    w = P.ProvenanceWriter(tmp_path, "r1", "2024-05-01")
    for b in range(3):
        w.write_batch([rec(b * 10 + i) for i in range(4)], f"b{b}")
    part_dir = files_of(tmp_path)[0].parent
    saved = {p.name: p.read_bytes() for p in part_dir.glob("*.parquet")}
    P.compact(tmp_path)
    # Simulate a crash between writing compacted.parquet and deleting the parts: put them back.
    for name, data in saved.items():
        (part_dir / name).write_bytes(data)
    _, raw = P.audit_sql(tmp_path, "SELECT count(*) FROM records_raw")
    _, rows = P.audit_sql(tmp_path, "SELECT count(*), count(DISTINCT input_path) FROM records")
    assert raw == [(24,)] and rows == [(12, 12)]
    assert P.audit_runs(tmp_path)[0]["files"] == 12
    assert P.compact(tmp_path) == 3 and len(files_of(tmp_path)) == 1
    _, rows = P.audit_sql(tmp_path, "SELECT count(*) FROM records")
    assert rows == [(12,)]


def test_batch_retried_after_compaction_wins(tmp_path: Path) -> None:
    w = P.ProvenanceWriter(tmp_path, "r1", "2024-05-01")
    w.write_batch([rec(1, "failed"), rec(2, "failed")], "b0")
    w.write_batch([rec(3)], "b1")
    P.compact(tmp_path)
    w.write_batch([rec(1, attempt=2), rec(2, attempt=2)], "b0")  # the retry lands next to compacted.parquet
    _, rows = P.audit_sql(tmp_path, "SELECT input_path, status, attempt FROM records ORDER BY input_path")
    assert rows == [("/in/p0/f3.dcm", "written", None), ("/in/p1/f1.dcm", "written", 2),
                    ("/in/p2/f2.dcm", "written", 2)]
    assert P.compact(tmp_path) == 1
    after = P.audit_sql(tmp_path, "SELECT input_path, status, attempt FROM records ORDER BY input_path")
    assert after[1] == rows


# ---------------------------------------------------------------------------------------------- concurrency


def _worker(prov: str, worker: int, n_batches: int) -> None:
    w = P.ProvenanceWriter(Path(prov), "shared", "2024-05-01")
    for b in range(n_batches):
        base = worker * 1000 + b * 10
        w.write_batch([rec(base + i) for i in range(10)], f"w{worker}-b{b:02d}")


def test_two_processes_write_batches_of_the_same_run(tmp_path: Path) -> None:
    prov = tmp_path / "prov"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(prov), k, 15)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(files_of(prov)) == 30
    _, rows = P.audit_sql(prov, "SELECT count(*), count(DISTINCT input_sha256), count(DISTINCT batch_id) "
                                "FROM records")
    assert rows == [(300, 300, 30)]
    assert P.audit_runs(prov)[0]["files"] == 300
    assert not list(prov.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------- display


def test_format_table_alignment() -> None:
    rows = [{"name": "a", "n": 5, "rate": 1.23456, "ok": True, "note": None},
            {"name": "bbbb", "n": 12345, "rate": None, "ok": False, "note": "two\nlines"}]
    assert P.format_table(rows).splitlines() == [
        "name      n   rate  ok     note",
        "----  -----  -----  -----  ---------",
        "a         5  1.235  true",
        "bbbb  12345         false  two lines",
    ]
    lines = P.format_table(rows, ["name", "n"]).splitlines()
    assert lines == ["name      n", "----  -----", "a         5", "bbbb  12345"]
    assert P.format_table([], ["a", "bb"]).splitlines() == ["a  bb", "-  --"]
    assert P.format_table([]) == "(no rows)"
    full = P.format_table(rows).splitlines()
    assert full[3].endswith("false  two lines") and all(line == line.rstrip() for line in full)


def test_newer_schema_columns_read_and_compact(tmp_path: Path) -> None:
    """A store written by a newer version with an extra column still reads and compacts."""
    w = P.ProvenanceWriter(tmp_path, "r1", "2024-05-01")
    w.write_batch([rec(1)], "b0")
    part_dir = files_of(tmp_path)[0].parent
    newer = pq.ParquetFile(files_of(tmp_path)[0]).read().append_column("gpu_ms", pa.array([1.5]))
    newer = newer.set_column(newer.schema.get_field_index("batch_id"), "batch_id", pa.array(["b1"]))
    pq.write_table(newer, part_dir / "part-b1.parquet")
    _, rows = P.audit_sql(tmp_path, "SELECT batch_id, gpu_ms FROM records ORDER BY batch_id")
    assert rows == [("b0", None), ("b1", 1.5)]
    assert P.compact(tmp_path) == 2
    _, rows2 = P.audit_sql(tmp_path, "SELECT batch_id, gpu_ms FROM records ORDER BY batch_id")
    assert rows2 == rows
    shutil.rmtree(tmp_path / "records")
    assert P.audit_runs(tmp_path) == []


# ---------------------------------------------------------------------------------------------- measurement


@pytest.mark.slow
def test_measure_audit_runs_100k_rows_20_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Measurement asked for in the brief; prints the timing (run with -s to see it)."""
    import time

    w = P.ProvenanceWriter(tmp_path, "bench", "2024-05-01")
    box = [{"frame": 0, "x": 10, "y": 10, "w": 100, "h": 12, "kind": "name", "confidence": 0.9}]
    for b in range(20):
        w.write_batch([
            rec(k, "written" if k % 50 else "quarantined", start=T0 - dt.timedelta(seconds=k),
                input_path=f"/data/in/study{k // 200}/series{k // 50}/img{k}.dcm", modality="CT",
                pixel_ms=5.0, scrub_ms=2.0, verify_ms=2.0, frames=1, boxes=box if k % 7 == 0 else [],
                actions={"X": 20, "D": 5, "U": 6, "Z": 3, "K": 40}, attempt=1)
            for k in range(b * 5000, (b + 1) * 5000)
        ], f"b{b:03d}")
    assert len(files_of(tmp_path)) == 20
    times = []
    for _ in range(5):
        t = time.perf_counter()
        runs = P.audit_runs(tmp_path)
        times.append(time.perf_counter() - t)
    assert runs[0]["files"] == 100_000 and runs[0]["quarantined"] == 2000
    times.sort()
    with capsys.disabled():
        print(f"\naudit_runs over 100k rows / 20 files: median {times[2] * 1000:.0f} ms, "
              f"min {times[0] * 1000:.0f} ms (5 runs)")
    assert times[2] < 5.0


def test_stale_provenance_tmp_files_of_gone_writers_are_removed(tmp_path: Path) -> None:
    """A run killed between a batch's Parquet write and its rename leaves ``.part-….parquet.<pid>.<uuid>.tmp``:
    the next run removes it, but never the file of a writer that is still running."""
    import uuid

    from deid_core.provenance import clean_stale_tmp

    part = tmp_path / "records" / "run_date=2026-11-27" / "run_id=r1"
    part.mkdir(parents=True)
    dead_pid = 2 ** 22 + 12345  # above the default pid_max: never alive
    stale = part / f".part-0f6d.parquet.{dead_pid}.{uuid.uuid4().hex}.tmp"
    live = part / f".part-0f6d.parquet.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    other = part / "notes.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"x")
    assert clean_stale_tmp(tmp_path) == 1
    assert not stale.exists() and live.exists() and other.exists()


def test_audit_runs_gives_no_rate_for_an_unfinished_run_of_under_a_second(tmp_path: Path) -> None:
    """A killed run's wall time comes from its records: two records of one instant made 64516 files/s."""
    w = P.ProvenanceWriter(tmp_path, "k1", "2026-01-01")
    w.write_batch([P.ProvenanceRecord(input_path=f"/in/{i}.dcm", status="written", run_id="k1",
                                      run_date="2026-01-01", started_at=T0, finished_at=T0)
                   for i in range(2)], batch_id="b0")
    (run,) = P.audit_runs(tmp_path)
    assert run["finished"] is False and run["files"] == 2 and run["files_per_s"] is None
