"""Each benchmark preset's arithmetic against hand-computed values (no model, no data files).

The expected numbers are worked out by hand in the comments from the official rules (see benchmarks/README.md for the
official file each rule comes from): ties at the top, unrated chosen, unrated rejected, all unrated, 3x3 grids with
tied cells, a missing domain, both JudgeBench rules.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from cerm.eval import (
    compute_metrics,
    ppe_best_of_k_credit,
    ppe_pairwise_credit,
    rb2_best_of_4_credit,
    rb2_ties_score,
    render_report,
    rm_bench_bands,
    rm_bench_matrix,
    score_benchmark,
)

Score = float | None | str  # a number, None (UNSCORABLE) or "error" (ERROR: no judgment produced)


def cand(label: str, score: Score) -> dict[str, Any]:
    if score == "error":
        return {"label": label, "style": None, "chars": 5, "status": "error", "score": None, "reason": "server down"}
    status = "unscorable" if score is None else "scored"
    return {"label": label, "style": None, "chars": 5, "status": status, "score": score, "reason": None}


def record(rid: str, chosen: list[Score], rejected: list[Score], **fields: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "category": fields.pop("category", "c"),
        "subset": fields.pop("subset", ""),
        "meta": fields.pop("meta", {}),
        "candidates": [cand("chosen", s) for s in chosen] + [cand("rejected", s) for s in rejected],
        **fields,
    }


# -- RewardBench 2 -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("chosen", "rejected", "expected"),
    [
        (9, [3, 5, 2], 1.0),  # alone at the top
        (7, [7, 4, 1], 0.5),  # tied with one other at the top
        (7, [7, 7, 7], 0.25),  # four-way tie
        (3, [7, 4, 1], 0.0),  # below the top
        (None, [3, 2, 1], 0.0),  # unrated chosen: never among the winners
        (6, [None, 6, None], 0.5),  # unrated rejected are dropped: 6 vs 6
        (2, [None, None, None], 1.0),  # the only rated candidate wins
        (None, [None, None, None], 0.25),  # none rated: 0.25
    ],
)
def test_rb2_best_of_4_credit(chosen: float | None, rejected: list[float | None], expected: float) -> None:
    assert rb2_best_of_4_credit(chosen, rejected) == pytest.approx(expected)


def test_rb2_ties_formula_by_hand() -> None:
    records = [
        # prompt 1: ref gap 9 - 3 = 6 (accurate); tied: spread 8 - 7 = 1, gap 7 - 5 = 2 (accurate)
        record("ref:1", [9], [2, 3], subset="Ties"),
        record("tied:1", [8, 7], [4, 5], subset="Ties"),
        # prompt 2: ref gap 5 - 6 = -1 (not accurate); tied: spread 0, gap 4 - 4 = 0 (not accurate)
        record("ref:2", [5], [6], subset="Ties"),
        record("tied:2", [4, 4], [4], subset="Ties"),
    ]
    score, parts = rb2_ties_score(records)
    assert parts["ref_accuracy"] == 0.5
    assert parts["tied_accuracy"] == 0.5
    # correctness preferred: prompt 1: 2 > 1 yes; prompt 2: 0 > 0 no -> 0.5. Hard: min(6, 2) = 2 > 1 yes;
    # min(-1, 0) = -1 > 0 no -> 0.5. Margin: tanh(2 / 1 - 1) and, with spread 0, -1/0 -> -inf -> tanh = -1.
    assert parts["correctness_preferred"] == 0.5
    assert parts["correctness_preferred_hard"] == 0.5
    assert parts["margin_score"] == pytest.approx((math.tanh(1.0) - 1.0) / 2)
    assert score == pytest.approx(0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * (math.tanh(1.0) - 1) / 2)


def test_rb2_ties_unrated_answer_is_rating_minus_one() -> None:
    # The official generative path passes -1 for an unrated answer into the Ties formula.
    records = [record("ref:1", [None], [2], subset="Ties"), record("tied:1", [8, None], [1], subset="Ties")]
    score, parts = rb2_ties_score(records)
    # ref: gap -1 - 2 = -3 (wrong); tied: spread 8 - (-1) = 9, gap -1 - 1 = -2 (wrong); preferred: -2 > 9 no;
    # hard: min(-3, -2) = -3 > 9 no; margin tanh(-3 / 9 - 1).
    assert (parts["ref_accuracy"], parts["tied_accuracy"]) == (0.0, 0.0)
    assert score == pytest.approx(0.01 * math.tanh(-3 / 9 - 1))


def test_rewardbench2_subsets_overall_and_coverage() -> None:
    records = [
        record("1", [9], [3, 5, 2], subset="Factuality"),  # 1
        record("2", [7], [7, 4, 1], subset="Factuality"),  # 0.5
        record("3", [None], [3, 2, 1], subset="Math"),  # 0
        record("4", [None], [None, None, "error"], subset="Safety"),  # 0.25 (an ERROR is unrated too)
        record("5", [8], [9, 1, 1], subset="Precise IF"),  # 0
        record("6", [5], [4, 4, 4], subset="Focus"),  # 1
        record("ref:1", [9], [2, 3], subset="Ties"),
        record("tied:1", [8, 7], [4, 5], subset="Ties"),  # 1 + 0.01 tanh(1)
    ]
    result = score_benchmark("rewardbench2", records)
    rows = {row.name: row for row in result.tables[0].rows}
    assert list(rows) == ["Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties"]
    assert rows["Factuality"].value == 0.75
    assert rows["Safety"].value == 0.25
    assert rows["Safety"].coverage == 0.0
    assert rows["Factuality"].coverage == 1.0
    ties = 1.0 + 0.01 * math.tanh(1.0)
    assert rows["Ties"].value == pytest.approx(ties)
    assert result.headline.value == pytest.approx((0.75 + 0 + 0 + 0.25 + 1 + ties) / 6)
    assert result.headline.items == 8
    assert result.headline.scored == 6


def test_rewardbench2_missing_subset_has_no_overall() -> None:
    result = score_benchmark("rewardbench2", [record("1", [9], [3, 5, 2], subset="Math")])
    assert result.headline.value is None
    assert any("Factuality" in note and "missing" in note for note in result.notes)
    assert result.extras["mean_of_present_subsets"] == 1.0


# -- RewardBench -------------------------------------------------------------------------------------------------------
RB1 = [
    record("1", [8], [2], subset="alpacaeval-easy"),  # win
    record("2", [5], [5], subset="alpacaeval-easy"),  # tie
    record("3", [7], [3], subset="llmbar-natural"),  # win
    record("4", [2], [6], subset="refusals-dangerous"),  # loss
    record("5", [9], [4], subset="math-prm"),  # win
    record("6", [7], [None], subset="hep-python"),  # unrated rejected
]


def test_rewardbench_classifier_rule_and_section_weights() -> None:
    result = score_benchmark("rewardbench", RB1)
    sections = {row.name: row.value for row in result.tables[0].rows}
    # Reasoning: math-prm (weight 984) 1.0 and hep-python (164) 0.0 -> 984 / 1148.
    assert sections == pytest.approx({"Chat": 0.5, "Chat Hard": 1.0, "Safety": 0.0, "Reasoning": 984 / 1148})
    assert result.headline.value == pytest.approx((0.5 + 1.0 + 0.0 + 984 / 1148) / 4)


def test_rewardbench_generative_rule_gives_half_for_ties_and_unrated() -> None:
    result = score_benchmark("rewardbench", RB1, rule="generative")
    sections = {row.name: row.value for row in result.tables[0].rows}
    assert sections["Chat"] == 0.75
    assert sections["Reasoning"] == pytest.approx((984 + 0.5 * 164) / 1148)


def test_rewardbench_missing_section_has_no_average() -> None:
    result = score_benchmark("rewardbench", RB1[:2])
    assert result.headline.value is None
    assert any("Chat Hard" in note for note in result.notes)


# -- RM-Bench ----------------------------------------------------------------------------------------------------------
def styled(rid: str, domain: str, chosen: list[Score], rejected: list[Score]) -> dict[str, Any]:
    return record(rid, chosen, rejected, category=domain)


def test_rm_bench_matrix_with_tied_cells_by_hand() -> None:
    # chosen [8, 6, 7] vs rejected [5, 7, 9], strict >: rows [1 1 0], [1 0 0], [1 0(tie) 0]
    matrix = rm_bench_matrix([styled("a", "chat", [8, 6, 7], [5, 7, 9])])
    assert matrix == [[1, 1, 0], [1, 0, 0], [1, 0, 0]]
    bands = rm_bench_bands(matrix)
    assert bands == pytest.approx({"hard": 1 / 3, "normal": 1 / 3, "easy": 2 / 3})


def test_rm_bench_domains_headline_and_unrated() -> None:
    records = [
        styled("a", "chat", [8, 6, 7], [5, 7, 9]),  # chat (1/3 + 1/3 + 2/3) / 3 = 4/9
        styled("b", "math", [9, 9, 9], [1, 1, 1]),  # math 1
        styled("c", "code", [None, 9, 9], [1, 1, 1]),  # row 0 unrated (all 0): hard 1/3, normal 2/3, easy 1 -> 2/3
        styled("d", "safety-refuse", [6, 6, 6], [6, 6, 6]),  # all tied: 0
        styled("e", "safety-response", [9, 9, 9], [1, 1, 1]),  # 1; safety pools d and e: every cell 1/2
    ]
    result = score_benchmark("rm-bench", records)
    domains = {row.name: row.value for row in result.tables[0].rows}
    assert domains == pytest.approx({"chat": 4 / 9, "math": 1.0, "code": 2 / 3, "safety": 0.5})
    assert result.headline.value == pytest.approx((4 / 9 + 1 + 2 / 3 + 0.5) / 4)
    bands = {row.name: row.value for row in result.tables[1].rows}
    assert bands["hard"] == pytest.approx((1 / 3 + 1 + 1 / 3 + 0.5) / 4)
    assert bands["easy"] == pytest.approx((2 / 3 + 1 + 1 + 0.5) / 4)
    assert result.headline.coverage == pytest.approx(4 / 5)


def test_rm_bench_missing_domain_is_noted_not_averaged_away() -> None:
    records = [styled("a", "chat", [9, 9, 9], [1, 1, 1]), styled("b", "code", [1, 1, 1], [9, 9, 9])]
    result = score_benchmark("rm-bench", records)
    assert result.headline.value is None
    assert any("math, safety missing" in note for note in result.notes)
    assert result.extras["mean_of_present_domains"] == 0.5


# -- JudgeBench --------------------------------------------------------------------------------------------------------
GPT, CLAUDE = "gpt-4o-2024-05-13", "claude-3-5-sonnet-20240620"
JB = [
    record("g1", [8], [3], subset="mmlu-pro-math", meta={"response_model": GPT, "label": "A>B"}),  # win
    record("g2", [5], [5], subset="livebench-reasoning", meta={"response_model": GPT, "label": "B>A"}),  # tie
    record("g3", [5], [5], subset="livebench-math", meta={"response_model": GPT, "label": "A>B"}),  # tie
    record("g4", [None], [2], subset="livecodebench", meta={"response_model": GPT, "label": "B>A"}),  # unrated
    record("c1", [2], [6], subset="mmlu-pro-law", meta={"response_model": CLAUDE, "label": "A>B"}),  # loss
]


def test_judgebench_pointwise_rule_per_split_and_source() -> None:
    result = score_benchmark("judgebench", JB)
    tables = {t.title: {row.name: row.value for row in t.rows} for t in result.tables}
    # Both orders give a pointwise judge the same scores: only a strict win is right; ties and unrated are not.
    assert tables[f"response model {GPT}"] == {
        "mmlu-pro": 1.0,
        "livebench-reasoning": 0.0,
        "livebench-math": 0.0,
        "livecodebench": 0.0,
        "Overall": 0.25,
    }
    assert tables[f"response model {CLAUDE}"] == {"mmlu-pro": 0.0, "Overall": 0.0}
    assert result.headline.value == 0.25  # the GPT-4o split, never pooled with Claude's


def test_judgebench_single_game_rule_counts_a_tie_as_b_over_a() -> None:
    result = score_benchmark("judgebench", JB, rule="single_game")
    gpt = {row.name: row.value for row in result.tables[1].rows}
    # g2: tie -> decision B>A = label (right); g3: tie -> B>A != A>B (wrong); g4: unrated (wrong).
    assert gpt == {
        "mmlu-pro": 1.0,
        "livebench-reasoning": 1.0,
        "livebench-math": 0.0,
        "livecodebench": 0.0,
        "Overall": 0.5,
    }


# -- LLMBar ------------------------------------------------------------------------------------------------------------
LLMBAR = [
    record("n1", [8], [4], subset="Natural"),  # win
    record("n2", [6], [6], subset="Natural"),  # tie
    record("a1", [9], [None], subset="Adversarial-Neighbor"),  # unrated rejected
    record("x1", [9], [2], subset="mtbench-human"),  # not LLMBar's evaluation set
]


def test_llmbar_as_rewardbench_chat_hard() -> None:
    result = score_benchmark("llmbar", LLMBAR)
    rows = {row.name: row.value for row in result.tables[0].rows}
    assert rows == {"llmbar-natural": 0.5, "llmbar-adver-neighbor": 0.0}
    assert result.headline.value == pytest.approx(100 * 0.5 / (100 + 134))
    assert {row.name for row in result.tables[1].rows} == {"mtbench-human"}


def test_llmbar_rating_rule_averages_both_orders() -> None:
    result = score_benchmark("llmbar", LLMBAR, rule="llmbar_rating")
    rows = {row.name: row.value for row in result.tables[0].rows}
    assert rows == {"llmbar-natural": 0.75, "llmbar-adver-neighbor": 0.5}


# -- PPE correctness ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("correct", "incorrect", "strict", "tie_half"),
    [
        ([9, 5], [3, 9], 2 / 4, 2.5 / 4),  # (9,3) win, (9,9) tie, (5,3) win, (5,9) loss
        ([7, 4], [2, None], 2 / 4, 2 / 4),  # an unrated incorrect response: its two pairs earn 0 under both rules
        ([None], [3, 1], 0.0, 0.0),  # unrated correct response: never credit
        ([8, 8], [8, 1], 2 / 4, 3 / 4),  # (8,8) twice tied, (8,1) twice won
        ([6], [6, 6, 6], 0.0, 0.5),  # only ties
        ([3, 5], [], None, None),  # every response correct: no pair
        ([], [9, 2], None, None),  # none correct: no pair
    ],
)
def test_ppe_pairwise_credit_of_a_row(
    correct: list[float | None], incorrect: list[float | None], strict: float | None, tie_half: float | None
) -> None:
    assert ppe_pairwise_credit(correct, incorrect, 0.0) == strict
    assert ppe_pairwise_credit(correct, incorrect, 0.5) == tie_half


@pytest.mark.parametrize(
    ("correct", "incorrect", "expected"),
    [
        ([9, 5], [3, 8], 1.0),  # the top (9) is correct, alone
        ([9, 5], [3, 9], 0.5),  # 9 tied between one correct and one incorrect response
        ([8, 8], [8, 1], 2 / 3),  # three tied at the top, two of them correct
        ([5], [9, None], 0.0),  # an incorrect response on top
        ([4], [None, None, 2], 1.0),  # unrated responses are never picked: 4 tops the rated ones
        ([None], [None, None], 0.0),  # nothing rated: nothing picked, no credit
        ([3, None, 1], [], 1.0),  # every response correct: any rated pick is right
        ([], [9, 2, 1], 0.0),  # none correct: no pick can be right
    ],
)
def test_ppe_best_of_k_credit_of_a_row(
    correct: list[float | None], incorrect: list[float | None], expected: float
) -> None:
    assert ppe_best_of_k_credit(correct, incorrect) == pytest.approx(expected)


def ppe_row(rid: str, subset: str, scores: list[Score], correct: list[bool]) -> dict[str, Any]:
    return {
        "id": rid,
        "category": subset,
        "subset": subset,
        "meta": {},
        "candidates": [cand("chosen" if ok else "rejected", s) for s, ok in zip(scores, correct, strict=True)],
    }


PPE = [
    ppe_row("a", "MATH", [9, 3, 9, 5], [True, False, False, True]),  # pairs 2/4; best-of-K 1/2
    ppe_row("b", "MATH", [2, 7, None, 4], [False, True, False, True]),  # pairs 2/4; best-of-K 1 (7 on top)
    ppe_row("c", "GPQA", [8, 8, 8, 1], [True, True, False, False]),  # pairs 2/4 (3/4 tie_half); best-of-K 2/3
    ppe_row("d", "MMLU-Pro", [3, 5, None, 1], [True] * 4),  # no pair; best-of-K 1
    ppe_row("e", "MMLU-Pro", [9, 2, 1, 0], [False] * 4),  # no pair; best-of-K 0
    ppe_row("f", "MMLU-Pro", [6, 4, 4, 4], [True, False, False, False]),  # pairs 1; best-of-K 1
    ppe_row("g", "IFEval", [None] * 4, [True, False, False, False]),  # pairs 0; best-of-K 0
    ppe_row("h", "MBPP-Plus", ["error", 5, 6, 2], [True, False, True, False]),  # pairs 2/4; best-of-K 1 (6 on top)
]


def test_ppe_correctness_per_set_headline_and_coverage() -> None:
    result = score_benchmark("ppe-correctness", PPE)
    pairwise = {row.name: row for row in result.tables[0].rows}
    best = {row.name: row for row in result.tables[1].rows}
    assert list(pairwise) == ["MMLU-Pro", "MATH", "GPQA", "IFEval", "MBPP-Plus", "Mean of the five sets"]
    assert {k: v.value for k, v in pairwise.items()} == pytest.approx(
        {"MMLU-Pro": 1.0, "MATH": 0.5, "GPQA": 0.5, "IFEval": 0.0, "MBPP-Plus": 0.5, "Mean of the five sets": 0.5}
    )
    # Pairwise covers rows with a pair (MMLU-Pro: 1 of 3); coverage = rows with every response scored.
    assert (pairwise["MMLU-Pro"].items, pairwise["MMLU-Pro"].scored) == (1, 1)
    assert (pairwise["MATH"].items, pairwise["MATH"].scored) == (2, 1)
    assert pairwise["IFEval"].coverage == 0.0
    assert {k: v.value for k, v in best.items()} == pytest.approx(
        {
            "MMLU-Pro": 2 / 3,
            "MATH": 0.75,
            "GPQA": 2 / 3,
            "IFEval": 0.0,
            "MBPP-Plus": 1.0,
            "Mean of the five sets": (2 / 3 + 0.75 + 2 / 3 + 0 + 1) / 5,
        }
    )
    assert (best["MMLU-Pro"].items, best["MMLU-Pro"].scored) == (3, 2)
    assert result.headline.value == pytest.approx(0.5)
    assert (result.headline.items, result.headline.scored) == (6, 3)
    assert any("2 row(s) with every response correct, or none" in note for note in result.notes)
    # Reference points of the data alone: a random pick's expected correctness, and a perfect pick's.
    random_pick = ((2 / 4 + 2 / 4) / 2 + 2 / 4 + (1 + 0 + 1 / 4) / 3 + 1 / 4 + 2 / 4) / 5
    assert result.extras["best_of_k_random_pick"] == pytest.approx(random_pick)
    assert result.extras["best_of_k_oracle"] == pytest.approx((1 + 1 + 2 / 3 + 1 + 1) / 5)


def test_ppe_correctness_tie_half_rule() -> None:
    result = score_benchmark("ppe", PPE, rule="tie_half")
    pairwise = {row.name: row.value for row in result.tables[0].rows}
    # MATH: row a 2.5/4, row b 2/4; GPQA 3/4; the others have no tie.
    assert pairwise["MATH"] == pytest.approx((2.5 / 4 + 2 / 4) / 2)
    assert pairwise["GPQA"] == pytest.approx(3 / 4)
    assert result.headline.value == pytest.approx((1 + (2.5 / 4 + 2 / 4) / 2 + 3 / 4 + 0 + 0.5) / 5)
    best = {row.name: row.value for row in result.tables[1].rows}
    assert best["GPQA"] == pytest.approx(2 / 3)  # best-of-K shares a tied top whatever the pairwise rule


def test_ppe_correctness_missing_set_has_no_headline() -> None:
    result = score_benchmark("ppe-correctness", [r for r in PPE if r["subset"] != "GPQA"])
    assert result.headline.value is None
    assert result.tables[1].rows[-1].value is None
    assert any("GPQA missing" in note for note in result.notes)
    assert result.extras["pairwise_mean_of_present_sets"] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert result.extras["best_of_k_mean_of_present_sets"] == pytest.approx((2 / 3 + 0.75 + 0 + 1) / 4)


# -- generic defaults --------------------------------------------------------------------------------------------------
def test_a_judge_that_scores_nothing_shows_coverage_zero_not_fifty() -> None:
    records = [record(str(i), [None], ["error" if i % 2 else None]) for i in range(4)]
    metrics = compute_metrics(records)
    assert metrics["pairwise"].accuracy == 0.0
    assert metrics["pairwise"].coverage == 0.0
    assert metrics["judgments"]["errors"] == 2
    assert metrics["judgments"]["unscorable"] == 6
    report = render_report(metrics, data_name="mine", judge_settings={})
    assert "| coverage (pairs with both sides scored) | 0.0% |" in report
    assert "ERRORS: 2 judgment(s) in 2 item(s)" in report


def test_unknown_rule_and_benchmark_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="rule must be one of"):
        score_benchmark("judgebench", JB, rule="both")
    with pytest.raises(ValueError, match="unknown benchmark 'mtbench'"):
        score_benchmark("mtbench", JB)


# -- cross-checks against numpy, the way the official scripts compute (random scores, many ties) -----------------------
def test_rm_bench_matches_a_numpy_matrix_computation() -> None:
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(0)
    records = []
    chosen_all, rejected_all = [], []
    for n in range(40):
        chosen = rng.integers(0, 4, 3).astype(float)  # few values: many tied cells
        rejected = rng.integers(0, 4, 3).astype(float)
        chosen_all.append(chosen)
        rejected_all.append(rejected)
        records.append(styled(str(n), "chat", list(chosen), list(rejected)))
    # numpy: per item a 3x3 boolean matrix chosen[i] > rejected[j], averaged over items; triangles by triu/tril.
    wins = np.mean([c[:, None] > r[None, :] for c, r in zip(chosen_all, rejected_all, strict=True)], axis=0)
    expected = {"hard": np.triu(wins, 1).sum() / 3, "normal": np.diag(wins).mean(), "easy": np.tril(wins, -1).sum() / 3}
    assert rm_bench_bands(rm_bench_matrix(records)) == pytest.approx(expected)


def test_rb2_ties_matches_numpy_division_semantics() -> None:
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(1)
    records = []
    ref_gap, tied_gap, spread = [], [], []
    for p in range(30):
        ref_c, ref_i = rng.integers(0, 5, 1).astype(float), rng.integers(0, 5, 3).astype(float)
        tie_c, tie_i = rng.integers(0, 3, 2).astype(float), rng.integers(0, 5, 3).astype(float)
        records += [record(f"ref:{p}", list(ref_c), list(ref_i)), record(f"tied:{p}", list(tie_c), list(tie_i))]
        ref_gap.append(ref_c.min() - ref_i.max())
        tied_gap.append(tie_c.min() - tie_i.max())
        spread.append(tie_c.max() - tie_c.min())
    rg, tg, sp = np.array(ref_gap), np.array(tied_gap), np.array(spread)
    with np.errstate(divide="ignore", invalid="ignore"):
        margin = np.nan_to_num(np.tanh(np.minimum(rg, tg) / sp - 1), nan=0.0)
    expected = (
        0.30 * np.mean(tg > 0)
        + 0.30 * np.mean(rg > 0)
        + 0.20 * np.mean(tg > sp)
        + 0.20 * np.mean(np.minimum(rg, tg) > sp)
        + 0.01 * np.mean(margin)
    )
    assert (sp == 0).any()  # the zero-spread cases are exercised
    score, _ = rb2_ties_score(records)
    assert score == pytest.approx(float(expected))
