"""A backend wrapper that records what a Judge asks of its backend: calls, conversations, tokens and time.

For measuring a judge's cost (how many generations a workload needs, how many tokens it reads and writes) and for
tests that check how the Judge batches its work. It changes nothing about generation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from cerm.backends._base import Backend, Completion, SamplingParams
from cerm.protocol import Conversation


class InstrumentedBackend(Backend):
    """Forwards everything to ``inner`` and records each ``generate`` / ``agenerate`` call.

    ``calls`` holds ``(conversations, params)`` per call, in call order (the same shape as ``MockBackend.calls``);
    the counters add up the token counts the inner backend reported and the wall time spent inside it.

    >>> backend = InstrumentedBackend(create_backend("hf", "demo"))  # doctest: +SKIP
    >>> Judge(backend).score("2+2?", ["4", "5"])  # doctest: +SKIP
    >>> backend.conversations_per_call, backend.completion_tokens  # doctest: +SKIP
    ([1, 2], 1873)
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self._lock = threading.Lock()  # async callers run generate() in worker threads
        self.calls: list[tuple[list[Conversation], SamplingParams]] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.seconds = 0.0

    # -- forwarded ---------------------------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def context_length(self) -> int | None:
        return self.inner.context_length

    @property
    def supports_logprobs(self) -> bool:
        return self.inner.supports_logprobs

    @property
    def supports_prefill(self) -> bool:
        return self.inner.supports_prefill

    def count_tokens(self, text: str) -> int | None:
        return self.inner.count_tokens(text)

    def count_conversation_tokens(self, conversation: Conversation) -> int | None:
        return self.inner.count_conversation_tokens(conversation)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()

    # -- recorded ----------------------------------------------------------------------------------------------------
    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        start = time.perf_counter()
        out = self.inner.generate(conversations, params)
        self._record(conversations, params, out, time.perf_counter() - start)
        return out

    async def agenerate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        start = time.perf_counter()
        out = await self.inner.agenerate(conversations, params)
        self._record(conversations, params, out, time.perf_counter() - start)
        return out

    def _record(
        self, conversations: Sequence[Conversation], params: SamplingParams, out: list[list[Completion]], seconds: float
    ) -> None:
        with self._lock:
            self.calls.append((list(conversations), params))
            # A prompt is read once however many samples it gets, so count it from its first completion.
            self.prompt_tokens += sum(row[0].prompt_tokens for row in out if row)
            self.completion_tokens += sum(c.completion_tokens for row in out for c in row)
            self.seconds += seconds

    @property
    def conversations_per_call(self) -> list[int]:
        with self._lock:
            return [len(conversations) for conversations, _ in self.calls]

    def reset(self) -> None:
        """Forget the recorded calls and zero the counters."""
        with self._lock:
            self.calls.clear()
            self.prompt_tokens = self.completion_tokens = 0
            self.seconds = 0.0
