"""The plain alternative to the Arrow export, for comparison in docs/performance.md.

Runs the same export query (autopack.telemetry.export_query) through Python's sqlite3 and
writes CSV with the csv module, one process, one read transaction. Run it under
`/usr/bin/time -v` beside `autopack telemetry export`:

    /usr/bin/time -v python benchmarks/export_plain_sqlite.py DB.db OUT.csv
"""

from __future__ import annotations

import csv
import sqlite3
import sys
import time
from pathlib import Path

from autopack.db.models import TokenEstimationV2Event
from autopack.telemetry.columns import RECORD_NAMES, TelemetryTables
from autopack.telemetry.export_query import ExportFilters, build_query

FETCH_ROWS = 16_384


def main(database: Path, output: Path) -> None:
    started = time.perf_counter()
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    columns = frozenset(
        row[1] for row in connection.execute("PRAGMA table_info(token_estimation_v2_events)")
    )
    tables = TelemetryTables(columns, has_provenance=True)
    connection.execute("BEGIN")  # one read transaction for both statements
    table = TokenEstimationV2Event.__tablename__
    categories = [row[0] for row in connection.execute(f"SELECT DISTINCT category FROM {table}")]
    query = build_query("sqlite", ExportFilters(), tables, categories)
    cursor = connection.execute(query.rows)
    cursor.fetchone()  # the priming row (only Arrow's type inference needs it)
    rows = 0
    with output.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(RECORD_NAMES)
        while batch := cursor.fetchmany(FETCH_ROWS):
            writer.writerows(row[1:] for row in batch)
            rows += len(batch)
    connection.rollback()
    print(f"{rows} rows in {time.perf_counter() - started:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
