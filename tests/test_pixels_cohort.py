"""Pre-screen and recall on a fresh 1-patient synthetic cohort (issue 5, deliverables 3 and 6)."""

from __future__ import annotations

from typing import Any

import pydicom
import pytest

from deid_core.pixels import PixelResult, find_text_boxes, pixel_policy_for
from deid_core.pixels.plant import Planted, coverage
from deid_core.synth import generate_cohort
from deid_core.terms import capture_terms


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[dict[str, Any], PixelResult]]:
    root = tmp_path_factory.mktemp("cohort1")
    answer = generate_cohort(root, 1, 3)
    out = []
    for f in answer["files"]:
        if f["expect"] == "written" and f["frames"]:
            ds = pydicom.dcmread(root / f["path"])
            out.append((f, find_text_boxes(ds, capture_terms(ds), pixel_policy_for(ds.get("Modality")))))
    return out


def test_prescreen_never_skips_planted_text_and_all_phi_boxes_masked(searched: list) -> None:  # type: ignore[type-arg]
    hit = total = with_text = 0
    for f, result in searched:
        assert result.complete
        if f["pixel_boxes"]:
            assert not result.prescreen_skipped, f["kind"]
            with_text += 1
        for pb in f["pixel_boxes"]:
            if pb["phi"]:
                total += 1
                planted = Planted(pb["frame"], pb["x"], pb["y"], pb["w"], pb["h"], True)
                hit += coverage(planted, result.boxes) >= 0.9
    assert with_text >= 5 and total >= 20
    assert hit == total


def test_text_free_ct_mr_are_never_masked(searched: list) -> None:  # type: ignore[type-arg]
    free = [(f, r) for f, r in searched if f["modality"] in ("CT", "MR") and not f["pixel_boxes"]]
    assert len(free) >= 10
    assert all(not r.boxes for _f, r in free)


def test_prescreen_skips_every_text_free_ct_mr(searched: list) -> None:  # type: ignore[type-arg]
    free = [r for f, r in searched if f["modality"] in ("CT", "MR") and not f["pixel_boxes"]]
    assert len(free) >= 10
    assert all(r.prescreen_skipped and r.frames_ocr == 0 for r in free)
