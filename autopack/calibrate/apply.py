"""`calibrate apply`, `calibrate sets`, `calibrate activate`: the DB's coefficient sets.

Applying is the explicit, recorded act: the proposal's set becomes a new row of
`autopack_coefficient_sets` (name, date, the proposal file's sha256, the sample count, format
and estimator versions) and the active set for its model, in one transaction. Without
`approve` nothing is written: the result only shows what would change. Activating another set
(or a built-in name, which means "no DB set": the built-in default) is the one-command rollback.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Connection

from autopack.calibrate.proposal_file import ProposalError, load_proposal
from autopack.db.clock import UtcTimestamp
from autopack.db.engine import Database, translated_errors
from autopack.db.models import utc_now
from autopack.errors import ConfigError, SchemaError
from autopack.estimator import CoefficientSet, builtin_set_names, coefficient_set_hash
from autopack.estimator.active import COEFFICIENT_SETS, TABLE_NAME, resolve_coefficients
from autopack.estimator.coefficients import ESTIMATOR_VERSION, coefficient_set_to_json


class GroupChange(BaseModel):
    """Old and new numbers of one (category, complexity) group."""

    category: str
    complexity: str
    old_scale: float
    new_scale: float
    old_buffer: float
    new_buffer: float
    old_base: int | None
    new_base: int | None
    max_deliverables: int | None


class ApplyResult(BaseModel):
    status: Literal["would_apply", "applied", "already_applied"]
    name: str
    model: str
    replaces: str
    """The set in force for the model before (a DB set, or the built-in default)."""
    proposal_sha256: str
    sample_count: int
    changes: list[GroupChange]
    message: str


class StoredSet(BaseModel):
    name: str
    model: str
    active: bool
    created_at: UtcTimestamp
    activated_at: UtcTimestamp | None
    sample_count: int
    proposal_sha256: str | None
    format_version: int
    estimator_version: str
    coefficient_set_hash: str


class ActivateResult(BaseModel):
    status: Literal["would_activate", "activated", "already_active"]
    model: str
    name: str
    """The set now in force (a DB set, or the built-in default)."""
    previous: str
    message: str


def _require_table(connection: Connection) -> None:
    if not sa.inspect(connection).has_table(TABLE_NAME):
        raise SchemaError(
            f"this database has no {TABLE_NAME} table yet.",
            hint="autopack db upgrade adds it (schema 0007)",
        )


def _changes(old: CoefficientSet, new: CoefficientSet) -> list[GroupChange]:
    keys = {
        (category, complexity)
        for table in (old.calibration, new.calibration, old.budget.base, new.budget.base)
        for category, row in table.items()
        for complexity in row
    }
    changes: list[GroupChange] = []
    for category, complexity in sorted(keys):
        before = old.calibration.get(category, {}).get(complexity)
        after = new.calibration.get(category, {}).get(complexity)
        old_base = old.budget.base.get(category, {}).get(complexity)
        new_base = new.budget.base.get(category, {}).get(complexity)
        change = GroupChange(
            category=category,
            complexity=complexity,
            old_scale=before.scale if before else 1.0,
            new_scale=after.scale if after else 1.0,
            old_buffer=(before.buffer if before and before.buffer else old.budget.buffer),
            new_buffer=(after.buffer if after and after.buffer else new.budget.buffer),
            old_base=old_base,
            new_base=new_base,
            max_deliverables=after.max_deliverables if after else None,
        )
        if (change.old_scale, change.old_buffer, change.old_base) != (
            change.new_scale,
            change.new_buffer,
            change.new_base,
        ):
            changes.append(change)
    return changes


def apply_proposal(db: Database, proposal_file: Path, *, approve: bool) -> ApplyResult:
    """Store the proposal's set and make it the DB's active set for its model (if `approve`)."""
    loaded = load_proposal(proposal_file)
    proposal, coefficients = loaded.proposal, loaded.coefficients
    if not proposal.changed:
        raise ProposalError(
            f"proposal {proposal_file} proposes no change: {proposal.verdict}.",
            hint="there is nothing to apply; collect more samples and propose again",
        )
    if coefficients.name in builtin_set_names():
        raise ProposalError(
            f"proposal {proposal_file} names its set {coefficients.name!r}, a built-in name.",
            hint="propose again; calibrated sets are named calibrated-<model>-<stamp>",
        )
    model = proposal.samples.model
    with translated_errors(db), db.engine.begin() as connection:
        _require_table(connection)
        before = resolve_coefficients(connection, model=model)
        existing = connection.execute(
            sa.select(COEFFICIENT_SETS.c.name, COEFFICIENT_SETS.c.active).where(
                sa.or_(
                    COEFFICIENT_SETS.c.proposal_sha256 == loaded.sha256,
                    COEFFICIENT_SETS.c.name == coefficients.name,
                )
            )
        ).first()
        result = ApplyResult(
            status="would_apply",
            name=coefficients.name,
            model=model,
            replaces=before.name,
            proposal_sha256=loaded.sha256,
            sample_count=proposal.samples.clean,
            changes=_changes(before, coefficients),
            message="",
        )
        if existing is not None:
            state = "and is active" if existing.active else "but is not active"
            result.status = "already_applied"
            result.message = (
                f"nothing to do: this proposal was already applied as {existing.name!r} {state}"
                + ("" if existing.active else f" (autopack calibrate activate {existing.name})")
            )
            return result
        if not approve:
            result.message = (
                f"would store {coefficients.name!r} and make it the active set for {model} "
                "(nothing written; pass --approve to apply)"
            )
            return result
        now = utc_now()
        _deactivate(connection, model)
        connection.execute(
            sa.insert(COEFFICIENT_SETS).values(
                name=coefficients.name,
                model=model,
                created_at=now,
                active=True,
                activated_at=now,
                proposal_sha256=loaded.sha256,
                sample_count=proposal.samples.clean,
                format_version=coefficients.schema_version,
                estimator_version=ESTIMATOR_VERSION,
                coefficient_set_hash=coefficient_set_hash(coefficients),
                document=coefficient_set_to_json(coefficients),
            )
        )
        result.status = "applied"
        result.message = (
            f"applied: {coefficients.name!r} is now the active set for {model} "
            f"(was {before.name!r}; `autopack calibrate activate {before.name} --approve` "
            "switches back)"
        )
        return result


def _deactivate(connection: Connection, model: str) -> None:
    connection.execute(
        sa.update(COEFFICIENT_SETS)
        .where(COEFFICIENT_SETS.c.model == model, COEFFICIENT_SETS.c.active == sa.true())
        .values(active=False)
    )


def list_sets(db: Database) -> list[StoredSet]:
    """The DB's stored sets, newest first (an empty list before the first apply)."""
    with translated_errors(db), db.engine.connect() as connection:
        if not sa.inspect(connection).has_table(TABLE_NAME):
            return []
        rows = connection.execute(
            sa.select(COEFFICIENT_SETS).order_by(
                COEFFICIENT_SETS.c.created_at.desc(), COEFFICIENT_SETS.c.id.desc()
            )
        ).all()
    return [
        StoredSet(
            name=row.name,
            model=row.model,
            active=bool(row.active),
            created_at=row.created_at,
            activated_at=row.activated_at,
            sample_count=row.sample_count,
            proposal_sha256=row.proposal_sha256,
            format_version=row.format_version,
            estimator_version=row.estimator_version,
            coefficient_set_hash=row.coefficient_set_hash,
        )
        for row in rows
    ]


