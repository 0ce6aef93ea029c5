"""What every integration shares: turning a framework's prompt/completion into the judge's (query, response) texts,
grouping completions by query so each query gets one criteria set, and mapping the 0-10 score onto a reward range.

Pure Python: no framework is imported here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cerm._errors import ConfigurationError
from cerm._reward_judge import RewardJudge
from cerm._types import Judgment, Status

logger = logging.getLogger("cerm")

#: A prompt as frameworks hand it over: plain text, or a list of chat messages ({"role": ..., "content": ...}).
PromptLike = Any
QueryFn = Callable[[PromptLike], str]
ResponseFn = Callable[[Any], str]

#: The judge's score range (CE-RM's overall score).
SCORE_MIN, SCORE_MAX = 0.0, 10.0


def content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or a list of parts (``{"type": "text", "text": ...}``) whose
    text parts are joined; non-text parts (images, ...) are skipped because the judge reads text only."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    raise TypeError(f"message content must be a string or a list of parts, got {type(content).__name__}")


def _is_messages(value: Any) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (str, bytes))
        and all(isinstance(m, Mapping) and "role" in m for m in value)
    )


def default_query(prompt: PromptLike) -> str:
    """The query the judge sees for a prompt: the prompt itself when it is text; for a chat prompt, the content of the
    LAST user message (system prompts and earlier turns are not shown to the judge: CE-RM's criteria prompt takes one
    query). Pass your own ``query_fn`` to include more context."""
    if isinstance(prompt, str):
        return prompt
    if _is_messages(prompt):
        for message in reversed(prompt):
            if message.get("role") == "user":
                return content_text(message.get("content"))
        raise ValueError("the chat prompt has no user message to use as the judge's query")
    raise TypeError(f"a prompt must be a string or a list of chat messages, got {type(prompt).__name__}")


def default_response(completion: Any) -> str:
    """The response text of a completion: the completion itself when it is text; for a chat completion (a list of
    messages, as TRL gives for conversational data), the content of the last assistant message."""
    if isinstance(completion, str):
        return completion
    if _is_messages(completion):
        for message in reversed(completion):
            if message.get("role") == "assistant":
                return content_text(message.get("content"))
        return ""
    if isinstance(completion, Mapping) and "content" in completion:
        return content_text(completion["content"])
    raise TypeError(f"a completion must be a string or a list of chat messages, got {type(completion).__name__}")


@dataclass(frozen=True)
class Scale:
    """A linear map of the judge's 0-10 score onto ``[low, high]`` (``Scale(0, 1)``: score / 10).

    Rewards keep their order under any increasing map; GRPO's group normalisation makes the range irrelevant to the
    advantages, but KL penalties, logging and filters that expect 0-1 rewards (OpenRLHF's dynamic filtering) do not.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.high <= self.low:
            raise ValueError(f"a reward scale needs finite low < high, got ({self.low}, {self.high})")

    def __call__(self, score: float) -> float:
        return self.low + (score - SCORE_MIN) * (self.high - self.low) / (SCORE_MAX - SCORE_MIN)


def as_scale(scale: Scale | tuple[float, float] | None) -> Scale | None:
    if scale is None or isinstance(scale, Scale):
        return scale
    if isinstance(scale, tuple | list) and len(scale) == 2:
        return Scale(float(scale[0]), float(scale[1]))
    raise TypeError(f"scale must be (low, high) or None, got {scale!r}")


def judge_scale(judge: RewardJudge, scale: Scale | tuple[float, float] | None) -> Scale | None:
    """``scale`` as a :class:`Scale` for this judge: a scale maps the 0-10 score range, so a judge whose scores lie
    elsewhere (an unbounded log-odds readout) refuses one rather than producing rewards outside ``[low, high]``."""
    checked = as_scale(scale)
    if checked is not None and judge.score_range != (SCORE_MIN, SCORE_MAX):
        raise ConfigurationError(
            f"a reward scale maps scores in [{SCORE_MIN:g}, {SCORE_MAX:g}]; this {judge.kind} judge's scores lie in "
            f"{judge.score_range or '(-inf, inf)'}: pass scale=None"
        )
    return checked


def scaled(score: float | None, scale: Scale | None) -> float | None:
    if score is None:
        return None
    return scale(score) if scale is not None else score


@dataclass(frozen=True)
class Unjudged:
    """An item that never reached the judge (its query could not be derived); reported like an UNSCORABLE one."""

    reason: str


Outcome = Judgment | Unjudged


def outcome_score(outcome: Outcome) -> float | None:
    return outcome.score if isinstance(outcome, Judgment) else None


def outcome_reason(outcome: Outcome) -> str | None:
    return outcome.reason


def outcome_status(outcome: Outcome) -> str:
    return outcome.status.value if isinstance(outcome, Judgment) else Status.UNSCORABLE.value


@dataclass
class Grouping:
    """Flat (query, response) pairs grouped by query for :meth:`cerm.Judge.judge_batch`.

    ``items[g]`` is ``(query, responses)`` and ``positions[g][j]`` the flat index of ``items[g][1][j]``, so the
    judgments come back to their completions in the caller's order. Pairs whose query is None (it could not be
    derived) are kept aside in ``skipped`` with the reason, so one bad row never fails the whole batch.
    """

    items: list[tuple[str, list[str]]]
    positions: list[list[int]]
    skipped: dict[int, str]
    size: int

    @classmethod
    def build(cls, pairs: Sequence[tuple[str | None, str, str | None]]) -> Grouping:
        """``pairs[i] = (query or None, response, reason when query is None)``."""
        index: dict[str, int] = {}
        items: list[tuple[str, list[str]]] = []
        positions: list[list[int]] = []
        skipped: dict[int, str] = {}
        for flat, (query, response, reason) in enumerate(pairs):
            if query is None or not query.strip():
                skipped[flat] = reason or "the query is empty"
                continue
            group = index.setdefault(query, len(items))
            if group == len(items):
                items.append((query, []))
                positions.append([])
            items[group][1].append(response)
            positions[group].append(flat)
        return cls(items, positions, skipped, len(pairs))

    def scatter(self, results: Sequence[Sequence[Judgment]]) -> list[Outcome]:
        """Judgments per group back into flat order; skipped pairs become :class:`Unjudged`."""
        out: list[Outcome | None] = [None] * self.size
        for flat, reason in self.skipped.items():
            out[flat] = Unjudged(reason)
        for group, judgments in zip(self.positions, results, strict=True):
            for flat, judgment in zip(group, judgments, strict=True):
                out[flat] = judgment
        assert all(o is not None for o in out)
        return out  # type: ignore[return-value]


def derive_query(prompt: PromptLike, query_fn: QueryFn) -> tuple[str | None, str | None]:
    """``(query, None)``, or ``(None, reason)`` when ``query_fn`` rejects this prompt."""
    try:
        query = query_fn(prompt)
    except (TypeError, ValueError) as exc:
        return None, f"could not derive the judge's query from the prompt: {exc}"
    if not isinstance(query, str):
        return None, f"query_fn returned {type(query).__name__}, not a string"
    if not query.strip():
        return None, "the judge's query (derived from the prompt) is empty"
    return query, None
