"""Clean Descriptors: free text that keeps its clinical words and loses the PHI.

Study/series descriptions, protocol names, comments and histories carry clinical meaning the
research use needs ("AX T2 FLAIR 5mm", "CT C-SPINE C1-C7") next to identifiers typed in by
people ("Dr. Jones", "MRN 4471203", "DOB 3/14/1952"). Blanking the whole element loses the
first; keeping it leaks the second. ``TextCleaner`` replaces only the PHI spans, found by three
layers whose spans are merged:

1. the file's own identifiers (``TermMatcher``) — always removed, the allowlist never applies;
2. regular expressions for PHI shapes (dates, also with CJK units and Japanese eras, phones, IDs,
   emails, URLs, SSNs, ages > 89, street addresses, titled and labelled names);
3. Presidio's pattern recognizers (offline, no model) as a backstop, only on text that still has
   something PHI-shaped left (a digit or an '@' not already covered), because it costs ~0.5 ms.

A clinical allowlist (anatomy, modality, sequence, units...) stops layers 2 and 3 from eating
clinical words. Nothing here logs or raises with text content.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable

from deid_core.errors import RuleError
from deid_core.terms import ADDRESS, DATE, EMAIL, ID, NAME, OTHER, PHONE, PhiTerms, Term, TermMatcher, fold

#: What a PHI span becomes. Short, so descriptors still fit SH (16 chars).
PLACEHOLDER = "[X]"

URL = "url"
SSN = "ssn"
AGE = "age"

#: Maximum value length (characters) per text VR; None means unlimited.
VR_MAX_LENGTH: dict[str, int | None] = {
    "AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "ST": 1024, "LT": 10240, "UT": None, "UC": None,
}

# --------------------------------------------------------------------------------------------
# Clinical allowlist: words that layers 2/3 must never take for a name or an identifier.

_CLINICAL_WORDS = frozenset(w.casefold() for w in """
ct cta ctp mr mri mra mrv mrcp pet spect nm us xr cr dx rf mg xa dexa dxa fluoro echo tte tee ekg ecg
angio angiography venogram arthrogram myelogram mammo mammogram tomo tomosynthesis scout localizer
topogram survey plain film films portable study series exam image images recon reconstruction mip mpr
vr volume axial ax sagittal sag coronal cor oblique obl 3d 2d 4d iso isotropic thin thick slice slices
t1 t2 pd flair stir dwi adc swi gre fse tse se ir epi dti bold mprage spgr fiesta truefisp space cube
vibe lava haste tof pc fs fatsat dixon perfusion diffusion trace tensor b0 b500 b800 b1000 gd gad
gadolinium contrast omnipaque isovue visipaque iodinated oral iv w wo w/o w/wo with without pre post
delayed arterial venous portal phase phases bolus timing dynamic cine calcium score ctdivol dlp kvp
mas mgy msv mm cm ml ms sec fov matrix pitch kernel sharp soft std standard bone lung brain head neck
chest abdomen abd pelvis pelvic spine cervical thoracic lumbar sacrum coccyx c-spine t-spine l-spine
skull sinus sinuses orbit orbits face facial iac temporal pituitary sella circle willis carotid aorta
aortic pulmonary pe coronary cardiac heart liver kidney kidneys renal adrenal pancreas spleen bladder
prostate uterus ovary ovaries thyroid breast breasts axilla knee hip shoulder elbow wrist hand foot
ankle femur tibia humerus extremity extremities upper lower whole body runoff thigh base skull mid
left right lt rt bilat bilateral l r ap pa lat lateral views view complete limited screening diagnostic
protocol routine stroke trauma oncology staging follow-up fu followup prior comparison compared
history hx reason indication clinical pain fracture fx mass nodule lesion tumor cancer r/o rule out
headache fall seizure hematuria injury infection abscess pneumonia effusion stenosis aneurysm bleed
hemorrhage edema ams chf copd dvt ed er icu or stat urgent routine note comment report prelim final
addendum read reading radiologist technologist tech physician md do rn np pa patient pt dob mrn id
acc accession date time age sex male female m f y/o yo yrs old year years month months day days
phase unit units hu suv fdg psma bi-rads birads li-rads pi-rads lesion cyst disc hnp nerve vertebra
and or of the to for in on at by from no not neg pos is are was were be seen sent per as a an
dr mr mrs ms prof
prone supine decubitus erect upright standing sitting moved motion movement repeat repeated rescan
during due breath breathing inspiration expiration artifact artefact scan scanned poor quality
radiology team board service department dept surgery surgical cardiology neurology neurosurgery urology
orthopedics orthopaedics pediatrics emergency medicine internal family oncologist surgeon committee staff
nursing nurse ward clinic hospital
stress rest inversion recovery spin gradient fast turbo color colour doppler power pulsed wave continuous
harmonic harmonics gain depth focus frequency mode tissue soft window level portable mobile
mild moderate severe marked minimal small large stable unchanged new normal abnormal acute chronic
subacute benign malignant suspicious likely possible probable diffuse focal multifocal enhancing
emphysema diabetes hypertension asthma cirrhosis hepatitis arthritis osteoporosis atelectasis
consolidation fibrosis metastasis metastases lymphoma leukemia carcinoma adenoma sarcoma embolism
thrombosis infarct infarction ischemia dementia sclerosis calcification cardiomegaly pneumothorax
appendicitis cholecystitis diverticulitis obstruction dilatation hydronephrosis nephrolithiasis
""".split())

# Token shapes that are clinical, whatever the layer-2/3 pattern says: T2, C1-C7, L4-L5, 3.0T,
# 5mm, 0.5, 120kVp, b1000, 512x512, 75%.
_CLINICAL_TOKEN_RE = re.compile(
    r"(?:[TCLS]\d{1,2}(?:-[TCLS]?\d{1,2})?|\d+(?:\.\d+)?\s?(?:t|mm|cm|ml|mg|mgy|kvp|mas|ms|s|sec|hz|%|x)"
    r"|b\d{1,4}|\d{2,4}x\d{2,4}|\d+(?:\.\d+)?|[a-z]{1,4}\d{1,2})",
    re.IGNORECASE,
)


def is_clinical_word(word: str) -> bool:
    """True when ``word`` is clinical vocabulary or a clinical token shape (never a name or ID)."""
    w = word.strip(".,;:()[]{}'\"").casefold()
    if not w:
        return True
    if w in _CLINICAL_WORDS or (len(w) > 3 and w.endswith("s") and w[:-1] in _CLINICAL_WORDS):
        return True
    return bool(_CLINICAL_TOKEN_RE.fullmatch(w) and len(re.sub(r"\D", "", w)) < 5)


# --------------------------------------------------------------------------------------------
# Layer 2: PHI shapes, compiled once.

_MON = (r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
        r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)")
_ORD = r"(?:st|nd|rd|th)?"
_TIME = (r"(?:(?:[T\s]|,\s*|\s+at\s+|\s*@\s*)\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:\s?[ap]\.?m\.?)?"
         r"(?:\s?(?:Z|[+-]\d{2}:?\d{2}))?)")
_DATE_CORE = (
    rf"(?:\d{{4}}[-/.]\d{{1,2}}[-/.]\d{{1,2}}"                      # 2023-06-12, 2023/6/12
    rf"|\d{{1,2}}[-/.]\d{{1,2}}[-/.](?:\d{{4}}|\d{{2}})"           # 06/12/2023, 15.10.19
    rf"|\d{{1,2}}{_ORD}[\s\-]*{_MON}\.?[\s\-,]*(?:\d{{4}}|'?\d{{2}})?"  # 12 Jun 2023, 12-JUN-23, 12 June
    rf"|{_MON}\.?\s*\d{{1,2}}{_ORD}(?:,?[\s\-]*(?:\d{{4}}|'\d{{2}}))?"  # June 12, 2023 / Jun 12
    rf"|{_MON}\.?[\s\-,]+(?:19|20)\d{{2}}"                           # June 2023
    rf"|\d{{1,2}}{_MON}\d{{2,4}}"                                    # 12JUN2023
    rf"|(?:19|20)\d{{2}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?:\d{{2,6}}(?:\.\d{{1,6}})?)?"  # DA / DT
    rf")"
)
_DATE_RE = re.compile(rf"(?<![\w./-]){_DATE_CORE}{_TIME}?(?![\w/])", re.IGNORECASE)
#: Dates written with Chinese/Japanese (年月日) or Korean (년월일) units, Gregorian or in a Japanese era
#: ("2021年3月15日", "2021년 3월 15일", "令和3年3月15日"); CJK text is all word characters, so no word boundary.
_CJK_DATE_RE = re.compile(
    r"(?:(?<!\d)\d{4}|(?:明治|大正|昭和|平成|令和)\s?(?:\d{1,2}|元))\s?[年년]\s?\d{1,2}\s?[月월]"
    r"(?:\s?\d{1,2}\s?[日일])?")

_PHONE_RE = re.compile(
    r"(?<![\w+])(?:"
    r"(?:\+?1[\s.\-]?)?(?:\(\d{3}\)\s?|\(?\d{3}[\s.\-])\d{3}[\s.\-]\d{4}"       # US
    r"|\+\d{1,3}(?:[\s.\-]?\(?\d{1,5}\)?){2,5}"                                   # international
    r"|\d{3}-\d{4}"                                                                # local 555-0143
    r")(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w])",
    re.IGNORECASE,
)
_SSN_RE = re.compile(r"(?<![\w-])\d{3}([-\s])\d{2}\1\d{4}(?![\w-])")
_EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL_RE = re.compile(
    r"(?:(?:https?|ftp)://|www\.)[^\s<>\"']+"
    r"|(?<![@\w.-])[\w-]+(?:\.[\w-]+)*\.(?:com|org|net|edu|gov|mil|io|us|uk|ca|de|fr|nl|au|info|health)"
    r"\b(?:/[^\s<>\"']*)?",
    re.IGNORECASE,
)
_AGE_RE = re.compile(
    r"(?<![\w.])(?:"
    r"(?P<n1>9\d|1[0-4]\d)(?=\s*-?\s*(?:y/?o\b|y\.o\.|yo\b|yrs?\b|years?\b|yr-old|year-old))"
    r"|(?:aged?|age:)\s*(?P<n2>9\d|1[0-4]\d)(?![\w]|\.\d)"
    r"|(?P<as>0?(?:9\d|1[0-4]\d)\s?Y)(?![\w])"
    r"|(?P<sx>(?:9\d|1[0-4]\d)\s?(?-i:[FfM]))(?![\w])"  # "92F", "92f", "92 M" ("120 m" is metres)
    r"|(?<![\w/])[FM]/(?P<xs>9\d|1[0-4]\d)(?![\w])"  # "F/92"
    r"|(?P<w>(?:ninety|one\s+hundred(?:\s+and)?)(?:[\s-]+(?:one|two|three|four|five|six|seven|eight|nine|ten"
    r"|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty))?)"
    r"(?=[\s-]*(?:years?\b|yrs?\b|y/?o\b|year-old))"  # "ninety-two year old"
    r")",
    re.IGNORECASE,
)
_STREET_SUFFIX = (r"(?i:Street|St|Avenue|Ave|Road|Rd|Drive|Dr|Lane|Ln|Boulevard|Blvd|Way|Court|Ct|Place|Pl"
                  r"|Terrace|Ter|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Square|Sq|Trail|Trl)")
_STREET_RE = re.compile(
    rf"(?<![\w.])\d{{1,6}}[A-Za-z]?\s+(?P<words>(?:(?:[NSEW]\.?|North|South|East|West)\s+)?"
    rf"(?:(?:\d+(?:st|nd|rd|th)|[A-Z][A-Za-z'\-]+)\s+){{1,3}}){_STREET_SUFFIX}\b\.?"
    r"|\b(?i:Apt|Apartment|Suite|Ste)\.?\s*#?\s*\d+[A-Za-z]?\b|\b(?i:Apt|Apartment)\.?\s*#?\s*[A-Z]\b"
    r"|\b(?i:Unit)\s*#\s*\d+\b|\b(?i:P\.?\s?O\.?\s*Box)\s*#?\s*\d+",
)
# An ID: labelled ("MRN: X12", "Acc# 123", "ID 55-781"), '#' + digits, or any token carrying >= 5
# digits (MRNs, accessions, ZIP codes) that is not a clinical shape such as 512x512 or 0.00125.
_LABELLED_ID_RE = re.compile(
    r"\b(?:MRN|MR#|MR\s?No|ID|Acc(?:ession)?|Acc#|Order|Req(?:uest)?|Case|Chart|Account|Acct|Visit"
    r"|Encounter|Study\s?ID|Pt\s?ID|Patient\s?ID|Medical\s?Record)"
    r"(?:\s*(?:#|No\.?|Number|num)\s*|\s*[:#=]\s*|\s+)(?P<v>[A-Z0-9][\w\-/.]*\d[\w\-/.]*)",
    re.IGNORECASE,
)
_HASH_ID_RE = re.compile(r"#\s?(?P<v>[A-Z]{0,4}\d{3,}[\w\-]*)", re.IGNORECASE)
_TOKEN_RE = re.compile(r"[A-Za-z0-9][\w\-/.#]*[A-Za-z0-9]|[A-Za-z0-9]")
_LONG_DIGITS = re.compile(r"\d{5}")
_NOT_ID_RE = re.compile(r"\d+(?:\.\d+)?|\d{2,4}x\d{2,4}(?:x\d{1,4})?", re.IGNORECASE)

# Upper-case "MR"/"MS"/"DR" are modalities or diseases ("MR KNEE", "DR CHEST"); only "DR." and
# "DOCTOR" are titles in upper-case text.
_TITLE = r"(?:Dr|Drs|Doctor|Mr|Mrs|Ms|Miss|Mx|Prof|Professor|Pt|Sister|Nurse|Rev|DR(?=\.)|DOCTOR|MRS|MISS)"
_PARTICLE = r"(?:(?:van|von|de|der|del|della|di|da|du|la|le|st\.?|mac|bin|al|el)\s+)"
_NAME_WORD = r"(?:[A-Z][a-z]?'?[A-Z]?[a-z]+(?:-[A-Z][a-z]+)?|[A-Z][A-Z'\-]+)"
_TITLED_RE = re.compile(
    rf"\b{_TITLE}\b\.?\s+(?P<v>{_PARTICLE}*{_NAME_WORD}(?:\s+[A-Z]\b\.?)?"
    rf"(?:\s+{_PARTICLE}*[A-Z][a-z]+(?:-[A-Z][a-z]+)?)?)"
)
_DEGREE_RE = re.compile(
    rf"(?P<v>(?:[A-Z]\.\s?)?{_NAME_WORD}(?:\s+[A-Z]\.)?(?:\s+{_NAME_WORD})?),?\s+"
    r"(?:MD|M\.D\.|PhD|Ph\.D\.|RN|NP|PA-C|DNP|FRCR|FRCPC|MBBS)\b"
)
_LABEL_RE = re.compile(
    r"\b(?:patient(?:\s+name)?|pt(?:\s+name)?|name|pat|ordering(?:\s+(?:physician|provider|md))?"
    r"|referring(?:\s+(?:physician|provider|md))?|physician|radiologist|attending|requested\s+by"
    r"|ordered\s+by|referred\s+by|seen\s+by|read\s+by|reported\s+by|signed\s+by|dictated\s+by"
    r"|performed\s+by|technologist|tech|provider|resident|fellow|contact|attn)\s*[:=]\s*",
    re.IGNORECASE,
)
#: A cue ("ordered by", "discussed with", "per") then two capitalised words, neither clinical: a person
#: ("per Jennifer Walsh", "ordered by WALSH JENNIFER", "discussed with Kowalski, Anna").
_CUE_RE = re.compile(
    r"(?i:\b(?:(?:ordered|referred|seen|read|reported|signed|dictated|performed|requested|discussed|reviewed"
    r"|approved|verified|interpreted|called|notified|informed|d/w|cc'?d)\s+(?:by|with|to)?|per|d/w|cc|attn|c/o))"
    r"\s+(?P<a>[A-Z][A-Za-z'\-]+),?\s+(?P<b>[A-Z][A-Za-z'\-]+)\b")
# A name the text gives away by the relation it names ("wife Mary", "daughter Ann Lowe"): title-case
# words after the relation, the first one not clinical.
_RELATION_RE = re.compile(
    r"(?i:\b(?:wife|husband|spouse|partner|son|daughter|mother|father|brother|sister|guardian|niece|nephew"
    r"|friend|caregiver|fianc[eé]e?|grandson|granddaughter|grandmother|grandfather|aunt|uncle))"
    r"[\s,:(]+(?P<a>[A-Z][a-z][a-z'\-]+)(?:\s+(?P<b>[A-Z][a-z][a-z'\-]+))?")
_LABEL_STOP = frozenset({"mrn", "id", "dob", "acc", "accession", "age", "sex", "tel", "phone", "fax", "ph",
                         "md", "do", "rn", "study", "date", "exam", "ssn", "email", "addr", "address"})


def _regex_spans(text: str) -> list[tuple[int, int, str]]:
    """Layer 2: PHI shapes (no file knowledge)."""
    spans: list[tuple[int, int, str]] = []
    for m in _EMAIL_RE.finditer(text):
        spans.append((m.start(), m.end(), EMAIL))
    for m in _URL_RE.finditer(text):
        end = m.end()
        while end > m.start() and text[end - 1] in ".,;:)]}'\"":
            end -= 1
        spans.append((m.start(), end, URL))
    for m in _DATE_RE.finditer(text):
        if _plausible_date(m.group(0)):
            spans.append((m.start(), m.end(), DATE))
    for m in _CJK_DATE_RE.finditer(text):
        spans.append((m.start(), m.end(), DATE))
    for m in _SSN_RE.finditer(text):
        spans.append((m.start(), m.end(), SSN))
    for m in _PHONE_RE.finditer(text):
        if sum(c.isdigit() for c in m.group(0)) >= 7:
            spans.append((m.start(), m.end(), PHONE))
    for m in _AGE_RE.finditer(text):
        g = next(k for k in ("n1", "n2", "as", "sx", "xs", "w") if m.group(k))
        spans.append((m.start(g), m.end(g), AGE))
    for m in _STREET_RE.finditer(text):
        words = (m.group("words") or "").split()
        if any(is_clinical_word(w) for w in words if not re.fullmatch(r"\d+(?:st|nd|rd|th)", w)):
            continue  # "3D TOF MRA CIRCLE" is an angiogram, not an address
        spans.append((m.start(), m.end(), ADDRESS))
    for rx in (_LABELLED_ID_RE, _HASH_ID_RE):
        for m in rx.finditer(text):
            v = m.group("v").rstrip(".-/")
            if not _NOT_ID_RE.fullmatch(v) or sum(c.isdigit() for c in v) >= 5:
                spans.append((m.start("v"), m.start("v") + len(v), ID))
    for m in _TOKEN_RE.finditer(text):
        tok = m.group(0).rstrip(".")
        # a run of 5+ digits: "DWI_b0_1000", "b50/400/800", "0.9x0.9x1.2" or "1234.5" are parameters
        if _LONG_DIGITS.search(tok) and not re.fullmatch(r"\d{2,4}x\d{2,4}", tok, re.I) \
                and not re.fullmatch(r"\d{1,3}\.\d+", tok) and not re.fullmatch(r"\d{1,5}(?:/\d{1,5})+", tok):
            spans.append((m.start(), m.start() + len(tok), ID))
    spans += _name_spans(text)
    return spans


def _plausible_date(s: str) -> bool:
    """Reject numeric triples that cannot be dates (vertebral ranges and versions are not dates)."""
    nums = [int(x) for x in re.findall(r"\d+", s)[:3]]
    if re.fullmatch(r"(?:19|20)\d{6}.*", s):
        return True
    if len(nums) == 3 and not re.search(r"[A-Za-z]", s[:12]):
        a, b, c = nums
        if a > 31:  # year first
            return 1 <= b <= 12 and 1 <= c <= 31
        return (1 <= a <= 12 and 1 <= b <= 31) or (1 <= b <= 12 and 1 <= a <= 31)
    return True


def _name_spans(text: str) -> list[tuple[int, int, str]]:
    """Titled ("Dr. Jones"), degree-suffixed ("A. Lindqvist MD") and labelled ("Patient: X") names."""
    spans: list[tuple[int, int, str]] = []
    for rx in (_TITLED_RE, _DEGREE_RE):
        for m in rx.finditer(text):
            words = re.findall(r"[A-Za-z][A-Za-z'\-]*", m.group("v"))
            keep = [w for w in words if not is_clinical_word(w) or len(w) == 1]
            if keep and any(len(w) > 1 for w in keep):
                # trim leading/trailing clinical words from the span ("Dr Jones CT" keeps CT)
                start, end = m.start("v"), m.end("v")
                spans.extend(_word_spans(text, start, end))
    for m in _CUE_RE.finditer(text):
        if not any(is_clinical_word(m.group(g)) or len(m.group(g)) < 2 for g in ("a", "b")):
            spans += [(m.start("a"), m.end("a"), NAME), (m.start("b"), m.end("b"), NAME)]
    for m in _RELATION_RE.finditer(text):
        words = [g for g in ("a", "b") if m.group(g) and not is_clinical_word(m.group(g))]
        if "a" in words:  # "daughter Ann Lowe", "wife Mary"; not "mother Tongue" (the first word decides)
            spans += [(m.start(g), m.end(g), NAME) for g in words]
    for m in _LABEL_RE.finditer(text):
        pos, taken = m.end(), 0
        while taken < 4:
            w = re.match(r"[ ^,]?\s?([A-Za-z][A-Za-z'\-]*\.?)", text[pos:]) if taken else \
                re.match(r"([A-Za-z][A-Za-z'\-]*\.?)", text[pos:])
            if not w:
                break
            word = w.group(1)
            bare = word.rstrip(".")
            if bare.casefold() in _LABEL_STOP or (is_clinical_word(bare) and len(bare) > 1):
                break
            if not (bare[0].isupper() or taken == 0):
                break
            spans.append((pos + w.start(1), pos + w.start(1) + len(bare), NAME))
            pos += w.end()
            taken += 1
    return spans


def _word_spans(text: str, start: int, end: int) -> list[tuple[int, int, str]]:
    out = []
    for w in re.finditer(r"[A-Za-z][A-Za-z'\-]*", text[start:end]):
        if len(w.group(0)) == 1 or not is_clinical_word(w.group(0)):
            out.append((start + w.start(), start + w.end(), NAME))
    return out


# --------------------------------------------------------------------------------------------
# Layer 3: Presidio.

#: Presidio entities worth having; US_DRIVER_LICENSE (eats "T2", "C1"), US_PASSPORT and
#: US_BANK_NUMBER (any 8-9 digit number at score <= 0.1) are excluded as clinical-text destroyers.
PRESIDIO_ENTITIES = ("EMAIL_ADDRESS", "URL", "PHONE_NUMBER", "US_SSN", "DATE_TIME", "IP_ADDRESS",
                     "CREDIT_CARD", "IBAN_CODE", "UK_NHS", "US_ITIN", "MEDICAL_LICENSE", "CRYPTO",
                     "MAC_ADDRESS", "UUID")
#: Tuned on the corpora: the useful hits score 0.4-1.0, the noise 0.01-0.1.
PRESIDIO_THRESHOLD = 0.3
_PRESIDIO_KIND = {"EMAIL_ADDRESS": EMAIL, "URL": URL, "PHONE_NUMBER": PHONE, "US_SSN": SSN, "DATE_TIME": DATE}
_RESIDUAL_RE = re.compile(r"[A-Za-z0-9][\w\-/.:@]*")


#: A digit/'@' token longer than this is no clinical word; it is removed whole, unexamined, which
#: also keeps Presidio's regexes (quadratic on such runs) away from it.
_MAX_TOKEN = 64
_WINDOW = 60


def _residual_tokens(text: str, covered: list[tuple[int, int, str]]) -> list[tuple[int, int]]:
    """Tokens with a digit or '@' that no span covers and that are not clinical shapes ("5mm", "T2").
    ``covered`` must be merged (sorted, disjoint)."""
    if not re.search(r"[\d@]", text):
        return []
    starts = [c[0] for c in covered]
    out = []
    for m in _RESIDUAL_RE.finditer(text):
        tok = m.group(0).rstrip(".:")
        if not re.search(r"[\d@]", tok):
            continue
        s, e = m.start(), m.start() + len(tok)
        i = bisect.bisect_right(starts, s) - 1
        if i >= 0 and covered[i][1] >= e:
            continue
        if "@" not in tok and is_clinical_word(tok):
            continue
        out.append((s, e))
    return out


def _windows(text: str, tokens: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merged context windows around ``tokens`` (Presidio's context words sit nearby)."""
    out: list[tuple[int, int]] = []
    for s, e in tokens:
        ws, we = max(0, s - _WINDOW), min(len(text), e + _WINDOW)
        if out and ws <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], we))
        else:
            out.append((ws, we))
    return out


