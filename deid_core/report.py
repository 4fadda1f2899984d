"""Visual QA report of one run: a single self-contained HTML file for the curator's eye check.

TCIA curators look at every de-identified series before release; this page makes that fast. It
shows the run's numbers (status, reasons, actions, leaks, conformance) and, for every image whose
pixels were changed, the frame with the most masked boxes before and after, boxes outlined,
riskiest first: lowest OCR confidence, then most boxes, then all-text policy.

The "before" thumbnails show original burned-in text: the report is written into the provenance
directory, which lives in the secure zone, with mode 0600. Everything is inline (CSS, PNG data
URIs) so it opens offline and can be archived as one file. No header identifiers are printed:
rows are labelled by their pseudonymous output path.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom

from deid_core.errors import ConfigError
from deid_core.provenance import _latest_run_id, connect

THUMB_W = 320
#: At most this many image pairs (riskiest first); the rest are counted, not shown.
MAX_PAIRS = 200

_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px}h2{font-size:16px;margin-top:24px}
table.k{border-collapse:collapse;margin:4px 16px 4px 0;display:inline-table;vertical-align:top}
table.k td,table.k th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:left}
.pair{display:flex;gap:8px;align-items:flex-start;margin:10px 0;padding:8px;background:#fff;
 border:1px solid #ddd}
.pair figure{margin:0}.pair figcaption{font-size:12px;color:#555}
.pair img{display:block;border:1px solid #999;image-rendering:pixelated}
.meta{font-size:12px;width:240px;flex:none;word-break:break-all}.risk{color:#b00;font-weight:bold}
"""


@dataclass
class Pair:
    """One changed image: where it is, how risky, and its two thumbnails (PNG data URIs)."""

    output_path: str
    modality: str
    policy: str
    n_boxes: int
    min_conf: float
    frame: int
    before: str = ""
    after: str = ""
    error: str = ""

    @property
    def risk_key(self) -> tuple[float, int, int, str]:
        return (self.min_conf, -self.n_boxes, 0 if self.policy == "all-text" else 1, self.output_path)


