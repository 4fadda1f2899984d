"""``explain``: say what the effective rule table does with one attribute, and why.

Why: reviewers and curators need to check a single decision ("why was Protocol Name cleaned?")
without reading 6,000 rows; the answer names the tag, the action and the rule's provenance
(``Rule.source``) for the table's profile and options. Queries name attributes, never values.
"""

from __future__ import annotations

import re

from pydicom.datadict import dictionary_keyword, tag_for_keyword

from deid_core.errors import ConfigError, RuleError
from deid_core.rules import (
    DESCRIPTIVE_KEYWORD,
    REMOVED_BEYOND_TABLE,
    Action,
    RuleTable,
    parse_private_signature,
    signature_text,
)
from deid_core.terms import dictionary_vr

_TAG_FORMS = (
    re.compile(r"\(\s*([0-9a-fA-F]{4})\s*,\s*([0-9a-fA-F]{4})\s*\)"),
    re.compile(r"([0-9a-fA-F]{4})\s*,\s*([0-9a-fA-F]{4})"),
    re.compile(r"(?:0x)?([0-9a-fA-F]{4})([0-9a-fA-F]{4})"),
)
_MASK = re.compile(r"\(\s*([0-9a-fA-FxX]{4})\s*,\s*([0-9a-fA-FxX]{4})\s*\)")
_KEYWORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_DISPOSITIONS = {"k": "keep", "d": "delete", "h": "hash as UID", "o": "date offset (shift)"}


def _table_line(table: RuleTable) -> str:
    opts = ", ".join(table.options) or "none"
    return f"table:  profile {table.profile}, options {opts}; sha256 {table.sha256[:16]}"


def _explain_public(tag: int, table: RuleTable) -> str:
    tag_txt = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    if (tag >> 16) % 2 == 1:
        return _explain_private_tag(tag_txt, table)
    rule = table.rule_for(tag)
    try:
        kw = dictionary_keyword(tag)
    except KeyError:
        kw = ""
    if rule is None:
        if tag in REMOVED_BEYOND_TABLE:
            action = f"action: not in the table: removed (beyond the table: {REMOVED_BEYOND_TABLE[tag]})"
        elif (vr := dictionary_vr(tag)) in ("LT", "ST", "UT", "UC", "PN") or (
                vr == "LO" and DESCRIPTIVE_KEYWORD.search(kw)):
            action = "action: not in the table: cleaned as free text (typed text)"
        elif vr in ("LO", "SH", "CS", "AE"):
            action = "action: not in the table: kept, less the file's own identifiers"
        else:
            action = "action: not in the table: kept (public)"
        return "\n".join([f"tag:    {tag_txt}{' ' + kw if kw else ''}", action, _table_line(table)])
    text = _format_rule(tag_txt, kw, rule.tag, rule.name, rule.action, rule.source, table)
    if tag in _PSEUDONYMIZED:
        # the table's action is what the profile says; the pseudonymize stage then writes the pseudonym
        text += "\n" + _PSEUDONYMIZED[tag]
    if tag in _WHERE and "X/Z" in rule.source:
        text += "\n" + _WHERE[tag]
    return text


#: X/Z attributes whose X or Z the anonymizer decides per place (PS3.15: Z only where the IOD requires the
#: attribute; ``TYPE2_WHERE_REMOVED`` and ``TYPE3_SEQUENCES`` in deid_core.anonymizer).
_WHERE = {
    0x00081070: "where:  emptied (Z) instead in RT objects, whose RT Series module requires it (type 2)",
    0x00081110: "where:  removed (X) instead at the top level and in a Request Attributes Sequence, where it is "
                "type 3 (an empty one fails validation); emptied (Z) elsewhere",
}


#: Top-level attributes that the pseudonymize stage sets after the table's action (an audit read "Z" for
#: PatientName and found a pseudonym in the output).
_PSEUDONYMIZED = {
    0x00100010: "then:   the pseudonymize stage writes the patient's new name (--patient-map, else a keyed "
                "pseudonym DEID^...)",
    0x00100020: "then:   the pseudonymize stage writes the patient's new ID (--patient-map, else a keyed "
                "pseudonym)",
}


def _format_rule(tag_txt: str, kw: str, rule_tag: str, name: str, action: Action, source: str,
                 table: RuleTable) -> str:
    matched = f" (matched {rule_tag})" if rule_tag != tag_txt else ""
    lines = [
        f"tag:    {tag_txt}{' ' + kw if kw else ''}{matched}",
        f"name:   {name}",
        f"action: {action.value} {action.name}",
        f"rule:   {source}",
    ]
    if action is not Action.REMOVE:
        lines.append(_nested_line(table))
    return "\n".join([*lines, _table_line(table)])


