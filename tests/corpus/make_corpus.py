"""Deterministic generator of the labelled free-text corpus ``descriptors_generated.jsonl``.

Why: the free-text cleaner is measured on PHI-token recall and clinical-token retention; a
generated set gives volume and format variety (templates x fake values, fixed seed), while
the hand-written set keeps us honest about realistic phrasing. Run it from anywhere:

    .venv/bin/python tests/corpus/make_corpus.py          # rewrites the .jsonl next to this file

Every value here is fake. Each entry: {"text", "phi": [exact PHI substrings], "terms": {...}}.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

SEED = 20240611
N_ENTRIES = 360
OUT = Path(__file__).with_name("descriptors_generated.jsonl")

FAMILY = ["Smith", "Johnson", "Williams", "Brown", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
          "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
          "Lee", "Thompson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker", "Young", "Allen",
          "Nakamura", "Kowalczyk", "Okonkwo", "Fitzgerald", "Van der Berg", "Abernathy", "Delacroix"]
GIVEN = ["James", "Mary", "Robert", "Patricia", "Michael", "Jennifer", "William", "Linda", "David",
         "Elizabeth", "Richard", "Barbara", "Joseph", "Susan", "Charles", "Jessica", "Aiko", "Tomasz",
         "Ngozi", "Siobhan", "Mateo", "Ingrid", "Yusuf", "Priya", "Dmitri", "Leilani"]
STREETS = ["Maple", "Oak", "Cedar", "Pine", "Elm", "Washington", "Lakeview", "Hillcrest", "Sycamore",
           "Magnolia", "Chestnut", "Willow", "Meadowbrook", "Juniper", "Briarwood"]
SUFFIX = ["Street", "Avenue", "Road", "Drive", "Lane", "Boulevard", "Court", "St", "Ave", "Rd", "Dr", "Way"]
CITIES = ["Springfield", "Fairview", "Riverton", "Georgetown", "Ashland", "Greenville", "Franklin",
          "Clinton", "Salem", "Madison"]
STATES = ["IL", "OH", "CA", "TX", "NY", "WA", "GA", "MI", "PA", "NC"]
INSTITUTIONS = ["Mercy Hospital", "St. Luke's Medical Center", "Valley Regional Hospital",
                "University Medical Center", "Riverside Imaging Center", "Good Samaritan Hospital",
                "Northwest Radiology Associates", "Children's Hospital of Fairview", "Bayside Clinic"]
DOMAINS = ["example.org", "mail.com", "hospital.org", "clinic.net", "univ.edu"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
# Clinical fragments: these words must survive cleaning.
CLINICAL = [
    "CT HEAD W/O CONTRAST", "MRI BRAIN W/WO CONTRAST", "AX T2 FLAIR 5mm", "SAG T1 MPRAGE 1 mm",
    "CTA CHEST PE PROTOCOL", "XR CHEST PA/LAT", "US ABDOMEN COMPLETE", "MR L-SPINE W/O L4-L5",
    "CT C-SPINE C1-C7 2.5 mm", "DWI b1000 ADC", "PET/CT FDG WHOLE BODY", "MAMMO SCREENING BILAT 3D",
    "CT ABD/PELVIS W IV CONTRAST 120 kVp", "MR KNEE RT PD FS", "3.0T MRA CIRCLE OF WILLIS",
    "LUNG 0.5 mm SHARP", "CARDIAC CTA 75% PHASE", "DEXA L1-L4 HIP LT", "CT SINUS CORONAL 3 mm",
    "NM BONE SCAN WHOLE BODY", "FLUORO UGI SBFT", "MR PROSTATE MULTIPARAMETRIC T2 DWI",
    "XR FOOT 3 VIEWS LEFT", "CT ANGIO RUNOFF 0.625 mm", "SWI AXIAL 1.5T", "ECHO TTE LV FUNCTION",
]
REASONS = ["headache", "r/o PE", "fall", "follow-up nodule", "hematuria", "back pain, r/o HNP",
           "staging", "screening", "chest pain", "trauma", "seizure", "abdominal pain RLQ"]


def _date_formats(d: dt.date, rng: random.Random) -> str:
    mon = MONTHS[d.month - 1]
    fmts = [f"{d:%Y%m%d}", f"{d:%Y-%m-%d}", f"{d:%m/%d/%Y}", f"{d.month}/{d.day}/{d.year}", f"{d:%d.%m.%Y}",
            f"{d:%m/%d/%y}", f"{d:%d-%b-%Y}", f"{mon} {d.day}, {d.year}", f"{d.day} {mon} {d.year}",
            f"{mon[:3]} {d.day} {d.year}", f"{d:%d%b%Y}".upper(), f"{d:%Y/%m/%d}", f"{d:%d-%m-%Y}",
            f"{mon[:3]}. {d.day}, {d.year}"]
    return rng.choice(fmts)


def _rand_date(rng: random.Random, lo: int = 1925, hi: int = 2024) -> dt.date:
    return dt.date(rng.randint(lo, hi), rng.randint(1, 12), rng.randint(1, 28))


def _profile(rng: random.Random) -> dict[str, object]:
    fam, giv, mid = rng.choice(FAMILY), rng.choice(GIVEN), rng.choice(GIVEN + ["", "", ""])
    pn = f"{fam}^{giv}" + (f"^{mid}" if mid else "")
    phys = [f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}" for _ in range(rng.randint(1, 2))]
    street = f"{rng.randint(2, 9999)} {rng.choice(STREETS)} {rng.choice(SUFFIX)}"
    city, state = rng.choice(CITIES), rng.choice(STATES)
    area = rng.randint(201, 989)
    return {
        "patient_name": pn,
        "patient_id": rng.choice([f"{rng.randint(1000000, 99999999)}", f"MRN{rng.randint(10000, 999999)}",
                                  f"{rng.randint(10, 99)}-{rng.randint(100, 999)}-{rng.randint(100, 999)}",
                                  f"A{rng.randint(1000000, 9999999)}"]),
        "birth_date": f"{_rand_date(rng, 1925, 2010):%Y%m%d}",
        "other_dates": [f"{_rand_date(rng, 2015, 2024):%Y%m%d}"],
        "physicians": phys,
        "institution": rng.choice(INSTITUTIONS),
        "address": f"{street}^{city}^{state}^{rng.randint(10000, 99999)}",
        "phone": f"({area}) 555-{rng.randint(100, 9999):04d}",
        "accession": rng.choice([f"ACC{rng.randint(100000, 9999999)}", f"E{rng.randint(1000000, 99999999)}",
                                 f"{rng.randint(2015, 2024)}{rng.randint(100000, 999999)}"]),
    }


def _name_form(pn: str, rng: random.Random) -> str:
    parts = pn.split("^")
    fam, giv = parts[0], parts[1]
    forms = [f"{giv} {fam}", f"{fam}, {giv}", f"{fam} {giv}", f"{fam.upper()} {giv.upper()}", f"{fam}^{giv}",
             fam, fam.upper(), fam.lower(), f"{giv[0]}. {fam}", f"{giv.lower()} {fam.lower()}", giv]
    return rng.choice(forms)


def _slot(kind: str, prof: dict[str, object], rng: random.Random) -> str:
    """One PHI value of ``kind``, from the file's terms or (for pattern kinds) fresh."""
    if kind == "name":
        return _name_form(str(prof["patient_name"]), rng)
    if kind == "doc":
        fam, giv = str(rng.choice(prof["physicians"])).split("^")[:2]  # type: ignore[arg-type]
        return rng.choice([fam, f"{giv} {fam}", f"{fam.upper()}"])
    if kind == "titled":  # a name that is NOT in the terms: only the title pattern can find it
        return rng.choice(FAMILY[::-1])
    if kind == "date_term":
        src = rng.choice([str(prof["birth_date"])] + list(prof["other_dates"]))  # type: ignore[arg-type]
        return _date_formats(dt.date(int(src[:4]), int(src[4:6]), int(src[6:])), rng)
    if kind == "date_new":
        return _date_formats(_rand_date(rng, 1990, 2024), rng)
    if kind == "datetime":
        d = _rand_date(rng, 2010, 2024)
        h, m, s = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
        return rng.choice([f"{d:%Y-%m-%d}T{h:02d}:{m:02d}:{s:02d}", f"{d:%Y%m%d}{h:02d}{m:02d}{s:02d}",
                           f"{d:%m/%d/%Y} {h:02d}:{m:02d}", f"{d:%Y-%m-%d} {h:02d}:{m:02d}:{s:02d}"])
    if kind == "mrn":
        return rng.choice([str(prof["patient_id"]), f"{rng.randint(100000, 9999999)}",
                           f"MRN{rng.randint(10000, 99999999)}"])
    if kind == "acc":
        return rng.choice([str(prof["accession"]), f"A{rng.randint(1000000, 9999999)}",
                           f"{rng.randint(10, 99)}-{rng.randint(100, 999)}-{rng.randint(100, 999)}"])
    if kind == "phone":
        a = rng.randint(201, 989)
        return rng.choice([str(prof["phone"]), f"{a}-555-{rng.randint(1000, 9999)}",
                           f"({a}) 555-{rng.randint(1000, 9999)}", f"{a}.555.{rng.randint(1000, 9999)}",
                           f"+44 20 7946 {rng.randint(1000, 9999)}", f"+1 {a} 555 {rng.randint(1000, 9999)}"])
    if kind == "email":
        giv, fam = rng.choice(GIVEN).lower(), rng.choice(FAMILY).lower().replace(" ", "")
        return f"{giv}.{fam}{rng.randint(1, 99)}@{rng.choice(DOMAINS)}"
    if kind == "url":
        return rng.choice([f"https://portal.{rng.choice(DOMAINS)}/patient/{rng.randint(10000, 999999)}",
                           f"http://www.{rng.choice(DOMAINS)}/results?id={rng.randint(1000, 99999)}",
                           f"www.{rng.choice(DOMAINS)}"])
    if kind == "ssn":
        return f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"
    if kind == "street":
        return rng.choice([str(prof["address"]).split("^")[0],
                           f"{rng.randint(2, 9999)} {rng.choice(STREETS)} {rng.choice(SUFFIX)}",
                           f"PO Box {rng.randint(1, 9999)}"])
    if kind == "inst":
        return str(prof["institution"])
    raise ValueError(kind)


