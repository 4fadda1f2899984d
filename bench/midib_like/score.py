#!/usr/bin/env python
"""Score a deidflow output against the answer key of build_cohort.py, MIDI-B style.

Usage: python score.py COHORT OUTDIR LINKDIR LABEL [--json results.json]

Scoring follows the published semantics of the MIDI-B validator (CBIIT/MIDI_validation_script,
re-implemented here from its description, not copied):
  text_removed   : whole answer string, then each answer token (lower-cased, NLTK-like English stop words
                   and punctuation ignored) must not be a substring of str(output value); absent/empty passes.
                   Deviation: PN values are also split on '^' (stricter than NLTK, which keeps 'last^first').
  text_retained  : answer string (or every token) must be a substring of the output value.
  date_shifted   : original value must not be a substring of the output value; absent passes.
  uid_consistent : output value == uid_map[original]; absent passes.
  patid_consistent: output PatientID == supplied map's new id.
  tag_retained   : strict = output value equals input value (what the brief asks);
                   lenient = present and not empty (what the MIDI validator actually checks).
  pixels_retained: strict = PixelData bytes identical; lenient = decoded array identical.
  pixels_hidden  : share of planted text pixels still equal to the planted value <= 10 %.
Files not written (quarantined/failed) are reported separately: "MIDI-like" skips their actions (the
validator only scores files it finds), "strict" counts every action of a missing file as failed.
"""

import csv
import hashlib
import json
import os
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pydicom

STOP = set(
    """i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him
his himself she she's her hers herself it it's its itself they them their theirs themselves what which who whom this
that that'll these those am is are was were be been being have has had having do does did doing a an the and but if or
because as until while of at by for with about against between into through during before after above below to from up
down in out on off over under again further then once here there when where why how all any both each few more most
other some such no nor not only own same so than too very s t can will just don don't should should've now d ll m o re
ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma
mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn
wouldn't""".split()
)
PUNCT = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~“”‘’``•")


def tokens(s):
    s = s.lower()
    out = []
    for t in re.split(r"[\s^,;()\[\]\"]+", s):
        t = t.strip(".:;!?'\"")
        if not t or t in STOP or all(c in PUNCT for c in t):
            continue
        out.append(t)
    return out


def text_check(file_value, answer, method):
    fv = file_value.lower()
    av = answer.lower()
    if av and av in fv:
        return (method == "retain"), (1.0 if method == "retain" else 0.0), []
    toks = tokens(av)
    if not toks:
        return True, 1.0, []
    kept = [t for t in toks if t in fv]
    if method == "retain":
        return len(kept) == len(toks), len(kept) / len(toks), kept
    return not kept, 1 - len(kept) / len(toks), kept


def resolve(ds, path):
    cur = ds
    elem = None
    i = 0
    while i < len(path):
        step = path[i]
        if isinstance(step, int):
            if elem is None or elem.VR != "SQ" or len(elem.value) <= step:
                return None
            cur = elem.value[step]
            elem = None
        elif ":" in step:
            g, creator, ee = step.split(":")
            g = int(g, 16)
            blk = None
            for el in cur:
                if el.tag.group == g and 0x10 <= el.tag.element <= 0xFF and str(el.value).strip() == creator:
                    blk = el.tag.element
            if blk is None:
                return None
            tag = (g << 16) | (blk << 8) | int(ee, 16)
            elem = cur.get(tag)
            if elem is None:
                return None
        else:
            elem = cur.get(int(step, 16))
            if elem is None:
                return None
        i += 1
    return elem


def sval(elem):
    if elem is None:
        return None
    v = elem.value
    if v is None:
        return ""
    return str(v).strip()


def decoded_sha(ds):
    try:
        return hashlib.sha256(np.ascontiguousarray(ds.pixel_array).tobytes()).hexdigest()
    except Exception as e:  # noqa
        return f"decode-error:{type(e).__name__}"


