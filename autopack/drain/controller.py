"""The batch drain controller: the runbook's intent, token-safely, with N workers.

The main thread decides (selection, triage, stop conditions, session saves) so every decision
sees one consistent state; worker threads only run phases (the LLM call dominates, and waiting on
HTTP releases the GIL). Worker threads are daemons: Ctrl-C gives their phases back and exits at
once instead of waiting for a reply. Leases are extended by the main thread (heartbeat), and a
phase that outlives its timeout by a grace period is abandoned: marked FAILED, its claim
released, its late result discarded.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.clock import utc_now
from autopack.db.models import PhaseState, TokenEstimationV2Event, table_of
from autopack.drain.attempt import PhaseOptions, PhaseOutcome
from autopack.drain.claims import (
    Claim,
    ClaimRefused,
    PhaseNotFound,
    extend_leases,
    held_claims,
    reclaim_dead_local,
    unclaim,
)
from autopack.drain.fingerprint import failure_fingerprint
from autopack.drain.finish import finish_attempt
from autopack.drain.phase import attempt_phase, load_phase_spec
from autopack.drain.progress import DrainProgress
from autopack.drain.report import DrainReport, summarise
from autopack.drain.selection import Candidate, Filters, Verdict, select_next
from autopack.drain.sessions import save_session, session_entries
from autopack.drain.steps import predict
from autopack.drain.triage import AttemptSummary, Limits, TriageState
from autopack.errors import Terminated
from autopack.executor.git import GIT_TIMEOUT_S
from autopack.executor.prompts import PhaseSpecError
from autopack.llm.base import LlmClient
from autopack.telemetry.zero_yield import DrainFacts, zero_yield_reason

# A phase is abandoned this long after its own timeout if it still has not come back.
ABANDON_GRACE_S = 30.0
# The report names at most this many runs held back by run order (a legacy backlog may
# have thousands).
MAX_BLOCKED_SHOWN = 100
# A running session saves itself at least this often (see sessions.session_alive).
SESSION_HEARTBEAT_S = 30.0


class DrainInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM handled as it) stopped the session: its phases in flight were given
    back and it is saved as `interrupted`; `report` holds what finished before."""

    def __init__(self, report: DrainReport, *, terminated: bool = False) -> None:
        super().__init__("interrupted")
        self.report = report
        self.terminated = terminated
        """SIGTERM rather than Ctrl-C: the command exits 143, not 130."""


@dataclass(frozen=True)
class BatchOptions:
    filters: Filters
    limits: Limits
    phase: PhaseOptions
    kind: str = "batch"
    workers: int = 1
    dry_run: bool = False
    poll_interval_s: float = 2.0
    claims_table: bool = True
    """False when a dry run plans on a DB not upgraded yet (no claims to look at)."""


@dataclass
class _Flight:
    candidate: Candidate
    cancel: threading.Event
    started: float
    started_at_utc: Any
    worker: str
    """This attempt's own claim token: a lease can only be released by the attempt holding it."""
    abandoning: bool = False
    """The controller asked it to stop but could not take the claim: its own outcome decides."""
    returned: threading.Event = field(default_factory=threading.Event)
    """Its thread is done: after its result was recorded it still commits the phase's files,
    and the slot stays taken until then (the next phase's commit must not overtake it)."""


