"""The Typer command line: a thin skin over the core API."""
