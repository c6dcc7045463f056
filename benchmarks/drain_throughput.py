"""Drain throughput: N phases against the fake LLM with a fixed reply latency, 1 vs 8 workers.

Prints phases/second for each worker count, the speed-up, and the per-phase overhead (a
phase's wall time minus the time spent in the LLM call) with verification of a `.py`
deliverable. Targets (issue: batch drain): overhead ≤ 30 ms median on SQLite; with 8 workers
and a 1 s latency, ≥ 6× the 1-worker rate.

    python benchmarks/drain_throughput.py --phases 32 --latency 1.0
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from autopack.db.engine import OpenMode, open_database  # noqa: E402
from autopack.db.lifecycle import init_database  # noqa: E402
from autopack.drain.attempt import PhaseOptions  # noqa: E402
from autopack.drain.batch import run_batch  # noqa: E402
from autopack.drain.controller import BatchOptions  # noqa: E402
from autopack.drain.selection import Filters  # noqa: E402
from autopack.drain.triage import Limits  # noqa: E402
from autopack.estimator import load_builtin_set  # noqa: E402
from autopack.llm.clients import make_client  # noqa: E402
from autopack.llm.settings import load_llm_settings  # noqa: E402
from autopack.settings import build_target  # noqa: E402
from tests.backlog_helpers import add_run, good_reply  # noqa: E402
from tests.fake_llm import FakeLlmServer  # noqa: E402


def drain(directory: Path, phases: int, workers: int, latency: float) -> dict[str, float]:
    target = build_target(
        f"sqlite:///{directory}/bench-{workers}.db", source="bench", cwd=directory
    )
    init_database(target, "general")
    workspace = directory / f"ws-{workers}"
    workspace.mkdir()
    with open_database(target, OpenMode.READ_WRITE) as db:
        for index in range(phases):
            add_run(db.engine, f"bench-{index:04d}", 1)
        with FakeLlmServer(default_reply=good_reply(delay_s=latency)) as server:
            settings = load_llm_settings(server.env("anthropic"))
            options = BatchOptions(
                filters=Filters(states=("QUEUED",)),
                limits=Limits(batch_size=phases, max_fingerprint_repeats=None),
                phase=PhaseOptions(
                    workspace=workspace,
                    coefficients=load_builtin_set("default"),
                    telemetry_enabled=True,
                    telemetry_tables_present=True,
                    phase_timeout_s=600,
                ),
                workers=workers,
                poll_interval_s=0.5,
            )
            with make_client(settings) as client:
                started = time.perf_counter()
                report = run_batch(db.engine, client, options)
                wall = time.perf_counter() - started
    assert report.totals.succeeded == phases, report.totals
    overheads = [(entry["duration_s"] - entry["llm_seconds"]) * 1000 for entry in report.results]
    return {
        "wall_s": wall,
        "phases_per_s": phases / wall,
        "overhead_median_ms": statistics.median(overheads),
        "overhead_p90_ms": statistics.quantiles(overheads, n=10)[-1],
        "llm_median_ms": statistics.median(e["llm_seconds"] * 1000 for e in report.results),
        # Everything else the loop spends per phase (selection, triage, session saves),
        # spread over the phases: (wall × workers − Σ LLM time) / phases.
        "loop_overhead_ms": (wall * workers - sum(e["llm_seconds"] for e in report.results))
        / phases
        * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phases", type=int, default=32)
    parser.add_argument("--latency", type=float, default=1.0, help="fake LLM reply latency (s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autopack-bench-") as tmp:
        figures = {w: drain(Path(tmp), args.phases, w, args.latency) for w in args.workers}
    print(f"drain throughput: {args.phases} phases, fake LLM latency {args.latency:g} s, SQLite")
    print(
        f"{'workers':>8} {'wall s':>8} {'phases/s':>9} {'overhead median ms':>19} "
        f"{'overhead p90 ms':>16} {'loop overhead ms':>17}"
    )
    for workers, f in figures.items():
        print(
            f"{workers:>8} {f['wall_s']:>8.2f} {f['phases_per_s']:>9.2f} "
            f"{f['overhead_median_ms']:>19.1f} {f['overhead_p90_ms']:>16.1f} "
            f"{f['loop_overhead_ms']:>17.1f}"
        )
    print(
        "overhead: a phase's wall time minus its LLM call; loop overhead: "
        "(wall × workers − Σ LLM time) / phases, selection and session saves included"
    )
    if len(figures) >= 2:
        low, high = min(figures), max(figures)
        speedup = figures[high]["phases_per_s"] / figures[low]["phases_per_s"]
        print(f"speed-up {high} vs {low} workers: {speedup:.2f}×")


if __name__ == "__main__":
    main()