def main():
    cohort, outdir, linkdir, label = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    key = json.load(open(cohort / "key" / "answer.json"))
    actions = key["actions"]
    # the key's own contradiction: a tag_retained for a tag that later got PHI planted in it
    # (ProtocolName, round 2) is dropped; the text_removed/text_retained pair scores that tag
    removed_paths = {(a["file"], json.dumps(a["path"])) for a in actions if a["action"] == "text_removed"}
    actions = [
        a
        for a in actions
        if not (a["action"] == "tag_retained" and (a["file"], json.dumps(a["path"])) in removed_paths)
    ]
    uid_map = {}
    with open(linkdir / "uid_map.csv") as f:
        for r in csv.DictReader(f):
            uid_map[r["id_old"]] = r["id_new"]
    pid_map = {}
    with open(cohort / "patient_map.csv") as f:
        for r in csv.DictReader(f):
            pid_map[r["original_patient_id"]] = r["new_patient_id"]
    # index outputs by SOPInstanceUID
    out_by_sop = {}
    for root, _, fs in os.walk(outdir):
        for fn in fs:
            if fn.endswith(".dcm"):
                p = os.path.join(root, fn)
                try:
                    d = pydicom.dcmread(p, stop_before_pixels=True, force=True)
                    out_by_sop[str(d.SOPInstanceUID)] = p
                except Exception:
                    pass
    # input files and their original SOP UIDs
    files = sorted({a["file"] for a in actions})
    in_sop = {}
    for a in actions:
        if a["action"] == "uid_consistent" and a["path"] == ["00080018"]:
            in_sop[a["file"]] = a["value"]
    out_of = {}
    for f in files:
        new = uid_map.get(in_sop.get(f, ""), None)
        out_of[f] = out_by_sop.get(new) if new else None
    missing = [f for f in files if not out_of[f]]

    cache_in, cache_out = {}, {}

    def ds_in(f):
        if f not in cache_in:
            cache_in[f] = pydicom.dcmread(cohort / "input" / f, force=True)
        return cache_in[f]

    def ds_out(f):
        if f not in cache_out:
            cache_out[f] = pydicom.dcmread(out_of[f], force=True)
        return cache_out[f]

    results = []
    for a in actions:
        act = a["action"]
        f = a["file"]
        r = dict(file=f, action=act, group=a["group"], path=a["path"], answer=a["value"])
        if not out_of[f]:
            r.update(missing=True, passed=False, lenient=False, score=0.0)
            results.append(r)
            continue
        o = ds_out(f)
        if act.startswith("pixels"):
            el = o.get(0x7FE00010)
        else:
            el = resolve(o, a["path"])
        v = sval(el) if not act.startswith("pixels") else None
        r["output"] = v
        passed = lenient = None
        score = None
        if act == "text_removed":
            if not v:
                passed, score = True, 1.0
            else:
                passed, score, kept = text_check(v, a["value"], "remove")
                r["kept_tokens"] = kept
        elif act == "text_retained":
            if not v:
                passed, score = False, 0.0
            else:
                passed, score, _ = text_check(v, a["value"], "retain")
        elif act == "date_shifted":
            passed = not (v and a["value"].replace("\\", "") in v.replace("\\", ""))
        elif act == "uid_consistent":
            if el is None:
                passed = True
            else:
                passed = v == uid_map.get(a["value"], "")
                r["expected"] = uid_map.get(a["value"], "")
        elif act == "patid_consistent":
            passed = v == pid_map.get(a["value"], "") if el is not None else True
            r["expected"] = pid_map.get(a["value"])
        elif act == "tag_retained":
            ie = resolve(ds_in(f), a["path"])
            iv = sval(ie)
            r["input"] = iv
            passed = v is not None and v == iv
            lenient = v is not None and v != ""
        elif act == "info_age_over_89":
            r["passed"] = None
            results.append(r)
            continue
        elif act == "pixels_retained":
            if el is None:
                passed = lenient = False
            else:
                passed = hashlib.sha256(el.value).hexdigest() == a["value"]
                lenient = passed or decoded_sha(o) == a.get("decoded_sha")
                r["output"] = "raw-identical" if passed else ("decoded-identical" if lenient else "changed")
                r["out_ts"] = str(o.file_meta.TransferSyntaxUID)
        elif act == "pixels_hidden":
            mp = cohort / "key" / "masks" / (f.replace("/", "__") + ".npz")
            z = np.load(mp)
            mask, planted = z["mask"], z["planted"]
            try:
                arr = o.pixel_array
                if arr.shape != planted.shape:
                    passed = False
                    r["output"] = f"shape {arr.shape} != {planted.shape}"
                else:
                    same = arr == planted
                    if same.ndim > mask.ndim:
                        same = same.all(axis=-1)
                    frac = float(same[mask].mean()) if mask.any() else 0.0
                    r["output"] = f"{frac:.1%} of planted text pixels unchanged"
                    passed = frac <= 0.10
                    score = 1 - frac
                    # how much of the image outside the text changed
                    r["outside_changed"] = float((~same)[~mask].mean())
            except Exception as e:
                passed = False
                r["output"] = f"decode error {e}"
        if lenient is None:
            lenient = passed
        r.update(
            missing=False, passed=passed, lenient=lenient, score=score if score is not None else float(bool(passed))
        )
        results.append(r)

    scored = [r for r in results if r["passed"] is not None or r.get("missing")]
    scored = [r for r in scored if r["action"] != "info_age_over_89"]
    print(f"# {label}: {len(files)} input files, {len(files) - len(missing)} written/found, {len(missing)} missing")
    for m in missing:
        print("  missing:", m)
    order = [
        "text_removed",
        "date_shifted",
        "uid_consistent",
        "patid_consistent",
        "tag_retained",
        "text_retained",
        "pixels_retained",
        "pixels_hidden",
    ]
    print(f"{'action':18} {'n(found)':>8} {'pass%':>7} {'lenient%':>8} {'n(all)':>7} {'strict%':>8}")
    Counter()
    for act in order + ["ALL"]:
        rs = [r for r in scored if (act == "ALL" or r["action"] == act)]
        found = [r for r in rs if not r["missing"]]
        if not rs:
            continue
        p = sum(1 for r in found if r["passed"]) / max(1, len(found))
        le = sum(1 for r in found if r["lenient"]) / max(1, len(found))
        s = sum(1 for r in rs if r["passed"]) / len(rs)
        print(f"{act:18} {len(found):8d} {100 * p:7.2f} {100 * le:8.2f} {len(rs):7d} {100 * s:8.2f}")
    # failures grouped
    print("\n## failing actions (found files), grouped by action / group")
    fails = defaultdict(list)
    for r in scored:
        if not r["missing"] and not r["passed"]:
            fails[(r["action"], r["group"])].append(r)
    for (act, grp), rs in sorted(fails.items(), key=lambda kv: -len(kv[1])):
        ex = rs[0]
        lenient_ok = sum(1 for r in rs if r["lenient"])
        print(f"- {act} / {grp}: {len(rs)} fails" + (f" ({lenient_ok} pass leniently)" if lenient_ok else ""))
        print(
            f"    e.g. {ex['file']} path={ex['path']} answer={str(ex['answer'])[:90]!r} "
            f"input={str(ex.get('input'))[:60]!r} output={str(ex.get('output'))[:120]!r} "
            f"kept={ex.get('kept_tokens')} exp={ex.get('expected')}"
        )
    print("\n## info: PatientAge > 89")
    for r in results:
        if r["action"] == "info_age_over_89" and not r.get("missing") and out_of[r["file"]]:
            r["output"] = sval(resolve(ds_out(r["file"]), r["path"]))
            print(f"  {r['file']}: input {r['answer']} -> output {r.get('output')!r}")
            break
    print("\n## pixel detail")
    for r in results:
        if r["action"] == "pixels_hidden" or (
            r["action"] == "pixels_retained" and not r["passed"] and not r["missing"]
        ):
            print(
                f"  {r['action']} {r['file']}: {r.get('output')} ts={r.get('out_ts')} "
                f"outside_changed={r.get('outside_changed')}"
            )
    if "--json" in sys.argv:
        json.dump(results, open(sys.argv[sys.argv.index("--json") + 1], "w"), indent=0, default=str)


if __name__ == "__main__":
    main()
