"""Backlogs for drain tests: runs of tiny phases that a constant fake reply can satisfy.

Every phase's deliverable is `shared/out.py` (scope `shared/`) unless told otherwise, so one
default reply from the fake LLM completes any of them; a phase whose deliverable is
`shared/never.py` fails verification with the same message every time (one fingerprint).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from autopack.db.models import DrainResult, Phase, Run, table_of
from autopack.seed.model import SeedPhase, SeedRunSpec, SeedScope, create_seed_run
from tests.fake_llm import Reply

GOOD = "shared/out.py"
NEVER = "shared/never.py"
GOOD_REPLY = json.dumps({"files": [{"path": GOOD, "content": "x = 1\n"}]})


def good_reply(output_tokens: int = 300, delay_s: float = 0.0) -> Reply:
    return Reply.ok(GOOD_REPLY, output_tokens=output_tokens, delay_s=delay_s)


def add_run(
    engine: Engine,
    run_id: str,
    phases: int,
    *,
    deliverables: dict[int, str] | None = None,
    independent: bool = False,
) -> None:
    """A run of `phases` phases (index 0…), deliverable GOOD unless overridden by index."""
    overrides = deliverables or {}
    spec = SeedRunSpec(
        run_id=run_id,
        phases=[
            SeedPhase(
                phase_id=f"{run_id}-p{index}",
                name=f"phase {index}",
                description=f"Write module {index}",
                task_category="implementation",
                complexity="low",
                scope=SeedScope(paths=["shared/"], deliverables=[overrides.get(index, GOOD)]),
                phase_index=index,
            )
            for index in range(phases)
        ],
    )
    create_seed_run(engine, spec)
    if independent:
        phases_table = table_of(Phase)
        with engine.begin() as connection:
            connection.execute(
                sa.update(phases_table)
                .where(phases_table.c.run_id == run_id)
                .values(scope={"paths": ["shared/"], "deliverables": [GOOD], "independent": True})
            )


def set_phase(engine: Engine, run_id: str, index: int, **values: Any) -> None:
    phases = table_of(Phase)
    with engine.begin() as connection:
        connection.execute(
            sa.update(phases)
            .where(phases.c.run_id == run_id, phases.c.phase_index == index)
            .values(**values)
        )


def set_run(engine: Engine, run_id: str, **values: Any) -> None:
    runs = table_of(Run)
    with engine.begin() as connection:
        connection.execute(sa.update(runs).where(runs.c.id == run_id).values(**values))


def results(engine: Engine, session_id: str | None = None) -> list[Any]:
    table = table_of(DrainResult)
    query = sa.select(table).order_by(table.c.session_id, table.c.seq)
    if session_id is not None:
        query = query.where(table.c.session_id == session_id)
    with engine.connect() as connection:
        return list(connection.execute(query).all())


def states(engine: Engine, run_ids: Iterable[str] | None = None) -> dict[str, str]:
    phases = table_of(Phase)
    query = sa.select(phases.c.phase_id, phases.c.state)
    if run_ids is not None:
        query = query.where(phases.c.run_id.in_(list(run_ids)))
    with engine.connect() as connection:
        return {row.phase_id: row.state for row in connection.execute(query)}
