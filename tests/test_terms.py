"""Capture of a file's identifiers and the tolerant matching used on OCR text."""

from __future__ import annotations

import pydicom
from pydicom.data import get_testdata_file

from deid_core.terms import ID, NAME, PhiTerms, TermMatcher, capture_terms, date_variants


def test_capture_and_exact_matching_on_a_real_file() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    m = TermMatcher(capture_terms(ds))
    assert [s.kind for s in m.find("Patient CompressedSamples^CT1 seen")] == ["name"]
    assert m.find("CT1, CompressedSamples") and m.find("ct1 compressedsamples")  # order and case
    assert not m.find("CT CHEST W/O CONTRAST")


def test_ocr_misreads_match_but_common_words_of_id_terms_do_not() -> None:
    t = PhiTerms()
    t.add("STATE HIE", ID)  # an issuer: its words are common words
    t.add("MRN51455055", ID)
    t.add("Rodriguez", NAME)
    m = TermMatcher(t)
    assert m.fuzzy_token_kind("MRN5l455O55") == ID  # digit/letter confusions
    assert m.fuzzy_token_kind("Rodriquez") == NAME  # one edit
    assert m.fuzzy_token_kind("tate") is None  # speckle read as a word is not the issuer
    assert m.fuzzy_token_kind("STATE") is None
    assert [s.kind for s in m.find("from STATE HIE")] == [ID]  # the whole term still matches exactly


def test_date_variants_cover_common_formats() -> None:
    v = set(date_variants("19610304"))
    assert {"1961-03-04", "03/04/1961", "3/4/1961", "04.03.1961", "Mar 4, 1961", "04-Mar-1961"} <= v


# --------------------------------------------------------------------------------------------
# The trie-compiled matcher finds exactly what the former flat alternation found.

import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from deid_core import terms as terms_mod  # noqa: E402
from deid_core.terms import (  # noqa: E402
    _ADDRESS_KEYWORDS,
    _EMAIL_RE,
    _ID_KEYWORDS,
    _INSTITUTION_KEYWORDS,
    _OTHER_KEYWORDS,
    _PHONE_KEYWORDS,
    ADDRESS,
    DATE,
    EMAIL,
    INSTITUTION,
    OTHER,
    PHONE,
    Span,
    Term,
    _norm,
    _term_pattern,
    _values,
    address_variants,
    fold_marks,
    id_variants,
    institution_variants,
    name_variants,
    phone_variants,
)

_CORPUS = Path(__file__).parent / "corpus"
_BUNDLED = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "rtstruct.dcm", "693_UNCR.dcm",
            "image_dfl.dcm", "JPEG2000.dcm", "SC_rgb.dcm", "US1_UNCR.dcm", "emri_small.dcm",
            "chr_ref.dcm", "chrH31.dcm", "chrJapMulti.dcm", "chrGreek.dcm", "chrRuss.dcm", "chrX1.dcm"]


def _reference_find(ordered: tuple[Term, ...], text: str) -> list[Span]:
    """The former implementation, kept verbatim: one flat alternation, kinds by a linear scan."""
    if not ordered or not text:
        return []
    kind_of = {t.text.casefold(): t.kind for t in ordered}
    alternation = "|".join(f"(?:{_term_pattern(t.text)})" for t in ordered)
    # (the guard as ``terms._compile_regex`` has it since session 10: only where the term's own edge is ASCII)
    regex = re.compile(rf"(?:(?<![0-9A-Za-z])|(?![0-9A-Za-z]))(?:{alternation})(?:(?![0-9A-Za-z])|(?<![0-9A-Za-z]))",
                       re.IGNORECASE)

    def kind_for(matched: str) -> str:
        key = matched.casefold()
        if key in kind_of:
            return kind_of[key]
        norm = " ".join(re.split(r"[\s^,]+", key))
        for t, kind in kind_of.items():
            if " ".join(re.split(r"[\s^,]+", t)) == norm:
                return kind
        return OTHER

    return [Span(m.start(), m.end(), kind_for(m.group(0))) for m in regex.finditer(text) if m.end() > m.start()]


