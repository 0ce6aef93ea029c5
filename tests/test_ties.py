"""Adaptive tie-breaks (TieBreak) and the independent stage counts of test-time scaling (criteria_samples x
evaluation_samples), with scripted backends whose every answer is known: samples go only to tied candidates, budgets
hold, earlier samples are reused, the recorded counts are right, and a seeded run reproduces."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from _support import query_of, realistic_criteria, realistic_evaluation, response_of
from cerm import ConfigurationError, Judge, JudgeConfig, SamplingParams, Status, TieBreak
from cerm.backends import Completion, MockBackend, TokenLogprob
from cerm.protocol import Conversation

Sampler = Callable[[str, random.Random], float]


def _scripted(greedy: dict[str, float], sampled: dict[str, Sampler] | None = None, **mock: bool) -> MockBackend:
    """The first (greedy) criteria set with a greedy evaluation gives ``greedy[response]``; anything sampled (a sampled
    criteria set, or a sampled evaluation) gives ``sampled[response](criteria, rng)``, with an RNG seeded by the
    request's seed, the sample index and the conversation (so a seeded run reproduces and rounds differ)."""

    def respond(conversation: Conversation, params: SamplingParams, sample: int) -> str:
        if len(conversation) == 1:
            tag = "greedy" if params.greedy else f"{params.seed}/{sample}"
            return realistic_criteria(query_of(conversation), 0) + f"\n(set {tag})"
        response = response_of(conversation)
        if params.greedy and conversation[1]["content"].endswith("(set greedy)"):
            return realistic_evaluation(f"{greedy[response]:g}")
        rng = random.Random(f"{params.seed}|{sample}|{conversation[1]['content']}|{response}")
        value = (sampled or {}).get(response, lambda _c, _r: greedy[response])(conversation[1]["content"], rng)
        return realistic_evaluation(f"{value:g}")

    return MockBackend(respond, **mock)


def _evaluated(backend: MockBackend, call: int) -> list[str]:
    return [response_of(c) for c in backend.calls[call][0]]


def _generations(backend: MockBackend) -> int:
    return sum(len(convs) * params.n for convs, params in backend.calls)


def test_samples_go_only_to_the_tied_candidates() -> None:
    backend = _scripted(
        {"a": 8, "b": 8, "c": 6}, {"a": lambda _c, _r: 9, "b": lambda _c, _r: 7, "c": lambda _c, _r: 10}
    )
    judge = Judge(backend, config=JudgeConfig(seed=1))
    best = judge.best_of_n("q", ["a", "b", "c"], tie_break=TieBreak(max_chains=4))
    assert best.best_index == 0
    report = best.tie_break
    assert report is not None
    # Round 0: criteria, then all three evaluations; round 1: one new criteria set, then a and b only; then a leads.
    assert len(backend.calls) == 4
    assert [len(c[0]) for c in backend.calls] == [1, 3, 1, 2]
    assert _evaluated(backend, 3) == ["a", "b"]
    # A round's chain is what k chains are: a sampled criteria set, the evaluation under it decoded as configured.
    assert backend.calls[2][1].temperature == 0.7
    assert backend.calls[3][1].temperature == 0.0
    assert report.rounds == 1
    assert report.stopped == "separated"
    assert report.generations == 3
    assert report.added_chains == 2
    a, b, c = report.candidates
    assert (a.chains, a.added, a.rounds, a.group) == (2, 1, 1, 0)
    assert (b.chains, b.added, b.rounds, b.group) == (2, 1, 1, 0)
    assert (c.chains, c.added, c.rounds, c.group) == (1, 0, 0, None)
    assert a.key == 8.5
    assert b.key == 7.5
    assert c.key == 6
    assert "tied" in a.reason
    assert "left contention after round 1" in b.reason
    assert "not tied" in c.reason
    assert report.order == (0, 1, 2)
    # The judgments carry the added chains (the first chain reused, not regenerated) and the settings.
    assert [ch.score for ch in best.judgments[0].chains] == [8, 9]
    assert best.judgments[0].score == 8.5
    assert best.judgments[2].score == 6
    assert best.judgments[0].provenance.tie_break == TieBreak(max_chains=4).to_dict()
    # c samples 10 when sampled, but it was never tied, so it was never judged again and never wins.
    assert best.ranking[0].index == 0
    assert [r.index for r in best.ranking] == [0, 1, 2]


