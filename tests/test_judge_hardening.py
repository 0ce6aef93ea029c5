"""The Judge's honest statuses, provenance, event-loop manners and untrusted input (issue 10, items 1, 3, 5 and 8),
on scripted backends: fault injection and bookkeeping that a real model cannot be made to show on demand."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from _support import realistic_criteria, realistic_evaluation, response_of, scripted
from cerm import Judge, JudgeConfig, MemoryCriteriaCache, Status
from cerm._cache import CriteriaCacheKey
from cerm.backends import Completion, MockBackend, SamplingParams
from cerm.protocol import FORCED_READOUT_SUFFIX, Conversation

QUERY = "What is the capital of France?"


# -- item 1: a failed generation is ERROR wherever it shows -------------------------------------------------------
def _failing_evaluations(query: str, response: str, sample: int) -> str | Completion:
    return Completion.failed("CUDA out of memory") if "boom" in response else "7"


def test_stage_apis_mark_failed_generations() -> None:
    down = MockBackend(lambda conversation, params, sample: Completion.failed("connection refused"))
    judge = Judge(down)
    criteria = judge.criteria(QUERY)
    assert criteria.failed
    assert criteria.problem == "criteria generation failed: connection refused"
    evaluation = judge.evaluate(QUERY, realistic_criteria(QUERY), "Paris.")
    assert evaluation.failed  # not a text without a score: no text at all
    assert evaluation.overall is None
    assert evaluation.problem == "evaluation generation failed: connection refused"
    # The judge's own unscorable text is not a failure.
    unscorable = Judge(MockBackend(scripted(lambda q, r, s: "N/A"))).evaluate(QUERY, realistic_criteria(QUERY), "x")
    assert unscorable.overall is None
    assert not unscorable.failed


def test_k_chains_mixing_failures_scores_and_unscorable_texts() -> None:
    def score_of(query: str, response: str, sample: int) -> str | Completion:
        if response == "fail+score":
            return Completion.failed("timeout") if sample == 0 else "6"
        if response == "fail+unscorable":
            return Completion.failed("timeout") if sample == 0 else "N/A"
        return "N/A"  # both chains: the judge wrote no valid score

    backend = MockBackend(scripted(score_of))
    judge = Judge(backend, config=JudgeConfig(k=2, scaling="evaluations", temperature=0.7))
    partial, errored, unscorable = judge.judge(QUERY, ["fail+score", "fail+unscorable", "both unscorable"])
    assert partial.status is Status.SCORED
    assert partial.score == 6.0
    assert "1 of 2 chains failed (generation error); mean over the rest" in partial.warnings
    # No chain scored and one failed: a retry may still score it, so this is no verdict.
    assert errored.status is Status.ERROR
    assert errored.reason is not None
    assert errored.reason.startswith("all 2 chains failed or unscorable: evaluation generation failed: timeout")
    assert unscorable.status is Status.UNSCORABLE
    assert unscorable.reason is not None
    assert unscorable.reason.startswith("all 2 chains unscorable")


def test_a_failed_forced_readout_is_an_error_not_a_verdict() -> None:
    def respond(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        if conversation[-1]["role"] == "assistant":
            return Completion.failed("server said 503")
        return scripted(lambda q, r, s: "no box here")(conversation, params, sample)

    def unclosed(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        if len(conversation) == 1:
            return realistic_criteria(QUERY)
        return "The response is fine but I will not box a score."

    judgment = Judge(MockBackend(unclosed), config=JudgeConfig(forced_readout=True)).judge(QUERY, ["Paris."])[0]
    assert judgment.status is Status.UNSCORABLE  # the continuation "" is not a score: the judge's own verdict
    backend = MockBackend(lambda c, p, s: respond(c, p, s) if c[-1]["role"] == "assistant" else unclosed(c, p, s))
    failed = Judge(backend, config=JudgeConfig(forced_readout=True)).judge(QUERY, ["Paris."])[0]
    assert failed.status is Status.ERROR
    assert failed.reason is not None
    assert "forced readout failed: server said 503" in failed.reason


# -- item 3: the backend's description in every judgment and in the criteria cache key ----------------------------
class _DescribedMock(MockBackend):
    def __init__(self, settings: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(scripted(), **kwargs)
        self.settings = settings
        self.describe_calls = 0

    def describe(self) -> dict[str, Any]:
        self.describe_calls += 1
        return {**super().describe(), **self.settings}


def test_provenance_carries_the_backend_description_read_once() -> None:
    backend = _DescribedMock({"base_url": "https://judge.example/v1", "dtype": "bfloat16", "extra": ("a", 1)})
    judge = Judge(backend)
    rows = judge.judge_batch([(QUERY, ["score=7 a", "score=3 b"]), ("Name a prime.", ["score=9 7"])])
    settings = [j.provenance.backend_settings for row in rows for j in row]
    expected = {
        "backend": "mock",
        "model": "mock-judge",
        "base_url": "https://judge.example/v1",
        "dtype": "bfloat16",
        "extra": ["a", 1],  # JSON-ready: a tuple is recorded as a list
    }
    assert settings == [expected] * 3
    assert backend.describe_calls == 1  # once per Judge, not per judgment
    json.dumps(rows[0][0].to_dict())
    assert rows[0][0].to_dict()["provenance"]["backend_settings"] == expected
    described = judge.describe()
    assert described["backend"] == expected
    assert described["prompt_version"] == "ce-rm-v1"
    assert described["config"]["k"] == 1
    json.dumps(described)


def test_criteria_from_another_server_adapter_or_dtype_are_not_reused() -> None:
    cache = MemoryCriteriaCache()
    base = {"base_url": "https://a.example/v1", "adapter_sha256": "aa", "dtype": "bfloat16", "timeout": 30}

    def run(settings: dict[str, Any]) -> int:
        backend = _DescribedMock(settings)
        Judge(backend, cache=cache).judge(QUERY, ["score=7 a"])
        return sum(len(convs) for convs, _ in backend.calls if len(convs[0]) == 1)  # criteria generations

    assert run(base) == 1
    assert run(base) == 0  # same settings: reused
    assert run({**base, "timeout": 5, "max_concurrency": 2}) == 0  # speed settings do not change the text
    assert run({**base, "base_url": "https://b.example/v1"}) == 1
    assert run({**base, "adapter_sha256": "bb"}) == 1
    assert run({**base, "dtype": "float16"}) == 1
    params = SamplingParams()
    keys = {
        CriteriaCacheKey.for_sample(
            model="m",
            backend="b",
            prompt_version="v",
            params=params,
            query="q",
            sample_index=0,
            backend_settings=settings,
        ).digest()
        for settings in (None, {}, {"timeout": 1}, {"dtype": "bf16"})
    }
    assert len(keys) == 2  # None, {} and an operational-only setting agree; a dtype does not


# -- item 5: the async path keeps the caller's loop free ----------------------------------------------------------
class _ThreadRecordingMock(MockBackend):
    """A scripted backend that records which thread counted tokens, with a real context length (so the Judge
    computes the response budget)."""

    def __init__(self) -> None:
        super().__init__(scripted(), context_length=100_000)
        self.counting_threads: list[int] = []
        self.overhead_counts = 0

    def count_tokens(self, text: str) -> int | None:
        self.counting_threads.append(threading.get_ident())
        return super().count_tokens(text)

    def count_conversation_tokens(self, conversation: Conversation) -> int | None:
        self.counting_threads.append(threading.get_ident())
        if response_of_or_none(conversation) == "":
            self.overhead_counts += 1
        return super().count_conversation_tokens(conversation)


def response_of_or_none(conversation: Conversation) -> str | None:
    return response_of(conversation) if len(conversation) == 3 else None


class _ThreadRecordingCache(MemoryCriteriaCache):
    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def _get(self, digest: str) -> Completion | None:
        self.threads.append(threading.get_ident())
        return super()._get(digest)


def test_ajudge_tokenizes_and_reads_the_cache_off_the_event_loop() -> None:
    backend = _ThreadRecordingMock()
    cache = _ThreadRecordingCache()
    judge = Judge(backend, cache=cache)
    responses = [f"score={i % 10} response {i}" for i in range(6)]

    async def main() -> tuple[int, list[float | None]]:
        return threading.get_ident(), await judge.ascore(QUERY, responses)

    loop_thread, scores = asyncio.run(main())
    assert scores == [float(i % 10) for i in range(6)]
    assert backend.counting_threads  # the budget was computed ...
    assert loop_thread not in backend.counting_threads  # ... never on the caller's loop
    assert cache.threads
    assert loop_thread not in cache.threads


def test_prompt_overhead_is_counted_once_per_query_and_criteria_sample() -> None:
    backend = _ThreadRecordingMock()
    judge = Judge(backend, config=JudgeConfig(k=3, temperature=0.7))
    judge.judge_batch([(QUERY, [f"score=5 r{i}" for i in range(8)]), ("Name a prime.", ["score=2 x", "score=3 y"])])
    assert backend.overhead_counts == 2 * 3  # 2 queries x 3 criteria samples, not one per (response, sample)


def test_async_errors_and_results_cross_the_thread_hop() -> None:
    judge = Judge(MockBackend(scripted()))

    async def main() -> list[list[float | None]]:
        with pytest.raises(ValueError, match="query is empty"):
            await judge.ajudge("   ", ["a"])
        return await asyncio.gather(judge.ascore(QUERY, ["score=1 a"]), judge.ascore(QUERY, ["score=2 b"]))

    assert asyncio.run(main()) == [[1.0], [2.0]]


# -- item 8: invisible text is empty; one bad item does not sink the batch; forced readout fits -------------------
INVISIBLE = [
    "\u200b",
    "\u200b\u200c\u200d",
    "\u2060\ufeff",
    "\x00\x01\x1f",
    " \u200b\t\x7f\n",
    "\u00ad\u200e\u200f",  # soft hyphen, bidi marks
    "\u3164\u115f",  # Hangul fillers
    "\ufe0f",  # a lone variation selector
]


@pytest.mark.parametrize("text", INVISIBLE)
def test_invisible_query_is_empty(text: str) -> None:
    backend = MockBackend(scripted())
    with pytest.raises(ValueError, match="query is empty"):
        Judge(backend).judge(text, ["score=7 a"])
    assert backend.calls == []


def test_invisible_responses_are_unscorable_empty_and_never_sent() -> None:
    backend = MockBackend(scripted())
    judgments = Judge(backend).judge(QUERY, [*INVISIBLE, "score=7 visible\u200b"])
    assert [j.status for j in judgments] == [Status.UNSCORABLE] * len(INVISIBLE) + [Status.SCORED]
    assert all((j.reason or "").startswith("the response is empty") for j in judgments[:-1])
    sent = [response_of(c) for convs, _ in backend.calls for c in convs if len(c) == 3]
    assert sent == ["score=7 visible\u200b"]


def test_on_invalid_error_judges_the_valid_items() -> None:
    backend = MockBackend(scripted())
    items: list[Any] = [
        (QUERY, ["score=7 a", "score=2 b"]),
        ("\u200b", ["score=5 x", "score=6 y"]),  # invisible query
        ("bad \ud800", ["score=5 z"]),  # lone surrogate
        (QUERY, "not a list"),
        ("Name a prime.", []),
        "not a pair",
        ("Name a prime.", ["score=9 7", 3]),
    ]
    with pytest.raises(ValueError, match=r"items\[1\] query is empty"):
        Judge(backend).judge_batch(items)
    assert backend.calls == []
    rows = Judge(backend).judge_batch(items, on_invalid="error")
    assert [[j.score for j in row] for row in rows] == [
        [7.0, 2.0],
        [None, None],
        [None],
        [None],
        [None],
        [None],
        [None, None],
    ]
    assert [j.status for j in rows[0]] == [Status.SCORED, Status.SCORED]
    for row in rows[1:]:
        assert all(j.status is Status.ERROR for j in row)
        assert all((j.reason or "").startswith("invalid input: ") for j in row)
        assert [j.response_index for j in row] == list(range(len(row)))
    assert "items[1] query is empty" in (rows[1][0].reason or "")
    assert "not valid Unicode" in (rows[2][0].reason or "")
    assert "items[3] responses must be a list" in (rows[3][0].reason or "")
    assert "items[4] responses is empty" in (rows[4][0].reason or "")
    assert "items[5] must be a (query, responses) pair" in (rows[5][0].reason or "")
    assert "items[6] responses[1] must be a str" in (rows[6][0].reason or "")
    # Only the valid item reached the backend.
    sent = [response_of(c) for convs, _ in backend.calls for c in convs if len(c) == 3]
    assert sent == ["score=7 a", "score=2 b"]
    all_bad = Judge(backend).judge_batch([("", ["a"])], on_invalid="error")
    assert all_bad[0][0].status is Status.ERROR
    with pytest.raises(ValueError, match="on_invalid"):
        Judge(backend).judge_batch(items, on_invalid="skip")  # type: ignore[arg-type]

    async def main() -> list[list[float | None]]:
        rows = await Judge(backend).ajudge_batch(items[:2], on_invalid="error")
        return [[j.score for j in row] for row in rows]

    assert asyncio.run(main()) == [[7.0, 2.0], [None, None]]


class _ContextLimitedMock(MockBackend):
    """Refuses, like a real engine, a conversation whose prompt plus max_new_tokens exceeds the context."""

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        out = super().generate(conversations, params)
        limit = self.context_length
        assert limit is not None
        for i, conversation in enumerate(conversations):
            size = self.count_conversation_tokens(conversation) or 0
            if size + params.max_new_tokens > limit:
                out[i] = [Completion.failed(f"prompt of {size} tokens exceeds the context of {limit}")] * params.n
        return out


def test_forced_readout_of_a_truncated_response_fits_the_context() -> None:
    evaluation = "The answer is correct and clear, but I stop before my verdict."  # 12 words, no box

    def respond(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        if conversation[-1]["role"] == "assistant":
            assert conversation[-1]["content"].endswith(FORCED_READOUT_SUFFIX)
            return "8}$"
        if len(conversation) == 1:
            return realistic_criteria(QUERY)
        return evaluation

    config = JudgeConfig(criteria_max_new_tokens=64, evaluation_max_new_tokens=16, forced_readout=True)
    backend = _ContextLimitedMock(respond, context_length=1200)
    long_response = "word " * 1000
    judgment = Judge(backend, config=config).judge(QUERY, [long_response])[0]
    assert any("truncated from 1000" in w for w in judgment.warnings)
    assert judgment.status is Status.SCORED, judgment.reason
    assert judgment.score == 8.0
    assert judgment.score_source == "forced_parsed"
    readout_conversation = backend.calls[-1][0][0]
    assert (backend.count_conversation_tokens(readout_conversation) or 0) + 8 <= 1200
    # Without the forced readout the budget is as before: the response gets the readout's room.
    plain = _ContextLimitedMock(respond, context_length=1200)
    plain_judgment = Judge(plain, config=config.with_(forced_readout=False)).judge(QUERY, [long_response])[0]
    kept_plain = len(response_of(plain.calls[1][0][0]).split())
    kept_forced = len(response_of(backend.calls[1][0][0]).split())
    assert kept_plain > kept_forced
    assert plain_judgment.status is Status.UNSCORABLE


def test_realistic_evaluation_still_parses() -> None:
    # Guard for the helpers above: the scripted evaluation is what the parser expects.
    assert "boxed{7}" in realistic_evaluation("7")