def _ocr_like(text: str, rng: random.Random) -> list[str]:
    """Texts a matcher meets on OCR output or headers: re-cased, re-separated, misread, glued, cut."""
    out = [text, text.upper(), text.lower(), text.title(), re.sub(r"[\s^,]+", "  ", text),
           re.sub(r"[\s^,]+", ", ", text), re.sub(r"[\s^,]+", "^", text), re.sub(r"[\s^,]+", "", text),
           terms_mod.ocr_digits(text), text.replace("0", "O").replace("1", "l"), f"x{text}", f"{text}7",
           f"({text})", f"{text}-Jones", f"{text}.", f" ,^{text}^, ", text[: max(1, len(text) - 1)],
           text[1:], text[: len(text) // 2]]
    if len(text) > 3:
        i = rng.randrange(len(text))
        out.append(text[:i] + rng.choice("abcXYZ019 .-,^") + text[i + 1:])
    return out


def _texts_for(ordered: tuple[Term, ...], corpus: list[str], rng: random.Random) -> list[str]:
    texts = list(corpus)
    strings = [t.text for t in ordered]
    for s in strings:
        texts += _ocr_like(s, rng)
    for _ in range(60):  # several identifiers on one line, as in overlays and descriptions
        picks = rng.sample(strings, min(3, len(strings)))
        texts.append(rng.choice([" ", ", ", "/", " - ", "^", ""]).join(picks))
    return texts


def _check_same(ordered: tuple[Term, ...], texts: list[str]) -> int:
    m = TermMatcher(PhiTerms(set(ordered)))
    # the regex part only (glued IDs: test_long_ids_are_found_glued_to_other_characters; glued names:
    # test_header_placements.test_a_long_name_glued_to_other_characters_is_found; IDs in digit groups:
    # test_unseen_placements.test_ids_in_digit_groups_are_leaks_and_short_runs_are_not)
    m._camel = None  # (camel-case names: test_a_short_name_in_camel_case_is_found)
    m._glued_ids = m._grouped_ids = m._glued_names = m._glued_dates = m._digit_glued_names = ()  # (glued dates and
    # names glued to digits: test_typed_placements.test_a_date_glued_to_letters_in_a_label_is_found and
    # test_compound_and_short_surnames_written_solid_or_glued_to_digits_are_found)
    # the matcher works on folded terms and texts without combining marks (``fold_marks``; ``find`` maps the
    # spans back to the text: test_spans_of_decomposed_text_cover_the_marks)
    folded = tuple(dict.fromkeys(Term(fold_marks(t.text)[0], t.kind) for t in ordered))
    assert m._ordered == folded
    found = 0
    for text in texts:
        plain = fold_marks(text)[0]
        got = m._find_folded(plain)
        assert got == _reference_find(folded, plain), "trie matcher differs from the flat alternation"
        found += len(m.find(text))
    return found


def _capture_same(read: Callable[[], pydicom.Dataset]) -> tuple[Term, ...]:
    """capture_terms (undecoded elements skipped, variants cached) captures exactly what the former
    implementation captured."""
    fast = capture_terms(read())
    full = _reference_capture(read())
    assert fast.terms == full.terms and fast.dates == full.dates
    return tuple(fast)


def _reference_capture(ds: pydicom.Dataset) -> PhiTerms:
    """The former capture_terms, kept verbatim: every element decoded, every variant added."""
    terms = PhiTerms()

    def visit(d: pydicom.Dataset) -> None:
        for tag in list(d.keys()):
            try:
                elem = d[tag]
            except Exception:  # an element that cannot be decoded: nothing to capture, scrub removes it
                continue
            if elem.VR == "SQ":
                for item in elem.value or []:
                    visit(item)
                continue
            try:
                vals = list(_values(elem.value))
            except Exception:  # an undecodable value: nothing to capture, scrub removes it
                continue
            kw = elem.keyword
            for v in vals:
                if not v.strip():
                    continue
                if elem.VR == "PN":
                    for n in name_variants(v):
                        terms.add(n, NAME)
                elif elem.VR == "DA" and not elem.tag.is_private:
                    for dv in date_variants(v):
                        terms.add(dv, DATE)
                    if re.fullmatch(r"\d{8}", v.strip()):
                        terms.dates.add(v.strip())
                elif elem.VR == "DT" and not elem.tag.is_private and re.match(r"\d{8}", v.strip()):
                    terms.dates.add(v.strip()[:8])
                    for dv in date_variants(v.strip()[:8]):
                        terms.add(dv, DATE)
                elif kw in _ID_KEYWORDS:
                    for iv in id_variants(v):
                        if len(iv) >= 3:
                            terms.add(iv, ID)
                elif kw in _ADDRESS_KEYWORDS:
                    for av in address_variants(v):
                        terms.add(av, ADDRESS)
                elif kw in _PHONE_KEYWORDS:
                    for pv in phone_variants(v):
                        terms.add(pv, PHONE)
                elif kw in _INSTITUTION_KEYWORDS:
                    for iv in institution_variants(v):
                        terms.add(iv, INSTITUTION)
                elif kw in _OTHER_KEYWORDS and len(v) >= 3:
                    terms.add(v, OTHER)
                if elem.VR in ("LO", "LT", "ST", "UT", "SH", "UC"):
                    for email in _EMAIL_RE.findall(v):
                        terms.add(email, EMAIL)
            if kw == "OtherPatientIDsSequence":
                pass  # handled through recursion (PatientID inside)

    visit(ds)
    return terms


def _corpus() -> list[dict]:
    rows = []
    for p in sorted(_CORPUS.glob("*.jsonl")):
        rows += [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def test_trie_matcher_equals_flat_alternation_on_bundled_and_cohort_files(tmp_path: Path) -> None:
    from deid_core.synth import generate_cohort

    rows = _corpus()
    corpus = [r["text"] for r in rows]
    rng = random.Random(5)
    sets: list[tuple[Term, ...]] = []
    for name in _BUNDLED:
        path = get_testdata_file(name)
        if isinstance(path, str):
            sets.append(_capture_same(lambda p=path: pydicom.dcmread(p, force=True)))
    answer = generate_cohort(tmp_path / "cohort", 2, 3)
    for f in answer["files"]:
        try:
            pydicom.dcmread(tmp_path / "cohort" / f["path"], stop_before_pixels=True)
        except Exception:  # the cohort's deliberately broken inputs
            continue
        sets.append(_capture_same(lambda p=tmp_path / "cohort" / f["path"]: pydicom.dcmread(p)))
    sets = list(dict.fromkeys(s for s in sets if s))
    assert len(sets) >= 15
    found = 0
    for ordered in sets:
        found += _check_same(ordered, _texts_for(ordered, corpus[::7], rng))
    assert found > 1000  # the texts really exercise the matcher


def test_trie_matcher_equals_flat_alternation_on_the_freetext_corpus() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from freetext_metrics import terms_from_dict

    rng = random.Random(9)
    found = 0
    for row in _corpus():
        ordered = tuple(terms_from_dict(row["terms"]))
        texts = [row["text"], *_ocr_like(row["text"], rng)]
        texts += [t for p in row.get("phi", []) for t in _ocr_like(p, rng)]
        found += _check_same(ordered, texts)
    assert found > 500


@pytest.mark.parametrize("texts", [
    ["Ab", "ab-cd", "AB-CD", "ab", "x"],  # a term that is a prefix of another, with punctuation
    ["2021", "2021-03-04", "2021 03 04", "20210304", "03/04/2021"],
    [",,", "^^ab", "a b", "ab", "A^B"],  # a term that is only separators
    ["abzxxxxx", "ab z.q", "abz"],  # a separator branch between two same-letter branches
    ["abc.d.e", "ab c.x", "abc", "ab.c", "abc.", "abc.d"],
    ["Ålesund", "ålesund", "ſmith", "smith", "Kelvin", "\u212aelvin", "İstanbul", "istanbul"],
])
def test_trie_matcher_equals_flat_alternation_on_edge_terms(texts: list[str]) -> None:
    t = PhiTerms()
    for i, s in enumerate(texts):
        t.add(s, [NAME, ID, OTHER][i % 3])
    ordered = tuple(t)
    probe = [*texts, " ".join(texts), "".join(texts), "-".join(texts), "ab cd", "ab-c", "2021-03", "smith ſmith",
             "\u212aelvin kelvin", "İSTANBUL istanbul", "x,,y", ",,", "abz.q", "ab c.d.e"]
    _check_same(ordered, probe + [p.upper() for p in probe] + [p.casefold() for p in probe])


def test_kind_of_a_reseparated_match_comes_from_the_normalised_map() -> None:
    t = PhiTerms()
    t.add("Smith, John", NAME)
    t.add("MRN 123", ID)
    m = TermMatcher(t)
    assert [s.kind for s in m.find("SMITH^^JOHN and mrn,123")] == [NAME, ID]
    assert _norm("a,^ b") == "a b"


@pytest.mark.parametrize("implicit", [True, False])
def test_capture_skipping_undecoded_elements_keeps_emails_and_listed_keywords(implicit: bool) -> None:
    from io import BytesIO

    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyDescription = "ask jo.doe@clinic.org"
    ds.AdmissionID = "ADM-77123"
    ds.add_new(0x00291010, "LO", "mail x.y@z.net")  # private text
    ds.add_new(0x00291011, "DS", "12.5")
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    got = _capture_same(lambda: pydicom.dcmread(BytesIO(buf.getvalue())))
    texts = {t.text for t in got}
    assert {"jo.doe@clinic.org", "ADM-77123", "ADM77123"} <= texts


def test_long_ids_are_found_glued_to_other_characters() -> None:
    t = PhiTerms()
    t.add("AB1234", ID)
    t.add("4471", ID)  # short: only with boundaries
    t.add("123456", ID)  # all digits: only with boundaries (a time "101234567" holds any digits)
    m = TermMatcher(t)
    assert [(s.start, s.end, s.kind) for s in m.find("SeriesDescription ptAB1234_fu")] == [(20, 26, ID)]
    assert m.contains("xab1234x") and not m.contains("x4471x")
    assert [(s.start, s.end) for s in m.find("MRN 4471 and x4471")] == [(4, 8)]
    assert not m.contains("StudyTime 0912345612")


def test_generic_place_words_are_no_tolerant_tokens() -> None:
    """ "Falls" of a city "Kestrel Falls": an MR's anatomy read "Fall" at 30 % was masked as an address (a
    MIDI-B-like audit). The distinctive word stays tolerant, the whole name exact."""
    from deid_core.terms import ADDRESS, PhiTerms, TermMatcher, address_variants

    t = PhiTerms()
    for v in address_variants("6191 Copperfield Drive, Kestrel Falls, OR 97301"):
        t.add(v, ADDRESS)
    m = TermMatcher(t)
    assert m.fuzzy_token_kind("Fall") is None and m.fuzzy_token_kind("Drive") is None
    assert m.fuzzy_token_kind("Kestral") == ADDRESS and m.fuzzy_token_kind("Copperfie1d") == ADDRESS
    assert [s.kind for s in m.find("from Kestrel Falls")] == [ADDRESS]


import pytest  # noqa: E402


@pytest.mark.parametrize(("name", "text", "kept", "gone"), [
    ("FONSECA DE ALMEIDA^RODRIGO", "CEC de orofaringe; pt Fonseca De Almeida", "CEC de orofaringe", "Almeida"),
    ("VAN DER HEIJDEN^JAN", "afwijking van de lever; dhr Van Der Heijden", "van de lever", "Heijden"),
    ("AL-HASHIMI^OMAR", "seen al fresco; Al-Hashimi", "al fresco", "Hashimi"),
])
def test_particles_of_a_compound_surname_are_no_terms_alone_but_the_surname_is(name: str, text: str, kept: str,
                                                                               gone: str) -> None:
    """A fresh held-out corpus: every "de" of a Portuguese report went for a patient FONSECA DE ALMEIDA."""
    from pydicom.dataset import Dataset

    from deid_core.freetext import clean_text

    ds = Dataset()
    ds.PatientName = name
    terms = capture_terms(ds)
    assert not {t.text.casefold() for t in terms} & {"de", "van", "der", "al"}
    out = clean_text(text, terms, "LT")
    assert kept in out and gone not in out and f"{name.split('^')[0].split()[0].title()} " not in out


def test_an_adjective_that_is_a_surname_counts_only_beside_another_part() -> None:
    """An audit: "Herdbefund klein" (lesion small) became "Herdbefund [X]" for a patient KLEIN^ANNA."""
    from pydicom.dataset import Dataset

    from deid_core.freetext import clean_text

    ds = Dataset()
    ds.PatientName = "KLEIN^ANNA"
    out = clean_text("Herdbefund klein; Rückruf Anna Klein", capture_terms(ds), "LT")
    assert out.startswith("Herdbefund klein;") and "Klein" not in out


def test_a_short_name_in_camel_case_is_found() -> None:
    """An audit: "Rodilla_JMGarcia" kept GARCIA (6 letters: too short to be found glued in any case)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName = "GARCIA LOPEZ^JUAN"
    m = TermMatcher(capture_terms(ds))
    for text, found in [("Rodilla_JMGarcia", ["Garcia"]), ("GarciaLopez", ["GarciaLopez"]),
                        ("LopezGarcia_T1", ["Lopez", "Garcia"]), ("PlanGarcia2", ["Garcia"])]:
        assert m.contains(text) and [text[sp.start:sp.end] for sp in m.find(text)] == found
    for text in ["Garcian", "garciax", "MRGARCIAX", "Lopezian"]:  # inside a longer word, or not in title case
        assert not m.find(text), text


def test_a_cjk_name_is_found_right_after_latin_letters_or_digits() -> None:
    """The ASCII guard is for terms with an ASCII edge: "CT张先生" is Mr Zhang after a modality, "MRI山田さん"
    Ms Yamada; a Latin name is still never found inside a longer word."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "ZHANG^WEI=张^伟"
    m = TermMatcher(capture_terms(ds))
    assert [sp.kind for sp in m.find("CT张先生复查")] == [NAME]
    assert not m.find("ZHANGWEIX") and not m.find("xzhangweix")


def test_the_first_letters_of_a_long_surname_stand_for_it_in_labels() -> None:
    """Two audits and a held-out corpus: "T7_8Gy1_KOVAL" (KOVALENKO), "PTV_70Gy_KOWAL" (KOWALCZYK), "CX_DUPL_50G25"
    (DU PLESSIS) were kept. Only as a token of a label with underscores, never an imaging word ("LUNG" of
    LUNGREN) nor in prose."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName, ds.OperatorsName = "KOVALENKO^OLENA", "DU PLESSIS^ANNELIE"
    ds.ReferringPhysicianName = "LUNGREN^PAUL"
    m = TermMatcher(capture_terms(ds))
    for text, cut in [("T7_8Gy1_KOVAL", "KOVAL"), ("CX_DUPL_50G25", "DUPL"), ("PTV_Koval_boost", "Koval")]:
        assert [text[sp.start:sp.end] for sp in m.find(text)] == [cut], text
    for text in ["Lung_L", "LUNG_PTV", "Koval stable", "KOVA", "PTV_KOVALSKI", "KOVAL_L"]:
        assert not m.find(text), text


def test_a_surname_cut_short_is_no_structure_abbreviation() -> None:
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.PatientName, ds.OperatorsName = "COCHRANE^ANN", "MANDELSON^PAUL"
    m = TermMatcher(capture_terms(ds))
    for text in ["Coch_L", "PRV_Coch_R", "Mand_R", "GTV_Mand"]:
        assert not m.find(text), text
    assert m.find("PTV_COCHR") and m.find("CBCT_MANDEL")
