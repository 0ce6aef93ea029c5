"""Evaluate a judge on a shared benchmark slice: per-item JSONL, report.md and PNG plots, then the headline numbers.

    python examples/evaluate.py [BENCHMARK] [LIMIT] [MAX_NEW_TOKENS] [OUT_DIR]
    python examples/evaluate.py llmbar 2 16 /tmp/cerm-eval      # the defaults: tiny, runs on the demo model

BENCHMARK is a shared benchmark name (llmbar, judgebench, rm_bench, hh_rlhf) or a JSONL file in the normalized schema.
Rerun with the same OUT_DIR and it resumes instead of judging again. Set CERM_MODEL for another judge.
"""
# ci: llmbar 1 8 {tmp}/eval
# ci-requires: matplotlib
# ci-expect: items: 1 (resumed 0), pairs: 1
# ci-expect: pairwise accuracy:
# ci-expect: unscorable judgments:

from __future__ import annotations

import os
import sys

from cerm import Judge, JudgeConfig
from cerm.eval import evaluate, load_items


def main() -> None:
    data = sys.argv[1] if len(sys.argv) > 1 else "llmbar"
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    budget = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    out_dir = sys.argv[4] if len(sys.argv) > 4 else "cerm-eval-example"

    items = load_items(data, limit=limit, seed=0)  # a fixed, seeded slice
    config = JudgeConfig(criteria_max_new_tokens=budget, evaluation_max_new_tokens=budget)
    with Judge(os.environ.get("CERM_MODEL", "demo"), config=config) as judge:
        run = evaluate(judge, items, out_dir, data_name=data, progress=False)

    stats = run.metrics["pairwise"]
    judgments = run.metrics["judgments"]
    accuracy = "n/a" if stats.accuracy is None else f"{100 * stats.accuracy:.1f}%"
    print(f"items: {len(run.records)} (resumed {run.resumed_items}), pairs: {stats.n}")
    print(f"pairwise accuracy: {accuracy} (ties: half, unscorable pairs: tie)")
    print(f"wins/losses/ties/unscorable: {stats.wins}/{stats.losses}/{stats.ties}/{stats.unscorable}")
    print(f"unscorable judgments: {judgments['unscorable']} of {judgments['judgments']}")
    for reason, count in judgments["reasons"][:3]:
        print(f"  {count} x {reason}")
    print(f"report: {run.report}")
    for plot in run.plots:
        print(f"plot: {plot}")


if __name__ == "__main__":
    main()
