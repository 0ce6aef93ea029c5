"""A scripted backend for offline tests and fault injection (no model, no network).

It is a test double, useful for exercising the Judge's bookkeeping (UNSCORABLE paths, ordering, call counts); it is
never the only proof that a feature works with a real model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from cerm.backends._base import Backend, Completion, SamplingParams
from cerm.protocol import Conversation

Responder = Callable[[Conversation, SamplingParams, int], "str | Completion"]


class MockBackend(Backend):
    """Answers each conversation with ``responder(conversation, params, sample_index)``.

    The responder returns either the completion text or a full :class:`Completion` (to inject errors or
    ``finish_reason="length"``, or to supply log-probabilities). Every call is recorded in ``calls`` so tests can
    count backend round trips. A conversation ending in an assistant message (prefill) is passed to the responder as
    is; its answer is the continuation. ``supports_logprobs`` / ``supports_prefill`` set what the mock advertises.
    """

    name = "mock"

    def __init__(
        self,
        responder: Responder,
        *,
        model_id: str = "mock-judge",
        context_length: int | None = None,
        supports_logprobs: bool = False,
        supports_prefill: bool = True,
    ):
        self._responder = responder
        self._model_id = model_id
        self._context_length = context_length
        self._supports_logprobs = supports_logprobs
        self._supports_prefill = supports_prefill
        self._lock = threading.Lock()
        self.calls: list[tuple[list[Conversation], SamplingParams]] = []

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def context_length(self) -> int | None:
        return self._context_length

    @property
    def supports_logprobs(self) -> bool:
        return self._supports_logprobs

    @property
    def supports_prefill(self) -> bool:
        return self._supports_prefill

    def count_tokens(self, text: str) -> int | None:
        # One token per whitespace-separated word: crude, deterministic, enough for truncation tests.
        return len(text.split())

    def count_conversation_tokens(self, conversation: Conversation) -> int | None:
        return sum(len(m["content"].split()) + 4 for m in conversation)

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        with self._lock:
            self.calls.append((list(conversations), params))
        results: list[list[Completion]] = []
        for conv in conversations:
            samples = []
            for i in range(params.n):
                out = self._responder(conv, params, i)
                if isinstance(out, Completion):
                    samples.append(out)
                else:
                    samples.append(Completion(text=out, finish_reason="stop", completion_tokens=len(out.split())))
            results.append(samples)
        return results
