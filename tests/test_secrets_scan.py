"""Secrets never reach output, files or the database (issue 11, "The standing suite").

With API keys in every variable autopack or an SDK might read, and a PostgreSQL password in
the database URL, run every command (successes, failures, refusals, `--debug`), then scan
stdout, stderr, the transcripts, reports and exports, and every row of the database for the
secret values. Zero hits. The key with a newline is refused at settings (defect 6).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from autopack.db.engine import OpenMode, open_database
from autopack.settings import resolve_target
from tests.backlog_helpers import NEVER, add_run, good_reply
from tests.conftest import CliRunner
from tests.fake_llm import FakeLlmServer, Reply

pytestmark = pytest.mark.slow

PG_PASSWORD = "PgS3cret-Pass-7731"
API_KEY = "sk-ant-api03-SCANME-0123456789abcdefghij"
OTHER_KEYS = {
    "ANTHROPIC_API_KEY": "sk-ant-other-SCANME-9876543210",
    "OPENAI_API_KEY": "sk-proj-SCANME-openai-5555555555",
}
NEWLINE_KEY = "sk-ant-first-SCANME\nsecond-half-SCANME-4242"


def _secret_fragments() -> list[str]:
    fragments = [PG_PASSWORD, API_KEY, *OTHER_KEYS.values(), *NEWLINE_KEY.split("\n")]
    return [f for f in fragments if len(f) >= 8]


@pytest.fixture
def secret_url(postgres_url: str) -> str:
    # Trust auth on the test server accepts any password: the URL carries a real-looking one.
    return (
        sa.engine.make_url(postgres_url)
        .set(password=PG_PASSWORD)
        .render_as_string(hide_password=False)
    )


class Scanner:
    def __init__(self) -> None:
        self.outputs: list[tuple[str, str]] = []

    def add(self, label: str, text: str) -> None:
        self.outputs.append((label, text))

    def hits(self) -> list[str]:
        found = []
        for label, text in self.outputs:
            for fragment in _secret_fragments():
                if fragment in text:
                    found.append(f"{label}: {fragment[:12]}…")
        return found


def _run(cli: CliRunner, scanner: Scanner, env: dict[str, str], *args: str) -> int:
    result = cli(*args, env=env)
    label = " ".join(a for a in args if "://" not in a)
    scanner.add(f"stdout of {label}", result.stdout)
    scanner.add(f"stderr of {label}", result.stderr)
    return result.exit_code


def test_no_secret_reaches_any_output_file_or_row(
    cli: CliRunner, fake_llm: FakeLlmServer, secret_url: str, workdir: Path
) -> None:
    scanner = Scanner()
    env = {**fake_llm.env("anthropic", api_key=API_KEY), **OTHER_KEYS}
    url = ["--database-url", secret_url]
    (workdir / "ws").mkdir()
    assert _run(cli, scanner, env, "db", "init", *url, "--debug") == 0
    with open_database(resolve_target(None, secret_url), OpenMode.READ_WRITE) as db:
        add_run(db.engine, "run-ok", 2)
        add_run(db.engine, "run-bad", 1, deliverables={0: NEVER})
    fake_llm.default_reply = good_reply()
    commands: list[tuple[str, ...]] = [
        ("db", "identity", *url),
        ("db", "identity", *url, "--json", "--debug"),
        ("db", "check", *url, "--json"),
        ("db", "upgrade", *url, "--yes", "--debug"),
        ("drain", "batch", *url, "--workspace", "ws", "--batch-size", "2", "--debug"),
        ("drain", "batch", *url, "--workspace", "ws", "--json", "--debug"),
        ("drain", "sessions", *url, "--json"),
        ("drain", "phase", "run-ok", "run-ok-p1", *url, "--workspace", "ws", "--debug"),
        ("telemetry", "export", *url, "--output", "export.csv"),
        ("telemetry", "export", *url, "--format", "ndjson", "--debug"),
        ("telemetry", "analyze", *url, "--json"),
        ("telemetry", "explain", *url, "--debug"),
        ("triage", "stale", *url, "--json"),
        ("runs", "list", *url),
        ("runs", "show", "run-ok", *url, "--json"),
        ("phases", "show", "run-ok", "run-ok-p0", *url, "--debug"),
        # Failures: an unreachable server, a refused call, a DB that is not there.
        ("db", "identity", "--database-url", secret_url.replace(":5432/", ":1/"), "--debug"),
        ("db", "identity", "--database-url", secret_url.replace("/test", "/no_such_db")),
    ]
    for command in commands:
        _run(cli, scanner, env, *command)
    fake_llm.queue(Reply.client_error(401, "invalid x-api-key"))
    with open_database(resolve_target(None, secret_url), OpenMode.READ_WRITE) as db:
        add_run(db.engine, "run-401", 1)
    _run(cli, scanner, env, "drain", "batch", *url, "--workspace", "ws", "--debug")

    for path in workdir.rglob("*"):
        if path.is_file():
            scanner.add(str(path.relative_to(workdir)), path.read_text(errors="replace"))
    target = resolve_target(None, secret_url)
    with open_database(target, OpenMode.READ_ONLY) as db, db.engine.connect() as connection:
        for table in sa.inspect(connection).get_table_names():
            rows = connection.exec_driver_sql(f'SELECT row_to_json(t)::text FROM "{table}" t')
            scanner.add(f"table {table}", "\n".join(row[0] for row in rows))
    assert len(scanner.outputs) > 40
    assert not scanner.hits(), scanner.hits()


def test_a_key_with_a_newline_is_refused_without_echoing_it(
    cli: CliRunner, fake_llm: FakeLlmServer, secret_url: str, workdir: Path
) -> None:
    (workdir / "ws").mkdir()
    assert cli("db", "init", "--database-url", secret_url).exit_code == 0
    with open_database(resolve_target(None, secret_url), OpenMode.READ_WRITE) as db:
        add_run(db.engine, "run-a", 1)
    env = fake_llm.env("anthropic", api_key=NEWLINE_KEY)
    result = cli(
        "drain", "batch", "--database-url", secret_url, "--workspace", "ws", "--json", env=env
    )
    scanner = Scanner()
    scanner.add("stdout", result.stdout)
    scanner.add("stderr", result.stderr)
    for path in workdir.rglob("*"):
        if path.is_file() and not path.is_symlink():
            scanner.add(str(path), path.read_text(errors="replace"))
    assert result.exit_code == 2
    assert not scanner.hits(), scanner.hits()
    assert "error:" in result.stderr
