"""TRL: a CE-RM judge as a reward function for ``GRPOTrainer(reward_funcs=[...])``.

TRL (1.16) calls a reward function as ``fn(prompts=..., completions=..., completion_ids=..., **kwargs)``; ``kwargs`` are
the extra dataset columns plus ``trainer_state``, ``log_extra`` and ``log_metric``. Prompts and completions are strings
(standard data) or lists of chat messages (conversational data). The function returns one float per completion, or
None where it has no reward: TRL turns None into NaN and leaves it out of the group's mean and std, which is exactly
what an UNSCORABLE judgment should do. An ERROR judgment (the judge's generation failed: no judgment at all) is also
None, and counted apart: ``<name>/error_fraction`` beside ``<name>/unscorable_fraction``, and a warning in the log, so
an outage of the judge is visible in the training metrics instead of passing for the judge's verdict. A function
whose ``__call__`` is ``async`` is awaited by TRL, concurrently with other async reward functions.

Beside OTHER reward functions, TRL's default ``multi_objective_aggregation="sum_then_normalize"`` sums the functions'
rewards with NaN counted as 0, so a completion the judge could not score is punished as if the policy had earned 0.
Pass ``GRPOConfig(multi_objective_aggregation="normalize_then_sum")`` to keep it neutral. The reward function cannot
see the trainer when it is built; at its first call it finds the trainer behind TRL's ``log_metric`` hook and logs a
warning when it is one of several reward functions under ``sum_then_normalize``.

Nothing here imports TRL: the reward functions are plain callables, so this module loads without it.

>>> from trl import GRPOTrainer                                          # doctest: +SKIP
>>> reward = CermRewardFunc(Judge("PKU-ONELab/CE-RM-4B"), scale=(0, 1))   # doctest: +SKIP
>>> GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=...)     # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from cerm._reward_judge import RewardJudge, require_reward_judge
from cerm._ties import TieBreak
from cerm._types import Judgment, TieBreakReport
from cerm.integrations._common import (
    Grouping,
    Outcome,
    QueryFn,
    ResponseFn,
    Scale,
    default_query,
    default_response,
    derive_query,
    judge_scale,
    outcome_reason,
    outcome_score,
    scaled,
)

logger = logging.getLogger("cerm")

__all__ = ["AsyncCermRewardFunc", "CermRewardFunc"]


class _RewardFuncBase:
    def __init__(
        self,
        judge: RewardJudge,
        *,
        scale: Scale | tuple[float, float] | None = None,
        query_fn: QueryFn | None = None,
        response_fn: ResponseFn | None = None,
        name: str = "cerm",
        log: bool = True,
        tie_break: TieBreak | None = None,
    ) -> None:
        require_reward_judge(judge)
        if tie_break is not None and not isinstance(tie_break, TieBreak):
            raise TypeError(f"tie_break must be a cerm.TieBreak or None, got {type(tie_break).__name__}")
        self.tie_break = tie_break
        self.judge = judge
        self.scale = judge_scale(judge, scale)
        self.query_fn = query_fn or default_query
        self.response_fn = response_fn or default_response
        # TRL names the reward's logged metrics after ``__name__`` (rewards/<name>/mean, .../std).
        self.__name__ = name
        self.log = log
        #: The judgments of the last call, in completion order (None where the query could not be derived).
        self.last_judgments: list[Judgment | None] = []
        self._aggregation_checked = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.judge!r}, scale={self.scale}, name={self.__name__!r})"

    def _group(self, prompts: Sequence[Any], completions: Sequence[Any]) -> Grouping:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions; TRL passes one each")
        pairs = []
        for prompt, completion in zip(prompts, completions, strict=True):
            query, reason = derive_query(prompt, self.query_fn)
            pairs.append((query, self.response_fn(completion), reason))
        return Grouping.build(pairs)

    def _check_aggregation(self, kwargs: dict[str, Any]) -> None:
        """Warn once when TRL will sum this function's None (NaN) rewards as 0 beside other reward functions."""
        if self._aggregation_checked:
            return
        self._aggregation_checked = True
        trainer = getattr(kwargs.get("log_metric"), "__self__", None)  # TRL passes the trainer's bound method
        aggregation = getattr(trainer, "multi_objective_aggregation", None)
        funcs = getattr(trainer, "reward_funcs", None)
        if aggregation == "sum_then_normalize" and isinstance(funcs, Sequence) and len(funcs) > 1:
            logger.warning(
                "%s is one of %d reward functions under TRL's multi_objective_aggregation='sum_then_normalize', which "
                "adds an unscorable completion's None (NaN) as 0: the judge's failures then count against the policy. "
                "Set GRPOConfig(multi_objective_aggregation='normalize_then_sum') to keep them neutral.",
                self.__name__,
                len(funcs),
            )

    def _untie(
        self, decided: Sequence[tuple[list[Judgment], TieBreakReport]], kwargs: dict[str, Any]
    ) -> list[list[Judgment]]:
        """The judgments of a tie-broken batch (tied completions with their added chains), and the cost logged."""
        added = sum(report.added_chains for _, report in decided)
        completions = sum(len(judgments) for judgments, _ in decided)
        log_metric = kwargs.get("log_metric")
        if self.log and completions and callable(log_metric):
            log_metric(f"{self.__name__}/tie_break_chains_per_completion", added / completions)
        return [judgments for judgments, _ in decided]

    def _rewards(self, outcomes: list[Outcome], kwargs: dict[str, Any]) -> list[float | None]:
        self._check_aggregation(kwargs)
        self.last_judgments = [o if isinstance(o, Judgment) else None for o in outcomes]
        rewards = [scaled(outcome_score(o), self.scale) for o in outcomes]
        failed = [o for o in outcomes if isinstance(o, Judgment) and o.errored]
        unscorable = sum(r is None for r in rewards) - len(failed)
        if failed:
            reasons = dict.fromkeys(o.reason for o in failed)
            logger.warning(
                "%d of %d completions got no judgment (the judge's generation failed; reward None): %s",
                len(failed),
                len(rewards),
                "; ".join(map(str, reasons)),
            )
        if unscorable:
            reasons = dict.fromkeys(
                outcome_reason(o)
                for o in outcomes
                if outcome_score(o) is None and not (isinstance(o, Judgment) and o.errored)
            )
            logger.info("%d of %d completions unscorable: %s", unscorable, len(rewards), "; ".join(map(str, reasons)))
        if self.log and outcomes:
            log_metric = kwargs.get("log_metric")
            if callable(log_metric):
                log_metric(f"{self.__name__}/unscorable_fraction", unscorable / len(rewards))
                log_metric(f"{self.__name__}/error_fraction", len(failed) / len(rewards))
            log_extra = kwargs.get("log_extra")
            if callable(log_extra):
                log_extra(f"{self.__name__}_reason", [outcome_reason(o) or "" for o in outcomes])
        return rewards


