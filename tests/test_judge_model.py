"""The Judge on the real embedded demo model (SmolLM2-135M-Instruct, greedy, fp32 on CPU).

Token budgets are tiny, so nearly every judgment is UNSCORABLE (the demo model rarely writes a boxed score even with
room to): the tests check the two-stage schedule, determinism and bookkeeping, which is what a real run relies on.
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


def _check_judgment(judgment: object) -> None:
    from cerm import Judgment

    assert isinstance(judgment, Judgment)
    if judgment.status is Status.SCORED:
        assert judgment.score is not None
        assert 0 <= judgment.score <= 10
        assert judgment.evaluation is not None
        assert parse_overall_score(judgment.evaluation.text)[0] == judgment.score
    else:
        assert judgment.score is None
        assert judgment.reason


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
        _check_judgment(judgment)
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
            _check_judgment(judgment)


def test_stage_by_stage(demo_backend: Backend, tiny_config: JudgeConfig) -> None:
    judge = Judge(demo_backend, config=tiny_config)
    criteria = judge.criteria(QUERY)
    assert criteria.text.strip()
    evaluation = judge.evaluate(QUERY, criteria, RESPONSES[0])
    assert evaluation.text.strip()
    # With a 12-token budget the evaluation is cut off: no overall score, and the problem says so.
    if evaluation.overall is None:
        assert evaluation.problem
    else:
        assert parse_overall_score(evaluation.text)[0] == evaluation.overall


def test_async_on_the_real_model(demo_judge: Judge) -> None:
    async def main() -> tuple[list[float | None], list[float | None]]:
        # Two concurrent calls inside one running loop; the backend serialises them safely.
        return await asyncio.gather(
            demo_judge.ascore(QUERY, RESPONSES[:1]),
            demo_judge.ascore("Name a prime number.", ["7"]),
        )

    first, second = asyncio.run(main())
    assert len(first) == 1
    assert len(second) == 1
    assert all(s is None or 0 <= s <= 10 for s in first + second)


@pytest.mark.slow
def test_best_of_n_on_the_real_model(demo_judge: Judge) -> None:
    best = demo_judge.best_of_n(QUERY, RESPONSES[:2])
    scores = [j.score for j in best.judgments]
    if all(s is None for s in scores):
        assert best.best_index is None  # nothing scorable: nobody wins, no made-up number
    else:
        assert best.best_index is not None
        assert best.best_score == max(s for s in scores if s is not None)


@pytest.mark.slow
def test_judge_by_model_name() -> None:
    # Construction from a name builds (and owns) its own backend.
    config = JudgeConfig(criteria_max_new_tokens=8, evaluation_max_new_tokens=8)
    with Judge("demo", config=config, device="cpu") as judge:
        assert judge.backend.name == "hf"
        assert "SmolLM2" in repr(judge)
        judgments = judge.judge(QUERY, RESPONSES[:1])
        _check_judgment(judgments[0])


@pytest.mark.slow
def test_longer_budget_real_judgment(demo_backend: Backend) -> None:
    # Budgets close to the README's demo: the text is long enough that a boxed score could appear; either way the
    # result is a score the judge wrote or UNSCORABLE with a reason.
    judge = Judge(demo_backend, config=JudgeConfig(criteria_max_new_tokens=96, evaluation_max_new_tokens=128))
    for judgment in judge.judge(QUERY, RESPONSES[:2]):
        _check_judgment(judgment)