def test_a_tie_break_never_lets_a_refined_score_overtake_an_untied_candidate() -> None:
    backend = _scripted({"a": 9, "b": 9, "c": 8}, {"a": lambda _c, _r: 5, "b": lambda _c, _r: 3})
    best = Judge(backend, config=JudgeConfig(seed=1)).best_of_n("q", ["a", "b", "c"], tie_break=TieBreak())
    assert best.best_index == 0
    assert best.judgments[0].score == 7.0  # below c's 8, yet a was tied with b only: c was decided by its first score
    assert [r.index for r in best.ranking] == [0, 1, 2]


def test_no_tie_costs_nothing_extra() -> None:
    backend = _scripted({"a": 8, "b": 7})
    result = Judge(backend).compare("q", "a", "b", tie_break=TieBreak())
    assert result.winner == "a"
    assert len(backend.calls) == 2
    assert result.tie_break is not None
    assert result.tie_break.stopped == "no tie"
    assert result.tie_break.generations == 0


def test_budget_is_respected_and_rounds_stop_at_max_chains() -> None:
    never = {"a": 8.0, "b": 8.0}
    # Unbreakable tie: rounds run until each candidate has max_chains chains.
    backend = _scripted(never)
    best = Judge(backend, config=JudgeConfig(seed=0)).best_of_n("q", ["a", "b"], tie_break=TieBreak(max_chains=4))
    report = best.tie_break
    assert report is not None
    assert report.stopped == "max_chains"
    assert report.rounds == 3
    assert [c.chains for c in report.candidates] == [4, 4]
    assert all(c.contending for c in report.candidates)
    assert best.best_index == 0  # still tied: the earliest candidate, as without a tie-break
    assert _generations(backend) == 3 + 3 * 3  # greedy 1 + 2, then 3 rounds of 1 criteria set + 2 evaluations
    # A budget of 5 extra generations affords one round (3), not a second (3 more).
    backend = _scripted(never)
    report = (
        Judge(backend, config=JudgeConfig(seed=0)).best_of_n("q", ["a", "b"], tie_break=TieBreak(budget=5)).tie_break
    )
    assert report is not None
    assert report.stopped == "budget"
    assert report.rounds == 1
    assert report.generations == 3
    assert _generations(backend) - 3 == 3
    # samples_per_round=2: one round of 2, then the last sample allowed by max_chains=4; max_rounds stops earlier.
    backend = _scripted(never)
    report = (
        Judge(backend, config=JudgeConfig(seed=0))
        .rank("q", ["a", "b"], tie_break=TieBreak(samples_per_round=2))[0]
        .tie_break
    )
    assert report is not None
    assert report.rounds == 2
    assert [c.chains for c in report.candidates] == [4, 4]
    assert [params.n for _, params in backend.calls] == [1, 1, 2, 1, 1, 1]
    report = (
        Judge(_scripted(never), config=JudgeConfig(seed=0))
        .best_of_n("q", ["a", "b"], tie_break=TieBreak(max_rounds=1))
        .tie_break
    )
    assert report is not None
    assert report.stopped == "max_rounds"
    assert report.rounds == 1


def test_earlier_samples_are_reused_under_evaluations_sampling() -> None:
    backend = _scripted({"a": 7, "b": 7}, {"a": lambda _c, r: r.choice([6, 8]), "b": lambda _c, r: 7})
    judge = Judge(backend, config=JudgeConfig(seed=3))
    best = judge.best_of_n("q", ["a", "b"], tie_break=TieBreak(sample="evaluations", margin=0.0))
    report = best.tie_break
    assert report is not None
    # No criteria turn after the first: sampled evaluations under the first (greedy) criteria set.
    assert sum(1 for convs, _ in backend.calls if len(convs[0]) == 1) == 1
    assert all(params.temperature == 0.7 for _, params in backend.calls[2:])
    first = best.judgments[0].chains[0].criteria
    assert all(ch.criteria == first for j in best.judgments for ch in j.chains)
    assert report.generations == 2 * report.rounds


