"""The synthetic cohort is the ground truth for every de-identification test: check that it is."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from deid_core.errors import ConfigError
from deid_core.synth import ACME_CREATOR, ANSWER_NAME, SAFE_CREATOR, generate_cohort

KB = Path("/work/shared/standard/tcia_private_tag_kb_2024-02-01.csv")
SOP_FOR_KIND = {
    "ct": "1.2.840.10008.5.1.4.1.1.2",
    "mr": "1.2.840.10008.5.1.4.1.1.4",
    "us": "1.2.840.10008.5.1.4.1.1.6.1",
    "us_multiframe": "1.2.840.10008.5.1.4.1.1.3.1",
    "sc": "1.2.840.10008.5.1.4.1.1.7",
    "cr": "1.2.840.10008.5.1.4.1.1.1",
    "dx": "1.2.840.10008.5.1.4.1.1.1.1",
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("cohort")
    return out, generate_cohort(out, patients=4, seed=0)


def _written(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in answer["files"] if f["expect"] == "written"]


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


_SEG = re.compile(r'\(([0-9A-F]{4}),(?:"([^"]+)",([0-9A-F]{2})|([0-9A-F]{4}))\)(?:\[(\d+)\])?$')


def _resolve(ds: Dataset, path: str) -> Any:
    """Follow an answer.json tag path ('(0040,0275)[0]>(0008,1110)[0]>(0008,0090)', private form too)."""
    node: Any = ds
    for seg in path.split(">"):
        m = _SEG.match(seg)
        assert m, seg
        group = int(m.group(1), 16)
        if m.group(2):
            elem = node.private_block(group, m.group(2))[int(m.group(3), 16)]
        else:
            elem = node[(group << 16) | int(m.group(4), 16)]
        node = elem.value[int(m.group(5))] if m.group(5) is not None else elem
    return node.value


def _border_uniform(img: np.ndarray, margin: int = 12) -> bool:
    """Text of a burned-in label sits near the edges; a clean phantom's border is pure background."""
    border = np.concatenate([img[:margin].ravel(), img[-margin:].ravel(),
                             img[:, :margin].ravel(), img[:, -margin:].ravel()])
    return bool(np.all(border == border[0]))


def test_answer_shape_and_counts(cohort: tuple[Path, dict[str, Any]]) -> None:
    out, answer = cohort
    assert answer["seed"] == 0
    assert len(answer["patients"]) == 4
    assert 40 <= len(answer["files"]) <= 80
    kinds = {f["kind"] for f in answer["files"]}
    assert kinds == {"ct", "mr", "us", "us_multiframe", "sc", "cr", "dx", "compressed", "truncated",
                     "not_dicom"}
    keys = {"path", "expect", "kind", "patient_id", "modality", "sop_instance_uid", "study_instance_uid",
            "series_instance_uid", "frames", "photometric", "transfer_syntax", "phi_tags", "pixel_boxes",
            "overlay_text", "references"}
    for f in answer["files"]:
        assert keys <= set(f), f["path"]
        assert (out / f["path"]).is_file()
        assert f["expect"] == ("quarantined" if f["kind"] in ("truncated", "not_dicom") else "written")
    assert (out / ANSWER_NAME).is_file()
    sops = [f["sop_instance_uid"] for f in answer["files"] if f["sop_instance_uid"]]
    assert len(sops) == len(set(sops))
    # Output tree names are identifying on purpose: each patient's last name and ID are in their paths.
    for p in answer["patients"]:
        mine = [f["path"] for f in answer["files"] if f["patient_id"] == p["patient_id"]]
        assert mine and all(p["patient_name"].split("^")[0] in m and p["patient_id"] in m for m in mine)
    assert {f["transfer_syntax"] for f in answer["files"] if f["kind"] == "compressed"} == {
        "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90"}


