"""The builder's executor: prompt, reply parsing, writing into the workspace, verification.

Plain Python (no CLI or terminal code, no database code). The pure steps of one phase:

    from autopack.executor import (
        PhaseSpec, build_prompt, parse_reply, write_files_atomically, verify_deliverables,
    )

    phase = PhaseSpec.from_scope(run_id=..., phase_id=..., name=..., description=...,
                                 task_category="tests", complexity="low", scope=scope_json)
    prompt = build_prompt(phase, workspace)            # -> BuiltPrompt(system, user, …)
    reply = parse_reply(llm_text)                      # -> ChangeSet(files, format, problems)
    if reply.ok:
        write_files_atomically(reply.files, phase.scope_paths, workspace)
        result = verify_deliverables(phase.deliverables, workspace,
                                     is_tests_phase=phase.is_tests_phase, pytest_timeout_s=120)

See docs/executor.md for the reply formats, the path rules and verification.
"""

from autopack.executor.output import ChangeSet, ReplyFile, ReplyFormat, parse_reply
from autopack.executor.prompts import (
    NDJSON_MIN_DELIVERABLES,
    BuiltPrompt,
    PhaseSpec,
    PhaseSpecError,
    build_prompt,
    deliverable_paths,
)
from autopack.executor.verify import (
    Check,
    VerificationResult,
    child_environment,
    is_test_file,
    verify_deliverables,
)
from autopack.executor.workspace import (
    ScopeViolation,
    WorkspaceError,
    check_paths,
    dirty_scope_paths,
    normalize_relative_path,
    write_files_atomically,
)

__all__ = [
    "NDJSON_MIN_DELIVERABLES",
    "BuiltPrompt",
    "ChangeSet",
    "Check",
    "PhaseSpec",
    "PhaseSpecError",
    "ReplyFile",
    "ReplyFormat",
    "ScopeViolation",
    "VerificationResult",
    "WorkspaceError",
    "build_prompt",
    "check_paths",
    "child_environment",
    "deliverable_paths",
    "dirty_scope_paths",
    "is_test_file",
    "normalize_relative_path",
    "parse_reply",
    "verify_deliverables",
    "write_files_atomically",
]
