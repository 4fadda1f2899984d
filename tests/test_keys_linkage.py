"""Key loading, fingerprint history and the linkage tables."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from deid_core.errors import ConfigError
from deid_core.keys import MIN_KEY_BYTES, check_key_history, key_fingerprint, load_key
from deid_core.linkage import write_linkage

FILE_KEY = b"file-key-0123456789abcdef"
ENV_KEY = "env-key-0123456789abcdef"
SECRET_KEY = b"secret-key-0123456789abcdef"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    p = tmp_path / "k.key"
    p.write_bytes(FILE_KEY + b"\n")
    return p


# ----------------------------------------------------------------------------- load_key


def test_precedence_file_env_secret_auto(tmp_path: Path, key_file: Path) -> None:
    env = {"DEIDFLOW_KEY": ENV_KEY}
    calls: list[str] = []

    def loader(name: str) -> bytes:
        calls.append(name)
        return SECRET_KEY

    prov = tmp_path / "prov"
    assert load_key(key_file, env, prov, loader, None) == FILE_KEY
    assert load_key(str(key_file), env, prov, loader, None) == FILE_KEY
    assert load_key(None, env, prov, loader, None) == ENV_KEY.encode()
    # A named secret beside another source is ambiguous: refused, never silently overridden.
    with pytest.raises(ConfigError, match=r"both a key secret and \$DEIDFLOW_KEY are given"):
        load_key(None, env, prov, loader, "blk")
    with pytest.raises(ConfigError, match="both a key secret and a key file are given"):
        load_key(key_file, {}, prov, loader, "blk")
    assert calls == []
    assert load_key(None, {}, prov, loader, "blk") == SECRET_KEY
    assert calls == ["blk"]
    assert not prov.exists()
    auto = load_key(None, {}, prov, loader, None)
    assert auto not in (FILE_KEY, SECRET_KEY)
    assert (prov / "deidflow.key").exists()


def test_key_file_strips_only_trailing_newline(tmp_path: Path) -> None:
    p = tmp_path / "k"
    p.write_bytes(b" spaced key 0123456789 \r\n")
    assert load_key(p, {}) == b" spaced key 0123456789 "
    p.write_bytes(b"\x00\x01binary-key-bytes-xyz")
    assert load_key(p, {}) == b"\x00\x01binary-key-bytes-xyz"


@pytest.mark.parametrize("content", [b"", b"sh0rtk3y\n", b"x" * (MIN_KEY_BYTES - 1) + b"\n"])
def test_short_key_file_refused_without_echo(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "k"
    p.write_bytes(content)
    with pytest.raises(ConfigError, match="key file is too short: at least 16 bytes") as exc:
        load_key(p, {"DEIDFLOW_KEY": ENV_KEY})
    if content.strip():
        assert content.strip().decode() not in str(exc.value)


def test_exactly_min_length_accepted(tmp_path: Path) -> None:
    p = tmp_path / "k"
    p.write_bytes(b"y" * MIN_KEY_BYTES)
    assert load_key(p, {}) == b"y" * MIN_KEY_BYTES


def test_missing_key_file_is_error_not_fallthrough(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read key file"):
        load_key(tmp_path / "nope.key", {"DEIDFLOW_KEY": ENV_KEY}, tmp_path)


def test_short_env_key_refused() -> None:
    with pytest.raises(ConfigError, match=r"\$DEIDFLOW_KEY is too short") as exc:
        load_key(None, {"DEIDFLOW_KEY": "tiny-secret"})
    assert "tiny-secret" not in str(exc.value)
    with pytest.raises(ConfigError, match="too short"):
        load_key(None, {"DEIDFLOW_KEY": ""})


def test_secret_loader_errors() -> None:
    def boom(name: str) -> bytes:
        raise RuntimeError("leaky-secret-material-in-message")

    with pytest.raises(ConfigError, match="cannot load key secret 'blk' \\(RuntimeError\\)") as exc:
        load_key(None, {}, None, boom, "blk")
    assert "leaky" not in str(exc.value)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    with pytest.raises(ConfigError, match="no secret loader"):
        load_key(None, {}, None, None, "blk")
    with pytest.raises(ConfigError, match="key secret is too short"):
        load_key(None, {}, None, lambda n: b"short", "blk")
    assert load_key(None, {}, None, lambda n: "text-secret-0123456789", "blk") == b"text-secret-0123456789"


def test_no_source_at_all() -> None:
    with pytest.raises(ConfigError, match="no key"):
        load_key(None, {})


def test_auto_key_created_once_0600_and_reused(tmp_path: Path) -> None:
    prov = tmp_path / "prov" / "nested"
    k1 = load_key(None, {}, prov)
    path = prov / "deidflow.key"
    assert _mode(path) == 0o600
    assert len(k1) == 64 and bytes.fromhex(k1.decode())  # 32 random bytes, hex
    before = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    k2 = load_key(None, {}, prov)
    assert k2 == k1
    assert path.read_bytes() == before and path.stat().st_mtime_ns == mtime
    assert sorted(os.listdir(prov)) == ["deidflow.key"]  # no temp files left
    # a different provenance tree gets a different key
    assert load_key(None, {}, tmp_path / "other") != k1


def test_auto_key_with_restrictive_umask(tmp_path: Path) -> None:
    old = os.umask(0o000)
    try:
        load_key(None, {}, tmp_path)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "deidflow.key") == 0o600


def test_corrupt_auto_key_refused(tmp_path: Path) -> None:
    (tmp_path / "deidflow.key").write_bytes(b"abc")
    with pytest.raises(ConfigError, match="generated key file is too short"):
        load_key(None, {}, tmp_path)


# ----------------------------------------------------------------------------- fingerprint


def test_fingerprint_stable_and_not_revealing() -> None:
    fp = key_fingerprint(FILE_KEY)
    assert fp == key_fingerprint(FILE_KEY)
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 16
    int(fp[7:], 16)
    assert fp != key_fingerprint(SECRET_KEY)
    assert FILE_KEY.decode() not in fp and FILE_KEY.hex() not in fp
    import hashlib

    assert fp[7:] != hashlib.sha256(FILE_KEY).hexdigest()[:16]  # domain-separated


def test_key_history_refusal_and_new_key(tmp_path: Path) -> None:
    a, b = key_fingerprint(FILE_KEY), key_fingerprint(SECRET_KEY)
    check_key_history(tmp_path, a, allow_new_key=False)
    hist = tmp_path / "key_fingerprints.json"
    assert json.loads(hist.read_text()) == [a]
    check_key_history(tmp_path, a, allow_new_key=False)  # same key: fine, no duplicate
    assert json.loads(hist.read_text()) == [a]
    msg = "processed with a different key; pass --new-key to accept it"
    with pytest.raises(ConfigError, match=msg) as exc:
        check_key_history(tmp_path, b, allow_new_key=False)
    assert FILE_KEY.decode() not in str(exc.value) and SECRET_KEY.decode() not in str(exc.value)
    assert json.loads(hist.read_text()) == [a]
    check_key_history(tmp_path, b, allow_new_key=True)
    assert json.loads(hist.read_text()) == [a, b]
    check_key_history(tmp_path, b, allow_new_key=False)  # now recorded
    check_key_history(tmp_path, a, allow_new_key=False)
    assert [p.name for p in tmp_path.iterdir()] == ["key_fingerprints.json"]


def test_key_history_corrupt(tmp_path: Path) -> None:
    (tmp_path / "key_fingerprints.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not JSON"):
        check_key_history(tmp_path, "sha256:00", False)
    (tmp_path / "key_fingerprints.json").write_text('{"a": 1}')
    with pytest.raises(ConfigError, match="JSON list of strings"):
        check_key_history(tmp_path, "sha256:00", False)


# ----------------------------------------------------------------------------- linkage


def _rows(p: Path) -> list[str]:
    return p.read_text().splitlines()


def test_linkage_written_sorted_0600_exact_header(tmp_path: Path) -> None:
    out, link = tmp_path / "out", tmp_path / "link"
    out.mkdir()
    write_linkage(link, out, [("1.2.3", "2.25.9"), ("1.2.1", "2.25.7"), ("1.2.3", "2.25.9")],
                  [("MRN2", "DEID-B"), ("MRN1", "DEID-A")])
    uid, pat = link / "uid_map.csv", link / "patient_map.csv"
    assert uid.read_bytes() == b"id_old,id_new\n1.2.1,2.25.7\n1.2.3,2.25.9\n"
    assert pat.read_bytes() == b"id_old,id_new\nMRN1,DEID-A\nMRN2,DEID-B\n"
    assert _mode(uid) == 0o600 and _mode(pat) == 0o600
    assert sorted(os.listdir(link)) == ["patient_map.csv", "uid_map.csv"]


def test_linkage_merge_across_calls_without_duplicates(tmp_path: Path) -> None:
    out, link = tmp_path / "out", tmp_path / "link"
    write_linkage(link, out, [("1.2.3", "2.25.9")], [("MRN1", "DEID-A")])
    first = (link / "uid_map.csv").read_bytes()
    write_linkage(link, out, [("1.2.3", "2.25.9"), ("1.2.0", "2.25.1")], [("MRN1", "DEID-A"), ("MRN0", "X")])
    assert _rows(link / "uid_map.csv") == ["id_old,id_new", "1.2.0,2.25.1", "1.2.3,2.25.9"]
    assert _rows(link / "patient_map.csv") == ["id_old,id_new", "MRN0,X", "MRN1,DEID-A"]
    # identical input again: byte-identical
    before = (link / "uid_map.csv").read_bytes()
    write_linkage(link, out, [("1.2.0", "2.25.1")], [])
    assert (link / "uid_map.csv").read_bytes() == before != first
    assert sorted(os.listdir(link)) == ["patient_map.csv", "uid_map.csv"]


def test_linkage_values_with_commas_round_trip(tmp_path: Path) -> None:
    link = tmp_path / "link"
    write_linkage(link, tmp_path / "out", [], [('DOE, "J"', "DEID-A")])
    write_linkage(link, tmp_path / "out", [], [('DOE, "J"', "DEID-A")])
    assert _rows(link / "patient_map.csv") == ["id_old,id_new", '"DOE, ""J""",DEID-A']


