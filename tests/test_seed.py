"""`autopack seed`: built-in runs as data, user seed files, coverage, guards, and the CLI."""

from __future__ import annotations

import json
import sqlite3
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from autopack.db.engine import Database, OpenMode, open_database
from autopack.db.models import Phase, Run, Tier, table_of
from autopack.errors import ConfigError, GuardError, SchemaError, TargetError
from autopack.estimator import estimate, load_builtin_set, normalize_category
from autopack.executor.verify import is_test_file
from autopack.seed.catalog import BUILTIN_RUNS, builtin_text, load_builtin
from autopack.seed.coverage import coverage_of
from autopack.seed.create import seed_run
from autopack.seed.files import (
    SeedFileError,
    check_run_id,
    load_seed_file,
    parse_seed_document,
    parse_seed_text,
)
from autopack.seed.model import SeedPhase, SeedRunSpec, SeedScope, create_seed_run
from autopack.seed.plan import list_builtins, plan_of
from autopack.settings import build_target, resolve_target
from tests.conftest import REFERENCE_DATA, CliRunner, build_original_db

REFERENCE = json.loads((REFERENCE_DATA / "telemetry_run_phase_specs.json").read_text())
REFERENCE_RUNS = ["telemetry-collection-v4", "telemetry-collection-v5"]
BALANCED_DIR = "examples/telemetry_balanced/"
SEED_FILE = "autopack_telemetry_seed.db"


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def seed_target(cli: CliRunner, workdir: Path) -> Iterator[Database]:
    """A freshly initialised, empty `--db seed` database (role seed), opened read-write."""
    assert cli("db", "init", "--db", "seed").exit_code == 0
    with open_database(resolve_target("seed", None), OpenMode.READ_WRITE) as db:
        yield db


def _init(cli: CliRunner, *args: str) -> None:
    result = cli("db", "init", *args)
    assert result.exit_code == 0, result.stderr


def _rows(db_path: Path) -> dict[str, int]:
    target = build_target(f"sqlite:///{db_path}", source="test", cwd=db_path.parent)
    with open_database(target, OpenMode.READ_ONLY) as db, db.engine.connect() as connection:
        return {
            name: int(
                connection.execute(
                    sa.select(sa.func.count()).select_from(sa.table(name))
                ).scalar_one()
            )
            for name in ("runs", "tiers", "phases")
        }


def _assert_refused(result: Any, *fragments: str) -> None:
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    assert "hint:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def _phase(**overrides: Any) -> dict[str, Any]:
    phase: dict[str, Any] = {
        "phase_id": "p1",
        "name": "Slug helper",
        "description": "Create slug.py with slugify(text)",
        "task_category": "implementation",
        "complexity": "low",
        "deliverables": ["src/demo/slug.py"],
    }
    phase.update(overrides)
    return {k: v for k, v in phase.items() if v is not None}


def _document(*phases: dict[str, Any], **sections: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "run": {"id": "my-seed"},
        "phase_defaults": {"paths": ["src/demo/"]},
        "phases": list(phases) or [_phase()],
    }
    document.update(sections)
    return document


def _problems(document: object, run_id: str | None = None) -> list[str]:
    with pytest.raises(SeedFileError) as caught:
        parse_seed_document(document, source="f.toml", run_id=run_id)
    assert caught.value.exit_code == 2
    return caught.value.problems


MY_PHASES_TOML = """\
[run]
id = "my-seed"
description = "Two phases of my own"
token_cap = 200000
max_phases = 5
max_duration_minutes = 60

[tier]
name = "My Tier"
ci_run_cap = 4

[phase_defaults]
paths = ["src/demo/"]

[[phases]]
phase_id = "my-p1"
name = "Slug helper"
task_category = "implementation"
complexity = "high"
description = "Create slug.py"
deliverables = ["src/demo/slug.py", "src/demo/slug_rules.py"]

[[phases]]
phase_id = "my-p2"
name = "Slug tests"
task_category = "testing"
complexity = "Medium"
description = "Create test_slug.py"
deliverables = ["src/demo/test_slug.py"]
read_only_context = ["src/demo/slug.py"]
"""


# --- the built-in runs are the reference's phases, exactly -----------------------------------


def test_every_builtin_has_a_data_file_and_nothing_else_is_shipped() -> None:
    shipped = {
        entry.name.removesuffix(".toml")
        for entry in resources.files("autopack.seed").joinpath("runs").iterdir()
        if entry.name.endswith(".toml")
    }
    assert shipped == set(BUILTIN_RUNS)
    for name in BUILTIN_RUNS:
        assert load_builtin(name).run_id == name


