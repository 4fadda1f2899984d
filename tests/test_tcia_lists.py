"""TCIA's supplied attribute lists, attribute by attribute (``bench/tcia_lists.py``): what the MIDI-B
validator scores. Under ``--profile tcia-lists`` every listed attribute must come out as its list says and
every file be written; the default ``tcia`` profile differs only where PS3.15's option columns decide
(deid_core/rules/SOURCE.md), and must not fall below what it reached when this test was written."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from tcia_lists import listed, sweep  # noqa: E402


def test_every_listed_attribute_follows_tcia_under_tcia_lists(tmp_path: Path) -> None:
    counts, failures = sweep("tcia-lists", tmp_path)
    assert failures == []
    assert sum(counts.values()) == len(listed()) >= 600


def test_default_profile_keeps_its_measured_agreement(tmp_path: Path) -> None:
    counts, failures = sweep("tcia", tmp_path)
    assert not [f for f in failures if f[2].startswith("quarantined")]  # a differing choice, never a lost file
    assert sum(v for (_lst, ok), v in counts.items() if ok) >= 498


def test_descriptions_tcia_keeps_are_cleaned_under_tcia_lists(tmp_path: Path) -> None:
    """TCIA keeps ProtocolName and the other descriptions after its curators read them; here the cleaner
    reads them (a MIDI-B-like audit: "CHEST ROUTINE DR MILLICENT" was kept verbatim, and verification forgave
    the physician's name as if ProtocolName were device identity)."""
    import pydicom
    from pydicom.data import get_testdata_file

    from deid_core.config import DeidConfig
    from deid_core.pipeline import deidentify_file
    from deid_core.rules import Action, load_rule_table

    table = load_rule_table("tcia-lists")
    for kw in ("ProtocolName", "SeriesDescription", "StudyDescription"):
        rule = table.rule_by_keyword(kw)
        assert rule is not None and rule.action is Action.CLEAN, kw
    assert table.rule_by_keyword("MakerNote").action is Action.KEEP  # type: ignore[union-attr]  # binary: kept
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.ReferringPhysicianName = "HOLLOWAY^MILLICENT"
    ds.ProtocolName = "CHEST ROUTINE DR MILLICENT"
    ds.SeriesDescription = "CHEST 5MM per Dr. Okonjo"
    src = tmp_path / "in.dcm"
    ds.save_as(src)
    out = deidentify_file(src, DeidConfig(key=b"tcia-lists-key-0123456789", output_dir=tmp_path / "out",
                                          profile="tcia-lists", conformance="off"))
    assert out.status == "written"
    res = pydicom.dcmread(tmp_path / "out" / out.output_path)
    assert "MILLICENT" not in str(res.ProtocolName) and str(res.ProtocolName).startswith("CHEST ROUTINE")
    assert "Okonjo" not in str(res.SeriesDescription) and "CHEST 5MM" in str(res.SeriesDescription)
