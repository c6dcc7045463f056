"""Rendering `calibrate …`: the proposal's files (Markdown, JSON, charts) and Rich tables.

The report (tables, verdict, the paths written) and `--json` documents go to stdout.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.markup import escape

from autopack.calibrate.apply import ActivateResult, ApplyResult, StoredSet
from autopack.calibrate.backtest import BacktestResult, SetScore
from autopack.calibrate.report import GroupEvidence, Proposal
from autopack.calibrate.size_term import SizeTermBacktest
from autopack.console import report_console, warn
from autopack.errors import ConfigError
from autopack.output_file import open_output
from autopack.render.fit import Column, fit_table

FILE_PREFIX = "estimator_calibration_proposal_"


def output_directory(path: Path) -> Path:
    """The absolute `--output-dir`, refused (exit 2) before any work when it is not a folder."""
    directory = path.expanduser().absolute()
    if not directory.is_dir():
        raise ConfigError(
            f"--output-dir {directory} is not a directory.",
            hint=f"create it first (mkdir -p {directory})",
        )
    return directory


def _write_atomically(path: Path, text: str) -> Path:
    with open_output(path) as file:  # a temporary file beside it, renamed when complete
        file.stream.write(text.encode("utf-8"))
    return file.path


def write_proposal_files(
    proposal: Proposal, directory: Path, stamp: str, *, charts: bool
) -> list[Path]:
    """Write the charts, the JSON and the Markdown (in that order, each atomically); on any
    failure remove what was already written, so nothing is left half-done."""
    stem = f"{FILE_PREFIX}{stamp}"
    written: list[Path] = []
    try:
        if charts and proposal.chart_data is not None:
            from autopack.calibrate.charts import draw_charts

            written.extend(draw_charts(proposal.chart_data, directory, stem))
            proposal.charts = [path.name for path in written]
        written.append(_write_atomically(directory / f"{stem}.json", proposal.document_text()))
        markdown = proposal_markdown(proposal)
        written.append(_write_atomically(directory / f"{stem}.md", markdown))
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot write the proposal into {directory}: {exc.strerror or exc}.",
            hint="check the folder's permissions and free space",
        ) from exc
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _percent(value: float) -> str:
    return f"{value * 100:.1f} %"


def _score_rows(score: SetScore) -> list[str]:
    return [
        f"{score.smape_median:.1f} %",
        f"{score.smape_mean:.1f} %",
        _percent(score.underestimation_rate),
        _percent(score.truncation_rate),
        f"{score.waste_median:.2f}x",
    ]


SCORE_NAMES = (
    "median SMAPE",
    "mean SMAPE",
    "underestimation rate",
    "truncation rate (at its budget)",
    "median waste (budget / actual)",
)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _interval(group: GroupEvidence) -> str:
    if group.step_interval is None:
        return "-"
    low, high = group.step_interval
    return f"{low:.2f}-{high:.2f}"


def _budget(group: GroupEvidence) -> str:
    before, after = group.current_budget, group.proposed_budget
    if group.budget_rule == "unchanged":
        return f"{before.base} / {before.buffer:g} (kept)"
    return f"{before.base} / {before.buffer:g} -> {after.base} / {after.buffer:g}"


def proposal_markdown(proposal: Proposal) -> str:
    """The proposal as a Markdown report (every score it shows is defined in it)."""
    samples, method, backtest = proposal.samples, proposal.method, proposal.backtest
    lines = [
        f"# Estimator calibration proposal — {samples.model}",
        "",
        f"Generated {proposal.generated_at} from {proposal.target.get('url', '?')}. "
        f"Measured against the set **{proposal.base_set['name']}** "
        f"(`{proposal.base_set['hash']}`); proposed set: "
        f"**{proposal.coefficients['name']}**.",
        "",
        f"**Verdict:** {proposal.verdict}.",
        "",
        "Nothing has been changed. To use this set, review it and run "
        "`autopack calibrate apply <this .json> --db <target> --approve`.",
        "",
        "## Samples",
        "",
        f"- {samples.clean} clean rows (success, not truncated) of {samples.model}"
        + (" (phase COMPLETE instead of builder success)" if samples.require_phase_complete else "")
        + f", and {samples.censored} truncated rows (lower bounds, used for budgets only), "
        f"from {samples.runs} run(s).",
        f"- {samples.without_paths} clean rows had no deliverable paths (imported history) and "
        "were costed as that many generic new files of their category's usual kind.",
        f"- {samples.excluded_without_deliverables} rows without deliverables were left out "
        "(the estimator gives them its empty-phase default).",
        "- Other models' clean rows: "
        + (", ".join(f"{k} {v}" for k, v in samples.models.items() if k != samples.model) or "none")
        + (
            "; simulated models included."
            if samples.include_simulated
            else "; simulated (demo) models excluded."
        ),
        f"- Coverage: {proposal.coverage.get('verdict', '')}.",
    ]
    if not proposal.coverage.get("ready", False):
        lines.append(
            "- **Warning:** the samples do not cover every category, complexity and deliverable "
            "bucket; groups without evidence keep their current coefficients."
        )
    if samples.actual_rounded:
        lines.append(
            "- Actual outputs were placed on a log grid of 32 steps per doubling (within "
            "±1.1 %) to keep the aggregated samples few."
        )
    lines += [
        "",
        "## Backtest (held-out rows)",
        "",
        f"Split: {backtest.split}. Every proposed figure is on rows the fit did not see. "
        f"n = {backtest.n} clean rows; the truncation rate also counts {backtest.censored} "
        "truncated rows.",
        "",
        "| metric | current | proposed |",
        "|---|---:|---:|",
    ]
    for name, now, then in zip(
        SCORE_NAMES, _score_rows(backtest.current), _score_rows(backtest.proposed), strict=True
    ):
        lines.append(f"| {name} | {now} | {then} |")
    lines += [
        "",
        "Definitions: SMAPE = 200 × |actual − estimate| / (actual + estimate), in percent "
        "(0–200). Underestimation = the share of clean rows whose actual exceeds the estimate. "
        "Truncation = the share of rows whose need exceeds the budget the set selects (a "
        f"truncated row needs at least {method.censored_need:g} × its output). Waste = budget / "
        "actual. An estimate aimed at the median is under about half the time by design: the "
        "budget, not the estimate, is what protects against truncation.",
        "",
        "Damping candidates (median SMAPE on held-out rows): "
        + ", ".join(f"×{d}: {v:.1f} %" for d, v in method.smape_by_damping.items())
        + f". Chosen: {method.damping:g}.",
        "",
    ]
    if proposal.backtest_size_term is not None:
        lines += _size_term_markdown(proposal.backtest_size_term)
    lines += [
        "## Groups",
        "",
        "| group | n | ratio median (p25–p75) | rule | step (95 % interval) | scale now → proposed "
        "| up to deliverables | budget base / buffer |",
        "|---|---:|---|---|---|---|---:|---|",
    ]
    for group in proposal.groups:
        lines.append(
            f"| {group.category}/{group.complexity} | {group.n} | "
            f"{_ratio(group.ratio_median)} ({_ratio(group.ratio_p25)}–{_ratio(group.ratio_p75)})"
            f" | {group.rule} | ×{group.step:.3f} ({_interval(group)}) | "
            f"{group.current_scale:g} → {group.proposed_scale:g} | {group.max_deliverables} | "
            f"{_budget(group)} |"
        )
    lines += [
        "",
        "Columns: *ratio* = actual / what the current set predicts from the row's stored "
        "features (not the prediction logged at the time). *step* = the multiplier on today's "
        "estimate; its 95 % interval resamples the evidence 400 times (200 for groups of more "
        "than 10,000 rows). *rule*: own = the group's "
        "own evidence shrunk toward its category; pooled = too few rows, the category's; "
        "unchanged = no evidence.",
        "",
        "## Method",
        "",
        f"- **Shrinkage and steps.** {method.shrinkage_rule}",
        f"- **Budgets.** {method.budget_rule} A group with too little evidence whose estimate "
        "is lowered has its buffer raised by the same step, so its budgets stay as today.",
        f"- Thresholds: --min-samples {method.min_samples}, --min-group-samples "
        f"{method.min_group_samples}.",
    ]
    if proposal.charts:
        lines += ["", "## Charts", ""]
        for name in proposal.charts:
            lines += [f"![{name}]({name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _size_term_markdown(term: SizeTermBacktest) -> list[str]:
    lines = [
        "## Prompt size term (held-out rows with input tokens)",
        "",
        f"**{term.verdict[:1].upper()}{term.verdict[1:]}.**",
        "",
    ]
    if term.current is None or term.proposed is None or term.proposed_with_size_term is None:
        lines += [
            f"{term.rows_with_input_tokens} of {term.qualifying_rows} rows carry input tokens. "
            "Nothing else in this proposal depends on them.",
            "",
        ]
        return lines
    lines += [
        f"{term.rows_with_input_tokens} of {term.qualifying_rows} rows carry input tokens "
        f"({term.n} clean, {term.censored} truncated); same split as above ({term.split}). "
        f"The term multiplies the proposed estimate by {term.level:g} × (input tokens / "
        f"{term.reference_input_tokens:g}) ^ {term.exponent:g} (exponent bounded to "
        f"{term.exponent_bounds[0]:g} … {term.exponent_bounds[1]:g}); in each fold it is "
        "fitted on the other folds only.",
        "",
        "| metric | current | proposed | proposed + size term |",
        "|---|---:|---:|---:|",
    ]
    for name, now, then, sized in zip(
        SCORE_NAMES,
        _score_rows(term.current),
        _score_rows(term.proposed),
        _score_rows(term.proposed_with_size_term),
        strict=True,
    ):
        lines.append(f"| {name} | {now} | {then} | {sized} |")
    lines += [
        "",
        "The term is reported, not proposed: the proposed set does not contain it, and rows "
        "without input tokens are estimated by the proposal alone.",
        "",
    ]
    return lines


_SIZE_TERM_COLUMNS = (
    Column("metric", "text"),
    Column("current", justify="right"),
    Column("proposed", justify="right"),
    Column("+ size term", justify="right"),
)


def show_size_term(term: SizeTermBacktest) -> None:
    out = report_console()
    if term.current is None or term.proposed is None or term.proposed_with_size_term is None:
        out.print(f"size term: {escape(term.verdict)}")
        return
    rows = zip(
        SCORE_NAMES,
        _score_rows(term.current),
        _score_rows(term.proposed),
        _score_rows(term.proposed_with_size_term),
        strict=True,
    )
    title = f"size term: {term.n} clean rows with input tokens (exponent {term.exponent:g})"
    out.print(fit_table(_SIZE_TERM_COLUMNS, list(rows), width=out.width, title=title))
    style = "green" if term.helps else "yellow"
    out.print(f"[{style}]{escape(term.verdict)} (reported, not proposed)[/]")


_PROPOSAL_COLUMNS = (
    Column("group", "id"),
    Column("n", justify="right"),
    Column("ratio", justify="right", priority=1),
    Column("rule", "id", priority=2),
    Column("step", justify="right"),
    Column("budget base / buffer", priority=3),
)


def show_proposal(proposal: Proposal, written: Sequence[Path]) -> None:
    """The proposal's groups, its backtest, the verdict and the files written (stdout)."""
    out = report_console()
    rows = [
        (
            escape(f"{group.category}/{group.complexity}"),
            str(group.n),
            _ratio(group.ratio_median),
            escape(group.rule),
            f"×{group.step:.2f}",
            escape(_budget(group)),
        )
        for group in proposal.groups
    ]
    title = f"calibration proposal: {escape(proposal.samples.model)}"
    out.print(fit_table(_PROPOSAL_COLUMNS, rows, width=out.width, title=title))
    show_backtest(proposal.backtest)
    if proposal.backtest_size_term is not None:
        show_size_term(proposal.backtest_size_term)
    style = "green" if proposal.changed else "yellow"
    out.print(f"[bold {style}]{escape(proposal.verdict)}[/]")
    if not proposal.coverage.get("ready", False):
        warn(f"samples not representative — {proposal.coverage.get('verdict')}")
    for path in written:
        out.print(f"wrote {escape(str(path))}", soft_wrap=True)  # the path stays whole


