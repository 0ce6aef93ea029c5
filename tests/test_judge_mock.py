"""Judge bookkeeping with the scripted MockBackend: call counts, batching, ordering, test-time scaling, UNSCORABLE
paths, tie rules, async, provenance and truncation. The same behaviours on the real model: test_judge_model.py."""

from __future__ import annotations

import asyncio
import logging

import pytest

from _support import realistic_criteria, realistic_evaluation, response_of, scripted
from cerm import Judge, JudgeConfig, Status
from cerm.backends import Completion, MockBackend, SamplingParams
from cerm.protocol import PROMPT_VERSION, Conversation, criteria_conversation, evaluation_conversation

QUERY = "How do I reverse a list in Python?"


def _criteria_calls(backend: MockBackend) -> list[list[Conversation]]:
    return [convs for convs, _ in backend.calls if all(len(c) == 1 for c in convs)]


def _evaluation_calls(backend: MockBackend) -> list[list[Conversation]]:
    return [convs for convs, _ in backend.calls if all(len(c) == 3 for c in convs)]


# -- stage order and call counts
def test_criteria_generated_once_for_n_responses(mock_backend: MockBackend, mock_judge: Judge) -> None:
    responses = [f"score={s} answer {s}" for s in (3, 7.5, 9, 0, 10)]
    judgments = mock_judge.judge(QUERY, responses)

    assert len(mock_backend.calls) == 2  # one criteria call, one evaluation call
    (crit_convs, crit_params), (eval_convs, _) = mock_backend.calls
    assert crit_convs == [criteria_conversation(QUERY)]  # 1 criteria conversation for 5 responses
    assert crit_params.n == 1
    assert len(eval_convs) == 5  # 1 + N generations in all
    criteria_text = realistic_criteria(QUERY)
    assert eval_convs == [evaluation_conversation(QUERY, criteria_text, r) for r in responses]
    assert [j.score for j in judgments] == [3.0, 7.5, 9.0, 0.0, 10.0]
    assert all(j.status is Status.SCORED and j.reason is None for j in judgments)
    # Every judgment carries the same (parsed) criteria and its own parsed evaluation.
    assert {j.criteria for j in judgments} == {judgments[0].criteria}
    assert judgments[0].criteria is not None
    assert [c.term for c in judgments[0].criteria.items] == ["Correctness", "Completeness", "Clarity"]
    evaluation = judgments[1].evaluation
    assert evaluation is not None
    assert [s.score for s in evaluation.criterion_scores] == [4.0, 4.0, 3.0]
    assert evaluation.other_points is not None
    assert evaluation.other_points.score == 0.5


def test_score_returns_floats_and_none(mock_judge: Judge) -> None:
    assert mock_judge.score(QUERY, ["score=6 ok", "score=N/A broken", "score=12 too high"]) == [6.0, None, None]


def test_batch_over_several_queries_in_two_backend_calls(mock_backend: MockBackend, mock_judge: Judge) -> None:
    items = [
        ("q1: capital of France?", ["score=9 Paris", "score=1 Berlin"]),
        ("q2: 2+2?", ["score=10 4"]),
        ("q3: a haiku", ["score=6 a", "score=7 b", "score=8 c"]),
    ]
    results = mock_judge.judge_batch(items)

    assert len(mock_backend.calls) == 2
    crit_convs, eval_convs = (convs for convs, _ in mock_backend.calls)
    assert len(crit_convs) == 3
    assert len(eval_convs) == 6
    assert [[j.score for j in row] for row in results] == [[9.0, 1.0], [10.0], [6.0, 7.0, 8.0]]
    assert [[j.response_index for j in row] for row in results] == [[0, 1], [0], [0, 1, 2]]
    # Each query's evaluations are built on that query's own criteria.
    for (query, _), row in zip(items, results, strict=True):
        assert all(j.criteria is not None and query in j.criteria.text for j in row)
    assert mock_judge.score_batch(items) == [[9.0, 1.0], [10.0], [6.0, 7.0, 8.0]]


