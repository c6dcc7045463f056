"""How long `telemetry import` of a 50,000-line log holds SQLite's write lock.

A second writer (as a drain would be) takes the write lock (`BEGIN IMMEDIATE`) over and over
while the import runs in another process; the longest it waited is how long the import held
the lock at once. Target (issue 11, defect 8): under 2 s.

    python benchmarks/import_lock.py [LINES]
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WAIT_LIMIT_S = 300
LINE = (
    "[2025-12-29 19:40:{second:02d}] INFO: [TokenEstimationV2] predicted_output={n} "
    "actual_output=1218 smape=124.1% selected_budget=8192 category=implementation "
    "complexity=low deliverables=1 success=True stop_reason=end_turn truncated=False "
    "model=claude-sonnet-4-5"
)


def main(lines: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "lock.db"
        url = f"sqlite:///{database}"
        autopack = [sys.executable, "-m", "autopack"]
        subprocess.run([*autopack, "db", "init", "--database-url", url, "-q"], check=True)
        log = Path(folder) / "big.log"
        log.write_text("\n".join(LINE.format(second=n % 60, n=n + 1) for n in range(lines)))
        other = sqlite3.connect(database, timeout=WAIT_LIMIT_S, isolation_level=None)
        started = time.perf_counter()
        importer = subprocess.Popen(
            [*autopack, "telemetry", "import", "--database-url", url, "-q", str(log)]
        )
        longest = 0.0
        while importer.poll() is None:
            before = time.perf_counter()
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("COMMIT")
            except sqlite3.OperationalError:  # waited WAIT_LIMIT_S: say so, go on waiting
                pass
            longest = max(longest, time.perf_counter() - before)
            time.sleep(0.005)
        total = time.perf_counter() - started
        rows = other.execute("SELECT count(*) FROM token_estimation_v2_events").fetchone()[0]
        with open("/proc/loadavg") as load:
            average = load.read().split()[0]
        print(
            f"{lines} lines: import {total:.2f} s (exit {importer.returncode}), {rows} rows; "
            f"longest wait for the write lock {longest:.2f} s; load average {average}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
