"""Pixel text search: deidflow vs Presidio's DicomImageRedactorEngine on the same planted cohort.

    .venv/bin/python bench/pixel_speed.py --patients 20 --images 60 [--workers 1,2 [--batch 32]] [--skip-presidio]

Images: the synthetic cohort (``generate_cohort``, 18 files per patient: CT/MR text-free, US/SC/CR/DX
with burned-in PHI, answer.json ``pixel_boxes`` with phi=true) plus N images planted on pydicom's
bundled CT/MR files (two thirds with name/ID/date text 10-28 px, one third text-free), each with faint
noise of its own so that no two images are copies. A planted box
counts as found when the masked rectangles (the recorded boxes) cover >= 90 % of it. Presidio runs
with its defaults (DicomImageRedactorEngine, fill="contrast", use_metadata=True) except that its
AnalyzerEngine is our offline one (the default would download a spaCy model).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_THREAD_LIMIT", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.pixels import decompress  # noqa: E402

from deid_core.pixels import Box, find_text_boxes, get_engine, pixel_policy_for  # noqa: E402
from deid_core.pixels.plant import Planted, coverage, native_copy, plant_stored, store  # noqa: E402
from deid_core.terms import capture_terms  # noqa: E402

BASES = ["693_UNCR.dcm", "image_dfl.dcm", "CT_small.dcm"]
FREE = ["693_UNCR.dcm", "CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "image_dfl.dcm"]
FAMILY = ["SMITH", "GARCIA", "NGUYEN", "JOHNSON", "MUELLER", "KOWALSKI", "OKAFOR", "TANAKA"]
GIVEN = ["JOHN", "MARIA", "LINH", "PETER", "ANNA", "OMAR", "GRACE", "KENJI"]


def _load(name: str) -> pydicom.Dataset:
    path = get_testdata_file(name)
    if not isinstance(path, str):
        raise FileNotFoundError(name)
    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        decompress(ds, generate_instance_uid=False)
    return ds


def _unique(ds: pydicom.Dataset, i: int) -> pydicom.Dataset:
    """The base image with faint noise of its own (about 1 % of the value range, seeded by ``i``).

    The bundled bases repeat; real images never do. deidflow keeps readings of byte-identical crops
    (repeated header text in a study), and exact copies of whole images would flatter it."""
    out, frames = native_copy(ds)
    rng = np.random.default_rng(1000 + i)
    lo, hi = float(frames.min()), float(frames.max())
    amp = max(1, int((hi - lo) * 0.01))
    info = np.iinfo(frames.dtype)
    noisy = frames.astype(np.int64) + rng.integers(-amp, amp + 1, size=frames.shape)
    store(out, np.clip(noisy, max(info.min, int(lo)), min(info.max, int(hi))).astype(frames.dtype))
    return out


def build(n: int, out: Path, seed: int = 7) -> list[tuple[Path, list[Planted]]]:
    rng = random.Random(seed)
    cases = []
    for i in range(n):
        if i % 3 == 2:
            ds = _unique(_load(FREE[i % len(FREE)]), i)
            planted: list[Planted] = []
        else:
            ds = _unique(_load(BASES[i % len(BASES)]), i)
            fam, giv = rng.choice(FAMILY), rng.choice(GIVEN)
            pid = str(rng.randint(1_000_000, 9_999_999))
            y, m, d = rng.randint(1950, 2020), rng.randint(1, 12), rng.randint(1, 28)
            ds.PatientName, ds.PatientID, ds.StudyDate = f"{fam}^{giv}", pid, f"{y:04d}{m:02d}{d:02d}"
            cols, rows = int(ds.Columns), int(ds.Rows)
            size = rng.choice([12, 14, 16, 20, 24, 28]) if cols >= 256 else rng.choice([10, 12])
            texts = [f"{fam}, {giv}", pid, f"{m:02d}/{d:02d}/{y:04d}"]
            planted = []
            row_h = size + 6
            y0 = rng.randint(2, max(3, rows - row_h * 3 - 2))
            x0 = rng.randint(2, max(3, cols // 3))
            for k, t in enumerate(texts):
                try:
                    planted.append(plant_stored(ds, 0, t, x0, y0 + k * row_h, size))
                except ValueError:
                    pass
        p = out / f"img{i:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        cases.append((p, planted))
    return cases


def cohort_cases(patients: int, out: Path) -> list[tuple[Path, list[Planted]]]:
    """Synthetic cohort files with pixels, and their planted PHI boxes from answer.json."""
    from deid_core.synth import generate_cohort

    answer = generate_cohort(out, patients, 0)
    cases = []
    for f in answer["files"]:
        if f["expect"] != "written" or not f.get("frames"):
            continue
        planted = [Planted(b["frame"], b["x"], b["y"], b["w"], b["h"], True)
                   for b in f["pixel_boxes"] if b["phi"]]
        cases.append((out / f["path"], planted))
    return cases


def _recall(cases: list[tuple[Path, list[Planted]]], found: list[list[Box]]) -> tuple[int, int]:
    hit = total = 0
    for (_, planted), boxes in zip(cases, found, strict=True):
        for pl in planted:
            total += 1
            hit += coverage(pl, boxes) >= 0.9
    return hit, total


def _cpu() -> float:
    """CPU seconds of this process and its waited-for children (Presidio runs the tesseract CLI):
    steadier than wall time when other jobs share the machine."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _warm() -> None:
    """Load Tesseract and the offline Presidio analyzer in a worker (the in-process run starts warm too)."""
    from deid_core.presidio_offline import get_analyzer

    get_engine()
    get_analyzer()


