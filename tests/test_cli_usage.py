"""Usage errors and messages of the commands around a run (an audit of the docs against the tool).

In-process calls of ``flows.cli.main``: no Prefect flow runs here, so each test takes milliseconds.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from deid_core.errors import ConfigError
from deid_core.provenance import ProvenanceRecord, ProvenanceWriter
from flows.cli import main
from flows.logfilters import NoConfigTraceback


def _prov(tmp_path: Path) -> Path:
    prov = tmp_path / "prov"
    ProvenanceWriter(prov, "run-a", "2026-01-01").write_batch(
        [ProvenanceRecord(input_path="/in/a.dcm", status="quarantined", reason="bad_input", run_id="run-a",
                          run_date="2026-01-01")], batch_id="b0")
    return prov


@pytest.mark.parametrize("argv", [
    ["audit", "failures", "run-b"], ["audit", "actions", "run-b"], ["compact", "--run", "run-b"],
    ["report", "run-b"],
])
def test_an_unknown_run_id_is_a_usage_error(tmp_path: Path, argv: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in a run id printed "(no rows)" and exited 0: it read as "no failures"."""
    prov = _prov(tmp_path)
    assert main([*argv, "--provenance", str(prov)]) == 2
    assert "unknown run 'run-b'" in capsys.readouterr().err
    assert main(["audit", "failures", "run-a", "--provenance", str(prov)]) == 0


def test_explain_without_a_query_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain"]) == 2
    assert "explain needs a tag" in capsys.readouterr().err


def test_explain_says_the_pseudonym_replaces_patient_name(capsys: pytest.CaptureFixture[str]) -> None:
    """The table says Z for PatientName; the output holds the pseudonym: explain now says both."""
    assert main(["explain", "PatientName"]) == 0
    out = capsys.readouterr().out
    assert "action: Z" in out and "pseudonymize stage writes the patient's new name" in out


@pytest.mark.parametrize(("query", "where"), [("ReferencedStudySequence", "removed (X) instead at the top level"),
                                              ("OperatorsName", "emptied (Z) instead in RT objects")])
def test_explain_says_where_x_or_z_depends_on_the_place(capsys: pytest.CaptureFixture[str], query: str,
                                                         where: str) -> None:
    """X/Z is decided per IOD and place: explain names the exception the table alone does not show."""
    assert main(["explain", query]) == 0
    assert where in capsys.readouterr().out


def test_synth_refuses_a_folder_that_holds_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second synth into a cohort merged a second cohort into it and replaced its answer.json."""
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x.dcm").write_bytes(b"x")
    assert main(["synth", str(tmp_path / "c"), "--patients", "1"]) == 2
    assert "new or empty folder" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["x.dcm"]


def test_report_output_must_be_the_runs_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`report --output nowhere` replaced a good report with one of missing thumbnails, exit 0."""
    prov = _prov(tmp_path)
    assert main(["report", "run-a", "--provenance", str(prov), "--output", str(tmp_path / "nowhere")]) == 2
    assert "OUTPUT folder" in capsys.readouterr().err


def test_a_config_error_inside_the_flow_is_logged_without_its_traceback() -> None:
    """Prefect logs the flow's exception with a 65-line traceback; for a ConfigError (the user's input) the
    CLI prints the error itself, so the record keeps its one line and loses the traceback."""
    try:
        raise ConfigError("cannot load key secret 'x' (ValueError)")
    except ConfigError:
        import sys

        record = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "Encountered exception",
                                   None, sys.exc_info())
    assert NoConfigTraceback().filter(record) and record.exc_info is None
    try:
        raise ValueError("a bug")
    except ValueError:
        import sys

        other = logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1, "x", None, sys.exc_info())
    assert NoConfigTraceback().filter(other) and other.exc_info is not None  # a bug keeps its traceback
