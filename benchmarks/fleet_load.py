"""Fleet load (issue 11): P processes × W workers on PostgreSQL drain N phases, each once.

    python benchmarks/fleet_load.py --postgres postgresql://postgres@127.0.0.1/test \
        --processes 4 --workers 4 --phases 1000 --latency 0.2

Prints the throughput (phases/s, wall clock from the first process started to the last one
done), the per-phase overhead (a phase's wall time minus its LLM time: median and p95), and
checks that every phase ran exactly once: one `complete` result per phase, one telemetry row
per answered call, as many answered calls as phases. Exit 1 if any check fails.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from autopack.db.engine import OpenMode, open_database  # noqa: E402
from autopack.db.lifecycle import init_database  # noqa: E402
from autopack.settings import build_target  # noqa: E402
from tests.backlog_helpers import add_run, good_reply  # noqa: E402
from tests.fake_llm import FakeLlmServer  # noqa: E402
from tests.reliability_helpers import check_invariants  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", required=True)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--phases", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    admin_url = sa.engine.make_url(args.postgres).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(admin_url)
    schema = f"fleet_{uuid.uuid4().hex[:10]}"
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = admin_url.update_query_dict({"options": f"-csearch_path={schema}"})
    url_text = url.render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory(prefix="autopack-fleet-") as directory:
            return _run(args, url_text, Path(directory))
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def _run(args: argparse.Namespace, url: str, directory: Path) -> int:
    target = build_target(url, source="bench", cwd=directory)
    init_database(target, "general")
    with open_database(target, OpenMode.READ_WRITE) as db:
        for index in range(args.phases):  # one phase per run: any process may take any phase
            add_run(db.engine, f"fleet-{index:05d}", 1)
    (directory / "ws").mkdir()
    load_before = os.getloadavg()
    with FakeLlmServer(default_reply=good_reply(delay_s=args.latency)) as llm:
        env = {**os.environ, **llm.env("anthropic"), "NO_COLOR": "1"}
        env.pop("DATABASE_URL", None)
        command = [
            sys.executable, "-m", "autopack", "drain", "batch", "--database-url", url,
            "--workspace", "ws", "--workers", str(args.workers), "--batch-size",
            str(args.phases), "--quiet", "--json", "--allow-dirty",
        ]  # fmt: skip
        started = time.perf_counter()
        processes = [
            subprocess.Popen(
                command, cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            for _ in range(args.processes)
        ]
        codes = [process.wait() for process in processes]
        wall = time.perf_counter() - started
        answered = llm.answered_2xx
    with open_database(target, OpenMode.READ_ONLY) as db, db.engine.connect() as connection:
        rows = connection.exec_driver_sql(
            "SELECT outcome, duration_s, llm_seconds FROM autopack_drain_results"
        ).all()
        found = check_invariants(db.engine, answered_calls=answered)
    complete = sum(row[0] == "complete" for row in rows)
    overhead = sorted(max(0.0, row[1] - row[2]) for row in rows if row[0] == "complete")
    p95 = overhead[int(0.95 * (len(overhead) - 1))] if overhead else float("nan")
    print(
        f"fleet: {args.processes} processes x {args.workers} workers, {args.phases} phases, "
        f"LLM latency {args.latency:g} s on PostgreSQL"
    )
    print(f"  exit codes {codes}; wall {wall:.1f} s; throughput {complete / wall:.1f} phases/s")
    print(
        f"  per-phase overhead (wall - LLM): median {statistics.median(overhead) * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms"
    )
    print(
        f"  results {len(rows)}, complete {complete}, answered calls {answered}, telemetry rows "
        f"{found.telemetry_rows}; invariants: {found.problems or 'all hold'}"
    )
    print(f"  load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f} (2 cores)")
    ok = (
        not found.problems
        and complete == args.phases == len(rows)
        and answered == args.phases
        and set(codes) <= {0}
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
