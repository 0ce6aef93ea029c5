"""InstrumentedBackend: forwards everything, records calls, tokens and time (real model, and the async path)."""

from __future__ import annotations

import asyncio

import pytest

from cerm import Judge, JudgeConfig
from cerm.backends import Backend, Completion, InstrumentedBackend, MockBackend, SamplingParams
from cerm.protocol import Conversation

HELLO: Conversation = [{"role": "user", "content": "Say hello."}]


@pytest.mark.model
def test_counts_what_the_real_model_reported(demo_backend: Backend) -> None:
    backend = InstrumentedBackend(demo_backend)
    assert (backend.name, backend.model_id, backend.context_length) == ("hf", demo_backend.model_id, 8192)
    assert backend.supports_logprobs
    assert backend.supports_prefill
    assert backend.describe() == demo_backend.describe()
    judge = Judge(backend, config=JudgeConfig(criteria_max_new_tokens=8, evaluation_max_new_tokens=6))
    judgments = judge.judge("Name a fruit.", ["Apple.", "A chair."])
    assert backend.conversations_per_call == [1, 2]
    usage = judgments[0].provenance.criteria_usage
    for judgment in judgments:
        usage = usage + judgment.provenance.evaluation_usage
    assert (backend.prompt_tokens, backend.completion_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    crit_conv, *_ = backend.calls[0][0]
    eval_convs = backend.calls[1][0]
    expected_prompt = sum(demo_backend.count_conversation_tokens(c) or 0 for c in [crit_conv, *eval_convs])
    assert backend.prompt_tokens == expected_prompt
    assert backend.seconds > 0
    backend.reset()
    assert (backend.calls, backend.prompt_tokens, backend.completion_tokens, backend.seconds) == ([], 0, 0, 0.0)


def test_async_calls_are_recorded_and_samples_count_their_prompt_once() -> None:
    inner = MockBackend(lambda conversation, params, sample: Completion("hi there", "stop", 5, 2))
    backend = InstrumentedBackend(inner)
    params = SamplingParams(max_new_tokens=4, temperature=1.0, n=3)

    async def two_calls() -> None:
        await asyncio.gather(backend.agenerate([HELLO], params), backend.agenerate([HELLO, HELLO], params))

    asyncio.run(two_calls())  # the test drives the loop; the library never starts one
    assert sorted(backend.conversations_per_call) == [1, 2]
    assert backend.prompt_tokens == 3 * 5  # three conversations, each read once for its three samples
    assert backend.completion_tokens == 9 * 2
    assert len(inner.calls) == 2


def test_a_failing_backend_is_not_recorded_and_its_error_propagates() -> None:
    def explode(conversation: Conversation, params: SamplingParams, sample: int) -> str:
        raise RuntimeError("backend exploded")

    backend = InstrumentedBackend(MockBackend(explode))
    with pytest.raises(RuntimeError, match="backend exploded"):
        backend.generate([HELLO], SamplingParams())
    assert backend.calls == []
