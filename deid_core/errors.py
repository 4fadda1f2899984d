"""One module for deidflow's exceptions.

Messages never carry identifying values: they name the element (tag, keyword) or the
class of problem, never its content, because exceptions end up in logs and provenance.
"""

from __future__ import annotations


class DeidError(Exception):
    """Base of every deidflow error. ``reason`` is a short stable class used in provenance."""

    reason = "error"
    retryable = False


class ConfigError(DeidError):
    """The run cannot start: bad key, invalid mapping, unwritable output, unknown option."""

    reason = "config_error"


class BadInputError(DeidError):
    """The input is not a readable DICOM file (truncated, not DICOM, DICOMDIR, ...)."""

    reason = "bad_input"


class PixelError(DeidError):
    """Pixel data could not be decoded, searched for text, masked or re-encoded."""

    reason = "pixel_error"


class RuleError(DeidError):
    """A rule could not be applied to an element (unexpected VR, malformed value...)."""

    reason = "rule_error"


class LeakError(DeidError):
    """Verification found a captured identifier in an output file."""

    reason = "leak_found"


class WriteError(DeidError):
    """The output could not be written (disk full, permission denied...)."""

    reason = "write_error"
    retryable = True