@pytest.mark.parametrize("name", REFERENCE_RUNS)
def test_builtin_matches_the_reference_field_by_field(name: str) -> None:
    reference = REFERENCE[name]
    spec = load_builtin(name)
    run, tier, defaults = reference["run"], reference["tier"], reference["phase_defaults"]
    assert spec.run_id == run["id"]
    assert spec.token_cap == run["token_cap"]
    assert spec.max_phases == run["max_phases"]
    assert spec.max_duration_minutes == run["max_duration_minutes"]
    assert spec.tier_name == tier["name"]
    assert spec.tier_description == tier["description"]
    assert spec.tier_token_cap == tier["token_cap"]
    assert spec.ci_run_cap == tier["ci_run_cap"]
    assert spec.max_builder_attempts == defaults["max_builder_attempts"]
    assert spec.max_auditor_attempts == defaults["max_auditor_attempts"]
    assert spec.incident_token_cap == defaults["incident_token_cap"]
    assert [p.phase_id for p in spec.phases] == [p["phase_id"] for p in reference["phases"]]
    for ours, theirs in zip(spec.phases, reference["phases"], strict=True):
        assert ours.model_dump() == theirs, ours.phase_id


@pytest.mark.parametrize("name", REFERENCE_RUNS)
def test_seeded_rows_match_the_reference(seed_target: Database, name: str) -> None:
    reference = REFERENCE[name]
    seed_run(seed_target, load_builtin(name), builtin=name)
    runs, tiers, phases = table_of(Run), table_of(Tier), table_of(Phase)
    with seed_target.engine.connect() as connection:
        run = connection.execute(sa.select(runs)).mappings().one()
        tier = connection.execute(sa.select(tiers)).mappings().one()
        rows = connection.execute(sa.select(phases).order_by(phases.c.phase_index)).mappings().all()
    for key, value in reference["run"].items():
        assert run[key] == value, key
    for key, value in reference["tier"].items():
        assert tier[key] == value, key
    assert tier["run_id"] == reference["run"]["id"]
    assert len(rows) == len(reference["phases"])
    for row, expected in zip(rows, reference["phases"], strict=True):
        for key, value in expected.items():
            stored = row[key]
            if key == "scope" and isinstance(stored, str):
                stored = json.loads(stored)
            assert stored == value, (expected["phase_id"], key)
        for key, value in reference["phase_defaults"].items():
            assert row[key] == value, (expected["phase_id"], key)
        assert row["tier_id"] == tier["id"]
        assert row["run_id"] == reference["run"]["id"]


def test_v4_mix_is_the_real_one_not_the_printed_one() -> None:
    coverage = coverage_of(load_builtin("telemetry-collection-v4").phases)
    mix = {k: v.model_dump() for k, v in coverage.by_category.items()}
    assert mix == {
        "implementation": {"phases": 6, "low": 2, "medium": 4, "high": 0},
        "tests": {"phases": 3, "low": 1, "medium": 2, "high": 0},
        "docs": {"phases": 1, "low": 1, "medium": 0, "high": 0},
    }
    assert coverage.by_complexity == {"low": 4, "medium": 6, "high": 0}
    assert coverage.by_deliverables == {"1": 9, "2-5": 1}
    assert coverage.covered_target_cells == 6
    assert "implementation/high/1" in coverage.missing_cells


def test_v5_mix() -> None:
    spec = load_builtin("telemetry-collection-v5")
    coverage = coverage_of(spec.phases)
    assert len(spec.phases) == 25
    mix = {k: (v.phases, v.low, v.medium, v.high) for k, v in coverage.by_category.items()}
    assert mix == {"implementation": (15, 8, 7, 0), "tests": (7, 4, 3, 0), "docs": (3, 3, 0, 0)}
    assert coverage.by_deliverables == {"1": 24, "2-5": 1}


# --- telemetry-balanced: designed for what the runbook asks ---------------------------------


def test_balanced_covers_all_eighteen_cells_with_at_least_24_phases() -> None:
    spec = load_builtin("telemetry-balanced")
    coverage = coverage_of(spec.phases)
    assert len(spec.phases) >= 24
    assert len(spec.phases) <= spec.max_phases
    assert coverage.target_cells == 18
    assert coverage.covered_target_cells == 18
    assert coverage.missing_cells == []
    assert coverage.complete
    assert all(cell.required for cell in coverage.cells)  # nothing outside the 18 cells
    assert set(coverage.by_category) == {"implementation", "tests", "docs"}
    assert min(coverage.by_complexity.values()) >= 8


