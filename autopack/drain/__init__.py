"""Draining: run queued and failed phases through the builder LLM, token-safely, with telemetry.

Plain Python (no CLI or terminal code). Each command of `autopack drain` is one call here:

    from autopack import drain
    from autopack.llm import load_llm_settings, make_client

    with make_client(load_llm_settings()) as client:
        report = drain.drain_phase(engine, client, "run-1", "phase-1", options)
        report = drain.run_batch(engine, client, drain.BatchOptions(filters, limits, options))
    report.to_json()          # the `--json` document of docs/json.md (less its `target`)

See docs/api.md for a worked example and docs/drain.md for what a drain does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autopack.lazy import lazy_exports

if TYPE_CHECKING:
    from autopack.drain.attempt import PhaseOptions, PhaseOutcome
    from autopack.drain.batch import (
        STATE_CHOICES,
        StateChoice,
        check_state_choice,
        choose_states,
        default_state_choice,
        resume_batch,
        run_batch,
    )
    from autopack.drain.claims import ClaimRefused, PhaseNotFound
    from autopack.drain.controller import BatchOptions
    from autopack.drain.phase import attempt_phase, drain_phase
    from autopack.drain.preflight import DrainSetup, prepare_drain
    from autopack.drain.report import DrainReport, SessionList, SessionSummary
    from autopack.drain.selection import Filters
    from autopack.drain.sessions import list_sessions, session_report
    from autopack.drain.triage import Limits

__getattr__ = lazy_exports(
    __name__,
    {
        "autopack.drain.attempt": (
            "PhaseOptions",
            "PhaseOutcome",
        ),
        "autopack.drain.batch": (
            "StateChoice",
            "check_state_choice",
            "choose_states",
            "default_state_choice",
            "resume_batch",
            "run_batch",
            "STATE_CHOICES",
        ),
        "autopack.drain.claims": (
            "ClaimRefused",
            "PhaseNotFound",
        ),
        "autopack.drain.controller": ("BatchOptions",),
        "autopack.drain.phase": (
            "attempt_phase",
            "drain_phase",
        ),
        "autopack.drain.preflight": (
            "DrainSetup",
            "prepare_drain",
        ),
        "autopack.drain.report": (
            "DrainReport",
            "SessionList",
            "SessionSummary",
        ),
        "autopack.drain.selection": ("Filters",),
        "autopack.drain.sessions": (
            "list_sessions",
            "session_report",
        ),
        "autopack.drain.triage": ("Limits",),
    },
)

__all__ = [
    "STATE_CHOICES",
    "BatchOptions",
    "ClaimRefused",
    "DrainReport",
    "DrainSetup",
    "Filters",
    "Limits",
    "PhaseNotFound",
    "PhaseOptions",
    "PhaseOutcome",
    "SessionList",
    "SessionSummary",
    "StateChoice",
    "attempt_phase",
    "check_state_choice",
    "choose_states",
    "default_state_choice",
    "drain_phase",
    "list_sessions",
    "prepare_drain",
    "resume_batch",
    "run_batch",
    "session_report",
]
