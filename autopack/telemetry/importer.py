"""`telemetry import`: bring historical samples into a DB, idempotently, never breaking a key.

Sources (autopack.telemetry.import_sources): the original's `[TokenEstimationV2]` log lines,
the original's NDJSON export, and our own export (CSV, NDJSON or Parquet). Each file is parsed
and validated first, then planned with reads only (autopack.telemetry.import_plan), staged, and
written in one short transaction (autopack.telemetry.import_write), so a file is either
imported or not and the write lock is held only while its rows are inserted; a bad line is
counted and reported, never fatal. Works on a freshly initialised, empty DB: importing is how
a DB gets its history.

Where a sample goes (token_estimation_v2_events has a foreign key to phases(run_id, phase_id)):

1. it names a phase this DB has → the row is attached to that phase;
2. it names a run this DB lacks → a placeholder run with that id is created (state
   DONE_SUCCESS, one SKIPPED tier), and a placeholder phase (SKIPPED) in it;
3. it names a placeholder run made by an earlier import → a placeholder phase is added to it;
4. it names a real run that lacks the phase → real runs are never changed: the sample goes to
   its file's imported run, on a placeholder phase `<run_id>/<phase_id>`;
5. it names no run (log lines) → its file's imported run, `imported-<file stem>-<hash>`, on a
   placeholder phase `line-<n>`. One run per source file, so calibration can hold one out.

Placeholders are marked by `runs.goal_anchor` / `phases.description` starting with
`PLACEHOLDER_MARK`. They are SKIPPED, so no drain, triage or seed ever works on them.

Imported rows get a provenance row: source `import` (or `import_contaminated` for fallback
lines imported on request), no coefficient set (the logged prediction is history, not the
current estimator's), the file and line, and the sample's stable key (UNIQUE: a second import
of the same file adds nothing). Rows from our own export keep the provenance they had.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from pydantic import BaseModel, Field

from autopack.db.engine import Database, translated_errors
from autopack.errors import ConfigError, SchemaError, TargetError
from autopack.telemetry.choices import ImportFormat
from autopack.telemetry.columns import ProgressCallback, TelemetryTables, inspect_telemetry_tables
from autopack.telemetry.import_plan import (
    EVENTS,
    PHASES,
    PROVENANCE,
    RUNS,
    TIERS,
    FilePlan,
    plan_file,
)
from autopack.telemetry.import_plan import PLACEHOLDER_MARK as PLACEHOLDER_MARK
from autopack.telemetry.import_plan import file_run_id as file_run_id
from autopack.telemetry.import_sources import (
    ImportSample,
    Problem,
    Skipped,
    SourceError,
    SourceFormat,
    SourceSettings,
    detect_format,
    file_mtime,
    parquet_records,
    read_records,
)
from autopack.telemetry.import_write import StalePlan, staged, take_write_lock, write_staged

MAX_PLAN_ATTEMPTS = 5
"""Plans made for one file before giving up on writers that keep changing what it adds."""
MAX_PROBLEMS_KEPT = 100
"""Per file; every unparseable line is counted, the first ones are listed with their number."""
PROGRESS_EVERY_LINES = 20_000


@dataclass(frozen=True)
class ImportOptions:
    format: ImportFormat = ImportFormat.AUTO
    """`auto` decides per file, by its content."""
    include_contaminated: bool = False
    """Also import fallback (`actual_total=`) log lines, marked `import_contaminated`."""
    log_utc_offset: timedelta = field(default_factory=timedelta)
    """The UTC offset of log timestamps written without one (the original logged local time)."""
    dry_run: bool = False
    """Do everything, report it, then roll back."""


class LineProblem(BaseModel):
    line: int
    reason: str


class FileReport(BaseModel):
    """What one file held and what became of it. records = imported + already_present +
    sum(skipped); unparseable lines are counted apart."""

    path: str
    format: str | None = None
    records: int = 0
    imported: int = 0
    already_present: int = 0
    on_existing_phases: int = 0
    """Imported rows attached to phases the DB had before this import."""
    on_new_placeholders: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    unparseable: int = 0
    problems: list[LineProblem] = Field(default_factory=list)
    """The first MAX_PROBLEMS_KEPT unparseable lines, with why."""
    placeholder_runs: list[str] = Field(default_factory=list)
    """Runs this import created."""
    placeholder_phases: int = 0
    error: str | None = None
    """Set when the file could not be read at all; nothing was imported from it."""


class ImportTotals(BaseModel):
    files: int = 0
    failed_files: int = 0
    records: int = 0
    imported: int = 0
    already_present: int = 0
    skipped: int = 0
    unparseable: int = 0
    placeholder_runs: int = 0
    placeholder_phases: int = 0


class ImportReport(BaseModel):
    dry_run: bool
    files: list[FileReport]
    totals: ImportTotals

    @property
    def found_problems(self) -> bool:
        """Unparseable lines, unreadable files, or no telemetry at all (exit 1)."""
        totals = self.totals
        return totals.unparseable > 0 or totals.failed_files > 0 or totals.records == 0


def check_input_files(paths: Sequence[Path]) -> list[Path]:
    """Absolute paths of readable files, or a ConfigError before anything is touched."""
    if not paths:
        raise ConfigError("no file to import.", hint="e.g. autopack telemetry import old.log")
    checked: list[Path] = []
    for path in paths:
        resolved = path.expanduser().resolve()
        if not resolved.exists():
            raise ConfigError(f"no such file: {path}.", hint="check the path (and the glob)")
        if not resolved.is_file():
            raise ConfigError(f"{path} is not a file.", hint="name the files to import")
        try:
            with resolved.open("rb"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"cannot read {path}: {exc.strerror}.", hint="check its permissions"
            ) from exc
        if resolved not in checked:
            checked.append(resolved)
    return checked


def require_importable(db: Database) -> TelemetryTables:
    """The telemetry table and the provenance table (which makes import idempotent)."""
    with translated_errors(db), db.engine.connect() as connection:
        tables = inspect_telemetry_tables(db, connection)
    if not tables.has_provenance:
        raise SchemaError(
            f"{db.target.display_url} has no {PROVENANCE.name} table, which import needs "
            "to know what it already imported.",
            hint="add autopack's tables with `autopack db upgrade` (a backup is made first)",
        )
    return tables


def import_files(
    db: Database,
    paths: Sequence[Path],
    options: ImportOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Import every file (one transaction each) and report what happened to each."""
    options = options or ImportOptions()
    files = check_input_files(paths)
    require_importable(db)
    columns = _present_columns(db)
    meter = _Meter(progress, {path: path.stat().st_size for path in files})
    reports = _import_each(db, files, _Context(options, columns, meter))
    return ImportReport(dry_run=options.dry_run, files=reports, totals=_totals(reports))