def warm_up() -> None:
    """Load Presidio and its lazy recognizers now (~1 s once per process), not inside the first file."""
    _presidio_spans("Dr. A. B. seen 2021-01-02 call 217-555-0143 a@b.org http://b.org 078-05-1120")


def _presidio_spans(text: str) -> list[tuple[int, int, str]]:
    return list(_presidio_spans_of(text))


@functools.lru_cache(maxsize=4096)
def _presidio_spans_of(text: str) -> tuple[tuple[int, int, str], ...]:
    """Presidio's spans of a text, kept per process: the analyzer is a pure function of the text, and a
    series repeats its descriptions in every file (0.6 of ~20 ms per file on the throughput benchmark)."""
    from deid_core.presidio_offline import get_analyzer

    results = get_analyzer().analyze(text=text, language="en", entities=list(PRESIDIO_ENTITIES))
    spans = []
    for r in sorted(results, key=lambda r: (r.start, r.end, r.entity_type)):
        if r.score < PRESIDIO_THRESHOLD:
            continue
        frag = text[r.start:r.end]
        if all(is_clinical_word(w) for w in re.findall(r"[\w.%/\-]+", frag)):
            continue
        spans.append((r.start, r.end, _PRESIDIO_KIND.get(r.entity_type, ID)))
    return tuple(spans)


