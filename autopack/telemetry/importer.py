"""`telemetry import`: bring historical samples into a DB, idempotently, never breaking a key.

Sources (autopack.telemetry.import_sources): the original's `[TokenEstimationV2]` log lines,
the original's NDJSON export, and our own export (CSV, NDJSON or Parquet). Each file is parsed
and validated first, then written in one short transaction, so a file is either imported or not
and the write lock is held only while its rows are inserted; a bad line is counted and
reported, never fatal. Works on a freshly initialised, empty DB: importing is how a DB gets its
history.

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
import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa
from pydantic import BaseModel, Field

from autopack.db.engine import Database, translated_errors
from autopack.db.models import (
    Phase,
    PhaseState,
    Run,
    RunState,
    TelemetryProvenance,
    Tier,
    TierState,
    TokenEstimationV2Event,
    table_of,
    utc_now,
)
from autopack.errors import ConfigError, GuardError, SchemaError
from autopack.telemetry.choices import ImportFormat
from autopack.telemetry.columns import ProgressCallback, TelemetryTables, inspect_telemetry_tables
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

PLACEHOLDER_MARK: Final = "autopack-import-placeholder"
BATCH_SAMPLES = 500
MAX_PROBLEMS_KEPT = 100
"""Per file; every unparseable line is counted, the first ones are listed with their number."""
PROGRESS_EVERY_LINES = 20_000
_PHASE_CACHE_LIMIT = 50_000
_LOOKUP_CHUNK = 400
"""(run, phase) pairs per lookup query: 800 bound values, under SQLite's old limit of 999."""


_EVENTS = table_of(TokenEstimationV2Event)
_PROVENANCE = table_of(TelemetryProvenance)
_RUNS = table_of(Run)
_TIERS = table_of(Tier)
_PHASES = table_of(Phase)


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
            f"{db.target.display_url} has no {_PROVENANCE.name} table, which import needs "
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
    tables = require_importable(db)
    columns = _present_columns(db)
    meter = _Meter(progress, {path: path.stat().st_size for path in files})
    reports = _import_each(db, files, _Context(options, tables, columns, meter))
    return ImportReport(dry_run=options.dry_run, files=reports, totals=_totals(reports))