def parse_utc_offset(text: str) -> timedelta:
    """`+08:00`, `-0500`, `+8`, `0`, `UTC` or `Z` → a timedelta; ConfigError otherwise."""
    value = text.strip().upper()
    if value in ("UTC", "Z", "0", "+0", "-0"):
        return timedelta(0)
    match = re.fullmatch(r"([+-])(\d{1,2})(?::?(\d{2}))?", value)
    if match is None:
        raise ConfigError(
            f"invalid UTC offset {text!r}.", hint="write it like +08:00, -05:00 or UTC"
        )
    sign = -1 if match.group(1) == "-" else 1
    hours, minutes = int(match.group(2)), int(match.group(3) or 0)
    if hours > 14 or minutes > 59:
        raise ConfigError(f"UTC offset {text!r} is out of range.", hint="between -12:00 and +14:00")
    return sign * timedelta(hours=hours, minutes=minutes)


# --- one file ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Context:
    options: ImportOptions
    columns: dict[str, frozenset[str]]
    meter: _Meter


def _import_each(db: Database, files: Sequence[Path], context: _Context) -> list[FileReport]:
    """Each file is read, parsed and validated first, outside any transaction; its rows are
    planned with reads only, staged, and then moved in by one short write transaction, so a
    writer such as a drain waits for the lock only while rows are inserted (issue 11, defect
    8). A dry run writes every file in one transaction, rolled back, so it sees what the
    earlier files would have added."""
    reports: list[FileReport] = []
    with translated_errors(db), db.engine.connect() as connection:
        if context.options.dry_run:
            with connection.begin() as transaction:
                for path in files:
                    report, samples = _read_file(path, context)
                    if report.error is None and samples:
                        _import_samples(connection, path, report, samples, context)
                    reports.append(report)
                transaction.rollback()
            return reports
        for path in files:
            report, samples = _read_file(path, context)
            if report.error is None and samples:
                _import_samples(connection, path, report, samples, context)
            reports.append(report)
    return reports


def _read_file(path: Path, context: _Context) -> tuple[FileReport, list[ImportSample]]:
    """Parse one file: its report so far (records, skipped, unparseable lines) and the samples
    to write; a file that cannot be read reports an error and yields no samples."""
    options = context.options
    try:
        fmt = _format_of(path, options.format)
    except OSError as exc:
        return FileReport(path=str(path), error=f"cannot read it: {exc.strerror or exc}"), []
    report = FileReport(path=str(path), format=fmt.value)
    settings = SourceSettings(options.include_contaminated, options.log_utc_offset)
    try:
        if fmt is SourceFormat.PARQUET:
            return report, _collected(parquet_records(path, str(path)), report)
        # Lines end at "\n" only, so line numbers are what grep -n and editors show (a log may
        # hold bare "\r" from progress output); the csv module wants newline="".
        newline = "" if fmt is SourceFormat.CSV else "\n"
        with path.open(encoding="utf-8", errors="replace", newline=newline) as handle:
            lines = context.meter.lines(handle)
            records = read_records(lines, fmt, str(path), settings, file_mtime(path))
            return report, _collected(records, report)
    except SourceError as exc:
        return FileReport(path=str(path), format=fmt.value, error=str(exc)), []
    except (OSError, csv.Error) as exc:
        return FileReport(path=str(path), format=fmt.value, error=f"cannot read it: {exc}"), []
    finally:
        context.meter.finish_file(path)


