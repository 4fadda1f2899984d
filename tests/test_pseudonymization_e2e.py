"""Issue 4 end to end: pseudonyms are consistent across files, runs and cohorts, references stay
resolvable, the patient map and linkage export behave, and the key is managed safely.

Dataset-level properties (Hypothesis) go through ``deidentify_file`` (real read, walk, verify,
atomic write); cohort-level checks reuse the session ``cohort``; CLI checks call ``flows.cli.main``
in this process under ONE ephemeral Prefect API (the real flow, real Dask LocalCluster, real exit
codes) to keep the whole module well under two minutes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from deid_core.config import DeidConfig
from deid_core.keys import AUTO_KEY_NAME, HISTORY_NAME, key_fingerprint
from deid_core.pipeline import deidentify_file
from deid_core.pseudonyms import (
    date_offset_days,
    is_well_known_uid,
    new_uid,
    pseudonym_patient_id,
    pseudonym_patient_name,
)
from tests.conftest import TEST_KEY, CohortRun, run_library

# Partial dates (YYYY, YYYYMM) are planted on purpose: pydicom warns about them, that is expected.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR DA")

UID_RE = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))+$")
WELL_KNOWN = sorted(UID_dictionary)
# TCIA KB: (0009,xx13) UI "FOR Identifier" = h, (0009,xx0d) DT "Scan Date Time" = o
PET_CREATOR = "GEMS_PETD_01"
SIEMENS_CREATOR = "SIEMENS CM VA0  CMS"  # TCIA KB: (0013,xx10) DA "Modification Date" = o


# --------------------------------------------------------------------------- helpers


def _ymd(s: str) -> date:
    return date(int(s[:4]), int(s[4:6]), int(s[6:8]))


def _back(s: str, days: int) -> str:
    """A YYYYMMDD date ``days`` earlier, computed independently of deid_core."""
    return (_ymd(s) - timedelta(days=days)).strftime("%Y%m%d")


def _uid_pairs(src: Dataset, out: Dataset, acc: list[tuple[str, str, str]], where: str = "") -> None:
    """(path, old, new) for every UID element present in both, walking sequences item by item."""
    for elem in src:
        if elem.tag not in out:
            continue
        o = out[elem.tag]
        name = f"{where}/{elem.keyword or elem.tag}"
        if elem.VR == "SQ":
            for i, (a, b) in enumerate(zip(elem.value, o.value, strict=False)):
                _uid_pairs(a, b, acc, f"{name}[{i}]")
        elif elem.VR == "UI":
            olds = elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]
            news = o.value if isinstance(o.value, list | pydicom.multival.MultiValue) else [o.value]
            acc += [(name, str(a), str(b)) for a, b in zip(olds, news, strict=True)]


def _private_value(ds: Dataset, creator: str, group: int, offset: int) -> object:
    block = ds.private_block(group, creator)
    return ds[block.get_tag(offset)].value


def _text(value: object) -> str:
    return value.decode("ascii").strip("\0 ") if isinstance(value, bytes) else str(value)


# --------------------------------------------------------------------------- dataset-level properties

_ROOTS = ["1.2.840.113619.2.55", "1.3.12.2.1107.5.1.4", "1.2.276.0.7230010.3.1", "2.25", "1.3.6.1.4.1.9590"]
_component = st.integers(0, 10**9).map(str)
uids = st.builds(lambda r, cs: ".".join([r, *cs])[:64].rstrip("."), st.sampled_from(_ROOTS),
                 st.lists(_component, min_size=2, max_size=5))
full_dates = st.dates(date(1950, 1, 1), date(2030, 12, 31)).map(lambda d: d.strftime("%Y%m%d"))
times = st.builds(lambda h, m, s, f: f"{h:02d}{m:02d}{s:02d}" + (f".{f}" if f else ""), st.integers(0, 23),
                  st.integers(0, 59), st.integers(0, 59), st.sampled_from(["", "1", "123456"]))
tzs = st.sampled_from(["", "+0100", "-0500", "+0000", "+1400"])
patient_ids = st.text("ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=6, max_size=10).map(lambda s: "PT" + s)


@st.composite
def studies(draw: st.DrawFn) -> list[Dataset]:
    """Two patients, each with 2 files of one study that reference each other (depth >= 3)."""
    used: set[str] = set()

    def fresh() -> str:
        u = draw(uids.filter(lambda x: x not in used and not is_well_known_uid(x)))
        used.add(u)
        return u

    files: list[Dataset] = []
    pids = draw(st.lists(patient_ids, min_size=2, max_size=2, unique=True))
    for pid in pids:
        study, series, frame = fresh(), fresh(), fresh()
        sops = [fresh(), fresh()]
        day = draw(full_dates)
        for i, sop in enumerate(sops):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
            ds.file_meta.MediaStorageSOPInstanceUID = sop
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = sop
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = series
            ds.FrameOfReferenceUID = frame
            ds.Modality = "CT"
            ds.PatientID = pid
            ds.PatientName = "Doe^" + pid.title()
            ds.PatientAge = draw(st.sampled_from(["045Y", "003M", "012W", "090D"]))
            ds.StudyDate = day
            ds.StudyTime = draw(times)
            ds.AcquisitionDateTime = draw(full_dates) + draw(times) + draw(tzs)
            ds.DateOfLastCalibration = [draw(full_dates), draw(full_dates)[:6]]  # multi-valued, one partial
            ds.add_new(0x0040A121, "DA", draw(full_dates)[:4])  # Date: a partial YYYY date
            ds.ContentDate = draw(full_dates) + "-" + draw(full_dates)  # a range
            other = sops[1 - i]
            src = Dataset()
            src.ReferencedSOPClassUID = draw(st.sampled_from(WELL_KNOWN))  # any registry UID stays
            src.ReferencedSOPInstanceUID = other
            src.ReferencedFrameOfReferenceUID = frame
            inst = Dataset()
            inst.ReferencedSOPClassUID = CTImageStorage
            inst.ReferencedSOPInstanceUID = other
            inst.SourceImageSequence = Sequence([src])
            ser = Dataset()
            ser.SeriesInstanceUID = series
            ser.ReferencedInstanceSequence = Sequence([inst])
            ds.ReferencedSeriesSequence = Sequence([ser])  # depth 3: Series > Instance > Source > UID
            ds.ReferencedImageSequence = Sequence([inst.copy()])
            coding = Dataset()
            coding.CodingSchemeDesignator = "DCM"
            coding.CodingSchemeUID = "1.2.840.10008.2.16.4"
            ds.CodingSchemeIdentificationSequence = Sequence([coding])
            pet = ds.private_block(0x0009, PET_CREATOR, create=True)
            pet.add_new(0x13, "UI", frame)
            pet.add_new(0x0D, "DT", draw(full_dates) + draw(times) + draw(tzs))
            sie = ds.private_block(0x0013, SIEMENS_CREATOR, create=True)
            sie.add_new(0x10, "DA", draw(full_dates))
            files.append(ds)
    return files


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("props")


def _deidentify_all(datasets: list[Dataset], base: Path, tag: str) -> dict[str, Path]:
    """Write inputs, de-identify each twice into two output trees; input name -> output path."""
    inp = base / f"in-{tag}"
    inp.mkdir()
    results: dict[str, Path] = {}
    outs = [base / f"out-{tag}-a", base / f"out-{tag}-b"]
    for k, ds in enumerate(datasets):
        p = inp / f"f{k}.dcm"
        ds.save_as(p, enforce_file_format=True)
        rels = []
        for out_dir in outs:
            outcome = deidentify_file(p, DeidConfig(key=TEST_KEY, output_dir=out_dir))
            assert outcome.status == "written", (outcome.reason, outcome.error)
            rels.append(outcome.output_path)
        assert rels[0] == rels[1]
        # Determinism: the same input and key give byte-identical files in both trees.
        assert (outs[0] / rels[0]).read_bytes() == (outs[1] / rels[1]).read_bytes()
        results[p.name] = outs[0] / rels[0]
    return results


# No shrink phase: each example de-identifies 8 files, shrinking a failure would take minutes, and the
# failing example (two small studies) is readable as it is.
@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(studies())
def test_dataset_properties_uids_dates_privates(scratch: Path, datasets: list[Dataset]) -> None:
    base = Path(tempfile.mkdtemp(dir=scratch))
    originals = [ds.copy() for ds in datasets]
    outputs = _deidentify_all(datasets, base, "x")
    mapping: dict[str, str] = {}
    reverse: dict[str, str] = {}
    for k, src in enumerate(originals):
        out = pydicom.dcmread(outputs[f"f{k}.dcm"])
        pairs: list[tuple[str, str, str]] = []
        _uid_pairs(src, out, pairs)
        _uid_pairs(src.file_meta, out.file_meta, pairs, "meta")
        names = {p for p, _, _ in pairs}
        # The deep references, the coding scheme and the file meta were all visited and kept.
        assert {"/ReferencedSeriesSequence[0]/ReferencedInstanceSequence[0]/SourceImageSequence[0]"
                "/ReferencedSOPInstanceUID", "/CodingSchemeIdentificationSequence[0]/CodingSchemeUID",
                "meta/MediaStorageSOPInstanceUID"} <= names, names
        for where, old, new in pairs:
            if is_well_known_uid(old):
                assert new == old, where  # SOP classes, transfer syntaxes, coding schemes, registry
            else:
                assert new != old and new == new_uid(TEST_KEY, old), where
                assert UID_RE.match(new) and len(new) <= 64 and new.startswith("2.25."), where
            assert mapping.setdefault(old, new) == new, where  # same UID -> same pseudonym everywhere
            assert reverse.setdefault(new, old) == old, where  # and no two UIDs merged
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
        assert out.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID

        # Private h element of a KB creator: hashed exactly like the public UID it carries.
        assert _text(_private_value(out, PET_CREATOR, 0x0009, 0x13)) == out.FrameOfReferenceUID

        # Dates: one per-patient offset, 1..365 days back, times and timezone suffixes kept.
        days = date_offset_days(TEST_KEY, src.PatientID)
        assert 1 <= days <= 365
        assert out.StudyDate == _back(src.StudyDate, days)
        assert out.StudyTime == src.StudyTime
        a_src, a_out = str(src.AcquisitionDateTime), str(out.AcquisitionDateTime)
        assert a_out[:8] == _back(a_src[:8], days) and a_out[8:] == a_src[8:]
        cal_src, cal_out = list(src.DateOfLastCalibration), list(out.DateOfLastCalibration)
        assert len(cal_out) == 2 and cal_out[0] == _back(cal_src[0], days)
        y, m = int(cal_src[1][:4]), int(cal_src[1][4:])
        n_days = ((date(y + (m == 12), m % 12 + 1, 1)) - date(y, m, 1)).days
        mid = date(y, m, 1) + timedelta(days=(n_days - 1) // 2)  # a month stands for its middle day
        assert cal_out[1] == (mid - timedelta(days=days)).strftime("%Y%m")
        y_src, y_out = str(src[0x0040A121].value), str(out[0x0040A121].value)
        assert len(y_out) == 4 and int(y_src) - 1 <= int(y_out) <= int(y_src)
        lo, hi = str(src.ContentDate).split("-")
        assert str(out.ContentDate) == f"{_back(lo, days)}-{_back(hi, days)}"
        assert out.PatientAge == src.PatientAge  # age is a patient characteristic, kept
        p_src = _text(_private_value(src, PET_CREATOR, 0x0009, 0x0D))
        p_out = _text(_private_value(out, PET_CREATOR, 0x0009, 0x0D))
        assert p_out[:8] == _back(p_src[:8], days) and p_out[8:] == p_src[8:]  # private o DT
        s_src = _text(_private_value(src, SIEMENS_CREATOR, 0x0013, 0x10))
        assert _text(_private_value(out, SIEMENS_CREATOR, 0x0013, 0x10)) == _back(s_src, days)  # private o DA

        # Patient identity: keyed pseudonyms of the original ID, also in the output path.
        assert out.PatientID == pseudonym_patient_id(TEST_KEY, src.PatientID)
        assert str(out.PatientName) == pseudonym_patient_name(TEST_KEY, src.PatientID)
        assert outputs[f"f{k}.dcm"].relative_to(base / "out-x-a").parts[0] == out.PatientID
    # Within one study, each file's reference points at the other file's new SOP Instance UID.
    sops = {str(pydicom.dcmread(p).SOPInstanceUID) for p in outputs.values()}
    for p in outputs.values():
        out = pydicom.dcmread(p)
        ref = out.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID in sops and ref.ReferencedSOPInstanceUID != out.SOPInstanceUID
        assert ref.ReferencedFrameOfReferenceUID == out.FrameOfReferenceUID


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(studies())
def test_org_root_applies_everywhere(scratch: Path, datasets: list[Dataset]) -> None:
    root = "1.2.826.0.1.3680043.10.999."
    src = datasets[0]
    tmp_path = Path(tempfile.mkdtemp(dir=scratch))
    p = tmp_path / "in.dcm"
    src.save_as(p, enforce_file_format=True)
    outcome = deidentify_file(p, DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out", uid_root=root))
    assert outcome.status == "written", outcome.reason
    out = pydicom.dcmread(tmp_path / "out" / outcome.output_path)
    pairs: list[tuple[str, str, str]] = []
    _uid_pairs(src, out, pairs)
    _uid_pairs(src.file_meta, out.file_meta, pairs, "meta")
    changed = [(w, new) for w, old, new in pairs if not is_well_known_uid(old)]
    assert len(changed) >= 8
    for where, new in changed:
        assert new.startswith(root) and len(new) <= 64 and UID_RE.match(new), where


# --------------------------------------------------------------------------- cohort level (library)


def _all_uid_values(ds: Dataset, keywords: tuple[str, ...]) -> set[str]:
    return {str(e.value) for e in ds.iterall() if e.keyword in keywords and e.value}


_TARGETS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


def test_every_reference_resolves_to_an_output_object(cohort: CohortRun) -> None:
    from tests.test_cohort_end_to_end import outputs as provenance_rows

    recs = provenance_rows(cohort)
    # Files the run wrote (a quarantined target is, correctly, no output object to point at).
    written = [f for f in cohort.answer["files"] if recs[f["path"]]["status"] == "written"]
    assert len(written) >= 30
    srcs = {f["path"]: pydicom.dcmread(cohort.input_dir / f["path"], stop_before_pixels=True)
            for f in written}
    outs = {f["path"]: pydicom.dcmread(cohort.output_dir / recs[f["path"]]["output_path"],
                                       stop_before_pixels=True) for f in written}
    in_targets = set().union(*(_all_uid_values(s, _TARGETS) for s in srcs.values()))
    out_targets = set().union(*(_all_uid_values(o, _TARGETS) for o in outs.values()))
    resolved = 0
    for path, src in srcs.items():
        pairs: list[tuple[str, str, str]] = []
        _uid_pairs(src, outs[path], pairs)  # references the profile kept, paired with their originals
        for where, old, new in pairs:
            leaf = where.rsplit("/", 1)[-1]
            if not (leaf.startswith("Referenced") and leaf != "ReferencedSOPClassUID"):
                continue
            if old in in_targets:  # its target was in the input: it must point at an output object
                assert new == new_uid(TEST_KEY, old) and new in out_targets, (path, where)
                resolved += 1
    assert resolved >= 10, resolved


def _copy(files: list[dict], src: Path, dst: Path) -> None:
    for f in files:
        target = dst / f["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / f["path"], target)


@pytest.mark.slow
def test_two_cohorts_in_separate_runs_share_pseudonyms(cohort: CohortRun, tmp_path: Path) -> None:
    """One cohort split into two overlapping input folders, processed months apart (two runs, same
    key, same provenance tree, two output trees): same patients, studies and bytes as one big run."""
    from tests.test_cohort_end_to_end import outputs as provenance_rows

    recs = provenance_rows(cohort)
    files = [f for f in cohort.answer["files"]
             if recs[f["path"]]["status"] == "written" and f["kind"] in ("ct", "mr")]
    part_a = files[0::2] + files[1:2]  # one file in both folders
    part_b = files[1::2]
    assert {f["patient_id"] for f in part_a} == {f["patient_id"] for f in part_b}
    assert {f["study_instance_uid"] for f in part_a} & {f["study_instance_uid"] for f in part_b}
    _copy(part_a, cohort.input_dir, tmp_path / "site_a")
    _copy(part_b, cohort.input_dir, tmp_path / "site_b")
    (tmp_path / "key").write_bytes(TEST_KEY)
    key = str(tmp_path / "key")
    sa, _ = run_library(tmp_path / "site_a", tmp_path / "out_a", tmp_path / "prov", key_file=key)
    sb, _ = run_library(tmp_path / "site_b", tmp_path / "out_b", tmp_path / "prov", key_file=key)
    assert sa.counts == {"written": len(part_a)} and sb.counts == {"written": len(part_b)}
    expected_pids = sorted({pseudonym_patient_id(TEST_KEY, f["patient_id"]) for f in files})
    assert sa.unmapped_patients == expected_pids == sb.unmapped_patients  # new ids only, both runs
    for out_dir, part in ((tmp_path / "out_a", part_a), (tmp_path / "out_b", part_b)):
        got = {str(p.relative_to(out_dir)): p.read_bytes() for p in out_dir.rglob("*.dcm")}
        rels = [recs[f["path"]]["output_path"] for f in part]
        want = {rel: (cohort.output_dir / rel).read_bytes() for rel in rels}
        assert got.keys() == want.keys()  # same <patient>/<study>/<series>/<sop> paths as the big run
        assert all(got[k] == want[k] for k in got)  # byte-identical to the first run's files
    studies_a = {p.parts[-3] for p in (tmp_path / "out_a").rglob("*.dcm")}
    studies_b = {p.parts[-3] for p in (tmp_path / "out_b").rglob("*.dcm")}
    assert studies_a == studies_b and len(studies_a) == 4  # CT + MR study of each of two patients


def test_patient_map_mapped_and_unmapped(cohort: CohortRun, tmp_path: Path) -> None:
    pats = cohort.answer["patients"]
    mapped_pid, other_pid = pats[0]["patient_id"], pats[1]["patient_id"]
    files = [f for f in cohort.answer["files"] if f["expect"] == "written" and f["kind"] == "ct"]
    files = [f for f in files if f["patient_id"] == mapped_pid][:2] + [
        f for f in files if f["patient_id"] == other_pid][:2]
    _copy(files, cohort.input_dir, tmp_path / "in")
    (tmp_path / "map.csv").write_text("original_patient_id,new_patient_id,new_patient_name\n"
                                      f"{mapped_pid},TRIAL-0001,TRIAL^ONE\nSOMEONE-ELSE,TRIAL-0002,TRIAL^TWO\n")
    (tmp_path / "key").write_bytes(TEST_KEY)
    summary, _ = run_library(tmp_path / "in", tmp_path / "out", tmp_path / "prov",
                             key_file=str(tmp_path / "key"), patient_map=str(tmp_path / "map.csv"))
    assert summary.counts == {"written": 4}
    assert summary.unmapped_patients == [pseudonym_patient_id(TEST_KEY, other_pid)]
    assert other_pid not in json.dumps(summary.to_dict())
    by_patient: dict[str, set[str]] = {}
    for p in (tmp_path / "out").rglob("*.dcm"):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        by_patient.setdefault(str(ds.PatientID), set()).add(str(ds.PatientName))
        assert p.relative_to(tmp_path / "out").parts[0] == ds.PatientID
        assert "OtherPatientIDs" not in ds and "OtherPatientIDsSequence" not in ds
    unmapped = pseudonym_patient_id(TEST_KEY, other_pid), pseudonym_patient_name(TEST_KEY, other_pid)
    assert by_patient == {"TRIAL-0001": {"TRIAL^ONE"}, unmapped[0]: {unmapped[1]}}
    # The inputs really carried other IDs (tag and sequence): the removal above is meaningful.
    src = pydicom.dcmread(next((tmp_path / "in").rglob("*.dcm")), stop_before_pixels=True)
    assert "OtherPatientIDs" in src and "OtherPatientIDsSequence" in src
    blob = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*.dcm"))
    for pid in (mapped_pid, other_pid):
        assert pid.encode() not in blob
    for f in files:
        val = pydicom.dcmread(cohort.input_dir / f["path"], stop_before_pixels=True).get("OtherPatientIDs")
        assert val and str(val).encode() not in blob


# --------------------------------------------------------------------------- the CLI (in-process main)


@contextlib.contextmanager
def _env(**values: str | None) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cli(*args: str, key_env: str | None = None) -> tuple[int, str, str]:
    """``deidflow ARGS`` through the real entry point; (exit code, stdout, stderr)."""
    from flows.cli import main

    out, err = io.StringIO(), io.StringIO()
    with _env(DEIDFLOW_KEY=key_env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One ephemeral Prefect API (own PREFECT_HOME) shared by every CLI call of this module."""
    home = tmp_path_factory.mktemp("prefect-home")
    with _env(PREFECT_HOME=str(home), PREFECT_API_URL=None, PREFECT_LOGGING_LEVEL="WARNING"):
        from flows.cli import prefect_api as api

        with api():
            yield home


