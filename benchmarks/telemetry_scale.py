"""Telemetry at scale: a DB of 1,000,000 phases in 5,000 runs and 2,000,000 telemetry rows.

Fills the DB with a fast bulk insert (reproducible: `--seed`), then times each read command as
an operator runs it — `autopack …` in a subprocess, `--repeat` times — and prints its best and
median wall time and its peak memory: the whole process tree's, workers included (see
`measure`). Targets (issue: telemetry), 2 cores:

    db identity ≤ 0.5 s · triage stale --report-only ≤ 1 s and ≤ 150 MB ·
    runs list, runs show, phases show ≤ 0.5 s (runs list --limit 0: ≤ 1 s) ·
    telemetry export (CSV and NDJSON, all rows) ≤ 15 s and ≤ 150 MB ·
    telemetry analyze --stratify ≤ 5 s and ≤ 300 MB ·
    calibrate propose (charts included) ≤ 10 s and ≤ 500 MB

    python benchmarks/telemetry_scale.py --keep /tmp/scale    # full size (3 min to fill, 1.4 GB)
    python benchmarks/telemetry_scale.py --runs 50 --phases-per-run 200 --events 20000  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autopack.db.lifecycle import init_database  # noqa: E402
from autopack.settings import build_target  # noqa: E402

CATEGORIES = ("implementation", "tests", "docs", "testing", "documentation", "refactoring")
COMPLEXITIES = ("low", "medium", "high")
PHASE_STATES = ("QUEUED",) * 2 + ("FAILED",) * 3 + ("COMPLETE",) * 5
BASE_TIME = datetime(2025, 12, 1)


def fill(path: Path, runs: int, phases_per_run: int, events: int, seed: int) -> float:
    """Create the schema through autopack, then bulk-insert rows with one transaction."""
    started = time.perf_counter()
    init_database(build_target(f"sqlite:///{path}", source="bench", cwd=path.parent), "legacy")
    rng = random.Random(seed)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("BEGIN")
    stamp = "2025-12-01 00:00:00"
    connection.executemany(
        "INSERT INTO runs (id, state, created_at, updated_at, safety_profile, run_scope, "
        "token_cap, max_phases, max_duration_minutes, tokens_used, ci_runs_used, "
        "minor_issues_count, major_issues_count, promotion_eligible_to_main) VALUES "
        "(?, 'DONE_FAILED_BUDGET_EXHAUSTED', ?, ?, 'normal', 'multi_tier', 5000000, 500, 120, "
        "0, 0, 0, 0, 'false')",
        ((f"run-{r:05d}", stamp, stamp) for r in range(runs)),
    )
    connection.executemany(
        "INSERT INTO tiers (id, tier_id, run_id, tier_index, name, state, "
        "max_major_issues_tolerated, tokens_used, ci_runs_used, minor_issues_count, "
        "major_issues_count, cleanliness, created_at, updated_at) VALUES "
        "(?, 'T1', ?, 0, 'tier', 'PENDING', 0, 0, 0, 0, 0, 'clean', ?, ?)",
        ((r + 1, f"run-{r:05d}", stamp, stamp) for r in range(runs)),
    )

    def phases() -> Iterator[tuple[object, ...]]:
        for r in range(runs):
            for i in range(phases_per_run):
                age = timedelta(hours=rng.randint(0, 24 * 60))
                updated = (BASE_TIME + timedelta(days=60) - age).strftime("%Y-%m-%d %H:%M:%S")
                yield (
                    f"run-{r:05d}-p{i}",
                    f"run-{r:05d}",
                    r + 1,
                    i,
                    f"phase {i}",
                    rng.choice(PHASE_STATES),
                    rng.choice(CATEGORIES),
                    rng.choice(COMPLEXITIES),
                    '{"paths": ["src/"], "deliverables": ["src/m.py"]}',
                    updated,
                    updated,
                )

    connection.executemany(
        "INSERT INTO phases (phase_id, run_id, tier_id, phase_index, name, state, "
        "task_category, complexity, scope, builder_attempts, auditor_attempts, tokens_used, "
        "minor_issues_count, major_issues_count, issue_state, quality_blocked, retry_attempt, "
        "revision_epoch, escalation_level, created_at, updated_at) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, 0, 'no_issues', 0, 0, 0, 0, ?, ?)",
        phases(),
    )

    def telemetry() -> Iterator[tuple[object, ...]]:
        for n in range(events):
            r = rng.randrange(runs)
            i = rng.randrange(phases_per_run)
            predicted = rng.randint(500, 16000)
            actual = max(50, int(predicted * rng.lognormvariate(-0.6, 0.6)))
            truncated = rng.random() < 0.08
            when = (BASE_TIME + timedelta(seconds=n * 2)).strftime("%Y-%m-%d %H:%M:%S")
            deliverables = rng.choice((1, 1, 1, 2, 3, 5, 7))
            yield (
                f"run-{r:05d}",
                f"run-{r:05d}-p{i}",
                when,
                rng.choice(CATEGORIES),
                rng.choice(COMPLEXITIES),
                deliverables,
                json.dumps(["src/m.py"] * deliverables),
                predicted,
                actual,
                predicted,
                predicted,
                rng.random() < 0.9,
                truncated,
                "max_tokens" if truncated else "end_turn",
                "claude-sonnet-4-5",
                200.0 * abs(actual - predicted) / (actual + predicted),
                predicted / actual,
                actual > predicted,
                truncated,
                when,
            )

    connection.executemany(
        "INSERT INTO token_estimation_v2_events (run_id, phase_id, timestamp, category, "
        "complexity, deliverable_count, deliverables_json, predicted_output_tokens, "
        "actual_output_tokens, selected_budget, actual_max_tokens, success, truncated, "
        "stop_reason, model, smape_percent, waste_ratio, underestimated, is_truncated_output, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        telemetry(),
    )
    connection.commit()
    connection.execute("ANALYZE")
    connection.close()
    return time.perf_counter() - started


def _tree_memory_kib(pid: int, high_water: dict[int, int]) -> int:
    """The summed resident memory (VmRSS) of a process and all its descendants, from /proc
    (Linux); records each process's own peak (VmHWM) into `high_water` on the way."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:  # it ended between two reads
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if "VmRSS" in fields:
            total += int(fields["VmRSS"].split()[0])
        if "VmHWM" in fields:
            high_water[current] = max(high_water.get(current, 0), int(fields["VmHWM"].split()[0]))
    return total


