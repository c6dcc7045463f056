"""How long `--help` takes: the root's, every group's and every command's, each in a new process.

Targets (issue 13): `autopack --help` in 0.4 s at most, every other `--help` in 0.5 s, on an
idle 2-core machine. Prints best and median of N runs per help, a bare two-command Typer app
for comparison, and the modules `python -X importtime -m autopack --help` spends most on.

    python benchmarks/help_speed.py [N]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import typer

from autopack.cli.app import build_app
from autopack.cli.reference import commands

ROOT_TARGET_S = 0.4
OTHER_TARGET_S = 0.5
TOP_IMPORTS = 15
BARE_APP = """
import typer
app = typer.Typer()
@app.command()
def one(x: int = 1) -> None:
    "One."
@app.command()
def two() -> None:
    "Two."
app()
"""


def timed(args: list[str], runs: int) -> tuple[float, float]:
    """(best, median) seconds of `args` run `runs` times, output discarded."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times)


def top_imports(count: int) -> list[tuple[int, str]]:
    """(cumulative microseconds, module) of the slowest imports of `autopack --help`."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "autopack", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    found: list[tuple[int, str]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        found.append((int(cumulative), name.rstrip()))
    return sorted(found, reverse=True)[:count]


def main(runs: int) -> None:
    with open("/proc/loadavg") as load:
        print(f"load average before: {' '.join(load.read().split()[:3])}; {runs} runs each")
    with tempfile.TemporaryDirectory() as folder:
        bare = Path(folder) / "bare.py"
        bare.write_text(BARE_APP)
        best, median = timed([sys.executable, str(bare), "--help"], runs)
    print(f"{'a bare two-command Typer app --help':48} best {best:.3f} s  median {median:.3f} s")
    slowest = 0.0
    failed = []
    for path, _ in commands(typer.main.get_command(build_app(None))):
        best, median = timed([sys.executable, "-m", "autopack", *path, "--help"], runs)
        target = OTHER_TARGET_S if path else ROOT_TARGET_S
        verdict = "ok" if median <= target else f"OVER {target} s"
        if median > target:
            failed.append(" ".join(path) or "(root)")
        slowest = max(slowest, median)
        label = " ".join(["autopack", *path, "--help"])
        print(f"{label:48} best {best:.3f} s  median {median:.3f} s  {verdict}")
    print(f"slowest median {slowest:.3f} s; over target: {', '.join(failed) or 'none'}")
    print("\nslowest imports of `autopack --help` (cumulative; -X importtime, one run):")
    for micros, name in top_imports(TOP_IMPORTS):
        print(f"  {micros / 1000:7.1f} ms  {name}")
    with open("/proc/loadavg") as load:
        print(f"load average after: {' '.join(load.read().split()[:3])}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
