"""Reading a saved proposal back (`calibrate backtest`, `calibrate apply`), with its checks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from autopack.calibrate.report import PROPOSAL_FORMAT, PROPOSAL_FORMAT_VERSION, Proposal
from autopack.errors import ConfigError
from autopack.estimator import CoefficientSet
from autopack.estimator.coefficients import ESTIMATOR_VERSION, LATEST_FORMAT_VERSION


class ProposalError(ConfigError):
    """A proposal file cannot be used: missing, unreadable, or made for other rules."""


@dataclass(frozen=True)
class LoadedProposal:
    path: Path
    sha256: str
    proposal: Proposal
    coefficients: CoefficientSet


def load_proposal(path: Path) -> LoadedProposal:
    """Read, hash and check a proposal file; refuse one this autopack cannot apply."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ProposalError(
            f"proposal file {path} does not exist.",
            hint="give the .json that `autopack calibrate propose` wrote",
        ) from exc
    except OSError as exc:
        raise ProposalError(
            f"proposal file {path} cannot be read ({exc.__class__.__name__}).",
            hint="check the path and its permissions",
        ) from exc
    try:
        data: Any = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProposalError(
            f"proposal file {path} is not JSON.",
            hint="give the .json that `autopack calibrate propose` wrote (not the .md)",
        ) from exc
    if not isinstance(data, dict) or data.get("format") != PROPOSAL_FORMAT:
        raise ProposalError(
            f"{path} is not an estimator calibration proposal.",
            hint="give the .json that `autopack calibrate propose` wrote",
        )
    _check_versions(path, data)
    try:
        proposal = Proposal.model_validate(data)
        coefficients = CoefficientSet.model_validate(proposal.coefficients)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(item) for item in first["loc"])
        raise ProposalError(
            f"proposal file {path} is invalid at {where}: {first['msg']}.",
            hint="propose again; a proposal file is not meant to be edited",
        ) from exc
    return LoadedProposal(path, hashlib.sha256(raw).hexdigest(), proposal, coefficients)


def _check_versions(path: Path, data: dict[str, Any]) -> None:
    version = data.get("format_version")
    if version != PROPOSAL_FORMAT_VERSION:
        raise ProposalError(
            f"proposal {path} has format version {version!r}; this autopack reads version "
            f"{PROPOSAL_FORMAT_VERSION}.",
            hint="propose again with this autopack",
        )
    estimator = data.get("estimator_version")
    if estimator != ESTIMATOR_VERSION:
        raise ProposalError(
            f"proposal {path} was made for estimator version {estimator!r}; this autopack's "
            f"estimator is version {ESTIMATOR_VERSION}, so its coefficients would not mean the "
            "same.",
            hint="propose again with this autopack",
        )
    coefficients = data.get("coefficients")
    schema = coefficients.get("schema_version") if isinstance(coefficients, dict) else None
    if not isinstance(schema, int) or schema > LATEST_FORMAT_VERSION:
        raise ProposalError(
            f"proposal {path} holds a coefficient set of format {schema!r}; this autopack "
            f"reads formats up to {LATEST_FORMAT_VERSION}.",
            hint="propose again with this autopack",
        )
