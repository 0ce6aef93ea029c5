"""Does two-stage GRPO improve the demo judge over SFT alone? Held-out checkable pairs, paired bootstrap.

Both judges (the SFT demo judge and a GRPO-trained folder) judge the same held-out checkable pairs
(``checkable_pairs(n, seed=, split="heldout")``: never seen by either stage) greedily, with the same budgets. Per pair
the verdict is the protocol's pair rule (:func:`cerm.protocol.pair_outcome`); per response the format counts as in
``demo_judge_format.py`` (a well-formed criteria block and a boxed overall score the judge wrote itself).

Accuracy is reported two ways: *strict* (chosen strictly above rejected; a tie or an unscored pair is a miss, as in
``demo_judge_format.py``) and *tie half* (a tie earns 0.5; unscored still 0). The gain is candidate minus baseline,
with a 95% paired bootstrap interval (pairs resampled with replacement, the same resample for both judges, seeded).

    PYTHONPATH=src OMP_NUM_THREADS=2 python benchmarks/grpo_vs_sft.py --candidate runs/demo_judge/grpo --pairs 40

Prints a table and writes benchmarks/results/grpo_vs_sft.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

from demo_judge_format import formatted  # one definition of "the format" for both benchmarks

from cerm import Judge, JudgeConfig
from cerm.protocol import pair_outcome, win_value
from cerm.training import checkable_pairs

RESULTS = Path(__file__).resolve().parent / "results"
#: What a tie earns under each accuracy rule (the protocol's win value: a win 1, a loss or an unscored side 0).
TIE_VALUE = {"strict": 0.0, "tie_half": 0.5}


def judge_pairs(model: str, items: list[tuple[str, list[str]]], config: JudgeConfig) -> dict[str, Any]:
    started = time.monotonic()
    with Judge(model, config=config, device="cpu") as judge:
        model_id = judge.backend.model_id
        results = judge.judge_batch(items)
    outcomes = [pair_outcome(chosen.score, rejected.score) for chosen, rejected in results]
    responses = [j for pair in results for j in pair]
    return {
        "model": model,
        "model_id": model_id,
        "outcomes": outcomes,
        "scores": [[chosen.score, rejected.score] for chosen, rejected in results],
        "format_rate": sum(formatted(j) for j in responses) / len(responses),
        "unscored_responses": sum(j.score is None for j in responses),
        "seconds": round(time.monotonic() - started, 1),
    }


def credits(run: dict[str, Any], rule: str) -> list[float]:
    return [win_value(chosen, rejected, TIE_VALUE[rule]) for chosen, rejected in run["scores"]]


def paired_bootstrap(base: list[float], cand: list[float], reps: int, seed: int) -> list[float]:
    """95% percentile interval of mean(cand - base) over pairs resampled with replacement (one RNG, seeded)."""
    rng = random.Random(seed)
    diffs = [c - b for b, c in zip(base, cand, strict=True)]
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(reps))
    return [round(means[int(0.025 * reps)], 4), round(means[int(0.975 * reps) - 1], 4)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="demo-sft", help="the SFT judge (default: the shipped SFT stage)")
    parser.add_argument("--candidate", required=True, help="the GRPO-trained folder")
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--criteria-tokens", type=int, default=512)
    parser.add_argument("--evaluation-tokens", type=int, default=512)
    parser.add_argument("--bootstrap", type=int, default=10000)
    parser.add_argument("--output", type=Path, default=RESULTS / "grpo_vs_sft.json")
    args = parser.parse_args()

    pairs = checkable_pairs(args.pairs, seed=args.seed, split="heldout")
    items = [(p.prompt, [p.chosen, p.rejected]) for p in pairs]
    config = JudgeConfig(
        seed=args.seed, criteria_max_new_tokens=args.criteria_tokens, evaluation_max_new_tokens=args.evaluation_tokens
    )
    runs = []
    for model in (args.baseline, args.candidate):
        run = judge_pairs(model, items, config)
        runs.append(run)
        print(f"judged {len(items)} pairs with {model} in {run['seconds']:.0f} s", file=sys.stderr, flush=True)
    base, cand = runs
    budgets = f"{args.criteria_tokens}/{args.evaluation_tokens}"
    print(f"{len(pairs)} held-out checkable pairs (seed {args.seed}), budgets {budgets}")
    header = f"{'judge':<40} {'format':>7} {'wins':>5} {'ties':>5} {'losses':>6} {'unscored':>8}"
    print(f"{header} {'strict':>7} {'tie half':>8}")
    for run in runs:
        o = run["outcomes"]
        run["accuracy"] = {rule: sum(credits(run, rule)) / len(o) for rule in TIE_VALUE}
        print(
            f"{run['model'][:40]:<40} {run['format_rate']:>7.1%} {o.count('win'):>5} {o.count('tie'):>5} "
            f"{o.count('loss'):>6} {o.count('unscorable'):>8} {run['accuracy']['strict']:>7.3f} "
            f"{run['accuracy']['tie_half']:>8.3f}"
        )
    gains = {}
    for rule in TIE_VALUE:
        b, c = credits(base, rule), credits(cand, rule)
        gains[rule] = {
            "gain": (sum(c) - sum(b)) / len(b),
            "bootstrap95": paired_bootstrap(b, c, args.bootstrap, args.seed),
        }
        print(f"gain ({rule}): {gains[rule]['gain']:+.3f}, 95% paired bootstrap {gains[rule]['bootstrap95']}")
    record = {
        "benchmark": "grpo_vs_sft",
        "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "pairs": len(pairs),
        "seed": args.seed,
        "budgets": [args.criteria_tokens, args.evaluation_tokens],
        "runs": runs,
        "gains": gains,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
