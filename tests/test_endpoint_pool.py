"""The openai backend's endpoint pool: routing rules (pure), then several real servers on 127.0.0.1 (the fault-injecting
test server, llama.cpp's server), including one killed mid-run: every item comes back, in order, none twice."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from _openai_servers import FaultServer, free_port, llama_cpp_server, require_llama_cpp
from _pool_servers import doomed_server
from cerm import ConfigurationError, Judge, JudgeConfig, Status
from cerm.backends._pool import AFFINITY_SLACK, EndpointPool, affinity_key
from cerm.backends.openai import OpenAIBackend

pytestmark = pytest.mark.timeout(300)

FAST = {"max_attempts": 3, "backoff_initial": 0.02, "backoff_max": 0.1, "timeout": 30.0, "api_key": "sk-test"}
EVAL = JudgeConfig(criteria_max_new_tokens=64, evaluation_max_new_tokens=64)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- routing rules, without a server ----------------------------------------------------------------------------------
def test_least_in_flight_then_fewest_requests() -> None:
    pool = EndpointPool(["http://a/v1", "http://b/v1", "http://c/v1"])
    a, b, c = pool.endpoints
    a.in_flight, b.in_flight, c.in_flight = 2, 0, 1
    assert pool.choose(None) is b
    b.in_flight, b.requests, c.in_flight = 2, 5, 2
    assert pool.choose(None) is a  # all equally busy: the one with the fewest requests so far


def test_affinity_is_stable_and_yields_to_load() -> None:
    pool = EndpointPool(["http://a/v1", "http://b/v1", "http://c/v1"])
    keys = [affinity_key(f"query {i}") for i in range(60)]
    homes = [pool.choose(k) for k in keys]
    assert homes == [pool.choose(k) for k in keys]  # the same query, the same server
    assert len({h.index for h in homes if h is not None}) == 3  # queries spread over the servers
    home = homes[0]
    assert home is not None
    home.in_flight = AFFINITY_SLACK + 1  # much busier than the idle others: the query goes elsewhere
    assert pool.choose(keys[0]) is not home
    home.in_flight = AFFINITY_SLACK
    assert pool.choose(keys[0]) is home


def test_ejection_backoff_doubles_and_a_success_resets_it() -> None:
    clock = Clock()
    pool = EndpointPool(["http://a/v1", "http://b/v1"], eject_after=2, eject_backoff=1.0, clock=clock)
    a, b = pool.endpoints
    assert not pool.failed(a)
    assert pool.failed(a)  # second failure in a row: out
    assert [s.ejected for s in pool.stats()] == [True, False]
    assert all(pool.choose(None) is b for _ in range(3))
    clock.now += 1.0  # back-off over: a takes requests again
    a_back = pool.choose(None, avoid=frozenset({1}))
    assert a_back is a
    assert pool.failed(a)  # one more failure: out again, for twice as long
    assert a.backoff == 2.0
    clock.now += 2.0
    pool.succeeded(a)
    assert (a.consecutive_failures, a.backoff) == (0, 0.0)
    assert pool.stats()[0].ejections == 2


def test_retry_avoids_the_failed_endpoint_and_all_ejected_probes_the_first_due_back() -> None:
    clock = Clock()
    pool = EndpointPool(["http://a/v1", "http://b/v1"], eject_after=1, clock=clock)
    a, b = pool.endpoints
    assert pool.choose(None, avoid=frozenset({0})) is b
    assert pool.choose(None, avoid=frozenset({1})) is a
    assert pool.choose(None, avoid=frozenset({0, 1})) in (a, b)  # nowhere else: retry where it failed
    assert pool.has_alternative(frozenset({0}))
    pool.failed(b)
    assert not pool.has_alternative(frozenset({0}))
    clock.now += 0.5
    pool.failed(a)  # both out; b is due back first
    assert pool.choose(None) is b


def test_a_full_pool_makes_the_request_wait() -> None:
    pool = EndpointPool(["http://a/v1", "http://b/v1"], max_concurrency_each=1)
    a, b = pool.endpoints
    a.in_flight = 1
    assert pool.choose(None) is b
    b.in_flight = 1
    assert pool.choose(None) is None


def test_bad_pool_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        OpenAIBackend("m", base_url="http://a/v1", base_urls=["http://b/v1"])
    with pytest.raises(ConfigurationError, match="non-empty list"):
        OpenAIBackend("m", base_urls=[])
    with pytest.raises(ConfigurationError, match="non-empty list"):
        OpenAIBackend("m", base_urls="http://a/v1")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="twice"):
        OpenAIBackend("m", base_urls=["http://a/v1", "http://u:p@a/v1"])
    with pytest.raises(ConfigurationError, match="endpoint_max_concurrency"):
        OpenAIBackend("m", base_urls=["http://a/v1"], endpoint_max_concurrency=0)


# -- several real servers ------------------------------------------------------------------------------------------
@contextlib.contextmanager
def servers(count: int, **settings: Any) -> Iterator[list[FaultServer]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(FaultServer(**settings).running()) for _ in range(count)]


def responses(n: int, tag: str = "item") -> list[str]:
    return [f"{tag}-{i:02d} score={i % 10}" for i in range(n)]


def first_messages(server: FaultServer) -> set[str]:
    return {s.body["messages"][0]["content"] for s in server.seen}


def test_pool_scores_every_item_in_order_and_spreads_queries() -> None:
    with servers(3) as pool:
        backend = OpenAIBackend("judge", base_urls=[s.base_url for s in pool], max_concurrency=1, **FAST)
        with Judge(backend, config=EVAL) as judge:
            batch = judge.judge_batch([(f"Question {q}?", responses(3, f"q{q}")) for q in range(12)])
        for q, judgments in enumerate(batch):
            assert [j.response_index for j in judgments] == [0, 1, 2]
            assert [j.score for j in judgments] == [0.0, 1.0, 2.0], q
        # One request at a time, so no server is ever busier: every request of a query went to its home server
        # (criteria turn and evaluations share the first message), and the 12 queries used all three servers.
        homes = [first_messages(s) for s in pool]
        assert all(homes), "a server got no query"
        assert sum(len(h) for h in homes) == 12  # each query's prompt reached exactly one server
        stats = backend.endpoint_stats()
        assert sum(s.requests for s in stats) == 12 * 4
        assert sum(s.affinity_hits for s in stats) == 12 * 4
        described = backend.describe()
        assert described["base_urls"] == [s.base_url for s in pool]
        assert [e["successes"] for e in described["endpoints"]] == [s.count() for s in pool]


def test_without_affinity_requests_go_round_the_idle_servers() -> None:
    with servers(2) as pool:
        backend = OpenAIBackend(
            "judge", base_urls=[s.base_url for s in pool], max_concurrency=1, affinity=False, **FAST
        )
        with Judge(backend, config=EVAL) as judge:
            judge.judge("Question?", responses(5))
        assert [s.count() for s in pool] == [3, 3]  # 6 requests, least in flight then fewest so far: alternating


def test_per_endpoint_concurrency_is_a_hard_cap() -> None:
    # Each server holds its first two requests until both are in flight, so the cap is reached, never passed.
    with servers(2, barriers=[2]) as pool:
        backend = OpenAIBackend("judge", base_urls=[s.base_url for s in pool], endpoint_max_concurrency=2, **FAST)
        with backend:
            out = backend.generate([[{"role": "user", "content": f"c{i}"}] for i in range(12)], _params())
        assert all(c[0].finish_reason == "stop" for c in out)
        assert [s.max_in_flight for s in pool] == [2, 2]
        assert [s.held_too_long for s in pool] == [0, 0]


def _params() -> Any:
    from cerm.backends import SamplingParams

    return SamplingParams(max_new_tokens=8)


def test_a_dead_endpoint_is_ejected_and_its_requests_succeed_elsewhere() -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connection refused
    with servers(1) as [live]:
        backend = OpenAIBackend("judge", base_urls=[dead, live.base_url], max_concurrency=1, affinity=False, **FAST)
        with Judge(backend, config=EVAL) as judge:
            judgments = judge.judge("Question?", responses(6))
        assert [j.status for j in judgments] == [Status.SCORED] * 6
        assert [j.score for j in judgments] == [float(i) for i in range(6)]
        dead_stats, live_stats = backend.endpoint_stats()
        assert dead_stats.successes == 0
        assert dead_stats.failures == dead_stats.requests >= 1
        assert live_stats.successes == 7
        assert live_stats.failures == 0
        assert live.count() == 7  # nothing was answered twice


def test_an_outage_of_every_endpoint_is_an_error_never_a_score() -> None:
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    backend = OpenAIBackend("judge", base_urls=urls, **{**FAST, "max_attempts": 6})
    with Judge(backend, config=EVAL) as judge:
        judgments = judge.judge("Question?", ["a", "b"])
    assert [j.status for j in judgments] == [Status.ERROR, Status.ERROR]
    assert all(j.score is None and "connection error at http://127.0.0.1:" in (j.reason or "") for j in judgments)
    # The criteria request's 6 attempts alternate between the servers: 3 failures in a row eject each of them.
    assert [(s.requests, s.ejected) for s in backend.endpoint_stats()] == [(3, True), (3, True)]


def test_retry_goes_to_another_server_at_once() -> None:
    # The first server answers 503 to the criteria request; the retry is on the second server, with no back-off
    # (a back-off of 60 s here would hold the test up to the pytest timeout).
    with servers(2, schedule={"Question": ["503"]}) as pool:
        pool[1].schedule = {}
        backend = OpenAIBackend(
            "judge", base_urls=[s.base_url for s in pool], max_concurrency=1, affinity=False,
            **{**FAST, "backoff_initial": 60.0, "backoff_max": 60.0},
        )  # fmt: skip
        with Judge(backend, config=EVAL) as judge:
            [judgment] = judge.judge("Question?", ["item score=7"])
        assert judgment.score == 7.0
        assert [s.seen[0].action for s in pool] == ["503", "ok"]


def _kill_mid_run(
    live_urls: list[str], config: JudgeConfig, pairs: list[tuple[str, list[str]]], **settings: Any
) -> Any:
    """Judge ``pairs`` on the live servers plus a doomed one that is SIGKILLed once it holds a request."""
    with doomed_server() as doomed:
        backend = OpenAIBackend(
            "demo", base_urls=[*live_urls, doomed.base_url], affinity=False, **{**FAST, "max_attempts": 4, **settings}
        )
        with Judge(backend, config=config) as judge, ThreadPoolExecutor(1) as runner:
            future = runner.submit(judge.judge_batch, pairs)
            doomed.wait_for_first_request()
            doomed.kill()
            result = future.result()
        stats = backend.endpoint_stats()
    assert stats[-1].requests >= 1
    assert stats[-1].successes == 0
    return result


def _outcome(batch: Any) -> list[list[tuple[Any, ...]]]:
    """What a judgment says, item for item: status, score, reason and the judge's texts (not timings)."""
    return [
        [
            (
                j.response_index,
                j.status,
                j.score,
                j.reason,
                *tuple((c.criteria.text, c.evaluation.text if c.evaluation else None) for c in j.chains),
            )
            for j in judgments
        ]
        for judgments in batch
    ]