def _png_uri(gray: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", gray)
    if not ok:
        raise ConfigError("cannot encode a thumbnail")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _frame_gray(path: Path, frame: int) -> np.ndarray:
    from deid_core.pixels.decode import iter_gray_frames

    ds = pydicom.dcmread(path)
    for f, gray in enumerate(iter_gray_frames(ds)):
        if f == frame:
            return gray
    raise ConfigError(f"frame {frame} not found")


def thumbnail(gray: np.ndarray, boxes: list[dict[str, Any]], width: int = THUMB_W) -> str:
    """A PNG data URI of ``gray`` scaled to ``width`` with ``boxes`` outlined in red."""
    scale = width / max(1, gray.shape[1])
    small = cv2.resize(gray, (width, max(1, round(gray.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    for b in boxes:
        x0, y0 = int(b["x"] * scale), int(b["y"] * scale)
        x1, y1 = int((b["x"] + b["w"]) * scale) + 1, int((b["y"] + b["h"]) * scale) + 1
        cv2.rectangle(rgb, (x0, y0), (x1, y1), (0, 0, 255), 1)
    return _png_uri(rgb)


def _table(title: str, data: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in data.items())
    body = rows or "<tr><td>none</td></tr>"
    return f'<table class="k"><tr><th colspan="2">{html.escape(title)}</th></tr>{body}</table>'


def collect(prov_dir: Path, run_id: str | None = None) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """The run id, its run record (may be empty while a run is in progress) and its file records."""
    with connect(prov_dir) as con:
        rid = run_id or _latest_run_id(con)
        if rid is None:
            raise ConfigError("no run found in the provenance directory")
        cur = con.execute("SELECT * FROM runs WHERE run_id = ?", [rid])
        cols = [d[0] for d in cur.description or []]
        row = cur.fetchone()
        run = dict(zip(cols, row, strict=True)) if row else {}
        cur = con.execute("SELECT * FROM records WHERE run_id = ? ORDER BY input_path", [rid])
        cols = [d[0] for d in cur.description or []]
        records = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    if not records:
        raise ConfigError("the run has no records")
    return rid, run, records


def pairs_for(records: list[dict[str, Any]], output_dir: Path | None) -> list[Pair]:
    """Before/after pairs of every written image with masked boxes, riskiest first."""
    out: list[Pair] = []
    sources: dict[int, tuple[str, list[dict[str, Any]]]] = {}
    for r in records:
        if r.get("status") != "written" or not r.get("n_boxes"):
            continue
        boxes = json.loads(r.get("boxes") or "[]")
        per_frame = Counter(int(b["frame"]) for b in boxes)
        frame = min(per_frame, key=lambda f: (-per_frame[f], f))
        confs = [float(b.get("confidence", 0.0)) for b in boxes]
        p = Pair(str(r.get("output_path") or ""), str(r.get("modality") or ""),
                 str(r.get("pixel_policy") or ""), len(boxes), min(confs) if confs else 0.0, frame)
        out.append(p)
        sources[id(p)] = (str(r["input_path"]), [b for b in boxes if int(b["frame"]) == frame])
    out.sort(key=lambda p: p.risk_key)
    for p in out[:MAX_PAIRS]:  # thumbnails only for the pairs shown
        src, shown = sources[id(p)]
        try:
            p.before = thumbnail(_frame_gray(Path(src), p.frame), shown)
            if output_dir is not None:
                p.after = thumbnail(_frame_gray(Path(output_dir) / p.output_path, p.frame), shown)
        except Exception as exc:  # a moved/removed file: show the row, say what failed (no values)
            p.error = f"thumbnail unavailable ({type(exc).__name__})"
    return out


def render(run_id: str, run: dict[str, Any], records: list[dict[str, Any]], pairs: list[Pair]) -> str:
    """The HTML page (deterministic for the same inputs)."""
    status = Counter(str(r.get("status")) for r in records)
    reasons = Counter(str(r["reason"]) for r in records if r.get("reason"))
    actions: Counter[str] = Counter()
    conf_bad = 0
    for r in records:
        actions.update(json.loads(r.get("actions") or "{}"))
        c = r.get("conformance")
        if c and not json.loads(c).get("ok", True):
            conf_bad += 1
    summary = {"run": run_id, "files": len(records), "images with masked pixels": len(pairs),
               "leaks found (quarantined)": reasons.get("leak_found", 0),
               "outputs with conformance issues": conf_bad}
    if run:
        summary |= {"profile": run.get("profile"), "wall s": run.get("wall_s"),
                    "deidflow": run.get("deidflow_version")}
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             f"<title>deidflow QA {html.escape(run_id)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>deidflow QA report — run {html.escape(run_id)}</h1>",
             "<p>Secure zone only: the <em>before</em> images show original burned-in text.</p>",
             _table("Run", summary), _table("Status", dict(sorted(status.items()))),
             _table("Reasons", dict(sorted(reasons.items()))),
             _table("Actions", dict(sorted(actions.items()))),
             f"<h2>Pixel redactions ({len(pairs)}), riskiest first</h2>"]
    for i, p in enumerate(pairs[:MAX_PAIRS]):
        risk = ' class="risk"' if p.min_conf < 50 or p.policy == "all-text" else ""
        meta = (f"<div class='meta'><b>#{i + 1}</b> {html.escape(p.output_path)}<br>"
                f"{html.escape(p.modality)}, "
                f"policy {html.escape(p.policy)}<br>frame {p.frame}, {p.n_boxes} box(es)<br>"
                f"<span{risk}>lowest OCR confidence {p.min_conf:.0f}</span>"
                + (f"<br>{html.escape(p.error)}" if p.error else "") + "</div>")
        figs = "".join(f"<figure><img alt='{lab}' src='{uri}' width='{THUMB_W}'>"
                       f"<figcaption>{lab}</figcaption></figure>"
                       for lab, uri in (("before", p.before), ("after", p.after)) if uri)
        parts.append(f"<div class='pair'>{meta}{figs}</div>")
    if len(pairs) > MAX_PAIRS:
        parts.append(f"<p>{len(pairs) - MAX_PAIRS} more not shown.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(prov_dir: str | Path, run_id: str | None = None,
                 output_dir: str | Path | None = None) -> Path:
    """Build the QA report of ``run_id`` (latest if None) into ``PROV/reports/<run_id>.html``; returns it."""
    prov = Path(prov_dir)
    rid, run, records = collect(prov, run_id)
    out_dir = Path(output_dir) if output_dir else None
    if out_dir is None and run.get("output_dir"):
        out_dir = Path(str(run["output_dir"]))
    page = render(rid, run, records, pairs_for(records, out_dir))
    dest_dir = prov / "reports"
    dest_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = dest_dir / f"{rid}.html"
    tmp = dest.with_suffix(".html.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(page)
    os.replace(tmp, dest)
    return dest
