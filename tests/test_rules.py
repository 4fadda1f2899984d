"""Public rule table: resolution of PS3.15 codes, options, repeating groups, method codes, explain."""

from __future__ import annotations

import csv
import io
import json

import pydicom
import pytest
from pydicom.data import get_testdata_file

from deid_core.errors import ConfigError
from deid_core.rules import (
    OPTION_CODES,
    OPTION_NAMES,
    PROFILES,
    TABLE_FILE,
    Action,
    Rule,
    load_rule_table,
    resolve_row,
)
from deid_core.rules.explain import explain


@pytest.fixture(scope="module")
def tcia():
    return load_rule_table("tcia")


@pytest.fixture(scope="module")
def basic():
    return load_rule_table("basic")


def _table_rows():
    return json.loads(TABLE_FILE.read_text(encoding="utf-8"))["rows"]


CODES_USED = sorted({c for r in _table_rows() for c in r["codes"].values()})


@pytest.mark.parametrize("code", CODES_USED)
def test_every_code_the_standard_uses_resolves_to_an_action(code):
    row = {"tag": "(0099,0099)", "name": "t", "vr": "LO", "codes": {"basicProfile": code}}
    if "/" not in code:  # option codes (K, C) also appear as basicProfile in this synthetic row
        action, source = resolve_row(row, frozenset({"basicProfile"}))
        assert action is {"X": Action.REMOVE, "Z": Action.EMPTY, "D": Action.DUMMY, "K": Action.KEEP,
                          "U": Action.UID, "C": Action.CLEAN}[code]
    else:
        action, source = resolve_row(row, frozenset({"basicProfile"}))
        assert action.value in code.replace("*", "")
        assert "default" in source
    assert isinstance(action, Action)


@pytest.mark.parametrize("profile,options", [("basic", ()), ("tcia", ()), ("basic", tuple(OPTION_NAMES))])
def test_every_row_resolves_under_every_profile(profile, options):
    table = load_rule_table(profile, options)
    rows = [r for r in table.rows() if r["kind"] == "public"]
    assert len(rows) == 620
    assert {r["action"] for r in rows} <= {a.value for a in Action}
    assert all(r["source"].startswith("basicProfile=") for r in rows)


@pytest.mark.parametrize(
    "tag,expected_tag",
    [
        (0x50100000, "(50xx,xxxx)"),
        (0x50003000, "(50xx,xxxx)"),
        (0x501E1234, "(50xx,xxxx)"),
        (0x60023000, "(60xx,3000)"),
        (0x60003000, "(60xx,3000)"),
        (0x601E4000, "(60xx,4000)"),
    ],
)
def test_repeating_groups_match(tcia, tag, expected_tag):
    rule = tcia.rule_for(tag)
    assert rule is not None and rule.tag == expected_tag
    assert rule.action is Action.REMOVE  # cleanGraph is not in the tcia profile


@pytest.mark.parametrize("tag", [0x60033000, 0x60020010, 0x51003000, 0x00280010, 0x00191010])
def test_tags_outside_the_table_are_none(tcia, tag):
    assert tcia.rule_for(tag) is None


def test_clean_graphics_option_overrides_overlay_data():
    table = load_rule_table("basic", ["cleanGraph"])
    rule = table.rule_for(0x60003000)
    assert rule is not None and rule.action is Action.CLEAN
    assert "cleanGraphOpt=C" in rule.source


@pytest.mark.parametrize(
    "profile,options,tag,action",
    [
        ("basic", (), 0x00100040, Action.EMPTY),  # Patient's Sex Z
        ("basic", ("rtnPatChars",), 0x00100040, Action.KEEP),
        ("tcia", (), 0x00100040, Action.KEEP),
        ("basic", (), 0x00101010, Action.REMOVE),  # Patient's Age X
        ("tcia", (), 0x00101010, Action.KEEP),
        ("tcia", (), 0x00080020, Action.SHIFT_DATE),  # Study Date
        ("basic", (), 0x00080020, Action.EMPTY),
        ("basic", ("rtnLongFullDates",), 0x00080020, Action.KEEP),
        ("tcia", (), 0x00080023, Action.SHIFT_DATE),  # Content Date Z/D
        ("basic", (), 0x00080023, Action.DUMMY),
        ("tcia", (), 0x00080033, Action.SHIFT_DATE),  # Content Time: composer keeps TM
        ("tcia", (), 0x00181000, Action.KEEP),  # Device Serial Number
        ("basic", (), 0x00181000, Action.REMOVE),  # X/Z/D, TCIA remove list
        ("basic", ("Retain Device Identity",), 0x00181000, Action.KEEP),
        ("tcia", (), 0x0018700C, Action.SHIFT_DATE),  # rtnDevId K then rtnLongModifDates C
        ("tcia", (), 0x00181030, Action.CLEAN),  # Protocol Name, cleanDesc
        ("basic", (), 0x00181030, Action.DUMMY),  # X/D default
        ("tcia", (), 0x00102110, Action.CLEAN),  # Allergies: rtnPatChars C, cleanDesc C
        ("tcia", (), 0x00080201, Action.REMOVE),  # Timezone offset: date C ignored on SH
        ("tcia", (), 0x00080018, Action.UID),  # SOP Instance UID
        ("basic", ("rtnUIDs",), 0x00080018, Action.KEEP),
        ("tcia", (), 0x00080080, Action.REMOVE),  # Institution Name X/Z/D, TCIA remove
        ("basic", ("rtnInstId",), 0x00080080, Action.KEEP),
        ("tcia", (), 0x00080055, Action.CLEAN),  # Station AE Title: rtnDevId C
    ],
)
def test_option_overrides(profile, options, tag, action):
    rule = load_rule_table(profile, options).rule_for(tag)
    assert rule is not None
    assert rule.action is action, rule.source


