"""`run_batch`: start or resume a batch drain session (the API behind `drain batch|queued`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from autopack.db.meta import read_stamp
from autopack.db.models import PhaseState
from autopack.drain.attempt import PhaseOptions
from autopack.drain.claims import reclaim_session
from autopack.drain.controller import BatchController, BatchOptions, replay_state
from autopack.drain.progress import DrainProgress
from autopack.drain.report import DrainReport
from autopack.drain.selection import Filters
from autopack.drain.sessions import (
    find_session,
    new_session_id,
    session_alive,
    start_session,
    take_over_session,
    worker_name,
)
from autopack.drain.triage import Limits
from autopack.errors import GuardError
from autopack.estimator.active import resolve_coefficients
from autopack.llm.base import LlmClient

STATE_CHOICES: dict[str, tuple[str, ...]] = {
    "queued": (PhaseState.QUEUED.value,),
    "failed": (PhaseState.FAILED.value,),
    "all": (PhaseState.QUEUED.value, PhaseState.FAILED.value),
}


def default_state_choice(role: str, stamped: bool) -> str:
    """The legacy backlog is its FAILED phases; anything else drains what is QUEUED."""
    return "failed" if role == "legacy" or not stamped else "queued"


@dataclass(frozen=True)
class StateChoice:
    """Which phase states a batch drains (`--state`), and why."""

    name: str
    """failed | queued | all"""
    states: tuple[str, ...]
    default_for_role: str | None = None
    """The database role that decided it when `--state` was not given."""


def check_state_choice(state: str | None) -> None:
    """Refuse a `--state` that is not failed, queued or all (None: the default, decided later)."""
    if state is not None and state not in STATE_CHOICES:
        raise GuardError(
            f"--state {state!r} is not one of failed, queued, all.", hint="e.g. --state failed"
        )


def choose_states(engine: Engine, state: str | None) -> StateChoice:
    """`--state` checked, or the default for this database's role (legacy: failed)."""
    check_state_choice(state)
    if state is not None:
        return StateChoice(state, STATE_CHOICES[state])
    with engine.connect() as connection:
        stamp = read_stamp(connection)
    name = default_state_choice(stamp.role, stamp.stamped)
    return StateChoice(name, STATE_CHOICES[name], default_for_role=stamp.role)


def options_to_json(options: BatchOptions, coefficients_file: Path | None) -> dict[str, Any]:
    phase = options.phase
    return {
        "kind": options.kind,
        "workers": options.workers,
        "poll_interval_s": options.poll_interval_s,
        "filters": asdict(options.filters),
        "limits": asdict(options.limits),
        "phase": {
            "workspace": str(phase.workspace),
            "coefficients": phase.coefficients.name,
            "coefficients_file": str(coefficients_file) if coefficients_file else None,
            "active_set_model": phase.active_set_model,
            "telemetry_enabled": phase.telemetry_enabled,
            "allow_dirty": phase.allow_dirty,
            "commit": phase.commit,
            "lease_seconds": phase.lease_seconds,
            "pytest_timeout_s": phase.pytest_timeout_s,
            "phase_timeout_s": phase.phase_timeout_s,
            "temperature": phase.temperature,
            "sandbox": phase.sandbox,
        },
    }


