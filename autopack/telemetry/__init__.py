"""Telemetry: recording builder calls, export, import, analysis and explanation.

Public API:

    from autopack.telemetry import export_to, import_files
    export_to(db, Path("telemetry.parquet"), ExportFormat.PARQUET)   # -> ExportResult
    import_files(db, [Path("telemetry.parquet")])                     # -> ImportReport
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autopack.telemetry.export import export_to
    from autopack.telemetry.importer import import_files

__all__ = ["export_to", "import_files"]


def __getattr__(name: str) -> Any:
    # Lazily: importing the package (for the recorder, say) must not load SQLAlchemy or Arrow.
    if name == "export_to":
        from autopack.telemetry.export import export_to

        return export_to
    if name == "import_files":
        from autopack.telemetry.importer import import_files

        return import_files
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
