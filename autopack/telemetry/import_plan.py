"""Plan one file's import with reads only: every row to insert, decided before the write lock.

Where each sample goes is decided here (the rules are in autopack.telemetry.importer's
docstring): which keys the DB already holds, which phase each sample is attached to, which
placeholder runs (with their tier) and phases must be created. The plan's rows are plain
column values; ids the DB has not given yet are provisional ordinals 1..n (`NEW_TIER` marks a
phase whose tier is one of the plan's new tiers), made final by autopack.telemetry.import_write
inside the write transaction.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

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
from autopack.errors import GuardError, SchemaError
from autopack.telemetry.import_sources import ImportSample

PLACEHOLDER_MARK: Final = "autopack-import-placeholder"
LOOKUP_CHUNK: Final = 400
"""Values per IN (…) lookup: (run, phase) pairs bind 800, under SQLite's old limit of 999."""
NEW_TIER: Final = "new_tier"
"""Staged phase column: 1 when `tier_id` is the ordinal of a tier this plan creates."""

EVENTS = table_of(TokenEstimationV2Event)
PROVENANCE = table_of(TelemetryProvenance)
RUNS = table_of(Run)
TIERS = table_of(Tier)
PHASES = table_of(Phase)


@dataclass
class PlannedSample:
    sample: ImportSample
    ordinal: int
    """Its provisional event id (1..n in the plan)."""
    attached: bool
    """Goes to a phase the DB had before this import (not a new placeholder)."""


@dataclass
class FilePlan:
    """The rows one file adds, each a dict of column values for its table."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    tiers: list[dict[str, Any]] = field(default_factory=list)
    phases: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    samples: list[PlannedSample] = field(default_factory=list)
    already_present: int = 0
    """Samples the DB held when the plan was made (by key, or the same call without one)."""
    index_bases: dict[str, int] = field(default_factory=dict)
    """Placeholder runs of earlier imports this plan adds phases to → their next phase index."""

    @property
    def empty(self) -> bool:
        return not self.events


def plan_file(
    connection: sa.Connection,
    path: Path,
    samples: Sequence[ImportSample],
    columns: dict[str, frozenset[str]],
) -> FilePlan:
    """The plan for one file's samples, read from the DB as `connection` sees it."""
    return _Planner(connection, path, columns).plan(samples)


