"""The Judge: the only place that knows CE-RM's two-stage order.

Stage 1 generates criteria once per distinct query (k samples under test-time scaling); stage 2 evaluates every
response of every query under those criteria in one large backend call. The orchestration is written once, as a
generator that yields backend requests, and driven either synchronously or asynchronously: no ``asyncio.run``
anywhere, so the async API works inside notebooks and servers that already run an event loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cerm._cache import CriteriaCache, CriteriaCacheKey, SQLiteCriteriaCache
from cerm._config import JudgeConfig
from cerm._errors import ConfigurationError
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
    Usage,
    mean_and_spread,
)
from cerm.backends._base import Backend, Completion, SamplingParams
from cerm.backends._registry import create_backend
from cerm.protocol import (
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
_EMPTY_REASON = "the response is empty (or only whitespace)"


@dataclass(frozen=True)
class _Request:
    conversations: list[Conversation]
    params: SamplingParams


_Plan = Generator[_Request, list[list[Completion]], T]

Item = tuple[str, Sequence[str]]


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


class Judge:
    """A CE-RM judge over any backend.

    >>> judge = Judge("demo")                                   # doctest: +SKIP
    >>> judge.score("What is 2+2?", ["4", "5"])                 # doctest: +SKIP
    [None, None]   # the tiny demo model rarely writes a boxed score: UNSCORABLE, never a made-up number

    Args:
        model: a :class:`~cerm.backends.Backend` instance, or a model name/path for ``backend``. ``"demo"`` is the
            embedded tiny demo judge; use ``"PKU-ONELab/CE-RM-4B"`` for real judging.
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

    @property
    def backend(self) -> Backend:
        return self._backend

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

    # -- drivers -------------------------------------------------------------------------------------------------------
    def _run(self, plan: _Plan[T]) -> T:
        try:
            request = next(plan)
            while True:
                request = plan.send(self._backend.generate(request.conversations, request.params))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _arun(self, plan: _Plan[T]) -> T:
        try:
            request = next(plan)
            while True:
                request = plan.send(await self._backend.agenerate(request.conversations, request.params))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

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

    def judge_batch(self, items: Sequence[Item]) -> list[list[Judgment]]:
        """Judge many ``(query, responses)`` items at once: every criteria turn in one backend call, then every
        evaluation in one more, so the backend sees large batches. Results keep the input order."""
        return self._run(self._judge_plan(items))

    async def ajudge_batch(self, items: Sequence[Item]) -> list[list[Judgment]]:
        return await self._arun(self._judge_plan(items))

    def score(self, query: str, responses: Sequence[str]) -> list[float | None]:
        """Overall 0-10 scores, None where a response is UNSCORABLE (see :meth:`judge` for the reasons)."""
        return [j.score for j in self.judge(query, responses)]

    async def ascore(self, query: str, responses: Sequence[str]) -> list[float | None]:
        return [j.score for j in await self.ajudge(query, responses)]

    def score_batch(self, items: Sequence[Item]) -> list[list[float | None]]:
        return [[j.score for j in row] for row in self.judge_batch(items)]

    async def ascore_batch(self, items: Sequence[Item]) -> list[list[float | None]]:
        return [[j.score for j in row] for row in await self.ajudge_batch(items)]

    def compare(self, query: str, a: str, b: str) -> Comparison:
        """Score two responses under one criteria set. ``winner`` is None unless both are scorable."""
        ja, jb = self.judge(query, [a, b])
        return _comparison(ja, jb)

    async def acompare(self, query: str, a: str, b: str) -> Comparison:
        ja, jb = await self.ajudge(query, [a, b])
        return _comparison(ja, jb)

    def rank(self, query: str, responses: Sequence[str]) -> list[RankedResponse]:
        """All responses, best first. Equal scores keep their input order; UNSCORABLE ones come last."""
        return _ranking(responses, self.judge(query, responses))

    async def arank(self, query: str, responses: Sequence[str]) -> list[RankedResponse]:
        return _ranking(responses, await self.ajudge(query, responses))

    def best_of_n(self, query: str, candidates: Sequence[str]) -> BestOfN:
        """The highest-scoring candidate. Tie rule: among equal top scores the earliest candidate wins (a stable,
        documented choice: with greedy decoding it makes reruns agree). An UNSCORABLE candidate never wins; if no
        candidate is scorable, ``best_index`` is None."""
        return _best_of_n(candidates, self.judge(query, candidates))

    async def abest_of_n(self, query: str, candidates: Sequence[str]) -> BestOfN:
        return _best_of_n(candidates, await self.ajudge(query, candidates))

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
        if not response.strip():  # as in judge(): nothing to evaluate, so no generation and no number
            return Evaluation("", (), None, None, _EMPTY_REASON)
        parsed = criteria if isinstance(criteria, Criteria) else parse_criteria(criteria)
        slot = self._evaluation_slot(query, parsed.text, response)
        if slot is None:
            return Evaluation("", (), None, None, _OVERLONG_REASON)
        params = dataclasses.replace(self.config.evaluation_sampling(), n=1)
        completion = (yield _Request([slot.conversation], params))[0][0]
        chain = self._chain(parsed, completion)
        # A failed or cut-off generation is reported in the Evaluation itself (problem set, overall None).
        evaluation = chain.evaluation or Evaluation(completion.text, (), None, None)
        extra = (slot.warning,) if slot.warning else ()
        return dataclasses.replace(
            evaluation, overall=chain.score, problem=chain.reason, warnings=evaluation.warnings + extra
        )

    def _judge_plan(self, items: Sequence[Item]) -> _Plan[list[list[Judgment]]]:
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
            raise TypeError("items must be a list of (query, responses) pairs")
        checked: list[tuple[str, list[str]]] = []
        for n, item in enumerate(items):
            if not (isinstance(item, tuple | list) and len(item) == 2):
                raise TypeError(f"items[{n}] must be a (query, responses) pair")
            checked.append(
                (
                    _validate_query(item[0], f"items[{n}] query"),
                    _validate_responses(item[1], f"items[{n}] responses"),
                )
            )

        cfg = self.config
        self._check_readout_support()
        crit_params, eval_params = cfg.criteria_sampling(), cfg.evaluation_sampling()

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
        for n, (query, responses) in enumerate(checked):
            for j, response in enumerate(responses):
                if not response.strip() or _unicode_problem(response):
                    continue
                for i, sample in enumerate(samples[query]):
                    if sample.failure is not None:
                        continue
                    slot = self._evaluation_slot(query, sample.criteria.text, response)
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
                if not response.strip():
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
                        chains.append(self._read_expected(self._chain(sample.criteria, completion), completion))
                        chain_conversations.append(conversations[position])
                row.append(_Pending(chains, chain_conversations, warnings, eval_completions, crit_usage, crit_cached))
            pending_rows.append(row)

        # Optional stage 3: the forced readout of every chain the judge left without a score, in one request.
        if cfg.forced_readout:
            targets: list[tuple[_Pending, int]] = []
            readout_conversations: list[Conversation] = []
            for pending_row in pending_rows:
                for pending in pending_row:
                    if not isinstance(pending, _Pending):
                        continue
                    for c, (chain, conversation) in enumerate(zip(pending.chains, pending.conversations, strict=True)):
                        if chain.score is None and chain.evaluation is not None and conversation is not None:
                            targets.append((pending, c))
                            readout_conversations.append(
                                forced_readout_conversation(conversation, chain.evaluation.text)
                            )
            if targets:
                readout_out = yield _Request(readout_conversations, self._readout_params())
                for (pending, c), outputs in zip(targets, readout_out, strict=True):
                    pending.completions.append(outputs[0])
                    pending.chains[c] = self._read_forced(pending.chains[c], outputs[0])
                    if pending.chains[c].score is not None:
                        pending.warnings.append(
                            f"chain {c + 1}: score read by forced readout ({pending.chains[c].score_source}): "
                            f"the evaluation did not close the format ({pending.chains[c].reason or 'no score'})"
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
        return results

    # -- helpers -----------------------------------------------------------------------------------------------------
    @staticmethod
    def _criteria_sample(completion: Completion, *, cached: bool = False) -> _CriteriaSample:
        if completion.finish_reason == "error":
            reason = f"criteria generation failed: {completion.error}"
            return _CriteriaSample(Criteria(text="", items=(), problem=reason), completion, reason)
        return _CriteriaSample(parse_criteria(completion.text), completion, None, cached)

    def _cache_key(self, query: str, sample_index: int, params: SamplingParams) -> CriteriaCacheKey:
        return CriteriaCacheKey.for_sample(
            model=self._backend.model_id,
            backend=self._backend.name,
            prompt_version=PROMPT_VERSION,
            params=params,
            query=query,
            sample_index=sample_index,
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

    def _read_expected(self, chain: Chain, completion: Completion) -> Chain:
        """Parsed chains get their source recorded; in expected mode, the expectation replaces the parsed value when
        the log-probabilities support it."""
        if chain.score is None:
            return chain
        parsed = dataclasses.replace(chain, score_source="parsed")
        if self.config.score_readout != "expected":
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

    def _evaluation_slot(self, query: str, criteria_text: str, response: str) -> _EvalSlot | None:
        """The evaluation conversation, with the response truncated to fit the context when it must be.

        Returns None when the response does not fit and the policy is ``overlong="unscorable"``.
        """
        budget = self._response_budget(query, criteria_text)
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
        budget = self.config.max_response_tokens
        context = self._backend.context_length
        if context is not None:
            overhead = self._backend.count_conversation_tokens(evaluation_conversation(query, criteria_text, ""))
            if overhead is not None:
                room = context - self.config.evaluation_max_new_tokens - overhead - _SEAM_TOKENS
                budget = room if budget is None else min(budget, room)
        return budget

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
            criteria_usage=crit_usage,
            evaluation_usage=eval_usage,
            criteria_cached=crit_cached,
            score_readout=cfg.score_readout,
            forced_readout=cfg.forced_readout,
        )

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
                reason = (
                    f"all {len(chains)} chains {'failed or ' if status is Status.ERROR else ''}unscorable: {reason}"
                )
            return Judgment(index, status, None, reason, tuple(chains), provenance, unique_warnings)
        mean, spread = mean_and_spread(scores)
        if len(scores) < len(chains):
            unique_warnings += (f"{len(chains) - len(scores)} of {len(chains)} chains unscorable; mean over the rest",)
        return Judgment(index, Status.SCORED, mean, None, tuple(chains), provenance, unique_warnings, spread)


def _comparison(a: Judgment, b: Judgment) -> Comparison:
    if a.score is None or b.score is None:
        return Comparison(None, a, b)
    winner = "a" if a.score > b.score else "b" if b.score > a.score else "tie"
    return Comparison(winner, a, b)


def _ranking(responses: Sequence[str], judgments: Sequence[Judgment]) -> list[RankedResponse]:
    ranked = [RankedResponse(j.response_index, responses[j.response_index], j) for j in judgments]
    # Python's sort is stable: equal scores keep input order; UNSCORABLE (None) sort after every score.
    return sorted(ranked, key=lambda r: (r.score is None, -(r.score or 0.0)))


def _best_of_n(candidates: Sequence[str], judgments: list[Judgment]) -> BestOfN:
    ranking = _ranking(candidates, judgments)
    top = ranking[0] if ranking and ranking[0].score is not None else None
    return BestOfN(
        best_index=None if top is None else top.index,
        best=None if top is None else top.response,
        judgments=tuple(judgments),
        ranking=tuple(ranking),
    )
