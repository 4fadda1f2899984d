"""Logging filters for Prefect's loggers (no Prefect import: the CLI installs them before Prefect loads)."""

from __future__ import annotations

import logging

#: Prefect's loggers that record a flow's or task's exception with its traceback.
PREFECT_EXCEPTION_LOGGERS = ("prefect.flow_runs", "prefect.task_runs", "prefect.engine")


class NoConfigTraceback(logging.Filter):
    """Keeps Prefect's one-line record of a ConfigError (a bad map, a taken output folder, an unknown key
    secret, an empty path in a deployment's form: the user's input, found inside the flow) but drops its
    traceback. The CLI prints the error itself and exits 2; in a deployment run the flow run's state
    message says it. Two 24-line tracebacks of Prefect internals per failed run only hid it (two audits)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from deid_core.errors import ConfigError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ConfigError):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_config_errors() -> None:
    """Install ``NoConfigTraceback`` on Prefect's exception loggers (idempotent)."""
    for name in PREFECT_EXCEPTION_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, NoConfigTraceback) for f in logger.filters):
            logger.addFilter(NoConfigTraceback())
