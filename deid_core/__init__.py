"""deid_core: DICOM de-identification as a library (no orchestration).

``deidentify_file(path, config)`` de-identifies one file; the Prefect flows in ``flows/``
only schedule this work over batches. See README.md.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "deidentify_file", "DeidConfig", "Outcome"]


def __getattr__(name: str) -> object:
    # Lazy: importing deid_core must stay cheap for the CLI's --help.
    if name in ("deidentify_file", "Outcome"):
        from deid_core import pipeline

        return getattr(pipeline, name)
    if name == "DeidConfig":
        from deid_core.config import DeidConfig

        return DeidConfig
    raise AttributeError(name)