def options_from_json(
    data: dict[str, Any],
    *,
    telemetry_tables_present: bool,
    workers: int | None,
    engine: Engine | None = None,
) -> BatchOptions:
    phase = data["phase"]
    coefficients_file = phase.get("coefficients_file")
    active_set_model = phase.get("active_set_model")
    # A session that followed the DB's active set goes on following it (read per attempt);
    # one pinned to a set stored in the DB finds it there again.
    coefficients = resolve_coefficients(
        engine,
        model=active_set_model,
        name=None if coefficients_file or active_set_model else phase["coefficients"],
        file=Path(coefficients_file) if coefficients_file else None,
    )
    filters = data["filters"]
    return BatchOptions(
        filters=Filters(
            states=tuple(filters["states"]),
            run_ids=tuple(filters["run_ids"]),
            skip_run_prefixes=tuple(filters["skip_run_prefixes"]),
            ignore_order=bool(filters.get("ignore_order", False)),
        ),
        limits=Limits(**data["limits"]),
        phase=PhaseOptions(
            workspace=Path(phase["workspace"]),
            coefficients=coefficients,
            active_set_model=active_set_model,
            telemetry_enabled=phase["telemetry_enabled"],
            telemetry_tables_present=telemetry_tables_present,
            allow_dirty=phase["allow_dirty"],
            commit=phase.get("commit", True),
            ignore_order=bool(filters.get("ignore_order", False)),
            lease_seconds=phase["lease_seconds"],
            pytest_timeout_s=phase["pytest_timeout_s"],
            phase_timeout_s=phase["phase_timeout_s"],
            temperature=phase["temperature"],
            sandbox=phase.get("sandbox", "none"),
        ),
        kind=data["kind"],
        workers=workers or data["workers"],
        poll_interval_s=data["poll_interval_s"],
    )


def run_batch(
    engine: Engine,
    client: LlmClient | None,
    options: BatchOptions,
    *,
    coefficients_file: Path | None = None,
    log: Callable[[str], None] = lambda _message: None,
    on_result: Callable[[dict[str, Any]], None] = lambda _entry: None,
    progress: DrainProgress | None = None,
) -> DrainReport:
    """A new session: drain until the batch is done, a stop condition holds, or nothing remains.

    A dry run writes nothing at all (not even its session); everything else is saved after
    every phase, so `resume_batch` continues it after a crash or Ctrl-C.
    """
    session_id = new_session_id()
    if not options.dry_run:
        start_session(
            engine,
            kind=options.kind,
            options=options_to_json(options, coefficients_file),
            telemetry_enabled=options.phase.telemetry_enabled,
            session_id=session_id,
        )
    controller = BatchController(
        engine,
        client,
        options,
        session_id,
        f"{worker_name()}:{session_id[:8]}",
        log=log,
        on_result=on_result,
        progress=progress or DrainProgress(),
    )
    return controller.run()


def resume_batch(
    engine: Engine,
    client: LlmClient,
    *,
    session_id: str | None,
    kinds: tuple[str, ...],
    telemetry_tables_present: bool,
    workers: int | None = None,
    log: Callable[[str], None] = lambda _message: None,
    on_result: Callable[[dict[str, Any]], None] = lambda _entry: None,
    progress: DrainProgress | None = None,
) -> DrainReport:
    """Continue a session with its options, counters, fingerprints and triage state.

    The phases the session still held (its process died mid-phase) go back to their previous
    state first, so they are drained again; attempts that never recorded a result do not count.
    """
    row = find_session(engine, session_id, kinds=kinds)
    if row is None:
        which = f"drain session {session_id!r}" if session_id else "unfinished batch session"
        raise GuardError(
            f"there is no {which} to resume in this database.",
            hint="list sessions with `autopack drain sessions`, or start a new drain",
        )
    if session_alive(row):
        raise GuardError(
            f"session {row.id} is still running ({row.worker}); resuming it would run its "
            "phases twice.",
            hint="wait for it or stop it (Ctrl-C); a session is resumed once its process is gone",
        )
    if row.status == "completed":
        raise GuardError(
            f"session {row.id} is completed; there is nothing to resume.",
            hint="start a new drain",
        )
    if session_id is None:
        log(f"resuming session {row.id} (the newest unfinished one with work to take over)")
    options = options_from_json(
        row.options,
        telemetry_tables_present=telemetry_tables_present,
        workers=workers,
        engine=engine,
    )
    take_over_session(engine, row, worker_name())
    for run_id, phase_id, previous in reclaim_session(engine, row.id):
        log(f"reclaimed {run_id} / {phase_id} from the interrupted session: back to {previous}")
    state = replay_state(engine, row.id, options.limits, row.state)
    state.stop_reason = None
    controller = BatchController(
        engine,
        client,
        options,
        row.id,
        f"{worker_name()}:{row.id[:8]}",
        state=state,
        log=log,
        on_result=on_result,
        progress=progress or DrainProgress(),
    )
    return controller.run()
