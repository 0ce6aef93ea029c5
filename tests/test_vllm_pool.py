"""The endpoint pool's query affinity on two real ``vllm serve`` processes, measured by vLLM's own prefix-cache
counters: with affinity each query's evaluations reuse the criteria prompt and turn its server already holds.

Runs in the vLLM venv (``make test-vllm``); skips without vLLM. The two servers (CPU build, embedded untrained model,
one OpenMP thread each) start once for the module: a few minutes on two cores. One request in flight at a time
(``max_concurrency=1``), so routing is deterministic: with affinity every request goes to its query's home server;
without it the servers alternate. The full measurement at realistic concurrency is benchmarks/pool_prefix_cache.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip(
    "vllm",
    reason="vLLM is not installed here; the vLLM tests run in their own venv: make test-vllm",
    exc_type=ImportError,
)

from _vllm_servers import VLLMServer, metrics, reset_prefix_cache, vllm_server
from cerm import Judge, JudgeConfig
from cerm._embedded import demo_model_path

pytestmark = [pytest.mark.model, pytest.mark.timeout(1800)]

HITS, QUERIED = "vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"
CONFIG = JudgeConfig(criteria_max_new_tokens=24, evaluation_max_new_tokens=8)
ITEMS = [
    (f"Question {q}: explain {topic} in two sentences.", [f"Answer {i}: {topic} is simple." for i in range(3)])
    for q, topic in enumerate(["recursion", "photosynthesis", "inflation", "gravity"])
]


@pytest.fixture(scope="module")
def servers() -> Iterator[list[VLLMServer]]:
    cpus = os.cpu_count() or 1
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(vllm_server(demo_model_path(), served_name="demo-base", cpu_bind=str(i % cpus)))
            for i in range(2)
        ]


def _run(servers: list[VLLMServer], affinity: bool) -> dict[str, Any]:
    for server in servers:
        reset_prefix_cache(server.root)
    before = [metrics(s.root) for s in servers]
    urls = [s.base_url for s in servers]
    with Judge(
        "demo-base",
        backend="openai",
        base_urls=urls,
        api_key="sk-local",
        max_concurrency=1,
        affinity=affinity,
        config=CONFIG,
    ) as judge:
        batch = judge.judge_batch(ITEMS)
        requests = [e["requests"] for e in judge.backend.describe()["endpoints"]]
    after = [metrics(s.root) for s in servers]
    assert [len(j) for j in batch] == [3] * len(ITEMS)
    return {
        "hits": sum(a[HITS] - b[HITS] for a, b in zip(after, before, strict=True)),
        "queried": sum(a[QUERIED] - b[QUERIED] for a, b in zip(after, before, strict=True)),
        "requests": requests,
    }


def test_affinity_raises_the_servers_prefix_cache_hits(servers: list[VLLMServer]) -> None:
    with_affinity = _run(servers, affinity=True)
    without = _run(servers, affinity=False)
    # Each query's 1 + 3 requests on its home server: every server's count is a multiple of 4.
    assert sum(with_affinity["requests"]) == 16
    assert all(r % 4 == 0 for r in with_affinity["requests"])
    assert without["requests"] == [8, 8]  # one at a time, no affinity: the servers alternate
    assert with_affinity["queried"] == pytest.approx(without["queried"], rel=0.1)  # the same prompts both times
    assert with_affinity["hits"] > 0
    assert with_affinity["hits"] > without["hits"]
