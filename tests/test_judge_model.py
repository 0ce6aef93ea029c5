"""The Judge on the real embedded demo model (SmolLM2-135M-Instruct, greedy, fp32 on CPU).

Token budgets are tiny, so under greedy decoding every plain judgment is cut off before an overall score: exactly
UNSCORABLE with that reason (pinned, so a change in scoring shows). Where a test needs numbers it uses the forced
readout, which reads a score from the demo model after the overall-score prefix.
"""

from __future__ import annotations

import asyncio

import pytest

from _support import CountingBackend, response_of
from cerm import Judge, JudgeConfig, Status
from cerm.backends import Backend
from cerm.protocol import criteria_conversation, evaluation_conversation, parse_overall_score

pytestmark = pytest.mark.model

QUERY = "What is the capital of France?"
RESPONSES = ["Paris is the capital of France.", "The capital of France is Berlin.", "Lyon."]


FORCED = JudgeConfig(
    criteria_max_new_tokens=16, evaluation_max_new_tokens=12, forced_readout=True, score_readout="expected"
)


def _check_cut_off(judgment: object, budget: int) -> None:
    """A greedy demo judgment under a tiny evaluation budget: the model is still writing when the budget ends."""
    from cerm import Judgment

    assert isinstance(judgment, Judgment)
    assert judgment.status is Status.UNSCORABLE
    assert judgment.score is None
    assert judgment.reason == f"the evaluation stopped at evaluation_max_new_tokens={budget} before its overall score"
    assert judgment.evaluation is not None
    assert judgment.evaluation.text.strip()
    assert judgment.provenance.evaluation_usage.completion_tokens == budget


def test_criteria_generated_once_for_n_responses(counting_demo: CountingBackend, tiny_config: JudgeConfig) -> None:
    judgments = Judge(counting_demo, config=tiny_config).judge(QUERY, RESPONSES)

    assert counting_demo.conversations_per_call == [1, 3]  # 1 + N generations in two backend calls
    (crit_convs, _crit_params), (eval_convs, _) = counting_demo.calls
    assert crit_convs == [criteria_conversation(QUERY)]
    criteria = judgments[0].criteria
    assert criteria is not None
    assert criteria.text.strip()  # the model really wrote something
    # Every response was evaluated under that one criteria text, fed back whole.
    assert eval_convs == [evaluation_conversation(QUERY, criteria.text, r) for r in RESPONSES]
    assert all(j.criteria == criteria for j in judgments)
    assert [j.response_index for j in judgments] == [0, 1, 2]
    for judgment in judgments:
        _check_cut_off(judgment, tiny_config.evaluation_max_new_tokens)
        assert judgment.evaluation is not None
        assert judgment.evaluation.text.strip()
        usage = judgment.provenance.evaluation_usage
        assert 0 < usage.completion_tokens <= tiny_config.evaluation_max_new_tokens
        assert usage.prompt_tokens > 0
    prov = judgments[0].provenance
    assert 0 < prov.criteria_usage.completion_tokens <= tiny_config.criteria_max_new_tokens
    assert prov.backend == "hf"
    assert prov.model == counting_demo.model_id
    assert "SmolLM2" in prov.model
    assert prov.prompt_version == "ce-rm-v1"
    assert prov.criteria_sampling["temperature"] == 0.0  # greedy by default
    assert prov.evaluation_sampling["max_new_tokens"] == tiny_config.evaluation_max_new_tokens
    assert prov.seed is None
    assert prov.k == 1
    assert prov.backend_settings == counting_demo.describe()  # the backend's full description, JSON-ready
    assert prov.backend_settings["dtype"] == "float32"


def test_greedy_determinism(demo_judge: Judge) -> None:
    first = demo_judge.judge(QUERY, RESPONSES[:1])
    second = demo_judge.judge(QUERY, RESPONSES[:1])
    assert [j.criteria for j in first] == [j.criteria for j in second]
    texts = [[j.evaluation.text if j.evaluation else None for j in run] for run in (first, second)]
    assert texts[0] == texts[1]
    assert all(texts[0])
    assert [(j.status, j.score, j.reason) for j in first] == [(j.status, j.score, j.reason) for j in second]