def test_linkage_conflict_refused_and_files_untouched(tmp_path: Path) -> None:
    out, link = tmp_path / "out", tmp_path / "link"
    write_linkage(link, out, [("1.2.3", "2.25.9")], [("MRN1", "DEID-A")])
    uid_before = (link / "uid_map.csv").read_bytes()
    with pytest.raises(ConfigError, match="patient linkage conflict") as exc:
        write_linkage(link, out, [("1.2.4", "2.25.10")], [("MRN1", "DEID-Z")])
    assert "MRN1" not in str(exc.value) and "DEID" not in str(exc.value)
    assert (link / "uid_map.csv").read_bytes() == uid_before  # nothing half-written
    with pytest.raises(ConfigError, match="UID linkage conflict"):
        write_linkage(link, out, [("1.2.5", "2.25.1"), ("1.2.5", "2.25.2")], [])


def test_linkage_refused_inside_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for bad in (out, out / "linkage", out / "a" / "b"):
        with pytest.raises(ConfigError, match="must not be inside the output directory"):
            write_linkage(bad, out, [("1", "2")], [])
    assert list(out.iterdir()) == []
    # through a symlink that points into the output tree
    (tmp_path / "sneaky").symlink_to(out, target_is_directory=True)
    with pytest.raises(ConfigError, match="must not be inside"):
        write_linkage(tmp_path / "sneaky" / "link", out, [], [])
    # and output given through a symlink
    with pytest.raises(ConfigError, match="must not be inside"):
        write_linkage(out / "link", tmp_path / "sneaky", [], [])
    # a sibling with a common name prefix is fine
    write_linkage(tmp_path / "out-linkage", out, [("1", "2")], [])
    assert (tmp_path / "out-linkage" / "uid_map.csv").exists()


def test_linkage_existing_file_with_wrong_header(tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.mkdir()
    (link / "uid_map.csv").write_text("old,new\n1,2\n")
    with pytest.raises(ConfigError, match="header id_old,id_new"):
        write_linkage(link, tmp_path / "out", [], [])
