"""ESFP-RM's texts and formulas, shared by the slot judge (inference) and slot training: pure Python.

ESFP-RM (arXiv 2508.18212, withdrawn by its authors, no code released) judges in two stages: a generative model writes
an explanation of a response's quality, then a masked language model reads query, response and explanation in a
template with one mask slot and predicts a verbalizer word there. Only the abstract survives, so every text and formula
here is cerm's own documented choice:

* the explanation prompt (:data:`DEFAULT_EXPLANATION_PROMPT`) asks for a short critique that ends without a verdict
  word, so the slot model, not the explainer, decides;
* the slot template (:data:`DEFAULT_SLOT_TEMPLATE`) holds ``{query}``, ``{response}``, optionally ``{explanation}``,
  and exactly one ``{mask}``;
* the verbalizer has two classes, positive (default "good") and negative (default "bad"), one or more words each; a
  class's log-probability is the log-sum-exp of its words' log-probabilities;
* the reward (:func:`slot_reward`) is ``log p(positive) - log p(negative)`` (``"log_odds"``, unbounded) or
  ``10 * p(positive | positive or negative)`` (``"probability"``, on CE-RM's 0-10 score range so that every reward
  scale and report reading 0-10 applies unchanged).
"""

from __future__ import annotations

import hashlib
import math
import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from cerm.protocol._conversation import Conversation

#: How the slot's distribution becomes a score (see :func:`slot_reward`).
SlotReadout = Literal["log_odds", "probability"]
SLOT_FIELDS = ("query", "response", "explanation", "mask")

DEFAULT_EXPLANATION_PROMPT = (
    "Read the question and the response below, then explain in two or three sentences whether the response answers "
    "the question correctly and helpfully. Point out any mistake. Do not give a score.\n\n"
    "[Question]\n{query}\n\n[Response]\n{response}"
)
DEFAULT_SLOT_TEMPLATE = (
    "Question: {query}\nResponse: {response}\nExplanation: {explanation}\nOverall, the response is {mask}."
)
#: The template without an explanation (stage 1 off: the slot model reads query and response alone).
PLAIN_SLOT_TEMPLATE = "Question: {query}\nResponse: {response}\nOverall, the response is {mask}."


def _fields(text: str) -> list[str]:
    names = []
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} takes no format spec or conversion")
        names.append(name)
    return names


@dataclass(frozen=True)
class SlotTemplate:
    """A slot template: literal text with ``{query}``, ``{response}``, optionally ``{explanation}``, and exactly one
    ``{mask}`` (write a literal brace as ``{{`` / ``}}``). :meth:`segments` splits it for token-level assembly, so the
    mask is never cut and truncation can shorten the response and explanation by tokens."""

    text: str = DEFAULT_SLOT_TEMPLATE

    def __post_init__(self) -> None:
        names = _fields(self.text)
        unknown = sorted(set(names) - set(SLOT_FIELDS))
        if unknown:
            raise ValueError(f"slot template has unknown placeholder(s) {unknown}; known: {list(SLOT_FIELDS)}")
        if names.count("mask") != 1:
            raise ValueError(f"a slot template holds exactly one {{mask}}, this one has {names.count('mask')}")
        for name in ("query", "response"):
            if names.count(name) != 1:
                raise ValueError(f"a slot template holds {{{name}}} exactly once, this one has {names.count(name)}")
        if names.count("explanation") > 1:
            raise ValueError("a slot template holds {explanation} at most once")

    @property
    def uses_explanation(self) -> bool:
        return "explanation" in _fields(self.text)

    @property
    def space_before_mask(self) -> bool:
        """True when the text just before the mask ends in whitespace (verbalizer words are then tokenized as words
        that follow a space, e.g. RoBERTa's ``"Ġgood"``)."""
        before = ""
        for kind, value in self.segments():
            if kind == "mask":
                break
            before = value if kind == "text" else "x"
        return before[-1:].isspace()

    def segments(self) -> list[tuple[str, str]]:
        """``[("text", literal) | (field, "")]`` in order; empty literals are dropped."""
        out: list[tuple[str, str]] = []
        for literal, name, _, _ in string.Formatter().parse(self.text):
            if literal:
                out.append(("text", literal))
            if name is not None:
                out.append((name, ""))
        return out

    def render(self, query: str, response: str, explanation: str = "", mask: str = "[MASK]") -> str:
        """The template as one string (for reading and logs; the models assemble tokens by :meth:`segments`)."""
        return self.text.format(query=query, response=response, explanation=explanation, mask=mask)

    @property
    def version(self) -> str:
        """A short content hash, recorded in every slot judgment's provenance."""
        return "esfp-slot/" + hashlib.sha256(self.text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Verbalizer:
    """The words predicted at the slot: ``positive`` ones mean a good response, ``negative`` ones a bad one.

    Words are given without surrounding spaces; each class needs at least one word and no word is in both. A word the
    tokenizer splits into several pieces is scored with as many mask tokens as it has pieces (the template's one slot
    is widened for it), as the sum of its pieces' log-probabilities; see :mod:`cerm._slot._masked`.
    """

    positive: tuple[str, ...] = ("good",)
    negative: tuple[str, ...] = ("bad",)

    def __post_init__(self) -> None:
        for name in ("positive", "negative"):
            words = getattr(self, name)
            if isinstance(words, str) or not isinstance(words, Sequence) or not words:
                raise ValueError(f"verbalizer {name} words must be a non-empty list of strings")
            for word in words:
                if not isinstance(word, str) or not word.strip() or word != word.strip():
                    raise ValueError(f"verbalizer word {word!r} must be non-empty text without surrounding spaces")
            object.__setattr__(self, name, tuple(words))
        shared = set(self.positive) & set(self.negative)
        if shared:
            raise ValueError(f"verbalizer words {sorted(shared)} are in both classes")

    @property
    def words(self) -> tuple[str, ...]:
        return (*self.positive, *self.negative)


@dataclass(frozen=True)
class ExplanationPrompt:
    """The stage-1 prompt: a user message with ``{query}`` and ``{response}`` (each exactly once), and an optional
    system message."""

    text: str = DEFAULT_EXPLANATION_PROMPT
    system: str | None = None

    def __post_init__(self) -> None:
        names = _fields(self.text)
        if sorted(names) != ["query", "response"]:
            raise ValueError(f"the explanation prompt holds {{query}} and {{response}} once each, got {names}")

    def conversation(self, query: str, response: str) -> Conversation:
        user = self.text.format(query=query, response=response)
        if self.system:
            return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]
        return [{"role": "user", "content": user}]


def log_sum_exp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


def slot_reward(log_p_positive: float, log_p_negative: float, readout: SlotReadout) -> float:
    """The score of a slot read: ``log p(positive) - log p(negative)`` or ``10 * p(positive | either class)``.

    Both class log-probabilities are the model's own (not renormalised); their difference is the same either way.
    """
    margin = log_p_positive - log_p_negative
    if readout == "log_odds":
        return margin
    if readout == "probability":
        # A numerically stable logistic function of the margin.
        if margin >= 0:
            return 10.0 / (1.0 + math.exp(-margin))
        e = math.exp(margin)
        return 10.0 * e / (1.0 + e)
    raise ValueError(f"readout must be 'log_odds' or 'probability', got {readout!r}")


def slot_score_range(readout: SlotReadout) -> tuple[float, float] | None:
    return (0.0, 10.0) if readout == "probability" else None
