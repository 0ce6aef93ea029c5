"""Does the demo judge write the CE-RM format, and does it order pairs? Untrained base against the SFT demo judge.

For each model and each pair set, every pair is judged once (greedy, plain protocol unless --forced-readout) and we
count, per judged response:

* format: the criteria turn has the ``[Start of Criteria]`` ... ``[End of Criteria]`` block with at least one criterion
  AND the evaluation gave a valid boxed overall score the judge wrote itself (a forced readout never counts): the
  SPEC's definition (the reward is the last boxed value);
* strict format: the above, and the evaluation's parse raised no warning (one boxed score per criterion, then the
  overall one), i.e. the whole layout of the released judge's evaluation turn;
* pairwise accuracy: chosen scored strictly above rejected (a tie, an UNSCORABLE or a failed generation is a miss).

Pair sets: held-out checkable pairs (``checkable_pairs(..., split="heldout")``, never seen in training), and real
queries the demo never saw: LLMBar's MT-Bench subset (MT-Bench prompts with two answers each, human preference) and
LLMBar's natural + adversarial subsets, read from $CERM_DATA_DIR or ../shared/data (skipped with a message when
absent).

    python benchmarks/demo_judge_format.py --model demo-sft --heldout 24 --real 8
    python benchmarks/demo_judge_format.py --model demo-base --heldout 8 --real 0 --criteria-max-new-tokens 256 \\
        --evaluation-max-new-tokens 384 --forced-readout

Prints a table and writes benchmarks/results/demo_judge_format_<model>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

from cerm import Judge, JudgeConfig, Judgment
from cerm.training import checkable_pairs

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CERM_DATA_DIR") or ROOT.parent / "shared" / "data")


def _llmbar(subsets: tuple[str, ...], n: int, seed: int) -> list[dict[str, str]]:
    path = SHARED / "llmbar" / "all.jsonl"
    if not path.is_file():
        print(f"skipping LLMBar sets: {path} not found")
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("category") in subsets and len(r["rejected"]) == 1]
    random.Random(seed).shuffle(rows)
    return [{"query": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"][0]} for r in rows[:n]]


def _wilson(successes: int, n: int, z: float = 1.96) -> list[float] | None:
    """95% Wilson score interval of a proportion (honest at small n and at 0 or n successes)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def formatted(judgment: Judgment) -> bool:
    """The SPEC's format: a well-formed criteria block and a boxed overall score the judge wrote itself (a forced
    readout never counts). ``grpo_vs_sft.py`` counts the format with this too."""
    has_criteria = judgment.criteria is not None and judgment.criteria.well_formed
    return has_criteria and judgment.score is not None and not judgment.forced


