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

from _integration_helpers import mock_judge
from cerm import Judge, JudgeConfig
from cerm.backends import Backend, Completion, InstrumentedBackend, SamplingParams
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


def test_concurrent_requests_are_batched(mock_server: tuple[RewardServer, Any]) -> None:
    server, backend = mock_server
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda i: httpx.post(server.url + "/get_reward", json=_body([f"answer {i}"])), range(8))
        )
    assert all(a.status_code == 200 and len(a.json()["rewards"]) == 1 for a in answers)
    # 8 one-sample requests of the same prompt: far fewer than 16 backend calls (criteria shared across requests).
    assert len(backend.calls) <= 4, [len(c[0]) for c in backend.calls]
    health = httpx.get(server.url + "/health").json()
    assert health["requests"] == 8
    assert health["largest_batch"] >= 4


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
    real = Judge("demo", config=config)
    counting = InstrumentedBackend(real.backend)
    app = create_app(Judge(counting, config=config), unscorable_reward=0.0, scale=(0, 1), max_wait_ms=500)
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
        assert httpx.get(server.url + "/health").json()["largest_batch"] == 4
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
