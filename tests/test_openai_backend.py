"""The openai backend against servers that answer over real HTTP on 127.0.0.1.

A fault-injecting stub of our own (tests/_openai_servers.py) shows retries, ordering, limits and the handling of
every failure mode; llama.cpp's real server (``python -m llama_cpp.server`` on the embedded GGUF) shows the backend and
the Judge end to end against a real OpenAI-compatible implementation, compared with the Hugging Face backend.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from _openai_servers import FaultServer, llama_cpp_server, require_llama_cpp
from cerm import ConfigurationError, Judge, JudgeConfig, Status
from cerm.backends import Backend, Completion, SamplingParams, TokenLogprob, create_backend
from cerm.backends.openai import OpenAIBackend
from cerm.protocol import Conversation

pytestmark = pytest.mark.timeout(120)

FAST = {"max_attempts": 3, "backoff_initial": 0.02, "backoff_max": 0.1, "timeout": 2.0}
EVAL = JudgeConfig(criteria_max_new_tokens=64, evaluation_max_new_tokens=64)


def conv(text: str) -> Conversation:
    return [{"role": "user", "content": text}]


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer().running() as srv:
        yield srv


def backend_for(srv: FaultServer, **kwargs: Any) -> OpenAIBackend:
    settings = {**FAST, **kwargs}
    return OpenAIBackend("judge-model", base_url=srv.base_url, api_key="sk-test", **settings)


# -- faults: every item back, in order; retried ones succeed; exhausted ones ERROR, never UNSCORABLE -------------------
def test_faults_keep_order_retry_and_mark_only_exhausted_items_errored(server: FaultServer) -> None:
    server.retry_after = "0.2"
    server.hang_s = 30.0
    server.schedule = {
        "item-01": ["429", "ok"],
        "item-02": ["500", "503", "ok"],
        "item-03": ["drop", "ok"],
        "item-04": ["badjson", "ok"],
        "item-05": ["hang", "ok"],
        "item-06": ["nochoices", "ok"],
        "item-07": ["503", "503", "503", "503"],  # outlives max_attempts=3
        "item-08": ["401"],
        "item-09": ["400"],
        "item-10": ["404"],
        "item-11": ["hang", "hang", "hang"],
    }
    responses = [f"item-{i:02d} score={i % 10}" for i in range(13)]
    with Judge(backend_for(server, timeout=1.0), config=EVAL) as judge:
        judgments = judge.judge("What is 2+2?", responses)
    judge.backend.close()

    assert [j.response_index for j in judgments] == list(range(13))
    for i in (0, 1, 2, 3, 4, 5, 6, 12):  # clean or recovered: scored with the score the server wrote for that item
        assert judgments[i].status is Status.SCORED, judgments[i].reason
        assert judgments[i].score == float(i % 10)
    failed = {i: judgments[i] for i in (7, 8, 9, 10, 11)}
    for j in failed.values():
        assert j.status is Status.ERROR
        assert j.score is None
        assert j.reason
        assert j.reason.startswith("evaluation generation failed")
    assert "HTTP 503" in (failed[7].reason or "")
    assert "gave up after 3 attempts" in (failed[7].reason or "")
    assert "HTTP 401" in (failed[8].reason or "")
    assert "gave up" not in (failed[8].reason or "")
    assert "HTTP 400" in (failed[9].reason or "")
    assert "HTTP 404" in (failed[10].reason or "")
    assert "timed out after 1 s" in (failed[11].reason or "")
    # 400/401/404 are not retried; the rest were retried as scheduled and no more.
    counts = {tag: server.count(tag) for tag in server.schedule}
    assert counts["item-08"] == counts["item-09"] == counts["item-10"] == 1
    assert counts["item-01"] == counts["item-03"] == counts["item-04"] == counts["item-05"] == 2
    assert counts["item-02"] == counts["item-07"] == counts["item-11"] == 3
    # A hung request was abandoned by the client's timeout, not answered after the server's 30 s hang: its answer
    # never came, and the retry was sent while the server still held the first attempt.
    hung = [s.at for s in server.seen if "item-11" in s.body["messages"][-1]["content"]]
    assert all(later - earlier < server.hang_s for earlier, later in itertools.pairwise(hung))


def test_exhausted_errors_name_what_happened(server: FaultServer) -> None:
    server.schedule = {"dropped": ["drop"] * 3, "garbled": ["badjson"] * 3, "empty": ["nochoices"] * 3}
    with backend_for(server) as backend:
        out = backend.generate([conv("dropped"), conv("garbled"), conv("empty")], SamplingParams(max_new_tokens=4))
    errors = [o[0].error or "" for o in out]
    assert all(o[0].finish_reason == "error" and "gave up after 3 attempts" in (o[0].error or "") for o in out)
    assert "connection error" in errors[0]
    assert "Disconnected" in errors[0]
    assert "malformed JSON" in errors[1]
    assert "no usable 'choices'" in errors[2]


def test_retry_after_is_honoured(server: FaultServer) -> None:
    server.retry_after = "1"
    server.schedule = {"limited": ["429", "429", "ok"]}
    backend = backend_for(server, backoff_initial=0.01, backoff_max=0.01)
    with backend:
        [[completion]] = backend.generate([conv("limited")], SamplingParams(max_new_tokens=8))
    assert completion.finish_reason == "stop"
    times = [s.at for s in server.seen]
    assert len(times) == 3
    # The backoff alone would wait 10 ms; the server asked for 1 s (jitter only ever adds).
    assert all(later - earlier >= 0.95 for earlier, later in itertools.pairwise(times))


def test_max_retry_after_caps_a_long_wait(server: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    server.retry_after = "3600"
    server.schedule = {"limited": ["429", "ok"]}
    with caplog.at_level(logging.INFO, logger="cerm"), backend_for(server, max_retry_after=0.2) as backend:
        [[completion]] = backend.generate([conv("limited")], SamplingParams(max_new_tokens=8))
    assert completion.finish_reason == "stop"
    assert server.count("limited") == 2
    # The wait the client chose (logged before it sleeps): the cap, plus at most 10% jitter, not the hour asked for.
    waits = [float(m) for m in re.findall(r"retrying in ([0-9.]+) s", caplog.text)]
    assert len(waits) == 1
    assert 0.2 <= waits[0] <= 0.2 * 1.1 + 0.005


def test_exhausted_criteria_request_marks_that_query_only(server: FaultServer) -> None:
    server.schedule = {"broken query": ["500"] * 5}
    with Judge(backend_for(server), config=EVAL) as judge:
        rows = judge.judge_batch([("broken query", ["a score=3", "b score=4"]), ("fine query", ["c score=6"])])
    assert [j.status for j in rows[0]] == [Status.ERROR, Status.ERROR]  # no verdict: retry it, never a reward
    assert "criteria generation failed" in (rows[0][0].reason or "")
    assert "HTTP 500" in (rows[0][0].reason or "")
    assert rows[1][0].score == 6.0


# -- criteria reuse over HTTP, concurrency and rate limits ----------------------------------------------------------
def test_criteria_once_per_query_then_evaluations_concurrently(server: FaultServer) -> None:
    # The server answers the two criteria requests only once both are in flight, then the twelve evaluations only
    # once all twelve are: a client that sent them one after another would never be answered (held-too-long 500s).
    server.barriers = [2, 12]
    items = [(f"query {q}", [f"q{q} answer {r} score={r}" for r in range(6)]) for q in range(2)]
    with Judge(backend_for(server, max_concurrency=64, timeout=120.0), config=EVAL) as judge:
        rows = judge.judge_batch(items)
    assert server.held_too_long == 0
    criteria = [s for s in server.seen if len(s.body["messages"]) == 1]
    evaluations = [s for s in server.seen if len(s.body["messages"]) == 3]
    assert len(criteria) == 2
    assert len(evaluations) == 12
    assert server.count() == 14
    assert max(s.at for s in criteria) < min(s.at for s in evaluations)  # stage 1 strictly before stage 2
    assert server.max_in_flight == 12  # every evaluation of both queries was in flight at once
    assert [[j.score for j in row] for row in rows] == [[float(r) for r in range(6)]] * 2


def test_concurrency_limit_is_respected(server: FaultServer) -> None:
    server.barriers = [4] * 6  # each group of four is answered only when all four are in flight: the limit is used
    with backend_for(server, max_concurrency=4, timeout=120.0) as backend:
        out = backend.generate([conv(f"c{i}") for i in range(24)], SamplingParams(max_new_tokens=8))
    assert len(out) == 24
    assert all(o[0].finish_reason == "stop" for o in out)
    assert server.held_too_long == 0
    assert server.max_in_flight == 4  # and never exceeded


def test_requests_per_minute_limit_spreads_requests(server: FaultServer) -> None:
    with backend_for(server, requests_per_minute=1200) as backend:  # 20 per second, bursts of at most 20
        started = time.monotonic()
        backend.generate([conv(f"r{i}") for i in range(40)], SamplingParams(max_new_tokens=8))
        elapsed = time.monotonic() - started
    assert elapsed >= 0.9  # 20 at once, then 20 more at 20 per second
    # By time t after the start at most 20 + 20 t requests may have been sent (arrival delays only lower the count).
    assert sum(seen.at - started < 0.45 for seen in server.seen) <= 30


def test_tokens_per_minute_limit_waits_for_budget(server: FaultServer) -> None:
    # Each request reserves ~(chars/4 + 100) tokens; 6000 per minute is 100 per second.
    with backend_for(server, tokens_per_minute=6000) as backend:
        started = time.monotonic()
        out = backend.generate([conv("t" * 40) for _ in range(3)], SamplingParams(max_new_tokens=100))
        elapsed = time.monotonic() - started
    assert all(o[0].finish_reason == "stop" for o in out)
    assert elapsed >= 1.5  # the first request fits the 1 s burst, the next two wait about 1 s each


# -- server differences: n, logprobs, token counts, request fields ----------------------------------------------------
def test_n_ignored_by_the_server_still_gives_n_samples(server: FaultServer) -> None:
    server.ignore_n = True
    params = SamplingParams(max_new_tokens=8, n=3, temperature=0.7, seed=11)
    with backend_for(server) as backend:
        first = backend.generate([conv("a"), conv("b")], params)
        assert backend.n_supported is False
        seen_first = len(server.seen)
        second = backend.generate([conv("c")], params)
    assert [len(row) for row in first + second] == [3, 3, 3]
    assert seen_first == 6  # per conversation: one n=3 request answered with 1 choice, then 2 single requests
    later = server.seen[seen_first:]
    assert len(later) == 3
    assert all("n" not in s.body for s in later)
    assert sorted(s.body["seed"] for s in later) == [11, 12, 13]  # distinct seeds, not three identical samples


def test_n_honoured_uses_one_request(server: FaultServer) -> None:
    with backend_for(server) as backend:
        out = backend.generate([conv("a")], SamplingParams(max_new_tokens=8, n=4, temperature=0.7))
        assert backend.n_supported is True
    assert len(out[0]) == 4
    assert server.count() == 1
    assert server.seen[0].body["n"] == 4


def test_logprobs_and_usage_are_mapped(server: FaultServer) -> None:
    with backend_for(server) as backend:
        [[c]] = backend.generate([conv("lp")], SamplingParams(max_new_tokens=8, top_logprobs=2))
    body = server.seen[0].body
    assert body["logprobs"] is True
    assert body["top_logprobs"] == 2
    assert c.logprobs is not None
    assert len(c.logprobs) == len(c.text.split(" "))
    assert c.logprobs[0] == TokenLogprob(
        token=c.text.split(" ")[0], logprob=-0.5, top=((c.text.split(" ")[0], -0.5),) * 2
    )
    assert c.completion_tokens == len(c.text.split(" "))  # from the usage field
    assert c.prompt_tokens == len("lp") // 4


def test_request_fields_and_extra_body_pass_through(server: FaultServer) -> None:
    extra = {"chat_template_kwargs": {"enable_thinking": False}, "top_k": 20}
    with backend_for(server, extra_body=extra, extra_headers={"X-Team": "rm"}) as backend:
        backend.generate([conv("x")], SamplingParams(max_new_tokens=33, temperature=0.5, top_p=0.9, seed=4))
    seen = server.seen[0]
    assert seen.body["chat_template_kwargs"] == {"enable_thinking": False}
    assert seen.body["top_k"] == 20
    assert seen.body["max_tokens"] == 33
    assert "max_completion_tokens" not in seen.body
    assert (seen.body["temperature"], seen.body["top_p"], seen.body["seed"]) == (0.5, 0.9, 4)
    assert seen.body["model"] == "judge-model"
    assert seen.headers["x-team"] == "rm"


def test_query_string_in_the_base_url_is_sent_as_query_parameters(server: FaultServer) -> None:
    # Azure-style endpoints put the API version in the query; it must not end up inside the request path.
    url = server.base_url + "?api-version=2024-06-01&deployment=judge"
    with OpenAIBackend("judge-model", base_url=url, api_key="sk-test", **FAST) as backend:
        out = backend.generate([conv("x")], SamplingParams(max_new_tokens=5))
        assert backend.describe()["base_url"] == server.base_url  # the query is not recorded
    assert out[0][0].finish_reason == "stop"
    assert server.seen[0].path == "/v1/chat/completions"
    assert server.seen[0].query == {"api-version": "2024-06-01", "deployment": "judge"}


# -- chat template variables (issue 10 item 4) -----------------------------------------------------------------------
def test_protocol_template_kwargs_are_sent_by_default(server: FaultServer) -> None:
    # Without them a Qwen3 hybrid model served by vLLM or SGLang would open a <think> block the judge never learned.
    with backend_for(server) as backend:
        backend.generate([conv("x")], SamplingParams(max_new_tokens=5))
        assert backend.describe()["chat_template_kwargs"] == {"enable_thinking": False}
    assert server.seen[0].body["chat_template_kwargs"] == {"enable_thinking": False}


def test_template_kwargs_merge_and_can_be_turned_off(server: FaultServer) -> None:
    with backend_for(server, chat_template_kwargs={"custom": 1}) as backend:
        backend.generate([conv("x")], SamplingParams(max_new_tokens=5))
    with backend_for(server, send_template_kwargs=False) as backend:
        backend.generate([conv("y")], SamplingParams(max_new_tokens=5))
        assert backend.describe()["chat_template_kwargs"] is None
    assert server.seen[0].body["chat_template_kwargs"] == {"enable_thinking": False, "custom": 1}
    assert "chat_template_kwargs" not in server.seen[1].body


def test_a_server_that_refuses_template_kwargs_gets_requests_without_them() -> None:
    with FaultServer(reject_fields=frozenset({"chat_template_kwargs"})).running() as srv:
        with backend_for(srv) as backend:
            first = backend.generate([conv("a"), conv("b")], SamplingParams(max_new_tokens=5))
            later = backend.generate([conv("c")], SamplingParams(max_new_tokens=5))
            assert backend.describe()["chat_template_kwargs"] is None
        assert [row[0].finish_reason for row in (*first, *later)] == ["stop", "stop", "stop"]
        refused = [s for s in srv.seen if s.action.startswith("reject")]
        assert 1 <= len(refused) <= 2  # the requests already in flight when the first refusal came back
        assert "chat_template_kwargs" not in srv.seen[-1].body
        # Asked for explicitly, a refusal is the request's error, not silently dropped.
        with backend_for(srv, send_template_kwargs=True) as strict:
            (row,) = strict.generate([conv("d")], SamplingParams(max_new_tokens=5))
        assert row[0].finish_reason == "error"
        assert "chat_template_kwargs" in (row[0].error or "")


def test_openai_own_api_gets_no_template_kwargs() -> None:
    backend = OpenAIBackend("gpt-x", base_url="https://api.openai.com/v1", api_key="sk-x")
    assert backend.describe()["chat_template_kwargs"] is None
    backend.close()


# -- credentials in the base URL (issue 10 item 8) ------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_credentials_in_the_base_url_become_a_basic_auth_header(server: FaultServer, transport: str) -> None:
    # aiohttp used to refuse every request: "Cannot combine AUTHORIZATION header with ... credentials encoded in URL".
    url = server.base_url.replace("http://", "http://judge-user:pa%40ss-w0rd@")
    with OpenAIBackend("m", base_url=url, transport=transport, **FAST) as backend:  # type: ignore[arg-type]
        (row,) = backend.generate([conv("x")], SamplingParams(max_new_tokens=5))
        described = repr(backend.describe())
    assert row[0].finish_reason == "stop", row[0].error
    expected = "Basic " + base64.b64encode(b"judge-user:pa@ss-w0rd").decode()
    assert server.seen[0].headers["authorization"] == expected
    for secret in ("pa%40ss-w0rd", "pa@ss-w0rd", "judge-user", expected.removeprefix("Basic ")):
        assert secret not in described


def test_credentials_in_the_base_url_and_an_api_key_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="credentials"):
        OpenAIBackend("m", base_url="https://u:p@example.test/v1", api_key="sk-x")


def test_secrets_in_the_base_url_never_reach_describe_nor_errors(server: FaultServer) -> None:
    server.schedule = {"refused": ["401echo"]}
    url = server.base_url.replace("http://", "http://u:url-secret-pw@") + "?api-key=query-secret-key&api-version=1"
    with OpenAIBackend("m", base_url=url, **FAST) as backend:
        (row,) = backend.generate([conv("refused")], SamplingParams(max_new_tokens=5))
        described = repr(backend.describe())
    assert server.seen[0].query["api-key"] == "query-secret-key"  # sent...
    echoed = server.seen[0].headers["authorization"].removeprefix("Bearer ")
    assert row[0].finish_reason == "error"
    for secret in ("url-secret-pw", "query-secret-key", echoed.removeprefix("Basic ")):  # ...never shown
        assert secret not in described
        assert secret not in (row[0].error or "")


# -- secrets --------------------------------------------------------------------------------------------------------
def test_api_key_never_logged_nor_recorded(server: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-very-secret-0123456789"
    server.schedule = {"refused": ["401echo"], "flaky": ["500", "ok"]}
    caplog.set_level(logging.DEBUG)
    backend = OpenAIBackend("m", base_url=server.base_url, api_key=secret, **FAST)
    with Judge(backend, config=EVAL) as judge:
        judgments = judge.judge("q", ["refused", "flaky score=2"])
        described = repr(backend.describe())
    assert server.seen[0].headers["authorization"] == f"Bearer {secret}"  # it was sent...
    assert judgments[0].status is Status.ERROR  # a refused request is no verdict
    assert "***" in (judgments[0].reason or "")
    for text in (described, caplog.text, repr([j.to_dict() for j in judgments])):  # ...and never shown
        assert secret not in text
    assert judgments[1].score == 2.0


def test_recorded_url_drops_credentials_and_query() -> None:
    backend = OpenAIBackend("m", base_url="https://user:pw@example.test:8443/v1?api-key=abc#x")
    assert backend.describe()["base_url"] == "https://example.test:8443/v1"
    backend.close()


def test_api_key_from_environment(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    with OpenAIBackend("m", base_url=server.base_url, **FAST) as backend:
        backend.generate([conv("x")], SamplingParams(max_new_tokens=4))
    assert server.seen[0].headers["authorization"] == "Bearer sk-from-env"


# -- sync and async -------------------------------------------------------------------------------------------------
def test_sync_calls_work_inside_a_running_event_loop(server: FaultServer) -> None:
    backend = backend_for(server)
    judge = Judge(backend, config=EVAL)

    async def notebook_cell() -> tuple[list[float | None], list[float | None]]:
        sync_scores = judge.score("q", ["a score=1", "b score=2"])  # a sync call while this loop runs
        async_scores = await judge.ascore("q", ["c score=3", "d score=4"])
        return sync_scores, async_scores

    assert asyncio.run(notebook_cell()) == ([1.0, 2.0], [3.0, 4.0])
    # A second asyncio.run (a new loop) finds no stale connections: the backend's loop is its own.
    assert asyncio.run(judge.ascore("q", ["e score=5"])) == [5.0]
    judge.close()
    backend.close()


def test_async_callers_run_concurrently_without_blocking_their_loop(server: FaultServer) -> None:
    # The server holds every request until a task on the CALLER's loop releases it, and that task releases only once
    # it has seen all eight requests in flight at once. A blocked loop, or requests sent one after another, would
    # never release them (they would come back as held-too-long 500s).
    server.hold = threading.Event()
    backend = backend_for(server, timeout=120.0)

    async def main() -> list[list[Completion]]:
        async def releaser() -> None:
            while server.in_flight < 8:
                await asyncio.sleep(0.005)  # yields to the loop; runs only while the loop is free
            assert server.hold is not None
            server.hold.set()

        task = asyncio.create_task(releaser())
        rows = await asyncio.gather(
            *(backend.agenerate([conv(f"x{i}")], SamplingParams(max_new_tokens=4)) for i in range(8))
        )
        await task
        return [row[0] for row in rows]

    out = asyncio.run(main())
    backend.close()
    assert server.held_too_long == 0
    assert server.max_in_flight == 8
    assert all(row[0].finish_reason == "stop" for row in out)


def test_close_stops_the_io_thread_and_refuses_new_work(server: FaultServer) -> None:
    backend = backend_for(server)
    backend.generate([conv("x")], SamplingParams(max_new_tokens=4))
    assert any(t.name == "cerm-openai-io" for t in threading.enumerate())
    backend.close()
    backend.close()  # twice is fine
    assert backend._io is not None
    assert not backend._io.thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        backend.generate([conv("x")], SamplingParams(max_new_tokens=4))


# -- construction -----------------------------------------------------------------------------------------------------
def test_registry_and_judge_by_name(server: FaultServer) -> None:
    backend = create_backend("openai", "served-name", base_url=server.base_url)
    assert isinstance(backend, OpenAIBackend)
    assert backend.model_id == "served-name"
    backend.close()
    with Judge("served-name", backend="openai", base_url=server.base_url, config=EVAL) as judge:
        [judgment] = judge.judge("q", ["a score=7"])
    assert judgment.score == 7.0
    assert judgment.provenance.backend == "openai"
    assert judgment.provenance.model == "served-name"
    assert judgment.provenance.evaluation_usage.completion_tokens > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": 0}, "timeout"),
        ({"requests_per_minute": -1}, "requests_per_minute"),
        ({"max_tokens_field": "tokens"}, "max_tokens_field"),
        ({"transport": "curl"}, "transport"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", **kwargs)


def test_unreachable_server_fails_items_not_the_call() -> None:
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", max_attempts=2, backoff_initial=0.01, timeout=2)
    with backend:
        out = backend.generate([conv("a"), conv("b")], SamplingParams(max_new_tokens=4))
    assert [o[0].finish_reason for o in out] == ["error", "error"]
    assert "connection error" in (out[0][0].error or "")
    assert "gave up after 2 attempts" in (out[0][0].error or "")


# -- llama.cpp's real server ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    python = require_llama_cpp()  # .venv-llama, built by `make test`
    from cerm._embedded import demo_gguf_path

    with llama_cpp_server(demo_gguf_path(), python=python) as url:
        yield url


@pytest.mark.model
@pytest.mark.timeout(600)
def test_llama_cpp_generation_n_logprobs_and_usage(llama_url: str) -> None:
    with OpenAIBackend("demo-base", base_url=llama_url, max_concurrency=4, timeout=120) as backend:
        greedy = SamplingParams(max_new_tokens=12)
        [[a], [b]] = backend.generate([conv("Name a colour."), conv("Name a colour.")], greedy)
        assert a.text
        assert a.text == b.text
        assert a.finish_reason in ("stop", "length")
        assert 0 < a.completion_tokens <= 12
        assert a.prompt_tokens > 5
        sampled = backend.generate(
            [conv("Say a word.")], SamplingParams(max_new_tokens=6, n=2, temperature=0.9, seed=3)
        )
        assert len(sampled[0]) == 2
        assert all(c.finish_reason != "error" for c in sampled[0])
        assert backend.n_supported is False  # llama.cpp answers n=2 with one choice: the second came separately
        [[lp]] = backend.generate([conv("Count: one, two,")], SamplingParams(max_new_tokens=5, top_logprobs=2))
        assert lp.logprobs is not None
        assert len(lp.logprobs) == lp.completion_tokens
        assert all(t.logprob <= 0 and len(t.top) == 2 for t in lp.logprobs)
        assert "".join(t.token for t in lp.logprobs).strip() == lp.text.strip()


class _Recorder(Backend):
    """Wraps a backend and records every conversation the Judge sends it."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.seen: list[list[Conversation]] = []

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        self.seen.append(list(conversations))
        return self.inner.generate(conversations, params)


