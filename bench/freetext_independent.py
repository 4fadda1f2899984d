"""The free-text cleaner on an independent labelled corpus: strings written by an audit that did not tune
the cleaner (529 in ``tests/corpus/independent_corpus.json``, 60 more written after the fixes it proposed
in ``independent_heldout.json``), each with a small synthetic header whose terms are captured the real way.

    .venv/bin/python bench/freetext_independent.py [--corpus heldout] [--no-presidio] [--quiet]

Token = maximal run of letters/digits. A token is removed when any character of it lies in a span the
cleaner replaces. Tokens inside [[PHI]] count for recall, tokens inside {{neutral}} are not scored, all
other tokens count for retention (eponyms also separately). Prints corpus text (synthetic) for misses.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pydicom.dataset import Dataset  # noqa: E402

CORPUS_DIR = Path(__file__).resolve().parents[1] / "tests" / "corpus"
CORPORA = {"corpus": CORPUS_DIR / "independent_corpus.json", "heldout": CORPUS_DIR / "independent_heldout.json",
           # 168 strings a helper wrote in session 9 without reading the cleaner (79.3 % recall, 99.1 % retention
           # before the fixes it led to)
           "heldout3": CORPUS_DIR / "independent_heldout3.json",
           # 170 more, written after session 9's fixes, also without reading the cleaner: scored as written (83.2 %
           # recall, 99.5 % retention); its only fix is "INR 3.4." no longer taken for a date (99.7 %)
           "heldout4": CORPUS_DIR / "independent_heldout4.json",
           # 180 more in ten languages, written in session 10 by a helper that did not read the cleaner: 73.2 % recall,
           # 99.3 % retention as written; 94.4 % / 99.5 % after the fixes it led to
           "heldout5": CORPUS_DIR / "independent_heldout5.json",
           # 170 more (English-speaking countries and six other languages), written after heldout5's fixes, also
           # without reading the cleaner: 78.4 % recall, 99.5 % retention as written; 88.6 % / 99.5 % after its fixes
           "heldout6": CORPUS_DIR / "independent_heldout6.json",
           # 160 more (Canada, Australia, South Africa, Mexico, Israel, Iran, Japan, Greece, Ukraine, US), written
           # after all of session 10's fixes: 71.4 % recall, 99.5 % retention as written (the honest figure for
           # text deidflow has not seen); 73.0 % after four general rules it shared with audits
           "heldout7": CORPUS_DIR / "independent_heldout7.json"}
TOKEN = re.compile(r"[^\W_]+")


def header_dataset(h: dict) -> Dataset:
    ds = Dataset()
    for kw, v in h.items():
        setattr(ds, kw, v)
    return ds


def run(corpus: dict, use_presidio: bool = True):
    from deid_core import freetext
    from deid_core.terms import TermMatcher, capture_terms

    terms_of = {g: capture_terms(header_dataset(h)) for g, h in corpus["headers"].items()}
    rows = []
    for it in corpus["items"]:
        text = it["text"]
        terms = terms_of[it["group"]]
        cleaner = freetext.TextCleaner(terms, use_presidio=use_presidio)
        spans = cleaner.phi_spans(text)
        out = cleaner.clean(text)
        if use_presidio:
            assert out == freetext.clean_text(text, terms, "UT"), (text, out)
        header_spans = [(s.start, s.end) for s in TermMatcher(terms).find(text)]
        removed = [False] * len(text)
        for s, e, _k in spans:
            for i in range(s, e):
                removed[i] = True
        hdr = [False] * len(text)
        for s, e in header_spans:
            for i in range(s, e):
                hdr[i] = True

        def label_of(a: int, b: int, it: dict = it) -> tuple:
            for p in it["phi"]:
                if p["start"] <= a and b <= p["end"]:
                    return ("phi", p)
            for n in it["neutral"]:
                if n["start"] <= a and b <= n["end"]:
                    return ("neutral", n)
            for e in it["eponyms"]:
                if e["start"] <= a and b <= e["end"]:
                    return ("eponym", e)
            return ("clinical", None)

        toks = []
        for m in TOKEN.finditer(text):
            kind, lab = label_of(m.start(), m.end())
            toks.append({"tok": m.group(0), "start": m.start(), "end": m.end(), "kind": kind,
                         "cat": lab["cat"] if kind == "phi" else kind,
                         "removed": any(removed[m.start():m.end()]),
                         "by_header": any(hdr[m.start():m.end()])})
        rows.append({"item": it, "out": out, "tokens": toks})
    return rows


def summarize(rows):
    cat = defaultdict(lambda: [0, 0])         # PHI category -> [removed, total] tokens
    ent = defaultdict(lambda: [0, 0])         # PHI category -> [fully removed, total] spans
    path = defaultdict(lambda: [0, 0])        # PHI category -> [removed by header terms, total]
    clin = defaultdict(lambda: [0, 0])        # clinical subclass -> [kept, total]
    misses, over = [], []
    for r in rows:
        it = r["item"]
        for p in it["phi"]:
            ts = [t for t in r["tokens"] if t["kind"] == "phi" and p["start"] <= t["start"] and t["end"] <= p["end"]]
            ent[p["cat"]][1] += 1
            ent[p["cat"]][0] += all(t["removed"] for t in ts)
            leaked = [t["tok"] for t in ts if not t["removed"]]
            if leaked:
                misses.append({"cat": p["cat"], "span": p["text"], "leaked": leaked, "text": it["text"],
                               "out": r["out"], "group": it["group"], "lang": it["lang"]})
        for t in r["tokens"]:
            if t["kind"] == "phi":
                c = cat[t["cat"]]
                c[1] += 1
                c[0] += t["removed"]
                path[t["cat"]][1] += 1
                path[t["cat"]][0] += t["by_header"]
                if it["lang"] != "en":
                    cat["@lang:" + it["lang"]][1] += 1
                    cat["@lang:" + it["lang"]][0] += t["removed"]
            elif t["kind"] in ("clinical", "eponym"):
                subs = ["all", t["kind"], "lang:" + it["lang"], "field:" + it["field"]]
                if t["kind"] == "eponym" and t["by_header"]:
                    subs.append("eponym=header-name collision")
                elif t["kind"] == "eponym":
                    subs.append("eponym (no header collision)")
                for s in subs:
                    clin[s][1] += 1
                    clin[s][0] += not t["removed"]
                if t["removed"]:
                    over.append({"tok": t["tok"], "kind": t["kind"], "text": it["text"], "out": r["out"],
                                 "group": it["group"], "field": it["field"]})
    tot = [sum(v[0] for k, v in cat.items() if not k.startswith("@")),
           sum(v[1] for k, v in cat.items() if not k.startswith("@"))]
    return {"phi_tokens": tot, "by_cat": dict(cat), "entities": dict(ent), "header_path": dict(path),
            "clinical": dict(clin), "misses": misses, "over": over}


def pct(a, b):
    return f"{100 * a / b:6.2f}%" if b else "   n/a"


def print_summary(s, quiet=False):
    r, t = s["phi_tokens"]
    k, n = s["clinical"]["all"]
    print(f"PHI-token recall      {pct(r, t)} ({r}/{t})")
    print(f"clinical retention    {pct(k, n)} ({k}/{n})")
    e = s["clinical"].get("eponym", [0, 0])
    print(f"eponym retention      {pct(*e)} ({e[0]}/{e[1]})")
    print("\nPHI category            token recall         span recall    tokens found by header terms")
    for c in sorted(s["by_cat"], key=lambda c: (c.startswith("@"), c)):
        a, b = s["by_cat"][c]
        ea, eb = s["entities"].get(c, [0, 0])
        ha, hb = s["header_path"].get(c, [0, 0])
        print(f"  {c:22s} {pct(a, b)} ({a:3d}/{b:3d})  {pct(ea, eb)} ({ea:3d}/{eb:3d})  {ha:3d}/{hb:3d}")
    print("\nClinical retention by subclass")
    for c in sorted(s["clinical"]):
        a, b = s["clinical"][c]
        print(f"  {c:40s} {pct(a, b)} ({a}/{b})")
    if quiet:
        return
    print(f"\nMISSES ({len(s['misses'])} spans)")
    for m in sorted(s["misses"], key=lambda m: m["cat"]):
        print(f"  [{m['cat']}] leaked {m['leaked']} of {m['span']!r}: {m['text']!r} -> {m['out']!r}")
    print(f"\nOVER-REMOVALS ({len(s['over'])} tokens)")
    for o in s["over"]:
        print(f"  [{o['kind']}] {o['tok']!r}: {o['text']!r} -> {o['out']!r}")


def measure(name: str = "corpus", use_presidio: bool = True) -> dict:
    """Summary (``summarize``) of the cleaner on one of ``CORPORA``, or on a corpus file of the same format."""
    path = CORPORA[name] if name in CORPORA else Path(name)
    return summarize(run(json.loads(path.read_text(encoding="utf-8")), use_presidio=use_presidio))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default="corpus",
                    help=f"one of {', '.join(sorted(CORPORA))}, or the path of a corpus file of the same format")
    ap.add_argument("--no-presidio", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args()
    s = measure(a.corpus, use_presidio=not a.no_presidio)
    print_summary(s, a.quiet)
    if a.json:
        Path(a.json).write_text(json.dumps(s, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
