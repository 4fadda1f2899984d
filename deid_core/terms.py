"""The identifiers of one file, captured from its *original* header before anything is scrubbed.

Every later stage that hunts for PHI — free-text cleaning, burned-in pixel text, the final leak
verification — needs to know what this patient's identifiers look like in all their common
spellings. ``capture_terms`` collects them once; ``TermMatcher`` finds them in text, exactly
(for header text) or tolerantly (for OCR output, which misreads digits and letters).

Terms live in memory only: they are never logged, written to provenance or put in exceptions.
"""

from __future__ import annotations

import datetime as _dt
import functools
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from deid_core.inventory import element

# Kinds of identifier; provenance and verification record the kind, never the value.
NAME = "name"
ID = "id"
DATE = "date"
PHONE = "phone"
ADDRESS = "address"
INSTITUTION = "institution"
EMAIL = "email"
OTHER = "other"

# Person-name parts too common or too short to be identifying on their own.
_NAME_STOPWORDS = frozenset(
    {"MR", "MRS", "MS", "DR", "PROF", "JR", "SR", "II", "III", "IV", "MD", "PHD", "RN", "THE", "OF", "AND"}
)
# Keywords whose values identify the patient or the encounter.
_ID_KEYWORDS = (
    "PatientID",
    "OtherPatientIDs",
    "AccessionNumber",
    "IssuerOfPatientID",
    "MedicalRecordLocator",
    "AdmissionID",
    "StudyID",
    "PerformedProcedureStepID",
    "RequestedProcedureID",
    "ScheduledProcedureStepID",
    "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest",
    "PatientInsurancePlanCodeSequence",
    "MilitaryRank",
    "PatientTransportArrangements",
    "ServiceEpisodeID",
    "PatientAccountNumber",
    "ReferencedPatientAliasSequence",
    "IssuerOfAccessionNumberSequence",
    "OrderPlacerIdentifierSequence",
    "OrderFillerIdentifierSequence",
    "PrescriptionNumber",
    # retired forms that older equipment still writes (an audit found them kept verbatim)
    "PlacerOrderNumberImagingServiceRequestRetired",
    "FillerOrderNumberImagingServiceRequestRetired",
    "PlacerOrderNumberProcedure",
    "FillerOrderNumberProcedure",
)
_ADDRESS_KEYWORDS = ("PatientAddress", "InstitutionAddress", "ReferringPhysicianAddress", "CountryOfResidence",
                     "RegionOfResidence")
_PHONE_KEYWORDS = ("PatientTelephoneNumbers", "ReferringPhysicianTelephoneNumbers", "PersonTelephoneNumbers")
_INSTITUTION_KEYWORDS = ("InstitutionName", "InstitutionalDepartmentName")
#: The value and meaning of a code item (in PersonIdentificationCodeSequence they identify a person).
_CODE_VALUE_KEYWORDS = frozenset({"CodeValue", "CodeMeaning", "LongCodeValue", "URNCodeValue"})
_OTHER_KEYWORDS = ("PatientMotherBirthName", "PatientBirthName", "ResponsiblePerson", "ResponsibleOrganization",
                   "Occupation", "PatientReligiousPreference", "BranchOfService",
                   "PatientBirthDateInAlternativeCalendar", "PatientDeathDateInAlternativeCalendar")
_EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")  # boundary: linear, not quadratic
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
_DIGIT_FOR = str.maketrans({"O": "0", "o": "0", "Q": "0", "D": "0", "I": "1", "l": "1", "i": "1", "|": "1",
                            "L": "1", "!": "1", "Z": "2", "z": "2", "S": "5", "s": "5", "B": "8", "G": "6",
                            "b": "6", "T": "7", "g": "9", "q": "9"})


@dataclass(frozen=True)
class Term:
    """One identifier string and its kind (``name``, ``id``, ``date``...)."""

    text: str
    kind: str


