"""`autopack telemetry export` and `autopack telemetry import`: parse, call the core, render."""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any, BinaryIO, TextIO

import typer

from autopack import console
from autopack.cli.options import DbOption, DebugOption, JsonOption, QuietOption, UrlOption
from autopack.cli.target import announce, open_named
from autopack.db.engine import OpenMode
from autopack.errors import EXIT_FOUND_PROBLEMS, ConfigError
from autopack.output_file import check_output_path
from autopack.telemetry.choices import ExportFormat, ImportFormat

# The export and import machinery (SQLAlchemy, Arrow) loads in the command bodies, so that
# `--help` stays light (docs/performance.md, "Help speed").

AllowEmptyOption = Annotated[
    bool,
    typer.Option("--allow-empty-db", help="Export even from a DB with 0 runs and 0 phases."),
]


def export_command(
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", "-f", metavar="FORMAT", help="csv (default), ndjson or parquet."),
    ] = ExportFormat.CSV,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write this file (a regular file is replaced atomically; a FIFO or device "
            "is written into) instead of stdout.",
        ),
    ] = None,
    success_only: Annotated[
        bool, typer.Option("--success-only", help="Only rows with success = true.")
    ] = False,
    exclude_truncated: Annotated[
        bool,
        typer.Option("--exclude-truncated", help="Drop truncated calls (actual is a lower bound)."),
    ] = False,
    run_id: Annotated[
        list[str] | None, typer.Option("--run-id", metavar="ID", help="Only this run (repeatable).")
    ] = None,
    category: Annotated[
        list[str] | None,
        typer.Option(
            "--category",
            metavar="CATEGORY",
            help="Only this category, normalised: tests = testing.",
        ),
    ] = None,
    complexity: Annotated[
        list[str] | None,
        typer.Option("--complexity", metavar="LEVEL", help="low, medium, high or maintenance."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="WHEN", help="From this UTC date/time (inclusive)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", metavar="WHEN", help="Before this UTC date/time (exclusive)."),
    ] = None,
    allow_empty_db: AllowEmptyOption = False,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Stream telemetry rows out as CSV, NDJSON or Parquet (read-only; one snapshot).

    Every column of token_estimation_v2_events, its provenance, and derived columns; the row
    count goes to stderr.

    e.g. autopack telemetry export --db seed -o telemetry.csv
    """
    from autopack.render.telemetry_io import (
        progress_bar,
        progress_wanted,
        show_broken_pipe,
        show_export_result,
    )
    from autopack.telemetry.export import ExportFilters, export_to, parse_when

    filters = ExportFilters(
        success_only=success_only,
        exclude_truncated=exclude_truncated,
        run_ids=tuple(run_id or ()),
        categories=tuple(category or ()),
        complexities=tuple(complexity or ()),
        since=parse_when(since, "--since") if since is not None else None,
        until=parse_when(until, "--until") if until is not None else None,
    )
    if as_json and output is None:
        raise ConfigError(
            "--json prints a summary on stdout, where the rows would go.",
            hint="add --output FILE, or drop --json to stream the rows to stdout",
        )
    with open_named(db, database_url, OpenMode.READ_ONLY) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        if output is not None:
            check_output_path(output, database=database.target.sqlite_path, what="exported")
        # On a terminal the rows themselves would share the screen with a bar.
        show_bar = progress_wanted(quiet=quiet, as_json=as_json) and (
            output is not None or not console.environment().stdout_isatty
        )
        with progress_bar("exporting", enabled=show_bar) as progress:
            try:
                with _stdout_bytes() as stdout:
                    result = export_to(
                        database,
                        output if output is not None else stdout,
                        fmt,
                        filters,
                        allow_empty_db=allow_empty_db,
                        progress=progress,
                    )
            except BrokenPipeError:
                show_broken_pipe()  # `… | head`: the reader has what it wanted
                raise typer.Exit(EXIT_FOUND_PROBLEMS) from None
    if as_json:
        console.print_json({"target": panel.target.model_dump(mode="json"), **result.model_dump()})
    else:
        show_export_result(result)


@contextmanager
def _stdout_bytes() -> Iterator[BinaryIO]:
    """The environment's stdout as a binary stream of its own, so rows never sit in a text
    buffer: when the reader goes away, nothing is left for the interpreter's exit flush to fail
    on. An injected stdout without a descriptor (a test's StringIO) gets the bytes decoded."""
    out = console.stdout()
    out.flush()
    try:
        descriptor = out.fileno()
    except (AttributeError, OSError, ValueError):
        buffer = getattr(out, "buffer", None)
        yield buffer if buffer is not None else _TextSink(out)  # type: ignore[misc]
        return
    stream = open(descriptor, "wb", closefd=False)  # noqa: SIM115 (closed below)
    try:
        yield stream
    finally:
        with suppress(BrokenPipeError):
            stream.close()


class _TextSink(io.RawIOBase):
    """Bytes in, text out: UTF-8 decoded incrementally (a character may span two writes)."""

    def __init__(self, text: TextIO) -> None:
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._text.write(self._decoder.decode(chunk))
        return len(chunk)


def import_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            metavar="FILE",
            help="Original log files, the original's NDJSON export, or our CSV/NDJSON export.",
            show_default=False,
        ),
    ],
    fmt: Annotated[
        ImportFormat,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            help="auto (by content, per file), log, ndjson, csv or parquet.",
        ),
    ] = ImportFormat.AUTO,
    include_contaminated: Annotated[
        bool,
        typer.Option(
            "--include-contaminated",
            help="Also import `actual_total=` fallback lines (total tokens), marked as such.",
        ),
    ] = False,
    log_utc_offset: Annotated[
        str,
        typer.Option(
            "--log-utc-offset",
            metavar="±HH:MM",
            help="UTC offset of log timestamps written without one (the original logged "
            "local time).",
        ),
    ] = "+00:00",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be imported; write nothing.")
    ] = False,
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: JsonOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Import historical telemetry; importing the same file twice adds nothing.

    Works on a fresh, empty DB. Exit 1 if a line could not be read or nothing was found.
    e.g. autopack telemetry import --db seed old_logs/*.log export.ndjson
    """
    from autopack.render.telemetry_io import progress_bar, progress_wanted, show_import_report
    from autopack.telemetry.importer import (
        ImportOptions,
        check_input_files,
        import_files,
        parse_utc_offset,
    )

    options = ImportOptions(
        format=fmt,
        include_contaminated=include_contaminated,
        log_utc_offset=parse_utc_offset(log_utc_offset),
        dry_run=dry_run,
    )
    paths = check_input_files(files)
    with open_named(db, database_url, OpenMode.READ_WRITE) as database:
        panel = announce(database, quiet=quiet, as_json=as_json)
        enabled = progress_wanted(quiet=quiet, as_json=as_json)
        with progress_bar("importing", enabled=enabled, in_bytes=True) as progress:
            report = import_files(database, paths, options, progress=progress)
    if as_json:
        console.print_json({"target": panel.target.model_dump(mode="json"), **report.model_dump()})
    else:
        show_import_report(report)
    if report.found_problems:
        raise typer.Exit(EXIT_FOUND_PROBLEMS)
