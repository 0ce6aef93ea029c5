"""The one interface every backend implements: conversations + sampling settings in, completions out.

Backends know nothing about CE-RM, criteria or scores. They generate, report why generation stopped, count tokens,
and return token log-probabilities where they can. A failure of one conversation is a ``Completion`` with
``finish_reason="error"`` and an ``error`` message, never an exception that would lose the rest of the batch.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from cerm.protocol import Conversation

FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings for one backend call.

    ``temperature == 0`` means greedy decoding. ``n`` is the number of samples per conversation. ``top_logprobs``
    asks for that many alternatives per generated token (0 = only the chosen token's log-probability; None = none).
    """

    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    top_logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.top_logprobs is not None and self.top_logprobs < 0:
            raise ValueError(f"top_logprobs must be >= 0 or None, got {self.top_logprobs}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token with its log-probability and, when asked for, the top alternatives at that position."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Completion:
    """One generated sample."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: tuple[TokenLogprob, ...] | None = None
    error: str | None = None

    @classmethod
    def failed(cls, error: str) -> Completion:
        return cls(text="", finish_reason="error", error=error)


class Backend(abc.ABC):
    """Generation engine behind a :class:`cerm.Judge`.

    Subclasses implement :meth:`generate` (sync) and may override :meth:`agenerate` with a native async version; the
    default runs :meth:`generate` in a worker thread so async callers never block their event loop.
    """

    #: Registry name, e.g. "hf". Recorded in provenance.
    name: str = "backend"

    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """The model identifier recorded in provenance."""

    @property
    def context_length(self) -> int | None:
        """Maximum prompt + completion tokens, when known."""
        return None

    @property
    def supports_logprobs(self) -> bool:
        return False

    @property
    def supports_prefill(self) -> bool:
        """Whether a conversation whose last message is from the assistant is *continued* (the partial assistant
        message is a prefix of the completion) rather than answered with a new turn. Backends without it must not be
        sent such conversations; cerm only does so for the opt-in forced score readout."""
        return False

    def count_tokens(self, text: str) -> int | None:
        """Tokens in ``text`` under this model's tokenizer, or None when the backend cannot tell."""
        return None

    def count_conversation_tokens(self, conversation: Conversation) -> int | None:
        """Prompt tokens of a conversation rendered with the chat template, or None when unknown."""
        return None

    @abc.abstractmethod
    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        """Generate ``params.n`` completions for each conversation; result ``i`` belongs to conversation ``i``.

        With :attr:`supports_prefill`, a conversation ending in an assistant message is continued: the completion's
        text is only what follows that message's content."""

    async def agenerate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        return await asyncio.to_thread(self.generate, conversations, params)

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for backends that hold nothing
        """Release the model and any worker resources. Safe to call twice."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """Settings worth recording (never secrets)."""
        return {"backend": self.name, "model": self.model_id}
