"""Reward server: one-sample requests (as OpenRLHF sends them): micro-batching, and the criteria cache.

`python benchmarks/reward_server_batching.py --requests 8 --prompts 2 --repeats 1` (the demo judge) prints a table and
writes benchmarks/results/reward_server_batching.json. Modes:

* "unbatched, no cache": max_batch_items=1 and criteria_cache_size=0: each request judged alone, a criteria turn per
  sample (what the server did before its criteria cache);
* "unbatched": max_batch_items=1 with the server's default criteria cache: still one criteria turn per prompt;
* "batched": concurrent requests merged (max_batch_items=256), default cache.

`--judge scripted` replaces the model with a scripted judge (criteria text, then a score that is a hash of the judged
response, computed in microseconds): the figures are then the server's own overhead, and `--staggered` sends the
requests as OpenRLHF's rollout workers do, sample s of every prompt in wave s, waves apart in time, so samples of one
prompt never share a micro-batch. Every reward is checked against its known value; the criteria turns are counted at
the backend. `--client openrlhf` sends every sample through OpenRLHF's own reward client (0.11: its aiohttp POST with
its retries, `SingleTurnAgentExecutor._fetch_rewards_via_http`, one sample per request, a wave's requests concurrent on
one event loop as its rollout issues them); it needs openrlhf (`make venv-rl`, then run with .venv-rl/bin/python).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import platform
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from cerm import Judge, JudgeConfig
from cerm.backends import InstrumentedBackend, MockBackend, SamplingParams
from cerm.integrations import RewardServer, create_app
from cerm.protocol import Conversation

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2+2?", "Who wrote Hamlet?"]
CHATML = "<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
CRITERIA = "Analysis.\n[Start of Criteria]\n1. Accuracy: the answer is right.\n[End of Criteria]"
_RESPONSE = re.compile(r"\[Start of Response\]\n(.*)\n\[End of Response\]", re.S)


def hashed_score(response: str) -> int:
    """The scripted judge's score of a response: a hash, so every reward has one known value."""
    return hashlib.sha256(response.encode()).digest()[0] % 11


def scripted(conversation: Conversation, params: SamplingParams, index: int) -> str:
    if len(conversation) == 1:
        return CRITERIA
    match = _RESPONSE.search(conversation[-1]["content"])
    assert match is not None
    return f"1. Accuracy: fine. $\\boxed{{3}}$\nOverall: $\\boxed{{{hashed_score(match.group(1))}}}$"


def _prompt(judge: Judge, question: str) -> str:
    tokenizer = getattr(judge.backend, "tokenizer", None)
    if tokenizer is None:
        return CHATML.format(question=question)
    text: str = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    return text