def test_an_endpoint_killed_mid_run_loses_nothing_and_repeats_nothing() -> None:
    pairs = [(f"Question {q}?", responses(4, f"q{q}")) for q in range(3)]
    with (
        servers(1) as [reference],
        Judge(OpenAIBackend("demo", base_url=reference.base_url, **FAST), config=EVAL) as judge,
    ):
        expected = judge.judge_batch(pairs)
    with servers(2) as live:
        got = _kill_mid_run([s.base_url for s in live], EVAL, pairs)
        for _q, responses_q in enumerate(p[1] for p in pairs):
            for r in responses_q:
                tag = r.split(" ")[0]
                assert sum(s.count(tag) for s in live) == 1, tag  # each evaluation answered exactly once
        assert sum(s.count(f"Question {q}?") for s in live for q in range(3)) >= 3
    assert _outcome(got) == _outcome(expected)
    assert all(j.status is Status.SCORED for js in got for j in js)


# -- llama.cpp ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama_urls() -> Iterator[list[str]]:
    python = require_llama_cpp()
    from cerm._embedded import demo_gguf_path

    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(llama_cpp_server(demo_gguf_path(), python=python)) for _ in range(2)]


TINY = JudgeConfig(criteria_max_new_tokens=12, evaluation_max_new_tokens=8)
LLAMA_PAIRS = [("Name a colour.", ["Red.", "Seven."]), ("What is 2+2?", ["4"])]
# llama.cpp's server decodes one request at a time: one in flight per server, so the timeout bounds a generation,
# not the time a request waits in the server's queue (the machine running the tests may be busy).
LLAMA = {"timeout": 600.0, "endpoint_max_concurrency": 1}