def _nested_line(table: RuleTable) -> str:
    """Why an attribute the table keeps can still be missing from an output: the action applies wherever the
    attribute occurs, but inside a sequence the table removes or empties it goes with that sequence (a retention
    audit read "C CLEAN" for RequestedProcedureDescription, whose copy in RequestAttributesSequence tcia-lists
    removes)."""
    gone = sorted(r["keyword"] for r in table.rows() if r["kind"] == "public" and r["vr"] == "SQ" and r["keyword"]
                  and r["action"] in (Action.REMOVE.value, Action.EMPTY.value))
    first = [k for k in ("RequestAttributesSequence", "OtherPatientIDsSequence", "ReferencedPatientSequence")
             if k in gone]
    shown = (first + [k for k in gone if k not in first])[:3]
    examples = ", ".join(shown) + (", ..." if len(gone) > 3 else "")
    return (f"nested: the same action at every level, except inside a sequence this table removes or empties "
            f"({len(gone)}: {examples}), where it goes with the sequence")


def _explain_private_tag(tag_txt: str, table: RuleTable) -> str:
    return "\n".join([
        f"tag:    {tag_txt} (private group)",
        "action: decided per private creator signature; query it as (gggg,\"CREATOR\",ee)"
        + ("" if table.retain_safe_private else "; without rtnSafePriv every private element is removed"),
        _table_line(table),
    ])


def _explain_signature(query: str, table: RuleTable) -> str:
    try:
        comps = parse_private_signature(query)
    except RuleError as exc:
        raise ConfigError(f"unparseable private signature query: {exc}") from exc
    last = comps[-1]
    sig = signature_text(comps)
    if last.creator is None:  # a public attribute inside a sequence path: the public rule decides
        return _explain_public((last.group << 16) | last.element, table)
    path = tuple(c.path_key & 0xFFFFFFFF if c.creator is None else (c.group << 16) | 0x1000 | c.element
                 for c in comps[:-1])
    rule = table.private_rule(last.group, last.creator, last.element, path)
    lines = [f"tag:    {sig} (private)"]
    if rule is None and not table.retain_safe_private:
        lines.append("action: not in the table: removed (private; Retain Safe Private option not selected)")
    elif rule is None:
        lines.append("action: not in the table: removed (private, unknown)")
    else:
        name = table.private_name(rule.signature)
        if name:
            lines.append(f"name:   {name}")
        lines.append(f"action: {rule.disposition} {_DISPOSITIONS.get(rule.disposition, rule.disposition)}")
        how = "exact signature" if rule.signature.lower() == sig.lower() else f"signature {rule.signature}"
        lines.append(f"rule:   TCIA private tag KB 2024-02-01, {how}, VR {rule.vr or '?'}")
        variants = table.private_variants(rule.signature)
        if len({v.disposition for v in variants}) > 1:
            listed = ", ".join(f"{v.vr or '?'} {v.disposition}" for v in variants)
            lines.append(f"note:   the KB rates this signature by VR ({listed}); without the VR the most"
                         " conservative applies")
    lines.append(_table_line(table))
    return "\n".join(lines)


def explain(query: str, table: RuleTable) -> str:
    """Explain the table's decision for a tag, keyword or private signature (ConfigError if unparseable).

    Accepted: ``(0010,0010)``, ``0010,0010``, ``00100010``, ``PatientName``, ``(60xx,3000)``,
    ``(0019,"SIEMENS MR HEADER",0c)`` (quotes optional, sequence path prefix allowed).
    """
    q = query.strip()
    if not q:
        raise ConfigError("empty explain query")
    if q.count(",") >= 2 or "[" in q:
        return _explain_signature(q, table)
    for form in _TAG_FORMS:
        m = form.fullmatch(q)
        if m:
            return _explain_public(int(m.group(1) + m.group(2), 16), table)
    m = _MASK.fullmatch(q)
    if m:
        rule = table.rule_by_tag_text(q.replace(" ", ""))
        if rule is None:
            raise ConfigError("repeating-group query is not a tag of the table")
        kw, _vr = table.keyword_vr(rule.tag)
        return _format_rule(rule.tag, kw, rule.tag, rule.name, rule.action, rule.source, table)
    if _KEYWORD.fullmatch(q):
        tag = tag_for_keyword(q)
        if tag is not None:
            return _explain_public(int(tag), table)
        rule = table.rule_by_keyword(q)  # repeating-group keywords such as OverlayData
        if rule is not None:
            return _format_rule(rule.tag, q, rule.tag, rule.name, rule.action, rule.source, table)
        raise ConfigError("unknown DICOM keyword in explain query")
    raise ConfigError("unparseable explain query: expected a tag, a keyword or a private signature")