def measure(command: list[str], cwd: Path) -> tuple[float, float, int]:
    """Wall seconds, peak memory (MB) of the whole command, and its exit code.

    The peak is the larger of the summed RSS of the process tree, sampled every 10 ms (a
    command that spreads its work over worker processes is charged for all of them at once),
    and the largest peak of any one of its processes (VmHWM, kept by the kernel since that
    process's exec). The kernel's ru_maxrss is not used: it also counts the benchmark's own
    memory, which a child shares between fork and exec.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1"},
    )
    tree_peak = 0
    high_water: dict[int, int] = {}
    while process.poll() is None:
        tree_peak = max(tree_peak, _tree_memory_kib(process.pid, high_water))
        time.sleep(0.01)
    wall = time.perf_counter() - started
    peak_kib = max(tree_peak, *high_water.values(), 0)
    return wall, peak_kib / 1024, process.returncode


STALE_REPORT = ["triage", "stale", "--db", "legacy", "--report-only", "--stale-hours", "48"]
COMMANDS: dict[str, list[str]] = {
    "db identity": ["db", "identity", "--db", "legacy", "--quiet"],
    "db identity --json": ["db", "identity", "--db", "legacy", "--json"],
    "triage stale (table)": [*STALE_REPORT, "--quiet"],
    "triage stale --json": [*STALE_REPORT, "--json"],
    "telemetry export (CSV)": [
        "telemetry",
        "export",
        "--db",
        "legacy",
        "--format",
        "csv",
        "--output",
        "out.csv",
        "--quiet",
    ],
    "telemetry export (NDJSON)": [
        "telemetry",
        "export",
        "--db",
        "legacy",
        "--format",
        "ndjson",
        "--output",
        "out.ndjson",
        "--quiet",
    ],
    "telemetry analyze --stratify": [
        "telemetry",
        "analyze",
        "--db",
        "legacy",
        "--stratify",
        "--json",
    ],
    # Newest 50 runs; every run (one grouped pass over the phases index); one run of 200
    # phases; one phase with its telemetry rows.
    "runs list": ["runs", "list", "--db", "legacy", "--quiet"],
    "runs list --limit 0 --json": ["runs", "list", "--db", "legacy", "--limit", "0", "--json"],
    "runs show": ["runs", "show", "run-00042", "--db", "legacy", "--quiet"],
    "phases show --json": [
        "phases",
        "show",
        "run-00042",
        "run-00042-p7",
        "--db",
        "legacy",
        "--json",
    ],
    # Read-only; charts included. Its proposal files land in the benchmark's directory.
    "calibrate propose": ["calibrate", "propose", "--db", "legacy", "--output-dir", ".", "-q"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5_000)
    parser.add_argument("--phases-per-run", type=int, default=200)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=20261126)
    parser.add_argument("--keep", type=Path, help="fill this directory and keep the DB")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each command (best and median shown)"
    )
    args = parser.parse_args()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="autopack-scale-"))
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "autopack_legacy.db"
    if not db.exists():
        seconds = fill(db, args.runs, args.phases_per_run, args.events, args.seed)
        print(
            f"filled {db} in {seconds:.1f} s: {args.runs:,} runs, "
            f"{args.runs * args.phases_per_run:,} phases, {args.events:,} telemetry rows "
            f"({db.stat().st_size / 2**20:.0f} MiB)"
        )
    autopack = [sys.executable, "-m", "autopack"]
    print(f"load average {os.getloadavg()[0]:.2f}; best and median of {args.repeat} runs")
    print(f"{'command':<30} {'best s':>8} {'median s':>9} {'peak MB':>9} {'exit':>5}")
    for name, command in COMMANDS.items():
        runs = []
        for _ in range(max(1, args.repeat)):
            # Each run starts clean: no earlier export to replace, no dirty pages being written.
            for output in [*directory.glob("out.*"), *directory.glob("estimator_calibration_*")]:
                output.unlink()
            os.sync()
            runs.append(measure(autopack + command, directory))
        walls = sorted(wall for wall, _, _ in runs)
        peak = max(p for _, p, _ in runs)
        codes = sorted({code for _, _, code in runs})
        print(
            f"{name:<30} {walls[0]:>8.2f} {statistics.median(walls):>9.2f} {peak:>9.0f} "
            f"{','.join(map(str, codes)):>5}"
        )
    if args.keep is None:
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


if __name__ == "__main__":
    main()