@dataclass
class BatchController:
    engine: Engine
    client: LlmClient | None
    options: BatchOptions
    session_id: str
    worker: str
    state: TriageState = field(default_factory=TriageState)
    log: Callable[[str], None] = lambda _message: None
    on_result: Callable[[dict[str, Any]], None] = lambda _entry: None
    clock: Callable[[], float] = time.monotonic
    progress: DrainProgress = field(default_factory=DrainProgress)

    _results: queue.Queue[tuple[_Flight, PhaseOutcome | None, BaseException | None]] = field(
        default_factory=queue.Queue, init=False
    )
    _in_flight: dict[str, _Flight] = field(default_factory=dict, init=False)
    _finishing: list[_Flight] = field(default_factory=list, init=False)
    """Flights whose result is folded in but whose thread still commits their files."""
    _dry_entries: list[dict[str, Any]] = field(default_factory=list, init=False)
    _dry_keys: set[tuple[str, str]] = field(default_factory=set, init=False)
    _cooldown: dict[tuple[str, str], float] = field(default_factory=dict, init=False)
    _attempts_started: int = field(default=0, init=False)
    _threads: list[threading.Thread] = field(default_factory=list, init=False)
    _announced_waits: set[tuple[str, str, str]] = field(default_factory=set, init=False)
    _blocked_runs: dict[str, str] = field(default_factory=dict, init=False)
    """Runs held back by an earlier phase that is not COMPLETE (shown in the report)."""

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> DrainReport:
        started = self.clock()
        base_elapsed = self.state.elapsed_s
        last_heartbeat = started
        status = "completed"
        terminated = False
        try:
            if not self.options.dry_run:
                self._reclaim_dead()
            while True:
                now = self.clock()
                self.state.elapsed_s = base_elapsed + (now - started)
                if now - last_heartbeat >= self._heartbeat_interval():
                    self._heartbeat()
                    last_heartbeat = now
                self._abandon_overdue(now)
                verdict = self._dispatch_one()
                if verdict is Verdict.PICK:
                    continue
                if not self._in_flight and not self._finishing:
                    if verdict is Verdict.WAIT and self._wait_for_claims():
                        time.sleep(self.options.poll_interval_s)
                        continue
                    break
                self._collect(timeout=self._wait_timeout())
            self._join_workers()
        except KeyboardInterrupt as stop:
            status = "interrupted"
            terminated = isinstance(stop, Terminated)
            signal_name = "SIGTERM" if terminated else "Ctrl-C"
            self.state.stop_reason = f"interrupted ({signal_name}); resume with --resume"
            self._give_back_in_flight()
        except BaseException:
            status = "failed"
            self._give_back_in_flight()
            raise
        finally:
            self.state.elapsed_s = base_elapsed + (self.clock() - started)
            self._save(status)
        if status == "interrupted":
            # What finished is recorded; the caller shows it and how to resume.
            raise DrainInterrupted(self.report(), terminated=terminated)
        return self.report()

    def _dispatch_one(self) -> Verdict:
        """Start one phase if a slot, the limits and the backlog allow; say what happened."""
        limits = self.options.limits
        self._finishing = [f for f in self._finishing if not f.returned.is_set()]
        if len(self._in_flight) + len(self._finishing) >= max(1, self.options.workers):
            return Verdict.WAIT
        stop = self.state.session_stop(limits, self.state.elapsed_s)
        if stop is None and self.state.processed + len(self._in_flight) >= limits.batch_size:
            return Verdict.WAIT if self._in_flight else self._stop("batch size reached")
        if stop is not None:
            return Verdict.WAIT if self._in_flight else self._stop(stop)
        selection = select_next(
            self.engine,
            self.options.filters,
            self.state,
            limits,
            in_flight_runs={
                f.candidate.run_id for f in self._in_flight.values() if not f.candidate.independent
            },
            # Phases in flight may not be claimed yet: pass over them like a dry run's picks.
            done_keys=self._dry_keys | self._in_flight_keys(),
            cooldown_keys=self._cooling_keys(),
            blocked=self._blocked_runs,
            leases=self.options.claims_table,
        )
        for key, reason in (selection.skipped or {}).items():
            self.state.skipped_phases[key] = reason
            self.log(f"skipped {key.replace(chr(31), ' / ')}: {reason}")
        for run_id, reason in (selection.stopped_runs or {}).items():
            message = self.state.stop_run(run_id, reason)
            if message:
                self.log(message)
        if selection.verdict is not Verdict.PICK or selection.candidate is None:
            if selection.verdict is Verdict.DONE and not self._in_flight:
                return self._stop("no eligible phase remains")
            return selection.verdict
        self._start(selection.candidate)
        return Verdict.PICK

    def _stop(self, reason: str) -> Verdict:
        self.state.stop_reason = reason
        return Verdict.DONE

    def _cooling_keys(self) -> set[tuple[str, str]]:
        """Phases just lost to another worker: their runs wait a poll interval."""
        now = self.clock()
        self._cooldown = {k: until for k, until in self._cooldown.items() if until > now}
        return set(self._cooldown)

    def _in_flight_keys(self) -> set[tuple[str, str]]:
        return {(f.candidate.run_id, f.candidate.phase_id) for f in self._in_flight.values()}

    # -- starting and finishing phases ---------------------------------------------------------

    def _start(self, candidate: Candidate) -> None:
        if self.options.dry_run:
            self._finish_dry(candidate)
            return
        self._attempts_started += 1
        token = f"{self.worker}:{self._attempts_started}"
        flight = _Flight(candidate, threading.Event(), self.clock(), utc_now(), token)
        self._in_flight[candidate.key] = flight
        self.progress.start(candidate.key, candidate.run_id, candidate.phase_id)
        thread = threading.Thread(
            target=self._work, args=(flight,), name=f"drain-{candidate.phase_id}", daemon=True
        )
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _work(self, flight: _Flight) -> None:
        candidate = flight.candidate
        options = replace(
            self.options.phase,
            requeue=candidate.state == PhaseState.FAILED.value,
            raise_claim_refusals=True,
            ignore_order=True,  # the selection put it in order (and passed over capped phases)
        )
        delivered = False

        def deliver(outcome: PhaseOutcome) -> None:
            # Called as the result is numbered: the main thread folds in the recorded order.
            nonlocal delivered
            delivered = True
            self._results.put((flight, outcome, None))

        try:
            assert self.client is not None  # only dry runs go without a client
            outcome = attempt_phase(
                self.engine,
                self.client,
                candidate.run_id,
                candidate.phase_id,
                options,
                session_id=self.session_id,
                worker=flight.worker,
                cancelled=flight.cancel,
                on_recorded=deliver,
            )
        except BaseException as exc:  # handed to the main thread, which decides
            flight.returned.set()
            self._results.put((flight, None, exc))
        else:
            flight.returned.set()
            # Delivered already: this wakes the main thread to use the freed slot (a message
            # for a flight no longer in flight is discarded).
            self._results.put((flight, None if delivered else outcome, None))

    def _collect(self, timeout: float) -> None:
        try:
            flight, outcome, error = self._results.get(timeout=timeout)
        except queue.Empty:
            return
        if self._in_flight.get(flight.candidate.key) is not flight:
            return  # abandoned earlier (its late result is discarded), or a wake-up
        del self._in_flight[flight.candidate.key]
        if not flight.returned.is_set():
            self._finishing.append(flight)
        self.progress.end(flight.candidate.key)
        key = (flight.candidate.run_id, flight.candidate.phase_id)
        if isinstance(error, ClaimRefused | PhaseNotFound):
            # Another worker got there first (or the phase went away): not an attempt.
            self._cooldown[key] = self.clock() + self.options.poll_interval_s
            return
        if error is not None:
            raise error
        assert outcome is not None
        if outcome.outcome == "abandoned":
            if flight.abandoning:
                # Asked to stop before it held the claim: it gave the phase back untouched, and
                # the attempt still counts as a timeout (so a phase cannot loop forever).
                waited = self.clock() - flight.started
                self._record_timeout(
                    flight, waited, flight.candidate.state, self._timeout_reason(waited)
                )
            return
        # The attempt recorded its result (with its state change, in one transaction) and
        # handed it over in the order results are numbered: a resumed session replays exactly
        # the state this one had.
        self._fold(outcome.entry())

    def _fold(self, entry: dict[str, Any]) -> None:
        events = self.state.apply(
            AttemptSummary.from_entry(entry),
            self.options.limits,
        )
        self.progress.finished(entry)
        self.on_result(entry)
        for event in events:
            self.log(event)
        self._save("running")

    def _finish_dry(self, candidate: Candidate) -> None:
        """A dry run selects and triages exactly as a real one, and writes nothing."""
        self._dry_keys.add((candidate.run_id, candidate.phase_id))
        entry = PhaseOutcome(
            candidate.run_id, candidate.phase_id, "dry_run", candidate.state
        ).result_values()
        entry["bucket"] = candidate.bucket
        entry["estimated_tokens"], entry["selected_budget"] = self._predict(candidate)
        self._dry_entries.append(entry)
        self._fold(entry)

    def _predict(self, candidate: Candidate) -> tuple[int | None, int | None]:
        """The plan's figures for a phase: predicted output tokens and the selected budget."""
        try:
            spec, row = load_phase_spec(self.engine, candidate.run_id, candidate.phase_id)
            forecast = predict(spec, row, self.options.phase)
        except (PhaseSpecError, PhaseNotFound):
            return None, None  # the real attempt refuses it; nothing to predict
        return forecast.estimate.estimated_tokens, forecast.budget

    # -- other processes' claims ---------------------------------------------------------------

    def _reclaim_dead(self) -> None:
        """Phases held by dead processes of this machine are free now: give them back."""
        for claim in reclaim_dead_local(self.engine):
            self.log(
                f"reclaimed {claim.run_id} / {claim.phase_id} from dead process {claim.holder} "
                f"(session {str(claim.session_id or '?')[:12]}): back to {claim.previous_state}"
            )

    def _wait_for_claims(self) -> bool:
        """Nothing can start because other workers hold what remains. Say what is waited for
        (once per claim) and return True to wait; a dry run never waits: it stops, saying so."""
        if not self.options.dry_run:
            self._reclaim_dead()
        claims = [
            c
            for c in (held_claims(self.engine) if self.options.claims_table else [])
            if not c.worker.startswith(self.worker)
        ]
        if self.options.dry_run:
            held = ", ".join(f"{c.run_id} / {c.phase_id} ({c.holder})" for c in claims[:5])
            self._stop(
                "the rest waits behind phases other workers hold"
                + (f": {held}" if held else "")
                + " (a dry run does not wait)"
            )
            return False
        for claim in claims:
            key = (claim.run_id, claim.phase_id, claim.worker)
            if key in self._announced_waits:
                continue
            self._announced_waits.add(key)
            expires = claim.lease_expires_at.strftime("%Y-%m-%d %H:%M:%S")
            self.log(
                f"waiting for {claim.run_id} / {claim.phase_id}: held by {claim.holder} "
                f"until {expires} UTC (lease); Ctrl-C stops waiting (the session can be "
                "resumed), or leave the run out with --skip-run-prefix"
            )
        return True

    def _join_workers(self) -> None:
        """Let finished attempts end their git commits before the session ends."""
        for thread in self._threads:
            thread.join(timeout=GIT_TIMEOUT_S)
        self._threads.clear()

    # -- leases, timeouts, interruption -------------------------------------------------------

    def _heartbeat_interval(self) -> float:
        # Often enough for leases, and for other machines to see this session is alive.
        return max(1.0, min(SESSION_HEARTBEAT_S, self.options.phase.lease_seconds / 3))

    def _wait_timeout(self) -> float:
        return min(self.options.poll_interval_s, self._heartbeat_interval())

    def _heartbeat(self) -> None:
        """Extend the leases of the phases in flight, and save the session (its clock too)."""
        for flight in self._in_flight.values():
            key = (flight.candidate.run_id, flight.candidate.phase_id)
            extend_leases(self.engine, flight.worker, [key], self.options.phase.lease_seconds)
        self._save("running")

    def _abandon_overdue(self, now: float) -> None:
        limit = self.options.phase.phase_timeout_s
        if limit is None:
            return
        for key, flight in list(self._in_flight.items()):
            if flight.abandoning or now - flight.started < limit + ABANDON_GRACE_S:
                continue
            flight.cancel.set()
            if self._release_abandoned(flight, now - flight.started):
                del self._in_flight[key]
                self.progress.end(key)
            else:
                # Not claimed yet, or it finished just now: its outcome comes through the queue
                # ("abandoned", or a real result) and decides; nothing is recorded twice.
                flight.abandoning = True

    def _release_abandoned(self, flight: _Flight, waited_s: float) -> bool:
        """Take the overdue phase from its attempt: FAILED, recorded as a timeout, in one
        transaction. False if the attempt does not hold the claim (then nothing is changed or
        recorded here)."""
        candidate = flight.candidate
        claim = Claim(candidate.run_id, candidate.phase_id, flight.worker, self.session_id, False)
        return self._record_timeout(
            flight, waited_s, PhaseState.FAILED.value, self._timeout_reason(waited_s), claim
        )

    def _timeout_reason(self, waited_s: float) -> str:
        limit = self.options.phase.phase_timeout_s or 0.0
        return f"[TIMEOUT] abandoned after {waited_s:.0f} s (phase timeout {limit:g} s)"

    def _record_timeout(
        self,
        flight: _Flight,
        waited_s: float,
        final_state: str,
        reason: str,
        claim: Claim | None = None,
    ) -> bool:
        """One timeout attempt, recorded and folded (it counts toward the run's timeouts).
        With `claim`, the phase is released FAILED in the same transaction, if still held."""
        candidate = flight.candidate
        rows = self._rows_written_since(candidate, flight.started_at_utc)
        # What the worker did is unknown; the rows it wrote are not: they decide the reason.
        facts = DrainFacts(
            preflight_passed=True,
            provider_called=rows > 0,
            answered_calls=rows,
            rows_written=rows,
            telemetry_enabled=self.options.phase.telemetry_enabled,
            telemetry_tables_present=self.options.phase.telemetry_tables_present,
        )
        outcome = PhaseOutcome(
            candidate.run_id,
            candidate.phase_id,
            "timeout",
            final_state,
            failure_kind="timeout",
            failure_reason=reason,
            telemetry_events=rows,
            facts=facts,
            duration_s=waited_s,
        )
        found = zero_yield_reason(facts)
        outcome.zero_yield_reason = found.value if found else None
        outcome.fingerprint = failure_fingerprint(final_state, "timeout", reason)
        if not finish_attempt(self.engine, self.session_id, outcome, claim):
            return False
        self.log(f"abandoned {candidate.run_id} / {candidate.phase_id}: {reason}")
        self._fold(outcome.entry())
        return True

    def _rows_written_since(self, candidate: Candidate, since: Any) -> int:
        if not self.options.phase.telemetry_tables_present:
            return 0
        events = table_of(TokenEstimationV2Event)
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    sa.select(sa.func.count()).where(
                        events.c.run_id == candidate.run_id,
                        events.c.phase_id == candidate.phase_id,
                        events.c.created_at >= since,
                    )
                ).scalar_one()
            )

    def _give_back_in_flight(self) -> None:
        for flight in self._in_flight.values():
            flight.cancel.set()
            candidate = flight.candidate
            unclaim(
                self.engine,
                Claim(
                    candidate.run_id,
                    candidate.phase_id,
                    flight.worker,
                    self.session_id,
                    False,
                    previous_state=candidate.state,
                ),
            )
            self.progress.end(flight.candidate.key)
        self._in_flight.clear()

    # -- persistence and reporting -------------------------------------------------------------

    def _save(self, status: str) -> None:
        if self.options.dry_run:
            return
        save_session(
            self.engine,
            self.session_id,
            state=self.state.model_dump(mode="json"),
            status=status,
            stop_reason=self.state.stop_reason,
        )

    def report(self) -> DrainReport:
        entries = (
            self._dry_entries
            if self.options.dry_run
            else session_entries(self.engine, self.session_id)
        )
        return summarise(
            self.session_id,
            entries,
            kind=self.options.kind,
            telemetry_enabled=self.options.phase.telemetry_enabled,
            dry_run=self.options.dry_run,
            stopped_runs=dict(self.state.stopped_runs),
            skipped_phases=dict(self.state.skipped_phases),
            stop_reason=self.state.stop_reason,
            blocked_runs=dict(sorted(self._blocked_runs.items())[:MAX_BLOCKED_SHOWN]),
            max_total_tokens=self.options.limits.max_total_tokens,
        )


def replay_state(engine: Engine, session_id: str, limits: Limits, cached: Any) -> TriageState:
    """Rebuild a session's triage state from its results (the cache only keeps the clock)."""
    state = TriageState()
    if isinstance(cached, dict):
        state.elapsed_s = float(cached.get("elapsed_s") or 0.0)
        state.skipped_phases = dict(cached.get("skipped_phases") or {})
    for entry in session_entries(engine, session_id):
        state.apply(
            AttemptSummary.from_entry(entry),
            limits,
        )
    if isinstance(cached, dict):
        for run_id, reason in (cached.get("stopped_runs") or {}).items():
            state.stop_run(run_id, reason)
    return state
