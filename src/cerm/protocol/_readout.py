"""Score readout from token log-probabilities: a distribution over 0-10 scores at a ``\\boxed{``, pure arithmetic.

The overall score is written as a few tokens after the last ``\\boxed{``: tokenizers that split digits (SmolLM2,
Qwen) write ``10`` as ``"1", "0"`` and ``7.5`` as ``"7", ".", "5"``; others write ``"10"`` as one token. Backends
return, for each *generated* token, its log-probability and the top-k alternatives at that position, so the
probability of a score string is known exactly only along the generated path:

    P("10}") = P("1") * P("0" | "1") * P("}" | "10")          (chain rule over the positions after ``\\boxed{``)

Every alternative at a position on the path is one branch of a small tree. A branch is scored

* exactly, when its text reaches a ``}`` (an observed closure) or follows the path to a closure;
* under the *closure assumption* when it leaves the path on a prefix that can only be one score give or take a
  half point: ``"7"`` off the path is taken as 7 (it might have become 7.5), ``"7."`` as 7.5 (the prompt allows only
  integers and half points); this mass is reported as ``assumed_mass``;
* not at all when it leaves the path on a prefix that could still become scores far apart: ``"1"`` may be 1, 1.5 or
  10. Guessing would move the expectation by up to 9 points, so that mass is reported as ``unresolved_mass`` and left
  out;
* not at all when its text cannot spell a score (``"N"``, ``"-"``, ...), and neither is the probability beyond the
  top-k alternatives, which the backend did not return.

The expectation is taken over the covered mass (exact + assumed), renormalised. When that mass is below a minimum the
readout is marked untrusted and gives no expectation: cerm says the probabilities do not support a number rather
than inventing one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Literal, Protocol

from cerm._types import ScoreReadout
from cerm.protocol._conversation import Conversation
from cerm.protocol._parse import OVERALL_RANGE

#: Appended after an evaluation that did not close the format, so the next tokens are the overall score. The judge's
#: own evaluation text comes first, verbatim; this sentence mirrors the evaluation prompt's last instruction.
FORCED_READOUT_SUFFIX = (
    "\n\nBased on the analyses above, the overall quality score of the response (from 0 to 10) is $\\boxed{"
)

#: Default minimum covered probability mass for a readout to be trusted.
DEFAULT_MIN_MASS = 0.5

_OPEN_BOX = re.compile(r"\\boxed\s*\{")
_COMPLETE = re.compile(r"\d+(?:\.\d+)?")
_NUMERIC_PREFIX = re.compile(r"\d*(?:\.\d*)?")
# The most tokens a score can take after ``\boxed{``: " 10.5 }" spelled one character per token, plus slack.
_MAX_DEPTH = 8


class TokenAlternatives(Protocol):
    """One generated position: the chosen token, its log-probability, and the top alternatives (token, logprob).

    :class:`cerm.backends.TokenLogprob` has this shape.
    """

    @property
    def token(self) -> str: ...

    @property
    def logprob(self) -> float: ...

    @property
    def top(self) -> Sequence[tuple[str, float]]: ...


def forced_readout_conversation(evaluation_conversation: Conversation, evaluation_text: str) -> Conversation:
    """The evaluation conversation with a partial assistant turn to continue: the judge's own evaluation text plus
    :data:`FORCED_READOUT_SUFFIX`, so the next generated tokens are the overall score (needs a backend with prefill).
    """
    return [
        *evaluation_conversation,
        {"role": "assistant", "content": evaluation_text.rstrip() + FORCED_READOUT_SUFFIX},
    ]


def _valid(text: str) -> float | None:
    if not _COMPLETE.fullmatch(text):
        return None
    value = float(text)
    low, high = OVERALL_RANGE
    return value if low <= value <= high else None


def _assume(prefix: str) -> tuple[float | None, bool]:
    """What an unfinished numeric prefix stands for: (value, resolved). (None, False) = ambiguous, left out;
    (None, True) = can never be a 0-10 score."""
    _, high = OVERALL_RANGE
    if prefix.endswith(".") and prefix[:-1].isdigit():
        value = _valid(prefix[:-1] + ".5")  # "7." -> 7.5: the prompt allows integers and half points only
        return value, value is not None
    value = _valid(prefix)
    if value is None:
        if prefix.isdigit() and int(prefix) > high:
            return None, True  # "11": no score starts like this
        return None, False  # "", " ", ".": any score may follow
    if "." not in prefix and not prefix.startswith("0") and value * 10 <= high:
        return None, False  # "1" may still become 10: nine points apart, not guessed
    return value, True


def _alternatives(step: TokenAlternatives) -> dict[str, float]:
    """Probabilities by token text at one position (tokens that decode alike are one branch: same text)."""
    probs: dict[str, float] = {}
    for token, logprob in step.top:
        probs[token] = probs.get(token, 0.0) + math.exp(logprob)
    if step.token not in probs:  # sampled tokens can fall outside the top-k
        probs[step.token] = math.exp(step.logprob)
    return probs


def score_distribution(
    steps: Sequence[TokenAlternatives],
    *,
    lead: str = "",
    method: Literal["expected", "forced"] = "expected",
    min_mass: float = DEFAULT_MIN_MASS,
) -> ScoreReadout:
    """The distribution over overall scores from the positions right after ``\\boxed{``.

    ``steps[0]`` is the first position after the brace. ``lead`` is text of ``steps[0]``'s token that belongs to
    the ``\\boxed{`` itself (when the brace and the first score character share a token, e.g. ``"{7"``): only
    alternatives that start with it are branches, renormalised among themselves. See the module docstring for the
    approximation.
    """
    if not 0.0 <= min_mass <= 1.0:
        raise ValueError(f"min_mass must be in [0, 1], got {min_mass}")
    exact: dict[float, float] = {}
    assumed: dict[float, float] = {}
    unresolved = 0.0

    def add(store: dict[float, float], value: float, p: float) -> None:
        store[value] = store.get(value, 0.0) + p

    def expand(depth: int, prefix: str, prob: float) -> None:
        nonlocal unresolved
        step = steps[depth]
        alternatives = _alternatives(step)
        path_token = step.token
        if depth == 0 and lead:
            kept = {t[len(lead) :]: p for t, p in alternatives.items() if t.startswith(lead)}
            total = sum(kept.values())
            alternatives = {t: p / total for t, p in kept.items()} if total > 0 else {}
            path_token = path_token[len(lead) :]
        for token, p in alternatives.items():
            text = prefix + token
            branch = prob * p
            if "}" in text:  # an observed closure: exact
                value = _valid(text[: text.index("}")].strip())
                if value is not None:
                    add(exact, value, branch)
                continue
            stripped = text.strip()
            if not _NUMERIC_PREFIX.fullmatch(stripped):
                continue  # cannot spell a score
            if token == path_token and depth + 1 < min(len(steps), _MAX_DEPTH):
                expand(depth + 1, text, branch)
                continue
            value, resolved = _assume(stripped)
            if value is not None:
                add(assumed, value, branch)
            elif not resolved:
                unresolved += branch

    if steps:
        expand(0, "", 1.0)
    combined: dict[float, float] = dict(exact)
    for value, p in assumed.items():
        combined[value] = combined.get(value, 0.0) + p
    mass = math.fsum(combined.values())
    distribution = tuple(sorted((v, p / mass) for v, p in combined.items())) if mass > 0 else ()
    trusted = mass >= min_mass and mass > 0
    expected = math.fsum(v * p for v, p in distribution) if trusted else None
    problem = None
    if not trusted:
        problem = (
            f"only {mass:.1%} of the probability at the score position spells a 0-10 score "
            f"(minimum {min_mass:.0%}; {unresolved:.1%} ambiguous, the rest outside the top-k or not a number)"
        )
    return ScoreReadout(
        method=method,
        distribution=distribution,
        mass=mass,
        assumed_mass=math.fsum(assumed.values()),
        unresolved_mass=unresolved,
        expected=expected,
        greedy=_greedy_value([s.token for s in steps], lead),
        trusted=trusted,
        problem=problem,
    )


def closed_score(text: str) -> float | None:
    """The 0-10 score written before the first ``}`` of a continuation of ``\\boxed{``, or None (not closed, not a
    plain number, or out of range)."""
    if "}" not in text:
        return None
    return _valid(text[: text.index("}")].strip())


def _greedy_value(tokens: Sequence[str], lead: str) -> float | None:
    return closed_score("".join(tokens)[len(lead) :])


def read_boxed_score(
    tokens: Sequence[TokenAlternatives],
    *,
    method: Literal["expected", "forced"] = "expected",
    min_mass: float = DEFAULT_MIN_MASS,
) -> ScoreReadout | None:
    """The score distribution at the LAST ``\\boxed{`` of a generated token sequence, or None when it has none.

    The box is located in the concatenated token texts (what the model produced, token by token), so it is the same
    box the parser takes as the overall score when the text closes it.
    """
    starts: list[int] = []
    pieces: list[str] = []
    position = 0
    for step in tokens:
        starts.append(position)
        pieces.append(step.token)
        position += len(step.token)
    joined = "".join(pieces)
    boxes = list(_OPEN_BOX.finditer(joined))
    if not boxes:
        return None
    end = boxes[-1].end()  # character index just after "{"
    # The token holding the brace; the score starts in it (shared token) or in the next one.
    index = max(i for i, start in enumerate(starts) if start < end)
    token_end = starts[index] + len(tokens[index].token)
    if token_end == end:
        return score_distribution(tokens[index + 1 :], method=method, min_mass=min_mass)
    lead = joined[starts[index] : end]
    return score_distribution(tokens[index:], lead=lead, method=method, min_mass=min_mass)