def test_same_seed_same_bytes_other_seed_differs(cohort: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = cohort
    again = generate_cohort(tmp_path / "again", patients=4, seed=0)
    assert again == cohort[1]
    assert _digests(tmp_path / "again") == _digests(out)
    other = generate_cohort(tmp_path / "other", patients=4, seed=1)
    assert other["patients"] != cohort[1]["patients"]
    a, b = _digests(out), _digests(tmp_path / "other")
    assert not set(a.values()) & set(b.values())


def test_written_files_read_and_decode(cohort: tuple[Path, dict[str, Any]]) -> None:
    out, answer = cohort
    for f in _written(answer):
        ds = pydicom.dcmread(out / f["path"])
        assert ds.file_meta.TransferSyntaxUID == f["transfer_syntax"]
        assert ds.SOPInstanceUID == f["sop_instance_uid"] == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.StudyInstanceUID == f["study_instance_uid"]
        assert ds.SeriesInstanceUID == f["series_instance_uid"]
        assert ds.PatientID == f["patient_id"]
        assert ds.Modality == f["modality"]
        assert ds.PhotometricInterpretation == f["photometric"]
        if f["kind"] in SOP_FOR_KIND:
            assert ds.SOPClassUID == SOP_FOR_KIND[f["kind"]]
        arr = ds.pixel_array
        frames = int(ds.get("NumberOfFrames", 1))
        assert frames == f["frames"]
        shape = (ds.Rows, ds.Columns) + ((3,) if ds.SamplesPerPixel == 3 else ())
        assert arr.shape == ((frames,) if frames > 1 else ()) + shape
        assert arr.max() > arr.min()


def test_quarantine_candidates_do_not_read(cohort: tuple[Path, dict[str, Any]]) -> None:
    out, answer = cohort
    bad = {f["kind"]: out / f["path"] for f in answer["files"] if f["expect"] == "quarantined"}
    assert set(bad) == {"truncated", "not_dicom"}
    with pytest.raises(ValueError, match="less than expected"):
        pydicom.dcmread(bad["truncated"]).pixel_array  # noqa: B018
    with pytest.raises(InvalidDicomError, match="DICM"):
        pydicom.dcmread(bad["not_dicom"])
    assert bad["not_dicom"].read_bytes()[:4] == b"\x89PNG"


def test_phi_tags_are_present_at_their_paths(cohort: tuple[Path, dict[str, Any]]) -> None:
    out, answer = cohort
    nested = private = 0
    for f in _written(answer):
        ds = pydicom.dcmread(out / f["path"])
        assert f["phi_tags"], f["path"]
        for t in f["phi_tags"]:
            assert str(_resolve(ds, t["path"])) == t["value"], (f["path"], t["path"])
            assert t["kind"] in {"name", "id", "date", "phone", "address", "institution", "email",
                                 "free_text", "other"}
            nested += t["path"].count(">") >= 3
            private += ACME_CREATOR in t["path"]
        kinds = {t["kind"] for t in f["phi_tags"]}
        assert {"name", "id", "date", "phone", "address", "institution", "email", "free_text"} <= kinds
        pn_deep = [t for t in f["phi_tags"] if t["path"].endswith("(0040,A123)")]
        assert pn_deep and pn_deep[0]["path"].count(">") == 3
    assert nested and private


def test_safe_private_element_is_in_tcia_kb_as_keep(cohort: tuple[Path, dict[str, Any]]) -> None:
    out, answer = cohort
    keep = set()
    with KB.open(encoding="utf-8-sig") as fh:
        for row in csv.DictReader(fh):
            if row["private_disposition"].strip().lower() == "k" and "[" not in row["element_sig_pattern"]:
                keep.add(row["element_sig_pattern"].replace('"', "").lower())
    assert f"(0019,{SAFE_CREATOR},1e)".lower() in keep
    f = _written(answer)[0]
    ds = pydicom.dcmread(out / f["path"])
    for t in f["safe_private"]:
        assert str(_resolve(ds, t["path"])) == t["value"]
        float(t["value"])


def test_pixel_boxes_inside_image_and_on_text(cohort: tuple[Path, dict[str, Any]]) -> None:
    out, answer = cohort
    for f in _written(answer):
        if f["kind"] in ("ct", "mr"):
            assert f["pixel_boxes"] == []
            continue
        ds = pydicom.dcmread(out / f["path"])
        arr = ds.pixel_array
        if f["frames"] == 1:
            arr = arr[None]
        assert any(b["phi"] for b in f["pixel_boxes"]) and any(not b["phi"] for b in f["pixel_boxes"])
        for b in f["pixel_boxes"]:
            assert 0 <= b["frame"] < f["frames"]
            assert b["x"] >= 0 and b["y"] >= 0 and b["w"] > 0 and b["h"] > 0
            assert b["x"] + b["w"] <= ds.Columns and b["y"] + b["h"] <= ds.Rows
            assert b["kind"] in {"name", "id", "date", "time", "institution", "other"}
            crop = arr[b["frame"], b["y"]:b["y"] + b["h"], b["x"]:b["x"] + b["w"]]
            assert crop.max() - crop.min() > 100, (f["path"], b["text"])  # glyphs contrast with background


def test_ct_mr_pixels_are_text_free(cohort: tuple[Path, dict[str, Any]]) -> None:
    out, answer = cohort
    slices = [f for f in _written(answer) if f["kind"] in ("ct", "mr")]
    assert len(slices) >= 40
    for f in slices:
        arr = pydicom.dcmread(out / f["path"]).pixel_array
        assert _border_uniform(arr), f["path"]
    # The check itself would catch a burned-in label.
    arr = pydicom.dcmread(out / slices[0]["path"]).pixel_array
    img = Image.fromarray(arr.astype(np.int32))
    ImageDraw.Draw(img).text((2, 2), "SMITH", fill=3000)
    assert not _border_uniform(np.asarray(img))


def test_overlay_carries_text_bits(cohort: tuple[Path, dict[str, Any]]) -> None:
    out, answer = cohort
    with_overlay = [f for f in answer["files"] if f["overlay_text"]]
    assert len(with_overlay) == len(answer["patients"])
    ds = pydicom.dcmread(out / with_overlay[0]["path"])
    bits = ds.overlay_array(0x6000)
    assert bits.shape == (ds.Rows, ds.Columns)
    assert 100 < int(bits.sum()) < bits.size // 4


def test_us_multiframe_has_frame_specific_phi(cohort: tuple[Path, dict[str, Any]]) -> None:
    _, answer = cohort
    for f in (f for f in answer["files"] if f["kind"] == "us_multiframe"):
        assert f["frames"] >= 4
        texts = [{b["text"] for b in f["pixel_boxes"] if b["frame"] == k} for k in range(f["frames"])]
        common = set.intersection(*texts)
        assert any(b["phi"] for b in f["pixel_boxes"] if b["text"] in common)
        extra = [k for k, t in enumerate(texts) if t - common]
        assert len(extra) == 1


def test_references_point_to_generated_instances(cohort: tuple[Path, dict[str, Any]]) -> None:
    out, answer = cohort
    sops = {f["sop_instance_uid"] for f in _written(answer)}
    referencing = [f for f in _written(answer) if f["references"]]
    assert {f["kind"] for f in referencing} >= {"ct", "mr", "sc", "us_multiframe"}
    for f in referencing:
        assert set(f["references"]) <= sops
        ds = pydicom.dcmread(out / f["path"])
        in_file = [it.ReferencedSOPInstanceUID for kw in ("ReferencedImageSequence", "SourceImageSequence")
                   for it in ds.get(kw, [])]
        assert in_file == f["references"]


def test_tesseract_reads_burned_in_identifier(cohort: tuple[Path, dict[str, Any]]) -> None:
    pytesseract = pytest.importorskip("pytesseract")
    out, answer = cohort
    f = next(f for f in answer["files"] if f["kind"] == "us")
    arr = pydicom.dcmread(out / f["path"]).pixel_array
    text = pytesseract.image_to_string(Image.fromarray(arr[:80]))
    planted = next(p for p in answer["patients"] if p["patient_id"] == f["patient_id"])
    last = planted["patient_name"].split("^")[0].upper()
    assert planted["patient_id"] in text or last in text.upper()


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="patients"):
        generate_cohort(tmp_path, patients=0)
    with pytest.raises(ConfigError, match="seed"):
        generate_cohort(tmp_path, patients=1, seed=-1)


def test_small_cohort_is_prefix_of_bigger_one(cohort: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, answer = cohort
    small = generate_cohort(tmp_path / "two", patients=2, seed=0)
    assert small["patients"] == answer["patients"][:2]
    assert small["files"] == [f for f in answer["files"] if f["patient_id"] in
                              {p["patient_id"] for p in small["patients"]} or f["kind"] == "not_dicom"]
    two = _digests(tmp_path / "two")
    two.pop(ANSWER_NAME)
    assert all(_digests(out)[k] == v for k, v in two.items())


def test_large_cohorts_give_every_file_its_own_uid(tmp_path: Path) -> None:
    """pydicom's generate_uid joins its entropy sources with nothing: "patient:1" + "12" equalled
    "patient:11" + "2", and cohorts of 11+ patients had files sharing a SOPInstanceUID that answer.json
    expected written."""
    import collections

    answer = generate_cohort(tmp_path, 12, 0)
    uids: collections.Counter[str] = collections.Counter()
    for f in answer["files"]:
        if f["expect"] == "written":
            uids[str(pydicom.dcmread(tmp_path / f["path"], stop_before_pixels=True).SOPInstanceUID)] += 1
    assert uids and max(uids.values()) == 1
