"""Train a judge with cerm: programmatic teacher -> cold-start SFT (LoRA) -> load the result in Judge.

The same three steps as ``cerm train pipeline --config examples/train_demo_judge.yaml`` (which built the shipped demo
judge), from Python and tiny: a few generated checkable pairs, the programmatic teacher writing the CE-RM criteria and
evaluation turns, a LoRA SFT run of a few steps on the untrained embedded model, then ``Judge(output_dir)``.

    python examples/train_sft.py --pairs 4 --steps 2 --out runs/example_sft
"""

# ci: --pairs 1 --steps 1 --out {tmp}/sft
# ci-requires: trl peft datasets
# ci-expect: trained 1 step(s)

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from cerm import Judge, JudgeConfig, Trainer
from cerm.training import SFTConfig, TeachConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=4, help="generated checkable pairs (2 trajectories each)")
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps")
    parser.add_argument("--out", default="runs/example_sft")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)

    trainer = Trainer()
    # 1. SFT targets: seeded checkable pairs (train split) and the programmatic teacher; rejection sampling keeps
    #    only trajectories whose scores order chosen above rejected.
    teach_dir = trainer.teach(TeachConfig(output_dir=str(out / "teach"), checkable=args.pairs, seed=0))
    manifest = json.loads((Path(teach_dir) / "manifest.json").read_text(encoding="utf-8"))
    print(
        f"teacher: {manifest['stats']['trajectories']} trajectories, acceptance {manifest['stats']['acceptance_rate']}"
    )

    # 2. Cold-start SFT with LoRA on the untrained embedded model; loss on both assistant turns.
    result = trainer.sft(
        SFTConfig(
            model="demo-base",
            data=[str(teach_dir)],
            output_dir=str(out / "sft"),
            finetuning="lora",
            lora_r=4,
            lora_alpha=8,
            learning_rate=1e-3,
            effective_batch_size=1,
            per_device_train_batch_size=1,
            max_steps=args.steps,
            max_length=1024,
            logging_steps=1,
            use_cpu=True,
            report_to="none",
        )
    )
    print(
        f"trained {result.global_step} step(s) on {result.examples['examples_kept']} examples "
        f"(loss {result.first_logged_loss:.3f} -> {result.last_logged_loss:.3f}) in {result.wall_seconds:.0f} s"
    )

    # 3. The output folder is a judge: base model + adapter, loaded directly.
    config = JudgeConfig(criteria_max_new_tokens=24, evaluation_max_new_tokens=24)
    with Judge(result.output_dir, config=config, device="cpu") as judge:
        scores = judge.score("What is 17 * 23?", ["17 * 23 = 391.", "17 * 23 = 381."])
        print(f"Judge({result.output_dir!r}) scores (tiny token budgets here): {scores}")


if __name__ == "__main__":
    main()
