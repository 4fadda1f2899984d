"""Summarise results.csv into the tables of REPORT.md (printed as markdown)."""

import csv
import sys
from collections import defaultdict

rows = [r for r in csv.DictReader(open(sys.argv[1]))]
err = [r for r in rows if r["status"] == "harness_error"]
rows = [r for r in rows if r["status"] != "harness_error"]
T = lambda v: v == "True"  # noqa: E731
for r in rows:
    r["cov"] = float(r["coverage"])
    r["con"] = float(r["contrast"])
    r["eligible"] = T(r["legible_before"]) and r["con"] >= 30
    r["miss"] = r["cov"] < 0.9
    r["fo"] = r["status"] == "written" and r["miss"]
    r["fo_conf"] = r["fo"] and T(r["legible_after"])
    r["q"] = r["status"] == "quarantined" and r["miss"]
    gh = int(r["glyph_h_px"] or 0)
    r["hbin"] = next(
        lab
        for lo, hi, lab in [
            (0, 6, "<6"),
            (6, 9, "6-8"),
            (9, 13, "9-12"),
            (13, 21, "13-20"),
            (21, 41, "21-40"),
            (41, 61, "41-60"),
            (61, 999, ">60"),
        ]
        if lo <= gh < hi
    )
    n = max(int(r["rows"]), int(r["cols"]))
    r["sbin"] = "<=128" if n <= 128 else "129-512" if n <= 512 else "513-1760" if n <= 1760 else ">1760"
    r["font_aa"] = f"{r['font']}{'/aa' if T(r['aa']) else ''}"
    r["cbin"] = "30-59" if r["con"] < 60 else "60-139" if r["con"] < 140 else ">=140"

el = [r for r in rows if r["eligible"]]
cases = defaultdict(list)
for r in el:
    cases[r["idx"]].append(r)
print(
    f"cases run: {len({r['idx'] for r in rows})}, harness errors: {len(err)}; planted lines: {len(rows)}; "
    f"eligible (oracle reads the PHI token from the planted ink, contrast >= 30/255): {len(el)}"
)


def line(lab, rs):
    n = len(rs)
    if not n:
        return
    f = sum(r["fo"] for r in rs)
    fc = sum(r["fo_conf"] for r in rs)
    q = sum(r["q"] for r in rs)
    found = sum(not r["miss"] for r in rs)
    part = sum(0.1 <= r["cov"] < 0.9 for r in rs)
    miss = sum(r["cov"] < 0.1 for r in rs)
    print(f"| {lab} | {n} | {found} | {part} | {miss} | **{f} ({100 * f / n:.1f} %)** | {fc} | {q} |")


hdr = ("| {} | lines | found | partial | missed | fail-open (written) | of which residual legible "
       "| quarantined (verify caught) |\n|---|---|---|---|---|---|---|---|")
print("\n### Overall (per planted line)\n")
print(hdr.format("set"))
line("all eligible lines", el)
line("all planted lines (incl. oracle-unreadable / low contrast)", rows)
nc = len(cases)
fc = sum(any(r["fo"] for r in rs) for rs in cases.values())
qc = sum(any(r["q"] for r in rs) and not any(r["fo"] for r in rs) for rs in cases.values())
print(
    f"\nPer case (image): {nc} images with >= 1 eligible line; fail-open images (written with >= 1 eligible "
    f"line < 90 % masked): {fc} ({100 * fc / nc:.1f} %); images where a miss was caught by verify "
    f"(quarantined, none fail-open): {qc}."
)
for key, title in [
    ("background", "background"),
    ("hbin", "measured ink height (px)"),
    ("value", "text value"),
    ("position", "position"),
    ("font_aa", "font / anti-aliasing"),
    ("sbin", "image size (long side)"),
    ("bits", "bits"),
    ("photometric", "photometric"),
    ("policy", "policy"),
    ("kind", "PHI kind"),
    ("n_lines", "lines per image"),
    ("cbin", "contrast (0-255)"),
    ("signed", "signed"),
]:
    print(f"\n### By {title}\n")
    print(hdr.format(title))
    groups = defaultdict(list)
    for r in el:
        groups[r[key]].append(r)
    for k in sorted(groups, key=lambda k: (len(k), k)):
        line(k, groups[k])
ms = sorted(float(r["wall_ms"]) for r in {r["idx"]: r for r in rows}.values())
print(
    f"\nTime per image (wall ms, whole deidentify_file): median {ms[len(ms) // 2]:.0f}, "
    f"p90 {ms[int(len(ms) * 0.9)]:.0f}, max {ms[-1]:.0f}"
)
by = defaultdict(list)
for r in {r["idx"]: r for r in rows}.values():
    by[r["sbin"]].append(float(r["wall_ms"]))
for k, v in sorted(by.items()):
    v.sort()
    print(f"- {k}: n={len(v)} median {v[len(v) // 2]:.0f} ms, max {v[-1]:.0f} ms")
if err:
    print("\nHarness errors:", [(r["idx"], r["reason"]) for r in err])