@pytest.mark.model
@pytest.mark.timeout(3600)
def test_two_llama_cpp_servers_agree_with_one_and_survive_a_killed_peer(llama_urls: list[str]) -> None:
    """Greedy decoding on the same GGUF: a pool of two llama.cpp servers gives the judgments of one server, and so does
    the pool with a third server that dies mid-run (its requests are retried on the llama.cpp servers)."""
    with Judge(OpenAIBackend("demo", base_urls=llama_urls[:1], **LLAMA), config=TINY) as judge:
        expected = judge.judge_batch(LLAMA_PAIRS)
    backend = OpenAIBackend("demo", base_urls=llama_urls, affinity=False, **LLAMA)
    with Judge(backend, config=TINY) as judge:
        pooled = judge.judge_batch(LLAMA_PAIRS)
    assert [s.successes > 0 for s in backend.endpoint_stats()] == [True, True]
    assert _outcome(pooled) == _outcome(expected)
    survived = _kill_mid_run(llama_urls, TINY, LLAMA_PAIRS, **LLAMA)
    assert _outcome(survived) == _outcome(expected)
    assert not any(j.status is Status.ERROR for js in survived for j in js)


# -- cerm serve's /health and the command line ---------------------------------------------------------------------
def test_health_reports_each_endpoint() -> None:
    from cerm.integrations import RewardServer, create_app

    with servers(2) as pool:
        backend = OpenAIBackend("judge", base_urls=[s.base_url for s in pool], **FAST)
        judge = Judge(backend, config=EVAL)
        with RewardServer(create_app(judge, unscorable_reward=0.0, max_wait_ms=0)) as server:
            prompt = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
            body = {"query": [prompt + "score=4<|im_end|>"], "prompts": [prompt], "labels": ["4"]}
            assert httpx.post(server.url + "/get_reward", json=body, timeout=60).json()["rewards"] == [4.0]
            health = httpx.get(server.url + "/health").json()
        backend.close()
    assert [e["url"] for e in health["endpoints"]] == [s.base_url for s in pool]
    assert sum(e["successes"] for e in health["endpoints"]) == 2
    assert {"in_flight", "failures", "ejected", "affinity_hits", "requests"} <= health["endpoints"][0].keys()


