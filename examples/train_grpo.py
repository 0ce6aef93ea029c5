"""Two-stage-rollout GRPO (the CE-RM paper's training method) on the demo judge, from Python and tiny.

Seeded checkable preference pairs (train split), then a GRPO run of a few steps from the demo judge's shipped SFT
stage (``"demo-sft"``, the starting point of the shipped ``"demo"`` judge's own GRPO run): for each pair the judge
writes nc criteria sets and, under each, ne evaluations of the chosen and of the rejected response; rewards and the
three-group advantages come from ``cerm.protocol``; the loop is TRL's GRPOTrainer. The output folder holds the
adapter, ``report.md`` and ``report.png``, and loads in ``Judge``.

    python examples/train_grpo.py --pairs 4 --steps 2 --max-tokens 256 --out runs/example_grpo

With tiny token budgets (CI) the evaluations are cut off before their score: every one is UNSCORABLE, every reward 0,
and the run shows the machinery only. Real budgets (a few hundred tokens) cost minutes per step on a CPU.
"""

# ci: --pairs 2 --steps 1 --max-tokens 12 --out {tmp}/grpo
# ci-requires: trl peft datasets
# ci-expect: trained 1 step(s)
# ci-slow

from __future__ import annotations

import argparse
import logging

from cerm import Trainer
from cerm.training import GRPOConfig, checkable_pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=4, help="generated checkable pairs (train split)")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps")
    parser.add_argument("--max-tokens", type=int, default=256, help="token budget of each criteria / evaluation turn")
    parser.add_argument("--out", default="runs/example_grpo")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    pairs = checkable_pairs(args.pairs, seed=0, split="train")
    config = GRPOConfig(
        model="demo-sft",
        output_dir=args.out,
        num_criteria=2,  # the paper uses 4 x 2 (20 trajectories per pair); 2 x 1 keeps the CPU run short
        num_evaluations=1,
        pairs_per_step=1,
        mini_batches=1,
        per_device_train_batch_size=6,
        max_completion_length=args.max_tokens,
        learning_rate=1e-5,
        max_steps=args.steps,
        save_steps=max(args.steps, 1),
        lora_r=8,
        lora_alpha=16,
        use_cpu=True,
        report_to="none",
    )
    result = Trainer().grpo(config, pairs)
    last = [entry for entry in result.log_history if "cerm/rollout_pair_accuracy" in entry][-1]
    print(
        f"trained {result.global_step} step(s) on {result.pairs} pairs in {result.wall_seconds:.0f} s: "
        f"rollout pair accuracy {last['cerm/rollout_pair_accuracy']:.2f}, format rate {last['cerm/format_rate']:.2f}, "
        f"unscorable {last['cerm/unscorable_fraction']:.2f}, KL {last.get('kl', 0.0):.2g}"
    )
    print(f"report: {result.report}")


if __name__ == "__main__":
    main()
