"""The Hugging Face backend, configured explicitly, judging several queries in one batch.

    python examples/hf_backend.py --model demo --batch-size 8
    python examples/hf_backend.py --model PKU-ONELab/CE-RM-4B --load-in-4bit        # NF4 via bitsandbytes
    python examples/hf_backend.py --model Qwen/Qwen3-4B-Instruct-2507 --adapter ./my-lora

`judge_batch` sends every criteria turn in one backend call and every evaluation in one more, so the backend
generates in large left-padded batches, and computes the prompt prefix that the evaluations of one query share once
per batch (`--no-share-prefix` prefills every row in full, for comparison). `InstrumentedBackend` reports the calls,
tokens and seconds the judge spent.
"""
# ci: --max-new-tokens 12 --queries 2
# ci-expect: 'share_prefix': True
# ci-expect: 2 backend calls ([2, 4] conversations)

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cerm import Judge, JudgeConfig
from cerm.backends import HFBackend, InstrumentedBackend

FALLBACK = [
    {"prompt": "Name a prime number greater than 10.", "chosen": "11 is prime.", "rejected": ["12."]},
    {"prompt": "Translate 'merci' into English.", "chosen": "Thank you.", "rejected": ["Goodbye."]},
]


def load_items(limit: int) -> list[dict[str, object]]:
    """A few LLMBar pairs from the shared data when it is beside the repo, else two built-in pairs."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "llmbar" / "all.jsonl"
    if not path.is_file():
        return FALLBACK[:limit]
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for _, line in zip(range(limit), handle, strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--adapter", default=None, help="a peft LoRA/QLoRA adapter folder")
    parser.add_argument("--load-in-4bit", action="store_true")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--no-share-prefix", action="store_true", help="prefill every row in full")
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    args = parser.parse_args()

    hf = HFBackend(
        args.model,
        adapter=args.adapter,
        load_in_4bit=args.load_in_4bit,
        batch_size=args.batch_size,
        share_prefix=not args.no_share_prefix,
    )
    print("backend:", hf.describe())
    backend = InstrumentedBackend(hf)
    config = JudgeConfig(criteria_max_new_tokens=args.max_new_tokens, evaluation_max_new_tokens=args.max_new_tokens)
    judge = Judge(backend, config=config)
    items = load_items(args.queries)
    batch = [(str(item["prompt"]), [str(item["chosen"]), *map(str, item["rejected"])]) for item in items]  # type: ignore[call-overload]
    for (query, _), judgments in zip(batch, judge.judge_batch(batch), strict=True):
        print(f"\n{query[:70]!r}")
        for j in judgments:
            label = "chosen" if j.response_index == 0 else "rejected"
            print(f"  {label:8s} {j.status.value:10s} score={j.score} {j.reason or ''}")
    print(
        f"\n{len(backend.calls)} backend calls ({backend.conversations_per_call} conversations), "
        f"{backend.prompt_tokens} prompt and {backend.completion_tokens} generated tokens, {backend.seconds:.1f} s"
    )
    backend.close()


if __name__ == "__main__":
    main()
