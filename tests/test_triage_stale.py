"""`autopack triage stale`: which phases are stale, how they are reported and how they are failed."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import Session

import autopack.triage.stale as stale_module
from autopack.db.engine import Database, OpenMode, open_database
from autopack.db.identity import read_panel
from autopack.db.models import Phase, PhaseClaim, Run, Tier, table_of, utc_now
from autopack.errors import ConfigError, GuardError
from autopack.render.triage import format_age, format_threshold, write_stale_json
from autopack.seed.model import create_seed_run
from autopack.settings import build_target, resolve_target
from autopack.triage import (
    DEFAULT_STALE_HOURS,
    StaleKind,
    StalePhase,
    mark_stale_failed,
    stale_reason,
    stale_report,
    stale_threshold,
)
from tests.conftest import ORIGINAL_SCHEMA, CliRunner, reference_seed_spec

RUN = "telemetry-collection-v4"
P = [
    "telemetry-p1-string-util",
    "telemetry-p2-number-util",
    "telemetry-p3-list-util",
    "telemetry-p4-date-util",
    "telemetry-p5-dict-util",
    "telemetry-p6-string-tests",
    "telemetry-p7-number-tests",
    "telemetry-p8-list-tests",
    "telemetry-p9-readme",
    "telemetry-p10-file-util",
]
H48 = timedelta(hours=48)
PHASES = table_of(Phase)
CLAIMS = table_of(PhaseClaim)


# helpers ---------------------------------------------------------------------------------------


def _set(db: Database, phase_id: str, run_id: str = RUN, **values: Any) -> None:
    with db.engine.begin() as connection:
        connection.execute(
            sa.update(PHASES)
            .where(PHASES.c.run_id == run_id, PHASES.c.phase_id == phase_id)
            .values(**values)
        )


def _age(db: Database, phase_id: str, hours: float, run_id: str = RUN, **values: Any) -> None:
    """Make a phase last touched `hours` ago."""
    _set(db, phase_id, run_id, updated_at=utc_now() - timedelta(hours=hours), **values)


def _lease(
    db: Database,
    phase_id: str,
    *,
    expires_in_minutes: float,
    worker: str = "host-a:4242",
    session_id: str | None = "sess-1",
    run_id: str = RUN,
) -> None:
    """An EXECUTING phase with an autopack lease (expired if the minutes are negative)."""
    now = utc_now()
    _set(db, phase_id, run_id, state="EXECUTING", updated_at=now - timedelta(hours=1))
    with db.engine.begin() as connection:
        connection.execute(
            sa.insert(CLAIMS).values(
                run_id=run_id,
                phase_id=phase_id,
                session_id=session_id,
                worker=worker,
                claimed_at=now - timedelta(hours=1),
                heartbeat_at=now - timedelta(minutes=30),
                lease_expires_at=now + timedelta(minutes=expires_in_minutes),
            )
        )


def _row(db: Database, phase_id: str, run_id: str = RUN) -> sa.Row[Any]:
    with db.engine.connect() as connection:
        return connection.execute(
            sa.select(PHASES).where(PHASES.c.run_id == run_id, PHASES.c.phase_id == phase_id)
        ).one()


def _claims(db: Database) -> list[str]:
    with db.engine.connect() as connection:
        return [r.phase_id for r in connection.execute(sa.select(CLAIMS.c.phase_id))]


def _states(db: Database) -> dict[str, str]:
    with db.engine.connect() as connection:
        rows = connection.execute(sa.select(PHASES.c.phase_id, PHASES.c.state)).all()
    return {phase_id: state for phase_id, state in rows}


def _second_run(db: Database, run_id: str) -> None:
    spec = reference_seed_spec(RUN).model_copy(update={"run_id": run_id})
    create_seed_run(db.engine, spec)


def _json(result: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(result.stdout)
    return document


# the threshold ---------------------------------------------------------------------------------


def test_default_threshold_is_48_hours() -> None:
    assert DEFAULT_STALE_HOURS == 48
    assert stale_threshold() == H48
    assert stale_threshold(stale_hours=0.5) == timedelta(minutes=30)
    assert stale_threshold(max_age_minutes=90) == timedelta(minutes=90)


def test_both_threshold_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="give only one") as info:
        stale_threshold(stale_hours=48, max_age_minutes=30)
    assert info.value.exit_code == 2
    assert info.value.hint


@pytest.mark.parametrize(
    ("hours", "minutes", "message"),
    [
        (0.0, None, "positive number of hours"),
        (-3.0, None, "positive number of hours"),
        (float("nan"), None, "positive number of hours"),
        (float("inf"), None, "positive number of hours"),
        (1e-12, None, "too small"),
        (10_000_000.0, None, "largest threshold"),
        (None, 0, "at least 1"),
        (None, -5, "at least 1"),
        (None, 10**12, "largest threshold"),
    ],
)
def test_bad_thresholds_are_refused(hours: float | None, minutes: int | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        stale_threshold(stale_hours=hours, max_age_minutes=minutes)


# finding ---------------------------------------------------------------------------------------


def test_fresh_seed_run_has_nothing_stale(seed_db: Database) -> None:
    report = stale_report(seed_db, H48)
    assert report.stale.entries == []
    assert report.unleased.entries == []
    assert report.found is False
    assert report.query.leases_checked is True


def test_queued_phase_is_stale_strictly_past_the_threshold(seed_db: Database) -> None:
    now = datetime(2026, 1, 10, 12, 0, 0)
    _set(seed_db, P[0], updated_at=now - H48)  # exactly at the threshold: not stale
    _set(seed_db, P[1], updated_at=now - H48 - timedelta(microseconds=1))
    _set(seed_db, P[2], updated_at=now - H48 - timedelta(minutes=61, seconds=59))
    for phase_id in P[3:]:
        _set(seed_db, phase_id, updated_at=now - timedelta(hours=1))
    report = stale_report(seed_db, H48, now=now)
    assert [e.phase_id for e in report.stale.entries] == [P[2], P[1]]  # oldest first
    oldest, newest = report.stale.entries
    assert oldest.kind is StaleKind.QUEUED
    assert oldest.state == "QUEUED"
    assert oldest.age_minutes == 48 * 60 + 61  # whole minutes, rounded down
    assert newest.age_minutes == 48 * 60
    assert oldest.last_activity == now - H48 - timedelta(minutes=61, seconds=59)
    assert report.query.cutoff == now - H48


def test_an_aware_now_is_taken_as_utc(seed_db: Database) -> None:
    _age(seed_db, P[0], 50)
    aware = utc_now().replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=5)))
    report = stale_report(seed_db, H48, now=aware)
    assert [e.phase_id for e in report.stale.entries] == [P[0]]
    assert report.query.now.tzinfo is None


def test_only_queued_and_executing_phases_are_considered(seed_db: Database) -> None:
    for phase_id, state in zip(
        P[:5], ["FAILED", "COMPLETE", "GATE", "SKIPPED", "CI_RUNNING"], strict=True
    ):
        _age(seed_db, phase_id, 500, state=state)
    assert stale_report(seed_db, H48).found is False


def test_expired_live_and_missing_leases(seed_db: Database) -> None:
    _lease(seed_db, P[0], expires_in_minutes=-5, worker="dead-host:1", session_id="s-dead")
    _lease(seed_db, P[1], expires_in_minutes=+5, worker="live-host:2")
    _age(seed_db, P[2], 72, state="EXECUTING")  # no lease, old: unleased
    _age(seed_db, P[3], 1, state="EXECUTING")  # no lease, recent: an original worker may run it
    report = stale_report(seed_db, H48)
    assert [(e.phase_id, e.kind) for e in report.stale.entries] == [(P[0], StaleKind.LEASE_EXPIRED)]
    expired = report.stale.entries[0]
    assert expired.state == "EXECUTING"
    assert expired.worker == "dead-host:1"
    assert expired.session_id == "s-dead"
    assert expired.lease_expires_at is not None
    assert expired.lease_expires_at < report.query.now
    assert expired.age_minutes == 30  # since the last heartbeat
    assert [(e.phase_id, e.kind) for e in report.unleased.entries] == [(P[2], StaleKind.UNLEASED)]
    assert report.unleased.entries[0].age_minutes == 72 * 60


def test_an_expired_lease_is_stale_whatever_the_threshold(seed_db: Database) -> None:
    _lease(seed_db, P[0], expires_in_minutes=-1)
    report = stale_report(seed_db, timedelta(days=3000))
    assert [e.kind for e in report.stale.entries] == [StaleKind.LEASE_EXPIRED]


def test_runs_in_order_then_oldest_first_with_leases_merged(seed_db: Database) -> None:
    _second_run(seed_db, "aaa-earlier-run")
    _age(seed_db, P[0], 100)
    _age(seed_db, P[1], 300)
    _lease(seed_db, P[2], expires_in_minutes=-10)  # heartbeat 30 minutes ago: newest
    _age(seed_db, P[4], 60, run_id="aaa-earlier-run")
    _age(seed_db, P[5], 90, run_id="aaa-earlier-run")
    report = stale_report(seed_db, H48)
    assert [(e.run_id, e.phase_id) for e in report.stale.entries] == [
        ("aaa-earlier-run", P[5]),
        ("aaa-earlier-run", P[4]),
        (RUN, P[1]),
        (RUN, P[0]),
        (RUN, P[2]),
    ]
    assert (report.stale.count, report.stale.runs) == (5, 2)
    assert report.stale.by_kind == {StaleKind.QUEUED: 4, StaleKind.LEASE_EXPIRED: 1}
    first = stale_report(seed_db, H48, keep=2)
    assert [e.phase_id for e in first.stale.entries] == [P[5], P[4]]
    assert (first.stale.count, first.stale.runs, first.stale.hidden) == (5, 2, 3)


def test_keep_reads_the_first_entries_in_report_order(seed_db: Database) -> None:
    for index, phase_id in enumerate(P):
        _age(seed_db, phase_id, 100 + index)
    report = stale_report(seed_db, H48, keep=3)
    assert [e.phase_id for e in report.stale.entries] == [P[9], P[8], P[7]]
    assert (report.stale.count, report.stale.hidden, report.stale.complete) == (10, 7, False)
    assert len(stale_report(seed_db, H48).stale.entries) == 10
    assert stale_report(seed_db, H48, keep=0).stale.entries == []
    assert report.unleased.entries == []


def test_counted_lists_match_the_lists_read_in_full(seed_db: Database) -> None:
    _second_run(seed_db, "other-run")
    for phase_id in P[:4]:
        _age(seed_db, phase_id, 60)
    _age(seed_db, P[0], 70, run_id="other-run")
    _lease(seed_db, P[5], expires_in_minutes=-3)
    _age(seed_db, P[6], 80, state="EXECUTING")
    _age(seed_db, P[7], 80, state="EXECUTING", run_id="other-run")
    counted = stale_report(seed_db, H48, keep=2)
    full = stale_report(seed_db, H48, now=counted.query.now)
    for mine, theirs in ((counted.stale, full.stale), (counted.unleased, full.unleased)):
        assert (mine.count, mine.runs, mine.by_kind) == (theirs.count, theirs.runs, theirs.by_kind)
        assert mine.entries == theirs.entries[:2]
    assert counted.stale.by_kind == {StaleKind.QUEUED: 5, StaleKind.LEASE_EXPIRED: 1}
    assert (counted.stale.count, counted.stale.runs, counted.stale.hidden) == (6, 2, 4)
    assert (counted.unleased.count, counted.unleased.runs) == (2, 2)
    assert [e.run_id for e in full.unleased.entries] == ["other-run", RUN]
    nothing = stale_report(seed_db, timedelta(days=3000), keep=5).unleased
    assert (nothing.count, nothing.runs, nothing.entries) == (0, 0, [])


def test_marking_needs_a_report_read_in_full(seed_db: Database) -> None:
    _age(seed_db, P[0], 50)
    with pytest.raises(ValueError, match="read in full"):
        mark_stale_failed(seed_db, stale_report(seed_db, H48, keep=0))
    assert _states(seed_db)[P[0]] == "QUEUED"


def _nullable_updated_at_db(path: Path) -> None:
    """An original-schema DB whose phases.updated_at may be NULL (created_at then counts)."""
    schema = ORIGINAL_SCHEMA.read_text()
    start = schema.index("CREATE TABLE phases (")
    end = schema.index(");", start)
    block = schema[start:end].replace("updated_at DATETIME NOT NULL", "updated_at DATETIME")
    assert block != schema[start:end]
    connection = sqlite3.connect(path)
    connection.executescript(schema[:start] + block + schema[end:])
    connection.execute(
        "INSERT INTO runs (id, state, created_at, updated_at, safety_profile, run_scope, token_cap,"
        " max_phases, max_duration_minutes, tokens_used, ci_runs_used, minor_issues_count, "
        "major_issues_count, promotion_eligible_to_main) VALUES ('r', 'RUN_CREATED', "
        "'2025-12-20 09:00:00', '2025-12-20 09:00:00', 'normal', 'multi_tier', 1, 1, 1, 0, 0, 0,"
        " 0, 'false')"
    )
    connection.execute(
        "INSERT INTO tiers (tier_id, run_id, tier_index, name, state, max_major_issues_tolerated,"
        " tokens_used, ci_runs_used, minor_issues_count, major_issues_count, cleanliness, "
        "created_at, updated_at) VALUES ('T1', 'r', 0, 'T', 'PENDING', 0, 0, 0, 0, 0, 'clean', "
        "'2025-12-20 09:00:00', '2025-12-20 09:00:00')"
    )
    old, recent = "2020-01-01 00:00:00", utc_now().strftime("%Y-%m-%d %H:%M:%S")
    rows = [
        ("by-created", "QUEUED", old, None),  # no updated_at, old created_at: stale
        ("by-created-new", "QUEUED", recent, None),  # no updated_at, recent: fresh
        ("updated-recently", "QUEUED", old, recent),  # updated_at wins over created_at
        ("exec-by-created", "EXECUTING", old, None),  # no lease table: unleased
    ]
    for index, (phase_id, state, created, updated) in enumerate(rows):
        connection.execute(
            "INSERT INTO phases (phase_id, run_id, tier_id, phase_index, name, state, "
            "builder_attempts, auditor_attempts, tokens_used, minor_issues_count, "
            "major_issues_count, issue_state, quality_blocked, retry_attempt, revision_epoch, "
            "escalation_level, created_at, updated_at) VALUES (?, 'r', 1, ?, 'n', ?, 0, 0, 0, 0,"
            " 0, 'no_issues', 0, 0, 0, 0, ?, ?)",
            (phase_id, index, state, created, updated),
        )
    connection.commit()
    connection.close()


def test_created_at_stands_in_for_an_empty_updated_at(workdir: Path) -> None:
    path = workdir / "nullable.db"
    _nullable_updated_at_db(path)
    target = build_target(f"sqlite:///{path}", source="test", cwd=workdir)
    with open_database(target, OpenMode.READ_WRITE) as db:
        report = stale_report(db, H48)
        assert report.query.updated_at_nullable is True
        assert report.query.leases_checked is False
        assert [e.phase_id for e in report.stale.entries] == ["by-created"]
        assert report.stale.entries[0].last_activity == datetime(2020, 1, 1)
        assert [e.phase_id for e in report.unleased.entries] == ["exec-by-created"]
        result = mark_stale_failed(db, report, include_unleased=True)
        assert [e.phase_id for e in result.marked] == ["by-created", "exec-by-created"]
        assert _states(db) == {
            "by-created": "FAILED",
            "by-created-new": "QUEUED",
            "updated-recently": "QUEUED",
            "exec-by-created": "FAILED",
        }


# marking ---------------------------------------------------------------------------------------


def test_marking_fails_stale_phases_and_keeps_the_old_reason(seed_db: Database) -> None:
    _age(seed_db, P[0], 50, last_failure_reason="TOKEN_ESCALATION")
    _age(seed_db, P[1], 60)
    before = _row(seed_db, P[2])
    report = stale_report(seed_db, H48)
    result = mark_stale_failed(seed_db, report)
    assert [e.phase_id for e in result.marked] == [P[1], P[0]]
    assert result.skipped == []
    first = _row(seed_db, P[0])
    assert first.state == "FAILED"
    assert first.last_failure_reason.startswith("[STALE] QUEUED for 3000 minutes")
    assert first.last_failure_reason.endswith("; previous: TOKEN_ESCALATION")
    assert "threshold 2880 minutes" in first.last_failure_reason
    assert first.updated_at == result.marked_at
    assert result.reasons[first.id] == first.last_failure_reason
    second = _row(seed_db, P[1])
    assert second.state == "FAILED"
    assert "previous" not in second.last_failure_reason
    assert _row(seed_db, P[2]) == before  # untouched


def test_marking_releases_the_expired_lease(seed_db: Database) -> None:
    _lease(seed_db, P[0], expires_in_minutes=-5, worker="dead:1")
    _lease(seed_db, P[1], expires_in_minutes=+30, worker="live:2")
    result = mark_stale_failed(seed_db, stale_report(seed_db, H48))
    assert [e.phase_id for e in result.marked] == [P[0]]
    assert result.released_claims == 1
    assert _claims(seed_db) == [P[1]]
    marked = _row(seed_db, P[0])
    assert marked.state == "FAILED"
    assert "lease of worker dead:1 expired" in marked.last_failure_reason
    assert _row(seed_db, P[1]).state == "EXECUTING"


def test_unleased_phases_are_marked_only_when_asked(seed_db: Database) -> None:
    _age(seed_db, P[0], 100, state="EXECUTING", last_failure_reason="EXCEPTION: boom")
    report = stale_report(seed_db, H48)
    assert mark_stale_failed(seed_db, report).marked == []
    assert _row(seed_db, P[0]).state == "EXECUTING"
    result = mark_stale_failed(seed_db, report, include_unleased=True)
    assert [e.phase_id for e in result.marked] == [P[0]]
    reason = _row(seed_db, P[0]).last_failure_reason
    assert reason.startswith("[STALE] EXECUTING for 6000 minutes without a lease")
    assert reason.endswith("; previous: EXCEPTION: boom")


def test_phases_changed_after_the_report_are_skipped(seed_db: Database) -> None:
    _age(seed_db, P[0], 50)  # will be touched again
    _age(seed_db, P[1], 50, last_failure_reason="old")  # will get a newer reason
    _age(seed_db, P[2], 50)  # will be claimed by a worker
    _lease(seed_db, P[3], expires_in_minutes=-1, worker="slow:1")  # will renew its lease
    _lease(seed_db, P[4], expires_in_minutes=-1, worker="gone:1")  # will finish meanwhile
    _age(seed_db, P[5], 50)  # stays stale
    report = stale_report(seed_db, H48)
    assert report.count == 6
    _set(seed_db, P[0], updated_at=utc_now())
    _set(seed_db, P[1], last_failure_reason="TOKEN_ESCALATION")
    _set(seed_db, P[2], state="EXECUTING")
    with seed_db.engine.begin() as connection:
        connection.execute(
            sa.update(CLAIMS)
            .where(CLAIMS.c.phase_id == P[3])
            .values(lease_expires_at=utc_now() + timedelta(minutes=10))
        )
    _set(seed_db, P[4], state="COMPLETE")
    result = mark_stale_failed(seed_db, report)
    assert [e.phase_id for e in result.marked] == [P[5]]
    assert sorted(e.phase_id for e in result.skipped) == sorted(P[:5])
    assert result.released_claims == 1  # P[4]'s expired lease; P[3]'s renewed one is kept
    assert _claims(seed_db) == [P[3]]
    assert _row(seed_db, P[1]).last_failure_reason == "TOKEN_ESCALATION"
    states = _states(seed_db)
    assert [states[p] for p in P[:6]] == [
        "QUEUED",
        "QUEUED",
        "EXECUTING",
        "EXECUTING",
        "COMPLETE",
        "FAILED",
    ]


def test_marking_is_one_transaction(seed_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    for phase_id in P[:4]:
        _age(seed_db, phase_id, 50)
    _lease(seed_db, P[4], expires_in_minutes=-5)
    report = stale_report(seed_db, H48)
    monkeypatch.setattr(stale_module, "MARK_CHUNK", 2)
    calls: list[int] = []

    def progress(done: int) -> None:
        calls.append(done)
        if done == 5:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        mark_stale_failed(seed_db, report, progress=progress)
    assert calls == [2, 4, 5]
    assert set(_states(seed_db).values()) == {"QUEUED", "EXECUTING"}  # nothing kept
    assert _claims(seed_db) == [P[4]]
    result = mark_stale_failed(seed_db, report, progress=calls.append)
    assert len(result.marked) == 5
    assert calls[-3:] == [2, 4, 5]


def test_marking_needs_a_writable_database(seed_db: Database) -> None:
    _age(seed_db, P[0], 50)
    with open_database(resolve_target("seed", None), OpenMode.READ_ONLY) as read_only:
        report = stale_report(read_only, H48)
        with pytest.raises(GuardError, match="read-only"):
            mark_stale_failed(read_only, report)
    assert _row(seed_db, P[0]).state == "QUEUED"


def test_reason_texts() -> None:
    entry = stale_module.StalePhase(
        pk=1,
        run_id="r",
        phase_id="p",
        state="EXECUTING",
        kind=StaleKind.LEASE_EXPIRED,
        last_activity=datetime(2026, 1, 1, 10, 0),
        age_minutes=95,
        last_failure_reason=None,
        worker="w:1",
        session_id=None,
        lease_expires_at=datetime(2026, 1, 1, 10, 5, 30),
        document="{}",
    )
    assert stale_reason(entry, H48) == (
        "[STALE] EXECUTING, but the lease of worker w:1 expired at 2026-01-01 10:05:30 UTC "
        "(last heartbeat 95 minutes before triage); worker presumed dead"
    )
    queued = entry._replace(kind=StaleKind.QUEUED, state="QUEUED", last_failure_reason="x")
    assert stale_reason(queued, timedelta(minutes=90)) == (
        "[STALE] QUEUED for 95 minutes without progress (last touched 2026-01-01 10:00:00 UTC; "
        "threshold 90 minutes); previous: x"
    )


# rendering -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minutes", "text"), [(0, "0m"), (59, "59m"), (60, "1h 0m"), (1499, "1d 0h"), (3000, "2d 2h")]
)
def test_format_age(minutes: int, text: str) -> None:
    assert format_age(minutes) == text


@pytest.mark.parametrize(
    ("threshold", "text"),
    [
        (H48, "48h"),
        (timedelta(minutes=90), "1.5h"),
        (timedelta(minutes=30), "30 min"),
        (timedelta(minutes=61), "61 min"),
    ],
)
def test_format_threshold(threshold: timedelta, text: str) -> None:
    assert format_threshold(threshold) == text


def test_the_json_document_holds_the_db_written_entries_as_they_are(seed_db: Database) -> None:
    _age(seed_db, P[0], 50, last_failure_reason='é€ 😀 "quoted"\nline')
    _age(seed_db, P[1], 60, state="EXECUTING")
    report = stale_report(seed_db, H48, keep=0, documents=True)
    out = io.StringIO()
    write_stale_json(report, read_panel(seed_db).target, out=out)
    document = json.loads(out.getvalue())
    assert list(document) == [
        "target",
        "mode",
        "now",
        "threshold_minutes",
        "cutoff",
        "leases_checked",
        "stale",
        "count",
        "runs",
        "unleased",
        "unleased_count",
        "marked_count",
        "skipped_count",
        "released_claims",
    ]
    assert document["stale"][0]["last_failure_reason"] == 'é€ 😀 "quoted"\nline'
    assert "é€ 😀" in out.getvalue()  # UTF-8 as the DB wrote it, not re-escaped
    assert (document["count"], document["unleased_count"]) == (1, 1)


# the command -----------------------------------------------------------------------------------


def test_report_lists_stale_phases_by_run_and_exits_1(cli: CliRunner, seed_db: Database) -> None:
    _age(seed_db, P[0], 50, last_failure_reason="[weird] TOKEN_ESCALATION")
    _lease(seed_db, P[1], expires_in_minutes=-5, worker="dead-host:9")
    _age(seed_db, P[2], 49, state="EXECUTING")
    result = cli("triage", "stale", "--db", "seed", "--report-only")
    assert result.exit_code == 1, result.stderr
    # The panel on stderr, before acting; the report on stdout.
    assert "target database" in result.stderr
    assert "autopack_telemetry_seed.db" in result.stderr
    assert "stale phase" not in result.stderr
    err = result.stdout
    assert "2 stale phases in 1 run" in err
    assert "1 QUEUED untouched for over 48h" in err
    assert "1 EXECUTING with an expired lease" in err
    assert P[0] in err
    assert P[1] in err
    assert "dead-host:9" in err
    assert "[weird] TOKEN_ESCALATION" in err  # data is never read as markup
    assert "1 EXECUTING phase without a lease" in err
    assert P[2] in err
    assert "--mark-failed" in err
    assert _states(seed_db)[P[0]] == "QUEUED"


def test_report_with_nothing_stale_exits_0(cli: CliRunner, seed_db: Database) -> None:
    result = cli("triage", "stale", "--db", "seed")
    assert result.exit_code == 0, result.stderr
    assert "no stale phases" in result.stdout
    quiet = cli("triage", "stale", "--db", "seed", "--quiet")
    assert quiet.exit_code == 0
    assert "target database" not in quiet.stderr


def test_report_does_not_touch_the_file(cli: CliRunner, seed_db: Database, workdir: Path) -> None:
    _age(seed_db, P[0], 50)
    seed_db.close()
    path = workdir / "autopack_telemetry_seed.db"
    # A rollback-journal DB: a read-only open of a WAL DB makes SQLite's own -shm/-wal files.
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=DELETE")
    connection.close()
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    files = sorted(p.name for p in workdir.iterdir())
    assert cli("triage", "stale", "--db", "seed", "--json").exit_code == 1
    assert cli("triage", "stale", "--db", "seed").exit_code == 1
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in workdir.iterdir()) == files


def test_show_limits_the_table(cli: CliRunner, seed_db: Database) -> None:
    for index, phase_id in enumerate(P):
        _age(seed_db, phase_id, 100 + index)
    result = cli("triage", "stale", "--db", "seed", "--show", "3")
    assert result.exit_code == 1
    assert "… and 7 more phases" in result.stdout
    assert P[9] in result.stdout
    assert P[0] not in result.stdout
    everything = cli("triage", "stale", "--db", "seed", "--show", "0")
    assert all(p in everything.stdout for p in P)
    assert "more phase" not in everything.stdout


def test_json_document(cli: CliRunner, seed_db: Database) -> None:
    _age(seed_db, P[0], 50, last_failure_reason="TOKEN_ESCALATION")
    _lease(seed_db, P[1], expires_in_minutes=-5, worker="dead:1", session_id="s-1")
    _age(seed_db, P[2], 60, state="EXECUTING")
    result = cli("triage", "stale", "--db", "seed", "--json", "--stale-hours", "48")
    assert result.exit_code == 1, result.stderr
    assert "target database" not in result.stderr  # the panel is in the JSON instead
    doc = _json(result)
    assert doc["target"]["path"].endswith("autopack_telemetry_seed.db")
    assert doc["target"]["read_only"] is True
    assert doc["mode"] == "report"
    assert doc["threshold_minutes"] == 2880
    assert doc["leases_checked"] is True
    assert doc["count"] == 2
    assert doc["runs"] == 1
    assert doc["unleased_count"] == 1
    assert (doc["marked_count"], doc["skipped_count"], doc["released_claims"]) == (0, 0, 0)
    now = datetime.fromisoformat(doc["now"])
    assert datetime.fromisoformat(doc["cutoff"]) == now - H48
    queued, expired = doc["stale"]
    assert queued == {
        "run_id": RUN,
        "phase_id": P[0],
        "state": "QUEUED",
        "kind": "queued",
        "age_minutes": 3000,
        "last_activity": queued["last_activity"],
        "last_failure_reason": "TOKEN_ESCALATION",
        "worker": None,
        "session_id": None,
        "lease_expires_at": None,
        "marked": False,
        "new_reason": None,
    }
    assert datetime.fromisoformat(queued["last_activity"]).utcoffset() == timedelta(0)
    assert expired["kind"] == "lease_expired"
    assert expired["state"] == "EXECUTING"
    assert expired["worker"] == "dead:1"
    assert expired["session_id"] == "s-1"
    assert datetime.fromisoformat(expired["lease_expires_at"]) < now
    (unleased,) = doc["unleased"]
    assert (unleased["phase_id"], unleased["kind"], unleased["age_minutes"]) == (
        P[2],
        "unleased",
        3600,
    )


def test_json_with_nothing_stale(cli: CliRunner, seed_db: Database) -> None:
    result = cli("triage", "stale", "--db", "seed", "--json", "--max-age-minutes", "5")
    assert result.exit_code == 0
    doc = _json(result)
    assert (doc["stale"], doc["count"], doc["unleased"], doc["unleased_count"]) == ([], 0, [], 0)
    assert doc["threshold_minutes"] == 5


def test_max_age_minutes_sets_the_threshold(cli: CliRunner, seed_db: Database) -> None:
    _age(seed_db, P[0], 2)  # 120 minutes
    assert cli("triage", "stale", "--db", "seed", "--max-age-minutes", "150").exit_code == 0
    assert cli("triage", "stale", "--db", "seed", "--max-age-minutes", "90").exit_code == 1
    assert cli("triage", "stale", "--db", "seed", "--stale-hours", "1.5").exit_code == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stale-hours", "48", "--max-age-minutes", "30"], "give only one"),
        (["--stale-hours", "0"], "positive number of hours"),
        (["--stale-hours", "-2"], "positive number of hours"),
        (["--max-age-minutes", "0"], "at least 1"),
        (["--report-only", "--mark-failed"], "contradict"),
        (["--include-unleased"], "only applies to --mark-failed"),
        (["--show", "-1"], "--show must be 0"),
    ],
)
def test_bad_options_are_refused(
    cli: CliRunner, seed_db: Database, args: list[str], message: str
) -> None:
    _age(seed_db, P[0], 50)
    result = cli("triage", "stale", "--db", "seed", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert _states(seed_db)[P[0]] == "QUEUED"


def test_non_numbers_are_usage_errors(cli: CliRunner, seed_db: Database) -> None:
    result = cli("triage", "stale", "--db", "seed", "--stale-hours", "two-days")
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr


def test_empty_database_is_refused_unless_allowed(cli: CliRunner) -> None:
    assert cli("db", "init", "--db", "legacy").exit_code == 0
    result = cli("triage", "stale", "--db", "legacy")
    assert result.exit_code == 2
    assert "is empty (0 runs, 0 phases)" in result.stderr
    assert "--allow-empty-db" in result.stderr
    allowed = cli("triage", "stale", "--db", "legacy", "--allow-empty-db", "--json")
    assert allowed.exit_code == 0
    assert _json(allowed)["count"] == 0


def test_missing_database_is_refused_and_not_created(cli: CliRunner, workdir: Path) -> None:
    result = cli("triage", "stale", "--db", "legacy", "--mark-failed", "--yes")
    assert result.exit_code == 2
    assert "no database file" in result.stderr
    assert not (workdir / "autopack_legacy.db").exists()
    assert cli("triage", "stale").exit_code == 2  # no target at all


def test_mark_failed_without_a_terminal_is_refused(cli: CliRunner, seed_db: Database) -> None:
    _age(seed_db, P[0], 50)
    result = cli("triage", "stale", "--db", "seed", "--mark-failed")
    assert result.exit_code == 2
    assert P[0] in result.stdout  # the report came first
    assert "no terminal is attached" in result.stderr
    assert "--yes" in result.stderr
    assert _states(seed_db)[P[0]] == "QUEUED"


def test_mark_failed_asks_on_a_terminal(cli: CliRunner, seed_db: Database) -> None:
    _age(seed_db, P[0], 50)
    declined = cli("triage", "stale", "--db", "seed", "--mark-failed", stdin="n\n", tty=True)
    assert declined.exit_code == 2
    assert "Mark 1 stale phase FAILED in sqlite:///" in declined.stderr  # the question
    assert "cancelled; nothing was changed" in declined.stderr
    assert _states(seed_db)[P[0]] == "QUEUED"
    accepted = cli("triage", "stale", "--db", "seed", "--mark-failed", stdin="y\n", tty=True)
    assert accepted.exit_code == 1
    assert _states(seed_db)[P[0]] == "FAILED"


def test_mark_failed_with_yes(cli: CliRunner, seed_db: Database) -> None:
    _age(seed_db, P[0], 50, last_failure_reason="TOKEN_ESCALATION")
    _lease(seed_db, P[1], expires_in_minutes=-5)
    _age(seed_db, P[2], 60, state="EXECUTING")
    result = cli("triage", "stale", "--db", "seed", "--mark-failed", "--yes")
    assert result.exit_code == 1, result.stderr
    assert "marked 2 phases FAILED" in result.stdout
    assert "released 1 expired lease" in result.stdout
    assert "not marked: 1 EXECUTING phase without a lease" in result.stdout
    states = _states(seed_db)
    assert (states[P[0]], states[P[1]], states[P[2]]) == ("FAILED", "FAILED", "EXECUTING")
    assert _row(seed_db, P[0]).last_failure_reason.endswith("; previous: TOKEN_ESCALATION")
    assert _claims(seed_db) == []
    again = cli("triage", "stale", "--db", "seed", "--mark-failed", "--yes", "--json")
    assert again.exit_code == 1  # the unleased phase is still there
    doc = _json(again)
    assert (doc["count"], doc["unleased_count"], doc["marked_count"]) == (0, 1, 0)


def test_mark_failed_json_includes_unleased_when_asked(cli: CliRunner, seed_db: Database) -> None:
    _age(seed_db, P[0], 50)
    _age(seed_db, P[2], 60, state="EXECUTING")
    result = cli(
        "triage", "stale", "--db", "seed", "--mark-failed", "--include-unleased", "--yes", "--json"
    )
    assert result.exit_code == 1, result.stderr
    doc = _json(result)
    assert doc["mode"] == "mark_failed"
    assert doc["target"]["read_only"] is False
    assert (doc["count"], doc["unleased_count"]) == (1, 1)
    assert (doc["marked_count"], doc["skipped_count"]) == (2, 0)
    assert doc["stale"][0]["marked"] is True
    assert doc["stale"][0]["new_reason"].startswith("[STALE] QUEUED for 3000 minutes")
    assert doc["unleased"][0]["marked"] is True
    assert doc["unleased"][0]["new_reason"].startswith("[STALE] EXECUTING for 3600 minutes")
    assert set(_states(seed_db).values()) == {"FAILED", "QUEUED"}
    assert cli("triage", "stale", "--db", "seed").exit_code == 0


def test_mark_failed_with_nothing_stale_asks_nothing(cli: CliRunner, seed_db: Database) -> None:
    result = cli("triage", "stale", "--db", "seed", "--mark-failed", "--json")
    assert result.exit_code == 0, result.stderr
    doc = _json(result)
    assert (doc["mode"], doc["count"], doc["marked_count"]) == ("mark_failed", 0, 0)


def test_mark_failed_refuses_a_read_only_file(cli: CliRunner, seed_db: Database, workdir) -> None:
    _age(seed_db, P[0], 50)
    seed_db.close()
    path = workdir / "autopack_telemetry_seed.db"
    path.chmod(0o444)
    try:
        result = cli("triage", "stale", "--db", "seed", "--mark-failed", "--yes")
        assert result.exit_code == 2
        assert "read-only" in result.stderr
        assert cli("triage", "stale", "--db", "seed").exit_code == 1  # reading still works
    finally:
        path.chmod(0o644)


def test_runbook_commands_on_an_original_legacy_db(
    cli: CliRunner, original_db: tuple[Path, dict[str, int]]
) -> None:
    path, _counts = original_db
    connection = sqlite3.connect(path)
    connection.execute("UPDATE phases SET state = 'EXECUTING' WHERE phase_id = 'phase-6'")
    connection.execute(
        "UPDATE phases SET last_failure_reason = 'TOKEN_ESCALATION' WHERE phase_id = 'phase-0'"
    )
    connection.commit()
    connection.close()

    report = cli("triage", "stale", "--db", "legacy", "--report-only")
    assert report.exit_code == 1, report.stderr
    assert "unstamped" in report.stderr
    assert "2 stale phases in 2 runs" in report.stdout
    assert "no autopack_phase_claims table" in report.stdout
    assert "1 EXECUTING phase without a lease" in report.stdout

    doc = _json(cli("triage", "stale", "--db", "legacy", "--json"))
    assert doc["leases_checked"] is False
    assert sorted(e["phase_id"] for e in doc["stale"]) == ["phase-0", "phase-1"]
    assert [e["phase_id"] for e in doc["unleased"]] == ["phase-6"]
    assert [e["run_id"] for e in doc["stale"]] == ["legacy-run-a", "legacy-run-b"]

    marked = cli(
        "triage", "stale", "--db", "legacy", "--mark-failed", "--stale-hours", "48", "--yes"
    )
    assert marked.exit_code == 1, marked.stderr
    connection = sqlite3.connect(path)
    rows = dict(
        connection.execute(
            "SELECT phase_id, state || ' ' || coalesce(last_failure_reason, '') FROM phases"
        ).fetchall()
    )
    connection.close()
    assert rows["phase-0"].startswith("FAILED [STALE] QUEUED for ")
    assert rows["phase-0"].endswith("; previous: TOKEN_ESCALATION")
    assert rows["phase-1"].startswith("FAILED [STALE]")
    assert rows["phase-6"] == "EXECUTING "  # unleased: not without --include-unleased
    assert rows["phase-5"] == "COMPLETE "
    assert re.search(r"threshold 2880 minutes", rows["phase-1"])


# the entries the DB writes -------------------------------------------------------------------------
#
# Each entry's JSON object is built by the DB (json_object / json_build_object). These tests
# hold it against the entry's values read as rows, encoded here independently, and check that
# every way of reading the report (in full, counted, texts only) agrees.


def _raw(db: Database, sql: str, *params: Any) -> None:
    """Write through plain sqlite3, to store text SQLAlchemy would never write."""
    path = db.target.sqlite_path
    assert path is not None
    connection = sqlite3.connect(path)
    connection.execute(sql, params)
    connection.commit()
    connection.close()


def _expected_document(entry: StalePhase) -> dict[str, Any]:
    """What the DB must write for `entry` (timestamps compared apart: see _checked_report)."""
    return {
        "run_id": entry.run_id,
        "phase_id": entry.phase_id,
        "state": entry.state,
        "kind": entry.kind.value,
        "age_minutes": entry.age_minutes,
        "last_failure_reason": entry.last_failure_reason,
        "worker": entry.worker,
        "session_id": entry.session_id,
        "marked": False,
        "new_reason": None,
    }


def _utc(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "+00:00"


def _checked_report(db: Database, now: datetime | None = None) -> dict[str, Any]:
    """The --json document, after checking the DB's texts against the rows, and every way of
    reading the report against the others."""
    full = stale_report(db, H48, now=now)
    now = full.query.now
    texts = stale_report(db, H48, now=now, keep=0, documents=True)
    counted = stale_report(db, H48, now=now, keep=3)
    for rows, only_texts, screen in (
        (full.stale, texts.stale, counted.stale),
        (full.unleased, texts.unleased, counted.unleased),
    ):
        assert (rows.count, rows.runs, rows.by_kind) == (
            only_texts.count,
            only_texts.runs,
            only_texts.by_kind,
        )
        assert (rows.count, rows.runs, rows.by_kind) == (screen.count, screen.runs, screen.by_kind)
        assert screen.entries == rows.entries[:3]
        written = [json.loads(f"[{text}]") for text in only_texts.documents]
        documents = [document for batch in written for document in batch]
        assert documents == [json.loads(entry.document) for entry in rows.entries]
        for entry, document in zip(rows.entries, documents, strict=True):
            last, expires = document.pop("last_activity"), document.pop("lease_expires_at")
            assert document == _expected_document(entry)
            assert last == _utc(entry.last_activity)
            assert expires == _utc(entry.lease_expires_at)
            assert entry.age_minutes == max(0, (now - entry.last_activity) // timedelta(minutes=1))
    out = io.StringIO()
    write_stale_json(texts, read_panel(db).target, out=out)
    written_document: dict[str, Any] = json.loads(out.getvalue())
    return written_document


def _mixed_backlog(db: Database, now: datetime) -> None:
    """Three runs, every kind, reasons that need escaping, timestamps with and without
    microseconds, a heartbeat after `now`, and phases that must not be listed."""
    _second_run(db, "run-b")
    _second_run(db, "run-c")
    minute = timedelta(minutes=1)
    for index, phase_id in enumerate(P[:6]):
        _set(
            db,
            phase_id,
            updated_at=now - H48 - (index + 1) * 7 * minute - timedelta(microseconds=index * 1234),
            last_failure_reason=[None, 'say "hi"\\', "line\nnext\ttab", "é€ 😀", "del\x7f", ""][
                index
            ],
        )
    _set(db, P[6], updated_at=now - H48)  # exactly at the cutoff: not stale
    _set(db, P[7], updated_at=now - H48 - timedelta(seconds=30), state="FAILED")
    _set(db, P[0], "run-b", updated_at=(now - 3 * H48).replace(microsecond=0))
    _set(db, P[1], "run-b", updated_at=now - 3 * H48, state="EXECUTING")  # unleased
    _lease(db, P[2], expires_in_minutes=-5, run_id="run-b", worker='w"1', session_id=None)
    _lease(db, P[8], expires_in_minutes=-1, worker="dead:2")
    _lease(db, P[9], expires_in_minutes=+5, worker="live:3")
    _lease(db, P[3], expires_in_minutes=-1, run_id="run-c", worker="gone:4")  # run-c: no QUEUED
    with db.engine.begin() as connection:  # a heartbeat after `now` (a clock ahead): age 0
        connection.execute(
            sa.update(CLAIMS)
            .where(CLAIMS.c.run_id == "run-c")
            .values(heartbeat_at=now + timedelta(minutes=3))
        )
    _set(db, P[4], "run-c", updated_at=now - 2 * H48, state="EXECUTING")  # unleased


def test_entries_of_every_kind_in_report_order(seed_db: Database) -> None:
    now = utc_now()
    _mixed_backlog(seed_db, now)
    document = _checked_report(seed_db, now)
    assert [(e["run_id"], e["phase_id"], e["kind"]) for e in document["stale"]] == [
        ("run-b", P[0], "queued"),
        ("run-b", P[2], "lease_expired"),
        ("run-c", P[3], "lease_expired"),
        *[(RUN, p, "queued") for p in reversed(P[:6])],
        (RUN, P[8], "lease_expired"),
    ]
    assert (document["count"], document["runs"], document["unleased_count"]) == (10, 3, 2)
    by_id = {(e["run_id"], e["phase_id"]): e for e in document["stale"]}
    assert by_id["run-c", P[3]]["age_minutes"] == 0
    assert by_id["run-b", P[2]]["worker"] == 'w"1'
    assert by_id[RUN, P[3]]["last_failure_reason"] == "é€ 😀"
    assert by_id[RUN, P[4]]["last_failure_reason"] == "del\x7f"
    assert by_id[RUN, P[5]]["last_failure_reason"] == ""
    zero = by_id["run-b", P[0]]["last_activity"]
    assert zero == (now - 3 * H48).replace(microsecond=0).isoformat() + "+00:00"
    full = stale_report(seed_db, H48, now=now)
    assert full.stale.by_kind == {StaleKind.QUEUED: 7, StaleKind.LEASE_EXPIRED: 3}


def test_without_expired_leases_the_queued_phases_stream_alone(seed_db: Database) -> None:
    now = utc_now()
    for index, phase_id in enumerate(P[:4]):
        _set(seed_db, phase_id, updated_at=now - H48 - timedelta(hours=index + 1))
    _lease(seed_db, P[5], expires_in_minutes=+5)  # a live lease: no lease_expired rows
    document = _checked_report(seed_db, now)
    assert [e["phase_id"] for e in document["stale"]] == [P[3], P[2], P[1], P[0]]


def test_a_long_list_is_read_in_batches(seed_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    now = utc_now()
    _mixed_backlog(seed_db, now)
    full = stale_report(seed_db, H48, now=now)
    monkeypatch.setattr(stale_module, "BATCH_ROWS", 2)
    texts = stale_report(seed_db, H48, now=now, keep=0, documents=True)
    assert len(texts.stale.documents) == 5  # ten entries, two to a string
    assert ",\n".join(texts.stale.documents) == ",\n".join(
        entry.document for entry in full.stale.entries
    )


@pytest.mark.parametrize(
    ("offset", "minutes"),
    [
        (timedelta(minutes=2881), 2881),
        (timedelta(minutes=2881) - timedelta(microseconds=1), 2880),
        (timedelta(minutes=2880, seconds=59, microseconds=999_999), 2880),
        (timedelta(minutes=2880, microseconds=1), 2880),
    ],
)
def test_ages_are_exact_whole_minutes(seed_db: Database, offset: timedelta, minutes: int) -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, 654_321)
    _set(seed_db, P[0], updated_at=now - offset)
    document = _checked_report(seed_db, now)
    assert [e["age_minutes"] for e in document["stale"]] == [minutes]


@pytest.mark.parametrize(
    ("stored", "written"),
    [
        ("2020-01-01T10:00:00", "2020-01-01T10:00:00.000+00:00"),  # a "T" between the two
        ("2020-01-01 10:00:00.5", "2020-01-01T10:00:00.500+00:00"),  # a short fraction
        ("2020-01-01 12:00:00+02:00", "2020-01-01T10:00:00.000+00:00"),  # an offset: UTC
        ("2020-01-01 10:00:00.123456+00:00", "2020-01-01T10:00:00.123+00:00"),
        ("2020-01-01 10:00:00.000000", "2020-01-01T10:00:00+00:00"),  # the storage form
        ("2020-01-01 10:00:00", "2020-01-01T10:00:00+00:00"),  # the storage form, no fraction
        ("2020-01-01 10:00:00.123456", "2020-01-01T10:00:00.123456+00:00"),
    ],
)
def test_timestamps_in_other_forms_are_read_by_sqlite(
    seed_db: Database, stored: str, written: str
) -> None:
    _set(seed_db, P[0], updated_at=utc_now() - 2 * H48)
    _raw(seed_db, "UPDATE phases SET updated_at = ? WHERE phase_id = ?", stored, P[0])
    _lease(seed_db, P[2], expires_in_minutes=-5)
    _raw(
        seed_db,
        "UPDATE autopack_phase_claims SET lease_expires_at = ? WHERE phase_id = ?",
        stored,
        P[2],
    )
    report = stale_report(seed_db, H48, keep=0, documents=True)
    (text,) = report.stale.documents
    queued, expired = json.loads(f"[{text}]")
    assert (queued["phase_id"], queued["last_activity"]) == (P[0], written)
    assert expired["lease_expires_at"] == written
    aged = report.query.now - datetime.fromisoformat(written).replace(tzinfo=None)
    assert queued["age_minutes"] == aged // timedelta(minutes=1)


def test_a_db_whose_updated_at_may_be_null(workdir: Path) -> None:
    path = workdir / "nullable.db"
    _nullable_updated_at_db(path)
    connection = sqlite3.connect(path)
    connection.execute(
        "UPDATE phases SET updated_at = '2020-06-01 00:00:00.250000' WHERE phase_id = 'by-created'"
    )
    connection.execute(
        "UPDATE phases SET created_at = '2019-01-01 00:00:00', updated_at = NULL "
        "WHERE phase_id = 'updated-recently'"
    )
    connection.commit()
    connection.close()
    target = build_target(f"sqlite:///{path}", source="test", cwd=workdir)
    with open_database(target, OpenMode.READ_ONLY) as db:
        query = stale_report(db, H48).query
        assert (query.updated_at_nullable, query.leases_checked) == (True, False)
        document = _checked_report(db)
    assert [e["phase_id"] for e in document["stale"]] == ["updated-recently", "by-created"]
    assert [e["phase_id"] for e in document["unleased"]] == ["exec-by-created"]


def test_an_original_db(original_db: tuple[Path, dict[str, int]]) -> None:
    path, _counts = original_db
    connection = sqlite3.connect(path)
    connection.execute("UPDATE phases SET state = 'EXECUTING' WHERE phase_id = 'phase-6'")
    connection.commit()
    connection.close()
    with open_database(resolve_target("legacy", None), OpenMode.READ_ONLY) as db:
        assert stale_report(db, H48).query.leases_checked is False
        document = _checked_report(db)
    assert [e["phase_id"] for e in document["stale"]] == ["phase-0", "phase-1"]


def test_the_report_loads_no_sqlalchemy(seed_db: Database, workdir: Path) -> None:
    _age(seed_db, P[0], 50)
    _lease(seed_db, P[1], expires_in_minutes=-5)
    seed_db.close()
    script = (
        "import sys\n"
        "from autopack.cli.app import main\n"
        "for args in (['--json'], ['--show', '0']):\n"
        "    code = main(['triage', 'stale', '--db', 'seed', *args])\n"
        "    assert code == 1, code\n"
        "print('sqlalchemy' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True, check=True
    )
    assert result.stderr.strip().splitlines()[-1] == "False"
    document, end = json.JSONDecoder().raw_decode(result.stdout)
    assert document["count"] == 2
    assert P[0] in result.stdout[end:]  # then the --show 0 report, on stdout too


# PostgreSQL ------------------------------------------------------------------------------------


def test_report_and_mark_on_postgres(cli: CliRunner, postgres_url: str, workdir: Path) -> None:
    assert cli("db", "init", "--database-url", postgres_url, "--role", "legacy").exit_code == 0
    target = build_target(postgres_url, source="test", cwd=workdir)
    now = utc_now()
    with open_database(target, OpenMode.READ_WRITE) as db:
        with Session(db.engine) as session:
            for run_id in ("pg-b", "pg-a"):
                session.add(Run(id=run_id, state="PHASE_EXECUTION"))
                tier = Tier(tier_id="T1", run_id=run_id, tier_index=0, name="T")
                session.add(tier)
                session.flush()
                assert tier.id is not None
                for index, (state, hours, reason) in enumerate(
                    [
                        ("QUEUED", 50, "TOKEN_ESCALATION"),
                        ("QUEUED", 1, None),
                        ("EXECUTING", 1, None),
                        ("EXECUTING", 100, None),
                        ("FAILED", 500, "x"),
                    ]
                ):
                    session.add(
                        Phase(
                            phase_id=f"p{index}",
                            run_id=run_id,
                            tier_id=tier.id,
                            phase_index=index,
                            name="p",
                            state=state,
                            last_failure_reason=reason,
                            created_at=now - timedelta(hours=hours),
                            updated_at=now - timedelta(hours=hours),
                        )
                    )
            session.commit()
        with db.engine.begin() as connection:
            connection.execute(
                sa.insert(CLAIMS).values(
                    run_id="pg-a",
                    phase_id="p2",
                    worker="dead:1",
                    claimed_at=now - timedelta(hours=1),
                    heartbeat_at=now - timedelta(minutes=20),
                    lease_expires_at=now - timedelta(minutes=5),
                )
            )

    report = cli("triage", "stale", "--database-url", postgres_url, "--json")
    assert report.exit_code == 1, report.stderr
    doc = _json(report)
    assert doc["target"]["backend"] == "postgresql"
    assert [(e["run_id"], e["phase_id"], e["kind"]) for e in doc["stale"]] == [
        ("pg-a", "p0", "queued"),
        ("pg-a", "p2", "lease_expired"),
        ("pg-b", "p0", "queued"),
    ]
    assert doc["stale"][0]["age_minutes"] == 3000
    assert [(e["run_id"], e["phase_id"]) for e in doc["unleased"]] == [
        ("pg-a", "p3"),
        ("pg-b", "p3"),
    ]
    assert (doc["count"], doc["runs"], doc["unleased_count"]) == (3, 2, 2)
    human = cli("triage", "stale", "--database-url", postgres_url, "--show", "2")
    assert human.exit_code == 1, human.stderr
    assert "3 stale phases in 2 runs: 2 QUEUED" in human.stdout
    assert "… and 1 more phase " in human.stdout
    assert "2 EXECUTING phases without a lease in 2 runs" in human.stdout

    marked = cli("triage", "stale", "--database-url", postgres_url, "--mark-failed", "--yes")
    assert marked.exit_code == 1, marked.stderr
    assert "marked 3 phases FAILED" in marked.stdout
    with open_database(target, OpenMode.READ_ONLY) as db, db.engine.connect() as connection:
        rows = connection.execute(
            sa.select(
                PHASES.c.run_id, PHASES.c.phase_id, PHASES.c.state, PHASES.c.last_failure_reason
            ).order_by(PHASES.c.run_id, PHASES.c.phase_id)
        ).all()
        claims = connection.execute(sa.select(sa.func.count()).select_from(CLAIMS)).scalar()
    states = {(r.run_id, r.phase_id): r.state for r in rows}
    assert states == {
        ("pg-a", "p0"): "FAILED",
        ("pg-a", "p1"): "QUEUED",
        ("pg-a", "p2"): "FAILED",
        ("pg-a", "p3"): "EXECUTING",
        ("pg-a", "p4"): "FAILED",
        ("pg-b", "p0"): "FAILED",
        ("pg-b", "p1"): "QUEUED",
        ("pg-b", "p2"): "EXECUTING",
        ("pg-b", "p3"): "EXECUTING",
        ("pg-b", "p4"): "FAILED",
    }
    reasons = {(r.run_id, r.phase_id): r.last_failure_reason for r in rows}
    assert reasons[("pg-a", "p0")].endswith("; previous: TOKEN_ESCALATION")
    assert reasons[("pg-a", "p4")] == "x"
    assert claims == 0

    after = cli(
        "triage",
        "stale",
        "--database-url",
        postgres_url,
        "--mark-failed",
        "--include-unleased",
        "--yes",
        "--json",
    )
    assert after.exit_code == 1
    assert _json(after)["marked_count"] == 2
    assert cli("triage", "stale", "--database-url", postgres_url).exit_code == 0