def test_identical_queries_share_one_criteria_generation(mock_backend: MockBackend, mock_judge: Judge) -> None:
    items = [(QUERY, ["score=4 a"]), ("other", ["score=5 b"]), (QUERY, ["score=6 c", "score=4 a"])]
    results = mock_judge.judge_batch(items)
    crit_convs, eval_convs = (convs for convs, _ in mock_backend.calls)
    assert crit_convs == [criteria_conversation(QUERY), criteria_conversation("other")]
    # (QUERY, "score=4 a") appears twice: under greedy decoding the identical evaluation runs once.
    assert len(eval_convs) == 3
    assert [[j.score for j in row] for row in results] == [[4.0], [5.0], [6.0, 4.0]]


def test_results_keep_input_order_whatever_the_backend_order() -> None:
    # A backend that answers evaluation turns from a lookup table keyed by the response: the Judge must map answers
    # back by position, not by arrival.
    backend = MockBackend(scripted(score_of=lambda q, r, s: r.split()[-1]))
    judge = Judge(backend)
    responses = [f"answer number {n}" for n in (9, 2, 7, 2, 5)]
    assert judge.score(QUERY, responses) == [9.0, 2.0, 7.0, 2.0, 5.0]
    assert [j.response_index for j in judge.judge(QUERY, responses)] == [0, 1, 2, 3, 4]


