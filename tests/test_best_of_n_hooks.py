"""Best-of-N hooks: sample N from a policy, judge with one criteria set, keep the best; rerank lists."""

from __future__ import annotations

import asyncio

import pytest

from _integration_helpers import mock_judge, scripted_score
from cerm import BestOfN, Judge, JudgeConfig
from cerm.backends import MockBackend, SamplingParams
from cerm.integrations import abest_of_n, best_of_n, best_of_n_batch, rerank


def test_callable_policy_picks_the_highest_score() -> None:
    judge, backend = mock_judge()
    candidates = ["alpha", "beta beta", "UNSCORABLE", "gamma!"]
    result = best_of_n(lambda prompt: candidates, "Pick one", judge, n=4)
    assert isinstance(result, BestOfN)
    assert len(result.judgments) == 4
    evals = {c[-1]["content"]: scripted_score(c[-1]["content"]) for c in backend.calls[1][0]}
    assert len(evals) == 4  # every candidate evaluated under the one criteria set (the 3rd gets no boxed score)
    scored = [j.score for j in result.judgments]
    assert scored[2] is None
    best = max(s for s in scored if s is not None)
    assert result.best_index == scored.index(best)
    assert result.best == candidates[result.best_index]
    assert result.best_score == best
    assert result.ranking[-1].index == 2


def test_backend_policy_batch_uses_one_generate_and_one_judge_batch() -> None:
    policy = MockBackend(lambda conv, params, i: f"{conv[-1]['content']} answer {i}")
    judge, judge_backend = mock_judge()
    results = best_of_n_batch(
        policy,
        ["Q1", [{"role": "user", "content": "Q2"}]],
        judge,
        n=3,
        sampling=SamplingParams(max_new_tokens=8, temperature=0.7, n=1),
    )
    assert len(policy.calls) == 1
    assert policy.calls[0][1].n == 3
    assert policy.calls[0][1].temperature == 0.7
    assert len(judge_backend.calls) == 2  # criteria for both prompts in one call, six evaluations in one more
    assert [len(r.judgments) for r in results] == [3, 3]
    assert results[1].best is not None
    assert results[1].best.startswith("Q2 answer")


def test_bad_policy_output_and_n() -> None:
    judge, _ = mock_judge()
    with pytest.raises(ValueError, match="2 strings"):
        best_of_n(lambda p: ["only one"], "Q", judge, n=2)
    with pytest.raises(ValueError, match="n must be"):
        best_of_n(lambda p: [], "Q", judge, n=0)


def test_rerank_and_async() -> None:
    judge, backend = mock_judge()
    ranked = rerank(judge, [("Q1", ["a", "bb"]), ("Q2", ["c"])])
    assert len(ranked) == 2
    assert len(backend.calls) == 2
    policy = MockBackend(lambda conv, params, i: f"cand {i}")
    result = asyncio.run(abest_of_n(policy, "Q", judge, n=2))
    assert len(result.judgments) == 2
    assert result.best in ("cand 0", "cand 1")


@pytest.mark.model
def test_best_of_n_with_a_real_hf_policy() -> None:
    """The embedded model as the policy (a real HF backend sampling N answers) and as the judge."""
    judge = Judge("demo-base", config=JudgeConfig(criteria_max_new_tokens=8, evaluation_max_new_tokens=8))
    policy = judge.backend  # an HFBackend: any cerm backend can be the policy
    result = best_of_n(
        policy, "Name a fruit.", judge, n=3, sampling=SamplingParams(max_new_tokens=8, temperature=1.0, seed=1)
    )
    candidates = [r.response for r in sorted(result.ranking, key=lambda r: r.index)]
    assert len(candidates) == 3
    assert all(isinstance(c, str) for c in candidates)
    assert any(c.strip() for c in candidates)
    assert [j.response_index for j in result.judgments] == [0, 1, 2]
    for j in result.judgments:
        assert j.score is not None or j.reason
    if result.best_index is not None:
        assert result.best == candidates[result.best_index]
    else:  # the tiny judge rarely writes a score: then nothing wins, honestly
        assert all(j.score is None for j in result.judgments)
    judge.close()