# --------------------------------------------------------------------------------------------


def _expand_to_words(text: str, start: int, end: int) -> tuple[int, int]:
    """Grow a span to whole alphanumeric runs, so no half-token of an identifier survives."""
    while start > 0 and text[start - 1].isalnum() and text[start].isalnum():
        start -= 1
    while end < len(text) and text[end].isalnum() and text[end - 1].isalnum():
        end += 1
    return start, end


# On equal extent the more specific kind names the span ("phone" over the generic digit-run "id").
_KIND_RANK = {ID: 9, OTHER: 8}


def merge_spans(spans: Iterable[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Sorted, non-overlapping spans; overlapping or touching spans become one (the kind of the
    earliest, longest, most specific span wins)."""
    out: list[tuple[int, int, str]] = []
    for s, e, k in sorted(spans, key=lambda x: (x[0], -x[1], _KIND_RANK.get(x[2], 5), x[2])):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            ps, pe, pk = out[-1]
            out[-1] = (ps, max(pe, e), pk)
        else:
            out.append((s, e, k))
    return out


class TextCleaner:
    """Replaces PHI spans of free text by a placeholder, keeping clinical words."""

    def __init__(self, terms: PhiTerms, *, use_presidio: bool = True, matcher: TermMatcher | None = None) -> None:
        """``matcher``: a ``TermMatcher`` already built for these same ``terms`` (the file's leak
        terms hold one), so it is not built again for every file."""
        self.terms = terms
        self.use_presidio = use_presidio
        self._matcher = matcher if matcher is not None and matcher.terms is terms else TermMatcher(terms)

    @property
    def matcher(self) -> TermMatcher:
        """The matcher of this cleaner's terms (shared with the anonymizer's private-value check)."""
        return self._matcher

    def phi_spans(self, text: str) -> list[tuple[int, int, str]]:
        """(start, end, kind) of every PHI span, merged and sorted."""
        if not text:
            return []
        own = [(s.start, s.end, s.kind) for s in self._matcher.find(text)]
        pattern = _regex_spans(fold(text))  # one character for one: full-width digits and dashes are dates too
        found = own + pattern
        residual = _residual_tokens(text, merge_spans(found))
        found += [(s, e, OTHER) for s, e in residual if e - s > _MAX_TOKEN]
        short = [(s, e) for s, e in residual if e - s <= _MAX_TOKEN]
        if self.use_presidio and short:
            for ws, we in _windows(text, short):
                found += [(ws + s, ws + e, k) for s, e, k in _presidio_spans(text[ws:we])]
        grown = [(*_expand_to_words(text, s, e), k) for s, e, k in found]
        return merge_spans(grown)

    def clean(self, text: str) -> str:
        """``text`` with every PHI span replaced by ``PLACEHOLDER``."""
        spans = self.phi_spans(text)
        if not spans:
            return text
        parts, pos = [], 0
        for s, e, _ in spans:
            parts.append(text[pos:s])
            parts.append(PLACEHOLDER)
            pos = e
        parts.append(text[pos:])
        return "".join(parts)

    def clean_for_vr(self, text: str, vr: str) -> str:
        """Clean, then fit the VR's maximum length without cutting a placeholder in half."""
        return truncate_for_vr(self.clean(text), vr)


def truncate_for_vr(text: str, vr: str) -> str:
    """Cut ``text`` to the VR's maximum length; a placeholder straddling the cut is dropped whole."""
    if vr not in VR_MAX_LENGTH:
        raise RuleError(f"free-text cleaning does not support VR {vr!r}")
    limit = VR_MAX_LENGTH[vr]
    if limit is None or len(text) <= limit:
        return text
    cut = limit
    for m in re.finditer(re.escape(PLACEHOLDER), text):
        if m.start() < cut < m.end():
            cut = m.start()
            break
    return text[:cut].rstrip()


def _fingerprint(terms: PhiTerms) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    return tuple(sorted((t.text, t.kind) for t in terms.terms)), tuple(sorted(terms.dates))


@functools.lru_cache(maxsize=16)
def _cleaner_for(fp: tuple[tuple[tuple[str, str], ...], tuple[str, ...]]) -> TextCleaner:
    terms = PhiTerms({Term(t, k) for t, k in fp[0]}, set(fp[1]))
    return TextCleaner(terms)


def clean_text(text: str, terms: PhiTerms, vr: str = "LO") -> str:
    """Convenience: clean ``text`` for an element of ``vr``. Cleaners are cached by the *content*
    of ``terms`` (not its id, which Python reuses), so a changed term set gets a new cleaner."""
    return _cleaner_for(_fingerprint(terms)).clean_for_vr(text, vr)


__all__ = ["PLACEHOLDER", "VR_MAX_LENGTH", "PRESIDIO_ENTITIES", "PRESIDIO_THRESHOLD", "TextCleaner",
           "clean_text", "is_clinical_word", "warm_up", "merge_spans", "truncate_for_vr", "NAME", "ID",
           "DATE", "PHONE", "ADDRESS", "EMAIL", "URL", "SSN", "AGE"]