@pytest.mark.model
@pytest.mark.timeout(600)
def test_judge_through_llama_cpp_matches_the_hf_backend(llama_url: str) -> None:
    """Same prompts, same parser, two engines: the conversations agree byte for byte; outcomes agree by status.

    The demo model rarely writes the CE-RM format, so most judgments are honestly UNSCORABLE on both engines, and
    llama.cpp's logits differ slightly from transformers' (greedy text can differ): compare outcomes, not strings.
    """
    query = "What is the capital of France?"
    responses = ["Paris is the capital of France.", "The capital of France is Berlin."]
    config = JudgeConfig(criteria_max_new_tokens=32, evaluation_max_new_tokens=32)
    http = _Recorder(OpenAIBackend("demo-base", base_url=llama_url, timeout=120))
    local = _Recorder(create_backend("hf", "demo-base"))
    with Judge(http, config=config) as judge_http, Judge(local, config=config) as judge_local:
        via_http = judge_http.judge(query, responses)
        via_hf = judge_local.judge(query, responses)
    http.inner.close()
    local.inner.close()
    assert http.seen[0] == local.seen[0]  # the criteria turn: identical prompt
    for a, b in zip(http.seen[1], local.seen[1], strict=True):  # evaluations: same frame, own criteria text
        assert (a[0], a[2]) == (b[0], b[2])
        assert a[1]["role"] == b[1]["role"] == "assistant"
    for judgments in (via_http, via_hf):
        assert [j.response_index for j in judgments] == [0, 1]
        for j in judgments:
            assert j.criteria is not None
            assert j.criteria.text
            assert (j.status is Status.SCORED and 0 <= (j.score or 0) <= 10) or (
                j.status is Status.UNSCORABLE and j.reason
            )
            assert "generation failed" not in (j.reason or "")
    assert via_http[0].provenance.prompt_version == via_hf[0].provenance.prompt_version
    assert via_http[0].provenance.criteria_usage.completion_tokens > 0
    unscorable = [sum(j.status is Status.UNSCORABLE for j in js) for js in (via_http, via_hf)]
    assert abs(unscorable[0] - unscorable[1]) <= 1, unscorable


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_judge_through_llama_cpp_statistically_like_hf(llama_url: str) -> None:
    """More items: the share of SCORED judgments and the mean score agree between engines within loose bounds."""
    items = [
        ("What is 2 + 2?", ["4", "5", "Four, because two plus two is four."]),
        ("Name a primary colour.", ["Red.", "Green is a colour made by mixing.", "Banana."]),
        ("Translate 'bonjour' into English.", ["Hello.", "Goodbye.", "It means good day or hello."]),
    ]
    config = JudgeConfig(criteria_max_new_tokens=96, evaluation_max_new_tokens=96)
    with Judge(OpenAIBackend("demo-base", base_url=llama_url, timeout=300), config=config) as judge_http:
        via_http = [j for row in judge_http.judge_batch(items) for j in row]
    with Judge("demo-base", config=config) as judge_local:
        via_hf = [j for row in judge_local.judge_batch(items) for j in row]
    share = [sum(j.scorable for j in js) / len(js) for js in (via_http, via_hf)]
    assert abs(share[0] - share[1]) <= 0.5, share
    assert not any("generation failed" in (j.reason or "") for j in via_http)


def test_close_during_a_call_ends_it_with_an_error_not_a_hang(server: FaultServer) -> None:
    server.hang_s = 30.0
    server.schedule = {"slow": ["hang"]}
    backend = backend_for(server, timeout=60.0)
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            backend.generate([conv("slow")], SamplingParams(max_new_tokens=4))
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    assert server.arrived.wait(60)  # the request is in the server's hands
    backend.close()
    worker.join(10)
    assert not worker.is_alive()
    assert isinstance(outcome[0], RuntimeError)
    assert "closed" in str(outcome[0])
