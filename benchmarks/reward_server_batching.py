"""Reward server: N concurrent one-sample requests (as OpenRLHF sends them), with and without micro-batching.

`python benchmarks/reward_server_batching.py --requests 8 --prompts 2 --repeats 1` prints a table and writes
benchmarks/results/reward_server_batching.json. "unbatched" is the same server with max_batch_items=1 (each request
judged alone: a criteria turn per sample); "batched" merges concurrent requests (one criteria turn per prompt).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from cerm import Judge, JudgeConfig
from cerm.integrations import RewardServer, create_app

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2+2?", "Who wrote Hamlet?"]


def run_once(judge: Judge, max_batch_items: int, requests: int, prompts: int) -> dict[str, Any]:
    tokenizer = judge.backend.tokenizer  # type: ignore[attr-defined]
    bodies = []
    for i in range(requests):
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTIONS[i % prompts]}], tokenize=False, add_generation_prompt=True
        )
        bodies.append({"query": [prompt + f"Answer number {i}.<|im_end|>"], "prompts": [prompt], "labels": [""]})
    app = create_app(judge, unscorable_reward=0.0, max_batch_items=max_batch_items, max_wait_ms=20)
    with RewardServer(app) as server, ThreadPoolExecutor(requests) as pool:
        start = time.perf_counter()
        answers = list(pool.map(lambda b: httpx.post(server.url + "/get_reward", json=b, timeout=3600), bodies))
        elapsed = time.perf_counter() - start
        stats = httpx.get(server.url + "/health").json()
    assert all(a.status_code == 200 for a in answers)
    return {"seconds": elapsed, "judge_batches": stats["batches"], "largest_batch": stats["largest_batch"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=2, help="distinct prompts among the requests (GRPO groups)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--judge-tokens", type=int, default=8)
    args = parser.parse_args()
    judge = Judge(
        "demo",
        config=JudgeConfig(criteria_max_new_tokens=args.judge_tokens, evaluation_max_new_tokens=args.judge_tokens),
    )
    rows = []
    for label, max_items in (("unbatched", 1), ("batched", 256)):
        runs = [run_once(judge, max_items, args.requests, args.prompts) for _ in range(args.repeats)]
        rows.append(
            {
                "mode": label,
                "median_s": statistics.median(r["seconds"] for r in runs),
                "judge_batches": runs[-1]["judge_batches"],
                "largest_batch": runs[-1]["largest_batch"],
            }
        )
    base = rows[0]["median_s"]
    print(f"{'mode':<10} {'median s':>9} {'judge calls':>11} {'largest batch':>13} {'speed-up':>8}")
    for row in rows:
        row["speedup"] = base / row["median_s"]
        print(
            f"{row['mode']:<10} {row['median_s']:>9.1f} {row['judge_batches']:>11} {row['largest_batch']:>13} "
            f"{row['speedup']:>7.2f}x"
        )
    out = Path(__file__).parent / "results" / "reward_server_batching.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "args": vars(args),
                "rows": rows,
                "machine": platform.platform(),
                "date": datetime.now(timezone.utc).isoformat(),
            },
            indent=1,
        )
    )
    print(f"wrote {out}")
    judge.close()


if __name__ == "__main__":
    main()
