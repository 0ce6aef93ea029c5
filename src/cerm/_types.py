"""Immutable result types shared by the protocol layer, the Judge and every surface.

Errors are values here: a judgment that could not be scored carries ``Status.UNSCORABLE`` and a reason, never a
sentinel number. Everything is a frozen dataclass so results can be cached, hashed into sets of ids, and passed
between threads without defensive copies.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: How a chain's overall score was read (recorded in every :class:`Chain` and summarised in :class:`Judgment`):
#:
#: * ``"parsed"``: the last ``\boxed{}`` value the judge wrote (the protocol's own reward);
#: * ``"expected"``: the expectation over the score tokens' probabilities at that last ``\boxed{``;
#: * ``"forced_parsed"`` / ``"forced_expected"``: the judge did not close the format, so cerm appended an explicit
#:   overall-score prefix ending in ``\boxed{`` and read the value the model wrote next / the expectation over its
#:   next-token distribution. Forced scores are never the model's own verdict in the protocol's sense.
ScoreSource = Literal["parsed", "expected", "forced_parsed", "forced_expected"]


class Status(str, enum.Enum):
    """Whether a judgment produced a usable score, and if not, whose failure it was.

    * ``SCORED``: a score was read.
    * ``UNSCORABLE``: the judge wrote its text, and that text gave no valid score (no box, out of range, cut off at the
      token budget, an empty response to judge, ...). Retrying the same greedy judgment gives the same answer.
    * ``ERROR``: no judgment was produced: a generation failed (server outage, retries exhausted, out of memory, a
      request the engine refused). Not the judge's verdict, so surfaces treat it as a failure to retry or report,
      never as a result.

    Neither ``UNSCORABLE`` nor ``ERROR`` ever carries a number; both carry a reason.
    """

    SCORED = "scored"
    UNSCORABLE = "unscorable"
    ERROR = "error"


@dataclass(frozen=True)
class Criterion:
    """One evaluation criterion, as the judge wrote it ("term: description"). Order is importance."""

    term: str
    description: str


@dataclass(frozen=True)
class Criteria:
    """The criteria turn of one query: the whole raw text (fed back verbatim) plus the parsed list.

    ``items`` is empty when the judge did not write the ``[Start of Criteria]`` ... ``[End of Criteria]`` block;
    ``problem`` then says why. The raw text is still what the evaluation turn sees, exactly as the protocol says.
    """

    text: str
    items: tuple[Criterion, ...]
    problem: str | None = None
    #: True when the criteria generation itself failed (outage, out of memory, ...): no judge text at all.
    failed: bool = False

    @property
    def well_formed(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class CriterionScore:
    """A per-criterion score (0-5) from an evaluation, matched to its criterion by position where possible."""

    index: int
    term: str | None
    score: float | None
    raw: str


@dataclass(frozen=True)
class OtherPoints:
    """The optional "Other Point(s)" entry: bonus or deduction beyond the criteria list."""

    text: str
    score: float | None
    raw: str | None


@dataclass(frozen=True)
class Evaluation:
    """One evaluation turn, parsed.

    ``overall`` is the last boxed value (the reward, 0-10) or None; when None, ``problem`` says why.
    Per-criterion scores are reported as written and never combined into the overall score.
    """

    text: str
    criterion_scores: tuple[CriterionScore, ...]
    other_points: OtherPoints | None
    overall: float | None
    problem: str | None = None
    warnings: tuple[str, ...] = ()
    #: True when the evaluation's generation failed (outage, out of memory, ...): ``problem`` says how; this is no
    #: verdict of the judge (see ``Status.ERROR``), unlike a text without a valid score.
    failed: bool = False


@dataclass(frozen=True)
class ScoreReadout:
    """A score distribution read from token log-probabilities at a ``\\boxed{`` (see :mod:`cerm.protocol`).

    ``distribution`` holds (score, probability) pairs, probabilities renormalised over ``mass``: the share of the
    model's probability (within the top-k alternatives the backend returned) that spells a valid 0-10 score.
    ``assumed_mass`` is the part of ``mass`` that rests on the closure assumption (an alternative first token such
    as ``"7"`` off the generated path is taken to end the number; its continuation was never observed).
    ``unresolved_mass`` is probability on prefixes that could still become several scores (``"1"`` may be 1, 1.5 or
    10) and was left out rather than guessed. ``expected`` is None when ``trusted`` is False (``mass`` below the
    configured minimum), with ``problem`` saying so. ``greedy`` is the value written along the generated path.
    """

    method: Literal["expected", "forced"]
    distribution: tuple[tuple[float, float], ...]
    mass: float
    assumed_mass: float
    unresolved_mass: float
    expected: float | None
    greedy: float | None
    trusted: bool
    problem: str | None = None

    @property
    def mode(self) -> float | None:
        """The most probable score (earliest of equals), or None for an empty distribution."""
        if not self.distribution:
            return None
        return max(self.distribution, key=lambda vp: vp[1])[0]


@dataclass(frozen=True)
class Usage:
    """Token counts of one or more generations."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Provenance:
    """Where a judgment came from: enough to reproduce it or to refuse mixing incomparable scores."""

    model: str
    backend: str
    prompt_version: str
    criteria_sampling: Mapping[str, Any]
    evaluation_sampling: Mapping[str, Any]
    seed: int | None
    k: int
    criteria_usage: Usage
    evaluation_usage: Usage
    #: True when every criteria set of this judgment came from the criteria cache (no criteria generation ran; the
    #: criteria usage is then zero).
    criteria_cached: bool = False
    #: ``JudgeConfig.score_readout`` and ``JudgeConfig.forced_readout`` in force for this judgment.
    score_readout: str = "parsed"
    forced_readout: bool = False
    #: The backend's own description (``Backend.describe()``, read once per Judge; JSON-ready, never secrets):
    #: dtype, quantization, adapter path and content hash, model revision, engine settings, server URL without
    #: credentials. Treat it as read-only: judgments of one Judge share it.
    backend_settings: Mapping[str, Any] = field(default_factory=dict)
    #: The shape of test-time scaling in force: criteria sets per query x evaluations per set
    #: (``JudgeConfig.criteria_sets`` / ``evaluations_per_set``). A tie-break may have added chains beyond it.
    criteria_samples: int = 1
    evaluation_samples: int = 1
    #: The :class:`cerm.TieBreak` settings (JSON-ready) when this judgment came out of a decision that breaks ties;
    #: the decision's :class:`TieBreakReport` says how many chains each candidate got and why.
    tie_break: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Chain:
    """One criteria set and the evaluation of this response under it (k chains under test-time scaling)."""

    criteria: Criteria
    evaluation: Evaluation | None
    score: float | None
    reason: str | None = None
    #: How ``score`` was read; None when the chain has no score.
    score_source: ScoreSource | None = None
    #: The log-probability readout behind an expected or forced score (also kept when it was not trusted).
    readout: ScoreReadout | None = None
    #: True when a generation of this chain failed (criteria, evaluation or forced readout): no judge text to read.
    failed: bool = False


#: Where a slot judgment's explanation came from: a stage-1 generation from a backend, CE-RM's own evaluation text,
#: none (the template has no explanation), or a caller-supplied explanation (training, cached explanations).
ExplanationSource = Literal["backend", "ce-rm", "none", "given"]


@dataclass(frozen=True)
class SlotRecord:
    """What an ESFP-RM slot judgment read (see :class:`cerm.SlotJudge`).

    ``explanation`` is the stage-1 text the slot model saw (None when the template has none, or when stage 1 failed).
    ``log_p_positive`` / ``log_p_negative`` are the slot model's log-probabilities of the verbalizer classes at the
    slot (a class is the log-sum-exp of its words; ``word_log_probs`` lists each word's own), None when stage 2 did
    not run. ``readout`` is how the score was read from them. ``truncated`` is True when the slot input was shortened
    to fit the slot model (the judgment's warnings say what was cut). ``ce_rm_score`` is the CE-RM judge's score when
    its evaluation served as the explanation (never used as the slot judgment's score).
    """

    explanation: str | None
    explanation_source: ExplanationSource
    readout: str
    log_p_positive: float | None = None
    log_p_negative: float | None = None
    word_log_probs: tuple[tuple[str, float], ...] = ()
    truncated: bool = False
    ce_rm_score: float | None = None

    @property
    def margin(self) -> float | None:
        """``log p(positive) - log p(negative)``, or None when stage 2 did not run."""
        if self.log_p_positive is None or self.log_p_negative is None:
            return None
        return self.log_p_positive - self.log_p_negative


@dataclass(frozen=True)
class Judgment:
    """The verdict on one response.

    ``score`` is the overall 0-10 score (the mean over scorable chains when k > 1) or None when UNSCORABLE or
    ERROR, in which case ``reason`` says why. ``spread`` is the population standard deviation of the chain scores
    (0.0 for k = 1). A judgment is ERROR when no chain scored and at least one chain's generation failed: a retry
    may still score it, so it is not the judge's verdict.
    """

    response_index: int
    status: Status
    score: float | None
    reason: str | None
    chains: tuple[Chain, ...]
    provenance: Provenance
    warnings: tuple[str, ...] = ()
    spread: float | None = None
    #: The slot readout behind an ESFP-RM slot judgment (None for CE-RM judgments, which carry ``chains``).
    slot: SlotRecord | None = None

    @property
    def scorable(self) -> bool:
        return self.status is Status.SCORED

    @property
    def errored(self) -> bool:
        """True when no judgment was produced because a generation failed (``Status.ERROR``)."""
        return self.status is Status.ERROR

    @property
    def criteria(self) -> Criteria | None:
        """The criteria of the first chain (the only one when k = 1)."""
        return self.chains[0].criteria if self.chains else None

    @property
    def evaluation(self) -> Evaluation | None:
        """The evaluation of the first chain (the only one when k = 1)."""
        return self.chains[0].evaluation if self.chains else None

    @property
    def score_source(self) -> str | None:
        """How the score was read (a :data:`ScoreSource`), ``"mixed"`` when scored chains differ, None if unscored."""
        sources = list(dict.fromkeys(c.score_source for c in self.chains if c.score is not None))
        if self.score is None or not sources:
            return None
        return sources[0] if len(sources) == 1 else "mixed"

    @property
    def forced(self) -> bool:
        """True when any chain's score came from a forced readout rather than the judge's own boxed score."""
        return any(c.score is not None and (c.score_source or "").startswith("forced") for c in self.chains)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (used by the CLI's JSONL output)."""
        from dataclasses import asdict

        data = asdict(self)
        data["status"] = self.status.value
        return data


#: Why a tie-break stopped: nothing to break, the contenders separated, or a limit was reached.
TieBreakStop = Literal["no tie", "separated", "max_chains", "max_rounds", "budget", "no sample"]


@dataclass(frozen=True)
class CandidateSamples:
    """What a tie-break spent on one candidate, and why.

    ``chains`` is the number of chains behind the candidate's final judgment (``added`` of them drawn by the
    tie-break, in ``rounds`` sampled rounds). ``group`` numbers the tie the candidate was part of (None: it was not
    tied with anyone, so it was never re-judged). Candidates of one group are ordered by ``key`` (the mean over their
    chains of the expected score where the log-probabilities give one, else the parsed score); candidates of
    different groups keep the order of their first scores. ``reason`` says in words what happened.
    """

    index: int
    first_score: float | None
    chains: int
    added: int
    rounds: int
    group: int | None
    key: float | None
    reason: str
    #: True when the candidate was still in contention when the tie-break stopped (its tie may not be broken).
    contending: bool = False


@dataclass(frozen=True)
class TieBreakReport:
    """How a decision broke its ties (see :class:`cerm.TieBreak`).

    ``order`` is the decision's order of candidate indices, best first (UNSCORABLE ones last in input order).
    ``generations`` counts the extra generations the tie-break ran (criteria and evaluation turns, plus any forced
    readouts), ``usage`` their tokens. ``expected_used`` is True when the expected-score readout (no generation)
    was used as the first tie-breaker.
    """

    settings: Mapping[str, Any]
    candidates: tuple[CandidateSamples, ...]
    order: tuple[int, ...]
    rounds: int
    stopped: TieBreakStop
    generations: int
    usage: Usage
    expected_used: bool

    @property
    def added_chains(self) -> int:
        return sum(c.added for c in self.candidates)


@dataclass(frozen=True)
class Comparison:
    """The outcome of :meth:`cerm.Judge.compare`.

    ``winner`` is "a", "b", "tie", or None when either side is unscorable. With a tie-break, a tie of scores is
    decided by the tie-break where it could (``tie_break`` says how); "tie" means it stayed tied.
    """

    winner: str | None
    a: Judgment
    b: Judgment
    tie_break: TieBreakReport | None = None

    @property
    def margin(self) -> float | None:
        if self.a.score is None or self.b.score is None:
            return None
        return self.a.score - self.b.score


@dataclass(frozen=True)
class RankedResponse:
    """A response in a ranking: its original index, text and judgment."""

    index: int
    response: str
    judgment: Judgment
    #: The ranking's tie-break (the same report on every response of one ranking), when one ran.
    tie_break: TieBreakReport | None = None

    @property
    def score(self) -> float | None:
        return self.judgment.score


@dataclass(frozen=True)
class BestOfN:
    """The outcome of :meth:`cerm.Judge.best_of_n`.

    ``best_index`` is None only when no candidate was scorable (an unscorable candidate never wins).
    ``ranking`` lists every candidate, best first, unscorable ones last in their original order. With a tie-break,
    ``tie_break`` records how many chains each candidate got and why, and ``judgments`` hold the added chains.
    """

    best_index: int | None
    best: str | None
    judgments: tuple[Judgment, ...]
    ranking: tuple[RankedResponse, ...] = field(default=())
    tie_break: TieBreakReport | None = None

    @property
    def best_score(self) -> float | None:
        return None if self.best_index is None else self.judgments[self.best_index].score


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation; the caller guarantees a non-empty list."""
    mean = math.fsum(values) / len(values)
    var = math.fsum((v - mean) ** 2 for v in values) / len(values)
    return mean, math.sqrt(var)
