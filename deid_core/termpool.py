"""A patient's identifiers pooled across the cohort's files, sealed while they travel.

Each file's header names people and places that its patient's other files may mention only in free text:
the CT names its operator and performing physician, the structured report, presentation state and key
object selection of the same study name them in a TextValue or a label. Matched only against their own
header, those names were kept (an audit planted four such files; all were written with the names).

So the inventory, which reads every header anyway, also captures each file's identifiers (not its dates:
dates in free text are found by their shape) and pools them per patient. The pool reaches the worker that
de-identifies the patient's files, which cleans and verifies each file against its own identifiers plus
the pool. Between the inventory and that worker the pool passes through the flow, which must hold no
identifier in clear (its parameters, logs and artifacts are Prefect's): it travels sealed with AES-GCM
under a key derived from the run key, as opaque bytes, keyed by a keyed hash of the patient.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydicom.dataset import Dataset

from deid_core.inventory import InventoryRecord, inspect_header
from deid_core.terms import DATE, PhiTerms, Term, capture_terms

#: A pool: keyed patient hash -> sealed term lists (one per inventory chunk that met the patient).
Pools = dict[str, list[bytes]]


def patient_key_of(ds: Dataset) -> str:
    """What a file's pseudonyms and date shift are keyed on: its PatientID, or, when that is empty, its
    patient's name and birth date. Keyed on the empty ID alone, every patient without one got the same
    pseudonym and date shift (an audit merged two patients). The derived key holds control characters,
    which no PatientID (LO) or patient map entry can, so it never equals one."""
    pid = str(ds.get("PatientID", "") or "")
    if pid.strip():
        return pid
    name = _name_key(str(ds.get("PatientName", "") or ""))
    birth = str(ds.get("PatientBirthDate", "") or "").strip()
    return f"\x1fname={name}\x1fbirth={birth}" if name or birth else ""


def _name_key(name: str) -> str:
    """A person name as one patient's key: the alphabetic group, components stripped, trailing empty ones
    dropped, upper case. "DOE^JOHN", "Doe^John" and "DOE^JOHN^^^" (the same name under PS3.5's rules) keyed
    three patients, with three pseudonyms and three date shifts in one series (an audit)."""
    parts = [p.strip() for p in name.split("=")[0].split("^")]
    while parts and not parts[-1]:
        parts.pop()
    return "^".join(parts).upper()


def pool_key(key: bytes, ds: Dataset) -> str:
    """Keyed hash of the patient a file belongs to (``patient_key_of``): the pool's index, no identifier."""
    return hmac.new(key, b"term-pool:" + patient_key_of(ds).encode("utf-8", "surrogatepass"),
                    hashlib.sha256).hexdigest()[:24]


def _aead(key: bytes) -> AESGCM:
    return AESGCM(hmac.new(key, b"deidflow term pool v1", hashlib.sha256).digest())


def seal(key: bytes, terms: Iterable[Term]) -> bytes:
    """Terms as opaque bytes: a random nonce and the AES-GCM sealed JSON list of (text, kind)."""
    nonce = os.urandom(12)
    plain = json.dumps(sorted([t.text, t.kind] for t in terms), ensure_ascii=False).encode()
    return nonce + _aead(key).encrypt(nonce, plain, b"pool")


def unseal(key: bytes, blobs: Sequence[bytes]) -> PhiTerms:
    """The terms of sealed blobs, merged. Raises ``cryptography.exceptions.InvalidTag`` for another key."""
    out = PhiTerms()
    aead = _aead(key)
    for blob in blobs:
        for text, kind in json.loads(aead.decrypt(blob[:12], blob[12:], b"pool")):
            out.terms.add(Term(str(text), str(kind)))
    return out


def shared_terms(ds: Dataset) -> set[Term]:
    """The identifiers of a header worth searching for in the patient's other files: all but dates."""
    return {t for t in capture_terms(ds).terms if t.kind != DATE}


def inspect_chunk(paths: Sequence[str | Path], key: bytes, *, records: bool = True
                  ) -> tuple[list[InventoryRecord], Pools]:
    """Inventory a chunk of paths (``inspect_header``) and pool the identifiers of its good files per
    patient, sealed. ``records=False``: the pool only (a retry's other files)."""
    out: list[InventoryRecord] = []
    pooled: dict[str, set[Term]] = {}
    for p in paths:
        rec, ds = inspect_header(p, key)
        if ds is not None and rec.status == "ok":
            rec = dataclasses.replace(rec, pool_key=pool_key(key, ds))
            try:
                pooled.setdefault(rec.pool_key, set()).update(shared_terms(ds))
            except Exception:  # noqa: BLE001 - a header whose terms cannot be read adds nothing to the pool;
                pass  # the file itself is read again and judged on its own
        if records:
            out.append(rec)
    return out, {k: [seal(key, v)] for k, v in sorted(pooled.items()) if v}


def merge_pools(pools: Iterable[Mapping[str, list[bytes]]]) -> Pools:
    """The pools of several chunks as one (a patient's blobs from every chunk that met it)."""
    out: Pools = {}
    for p in pools:
        for k, blobs in p.items():
            out.setdefault(k, []).extend(blobs)
    return out


def pools_for(records: Iterable[InventoryRecord], pools: Mapping[str, list[bytes]]) -> Pools:
    """The part of ``pools`` that the patients of ``records`` need (what one batch is sent)."""
    keys = {r.pool_key for r in records if r.pool_key}
    return {k: list(pools[k]) for k in sorted(keys) if k in pools}