@dataclass
class PhiTerms:
    """All identifier strings of one file, with every variant worth searching for."""

    terms: set[Term] = field(default_factory=set)
    #: Original DA values (YYYYMMDD) of the file; used to recognise dates in OCR text loosely.
    dates: set[str] = field(default_factory=set)

    def add(self, text: str, kind: str) -> None:
        text = " ".join(str(text).split())
        if len(text) >= 2 and not text.isspace():
            self.terms.add(Term(text, kind))

    def __iter__(self) -> Iterator[Term]:
        return iter(sorted(self.terms, key=lambda t: (-len(t.text), t.text, t.kind)))

    def __len__(self) -> int:
        return len(self.terms)

    def strings(self) -> list[str]:
        """Every term, longest first (the deny list handed to OCR matchers)."""
        return [t.text for t in self]

    def merge(self, other: PhiTerms) -> None:
        self.terms |= other.terms
        self.dates |= other.dates

    def to_dict(self) -> dict[str, object]:
        """Plain form for sending terms to a Dask worker (never for logging)."""
        return {"terms": [[t.text, t.kind] for t in self], "dates": sorted(self.dates)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhiTerms:
        out = cls()
        for text, kind in data.get("terms", []):
            out.terms.add(Term(str(text), str(kind)))
        out.dates = {str(d) for d in data.get("dates", [])}
        return out


_CJK_NAME = re.compile(r"[\u3400-\u9fff\uac00-\ud7af]{3,4}")


def name_variants(value: str | PersonName) -> list[str]:
    """Spellings of a DICOM person name: parts, 'First Last', 'Last, First', initials dropped."""
    raw = str(value)
    out: list[str] = []
    for group in raw.split("="):  # alphabetic, ideographic, phonetic representations
        comps = [c.strip() for c in group.split("^")]
        family, given, middle = (comps + ["", "", ""])[:3]
        if not any(comps):
            continue
        words = [w for c in comps for w in re.split(r"[\s,.\-']+", c) if w]
        if len(comps) == 1 and _CJK_NAME.fullmatch(comps[0]):
            # a CJK name in one component ("王小东", "김철수"): the given name alone is the name less its family
            # name of one character (or two: "欧阳小东")
            words += [comps[0][1:]] + ([comps[0][2:]] if len(comps[0]) == 4 else [])
        for w in words:
            # a part that is a word of imaging text ("HEAD^MAY", "GREEN^BONE", "COLON^MARIA") counts only beside
            # another part of the name (the combinations below): alone it is "CT HEAD", a "BONE" kernel, "sigmoid
            # colon"; a name of that one word ("HEART") is then no term at all (a second audit: "CT HEART" lost)
            if len(w) >= 2 and w.upper() not in _NAME_STOPWORDS and not ordinary_word(w) \
                    and w.casefold() not in _NAME_PARTICLES:
                out.append(w)
        for c in comps:  # "O'Brien" is also typed "OBrien"
            if re.search(r"[\s\-]", c) and not ordinary_word(c):
                out.append(c)  # a compound surname whole ("Van Der Heijden", "Al-Hashimi"): its particles are no terms
            if "'" in c and len(c.replace("'", "")) >= 3:
                out.append(c.replace("'", ""))
            # a compound name typed as one word in labels ("VANDERBERG_J" for VAN DER BERG, "GarciaLopez1"
            # for GARCIA LOPEZ: an audit found both in RT plan and structure set labels)
            solid = re.sub(r"[\s\-']+", "", c)
            if solid != c and len(solid) >= 5 and re.search(r"[\s\-]", c):
                out.append(solid)
        if family and given:
            out += [f"{given} {family}", f"{family} {given}", f"{family}, {given}", f"{family},{given}",
                    f"{family}^{given}", f"{given[0]}. {family}", f"{given[0]} {family}",
                    f"{family} {given[0]}", f"{family}, {given[0]}"]
            if middle:
                out += [f"{given} {middle} {family}", f"{family}, {given} {middle}",
                        f"{given} {middle[0]}. {family}", f"{family}^{given}^{middle}",
                        f"{given} {middle[0]} {family}", f"{family}, {given} {middle[0]}",
                        f"{family} {given} {middle[0]}"]
        joined = " ".join(c for c in comps if c)
        if joined and not (" " not in joined and ordinary_word(joined)):  # "HEART^": no term, like its part
            out.append(joined)
    # "ONEILL" in a header is "O'Neill" in a report (an apostrophe variant that does not occur is harmless)
    out += [f"{w[0]}'{w[1:]}" for w in list(out) if re.fullmatch(r"[OoDdLl][A-Za-z]{3,}", w)]
    # Nicknames staff write for a given name ("Bob Smith" for ROBERT SMITH); none that is an English word.
    for group in raw.split("="):
        comps = [c.strip() for c in group.split("^")]
        family, given = (comps + ["", ""])[:2]
        for g in re.split(r"[\s\-]+", given):
            for nick in _NICKNAMES.get(fold(g).casefold(), ()):
                out += [nick.title()] + ([f"{nick.title()} {family}", f"{family}, {nick.title()}"] if family else [])
    # People type "Mueller" for "MÜLLER" ("MULLER" is the matcher's own accent fold).
    out += [g for v in list(out) if not v.isascii() and (g := _german_spelling(v)) != fold(v) and g not in out]
    # the name as written in another script: transliterated, in other romaji, a surname with its title
    out += [v for v in script_variants(raw) if v not in out]
    # a hyphenated name typed with a space ("KHALID AL HASHIMI" for AL-HASHIMI^KHALID): the matcher's flexible
    # separators are spaces, carets and commas, a hyphen is literal
    out += [s for v in list(out) if "-" in v and (s := re.sub(r"\s*-\s*", " ", v)) not in out]
    return out


# --------------------------------------------------------------------------------------------
# Names written in another script than the text that mentions them (an audit: "ИВАНОВ^ПЁТР" in the header,
# "IVANOV P CHEST" in the description; "Yamada^Tarou" and "Taro-san"; "张^伟" and "张先生", "김^민수" and "김 씨").

#: Variants of one name part at most: the matcher compiles every term into one regex.
MAX_SCRIPT_VARIANTS = 16


def _spec(text: str) -> dict[str, str]:
    """A transliteration table written 'source target ...' ('-': written as nothing). A key may carry a context:
    '^x' word-initial, 'x$' word-final, '~x' after a vowel, 'x~' before one, '~x~' between two, 'x!' before a
    voiceless consonant or at the end, 'x+' before a front vowel."""
    words = text.split()
    return {k: ("" if v == "-" else v) for k, v in zip(words[::2], words[1::2], strict=True)}


# Russian passports since 2013 (ICAO 9303) as the base; then the other systems people write a name in.
_CYR_BASE = _spec("""
а a б b в v г g д d е e ё e ж zh з z и i й i к k л l м m н n о o п p р r с s т t у u ф f х kh ц ts ч ch ш sh
щ shch ъ ie ы y ь - э e ю iu я ia і i ї i є ie ґ g ў u ђ dj ј j љ lj њ nj ћ c џ dz ѓ gj ќ kj ѕ dz
""")
_CYR_SYSTEMS = tuple({**_CYR_BASE, **_spec(s)} for s in (
    "",  # ICAO 9303: Ivanov, Petr, Iurii
    "^е ye ~е ye ё yo й y ю yu я ya ъ -",  # BGN/PCGN: Pyotr, Yuriy, Yevgeniy
    "^е ye ~е ye ё yo й y ю yu я ya ъ - ий$ y ый$ y ия$ ia кс x",  # English usage: Yury, Dmitry, Maria
    "х h ц c щ sch й j ю ju я ja ъ -",  # scholarly, in ASCII: Jurij, Cvetkov, Sapiro
    "ж z ч c ш s щ sc х h ц c й j ю ju я ja ъ -",  # ISO 9 / GOST 7.79 A with its diacritics typed plain: Zukov
    # German (Duden): Iwanow, Pjotr, Schtschukin, Wassilij
    "в w ж sch з s й j х ch ц z ч tsch ш sch щ schtsch ю ju я ja ё jo ^е je ~е je ъ - ~с~ ss ий$ ij ый$ y кс x",
    "ж j х kh ц ts ч tch ш ch щ chtch й i у ou ю iou я ia ё io ~с~ ss ий$ i ый$ y ъ -",  # French: Piotr, Iouri
    "в w ж z х ch ц c ч cz ш sz щ szcz й j ю ju я ja ё io ^е je ~е je ий$ ij ый$ y ъ -",  # Polish: Iwanow
))
#: Ukrainian (national system of 2010), used when a name has a letter only Ukrainian writes (і ї є ґ).
_UKR_SYSTEM = {**_CYR_BASE, **_spec("г h и y ^ї yi ^є ye ^й y ^ю yu ^я ya ий$ yi")}
_CYR_VOWELS = "аеёиоуыэюяіїєъь"

# Greek passports (ELOT 743 / ISO 843) as the base; then spoken, classical and common English spellings.
_GRK_BASE = _spec("""
α a β v γ g δ d ε e ζ z η i θ th ι i κ k λ l μ m ν n ξ x ο o π p ρ r σ s ς s τ t υ y φ f χ ch ψ ps ω o
ϊ i ϋ y ου ou αυ av αυ! af ευ ev ευ! ef ηυ iv ηυ! if γγ ng γκ gk ^γκ g γξ nx γχ nch ^μπ b μπ mp ^ντ d ντ nt
αι ai ει ei οι oi υι yi
""")
_GRK_SYSTEMS = tuple({**_GRK_BASE, **_spec(s)} for s in (
    "",  # ELOT 743: Papadopoulos, Giorgos, Christos
    "η i υ i ει i οι i υι i αι e χ h γκ ng ^γκ g μπ b ^μπ b ντ nd ^ντ d γ+ y γι~ y",  # as spoken: Yorgos, Hristos
    "β b η e υ y χ ch φ ph αι ae αυ au αυ! au ευ eu ευ! eu ηυ eu ηυ! eu γκ nk ^γκ g",  # classical: Philippos
    "χ h γι~ yi μπ b γκ ng",  # common English usage: Yiorgos, Hatzis, Angelos
))
_GRK_VOWELS = "αεηιουωϊϋ"
_GRK_FRONT = "εηιυϊϋ"
_GRK_VOICELESS = "θκξπστφχψς"
_CYRILLIC = re.compile("[\u0400-\u04ff]")
_GREEK = re.compile("[\u0370-\u03ff\u1f00-\u1fff]")
_GREEK_ACCENTS = frozenset("\u0300\u0301\u0313\u0314\u0342\u0345")  # tonos and polytonic marks (not dialytika)


def _transliterate(word: str, table: dict[str, str], vowels: str, front: str = "",
                   voiceless: str = "") -> str | None:
    """``word`` (lower case) in one system's Latin letters, longest source first; None when a character has
    no entry (a digit, another script)."""
    out: list[str] = []
    i = 0
    while i < len(word):
        for size in (3, 2, 1):
            chunk = word[i:i + size]
            if len(chunk) < size:
                continue
            after = word[i + size:]
            after_vowel, before_vowel = i > 0 and word[i - 1] in vowels, bool(after) and after[0] in vowels
            keys = ([f"^{chunk}"] if i == 0 else []) + ([f"{chunk}$"] if not after else []) \
                + ([f"~{chunk}~"] if after_vowel and before_vowel else []) + ([f"~{chunk}"] if after_vowel else []) \
                + ([f"{chunk}~"] if before_vowel else []) \
                + ([f"{chunk}!"] if not after or after[0] in voiceless else []) \
                + ([f"{chunk}+"] if after and (after[0] in front or after[:2] in ("αι", "ει", "οι")) else []) \
                + [chunk]
            hit = next((table[k] for k in keys if k in table), None)
            if hit is not None:
                out.append(hit)
                i += size
                break
        else:
            return None
    return "".join(out)


def _by_system(word: str, ukrainian: bool = False) -> list[str | None]:
    """A Cyrillic or Greek word in each system's spelling, in system order (None: not spelled by it)."""
    if _CYRILLIC.search(word):
        low = unicodedata.normalize("NFC", word.lower())
        systems = _CYR_SYSTEMS + ((_UKR_SYSTEM,) if ukrainian or re.search("[іїєґ]", low) else ())
        return [_transliterate(low, s, _CYR_VOWELS) for s in systems]
    if _GREEK.search(word):
        low = unicodedata.normalize("NFC", "".join(c for c in unicodedata.normalize("NFD", word.lower())
                                                   if c not in _GREEK_ACCENTS))
        return [_transliterate(low, s, _GRK_VOWELS, _GRK_FRONT, _GRK_VOICELESS) for s in _GRK_SYSTEMS]
    return []


def transliterations(word: str, ukrainian: bool = False) -> list[str]:
    """Latin spellings of a Cyrillic or Greek name part, one per system in a fixed order (``_CYR_SYSTEMS``,
    ``_GRK_SYSTEMS``), duplicates dropped: "Иванов" -> Ivanov, Iwanow; "Пётр" -> Petr, Pyotr, Pjotr, Piotr.
    [] for a part in another script. Technologists type the transliteration into descriptions."""
    return list(dict.fromkeys(f.capitalize() for f in _by_system(word, ukrainian) if f))[:MAX_SCRIPT_VARIANTS]


def _component_by_system(component: str, ukrainian: bool) -> list[str]:
    """A name component's words transliterated by each system and joined ([] unless every word is)."""
    words = [_by_system(w, ukrainian) for w in re.split(r"[\s,.\-']+", component) if w]
    if not words or not all(words):
        return []
    return [" ".join(s) for s in zip(*words, strict=False) if all(s)]


_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
#: Long vowels of romaji as written by different people: Tarou, Taro, Tarō (folded to Taro), Taroo, Taroh.
_LONG_VOWELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("\x01", ("ou", "o", "oo", "oh")), ("\x02", ("uu", "u")), ("\x03", ("ei", "e")))
_LONG_MARK = str.maketrans({"ō": "\x01", "ô": "\x01", "ū": "\x02", "û": "\x02", "ē": "\x03", "ê": "\x03"})
_LONG_SITE = re.compile(r"(ou|oo|oh(?![aeiouy]))|(uu)|(ei)")
_TO_KUNREI = ((r"shi", "si"), (r"chi", "ti"), (r"tsu", "tu"), (r"fu", "hu"), (r"ji", "zi"),
              (r"sh(?=[auo])", "sy"), (r"ch(?=[auo])", "ty"), (r"j(?=[auo])", "zy"))
_TO_HEPBURN = ((r"si", "shi"), (r"ti", "chi"), (r"tu", "tsu"), (r"(?<![sc])hu", "fu"), (r"zi", "ji"),
               (r"sy(?=[auo])", "sh"), (r"ty(?=[auo])", "ch"), (r"zy(?=[auo])", "j"))


def _respell(word: str, rules: tuple[tuple[str, str], ...]) -> str:
    for pattern, repl in rules:
        word = re.sub(pattern, repl, word)
    return word


def romaji_variants(word: str) -> list[str]:
    """Other romaji spellings of a Japanese name part: its long vowels written ou/o/oo/oh, uu/u, ei/e (ō, ū, ē
    fold to o, u, e), and Hepburn <-> Kunrei (shi/si, chi/ti, tsu/tu, fu/hu, ji/zi, sha/sya...). Long vowels
    are spelled one way through a word, as one writer does; fewest changes first, at most
    ``MAX_SCRIPT_VARIANTS``. The part itself is not among them."""
    low = word.lower().translate(_LONG_MARK)
    if not re.fullmatch("[a-z\x01-\x03]+", low):
        return []
    first: dict[str, str] = {}

    def site(m: re.Match[str]) -> str:
        mark = "\x01\x02\x03"[m.lastindex - 1 if m.lastindex else 0]
        first.setdefault(mark, m.group(0))
        return mark

    marked = _LONG_SITE.sub(site, low)
    dims: list[tuple[str, tuple[str, ...]]] = []
    for mark, spellings in _LONG_VOWELS:
        if mark in marked:  # the writer's own spelling first
            own = first.get(mark, spellings[1])
            dims.append((mark, (own, *[s for s in spellings if s != own])))
    choices = sorted(itertools.product(*(range(len(s)) for _m, s in dims), range(3)),
                     key=lambda c: (sum(x > 0 for x in c), c))
    out: list[str] = []
    for choice in choices:
        text = marked
        for (mark, spellings), pick in zip(dims, choice, strict=False):
            spelled = spellings[pick]
            if spelled == "oh":  # "oh" only before a consonant or at the end ("Satoh", not "Kohichi")
                text = re.sub(f"{mark}(?=[aeiouy\x01-\x03])", "ou", text)
            text = text.replace(mark, spelled)
        text = (text, _respell(text, _TO_KUNREI), _respell(text, _TO_HEPBURN))[choice[-1]]
        if text != word.lower() and text not in out:
            out.append(text)
        if len(out) >= MAX_SCRIPT_VARIANTS:
            break
    return [v.capitalize() for v in out]


