"""Free-text cleaning: measured on labelled corpora, plus behaviour the metrics cannot see."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from deid_core import freetext
from deid_core.errors import RuleError
from deid_core.freetext import PLACEHOLDER, TextCleaner, clean_text, merge_spans, truncate_for_vr
from deid_core.terms import PhiTerms, capture_terms

ROOT = Path(__file__).resolve().parents[1]
BENCH_INDEPENDENT = ROOT / "bench" / "freetext_independent.py"
CORPUS = ROOT / "tests" / "corpus"


def _load_module(name: str, path: Path):  # noqa: ANN202 - test helper
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


metrics = _load_module("freetext_metrics", ROOT / "bench" / "freetext_metrics.py")
make_corpus = _load_module("make_corpus", CORPUS / "make_corpus.py")


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    freetext.warm_up()


def _terms(**kw: str) -> PhiTerms:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return capture_terms(ds)


# ---------------------------------------------------------------- corpus measurement


@pytest.mark.parametrize("name", ["generated", "handwritten"])
def test_corpus_recall_and_retention(name: str) -> None:
    entries = metrics.load(metrics.SETS[name])
    assert len(entries) >= (300 if name == "generated" else 50)
    sc = metrics.score(entries)
    print(f"\n{name}: PHI-token recall {100 * sc.recall:.2f}% ({sc.phi_removed}/{sc.phi_total}), "
          f"clinical-token retention {100 * sc.retention:.2f}% ({sc.clin_kept}/{sc.clin_total}), "
          f"{1e6 * sc.seconds / sc.n:.0f} us/string")
    assert sc.recall >= 0.995, f"{len(sc.leaks)} PHI tokens survived"
    assert sc.retention >= 0.98, f"{len(sc.losses)} clinical tokens lost"


def test_generated_corpus_is_reproducible_from_its_script() -> None:
    lines = (CORPUS / "descriptors_generated.jsonl").read_text(encoding="utf-8").splitlines()
    regenerated = [json.dumps(e, ensure_ascii=False, sort_keys=True) for e in make_corpus.generate()]
    assert lines == regenerated
    assert len({json.loads(x)["text"] for x in lines}) > 250  # varied, not a few templates repeated


def test_corpus_labels_are_substrings_of_their_text() -> None:
    for path in metrics.SETS.values():
        for e in metrics.load(path):
            assert all(p in e["text"] for p in e["phi"]), path.name


def test_metric_counts_a_leaked_token_as_a_miss() -> None:
    entry = {"text": "MR KNEE Dr. Zbigniewski", "phi": ["Zbigniewski"], "terms": {}}
    good = metrics.score([entry])
    assert good.recall == 1.0 and good.retention == 1.0

    class Leaky(TextCleaner):
        def clean(self, text: str) -> str:
            return text

    orig = metrics.TextCleaner
    metrics.TextCleaner = Leaky
    try:
        bad = metrics.score([entry])
    finally:
        metrics.TextCleaner = orig
    assert bad.recall == 0.0


# ---------------------------------------------------------------- behaviour


CLINICAL = ["T2 FLAIR", "C1-C7", "L4-L5", "3.0T", "5mm", "120 kVp", "0.5 mm", "W/O", "IV",
            "AX T2 FLAIR 5mm", "CT C-SPINE C1-C7 2.5 mm W/O", "MR L-SPINE L4-L5 3.0T",
            "CT ABD/PELVIS W IV CONTRAST 120 kVp", "DWI b1000 ADC", "Scout 512x512 FOV 36 cm",
            "SE2 IM45 AXIAL 3D TOF MRA CIRCLE OF WILLIS", "ep2d_diff_3scan_trace_p2", "CTDIvol 12.4 mGy",
            "BI-RADS 4", "78 yo M", "Age 45", "TI-RADS 3 nodule 1.4 cm", "MR ENTEROGRAPHY",
            "DR SKELETAL SURVEY", "MS LESIONS FLAIR", "multiple nodules, masses",
            "Family history: mother Diabetes", "Mild Emphysema, stable", "father with hypertension",
            "pain 8/10", "L4/5 disc", "BP 120/80", "3/4 views", "Pt Anxious, refused contrast",
            "nodule per Fleischner Society guidelines", "Sister Mary Joseph nodule", "WIFE PRESENT",
            # near the shapes session 10 added: numbers after cue-like words, plates, Italian words, Roman grades
            "pH 7.35 pCO2 40", "LCP plate 3.5 with 6 screws", "plate 3 of 4", "Via Femoral 6 Fr sheath",
            "via PICC 20 cm", "Cell count 12 000", "mobile 10 mm lesion", "Grade III. 2 lesions", "MTA cement",
            "RT(R) verified", "Corso 2 di chemioterapia", "Largo 3 cm", "T1.5.3 sequence", "fx 1.III.2",
            # near session 10's shapes for a corpus in ten languages: fractions after articles, clock positions,
            # vertebrae that look like British postcodes, routes after a slash, "et al.", "Matrix 512 x 512"
            "il 2/3 distale del femore", "am 1/3 distalen", "den 1/2 dosen", "Stenose 70 % am 3/4",
            "saat 12 yonunde lezyon", "ore 12", "L5 1ST", "IV/po", "Dixon et al. Radiology 2019", "Matrix 512 x 512",
            "zona Periferica", "far Lateral disc", "per LP/ct", "Pan CT scan", "Bay Area",
            # near the sixth corpus's shapes: sequence labels ending in acronyms, a protocol's own "- BH", ages of
            # scores, "on Day 3", "born at 32 weeks"
            "sT1W_3D_TFE", "CARDIAC_T1T2MAP_LGE", "GTVnd_R_II", "AX T2 HASTE (BH)", "PD FS COR - BH",
            "on Day 3", "born at 32 weeks", "Born 1958", "pain 9/10", "3 Close observation", "- OK",
            "deformable reg (MIM)", "MTR Map", "mother Ca Breast", "Chest pain - ACS"]


@pytest.mark.parametrize("text", CLINICAL)
def test_clinical_text_survives_every_layer(text: str) -> None:
    assert TextCleaner(PhiTerms()).clean(text) == text


@pytest.mark.parametrize(("text", "gone"), [
    ("Referred by Dr. Okonjo for headache", "Okonjo"),
    ("REFERRED BY DR. OKONJO FOR CT", "OKONJO"),
    ("Mrs Vandermeer fall", "Vandermeer"),
    ("CT HEAD 03/14/2021", "03/14/2021"),
    ("seen 14-MAR-2021 09:30", "09:30"),
    ("Comparison 2021-03-14T09:30:00", "2021-03-14T09:30:00"),
    ("prior March 14th, 2021", "14th"),
    ("call (217) 555-0143", "555-0143"),
    ("call +44 20 7946 0958", "7946"),
    ("MRN12345 CT", "MRN12345"),
    ("acc A1234567", "A1234567"),
    ("ID 12-345-678", "12-345-678"),
    ("order #12345", "12345"),
    ("mail a.b@example.org", "example"),
    ("see https://pacs.example.org/x?id=9", "pacs"),
    ("SSN 078-05-1120", "1120"),
    ("92 y/o F", "92"),
    ("age 95, fall", "95"),
    ("AS 091Y", "091Y"),
    ("lives 1234 Maple Avenue", "Maple"),
    ("PO Box 12", "12"),
    ("Patient: Zorvath Quill, CT HEAD", "Quill"),
    ("c/o pain, wife Mary called", "Mary"),  # a relation names the person after it
    ("contact daughter Ann Lowe at home", "Lowe"),
    ("mother (Fairweather) present", "Fairweather"),
    ("DAUGHTER LINDA AT BEDSIDE", "LINDA"),
    ("Dr. A. Gupta reviewed", "Gupta"),  # an initial between the title and the name
    ("Befund: Dr. med. Hans Weber", "Weber"),
    ("discussed with Shapiro", "Shapiro"),  # a cue and one name
    ("RN Kayla placed IV", "Kayla"),
    ("scanned by JR", "JR"),
    ("fell on 3/14, pain since", "3/14"),  # a day and month with a date cue
    ("last seen 5/2022", "5/2022"),
    ("Kontrolle vom 15. März 2021", "März"),
    ("IRM du 3 janvier 2022", "janvier"),
    ("Musterstraße 12, 30161 Hannover", "Hannover"),
    ("transferred from Cedar Ridge Medical Center", "Ridge"),
    ("outside films from Klinikum Nordstadt", "Nordstadt"),
    ("Tel 0511 532-4410", "4410"),
    # session 10's audit of unseen data: national phone groupings after a cue, national IDs, streets that name
    # their kind first, Roman-numeral months, Japanese era dates, maiden names and technologists' credentials
    ("Tel. 912 345 678, esposa", "678"),
    ("tel. 601 234 567", "567"),
    ("cell 02 1234 5678", "5678"),
    ("phone: 555 0143", "0143"),
    ("联系电话 138 1234 5678", "5678"),
    ("전화 010-1234-5678", "5678"),
    ("CF RSSMRA60C03F205X", "RSSMRA60C03F205X"),
    ("NIR 1 57 03 75 113 042 87", "113 042"),
    ("Medicare 1EG4-TE5-MK73", "MK73"),
    ("Kennzeichen M-AB 1234", "1234"),
    ("Sig.ra, Via Roma 12, 20121 Milano", "Roma"),
    ("abita in via Garibaldi 7/A, Torino", "Torino"),
    ("Rua das Flores 123, Lisboa", "Flores"),
    ("Vor-CT 15.III.2023", "III"),
    ("撮影 R5.3.15", "R5.3.15"),
    ("S55.1.2生", "S55"),
    ("Mme X, née Dubois", "Dubois"),
    ("geb. Schneider", "Schneider"),
    ("MTA Schulz", "Schulz"),
    ("RT(R) Jones", "Jones"),
    ("scanned by Jones RT(R)", "Jones"),
    ("Ueberweisung Hr. X von Dr. Weber", "Weber"),  # "von" joined "Dr" to the first name, and "Dr." was no cue
    # session 10's fifth held-out corpus (ten languages): months, times beside dates, national IDs in digit
    # groups, serial numbers, streets, cities and institutions of other countries, titles, relations and cues
    ("kontrola 7 listopada 2022", "listopada"),
    ("visita del 12 maggio, poi", "maggio"),
    ("exame de 3 de outubro de 2021", "outubro"),
    ("Kontrolle 14 mart 2020", "mart"),
    ("gesprek op 4 maart om 14:20", "14:20"),
    ("visto il 12/10/2023 ore 9:40", "9:40"),
    ("call back at 4.15 pm on 3/11", "4.15"),
    ("LABEL_PTV_22NOV", "22NOV"),
    ("MRI Jun '19 compared", "'19"),
    ("filho: (21) 99876-5432", "5432"),
    ("ask for ext 3381", "3381"),
    ("BSN 1234.56.782 gecontroleerd", "782"),
    ("Aadhaar 1234 5678 9012", "9012"),
    ("pacemaker S/N PJK442211R", "PJK442211R"),
    ("woont Kerkstraat 14, Utrecht", "Utrecht"),
    ("zam. ul. Polna 3/5, 60-100 Poznan", "Polna"),
    ("Cumhuriyet Cad. No:12 D:4, Kadikoy", "Kadikoy"),
    ("Flat 3, London N1 9GU", "9GU"),
    ("Bor Vasagatan 2, Umea", "Umea"),
    ("born in Izmir, moved", "Izmir"),
    ("cekim Ankara'da yapildi", "Ankara"),
    ("MR in Ospedale San Carlo, Milano", "Carlo"),
    ("eerder in Ziekenhuis Rivierenland (Tiel)", "Tiel"),
    ("onderzocht door dr. Smits", "Smits"),
    ("mevr. De Vries belt", "Vries"),
    ("Bayan Aksoy getirdi", "Aksoy"),
    ("echtgenote Marleen aanwezig", "Marleen"),
    ("Besproken met Joost op MDO", "Joost"),
    ("Rep JKL/mb", "JKL"),
    ("PTV_edit_RS", "RS"),
    ("Paciente de 96 años", "96"),
    # the sixth: times beside dates, leading-zero day-months, extensions, quoted nicknames, sign-offs, ages after a
    # person, British streets and postcodes, roads, institutions and cities of other shapes, relations, cues
    ("stroke call 0815 3/2/24", "0815"),
    ("signed 14/03/2024 at 10.35", "10.35"),
    ("admitted 02/03/24 approx 2230hrs", "2230hrs"),
    ("MDT 14/02 agreed", "14/02"),
    ("ring ext. 5-2210", "2210"),
    ("likes to be called 'Mick' on the ward", "Mick"),
    ("reviewed, no change - J.T.", "J.T"),
    ("wife Maureen (94) at home", "94"),
    ("lives at 4 Abbey Close, Hexham NE46 3EA", "Abbey"),
    ("collision on Shore Rd, GCS 14", "Shore"),
    ("prior at Leeds Cancer Centre 12/01", "Leeds"),
    ("outside CT (Ridgeline Imaging, Boise) reviewed", "Boise"),
    ("Brgy. San Roque, Legazpi", "Roque"),
    ("daughter Ho Minh translates", "Ho "),
    ("copy to nurse Aoife", "Aoife"),
    ("Rücksprache mit Tobias erfolgt", "Tobias"),
])
def test_pattern_layer_removes_phi_shapes_without_file_terms(text: str, gone: str) -> None:
    out = TextCleaner(PhiTerms(), use_presidio=False).clean(text)
    assert gone not in out
    assert PLACEHOLDER in out


def test_file_terms_beat_the_clinical_allowlist_beside_another_part_of_the_name() -> None:
    # A patient really named "Flair Chest": layer 1 removes the name although both words are clinical, yet a
    # part of it alone is the sequence or the body part (an audit: "CT HEAD" lost for HEAD^MAY; session 9).
    terms = _terms(PatientName="Chest^Flair")
    out = TextCleaner(terms).clean("AX T2 FLAIR 5mm; seen: Flair Chest")
    assert out == f"AX T2 FLAIR 5mm; seen: {PLACEHOLDER}"
    assert "FLAIR" in TextCleaner(PhiTerms()).clean("AX T2 FLAIR 5mm")


def test_real_dicom_terms_are_removed_from_free_text() -> None:
    path = get_testdata_file("CT_small.dcm")
    assert isinstance(path, str)
    ds = pydicom.dcmread(path)
    terms = capture_terms(ds)
    name = str(ds.PatientName).replace("^", " ")
    da = str(ds.StudyDate)
    text = f"CT HEAD W/O for {name} on {da[4:6]}/{da[6:]}/{da[:4]} id {ds.PatientID} at {ds.InstitutionName}"
    out = TextCleaner(terms).clean(text)
    assert out.startswith("CT HEAD W/O for ")
    for part in [*name.split(), da[:4], str(ds.PatientID), str(ds.InstitutionName)]:
        assert part not in out


def test_phi_spans_are_sorted_merged_and_kinded() -> None:
    terms = _terms(PatientName="Smith^John", PatientID="4471203")
    text = "John Smith MRN 4471203 DOB 03/14/1952 call 217-555-0143"
    spans = TextCleaner(terms).phi_spans(text)
    assert spans == sorted(spans)
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert [text[s:e] for s, e, _ in spans] == ["John Smith", "4471203", "03/14/1952", "217-555-0143"]
    assert [k for _, _, k in spans] == ["name", "id", "date", "phone"]


def test_partial_presidio_hit_grows_to_whole_token() -> None:
    # Presidio's MEDICAL_LICENSE finds "RN0098221" inside the longer token; nothing of it may remain.
    out = TextCleaner(PhiTerms()).clean("ref QRN0098221X note")
    assert out == f"ref {PLACEHOLDER} note"


def test_merge_spans() -> None:
    assert merge_spans([(5, 9, "b"), (0, 3, "a"), (2, 6, "c"), (12, 14, "d"), (14, 15, "e")]) == [
        (0, 9, "a"), (12, 15, "d")]
    assert merge_spans([(3, 3, "x")]) == []


def test_cleaning_is_deterministic_and_idempotent() -> None:
    terms = _terms(PatientName="Garcia^Maria", PatientBirthDate="19300102")
    text = "Maria Garcia 92 y/o DOB 1/2/1930 seen by Dr. Okafor 12/01/22 16:40 at 88 Harbor View Road"
    a, b = TextCleaner(terms).clean(text), TextCleaner(terms).clean(text)
    assert a == b
    assert TextCleaner(terms).clean(a) == a


def test_presidio_runs_only_when_something_phi_shaped_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake(text: str) -> list[tuple[int, int, str]]:
        calls.append(text)
        return []

    monkeypatch.setattr(freetext, "_presidio_spans", fake)
    cleaner = TextCleaner(PhiTerms())
    cleaner.clean("AX T2 FLAIR 5mm C1-C7 120 kVp")        # digits, but all clinical
    cleaner.clean("CT HEAD 03/14/2021")                     # covered by layer 2
    assert calls == []
    cleaner.clean("ref 1234-ABCD")                          # unexplained digits -> backstop
    assert calls == ["ref 1234-ABCD"]
    TextCleaner(PhiTerms(), use_presidio=False).clean("ref 1234-ABCD")
    assert len(calls) == 1


def test_clean_for_vr_truncates_without_cutting_a_placeholder() -> None:
    cleaner = TextCleaner(_terms(PatientName="Smith^John"))
    out = cleaner.clean_for_vr("MRI BRAIN - Smith", "SH")
    assert len(out) <= 16 and out == "MRI BRAIN - [X]"
    out = cleaner.clean_for_vr("MRI BRAIN W/O - Smith", "SH")  # placeholder would straddle the cut
    assert out == "MRI BRAIN W/O -"
    long = "CT " + "HEAD " * 30
    assert len(cleaner.clean_for_vr(long, "LO")) <= 64
    assert cleaner.clean_for_vr(long, "UT") == long
    assert truncate_for_vr("A" * 2000, "ST") == "A" * 1024


def test_clean_for_vr_rejects_unknown_vr_without_echoing_text() -> None:
    with pytest.raises(RuleError, match="VR 'DS'") as err:
        TextCleaner(_terms(PatientName="Smith^John")).clean_for_vr("Smith", "DS")
    assert "Smith" not in str(err.value)


def test_clean_text_cache_follows_term_content_not_object_identity() -> None:
    t1 = _terms(PatientName="Smith^John")
    assert clean_text("CT Smith", t1) == "CT [X]"
    assert clean_text("CT Jones", t1) == "CT Jones"
    t1.merge(_terms(PatientName="Jones^Mary"))  # same object, new content
    assert clean_text("CT Jones", t1) == "CT [X]"
    assert clean_text("MRI BRAIN W/O - Smith", t1, vr="SH") == "MRI BRAIN W/O -"


def test_short_descriptor_speed() -> None:
    cleaner = TextCleaner(_terms(PatientName="Smith^John", PatientID="4471203", StudyDate="20230612"))
    texts = ["AX T2 FLAIR 5mm", "CT HEAD W/O CONTRAST", "SAG T1 MPRAGE 1 mm", "CT C-SPINE C1-C7 2.5 mm"]
    n = 500
    t0 = time.perf_counter()
    for i in range(n):
        cleaner.clean(texts[i % len(texts)])
    us = 1e6 * (time.perf_counter() - t0) / n
    print(f"\nshort clinical descriptor (no Presidio call): {us:.0f} us/string")
    assert us < 1000


@pytest.mark.parametrize("text", ["a.a." * 2500 + "@", "1." * 5000, "1-" * 5000, "1" * 10000,
                                  "1.1.1 " * 1600])
def test_pathological_long_text_stays_fast(text: str) -> None:
    # These took 7-19 s through Presidio / a naive email regex; UT/LT values can be this long.
    t0 = time.perf_counter()
    TextCleaner(PhiTerms()).clean(text)
    assert time.perf_counter() - t0 < 5.0


@pytest.mark.parametrize(("name", "recall", "retention"), [("corpus", 0.955, 0.995), ("heldout", 0.91, 0.98),
                                                          ("heldout3", 0.92, 0.99), ("heldout4", 0.87, 0.995),
                                                          ("heldout5", 0.94, 0.995), ("heldout6", 0.88, 0.994),
                                                          ("heldout7", 0.72, 0.995)])
def test_independent_corpus_recall_and_retention(name: str, recall: float, retention: float) -> None:
    """An audit's corpus of hospital-style strings the cleaner was not tuned on (names beyond the header,
    dates without a year or in other languages, institutions, European addresses). Measured before the
    audit's fixes: recall 69.9 % / 39.1 % (held-out), retention 99.1 % / 99.5 %; after: 94.3 % / 88.1 %,
    99.8 % / 98.6 %; after session 9's given names and retention fixes: 95.6 % / 91.4 %, retention unchanged.
    A third set written in session 9 without reading the cleaner (heldout3): 79.3 % / 99.1 % as written, 92.3 % /
    99.5 % after the fixes it led to; a fourth (heldout4), written after those fixes: 83.2 % / 99.5 % as written,
    99.7 % retention after its one fix; 85.2 % after session 10's fixes for an audit of unseen data (national phones,
    IDs and addresses), which were not tuned on it. A fifth (heldout5, ten languages): 73.2 % / 99.3 % as written,
    94.4 % / 99.5 % after the fixes it led to (heldout4, not tuned on, 86.4 %). A sixth (heldout6), written after
    those: 78.4 % / 99.5 % as written, 88.6 % after its fixes (heldout4 87.3 %). A seventh (heldout7), written after
    all of them: 71.4 % / 99.5 % as written, 73.0 % after four general rules. The floors keep what was gained."""
    spec = importlib.util.spec_from_file_location("freetext_independent", BENCH_INDEPENDENT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    s = mod.measure(name)
    removed, total = s["phi_tokens"]
    kept, clinical = s["clinical"]["all"]
    assert removed / total >= recall, f"{name}: recall {removed}/{total}"
    assert kept / clinical >= retention, f"{name}: retention {kept}/{clinical}"


def test_dotted_initials_before_a_name_of_the_file_go_with_it() -> None:
    """A held-out corpus: "Reported A.F. Balogun" kept "A.F." for a reporting physician BALOGUN^ADEBAYO^FOLARIN;
    initials that are no name part's stay ("C.T. Balogun" is unlikely, but its letters are not the name's)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.ReferringPhysicianName = "BALOGUN^ADEBAYO^FOLARIN"
    cleaner = TextCleaner(capture_terms(ds), use_presidio=False)
    assert "A.F" not in cleaner.clean("Reported A.F. Balogun 07-06-2024.")
    assert cleaner.clean("Reported C.T. Balogun").startswith("Reported C.T. ")


