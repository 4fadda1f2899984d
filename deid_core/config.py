"""Run configuration: everything that decides the bytes of an output, in one picklable value.

A ``DeidConfig`` travels to every Dask worker, so it holds only small plain values (the key,
paths, option names); heavy objects (rule table, patient map, OCR engine) are built once per
process from it by ``deid_core.pipeline.Context``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deid_core import __version__

#: Values of ``DeidConfig.conformance`` (how many outputs dciodvfy checks).
CONFORMANCE_MODES = ("full", "sample", "off")


@dataclass(frozen=True)
class DeidConfig:
    """What a de-identification run applies (the key included; never log this object)."""

    key: bytes = field(repr=False)
    output_dir: Path
    profile: str = "tcia"
    options: tuple[str, ...] = ()
    uid_root: str = "2.25."
    date_shift_min_days: int = 1
    date_shift_max_days: int = 365
    patient_map: str | None = None
    pseudonym_prefix: str = "DEID"
    pixel_policy: str | None = None
    pixel_engine: str = "tesseract"
    #: Mask lossy-compressed images by writing them decompressed (Explicit VR LE, LossyImageCompression
    #: "01" kept): never re-encoded lossy. False quarantines them instead (``pixel_error``).
    allow_lossy_reencode: bool = True
    #: Frames larger than this are quarantined (``pixel_error``) before they are decoded: searching a frame
    #: takes ~14 bytes of worker memory per pixel (decoded views, stroke maps, component labels), and a
    #: 20000x20000 frame in a 6 MB RLE file took a worker to 5.2 GB, then down.
    max_frame_megapixels: float = 100.0
    verify: bool = True
    collect_linkage: bool = False
    #: dciodvfy coverage of outputs: "full" (every file), "sample" (first file of each series per
    #: batch) or "off". Does not change output bytes (the pydicom-level checks run on every file).
    conformance: str = "sample"

    def __post_init__(self) -> None:
        if self.conformance not in CONFORMANCE_MODES:
            from deid_core.errors import ConfigError

            raise ConfigError(f"conformance must be one of {', '.join(CONFORMANCE_MODES)}")

    def fingerprint_dict(self) -> dict[str, object]:
        """The configuration minus the key, for provenance and output-identity hashing."""
        data = asdict(self)
        data.pop("key")
        data["output_dir"] = str(self.output_dir)
        data["options"] = list(self.options)
        data["version"] = __version__
        return data

    def settings_hash(self) -> str:
        """Hash of everything but the key and paths that changes output bytes."""
        data = self.fingerprint_dict()
        data.pop("output_dir")
        data.pop("collect_linkage")
        data.pop("conformance")  # a QA choice: the output bytes are the same
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def settings_digest(self) -> str:
        """``settings_hash`` plus the bytes of the patient map: what, beside the input, the rule table, the key
        and the version, decides an output's bytes. An incremental run skips an input only when this matches
        the run that wrote it (an audit: a rerun with a stricter --pixel-policy, another --uid-root or a
        patient map skipped every file and kept outputs made under the old settings)."""
        h = hashlib.sha256(self.settings_hash().encode())
        if self.patient_map:
            try:
                h.update(Path(self.patient_map).read_bytes())
            except OSError:
                h.update(b"\0unreadable map")  # refused elsewhere; never equal to a readable map's digest
        return h.hexdigest()

    @property
    def output_path(self) -> Path:
        return Path(self.output_dir)