def _read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text("utf-8").splitlines()))


def _sops(out_dir: Path) -> dict[str, str]:
    """output SOP Instance UID -> PatientID for every file under ``out_dir``."""
    res = {}
    for p in out_dir.rglob("*.dcm"):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        res[str(ds.SOPInstanceUID)] = str(ds.PatientID)
    return res


def _no_key_bytes(root: Path, keys: list[bytes]) -> None:
    for p in root.rglob("*"):
        if p.is_file() and p.name != AUTO_KEY_NAME:
            data = p.read_bytes()
            for k in keys:
                assert k not in data and k.hex().encode() not in data, p.name


@pytest.mark.slow
def test_cli_map_linkage_and_keys(cohort: CohortRun, tmp_path: Path, prefect_api: Path) -> None:
    pats = cohort.answer["patients"]
    p0, p1 = pats[0]["patient_id"], pats[1]["patient_id"]
    ct = [f for f in cohort.answer["files"] if f["expect"] == "written" and f["kind"] == "ct"]
    f0 = [f for f in ct if f["patient_id"] == p0][:2]
    f1 = [f for f in ct if f["patient_id"] == p1][:1]
    _copy(f0, cohort.input_dir, tmp_path / "in1")
    _copy(f0[1:] + f1, cohort.input_dir, tmp_path / "in2")  # overlaps in1 by one file, adds patient 1
    key_file = tmp_path / "key.bin"
    key_file.write_bytes(TEST_KEY)
    pmap = tmp_path / "map.csv"
    pmap.write_text(f"original_patient_id,new_patient_id,new_patient_name\n{p0},TRIAL-0001,TRIAL^ONE\n")
    out, link = tmp_path / "out", tmp_path / "broker"
    common = ["--workers", "1", "--json"]

    # Run 1 (key file, map, linkage): patient 0 mapped.
    rc, so, se = cli("run", str(tmp_path / "in1"), str(out), "--key-file", str(key_file), "--patient-map",
                     str(pmap), "--linkage", str(link), *common)
    assert rc == 0, se[-2000:]
    s1 = json.loads(so[so.index("{"):])
    assert s1["counts"] == {"written": 2} and s1["unmapped_patients"] == []
    assert set(_sops(out).values()) == {"TRIAL-0001"}
    uid_rows = _read_csv(link / "uid_map.csv")
    assert uid_rows[0] == ["id_old", "id_new"] and _read_csv(link / "patient_map.csv") == [
        ["id_old", "id_new"], [p0, "TRIAL-0001"]]
    for f in f0:
        for k in ("sop_instance_uid", "study_instance_uid", "series_instance_uid"):
            assert [f[k], new_uid(TEST_KEY, f[k])] in uid_rows
    for name in ("uid_map.csv", "patient_map.csv"):
        assert stat.S_IMODE((link / name).stat().st_mode) == 0o600
    assert not list(link.glob(".*tmp"))  # atomic: no temp file left behind

    # Run 2 (same key, same map, overlapping inputs): linkage merged without duplicates.
    rc, so, se = cli("run", str(tmp_path / "in2"), str(out), "--key-file", str(key_file), "--patient-map",
                     str(pmap), "--linkage", str(link), *common)
    assert rc == 0, se[-2000:]
    s2 = json.loads(so[so.index("{"):])
    # With --linkage nothing is skipped (every input's pairs are needed); outputs are rewritten identically.
    assert s2["counts"] == {"written": 2}
    assert s2["unmapped_patients"] == [pseudonym_patient_id(TEST_KEY, p1)] and p1 not in so
    merged = _read_csv(link / "uid_map.csv")
    olds = [r[0] for r in merged[1:]]
    assert len(olds) == len(set(olds)) and olds == sorted(olds) and set(map(tuple, uid_rows)) <= set(
        map(tuple, merged))
    assert [f1[0]["sop_instance_uid"], new_uid(TEST_KEY, f1[0]["sop_instance_uid"])] in merged
    assert _read_csv(link / "patient_map.csv") == [["id_old", "id_new"]] + sorted(
        [[p0, "TRIAL-0001"], [p1, pseudonym_patient_id(TEST_KEY, p1)]])

    # Linkage inside the output tree: refused before anything is written.
    rc, _, se = cli("run", str(tmp_path / "in1"), str(tmp_path / "o2"), "--key-file", str(key_file),
                    "--linkage", str(tmp_path / "o2" / "broker"), *common)
    assert rc == 2 and "linkage" in se and not (tmp_path / "o2" / "broker").exists()
    assert not list((tmp_path / "o2").rglob("*.dcm"))

    # A different key into the same tree is refused (exit 2) ... unless --new-key.
    other = "another-key-of-32-bytes-0000000000"
    rc, _, se = cli("run", str(tmp_path / "in1"), str(out), *common, key_env=other)
    assert rc == 2 and "different key" in se and "--new-key" in se and other not in se
    before = set(_sops(out))
    rc, so, se = cli("run", str(tmp_path / "in1"), str(out), "--new-key", "--patient-map", str(pmap), *common,
                     key_env=other)
    assert rc == 0, se[-2000:]
    new_sops = set(_sops(out)) - before
    assert new_sops == {new_uid(other.encode(), f["sop_instance_uid"]) for f in f0}  # $DEIDFLOW_KEY used
    history = json.loads((out.parent / "out-provenance" / HISTORY_NAME).read_text())
    assert history == [key_fingerprint(TEST_KEY), key_fingerprint(other.encode())]

    # A Prefect Secret block named by --key-secret.
    from prefect.blocks.system import Secret

    secret = "secret-block-key-0123456789abcdef"
    Secret(value=secret).save("deid-key", overwrite=True)
    rc, so, se = cli("run", str(tmp_path / "in1"), str(tmp_path / "o3"), "--key-secret", "deid-key", *common)
    assert rc == 0, se[-2000:]
    assert set(_sops(tmp_path / "o3")) == {new_uid(secret.encode(), f["sop_instance_uid"]) for f in f0}
    # A stale exported $DEIDFLOW_KEY must not silently win over the secret the operator named.
    rc, _, se = cli("run", str(tmp_path / "in1"), str(tmp_path / "o3b"), "--key-secret", "deid-key", *common,
                    key_env=other)
    assert rc == 2 and "choose one key source" in se and not list((tmp_path / "o3b").rglob("*.dcm"))

    # No source at all: a random key is created once, 0600, in the provenance dir, and used.
    rc, so, se = cli("run", str(tmp_path / "in1"), str(tmp_path / "o4"), *common)
    assert rc == 0, se[-2000:]
    auto = tmp_path / "o4-provenance" / AUTO_KEY_NAME
    assert stat.S_IMODE(auto.stat().st_mode) == 0o600
    auto_key = auto.read_bytes().rstrip(b"\n")
    assert set(_sops(tmp_path / "o4")) == {new_uid(auto_key, f["sop_instance_uid"]) for f in f0}

    # Without --linkage no linkage file exists anywhere; keys never reach provenance or summaries.
    for d in ("o3", "o3-provenance", "o4", "o4-provenance", "out", "out-provenance"):
        assert not [p for p in (tmp_path / d).rglob("*") if p.name in ("uid_map.csv", "patient_map.csv")], d
    for d in ("out-provenance", "o3-provenance", "o4-provenance"):
        _no_key_bytes(tmp_path / d, [TEST_KEY, other.encode(), secret.encode(), auto_key])
    rc, so, _ = cli("audit", "sql", "SELECT DISTINCT key_fingerprint FROM records ORDER BY 1", "--provenance",
                    str(tmp_path / "out-provenance"), "--json")
    assert rc == 0 and {json.loads(line)["key_fingerprint"] for line in so.splitlines()} == {
        key_fingerprint(TEST_KEY), key_fingerprint(other.encode())}