def _measure(judge: Judge, pairs: list[dict[str, str]], forced: bool) -> dict[str, Any]:
    started = time.monotonic()
    results = judge.judge_batch([(p["query"], [p["chosen"], p["rejected"]]) for p in pairs])
    seconds = time.monotonic() - started
    judged = formatted_count = strict = criteria_ok = scored_plain = correct = ties = unscorable = 0
    generated = 0
    examples: list[dict[str, Any]] = []
    for pair, (chosen, rejected) in zip(pairs, results, strict=True):
        for judgment in (chosen, rejected):
            judged += 1
            has_criteria = judgment.criteria is not None and judgment.criteria.well_formed
            own_score = judgment.score is not None and not judgment.forced
            criteria_ok += has_criteria
            scored_plain += own_score
            formatted_count += formatted(judgment)
            strict += has_criteria and own_score and judgment.evaluation is not None and not judgment.warnings
            if judgment.provenance is not None:
                generated += judgment.provenance.evaluation_usage.completion_tokens
            unscorable += judgment.score is None
        if chosen.score is not None and rejected.score is not None:
            correct += chosen.score > rejected.score
            ties += chosen.score == rejected.score
        if len(examples) < 2:
            examples.append(
                {
                    "query": pair["query"][:200],
                    "criteria": (chosen.criteria.text if chosen.criteria else "")[:600],
                    "evaluation": (chosen.evaluation.text if chosen.evaluation else "")[:600],
                    "scores": [chosen.score, rejected.score],
                }
            )
    return {
        "pairs": len(pairs),
        "judged_responses": judged,
        "format_rate": formatted_count / judged if judged else None,
        "strict_format_rate": strict / judged if judged else None,
        "criteria_block_rate": criteria_ok / judged if judged else None,
        "own_boxed_score_rate": scored_plain / judged if judged else None,
        "pairwise_accuracy": correct / len(pairs) if pairs else None,
        "pairwise_accuracy_wilson95": _wilson(correct, len(pairs)),
        "evaluation_tokens_per_response": generated / judged if judged else None,
        "ties": ties,
        "unscorable_responses": unscorable,
        "seconds": round(seconds, 1),
        "forced_readout": forced,
        "examples": examples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", default="demo", help="demo (the trained demo judge), demo-sft (its SFT stage), demo-base or a folder"
    )
    parser.add_argument("--heldout", type=int, default=24, help="held-out checkable pairs")
    parser.add_argument("--real", type=int, default=8, help="pairs per real set (MT-Bench, LLMBar)")
    parser.add_argument("--seed", type=int, default=0)
    defaults = JudgeConfig()
    parser.add_argument("--criteria-max-new-tokens", type=int, default=defaults.criteria_max_new_tokens)
    parser.add_argument("--evaluation-max-new-tokens", type=int, default=defaults.evaluation_max_new_tokens)
    parser.add_argument("--forced-readout", action="store_true", help="read a score where the format was not closed")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    sets: dict[str, list[dict[str, str]]] = {}
    if args.heldout:
        sets["checkable held-out"] = [
            {"query": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
            for p in checkable_pairs(args.heldout, seed=args.seed, split="heldout")
        ]
    if args.real:
        sets["MT-Bench (LLMBar mtbench-human)"] = _llmbar(("mtbench-human",), args.real, args.seed)
        sets["LLMBar natural+adversarial"] = _llmbar(("natural", "adversarial"), args.real, args.seed)
    config = JudgeConfig(
        criteria_max_new_tokens=args.criteria_max_new_tokens,
        evaluation_max_new_tokens=args.evaluation_max_new_tokens,
        forced_readout=args.forced_readout,
    )
    started = time.monotonic()
    with Judge(args.model, config=config, device="cpu", batch_size=args.batch_size) as judge:
        model_id = judge.backend.model_id
        results = {name: _measure(judge, pairs, args.forced_readout) for name, pairs in sets.items() if pairs}
    record = {
        "model": args.model,
        "model_id": model_id,
        "config": {
            "criteria_max_new_tokens": config.criteria_max_new_tokens,
            "evaluation_max_new_tokens": config.evaluation_max_new_tokens,
            "greedy": True,
            "forced_readout": args.forced_readout,
            "seed": args.seed,
        },
        "sets": results,
        "wall_seconds": round(time.monotonic() - started, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    print(f"model: {model_id}  (budgets {config.criteria_max_new_tokens}/{config.evaluation_max_new_tokens})")
    print(
        f"{'set':34} {'pairs':>5} {'format':>7} {'strict':>7} {'criteria':>8} {'boxed':>6} {'pair acc':>8} "
        f"{'ties':>5} {'secs':>7}"
    )
    for name, r in results.items():
        print(
            f"{name:34} {r['pairs']:5d} {r['format_rate']:7.1%} {r['strict_format_rate']:7.1%} "
            f"{r['criteria_block_rate']:8.1%} {r['own_boxed_score_rate']:6.1%} {r['pairwise_accuracy']:8.1%} "
            f"{r['ties']:5d} {r['seconds']:7.0f}"
        )
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"demo_judge_format_{Path(args.model).name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
