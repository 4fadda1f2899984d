"""A patient's identifiers pooled across files: names one file's header holds and another file of the same
patient mentions only in free text (an audit: the CT's operator, physician and mother's birth name survived
in the SR, presentation state and key object selection of the same study)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from cryptography.exceptions import InvalidTag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from deid_core.batch import process_batch
from deid_core.config import DeidConfig
from deid_core.inventory import batch_records
from deid_core.termpool import inspect_chunk, pool_key, pools_for, seal, unseal
from deid_core.terms import DATE, NAME, Term
from tests.conftest import TEST_KEY

ROOT = "1.2.826.0.1.3680043.8.498.4242."
OPERATOR, PHYSICIAN, MOTHER = "ABERNATHY^WILHELMINA", "DELACROIX^ESPERANZA", "FAIRWEATHER"
SECRETS = ("ABERNATHY", "WILHELMINA", "DELACROIX", "ESPERANZA", "FAIRWEATHER", "HX443322")


def _save(ds: Dataset, path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _patient(ds: Dataset, pid: str = "PX5550001", name: str = "QUINTERO^MARISOL") -> None:
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = name, pid, "19570611", "F"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.AccessionNumber = ROOT + "1", "20230405", "093000", "A77001"


def _cohort(folder: Path, pid: str = "PX5550001") -> tuple[Path, Path]:
    """A CT whose header names the operator, physician and mother, and an SR of the same patient that names
    them only in its text (the SR's own header names none of them)."""
    ct = Dataset()
    _patient(ct, pid)
    ct.SpecificCharacterSet = "ISO_IR 100"
    ct.SOPClassUID, ct.SOPInstanceUID, ct.SeriesInstanceUID = "1.2.840.10008.5.1.4.1.1.2", ROOT + "2", ROOT + "3"
    ct.Modality, ct.StudyDescription = "CT", "CT CHEST"
    ct.OperatorsName, ct.PerformingPhysicianName, ct.PatientMotherBirthName = OPERATOR, PHYSICIAN, MOTHER
    ct.OtherPatientIDs = "HX443322"
    sr = Dataset()
    _patient(sr, pid)
    sr.SpecificCharacterSet = "ISO_IR 100"
    sr.SOPClassUID, sr.SOPInstanceUID, sr.SeriesInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", ROOT + "4", ROOT + "5"
    sr.Modality, sr.ValueType, sr.ContinuityOfContent = "SR", "CONTAINER", "SEPARATE"
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "TEXT"
    item.TextValue = ("Technique adequate. Wilhelmina Abernathy, Delacroix and the Fairweather family present. "
                      "Prior record HX443322. Mild emphysema.")
    sr.ContentSequence = Sequence([item])
    sr.ContentLabel = "ABERNATHY_NOTE"
    return _save(ct, folder / "ct.dcm"), _save(sr, folder / "sr.dcm")


def _outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.dcm"))}


def test_sealed_terms_round_trip_and_hide_their_text() -> None:
    terms = {Term("ABERNATHY", NAME), Term("HX443322", "id")}
    blob = seal(TEST_KEY, terms)
    assert b"ABERNATHY" not in blob and b"HX443322" not in blob
    assert unseal(TEST_KEY, [blob, seal(TEST_KEY, {Term("DELACROIX", NAME)})]).terms == terms | {
        Term("DELACROIX", NAME)}
    with pytest.raises(InvalidTag):
        unseal(b"another-key-0123456789abcdef", [blob])


def test_inventory_pools_a_patients_identifiers_but_not_dates(tmp_path: Path) -> None:
    ct, sr = _cohort(tmp_path / "a")
    other, _ = _cohort(tmp_path / "b", pid="PX5550002")
    records, pools = inspect_chunk([ct, sr, other], TEST_KEY)
    assert records[0].pool_key == records[1].pool_key != records[2].pool_key
    assert set(pools) == {r.pool_key for r in records}
    pooled = unseal(TEST_KEY, pools[records[0].pool_key])
    texts = {t.text for t in pooled.terms}
    assert {"ABERNATHY", "DELACROIX", "FAIRWEATHER", "HX443322"} <= texts
    assert not any(t.kind == DATE for t in pooled.terms) and not pooled.dates
    assert pools_for(records[:2], pools) == {records[0].pool_key: pools[records[0].pool_key]}
    # a patient without an ID is keyed on name and birth date, not pooled with every other such patient
    a, b = Dataset(), Dataset()
    a.PatientID, a.PatientName, a.PatientBirthDate = "", "ROE^ANN", "19600101"
    b.PatientID, b.PatientName, b.PatientBirthDate = "", "POE^BEN", "19700101"
    assert pool_key(TEST_KEY, a) != pool_key(TEST_KEY, b)


@pytest.mark.parametrize("pooled", [True, False])
def test_a_name_from_a_sibling_header_is_cleaned_only_with_the_pool(tmp_path: Path, pooled: bool) -> None:
    _cohort(tmp_path / "in")
    records, pools = inspect_chunk(sorted((tmp_path / "in").iterdir()), TEST_KEY)
    cfg = DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out", conformance="off")
    for batch in batch_records(records, 16):
        s = process_batch(batch, cfg, tmp_path / "prov", "run1", "2026-01-01",
                          pools=pools_for(batch, pools) if pooled else None)
        assert s.counts == {"written": len(batch)}
    data = b"".join(_outputs(tmp_path / "out").values())
    left = [s for s in SECRETS if s.encode() in data or s.title().encode() in data]
    if pooled:
        assert left == []
        sr = next(pydicom.dcmread(p) for p in (tmp_path / "out").rglob("*.dcm") if pydicom.dcmread(p).Modality == "SR")
        assert "emphysema" in sr.ContentSequence[0].TextValue  # the clinical words stay
    else:  # without the pool the SR's text keeps them: what the pool is for
        assert {"ABERNATHY", "DELACROIX", "FAIRWEATHER"} <= set(left)


@pytest.mark.slow
def test_cli_run_cleans_names_of_sibling_headers(tmp_path: Path) -> None:
    """The whole run: the pool travels from the inventory tasks through the flow to the batch tasks."""
    _cohort(tmp_path / "in")
    env = dict(os.environ, DEIDFLOW_KEY=TEST_KEY.decode(), PREFECT_HOME=str(tmp_path / ".prefect"))
    env.pop("PREFECT_API_URL", None)
    r = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(tmp_path / "in"), str(tmp_path / "out"),
                        "--workers", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    outputs = _outputs(tmp_path / "out")
    assert len(outputs) == 2
    data = b"".join(outputs.values())
    assert [s for s in SECRETS if s.encode() in data or s.title().encode() in data] == []