def test_balanced_phases_stay_in_their_own_directory_and_build_on_earlier_ones() -> None:
    spec = load_builtin("telemetry-balanced")
    written: set[str] = set()
    for phase in spec.phases:
        assert phase.scope.paths == [BALANCED_DIR]
        for path in [*phase.scope.deliverables, *phase.scope.read_only_context]:
            assert path.startswith(BALANCED_DIR), (phase.phase_id, path)
        missing = [p for p in phase.scope.read_only_context if p not in written]
        assert missing == [], f"{phase.phase_id} reads files no earlier phase wrote: {missing}"
        overlap = written & set(phase.scope.deliverables)
        assert not overlap, f"{phase.phase_id} overwrites {overlap}"
        written.update(phase.scope.deliverables)
    # The tests import the modules by plain name: the directory must stay a plain directory.
    assert not any(p.endswith("__init__.py") for p in written)


def test_balanced_tests_phases_read_what_they_test_and_give_pytest_files() -> None:
    for phase in load_builtin("telemetry-balanced").phases:
        if normalize_category(phase.task_category) != "tests":
            continue
        assert phase.scope.read_only_context, phase.phase_id
        assert all(is_test_file(d) for d in phase.scope.deliverables), phase.phase_id
        for deliverable in phase.scope.deliverables:
            module = deliverable.replace("/test_", "/")
            assert module in phase.scope.read_only_context, (phase.phase_id, module)
            assert f"from {Path(module).stem} import" in phase.description, phase.phase_id


def test_balanced_docs_phases_are_estimated_and_recorded_as_docs() -> None:
    """Research words would route a docs phase to doc_synthesis and its telemetry elsewhere."""
    coefficients = load_builtin_set("default")
    docs = [p for p in load_builtin("telemetry-balanced").phases if p.task_category == "docs"]
    assert len(docs) == 9
    for phase in docs:
        result = estimate(
            phase.scope.deliverables,
            phase.task_category,
            phase.complexity,
            coefficients=coefficients,
            workspace=None,
            task_description=phase.description,
            scope_paths=phase.scope.paths,
        )
        assert result.model == "overhead", phase.phase_id
        assert result.category == "docs", phase.phase_id
        assert all(d.endswith(".md") for d in phase.scope.deliverables)


# --- user seed files -------------------------------------------------------------------------


def test_toml_and_json_files_give_the_same_spec(tmp_path: Path) -> None:
    toml_path = tmp_path / "my_phases.toml"
    toml_path.write_text(MY_PHASES_TOML)
    from_toml = load_seed_file(toml_path)
    json_path = tmp_path / "my_phases.JSON"
    json_path.write_text(json.dumps(tomllib.loads(MY_PHASES_TOML)))
    assert load_seed_file(json_path) == from_toml
    assert from_toml.run_id == "my-seed"
    assert from_toml.description == "Two phases of my own"
    assert (from_toml.token_cap, from_toml.max_phases, from_toml.max_duration_minutes) == (
        200000,
        5,
        60,
    )
    assert (from_toml.tier_name, from_toml.ci_run_cap, from_toml.tier_token_cap) == (
        "My Tier",
        4,
        None,
    )
    first, second = from_toml.phases
    assert first.scope == SeedScope(
        paths=["src/demo/"],
        read_only_context=[],
        deliverables=["src/demo/slug.py", "src/demo/slug_rules.py"],
    )
    assert (first.phase_index, second.phase_index) == (0, 1)
    assert second.complexity == "medium"  # case folded
    assert second.task_category == "testing"  # stored as written; coverage normalises it
    assert coverage_of(from_toml.phases).by_category["tests"].medium == 1


def test_defaults_fill_what_a_file_leaves_out() -> None:
    spec = parse_seed_document({"phases": [_phase(paths=["src/demo"])]}, source="x", run_id="r1")
    defaults = SeedRunSpec.model_fields
    assert spec.run_id == "r1"
    assert spec.token_cap == defaults["token_cap"].default
    assert spec.max_phases == defaults["max_phases"].default
    assert spec.tier_name == defaults["tier_name"].default
    assert spec.max_builder_attempts == defaults["max_builder_attempts"].default
    assert spec.phases[0].scope.paths == ["src/demo"]


def test_a_phase_s_own_paths_replace_the_defaults() -> None:
    spec = parse_seed_document(
        _document(_phase(paths=["lib/"], deliverables=["lib/x.py"])), source="x"
    )
    assert spec.phases[0].scope.paths == ["lib/"]


