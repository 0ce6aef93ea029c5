"""veRL: a CE-RM judge as veRL's custom reward function.

Configure it with ``reward.custom_reward_function.path=<file>`` and ``reward.custom_reward_function.name=<function>``
(veRL 0.9; veRL 0.7/0.8 read the top-level ``custom_reward_function.path`` / ``.name``). veRL's reward managers call
the function with keyword arguments only:

* the current managers (``naive``, ``dapo``, ``gdpo``, ``rate_limited``, ``remote`` in veRL 0.9), once per response:
  ``compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=..., **reward_kwargs)``, from
  ``reward.num_workers`` CPU actors (8 by default), each running calls concurrently. When a reward model is enabled
  (``reward.reward_model.enable``), veRL also passes ``reward_router_address`` (``host:port`` of an OpenAI-compatible
  server for that model) and ``reward_model_tokenizer``; ``reward_kwargs`` come from
  ``reward.custom_reward_function.reward_kwargs``;
* the ``batch`` manager of older releases, once per batch:
  ``compute_score(data_sources=[...], solution_strs=[...], ground_truths=[...], extra_infos=[...])``.

:class:`VerlReward` answers both (its ``__call__`` dispatches on the keyword names). Since each response is scored
alone in veRL 0.9, the criteria of a prompt are shared through the judge's criteria cache: give the judge a SQLite
criteria cache file that every worker process opens (``criteria_cache`` / ``$CERM_CRITERIA_CACHE`` with
:meth:`VerlReward.configured`), so a prompt's criteria are generated once and read by every later response of it.
While a prompt's criteria are not cached yet, one call generates them and the others for that prompt wait for them: a
lock per prompt inside a worker process, and a POSIX record lock on a file beside the SQLite cache across processes.

veRL gives the function the decoded response only (special tokens skipped), not the prompt, so the judge's query comes
from ``extra_info`` (veRL's example preprocessors store the question there as ``extra_info["question"]``); see
``query_keys``.

veRL writes the returned value into its reward tensor, so it needs a number for EVERY response, including the ones the
judge could not score. cerm does not invent that number: ``unscorable_score`` is a required argument and the returned
dict says which responses got it (``scorable`` False, ``reason`` set); veRL logs the extra keys per response.

A response whose judgment ERRORED (the judge's generation failed: outage, exhausted retries, out of memory) has no
judgment at all, so by default the call raises :class:`JudgeUnavailableError` (veRL's reward step then fails loudly
rather than training on an invented reward). ``error_score`` is the explicit opt-in fallback: such responses get that
value with ``scorable`` False, ``errored`` True and the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cerm._cache import SQLiteCriteriaCache
from cerm._config import JudgeConfig
from cerm._judge import Judge
from cerm._reward_judge import RewardJudge
from cerm._types import Judgment
from cerm.integrations._common import (
    Grouping,
    Outcome,
    Scale,
    as_scale,
    default_query,
    judge_scale,
    outcome_reason,
    outcome_score,
    scaled,
)

logger = logging.getLogger("cerm")

__all__ = ["JudgeSettings", "JudgeUnavailableError", "VerlReward", "judge_settings"]


class JudgeUnavailableError(RuntimeError):
    """Some responses got no judgment because the judge's generation failed (``Status.ERROR``); the message names how
    many and the first reason. Pass ``error_score=`` to :class:`VerlReward` to give them a fallback reward instead."""


#: Where the query is looked for in ``extra_info``, in order (the first present key wins).
DEFAULT_QUERY_KEYS = ("question", "query", "prompt")


@dataclass(frozen=True)
class JudgeSettings:
    """Which judge :meth:`VerlReward.configured` builds: a model name, served at ``base_url`` (an OpenAI-compatible
    ``/v1`` endpoint) when given, else loaded in the worker; ``criteria_cache`` a SQLite file shared by the workers."""

    model: str
    base_url: str | None = None
    criteria_cache: str | None = None


def judge_settings(
    call_kwargs: Mapping[str, Any], environ: Mapping[str, str] | None = None, default_model: str = "demo"
) -> JudgeSettings:
    """The judge a veRL reward call asks for, from (first found wins, per setting):

    * the call's keyword arguments, i.e. veRL's ``reward.custom_reward_function.reward_kwargs``: ``judge_model``,
      ``judge_base_url``, ``criteria_cache``;
    * the environment: ``CERM_JUDGE`` (model), ``CERM_JUDGE_BASE_URL``, ``CERM_CRITERIA_CACHE``;
    * veRL's reward model, when it is enabled: ``reward_router_address`` (``host:port``) becomes
      ``http://host:port/v1`` and the model name is ``reward_model_tokenizer.name_or_path`` (the reward model's path,
      which is the name veRL's rollout server serves it under);
    * ``default_model``, loaded in the worker.
    """
    env = os.environ if environ is None else environ

    def pick(key: str, env_key: str) -> str | None:
        value = call_kwargs.get(key)
        if value is None or value == "":
            value = env.get(env_key) or None
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{key} must be a string, got {type(value).__name__}")
        return value

    model = pick("judge_model", "CERM_JUDGE")
    base_url = pick("judge_base_url", "CERM_JUDGE_BASE_URL")
    router = call_kwargs.get("reward_router_address")
    if base_url is None and router:
        base_url = str(router) if "://" in str(router) else f"http://{router}/v1"
        if model is None:
            tokenizer = call_kwargs.get("reward_model_tokenizer")
            model = getattr(tokenizer, "name_or_path", None) or None
            if model is None:
                raise ValueError(
                    "veRL passed reward_router_address but no reward_model_tokenizer to name the served model: set "
                    "judge_model in reward.custom_reward_function.reward_kwargs (or $CERM_JUDGE)"
                )
    return JudgeSettings(model or default_model, base_url, pick("criteria_cache", "CERM_CRITERIA_CACHE"))


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
        judge: RewardJudge | Callable[[], RewardJudge],
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
        if not isinstance(judge, RewardJudge) and not callable(judge):
            raise TypeError("judge must be a cerm judge (cerm.Judge, cerm.SlotJudge) or a zero-argument callable")
        self._judge = judge if isinstance(judge, RewardJudge) else None
        self._factory = None if isinstance(judge, RewardJudge) else judge
        self._lock = threading.Lock()
        self.unscorable_score = float(unscorable_score)
        if error_score is not None and (isinstance(error_score, bool) or not isinstance(error_score, int | float)):
            raise TypeError("error_score must be a number or None (None: raise when the judge's generation fails)")
        self.error_score = None if error_score is None else float(error_score)
        # Checked against the judge's score range when the judge is known (now, or when the factory builds it).
        self.scale = as_scale(scale) if self._judge is None else judge_scale(self._judge, scale)
        self.query_keys = tuple(query_keys)
        self.query_fn = query_fn
        self.return_dict = return_dict
        self.__name__ = name
        self._configured = False
        self._prompt_locks: dict[str, threading.Lock] = {}
        self._judges: dict[JudgeSettings, RewardJudge] = {}
        self._judge_config: JudgeConfig | None = None
        self._default_model = "demo"
        self._environ: Mapping[str, str] | None = None

    @classmethod
    def configured(
        cls,
        *,
        unscorable_score: float,
        config: JudgeConfig | None = None,
        default_model: str = "demo",
        environ: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> VerlReward:
        """A reward function whose judge is chosen by configuration alone, at the first call in each worker: veRL's
        ``reward_kwargs``, the environment, or veRL's own reward model router (see :func:`judge_settings`). One judge
        is built per distinct setting in a process and reused. ``kwargs`` are :class:`VerlReward`'s other arguments.
        """
        reward = cls(lambda: Judge(default_model, config=config), unscorable_score=unscorable_score, **kwargs)
        reward._judge_config = config
        reward._default_model = default_model
        reward._environ = environ
        reward._configured = True
        return reward

    def judge_for(self, call_kwargs: Mapping[str, Any]) -> RewardJudge:
        """The judge for a call with these keyword arguments (always :attr:`judge` unless built by
        :meth:`configured`)."""
        if not self._configured:
            return self.judge
        settings = judge_settings(call_kwargs, self._environ, self._default_model)
        with self._lock:
            judge = self._judges.get(settings)
            if judge is None:
                backend: dict[str, Any] = {} if settings.base_url is None else {"backend": "openai"}
                if settings.base_url is not None:
                    backend["base_url"] = settings.base_url
                logger.info("veRL reward: building the judge %s", settings)
                judge = Judge(settings.model, config=self._judge_config, cache=settings.criteria_cache, **backend)
                self._judges[settings] = judge
        return judge

    @property
    def judge(self) -> RewardJudge:
        if self._judge is None:
            with self._lock:
                if self._judge is None:
                    assert self._factory is not None
                    built = self._factory()
                    if not isinstance(built, RewardJudge):
                        raise TypeError(f"the judge factory returned {type(built).__name__}, not a cerm judge")
                    judge_scale(built, self.scale)
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
        **kwargs: Any,
    ) -> dict[str, Any] | float:
        """One response (veRL 0.9's managers). Its prompt's criteria come from the judge's criteria cache when an
        earlier response of that prompt wrote them there; otherwise this call generates them."""
        return self.compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **kwargs)[0]

    def compute_score_batch(
        self,
        data_sources: Sequence[Any] | None = None,
        solution_strs: Sequence[str] = (),
        ground_truths: Sequence[Any] | None = None,
        extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any] | float]:
        """A batch of responses (the ``batch`` manager of older veRL): one ``judge_batch`` for all, grouped by query."""
        grouping = self._group(data_sources, solution_strs, ground_truths, extra_infos)
        results = self._judge_once_per_prompt(self.judge_for(kwargs), grouping.items) if grouping.items else []
        return self._results(grouping.scatter(results))

    async def acompute_score(
        self,
        data_source: Any = None,
        solution_str: str = "",
        ground_truth: Any = None,
        extra_info: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any] | float:
        """Async form of :meth:`compute_score`: veRL's managers await a coroutine function on their event loop."""
        batch = await self.acompute_score_batch([data_source], [solution_str], [ground_truth], [extra_info], **kwargs)
        return batch[0]

    async def acompute_score_batch(
        self,
        data_sources: Sequence[Any] | None = None,
        solution_strs: Sequence[str] = (),
        ground_truths: Sequence[Any] | None = None,
        extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
        **kwargs: Any,
    ) -> list[dict[str, Any] | float]:
        grouping = self._group(data_sources, solution_strs, ground_truths, extra_infos)
        results = (
            await asyncio.to_thread(self._judge_once_per_prompt, self.judge_for(kwargs), grouping.items)
            if grouping.items
            else []
        )
        return self._results(grouping.scatter(results))

    # -- one criteria set per prompt, however many responses of it are scored at once ------------------------------
    def _judge_once_per_prompt(self, judge: RewardJudge, items: list[tuple[str, list[str]]]) -> list[list[Judgment]]:
        """``judge.judge_batch(items)``, except that while a query's criteria are not in the judge's criteria cache,
        only one call at a time (in this process, and across processes sharing a SQLite cache file) judges it: the
        first generates and stores the criteria; the others, scoring other responses of that prompt at the same
        moment, wait and then read them. Without a cache, or with several criteria samples, it is judge_batch as is.
        """
        missing = self._uncached(judge, items)
        if not missing:
            return judge.judge_batch(items)
        with contextlib.ExitStack() as held:
            for query in sorted(missing):  # one global order: no deadlock between calls holding several queries
                held.enter_context(self._prompt_lock(judge, query))
            if self._uncached(judge, items):  # still missing: this call writes them while the others wait
                return judge.judge_batch(items)
        return judge.judge_batch(items)  # another call wrote them while this one waited: judged without the lock

    @staticmethod
    def _uncached(judge: RewardJudge, items: list[tuple[str, list[str]]]) -> list[str]:
        return judge.uncached_queries([query for query, _ in items])

    @contextlib.contextmanager
    def _prompt_lock(self, judge: RewardJudge, query: str) -> Any:
        with self._lock:
            lock = self._prompt_locks.setdefault(query, threading.Lock())
        with lock, _file_lock(judge.cache, query):
            yield
        with self._lock:  # the criteria are cached now: later calls need no lock for this prompt
            self._prompt_locks.pop(query, None)

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


@contextlib.contextmanager
def _file_lock(cache: Any, query: str) -> Any:
    """Across processes sharing a SQLite criteria cache: an exclusive POSIX record lock on one byte (chosen by the
    query's hash) of a file beside the cache, held while this process generates the query's criteria. Threads of one
    process are kept apart by :meth:`VerlReward._prompt_lock`, since record locks belong to the whole process."""
    if not isinstance(cache, SQLiteCriteriaCache):
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: processes may then each generate a prompt's first criteria
        yield
        return
    slot = int.from_bytes(hashlib.sha256(query.encode("utf-8", "surrogatepass")).digest()[:4], "big") % (1 << 20)
    with open(f"{cache.path}.lock", "a+b") as handle:
        fcntl.lockf(handle.fileno(), fcntl.LOCK_EX, 1, slot)
        try:
            yield
        finally:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_UN, 1, slot)
