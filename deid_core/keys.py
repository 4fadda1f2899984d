"""Where the pseudonymization key comes from, and a guard against silently changing it.

The key is the only secret of the pipeline: with it, pseudonyms are reproducible (re-runs and
new files of the same patient link up); without it they cannot be reversed. Changing the key
between runs over the same output tree would silently split every patient in two, hence the
recorded fingerprints. Key bytes never appear in messages, logs or provenance — only the
one-way ``key_fingerprint``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from deid_core.errors import ConfigError

MIN_KEY_BYTES = 16
ENV_VAR = "DEIDFLOW_KEY"
AUTO_KEY_NAME = "deidflow.key"
HISTORY_NAME = "key_fingerprints.json"


def _strip_newline(data: bytes) -> bytes:
    """Editors add a final newline; it must not become part of the key."""
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data


def _check_length(key: bytes, source: str) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"key from {source} is too short: at least {MIN_KEY_BYTES} bytes are required")
    return key


def _read_key_file(path: Path, source: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {source} ({type(exc).__name__})") from None
    return _check_length(_strip_newline(data), source)


def _create_auto_key(path: Path) -> None:
    """Create the key file once, complete and 0600, even if several workers race: the content is
    written to a private O_EXCL temp file which is then hard-linked into place (link fails if
    the key already exists), so nobody can ever read a half-written key."""
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, os.urandom(32).hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # someone else won the race: use theirs
    except OSError:
        # Filesystem without hard links: fall back to O_EXCL directly on the final name.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, tmp.read_bytes())
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        tmp.unlink(missing_ok=True)


def load_key(
    key_file: str | Path | None,
    env: Mapping[str, str] = os.environ,
    provenance_dir: Path | None = None,
    secret_loader: Callable[[str], bytes | str] | None = None,
    secret_name: str | None = None,
) -> bytes:
    """The pseudonymization key, from the first source given: ``key_file``, ``$DEIDFLOW_KEY``,
    ``secret_loader(secret_name)`` (e.g. a Prefect Secret block, passed in by the CLI), else a
    random key created once as ``provenance_dir/deidflow.key`` (0600) and reused afterwards.
    A source that is given but unusable is an error, never a silent fall-through; so is naming a
    key secret while a key file or ``$DEIDFLOW_KEY`` is also present (a stale exported variable
    would otherwise silently replace the secret the operator asked for)."""
    if secret_name is not None and (key_file is not None or ENV_VAR in env):
        other = "a key file" if key_file is not None else f"${ENV_VAR}"
        raise ConfigError(f"both a key secret and {other} are given: choose one key source")
    if key_file is not None:
        return _read_key_file(Path(key_file), "key file")
    if ENV_VAR in env:
        return _check_length(env[ENV_VAR].encode("utf-8"), f"${ENV_VAR}")
    if secret_name is not None:
        if secret_loader is None:
            raise ConfigError("a key secret name was given but no secret loader is available")
        try:
            value: bytes | str = secret_loader(secret_name)
        except Exception as exc:  # the loader is external (Prefect); never echo its message
            raise ConfigError(f"cannot load key secret {secret_name!r} ({type(exc).__name__})") from None
        if isinstance(value, str):
            value = value.encode("utf-8")
        if not isinstance(value, bytes | bytearray):
            raise ConfigError(f"key secret {secret_name!r} did not return bytes or text")
        return _check_length(_strip_newline(bytes(value)), "key secret")
    if provenance_dir is None:
        raise ConfigError(f"no key: pass a key file, set ${ENV_VAR}, name a key secret, "
                          "or give a provenance directory to create one in")
    provenance_dir = Path(provenance_dir)
    path = provenance_dir / AUTO_KEY_NAME
    if not path.exists():
        try:
            provenance_dir.mkdir(parents=True, exist_ok=True)
            _create_auto_key(path)
        except OSError as exc:
            raise ConfigError(f"cannot create key file in the provenance directory ({type(exc).__name__})") \
                from None
    return _read_key_file(path, "generated key file")


def key_fingerprint(key: bytes) -> str:
    """A short one-way identifier of the key, safe to log and to record in provenance."""
    return "sha256:" + hashlib.sha256(b"deidflow-key-fingerprint" + bytes(key)).hexdigest()[:16]


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write via a temp file in the same directory + os.replace: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.urandom(8).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_key_history(provenance_dir: Path, fingerprint: str, allow_new_key: bool, record: bool = True) -> None:
    """Refuse to mix keys in one output/provenance tree unless explicitly allowed (--new-key),
    and record the fingerprint of the key used (unless ``record`` is False: the CLI's precheck)."""
    provenance_dir = Path(provenance_dir)
    path = provenance_dir / HISTORY_NAME
    known: list[str] = []
    if path.exists():
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            raise ConfigError(f"{HISTORY_NAME} in the provenance directory is unreadable or not JSON") \
                from None
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise ConfigError(f"{HISTORY_NAME} in the provenance directory must be a JSON list of strings")
        known = data
    if fingerprint in known:
        return
    if known and not allow_new_key:
        raise ConfigError("this output/provenance tree was processed with a different key; pass --new-key "
                          f"to accept it (recorded {known[-1]}, now {fingerprint})")
    if not record:
        return
    try:
        provenance_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (json.dumps(known + [fingerprint], indent=1) + "\n").encode("utf-8"), 0o600)
    except OSError as exc:
        raise ConfigError("cannot record key fingerprint in the provenance directory "
                          f"({type(exc).__name__})") from None