def test_run_id_override_replaces_the_file_s_id_and_may_stand_in_for_it() -> None:
    assert parse_seed_document(_document(), source="x", run_id="other").run_id == "other"
    document = _document()
    del document["run"]
    assert parse_seed_document(document, source="x", run_id="other").run_id == "other"
    assert _problems(document) == ["run.id is missing (name the run in [run], or pass --run-id)"]


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (
            _phase(complexity="extreme"),
            "phase 1 (id 'p1'): complexity must be low, medium or high (got 'extreme')",
        ),
        (_phase(name=None), "phase 1 (id 'p1'): name is missing"),
        (_phase(name="   "), "phase 1 (id 'p1'): name must not be empty"),
        (_phase(phase_id=None), "phase 1 (no phase_id): phase_id is missing"),
        (
            _phase(phase_id="has space"),
            "phase 1 (id 'has space'): phase_id 'has space' must start with a letter or digit",
        ),
        (
            _phase(category="tests"),
            "phase 1 (id 'p1'): unknown field 'category' (did you mean 'task_category'?)",
        ),
        (
            _phase(phase_index=3),
            "phase 1 (id 'p1'): unknown field 'phase_index' (phases are numbered by their order",
        ),
        (_phase(deliverables=[]), "phase 1 (id 'p1'): deliverables must list at least one file"),
        (_phase(deliverables="src/demo/x.py"), "phase 1 (id 'p1'): deliverables must be a list"),
        (_phase(complexity=2), "phase 1 (id 'p1'): complexity must be a string"),
        (
            _phase(deliverables=["/etc/passwd"]),
            "phase 1 (id 'p1'): deliverable '/etc/passwd': absolute paths are not allowed",
        ),
        (
            _phase(deliverables=["src/demo/../../x.py"]),
            "phase 1 (id 'p1'): deliverable 'src/demo/../../x.py': '..' is not allowed",
        ),
        (
            _phase(deliverables=["src/demo/a.py", "src/demo//a.py"]),
            "phase 1 (id 'p1'): deliverable 'src/demo//a.py' is listed twice",
        ),
        (
            _phase(deliverables=["src/demo_v2/a.py"]),
            "phase 1 (id 'p1'): deliverable 'src/demo_v2/a.py' is outside the phase's paths "
            "(src/demo/), so the builder could never write it",
        ),
        (
            _phase(read_only_context=["../secrets.txt"]),
            "phase 1 (id 'p1'): read_only_context '../secrets.txt': '..' is not allowed",
        ),
        (_phase(paths=[]), "phase 1 (id 'p1'): paths must not be empty"),
        ("not a table", "phase 1: must be a table (TOML) or an object (JSON)"),
    ],
)
def test_each_bad_phase_is_named_with_its_position_and_id(phase: Any, expected: str) -> None:
    problems = _problems(_document(_phase(phase_id="p0", name="first"), phase))
    expected = expected.replace("phase 1", "phase 2")
    assert any(problem.startswith(expected) for problem in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    document = _document(
        _phase(phase_id="a"),
        _phase(phase_id="a", complexity="huge", deliverables=["elsewhere/x.py"]),
        _phase(phase_id="c", name=None),
        run={"id": "r", "token_cap": "lots", "colour": "red"},
    )
    assert _problems(document) == [
        "run.token_cap must be an integer",
        "unknown field 'colour' in [run]",
        "phase 2 (id 'a'): complexity must be low, medium or high (got 'huge')",
        "phase 2 (id 'a'): phase_id 'a' is already used by phase 1",
        "phase 2 (id 'a'): deliverable 'elsewhere/x.py' is outside the phase's paths "
        "(src/demo/), so the builder could never write it",
        "phase 3 (id 'c'): name is missing",
    ]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ([1, 2], "the top level must be a table (TOML) or an object (JSON)"),
        ({"run": {"id": "r"}}, "the file has no phases"),
        ({"run": {"id": "r"}, "phases": []}, "the file has no phases"),
        ({"run": {"id": "r"}, "phases": {"a": 1}}, "phases must be a list"),
        (_document(runs={}), "unknown section 'runs' (did you mean 'run'?)"),
        (_document(run="r"), "run must be a table (TOML) or an object (JSON)"),
        (_document(run={"id": "r", "token_cap": 0}), "run.token_cap must be a positive integer"),
        (_document(run={"id": "r", "token_cap": True}), "run.token_cap must be an integer"),
        (_document(run={"id": "r", "token_cap": 1.5}), "run.token_cap must be an integer"),
        (
            _document(run={"id": "r", "max_phases": 1}, phases=[_phase(), _phase(phase_id="p2")]),
            "run.max_phases is 1, but the file has 2 phases",
        ),
        (_document(tier={"name": " "}), "tier.name must not be empty"),
        (_document(tier={"token_cap": -5}), "tier.token_cap must be a positive integer"),
        (
            _document(phase_defaults={"paths": ["/abs"]}),
            "phase_defaults.paths: '/abs': absolute paths are not allowed",
        ),
        (
            _document(phase_defaults={"max_builder_attempts": 0}),
            "phase_defaults.max_builder_attempts must be a positive integer",
        ),
        (
            _document(phase_defaults={}),
            "phase 1 (id 'p1'): paths is missing (give it here or in [phase_defaults])",
        ),
    ],
)
def test_file_level_problems(document: object, expected: str) -> None:
    problems = _problems(document)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_syntax_errors_name_the_format_and_place(tmp_path: Path) -> None:
    with pytest.raises(SeedFileError, match=r"not valid TOML: .*line 2"):
        parse_seed_text("[run]\nid = \n", fmt="toml", source="x.toml")
    with pytest.raises(SeedFileError, match=r"not valid JSON: .* \(at line 1, column 13\)"):
        parse_seed_text('{"phases": 3', fmt="json", source="x.json")