_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAN_SURNAME = re.compile(f"[{_HAN}]{{1,4}}")
_JA_SURNAME = re.compile(f"[{_HAN}\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]{{1,8}}")
_KO_SURNAME = re.compile("[\uac00-\ud7af]{1,2}")
#: Chinese titles after a surname (张先生, 王医生) and the familiar 老/小 before a one-character one (老张, 小张).
_ZH_AFTER = tuple("先生 女士 小姐 太太 夫人 医生 醫生 大夫 老师 老師 阿姨 师傅 師傅".split())
_ZH_BEFORE = ("老", "小")
#: Japanese honorifics after a surname of any length (山田さん, 林様); 君 is left out (諸君, 主君 are words).
_JA_AFTER = tuple("さん 様 さま 先生 氏 くん ちゃん".split())
#: Korean after a surname, with or without a space (the matcher's separators may be empty): 김 씨, 김씨, 박 님.
_KO_AFTER = ("씨", "님", "선생님", "환자")
#: Surnames that are also a determiner or prefix before a noun ("이 환자" is "this patient", "신환자" a new
#: patient): no compound with 선생님 or 환자 for them.
_KO_DETERMINER_SURNAMES = frozenset("""
이 한 전 모 위 양 남 여 노 신 구 중 경 본 당 해 동 타 각 소 대 상 하 내 외 초 재 주 원 두 세 네 그 저
""".split())
#: Compounds above that are ordinary words ("小时" hour, "小于" less than, "小叶"/"小梁" lobule/trabecula,
#: "小关节" facet joint, "老师" teacher, "华氏" Fahrenheit): not identifying even when the surname is 时, 于...
_CJK_ORDINARY = frozenset("""
小时 小時 小于 小於 小叶 小葉 小梁 小关 小關 小段 小范 小範 小管 小孔 小心 小康 小房 小方 小白 小路
小车 小車 小米 小平 小区 小區 小支 小阴 小陰 小计 小計 小花 小海 小国 小國 小门 小門 小云 小雲 小巴
小羊 小鹿 小修 小干 小利 小井 小林 小池 小山 小田 小川 老化 老年 老师 老師 老公 老花 老练 老練 老路
老房 老方 老成 老乡 老鄉 老区 老區 老国 老國 老汤 老湯 老大 老二
华氏 華氏 摄氏 攝氏
""".split())


def surname_compounds(surname: str) -> list[str]:
    """A Chinese, Japanese or Korean surname with the titles and honorifics written around it (张先生, 老张,
    山田さん, 김 씨): a one-character surname is too short to be a term alone, but not with its title."""
    out: list[str] = []
    if _KO_SURNAME.fullmatch(surname):
        out += [f"{surname} {h}" for h in _KO_AFTER
                if h in ("씨", "님") or surname not in _KO_DETERMINER_SURNAMES]
    elif _HAN_SURNAME.fullmatch(surname):
        out += [surname + h for h in (*_ZH_AFTER, *_JA_AFTER)]
        out += [p + surname for p in _ZH_BEFORE] if len(surname) == 1 else []
    elif _JA_SURNAME.fullmatch(surname):
        out += [surname + h for h in _JA_AFTER]
    return [c for c in dict.fromkeys(out) if c not in _CJK_ORDINARY]


#: Short English words a derived spelling may happen to be (a romaji "Too" of Tou, "Sin" of Shin, "Jan" of Ян):
#: the derived spelling is then no term. The header's own spelling is not checked against them.
_COMMON_WORDS = frozenset("""
jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun
too zoo boo goo loo moo woo sin son sun tan tin ton hot not nut cut hut hit sit set sat had has her him his its
lot low new now old one our out own per put run see she six ten two use via was way who why yes yet you all any
are but can did end few for get got how man men off oil pan pen pet pin pot ran raw red rid row sad saw say sea
sex shy sky sum tie toe top try van vet war wet win won yen ion ions iron tone tube vein also back been best came
come does done down each even ever five four from gave give gone good have here into just keep kind knew know
last left less like line look made make many mean more most much must name near need next none only open over
part past rest same seen show some soon sure take tell than that them then they this time told took turn upon
very want well went were what when with word work year your hero sofa soda tour
""".split())


def _standalone_names(variants: Iterable[str]) -> list[str]:
    """Derived spellings that may stand alone as a term: 3+ letters (as ``significant`` asks of Latin matches),
    no title, no word of imaging text (``ordinary_word``), no common English word."""
    return [v for v in variants if len(v) >= 3 and v.upper() not in _NAME_STOPWORDS
            and v.casefold() not in _COMMON_WORDS and not ordinary_word(v)]


def script_variants(value: str | PersonName) -> list[str]:
    """The spellings of a person name another script gives it: Latin transliterations of its Cyrillic and Greek
    parts, romaji variants of a Japanese name's alphabetic group, and CJK surnames with their titles. Sorted in
    a fixed order (no set order), so outputs are the same on every run."""
    raw = str(value)
    out: list[str] = []
    japanese = bool(_KANA.search(raw))  # a phonetic group in kana: the romaji group is Japanese, not pinyin
    ukrainian = bool(re.search("[іїєґІЇЄҐ]", raw))
    for index, group in enumerate(raw.split("=")):
        comps = [c.strip() for c in group.split("^")]
        for c in comps:
            for w in (w for w in re.split(r"[\s,.\-']+", c) if w):
                out += _standalone_names(transliterations(w, ukrainian))
                if japanese and index == 0:
                    out += _standalone_names(romaji_variants(w))
        family, given = ([_component_by_system(c, ukrainian) for c in comps[:2]] + [[], []])[:2]
        if family and given and min(len(family[0]), len(given[0])) < 3:
            # a transliterated part too short to stand alone ("Ли" -> "Li") counts beside the other part
            out += list(dict.fromkeys(v for f, g in zip(family, given, strict=False)
                                      for v in (f"{g} {f}".title(), f"{f} {g}".title())))
        if len(comps) == 1 and _CJK_NAME.fullmatch(comps[0]):  # the whole name in one component ("王小东")
            surnames = [comps[0][:1]] + ([comps[0][:2]] if len(comps[0]) == 4 else [])
        else:
            surnames = comps[:1] if comps and comps[0] else []
        for s in surnames:
            out += surname_compounds(s)
    return list(dict.fromkeys(out))


#: Given name -> nicknames of 3+ letters that are no English word ("will", "bill", "pat", "sue" are left out).
_NICKNAMES: dict[str, tuple[str, ...]] = {k: tuple(v.split()) for k, v in {
    "robert": "bob bobby robbie", "william": "billy willie liam", "james": "jim jimmy jamie",
    "john": "johnny", "richard": "rick ricky", "thomas": "tommy", "michael": "mike mikey",
    "joseph": "joe joey", "charles": "charlie", "edward": "eddie", "anthony": "tony",
    "christopher": "chris", "daniel": "danny", "david": "dave davy", "matthew": "matt", "andrew": "andy",
    "steven": "steve", "stephen": "steve", "alexander": "alex", "benjamin": "benny", "samuel": "sammy",
    "nicholas": "nicky", "timothy": "timmy", "kenneth": "kenny", "ronald": "ronnie", "donald": "donnie",
    "gerald": "jerry", "lawrence": "larry", "patrick": "paddy", "margaret": "maggie peggy marge greta",
    "elizabeth": "liz beth betty betsy lizzie eliza", "patricia": "patty trish tricia", "jennifer": "jenny",
    "katherine": "kathy katie", "catherine": "cathy katie", "kathleen": "kathy", "susan": "susie",
    "deborah": "debbie", "rebecca": "becky becca", "barbara": "barb", "dorothy": "dottie",
    "christine": "tina", "victoria": "vicky", "jessica": "jess jessie", "francisco": "paco pancho", "jose": "pepe",
    "enrique": "kike", "margarita": "rita",
    # Russian and Ukrainian (romanised), Greek, Spanish, Yoruba, Hebrew diminutives staff write (held-out corpora:
    # "Katya (Ekaterina)", "Olya", "Nikos K.", "goes by 'Lucho'", "Seun Adeyemi"); none an English or clinical word
    "ekaterina": "katya katia", "yekaterina": "katya katia", "olena": "olya alyona", "olga": "olya",
    "elena": "lena", "yelena": "lena", "dmitri": "dima", "dmitry": "dima", "dmytro": "dima",
    "aleksandr": "sasha", "aleksandra": "sasha", "alexandra": "sasha", "vladimir": "volodya vova",
    "volodymyr": "volodya vova", "natalia": "natasha", "nataliya": "natasha", "tatiana": "tanya", "tetiana": "tanya",
    "tatyana": "tanya", "svetlana": "sveta", "mikhail": "misha", "mykhailo": "misha", "nikolai": "kolya",
    "mykola": "kolya", "anastasia": "nastya", "maria": "masha", "ivan": "vanya", "yuri": "yura", "yurii": "yura",
    "evgeny": "zhenya", "yevgeny": "zhenya", "yevhen": "zhenya", "pavel": "pasha", "konstantin": "kostya",
    "nikolaos": "nikos", "konstantinos": "kostas", "georgios": "giorgos yiorgos", "ioannis": "giannis yannis",
    "dimitrios": "dimitris", "paraskevi": "voula vivi", "panagiotis": "panos", "athanasios": "thanos thanasis",
    "aikaterini": "katerina", "guadalupe": "lupe lupita", "jesus": "chuy", "ignacio": "nacho", "luis": "lucho",
    "eduardo": "lalo", "roberto": "beto", "alberto": "beto", "dolores": "lola", "rosario": "chayo",
    "oluwaseun": "seun", "oluwafemi": "femi", "olufunmilayo": "funmi", "adebayo": "bayo", "oluwatosin": "tosin",
    "yosef": "yossi", "yitzhak": "itzik", "beverley": "bev", "beverly": "bev", "siobhan": "shiv"}.items()}