_BACKTEST_COLUMNS = (
    Column("metric", "text"),
    Column("current", justify="right"),
    Column("proposed", justify="right"),
)


def show_backtest(result: BacktestResult) -> None:
    rows = zip(SCORE_NAMES, _score_rows(result.current), _score_rows(result.proposed), strict=True)
    # The sets' names go in the title: as headers they would not leave the metrics room.
    names = [
        f"{label} = {escape(name)}"
        for label, name in (("current", result.current_set), ("proposed", result.proposed_set))
        if name
    ]
    title = f"backtest: {result.n} clean rows ({escape(result.split)})"
    if names:
        title += "; " + ", ".join(names)
    out = report_console()
    out.print(fit_table(_BACKTEST_COLUMNS, list(rows), width=out.width, title=title))


_APPLY_COLUMNS = (
    Column("group", "id"),
    Column("scale"),
    Column("buffer", priority=2),
    Column("budget base", priority=3),
    Column("up to deliverables", justify="right", priority=1),
)


def show_apply(result: ApplyResult) -> None:
    out = report_console()
    if result.status == "already_applied":
        out.print(escape(result.message))
        return
    rows = [
        (
            escape(f"{change.category}/{change.complexity}"),
            f"{change.old_scale:g} -> {change.new_scale:g}",
            f"{change.old_buffer:g} -> {change.new_buffer:g}",
            f"{change.old_base if change.old_base is not None else 'fallback'} -> "
            f"{change.new_base if change.new_base is not None else 'fallback'}",
            str(change.max_deliverables or "-"),
        )
        for change in result.changes
    ]
    title = f"{escape(result.replaces)} -> {escape(result.name)} ({escape(result.model)})"
    out.print(fit_table(_APPLY_COLUMNS, rows, width=out.width, title=title))
    out.print(escape(result.message))


_SET_COLUMNS = (
    Column("name", "id"),
    Column("model", "id"),
    Column("active"),
    Column("since", priority=2),
    Column("samples", justify="right", priority=3),
    Column("created", priority=1),
)


def show_sets(sets: Sequence[StoredSet]) -> None:
    out = report_console()
    if not sets:
        out.print("no coefficient sets stored: every model uses the built-in default")
        return
    rows = [
        (
            escape(item.name),
            escape(item.model),
            "yes" if item.active else "",
            item.activated_at.strftime("%Y-%m-%d %H:%M")
            if item.active and item.activated_at
            else "",
            str(item.sample_count),
            item.created_at.strftime("%Y-%m-%d %H:%M"),
        )
        for item in sets
    ]
    title = "coefficient sets in this database"
    out.print(fit_table(_SET_COLUMNS, rows, width=out.width, title=title))
    out.print("models without an active set use the built-in default")


def show_activate(result: ActivateResult) -> None:
    report_console().print(escape(result.message))
