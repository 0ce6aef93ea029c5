"""Helpers shared by the test modules (imported as ``_support``; fixtures live in conftest.py)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cerm.backends import Backend, Completion, InstrumentedBackend, SamplingParams
from cerm.protocol import Conversation

REPO_ROOT = Path(__file__).resolve().parents[1]
SRC = REPO_ROOT / "src"
# In this workspace and in CI's fresh clone the shared folder sits beside the repository.
SHARED = REPO_ROOT.parent / "shared"
PROTOCOL_DIR = SHARED / "cerm_protocol"
#: The repository's benchmark copies (cerm's normalized schema); tests that read them are marked by `needs_shared`.
SHARED_DATA = SHARED / "data"
_shared_data_absent = pytest.mark.skipif(
    not (SHARED_DATA / "llmbar" / "all.jsonl").is_file(),
    reason="../shared/data (the repository's benchmark copies) is absent",
)


def needs_shared(test: Any) -> Any:
    """Marks a test that reads ../shared/data (``-m shared_data`` selects them) and skips it where that is absent."""
    return pytest.mark.shared_data(_shared_data_absent(test))


PYTHON = sys.executable


class CountingBackend(InstrumentedBackend):
    """The library's recording wrapper, plus a ``context_length`` override to exercise truncation without an
    8k-token prefill on CPU. ``calls`` holds ``(conversations, params)`` per generate call."""

    def __init__(self, inner: Backend, context_length: int | None = None) -> None:
        super().__init__(inner)
        self._context_length = context_length

    @property
    def context_length(self) -> int | None:
        return self._context_length if self._context_length is not None else self.inner.context_length


def realistic_criteria(query: str, sample: int = 0) -> str:
    """A criteria turn shaped like CE-RM-4B's: an analysis, then the numbered list between the markers."""
    return (
        f"The user asks: {query!r}. A good response must answer the question correctly, address every part of it, "
        f"and be easy to follow. (criteria sample {sample})\n\n"
        "[Start of Criteria]\n"
        "1. Correctness: The answer is factually and logically correct.\n"
        "2. Completeness: Every part of the query is addressed.\n"
        "3. Clarity: The response is well organised and easy to follow.\n"
        "[End of Criteria]"
    )


def realistic_evaluation(overall: str, per_criterion: tuple[str, str, str] = ("4", "4", "3")) -> str:
    """An evaluation turn with three analysed criteria, an Other Point(s) entry and the overall box."""
    c1, c2, c3 = per_criterion
    return (
        "**1. Correctness:** The response states the right facts and the reasoning holds. "
        f"$\\boxed{{{c1}}}$\n\n"
        "**2. Completeness:** It addresses the main question but skips the follow-up. "
        f"$\\boxed{{{c2}}}$\n\n"
        "**3. Clarity:** Mostly clear, though the second paragraph rambles. "
        f"$\\boxed{{{c3}}}$\n\n"
        "**Other Point(s):** A helpful worked example is included (bonus). $\\boxed{+0.5}$\n\n"
        "**Overall:** A solid answer with a minor omission. Overall quality score: "
        f"$\\boxed{{{overall}}}$"
    )


def response_of(conversation: Conversation) -> str:
    """The response under evaluation, cut out of the rendered evaluation prompt of a turn-2 conversation."""
    match = re.search(r"\[Start of Response\]\n(.*)\n\[End of Response\]\n\Z", conversation[-1]["content"], re.S)
    assert match is not None, "not an evaluation conversation"
    return match.group(1)


def query_of(conversation: Conversation) -> str:
    match = re.search(r"\[Start of Query\]\n(.*)\n\[End of Query\]\n\Z", conversation[0]["content"], re.S)
    assert match is not None, "not a CE-RM conversation"
    return match.group(1)


def scripted(
    score_of: Callable[[str, str, int], str | Completion] | None = None,
    criteria_of: Callable[[str, int], str | Completion] | None = None,
) -> Callable[[Conversation, SamplingParams, int], str | Completion]:
    """A MockBackend responder: criteria turns answered by ``criteria_of(query, sample)``, evaluation turns by
    ``score_of(query, response, sample)`` (the overall box value, or a full Completion to inject faults).

    By default a response written as ``"score=7.5 ..."`` gets the overall score 7.5.
    """

    def default_score(query: str, response: str, sample: int) -> str:
        match = re.match(r"score=(\S+)", response)
        return match.group(1) if match else "5"

    def respond(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        if len(conversation) == 1:
            return (criteria_of or realistic_criteria)(query_of(conversation), sample)
        result = (score_of or default_score)(query_of(conversation), response_of(conversation), sample)
        return result if isinstance(result, Completion) else realistic_evaluation(result)

    return respond