def test_unusable_file_paths_are_refused_before_reading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"neither a \.toml nor a \.json"):
        load_seed_file(tmp_path / "phases.yaml")
    with pytest.raises(ConfigError, match="no seed file at"):
        load_seed_file(tmp_path / "missing.toml")
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        load_seed_file(tmp_path / "dir.toml")
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[run]\nid = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_seed_file(latin)


def test_one_problem_is_one_line_several_are_listed() -> None:
    one = SeedFileError("f.toml", ["phase 3 (id 'x'): complexity must be low, medium or high"])
    assert one.message == (
        "f.toml is not a valid seed file: phase 3 (id 'x'): complexity must be low, medium or high"
    )
    assert "\n" not in one.message
    several = SeedFileError("f.toml", ["a", "b"])
    assert several.message == "f.toml is not a valid seed file (2 problems):\n  a\n  b"
    assert several.hint is not None
    assert "nothing was written" in several.hint


def test_run_id_rule() -> None:
    assert check_run_id("telemetry-collection-v4.b_2") == "telemetry-collection-v4.b_2"
    for bad in ("", "has space", "-leading", "x" * 129, "semi;colon"):
        with pytest.raises(ConfigError, match="invalid --run-id"):
            check_run_id(bad)


def test_a_bad_run_id_override_is_refused_in_the_python_api_too() -> None:
    with pytest.raises(ConfigError, match="invalid --run-id 'x y'"):
        load_builtin("telemetry-collection-v4", run_id="x y")


def test_unknown_builtin_suggests_the_close_name() -> None:
    with pytest.raises(ConfigError) as caught:
        load_builtin("telemetry-v4")
    assert caught.value.hint is not None
    assert "did you mean telemetry-collection-v4?" in caught.value.hint
    with pytest.raises(ConfigError):
        builtin_text("../../etc/passwd")


# --- coverage --------------------------------------------------------------------------------


def test_coverage_normalises_categories_and_keeps_other_cells_apart() -> None:
    def phase(pid: str, category: str, complexity: str, count: int) -> SeedPhase:
        return SeedPhase(
            phase_id=pid,
            name=pid,
            description=pid,
            task_category=category,
            complexity=complexity,
            scope=SeedScope(paths=["x/"], deliverables=[f"x/{pid}{i}.py" for i in range(count)]),
        )

    coverage = coverage_of(
        [
            phase("a", "testing", "low", 1),
            phase("b", "Documentation", "high", 3),
            phase("c", "refactoring", "medium", 7),
        ]
    )
    assert coverage.by_category["tests"].low == 1
    assert coverage.by_category["docs"].high == 1
    assert list(coverage.by_category) == ["implementation", "tests", "docs", "refactoring"]
    assert coverage.by_deliverables == {"1": 1, "2-5": 1, "6+": 1}
    assert coverage.covered_target_cells == 2
    assert len(coverage.missing_cells) == 16
    extra = [cell for cell in coverage.cells if not cell.required]
    assert [(c.label, c.phase_ids) for c in extra] == [("refactoring/medium/6+", ["c"])]


# --- seeding a database (core API) -----------------------------------------------------------


def test_seed_run_reports_what_it_created(seed_target: Database) -> None:
    report = seed_run(seed_target, load_builtin("telemetry-balanced"), builtin="telemetry-balanced")
    assert report.run_id == "telemetry-balanced"
    assert report.phases_created == len(report.phases) == 27
    assert all(p.state == "QUEUED" for p in report.phases)
    assert [p.phase_index for p in report.phases] == list(range(27))
    assert report.coverage.complete
    with seed_target.engine.connect() as connection:
        states = connection.execute(sa.select(table_of(Phase).c.state).distinct()).scalars().all()
    assert states == ["QUEUED"]


def test_an_existing_run_is_never_overwritten(seed_target: Database, workdir: Path) -> None:
    spec = load_builtin("telemetry-collection-v4")
    seed_run(seed_target, spec)
    with pytest.raises(GuardError, match="already exists; seeding never overwrites"):
        seed_run(seed_target, spec)
    # --run-id seeds the same phases again under another run id.
    again = seed_run(seed_target, load_builtin("telemetry-collection-v4", run_id="v4-second"))
    assert again.run_id == "v4-second"
    assert _rows(workdir / SEED_FILE) == {"runs": 2, "tiers": 2, "phases": 20}


