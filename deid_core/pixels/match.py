"""Decide which OCR'd words hide PHI (policy "phi") or are text at all (policy "all-text").

Works on OCR lines: exact/flexible term matches on the line text, tolerant per-word matches for
misreads, loose patterns (dates, times, long numbers, letter+digit IDs, phones) and Presidio's
pattern recognizers. When OCR is unsure inside a real text line, the word is masked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from deid_core.freetext import _regex_spans, is_clinical_word
from deid_core.pixels.ocr import OcrWord
from deid_core.terms import TermMatcher, levenshtein, ocr_digits

_DATE_RE = re.compile(
    r"(?<!\d)(\d{1,4}[/.\-]\d{1,2}[/.\-]\d{2,4}|(19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01]))(?!\d)")
_MONTH_RE = re.compile(r"\b(jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\b", re.I)
_TIME_RE = re.compile(r"(?<!\d)\d{1,2}:\d{2}(:\d{2})?(?!\d)")
_PRESIDIO_ENTITIES = ["PHONE_NUMBER", "EMAIL_ADDRESS", "DATE_TIME", "US_SSN", "US_DRIVER_LICENSE",
                      "IP_ADDRESS", "MEDICAL_LICENSE", "URL", "CREDIT_CARD", "IBAN_CODE", "UK_NHS"]
#: "FAMILY, GIVEN" / "FAMILY^GIVEN" as viewers and consoles display a patient's name: two words of letters,
#: capitalised, neither a clinical word ("AXIAL, T2" and "LEFT, PA" stay).
_DISPLAY_NAME_RE = re.compile(r"(?<![\w^])([A-Z][A-Za-z'\-]+)\s?[,^]\s?([A-Z][A-Za-z'\-]+)(?![\w^])")
#: Makers and product names a console writes as "Maker, Product" (not a patient's "FAMILY, GIVEN").
_MAKERS = frozenset({
    "siemens", "healthineers", "philips", "ingenia", "achieva", "hologic", "selenia", "dimensions", "ge",
    "healthcare", "toshiba", "canon", "fujifilm", "fuji", "agfa", "carestream", "kodak", "samsung", "hitachi",
    "mindray", "esaote", "konica", "minolta", "varian", "elekta", "acuson", "sonosite", "medison", "aloka",
    "shimadzu", "planmeca", "sirona", "vatech", "aquilion", "somatom", "magnetom", "signa", "discovery",
    "revolution", "optima", "voluson", "logiq", "vivid", "epiq", "affiniti", "lunit", "definium"})
#: A labelled identifier typed in groups ("ID 48 29 17", "MRN: 0044-712"): the label's digits, spaces kept.
_SPACED_ID_RE = re.compile(r"\b(?:ID|MRN|PID|ACC|Acc|Pat(?:ient)?\s?ID)\s?[:#.]?\s?(\d[\d \-]{2,}\d)(?!\w)")
_INSTITUTION_WORDS = ("hospital", "clinic", "infirmary", "university", "institute", "healthcare", "klinikum")
_INSTITUTION_RE = re.compile(
    r"\b(?:hospital|clinic|infirmary|medical\s+cent(?:er|re)|health\s?care|university|institute"
    r"|imaging\s+cent(?:er|re)|klinik(?:um)?|h[oô]pital)s?\b", re.IGNORECASE)
#: Below this confidence a word inside a real text line is treated as possibly-misread PHI.
UNSURE_CONF = 45.0


@dataclass
class Line:
    """Words of one OCR line (frame coordinates), left to right, and the line text with offsets."""

    words: list[OcrWord]
    text: str
    offsets: list[tuple[int, int]]


def build_lines(words: list[OcrWord]) -> list[Line]:
    """Group words by vertical overlap into lines (Tesseract's own grouping is per crop)."""
    lines: list[list[OcrWord]] = []
    for w in sorted(words, key=lambda w: (w.y, w.x)):
        for line in lines:
            ref = line[-1]
            overlap = min(ref.y + ref.h, w.y + w.h) - max(ref.y, w.y)
            if overlap >= 0.5 * min(ref.h, w.h):
                line.append(w)
                break
        else:
            lines.append([w])
    out = []
    for ws in lines:
        ws.sort(key=lambda w: w.x)
        text, offs = "", []
        for w in ws:
            if text:
                text += " "
            offs.append((len(text), len(text) + len(w.text)))
            text += w.text
        out.append(Line(ws, text, offs))
    return out


def split_tokens(line: Line) -> list[tuple[int, int, str]]:
    """Words OCR split at a date or ID separator, joined back: (first index, last index, joined text) for
    every run of 2+ neighbouring words with digits where each junction has a '-', '.' or '/' on one side
    ("1961-" "03-02" is 1961-03-02, read at 13 px in a monospace font)."""
    words = [w.text for w in line.words]
    out = []
    for i in range(len(words) - 1):
        j = i
        while j + 1 < len(words) and (words[j][-1:] in "-./" or words[j + 1][:1] in "-./") and \
                any(c.isdigit() for c in words[j]) and any(c.isdigit() for c in words[j + 1]):
            j += 1
            out.append((i, j, "".join(words[i:j + 1])))
    return out


def _pattern_kind(token: str) -> str | None:
    t = token.strip(".,;:()[]{}'\"\u201c\u201d\u2018\u2019`|_-~")
    if not t:
        return None
    digits = ocr_digits(t) if sum(c.isdigit() for c in t) >= max(2, len(t) // 2) else t
    if _DATE_RE.search(digits) or _DATE_RE.search(t):
        return "date"
    if _TIME_RE.search(digits):
        return "time"
    bare = re.sub(r"[\s\-_./()#]", "", t)
    n_digits = sum(c.isdigit() for c in bare)
    if n_digits >= 7 and re.fullmatch(r"\+?\d+", bare):
        return "phone" if n_digits in (7, 10, 11) and re.search(r"[\-.()]", t) else "id"
    if re.fullmatch(r"\d{1,4}(?:/\d{1,4})+", t):
        return None  # a counter or a ratio ("Img: 45/120", "b50/400/800"), not an identifier
    if n_digits >= 5 or sum(c.isdigit() for c in ocr_digits(bare)) >= 6:
        return "id"
    if len(bare) >= 5 and n_digits >= 2 and any(c.isalpha() for c in bare) and bare.isalnum() \
            and not is_clinical_word(t):
        return "id"  # letters and digits only: "23=?F" read off anatomy is garble; "b1000" is a b-value
    return None


def phi_words(line: Line, matcher: TermMatcher, use_presidio: bool = True) -> dict[int, str]:
    """Indices of the line's words that hide PHI, with the kind that matched."""
    hit: dict[int, str] = {}

    def mark(start: int, end: int, kind: str) -> None:
        for i, (a, b) in enumerate(line.offsets):
            if a < end and start < b:
                hit.setdefault(i, kind)

    for span in matcher.find(line.text):
        mark(span.start, span.end, span.kind)
    for i, w in enumerate(line.words):
        kind = matcher.fuzzy_token_kind(w.text) or _pattern_kind(w.text)
        if kind:
            hit.setdefault(i, kind)
    for i, j, joined in split_tokens(line):
        kind = next((sp.kind for sp in matcher.find(joined)), None) or matcher.fuzzy_token_kind(joined) \
            or _pattern_kind(joined)
        if kind:
            for k in range(i, j + 1):
                hit.setdefault(k, kind)
    # PHI the header does not spell (another person, a header anonymised upstream): the free-text
    # cleaner's shapes (titled/labelled/degree names, street addresses, e-mails, SSNs, labelled IDs)
    # and the way a viewer displays a patient's name ("DOE, JANE", "DOE^JANE")
    for start, end, kind in _regex_spans(line.text, given=False):
        mark(start, end, kind)
    for m in _DISPLAY_NAME_RE.finditer(line.text):
        if not any(is_clinical_word(w) or w.casefold() in _MAKERS for w in (m.group(1), m.group(2))):
            mark(m.start(), m.end(), "name")
    for m in _SPACED_ID_RE.finditer(line.text):
        mark(m.start(1), m.end(1), "id")
    if _INSTITUTION_RE.search(line.text) or any(  # a line naming a hospital or clinic names the institution
            len(w) >= 6 and any(levenshtein(w, k, 2) <= 1 for k in _INSTITUTION_WORDS)
            for w in re.findall(r"[a-z]+", line.text.lower())):  # OCR's "Haspital"
        mark(0, len(line.text), "institution")
    for m in _DATE_RE.finditer(line.text):
        mark(m.start(), m.end(), "date")
    for m in _TIME_RE.finditer(line.text):
        mark(m.start(), m.end(), "time")
    if _MONTH_RE.search(line.text) and re.search(r"\d", line.text):
        for m in _MONTH_RE.finditer(line.text):  # "Mar 4, 2021": mask the month and its numbers
            mark(m.start(), m.end(), "date")
            for i, (a, _b) in enumerate(line.offsets):
                if a >= m.end() and a - m.end() <= 8 and re.search(r"\d", line.words[i].text):
                    hit.setdefault(i, "date")
    if use_presidio and re.search(r"[\d@]", line.text):
        from deid_core.presidio_offline import get_analyzer

        for r in get_analyzer().analyze(text=line.text, language="en", entities=_PRESIDIO_ENTITIES):
            if r.score >= 0.3 and not all(is_clinical_word(w) for w in line.text[r.start:r.end].split()):
                # a clinical token ("T2", "L4-L5", "3.0T") is no licence or phone number
                mark(r.start, r.end, "date" if r.entity_type == "DATE_TIME" else "pattern")
    # when unsure inside a line that is really text, mask
    if any(w.conf >= 70 and sum(c.isalnum() for c in w.text) >= 2 for w in line.words):
        for i, w in enumerate(line.words):
            if i not in hit and w.conf < UNSURE_CONF and sum(c.isalnum() for c in w.text) >= 3:
                hit[i] = "text"
    return hit


def is_text(word: OcrWord) -> bool:
    """A word OCR really read (policy all-text): at least one letter or digit."""
    return any(c.isalnum() for c in word.text)
