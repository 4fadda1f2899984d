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