def test_a_run_created_between_check_and_insert_is_still_refused(
    seed_target: Database, workdir: Path
) -> None:
    """The existence check and the insert race with another seeder: the loser is refused."""
    spec = load_builtin("telemetry-collection-v4")
    create_seed_run(seed_target.engine, spec)
    hidden = {"checks": 0}

    def hide_first_check(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT RUNS.ID") and hidden["checks"] == 0:
            hidden["checks"] += 1
            return statement + " AND 1 = 0", parameters
        return statement, parameters

    event.listen(seed_target.engine, "before_cursor_execute", hide_first_check, retval=True)
    try:
        with pytest.raises(GuardError, match="already exists"):
            create_seed_run(seed_target.engine, spec)
    finally:
        event.remove(seed_target.engine, "before_cursor_execute", hide_first_check)
    assert hidden["checks"] == 1
    assert _rows(workdir / SEED_FILE) == {"runs": 1, "tiers": 1, "phases": 10}


@pytest.mark.parametrize("role", ["legacy", "staging"])
def test_roles_other_than_seed_and_general_are_refused_unless_forced(
    cli: CliRunner, workdir: Path, role: str
) -> None:
    _init(cli, "--database-url", "sqlite:///r.db", "--role", role)
    target = build_target("sqlite:///r.db", source="test", cwd=workdir)
    with open_database(target, OpenMode.READ_WRITE) as db:
        with pytest.raises(GuardError, match=f"does not act on a {role} database"):
            seed_run(db, load_builtin("telemetry-collection-v4"))
        assert _rows(workdir / "r.db")["runs"] == 0
        report = seed_run(db, load_builtin("telemetry-collection-v4"), force_role=True)
    assert report.phases_created == 10


def test_general_role_is_accepted(cli: CliRunner, workdir: Path) -> None:
    _init(cli, "--database-url", "sqlite:///g.db")
    target = build_target("sqlite:///g.db", source="test", cwd=workdir)
    with open_database(target, OpenMode.READ_WRITE) as db:
        assert seed_run(db, load_builtin("telemetry-collection-v4")).phases_created == 10


def test_a_read_only_database_is_refused(seed_target: Database) -> None:
    with (
        open_database(seed_target.target, OpenMode.READ_ONLY) as read_only,
        pytest.raises(TargetError, match="opened read-only"),
    ):
        seed_run(read_only, load_builtin("telemetry-collection-v4"))


def test_a_database_without_the_tables_is_refused(workdir: Path) -> None:
    sqlite3.connect(workdir / "other.db").execute("CREATE TABLE notes (x)").connection.close()
    target = build_target("sqlite:///other.db", source="test", cwd=workdir)
    with open_database(target, OpenMode.READ_WRITE) as db, pytest.raises(SchemaError):
        seed_run(db, load_builtin("telemetry-collection-v4"))


def test_plan_of_a_builtin_and_the_list() -> None:
    plan = plan_of(load_builtin("telemetry-collection-v4"), builtin="telemetry-collection-v4")
    assert plan.tier_token_cap == 500000
    assert [p.phase_index for p in plan.phases] == list(range(10))
    assert plan.phases[5].scope.deliverables == [
        "examples/telemetry_utils/test_string_helper.py",
        "examples/telemetry_utils/conftest.py",
    ]
    names = [summary.name for summary in list_builtins()]
    assert names == list(BUILTIN_RUNS)


# --- the command line (needs `seed` registered in autopack/cli/app.py) -----------------------


def test_list_needs_no_database_and_touches_nothing(cli: CliRunner, workdir: Path) -> None:
    human = cli("seed", "list")
    assert human.exit_code == 0, human.stderr
    assert human.stderr == ""  # the list is the report: stdout
    for name in BUILTIN_RUNS:
        assert name in human.stdout
    result = cli("seed", "list", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    rows = {row["name"]: row for row in document["builtins"]}
    assert list(rows) == list(BUILTIN_RUNS)
    assert rows["telemetry-collection-v4"]["phases"] == 10
    assert rows["telemetry-collection-v5"]["phases"] == 25
    balanced = rows["telemetry-balanced"]["coverage"]
    assert balanced["covered_target_cells"] == balanced["target_cells"] == 18
    assert list(workdir.iterdir()) == []


def test_show_checks_a_file_without_a_database(cli: CliRunner, workdir: Path) -> None:
    (workdir / "my_phases.toml").write_text(MY_PHASES_TOML)
    result = cli("seed", "show", "--file", "my_phases.toml", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["file"] == str(workdir / "my_phases.toml")
    assert document["builtin"] is None
    assert [p["phase_id"] for p in document["phases"]] == ["my-p1", "my-p2"]
    assert document["coverage"]["by_deliverables"] == {"1": 1, "2-5": 1}
    human = cli("seed", "show", "telemetry-collection-v4")
    assert human.exit_code == 0, human.stderr
    assert "telemetry-p10-file-util" in human.stdout
    assert human.stderr == ""
    assert sorted(p.name for p in workdir.iterdir()) == ["my_phases.toml"]


def test_run_v4_prints_the_panel_the_real_mix_and_the_matrix(cli: CliRunner, workdir: Path) -> None:
    _init(cli, "--db", "seed")
    result = cli("seed", "run", "telemetry-collection-v4", "--db", "seed")
    assert result.exit_code == 0, result.stderr
    # The target panel on stderr, before acting; the report of what was created on stdout.
    assert str(workdir / SEED_FILE) in result.stderr
    assert "created run" not in result.stderr
    err = result.stdout
    assert "created run telemetry-collection-v4" in err
    assert "implementation: 6 phases (2 low, 4 medium, 0 high)" in err
    assert "tests: 3 phases (1 low, 2 medium, 0 high)" in err
    assert "docs: 1 phase (1 low, 0 medium, 0 high)" in err
    assert "deliverables per phase: 9 with 1, 1 with 2-5" in err
    assert "no high-complexity phase" in err
    assert "covers 6 of 18 target cells" in err
    assert "3 low, 3 medium" not in err
    assert "coverage" in err
    assert "total" in err
    assert _rows(workdir / SEED_FILE) == {"runs": 1, "tiers": 1, "phases": 10}


def test_run_json_document(cli: CliRunner, workdir: Path) -> None:
    _init(cli, "--db", "seed")
    result = cli("seed", "run", "telemetry-balanced", "--db", "seed", "--json")
    assert result.exit_code == 0, result.stderr
    assert "target database" not in result.stderr  # --json carries the panel instead
    document = json.loads(result.stdout)
    assert document["target"]["path"] == str(workdir / SEED_FILE)
    assert document["target"]["role"] == "seed"
    assert document["run_id"] == "telemetry-balanced"
    assert document["builtin"] == "telemetry-balanced"
    assert document["file"] is None
    assert document["tier_id"] == "T1"
    assert document["phases_created"] == 27
    first = document["phases"][0]
    assert set(first) == {
        "phase_index",
        "phase_id",
        "name",
        "task_category",
        "complexity",
        "deliverables",
        "deliverable_bucket",
        "state",
    }
    coverage = document["coverage"]
    assert coverage["missing_cells"] == []
    assert coverage["by_category"]["docs"] == {"phases": 9, "low": 3, "medium": 3, "high": 3}
    cell = coverage["cells"][0]
    assert set(cell) == {
        "category",
        "complexity",
        "deliverable_bucket",
        "required",
        "phases",
        "phase_ids",
    }
    assert (cell["category"], cell["complexity"], cell["deliverable_bucket"]) == (
        "implementation",
        "low",
        "1",
    )


def test_quiet_hides_the_panel(cli: CliRunner, workdir: Path) -> None:
    _init(cli, "--db", "seed")
    result = cli("seed", "run", "telemetry-collection-v4", "--db", "seed", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert "created run telemetry-collection-v4" in result.stdout


def test_run_refuses_an_existing_run_and_run_id_seeds_it_again(
    cli: CliRunner, workdir: Path
) -> None:
    _init(cli, "--db", "seed")
    assert cli("seed", "run", "telemetry-collection-v4", "--db", "seed").exit_code == 0
    before = (workdir / SEED_FILE).read_bytes()
    again = cli("seed", "run", "telemetry-collection-v4", "--db", "seed", "--quiet")
    _assert_refused(again, "run 'telemetry-collection-v4' already exists", "--run-id")
    assert _rows(workdir / SEED_FILE) == {"runs": 1, "tiers": 1, "phases": 10}
    assert (workdir / SEED_FILE).read_bytes() == before
    second = cli(
        "seed", "run", "telemetry-collection-v4", "--run-id", "v4-b", "--db", "seed", "--json"
    )
    assert second.exit_code == 0, second.stderr
    assert json.loads(second.stdout)["run_id"] == "v4-b"
    assert _rows(workdir / SEED_FILE) == {"runs": 2, "tiers": 2, "phases": 20}


def test_run_refuses_a_legacy_db_unless_forced(cli: CliRunner, workdir: Path) -> None:
    _init(cli, "--db", "legacy")
    refused = cli("seed", "run", "telemetry-collection-v4", "--db", "legacy")
    _assert_refused(refused, "does not act on a legacy database", "--force-role")
    assert "target database" in refused.stderr  # the panel was shown before refusing
    assert _rows(workdir / "autopack_legacy.db")["runs"] == 0
    forced = cli("seed", "run", "telemetry-collection-v4", "--db", "legacy", "--force-role")
    assert forced.exit_code == 0, forced.stderr


def test_run_refuses_an_unstamped_original_db_unless_forced(cli: CliRunner, workdir: Path) -> None:
    build_original_db(workdir / "orig.db")
    url = "sqlite:///orig.db"
    refused = cli("seed", "run", "telemetry-collection-v4", "--database-url", url, "--quiet")
    _assert_refused(refused, "legacy (unstamped, assumed)")
    forced = cli("seed", "run", "telemetry-collection-v4", "--database-url", url, "--force-role")
    assert forced.exit_code == 0, forced.stderr
    assert _rows(workdir / "orig.db")["runs"] == 3


def test_run_needs_an_existing_database(cli: CliRunner, workdir: Path) -> None:
    result = cli("seed", "run", "telemetry-collection-v4", "--db", "seed")
    _assert_refused(result, "no database file at", "db init")
    assert list(workdir.iterdir()) == []
    nothing = cli("seed", "run", "telemetry-collection-v4")
    _assert_refused(nothing, "no database given")
    assert list(workdir.iterdir()) == []


def test_run_a_user_file(cli: CliRunner, workdir: Path) -> None:
    _init(cli, "--db", "seed")
    (workdir / "my_phases.toml").write_text(MY_PHASES_TOML)
    result = cli("seed", "run", "--file", "my_phases.toml", "--db", "seed", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["run_id"] == "my-seed"
    assert document["file"] == str(workdir / "my_phases.toml")
    assert _rows(workdir / SEED_FILE) == {"runs": 1, "tiers": 1, "phases": 2}


def test_a_bad_user_file_writes_nothing(cli: CliRunner, workdir: Path) -> None:
    _init(cli, "--db", "seed")
    bad = MY_PHASES_TOML.replace('complexity = "Medium"', 'complexity = "extreme"')
    (workdir / "my_phases.toml").write_text(bad)
    before = (workdir / SEED_FILE).read_bytes()
    result = cli("seed", "run", "--file", "my_phases.toml", "--db", "seed")
    _assert_refused(
        result,
        "my_phases.toml is not a valid seed file",
        "phase 2 (id 'my-p2'): complexity must be low, medium or high (got 'extreme')",
        "nothing was written",
    )
    assert (workdir / SEED_FILE).read_bytes() == before


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["seed", "run", "--db", "seed"], "no seed run given"),
        (
            ["seed", "run", "telemetry-collection-v4", "--file", "x.toml", "--db", "seed"],
            "not both",
        ),
        (["seed", "run", "telemetry-v4", "--db", "seed"], "no built-in seed run named"),
        (["seed", "run", "--file", "absent.toml", "--db", "seed"], "no seed file at"),
        (["seed", "run", "--file", "phases.yaml", "--db", "seed"], "neither a .toml nor"),
        (
            ["seed", "run", "telemetry-collection-v4", "--run-id", "a b", "--db", "seed"],
            "invalid --run-id 'a b'",
        ),
        (["seed", "show"], "no seed run given"),
    ],
)
def test_bad_invocations_are_refused_before_any_database_is_opened(
    cli: CliRunner, workdir: Path, args: list[str], fragment: str
) -> None:
    result = cli(*args)
    _assert_refused(result, fragment)
    assert list(workdir.iterdir()) == []


@pytest.mark.postgres
def test_seed_run_on_postgres(cli: CliRunner, postgres_url: str, workdir: Path) -> None:
    assert cli("db", "init", "--database-url", postgres_url, "--role", "seed").exit_code == 0
    result = cli("seed", "run", "telemetry-collection-v4", "--database-url", postgres_url, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["phases_created"] == 10
    again = cli("seed", "run", "telemetry-collection-v4", "--database-url", postgres_url)
    _assert_refused(again, "already exists")


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        (
            "huge.toml",
            MY_PHASES_TOML.replace("token_cap = 200000", f"token_cap = {2**63}"),
            "run.token_cap",
        ),
        (
            "huge_tier.toml",
            MY_PHASES_TOML.replace("ci_run_cap = 4", f"ci_run_cap = {2**31}"),
            "tier.ci_run_cap",
        ),
        ("deep.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("deep.toml", "x = " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply"),
    ],
)
def test_show_and_run_agree_on_hostile_files_and_refuse_them(
    cli: CliRunner, workdir: Path, name: str, text: str, reason: str
) -> None:
    (workdir / name).write_text(text)
    _init(cli, "--db", "seed")
    commands: list[tuple[str, ...]] = [
        ("seed", "show", "--file", name),
        ("seed", "run", "--file", name, "--db", "seed"),
    ]
    for command in commands:
        result = cli(*command)
        assert result.exit_code == 2, result.stderr
        assert reason in result.stderr
    assert cli("db", "identity", "--db", "seed", "--json").exit_code == 0
    with sqlite3.connect(workdir / SEED_FILE) as connection:
        assert connection.execute("SELECT count(*) FROM runs").fetchone() == (0,)
