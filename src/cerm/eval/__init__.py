"""Evaluate a cerm judge on reward-model benchmarks: loaders, published metrics, a resumable runner, reports, plots.

>>> from cerm import Judge, JudgeConfig
>>> from cerm.eval import evaluate, load_benchmark
>>> data = load_benchmark("rewardbench2", limit=100, seed=0)                  # doctest: +SKIP
>>> run = evaluate(Judge("demo"), data.items, "out/rb2", benchmark="rewardbench2",
...                data_source=data.provenance)                                # doctest: +SKIP
>>> run.metrics["benchmark"].headline.value                                    # doctest: +SKIP

Benchmark presets (``rewardbench2``, ``rewardbench``, ``rm-bench``, ``judgebench``, ``llmbar``, ``ppe-correctness``)
load from the Hugging Face Hub at a pinned commit or the default branch, the commit read recorded (or
``$CERM_DATA_DIR``, a local folder or file, a ``datasets.Dataset``) and are scored exactly as their authors' code scores
them (:mod:`cerm.eval._presets`; PPE's code could not be read, so its rules are cerm's own, stated there).
Your own data is the normalized preference JSONL (the schema is in the README's evaluation section;
:func:`load_items`). Plots need ``pip install 'ce-rm[eval]'``.
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
from cerm.eval._hub import ADAPTERS, HUB_SOURCES, BenchmarkData, HubSource, load_benchmark
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
from cerm.eval._presets import (
    SCORERS,
    Figure,
    PresetScore,
    Table,
    ppe_best_of_k_credit,
    ppe_pairwise_credit,
    preset_name,
    rb2_best_of_4_credit,
    rb2_ties_score,
    rm_bench_bands,
    rm_bench_matrix,
    score_benchmark,
)
from cerm.eval._report import compute_metrics, render_report, report_from_results
from cerm.eval._runner import EvalRun, evaluate, items_fingerprint, read_results, record_errored

__all__ = [
    "ADAPTERS",
    "DATA_DIR_ENV",
    "HUB_SOURCES",
    "SCORERS",
    "SHARED_BENCHMARKS",
    "TIE_POLICIES",
    "UNSCORABLE_POLICIES",
    "BenchmarkData",
    "BenchmarkRow",
    "BestOfNPoint",
    "DataError",
    "EvalItem",
    "EvalRun",
    "Figure",
    "HubSource",
    "Pair",
    "PairStats",
    "PresetScore",
    "Table",
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
    "load_benchmark",
    "load_items",
    "load_rows",
    "outcome",
    "pair_stats",
    "pairs",
    "ppe_best_of_k_credit",
    "ppe_pairwise_credit",
    "preset_name",
    "rb2_best_of_4_credit",
    "rb2_ties_score",
    "read_results",
    "record_errored",
    "render_report",
    "report_from_results",
    "resolve_data",
    "rm_bench_bands",
    "rm_bench_matrix",
    "score_benchmark",
    "select_items",
    "style_grid",
]