@pytest.mark.parametrize("rows, message", [
    ("A1,NEW1,X^Y\nA2,NEW1,Z^W\n", "new_patient_id already used for another patient in row 2"),
    ("A1,NEW1,X^Y\nA1,NEW2,Z^W\n", "original_patient_id already mapped in row 2"),
])
@pytest.mark.slow
def test_cli_bad_patient_map_refused_before_writing(cohort: CohortRun, tmp_path: Path, prefect_api: Path,
                                                    rows: str, message: str) -> None:
    f = next(f for f in cohort.answer["files"] if f["expect"] == "written" and f["kind"] == "ct")
    _copy([f], cohort.input_dir, tmp_path / "in")
    bad = tmp_path / "map.csv"
    bad.write_text("original_patient_id,new_patient_id,new_patient_name\n" + rows)
    rc, so, se = cli("run", str(tmp_path / "in"), str(tmp_path / "out"), "--patient-map", str(bad),
                     "--workers", "1", key_env=TEST_KEY.decode())
    assert rc == 2 and "invalid patient map" in se and message in se, se[-2000:]
    for value in ("A1", "A2", "NEW1", "NEW2"):
        assert value not in se  # rows are named, identifiers never shown
    assert not list((tmp_path / "out").rglob("*.dcm"))
    assert not list((tmp_path / "out-provenance").rglob("*.parquet"))