# -- test-time scaling
def _chain_scores(table: dict[int, str]) -> MockBackend:
    """Criteria sample i leads to the overall score table[i] for every response."""

    def score_of(query: str, response: str, sample: int) -> str:
        raise AssertionError("unused")

    def respond(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        if len(conversation) == 1:
            return realistic_criteria("q", sample)
        chain = int(conversation[1]["content"].split("(criteria sample ")[1].split(")")[0])
        return realistic_evaluation(table[chain]) if table[chain] != "none" else "I cannot decide."

    return MockBackend(respond)


def test_k_chains_mean_and_spread() -> None:
    backend = _chain_scores({0: "6", 1: "8", 2: "7", 3: "7"})
    judge = Judge(backend, config=JudgeConfig(k=4, seed=11))
    judgments = judge.judge(QUERY, ["r1", "r2"])

    (crit_convs, crit_params), (eval_convs, eval_params) = backend.calls
    assert len(crit_convs) == 1
    assert crit_params.n == 4
    assert crit_params.temperature == pytest.approx(0.7)  # scaling_temperature when temperature is 0
    assert len(eval_convs) == 8  # every response once under each criteria set
    assert eval_params.n == 1
    for judgment in judgments:
        assert judgment.status is Status.SCORED
        assert judgment.score == pytest.approx(7.0)
        assert judgment.spread == pytest.approx((0.5) ** 0.5)  # population std of 6, 8, 7, 7
        assert [c.score for c in judgment.chains] == [6.0, 8.0, 7.0, 7.0]
        assert len({c.criteria.text for c in judgment.chains}) == 4
        assert judgment.provenance.k == 4


def test_k_chains_partially_unscorable_average_the_rest() -> None:
    backend = _chain_scores({0: "4", 1: "none", 2: "8"})
    judgment = Judge(backend, config=JudgeConfig(k=3)).judge(QUERY, ["r"])[0]
    assert judgment.status is Status.SCORED
    assert judgment.score == pytest.approx(6.0)
    assert judgment.spread == pytest.approx(2.0)
    assert [c.score for c in judgment.chains] == [4.0, None, 8.0]
    assert judgment.chains[1].reason is not None
    assert "\\boxed" in judgment.chains[1].reason
    assert any("1 of 3 chains unscorable" in w for w in judgment.warnings)


def test_k_chains_all_unscorable() -> None:
    backend = _chain_scores({0: "none", 1: "11"})
    judgment = Judge(backend, config=JudgeConfig(k=2)).judge(QUERY, ["r"])[0]
    assert judgment.status is Status.UNSCORABLE
    assert judgment.score is None
    assert judgment.spread is None
    assert judgment.reason is not None
    assert "all 2 chains unscorable" in judgment.reason
    assert "outside 0-10" in judgment.reason


def test_k1_spread_is_zero(mock_judge: Judge) -> None:
    judgment = mock_judge.judge(QUERY, ["score=5 x"])[0]
    assert judgment.spread == 0.0
    assert len(judgment.chains) == 1


def test_scaling_mode_evaluations() -> None:
    def score_of(query: str, response: str, sample: int) -> str:
        return str(4 + 2 * sample)  # samples 0, 1, 2 -> 4, 6, 8

    backend = MockBackend(scripted(score_of=score_of))
    judge = Judge(backend, config=JudgeConfig(k=3, scaling="evaluations"))
    judgment = judge.judge(QUERY, ["r"])[0]
    (_crit_convs, crit_params), (eval_convs, eval_params) = backend.calls
    assert crit_params.n == 1
    assert crit_params.temperature == 0.0
    assert eval_params.n == 3
    assert eval_params.temperature > 0
    assert len(eval_convs) == 1
    assert [c.score for c in judgment.chains] == [4.0, 6.0, 8.0]
    assert judgment.score == pytest.approx(6.0)


def test_scaling_mode_grid() -> None:
    def respond(conversation: Conversation, params: SamplingParams, sample: int) -> str:
        if len(conversation) == 1:
            return realistic_criteria("q", sample)
        chain = int(conversation[1]["content"].split("(criteria sample ")[1].split(")")[0])
        return realistic_evaluation(str(chain * 2 + sample))  # criteria 0/1, evaluation sample 0/1

    backend = MockBackend(respond)
    judgment = Judge(backend, config=JudgeConfig(k=2, scaling="grid")).judge(QUERY, ["r"])[0]
    (_, crit_params), (eval_convs, eval_params) = backend.calls
    assert crit_params.n == 2
    assert eval_params.n == 2
    assert len(eval_convs) == 2  # one per criteria set, each sampled twice
    assert sorted(c.score or 0.0 for c in judgment.chains) == [0.0, 1.0, 2.0, 3.0]
    assert judgment.score == pytest.approx(1.5)


def test_sampled_evaluations_are_not_deduplicated() -> None:
    backend = MockBackend(scripted())
    judge = Judge(backend, config=JudgeConfig(temperature=0.8, k=2, scaling="evaluations"))
    judge.judge(QUERY, ["score=5 same", "score=5 same"])
    eval_convs = _evaluation_calls(backend)[0]
    assert len(eval_convs) == 2  # sampling: identical conversations are independent draws


# -- UNSCORABLE paths
def test_finish_reason_length_is_unscorable_with_reason() -> None:
    def score_of(query: str, response: str, sample: int) -> str | Completion:
        if "cut" in response:
            # The text even ends with a box (a per-criterion one): the Judge must not take it as the overall score.
            return Completion(text="**1. Correctness:** ok $\\boxed{4}$", finish_reason="length")
        return "7"

    judge = Judge(MockBackend(scripted(score_of=score_of)), config=JudgeConfig(evaluation_max_new_tokens=64))
    cut, fine = judge.judge(QUERY, ["cut off", "fine"])
    assert cut.status is Status.UNSCORABLE
    assert cut.score is None
    assert cut.reason is not None
    assert "evaluation_max_new_tokens=64" in cut.reason
    assert cut.evaluation is not None
    assert cut.evaluation.text.endswith("$\\boxed{4}$")
    assert fine.score == 7.0


def test_criteria_cut_off_is_a_warning_not_a_failure() -> None:
    def criteria_of(query: str, sample: int) -> Completion:
        return Completion(text="The query asks for [Start of Criteria]\n1. Accuracy: right", finish_reason="length")

    judge = Judge(MockBackend(scripted(criteria_of=criteria_of)))
    judgment = judge.judge(QUERY, ["score=6 x"])[0]
    assert judgment.score == 6.0
    assert any("criteria_max_new_tokens" in w for w in judgment.warnings)
    assert any("[End of Criteria]" in w for w in judgment.warnings)


def test_error_completion_makes_only_that_item_errored_not_unscorable() -> None:
    def score_of(query: str, response: str, sample: int) -> str | Completion:
        return Completion.failed("CUDA out of memory") if "boom" in response else "8"

    judgment = Judge(MockBackend(scripted(score_of=score_of))).judge(QUERY, ["ok 1", "boom", "ok 2"])
    assert [j.score for j in judgment] == [8.0, None, 8.0]
    # A failed generation is ERROR (no verdict, retry it), never the judge's UNSCORABLE, and never a number.
    assert judgment[1].status is Status.ERROR
    assert judgment[1].errored
    assert not judgment[1].scorable
    assert judgment[1].reason == "evaluation generation failed: CUDA out of memory"
    assert [j.status for j in (judgment[0], judgment[2])] == [Status.SCORED, Status.SCORED]


def test_criteria_error_affects_only_that_query() -> None:
    def criteria_of(query: str, sample: int) -> str | Completion:
        return Completion.failed("server said 500") if query == "bad" else realistic_criteria(query)

    judge = Judge(MockBackend(scripted(criteria_of=criteria_of)))
    good, bad = judge.judge_batch([("good", ["score=3 x"]), ("bad", ["score=3 x", "score=4 y"])])
    assert [j.score for j in good] == [3.0]
    assert [j.score for j in bad] == [None, None]
    assert [j.status for j in bad] == [Status.ERROR, Status.ERROR]
    assert all(j.reason and "criteria generation failed: server said 500" in j.reason for j in bad)


def test_empty_and_whitespace_responses_are_unscorable_without_a_backend_call(
    mock_backend: MockBackend, mock_judge: Judge
) -> None:
    judgments = mock_judge.judge(QUERY, ["", "score=5 real", " \n\t "])
    assert [j.status for j in judgments] == [Status.UNSCORABLE, Status.SCORED, Status.UNSCORABLE]
    assert not judgments[0].errored
    assert judgments[0].score is None
    assert judgments[2].score is None
    assert "empty" in (judgments[0].reason or "")
    eval_convs = _evaluation_calls(mock_backend)
    assert [response_of(c) for c in eval_convs[0]] == ["score=5 real"]


def test_only_empty_responses_cost_no_evaluation_call(mock_backend: MockBackend, mock_judge: Judge) -> None:
    judgments = mock_judge.judge(QUERY, ["  "])
    assert judgments[0].status is Status.UNSCORABLE
    assert _evaluation_calls(mock_backend) == []


def test_unscorable_is_never_a_number(mock_judge: Judge) -> None:
    # Every failure kind the parser knows, side by side: the score is None and the reason names the cause.
    responses = ["score=abc", "score=-1", "score=11", "score=7/10", "score=\\frac{1}{2}"]
    for judgment in mock_judge.judge(QUERY, responses):
        assert judgment.status is Status.UNSCORABLE
        assert judgment.score is None
        assert judgment.reason
        assert judgment.to_dict()["score"] is None


# -- compare, rank, best_of_n
def test_compare(mock_judge: Judge) -> None:
    result = mock_judge.compare(QUERY, "score=8 a", "score=6.5 b")
    assert result.winner == "a"
    assert result.margin == pytest.approx(1.5)
    assert mock_judge.compare(QUERY, "score=2 a", "score=6.5 b").winner == "b"
    tie = mock_judge.compare(QUERY, "score=7 a", "score=7 b")
    assert tie.winner == "tie"
    assert tie.margin == 0.0


def test_compare_with_an_unscorable_side_has_no_winner(mock_judge: Judge) -> None:
    result = mock_judge.compare(QUERY, "score=9 a", "score=none b")
    assert result.winner is None
    assert result.margin is None
    assert result.b.status is Status.UNSCORABLE


def test_rank_is_stable_and_puts_unscorable_last(mock_judge: Judge) -> None:
    responses = ["score=x broken", "score=5 a", "score=9 b", "score=5 c", "", "score=9 d"]
    ranking = mock_judge.rank(QUERY, responses)
    assert [r.index for r in ranking] == [2, 5, 1, 3, 0, 4]
    assert [r.score for r in ranking] == [9.0, 9.0, 5.0, 5.0, None, None]
    assert [r.response for r in ranking][:2] == ["score=9 b", "score=9 d"]


def test_best_of_n_tie_goes_to_the_earliest(mock_judge: Judge) -> None:
    best = mock_judge.best_of_n(QUERY, ["score=6 a", "score=8 b", "score=8 c", "score=7.5 d"])
    assert best.best_index == 1
    assert best.best == "score=8 b"
    assert best.best_score == 8.0
    assert [r.index for r in best.ranking] == [1, 2, 3, 0]
    assert len(best.judgments) == 4


def test_best_of_n_unscorable_never_wins(mock_judge: Judge) -> None:
    # The unscorable candidate comes first and "looks" best (its text even has a \boxed{10}); it must not win.
    best = mock_judge.best_of_n(QUERY, ["score=broken \\boxed{10}", "score=0.5 weak"])
    assert best.best_index == 1
    assert best.best_score == 0.5


def test_best_of_n_with_nothing_scorable(mock_judge: Judge) -> None:
    best = mock_judge.best_of_n(QUERY, ["score=x a", "", "score=-3 c"])
    assert best.best_index is None
    assert best.best is None
    assert best.best_score is None
    assert [r.index for r in best.ranking] == [0, 1, 2]


# -- async API
def test_async_api_inside_a_running_event_loop(mock_backend: MockBackend, mock_judge: Judge) -> None:
    async def main() -> None:
        asyncio.get_running_loop()  # we are inside a loop: the library must not call asyncio.run itself
        judgments = await mock_judge.ajudge(QUERY, ["score=3 a", "score=4 b"])
        assert [j.score for j in judgments] == [3.0, 4.0]
        assert await mock_judge.ascore(QUERY, ["score=9 a"]) == [9.0]
        assert await mock_judge.ascore_batch([("a", ["score=1 x"]), ("b", ["score=2 y"])]) == [[1.0], [2.0]]
        rows = await mock_judge.ajudge_batch([("a", ["score=1 x"])])
        assert rows[0][0].score == 1.0
        assert (await mock_judge.acompare(QUERY, "score=1 a", "score=2 b")).winner == "b"
        assert [r.index for r in await mock_judge.arank(QUERY, ["score=1 a", "score=2 b"])] == [1, 0]
        assert (await mock_judge.abest_of_n(QUERY, ["score=1 a", "score=2 b"])).best_index == 1
        criteria = await mock_judge.acriteria(QUERY)
        assert [c.term for c in criteria.items] == ["Correctness", "Completeness", "Clarity"]
        evaluation = await mock_judge.aevaluate(QUERY, criteria, "score=6.5 x")
        assert evaluation.overall == 6.5
        # Concurrent calls on one Judge do not mix their results.
        many = await asyncio.gather(*(mock_judge.ascore(f"q{n}", [f"score={n} r"]) for n in range(6)))
        assert many == [[float(n)] for n in range(6)]

    asyncio.run(main())


# -- stage by stage
def test_criteria_and_evaluate_stage_by_stage(mock_backend: MockBackend, mock_judge: Judge) -> None:
    criteria = mock_judge.criteria(QUERY)
    assert criteria.text == realistic_criteria(QUERY)
    evaluation = mock_judge.evaluate(QUERY, criteria, "score=7 x")
    assert evaluation.overall == 7.0
    # The raw criteria text works too, and is fed back verbatim.
    assert mock_judge.evaluate(QUERY, criteria.text, "score=2 y").overall == 2.0
    assert mock_backend.calls[-1][0][0] == evaluation_conversation(QUERY, criteria.text, "score=2 y")
    assert len(mock_backend.calls) == 3


def test_evaluate_reports_a_cut_off_generation_as_a_problem() -> None:
    def score_of(query: str, response: str, sample: int) -> Completion:
        return Completion(text="Correctness $\\boxed{4}$", finish_reason="length")

    judge = Judge(MockBackend(scripted(score_of=score_of)))
    evaluation = judge.evaluate(QUERY, realistic_criteria(QUERY), "r")
    assert evaluation.overall is None
    assert evaluation.problem is not None
    assert "evaluation_max_new_tokens" in evaluation.problem


# -- provenance
def test_provenance_fields() -> None:
    backend = MockBackend(scripted(), model_id="my-judge")
    config = JudgeConfig(criteria_max_new_tokens=100, evaluation_max_new_tokens=200, seed=7, top_logprobs=2)
    judgment = Judge(backend, config=config).judge(QUERY, ["score=5 five words in here"])[0]
    prov = judgment.provenance
    assert prov.model == "my-judge"
    assert prov.backend == "mock"
    assert prov.prompt_version == PROMPT_VERSION
    assert prov.seed == 7
    assert prov.k == 1
    assert prov.criteria_sampling["max_new_tokens"] == 100
    assert prov.criteria_sampling["temperature"] == 0.0  # greedy by default
    assert prov.evaluation_sampling["max_new_tokens"] == 200
    assert prov.evaluation_sampling["top_logprobs"] == 2
    # The mock counts one token per word of its output.
    assert prov.criteria_usage.completion_tokens == len(realistic_criteria(QUERY).split())
    assert prov.evaluation_usage.completion_tokens == len(realistic_evaluation("5").split())
    data = judgment.to_dict()
    assert data["status"] == "scored"
    assert data["provenance"]["model"] == "my-judge"


def test_default_config_is_greedy() -> None:
    backend = MockBackend(scripted())
    Judge(backend).judge(QUERY, ["score=1 x"])
    assert all(params.greedy and params.temperature == 0.0 for _, params in backend.calls)


# -- responses longer than the context
def _long_response(words: int) -> str:
    return "score=6 " + " ".join(f"w{n}" for n in range(words))


def test_overlong_response_is_truncated_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    backend = MockBackend(scripted(), context_length=1200)
    config = JudgeConfig(evaluation_max_new_tokens=100)
    judge = Judge(backend, config=config)
    long_response = _long_response(3000)
    with caplog.at_level(logging.WARNING, logger="cerm"):
        long_j, short_j = judge.judge(QUERY, [long_response, "score=4 short"])

    assert long_j.status is Status.SCORED
    assert long_j.score == 6.0
    assert any("truncated from 3001 to" in w for w in long_j.warnings)
    assert any("truncated" in r.getMessage() for r in caplog.records)
    assert short_j.warnings == ()
    assert short_j.score == 4.0

    sent = _evaluation_calls(backend)[0]
    assert response_of(sent[1]) == "score=4 short"
    truncated = response_of(sent[0])
    assert long_response.startswith(truncated)
    assert len(truncated.split()) < 3001
    # The whole evaluation prompt plus the generation budget fits the context.
    prompt_tokens = backend.count_conversation_tokens(sent[0])
    assert prompt_tokens is not None
    assert prompt_tokens + config.evaluation_max_new_tokens <= 1200


def test_overlong_unscorable_policy() -> None:
    backend = MockBackend(scripted(), context_length=1200)
    judge = Judge(backend, config=JudgeConfig(evaluation_max_new_tokens=100, overlong="unscorable"))
    long_j, short_j = judge.judge(QUERY, [_long_response(3000), "score=4 short"])
    assert long_j.status is Status.UNSCORABLE
    assert long_j.score is None
    assert "does not fit in the model context" in (long_j.reason or "")
    assert short_j.score == 4.0
    assert [response_of(c) for c in _evaluation_calls(backend)[0]] == ["score=4 short"]


def test_max_response_tokens_caps_responses() -> None:
    backend = MockBackend(scripted())
    judge = Judge(backend, config=JudgeConfig(max_response_tokens=10))
    judgment = judge.judge(QUERY, [_long_response(50)])[0]
    assert any("truncated from 51 to 10 tokens" in w for w in judgment.warnings)
    assert len(response_of(_evaluation_calls(backend)[0][0]).split()) == 10
