"""Metrics bundle, Markdown report and the files at the end of a run (all computed from the per-item records alone)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cerm._errors import ConfigurationError
from cerm.eval import _metrics as m
from cerm.eval._metrics import PairStats, Record, TiePolicy, UnscorablePolicy
from cerm.eval._presets import Figure, PresetScore, Table, preset_name, score_benchmark

REPORT_FILE = "report.md"
METRICS_FILE = "metrics.json"


def _json_ready(value: Any) -> Any:
    if isinstance(value, (PairStats, PresetScore)):
        return value.to_dict()
    if isinstance(value, m.BestOfNPoint):
        return {
            "n_candidates": value.n_candidates,
            "sets": value.sets,
            "items": value.items,
            "accuracy": value.accuracy,
            "unscorable_sets": value.unscorable_sets,
            "baseline": value.baseline,
        }
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def _response_model(record: Record) -> str | None:
    value = record.get("meta", {}).get("response_model")
    return None if value is None else str(value)


def compute_metrics(
    records: Sequence[Record],
    tie_policy: TiePolicy = "half",
    unscorable_policy: UnscorablePolicy = "wrong",
    seed: int = 0,
    benchmark: str | None = None,
    rule: str | None = None,
) -> dict[str, Any]:
    """Every metric of the report, JSON-ready: the benchmark preset's official figures (with ``benchmark``), pairwise
    accuracy with coverage (overall and per category / subset / response model), judgment counts with unscorable and
    error reasons, Best-of-N (full sets and the curve), RM-Bench grid, length bias."""
    m.check_policies(tie_policy, unscorable_policy)
    all_pairs = m.pairs(records)
    out: dict[str, Any] = {
        "benchmark": score_benchmark(benchmark, records, rule) if benchmark else None,
        "items": len(records),
        "tie_policy": tie_policy,
        "unscorable_policy": unscorable_policy,
        "pairwise": m.pair_stats(all_pairs, tie_policy, unscorable_policy),
        "pairwise_by_tie_policy": {
            policy: m.pair_stats(all_pairs, policy, unscorable_policy)  # type: ignore[arg-type]
            for policy in m.TIE_POLICIES
        },
        "judgments": m.judgment_stats(records),
        "items_with_criteria_problem": sum(1 for r in records if r.get("criteria_problem")),
        "by_category": m.breakdown(records, lambda r: str(r.get("category", "")), tie_policy, unscorable_policy),
        "by_subset": m.breakdown(records, lambda r: str(r.get("subset") or "") or None, tie_policy, unscorable_policy),
        "by_response_model": m.breakdown(records, _response_model, tie_policy, unscorable_policy),
        "best_of_n": m.best_of_n(records, unscorable_policy),
        "best_of_n_curve": m.best_of_n_curve(records, unscorable_policy, seed),
        "rm_bench_grid": m.style_grid(records, tie_policy, unscorable_policy),
        "length_bias": m.length_bias(records, tie_policy, unscorable_policy),
    }
    grid = out["rm_bench_grid"]
    if grid is not None:
        by_domain = {}
        for category in sorted({str(r.get("category", "")) for r in records}):
            sub = m.style_grid([r for r in records if r.get("category") == category], tie_policy, unscorable_policy)
            if sub is not None:
                by_domain[category] = sub["bands"]
        grid["bands_by_domain"] = by_domain
    return out


def _domain_grid(table: Table) -> list[str]:
    cells: dict[str, dict[str, Figure]] = {}
    for row in table.rows:
        domain, _, band = row.name.rpartition(" ")
        cells.setdefault(domain, {})[band] = row
    lines = ["| domain | easy | normal | hard | coverage | items |", "|---|---:|---:|---:|---:|---:|"]
    for domain, bands in cells.items():
        first = next(iter(bands.values()))
        values = " | ".join(_official(bands[b].value if b in bands else None) for b in ("easy", "normal", "hard"))
        lines.append(f"| {domain} | {values} | {_pct(first.coverage)} | {first.items} |")
    return [*lines, ""]


def _benchmark_section(score: PresetScore, data_source: Mapping[str, Any] | None) -> list[str]:
    head = score.headline
    lines = [
        f"## {score.benchmark}: "
        + (
            "official scoring"
            if score.official
            else "preset scoring, cerm's own rules (the official code was not read)"
        )
        + f" (rule: {score.rule})",
        "",
        f"**{head.name}: {_official(head.value)}** (coverage {_pct(head.coverage)}: {head.scored} of {head.items} "
        "items with every candidate scored)",
        "",
    ]
    source = dict(data_source or {})
    if source:
        lines += ["Data: " + ", ".join(f"{k} `{v}`" for k, v in source.items() if v not in (None, "", [])), ""]
    for table in score.tables:
        if table.title == "Domain x difficulty":  # RM-Bench's own layout: one row per domain
            lines += _domain_grid(table)
            continue
        lines += [f"| {table.title} | score | coverage | items |", "|---|---:|---:|---:|"]
        for row in table.rows:
            lines.append(f"| {row.name} | {_official(row.value)} | {_pct(row.coverage)} | {row.items} |")
        lines.append("")
    for note in score.notes:
        lines.append(f"- Note: {note}")
    for key, value in score.extras.items():
        if isinstance(value, float):
            lines.append(f"- {key.replace('_', ' ')}: {_official(value)}")
        elif key == "ties_parts":
            parts = ", ".join(
                f"{k.replace('_', ' ')} {_num(v) if isinstance(v, float) else v}" for k, v in value.items()
            )
            lines.append(f"- Ties parts: {parts}")
    if score.notes or score.extras:
        lines.append("")
    lines += [
        "Coverage is the share of items in which the judge scored every candidate; an unscored candidate (UNSCORABLE "
        "or ERROR) is handled as the preset's rule handles an unrated one (the official code's where it could be "
        "read; never credit where it says nothing), see benchmarks/README.md.",
        "",
        "The sections below are cerm's own extras over the same results.",
        "",
    ]
    return lines


# -- Markdown ----------------------------------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _set_coverage(point: m.BestOfNPoint) -> float | None:
    return (point.sets - point.unscorable_sets) / point.sets if point.sets else None


def _official(value: float | None) -> str:
    # Official figures with two decimals, as JudgeBench prints them, so they can be set beside published numbers.
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _stats_table(title: str, rows: Mapping[str, PairStats]) -> list[str]:
    if not rows:
        return []
    lines = [
        f"| {title} | pairs | accuracy | coverage | scorable-pair accuracy | wins | losses | ties | unscored pairs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in rows.items():
        lines.append(
            f"| {name} | {s.n} | {_pct(s.accuracy)} | {_pct(s.coverage)} | {_pct(s.scorable_accuracy)} | {s.wins} | "
            f"{s.losses} | {s.ties} | {s.unscorable} |"
        )
    return [*lines, ""]


_PROTOCOL = """\
Protocol. The judge is pointwise: for each item it writes one criteria set from the prompt alone, then scores every
candidate (the chosen answer and the rejected ones) once under those shared criteria. Candidates are never shown side by
side, so there is no presentation order and no position bias to average out (JudgeBench's two-order pass is for
pairwise judges). A pair is each (chosen, rejected) combination of an item; accuracy pools pairs. Lengths are in
characters."""


def render_report(
    metrics: Mapping[str, Any],
    *,
    data_name: str,
    judge_settings: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
    plots: Sequence[str] = (),
    data_source: Mapping[str, Any] | None = None,
) -> str:
    """The Markdown report. Deterministic: the same records give the same text (no timings, no dates, no paths)."""
    tie, unsc = metrics["tie_policy"], metrics["unscorable_policy"]
    overall: PairStats = metrics["pairwise"]
    judg = metrics["judgments"]
    cfg = judge_settings.get("config", {})
    lines = [f"# cerm eval: {data_name}", ""]
    lines += [
        f"- Judge: `{judge_settings.get('model')}` (backend `{judge_settings.get('backend')}`), k = {cfg.get('k')}, "
        f"temperature {cfg.get('temperature')} ({'greedy' if cfg.get('temperature') == 0 else 'sampled'}), "
        f"criteria_max_new_tokens {cfg.get('criteria_max_new_tokens')}, "
        f"evaluation_max_new_tokens {cfg.get('evaluation_max_new_tokens')}",
        f"- Items: {metrics['items']}; pairs: {overall.n}; candidate judgments: {judg['judgments']}",
    ]
    for key, value in (info or {}).items():
        lines.append(f"- {key}: {value}")
    if judg.get("errors"):
        lines.append(
            f"- **ERRORS: {judg['errors']} judgment(s) in {judg['errored_items']} item(s) were not produced** (a "
            "generation failed); rerun the same command to judge those items again"
        )
    lines.append("")
    if metrics.get("benchmark") is not None:
        lines += _benchmark_section(metrics["benchmark"], data_source)
    lines += [_PROTOCOL, ""]
    lines += [
        f"Ties (equal scores) count as **{tie}** "
        + {"half": "(0.5 credit)", "wrong": "(0 credit)", "excluded": "(left out of the denominator)"}[tie]
        + f"; pairs with an unscored side (UNSCORABLE or ERROR) count as **{unsc}** "
        + {
            "tie": f"(no verdict is treated as a tie, so it follows the tie policy: {tie})",
            "wrong": "(0 credit)",
            "excluded": "(left out of the denominator)",
        }[unsc]
        + ". Scorable-pair accuracy uses only pairs where both sides were scored.",
        "",
        "## Summary",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| pairwise accuracy (ties: {tie}, unscorable: {unsc}) | {_pct(overall.accuracy)} |",
        f"| coverage (pairs with both sides scored) | {_pct(overall.coverage)} |",
        f"| scorable-pair accuracy (ties: {tie}) | {_pct(overall.scorable_accuracy)} |",
        f"| pairs: wins / losses / ties / unscorable | {overall.wins} / {overall.losses} / {overall.ties} / "
        f"{overall.unscorable} |",
        f"| unscorable pair rate | {_pct(overall.unscorable_rate)} |",
        f"| unscorable judgment rate | {_pct(judg['unscorable_rate'])} ({judg['unscorable']} of {judg['judgments']}) |",
        f"| errored judgments (none produced) | {judg.get('errors', 0)} in {judg.get('errored_items', 0)} items |",
        f"| items whose criteria lacked the criteria block | {metrics['items_with_criteria_problem']} |",
        "| random baseline (pairwise) | 50.0% |",
        "",
        "Accuracy under each tie policy (unscorable pairs: " + unsc + "):",
        "",
        "| tie policy | accuracy | coverage |",
        "|---|---:|---:|",
    ]
    for policy, s in metrics["pairwise_by_tie_policy"].items():
        lines.append(f"| {policy} | {_pct(s.accuracy)} | {_pct(s.coverage)} |")
    lines.append("")

    lines += ["## Per category", "", *_stats_table("category", metrics["by_category"])]
    if metrics["by_subset"]:
        lines += ["## Per subset", "", *_stats_table("subset", metrics["by_subset"])]
    if metrics["by_response_model"]:
        lines += ["## Per response model", "", *_stats_table("response model", metrics["by_response_model"])]

    grid = metrics.get("rm_bench_grid")
    if grid:
        styles = grid["styles"]
        lines += [
            "## RM-Bench style grid",
            "",
            "Rows: style of the chosen answer; columns: style of the rejected answer. Hard = upper triangle (chosen is "
            "the plainer style), normal = diagonal, easy = lower triangle.",
            "",
            "| chosen \\ rejected | " + " | ".join(styles) + " |",
            "|---|" + "---:|" * len(styles),
        ]
        for cs in styles:
            lines.append(f"| {cs} | " + " | ".join(_pct(grid["cells"][cs][rs].accuracy) for rs in styles) + " |")
        lines += ["", "| domain | easy | normal | hard |", "|---|---:|---:|---:|"]
        lines.append(
            "| all | " + " | ".join(_pct(grid["bands"][b].accuracy) for b in ("easy", "normal", "hard")) + " |"
        )
        for domain, bands in grid.get("bands_by_domain", {}).items():
            lines.append(
                f"| {domain} | " + " | ".join(_pct(bands[b].accuracy) for b in ("easy", "normal", "hard")) + " |"
            )
        lines.append("")

    lines += [
        "## Best-of-N",
        "",
        "RewardBench 2's rule: the chosen answer earns 1/m when it is among the m candidates tied at the top score, "
        f"else 0; a set with an UNSCORABLE candidate counts as {unsc}"
        + (" (all N tied: 1/N, the random baseline)" if unsc == "tie" else "")
        + ".",
        "",
    ]
    bon: list[m.BestOfNPoint] = metrics["best_of_n"]
    lines += ["Full sets (each chosen answer against all rejected answers of its item):", ""]
    lines += [
        "| N | sets | items | accuracy | random | sets with an unscored candidate | coverage |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in bon:
        lines.append(
            f"| {p.n_candidates} | {p.sets} | {p.items} | {_pct(p.accuracy)} | {_pct(p.baseline)} | "
            f"{p.unscorable_sets} | {_pct(_set_coverage(p))} |"
        )
    lines.append("")
    curve: list[m.BestOfNPoint] = metrics["best_of_n_curve"]
    if len(curve) > 1:
        lines += [
            "Curve: for each N, every item with at least N - 1 rejected answers contributes each chosen answer against "
            f"every combination of N - 1 of its rejected answers (at most {m.MAX_COMBINATIONS}, seeded sample), all "
            "scored under the item's one criteria set; an item weighs the same at every N.",
            "",
            "| N | items | sets | accuracy | random | coverage |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for p in curve:
            lines.append(
                f"| {p.n_candidates} | {p.items} | {p.sets} | {_pct(p.accuracy)} | {_pct(p.baseline)} | "
                f"{_pct(_set_coverage(p))} |"
            )
        lines.append("")
    else:
        lines += [
            "No item has several rejected answers, so the Best-of-N curve has only N = 2 (pairwise accuracy with "
            "ties at 1/2). RM-Bench items (three rejected styles) or your own rows with several rejected answers give "
            "the curve.",
            "",
        ]

    lb = metrics["length_bias"]
    lines += [
        "## Length bias",
        "",
        "| diagnostic | value |",
        "|---|---:|",
        f"| scored judgments | {lb['scored_judgments']} |",
        f"| Pearson r (score, length) | {_num(lb['pearson'])} |",
        f"| Spearman rho (score, length) | {_num(lb['spearman'])} |",
        *(
            f"| accuracy, {label} ({lb[key].n} pairs) | {_pct(lb[key].accuracy)} (coverage {_pct(lb[key].coverage)}) |"
            for key, label in (
                ("chosen_shorter", "chosen is shorter"),
                ("chosen_longer", "chosen is longer"),
                ("same_length", "same length"),
            )
        ),
        f"| judge preferred the longer answer (of {lb['decided_pairs']} decided pairs) | "
        f"{_pct(lb['prefers_longer_rate'])} |",
        "",
    ]

    lines += ["## Unscored judgments (UNSCORABLE, and ERROR: no judgment produced)", ""]
    if judg["reasons"]:
        lines += ["| reason | judgments |", "|---|---:|"]
        for reason, count in judg["reasons"][:10]:
            lines.append(f"| {str(reason).replace('|', '/')} | {count} |")
        if len(judg["reasons"]) > 10:
            lines.append(f"| ({len(judg['reasons']) - 10} other reasons) | {sum(c for _, c in judg['reasons'][10:])} |")
    else:
        lines.append("None: every judgment was scored.")
    lines.append("")

    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{name}]({name})" for name in plots]
        lines.append("")
    return "\n".join(lines)


def write_outputs(
    records: Sequence[Record],
    out_dir: Path,
    *,
    data_name: str,
    judge_settings: Mapping[str, Any],
    tie_policy: TiePolicy = "half",
    unscorable_policy: UnscorablePolicy = "wrong",
    plots: bool = True,
    info: Mapping[str, Any] | None = None,
    benchmark: str | None = None,
    rule: str | None = None,
    data_source: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], Path, list[Path]]:
    """Write ``metrics.json``, the plots and ``report.md`` into ``out_dir``; return (metrics, report path, plots)."""
    metrics = compute_metrics(records, tie_policy, unscorable_policy, benchmark=benchmark, rule=rule)
    plot_files: list[Path] = []
    if plots:
        from cerm.eval._plots import write_plots

        plot_files = write_plots(records, metrics, out_dir, title=data_name)
    (out_dir / METRICS_FILE).write_text(json.dumps(_json_ready(metrics), indent=2) + "\n", encoding="utf-8")
    report = out_dir / REPORT_FILE
    text = render_report(
        metrics,
        data_name=data_name,
        judge_settings=judge_settings,
        info=info,
        plots=[p.name for p in plot_files],
        data_source=data_source,
    )
    report.write_text(text, encoding="utf-8")
    return metrics, report, plot_files


def report_from_results(
    out_dir: str | Path,
    *,
    tie_policy: TiePolicy = "half",
    unscorable_policy: UnscorablePolicy = "wrong",
    plots: bool = True,
    benchmark: str | None = None,
    rule: str | None = None,
) -> tuple[dict[str, Any], Path, list[Path]]:
    """Rebuild metrics, plots and report of a finished run from its folder alone (no model), for example under
    another tie policy or preset rule. ``benchmark`` defaults to the run's own (its manifest's ``benchmark``, else its
    data name when that names a preset, as in runs recorded before presets existed)."""
    from cerm.eval._data import DataError
    from cerm.eval._runner import MANIFEST_FILE, RESULTS_FILE, read_results

    folder = Path(out_dir)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{folder} holds no readable {MANIFEST_FILE} ({exc}): not a cerm eval output folder") from None
    records = read_results(folder / RESULTS_FILE)
    if not records:
        raise DataError(f"{folder / RESULTS_FILE}: no results yet")
    info = dict(manifest.get("info") or {})
    planned = manifest.get("n_items")
    if planned is not None and len(records) < planned:
        # Say so in the report itself: a partial run's numbers must never pass for the full slice's.
        info["INCOMPLETE RUN"] = (
            f"{len(records)} of {planned} planned items judged so far; rerun the same command to resume"
        )
    if benchmark is None:
        benchmark = manifest.get("benchmark") or _preset_or_none(str(manifest.get("data", "")))
    return write_outputs(
        records,
        folder,
        data_name=manifest.get("data", "custom"),
        judge_settings=manifest.get("judge", {}),
        tie_policy=tie_policy,
        unscorable_policy=unscorable_policy,
        plots=plots,
        info=info,
        benchmark=benchmark,
        rule=rule or manifest.get("rule"),
        data_source=manifest.get("data_source"),
    )


def _preset_or_none(name: str) -> str | None:
    try:
        return preset_name(name)
    except ConfigurationError:
        return None