@pytest.mark.parametrize(
    "tag,code,action,why",
    [
        (0x00100020, "Z/D", Action.DUMMY, "TCIA lookup list"),  # Patient ID
        (0x00700084, "Z/D", Action.EMPTY, "TCIA empty list"),  # Content Creator's Name
        (0x00080080, "X/Z/D", Action.REMOVE, "TCIA remove list"),
        (0x300A00B2, "X/Z", Action.EMPTY, "TCIA empty list"),  # Treatment Machine Name
        (0x30100077, "X/D", Action.DUMMY, "TCIA replace list"),  # Treatment Site
        (0x00081140, "X/Z/U*", Action.KEEP, "TCIA process list"),  # Referenced Image Sequence
        (0x00081111, "X/Z/D", Action.DUMMY, "TCIA process list"),
        (0x00400555, "X/Z", Action.EMPTY, "default; TCIA process list is not an alternative"),
        (0x00181030, "X/D", Action.DUMMY, "default; TCIA keep list is not an alternative"),
        (0x300E0008, "X/Z", Action.EMPTY, "default; TCIA hashname list is not an alternative"),
        (0x00080012, "X/D", Action.DUMMY, "default; TCIA incrementdate list"),
    ],
)
def test_combination_codes_resolve_to_one_behaviour(basic, tag, code, action, why):
    rule = basic.rule_for(tag)
    assert rule is not None
    assert rule.action is action
    assert rule.source.startswith(f"basicProfile={code} → {action.value} (")
    assert why in rule.source


def test_combination_defaults_without_tcia_list():
    for code, expected in [("X/Z", "Z"), ("X/D", "D"), ("X/Z/D", "D"), ("Z/D", "D")]:
        row = {"vr": "LO", "codes": {"basicProfile": code}}
        assert resolve_row(row, frozenset({"basicProfile"}))[0].value == expected
    ui = {"vr": "UI", "codes": {"basicProfile": "X/Z/U*"}}
    sq = {"vr": "SQ", "codes": {"basicProfile": "X/Z/U*"}}
    assert resolve_row(ui, frozenset({"basicProfile"}))[0] is Action.UID
    assert resolve_row(sq, frozenset({"basicProfile"}))[0] is Action.EMPTY


def test_rule_for_a_real_file_covers_its_identifying_elements(tcia):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    acted = {elem.keyword: tcia.rule_for(int(elem.tag)) for elem in ds if not elem.tag.is_private}
    assert acted["PatientName"].action is Action.EMPTY
    assert acted["StudyInstanceUID"].action is Action.UID
    assert acted["StudyDate"].action is Action.SHIFT_DATE
    assert acted["Rows"] is None


def test_method_codes_tcia_exact(tcia):
    assert [c for c, _m in tcia.method_codes()] == [
        "113100", "113101", "113105", "113107", "113108", "113109", "113111"]
    assert tcia.method_codes()[0] == ("113100", "Basic Application Confidentiality Profile")


def test_method_codes_basic_and_added_option(basic):
    assert basic.method_codes() == [("113100", "Basic Application Confidentiality Profile")]
    t = load_rule_table("basic", ["rtnUIDsOpt"])
    assert t.options == ("rtnUIDs",)
    assert t.method_codes()[1] == ("113110", "Retain UIDs Option")


def test_method_text_values_fit_lo(tcia):
    values = tcia.method_text().split("\\")
    assert all(0 < len(v) <= 64 for v in values)
    assert values[0].startswith("deidflow tcia ")
    assert "Retain Safe Private Option" in values
    ds = pydicom.Dataset()
    ds.DeidentificationMethod = tcia.method_text()
    assert len(ds.DeidentificationMethod) == len(values)  # stored multi-valued


def test_profiles_and_options_constants():
    assert PROFILES["tcia"] == ("cleanPixel", "cleanDesc", "rtnLongModifDates", "rtnPatChars", "rtnDevId",
                                "rtnSafePriv")
    assert OPTION_NAMES["rtnDevId"] == "rtnDevIdOpt"
    assert OPTION_CODES["rtnSafePriv"] == ("113111", "Retain Safe Private Option")
    assert {c for c, _m in OPTION_CODES.values()} == {str(n) for n in range(113100, 113113)}