@dataclass(frozen=True)
class _Target:
    model: str
    name: str | None
    """A DB set's name, or None for the built-in default."""


def activate_set(db: Database, name: str, *, model: str | None, approve: bool) -> ActivateResult:
    """Make a stored set the active one for its model; a built-in name removes the DB's
    active set for `model`, so the built-in default is used again."""
    with translated_errors(db), db.engine.begin() as connection:
        _require_table(connection)
        target = _activation_target(connection, name, model)
        previous = resolve_coefficients(connection, model=target.model).name
        shown = target.name or name
        result = ActivateResult(
            status="would_activate", model=target.model, name=shown, previous=previous, message=""
        )
        if previous == shown:
            result.status = "already_active"
            result.message = f"nothing to do: {shown!r} is already in force for {target.model}"
            return result
        if not approve:
            result.message = (
                f"would switch {target.model} from {previous!r} to {shown!r} "
                "(nothing written; pass --approve)"
            )
            return result
        _deactivate(connection, target.model)
        if target.name is not None:
            connection.execute(
                sa.update(COEFFICIENT_SETS)
                .where(COEFFICIENT_SETS.c.name == target.name)
                .values(active=True, activated_at=utc_now())
            )
        result.status = "activated"
        result.message = f"{target.model} now uses {shown!r} (was {previous!r})"
        return result


def _activation_target(connection: Connection, name: str, model: str | None) -> _Target:
    row = connection.execute(
        sa.select(COEFFICIENT_SETS.c.name, COEFFICIENT_SETS.c.model).where(
            COEFFICIENT_SETS.c.name == name
        )
    ).first()
    if row is not None:
        if model is not None and model != row.model:
            raise ConfigError(
                f"set {name!r} was calibrated for {row.model}, not {model}.",
                hint="a set is applied per model; drop --model or name a set of that model",
            )
        return _Target(str(row.model), str(row.name))
    if name not in builtin_set_names():
        raise ConfigError(
            f"there is no coefficient set named {name!r} in this database or built in.",
            hint="autopack calibrate sets lists them",
        )
    if name != "default":
        raise ConfigError(
            f"only the built-in default can be made active by name ({name!r} is built in).",
            hint="use --coefficients NAME on a command to try another built-in set",
        )
    if model is not None:
        return _Target(model, None)
    active = [
        str(value)
        for value in connection.execute(
            sa.select(COEFFICIENT_SETS.c.model).where(COEFFICIENT_SETS.c.active == sa.true())
        ).scalars()
    ]
    if len(active) != 1:
        raise ConfigError(
            "say which model goes back to the built-in default "
            f"({len(active)} models have an active set).",
            hint="add --model MODEL",
        )
    return _Target(active[0], None)
