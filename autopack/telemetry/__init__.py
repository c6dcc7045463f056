"""Telemetry: import the original's logs and exports, analyse the estimator, explain zero yield.

Plain Python (no CLI or terminal code). Each function reads one open `Database`:

    from autopack import telemetry

    report = telemetry.analyze_telemetry(database, telemetry.AnalyzeOptions())
    zero = telemetry.explain_zero_yield(database.engine)
    exported = telemetry.export_to(database, Path("t.parquet"), telemetry.ExportFormat.PARQUET)
    imported = telemetry.import_files(database, [Path("builder.log")], telemetry.ImportOptions())
    report.model_dump(mode="json")           # the `--json` document of docs/json.md

The names follow their modules (`analyze_telemetry` in analyze.py): a package attribute
named like a submodule would be replaced by the module once it is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopack.lazy import lazy_exports

if TYPE_CHECKING:
    from autopack.telemetry.analysis_report import AnalysisReport
    from autopack.telemetry.analyze import AnalyzeOptions, analyze_telemetry
    from autopack.telemetry.choices import ExportFormat, ImportFormat
    from autopack.telemetry.coverage import CoverageReport, assess_coverage
    from autopack.telemetry.explain import ExplainReport, explain_zero_yield
    from autopack.telemetry.export import ExportResult, export_to
    from autopack.telemetry.importer import ImportOptions, ImportReport, import_files
    from autopack.telemetry.recorder import (
        BuilderCall,
        record_builder_call,
        telemetry_tables_present,
    )
    from autopack.telemetry.zero_yield import DrainFacts, ZeroYieldReason, zero_yield_reason

__getattr__ = lazy_exports(
    __name__,
    {
        "autopack.telemetry.analysis_report": ("AnalysisReport",),
        "autopack.telemetry.analyze": (
            "analyze_telemetry",
            "AnalyzeOptions",
        ),
        "autopack.telemetry.coverage": (
            "assess_coverage",
            "CoverageReport",
        ),
        "autopack.telemetry.explain": (
            "explain_zero_yield",
            "export_to",
            "ExplainReport",
            "ExportFormat",
            "ExportResult",
        ),
        "autopack.telemetry.choices": ("ExportFormat", "ImportFormat"),
        "autopack.telemetry.export": (
            "export_to",
            "ExportResult",
        ),
        "autopack.telemetry.importer": (
            "import_files",
            "ImportOptions",
            "ImportReport",
        ),
        "autopack.telemetry.recorder": (
            "BuilderCall",
            "record_builder_call",
            "telemetry_tables_present",
        ),
        "autopack.telemetry.zero_yield": (
            "DrainFacts",
            "zero_yield_reason",
            "ZeroYieldReason",
        ),
    },
)

__all__ = [
    "AnalysisReport",
    "AnalyzeOptions",
    "BuilderCall",
    "CoverageReport",
    "DrainFacts",
    "ExplainReport",
    "ExportFormat",
    "ExportResult",
    "ImportFormat",
    "ImportOptions",
    "ImportReport",
    "ZeroYieldReason",
    "analyze_telemetry",
    "assess_coverage",
    "explain_zero_yield",
    "export_to",
    "import_files",
    "record_builder_call",
    "telemetry_tables_present",
    "zero_yield_reason",
]
