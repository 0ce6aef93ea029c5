"""Cost of cerm's two-stage-rollout GRPO step against TRL's plain GRPOTrainer producing the same number of
completions of the same length.

Both runs use the same model, the same optimizer settings, fp32 without gradient checkpointing, and completions forced
to exactly ``--tokens`` tokens (``min_new_tokens`` = ``max_completion_length``), so they generate and train the same
number of tokens. cerm: ``--pairs`` pairs per step, trees of nc x ne (two generation calls per step: criteria, then
evaluations whose prompts hold the generated criteria). Plain: the same number of rows per step in groups of the
tree size, every row prompted with an evaluation conversation holding a fixed criteria text of the same token length
(so the plain prompts are, if anything, longer than cerm's average: criteria rows have short prompts). The LoRA is
the same on ``tiny`` (a fresh r-8 adapter on every block); on ``demo`` cerm keeps training the demo judge's adapter
(top 16 blocks) while the plain run adds a fresh one on every block.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/grpo_cost.py --model tiny --steps 3 --pairs 2 --tokens 32
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/grpo_cost.py --model demo --steps 3 --pairs 1 --tokens 64 \
        --out benchmarks/results/grpo_cost_demo.json

``tiny``: a random 3 M-parameter Qwen3 with SmolLM2's tokenizer (built in a temporary folder); ``demo``: the demo
judge (SmolLM2-135M + its adapter). Prints a table and writes ``--out`` (default ``benchmarks/results/grpo_cost.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def tiny_model(folder: Path) -> str:
    import torch
    import transformers

    from cerm._embedded import demo_model_path

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(demo_model_path()))
    config = transformers.Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


def pairs(n: int) -> list[Any]:
    from cerm.training import checkable_pairs

    return checkable_pairs(n, seed=0, split="train")


def common(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "learning_rate": 1e-5,
        "beta": 1e-3,
        "max_completion_length": args.tokens,
        "max_steps": args.steps,
        "save_steps": 10_000,
        "seed": 0,
    }


def run_cerm(model: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    from cerm.training import GRPOConfig
    from cerm.training._grpo import run_grpo

    settings = common(args)
    config = GRPOConfig(
        model=model,
        output_dir=str(out),
        num_criteria=args.nc,
        num_evaluations=args.ne,
        pairs_per_step=args.pairs,
        mini_batches=1,
        per_device_train_batch_size=args.nc + 2 * args.nc * args.ne,
        lora_r=8,
        lora_alpha=16,
        use_cpu=True,
        report_to="none",
        trainer_args={"generation_kwargs": {"min_new_tokens": args.tokens}, "save_strategy": "no"},
        **settings,
    )
    started = time.perf_counter()
    result = run_grpo(config, pairs(args.pairs * args.steps))
    wall = time.perf_counter() - started
    steps = [e for e in result.log_history if "step_time" in e]
    return {"wall_s": wall, "step_times": [e["step_time"] for e in steps], "global_step": result.global_step}


def run_plain(model: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    import transformers
    import trl
    from datasets import Dataset

    from cerm.protocol import evaluation_conversation
    from cerm.training._sft import resolve_model_path

    path = resolve_model_path(model)
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    criteria_text = " ".join(["criterion"] * args.tokens)  # about as many tokens as a generated criteria turn
    rows = [
        {"prompt": evaluation_conversation(p.prompt, criteria_text, p.chosen)} for p in pairs(args.pairs * args.steps)
    ]
    tree = args.nc + 2 * args.nc * args.ne
    settings = common(args)
    config = trl.GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=tree,
        gradient_accumulation_steps=args.pairs,
        num_generations=tree,
        learning_rate=settings["learning_rate"],
        beta=settings["beta"],
        loss_type="grpo",
        max_completion_length=args.tokens,
        max_steps=args.steps,
        save_strategy="no",
        seed=0,
        use_cpu=True,
        report_to="none",
        generation_kwargs={"min_new_tokens": args.tokens},
        # TRL's config turns gradient checkpointing on by default; cerm's GRPOConfig leaves it off. Left on, the
        # baseline recomputes every layer in each backward, a difference of settings rather than of the two-stage
        # rollout.
        gradient_checkpointing=False,
        # TRL's config also defaults bf16 to True, which on the CPU runs the baseline under bf16 autocast; cerm's runs
        # on the CPU are fp32.
        bf16=False,
        # One step_time entry per optimiser step (TRL logs every 10 steps by default and averages the window, which
        # folded the first step's start-up into the baseline's figure; cerm's runs log every step).
        logging_steps=1,
    )
    import peft

    lora = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")

    def reward(completions: list[Any], **kwargs: Any) -> list[float]:
        return [float(len(str(c)) % 7) for c in completions]

    trainer = trl.GRPOTrainer(
        model=path,
        reward_funcs=[reward],
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora,
    )
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    steps = [e for e in trainer.state.log_history if "step_time" in e]
    return {"wall_s": wall, "step_times": [e["step_time"] for e in steps], "global_step": trainer.state.global_step}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny", help="'tiny' (random 3 M Qwen3) or a model name/folder ('demo')")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=2, help="pairs per step")
    parser.add_argument("--nc", type=int, default=2)
    parser.add_argument("--ne", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=32, help="every completion's exact length")
    parser.add_argument("--out", default=str(RESULTS / "grpo_cost.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = tiny_model(Path(tmp) / "tiny") if args.model == "tiny" else args.model
        cerm = run_cerm(model, Path(tmp) / "cerm", args)
        plain = run_plain(model, Path(tmp) / "plain", args)
    tree = args.nc + 2 * args.nc * args.ne

    # The first step includes one-off start-up costs in both; compare the median of the later steps when there are any.
    def per_step(run: dict[str, Any]) -> float:
        return statistics.median(run["step_times"][1:] or run["step_times"])

    cerm_step, plain_step = per_step(cerm), per_step(plain)
    result = {
        "model": args.model,
        "steps": args.steps,
        "pairs_per_step": args.pairs,
        "tree": f"nc={args.nc} ne={args.ne} ({tree} completions per pair)",
        "completion_tokens": args.tokens,
        "cerm_s_per_step": round(cerm_step, 2),
        "cerm_s_per_pair": round(cerm_step / args.pairs, 2),
        "plain_s_per_step": round(plain_step, 2),
        "overhead": round(cerm_step / plain_step - 1.0, 3),
        "cerm_step_times": cerm["step_times"],
        "plain_step_times": plain["step_times"],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, OMP_NUM_THREADS="
        f"{os.environ.get('OMP_NUM_THREADS')}",
        "date": time.strftime("%Y-%m-%d"),
    }
    print("| model | tree | tokens | cerm s/step | cerm s/pair | plain s/step | overhead |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.model} | {result['tree']} | {args.tokens} | {result['cerm_s_per_step']} "
        f"| {result['cerm_s_per_pair']} | {result['plain_s_per_step']} | {result['overhead']:+.1%} |"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
