"""Evaluate a cerm judge on reward-model benchmarks: loaders, published metrics, a resumable runner, reports, plots.

>>> from cerm import Judge, JudgeConfig
>>> from cerm.eval import evaluate, load_items
>>> items = load_items("llmbar", limit=100, seed=0)           # doctest: +SKIP
>>> run = evaluate(Judge("demo"), items, "out/llmbar")        # doctest: +SKIP
>>> run.metrics["pairwise"].accuracy                          # doctest: +SKIP

Data is the normalized preference JSONL of ``shared/data/README.md`` (your own files too); shared benchmarks are found
by name under ``$CERM_DATA_DIR`` or ``../shared/data`` beside the repository. Plots need ``pip install 'ce-rm[eval]'``.
"""

from cerm.eval._data import (
    DATA_DIR_ENV,
    SHARED_BENCHMARKS,
    BenchmarkRow,
    DataError,
    EvalItem,
    build_items,
    data_dir,
    load_items,
    load_rows,
    resolve_data,
    select_items,
)
from cerm.eval._metrics import (
    TIE_POLICIES,
    UNSCORABLE_POLICIES,
    BestOfNPoint,
    Pair,
    PairStats,
    TiePolicy,
    UnscorablePolicy,
    best_of_n,
    best_of_n_credit,
    best_of_n_curve,
    breakdown,
    credit,
    judgment_stats,
    length_bias,
    outcome,
    pair_stats,
    pairs,
    style_grid,
)
from cerm.eval._report import compute_metrics, render_report, report_from_results
from cerm.eval._runner import EvalRun, evaluate, items_fingerprint, read_results

__all__ = [
    "DATA_DIR_ENV",
    "SHARED_BENCHMARKS",
    "TIE_POLICIES",
    "UNSCORABLE_POLICIES",
    "BenchmarkRow",
    "BestOfNPoint",
    "DataError",
    "EvalItem",
    "EvalRun",
    "Pair",
    "PairStats",
    "TiePolicy",
    "UnscorablePolicy",
    "best_of_n",
    "best_of_n_credit",
    "best_of_n_curve",
    "breakdown",
    "build_items",
    "compute_metrics",
    "credit",
    "data_dir",
    "evaluate",
    "items_fingerprint",
    "judgment_stats",
    "length_bias",
    "load_items",
    "load_rows",
    "outcome",
    "pair_stats",
    "pairs",
    "read_results",
    "render_report",
    "report_from_results",
    "resolve_data",
    "select_items",
    "style_grid",
]
