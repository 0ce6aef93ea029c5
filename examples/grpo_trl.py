"""GRPO with TRL, rewarded by a CE-RM judge: `python examples/grpo_trl.py --steps 2`.

The policy here is a randomly initialised tiny Qwen3 (a few million parameters, SmolLM2's tokenizer) so the script runs
on a CPU in seconds per step; the judge is the embedded demo model unless --judge names a real one
(e.g. PKU-ONELab/CE-RM-4B). The demo judge rarely writes a score, so most rewards are None (UNSCORABLE), which TRL
leaves out of each group's baseline; the steps run all the same. Swap in your own policy and a real judge for training.
"""
# ci: --steps 2 --generations 2 --output-dir {tmp}
# ci-requires: trl datasets
# ci-expect: GRPO finished: 2 optimisation steps
# ci-expect: unscorable fraction

from __future__ import annotations

import argparse
import logging

from cerm import Judge, JudgeConfig
from cerm.integrations import CermRewardFunc


def tiny_policy() -> tuple[object, object]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config

    from cerm._embedded import demo_model_path

    tokenizer = AutoTokenizer.from_pretrained(str(demo_model_path()))
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config), tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judge", default="demo", help="judge model (default: the embedded demo judge)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--generations", type=int, default=2, help="completions per prompt (GRPO group size)")
    parser.add_argument("--completion-tokens", type=int, default=8, help="policy completion length")
    parser.add_argument("--judge-tokens", type=int, default=8, help="token budget of each judge turn")
    parser.add_argument("--output-dir", default="grpo-output")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    judge = Judge(
        args.judge,
        config=JudgeConfig(criteria_max_new_tokens=args.judge_tokens, evaluation_max_new_tokens=args.judge_tokens),
    )
    # Rewards in [0, 1]; None for UNSCORABLE completions. All completions of one prompt share one criteria set.
    reward = CermRewardFunc(judge, scale=(0, 1))
    dataset = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": "What is the capital of France?"}]},
            {"prompt": [{"role": "user", "content": "Name a primary colour."}]},
        ]
    )
    policy, tokenizer = tiny_policy()
    config = GRPOConfig(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.generations,
        num_generations=args.generations,
        max_completion_length=args.completion_tokens,
        max_steps=args.steps,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        bf16=False,
    )
    trainer = GRPOTrainer(
        model=policy, reward_funcs=[reward], args=config, train_dataset=dataset, processing_class=tokenizer
    )
    trainer.train()
    for entry in trainer.state.log_history:
        if "cerm/unscorable_fraction" in entry:
            print(
                f"step {entry['step']}: reward mean {entry.get('rewards/cerm/mean')}, "
                f"unscorable fraction {entry['cerm/unscorable_fraction']:.2f}, loss {entry.get('loss')}"
            )
    print(f"GRPO finished: {trainer.state.global_step} optimisation steps")
    judge.close()


if __name__ == "__main__":
    main()
