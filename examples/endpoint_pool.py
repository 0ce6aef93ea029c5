"""Judge through a pool of OpenAI-compatible servers (several vLLM / SGLang / llama.cpp servers of one model).

    python examples/endpoint_pool.py URL [URL ...] [--model MODEL] [--max-new-tokens N]

Requests go to the least busy server, the requests of one query to the same server when it is not much busier (its
prefix cache then holds the prompt), a server that keeps failing is taken out for a while, and a failed request is
retried on another server. The command-line equivalent is `cerm score --base-url URL --base-url URL ...` (or
`--base-urls-file servers.txt`). To try it on this machine with the embedded demo model and two llama.cpp servers:

    GGUF="$(python -c 'from cerm._embedded import demo_gguf_path; print(demo_gguf_path())')"
    python -m llama_cpp.server --model "$GGUF" --port 8001 & python -m llama_cpp.server --model "$GGUF" --port 8002 &
    python examples/endpoint_pool.py http://127.0.0.1:8001/v1 http://127.0.0.1:8002/v1 --model demo --max-new-tokens 32
"""
# ci: (started by the test against two llama.cpp servers it runs)
# ci-custom: tests/test_endpoint_pool.py

from __future__ import annotations

import argparse
import logging

from cerm import Judge, JudgeConfig
from cerm.backends.openai import OpenAIBackend


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("urls", nargs="+", metavar="URL", help="the servers' API roots, e.g. http://host:8000/v1")
    parser.add_argument("--model", default="PKU-ONELab/CE-RM-4B", help="the served model name")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--per-server", type=int, default=16, help="requests in flight on each server (llama.cpp: 1)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    backend = OpenAIBackend(
        args.model,
        base_urls=args.urls,
        max_concurrency=64,  # for the whole pool
        endpoint_max_concurrency=args.per_server,  # for each server
        max_attempts=4,  # a failed attempt is retried on another server when one is in service
        eject_after=3,  # three failures in a row take a server out ...
        eject_backoff=1.0,  # ... for 1 s, then 2 s, 4 s ... (at most 60 s) while it keeps failing
        timeout=300,
    )
    config = JudgeConfig(criteria_max_new_tokens=args.max_new_tokens, evaluation_max_new_tokens=args.max_new_tokens)
    items = [("What is the capital of France?", ["Paris.", "Berlin."]), ("What is 2+2?", ["4", "5"])]
    with backend, Judge(backend, config=config) as judge:
        for (query, _), judgments in zip(items, judge.judge_batch(items), strict=True):
            verdicts = [f"{j.score:g}" if j.score is not None else j.status.value.upper() for j in judgments]
            print(f"{query} -> {verdicts}")
        for stats in backend.endpoint_stats():
            print(
                f"endpoint {stats.url}: requests={stats.requests} successes={stats.successes} "
                f"failures={stats.failures} ejected={stats.ejected} affinity_hits={stats.affinity_hits}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
