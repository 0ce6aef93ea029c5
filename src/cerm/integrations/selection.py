"""Best-of-N: sample N candidates from a policy, judge them with one shared criteria set, keep the best.

A policy is any cerm :class:`~cerm.Backend` (it generates N samples per prompt in one call) or a plain callable
``prompt -> list of N strings`` (an API client, a vLLM engine wrapper, ...). Selection reuses
:meth:`cerm.Judge.best_of_n`'s rule: the highest score wins, ties go to the earliest candidate, an UNSCORABLE candidate
never wins, and ``best_index`` is None when no candidate is scorable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from cerm._reward_judge import RewardJudge
from cerm._reward_judge import best_of_n as _best_of_n
from cerm._reward_judge import tied_best_of_n as _tied_best_of_n
from cerm._ties import TieBreak
from cerm._types import BestOfN
from cerm.backends._base import Backend, SamplingParams
from cerm.integrations._common import PromptLike, QueryFn, content_text, default_query
from cerm.protocol import Conversation

logger = logging.getLogger("cerm")

__all__ = ["Policy", "abest_of_n", "best_of_n", "best_of_n_batch", "rerank", "sample_candidates"]

#: A policy: a backend, or a callable from a prompt (text or chat messages) to its candidate responses.
Policy = Backend | Callable[[PromptLike], Sequence[str]]


def _conversation(prompt: PromptLike) -> Conversation:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    conversation: Conversation = []
    for message in prompt:
        role = message.get("role")
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"a policy prompt message must have role system, user or assistant, got {role!r}")
        conversation.append({"role": role, "content": content_text(message.get("content"))})
    return conversation


def _sampling(n: int, sampling: SamplingParams | None) -> SamplingParams:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if sampling is None:
        # Temperature 1.0: Best-of-N gains come from diverse candidates; greedy decoding would give N copies.
        return SamplingParams(max_new_tokens=512, temperature=1.0, n=n)
    return SamplingParams(**{**sampling.to_dict(), "n": n})


def sample_candidates(
    policy: Policy, prompts: Sequence[PromptLike], n: int, sampling: SamplingParams | None = None
) -> list[list[str]]:
    """N candidates per prompt. A backend gets all prompts in ONE ``generate`` call (``n`` samples each); a failed
    sample becomes an empty candidate (judged UNSCORABLE: "the response is empty") and its error is logged. A callable
    policy is called once per prompt and must return exactly ``n`` strings."""
    params = _sampling(n, sampling)
    if isinstance(policy, Backend):
        outputs = policy.generate([_conversation(p) for p in prompts], params)
        candidates = []
        for row in outputs:
            for completion in row:
                if completion.error is not None:
                    logger.warning("a policy sample failed and is judged as empty: %s", completion.error)
            candidates.append([c.text for c in row])
        return candidates
    if not callable(policy):
        raise TypeError(f"policy must be a cerm Backend or a callable prompt -> list[str], got {type(policy).__name__}")
    result = []
    for prompt in prompts:
        texts = list(policy(prompt))
        if len(texts) != n or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"the policy callable must return a list of {n} strings, got {texts!r:.200}")
        result.append(texts)
    return result


def best_of_n(
    policy: Policy,
    prompt: PromptLike,
    judge: RewardJudge,
    *,
    n: int = 4,
    sampling: SamplingParams | None = None,
    query_fn: QueryFn | None = None,
    tie_break: TieBreak | None = None,
) -> BestOfN:
    """Sample ``n`` candidates for ``prompt`` from ``policy`` and return the judge's pick with every judgment.

    Args:
        policy: a cerm backend (any registered one: ``create_backend("hf", "my-policy")``) or a callable.
        prompt: text, or chat messages (the judge's query is then the last user message; see ``query_fn``).
        judge: the CE-RM judge. The N candidates share one criteria set: 1 + N judge generations.
        n: number of candidates.
        sampling: the policy's decoding settings (``n`` is overridden); default temperature 1.0, 512 new tokens.
        query_fn: prompt -> the judge's query.
        tie_break: a :class:`~cerm.TieBreak`: candidates tied at the top get more judge samples (see
            :meth:`cerm.Judge.best_of_n`); off by default.

    Returns a :class:`~cerm.BestOfN`: ``best``/``best_index``/``best_score``, ``judgments`` in candidate order and
    ``ranking`` (candidates with their texts, best first).
    """
    return best_of_n_batch(policy, [prompt], judge, n=n, sampling=sampling, query_fn=query_fn, tie_break=tie_break)[0]


def best_of_n_batch(
    policy: Policy,
    prompts: Sequence[PromptLike],
    judge: RewardJudge,
    *,
    n: int = 4,
    sampling: SamplingParams | None = None,
    query_fn: QueryFn | None = None,
    tie_break: TieBreak | None = None,
) -> list[BestOfN]:
    """:func:`best_of_n` for many prompts: one policy call for all candidates, one ``judge_batch`` for all judgments."""
    candidates = sample_candidates(policy, prompts, n, sampling)
    queries = [(query_fn or default_query)(p) for p in prompts]
    return rerank(judge, list(zip(queries, candidates, strict=True)), tie_break=tie_break)


async def abest_of_n(
    policy: Policy,
    prompt: PromptLike,
    judge: RewardJudge,
    *,
    n: int = 4,
    sampling: SamplingParams | None = None,
    query_fn: QueryFn | None = None,
    tie_break: TieBreak | None = None,
) -> BestOfN:
    """Async :func:`best_of_n`: a backend policy generates through ``agenerate`` and the judge through its async API.
    A callable policy is called directly (make it quick, or run it in a thread yourself)."""
    params = _sampling(n, sampling)
    if isinstance(policy, Backend):
        outputs = await policy.agenerate([_conversation(prompt)], params)
        candidates = [c.text for c in outputs[0]]
    else:
        candidates = sample_candidates(policy, [prompt], n, sampling)[0]
    query = (query_fn or default_query)(prompt)
    return await judge.abest_of_n(query, candidates, tie_break=tie_break)


def rerank(
    judge: RewardJudge, items: Sequence[tuple[str, Sequence[str]]], *, tie_break: TieBreak | None = None
) -> list[BestOfN]:
    """Rerank candidate lists you already have: ``items`` are ``(query, candidates)`` pairs, judged in ONE
    ``judge_batch`` (one criteria set per query). Returns one :class:`~cerm.BestOfN` per item, in order. With
    ``tie_break``, each item's candidates tied at the top get more samples, every item's rounds batched together."""
    if tie_break is not None:
        decided = judge.decide_batch([(q, list(c)) for q, c in items], tie_break, scope="top")
        return [_tied_best_of_n(list(c), js, report) for (_, c), (js, report) in zip(items, decided, strict=True)]
    results = judge.judge_batch([(q, list(c)) for q, c in items])
    return [_best_of_n(list(c), judgments) for (_, c), judgments in zip(items, results, strict=True)]