def _openrlhf_post(executor: Any, waves: list[list[tuple[str, dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Every sample through OpenRLHF's own reward client, wave after wave, a wave's requests concurrent."""

    async def send() -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = []
        for wave in waves:
            calls = [executor._fetch_rewards_via_http(b["query"], b["prompts"], b["labels"]) for _, b in wave]
            answers += [shards[0] for shards in await asyncio.gather(*calls)]
        return answers

    return asyncio.run(send())


def run_once(
    judge: Judge,
    *,
    max_batch_items: int,
    cache_size: int | None,
    requests: int,
    prompts: int,
    staggered: bool,
    client: str = "httpx",
) -> dict[str, Any]:
    counting = InstrumentedBackend(judge.backend)
    counted = Judge(counting, config=judge.config)
    questions = [QUESTIONS[p % len(QUESTIONS)] + f" (prompt {p})" for p in range(prompts)]
    waves: list[list[tuple[str, dict[str, Any]]]] = []
    for s in range((requests + prompts - 1) // prompts):
        wave = []
        for p in range(min(prompts, requests - s * prompts)):
            prompt = _prompt(judge, questions[p])
            response = f"Answer number {s} to prompt {p}."
            body = {"query": [prompt + response + "<|im_end|>"], "prompts": [prompt], "labels": [""]}
            wave.append((response, body))
        waves.append(wave)
    kwargs: dict[str, Any] = {} if cache_size is None else {"criteria_cache_size": cache_size}
    app = create_app(counted, unscorable_reward=0.0, max_batch_items=max_batch_items, max_wait_ms=20, **kwargs)
    flat = [item for wave in waves for item in wave]
    with RewardServer(app) as server, ThreadPoolExecutor(len(flat)) as pool:
        if client == "openrlhf":
            from openrlhf.utils.agent import SingleTurnAgentExecutor  # imported before the clock starts

            executor = SingleTurnAgentExecutor(remote_rm_url=server.url + "/get_reward")
        start = time.perf_counter()
        if client == "openrlhf":
            bodies = _openrlhf_post(executor, waves if staggered else [flat])
        elif staggered:
            # One wave at a time: a prompt's samples arrive apart, never in the same micro-batch window.
            answers = []
            for wave in waves:
                answers += list(
                    pool.map(lambda item: httpx.post(server.url + "/get_reward", json=item[1], timeout=3600), wave)
                )
        else:
            answers = list(
                pool.map(lambda item: httpx.post(server.url + "/get_reward", json=item[1], timeout=3600), flat)
            )
        elapsed = time.perf_counter() - start
        stats = httpx.get(server.url + "/health").json()
    if client != "openrlhf":
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200][:3]
        bodies = [a.json() for a in answers]
    if isinstance(judge.backend, MockBackend):
        wrong = [r for (r, _), b in zip(flat, bodies, strict=True) if b["rewards"] != [hashed_score(r)]]
        assert not wrong, f"{len(wrong)} rewards differ from the scripted judge's known values"
    criteria_turns = _criteria_turns(counting)
    return {
        "seconds": elapsed,
        "requests_per_s": len(flat) / elapsed,
        "judge_batches": stats["batches"],
        "largest_batch": stats["largest_batch"],
        "criteria_turns": criteria_turns,
    }


def _criteria_turns(backend: InstrumentedBackend) -> int:
    """Criteria conversations the backend generated (one message: the criteria prompt alone)."""
    return sum(1 for conversations, _ in backend.calls for c in conversations if len(c) == 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=2, help="distinct prompts among the requests (GRPO groups)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--judge", choices=["demo", "scripted"], default="demo")
    parser.add_argument("--judge-tokens", type=int, default=8)
    parser.add_argument("--staggered", action="store_true", help="send sample s of every prompt in wave s")
    parser.add_argument(
        "--client", choices=["httpx", "openrlhf"], default="httpx", help="openrlhf: OpenRLHF 0.11's own reward client"
    )
    args = parser.parse_args()
    config = JudgeConfig(criteria_max_new_tokens=args.judge_tokens, evaluation_max_new_tokens=args.judge_tokens)
    judge = Judge(MockBackend(scripted), config=config) if args.judge == "scripted" else Judge("demo", config=config)
    rows = []
    for label, max_items, cache_size in (
        ("unbatched, no cache", 1, 0),
        ("unbatched", 1, None),
        ("batched", 256, None),
    ):
        runs = [
            run_once(
                judge,
                max_batch_items=max_items,
                cache_size=cache_size,
                requests=args.requests,
                prompts=args.prompts,
                staggered=args.staggered,
                client=args.client,
            )
            for _ in range(args.repeats)
        ]
        rows.append(
            {
                "mode": label,
                "median_s": statistics.median(r["seconds"] for r in runs),
                "requests_per_s": statistics.median(r["requests_per_s"] for r in runs),
                "judge_batches": runs[-1]["judge_batches"],
                "largest_batch": runs[-1]["largest_batch"],
                "criteria_turns": runs[-1]["criteria_turns"],
            }
        )
    base = rows[0]["median_s"]
    header = (
        f"{'mode':<20} {'median s':>9} {'req/s':>8} {'judge calls':>11} {'largest batch':>13} {'criteria turns':>14}"
    )
    print(header + f" {'speed-up':>8}")
    for row in rows:
        row["speedup"] = base / row["median_s"]
        print(
            f"{row['mode']:<20} {row['median_s']:>9.2f} {row['requests_per_s']:>8.1f} {row['judge_batches']:>11} "
            f"{row['largest_batch']:>13} {row['criteria_turns']:>14} {row['speedup']:>7.2f}x"
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
