"""The one table-fitting rule (autopack/render/fit.py) and the drain's rates per hour."""

from __future__ import annotations

import io
import time

import pytest
from rich.cells import cell_len
from rich.console import Console, RenderableType

from autopack.drain.progress import DrainProgress
from autopack.drain.report import per_hour, summarise
from autopack.environment import Environment
from autopack.render.drain import show_drain_report
from autopack.render.drain_live import _Panel, status_line
from autopack.render.fit import Column, Row, fit_table

RUN = "telemetry-collection-v4"
PHASES = ["telemetry-p6-string-tests", "telemetry-p10-file-util", "telemetry-p1-string-util"]
SESSION = "85869d20df30484b960314415ed7377d"
REASON = (
    "refused to write 'shared/out.py': it is outside the phase's scope paths "
    "(examples/telemetry_utils)"
)


def render(renderable: RenderableType, width: int) -> list[str]:
    """What a terminal `width` cells wide shows (Rich's recording console, no colour)."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


def assert_reads(lines: list[str], width: int, ids: list[str]) -> None:
    """No line wider than the terminal, nothing cut with "…", every id whole on one line."""
    assert all(cell_len(line) <= width for line in lines), "\n".join(lines)
    assert not any("…" in line for line in lines), "\n".join(lines)
    for value in ids:
        assert any(value in line for line in lines), (value, "\n".join(lines))


COLUMNS = (
    Column("run", "id"),
    Column("phase", "id"),
    Column("outcome", "id"),
    Column("state", "id", priority=2),
    Column("telemetry", justify="right", priority=1),
    Column("reason", "text", priority=3),
)
ROWS = [(RUN, phase, "complete", "COMPLETE", "1", "") for phase in PHASES]


def test_a_table_that_fits_shows_every_column_and_every_id_whole() -> None:
    lines = render(fit_table(COLUMNS, ROWS, width=120, title=f"session {SESSION}"), 120)
    assert_reads(lines, 120, [RUN, SESSION, *PHASES, "COMPLETE", "complete"])
    header = next(line for line in lines if "phase" in line and "run" in line)
    for column in COLUMNS:
        assert column.header in header


def test_when_room_is_short_the_lowest_priority_columns_go_first() -> None:
    rows = [(RUN, phase, "complete", "COMPLETE", "1", "a short note") for phase in PHASES]
    lines = render(fit_table(COLUMNS, rows, width=95), 95)
    assert_reads(lines, 95, [RUN, *PHASES, "COMPLETE"])
    header = next(line for line in lines if "phase" in line)
    assert "telemetry" not in header  # priority 1: dropped first
    assert "state" in header
    assert "reason" in header
    narrow = render(fit_table(COLUMNS, rows, width=80), 80)
    assert_reads(narrow, 80, [RUN, *PHASES])
    header = next(line for line in narrow if "phase" in line)
    assert "state" not in header
    assert "reason" not in header


def test_an_empty_column_is_dropped_before_a_higher_priority_one() -> None:
    lines = render(fit_table(COLUMNS, ROWS, width=80), 80)
    header = next(line for line in lines if "phase" in line)
    assert "reason" not in header  # no row has a reason
    assert "state" in header


def test_rows_stack_as_records_when_the_essential_columns_do_not_fit() -> None:
    columns = [*COLUMNS[:3], Column("reason", "text")]  # the reason is never dropped
    rows = [(RUN, phase, "failed", REASON) for phase in PHASES]
    lines = render(fit_table(columns, rows, width=80), 80)
    assert_reads(lines, 80, [RUN, *PHASES, "failed", "refused to write"])
    records = [line for line in lines if line.startswith("phase ")]
    assert len(records) == len(PHASES)
    assert not any("┃" in line or "│" in line for line in lines)  # no table left
    # The reason is prose: it wraps, at spaces, beside its key.
    assert "(examples/telemetry_utils)" in "\n".join(lines)


def test_prose_wraps_but_is_never_cut() -> None:
    columns = (Column("run", "id"), Column("note", "text"))
    lines = render(fit_table(columns, [(RUN, REASON * 2)], width=80), 80)
    assert_reads(lines, 80, [RUN])
    text = " ".join(line.strip("│ ") for line in lines)
    assert "scope paths" in text
    assert text.count("refused to write") == 2


def test_a_grouped_column_names_its_value_once_per_group() -> None:
    rows = [(RUN, PHASES[0], "QUEUED"), (RUN, PHASES[1], "QUEUED"), ("other-run", "p", "QUEUED")]
    columns = (Column("run", "id"), Column("phase", "id"), Column("state", "id"))
    lines = render(fit_table(columns, rows, width=80, group=0), 80)
    assert sum(RUN in line for line in lines) == 1
    assert any("other-run" in line for line in lines)


def test_a_row_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        fit_table(COLUMNS[:3], [Row(("a", "b"))], width=80)


def test_ids_too_wide_to_sit_beside_their_keys_go_under_them() -> None:
    long_id = "x" * 50
    columns = (Column("run", "id"), Column("phase", "id"), Column("outcome", "id"))
    lines = render(fit_table(columns, [(long_id, long_id + "y", "ok")], width=56), 56)
    assert_reads(lines, 56, [long_id + "y"])
    stripped = [line.strip() for line in lines]
    assert stripped[stripped.index("phase") + 1] == long_id + "y"
    # Wider than the terminal itself, an id folds: all of it is there, nothing is cut.
    lines = render(fit_table(columns, [(long_id, long_id + "y", "ok")], width=40), 40)
    assert long_id + "y" in "".join(line.strip() for line in lines)
    assert not any("…" in line for line in lines)


# rates per hour --------------------------------------------------------------------------------


def test_per_hour() -> None:
    assert per_hour(3, 1800) == 6.0
    assert per_hour(1, 0.0388) == 92783.5
    assert per_hour(5, 0) is None
    assert per_hour(5, None) is None


def _entry(phase: str, outcome: str, seconds: float) -> dict[str, object]:
    return {
        "run_id": RUN,
        "phase_id": phase,
        "outcome": outcome,
        "final_state": "COMPLETE" if outcome == "complete" else "FAILED",
        "telemetry_events": 1,
        "zero_yield_reason": None,
        "failure_reason": None if outcome == "complete" else REASON,
        "duration_s": seconds,
    }


def _report_text(entries: list[dict[str, object]], width: int = 80) -> tuple[str, str]:
    from autopack import console

    env = Environment(
        stdin=io.StringIO(),
        stdout=io.StringIO(),
        stderr=io.StringIO(),
        environ={"COLUMNS": str(width), "NO_COLOR": "1"},
    )
    report = summarise(SESSION, entries, kind="batch", telemetry_enabled=True)
    with console.bound_to(env):
        show_drain_report(report, quiet=False)
    assert isinstance(env.stdout, io.StringIO)
    assert isinstance(env.stderr, io.StringIO)
    return env.stdout.getvalue(), env.stderr.getvalue()


def test_the_drain_report_gives_rates_per_hour_and_goes_to_stdout() -> None:
    entries = [_entry(phase, "complete", 1200.0) for phase in PHASES]  # 3 phases in an hour
    out, err = _report_text(entries)
    assert err == ""
    assert "processed 3 (3.0 phases/h)" in out
    assert "telemetry rows 3 (3.0 rows/h)" in out
    assert "/min" not in out
    assert_reads(out.splitlines(), 80, [RUN, SESSION, *PHASES])
    document = summarise(SESSION, entries, kind="batch", telemetry_enabled=True).to_json()
    assert document["totals"]["phases_per_hour"] == 3.0
    assert document["totals"]["telemetry_per_hour"] == 3.0
    assert document["totals"]["telemetry_per_minute"] == 0.05  # kept: documented in json.md


def test_a_drain_of_a_few_seconds_shows_no_rate() -> None:
    out, _ = _report_text([_entry(PHASES[0], "complete", 0.04)])
    assert "phases/h" not in out
    assert "rows/h" not in out
    assert "/min" not in out
    assert "processed 1:" in out


def test_failed_phases_stack_at_80_columns_and_form_a_table_at_120() -> None:
    entries = [_entry(phase, "failed", 30.0) for phase in PHASES]
    narrow, _ = _report_text(entries, 80)
    assert_reads(narrow.splitlines(), 80, [RUN, SESSION, *PHASES, "FAILED"])
    assert "reason" in narrow
    assert "┃" not in narrow
    wide, _ = _report_text(entries, 120)
    assert_reads(wide.splitlines(), 120, [RUN, SESSION, *PHASES])
    header = next(line for line in wide.splitlines() if "outcome" in line)
    for column in ("run", "phase", "outcome", "state", "telemetry", "reason"):
        assert column in header


def test_the_live_display_fits_80_columns_and_counts_per_hour() -> None:
    progress = DrainProgress(max_total_tokens=100_000)
    progress.started = time.monotonic() - 3600
    progress.done, progress.failed = 11, 1
    for index, phase in enumerate(PHASES):
        progress.start(str(index), RUN + "-with-a-longer-name", phase)
    lines = render(_Panel(progress), 80)
    assert_reads(lines, 80, [RUN + "-with-a-longer-name", *PHASES])
    assert "12.0 phases/h" in status_line(progress, time.monotonic())
    progress.started = time.monotonic() - 5
    assert "phases/h" not in status_line(progress, time.monotonic())
