"""The Judge: the only place that knows CE-RM's two-stage order.

Stage 1 generates criteria once per distinct query (k samples under test-time scaling); stage 2 evaluates every
response of every query under those criteria in one large backend call. The orchestration is written once, as a
generator that yields backend requests, and driven either synchronously or asynchronously: no ``asyncio.run``
anywhere, so the async API works inside notebooks and servers that already run an event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import unicodedata
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from cerm._cache import CriteriaCache, CriteriaCacheKey, SQLiteCriteriaCache
from cerm._config import JudgeConfig
from cerm._errors import ConfigurationError
from cerm._reward_judge import OnInvalid, RewardJudge
from cerm._reward_judge import best_of_n as _best_of_n
from cerm._reward_judge import comparison as _comparison
from cerm._reward_judge import ranking as _ranking
from cerm._reward_judge import tied_best_of_n as _tied_best_of_n
from cerm._reward_judge import tied_comparison as _tied_comparison
from cerm._reward_judge import tied_ranking as _tied_ranking
from cerm._ties import SampleKind, TieBreak, TieScope, decide_plan
from cerm._types import (
    BestOfN,
    Chain,
    Comparison,
    Criteria,
    Evaluation,
    Judgment,
    Provenance,
    RankedResponse,
    ScoreReadout,
    Status,
    TieBreakReport,
    Usage,
    mean_and_spread,
)
from cerm.backends._base import Backend, Completion, SamplingParams
from cerm.backends._registry import create_backend
from cerm.protocol import (
    FORCED_READOUT_SUFFIX,
    PROMPT_VERSION,
    Conversation,
    closed_score,
    criteria_conversation,
    evaluation_conversation,
    forced_readout_conversation,
    parse_criteria,
    parse_evaluation,
    read_boxed_score,
    score_distribution,
)

logger = logging.getLogger("cerm")

T = TypeVar("T")

# Tokens kept free between the rendered prompt and the response budget: chat templates may merge a few tokens
# differently at the seam between the response and the text that follows it.
_SEAM_TOKENS = 8
_OVERLONG_REASON = "the response does not fit in the model context (overlong='unscorable')"
_EMPTY_REASON = "the response is empty (or only whitespace, control or invisible characters)"


@dataclass(frozen=True)
class _Request:
    conversations: list[Conversation]
    params: SamplingParams


_Plan = Generator[_Request, list[list[Completion]], T]


@dataclass(frozen=True)
class _Extension:
    """A tie-break round's work for one query: ``samples`` more chains for each target judgment."""

    query: str
    targets: Mapping[int, tuple[str, Judgment]]  # response index -> (response text, its judgment so far)
    samples: int
    kind: SampleKind
    first_sample: int  # the index of the first new sample among the query's samples (it seeds them)


@dataclass(frozen=True)
class _Extended:
    judgments: dict[int, Judgment]
    generations: int
    usage: Usage


Item = tuple[str, Sequence[str]]

# Characters that show nothing: besides whitespace, every control (Cc) and format (Cf) character (zero-width space
# and joiners, word joiner, byte-order mark, soft hyphen, bidirectional marks), plus the combining grapheme joiner,
# the Hangul fillers and the variation selectors, which render as nothing on their own.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf"})
_INVISIBLE_CHARS = frozenset("\u034f\u115f\u1160\u3164\uffa0")


def _invisible(char: str) -> bool:
    code = ord(char)
    return (
        char.isspace()
        or unicodedata.category(char) in _INVISIBLE_CATEGORIES
        or char in _INVISIBLE_CHARS
        or 0xFE00 <= code <= 0xFE0F
        or 0xE0100 <= code <= 0xE01EF
    )


def _is_blank(text: str) -> bool:
    """True when ``text`` has nothing a reader could see: empty, or only whitespace and invisible characters."""
    return all(_invisible(char) for char in text)


@dataclass(frozen=True)
class _CriteriaSample:
    criteria: Criteria
    completion: Completion
    failure: str | None  # generation failed: no criteria text to build on
    cached: bool = False  # read from the criteria cache: no generation ran


@dataclass
class _Pending:
    """A response's chains between stage 2 and assembly (the forced readout may still fill some in)."""

    chains: list[Chain]
    conversations: list[Conversation | None]  # the evaluation conversation behind each chain (None: none ran)
    warnings: list[str]
    completions: list[Completion]
    crit_usage: Usage
    crit_cached: bool
    chain_offset: int = 0  # chains of the judgment before these (a tie-break adds chains to an existing judgment)


@dataclass
class _EvalSlot:
    """One evaluation conversation to run: which response it belongs to and under which criteria sample."""

    conversation: Conversation
    warning: str | None


def _usage(completions: Sequence[Completion]) -> Usage:
    return Usage(sum(c.prompt_tokens for c in completions), sum(c.completion_tokens for c in completions))


def _unicode_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode (a lone surrogate, which is what ``json.loads`` makes of "\\ud800" and Python
    of undecodable command-line bytes), or None. Tokenizers refuse such strings with an unrelated TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"not valid Unicode text (lone surrogate {text[exc.start]!r} at position {exc.start})"
    return None