# (template, slot kinds). "{age}" is an old age (> 89) whose number alone is PHI.
TEMPLATES: list[tuple[str, tuple[str, ...]]] = [
    ("{c} - {0}", ("name",)),
    ("{0} {c}", ("name",)),
    ("{c} {0}", ("date_term",)),
    ("{c} DOB {0}", ("date_term",)),
    ("Patient: {0}, {c}", ("name",)),
    ("Name: {0} MRN: {1}", ("name", "mrn")),
    ("{c} acc {0}", ("acc",)),
    ("Accession # {0} - {c}", ("acc",)),
    ("Referred by Dr. {0} for {r}", ("doc",)),
    ("Dr {0} requests {c}", ("titled",)),
    ("Mr. {0}, {r}, {c}", ("titled",)),
    ("Mrs {0} {r}", ("titled",)),
    ("Call {0} with results of {c}", ("phone",)),
    ("{c}; contact {0} or {1}", ("phone", "phone")),
    ("Send report to {0}", ("email",)),
    ("{c} images at {0}", ("url",)),
    ("SSN {0} on requisition, {c}", ("ssn",)),
    ("Pt resides at {0}, {c}", ("street",)),
    ("{0} - {c}", ("inst",)),
    ("Outside study from {0} dated {1}", ("inst", "date_new")),
    ("Comparison {c} {0}", ("date_new",)),
    ("Prior exam {0}, {r}", ("datetime",)),
    ("{c} acquired {0}", ("datetime",)),
    ("{age} y/o {sex} {r} - {c}", ()),
    ("age {age}, {r}", ()),
    ("{c} {age3}Y", ()),
    ("{0} {1} {c}", ("name", "date_term")),
    ("{c} MRN {0} DOB {1} Dr. {2}", ("mrn", "date_term", "doc")),
    ("{r}. {c}. Ordering: {0}. Tel {1}", ("doc", "phone")),
    ("{c}", ()),
    ("{c} - {r}", ()),
    ("Hx: {r}; prior {c} {0} at {1}", ("date_new", "inst")),
    ("#{0} {c}", ("mrn",)),
    ("{0}: {c} ({r})", ("name",)),
]


def generate(seed: int = SEED, n: int = N_ENTRIES) -> list[dict[str, object]]:
    """The corpus entries, identical for the same seed."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prof = _profile(rng)
        tpl, kinds = TEMPLATES[i % len(TEMPLATES)]
        vals = [_slot(k, prof, rng) for k in kinds]
        phi = list(vals)
        fill: dict[str, str] = {"c": rng.choice(CLINICAL), "r": rng.choice(REASONS), "sex": rng.choice("MF")}
        if "{age}" in tpl or "{age3}" in tpl:
            age = rng.randint(90, 104)
            fill["age"] = str(age)
            fill["age3"] = f"{age:03d}"
            phi.append(f"{age:03d}Y" if "{age3}" in tpl else str(age))
        text = tpl.format(*vals, **fill)
        out.append({"text": text, "phi": phi, "terms": prof})
    return out


def main() -> None:
    with OUT.open("w", encoding="utf-8") as f:
        for entry in generate():
            f.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
