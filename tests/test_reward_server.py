"""The OpenRLHF reward server on a real socket: contract, 4xx for bad bodies, micro-batching, survival."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from _integration_helpers import mock_judge, scripted_responder, scripted_score
from _openai_servers import FaultServer
from cerm import Judge, JudgeConfig, MemoryCriteriaCache
from cerm.backends import Backend, Completion, InstrumentedBackend, MockBackend, SamplingParams
from cerm.integrations import RewardServer, create_app
from cerm.integrations.openrlhf import openrlhf_query, split_sample
from cerm.protocol import Conversation

CHATML_PROMPT = (
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
)


def _body(responses: Sequence[str], prompt: str = CHATML_PROMPT) -> dict[str, Any]:
    return {
        "query": [prompt + r + "<|im_end|>" for r in responses],
        "prompts": [prompt] * len(responses),
        "labels": ["4"] * len(responses),
    }


def test_split_sample_and_query_derivation() -> None:
    assert split_sample(CHATML_PROMPT + "4<|im_end|>\n<|endoftext|>", CHATML_PROMPT) == ("4", None)
    assert split_sample("<s>" + "P: hi" + " there</s>", "P: hi") == ("there", None)  # BOS before the prompt
    response, reason = split_sample("something else", "P: hi")
    assert response is None
    assert reason
    assert "does not contain" in reason
    assert openrlhf_query(CHATML_PROMPT) == "What is 2+2?"
    llama = (
        "<|start_header_id|>user<|end_header_id|>\n\nHello?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert openrlhf_query(llama) == "Hello?"
    assert openrlhf_query("plain prompt ") == "plain prompt"


@pytest.fixture
def mock_server() -> Iterator[tuple[RewardServer, Any]]:
    judge, backend = mock_judge()
    app = create_app(
        judge, unscorable_reward=-1.0, scale=(0, 1), max_wait_ms=200, max_body_bytes=4096, max_items_per_request=8
    )
    with RewardServer(app) as server:
        yield server, backend


def test_contract_on_a_real_socket(mock_server: tuple[RewardServer, Any]) -> None:
    server, _ = mock_server
    assert server.url.startswith("http://127.0.0.1:")
    assert server.port > 0
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok"
    assert health["model"] == "mock-judge"
    r = httpx.post(server.url + "/get_reward", json=_body(["4", "UNSCORABLE", "five"]))
    assert r.status_code == 200, r.text
    data = r.json()
    assert set(data) >= {"rewards", "scores", "extra_logs"}
    assert len(data["rewards"]) == len(data["scores"]) == 3
    assert 0 <= data["rewards"][0] <= 1
    assert data["rewards"][1] == -1.0  # the chosen unscorable reward
    assert data["extra_logs"]["cerm_scorable"] == [1.0, 0.0, 1.0]
    assert data["cerm"][1]["status"] == "unscorable"
    assert data["cerm"][1]["reason"]
    # Labels are optional; an empty query list is answered with empty lists.
    assert httpx.post(server.url + "/get_reward", json={"query": [], "prompts": []}).json()["rewards"] == []


@pytest.mark.parametrize(
    ("content", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty request body"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 422, "JSON object"),
        (b'{"prompts": ["p"]}', 422, "'query' is required"),
        (b'{"query": "p r", "prompts": ["p"]}', 422, "must be a list"),
        (b'{"query": ["p r", 3], "prompts": ["p", "p"]}', 422, "'query'[1] must be a string"),
        (b'{"query": ["p r"]}', 422, "'prompts' is required"),
        (b'{"query": ["p r"], "prompts": ["p", "q"]}', 422, "has 1 items but 'prompts' has 2"),
        (b'{"query": ["p r"], "prompts": ["p"], "labels": [1, 2]}', 422, "labels"),
        (json.dumps({"query": ["p r"] * 9, "prompts": ["p"] * 9}).encode(), 413, "exceed the limit of 8"),
        (json.dumps({"query": ["x" * 5000], "prompts": ["x"]}).encode(), 413, "exceeds the limit"),
    ],
)
def test_bad_bodies_get_4xx_and_the_server_survives(
    mock_server: tuple[RewardServer, Any], content: bytes, status: int, needle: str
) -> None:
    server, backend = mock_server
    r = httpx.post(server.url + "/get_reward", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]
    assert backend.calls == []  # nothing reached the judge
    assert httpx.get(server.url + "/health").status_code == 200


def test_oversized_chunked_body_is_refused(mock_server: tuple[RewardServer, Any]) -> None:
    server, _ = mock_server

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield b'{"query": ["'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"], "prompts": ["y"]}'

    r = httpx.post(server.url + "/get_reward", content=chunks())
    assert r.status_code == 413


def test_unmatched_prompt_is_unscorable_not_an_error(mock_server: tuple[RewardServer, Any]) -> None:
    server, _ = mock_server
    r = httpx.post(server.url + "/get_reward", json={"query": ["abc", "P: q A"], "prompts": ["zzz", "P: q"]})
    data = r.json()
    assert r.status_code == 200
    assert data["rewards"][0] == -1.0
    assert "does not contain" in data["cerm"][0]["reason"]
    assert data["extra_logs"]["cerm_scorable"] == [0.0, 1.0]


def test_concurrent_requests_are_batched() -> None:
    # Batches close on a count here (max_batch_items=8, a wait far longer than any test), so what the server observed
    # does not depend on the machine's speed: 8 one-sample requests of one prompt become ONE judge call of 8 items.
    app = create_app(mock_judge()[0], unscorable_reward=-1.0, max_batch_items=8, max_wait_ms=600_000)
    judge = app.state.judge
    with RewardServer(app) as counted, ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda i: httpx.post(counted.url + "/get_reward", json=_body([f"answer {i}"]), timeout=60), range(8)
            )
        )
        health = httpx.get(counted.url + "/health").json()
    assert all(a.status_code == 200 and len(a.json()["rewards"]) == 1 for a in answers)
    assert (health["batches"], health["requests"], health["items"], health["largest_batch"]) == (1, 8, 8, 8)
    # One criteria conversation for the shared prompt, then the 8 evaluations together.
    calls = judge.backend.calls
    assert [len(conversations) for conversations, _ in calls] == [1, 8]


class _Failing(Backend):
    name = "failing"
    model_id = "failing"  # type: ignore[assignment]

    def __init__(self) -> None:
        self.fail = True

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        if self.fail:
            raise RuntimeError("backend exploded")
        return [[Completion("$\\boxed{5}$", "stop")] for _ in conversations]


def test_judge_failure_is_a_500_and_the_server_keeps_serving() -> None:
    backend = _Failing()
    app = create_app(Judge(backend), unscorable_reward=0.0, max_wait_ms=1)
    with RewardServer(app) as server:
        r = httpx.post(server.url + "/get_reward", json=_body(["4"]))
        assert r.status_code == 500
        assert "backend exploded" in r.json()["error"]
        backend.fail = False
        r = httpx.post(server.url + "/get_reward", json=_body(["4"]))
        assert r.status_code == 200
        assert r.json()["rewards"] == [5.0]


def test_unscorable_reward_is_required() -> None:
    judge, _ = mock_judge()
    with pytest.raises(TypeError):
        create_app(judge)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="finite"):
        create_app(judge, unscorable_reward=float("nan"))


@pytest.mark.model
def test_demo_judge_behind_the_server_batches_concurrent_requests() -> None:
    config = JudgeConfig(criteria_max_new_tokens=8, evaluation_max_new_tokens=8)
    real = Judge("demo-base", config=config)
    counting = InstrumentedBackend(real.backend)
    # The batch closes when 4 samples are pending (the wait bound is never reached): no timing in the assertions.
    app = create_app(
        Judge(counting, config=config), unscorable_reward=0.0, scale=(0, 1), max_batch_items=4, max_wait_ms=600_000
    )
    with RewardServer(app) as server, ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda r: httpx.post(server.url + "/get_reward", json=_body([r]), timeout=1200),
                ["4", "Four.", "2+2 is 4", "5"],
            )
        )
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        for a in answers:
            data = a.json()
            assert len(data["rewards"]) == 1
            assert data["cerm"][0]["status"] in ("scored", "unscorable")
            assert data["cerm"][0]["status"] == "scored" or data["cerm"][0]["reason"]
        # One criteria turn, then all four evaluations together.
        assert counting.conversations_per_call == [1, 4], counting.conversations_per_call
        health = httpx.get(server.url + "/health").json()
        assert (health["batches"], health["largest_batch"]) == (1, 4)
    real.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.model
def test_cerm_serve_command_starts_answers_health_and_rejects_bad_bodies() -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cerm",
            "serve",
            "--port",
            str(port),
            "--unscorable-reward",
            "0",
            "--max-new-tokens",
            "8",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                health = httpx.get(url + "/health", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "cerm serve did not come up"
                time.sleep(0.5)
        assert health.json()["status"] == "ok"
        assert "SmolLM2" in health.json()["model"]
        bad = httpx.post(url + "/get_reward", content=b"nope", headers={"content-type": "application/json"})
        assert bad.status_code == 400
        assert httpx.get(url + "/health").status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)


def test_cerm_serve_requires_the_unscorable_reward() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-m", "cerm", "serve"], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert "--unscorable-reward" in out.stderr


# -- failed generations (Status.ERROR): 503 for the request that holds one, the merged others answered ----------------
def _failing_on(tag: str) -> MockBackend:
    def respond(conversation: Conversation, params: SamplingParams, index: int) -> str | Completion:
        if len(conversation) > 1 and tag in conversation[-1]["content"]:
            return Completion.failed("judge server unreachable after 6 attempts")
        return scripted_responder(conversation, params, index)

    return MockBackend(respond)


def _post_together(url: str, bodies: Sequence[Any], **kwargs: Any) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda b: httpx.post(url + "/get_reward", timeout=60, **kwargs, **b), bodies))


def test_errored_sample_is_a_503_and_the_requests_merged_with_it_are_answered() -> None:
    backend = _failing_on("boom")
    judge = Judge(backend, config=JudgeConfig(criteria_max_new_tokens=32, evaluation_max_new_tokens=32))
    # Three requests, closed into one micro-batch by count: the errored sample must fail its own request only.
    app = create_app(judge, unscorable_reward=-1.0, max_batch_items=4, max_wait_ms=600_000)
    with RewardServer(app) as server:
        bad, good, unscorable = _post_together(
            server.url,
            [{"json": _body(["4", "boom"])}, {"json": _body(["four"])}, {"json": _body(["UNSCORABLE"])}],
        )
        health = httpx.get(server.url + "/health").json()
    assert (health["batches"], health["requests"], health["largest_batch"]) == (1, 3, 4)  # they were merged
    assert bad.status_code == 503, bad.text
    error = bad.json()
    assert "1 of 2 samples" in error["error"]
    assert "unreachable" in error["error"]
    assert [d["status"] for d in error["cerm"]] == ["scored", "error"]
    assert "rewards" not in error  # no number for a judgment that did not happen
    assert good.status_code == 200
    assert good.json()["cerm"][0]["status"] == "scored"
    # UNSCORABLE (the judge's verdict) is still a result with the operator's reward, not an error.
    assert unscorable.status_code == 200
    assert unscorable.json()["rewards"] == [-1.0]
    assert unscorable.json()["cerm"][0]["status"] == "unscorable"
    assert health["errored_items"] == 1


def test_outage_of_an_openai_compatible_judge_is_a_503_then_a_retry_succeeds() -> None:
    """Fault injection over real HTTP: the judge's own server fails every attempt for one sample, so the reward server
    answers 503 (OpenRLHF's client retries); once the judge's server recovers, the same request is answered."""
    from cerm.backends.openai import OpenAIBackend

    fault = FaultServer(schedule={"flaky": ["500", "503"]})
    with fault.running():
        backend = OpenAIBackend(
            "judge-model",
            base_url=fault.base_url,
            api_key="sk-test",
            max_attempts=2,
            backoff_initial=0.01,
            backoff_max=0.02,
            timeout=5.0,
        )
        judge = Judge(backend, config=JudgeConfig(criteria_max_new_tokens=32, evaluation_max_new_tokens=32))
        with RewardServer(create_app(judge, unscorable_reward=0.0, max_wait_ms=0)) as server:
            body = _body(["score=7 flaky"])
            first = httpx.post(server.url + "/get_reward", json=body, timeout=60)
            assert first.status_code == 503, first.text
            assert "evaluation generation failed" in first.json()["error"]
            assert fault.count("flaky") == 2  # both attempts were made, both failed
            second = httpx.post(server.url + "/get_reward", json=body, timeout=60)
            assert second.status_code == 200, second.text
            assert second.json()["rewards"] == [7.0]
        backend.close()


# -- one client's bad request never fails another's ------------------------------------------------------------------
def test_lone_surrogate_in_one_prompt_is_a_400_for_that_request_only() -> None:
    judge, backend = mock_judge()
    app = create_app(judge, unscorable_reward=-1.0, max_batch_items=2, max_wait_ms=100)
    bad_prompt = CHATML_PROMPT.replace("2+2", "2+\ud800")  # a lone surrogate
    raw = json.dumps({"query": [bad_prompt + "4"], "prompts": [bad_prompt]})
    assert "\\ud800" in raw  # sent as its JSON escape, exactly what a client in another language may write
    with RewardServer(app) as server:
        bad, good = _post_together(
            server.url,
            [{"content": raw.encode(), "headers": {"content-type": "application/json"}}, {"json": _body(["4"])}],
        )
    assert bad.status_code == 400, bad.text
    assert "sample 0" in bad.json()["error"]
    assert "surrogate" in bad.json()["error"]
    assert good.status_code == 200, good.text
    assert good.json()["cerm"][0]["status"] == "scored"
    assert all("\ud800" not in c[0]["content"] for conversations, _ in backend.calls for c in conversations)


def test_deeply_nested_json_is_a_400(mock_server: tuple[RewardServer, Any]) -> None:
    server, backend = mock_server
    depth = 1900  # beyond Python's recursion limit, within the fixture's 4096-byte body limit
    content = b'{"query": ' + b"[" * depth + b"]" * depth + b', "prompts": []}'
    r = httpx.post(server.url + "/get_reward", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert "nested too deeply" in r.json()["error"]
    assert backend.calls == []
    assert httpx.get(server.url + "/health").status_code == 200


class _RaisesOn(Backend):
    """A backend that raises (a bug, not a failed generation) for any batch holding a tagged conversation."""

    name = "raises"
    model_id = "raises"  # type: ignore[assignment]

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        if any("explode" in c[-1]["content"] for c in conversations):
            raise RuntimeError("backend exploded")
        return [[Completion(scripted_responder(c, params, 0), "stop")] for c in conversations]


def test_a_raising_merged_batch_is_split_so_only_its_culprit_fails() -> None:
    judge = Judge(_RaisesOn(), config=JudgeConfig(criteria_max_new_tokens=32, evaluation_max_new_tokens=32))
    app = create_app(judge, unscorable_reward=0.0, max_batch_items=2, max_wait_ms=600_000)
    with RewardServer(app) as server:
        bad, good = _post_together(server.url, [{"json": _body(["explode"])}, {"json": _body(["fine"])}])
        health = httpx.get(server.url + "/health").json()
    assert bad.status_code == 500
    assert "backend exploded" in bad.json()["error"]
    assert good.status_code == 200, good.text
    assert good.json()["rewards"] == [float(scripted_score_for("fine"))]
    assert health["requests"] == 1  # only the request that was answered with judgments


def scripted_score_for(response: str) -> int:
    """The scripted judge's score of ``response`` under CHATML_PROMPT (its evaluation turn, as the Judge renders it)."""
    judge, backend = mock_judge()
    judge.judge("What is 2+2?", [response])
    return scripted_score(backend.calls[-1][0][0][-1]["content"])


# -- authentication and binding -------------------------------------------------------------------------------------
def test_api_key_is_required_when_set() -> None:
    judge, _ = mock_judge()
    with RewardServer(create_app(judge, unscorable_reward=0.0, max_wait_ms=0, api_key="s3cret")) as server:
        assert server.host == "127.0.0.1"
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = httpx.post(server.url + "/get_reward", json=_body(["4"]), headers=headers)
            assert r.status_code == 401, headers
            assert httpx.get(server.url + "/health", headers=headers).status_code == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert httpx.post(server.url + "/get_reward", json=_body(["4"]), headers=ok).status_code == 200
        assert httpx.get(server.url + "/health", headers=ok).json()["status"] == "ok"
    with pytest.raises(ValueError, match="api_key"):
        create_app(judge, unscorable_reward=0.0, api_key="")


# -- one criteria set per prompt however the samples arrive -----------------------------------------------------------
def _criteria_turns(backend: MockBackend) -> int:
    return sum(1 for conversations, _ in backend.calls for c in conversations if len(c) == 1)


@pytest.mark.parametrize(("cache_size", "expected_turns"), [(None, 4), (0, 32)])
def test_samples_of_a_prompt_arriving_apart_share_one_criteria_turn(
    cache_size: int | None, expected_turns: int
) -> None:
    judge, backend = mock_judge()
    kwargs = {} if cache_size is None else {"criteria_cache_size": cache_size}
    app = create_app(judge, unscorable_reward=0.0, max_wait_ms=0, **kwargs)  # default: the server's cache is on
    prompts = [CHATML_PROMPT.replace("2+2", f"{p}+{p}") for p in range(4)]
    rewards: dict[tuple[int, int], float] = {}
    with RewardServer(app) as server:
        # 8 samples of each of 4 prompts, interleaved and one request at a time: every sample is its own micro-batch,
        # as when OpenRLHF's generations of one prompt finish apart.
        for s in range(8):
            for p, prompt in enumerate(prompts):
                r = httpx.post(server.url + "/get_reward", json=_body([f"answer {s}"], prompt=prompt))
                assert r.status_code == 200, r.text
                rewards[(p, s)] = r.json()["rewards"][0]
        health = httpx.get(server.url + "/health").json()
    assert health["batches"] == 32  # nothing was merged: the sharing below is the cache's doing
    assert _criteria_turns(backend) == expected_turns
    if cache_size is None:
        assert health["criteria_cache"] == {"entries": 4, "hits": 28, "misses": 4}
    assert judge.cache is None  # the caller's judge is left as it was
    # Every reward is the scripted judge's value for that sample's evaluation turn.
    evaluations = [c for conversations, _ in backend.calls for c in conversations if len(c) > 1]
    assert sorted(rewards.values()) == sorted(float(scripted_score(c[-1]["content"])) for c in evaluations)


def test_a_judge_with_its_own_cache_keeps_it() -> None:
    backend = MockBackend(scripted_responder)
    cache = MemoryCriteriaCache(8)
    judge = Judge(backend, config=JudgeConfig(criteria_max_new_tokens=32, evaluation_max_new_tokens=32), cache=cache)
    app = create_app(judge, unscorable_reward=0.0, max_wait_ms=0)
    assert app.state.judge.cache is cache
    with RewardServer(app) as server:
        for s in range(3):
            assert httpx.post(server.url + "/get_reward", json=_body([f"a{s}"])).status_code == 200
    assert (cache.misses, cache.hits) == (1, 2)


def test_cerm_serve_help_names_openrlhf_0_11_flag_and_the_server_options() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-m", "cerm", "serve", "--help"], env=env, capture_output=True, text=True)
    assert out.returncode == 0
    assert "--reward.remote_url http://HOST:PORT/get_reward" in out.stdout  # OpenRLHF 0.11 rejects --remote_rm_url
    for option in ("--api-key", "CERM_SERVE_API_KEY", "--criteria-cache-size", "--host"):
        assert option in out.stdout
    assert "default 127.0.0.1" in out.stdout


def test_cerm_serve_reads_its_api_key_from_the_environment() -> None:
    # An OpenAI-compatible judge that is never called: the server starts without a model, and only auth is exercised.
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
        "CERM_SERVE_API_KEY": "from-env",
    }
    args = ["--backend", "openai", "--model", "judge", "--backend-arg", "base_url=http://127.0.0.1:9/v1"]
    command = [sys.executable, "-m", "cerm", "serve", "--port", str(port), "--unscorable-reward", "0", *args]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/health"
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                refused = httpx.get(url, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "cerm serve did not come up"
                time.sleep(0.2)
        assert refused.status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer from-env"}).json()["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(30)