def file_run_id(path: Path) -> str:
    """The imported run of a source file: readable, and distinct for two files of one name."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-.")[:48] or "file"
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return f"imported-{slug}-{digest}"


def present_keys(connection: sa.Connection, keys: Iterable[str]) -> set[str]:
    """The given sample keys the provenance table holds (its UNIQUE index, a chunk at a time)."""
    wanted = list(keys)
    found: set[str] = set()
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        chunk = wanted[start : start + LOOKUP_CHUNK]
        query = sa.select(PROVENANCE.c.sample_key).where(PROVENANCE.c.sample_key.in_(chunk))
        found.update(connection.execute(query).scalars())
    return found


class _RunKind(StrEnum):
    PLACEHOLDER = "placeholder"
    REAL = "real"


class _Planner:
    def __init__(
        self, connection: sa.Connection, path: Path, columns: dict[str, frozenset[str]]
    ) -> None:
        self._connection = connection
        self._path = path
        self._columns = columns
        self._file_run = file_run_id(path)
        self._plan = FilePlan()
        self._now = utc_now()
        self._phases: dict[tuple[str, str], bool] = {}
        """Known phases: True if the DB has it, False if this plan creates it."""
        self._runs: dict[str, _RunKind | None] = {}
        self._tiers: dict[str, tuple[int, bool]] = {}
        """run → (tier id, whether it is the ordinal of a tier this plan creates)."""
        self._next_index: dict[str, int] = {}
        self._phase_template: dict[str, Any] | None = None

    def plan(self, samples: Sequence[ImportSample]) -> FilePlan:
        known = present_keys(self._connection, {sample.sample_key for sample in samples})
        fresh = [sample for sample in samples if sample.sample_key not in known]
        self._plan.already_present = len(samples) - len(fresh)
        self._prefetch_phases(fresh)
        planned: set[str] = set()
        for sample in fresh:
            if sample.sample_key in planned:  # the same sample twice in one file
                self._plan.already_present += 1
                continue
            planned.add(sample.sample_key)
            run_id, phase_id, attached = self._place(sample)
            if attached and self._recorded(run_id, phase_id, sample):
                self._plan.already_present += 1
                continue
            self._add_sample(sample, run_id, phase_id, attached)
        return self._plan

    def _add_sample(self, sample: ImportSample, run_id: str, phase_id: str, attached: bool) -> None:
        ordinal = len(self._plan.samples) + 1
        event = {"event_id": ordinal, "run_id": run_id, "phase_id": phase_id, **sample.event}
        present = self._columns[EVENTS.name]
        self._plan.events.append({k: v for k, v in event.items() if k in present})
        self._plan.provenance.append(
            {
                "event_id": ordinal,
                "source": sample.source,
                "coefficient_set": sample.coefficient_set,
                "coefficient_set_hash": sample.coefficient_set_hash,
                "drain_result_id": None,
                "sample_key": sample.sample_key,
                "source_file": sample.source_file,
                "source_line": sample.source_line,
            }
        )
        self._plan.samples.append(PlannedSample(sample, ordinal, attached))

    # --- placement (see the importer's docstring) ---------------------------------------

    def _place(self, sample: ImportSample) -> tuple[str, str, bool]:
        """(run_id, phase_id, whether that phase was in the DB before this import)."""
        if sample.run_id and sample.phase_id:
            run_id, phase_id = sample.run_id, sample.phase_id
            if (run_id, phase_id) in self._phases:
                return run_id, phase_id, self._phases[(run_id, phase_id)]
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
        if (run_id, phase_id) in self._phases:
            return run_id, phase_id, self._phases[(run_id, phase_id)]
        self._create_phase(run_id, phase_id, sample)
        return run_id, phase_id, False

    def _prefetch_phases(self, samples: Sequence[ImportSample]) -> None:
        """Which of the phases the samples may go to the DB has: a query per chunk of pairs,
        not one per sample."""
        wanted: set[tuple[str, str]] = set()
        for sample in samples:
            if sample.run_id and sample.phase_id:
                wanted.add((sample.run_id, sample.phase_id))
                wanted.add((self._file_run, f"{sample.run_id}/{sample.phase_id}"))
            else:
                wanted.add((self._file_run, f"line-{sample.line}"))
        ordered = sorted(wanted)
        pairs = sa.tuple_(PHASES.c.run_id, PHASES.c.phase_id)
        for start in range(0, len(ordered), LOOKUP_CHUNK):
            query = sa.select(PHASES.c.run_id, PHASES.c.phase_id).where(
                pairs.in_(ordered[start : start + LOOKUP_CHUNK])
            )
            for run_id, phase_id in self._connection.execute(query):
                self._phases[(run_id, phase_id)] = True

    def _recorded(self, run_id: str, phase_id: str, sample: ImportSample) -> bool:
        """The same call already stored without a key (a drained row, or the original's)."""
        event = sample.event
        found = self._connection.execute(
            sa.select(EVENTS.c.event_id)
            .where(
                EVENTS.c.run_id == run_id,
                EVENTS.c.phase_id == phase_id,
                EVENTS.c.timestamp == event["timestamp"],
                EVENTS.c.predicted_output_tokens == event["predicted_output_tokens"],
                EVENTS.c.actual_output_tokens == event["actual_output_tokens"],
            )
            .limit(1)
        ).first()
        return found is not None

    def _kind(self, run_id: str) -> _RunKind | None:
        if run_id not in self._runs:
            anchor = self._connection.execute(
                sa.select(RUNS.c.goal_anchor).where(RUNS.c.id == run_id)
            ).first()
            if anchor is None:
                self._runs[run_id] = None
            elif (anchor[0] or "").startswith(PLACEHOLDER_MARK):
                self._runs[run_id] = _RunKind.PLACEHOLDER
            else:
                self._runs[run_id] = _RunKind.REAL
        return self._runs[run_id]

    def _create_run(self, run_id: str, purpose: str) -> None:
        note = (
            f"{PLACEHOLDER_MARK}: {purpose}; made by `autopack telemetry import` from {self._path}"
        )
        run = Run(
            id=run_id,
            state=RunState.DONE_SUCCESS.value,
            goal_anchor=note,
            created_at=self._now,
            updated_at=self._now,
        )
        self._plan.runs.append(self._present(RUNS, run.model_dump()))
        tier = Tier(
            tier_id="T1",
            run_id=run_id,
            tier_index=0,
            name="imported telemetry",
            description=note,
            state=TierState.SKIPPED.value,
            created_at=self._now,
            updated_at=self._now,
        )
        ordinal = len(self._plan.tiers) + 1
        self._plan.tiers.append(self._present(TIERS, {**tier.model_dump(), "id": ordinal}))
        self._tiers[run_id] = (ordinal, True)
        self._next_index[run_id] = 0
        self._runs[run_id] = _RunKind.PLACEHOLDER

    def _create_phase(self, run_id: str, phase_id: str, sample: ImportSample) -> None:
        if self._phase_template is None:
            # The model's defaults, once: building a SQLModel object per phase costs more
            # than planning the rest of the row.
            template = Phase(
                phase_id="",
                run_id="",
                tier_id=0,
                phase_index=0,
                name="",
                description="",
                state=PhaseState.SKIPPED.value,
                created_at=self._now,
                updated_at=self._now,
            ).model_dump(exclude={"id"})
            self._phase_template = self._present(PHASES, template)
        tier_id, new_tier = self._tier_of(run_id)
        row = dict(self._phase_template)
        row.update(
            phase_id=phase_id,
            run_id=run_id,
            tier_id=tier_id,
            phase_index=self._index_for(run_id),
            name=f"imported telemetry: {phase_id}",
            description=(
                f"{PLACEHOLDER_MARK}: stands in for a phase this DB does not have; made by "
                f"`autopack telemetry import` from {self._path} line {sample.line}"
            ),
            task_category=sample.event["category"],
            complexity=sample.event["complexity"],
        )
        row[NEW_TIER] = int(new_tier)
        self._plan.phases.append(row)
        self._phases[(run_id, phase_id)] = False

    def _tier_of(self, run_id: str) -> tuple[int, bool]:
        if run_id not in self._tiers:
            tier = self._connection.execute(
                sa.select(TIERS.c.id).where(TIERS.c.run_id == run_id).order_by(TIERS.c.id)
            ).first()
            if tier is None:
                raise SchemaError(
                    f"placeholder run {run_id!r} has no tier; it was changed by hand.",
                    hint="delete that run (and its phases) and import again",
                )
            self._tiers[run_id] = (int(tier[0]), False)
        return self._tiers[run_id]

    def _index_for(self, run_id: str) -> int:
        if run_id not in self._next_index:
            highest = self._connection.execute(
                sa.select(sa.func.max(PHASES.c.phase_index)).where(PHASES.c.run_id == run_id)
            ).scalar()
            self._next_index[run_id] = 0 if highest is None else int(highest) + 1
            self._plan.index_bases[run_id] = self._next_index[run_id]
        index = self._next_index[run_id]
        self._next_index[run_id] = index + 1
        return index

    def _present(self, table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
        """The values of the columns the table really has (an original DB may lack some of
        ours); None is left to the column's NULL (a JSON column would store the text "null")."""
        present = self._columns[table.name]
        return {k: v for k, v in values.items() if k in present and v is not None}
