"""TCIA private tag KB: tolerant parser on the whole file, lookups, and reproducible generated data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from deid_core.errors import ConfigError, RuleError
from deid_core.rules import PRIVATE_KB_FILE, load_rule_table, normalise_disposition, parse_private_signature
from deid_core.rules import generate as gen
from deid_core.rules.explain import explain

SOURCE = Path(__file__).resolve().parents[1].parent / "shared" / "standard"
HAVE_SOURCE = (SOURCE / gen.KB_FILE).is_file()


@pytest.fixture(scope="module")
def tcia():
    return load_rule_table("tcia")


@pytest.mark.parametrize(
    "text,expected",
    [
        ('(0019,"SIEMENS MR HEADER",0c)', '(0019,"SIEMENS MR HEADER",0c)'),
        ('(0019,SIEMENS MR HEADER",0c)', '(0019,"SIEMENS MR HEADER",0c)'),  # opening quote lost
        ("(0019,SIEMENS MR HEADER,0c)", '(0019,"SIEMENS MR HEADER",0c)'),
        ('( 0019 , " SIEMENS MR HEADER " , 0C )', '(0019,"SIEMENS MR HEADER",0c)'),
        ('(0019,"SIEMENS MR HEADER",100c)', '(0019,"SIEMENS MR HEADER",0c)'),
        ('(0019,"SIEMENS MR HEADER",xx0c)', '(0019,"SIEMENS MR HEADER",0c)'),
        ('(07A1,"ELSCINT1",42)', '(07a1,"ELSCINT1",42)'),
        ('(0019,"HOLOGIC, Inc.",44)', '(0019,"HOLOGIC, Inc.",44)'),  # comma inside the creator
        ("(0009,,02)", '(0009,"",02)'),  # empty creator, as in a few KB rows
        ('(0008,1084)[<0>](312f,"Ramsoft Diagnosis Datetime Identifier",10)',
         '(0008,1084)[<0>](312f,"Ramsoft Diagnosis Datetime Identifier",10)'),
        ('(0029,SIEMENS SYNGO ADVANCED PRESENTATION",02)[<0>](0029,"SIEMENS SYNGO ADVANCED PRESENTATION",a9)'
         "[<1>](0028,1053)",
         '(0029,"SIEMENS SYNGO ADVANCED PRESENTATION",02)[<0>](0029,"SIEMENS SYNGO ADVANCED PRESENTATION",a9)'
         "[<1>](0028,1053)"),
    ],
)
def test_parser_is_tolerant(text, expected):
    assert gen.signature_text(parse_private_signature(text)) == expected


def test_parser_components():
    comps = parse_private_signature('(0008,1084)[<0>](312f,Ramsoft Diagnosis Datetime Identifier",10)')
    assert [(c.group, c.element, c.creator) for c in comps] == [
        (0x0008, 0x1084, None), (0x312F, 0x10, "Ramsoft Diagnosis Datetime Identifier")]


@pytest.mark.parametrize(
    "bad,match",
    [
        ("0019,SIEMENS,0c", "not parenthesised"),
        ("(0018,SIEMENS,0c)", "even group"),
        ("(001G,SIEMENS,0c)", "malformed group"),
        ("(0019,SIEMENS,0g)", "malformed element"),
        ("(0019)", "no element"),
        ("", "empty private signature"),
    ],
)
def test_parser_rejects_malformed(bad, match):
    with pytest.raises(RuleError, match=match):
        parse_private_signature(bad)


@pytest.mark.parametrize(
    "raw,disp",
    [("k", "k"), (" k", "k"), ("K", "k"), ("D", "d"), ("d", "d"), ("h", "h"), ("o", "o"), ("oi", "o"),
     ("na", "d"), ("", "d"), ("?", "d")],
)
def test_disposition_normalisation(raw, disp):
    assert normalise_disposition(raw) == disp


def test_committed_kb_parses_entirely():
    data = json.loads(PRIVATE_KB_FILE.read_text(encoding="utf-8"))
    assert len(data["rows"]) > 8000
    for sig, _vr, disp, _name in data["rows"]:
        assert gen.signature_text(parse_private_signature(sig)) == sig
        assert disp in {"k", "d", "h", "o"}
    assert {r[2] for r in data["rows"]} == {"k", "d", "h", "o"}


@pytest.mark.parametrize(
    "group,creator,offset,disposition",
    [
        (0x0019, "SIEMENS MR HEADER", 0x0C, "k"),  # B value
        (0x0019, "siemens mr header", 0x0C, "k"),
        (0x0019, "  Siemens MR Header ", 0x0C, "k"),
        (0x0019, "SIEMENS MR HEADER", 0x100C, "k"),  # full element accepted, low byte used
        (0x0029, "SIEMENS CSA HEADER", 0x20, "d"),
        (0x0009, "GEMS_PETD_01", 0x07, "h"),  # Exam ID
        (0x0009, "gems_petd_01 ", 0x0D, "o"),  # Scan Date Time
        (0x0009, "GEMS_IDEN_01", 0x27, "o"),  # "oi"/"o" both -> o
    ],
)
def test_private_rule_hits(tcia, group, creator, offset, disposition):
    rule = tcia.private_rule(group, creator, offset)
    assert rule is not None
    assert rule.disposition == disposition


def test_private_rule_with_sequence_path(tcia):
    sig_creator = "Ramsoft Diagnosis Datetime Identifier"
    assert tcia.private_rule(0x312F, sig_creator, 0x10) is None  # only known inside the sequence
    rule = tcia.private_rule(0x312F, sig_creator.upper(), 0x10, (0x00081084,))
    assert rule is not None and rule.disposition == "d"
    assert rule.signature.startswith("(0008,1084)[<0>]")
    # a private enclosing sequence is matched by group + low byte, whatever its block
    nested = tcia.private_rule(0x0029, "SIEMENS SYNGO ADVANCED PRESENTATION", 0x00, (0x00291102,))
    assert nested is not None
    assert nested.signature.startswith('(0029,"SIEMENS SYNGO ADVANCED PRESENTATION",02)[<0>]')
    assert nested.disposition == "k"


def test_path_falls_back_to_pathless_signature(tcia):
    rule = tcia.private_rule(0x0019, "SIEMENS MR HEADER", 0x0C, (0x00400275,))
    assert rule is not None and rule.signature == '(0019,"SIEMENS MR HEADER",0c)'


def test_exact_path_preferred_over_pathless(tcia):
    # Philips c1: k without a path, d inside Referenced Series > Referenced Image Sequence
    assert tcia.private_rule(0x2001, "Philips Imaging DD 001", 0xC1).disposition == "k"
    inner = tcia.private_rule(0x2001, "Philips Imaging DD 001", 0xC1, (0x00081115, 0x00081140))
    assert inner is not None and inner.disposition == "d"


def test_vr_specific_disposition(tcia):
    assert tcia.private_rule(0x0009, "GEMS_PETD_01", 0x37).disposition == "d"  # most conservative
    assert tcia.private_rule(0x0009, "GEMS_PETD_01", 0x37, vr="LO").disposition == "k"
    assert tcia.private_rule(0x0009, "GEMS_PETD_01", 0x37, vr="UN").disposition == "d"
    assert tcia.private_rule(0x0009, "GEMS_PETD_01", 0x37, vr="SH").disposition == "d"


@pytest.mark.parametrize(
    "group,creator,offset",
    [(0x0019, "NO SUCH CREATOR", 0x0C), (0x0011, "SIEMENS MR HEADER", 0x0C),
     (0x0019, "SIEMENS MR HEADE", 0x0C)],
)
def test_unknown_private_is_none(tcia, group, creator, offset):
    assert tcia.private_rule(group, creator, offset) is None


def test_basic_profile_has_no_private_rules():
    basic = load_rule_table("basic")
    assert not basic.retain_safe_private
    assert basic.private_rule(0x0019, "SIEMENS MR HEADER", 0x0C) is None
    with_priv = load_rule_table("basic", ["rtnSafePriv"])
    assert with_priv.private_rule(0x0019, "SIEMENS MR HEADER", 0x0C) is not None


@pytest.mark.parametrize("query", ['(0019,"SIEMENS MR HEADER",0c)', "(0019,SIEMENS MR HEADER,0c)",
                                   '(0019,SIEMENS MR HEADER",0C)'])
def test_explain_private_signature(tcia, query):
    out = explain(query, tcia)
    assert '(0019,"SIEMENS MR HEADER",0c) (private)' in out
    assert "name:   B Value" in out
    assert "action: k keep" in out


def test_explain_private_unknown_and_path(tcia):
    assert "not in the table: removed (private, unknown)" in explain('(0019,"NOBODY",0c)', tcia)
    out = explain('(0008,1084)[<0>](312f,"Ramsoft Diagnosis Datetime Identifier",10)', tcia)
    assert "action: d delete" in out
    assert "Retain Safe Private option not selected" in explain("(0019,SIEMENS MR HEADER,0c)",
                                                                 load_rule_table("basic"))


def test_generate_refuses_missing_source(tmp_path):
    with pytest.raises(ConfigError, match="not found in the source directory"):
        gen.generate(tmp_path / "nowhere", tmp_path / "out")


# The single test that needs the read-only sources: skipped only when ../shared/standard is absent.
@pytest.mark.skipif(not HAVE_SOURCE, reason="../shared/standard is absent: cannot regenerate the rule data")
def test_whole_kb_parses_and_committed_data_is_reproducible(tmp_path):
    # every row of the original KB file parses; counts per disposition are reported with -s
    rows = gen.read_kb(SOURCE / gen.KB_FILE)
    with (SOURCE / gen.KB_FILE).open(encoding="utf-8-sig") as fp:
        data_lines = sum(1 for line in fp if line.strip()) - 1  # no embedded newlines in this file
    assert len(rows) == data_lines == 8787
    counts = Counter(r[4] for r in rows)
    print("KB rows per normalised disposition:", dict(sorted(counts.items())))
    assert counts == {"d": 4812, "k": 3836, "h": 84, "o": 55}
    raw = Counter(r[3] for r in rows)
    assert raw[" k"] == 23 and raw["K"] == 2 and raw["D"] == 2 and raw["na"] == 210 and raw["oi"] == 9
    gen.generate(SOURCE, tmp_path)
    here = PRIVATE_KB_FILE.parent
    for name in ("ps315_table.json", "private_kb.json", "SOURCE.md"):
        assert (tmp_path / name).read_bytes() == (here / name).read_bytes(), f"{name} differs; regenerate"
