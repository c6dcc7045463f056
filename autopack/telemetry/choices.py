"""The telemetry commands' choices and defaults, as plain values.

The command line declares its options with them at import time; keeping them apart from the
modules that use SQLAlchemy and Arrow lets `autopack telemetry export --help` load neither.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class ExportFormat(StrEnum):
    CSV = "csv"
    NDJSON = "ndjson"
    PARQUET = "parquet"


class ImportFormat(StrEnum):
    AUTO = "auto"
    LOG = "log"
    NDJSON = "ndjson"
    CSV = "csv"
    PARQUET = "parquet"


DEFAULT_MIN_TOTAL: Final = 20
"""The runbook's seeding goal: at least this many clean samples in all."""
