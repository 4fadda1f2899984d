"""A PatientID inside a sequence gets the pseudonym of *that* patient, not the file's own."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from deid_core.config import DeidConfig
from deid_core.pipeline import deidentify_file
from deid_core.pseudonyms import pseudonym_patient_id
from tests.conftest import TEST_KEY


def test_nested_patient_id_gets_its_own_pseudonym(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = "OWN-123456"
    item = Dataset()
    item.PatientID = "OTHER-987654"
    own = Dataset()
    own.PatientID = "OWN-123456"
    ds.DerivationCodeSequence = Sequence([item, own])  # a kept sequence (not in Table E.1-1)
    src = tmp_path / "in.dcm"
    ds.save_as(src, enforce_file_format=True)
    cfg = DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out")
    outcome = deidentify_file(src, cfg)
    assert outcome.status == "written", outcome.error
    out = pydicom.dcmread(tmp_path / "out" / outcome.output_path)
    nested = [i.PatientID for i in out.DerivationCodeSequence]
    assert out.PatientID == pseudonym_patient_id(TEST_KEY, "OWN-123456")
    assert nested == [pseudonym_patient_id(TEST_KEY, "OTHER-987654"), out.PatientID]
    assert "OTHER-987654" not in (tmp_path / "out" / outcome.output_path).read_bytes().decode("latin-1")