class CermRewardFunc(_RewardFuncBase):
    """A synchronous TRL reward function backed by any cerm judge (a :class:`~cerm.RewardJudge`: the CE-RM
    :class:`~cerm.Judge` or the ESFP-RM :class:`~cerm.SlotJudge`).

    All completions of one call are judged with ONE :meth:`~cerm.Judge.judge_batch`: completions are grouped by their
    query, so the G completions of a prompt share one criteria set (1 + G generations per prompt, and every criteria
    turn of the batch in one backend call, every evaluation in one more).

    Args:
        judge: the judge.
        scale: ``(low, high)`` maps the 0-10 score linearly onto that range, e.g. ``(0, 1)``; None keeps 0-10.
        query_fn: prompt -> the judge's query. Default: the prompt text, or for chat prompts the content of the last
            user message (the system prompt and earlier turns are not shown to the judge).
        response_fn: completion -> the response text. Default: the text, or the last assistant message's content.
        name: the reward's name in TRL's logs (``rewards/<name>/mean``).
        log: report ``<name>/unscorable_fraction`` and ``<name>/error_fraction`` (failed generations, no judgment)
            through TRL's ``log_metric`` and each completion's reason through ``log_extra`` (column ``<name>_reason``)
            when TRL passes those hooks.
        tie_break: a :class:`~cerm.TieBreak` (off by default): completions of one prompt whose scores tie (within its
            margin) get more chains, in rounds, so that a GRPO group with identical rewards (zero advantage, no
            learning signal) gets a chance to separate; a tied completion's reward is then the mean over its chains.
            Completions not tied with another are judged once. Cost: per round, one criteria turn per prompt with a
            tie plus one evaluation per tied completion, at most ``max_chains - 1`` rounds: a fully tied group of G
            costs up to ``max_chains`` times the plain ``1 + G`` generations. Logged as
            ``<name>/tie_break_chains_per_completion``.

    Returns (per call): one float per completion, or None where the judgment is UNSCORABLE or ERROR (TRL leaves it out
    of the group baseline). ``last_judgments`` keeps the full judgments of the last call.
    """

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        grouping = self._group(prompts, completions)
        if self.tie_break is None or not grouping.items:
            results = self.judge.judge_batch(grouping.items) if grouping.items else []
        else:
            results = self._untie(self.judge.decide_batch(grouping.items, self.tie_break, scope="all"), kwargs)
        return self._rewards(grouping.scatter(results), kwargs)


class AsyncCermRewardFunc(_RewardFuncBase):
    """The ``async`` twin of :class:`CermRewardFunc` (same arguments and results): TRL awaits it on its own event loop,
    concurrently with any other async reward functions, and the judge's backend work runs off that loop."""

    async def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        grouping = self._group(prompts, completions)
        if self.tie_break is None or not grouping.items:
            results = await self.judge.ajudge_batch(grouping.items) if grouping.items else []
        else:
            decided = await self.judge.adecide_batch(grouping.items, self.tie_break, scope="all")
            results = self._untie(decided, kwargs)
        return self._rewards(grouping.scatter(results), kwargs)
