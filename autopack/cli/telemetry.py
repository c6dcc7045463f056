"""`autopack telemetry …`: get telemetry out, bring history in, analyse it, explain gaps."""

from __future__ import annotations

import typer

from autopack.cli.telemetry_analyze import analyze_command
from autopack.cli.telemetry_explain import explain_command
from autopack.cli.telemetry_io import export_command, import_command

app = typer.Typer(help="Export, import, analyse and explain token telemetry.", no_args_is_help=True)
app.command("export")(export_command)
app.command("import")(import_command)
app.command("analyze")(analyze_command)
app.command("explain")(explain_command)