@pytest.mark.parametrize(("text", "gone"), [("discussed with patient (MRN-4471-993) by phone", "4471"),
                                            ("see also series 1.3.6.1.4.1.99996.77.3", "99996")])
def test_ids_glued_to_their_label_and_uids_after_any_word_go(text: str, gone: str) -> None:
    """A second audit: an MRN joined to its label by a hyphen, and a UID after "series" (taken for a series
    number), were kept in SR and image comments."""
    assert gone not in TextCleaner(PhiTerms(), use_presidio=False).clean(text)


def test_dotted_initials_after_a_name_of_the_file_go_with_it() -> None:
    """A held-out corpus: "ESFANDIARI B.R." and "KOVALENKO O.P." kept their initials."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName, ds.ReferringPhysicianName = "KOVALENKO^OLENA^PETRIVNA", "ESFANDIARI^BAHRAM^REZA"
    cleaner = TextCleaner(capture_terms(ds), use_presidio=False)
    assert cleaner.clean("Prior CD - ESFANDIARI B.R. (Dey)") == "Prior CD - [X] (Dey)"
    assert cleaner.clean("Prior CD - KOVALENKO O.P. (Dey)") == "Prior CD - [X] (Dey)"
    assert cleaner.clean("Kovalenko C.T. done") == "[X] C.T. done"  # not the name's initials