def run_deidflow(path: str) -> list[Box]:
    """What the pipeline does per file: read, capture terms, find boxes under the modality's policy."""
    ds = pydicom.dcmread(path)
    return find_text_boxes(ds, capture_terms(ds), pixel_policy_for(ds.get("Modality"))).boxes


def run_batch(paths: list[str]) -> list[list[Box]]:
    """One Dask task: a batch of files, as the flow sends them."""
    return [run_deidflow(p) for p in paths]


def _group(path: Path) -> str:
    """Modality of a cohort file, or "planted" (read from the header only: no pixel decoding)."""
    if path.parent.name == "planted":
        return "planted"
    return str(pydicom.dcmread(path, stop_before_pixels=True).get("Modality", "?"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--patients", type=int, default=20)
    ap.add_argument("--workers", default="")
    ap.add_argument("--batch", type=int, default=1,
                    help="files per Dask task (the flow sends batches of 32 by default; 1 = one task per file)")
    ap.add_argument("--skip-presidio", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = cohort_cases(args.patients, Path(tmp) / "cohort")
        (Path(tmp) / "planted").mkdir()
        cases += build(args.images, Path(tmp) / "planted")
        print(f"cohort: {len(cases)} images, {sum(1 for _, p in cases if p)} with text, "
              f"{sum(len(p) for _, p in cases)} planted PHI boxes")
        get_engine()
        from deid_core.presidio_offline import get_analyzer

        get_analyzer()  # both sides start warm: the analyzer is loaded once per process either way
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        kinds = [_group(p) for p, _ in cases]  # outside the timed loop
        per_group: dict[str, tuple[int, float]] = {}
        ours = []
        t, c = time.perf_counter(), _cpu()
        for (p, _), kind in zip(cases, kinds, strict=True):
            c_file = time.process_time()
            ours.append(run_deidflow(str(p)))
            n_files, secs = per_group.get(kind, (0, 0.0))
            per_group[kind] = (n_files + 1, secs + time.process_time() - c_file)
        t_ours, c_ours = time.perf_counter() - t, _cpu() - c
        h, n = _recall(cases, ours)
        print(f"deidflow : {t_ours:8.2f} s  {1000 * t_ours / len(cases):7.1f} ms/image  "
              f"cpu {1000 * c_ours / len(cases):7.1f} ms/image  recall {h}/{n} = {h / max(n, 1):.3f}")
        print("deidflow cpu ms/file by kind: " + "  ".join(
            f"{g} {1000 * secs / g_n:.1f} (n={g_n})" for g, (g_n, secs) in sorted(per_group.items())))
        if not args.skip_presidio:
            from deid_core.errors import PixelError
            from deid_core.pixels.presidio_engine import presidio_boxes

            found, failed = [], 0
            t, c = time.perf_counter(), _cpu()
            for p, _ in cases:
                ds = pydicom.dcmread(p)
                try:
                    found.append([Box(0, x, y, w, hh, "presidio", 0.0) for x, y, w, hh in presidio_boxes(ds)])
                except PixelError:
                    failed += 1
                    found.append([])
            t_p, c_p = time.perf_counter() - t, _cpu() - c
            h2, n2 = _recall(cases, found)
            print(f"presidio : {t_p:8.2f} s  {1000 * t_p / len(cases):7.1f} ms/image  "
                  f"cpu {1000 * c_p / len(cases):7.1f} ms/image  recall {h2}/{n2} = "
                  f"{h2 / max(n2, 1):.3f}  failures {failed}")
            print(f"speed ratio presidio/deidflow: wall {t_p / t_ours:.1f}x  cpu {c_p / max(c_ours, 1e-9):.1f}x")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.workers:
            import dask
            from distributed import Client, LocalCluster

            # as the flow's clusters do (flows.deidentify.tune_local_workers): Dask's default
            # MALLOC_TRIM_THRESHOLD_ in workers made the pixel stage 41 % slower than in-process
            dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})

            times = {}
            for k in [int(w) for w in args.workers.split(",")]:
                cluster = LocalCluster(n_workers=k, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")
                with cluster as cl, Client(cl) as client:
                    client.run(_warm)  # load Tesseract once per worker
                    client.gather(client.map(run_deidflow, [str(p) for p, _ in cases[:4 * k]], pure=False))
                    paths = [str(p) for p, _ in cases]
                    chunks = [paths[i:i + max(1, args.batch)] for i in range(0, len(paths), max(1, args.batch))]
                    t = time.perf_counter()
                    client.gather(client.map(run_batch, chunks, pure=False))
                    times[k] = time.perf_counter() - t
                    print(f"workers={k} (batch {args.batch}): {times[k]:.2f} s  "
                          f"{1000 * times[k] / len(cases):.1f} ms/image  "
                          f"(load average {os.getloadavg()[0]:.2f})")
            if 1 in times and 2 in times:
                print(f"speed-up 2 vs 1 workers: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