def test_batch_of_several_queries(counting_demo: CountingBackend, tiny_config: JudgeConfig) -> None:
    items = [
        (QUERY, RESPONSES[:2]),
        ("Name a prime number.", ["7"]),
        ("Say hello in Spanish.", ["Hola"]),
    ]
    results = Judge(counting_demo, config=tiny_config).judge_batch(items)

    assert counting_demo.conversations_per_call == [3, 4]  # all criteria at once, then all evaluations at once
    crit_convs, eval_convs = (convs for convs, _ in counting_demo.calls)
    assert crit_convs == [criteria_conversation(q) for q, _ in items]
    assert [len(row) for row in results] == [2, 1, 1]
    sent = iter(eval_convs)
    for (query, responses), row in zip(items, results, strict=True):
        criteria = row[0].criteria
        assert criteria is not None
        for response, judgment in zip(responses, row, strict=True):
            conversation = next(sent)
            # Each evaluation carries its own query and that query's own criteria turn.
            assert conversation == evaluation_conversation(query, criteria.text, response)
            assert response_of(conversation) == response
            _check_cut_off(judgment, tiny_config.evaluation_max_new_tokens)


def test_stage_by_stage(demo_backend: Backend, tiny_config: JudgeConfig) -> None:
    judge = Judge(demo_backend, config=tiny_config)
    criteria = judge.criteria(QUERY)
    assert criteria.text.strip()
    evaluation = judge.evaluate(QUERY, criteria, RESPONSES[0])
    assert evaluation.text.strip()
    # With a 12-token budget the evaluation is cut off: no overall score, and the problem says so.
    assert evaluation.overall is None
    assert evaluation.problem == "the evaluation stopped at evaluation_max_new_tokens=12 before its overall score"
    assert not evaluation.failed
    assert parse_overall_score(evaluation.text)[0] is None


def test_async_on_the_real_model(demo_backend: Backend) -> None:
    judge = Judge(demo_backend, config=FORCED)

    async def main() -> tuple[list[float | None], list[float | None]]:
        # Two concurrent calls inside one running loop; the backend serialises them safely.
        return await asyncio.gather(
            judge.ascore(QUERY, RESPONSES[:1]),
            judge.ascore("Name a prime number.", ["7"]),
        )

    first, second = asyncio.run(main())
    # Numbers (forced readout), and exactly the numbers the synchronous path gives for the same greedy judgments.
    assert all(isinstance(s, float) and 0 <= s <= 10 for s in first + second), (first, second)
    assert first == judge.score(QUERY, RESPONSES[:1])
    assert second == judge.score("Name a prime number.", ["7"])


@pytest.mark.slow
def test_best_of_n_on_the_real_model(demo_backend: Backend, tiny_config: JudgeConfig) -> None:
    # Plain greedy judgments are all cut off: nothing scorable, so nobody wins and no number is made up.
    plain = Judge(demo_backend, config=tiny_config).best_of_n(QUERY, RESPONSES[:2])
    assert [j.score for j in plain.judgments] == [None, None]
    assert plain.best_index is None
    # With the forced readout every candidate has a score, and the best is the highest (earliest on a tie).
    best = Judge(demo_backend, config=FORCED).best_of_n(QUERY, RESPONSES[:2])
    scores = [j.score for j in best.judgments]
    assert all(isinstance(s, float) for s in scores), scores
    top = max(s for s in scores if s is not None)
    assert best.best_index == scores.index(top)
    assert best.best_score == top


@pytest.mark.slow
def test_judge_by_model_name() -> None:
    # Construction from a name builds (and owns) its own backend.
    config = JudgeConfig(criteria_max_new_tokens=8, evaluation_max_new_tokens=8)
    with Judge("demo-base", config=config, device="cpu") as judge:
        assert judge.backend.name == "hf"
        assert "SmolLM2" in repr(judge)
        judgments = judge.judge(QUERY, RESPONSES[:1])
        _check_cut_off(judgments[0], 8)


@pytest.mark.slow
def test_longer_budget_real_judgment(demo_backend: Backend) -> None:
    # Budgets close to the README's demo. The demo model still does not reach an overall box within 128 tokens
    # (greedy), so the forced readout reads each score, and says why it had to.
    config = JudgeConfig(criteria_max_new_tokens=96, evaluation_max_new_tokens=128, forced_readout=True)
    for judgment in Judge(demo_backend, config=config).judge(QUERY, RESPONSES[:2]):
        assert judgment.status is Status.SCORED, judgment.reason
        assert judgment.score_source == "forced_parsed"
        assert judgment.score is not None
        assert 0 <= judgment.score <= 10
        assert judgment.evaluation is not None
        assert judgment.evaluation.overall is None
        assert judgment.provenance.evaluation_usage.completion_tokens >= 128
        assert any(
            "score read by forced readout" in w and "evaluation_max_new_tokens=128" in w for w in judgment.warnings
        ), judgment.warnings