def test_options_are_added_to_the_profile_and_aliases_accepted(tcia):
    t = load_rule_table("tcia", ["Retain UIDs", "rtnDevIdOpt"])
    assert t.options == ("cleanPixel", "cleanDesc", "rtnLongModifDates", "rtnPatChars", "rtnDevId", "rtnUIDs",
                         "rtnSafePriv")  # canonical (CID 7050) order
    assert set(t.options) == {*tcia.options, "rtnUIDs"}
    assert load_rule_table("tcia") is tcia  # cached


@pytest.mark.parametrize("bad", ["rtnEverything", "Clean Everything Option", ""])
def test_unknown_option_is_a_config_error(bad):
    with pytest.raises(ConfigError, match=r"unknown de-identification option .*valid options: cleanPixel"):
        load_rule_table("basic", [bad])


def test_unknown_profile_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown de-identification profile.*valid: basic, tcia"):
        load_rule_table("strict")


def test_to_csv_row_counts(tcia, basic):
    n_priv = sum(1 for r in tcia.rows() if r["kind"] == "private")
    for table, expected in [(basic, 620), (tcia, 620 + n_priv)]:
        buf = io.StringIO()
        table.to_csv(buf)
        rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
        assert len(rows) == expected
    assert n_priv > 6000


def test_sha256_differs_between_profiles_and_is_stable(tcia, basic):
    assert len(tcia.sha256) == 64
    assert tcia.sha256 != basic.sha256
    assert load_rule_table("basic", ["rtnPatChars"]).sha256 not in (basic.sha256, tcia.sha256)
    from deid_core.rules import RuleTable

    assert RuleTable("tcia", tcia.options).sha256 == tcia.sha256  # fresh instance, same hash


def test_rule_is_frozen(tcia):
    rule = tcia.rule_for(0x00100010)
    assert isinstance(rule, Rule)
    with pytest.raises(AttributeError):
        rule.action = Action.KEEP  # type: ignore[misc]


@pytest.mark.parametrize("query", ["PatientSex", "(0010,0040)", "00100040", "0010,0040"])
def test_explain_public(tcia, query):
    out = explain(query, tcia)
    assert "(0010,0040) PatientSex" in out
    assert "action: K KEEP" in out
    assert "rtnPatCharsOpt=K" in out


def test_explain_says_a_kept_attribute_goes_with_a_removed_sequence():
    # a retention audit read "C CLEAN" for RequestedProcedureDescription, yet tcia-lists removes its copy inside
    # RequestAttributesSequence with the sequence (session 9)
    lists = load_rule_table("tcia-lists")
    out = explain("RequestedProcedureDescription", lists)
    assert "action: C CLEAN" in out
    assert "nested:" in out and "RequestAttributesSequence" in out
    assert "nested:" not in explain("RequestAttributesSequence", lists)  # removed itself: nothing to add


def test_explain_basic_profile_differs(basic):
    assert "action: Z EMPTY" in explain("PatientSex", basic)


def test_explain_repeating_and_unknown(tcia):
    assert "(60xx,3000) OverlayData" in explain("OverlayData", tcia)
    assert "(matched (60xx,3000))" in explain("(6002,3000)", tcia)
    assert "not in the table: kept (public)" in explain("Rows", tcia)


@pytest.mark.parametrize("query", ["", "hello world", "(00zz,0010)", "NoSuchKeywordAtAll", "(0019,,)"])
def test_explain_unparseable_is_config_error(tcia, query):
    with pytest.raises(ConfigError, match="explain query|private signature"):
        explain(query, tcia)


@pytest.mark.parametrize(("keyword", "tcia_action", "lists_action"), [
    ("StationName", Action.KEEP, Action.REMOVE),  # Retain Device Identity vs TCIA's remove list
    ("ImageComments", Action.CLEAN, Action.REMOVE),  # Clean Descriptors vs TCIA's remove list
    ("ContextGroupVersion", Action.SHIFT_DATE, Action.KEEP),  # modified dates vs TCIA's keep list
    ("ReferencedStudySequence", Action.EMPTY, Action.KEEP),  # TCIA "process": recursed
    ("InstitutionName", Action.REMOVE, Action.REMOVE),
    ("StudyDate", Action.SHIFT_DATE, Action.SHIFT_DATE),
])
def test_tcia_lists_profile_lets_tcia_lists_decide(keyword, tcia_action, lists_action):
    """tcia-lists: the tcia options, but TCIA's supplied lists win where they name an attribute (MIDI-B scores
    TCIA's choice); the default tcia profile lets the option columns override, as PS3.15 says."""
    tcia, lists = load_rule_table("tcia"), load_rule_table("tcia-lists")
    assert PROFILES["tcia-lists"] == PROFILES["tcia"]
    assert tcia.rule_by_keyword(keyword).action is tcia_action  # type: ignore[union-attr]
    rule = lists.rule_by_keyword(keyword)
    assert rule is not None and rule.action is lists_action and rule.source.startswith("TCIA ")
    assert lists.sha256 != tcia.sha256
