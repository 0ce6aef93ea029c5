"""Evaluate a judge on a benchmark preset: official figures with coverage, per-item JSONL, report.md and PNG plots.

    python examples/evaluate.py [BENCHMARK] [SOURCE] [LIMIT] [MAX_NEW_TOKENS] [OUT_DIR]
    python examples/evaluate.py judgebench hub 20 512 cerm-eval     # JudgeBench from the Hugging Face Hub
    python examples/evaluate.py rm-bench ./RM-Bench 20               # a local copy of the hub's files

BENCHMARK is a preset (rewardbench2, rewardbench, rm-bench, judgebench, llmbar, ppe-correctness), scored exactly as the
benchmark's own code scores it (ppe-correctness by cerm's own stated rules: PPE's code could not be read). SOURCE is
"hub" (the preset's pinned revision) or a local file or folder in the benchmark's raw schema (CI uses the small
fixtures in tests/fixtures/benchmarks/). Rerun with the same OUT_DIR and it resumes instead of judging again (items
whose judgment errored are judged again). Set CERM_MODEL for another judge.
"""
# ci: judgebench tests/fixtures/benchmarks/judgebench 2 8 {tmp}/eval
# ci-requires: datasets matplotlib
# ci-expect: items: 2 (resumed 0)
# ci-expect: judgebench, official rule pointwise:
# ci-expect: coverage
# ci-expect: source: local

from __future__ import annotations

import os
import sys

from cerm import Judge, JudgeConfig
from cerm.eval import evaluate, load_benchmark


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def main() -> None:
    benchmark = sys.argv[1] if len(sys.argv) > 1 else "judgebench"
    source = sys.argv[2] if len(sys.argv) > 2 else "hub"
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    budget = int(sys.argv[4]) if len(sys.argv) > 4 else 16
    out_dir = sys.argv[5] if len(sys.argv) > 5 else "cerm-eval-example"

    data = load_benchmark(benchmark, None if source == "hub" else source, limit=limit, seed=0)  # a fixed slice
    config = JudgeConfig(criteria_max_new_tokens=budget, evaluation_max_new_tokens=budget)
    with Judge(os.environ.get("CERM_MODEL", "demo"), config=config) as judge:
        run = evaluate(
            judge, data.items, out_dir, benchmark=data.benchmark, data_source=data.provenance, progress=False
        )

    official = run.metrics["benchmark"]
    head = official.headline
    print(f"items: {len(run.records)} (resumed {run.resumed_items}), errored: {run.errored_items}")
    print(f"source: {data.provenance['source']} {data.provenance.get('hub_id') or data.provenance.get('path')}")
    print(f"{official.benchmark}, official rule {official.rule}: {head.name} = {_pct(head.value)}")
    print(f"  coverage {_pct(head.coverage)} ({head.scored} of {head.items} items with every candidate scored)")
    for table in official.tables:
        for row in table.rows:
            print(f"  {table.title} / {row.name}: {_pct(row.value)} (coverage {_pct(row.coverage)})")
    for note in official.notes:
        print(f"  note: {note}")
    stats = run.metrics["pairwise"]
    print(f"cerm pairwise accuracy: {_pct(stats.accuracy)} (coverage {_pct(stats.coverage)}, unscored pairs wrong)")
    print(f"report: {run.report}")
    for plot in run.plots:
        print(f"plot: {plot}")


if __name__ == "__main__":
    main()