_GERMAN = str.maketrans({"Ä": "AE", "Ö": "OE", "Ü": "UE", "ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss",
                         "Þ": "Th", "þ": "th", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe"})


def _german_spelling(text: str) -> str:
    """A name with umlauts as German typists write it without them ("MÜLLER" -> "MUELLER"), and letters
    typed as two ("Þórðardóttir" -> "Thordardottir", "Æsa" -> "Aesa"); other accents need no variant:
    the matcher folds them (``fold``)."""
    return fold(text.translate(_GERMAN))


#: Name parts that are words of imaging text beyond ``is_clinical_word``'s vocabulary (anatomy, sizes, timing) or
#: English words that are no reference to a person alone (modal verbs, a month). A patient's name part among them
#: is matched only with another part of the name (``name_variants``): an audit found "CT HEAD" cleaned to "CT [X]"
#: for HEAD^MAY, the kernel BONE replaced for GREEN^BONE, "LONG BONE SURVEY" and "will repeat" lost. Surnames such
#: as WHITE or BROWN stay terms alone: a bare surname in a description is more often the patient than not.
_ORDINARY_NAME_WORDS = frozenset("""
head hand foot bone back neck arm leg heart lung knee spine brain skull hip side front long short early late low
high child children major minor marrow matter fat bowel joint face eye ear nose lip jaw chin cheek rib ribs toe heel
colon rectum stomach belly mouth tooth gums throat shin trunk waist sac lobe vein muscle gall bile blood fluid air
gas liver kidney bladder breast temple palm crown nail cord lens stone hernia cast sling stent clip coil filter
pump port drain tube line splint wire screw rod pin plate marker ring field couch shell seed block wedge beam
boost dose care flow speed delay smooth hard bright dark sleep swift overall
may will mark can
klein kleine kleiner gross grosse grosser lang lange kurz kurze neu neue jung stark breit hoch tief schmal mittel
groot kort breed nieuw petit petite grand grande court courte piccolo piccola lungo lunga corto corta largo larga
""".split())
#: Particles of compound surnames ("FONSECA DE ALMEIDA", "VAN DER HEIJDEN", "AL-HASHIMI"): part of the name's
#: combinations, never a term alone, where "de", "van" or "al" would go from every sentence of a Portuguese, Dutch
#: or Arabic text (a fresh held-out corpus: "CEC [X] orofaringe" for a patient FONSECA DE ALMEIDA).
_NAME_PARTICLES = frozenset("""de da di du del della delle dei degli dos das do van von der den ter ten la le el al
bin ben bint ibn abu y e zu vom""".split())


def ordinary_word(word: str) -> bool:
    """Whether a name part is an ordinary word: clinical vocabulary or a common English word."""
    from deid_core.freetext import is_clinical_word  # (freetext imports this module)

    return word.casefold() in _ORDINARY_NAME_WORDS or is_clinical_word(word)


def significant(matched: str) -> bool:
    """Whether a term match is long enough to mean an identifier: 3+ characters, or 2 ideographs or
    syllables (most Chinese, Japanese and Korean family names are two characters). Two Latin letters
    ("OB", "LI") match too much ordinary text to count."""
    return len(matched) >= 3 or (len(matched) == 2 and all(ord(c) >= 0x2E80 for c in matched))


_LOOSE_DATE = re.compile(r"(\d{4})[.\-/]?(\d{2})[.\-/]?(\d{2})")


def dicom_dates(value: str) -> list[str]:
    """The YYYYMMDD dates a DA value names however it is written: "19570311", the ACR-NEMA "1957.03.11",
    "1957-03-11", or a range ("19570311-", "19570311-19580101"). An audit found a birth date written
    "1957.03.11" captured as no date, and "19570311" kept in a private element."""
    v = value.strip()
    m = _LOOSE_DATE.fullmatch(v)
    parts = ["".join(m.groups())] if m else [p.strip() for p in v.split("-") if p.strip()] if "-" in v else []
    out = []
    for p in parts:
        if re.fullmatch(r"\d{8}", p):
            try:
                _dt.date(int(p[:4]), int(p[4:6]), int(p[6:]))
            except ValueError:
                continue
            out.append(p)
    return out


def date_variants(da: str) -> list[str]:
    """Common renderings of a DA value (YYYYMMDD): ISO, US, European, month names, 2-digit years."""
    da = da.strip()
    if not re.fullmatch(r"\d{8}", da):
        forms = dicom_dates(da)
        if forms:  # "1957.03.11" (ACR-NEMA), "1957-03-11", a range "19570311-": the date(s) it names
            return list(dict.fromkeys([da, *(v for f in forms for v in date_variants(f))]))
        return [da] if len(da) >= 4 else []
    try:
        d = _dt.date(int(da[:4]), int(da[4:6]), int(da[6:]))
    except ValueError:
        return [da]
    y, m, dd, yy = f"{d.year:04d}", f"{d.month:02d}", f"{d.day:02d}", f"{d.year % 100:02d}"
    mon = _MONTHS[d.month - 1]
    out = [da, f"{y}-{m}-{dd}", f"{y}/{m}/{dd}", f"{y}.{m}.{dd}",
           f"{m}/{dd}/{y}", f"{d.month}/{d.day}/{y}", f"{m}-{dd}-{y}", f"{m}.{dd}.{y}",
           f"{dd}/{m}/{y}", f"{dd}.{m}.{y}", f"{dd}-{m}-{y}", f"{d.day}.{d.month}.{y}",
           f"{m}/{dd}/{yy}", f"{d.month}/{d.day}/{yy}", f"{dd}.{m}.{yy}", f"{dd}/{m}/{yy}",
           f"{mon} {d.day}, {y}", f"{mon} {d.day} {y}", f"{d.day} {mon} {y}", f"{mon[:3]} {d.day}, {y}",
           f"{mon[:3]} {d.day} {y}", f"{d.day} {mon[:3]} {y}", f"{dd}-{mon[:3]}-{y}", f"{d.day}-{mon[:3]}-{y}",
           f"{dd}{mon[:3]}{y}", f"{dd}-{mon[:3].upper()}-{y}", f"{dd}-{mon[:3]}-{yy}",
           f"{y}年{d.month}月{d.day}日", f"{y}年{m}月{dd}日", f"{y}년 {d.month}월 {d.day}일"]
    # unpadded and year-first forms, 2-digit years with dashes, ordinals and 6-digit runs: an audit found the
    # patient's own birth date kept as "1961/3/5", "5-3-1961", "March 5th, 1961", "05MAR61" and "610305"
    # in a kept comment (Japanese systems write y/m/d unpadded)
    nth = f"{d.day}{_ordinal(d.day)}"
    out += [f"{y}/{d.month}/{d.day}", f"{y}-{d.month}-{d.day}", f"{y}.{d.month}.{d.day}",
            f"{d.day}/{d.month}/{y}", f"{d.day}-{d.month}-{y}", f"{d.month}-{d.day}-{y}", f"{d.month}.{d.day}.{y}",
            f"{m}-{dd}-{yy}", f"{dd}-{m}-{yy}", f"{d.month}-{d.day}-{yy}", f"{d.day}/{d.month}/{yy}",
            f"{d.day}.{d.month}.{yy}", f"{yy}/{m}/{dd}", f"{yy}-{m}-{dd}",
            f"{mon} {nth}, {y}", f"{mon} {nth} {y}", f"{nth} {mon} {y}", f"{nth} of {mon} {y}",
            f"{mon[:3]} {nth}, {y}", f"{mon[:3]} {nth} {y}", f"{nth} {mon[:3]} {y}", f"{dd} {mon[:3]} {yy}",
            f"{dd}{mon[:3]}{yy}", f"{d.day}{mon[:3]}{yy}", f"{d.day}{mon[:3]}{y}",
            f"{yy}{m}{dd}", f"{dd}{m}{yy}", f"{m}{dd}{yy}", f"{dd}{m}{y}", f"{m}{dd}{y}",
            # underscores and spaces of file and series names ("1957_03_11", "2023 03 14", "2023Mar14": an audit)
            f"{y}_{m}_{dd}", f"{dd}_{m}_{y}", f"{m}_{dd}_{y}", f"{y} {m} {dd}", f"{dd} {m} {y}",
            f"{y}{mon[:3]}{dd}", f"{y}{mon[:3]}{d.day}"]
    return list(dict.fromkeys(out))


def _ordinal(day: int) -> str:
    """English ordinal suffix of a day of the month ("1st", "22nd", "13th")."""
    return "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")


def phone_variants(value: str) -> list[str]:
    """A phone number as written and as bare digits (with and without a leading country code)."""
    digits = re.sub(r"\D", "", value)
    out = [value.strip()]
    if len(digits) >= 7:
        out.append(digits)
        if len(digits) == 11 and digits.startswith("1"):
            digits = digits[1:]
            out.append(digits)
        if len(digits) == 7:  # a local number: "555-0199" is also written "555 0199" and "555.0199"
            out += [f"{digits[:3]}-{digits[3:]}", f"{digits[:3]} {digits[3:]}", f"{digits[:3]}.{digits[3:]}"]
        if len(digits) == 10:
            out += [f"{digits[:3]}-{digits[3:6]}-{digits[6:]}", f"({digits[:3]}) {digits[3:6]}-{digits[6:]}",
                    f"{digits[:3]}.{digits[3:6]}.{digits[6:]}", f"{digits[:3]} {digits[3:6]} {digits[6:]}",
                    f"{digits[3:6]}-{digits[6:]}", f"{digits[3:6]} {digits[6:]}", f"{digits[3:6]}.{digits[6:]}",
                    digits[3:]]  # the local number alone, as people write it ("call 555 0199")
    return out


_CITY_STATE_ZIP = re.compile(
    r"(?P<city>.*?[A-Za-z].*?)[\s,]+(?P<state>[A-Za-z]{2})\.?(?:[\s,]+(?P<zip>\d{5}(?:-\d{4})?))?")


def address_variants(value: str) -> list[str]:
    """The whole address, each comma/caret separated part, and street names without their number."""
    out = [value]
    for part in re.split(r"[,^\n;]+", value):
        part = part.strip()
        if len(part) >= 3:
            out.append(part)
            street = re.sub(r"^\d+[A-Za-z]?\s+", "", part)
            if street != part and len(street) >= 4:
                out.append(street)
            # the street's proper name without its suffix ("Maple" from "Maple Avenue")
            core = re.sub(r"\s+(street|st|avenue|ave|road|rd|drive|dr|lane|ln|boulevard|blvd|way|court|ct|place"
                          r"|pl|terrace|circle)\.?$", "", street, flags=re.I)
            if core != street and len(core) >= 4:
                out.append(core)
                if street != part:  # "1261 Leawood": the house number goes with its street
                    out.append(part[:len(part) - len(street)] + core)
            # "Little Rock AR 72223": the city, the city with its state, the ZIP code
            city = _CITY_STATE_ZIP.fullmatch(part)
            if city:
                if len(city["city"].strip()) >= 4:
                    out += [city["city"].strip(), f"{city['city'].strip()} {city['state']}"]
                if city["zip"]:
                    out.append(city["zip"])
    # Chinese, Japanese and Korean addresses run on without separators: each administrative unit and the
    # street part after it ("海淀区中关村大街27号" of "北京市海淀区中关村大街27号" once survived, the city left off)
    for m in _CJK_ADDRESS_UNIT.finditer(value):
        name = m.group("name")
        if len(name) >= 2 and not name.strip("0123456789０１２３４５６７８９-－").strip() == "":
            out += [m.group(0), value[m.start():]]  # "中关村", "中关村大街27号"; not "大街" or "27号" alone
    return out


#: One unit of a CJK address: a name and its unit character (province, city, district, town, road, number...).
_CJK_ADDRESS_UNIT = re.compile(r"(?P<name>[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af0-9０-９\-－]+?)"
                               r"(?:省|市|区|區|县|縣|镇|鎮|乡|鄉|村|道|都|府|町|丁目|路|街|大街|巷|弄|号|號|番地|"
                               r"번지|로|길|동|구|군|시|도)")


# Trailing words too generic to identify an institution on their own ("Cedar Hills" identifies,
# "Hospital" does not).
#: Words of place names and street addresses that name no place alone (OCR tolerance never matches them).
_GENERIC_PLACE_WORDS = frozenset("""street st avenue ave road rd drive dr lane ln boulevard blvd way court ct place pl
    terrace circle parkway pkwy highway hwy square trail falls fall lake lakes hills hill springs spring beach heights
    valley port mount mountain park city town village north south east west new saint san santa fort point bay
    creek river grove glen view ridge meadow meadows harbor harbour island islands gardens garden station""".split())
_INSTITUTION_GENERIC = frozenset({
    "hospital", "hospitals", "medical", "center", "centre", "clinic", "clinics", "imaging", "radiology",
    "regional", "general", "university", "health", "healthcare", "system", "institute", "associates",
    "group", "inc", "llc", "ltd", "department", "dept", "memorial", "community", "county", "the", "of", "and",
    "diagnostic", "diagnostics", "services", "care", "campus", "pc",
})


def institution_variants(value: str) -> list[str]:
    """The name as written and its distinctive core ("Cedar Hills Hospital" -> "Cedar Hills")."""
    value = " ".join(value.split())
    out = [value]
    words = value.split(" ")
    while words and words[-1].strip(".,").casefold() in _INSTITUTION_GENERIC:
        words = words[:-1]
    core = " ".join(words).strip(" ,-")
    from deid_core.freetext import is_clinical_word  # (freetext imports this module)

    if core and core != value and len(core) >= 4 and not all(
            w.strip(".,").casefold() in _INSTITUTION_GENERIC or is_clinical_word(w) for w in words):
        out.append(core)  # not "Breast" of "Breast Imaging Center": a clinical word identifies no one
    # how staff write it in free text (an independent corpus): the name after a leading generic word
    # ("Nordstadt" of "Klinikum Nordstadt", "La Paz" of "Hospital La Paz"), its initials when they make 4+
    # letters ("RRMC" of "Riverside Regional Medical Center")
    all_words = value.split(" ")
    lead = 0
    while lead < len(all_words) and all_words[lead].strip(".,").casefold() in _INSTITUTION_LEAD:
        lead += 1
    rest = " ".join(all_words[lead:]).strip(" ,-")
    if lead and len(rest) >= 4 and not is_clinical_word(rest):
        out.append(rest)
    # "St Agatha" is also "St. Agatha" and "Saint Agatha", "Mount Sinai" "Mt. Sinai" (an audit: a dose report's
    # location and an RT image description kept the institution in the other spelling)
    for variant in list(out):
        for short, long in (("St", "Saint"), ("Mt", "Mount"), ("Ft", "Fort")):
            if re.search(rf"\b{short}\.?\s", variant):
                out += [re.sub(rf"\b{short}\.?(?=\s)", rep, variant) for rep in (f"{short}.", short, long)]
            elif re.search(rf"\b{long}\s", variant, re.IGNORECASE):
                out += [re.sub(rf"\b{long}(?=\s)", rep, variant, flags=re.IGNORECASE) for rep in (f"{short}.", short)]
    out = list(dict.fromkeys(out))
    letters = [w for w in re.split(r"[\s\-]+", value) if w and w.casefold() not in _INSTITUTION_SMALL]
    acronym = "".join(w[0] for w in letters if w[0].isalpha()).upper()
    if len(acronym) >= 4 and not is_clinical_word(acronym):
        out.append(acronym)
    return out


_INSTITUTION_SMALL = frozenset({"of", "the", "and", "de", "la", "du"})
#: Words an institution's name may start with before the part that names it.
_INSTITUTION_LEAD = frozenset({"hospital", "klinikum", "klinik", "centre", "center", "clinique", "clinica", "clínica",
                               "universitario", "universitaire", "hospitalier", "university", "hôpital", "hopital",
                               "chu", "ch"})


def id_variants(value: str) -> list[str]:
    """An identifier as written and without its separators (OCR and people drop them)."""
    value = value.strip()
    out = [value]
    bare = re.sub(r"[\s\-_./]", "", value)
    if bare != value and len(bare) >= 3:
        out.append(bare)
    unpadded = bare.lstrip("0")  # "0004471" is also written "4471"
    if bare.isdigit() and unpadded != bare and len(unpadded) >= 4:
        out.append(unpadded)
    if bare.isdigit() and len(unpadded) >= 4:
        # ... and "4471902" is printed "004471902" by systems that pad numbers to a fixed width (an audit)
        out += ["0" * k + unpadded for k in range(1, 4) if k + len(unpadded) <= 12]
    digits = re.findall(r"\d{6,}", bare)
    if len(digits) == 1 and digits[0] != bare:
        # the long number of an ID with a prefix ("A20398811") identifies on its own: the prefix is often dropped
        out.append(digits[0])
    runs = re.findall(r"[A-Za-z]+|\d+", bare)
    if 1 < len(runs) <= 4 and "".join(runs) == bare and any(r.isdigit() and len(r) >= 3 for r in runs):
        # letters and digits apart, as people write them: "ZX77123" is also "ZX 77123", "ZX-77123" (an audit)
        out += [sep.join(runs) for sep in (" ", "-", ".", "/")]
    return list(dict.fromkeys(out))


def _values(elem_value: object) -> Iterable[str]:
    if elem_value is None:
        return []
    if isinstance(elem_value, list | tuple | MultiValue):
        return [str(v) for v in elem_value if v not in (None, "")]
    if isinstance(elem_value, bytes):
        return []
    return [str(elem_value)]


# VRs that yield no term unless their keyword is listed above (not PN/DA/DT/SQ, not a text VR that may
# hold an e-mail). UN is absent: pydicom may convert it to the dictionary VR.
_NO_TERM_VRS = frozenset({"AE", "AS", "AT", "CS", "DS", "FD", "FL", "IS", "OB", "OD", "OF", "OL", "OV", "OW",
                          "SL", "SS", "SV", "TM", "UI", "UL", "UR", "US", "UV"})
_EMAIL_VRS = frozenset({"LO", "LT", "ST", "UT", "SH", "UC"})
_TERM_TAGS = frozenset(
    tag for kw in (*_ID_KEYWORDS, *_ADDRESS_KEYWORDS, *_PHONE_KEYWORDS, *_INSTITUTION_KEYWORDS, *_OTHER_KEYWORDS,
                   "OtherPatientIDsSequence")
    if (tag := tag_for_keyword(kw)) is not None)


def _yields_no_term(raw: object) -> bool:
    """True for a still-raw element whose VR (as pydicom would convert it) can hold no identifier: its
    value need not be decoded at all (decoding every number and UID was most of the capture time)."""
    if not isinstance(raw, RawDataElement) or raw.tag in _TERM_TAGS:
        return False
    if _name_tag(raw.tag) or _date_tag(raw.tag):  # whatever VR it was written with (a PatientName as LO)
        return False
    vr = raw.VR
    if vr is None:  # implicit VR: pydicom takes the dictionary VR of a public tag
        if raw.tag.is_private:
            return False
        try:
            vr = dictionary_VR(raw.tag)
        except KeyError:
            return False
        if vr in _EMAIL_VRS:
            return _no_at_sign(raw.value)
        return all(v in _NO_TERM_VRS for v in vr.split(" or "))
    if vr in _EMAIL_VRS:
        return _no_at_sign(raw.value)
    return vr in _NO_TERM_VRS


def _no_at_sign(value: object) -> bool:
    # Text of an unlisted keyword only yields e-mail addresses; every character set DICOM allows
    # encodes "@" as the byte 0x40, so bytes without it hold none.
    return isinstance(value, bytes) and b"@" not in value


#: How each kind of identifier is spelled out into the variants worth searching for.
_VARIANTS: dict[str, Callable[[str], list[str]]] = {
    NAME: name_variants, DATE: date_variants, ID: id_variants, ADDRESS: address_variants,
    PHONE: phone_variants, INSTITUTION: institution_variants,
}


@functools.lru_cache(maxsize=4096)
def _variant_terms(kind: str, value: str) -> frozenset[Term]:
    """The terms one value adds (its variants, normalised by ``PhiTerms.add``): the same names and
    dates recur in every element and file of a patient, so they are spelled out once. In memory only."""
    out = PhiTerms()
    variants = _VARIANTS.get(kind)
    for v in variants(value) if variants else []:
        if kind != ID or len(v) >= 3:
            out.add(v, kind)
    return frozenset(out.terms)


_MISREAD = re.compile("[\u00c2-\u00f4][\u0080-\u00bf]")


def utf8_repaired(value: str) -> str | None:
    """A value read right when its bytes were UTF-8 that a single-byte character set (ISO_IR 100, or none)
    misread ("MÃ¼ller" → "Müller"); None when it shows no such misreading. An audit found a description
    written in UTF-8 under ISO_IR 100 keep the patient's name, which no term matched in its misread form."""
    forms = _utf8_misread(value)
    return forms[0] if forms else None


def _utf8_misread(value: str) -> list[str]:
    """More forms of a value that is UTF-8 the file's character set (ISO_IR 100, or none) misread, as
    happens in real data: read right ("MÃ¼ller" is "Müller", which a report may spell "Muller"), and
    misread in upper and lower case ("MÃ\x9cLLER": the misread bytes of "Ü" and "ü" differ, so no
    case-insensitive match finds one for the other). [] when the value shows no such misreading."""
    if value.isascii() or not _MISREAD.search(value):
        return []
    try:
        fixed = value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return []
    if fixed == value:
        return []
    return [fixed] + [f for f in (fixed.upper().encode("utf-8").decode("latin-1"),
                                  fixed.lower().encode("utf-8").decode("latin-1")) if f != value]


_PATIENT_ID_KEYWORDS = frozenset({"PatientID", "OtherPatientIDs"})


def _short_number(value: str) -> bool:
    """An encounter number of 1-3 digits (StudyID "100", a step ID "2"): not searched for. It recurs in any
    text by chance ("ISOVUE300/100", "100 mL"), and it is no identifier of the patient; the element itself is
    still emptied or replaced by the profile."""
    v = value.strip()
    return v.isdigit() and len(v) < 4


@functools.lru_cache(maxsize=1024)
@functools.lru_cache(maxsize=4096)
def dictionary_vr(tag: int) -> str:
    """The VR the DICOM dictionary gives a tag ("" when unknown): what an element is, whatever VR a file wrote."""
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return ""


def _name_tag(tag: BaseTag) -> bool:
    """A public tag the dictionary declares PN (whatever VR the file wrote it with)."""
    return not tag.is_private and dictionary_vr(int(tag)) == "PN"


def _date_tag(tag: BaseTag) -> bool:
    """A public tag the dictionary declares DA (whatever VR the file wrote it with)."""
    return not tag.is_private and dictionary_vr(int(tag)) == "DA"


def capture_terms(ds: Dataset) -> PhiTerms:
    """Collect the identifiers of ``ds`` (top level and every sequence) with their variants."""
    terms = PhiTerms()

    def visit(d: Dataset, parent: str = "") -> None:
        elements = d._dict
        for tag in list(elements):
            try:
                elem = elements[tag]
                if isinstance(elem, RawDataElement):
                    if _yields_no_term(elem):
                        continue
                    elem = element(d, tag)
                elif elem.VR in _NO_TERM_VRS and tag not in _TERM_TAGS:
                    continue  # already decoded (the input check): its VR tells it holds no term
            except Exception:  # an element that cannot be decoded: nothing to capture, scrub removes it
                continue
            if elem.VR == "SQ":
                for item in elem.value or []:
                    visit(item, elem.keyword)
                continue
            try:
                vals = list(_values(elem.value))
            except Exception:  # an undecodable value: nothing to capture, scrub removes it
                continue
            kw = elem.keyword
            vals = [v.replace("\x00", "") for v in vals]  # a NUL inside a name component is no part of it
            vals += [m for v in vals for m in _utf8_misread(v)]
            for v in vals:
                if not v.strip():
                    continue
                if parent == "PersonIdentificationCodeSequence" and kw in _CODE_VALUE_KEYWORDS:
                    # a code that identifies a person: its value is a staff or licence number, its meaning
                    # the person's name ("Lindqvist, Anna")
                    terms.terms |= _variant_terms(NAME if kw == "CodeMeaning" else ID, v)
                elif elem.VR == "PN" or _name_tag(elem.tag):
                    # a name element written with another VR (PatientName as LO) still names a person
                    terms.terms |= _variant_terms(NAME, v)
                elif (elem.VR == "DA" or _date_tag(elem.tag)) and not elem.tag.is_private:
                    terms.terms |= _variant_terms(DATE, v)
                    terms.dates.update(dicom_dates(v))
                elif (elem.VR == "DT" or dictionary_vr(int(elem.tag)) == "DT") and not elem.tag.is_private \
                        and re.match(r"\d{8}", v.strip()):  # a DT written as LO still holds a date
                    terms.dates.add(v.strip()[:8])
                    terms.terms |= _variant_terms(DATE, v.strip()[:8])
                elif kw in _ID_KEYWORDS:
                    if kw in _PATIENT_ID_KEYWORDS or not _short_number(v):
                        terms.terms |= _variant_terms(ID, v)
                elif kw in _ADDRESS_KEYWORDS:
                    terms.terms |= _variant_terms(ADDRESS, v)
                elif kw in _PHONE_KEYWORDS:
                    terms.terms |= _variant_terms(PHONE, v)
                elif kw in _INSTITUTION_KEYWORDS or (kw == "LocalNamespaceEntityID" and len(v.strip()) >= 5):
                    # LocalNamespaceEntityID names the organisation or system that issued an identifier
                    # ("St Agatha Oncology Institute", "EPIC_STAGATHA"); a short one ("RIS", "HIS") is a
                    # kind of system and a common word in free text, not searched for
                    terms.terms |= _variant_terms(INSTITUTION, v)
                elif kw in _OTHER_KEYWORDS and len(v) >= 3:
                    terms.add(v, OTHER)
                if elem.VR in _EMAIL_VRS:
                    for email in _EMAIL_RE.findall(v):
                        terms.add(email, EMAIL)
            if kw == "OtherPatientIDsSequence":
                pass  # handled through recursion (PatientID inside)

    visit(ds)
    _birth_year_if_over_89(ds, terms)
    return terms


def _birth_year_if_over_89(ds: Dataset, terms: PhiTerms) -> None:
    """The birth year alone of a patient over 89 at the study date is an identifier (HIPAA: ages over 89 and
    the dates that reveal them): "born 1928" in a report is removed like the full date."""
    try:
        birth = str(ds.get("PatientBirthDate", "") or "").strip()
        study = str(ds.get("StudyDate", "") or "").strip()
        if re.fullmatch(r"\d{8}", birth) and re.fullmatch(r"\d{8}", study):
            age = int(study[:4]) - int(birth[:4]) - (study[4:8] < birth[4:8])
            if age > 89:
                terms.add(birth[:4], DATE)
    except Exception:  # noqa: BLE001 - unreadable dates: the full date terms stand alone
        pass


# "...ID" keywords that are not identifying (codes, structural references).
_SAFE_ID_KEYWORDS = frozenset({
    "PatientIdentityRemoved", "SOPClassUID", "ContentQualification", "TransferSyntaxUID", "CodingSchemeID",
    "MappingResource", "ContextIdentifier", "TemplateIdentifier", "LossyImageCompressionMethod",
    "ReferencedFrameOfReferenceUID", "DimensionOrganizationUID", "SeriesID", "RTROIInterpretedType",
    "ContextGroupExtensionCreatorUID", "PrivateCreatorID", "BeamLimitingDeviceID",
    # Device identity is retained under the TCIA profile (Retain Device Identity): not patient PHI.
    "DeviceID", "PlateID", "CassetteID", "GantryID", "DetectorID", "DeviceSerialNumber", "SoftwareVersions",
    "ManufacturerDeviceClassUID", "UDISequence", "SourceSerialNumber", "TableID", "TransducerID",
})


# --------------------------------------------------------------------------------------------
# Matching


@dataclass(frozen=True)
class Span:
    """Where a term matched in a text: character offsets and the term's kind (never the text)."""

    start: int
    end: int
    kind: str


def _term_pattern(text: str) -> str:
    # Flexible separators: "John  Smith", "SMITH,JOHN", "2021-03-04" vs "2021 03 04" all match.
    tokens = [re.escape(tok) for tok in re.split(r"[\s^,]+", text) if tok]
    return r"[\s^,]*".join(tokens)


_SEP = r"[\s^,]*"
_SEP_KEY = "\x00sep"  # trie keys that are not characters
_END_KEY = "\x00end"
_SPLIT = re.compile(r"[\s^,]+")


def _norm(text: str) -> str:
    return " ".join(_SPLIT.split(text))


#: Letters that carry no accent to drop but are written as another letter when typed plainly.
_FOLD_EXTRA = {"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "ı": "i",
               "ħ": "h", "Ħ": "H", "ŧ": "t", "Ŧ": "T"}


class _FoldTable(dict[int, int]):
    """``str.translate`` table of ``fold``, filled on first use of each character: the character's
    compatibility decomposition without its combining marks, when that is one character ("é" → "e",
    "ș" → "s", "ế" → "e", "ά" → "α", "ё" → "е", "أ" → "ا", full-width "Ａ１－" → "A1-", half-width "ｶ" →
    "カ"), hiragana as katakana (a reading is written in either), a few letters by hand; else itself."""

    def __missing__(self, code: int) -> int:
        c = chr(code)
        out = _FOLD_EXTRA.get(c)
        if out is None:
            if 0x3041 <= code <= 0x3096:  # hiragana → katakana, one for one
                c = chr(code + 0x60)
            base = "".join(ch for ch in unicodedata.normalize("NFKD", c) if not unicodedata.combining(ch))
            out = base if len(base) == 1 else c
        self[code] = ord(out)
        return self[code]


_FOLD = _FoldTable()


#: All-digit IDs of this many digits are also matched typed in digit groups: one space, hyphen, dot or slash
#: between any two digits ("1234 5678" of PatientID 12345678). Shorter runs recur by chance in numbers.
GROUPED_ID_MIN_DIGITS = 6
_GROUP_SEP = r"[ \-./]?"


def _gluable(text: str) -> bool:
    """An ID of 6+ characters with 4+ digits and a letter: matched even glued to other characters, which would
    be chance for a short one, an all-letter one, or an all-digit one (times and numbers hold any digits)."""
    return (len(text) >= 6 and sum(c.isdigit() for c in text) >= 4 and any(c.isalpha() for c in text)
            and text.isascii())


#: The time a DT puts right after its date ("20230314101500" in "KV20230314101500"): the date is no part of a
#: longer number there.
_TIME_TAIL = re.compile(r"(?:[01]\d|2[0-3])(?:[0-5]\d){1,2}(?:\.\d{1,6})?(?!\d)")

#: One-word names from this length on are found glued to other letters or digits (``TermMatcher``).
GLUED_NAME_MIN = 7
#: Abbreviations of structures and RT words a surname's first letters may spell (COCHRANE, CHIASSON, MANDELSON,
#: PROSPERI): never taken for the surname cut short in a label.
_STRUCTURE_ABBREVIATIONS = frozenset("""coch chias mand pros prost phar lary esop esoph stom blad parot thyr femr pitu
    hippo constr brach optc optn cord lens glnd musc bowl urethr vagi uter ovar panc splen trach bronc aort caud plex
    orbi retin lacr subman submand sigm duod jeju ileu colo kidn live hear rect anal bulb peni test brst ribs skin
    body exte ring shell boost eval cavi oral lipp lips gland nerv vess arte vein ventr atri cere cereb temp tempo
    fron pari occi mast maxi mandi sacr lumb thor cerv pelv abdo neck head breast chest""".split())
#: Surnames of at least LABEL_PREFIX_FROM letters are also found cut to LABEL_PREFIX_MIN or more of their first letters
#: in labels (``TermMatcher._prefixes``).
LABEL_PREFIX_FROM, LABEL_PREFIX_MIN = 7, 4


def _gluable_name(text: str) -> bool:
    """A one-word name of GLUED_NAME_MIN+ letters: inside a longer word it is no chance match (a shorter one
    would be: "Lee" in "fleet", "Stein" in "Epstein")."""
    return len(text) >= GLUED_NAME_MIN and text.isalpha() and text.isascii()


def fold(text: str) -> str:
    """``text`` with accents dropped and compatibility forms made plain (``_FoldTable``), one character for
    one (positions hold). Names and IDs are matched on folded text: an audit found "Muller" for "Müller",
    "ΠΑΠΑΔΟΠΟΥΛΟΣ" for "Παπαδόπουλος", "Stefanescu" for "Ștefănescu" and full-width IDs left in text."""
    return text if text.isascii() else text.translate(_FOLD)


#: Sound marks of kana written as letters of their own: half-width "ﾀﾞ" is full-width "ダ" (whose fold drops
#: its combining mark).
_KANA_MARKS = frozenset("\uff9e\uff9f\u309b\u309c")


def _is_mark(c: str) -> bool:
    return bool(unicodedata.combining(c)) or c in _KANA_MARKS


def fold_marks(text: str) -> tuple[str, list[int] | None]:
    """``fold(text)`` without its combining marks (text in decomposed form: "Mu" + U+0308 + "ller"), and
    for each character of the result its position in ``text`` (None when nothing was removed)."""
    folded = fold(text)
    if folded.isascii() or not any(_is_mark(c) for c in folded):
        return folded, None
    keep = [i for i, c in enumerate(folded) if not _is_mark(c)]
    return "".join(folded[i] for i in keep), keep


def _char_key(c: str) -> str:
    """Characters that IGNORECASE matches identically share a key (``re`` folds a literal by its lower case)."""
    low = c.lower()
    return low if len(low) == 1 else c


def _exclusive(a: str, b: str) -> bool:
    """True when two trie branches can never both match at one position (so their order is free).

    Distinct ASCII characters never match the same character under IGNORECASE; the end of a term
    (followed by the ``(?![0-9A-Za-z])`` guard) excludes a next ASCII letter or digit. Anything else
    (separators, which may match nothing; non-ASCII characters with special case folds) is treated
    as overlapping, which keeps the original order.
    """
    if a == _END_KEY or b == _END_KEY:
        other = b if a == _END_KEY else a
        return len(other) == 1 and other.isascii() and other.isalnum()
    return len(a) == 1 and len(b) == 1 and a.isascii() and b.isascii() and a != b


def _trie_alternation(ordered: tuple[Term, ...]) -> str:
    r"""The flat alternation ``(?:t1)|(?:t2)|...`` as an equivalent prefix trie, which ``re`` compiles
    and scans several times faster (shared prefixes are parsed and tried once).

    Equivalence: separators ``[\s^,]*`` are always followed by a non-separator literal, so each
    alternative matches in at most one way and the alternation is an ordered choice. A term joins an
    earlier branch with the same next atom only when every branch created after that one is
    exclusive with it (``_exclusive``): the first alternative that matches is then the same one.
    Duplicate terms (same tokens once separators are flexible) collapse.
    """
    root: list[list[Any]] = []  # node: ordered list of [key, rendered atom, child node]
    for t in ordered:
        node = root
        atoms: list[tuple[str, str]] = []
        for i, tok in enumerate(tok for tok in _SPLIT.split(t.text) if tok):
            if i:
                atoms.append((_SEP_KEY, _SEP))
            atoms.extend((_char_key(c), re.escape(c)) for c in tok)
        atoms.append((_END_KEY, ""))
        for key, rendered in atoms:
            target = None
            for group in reversed(node):
                if group[0] == key:
                    target = group
                    break
                if not _exclusive(group[0], key):
                    break
            if target is None:
                target = [key, rendered, []]
                node.append(target)
            node = target[2]
    return _render(root)


def _render(node: list[list[Any]]) -> str:
    alts = []
    for _key, rendered, child in node:
        parts = [rendered]
        while len(child) == 1:  # a chain: no nesting, no recursion
            parts.append(child[0][1])
            child = child[0][2]
        if child:
            parts.append(_render(child))
        alts.append("".join(parts))
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


@dataclass(frozen=True)
class _Compiled:
    kind_of: dict[str, str]
    kind_of_norm: dict[str, str]
    tokens: dict[str, str]


@functools.lru_cache(maxsize=64)
def _compile_terms(ordered: tuple[Term, ...]) -> _Compiled:
    kind_of = {t.text.casefold(): t.kind for t in ordered}
    kind_of_norm: dict[str, str] = {}
    for text, kind in kind_of.items():  # first in order wins, as the former linear scan did
        kind_of_norm.setdefault(_norm(text), kind)
    tokens: dict[str, str] = {}
    for t in ordered:
        for tok in _SPLIT.split(t.text):
            # A word of an ID term without a digit ("STATE" of an issuer "STATE HIE") is a common
            # word, not the identifier: tolerant matching on it turns speckle read as "tate" into a leak.
            if t.kind == ID and not any(c.isdigit() for c in tok):
                continue
            # Likewise a generic word of a place or an institution ("Falls" of "Kestrel Falls", "Street"): an MR's
            # anatomy read "Fall" at 30 % and was masked as an address (a MIDI-B-like audit).
            if t.kind in (ADDRESS, INSTITUTION) and (tok.casefold() in _GENERIC_PLACE_WORDS
                                                     or tok.casefold() in _INSTITUTION_GENERIC):
                continue
            if len(tok) >= 3 and tok.upper() not in _NAME_STOPWORDS:
                tokens.setdefault(tok.casefold(), t.kind)
    return _Compiled(kind_of, kind_of_norm, tokens)


@functools.lru_cache(maxsize=64)
def _compile_regex(ordered: tuple[Term, ...]) -> re.Pattern[str] | None:
    if not ordered:
        return None
    # the guard holds where the term itself begins or ends with an ASCII letter or digit: a CJK name may stand right
    # after Latin letters or digits ("CT张先生", "MRI山田さん"), a Latin one never inside a longer word
    return re.compile(rf"(?:(?<![0-9A-Za-z])|(?![0-9A-Za-z])){_trie_alternation(ordered)}"
                      rf"(?:(?![0-9A-Za-z])|(?<![0-9A-Za-z]))", re.IGNORECASE)


#: Colours that are surnames, and what they colour in imaging text ("white matter", "Gray_matter", "black blood",
#: "brown fat", "greenstick"): an audit found "[X] matter" for a physician WHITE and an operator GRAY.
_COLOURS = frozenset({"white", "gray", "grey", "black", "brown", "green"})
_COLOUR_NOUN_RE = re.compile(r"[\s_\-]*(?i:(?:(?:and|&|/|-)?\s*(?:white|gr[ae]y)[\s_\-]+)?matter|substance|blood|cells?"
                             r"|count|fat|stick|spots?|dots?|line|noise|balance|light|pulp|plaque|bone\s+marrow|marrow)"
                             r"(?![a-z])")


def colour_of_tissue(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is a colour surname standing as the colour of a tissue ("white matter")."""
    return text[start:end].casefold() in _COLOURS and _COLOUR_NOUN_RE.match(text, end) is not None


class TermMatcher:
    """Finds a file's identifiers in text: one compiled regex for exact-but-flexible matching,
    plus a tolerant token comparison for OCR output."""

    def __init__(self, terms: PhiTerms) -> None:
        self.terms = terms
        # Files of one patient share their terms: the compiled form is cached by the ordered terms.
        # The regex is compiled on first use (a matcher used only for fuzzy tokens never pays for it).
        # Terms and texts are matched with their Latin accents folded (``fold``): "MULLER" in a header is
        # "Müller" in a report and the reverse; the fold keeps every position, so spans hold for the text.
        folded = {Term(fold_marks(t.text)[0], t.kind): None for t in terms if len(t.text) >= 2}
        self._ordered = tuple(folded)
        # IDs long and digit-rich enough to be found glued to other characters ("ptAB1234_fu")
        self._glued_ids = tuple(sorted({t.text.lower() for t in self._ordered if t.kind == ID and _gluable(t.text)},
                                       key=lambda s: (-len(s), s)))
        # one-word names long enough to be found glued to other letters or digits ("QUENTINVALEseg",
        # "Quentinvale2": an audit found a segmentation's algorithm name keep the surname)
        self._glued_names = tuple(sorted({t.text.lower() for t in self._ordered
                                          if t.kind == NAME and _gluable_name(t.text)}, key=lambda s: (-len(s), s)))
        # all-digit IDs of 6+ digits, also found typed in groups ("1234 5678", "12-34-56-78")
        self._grouped_ids = tuple(sorted({d for t in self._ordered if t.kind == ID
                                          and len(d := re.sub(r"[\s\-_./]", "", t.text)) >= GROUPED_ID_MIN_DIGITS
                                          and d.isascii() and d.isdigit()}, key=lambda s: (-len(s), s)))
        self._grouped_regex: re.Pattern[str] | None = None
        # 8-digit dates glued to letters ("MK19570311", "CBCT20230314", "20230314T1015": an audit's RT and SEG
        # labels), never inside a longer number; names of 4 to GLUED_NAME_MIN-1 letters glued to digits
        # ("DIAZ1", "Diaz2023"), never inside a longer word
        self._glued_dates = tuple(sorted({t.text for t in self._ordered if t.kind == DATE and len(t.text) == 8
                                          and t.text.isascii() and t.text.isdigit()}))
        self._digit_glued_names = tuple(sorted({t.text.lower() for t in self._ordered if t.kind == NAME
                                                and 4 <= len(t.text) < GLUED_NAME_MIN and t.text.isalpha()
                                                and t.text.isascii()}))
        # ... and those same names in title case glued to letters ("Rodilla_JMGarcia", "PlanLopez", "GarciaLopez":
        # initials or a word beside a camel-case name; an audit found the first kept)
        camel = sorted({n.capitalize() for n in self._digit_glued_names})
        alts = "|".join(camel)
        self._camel = re.compile(rf"(?<=[A-Za-z])(?:{alts})(?![a-z])|(?<![a-z])(?:{alts})(?=[A-Z])") if camel else None
        # the first letters of a long surname stand for it in labels ("T7_8Gy1_KOVAL" for KOVALENKO, "CX_DUPL_50G25"
        # for DU PLESSIS, "PTV_70Gy_KOWAL" for KOWALCZYK: two audits and a held-out corpus); only as a token of a
        # label (underscores), never a word of imaging text ("LUNG" of LUNGREN, "HEAD" of HEADLEY)
        cut = sorted({w[:n].lower() for t in self._ordered if t.kind == NAME and t.text.isascii()
                      and t.text.isalpha() and len(w := t.text) >= LABEL_PREFIX_FROM
                      for n in range(LABEL_PREFIX_MIN, len(w) - 1) if not ordinary_word(w[:n])
                      and w[:n].lower() not in _COMMON_WORDS and w[:n].lower() not in _STRUCTURE_ABBREVIATIONS},
                     key=lambda p: (-len(p), p))
        # (never the label's first token: structure names begin with their organ, "Coch_L", "Mand_R")
        self._prefixes = re.compile(rf"(?<=[^A-Za-z])(?:{'|'.join(cut)})(?![A-Za-z])", re.IGNORECASE) if cut else None
        every_glued = (*self._glued_ids, *self._glued_names, *self._glued_dates, *self._digit_glued_names)
        self._glued_any = re.compile("|".join(map(re.escape, every_glued))) if every_glued else None
        compiled = _compile_terms(self._ordered)
        self._kind_of, self._kind_of_norm, self._tokens = compiled.kind_of, compiled.kind_of_norm, compiled.tokens
        self._compiled_regex: re.Pattern[str] | None = None

    @property
    def _regex(self) -> re.Pattern[str] | None:
        if self._compiled_regex is None and self._ordered:
            self._compiled_regex = _compile_regex(self._ordered)
        return self._compiled_regex

    @property
    def _grouped(self) -> re.Pattern[str] | None:
        """An ID's digits with one separator allowed between any two (``_grouped_ids``)."""
        if self._grouped_regex is None and self._grouped_ids:
            alts = "|".join(_GROUP_SEP.join(d) for d in self._grouped_ids)
            self._grouped_regex = re.compile(rf"(?<![0-9])(?:{alts})(?![0-9])")
        return self._grouped_regex

    def find(self, text: str) -> list[Span]:
        """Non-overlapping exact matches (case-insensitive, flexible separators), on the folded text
        (``fold_marks``); spans are positions in ``text``."""
        if not text:
            return []
        if self._regex is None:
            return []
        folded, where = (text, None) if text.isascii() else fold_marks(text)
        spans = self._find_folded(folded)
        if where is None:
            return spans
        out = []
        for sp in spans:  # back to positions in ``text``: a span ends after its last letter's marks
            end = where[sp.end - 1] + 1
            while end < len(text) and _is_mark(text[end]):
                end += 1
            out.append(Span(where[sp.start], end, sp.kind))
        return out

    def _find_folded(self, text: str) -> list[Span]:
        regex = self._regex
        assert regex is not None
        spans = []
        for m in regex.finditer(text):
            if m.end() > m.start():
                spans.append(Span(m.start(), m.end(), self._kind_for(m.group(0))))
        grouped = self._grouped
        if grouped is not None:
            for m in grouped.finditer(text):
                if not any(s.start < m.end() and m.start() < s.end for s in spans):
                    spans.append(Span(m.start(), m.end(), ID))
            spans.sort(key=lambda s: (s.start, s.end))
        low = text.lower()
        if (self._glued_ids or self._glued_names) and len(low) == len(text):
            for glued, kind in ((self._glued_ids, ID), (self._glued_names, NAME)):
                for ident in glued:
                    at = low.find(ident)
                    while at >= 0:
                        if not any(s.start < at + len(ident) and at < s.end for s in spans):
                            spans.append(Span(at, at + len(ident), kind))
                        at = low.find(ident, at + 1)
            spans.sort(key=lambda s: (s.start, s.end))
        if (self._glued_dates or self._digit_glued_names) and len(low) == len(text):
            spans += [sp for sp in self._bounded(low)
                      if not any(s.start < sp.end and sp.start < s.end for s in spans)]
            spans.sort(key=lambda s: (s.start, s.end))
        if self._camel is not None:
            spans += [Span(m.start(), m.end(), NAME) for m in self._camel.finditer(text)
                      if not any(s.start < m.end() and m.start() < s.end for s in spans)]
            spans.sort(key=lambda s: (s.start, s.end))
        if self._prefixes is not None and "_" in text:
            spans += [Span(m.start(), m.end(), NAME) for m in self._prefixes.finditer(text)
                      if not any(s.start < m.end() and m.start() < s.end for s in spans)]
            spans.sort(key=lambda s: (s.start, s.end))
        if spans and _COLOUR_NOUN_RE.search(text):
            # a colour surname (WHITE, GRAY) counts alone, but not as the colour of a tissue ("white matter")
            spans = [sp for sp in spans if not (sp.kind == NAME and colour_of_tissue(text, sp.start, sp.end))]
        return spans

    def _bounded(self, low: str) -> Iterator[Span]:
        """``_glued_dates`` not inside a longer number, ``_digit_glued_names`` not inside a longer word."""
        for terms, kind, inside in ((self._glued_dates, DATE, str.isdigit), (self._digit_glued_names, NAME,
                                                                            str.isalpha)):
            for ident in terms:
                at = low.find(ident)
                while at >= 0:
                    end = at + len(ident)
                    if (at == 0 or not inside(low[at - 1])) and (end == len(low) or not inside(low[end])
                                                                 or (kind == DATE and _TIME_TAIL.match(low, end))):
                        yield Span(at, end, kind)
                    at = low.find(ident, at + 1)

    def _kind_for(self, matched: str) -> str:
        key = matched.casefold()
        kind = self._kind_of.get(key)
        if kind is not None:
            return kind
        return self._kind_of_norm.get(_norm(key), OTHER)

    def contains(self, text: str) -> bool:
        """Whether any term occurs in ``text`` (the cheap test before ``find``)."""
        if not text.isascii():  # (most texts are ASCII: no call)
            text = fold_marks(text)[0]
        glued = self._glued_any
        if glued is not None:
            low = text.lower()
            if glued.search(low):  # one search for every glued form; which one, and its boundaries, only then
                if any(ident in low for ident in self._glued_ids) or any(n in low for n in self._glued_names):
                    return True
                if len(low) == len(text) and next(self._bounded(low), None) is not None:
                    return True
        grouped = self._grouped
        if grouped is not None and grouped.search(text):
            return True
        if self._camel is not None and self._camel.search(text):
            return True
        if self._prefixes is not None and "_" in text and self._prefixes.search(text):
            return True
        return bool(self._regex and self._regex.search(text))

    def fuzzy_token_kind(self, token: str) -> str | None:
        """Kind of the term that an OCR token resembles (edit distance, digit/letter confusions)."""
        tok = fold(token.strip(".,;:()[]{}'\"")).casefold()
        if len(tok) < 3:
            return None
        if tok in self._tokens:
            return self._tokens[tok]
        ocr_digits = tok.translate(_DIGIT_FOR)
        for known, kind in self._tokens.items():
            if abs(len(known) - len(tok)) > 2:
                continue
            if len(known) <= 4:
                # one edit of four characters is a quarter of the token: garble read off anatomy ("I-97")
                # came within one edit of a year; a short token counts only spelled out, or with letters
                # OCR confuses for digits ("I997")
                if len(tok) == len(known) and ocr_digits == known.translate(_DIGIT_FOR):
                    return kind
                continue
            if fuzzy_equal(tok, known) or (any(c.isdigit() for c in known) and
                                           fuzzy_equal(ocr_digits, known.translate(_DIGIT_FOR))):
                return kind
        return None


def fuzzy_equal(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` differ by at most 1 edit (≤ 7 chars) or 2 edits (longer)."""
    a, b = a.casefold(), b.casefold()
    if a == b:
        return True
    limit = 1 if max(len(a), len(b)) <= 7 else 2
    if len(a) < 4 or len(b) < 4:
        return False
    return levenshtein(a, b, limit) <= limit


def levenshtein(a: str, b: str, limit: int = 1_000_000) -> int:
    """Edit distance with an early exit once every path exceeds ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
        if min(cur) > limit:
            return limit + 1
        prev = cur
    return prev[-1]


def ocr_digits(text: str) -> str:
    """Map letters OCR commonly confuses with digits to those digits (O→0, I→1, S→5, B→8...)."""
    return text.translate(_DIGIT_FOR)