def _validate_query(query: object, where: str = "query") -> str:
    if not isinstance(query, str):
        raise TypeError(f"{where} must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError(f"{where} is empty")
    if _is_blank(query):
        raise ValueError(f"{where} is empty: only control or invisible characters")
    if problem := _unicode_problem(query):
        raise ValueError(f"{where} is {problem}")
    return query


def _validate_responses(responses: object, where: str = "responses") -> list[str]:
    if isinstance(responses, str) or not isinstance(responses, Sequence):
        raise TypeError(f"{where} must be a list of strings, got {type(responses).__name__}")
    if len(responses) == 0:
        raise ValueError(f"{where} is empty: give at least one response to judge")
    for i, response in enumerate(responses):
        if not isinstance(response, str):
            raise TypeError(f"{where}[{i}] must be a str, got {type(response).__name__}")
    return list(responses)


def validate_item(query: object, responses: object) -> tuple[str, list[str]]:
    """Check one ``(query, responses)`` item the way :meth:`Judge.judge_batch` does, without judging it.

    Raises ``TypeError`` or ``ValueError`` naming the problem; returns the item as ``(str, list[str])``. Surfaces that
    merge several callers' items into one batch (the reward server) check each item first, so one caller's bad input
    never fails another's.
    """
    return _validate_query(query), _validate_responses(responses)


def split_items(
    items: object, on_invalid: OnInvalid, invalid_row: Callable[[object, int, Exception], list[Judgment]]
) -> tuple[list[tuple[str, list[str]]], list[int], dict[int, list[Judgment]]]:
    """Check a batch of ``(query, responses)`` items the same way for every judge kind: ``(valid items, their input
    positions, {position: ERROR row})``. An invalid item raises (``on_invalid="raise"``) or gets
    ``invalid_row(item, response_count, problem)`` (``"error"``), so one caller's bad item never fails the others."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError("items must be a list of (query, responses) pairs")
    if on_invalid not in ("raise", "error"):
        raise ValueError(f"on_invalid must be 'raise' or 'error', got {on_invalid!r}")
    checked: list[tuple[str, list[str]]] = []
    positions: list[int] = []
    invalid: dict[int, list[Judgment]] = {}
    for n, item in enumerate(items):
        try:
            if not (isinstance(item, tuple | list) and len(item) == 2):
                raise TypeError(f"items[{n}] must be a (query, responses) pair")
            pair = (
                _validate_query(item[0], f"items[{n}] query"),
                _validate_responses(item[1], f"items[{n}] responses"),
            )
        except (TypeError, ValueError) as exc:
            if on_invalid == "raise":
                raise
            responses = item[1] if isinstance(item, tuple | list) and len(item) == 2 else None
            count = len(responses) if isinstance(responses, Sequence) and not isinstance(responses, str) else 0
            invalid[n] = invalid_row(item, max(count, 1), exc)
            continue
        checked.append(pair)
        positions.append(n)
    return checked, positions, invalid


class Judge(RewardJudge):
    """A CE-RM judge over any backend (one kind of :class:`~cerm.RewardJudge`).

    >>> judge = Judge("demo")                                   # doctest: +SKIP
    >>> judge.score("What is 2+2?", ["4", "5"])                 # doctest: +SKIP
    [9.0, 9.0]   # the demo judge writes the format, but it is a 135M model: its scores barely discriminate

    Args:
        model: a :class:`~cerm.backends.Backend` instance, or a model name/path for ``backend``. ``"demo"`` is the
            embedded tiny demo judge (``"demo-sft"``: before GRPO; ``"demo-base"``: untrained); use
            ``"PKU-ONELab/CE-RM-4B"`` for real judging.
        backend: registry name used when ``model`` is a string ("hf" by default).
        config: decoding, budgets, test-time scaling, score readouts; see :class:`JudgeConfig`.
        cache: a :class:`~cerm.CriteriaCache` for the criteria turn (e.g. :class:`~cerm.MemoryCriteriaCache`), or a
            file path for an :class:`~cerm.SQLiteCriteriaCache`. None (default): no caching. Re-runs then reuse
            the criteria of each (query, sample index) under the same model, prompt version and criteria sampling
            settings; see :mod:`cerm._cache` for when not to cache.
        **backend_kwargs: passed to the backend's constructor when ``model`` is a string.
    """

    def __init__(
        self,
        model: str | Backend = "demo",
        *,
        backend: str = "hf",
        config: JudgeConfig | None = None,
        cache: CriteriaCache | str | os.PathLike[str] | None = None,
        **backend_kwargs: Any,
    ) -> None:
        if cache is not None and not isinstance(cache, (CriteriaCache, str, os.PathLike)):
            raise TypeError(f"cache must be a CriteriaCache or a file path, got {type(cache).__name__}")
        if isinstance(model, Backend):
            if backend_kwargs:
                raise TypeError("backend keyword arguments only apply when the model is given by name")
            self._backend = model
            self._owns_backend = False
        else:
            self._backend = create_backend(backend, model, **backend_kwargs)
            self._owns_backend = True
        self.config = config or JudgeConfig()
        self._owns_cache = cache is not None and not isinstance(cache, CriteriaCache)
        self.cache: CriteriaCache | None = (
            cache if isinstance(cache, CriteriaCache) or cache is None else SQLiteCriteriaCache(cache)
        )
        # Read once: the backend's settings are fixed at its construction, and every judgment records them.
        self._backend_settings: dict[str, Any] = _json_ready(self._backend.describe())
        self._suffix_tokens: int | None = None  # tokens of the forced-readout prefix, counted on first use

    kind = "ce-rm"

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def model_id(self) -> str:
        return self._backend.model_id

    @property
    def backend_name(self) -> str:
        return self._backend.name

    def uncached_queries(self, queries: Sequence[str]) -> list[str]:
        """The queries whose criteria are not in the criteria cache yet (none without a cache, or when several
        criteria sets are drawn per query: those are not shared that way)."""
        if self.cache is None or self.config.criteria_sets != 1:
            return []
        params = dataclasses.replace(self.config.criteria_sampling(), n=1)
        return [q for q in dict.fromkeys(queries) if self.cache.get(self._cache_key(q, 0, params)) is None]

    def with_query_cache(self, size: int) -> Judge:
        """This judge when it has a criteria cache; else a Judge on the same backend and config with a
        :class:`~cerm.MemoryCriteriaCache` of ``size`` entries (the backend stays owned by this one)."""
        if self.cache is not None or size <= 0:
            return self
        from cerm._cache import MemoryCriteriaCache

        return Judge(self._backend, config=self.config, cache=MemoryCriteriaCache(size))

    def close(self) -> None:
        """Release the backend (and the criteria cache) if this Judge created it."""
        if self._owns_backend:
            self._backend.close()
        if self._owns_cache and self.cache is not None:
            self.cache.close()

    def __enter__(self) -> Judge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Judge(model={self._backend.model_id!r}, backend={self._backend.name!r}, k={self.config.k})"

    def describe(self) -> dict[str, Any]:
        """Everything that decides this Judge's results, JSON-ready and free of secrets: the backend's own
        description (model, dtype, quantization, adapter and its content hash, revision, engine settings, server URL
        without credentials), the prompt version and the :class:`JudgeConfig`. Record it next to stored results and
        refuse to mix results whose descriptions differ."""
        return {
            "backend": _json_ready(self._backend_settings),
            "prompt_version": PROMPT_VERSION,
            "config": _json_ready(dataclasses.asdict(self.config)),
        }

    # -- drivers -------------------------------------------------------------------------------------------------------
    def _run(self, plan: _Plan[T]) -> T:
        try:
            request = next(plan)
            while True:
                request = plan.send(self._backend.generate(request.conversations, request.params))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _arun(self, plan: _Plan[T]) -> T:
        # Each step of the plan (validation, prompt rendering, tokenization for the context budget, criteria cache
        # I/O, parsing and assembly) is blocking work: it runs in a worker thread, so the caller's event loop only
        # ever awaits. The generator is resumed by one thread at a time, never concurrently.
        done, value = await asyncio.to_thread(_advance, plan, None)
        while not done:
            request: _Request = value
            completions = await self._backend.agenerate(request.conversations, request.params)
            done, value = await asyncio.to_thread(_advance, plan, completions)
        return value  # type: ignore[no-any-return]

    # -- public API: stage by stage ------------------------------------------------------------------------------------
    def criteria(self, query: str) -> Criteria:
        """Stage 1 alone: one criteria set for ``query`` (one generation)."""
        return self._run(self._criteria_plan(query))

    async def acriteria(self, query: str) -> Criteria:
        return await self._arun(self._criteria_plan(query))

    def evaluate(self, query: str, criteria: Criteria | str, response: str) -> Evaluation:
        """Stage 2 alone: evaluate one response under given criteria (a :class:`Criteria` or its raw text)."""
        return self._run(self._evaluate_plan(query, criteria, response))

    async def aevaluate(self, query: str, criteria: Criteria | str, response: str) -> Evaluation:
        return await self._arun(self._evaluate_plan(query, criteria, response))

    # -- public API: judging -------------------------------------------------------------------------------------------
    def judge(self, query: str, responses: Sequence[str]) -> list[Judgment]:
        """Judge responses to one query with one shared criteria set: 1 + N generations (k x that when scaling)."""
        return self._run(self._judge_plan([(query, responses)]))[0]

    async def ajudge(self, query: str, responses: Sequence[str]) -> list[Judgment]:
        return (await self._arun(self._judge_plan([(query, responses)])))[0]

    def judge_batch(self, items: Sequence[Item], *, on_invalid: OnInvalid = "raise") -> list[list[Judgment]]:
        """Judge many ``(query, responses)`` items at once: every criteria turn in one backend call, then every
        evaluation in one more, so the backend sees large batches. Results keep the input order.

        ``on_invalid`` says what an invalid item (not a pair, an empty or non-text query, a responses value that is
        not a non-empty list of strings) does: ``"raise"`` (default) raises ``TypeError``/``ValueError`` for the
        whole batch before any generation; ``"error"`` judges the other items and gives the invalid one a row of
        ``Status.ERROR`` judgments whose reason starts with ``"invalid input:"``: one per response when the
        responses form a non-empty list, else a single judgment (``response_index`` 0). Use ``"error"`` when one
        caller's bad item must not sink another's (a server merging requests).
        """
        return self._run(self._judge_plan(items, on_invalid))

    async def ajudge_batch(self, items: Sequence[Item], *, on_invalid: OnInvalid = "raise") -> list[list[Judgment]]:
        return await self._arun(self._judge_plan(items, on_invalid))

    # score / ascore / score_batch / ascore_batch: RewardJudge's (the overall 0-10 scores, None where a response is
    # UNSCORABLE or ERROR).

    def compare(self, query: str, a: str, b: str, *, tie_break: TieBreak | None = None) -> Comparison:
        """Score two responses under one criteria set. ``winner`` is None unless both are scorable. With
        ``tie_break`` (a :class:`~cerm.TieBreak`), equal scores get more samples (see :meth:`best_of_n`)."""
        if tie_break is None:
            ja, jb = self.judge(query, [a, b])
            return _comparison(ja, jb)
        return _tied_comparison(*self._run(decide_plan(self, [(query, [a, b])], tie_break, "top"))[0])

    async def acompare(self, query: str, a: str, b: str, *, tie_break: TieBreak | None = None) -> Comparison:
        if tie_break is None:
            ja, jb = await self.ajudge(query, [a, b])
            return _comparison(ja, jb)
        return _tied_comparison(*(await self._arun(decide_plan(self, [(query, [a, b])], tie_break, "top")))[0])

    def rank(self, query: str, responses: Sequence[str], *, tie_break: TieBreak | None = None) -> list[RankedResponse]:
        """All responses, best first. Equal scores keep their input order; UNSCORABLE ones come last. With
        ``tie_break``, every group of equal scores (within its margin) gets more samples to order it; the
        :class:`~cerm.TieBreakReport` is on each ranked response's ``tie_break``."""
        if tie_break is None:
            return _ranking(responses, self.judge(query, responses))
        return _tied_ranking(responses, *self._run(decide_plan(self, [(query, responses)], tie_break, "all"))[0])

    async def arank(
        self, query: str, responses: Sequence[str], *, tie_break: TieBreak | None = None
    ) -> list[RankedResponse]:
        if tie_break is None:
            return _ranking(responses, await self.ajudge(query, responses))
        plan = decide_plan(self, [(query, responses)], tie_break, "all")
        return _tied_ranking(responses, *(await self._arun(plan))[0])

    def best_of_n(self, query: str, candidates: Sequence[str], *, tie_break: TieBreak | None = None) -> BestOfN:
        """The highest-scoring candidate. Tie rule: among equal top scores the earliest candidate wins (a stable,
        documented choice: with greedy decoding it makes reruns agree). An UNSCORABLE candidate never wins; if no
        candidate is scorable, ``best_index`` is None.

        ``tie_break`` (a :class:`~cerm.TieBreak`): candidates tied at the top (within its margin) are ordered by
        their expected scores where the backend returns log-probabilities, then get more sampled chains in rounds,
        up to its limits; no other candidate is judged again. ``BestOfN.tie_break`` records what each got and why.
        """
        if tie_break is None:
            return _best_of_n(candidates, self.judge(query, candidates))
        return _tied_best_of_n(candidates, *self._run(decide_plan(self, [(query, candidates)], tie_break, "top"))[0])

    async def abest_of_n(self, query: str, candidates: Sequence[str], *, tie_break: TieBreak | None = None) -> BestOfN:
        if tie_break is None:
            return _best_of_n(candidates, await self.ajudge(query, candidates))
        plan = decide_plan(self, [(query, candidates)], tie_break, "top")
        return _tied_best_of_n(candidates, *(await self._arun(plan))[0])

    def decide_batch(
        self, items: Sequence[Item], tie_break: TieBreak, *, scope: TieScope = "top"
    ) -> list[tuple[list[Judgment], TieBreakReport]]:
        """:meth:`judge_batch` with a tie-break per item: ``scope="top"`` breaks the ties at the top (who wins),
        ``"all"`` every tie (a full order; GRPO rewards). Every round of every item goes to the backend together.
        Returns each item's judgments (tied ones with their added chains) and its :class:`~cerm.TieBreakReport`."""
        return self._run(decide_plan(self, items, tie_break, scope))

    async def adecide_batch(
        self, items: Sequence[Item], tie_break: TieBreak, *, scope: TieScope = "top"
    ) -> list[tuple[list[Judgment], TieBreakReport]]:
        return await self._arun(decide_plan(self, items, tie_break, scope))

    # -- plans ------------------------------------------------------------------------------------------------------
    def _criteria_plan(self, query: str) -> _Plan[Criteria]:
        _validate_query(query)
        params = dataclasses.replace(self.config.criteria_sampling(), n=1)
        if self.cache is not None:
            hit = self.cache.get(self._cache_key(query, 0, params))
            if hit is not None:
                return self._criteria_sample(hit, cached=True).criteria
        completion = (yield _Request([criteria_conversation(query)], params))[0][0]
        self._cache_put(query, 0, params, completion)
        return self._criteria_sample(completion).criteria

    def _evaluate_plan(self, query: str, criteria: Criteria | str, response: str) -> _Plan[Evaluation]:
        _validate_query(query)
        _validate_responses([response], "response")
        if problem := _unicode_problem(response):
            raise ValueError(f"response is {problem}")
        if _is_blank(response):  # as in judge(): nothing to evaluate, so no generation and no number
            return Evaluation("", (), None, None, _EMPTY_REASON)
        parsed = criteria if isinstance(criteria, Criteria) else parse_criteria(criteria)
        slot = self._evaluation_slot(query, parsed.text, response, self._response_budget(query, parsed.text))
        if slot is None:
            return Evaluation("", (), None, None, _OVERLONG_REASON)
        params = dataclasses.replace(self.config.evaluation_sampling(), n=1)
        completion = (yield _Request([slot.conversation], params))[0][0]
        chain = self._chain(parsed, completion)
        # A failed or cut-off generation is reported in the Evaluation itself (problem set, overall None).
        evaluation = chain.evaluation or Evaluation(completion.text, (), None, None)
        extra = (slot.warning,) if slot.warning else ()
        return dataclasses.replace(
            evaluation,
            overall=chain.score,
            problem=chain.reason,
            warnings=evaluation.warnings + extra,
            failed=chain.failed,
        )

    def _judge_plan(
        self, items: Sequence[Item], on_invalid: OnInvalid = "raise", *, attach_readouts: bool = False
    ) -> _Plan[list[list[Judgment]]]:
        """``attach_readouts`` (for tie-breaks): ask for the score tokens' alternatives and attach the expected-score
        readout to parsed chains without changing their scores (where the backend returns log-probabilities)."""
        checked, valid_positions, invalid_rows = split_items(items, on_invalid, self._invalid_row)
        if not checked:
            return [invalid_rows[n] for n in range(len(items))]

        cfg = self.config
        self._check_readout_support()
        crit_params, eval_params = cfg.criteria_sampling(), cfg.evaluation_sampling()
        attach_readouts = attach_readouts and self._backend.supports_logprobs and cfg.score_readout == "parsed"
        if attach_readouts:
            top = max(eval_params.top_logprobs or 0, cfg.readout_top_logprobs)
            eval_params = dataclasses.replace(eval_params, top_logprobs=top)

        # Stage 1: one criteria request per distinct query, k samples each under test-time scaling. Queries whose
        # k samples are all in the criteria cache skip the request; on a partial hit (k grew) the cached samples are
        # kept and only the missing indices are filled from the fresh generation.
        queries = list(dict.fromkeys(q for q, _ in checked))
        samples: dict[str, list[_CriteriaSample]] = {}
        hits: dict[str, list[Completion | None]] = {}
        if self.cache is not None:
            for query in queries:
                hits[query] = [self.cache.get(self._cache_key(query, i, crit_params)) for i in range(crit_params.n)]
                found = hits[query]
                if all(c is not None for c in found):
                    samples[query] = [self._criteria_sample(c, cached=True) for c in found if c is not None]
        missing = [q for q in queries if q not in samples]
        crit_out = (yield _Request([criteria_conversation(q) for q in missing], crit_params)) if missing else []
        for query, completions in zip(missing, crit_out, strict=True):
            found = hits.get(query) or [None] * len(completions)
            row_samples = []
            for i, (fresh, old) in enumerate(zip(completions, found, strict=True)):
                if old is not None:
                    row_samples.append(self._criteria_sample(old, cached=True))
                else:
                    self._cache_put(query, i, crit_params, fresh)
                    row_samples.append(self._criteria_sample(fresh))
            samples[query] = row_samples

        # Stage 2: every (response, criteria sample) evaluation of every query in one request. Under greedy
        # decoding identical conversations give identical text, so duplicates (common in RL groups) run once.
        conversations: list[Conversation] = []
        index_of: dict[str, int] = {}
        slots: dict[tuple[int, int, int], tuple[int, str | None] | str] = {}
        # The prompt overhead behind the response budget depends on (query, criteria sample) only: count it once.
        budgets: dict[tuple[str, int], int | None] = {}
        for n, (query, responses) in enumerate(checked):
            for j, response in enumerate(responses):
                if _is_blank(response) or _unicode_problem(response):
                    continue
                for i, sample in enumerate(samples[query]):
                    if sample.failure is not None:
                        continue
                    if (query, i) not in budgets:
                        budgets[(query, i)] = self._response_budget(query, sample.criteria.text)
                    slot = self._evaluation_slot(query, sample.criteria.text, response, budgets[(query, i)])
                    if slot is None:
                        slots[(n, j, i)] = _OVERLONG_REASON
                        continue
                    key = repr(slot.conversation)
                    if not eval_params.greedy or key not in index_of:
                        index_of[key] = len(conversations)
                        conversations.append(slot.conversation)
                    slots[(n, j, i)] = (index_of[key], slot.warning)
        eval_out = (yield _Request(conversations, eval_params)) if conversations else []

        pending_rows: list[list[_Pending | Judgment]] = []
        for n, (query, responses) in enumerate(checked):
            crit_samples = samples[query]
            crit_usage = _usage([s.completion for s in crit_samples if not s.cached])
            crit_cached = all(s.cached for s in crit_samples)
            row: list[_Pending | Judgment] = []
            for j, response in enumerate(responses):
                if _is_blank(response):
                    row.append(self._unscorable(j, _EMPTY_REASON, crit_usage, crit_cached))
                    continue
                if problem := _unicode_problem(response):
                    row.append(self._unscorable(j, f"the response is {problem}", crit_usage, crit_cached))
                    continue
                chains: list[Chain] = []
                chain_conversations: list[Conversation | None] = []
                warnings: list[str] = []
                eval_completions: list[Completion] = []
                for i, sample in enumerate(crit_samples):
                    if sample.criteria.problem:
                        warnings.append(f"criteria {i + 1}: {sample.criteria.problem}")
                    if sample.completion.finish_reason == "length":
                        warnings.append(f"criteria {i + 1}: generation stopped at criteria_max_new_tokens")
                    if sample.failure is not None:
                        chains.append(Chain(sample.criteria, None, None, sample.failure, failed=True))
                        chain_conversations.append(None)
                        continue
                    slot_info = slots[(n, j, i)]
                    if isinstance(slot_info, str):
                        chains.append(Chain(sample.criteria, None, None, slot_info))
                        chain_conversations.append(None)
                        continue
                    position, warning = slot_info
                    if warning:
                        warnings.append(warning)
                    for completion in eval_out[position]:
                        eval_completions.append(completion)
                        chain = self._chain(sample.criteria, completion)
                        chains.append(self._read_expected(chain, completion, attach=attach_readouts))
                        chain_conversations.append(conversations[position])
                row.append(_Pending(chains, chain_conversations, warnings, eval_completions, crit_usage, crit_cached))
            pending_rows.append(row)

        # Optional stage 3: the forced readout of every chain the judge left without a score, in one request.
        yield from self._forced_plan(
            [p for pending_row in pending_rows for p in pending_row if isinstance(p, _Pending)]
        )

        results: list[list[Judgment]] = []
        for pending_row in pending_rows:
            row_out: list[Judgment] = []
            for j, pending in enumerate(pending_row):
                if isinstance(pending, Judgment):
                    row_out.append(pending)
                    continue
                # A forced-scored chain keeps its parse problem in the evaluation, not as the chain's reason.
                chains_done = [
                    dataclasses.replace(ch, reason=None) if ch.score is not None and ch.reason else ch
                    for ch in pending.chains
                ]
                row_out.append(
                    self._assemble(
                        j,
                        chains_done,
                        pending.warnings,
                        pending.crit_usage,
                        _usage(pending.completions),
                        pending.crit_cached,
                    )
                )
            results.append(row_out)
        if not invalid_rows:
            return results
        merged: list[list[Judgment]] = [invalid_rows.get(n, []) for n in range(len(items))]
        for n, row_done in zip(valid_positions, results, strict=True):
            merged[n] = row_done
        return merged

    def _tie_params(
        self, stage: Literal["criteria", "evaluation"], n: int, first_sample: int, kind: SampleKind
    ) -> SamplingParams:
        """Sampling of a tie-break round, seeded apart from the first judgment's samples and from every other round's
        (by the index of the round's first sample). What is sampled follows test-time scaling: under ``"chains"`` a
        new criteria set is sampled and evaluations are decoded as configured (greedy by default), as ``k`` chains
        are; under ``"evaluations"`` the evaluations are sampled."""
        cfg = self.config
        base = cfg.criteria_sampling() if stage == "criteria" else cfg.evaluation_sampling()
        sampled = stage == "criteria" or kind == "evaluations"
        temperature = cfg.temperature if (cfg.temperature > 0 or not sampled) else cfg.scaling_temperature
        salt = (2_000_029 if stage == "criteria" else 3_000_017) + 104_729 * first_sample
        seed = None if cfg.seed is None else cfg.seed + salt
        return dataclasses.replace(base, n=n, temperature=temperature, seed=seed)

    def _extend_plan(self, asks: Sequence[_Extension], readouts: bool) -> _Plan[list[_Extended]]:
        """Add chains to judgments (a tie-break round), every ask's criteria turns in one request per shape and every
        evaluation in one more: new criteria sets are drawn once per query and shared by all its targets; nothing
        drawn before is generated again. ``readouts``: attach expected-score readouts to parsed chains."""
        cfg = self.config
        readouts = readouts and self._backend.supports_logprobs and cfg.score_readout == "parsed"
        spent: list[list[Completion]] = [[] for _ in asks]

        # Stage 1 (kind "chains"): the new criteria sets of each query.
        new_sets: dict[int, list[_CriteriaSample]] = {}
        shapes: dict[tuple[int, int], list[int]] = {}
        for a, ask in enumerate(asks):
            if ask.kind == "chains":
                shapes.setdefault((ask.samples, ask.first_sample), []).append(a)
        for (n, first), positions in shapes.items():
            out = yield _Request(
                [criteria_conversation(asks[a].query) for a in positions],
                self._tie_params("criteria", n, first, "chains"),
            )
            for a, completions in zip(positions, out, strict=True):
                spent[a].extend(completions)
                new_sets[a] = [self._criteria_sample(c) for c in completions]

        # Stage 2: the evaluations, grouped by shape (samples per conversation, first sample index).
        pendings: dict[tuple[int, int], _Pending] = {}
        requests: dict[tuple[int, int, SampleKind], list[tuple[tuple[int, int], Criteria, _EvalSlot]]] = {}
        for a, ask in enumerate(asks):
            for j, (response, judgment) in ask.targets.items():
                offset = len(judgment.chains)
                pending = _Pending([], [], [], [], Usage(), False, chain_offset=offset)
                pendings[(a, j)] = pending
                if ask.kind == "chains":
                    under = [(offset + i, sample) for i, sample in enumerate(new_sets[a])]
                    n = 1
                else:
                    first_set = judgment.criteria
                    n = ask.samples
                    if first_set is None or first_set.failed:
                        pending.warnings.append("no criteria set to sample more evaluations under")
                        continue
                    under = [(0, _CriteriaSample(first_set, Completion("", "stop"), None))]
                for number, sample in under:
                    if sample.criteria.problem:
                        pending.warnings.append(f"criteria {number + 1}: {sample.criteria.problem}")
                    if sample.failure is not None:
                        pending.chains.append(Chain(sample.criteria, None, None, sample.failure, failed=True))
                        pending.conversations.append(None)
                        continue
                    budget = self._response_budget(ask.query, sample.criteria.text)
                    slot = self._evaluation_slot(ask.query, sample.criteria.text, response, budget)
                    if slot is None:
                        pending.chains.extend([Chain(sample.criteria, None, None, _OVERLONG_REASON)] * n)
                        pending.conversations.extend([None] * n)
                        continue
                    if slot.warning:
                        pending.warnings.append(slot.warning)
                    requests.setdefault((n, ask.first_sample, ask.kind), []).append(((a, j), sample.criteria, slot))
        for (n, first, kind), entries in requests.items():
            params = self._tie_params("evaluation", n, first, kind)
            if readouts:
                params = dataclasses.replace(
                    params, top_logprobs=max(params.top_logprobs or 0, cfg.readout_top_logprobs)
                )
            # Under greedy decoding identical conversations give identical text (duplicate completions in an RL
            # group): each distinct conversation runs once and its chains are shared.
            distinct: dict[str, int] = {}
            conversations: list[Conversation] = []
            slots_at: list[int] = []
            for _, _, slot in entries:
                text = repr(slot.conversation)
                if not params.greedy or text not in distinct:
                    distinct[text] = len(conversations)
                    conversations.append(slot.conversation)
                slots_at.append(distinct[text])
            out = yield _Request(conversations, params)
            for (key, criteria, slot), position in zip(entries, slots_at, strict=True):
                completions = out[position]
                pending = pendings[key]
                for completion in completions:
                    pending.completions.append(completion)
                    chain = self._chain(criteria, completion)
                    pending.chains.append(self._read_expected(chain, completion, attach=readouts))
                    pending.conversations.append(slot.conversation)
        yield from self._forced_plan(list(pendings.values()))

        results: list[_Extended] = []
        for a, ask in enumerate(asks):
            extended: dict[int, Judgment] = {}
            criteria_spent = _usage(spent[a])
            seen: dict[int, Completion] = {id(c): c for c in spent[a]}
            for j, (_, judgment) in ask.targets.items():
                pending = pendings[(a, j)]
                seen.update((id(c), c) for c in pending.completions)  # a shared completion was generated once
                chains_done = [
                    dataclasses.replace(ch, reason=None) if ch.score is not None and ch.reason else ch
                    for ch in pending.chains
                ]
                kept = [w for w in judgment.warnings if not w.endswith("mean over the rest")]
                prov = judgment.provenance
                extended[j] = self._assemble(
                    judgment.response_index,
                    [*judgment.chains, *chains_done],
                    kept + pending.warnings,
                    prov.criteria_usage + criteria_spent,
                    prov.evaluation_usage + _usage(pending.completions),
                    prov.criteria_cached and ask.kind == "evaluations",
                )
            results.append(_Extended(extended, len(seen), _usage(list(seen.values()))))
        return results

    def _forced_plan(self, pendings: Sequence[_Pending]) -> _Plan[None]:
        """With ``forced_readout``, continue every chain of ``pendings`` left without a score (one request)."""
        if not self.config.forced_readout:
            return
        targets: list[tuple[_Pending, int]] = []
        readout_conversations: list[Conversation] = []
        for pending in pendings:
            for c, (chain, conversation) in enumerate(zip(pending.chains, pending.conversations, strict=True)):
                if chain.score is None and chain.evaluation is not None and conversation is not None:
                    targets.append((pending, c))
                    readout_conversations.append(forced_readout_conversation(conversation, chain.evaluation.text))
        if not targets:
            return
        readout_out = yield _Request(readout_conversations, self._readout_params())
        for (pending, c), outputs in zip(targets, readout_out, strict=True):
            pending.completions.append(outputs[0])
            pending.chains[c] = self._read_forced(pending.chains[c], outputs[0])
            if pending.chains[c].score is not None:
                chain = pending.chains[c]
                pending.warnings.append(
                    f"chain {c + 1 + pending.chain_offset}: score read by forced readout ({chain.score_source}): "
                    f"the evaluation did not close the format ({chain.reason or 'no score'})"
                )

    # -- helpers -----------------------------------------------------------------------------------------------------
    @staticmethod
    def _criteria_sample(completion: Completion, *, cached: bool = False) -> _CriteriaSample:
        if completion.finish_reason == "error":
            reason = f"criteria generation failed: {completion.error}"
            return _CriteriaSample(Criteria(text="", items=(), problem=reason, failed=True), completion, reason)
        return _CriteriaSample(parse_criteria(completion.text), completion, None, cached)

    def _cache_key(self, query: str, sample_index: int, params: SamplingParams) -> CriteriaCacheKey:
        return CriteriaCacheKey.for_sample(
            model=self._backend.model_id,
            backend=self._backend.name,
            prompt_version=PROMPT_VERSION,
            params=params,
            query=query,
            sample_index=sample_index,
            backend_settings=self._backend_settings,
        )

    def _cache_put(self, query: str, sample_index: int, params: SamplingParams, completion: Completion) -> None:
        # Only successful generations: a failure must be retried on the next run, never replayed.
        if self.cache is not None and completion.finish_reason != "error":
            self.cache.put(self._cache_key(query, sample_index, params), completion)

    # -- score readouts ------------------------------------------------------------------------------------------------
    def _check_readout_support(self) -> None:
        cfg, backend = self.config, self._backend
        if cfg.score_readout == "expected" and not backend.supports_logprobs:
            raise ConfigurationError(
                f"score_readout='expected' needs token log-probabilities, which the {backend.name!r} backend does "
                "not return; use score_readout='parsed'"
            )
        if cfg.forced_readout and not backend.supports_prefill:
            raise ConfigurationError(
                f"forced_readout=True needs a backend that continues a partial assistant message (prefill); the "
                f"{backend.name!r} backend does not"
            )

    def _readout_params(self) -> SamplingParams:
        params = self.config.readout_sampling()
        if not self._backend.supports_logprobs:
            params = dataclasses.replace(params, top_logprobs=None)
        return params

    def _read_expected(self, chain: Chain, completion: Completion, *, attach: bool = False) -> Chain:
        """Parsed chains get their source recorded; in expected mode, the expectation replaces the parsed value when
        the log-probabilities support it. ``attach`` (parsed mode): keep the parsed score, attach the readout."""
        if chain.score is None:
            return chain
        parsed = dataclasses.replace(chain, score_source="parsed")
        if self.config.score_readout != "expected":
            if attach and completion.logprobs is not None:
                attached = read_boxed_score(
                    completion.logprobs, method="expected", min_mass=self.config.readout_min_mass
                )
                if attached is not None and attached.greedy == chain.score:
                    return dataclasses.replace(parsed, readout=attached)
            return parsed
        readout: ScoreReadout | None = None
        if completion.logprobs is None:
            note = "the backend returned no log-probabilities"
        else:
            readout = read_boxed_score(completion.logprobs, method="expected", min_mass=self.config.readout_min_mass)
            if readout is None:
                note = "no \\boxed{ found in the generated tokens"
            elif readout.greedy != chain.score:
                note = f"the tokens at the last box read {readout.greedy}, not the parsed {chain.score:g}"
            elif not readout.trusted:
                note = readout.problem or "the readout is not trusted"
            else:
                return dataclasses.replace(chain, score=readout.expected, score_source="expected", readout=readout)
        return self._with_warning(
            dataclasses.replace(parsed, readout=readout), f"expected score unavailable, parsed score kept: {note}"
        )

    def _read_forced(self, chain: Chain, completion: Completion) -> Chain:
        """A chain without a score, continued after the overall-score prefix: the score is read from what follows."""
        reason = chain.reason or "no score"
        if completion.finish_reason == "error":
            return dataclasses.replace(
                chain, reason=f"{reason}; forced readout failed: {completion.error}", failed=True
            )
        min_mass = self.config.readout_min_mass
        readout = (
            score_distribution(completion.logprobs, method="forced", min_mass=min_mass)
            if completion.logprobs is not None
            else None
        )
        if self.config.score_readout == "expected":
            if readout is None:
                return dataclasses.replace(chain, reason=f"{reason}; forced readout: no log-probabilities returned")
            if readout.expected is None:
                problem = f"{reason}; forced readout: {readout.problem}"
                return dataclasses.replace(chain, reason=problem, readout=readout)
            return dataclasses.replace(chain, score=readout.expected, score_source="forced_expected", readout=readout)
        value = closed_score(completion.text)
        if value is None:
            written = completion.text.strip()[:40]
            problem = f"{reason}; forced readout: the continuation {written!r} is not a 0-10 score"
            return dataclasses.replace(chain, reason=problem, readout=readout)
        return dataclasses.replace(chain, score=value, score_source="forced_parsed", readout=readout)

    @staticmethod
    def _with_warning(chain: Chain, warning: str) -> Chain:
        if chain.evaluation is None:
            return chain
        evaluation = dataclasses.replace(chain.evaluation, warnings=(*chain.evaluation.warnings, warning))
        return dataclasses.replace(chain, evaluation=evaluation)

    def _chain(self, criteria: Criteria, completion: Completion) -> Chain:
        if completion.finish_reason == "error":
            return Chain(criteria, None, None, f"evaluation generation failed: {completion.error}", failed=True)
        evaluation = parse_evaluation(completion.text, criteria)
        if completion.finish_reason == "length":
            # A cut-off evaluation's last box may be a per-criterion score, not the overall one: refuse to guess.
            limit = self.config.evaluation_max_new_tokens
            return Chain(
                criteria,
                evaluation,
                None,
                f"the evaluation stopped at evaluation_max_new_tokens={limit} before its overall score",
            )
        if evaluation.overall is None:
            return Chain(criteria, evaluation, None, evaluation.problem)
        return Chain(criteria, evaluation, evaluation.overall, None)

    def _evaluation_slot(self, query: str, criteria_text: str, response: str, budget: int | None) -> _EvalSlot | None:
        """The evaluation conversation, with the response truncated to ``budget`` tokens (from
        :meth:`_response_budget`) when it must be.

        Returns None when the response does not fit and the policy is ``overlong="unscorable"``.
        """
        if budget is None:
            return _EvalSlot(evaluation_conversation(query, criteria_text, response), None)
        size = self._backend.count_tokens(response)
        if size is None or size <= budget:
            return _EvalSlot(evaluation_conversation(query, criteria_text, response), None)
        if self.config.overlong == "unscorable" or budget <= 0:
            return None
        cut = self._truncate(response, budget)
        warning = f"response truncated from {size} to {budget} tokens to fit the model context"
        logger.warning(warning)
        return _EvalSlot(evaluation_conversation(query, criteria_text, cut), warning)

    def _response_budget(self, query: str, criteria_text: str) -> int | None:
        """The most response tokens that leave room, within the context, for the evaluation prompt around them, the
        evaluation's own tokens and, with ``forced_readout``, the readout prefix and the score after it (the forced
        readout continues the evaluation in the same context). None: no limit known."""
        budget = self.config.max_response_tokens
        context = self._backend.context_length
        if context is not None:
            overhead = self._backend.count_conversation_tokens(evaluation_conversation(query, criteria_text, ""))
            if overhead is not None:
                generated = self.config.evaluation_max_new_tokens
                if self.config.forced_readout:
                    generated += self._forced_suffix_tokens() + self.config.readout_sampling().max_new_tokens
                room = context - generated - overhead - _SEAM_TOKENS
                budget = room if budget is None else min(budget, room)
        return budget

    def _forced_suffix_tokens(self) -> int:
        if self._suffix_tokens is None:
            counted = self._backend.count_tokens(FORCED_READOUT_SUFFIX)
            # Unknown to the backend: a generous estimate (about one token per three characters).
            self._suffix_tokens = counted if counted is not None else len(FORCED_READOUT_SUFFIX) // 3 + 1
        return self._suffix_tokens

    def _truncate(self, text: str, budget: int) -> str:
        """The longest prefix of ``text`` within ``budget`` tokens (binary search over characters)."""
        low, high = 0, len(text)
        while low < high:
            mid = (low + high + 1) // 2
            size = self._backend.count_tokens(text[:mid])
            if size is not None and size <= budget:
                low = mid
            else:
                high = mid - 1
        return text[:low]

    def _provenance(self, crit_usage: Usage, eval_usage: Usage, crit_cached: bool = False) -> Provenance:
        cfg = self.config
        return Provenance(
            model=self._backend.model_id,
            backend=self._backend.name,
            prompt_version=PROMPT_VERSION,
            criteria_sampling=cfg.criteria_sampling().to_dict(),
            evaluation_sampling=cfg.evaluation_sampling().to_dict(),
            seed=cfg.seed,
            k=cfg.k,
            criteria_samples=cfg.criteria_sets,
            evaluation_samples=cfg.evaluations_per_set,
            criteria_usage=crit_usage,
            evaluation_usage=eval_usage,
            criteria_cached=crit_cached,
            score_readout=cfg.score_readout,
            forced_readout=cfg.forced_readout,
            backend_settings=self._backend_settings,
        )

    def _invalid_row(self, item: object, count: int, problem: Exception) -> list[Judgment]:
        """ERROR judgments for an item that failed validation (``on_invalid="error"``): ``count`` of them (one per
        response when the responses form a non-empty list, else one)."""
        provenance = self._provenance(Usage(), Usage())
        reason = f"invalid input: {problem}"
        return [Judgment(j, Status.ERROR, None, reason, (), provenance) for j in range(count)]

    def _unscorable(self, index: int, reason: str, crit_usage: Usage, crit_cached: bool = False) -> Judgment:
        provenance = self._provenance(crit_usage, Usage(), crit_cached)
        return Judgment(index, Status.UNSCORABLE, None, reason, (), provenance)

    def _assemble(
        self,
        index: int,
        chains: list[Chain],
        warnings: list[str],
        crit_usage: Usage,
        eval_usage: Usage,
        crit_cached: bool = False,
    ) -> Judgment:
        for chain in chains:
            if chain.evaluation is not None:
                warnings.extend(chain.evaluation.warnings)
        scores = [c.score for c in chains if c.score is not None]
        provenance = self._provenance(crit_usage, eval_usage, crit_cached)
        unique_warnings = tuple(dict.fromkeys(warnings))
        if not scores:
            reasons = list(dict.fromkeys(c.reason for c in chains if c.reason))
            reason = "; ".join(reasons) or "no chain produced a score"
            # A failed generation means no verdict was reached: ERROR (retry it), not the judge's UNSCORABLE.
            status = Status.ERROR if any(c.failed for c in chains) else Status.UNSCORABLE
            if len(chains) > 1:
                either = "failed or unscorable" if status is Status.ERROR else "unscorable"
                reason = f"all {len(chains)} chains {either}: {reason}"
            return Judgment(index, status, None, reason, tuple(chains), provenance, unique_warnings)
        mean, spread = mean_and_spread(scores)
        if len(scores) < len(chains):
            failed = sum(1 for c in chains if c.failed and c.score is None)
            unscorable = len(chains) - len(scores) - failed
            counts = ((failed, "failed (generation error)"), (unscorable, "unscorable"))
            parts = [f"{count} of {len(chains)} chains {what}" for count, what in counts if count]
            unique_warnings += (f"{'; '.join(parts)}; mean over the rest",)
        return Judgment(index, Status.SCORED, mean, None, tuple(chains), provenance, unique_warnings, spread)


def _advance(plan: _Plan[T], sent: list[list[Completion]] | None) -> tuple[bool, Any]:
    """Resume ``plan`` with ``sent``: ``(False, next request)`` or ``(True, result)``. StopIteration cannot cross a
    thread boundary (a Future refuses it), so the end of the plan is returned as a value."""
    try:
        return False, plan.send(sent)  # type: ignore[arg-type]
    except StopIteration as done:
        return True, done.value


def _json_ready(value: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-ready copy (tuples become lists; anything JSON cannot hold is recorded as its ``str``)."""
    data: dict[str, Any] = json.loads(json.dumps(dict(value), default=str))
    return data
