"""Helpers for the calibration tests: DBs filled through `telemetry import`, proposal files."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.conftest import CliRunner

DATA = Path(__file__).resolve().parent / "data"
SAMPLE_LOG = DATA / "token_estimation_v2_sample.log"
SETS_DIR = Path(__file__).resolve().parents[1] / "autopack" / "estimator" / "sets"
MODEL = "claude-sonnet-4-5"


def init_and_import(cli: CliRunner, url: str, *logs: Path) -> None:
    assert cli("db", "init", "--database-url", url, "-q").exit_code == 0
    for log in logs:
        result = cli("telemetry", "import", "--database-url", url, str(log), "-q")
        assert result.exit_code == 0, result.stderr


def log_line(
    index: int,
    *,
    actual: int,
    predicted: int = 5200,
    category: str = "implementation",
    complexity: str = "low",
    deliverables: int = 1,
    success: bool = True,
    truncated: bool = False,
    model: str = MODEL,
) -> str:
    minute, second = divmod(index, 60)
    return (
        f"[2025-12-29 10:{minute:02d}:{second:02d}] INFO: [TokenEstimationV2] "
        f"predicted_output={predicted} actual_output={actual} smape=10.0% selected_budget=8192 "
        f"category={category} complexity={complexity} deliverables={deliverables} "
        f"success={success} stop_reason={'max_tokens' if truncated else 'end_turn'} "
        f"truncated={truncated} model={model}"
    )


def write_log(path: Path, lines: Iterable[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def strict_json(text: str) -> Any:
    """Parse JSON, failing on NaN or Infinity (which json.loads would accept)."""

    def refuse(constant: str) -> Any:
        raise AssertionError(f"non-finite number in JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def files_digest(paths: Iterable[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(paths)}


def propose_json(cli: CliRunner, url: str, output: Path, *extra: str) -> dict[str, Any]:
    output.mkdir(exist_ok=True)
    result = cli(
        "calibrate", "propose", "--database-url", url, "--output-dir", str(output), "--json", *extra
    )
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = strict_json(result.stdout)
    return document


def proposal_file(output: Path) -> Path:
    [path] = sorted(output.glob("estimator_calibration_proposal_*.json"))
    return path
