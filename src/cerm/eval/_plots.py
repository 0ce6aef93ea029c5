"""PNG plots of a run, drawn with matplotlib's Agg backend (no display needed). Install with ``ce-rm[eval]``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cerm._errors import BackendUnavailableError
from cerm.eval import _metrics as m
from cerm.eval._metrics import Record

PLOT_CATEGORY = "per_category_accuracy.png"
PLOT_BEST_OF_N = "best_of_n_curve.png"
PLOT_HISTOGRAM = "score_histogram.png"
_DPI = 80  # small files: the committed reports stay light


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise BackendUnavailableError("plots need matplotlib: pip install 'ce-rm[eval]' (or pass plots=False)") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    # No timestamps in the metadata, so the same results give the same bytes.
    fig.savefig(path, dpi=_DPI, metadata={"Software": None})
    return path


def write_plots(records: Sequence[Record], metrics: Mapping[str, Any], out_dir: Path, title: str) -> list[Path]:
    """Per-category accuracy, the Best-of-N curve, and score histograms of chosen versus rejected answers."""
    plt = _pyplot()
    files = []

    by_cat: Mapping[str, m.PairStats] = metrics["by_category"]
    names = list(by_cat)
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(names) + 1.6))
    values = [100 * (s.accuracy or 0.0) for s in by_cat.values()]
    bars = ax.barh(names, values, color="#4c72b0")
    for bar, s in zip(bars, by_cat.values(), strict=True):
        label = "n/a" if s.accuracy is None else f"{100 * s.accuracy:.1f}%"
        ax.text(bar.get_width() + 1, bar.get_y() + bar.get_height() / 2, f"{label} (n={s.n})", va="center", fontsize=8)
    ax.axvline(50, color="grey", linestyle="--", linewidth=1, label="random (50%)")
    ax.set_xlim(0, 115)
    ax.invert_yaxis()
    ax.set_xlabel(f"pairwise accuracy, % (ties: {metrics['tie_policy']}, unscorable: {metrics['unscorable_policy']})")
    ax.set_title(f"{title}: accuracy per category", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    files.append(_save(fig, out_dir / PLOT_CATEGORY))
    plt.close(fig)

    curve: Sequence[m.BestOfNPoint] = metrics["best_of_n_curve"]
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    xs = [p.n_candidates for p in curve]
    known = [p for p in curve if p.accuracy is not None]  # a point nothing counted towards is not drawn as 0
    ax.plot([p.n_candidates for p in known], [100 * (p.accuracy or 0.0) for p in known], marker="o", label="judge")
    for p in known:
        ax.annotate(f"{p.items} items", (p.n_candidates, 100 * (p.accuracy or 0.0)), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    ax.plot(xs, [100 * p.baseline for p in curve], linestyle="--", color="grey", label="random (1/N)")
    ax.set_xticks(xs)
    ax.set_ylim(0, 100)
    ax.set_xlabel("number of candidates N (1 chosen + N-1 rejected)")
    ax.set_ylabel("Best-of-N accuracy, %")
    sub = "" if len(curve) > 1 else " (pairs only: N = 2)"
    ax.set_title(f"{title}: Best-of-N{sub}", fontsize=10)
    ax.legend(fontsize=8)
    files.append(_save(fig, out_dir / PLOT_BEST_OF_N))
    plt.close(fig)

    chosen, rejected = m.score_values(records, "chosen"), m.score_values(records, "rejected")
    judg = metrics["judgments"]
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    bins = [x / 2 - 0.25 for x in range(22)]  # half-point bins centred on 0, 0.5, ..., 10
    if chosen or rejected:
        ax.hist([chosen, rejected], bins=bins, label=[f"chosen (n={len(chosen)})", f"rejected (n={len(rejected)})"])
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no scored judgments", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(-0.5, 10.5)
    ax.set_xlabel("overall score (0-10)")
    ax.set_ylabel("judgments")
    errors = judg.get("errors", 0)
    unscored = f"{judg['unscorable']} UNSCORABLE" + (f", {errors} ERROR" if errors else "")
    ax.set_title(f"{title}: scores; of {judg['judgments']} judgments, {unscored} (not shown)", fontsize=9)
    files.append(_save(fig, out_dir / PLOT_HISTOGRAM))
    plt.close(fig)
    return files
