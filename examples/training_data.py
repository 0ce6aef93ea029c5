"""Training data for your own judge: generated pairs, SFT targets from the programmatic teacher, and curation.

    python examples/training_data.py [N_PAIRS] [MAX_NEW_TOKENS] [OUT_DIR]
    python examples/training_data.py 40 8 /tmp/cerm-data      # the defaults: tiny, runs on the demo model

1. Checkable pairs (computable right answers) and open-ended pairs (a named defect), seeded, train split.
2. ``teach``: the programmatic teacher writes a criteria turn and both evaluations per pair in the exact CE-RM
   format; rejection sampling keeps drafts that score chosen strictly above rejected -> trajectories.jsonl.
3. ``curate``: a base judge (the demo model, tiny budgets, 2 criteria x 1 evaluation) scores a few held-out pairs;
   pairs it gets right at most 60% of the time are kept, clustered by source and written as pairs.jsonl.
Set CERM_MODEL for another base judge.
"""
# ci: 40 8 {tmp}/data
# ci-requires: matplotlib
# ci-expect: teach: 40 pairs, 40 drafts accepted (100%), 80 trajectories
# ci-expect: curate: 2 pairs judged

from __future__ import annotations

import os
import sys
from pathlib import Path

from cerm.training import (
    CurateConfig,
    TeachConfig,
    checkable_pairs,
    curate,
    load_pairs,
    read_manifest,
    read_trajectories,
    teach,
)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    budget = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    out = Path(sys.argv[3] if len(sys.argv) > 3 else "cerm-data-example")

    # SFT targets: half checkable, half open-ended pairs, taught by the programmatic teacher.
    teach_dir = teach(TeachConfig(output_dir=str(out / "teach"), checkable=n // 2, open_ended=n - n // 2, seed=0))
    stats = read_manifest(teach_dir)["stats"]
    rate = 100 * (stats["acceptance_rate"] or 0.0)
    print(
        f"teach: {stats['pairs']} pairs, {stats['drafts_accepted']} drafts accepted ({rate:.0f}%), "
        f"{stats['trajectories']} trajectories"
    )
    example = read_trajectories(teach_dir)[0]
    print(f"--- query: {example.query}\n--- {example.role} response: {example.response}")
    print(f"--- criteria turn:\n{example.criteria}\n--- evaluation turn:\n{example.evaluation}")

    # Curation: uncertainty of a base judge on two held-out pairs (tiny budgets, so expect unscorable comparisons:
    # they count as comparisons the judge did not win, so such pairs are kept as uncertain).
    config = CurateConfig(
        output_dir=str(out / "curate"),
        judge_model=os.environ.get("CERM_MODEL", "demo"),
        criteria_samples=2,
        evaluation_samples=1,
        criteria_max_new_tokens=budget,
        evaluation_max_new_tokens=budget,
    )
    curate_dir = curate(config, pairs=checkable_pairs(2, seed=0, split="heldout"))
    stats = read_manifest(curate_dir)["stats"]
    print(f"curate: {stats['judged']} pairs judged, {stats['errored']} errored, {stats['kept']} kept as uncertain")
    print(f"accuracy histogram: {stats['accuracy_histogram']}")
    selected = [p.id for p in load_pairs(curate_dir)] if stats["selected"] else []  # the file teach reads
    print(f"selected pairs ({curate_dir / 'pairs.jsonl'}): {selected}")
    print(f"report: {curate_dir / 'report.md'}")


if __name__ == "__main__":
    main()
