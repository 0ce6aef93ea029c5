"""veRL: a CE-RM judge as veRL's custom reward function (``custom_reward_function.path`` / ``.name``).

veRL's reward managers call the custom function with keyword arguments only:

* the ``naive`` manager, once per response:
  ``compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=...)``;
* the ``batch`` manager, once per batch:
  ``compute_score(data_sources=[...], solution_strs=[...], ground_truths=[...], extra_infos=[...])``.

:class:`VerlReward` answers both (its ``__call__`` dispatches on the keyword names). Use the ``batch`` manager: the
responses of one prompt are then judged under one shared criteria set in one backend call, where the ``naive`` manager
pays a criteria turn per response.

veRL gives the function the decoded response only, not the prompt, so the judge's query comes from ``extra_info``
(veRL's example preprocessors store the question there as ``extra_info["question"]``); see ``query_keys``.

veRL writes the returned value into its reward tensor, so it needs a number for EVERY response, including the ones the
judge could not score. cerm does not invent that number: ``unscorable_score`` is a required argument and the returned
dict says which responses got it (``scorable`` False, ``reason`` set); veRL logs the extra keys per response.

A response whose judgment ERRORED (the judge's generation failed: outage, exhausted retries, out of memory) has no
judgment at all, so by default the call raises :class:`JudgeUnavailableError` (veRL's reward step then fails loudly
rather than training on an invented reward). ``error_score`` is the explicit opt-in fallback: such responses get that
value with ``scorable`` False, ``errored`` True and the reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cerm._judge import Judge
from cerm._types import Judgment
from cerm.integrations._common import (
    Grouping,
    Outcome,
    Scale,
    as_scale,
    default_query,
    outcome_reason,
    outcome_score,
    scaled,
)

logger = logging.getLogger("cerm")

__all__ = ["JudgeUnavailableError", "VerlReward"]


class JudgeUnavailableError(RuntimeError):
    """Some responses got no judgment because the judge's generation failed (``Status.ERROR``); the message names how
    many and the first reason. Pass ``error_score=`` to :class:`VerlReward` to give them a fallback reward instead."""


#: Where the query is looked for in ``extra_info``, in order (the first present key wins).
DEFAULT_QUERY_KEYS = ("question", "query", "prompt")


class VerlReward:
    """A veRL custom reward function backed by a CE-RM judge.

    Args:
        judge: a :class:`~cerm.Judge`, or a zero-argument callable that builds one. A callable is called once, at the
            first reward call, so the file veRL imports stays cheap and the model loads inside the reward worker.
        unscorable_score: the reward an UNSCORABLE response gets (required, explicit: veRL needs a float for every
            response). In the reward's own units: after ``scale`` when one is given. Choose it knowingly: the worst
            score (e.g. 0.0) punishes format failures of the judge as if they were the policy's fault; a neutral value
            (e.g. the middle of the range) adds noise instead. Either way the dict result flags those responses.
        scale: ``(low, high)`` maps the 0-10 score onto that range, e.g. ``(0, 1)``; None keeps 0-10.
        query_keys: keys tried in ``extra_info`` for the judge's query; a chat message list there is reduced to its
            last user message.
        query_fn: ``(data_source, ground_truth, extra_info) -> query`` to take the query from elsewhere (overrides
            ``query_keys``).
        return_dict: return ``{"score", "scorable", "errored", "reason"}`` (veRL uses ``score`` as the reward and logs
            the rest) rather than a bare float.
        error_score: the reward of a response whose judgment ERRORED (no judgment: the judge's generation failed).
            None (default): such a call raises :class:`JudgeUnavailableError`. A number is an explicit fallback, in
            the reward's units; those responses are flagged ``scorable`` False, ``errored`` True, with the reason.

    A response whose query cannot be found is a configuration problem (the dataset lacks the field): that raises
    ``ValueError`` naming the keys tried, rather than training on a fallback reward.
    """

    def __init__(
        self,
        judge: Judge | Callable[[], Judge],
        *,
        unscorable_score: float,
        scale: Scale | tuple[float, float] | None = None,
        query_keys: Sequence[str] = DEFAULT_QUERY_KEYS,
        query_fn: Callable[[Any, Any, Any], str] | None = None,
        return_dict: bool = True,
        name: str = "cerm",
        error_score: float | None = None,
    ) -> None:
        if isinstance(unscorable_score, bool) or not isinstance(unscorable_score, int | float):
            raise TypeError("unscorable_score must be a number: the reward veRL gets for an UNSCORABLE response")
        if not isinstance(judge, Judge) and not callable(judge):
            raise TypeError("judge must be a cerm.Judge or a zero-argument callable returning one")
        self._judge = judge if isinstance(judge, Judge) else None
        self._factory = None if isinstance(judge, Judge) else judge
        self._lock = threading.Lock()
        self.unscorable_score = float(unscorable_score)
        if error_score is not None and (isinstance(error_score, bool) or not isinstance(error_score, int | float)):
            raise TypeError("error_score must be a number or None (None: raise when the judge's generation fails)")
        self.error_score = None if error_score is None else float(error_score)
        self.scale = as_scale(scale)
        self.query_keys = tuple(query_keys)
        self.query_fn = query_fn
        self.return_dict = return_dict
        self.__name__ = name

    @property
    def judge(self) -> Judge:
        if self._judge is None:
            with self._lock:
                if self._judge is None:
                    assert self._factory is not None
                    built = self._factory()
                    if not isinstance(built, Judge):
                        raise TypeError(f"the judge factory returned {type(built).__name__}, not a cerm.Judge")
                    self._judge = built
        return self._judge

    # -- veRL's two calling conventions ----------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise TypeError("veRL passes keyword arguments; call compute_score(...) or compute_score_batch(...)")
        if "solution_strs" in kwargs:
            return self.compute_score_batch(**kwargs)
        return self.compute_score(**kwargs)

    def compute_score(
        self,
        data_source: Any = None,
        solution_str: str = "",
        ground_truth: Any = None,
        extra_info: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> dict[str, Any] | float:
        """One response (veRL's ``naive`` manager). Costs a criteria turn of its own: prefer the batch form."""
        return self.compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info])[0]

    def compute_score_batch(
        self,
        data_sources: Sequence[Any] | None = None,
        solution_strs: Sequence[str] = (),
        ground_truths: Sequence[Any] | None = None,
        extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
        **_: Any,
    ) -> list[dict[str, Any] | float]:
        """A batch of responses (veRL's ``batch`` manager): one ``judge_batch`` for all of them, grouped by query."""
        grouping = self._group(data_sources, solution_strs, ground_truths, extra_infos)
        results = self.judge.judge_batch(grouping.items) if grouping.items else []
        return self._results(grouping.scatter(results))

    async def acompute_score(
        self,
        data_source: Any = None,
        solution_str: str = "",
        ground_truth: Any = None,
        extra_info: Mapping[str, Any] | None = None,
        **_: Any,
    ) -> dict[str, Any] | float:
        """Async form of :meth:`compute_score`, for veRL's asynchronous reward loop."""
        return (await self.acompute_score_batch([data_source], [solution_str], [ground_truth], [extra_info]))[0]

    async def acompute_score_batch(
        self,
        data_sources: Sequence[Any] | None = None,
        solution_strs: Sequence[str] = (),
        ground_truths: Sequence[Any] | None = None,
        extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
        **_: Any,
    ) -> list[dict[str, Any] | float]:
        grouping = self._group(data_sources, solution_strs, ground_truths, extra_infos)
        results = await self.judge.ajudge_batch(grouping.items) if grouping.items else []
        return self._results(grouping.scatter(results))

    # -- helpers --------------------------------------------------------------------------------------------------
    def _group(
        self,
        data_sources: Sequence[Any] | None,
        solution_strs: Sequence[str],
        ground_truths: Sequence[Any] | None,
        extra_infos: Sequence[Mapping[str, Any] | None] | None,
    ) -> Grouping:
        n = len(solution_strs)
        data_sources = list(data_sources) if data_sources is not None else [None] * n
        ground_truths = list(ground_truths) if ground_truths is not None else [None] * n
        extra_infos = list(extra_infos) if extra_infos is not None else [None] * n
        if not len(data_sources) == len(ground_truths) == len(extra_infos) == n:
            raise ValueError("data_sources, solution_strs, ground_truths and extra_infos must have the same length")
        pairs = []
        for i in range(n):
            response = solution_strs[i]
            if not isinstance(response, str):
                raise TypeError(f"solution_str must be a string, got {type(response).__name__}")
            pairs.append((self._query(data_sources[i], ground_truths[i], extra_infos[i]), response, None))
        return Grouping.build(pairs)

    def _query(self, data_source: Any, ground_truth: Any, extra_info: Mapping[str, Any] | None) -> str:
        if self.query_fn is not None:
            query = self.query_fn(data_source, ground_truth, extra_info)
        else:
            info = extra_info if isinstance(extra_info, Mapping) else {}
            found = next((info[k] for k in self.query_keys if info.get(k) is not None), None)
            if found is None:
                raise ValueError(
                    f"no query for the judge: extra_info has none of the keys {list(self.query_keys)} "
                    f"(keys present: {sorted(info)}); store the question in extra_info or pass query_fn="
                )
            query = default_query(found) if not isinstance(found, str) else found
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"the judge's query must be a non-empty string, got {query!r}")
        return query

    def _results(self, outcomes: list[Outcome]) -> list[dict[str, Any] | float]:
        failed = [o for o in outcomes if isinstance(o, Judgment) and o.errored]
        if failed:
            message = (
                f"{len(failed)} of {len(outcomes)} responses got no judgment because the judge's generation failed "
                f"(first: {failed[0].reason})"
            )
            if self.error_score is None:
                raise JudgeUnavailableError(f"{message}; pass error_score= to VerlReward to use a fallback reward")
            logger.warning("%s; they get error_score=%s", message, self.error_score)
        return [self._result(o) for o in outcomes]

    def _result(self, outcome: Outcome) -> dict[str, Any] | float:
        score = scaled(outcome_score(outcome), self.scale)
        errored = isinstance(outcome, Judgment) and outcome.errored
        if score is not None:
            reward = score
        elif errored:
            assert self.error_score is not None  # _results raised otherwise
            reward = self.error_score
        else:
            reward = self.unscorable_score
        if not self.return_dict:
            return reward
        # Every dict has the same keys and types (veRL stacks them per key); ``reason`` is "" when scored.
        return {
            "score": reward,
            "scorable": score is not None,
            "errored": errored,
            "reason": outcome_reason(outcome) or "",
        }
