"""The one interface every judge kind implements: :class:`RewardJudge`.

cerm has two judge kinds: the CE-RM :class:`~cerm.Judge` (criteria, then a generated evaluation with a 0-10 score) and
the ESFP-RM :class:`~cerm.SlotJudge` (an explanation, then a masked-LM slot readout). Every surface (the TRL and veRL
reward functions, the OpenRLHF reward server, Best-of-N selection, ``cerm eval``, the CLI) is written against this
class only, so a new judge kind plugs in by implementing it, and no surface checks which kind it holds.

Why an abstract base class and not a ``typing.Protocol``: the derived operations (``score``, ``compare``, ``rank``,
``best_of_n``, their async twins) are the same rule for every kind (the protocol's pair rule, the stable ranking with
unscorable responses last) and must not be re-implemented per kind; a base class carries them once. A kind implements
the abstract core (``judge_batch``/``ajudge_batch``, ``describe``, ``model_id``, ``backend_name``) and may override
the optional hooks, whose defaults say "this kind has nothing of that sort".
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from cerm._errors import ConfigurationError
from cerm._types import BestOfN, Comparison, Judgment, RankedResponse, TieBreakReport
from cerm.protocol import pair_outcome

if TYPE_CHECKING:
    from cerm._cache import CriteriaCache
    from cerm._ties import TieBreak, TieScope

Item = tuple[str, Sequence[str]]
#: What ``judge_batch`` does with an invalid item: raise for the whole batch, or give that item's row ERROR judgments.
OnInvalid = Literal["raise", "error"]
#: CE-RM's score range; a kind whose scores live elsewhere says so through :attr:`RewardJudge.score_range`.
DEFAULT_SCORE_RANGE = (0.0, 10.0)


class RewardJudge(abc.ABC):
    """A judge of responses to queries, whatever its kind.

    Contract (every kind): ``judge_batch(items)`` returns, per ``(query, responses)`` item and in input order, one
    :class:`~cerm.Judgment` per response. A judgment is ``Status.SCORED`` with a number, ``Status.UNSCORABLE`` (the
    judge ran and its output gave no valid score) or ``Status.ERROR`` (no judgment: a generation or model call failed),
    the last two always with a reason and never a number. One item's failure never loses the others. Higher scores are
    better; :attr:`score_range` says where scores lie (None: unbounded).
    """

    #: A short name of the judge kind, recorded in eval manifests and the reward server's health answer.
    kind: str = "judge"

    # -- the core each kind implements ---------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def model_id(self) -> str:
        """The model behind the scores (the one that decides them)."""

    @property
    @abc.abstractmethod
    def backend_name(self) -> str:
        """How that model is run (a backend registry name, or the slot model's runtime)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Everything that decides this judge's results, JSON-ready and free of secrets. Holds at least ``"backend"``
        (the runtime's settings) and ``"config"`` (the judge's own settings)."""

    @abc.abstractmethod
    def judge_batch(self, items: Sequence[Item], *, on_invalid: OnInvalid = "raise") -> list[list[Judgment]]:
        """Judge many ``(query, responses)`` items at once (see the class contract). ``on_invalid="error"`` gives an
        invalid item a row of ERROR judgments whose reason starts with ``"invalid input:"`` instead of raising."""

    @abc.abstractmethod
    async def ajudge_batch(self, items: Sequence[Item], *, on_invalid: OnInvalid = "raise") -> list[list[Judgment]]:
        """The async twin of :meth:`judge_batch` (never blocks the caller's event loop)."""

    # -- optional hooks (defaults: nothing of that sort) --------------------------------------------------------------
    @property
    def score_range(self) -> tuple[float, float] | None:
        """``(low, high)`` of the scores, or None when unbounded (then a reward ``scale`` cannot be applied)."""
        return DEFAULT_SCORE_RANGE

    #: The per-query cache of this judge's shared per-query work (CE-RM's criteria), if it has one.
    cache: CriteriaCache | None = None

    def uncached_queries(self, queries: Sequence[str]) -> list[str]:
        """The queries whose shared per-query work is cacheable but not cached yet (veRL serialises the first call
        per such query so that the others reuse its work). Default: none."""
        return []

    def with_query_cache(self, size: int) -> RewardJudge:
        """A judge like this one that caches its shared per-query work in memory (``size`` entries), for the reward
        server; this judge itself when it has no such work or already has a cache."""
        return self

    def decide_batch(
        self, items: Sequence[Item], tie_break: TieBreak, *, scope: TieScope = "top"
    ) -> list[tuple[list[Judgment], TieBreakReport]]:
        """:meth:`judge_batch` with ties broken by drawing more samples; a kind that cannot sample again refuses."""
        raise ConfigurationError(f"a {self.kind} judge cannot break ties by sampling; pass tie_break=None")

    async def adecide_batch(
        self, items: Sequence[Item], tie_break: TieBreak, *, scope: TieScope = "top"
    ) -> list[tuple[list[Judgment], TieBreakReport]]:
        return self.decide_batch(items, tie_break, scope=scope)

    def close(self) -> None:  # noqa: B027 (optional hook: a kind that creates nothing has nothing to release)
        """Release what this judge created (models, backends, caches)."""

    def __enter__(self) -> RewardJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- derived, the same rule for every kind ------------------------------------------------------------------------
    def judge(self, query: str, responses: Sequence[str]) -> list[Judgment]:
        return self.judge_batch([(query, responses)])[0]

    async def ajudge(self, query: str, responses: Sequence[str]) -> list[Judgment]:
        return (await self.ajudge_batch([(query, responses)]))[0]

    def score(self, query: str, responses: Sequence[str]) -> list[float | None]:
        """Scores, None where a response is UNSCORABLE or ERROR."""
        return [j.score for j in self.judge(query, responses)]

    async def ascore(self, query: str, responses: Sequence[str]) -> list[float | None]:
        return [j.score for j in await self.ajudge(query, responses)]

    def score_batch(self, items: Sequence[Item]) -> list[list[float | None]]:
        return [[j.score for j in row] for row in self.judge_batch(items)]

    async def ascore_batch(self, items: Sequence[Item]) -> list[list[float | None]]:
        return [[j.score for j in row] for row in await self.ajudge_batch(items)]

    def compare(self, query: str, a: str, b: str, *, tie_break: TieBreak | None = None) -> Comparison:
        """Judge two responses; ``winner`` is None unless both are scored."""
        if tie_break is not None:
            return tied_comparison(*self.decide_batch([(query, [a, b])], tie_break, scope="top")[0])
        ja, jb = self.judge(query, [a, b])
        return comparison(ja, jb)

    async def acompare(self, query: str, a: str, b: str, *, tie_break: TieBreak | None = None) -> Comparison:
        if tie_break is not None:
            return tied_comparison(*(await self.adecide_batch([(query, [a, b])], tie_break, scope="top"))[0])
        ja, jb = await self.ajudge(query, [a, b])
        return comparison(ja, jb)

    def rank(self, query: str, responses: Sequence[str], *, tie_break: TieBreak | None = None) -> list[RankedResponse]:
        """All responses, best first; equal scores keep input order; unscored ones last."""
        if tie_break is not None:
            return tied_ranking(responses, *self.decide_batch([(query, responses)], tie_break, scope="all")[0])
        return ranking(responses, self.judge(query, responses))

    async def arank(
        self, query: str, responses: Sequence[str], *, tie_break: TieBreak | None = None
    ) -> list[RankedResponse]:
        if tie_break is not None:
            decided = await self.adecide_batch([(query, responses)], tie_break, scope="all")
            return tied_ranking(responses, *decided[0])
        return ranking(responses, await self.ajudge(query, responses))

    def best_of_n(self, query: str, candidates: Sequence[str], *, tie_break: TieBreak | None = None) -> BestOfN:
        """The highest-scoring candidate (the earliest among equal top scores; an unscored one never wins)."""
        if tie_break is not None:
            return tied_best_of_n(candidates, *self.decide_batch([(query, candidates)], tie_break, scope="top")[0])
        return best_of_n(candidates, self.judge(query, candidates))

    async def abest_of_n(self, query: str, candidates: Sequence[str], *, tie_break: TieBreak | None = None) -> BestOfN:
        if tie_break is not None:
            decided = await self.adecide_batch([(query, candidates)], tie_break, scope="top")
            return tied_best_of_n(candidates, *decided[0])
        return best_of_n(candidates, await self.ajudge(query, candidates))


def require_reward_judge(judge: object, where: str = "judge") -> RewardJudge:
    """``judge`` itself when it implements :class:`RewardJudge`; a TypeError naming the problem otherwise."""
    if not isinstance(judge, RewardJudge):
        raise TypeError(f"{where} must be a cerm judge (cerm.Judge, cerm.SlotJudge, ...), got {type(judge).__name__}")
    return judge


def comparison(a: Judgment, b: Judgment) -> Comparison:
    # The protocol's pair rule (shared with the eval harness and the GRPO rewards); None when a side has no score.
    winner = {"win": "a", "loss": "b", "tie": "tie"}.get(pair_outcome(a.score, b.score))
    return Comparison(winner, a, b)


def ranking(responses: Sequence[str], judgments: Sequence[Judgment]) -> list[RankedResponse]:
    ranked = [RankedResponse(j.response_index, responses[j.response_index], j) for j in judgments]
    # Python's sort is stable: equal scores keep input order; unscored (None) sort after every score.
    return sorted(ranked, key=lambda r: (r.score is None, -(r.score or 0.0)))


def best_of_n(candidates: Sequence[str], judgments: list[Judgment]) -> BestOfN:
    ranked = ranking(candidates, judgments)
    top = ranked[0] if ranked and ranked[0].score is not None else None
    return BestOfN(
        best_index=None if top is None else top.index,
        best=None if top is None else top.response,
        judgments=tuple(judgments),
        ranking=tuple(ranked),
    )


def tied_comparison(judgments: list[Judgment], report: TieBreakReport) -> Comparison:
    a, b = judgments
    if a.score is None or b.score is None:
        return Comparison(None, a, b, report)
    ka, kb = report.candidates[0], report.candidates[1]
    if ka.contending and kb.contending and ka.key is not None and kb.key is not None and abs(ka.key - kb.key) < 1e-9:
        return Comparison("tie", a, b, report)
    return Comparison("a" if report.order[0] == 0 else "b", a, b, report)


def tied_ranking(responses: Sequence[str], judgments: list[Judgment], report: TieBreakReport) -> list[RankedResponse]:
    return [RankedResponse(i, responses[i], judgments[i], report) for i in report.order]


def tied_best_of_n(candidates: Sequence[str], judgments: list[Judgment], report: TieBreakReport) -> BestOfN:
    ranked = tied_ranking(candidates, judgments, report)
    top = ranked[0] if ranked and ranked[0].score is not None else None
    return BestOfN(
        best_index=None if top is None else top.index,
        best=None if top is None else top.response,
        judgments=tuple(judgments),
        ranking=tuple(ranked),
        tie_break=report,
    )