def _import_samples(
    connection: sa.Connection,
    path: Path,
    report: FileReport,
    samples: Sequence[ImportSample],
    context: _Context,
) -> None:
    """Plan with reads only, stage the rows, then write them under the write lock; if another
    writer got there first (the plan is stale), plan again with the lock released."""
    dry_run = context.options.dry_run
    for _attempt in range(MAX_PLAN_ATTEMPTS):
        with _reading(connection, dry_run):
            plan = plan_file(connection, path, samples, context.columns)
        if plan.empty:
            _count(report, plan)
            return
        try:
            with staged(connection, plan) as staged_plan, _writing(connection, dry_run):
                write_staged(connection, staged_plan)
        except StalePlan:
            continue
        _count(report, plan)
        return
    raise TargetError(
        f"other writers kept adding the samples of {path} while it was being imported.",
        hint="run the import again once the other imports are done",
    )


@contextmanager
def _reading(connection: sa.Connection, dry_run: bool) -> Iterator[None]:
    """One read transaction for the plan, ended before the write lock is asked for (on SQLite
    a read snapshot cannot become a write transaction once another writer has committed). A
    dry run reads inside its own transaction, so it sees what earlier files would add."""
    if dry_run:
        yield
        return
    transaction = connection.begin()
    try:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN")  # pysqlite begins none before a SELECT
        yield
    finally:
        transaction.rollback()


@contextmanager
def _writing(connection: sa.Connection, dry_run: bool) -> Iterator[None]:
    """The write transaction, committed at the end of the block. A dry run writes inside the
    transaction it rolls back at the end (it keeps SQLite's write lock from its first file's
    rows on; nothing is committed)."""
    if dry_run:
        yield
        return
    with connection.begin():
        take_write_lock(connection)
        yield


def _count(report: FileReport, plan: FilePlan) -> None:
    report.already_present += plan.already_present
    report.imported += len(plan.samples)
    attached = sum(1 for planned in plan.samples if planned.attached)
    report.on_existing_phases += attached
    report.on_new_placeholders += len(plan.samples) - attached
    report.placeholder_runs.extend(row["id"] for row in plan.runs)
    report.placeholder_phases += len(plan.phases)


def _format_of(path: Path, requested: ImportFormat) -> SourceFormat:
    if requested is ImportFormat.AUTO:
        return detect_format(path)
    return SourceFormat(requested.value)


def _collected(
    records: Iterable[ImportSample | Skipped | Problem], report: FileReport
) -> list[ImportSample]:
    """The samples to write; skipped records and unparseable lines are counted in `report`."""
    samples: list[ImportSample] = []
    for record in records:
        if isinstance(record, Problem):
            report.unparseable += 1
            if len(report.problems) < MAX_PROBLEMS_KEPT:
                report.problems.append(LineProblem(line=record.line, reason=record.reason))
            continue
        report.records += 1
        if isinstance(record, Skipped):
            report.skipped[record.reason.value] = report.skipped.get(record.reason.value, 0) + 1
            continue
        samples.append(record)
    return samples


def _present_columns(db: Database) -> dict[str, frozenset[str]]:
    """The columns each table really has (an original DB may lack some of ours)."""
    with translated_errors(db), db.engine.connect() as connection:
        inspector = sa.inspect(connection)
        return {
            table.name: frozenset(column["name"] for column in inspector.get_columns(table.name))
            for table in (RUNS, TIERS, PHASES, EVENTS, PROVENANCE)
        }


class _Meter:
    """Counts characters read (≈ bytes) across files and reports them every so many lines."""

    def __init__(self, progress: ProgressCallback | None, sizes: dict[Path, int]) -> None:
        self._progress = progress
        self._sizes = sizes
        self._total = sum(sizes.values())
        self._done_files = 0
        self._current = 0

    def lines(self, handle: Iterable[str]) -> Iterator[str]:
        self._current = 0
        for number, line in enumerate(handle, start=1):
            self._current += len(line)
            if self._progress is not None and number % PROGRESS_EVERY_LINES == 0:
                self._progress(self._done_files + self._current, self._total)
            yield line

    def finish_file(self, path: Path) -> None:
        self._done_files += self._sizes.get(path, 0)
        self._current = 0
        if self._progress is not None:
            self._progress(self._done_files, self._total)


def _totals(reports: Sequence[FileReport]) -> ImportTotals:
    return ImportTotals(
        files=len(reports),
        failed_files=sum(1 for report in reports if report.error is not None),
        records=sum(report.records for report in reports),
        imported=sum(report.imported for report in reports),
        already_present=sum(report.already_present for report in reports),
        skipped=sum(sum(report.skipped.values()) for report in reports),
        unparseable=sum(report.unparseable for report in reports),
        placeholder_runs=sum(len(report.placeholder_runs) for report in reports),
        placeholder_phases=sum(report.placeholder_phases for report in reports),
    )
