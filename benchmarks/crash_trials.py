"""Kill -9 series (issue 11): N trials on SQLite and/or PostgreSQL, then print the tally.

    python benchmarks/crash_trials.py --trials 20 [--postgres postgresql://postgres@127.0.0.1/test]

Each trial kills `drain batch --workers 4` over a fresh 50-phase backlog at a random point and
finishes it with `--resume`; see tests/crash_trials.py for the invariants checked.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.crash_trials import postgres_urls, run_trials, sqlite_urls  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--postgres", help="a PostgreSQL URL (trust auth); omit to skip")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory(prefix="autopack-crash-") as directory:
        base = Path(directory)
        if not args.no_sqlite:
            started = time.perf_counter()
            with sqlite_urls(base / "sqlite") as make:
                tally = run_trials(make, args.trials, args.seed)
            print(tally.line("SQLite") + f" ({time.perf_counter() - started:.0f} s)", flush=True)
            failed |= bool(tally.failures)
        if args.postgres:
            started = time.perf_counter()
            with postgres_urls(args.postgres, base / "pg") as make:
                tally = run_trials(make, args.trials, args.seed + 1)
            print(
                tally.line("PostgreSQL") + f" ({time.perf_counter() - started:.0f} s)", flush=True
            )
            failed |= bool(tally.failures)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
