"""Adaptive test-time scaling for decisions: spend extra judge samples only on the candidates that are tied.

CE-RM writes integer or half-point scores, so two candidates often get the same one. Fixed test-time scaling (``k``
chains for every response) breaks such ties but multiplies the cost of every response, including the many that were
never in doubt. A :class:`TieBreak` instead judges everything once (greedy, as configured), then:

1. orders tied candidates by their expected scores from the score tokens' probabilities, where the backend returns
   log-probabilities (no extra generation);
2. gives the candidates still tied more sampled chains, in rounds, reusing every chain already drawn (the first
   judgment's included); a candidate that falls out of contention is never judged again; rounds stop when one
   candidate leads, or at ``max_chains``, ``max_rounds`` or the ``budget``.

A tie-break only orders candidates that were tied: a candidate never overtakes one it was not tied with, however its
later samples come out. The decision order, and how many chains each candidate got and why, are in the
:class:`~cerm.TieBreakReport`.

The orchestration is a plan over the Judge's own plans (``_judge_plan`` and ``_extend_plan``): the Judge stays the
only place that knows the two-stage order; this module decides who gets more samples.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cerm._config import JudgeConfig, _setting
from cerm._errors import ConfigurationError
from cerm._types import CandidateSamples, Chain, Judgment, TieBreakReport, TieBreakStop, Usage

if TYPE_CHECKING:
    from cerm._judge import Judge, _Plan

#: What one more sample of a tie-break is: a new criteria set and the evaluation under it ("chains"), or one more
#: sampled evaluation under the judgment's first criteria set ("evaluations").
SampleKind = Literal["chains", "evaluations"]

#: Which ties a decision breaks: the ones at the top (who wins: Best-of-N, pairwise comparison) or every tie (a full
#: ranking, GRPO rewards).
TieScope = Literal["top", "all"]

# Scores are means of few numbers: compare them with a tolerance far below any score difference that means anything.
_EPS = 1e-9


@dataclass(frozen=True)
class TieBreak:
    """Settings of an adaptive tie-break (off unless passed to a decision: ``judge.best_of_n(q, cs, tie_break=...)``).

    Args:
        margin: candidates whose score is within ``margin`` of the leader's are in contention (0: exact ties only).
        max_chains: the most chains any candidate ends with, its first judgment's included (so ``max_chains=4``
            spends at most what fixed ``k=4`` spends on a tied candidate).
        samples_per_round: chains added to each contender per round.
        max_rounds: the most sampled rounds (None: until ``max_chains``).
        budget: the most extra generations (criteria and evaluation turns) one decision may run; a round that would
            exceed it is shrunk, or not run. None: bounded by ``max_chains`` only. Forced readouts (with
            ``JudgeConfig.forced_readout``) are a few tokens each and come on top.
        expected_first: first order tied candidates by their expected scores (the score tokens' probabilities at the
            judge's own ``\\boxed{``), where the backend returns log-probabilities: no extra generation. Sampled
            rounds then use it too, chain by chain.
        sample: what one more sample is: ``"chains"`` (default) a new sampled criteria set, shared by every
            contender of the query, and each contender's evaluation under it (decoded as configured, greedy by
            default: a chain as ``k`` chains are); ``"evaluations"`` one more sampled evaluation of each contender
            under its first criteria set.
    """

    # The one-line help of each field is what the command line's --tie-* options say (cerm.cli._common).
    margin: float = _setting(0.0, "candidates within this much of the leader's score are tied (0: exact ties only)")
    max_chains: int = _setting(4, "the most chains a tied candidate ends with, its first judgment's included")
    samples_per_round: int = _setting(1, "chains added to each tied candidate per round")
    max_rounds: int | None = _setting(None, "the most sampled rounds (none: until --tie-max-chains)")
    budget: int | None = _setting(
        None, "the most extra generations one decision may run (none: bounded by --tie-max-chains only)"
    )
    expected_first: bool = _setting(
        True, "first order tied candidates by their expected scores from the score tokens' probabilities (no sampling)"
    )
    sample: SampleKind = _setting(
        "chains", "one more sample is a new criteria set and the evaluations under it, or one more evaluation"
    )

    def __post_init__(self) -> None:
        if not (isinstance(self.margin, int | float) and math.isfinite(self.margin) and self.margin >= 0):
            raise ConfigurationError(f"TieBreak.margin must be a finite number >= 0, got {self.margin!r}")
        if self.max_chains < 1:
            raise ConfigurationError(f"TieBreak.max_chains must be >= 1, got {self.max_chains}")
        if self.samples_per_round < 1:
            raise ConfigurationError(f"TieBreak.samples_per_round must be >= 1, got {self.samples_per_round}")
        if self.max_rounds is not None and self.max_rounds < 0:
            raise ConfigurationError(f"TieBreak.max_rounds must be >= 0 or None, got {self.max_rounds}")
        if self.budget is not None and self.budget < 0:
            raise ConfigurationError(f"TieBreak.budget must be >= 0 or None, got {self.budget}")
        if self.sample not in ("chains", "evaluations"):
            raise ConfigurationError(f"TieBreak.sample must be 'chains' or 'evaluations', got {self.sample!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def chain_key(chain: Chain) -> float | None:
    """The value a tie-break reads from a chain: its expected score where a trusted readout is attached (of the judge's
    own box, or of a forced readout's), or where the score already is one; else the written score."""
    if chain.score is None:
        return None
    readout = chain.readout
    written = chain.score_source in ("parsed", "forced_parsed")
    if written and readout is not None and readout.trusted and readout.expected is not None:
        return readout.expected
    return chain.score


def judgment_key(judgment: Judgment) -> float | None:
    values = [v for v in (chain_key(c) for c in judgment.chains) if v is not None]
    if judgment.score is None or not values:
        return None
    return math.fsum(values) / len(values)


@dataclass
class _Candidate:
    index: int
    first_score: float | None
    group: int | None = None
    added: int = 0
    rounds: int = 0
    left_at: float = math.inf  # the round (0 = the expected-score step) it left contention; inf: never
    notes: list[str] = field(default_factory=list)


class _Decision:
    """One query's tie-break: its candidates, the groups of tied ones, and who is still in contention."""

    def __init__(
        self, query: str, responses: Sequence[str], judgments: list[Judgment], settings: TieBreak, scope: TieScope
    ) -> None:
        self.query, self.responses, self.judgments, self.settings = query, list(responses), judgments, settings
        self.candidates = [_Candidate(j.response_index, j.score) for j in judgments]
        self.groups: list[list[int]] = self._groups(scope)  # the contenders of each group, shrinking
        self.rounds = 0
        self.generations = 0
        self.usage = Usage()
        self.budget_left = settings.budget
        self.stopped: TieBreakStop | None = None if self.groups else "no tie"
        self.expected_used = False
        self.settled: set[int] = set()  # identical texts still tied when their group stopped (equal by definition)

    def _groups(self, scope: TieScope) -> list[list[int]]:
        margin = self.settings.margin
        scored = sorted(
            (c for c in self.candidates if c.first_score is not None), key=lambda c: (-(c.first_score or 0), c.index)
        )
        blocks: list[list[_Candidate]] = []
        for cand in scored:
            top = blocks[-1][0].first_score if blocks else None
            if top is not None and cand.first_score is not None and top - cand.first_score <= margin + _EPS:
                blocks[-1].append(cand)
            elif scope == "top" and blocks:
                break
            else:
                blocks.append([cand])
        groups = [block for block in blocks if len(block) > 1]
        for number, block in enumerate(groups):
            members = [c.index for c in block]
            for cand in block:
                cand.group = number
                others = ", ".join(str(i) for i in members if i != cand.index)
                cand.notes.append(f"first score {cand.first_score:g}, tied (margin {margin:g}) with {others}")
        return [[c.index for c in block] for block in groups]

    def key(self, index: int) -> float:
        value = judgment_key(self.judgments[index])
        assert value is not None  # contenders are scored, and stay scored (their first chains keep their scores)
        return value

    def narrow(self, stage: int) -> None:
        """Keep in each group the contenders within ``margin`` of the group's leader (by key)."""
        margin = self.settings.margin
        for g, members in enumerate(self.groups):
            if len(members) < 2:
                continue
            keys = {i: self.key(i) for i in members}
            lead = max(keys.values())
            kept = [i for i in members if keys[i] >= lead - margin - _EPS]
            if len({self.responses[i] for i in kept}) == 1 and len(kept) > 1:
                # Identical texts (duplicate completions) are equal by definition: nothing for samples to separate.
                for i in kept:
                    self.candidates[i].notes.append("identical text to the other contenders: equal by definition")
                self.settled.update(kept)
                kept = [kept[0]]
            for i in members:
                if i not in kept:
                    cand = self.candidates[i]
                    cand.left_at = stage
                    how = "by its expected score" if stage == 0 else f"after round {stage}"
                    cand.notes.append(f"left contention {how} ({keys[i]:.4g} < leader {lead:.4g})")
            self.groups[g] = kept

    def contenders(self) -> list[int]:
        return [i for members in self.groups if len(members) > 1 for i in members]

    def next_round(self) -> tuple[int, int] | None:
        """(samples per contender, first sample index) of the next round, or None (``stopped`` then says why)."""
        if self.stopped is not None:
            return None
        contenders = self.contenders()
        if not contenders:
            self.stopped = "separated"
            return None
        settings = self.settings
        if settings.max_rounds is not None and self.rounds >= settings.max_rounds:
            self.stopped = "max_rounds"
            return None
        have = max(len(self.judgments[i].chains) for i in contenders)
        samples = min(settings.samples_per_round, settings.max_chains - have)
        if samples < 1:
            self.stopped = "max_chains"
            return None
        if self.budget_left is not None:
            while samples >= 1 and self.cost(samples, len(contenders)) > self.budget_left:
                samples -= 1
            if samples < 1:
                self.stopped = "budget"
                return None
        return samples, have

    def cost(self, samples: int, contenders: int) -> int:
        criteria = samples if self.settings.sample == "chains" else 0
        return criteria + samples * contenders

    def absorb(self, samples: int, extended: dict[int, Judgment], generations: int, usage: Usage) -> None:
        self.rounds += 1
        if self.budget_left is not None:
            self.budget_left -= self.cost(samples, len(extended))
        self.generations += generations
        self.usage += usage
        grew = False
        for i, judgment in extended.items():
            added = len(judgment.chains) - len(self.judgments[i].chains)
            grew |= added > 0
            self.judgments[i] = judgment
            self.candidates[i].added += added
            self.candidates[i].rounds += 1
        self.narrow(self.rounds)
        if not grew:  # nothing could be drawn (e.g. no criteria set to sample under): do not loop
            self.stopped = "no sample"

    def report(self) -> tuple[list[Judgment], TieBreakReport]:
        settings = self.settings.to_dict()
        stopped: TieBreakStop = self.stopped or "separated"
        final = set(self.contenders()) | self.settled
        for cand in self.candidates:
            if cand.first_score is None:
                cand.notes.append("unscorable: never in contention")
            elif cand.group is None:
                cand.notes.append("not tied: judged once")
            elif cand.index in final:
                cand.notes.append(f"still in contention when the tie-break stopped ({stopped})")
            elif cand.left_at == math.inf:
                cand.notes.append("led its tie")
        judgments = [
            dataclasses.replace(j, provenance=dataclasses.replace(j.provenance, tie_break=settings))
            for j in self.judgments
        ]
        order = self._order()
        records = tuple(
            CandidateSamples(
                index=c.index,
                first_score=c.first_score,
                chains=len(judgments[c.index].chains),
                added=c.added,
                rounds=c.rounds,
                group=c.group,
                key=judgment_key(judgments[c.index]) if c.first_score is not None else None,
                contending=c.index in final,
                reason="; ".join(c.notes),
            )
            for c in self.candidates
        )
        report = TieBreakReport(
            settings=settings,
            candidates=records,
            order=tuple(order),
            rounds=self.rounds,
            stopped=stopped,
            generations=self.generations,
            usage=self.usage,
            expected_used=self.expected_used,
        )
        return judgments, report

    def _order(self) -> list[int]:
        """Blocks (a tie group, or a lone candidate) in the order of their first scores; inside a group, the
        candidates that stayed in contention longest first, then by key, then input order."""
        scored = [c for c in self.candidates if c.first_score is not None]
        blocks: dict[object, list[_Candidate]] = {}
        for cand in scored:
            blocks.setdefault(("group", cand.group) if cand.group is not None else ("one", cand.index), []).append(cand)
        ordered = sorted(
            blocks.values(), key=lambda b: (-max(c.first_score or 0.0 for c in b), min(c.index for c in b))
        )
        order: list[int] = []
        for block in ordered:
            if len(block) == 1:
                order.append(block[0].index)
                continue
            block.sort(key=lambda c: (-c.left_at, -self.key(c.index), c.index))
            order.extend(c.index for c in block)
        order.extend(c.index for c in self.candidates if c.first_score is None)
        return order


def check_sampling(settings: TieBreak, config: JudgeConfig) -> None:
    """A tie-break that may add chains needs sampled ones: refuse a greedy-only config before any judging."""
    if config.temperature == 0 and config.scaling_temperature <= 0 and settings.max_chains > config.chains_per_response:
        raise ConfigurationError("a tie-break samples more chains: set temperature or scaling_temperature above 0")


def decide_plan(
    judge: Judge, items: Sequence[tuple[str, Sequence[str]]], settings: TieBreak, scope: TieScope
) -> _Plan[list[tuple[list[Judgment], TieBreakReport]]]:
    """Judge ``items`` once (as configured), then break their ties in rounds, all items' rounds batched together."""
    if not isinstance(settings, TieBreak):
        raise TypeError(f"tie_break must be a cerm.TieBreak, got {type(settings).__name__}")
    if scope not in ("top", "all"):
        raise ValueError(f"scope must be 'top' or 'all', got {scope!r}")
    check_sampling(settings, judge.config)
    from cerm._judge import _Extension

    rows = yield from judge._judge_plan(items, attach_readouts=settings.expected_first)
    decisions = [
        _Decision(query, responses, list(row), settings, scope)
        for (query, responses), row in zip(items, rows, strict=True)
    ]
    for decision in decisions:
        if decision.groups:
            decision.expected_used = settings.expected_first and any(
                c.readout is not None and c.score is not None
                for i in decision.contenders()
                for c in decision.judgments[i].chains
            )
            decision.narrow(0)  # the expected scores, where there are any; duplicates settle here too
    while True:
        asks: list[tuple[_Decision, int]] = []
        extensions = []
        for decision in decisions:
            shape = decision.next_round()
            if shape is None:
                continue
            samples, first = shape
            targets = {i: (decision.responses[i], decision.judgments[i]) for i in decision.contenders()}
            extensions.append(_Extension(decision.query, targets, samples, settings.sample, first))
            asks.append((decision, samples))
        if not extensions:
            break
        results = yield from judge._extend_plan(extensions, settings.expected_first)
        for (decision, samples), result in zip(asks, results, strict=True):
            decision.absorb(samples, result.judgments, result.generations, result.usage)
    return [decision.report() for decision in decisions]
