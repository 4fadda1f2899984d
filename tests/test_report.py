"""The visual QA report: content, ordering, no header identifiers, and a real headless-Chromium render.

Chromium is Debian's ``chromium`` package (installed by the test setup). The render check looks
at the screenshot itself: the thumbnails must be visible (large dark image areas and the red box
outlines), compared with the same page whose images were stripped.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from deid_core.report import thumbnail, write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _records(prov: Path) -> list[dict]:  # type: ignore[type-arg]
    from deid_core.provenance import connect

    with connect(prov) as con:
        cur = con.execute("SELECT * FROM records")
        cols = [d[0] for d in cur.description or []]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


@pytest.fixture(scope="module")
def report(cohort) -> tuple[Path, str]:  # type: ignore[no-untyped-def]
    path = write_report(cohort.provenance_dir)
    return path, path.read_text(encoding="utf-8")


def test_report_is_in_the_secure_zone_and_self_contained(cohort, report) -> None:  # type: ignore[no-untyped-def]
    path, page = report
    assert path.parent == Path(cohort.provenance_dir) / "reports" and path.suffix == ".html"
    assert path.stat().st_mode & 0o077 == 0
    assert "<style>" in page and "http://" not in page and "https://" not in page
    assert "src='file:" not in page and "<script" not in page


def test_report_shows_every_changed_image_riskiest_first(cohort, report) -> None:  # type: ignore[no-untyped-def]
    _path, page = report
    changed = [r for r in _records(cohort.provenance_dir) if r["status"] == "written" and r["n_boxes"]]
    assert changed, "the synthetic cohort has burned-in text"
    assert page.count("class='pair'") == len(changed)
    assert page.count("alt='before' src='data:image/png;base64,") == len(changed)
    assert page.count("alt='after' src='data:image/png;base64,") == len(changed)
    confs = [float(c) for c in re.findall(r"lowest OCR confidence (\d+)", page)]
    assert confs == sorted(confs)
    counts = {r["status"]: 0 for r in _records(cohort.provenance_dir)}
    for r in _records(cohort.provenance_dir):
        counts[r["status"]] += 1
    for status, n in counts.items():
        assert f"<td>{status}</td><td>{n}</td>" in page


def test_report_text_has_no_header_identifiers(cohort, report) -> None:  # type: ignore[no-untyped-def]
    _path, page = report
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page).lower()
    for r in _records(cohort.provenance_dir):
        if r["status"] != "written":
            continue
        ds = pydicom.dcmread(r["input_path"], stop_before_pixels=True)
        for value in (str(ds.get("PatientID", "")), str(ds.get("PatientName", "")).split("^")[0]):
            if len(value) >= 4:
                assert value.lower() not in text
        assert str(Path(r["input_path"]).name).lower() not in text or "deid" in r["input_path"].lower()


def test_thumbnail_outlines_boxes_in_red() -> None:
    import base64

    import cv2

    gray = np.full((100, 200), 128, np.uint8)
    uri = thumbnail(gray, [{"x": 20, "y": 20, "w": 40, "h": 20}], width=200)
    img = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (100, 200, 3)
    assert tuple(img[20, 30]) == (0, 0, 255) and tuple(img[50, 150]) == (128, 128, 128)


def _screenshot(html: Path, png: Path, tmp: Path) -> np.ndarray:
    assert Path(CHROMIUM).exists(), "chromium is not installed (apt-get install -y chromium)"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'chromium-profile'}", f"--screenshot={png}", "--window-size=1200,2000",
           html.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert png.is_file(), "chromium wrote no screenshot"
    return np.asarray(Image.open(png).convert("RGB")).astype(np.int16)


@pytest.mark.slow
def test_report_renders_thumbnails_in_headless_chromium(report, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, page = report
    shot = _screenshot(path, tmp_path / "report.png", tmp_path)
    stripped = tmp_path / "stripped.html"
    stripped.write_text(re.sub(r"src='data:image/png;base64,[^']+'", "src=''", page), encoding="utf-8")
    control = _screenshot(stripped, tmp_path / "control.png", tmp_path)
    assert shot.shape == control.shape == (2000, 1200, 3)

    def dark(a: np.ndarray) -> float:
        return float((a.max(axis=2) < 40).mean())

    def red(a: np.ndarray) -> int:
        return int(((a[..., 0] > 230) & (a[..., 1] < 50) & (a[..., 2] < 50)).sum())  # box red, not #b00 text

    # The thumbnails (dark image areas with red box outlines) are on screen; without them they are not.
    assert dark(shot) > 0.05 and dark(shot) > 5 * dark(control), (dark(shot), dark(control))
    assert red(shot) > 500 and red(control) < 100, (red(shot), red(control))
    # the thumbnails sit right of the 240 px caption column and vary (not a blank box)
    region = shot[300:1900, 260:1200]
    assert float(region.std()) > 30.0
    (tmp_path / "result.json").write_text(json.dumps({"dark": dark(shot), "red": red(shot)}))
