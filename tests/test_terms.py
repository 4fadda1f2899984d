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
