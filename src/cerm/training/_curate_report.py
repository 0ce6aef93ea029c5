"""The curation report: ``report.md`` (accuracy histogram and cluster table) and two PNGs drawn with matplotlib's
Agg backend (imported lazily; without matplotlib the report says so and only the Markdown is written)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cerm.training._curate import CurateConfig

logger = logging.getLogger("cerm")

REPORT_FILE = "report.md"
PLOT_ACCURACY = "accuracy.png"
PLOT_CLUSTERS = "clusters.png"
_DPI = 80


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _plots(out_dir: Path, stats: Mapping[str, Any], config: CurateConfig) -> list[str]:
    try:
        import matplotlib
    except ImportError:
        logger.warning("curate: matplotlib is not installed (pip install 'ce-rm[eval]'): no PNG plots")
        return []
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    files = []
    hist = {k: v for k, v in stats["accuracy_histogram"].items() if k != "none"}
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    values = [float(k) for k in hist]
    colours = ["#4c72b0" if v <= config.max_accuracy else "#bbbbbb" for v in values]
    width = 0.8 / max(config.comparisons, 1)
    ax.bar(values, list(hist.values()), width=width, color=colours)
    ax.axvline(
        config.max_accuracy, color="#c44e52", linestyle="--", linewidth=1, label=f"keep <= {config.max_accuracy:g}"
    )
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel(f"base-judge accuracy over {config.comparisons} comparisons")
    ax.set_ylabel("pairs")
    ax.set_title("Curation: accuracy of the base judge per pair", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / PLOT_ACCURACY, dpi=_DPI, metadata={"Software": None})
    plt.close(fig)
    files.append(PLOT_ACCURACY)

    table = stats["clusters"]
    fig, ax = plt.subplots(figsize=(6.0, 0.4 * max(len(table), 1) + 1.4))
    names = [str(e["cluster"]) for e in table]
    ax.barh(names, [e["kept"] for e in table], color="#bbbbbb", label="kept (uncertain)")
    ax.barh(names, [e["selected"] for e in table], color="#4c72b0", label="selected")
    ax.invert_yaxis()
    ax.set_xlabel("pairs")
    ax.set_title(f"Curation: clusters ({config.cluster}), {config.stratify} sampling", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out_dir / PLOT_CLUSTERS, dpi=_DPI, metadata={"Software": None})
    plt.close(fig)
    files.append(PLOT_CLUSTERS)
    return files


def write_report(
    out_dir: Path, rows: Sequence[Mapping[str, Any]], stats: Mapping[str, Any], config: CurateConfig
) -> list[str]:
    """Write ``report.md`` and the plots; returns the file names written."""
    plots = _plots(out_dir, stats, config)
    lines = [
        "# Curation report",
        "",
        f"Data: `{_cell(config.data or 'pairs given in code')}`; base judge `{_cell(config.judge_model)}` on "
        f"`{config.judge_backend}`, "
        f"{config.criteria_samples} criteria x {config.evaluation_samples} evaluations = {config.comparisons} "
        f"comparisons per pair (temperature {config.temperature:g}, seed {config.seed}); unscorable comparisons: "
        f"{config.unscorable}.",
        "",
        "| pairs | judged | errored (retried on resume) | no accuracy | kept (accuracy <= "
        f"{config.max_accuracy:g}) | selected |",
        "|---|---|---|---|---|---|",
        f"| {stats['pairs']} | {stats['judged']} | {stats['errored']} | {stats['unscored']} | {stats['kept']} | "
        f"{stats['selected']} |",
        "",
        "## Accuracy histogram",
        "",
        "| accuracy | pairs | kept |",
        "|---|---|---|",
    ]
    for value, count in stats["accuracy_histogram"].items():
        kept = value != "none" and float(value) <= config.max_accuracy
        lines.append(f"| {value} | {count} | {'yes' if kept else 'no'} |")
    if PLOT_ACCURACY in plots:
        lines += ["", f"![accuracy histogram]({PLOT_ACCURACY})"]
    target = "all kept pairs" if config.target_size is None else f"target {config.target_size}"
    lines += [
        "",
        f"## Clusters ({config.cluster}; {config.stratify} sampling, {target})",
        "",
        "| cluster | kept | selected | mean accuracy |",
        "|---|---|---|---|",
    ]
    lines += [f"| {_cell(e['cluster'])} | {e['kept']} | {e['selected']} | {e['mean_accuracy']:.3f} |"
              for e in stats["clusters"]]  # fmt: skip
    if PLOT_CLUSTERS in plots:
        lines += ["", f"![clusters]({PLOT_CLUSTERS})"]
    elif not plots:
        lines += ["", "(No plots: matplotlib is not installed.)"]
    (out_dir / REPORT_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [REPORT_FILE, *plots]
