"""The end of `autopack demo`: where everything is, and what to try next (stdout)."""

from __future__ import annotations

from autopack import console
from autopack.demo.runbook import DemoReport


def show_demo(report: DemoReport) -> None:
    kind = "simulated model" if report.simulated else "real model"
    out = console.stdout()
    lines = [
        f"autopack demo: the runbook ran against the {kind} ({report.model}) "
        f"in {report.seconds:.1f} s.",
        "",
        f"Directory:  {report.directory}",
        f"Seed DB:    {report.seed_db}",
        f"Legacy DB:  {report.legacy_db}",
        f"Workspace:  {report.workspace}  (the generated files; a git repository)",
        f"Reports:    {report.reports}",
        "",
        "Steps (exit 1 means the step found failed or stale phases: that is its job):",
    ]
    for step in report.steps:
        saved = f"  -> {step.output}" if step.output else ""
        lines.append(f"  {step.exit_code:>3}  {step.title} ({step.seconds:.1f} s){saved}")
    if report.simulated:
        lines += [
            "",
            f"Everything here is simulated: every telemetry row carries the model name "
            f"{report.model}; do not calibrate a real estimator on it.",
        ]
    lines += ["", "Next, try:"]
    lines += [f"  {command}" for command in report.next_commands()]
    out.write("\n".join(lines) + "\n")
    out.flush()