def test_a_seeded_run_reproduces() -> None:
    def noisy(_c: str, rng: random.Random) -> float:
        return float(rng.choice([6, 7, 8]))

    def run() -> tuple[object, list[list[float | None]]]:
        backend = _scripted({"a": 7, "b": 7, "c": 7}, {"a": noisy, "b": noisy, "c": noisy})
        best = Judge(backend, config=JudgeConfig(seed=11)).best_of_n(
            "q", ["a", "b", "c"], tie_break=TieBreak(max_chains=6)
        )
        return best.tie_break, [[ch.score for ch in j.chains] for j in best.judgments]

    first, again = run(), run()
    assert first == again
    report = first[0]
    assert report is not None


def test_expected_score_breaks_the_tie_without_generation() -> None:
    L = math.log

    def evaluation(p7: float, other: str) -> Completion:
        head = "Accuracy: fine $\\boxed{4}$\nOverall $\\boxed{"
        tokens = [TokenLogprob(ch, 0.0, ((ch, 0.0),)) for ch in head]
        tokens.append(TokenLogprob("7", L(p7), (("7", L(p7)), (other, L(1 - p7)))))
        tokens += [TokenLogprob(ch, 0.0, ((ch, 0.0),)) for ch in "}$"]
        return Completion("".join(t.token for t in tokens), "stop", 10, len(tokens), tuple(tokens))

    outputs = {"a": evaluation(0.6, "6"), "b": evaluation(0.6, "8")}

    def respond(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        if len(conversation) == 1:
            return realistic_criteria(query_of(conversation))
        return outputs[response_of(conversation)]

    backend = MockBackend(respond, supports_logprobs=True)
    best = Judge(backend).best_of_n("q", ["a", "b"], tie_break=TieBreak())
    assert best.best_index == 1  # b's probability leans to 8, a's to 6
    report = best.tie_break
    assert report is not None
    assert report.expected_used
    assert report.rounds == 0
    assert report.generations == 0
    assert len(backend.calls) == 2
    assert backend.calls[1][1].top_logprobs == 20
    assert best.judgments[0].score == 7
    assert best.judgments[0].chains[0].score_source == "parsed"
    assert report.candidates[1].key == pytest.approx(7.4)
    assert report.candidates[0].key == pytest.approx(6.6)
    assert "by its expected score" in report.candidates[0].reason
    # expected_first=False: the same tie goes to sampled rounds instead.
    backend.calls.clear()
    report = (
        Judge(backend, config=JudgeConfig(seed=0))
        .best_of_n("q", ["a", "b"], tie_break=TieBreak(expected_first=False, max_chains=2))
        .tie_break
    )
    assert report is not None
    assert not report.expected_used
    assert report.rounds == 1


def test_rank_breaks_every_tie_and_batches_items() -> None:
    backend = _scripted(
        {"a": 9, "b": 9, "c": 5, "d": 5, "e": 3},
        {"a": lambda _c, _r: 8, "b": lambda _c, _r: 10, "c": lambda _c, _r: 6, "d": lambda _c, _r: 4},
    )
    judge = Judge(backend, config=JudgeConfig(seed=2))
    ranked = judge.rank("q", ["a", "b", "c", "d", "e"], tie_break=TieBreak())
    assert [r.index for r in ranked] == [1, 0, 2, 3, 4]
    assert _evaluated(backend, 3) == ["a", "b", "c", "d"]  # both ties in one round, e never again
    # decide_batch: two items' rounds in the same backend calls; "top" leaves the lower tie alone.
    backend.calls.clear()
    results = judge.decide_batch([("q1", ["a", "b", "c", "d"]), ("q2", ["c", "d", "e"])], TieBreak(), scope="top")
    assert [len(c[0]) for c in backend.calls] == [2, 7, 2, 4]
    (_, first), (_, second) = results
    assert first.order[:2] == (1, 0)
    assert first.candidates[2].group is None
    assert second.order == (0, 1, 2)


def test_unscorable_candidates_never_contend() -> None:
    backend = _scripted({"a": 8, "b": 8, "bad": 8})

    def respond(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        if len(conversation) > 1 and response_of(conversation) == "bad":
            return "no score here"
        return backend._responder(conversation, params, sample)

    mock = MockBackend(respond)
    best = Judge(mock, config=JudgeConfig(seed=0)).best_of_n("q", ["bad", "a", "b"], tie_break=TieBreak(max_chains=2))
    assert best.judgments[0].status is Status.UNSCORABLE
    assert all("bad" not in _evaluated(mock, i) for i in range(2, len(mock.calls)) if len(mock.calls[i][0][0]) > 1)
    assert best.tie_break is not None
    assert best.tie_break.order[-1] == 0
    assert "unscorable" in best.tie_break.candidates[0].reason


def test_tie_break_settings_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="max_chains"):
        TieBreak(max_chains=0)
    with pytest.raises(ConfigurationError, match="margin"):
        TieBreak(margin=-1)
    with pytest.raises(ConfigurationError, match="sample"):
        TieBreak(sample="grid")  # type: ignore[arg-type]
    judge = Judge(_scripted({"a": 1}), config=JudgeConfig(scaling_temperature=0))
    with pytest.raises(ConfigurationError, match="samples more chains"):
        judge.best_of_n("q", ["a"], tie_break=TieBreak())
    with pytest.raises(TypeError, match="TieBreak"):
        judge.decide_batch([("q", ["a"])], {"margin": 1})  # type: ignore[arg-type]


def test_async_decisions_match_the_sync_ones() -> None:
    import asyncio

    def make() -> Judge:
        return Judge(
            _scripted({"a": 8, "b": 8}, {"a": lambda _c, _r: 9, "b": lambda _c, _r: 7}), config=JudgeConfig(seed=5)
        )

    sync = make().compare("q", "a", "b", tie_break=TieBreak())
    other = asyncio.run(make().acompare("q", "a", "b", tie_break=TieBreak()))
    assert sync.winner == other.winner == "a"
    assert sync.tie_break == other.tie_break


# -- the two stage counts ------------------------------------------------------------------------------------------
def test_stage_counts_are_independent_and_k_maps_onto_them() -> None:
    assert (JudgeConfig().criteria_sets, JudgeConfig().evaluations_per_set) == (1, 1)
    assert (JudgeConfig(k=4).criteria_sets, JudgeConfig(k=4).evaluations_per_set) == (4, 1)
    assert (
        JudgeConfig(k=3, scaling="evaluations").criteria_sets,
        JudgeConfig(k=3, scaling="evaluations").evaluations_per_set,
    ) == (1, 3)
    assert JudgeConfig(k=3, scaling="grid").chains_per_response == 9
    config = JudgeConfig(criteria_samples=4, evaluation_samples=2, seed=0)
    assert config.criteria_sampling().n == 4
    assert config.evaluation_sampling().n == 2
    assert config.criteria_sampling().temperature == 0.7
    # k and a stage count may agree; they may not contradict each other.
    assert JudgeConfig(k=4, criteria_samples=4).criteria_sets == 4
    assert JudgeConfig(k=4, evaluation_samples=2).chains_per_response == 8
    with pytest.raises(ConfigurationError, match="not both"):
        JudgeConfig(k=4, criteria_samples=2)
    with pytest.raises(ConfigurationError, match="criteria_samples"):
        JudgeConfig(criteria_samples=0)
    with pytest.raises(ConfigurationError, match="sampling"):
        JudgeConfig(evaluation_samples=2, scaling_temperature=0)


def test_a_4_by_2_shape_judges_8_chains_and_records_the_shape() -> None:
    backend = _scripted({"a": 7}, {"a": lambda _c, r: r.choice([6, 7, 8])})
    judgment = Judge(backend, config=JudgeConfig(criteria_samples=4, evaluation_samples=2, seed=0)).judge("q", ["a"])[0]
    assert len(judgment.chains) == 8
    assert len({ch.criteria.text for ch in judgment.chains}) == 4
    assert [p.n for _, p in backend.calls] == [4, 2]
    assert len(backend.calls[1][0]) == 4  # one evaluation conversation per criteria set, 2 samples each
    prov = judgment.provenance
    assert (prov.criteria_samples, prov.evaluation_samples, prov.k) == (4, 2, 1)


# -- RL rewards ----------------------------------------------------------------------------------------------------
def test_trl_reward_separates_a_fully_tied_group_and_leaves_untied_groups_alone() -> None:
    from cerm.integrations.trl import AsyncCermRewardFunc, CermRewardFunc

    sampled: dict[str, Sampler] = {"g1": lambda _c, _r: 6, "g2": lambda _c, _r: 4, "g3": lambda _c, _r: 5}
    greedy = {"g1": 5.0, "g2": 5.0, "g3": 5.0, "u1": 8.0, "u2": 3.0}
    prompts = ["tied prompt"] * 3 + ["clear prompt"] * 2
    completions = ["g1", "g2", "g3", "u1", "u2"]
    metrics: dict[str, float] = {}

    def log_metric(name: str, value: float) -> None:
        metrics[name] = value

    plain = CermRewardFunc(Judge(_scripted(greedy)))(prompts, completions)
    assert plain == [5.0, 5.0, 5.0, 8.0, 3.0]  # the tied group has zero advantage
    backend = _scripted(greedy, sampled)
    reward = CermRewardFunc(Judge(backend, config=JudgeConfig(seed=0)), tie_break=TieBreak(max_chains=2))
    rewards = reward(prompts, completions, log_metric=log_metric)
    assert rewards == [5.5, 4.5, 5.0, 8.0, 3.0]  # one more chain each for the tied three; the clear group untouched
    assert _evaluated(backend, 3) == ["g1", "g2", "g3"]
    assert metrics["cerm/tie_break_chains_per_completion"] == 3 / 5
    # g1 and g3 are still 0.5 apart, g2 below: with margin 0 the round separated them all.
    assert [len(j.chains) for j in reward.last_judgments if j is not None] == [2, 2, 2, 1, 1]
    import asyncio

    async_reward = AsyncCermRewardFunc(
        Judge(_scripted(greedy, sampled), config=JudgeConfig(seed=0)), tie_break=TieBreak(max_chains=2)
    )
    assert asyncio.run(async_reward(prompts, completions)) == rewards
    with pytest.raises(TypeError, match="TieBreak"):
        CermRewardFunc(Judge(_scripted(greedy)), tie_break={"margin": 0})  # type: ignore[arg-type]


# -- the eval harness ----------------------------------------------------------------------------------------------
def test_eval_harness_breaks_top_ties_and_scores_them(tmp_path: Path) -> None:
    from cerm.eval import EvalItem, evaluate

    def item(n: int, prompt: str, chosen: str, *rejected: str) -> EvalItem:
        labels = ("chosen",) + ("rejected",) * len(rejected)
        return EvalItem(f"i{n}", "t", "c", "s", prompt, (chosen, *rejected), labels, (None,) * len(labels))

    greedy = {"right": 7.0, "wrong": 7.0, "low": 2.0, "high": 9.0, "mid": 6.0}
    sampled: dict[str, Sampler] = {"right": lambda _c, _r: 8, "wrong": lambda _c, _r: 6, "high": lambda _c, _r: 1}
    items = [item(0, "p0", "right", "wrong"), item(1, "p1", "high", "mid"), item(2, "p2", "right", "wrong", "low")]

    def run(tie: TieBreak | None, out: str) -> Any:
        judge = Judge(_scripted(greedy, sampled), config=JudgeConfig(seed=0))
        return evaluate(judge, items, tmp_path / out, progress=False, plots=False, tie_break=tie)

    plain, tied = run(None, "plain"), run(TieBreak(max_chains=2), "tied")
    assert plain.metrics["pairwise"].ties == 2
    assert plain.metrics["pairwise"].accuracy == pytest.approx((0.5 + 1 + 0.5 + 1) / 4)
    stats = tied.metrics["pairwise"]
    assert (stats.wins, stats.ties, stats.losses) == (4, 0, 0)
    first = tied.records[0]["candidates"]
    assert [c["score"] for c in first] == [7.0, 7.0]  # the first judgment's score stays the score
    assert [c["tie_break"]["score"] for c in first] == [7.5, 6.5]
    assert [c["tie_break"]["chains"] for c in first] == [2, 2]
    # The untied item was never judged again ("high" would sample 1).
    assert [c["tie_break"]["chains"] for c in tied.records[1]["candidates"]] == [1, 1]
    assert tied.records[1]["tie_break"]["stopped"] == "no tie"
    assert [c["tie_break"]["group"] for c in tied.records[2]["candidates"]] == [0, 0, None]
    bon = {point.n_candidates: point.accuracy for point in tied.metrics["best_of_n"]}
    assert bon == {2: 1.0, 3: 1.0}
    # A resume with a different tie-break setting is refused.
    with pytest.raises(ConfigurationError, match="tie_break"):
        run(TieBreak(max_chains=3), "tied")


def test_duplicate_completions_are_equal_by_definition_and_evaluated_once() -> None:
    from cerm.integrations.trl import CermRewardFunc

    greedy = {"x": 5.0, "y": 5.0}
    backend = _scripted(greedy, {"x": lambda _c, _r: 6, "y": lambda _c, _r: 4})
    reward = CermRewardFunc(Judge(backend, config=JudgeConfig(seed=0)), tie_break=TieBreak(max_chains=4))
    assert reward(["p"] * 3, ["x", "x", "y"]) == [5.5, 5.5, 4.5]
    # One round: the duplicate's evaluation ran once; then the two x are equal by definition, and y is behind.
    assert len(backend.calls) == 4
    assert _evaluated(backend, 3) == ["x", "y"]
    # A group of identical completions only: nothing to break, no round at all.
    backend = _scripted(greedy)
    judge = Judge(backend, config=JudgeConfig(seed=0))
    ((_, report),) = judge.decide_batch([("p", ["x", "x"])], TieBreak(), scope="all")
    assert len(backend.calls) == 2
    assert report.rounds == 0
    assert all("identical text" in c.reason for c in report.candidates)
    assert judge.compare("p", "x", "x", tie_break=TieBreak()).winner == "tie"


def test_reward_server_batcher_breaks_ties_within_a_batch() -> None:
    import asyncio

    from cerm.integrations._batching import MicroBatcher

    greedy = {"g1": 5.0, "g2": 5.0, "u": 9.0}
    sampled: dict[str, Sampler] = {"g1": lambda _c, _r: 7, "g2": lambda _c, _r: 3}

    async def serve(tie: TieBreak | None) -> list[float | None]:
        judge = Judge(_scripted(greedy, sampled), config=JudgeConfig(seed=0))
        batcher = MicroBatcher(judge, max_wait_s=0.0, tie_break=tie)
        await batcher.start()
        try:
            outcomes = await batcher.submit([("p", "g1", None), ("p", "g2", None), ("q", "u", None)])
        finally:
            await batcher.aclose()
        return [o.score if not isinstance(o, str) else None for o in outcomes]

    assert asyncio.run(serve(None)) == [5.0, 5.0, 9.0]
    assert asyncio.run(serve(TieBreak(max_chains=2))) == [6.0, 4.0, 9.0]
    with pytest.raises(TypeError, match="TieBreak"):
        MicroBatcher(Judge(_scripted(greedy)), tie_break=2)  # type: ignore[arg-type]


def test_rerank_helper_takes_a_tie_break() -> None:
    from cerm.integrations import rerank

    backend = _scripted({"a": 8, "b": 8, "c": 9}, {"a": lambda _c, _r: 6, "b": lambda _c, _r: 9})
    judge = Judge(backend, config=JudgeConfig(seed=0))
    first, second = rerank(judge, [("q1", ["a", "b"]), ("q2", ["c", "a"])], tie_break=TieBreak())
    assert first.best_index == 1  # b wins its tie with a after one round
    assert first.tie_break is not None
    assert first.tie_break.rounds == 1
    assert second.best_index == 0
    assert second.tie_break is not None
    assert second.tie_break.stopped == "no tie"
    assert [r.index for r in first.ranking] == [1, 0]


def test_margin_puts_near_ties_in_contention_and_the_leader_must_clear_it() -> None:
    backend = _scripted({"a": 8, "b": 7.5, "c": 5}, {"a": lambda _c, _r: 6, "b": lambda _c, _r: 9})
    best = Judge(backend, config=JudgeConfig(seed=0)).best_of_n("q", ["a", "b", "c"], tie_break=TieBreak(margin=1.0))
    report = best.tie_break
    assert report is not None
    assert [c.group for c in report.candidates] == [0, 0, None]  # 7.5 is within 1 of 8; 5 is not
    assert _evaluated(backend, 3) == ["a", "b"]
    # After one round: a 7.0, b 8.25: b leads by more than the margin, so a leaves contention and b wins.
    assert report.rounds == 1
    assert best.best_index == 1
    assert report.order == (1, 0, 2)
    # Without the margin, 8 beats 7.5 outright: no tie, no round.
    plain = Judge(_scripted({"a": 8, "b": 7.5, "c": 5}), config=JudgeConfig(seed=0))
    assert plain.best_of_n("q", ["a", "b", "c"], tie_break=TieBreak()).best_index == 0