def test_cli_takes_repeated_base_urls_and_a_file_of_them(tmp_path: Any) -> None:
    import argparse

    from cerm.cli import InputError
    from cerm.cli._common import add_judge_options, base_urls_from_args, judge_from_args

    parser = argparse.ArgumentParser()
    add_judge_options(parser)
    listing = tmp_path / "servers.txt"
    listing.write_text("# judges\nhttp://10.0.0.3:8000/v1\n\nhttp://10.0.0.4:8000/v1  # second rack\n")
    args = parser.parse_args(
        ["--model", "m", "--base-url", "http://10.0.0.1:8000/v1", "--base-url", "http://10.0.0.2:8000/v1",
         "--base-urls-file", str(listing)]
    )  # fmt: skip
    assert base_urls_from_args(args) == [f"http://10.0.0.{i}:8000/v1" for i in (1, 2, 3, 4)]
    with judge_from_args(args) as judge:
        assert judge.backend.name == "openai"
        assert judge.backend.describe()["base_urls"] == [f"http://10.0.0.{i}:8000/v1" for i in (1, 2, 3, 4)]
    single = parser.parse_args(["--model", "m", "--base-url", "http://10.0.0.1:8000/v1"])
    with judge_from_args(single) as judge:
        assert judge.backend.describe()["base_url"] == "http://10.0.0.1:8000/v1"
    clash = parser.parse_args(["--base-url", "http://a/v1", "--backend-arg", "base_url=http://b/v1"])
    with pytest.raises(InputError, match="not both"):
        judge_from_args(clash)
    empty = tmp_path / "none.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(InputError, match="no server URL"):
        base_urls_from_args(parser.parse_args(["--base-urls-file", str(empty)]))


def test_threads_share_one_pool() -> None:
    """Callers on several threads share the pool's counters and limits (one I/O loop)."""
    with servers(2) as pool:
        backend = OpenAIBackend("judge", base_urls=[s.base_url for s in pool], endpoint_max_concurrency=1, **FAST)
        with backend, ThreadPoolExecutor(4) as callers:
            start = threading.Barrier(4)

            def call(i: int) -> str:
                start.wait()
                [[c]] = backend.generate([[{"role": "user", "content": f"t{i}"}]], _params())
                return c.finish_reason

            assert list(callers.map(call, range(4))) == ["stop"] * 4
        assert all(s.max_in_flight <= 1 for s in pool)
        assert sum(s.successes for s in backend.endpoint_stats()) == 4


@pytest.mark.model
@pytest.mark.timeout(3600)
def test_endpoint_pool_example_against_two_llama_cpp_servers(llama_urls: list[str]) -> None:
    from test_example_openai import run_example

    done = run_example(
        "endpoint_pool.py", *llama_urls, "--model", "demo", "--max-new-tokens", "12", "--per-server", "1", timeout=3000
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" -> ")[0] for line in lines[:2]] == ["What is the capital of France?", "What is 2+2?"]
    assert "ERROR" not in done.stdout  # every request was answered
    endpoint_lines = [line for line in lines if line.startswith("endpoint ")]
    assert [line.split(": requests=")[0] for line in endpoint_lines] == [f"endpoint {u}" for u in llama_urls]
    assert sum(int(line.split("successes=")[1].split()[0]) for line in endpoint_lines) == 2 + 4
