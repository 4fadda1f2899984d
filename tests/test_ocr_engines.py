"""The pixel stage behind either OCR engine: in-process Tesseract, or Presidio's TesseractOCR."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from deid_core.config import DeidConfig
from deid_core.pipeline import deidentify_file
from deid_core.synth import generate_cohort
from tests.conftest import TEST_KEY


@pytest.mark.parametrize("engine", ["tesseract", "presidio"])
def test_secondary_capture_text_masked_with_either_engine(tmp_path: Path, engine: str) -> None:
    answer = generate_cohort(tmp_path / "in", patients=1, seed=5)
    sc = next(f for f in answer["files"] if f["kind"] == "sc")
    # policy "phi": identifiers must be READ to be masked, so the engine is really exercised
    cfg = DeidConfig(key=TEST_KEY, output_dir=tmp_path / "out", pixel_engine=engine, pixel_policy="phi")
    outcome = deidentify_file(tmp_path / "in" / sc["path"], cfg)
    assert outcome.status == "written", outcome.error
    boxes = outcome.boxes
    assert boxes and json.dumps(boxes)  # recorded (coordinates and kinds only)
    out = pydicom.dcmread(tmp_path / "out" / outcome.output_path).pixel_array
    src = pydicom.dcmread(tmp_path / "in" / sc["path"]).pixel_array
    masked = np.zeros(src.shape[:2], dtype=bool)
    for b in boxes:
        masked[int(b["y"]):int(b["y"]) + int(b["h"]), int(b["x"]):int(b["x"]) + int(b["w"])] = True
    for pb in sc["pixel_boxes"]:
        if pb["phi"]:
            assert masked[pb["y"]:pb["y"] + pb["h"], pb["x"]:pb["x"] + pb["w"]].mean() >= 0.9, (engine, pb["kind"])
    changed = src != out
    assert not (changed.any(axis=-1) if changed.ndim == 3 else changed)[~masked].any()