def file_run_id(path: Path) -> str:
    """The imported run of a source file: readable, and distinct for two files of one name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.")[:48] or "file"
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return f"imported-{slug}-{digest}"


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
    tables: TelemetryTables
    columns: dict[str, frozenset[str]]
    meter: _Meter


def _import_each(db: Database, files: Sequence[Path], context: _Context) -> list[FileReport]:
    """Each file is read, parsed and validated first, outside any transaction; then its rows
    are written in one short transaction (committed; rolled back for a dry run), so a writer
    such as a drain waits for the lock only while rows are inserted, not while a file is
    parsed. A dry run writes every file in one transaction, rolled back, so it sees what the
    earlier files would have added."""
    reports: list[FileReport] = []
    with translated_errors(db), db.engine.connect() as connection:
        if context.options.dry_run:
            with connection.begin() as transaction:
                for path in files:
                    report, samples = _read_file(path, context)
                    _write_samples(connection, path, report, samples, context)
                    reports.append(report)
                transaction.rollback()
            return reports
        for path in files:
            report, samples = _read_file(path, context)
            if report.error is None and samples:
                with connection.begin():
                    _write_samples(connection, path, report, samples, context)
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


def _write_samples(
    connection: sa.Connection,
    path: Path,
    report: FileReport,
    samples: Sequence[ImportSample],
    context: _Context,
) -> None:
    writer = _Writer(connection, path, report, context.tables, context.columns)
    for start in range(0, len(samples), BATCH_SAMPLES):
        writer.write(samples[start : start + BATCH_SAMPLES])


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


class _Writer:
    """Inserts one batch at a time: skips known keys, places samples, writes rows and provenance."""

    def __init__(
        self,
        connection: sa.Connection,
        path: Path,
        report: FileReport,
        tables: TelemetryTables,
        columns: dict[str, frozenset[str]],
    ) -> None:
        self._connection = connection
        self._report = report
        self._event_columns = tables.event_columns
        self._placement = _Placement(connection, path, report, columns)

    def write(self, batch: Sequence[ImportSample]) -> None:
        keys = [sample.sample_key for sample in batch]
        known = set(
            self._connection.execute(
                sa.select(_PROVENANCE.c.sample_key).where(_PROVENANCE.c.sample_key.in_(keys))
            ).scalars()
        )
        rows: list[dict[str, Any]] = []
        placed: list[tuple[ImportSample, bool]] = []
        self._placement.prefetch(batch)
        for sample in batch:
            if sample.sample_key in known:
                self._report.already_present += 1
                continue
            known.add(sample.sample_key)
            run_id, phase_id, existing = self._placement.place(sample)
            if existing and self._recorded(run_id, phase_id, sample):
                self._report.already_present += 1
                continue
            row = {"run_id": run_id, "phase_id": phase_id, **sample.event}
            rows.append({k: v for k, v in row.items() if k in self._event_columns})
            placed.append((sample, existing))
        self._placement.flush()
        if not rows:
            return
        inserted = self._connection.execute(
            sa.insert(_EVENTS).returning(_EVENTS.c.event_id, sort_by_parameter_order=True), rows
        )
        event_ids = [int(value) for value in inserted.scalars()]
        self._connection.execute(
            sa.insert(_PROVENANCE),
            [
                {
                    "event_id": event_id,
                    "source": sample.source,
                    "coefficient_set": sample.coefficient_set,
                    "coefficient_set_hash": sample.coefficient_set_hash,
                    "drain_result_id": None,
                    "sample_key": sample.sample_key,
                    "source_file": sample.source_file,
                    "source_line": sample.source_line,
                }
                for event_id, (sample, _existing) in zip(event_ids, placed, strict=True)
            ],
        )
        self._report.imported += len(rows)
        attached = sum(1 for _sample, existing in placed if existing)
        self._report.on_existing_phases += attached
        self._report.on_new_placeholders += len(rows) - attached

    def _recorded(self, run_id: str, phase_id: str, sample: ImportSample) -> bool:
        """The same call already stored without a key (a drained row, or the original's)."""
        event = sample.event
        found = self._connection.execute(
            sa.select(_EVENTS.c.event_id)
            .where(
                _EVENTS.c.run_id == run_id,
                _EVENTS.c.phase_id == phase_id,
                _EVENTS.c.timestamp == event["timestamp"],
                _EVENTS.c.predicted_output_tokens == event["predicted_output_tokens"],
                _EVENTS.c.actual_output_tokens == event["actual_output_tokens"],
            )
            .limit(1)
        ).first()
        return found is not None


class _RunKind(StrEnum):
    PLACEHOLDER = "placeholder"
    REAL = "real"


class _Placement:
    """Finds or creates the phase a sample belongs to (see the module docstring)."""

    def __init__(
        self,
        connection: sa.Connection,
        path: Path,
        report: FileReport,
        columns: dict[str, frozenset[str]],
    ) -> None:
        self._connection = connection
        self._path = path
        self._report = report
        self._columns = columns
        self._file_run = file_run_id(path)
        # Phases with a larger key than this were created during this import.
        self._last_phase_before = int(
            connection.execute(
                sa.select(sa.func.coalesce(sa.func.max(_PHASES.c.id), 0))
            ).scalar_one()
        )
        self._phases: dict[tuple[str, str], int | None] = {}
        self._pending: list[dict[str, Any]] = []
        self._phase_template: dict[str, Any] | None = None
        """Phases to insert (together, at flush) before the batch's rows."""
        self._runs: dict[str, _RunKind | None] = {}
        self._tiers: dict[str, int] = {}
        self._next_index: dict[str, int] = {}

    def place(self, sample: ImportSample) -> tuple[str, str, bool]:
        """(run_id, phase_id, whether that phase was in the DB before this import)."""
        if sample.run_id and sample.phase_id:
            run_id, phase_id = sample.run_id, sample.phase_id
            key = self._phase_key(run_id, phase_id)
            if key is not None:
                return run_id, phase_id, key <= self._last_phase_before
            kind = self._kind(run_id)
            if kind is None:
                self._create_run(run_id, f"stands in for run {run_id}")
                kind = _RunKind.PLACEHOLDER
            if kind is _RunKind.PLACEHOLDER:
                self._create_phase(run_id, phase_id, sample)
                return run_id, phase_id, False
            run_id, phase_id = self._file_run, f"{run_id}/{phase_id}"
        else:
            run_id, phase_id = self._file_run, f"line-{sample.line}"
        kind = self._kind(run_id)
        if kind is None:
            self._create_run(run_id, "holds the samples of one imported file")
        elif kind is _RunKind.REAL:
            raise GuardError(
                f"run {run_id!r} exists and was not made by telemetry import.",
                hint="rename or move the file to import, so its run gets another id",
            )
        key = self._phase_key(run_id, phase_id)
        if key is not None:
            return run_id, phase_id, key <= self._last_phase_before
        self._create_phase(run_id, phase_id, sample)
        return run_id, phase_id, False

    def prefetch(self, batch: Sequence[ImportSample]) -> None:
        """Look up, in one query, every phase the batch's samples may go to (not one query per
        sample: the import holds the write lock meanwhile)."""
        wanted: set[tuple[str, str]] = set()
        for sample in batch:
            if sample.run_id and sample.phase_id:
                wanted.add((sample.run_id, sample.phase_id))
                wanted.add((self._file_run, f"{sample.run_id}/{sample.phase_id}"))
            else:
                wanted.add((self._file_run, f"line-{sample.line}"))
        missing = sorted(name for name in wanted if name not in self._phases)
        if not missing:
            return
        if len(self._phases) + len(missing) > _PHASE_CACHE_LIMIT:
            self._phases.clear()
        found: dict[tuple[str, str], int] = {}
        for start in range(0, len(missing), _LOOKUP_CHUNK):
            chunk = missing[start : start + _LOOKUP_CHUNK]
            pairs = sa.tuple_(_PHASES.c.run_id, _PHASES.c.phase_id)
            query = sa.select(_PHASES.c.run_id, _PHASES.c.phase_id, _PHASES.c.id).where(
                pairs.in_(chunk)
            )
            for run_id, phase_id, key in self._connection.execute(query):
                found[(run_id, phase_id)] = int(key)
        for name in missing:
            self._phases[name] = found.get(name)

    def flush(self) -> None:
        """Insert the phases placed since the last flush, in one statement."""
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in self._pending:  # one executemany per set of columns given
            shapes.setdefault(tuple(row), []).append(row)
        for rows in shapes.values():
            self._connection.execute(sa.insert(_PHASES), rows)
        self._pending = []

    def _phase_key(self, run_id: str, phase_id: str) -> int | None:
        """The phase's primary key, or None if the DB has no such phase."""
        name = (run_id, phase_id)
        if name in self._phases:
            return self._phases[name]
        key = self._connection.execute(
            sa.select(_PHASES.c.id).where(
                _PHASES.c.run_id == run_id, _PHASES.c.phase_id == phase_id
            )
        ).scalar_one_or_none()
        if len(self._phases) >= _PHASE_CACHE_LIMIT:
            self._phases.clear()
        self._phases[name] = None if key is None else int(key)
        return self._phases[name]

    def _kind(self, run_id: str) -> _RunKind | None:
        if run_id not in self._runs:
            anchor = self._connection.execute(
                sa.select(_RUNS.c.goal_anchor).where(_RUNS.c.id == run_id)
            ).first()
            if anchor is None:
                self._runs[run_id] = None
            elif (anchor[0] or "").startswith(PLACEHOLDER_MARK):
                self._runs[run_id] = _RunKind.PLACEHOLDER
            else:
                self._runs[run_id] = _RunKind.REAL
        return self._runs[run_id]

    def _create_run(self, run_id: str, purpose: str) -> None:
        now = utc_now()
        note = (
            f"{PLACEHOLDER_MARK}: {purpose}; made by `autopack telemetry import` from {self._path}"
        )
        run = Run(
            id=run_id,
            state=RunState.DONE_SUCCESS.value,
            goal_anchor=note,
            created_at=now,
            updated_at=now,
        )
        self._insert(_RUNS, run.model_dump())
        tier = Tier(
            tier_id="T1",
            run_id=run_id,
            tier_index=0,
            name="imported telemetry",
            description=note,
            state=TierState.SKIPPED.value,
            created_at=now,
            updated_at=now,
        )
        self._tiers[run_id] = self._insert(_TIERS, tier.model_dump(exclude={"id"}), "id")
        self._next_index[run_id] = 0
        self._runs[run_id] = _RunKind.PLACEHOLDER
        self._report.placeholder_runs.append(run_id)

    def _create_phase(self, run_id: str, phase_id: str, sample: ImportSample) -> None:
        now = utc_now()
        if self._phase_template is None:
            # The model's defaults, once: building a SQLModel object per phase costs more
            # than the insert (and the import holds the write lock meanwhile).
            template = Phase(
                phase_id="",
                run_id="",
                tier_id=0,
                phase_index=0,
                name="",
                description="",
                state=PhaseState.SKIPPED.value,
                created_at=now,
                updated_at=now,
            ).model_dump(exclude={"id"})
            present = self._columns[_PHASES.name]
            self._phase_template = {k: v for k, v in template.items() if k in present}
        row = dict(self._phase_template)
        row.update(
            phase_id=phase_id,
            run_id=run_id,
            tier_id=self._tier_of(run_id),
            phase_index=self._index_for(run_id),
            name=f"imported telemetry: {phase_id}",
            description=(
                f"{PLACEHOLDER_MARK}: stands in for a phase this DB does not have; made by "
                f"`autopack telemetry import` from {self._path} line {sample.line}"
            ),
            task_category=sample.event["category"],
            complexity=sample.event["complexity"],
            created_at=now,
            updated_at=now,
        )
        # None is left to the column's NULL (a JSON column would store the text "null").
        self._pending.append({k: v for k, v in row.items() if v is not None})
        # Its key is not needed, only that it is newer than every phase before this import.
        self._phases[(run_id, phase_id)] = self._last_phase_before + 1
        self._report.placeholder_phases += 1

    def _tier_of(self, run_id: str) -> int:
        if run_id not in self._tiers:
            tier = self._connection.execute(
                sa.select(_TIERS.c.id).where(_TIERS.c.run_id == run_id).order_by(_TIERS.c.id)
            ).first()
            if tier is None:
                raise SchemaError(
                    f"placeholder run {run_id!r} has no tier; it was changed by hand.",
                    hint="delete that run (and its phases) and import again",
                )
            self._tiers[run_id] = int(tier[0])
        return self._tiers[run_id]

    def _index_for(self, run_id: str) -> int:
        if run_id not in self._next_index:
            highest = self._connection.execute(
                sa.select(sa.func.max(_PHASES.c.phase_index)).where(_PHASES.c.run_id == run_id)
            ).scalar()
            self._next_index[run_id] = 0 if highest is None else int(highest) + 1
        index = self._next_index[run_id]
        self._next_index[run_id] = index + 1
        return index

    def _insert(self, table: sa.Table, values: dict[str, Any], returning: str | None = None) -> int:
        present = self._columns[table.name]
        # None is left to the column's NULL (a JSON column would store the text "null").
        row = {k: v for k, v in values.items() if k in present and v is not None}
        statement = sa.insert(table).values(**row)
        if returning is None:
            self._connection.execute(statement)
            return 0
        return int(self._connection.execute(statement.returning(table.c[returning])).scalar_one())


def _present_columns(db: Database) -> dict[str, frozenset[str]]:
    """The columns each table really has (an original DB may lack some of ours)."""
    with translated_errors(db), db.engine.connect() as connection:
        inspector = sa.inspect(connection)
        return {
            table.name: frozenset(column["name"] for column in inspector.get_columns(table.name))
            for table in (_RUNS, _TIERS, _PHASES)
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
