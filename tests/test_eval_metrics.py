"""Metrics against hand-computed values on fixed judgments (no model)."""

from __future__ import annotations

from typing import Any

import pytest

from cerm.eval import (
    best_of_n,
    best_of_n_credit,
    best_of_n_curve,
    breakdown,
    compute_metrics,
    credit,
    judgment_stats,
    length_bias,
    outcome,
    pair_stats,
    pairs,
    render_report,
    style_grid,
)


def cand(label: str, score: float | None, chars: int = 10, style: str | None = None) -> dict[str, Any]:
    return {
        "label": label,
        "style": style,
        "chars": chars,
        "status": "scored" if score is not None else "unscorable",
        "score": score,
        "reason": None if score is not None else "no boxed score",
    }


def pair(rid: str, chosen: float | None, rejected: float | None, category: str = "c", **kw: Any) -> dict[str, Any]:
    return {
        "id": rid,
        "category": category,
        "subset": kw.get("subset", ""),
        "meta": kw.get("meta", {}),
        "candidates": [
            cand("chosen", chosen, kw.get("cc", 10)),
            cand("rejected", rejected, kw.get("rc", 10)),
        ],
    }


# Six pairs: 3 wins, 1 loss, 1 tie, 1 unscorable (rejected side).
FIXED = [
    pair("a", 8, 3, "x"),
    pair("b", 7, 6.5, "x"),
    pair("c", 9, 2, "y"),
    pair("d", 4, 5, "y"),
    pair("e", 6, 6, "y"),
    pair("f", 6, None, "z"),
]


def test_outcomes_and_credit_table() -> None:
    assert outcome(8, 3) == "win"
    assert outcome(3, 8) == "loss"
    assert outcome(5, 5) == "tie"
    assert outcome(None, 5) == "unscorable"
    assert outcome(5, None) == "unscorable"
    assert credit("tie", "half") == 0.5
    assert credit("tie", "wrong") == 0.0
    assert credit("tie", "excluded") is None
    assert credit("unscorable", "half", "tie") == 0.5
    assert credit("unscorable", "wrong", "tie") == 0.0
    assert credit("unscorable", "half", "wrong") == 0.0
    assert credit("unscorable", "half", "excluded") is None


@pytest.mark.parametrize(
    ("tie_policy", "unscorable_policy", "expected"),
    [
        # credits: 1, 1, 1, 0, tie, unscorable
        ("half", "tie", (3 + 0.5 + 0.5) / 6),
        ("wrong", "tie", 3 / 6),
        ("excluded", "tie", 3 / 4),  # tie and the unscorable pair (treated as a tie) leave the denominator
        ("half", "wrong", (3 + 0.5) / 6),
        ("half", "excluded", (3 + 0.5) / 5),
        ("excluded", "wrong", 3 / 5),
    ],
)
def test_pairwise_accuracy_policies(tie_policy: Any, unscorable_policy: Any, expected: float) -> None:
    stats = pair_stats(pairs(FIXED), tie_policy, unscorable_policy)
    assert (stats.n, stats.wins, stats.losses, stats.ties, stats.unscorable) == (6, 3, 1, 1, 1)
    assert stats.accuracy == pytest.approx(expected)
    assert stats.unscorable_rate == pytest.approx(1 / 6)


def test_scorable_accuracy_ignores_unscorable_pairs() -> None:
    assert pair_stats(pairs(FIXED), "half").scorable_accuracy == pytest.approx(3.5 / 5)
    assert pair_stats(pairs(FIXED), "excluded").scorable_accuracy == pytest.approx(3 / 4)
    nothing = pair_stats(pairs([pair("u", None, None)]), "excluded", "excluded")
    assert nothing.accuracy is None  # nothing counts: no number is made up
    assert nothing.scorable_accuracy is None


def test_breakdown_per_category() -> None:
    table = breakdown(FIXED, lambda r: r["category"], "half", "tie")
    assert list(table) == ["x", "y", "z"]
    assert table["x"].accuracy == pytest.approx(1.0)
    assert table["y"].accuracy == pytest.approx((1 + 0 + 0.5) / 3)
    assert table["z"].accuracy == pytest.approx(0.5)
    assert table["z"].unscorable == 1


def test_judgment_stats_counts_reasons() -> None:
    stats = judgment_stats(FIXED)
    assert (stats["judgments"], stats["scored"], stats["unscorable"]) == (12, 11, 1)
    assert stats["unscorable_rate"] == pytest.approx(1 / 12)
    assert stats["reasons"] == [("no boxed score", 1)]


def test_status_wins_over_a_stray_score() -> None:
    # A record that says UNSCORABLE is unscorable even if a number sneaked into "score".
    record = pair("s", 9, 1)
    record["candidates"][0]["status"] = "unscorable"
    assert pairs([record])[0].outcome == "unscorable"


@pytest.mark.parametrize(
    ("chosen", "others", "policy", "expected"),
    [
        (9, [3, 4, 5], "tie", 1.0),
        (5, [3, 5, 5], "tie", 1 / 3),  # RewardBench 2: tied with two others at the top
        (5, [5, 1, 2], "tie", 1 / 2),
        (4, [3, 5, 1], "tie", 0.0),
        (4, [3, None, 1], "tie", 1 / 4),  # no verdict on the set: all N tied
        (4, [3, None, 1], "wrong", 0.0),
        (None, [3, 2, 1], "excluded", None),
    ],
)
def test_best_of_n_credit(chosen: Any, others: Any, policy: Any, expected: float | None) -> None:
    value = best_of_n_credit(chosen, others, policy)
    assert value == (None if expected is None else pytest.approx(expected))


def styled(
    rid: str, chosen: list[float | None], rejected: list[float | None], category: str = "chat"
) -> dict[str, Any]:
    styles = ["concise", "detailed_plain", "detailed_markdown"]
    return {
        "id": rid,
        "category": category,
        "subset": "s",
        "meta": {"item_id": rid},
        "candidates": [cand("chosen", s, 10 * (i + 1), styles[i]) for i, s in enumerate(chosen)]
        + [cand("rejected", s, 10 * (i + 1) + 1, styles[i]) for i, s in enumerate(rejected)],
    }


def test_rm_bench_grid_by_hand() -> None:
    # chosen scores by style (c, p, m) = 5, 6, 7; rejected (c, p, m) = 4, 6, 8.
    # cell (chosen i, rejected j): win if chosen > rejected.
    #            rej c=4   rej p=6   rej m=8
    # cho c=5    win       loss      loss
    # cho p=6    win       tie       loss
    # cho m=7    win       win       loss
    grid = style_grid([styled("i1", [5, 6, 7], [4, 6, 8])], "half")
    assert grid is not None
    assert grid["styles"] == ["concise", "detailed_plain", "detailed_markdown"]
    cells = grid["cells"]
    assert cells["concise"]["concise"].accuracy == 1.0
    assert cells["detailed_plain"]["detailed_plain"].accuracy == 0.5
    assert cells["concise"]["detailed_markdown"].accuracy == 0.0
    bands = grid["bands"]
    assert bands["hard"].n == 3
    assert bands["hard"].accuracy == pytest.approx(0.0)
    assert bands["normal"].accuracy == pytest.approx((1 + 0.5 + 0) / 3)  # diagonal: W, T, L
    assert bands["easy"].accuracy == pytest.approx(1.0)  # lower triangle: W, W, W
    assert style_grid(FIXED) is None


def test_best_of_n_full_sets_and_curve_by_hand() -> None:
    records = [styled("i1", [5, 6, 7], [4, 6, 8]), styled("i2", [9, None, 3], [1, 2, 3])]
    full = best_of_n(records, "tie")
    assert len(full) == 1
    assert full[0].n_candidates == 4
    # i1: chosen 5 vs {4,6,8} -> 0; 6 -> 0; 7 -> 0.   i2: 9 -> 1; None -> 1/4 (tie policy); 3 vs {1,2,3} -> 1/2.
    assert full[0].sets == 6
    assert full[0].items == 2
    assert full[0].unscorable_sets == 1
    assert full[0].accuracy == pytest.approx((0 + 0 + 0 + 1 + 0.25 + 0.5) / 6)
    # The default: a set with an unscored candidate earns nothing (a failure is never credit).
    assert best_of_n(records)[0].accuracy == pytest.approx((0 + 0 + 0 + 1 + 0 + 0.5) / 6)

    curve = best_of_n_curve(records, "tie")
    assert [p.n_candidates for p in curve] == [2, 3, 4]
    # N=2: per chosen answer, mean over its 3 single rejected answers; the point is the mean over chosen answers.
    # i1: 5 -> (1,0,0) = 1/3; 6 -> (1, .5, 0) = .5; 7 -> (1,1,0) = 2/3
    # i2: 9 -> 1; None -> .5 each; 3 -> (1,1,.5) = 2.5/3
    n2 = [1 / 3, 0.5, 2 / 3, 1.0, 0.5, 2.5 / 3]
    assert curve[0].accuracy == pytest.approx(sum(n2) / 6)
    assert curve[0].sets == 18
    # N=4 of the curve is the full set.
    assert curve[2].accuracy == pytest.approx(full[0].accuracy)
    assert [p.baseline for p in curve] == pytest.approx([1 / 2, 1 / 3, 1 / 4])
    assert best_of_n_curve(FIXED)[0].n_candidates == 2
    assert len(best_of_n_curve(FIXED)) == 1


def test_length_bias_by_hand() -> None:
    records = [
        pair("a", 8, 3, cc=100, rc=50),  # chosen longer, win (judge preferred longer)
        pair("b", 2, 6, cc=20, rc=80),  # chosen shorter, loss (judge preferred longer)
        pair("c", 7, 4, cc=30, rc=60),  # chosen shorter, win (judge preferred shorter)
        pair("d", 5, 5, cc=40, rc=40),  # same length, tie
    ]
    lb = length_bias(records, "half")
    assert lb["scored_judgments"] == 8
    assert lb["chosen_shorter"].n == 2
    assert lb["chosen_shorter"].accuracy == pytest.approx(0.5)
    assert lb["chosen_longer"].n == 1
    assert lb["chosen_longer"].accuracy == pytest.approx(1.0)
    assert lb["same_length"].accuracy == pytest.approx(0.5)
    assert lb["decided_pairs"] == 3
    assert lb["prefers_longer_rate"] == pytest.approx(2 / 3)
    # lengths (100,50,20,80,30,60,40,40) vs scores (8,3,2,6,7,4,5,5): computed by hand with the textbook formula.
    xs, ys = [100, 50, 20, 80, 30, 60, 40, 40], [8, 3, 2, 6, 7, 4, 5, 5]
    mx, my = sum(xs) / 8, sum(ys) / 8
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    r = cov / (sum((x - mx) ** 2 for x in xs) ** 0.5 * sum((y - my) ** 2 for y in ys) ** 0.5)
    assert lb["pearson"] == pytest.approx(r)
    assert lb["spearman"] is not None
    assert -1 <= lb["spearman"] <= 1
    perfect = [pair(str(i), float(i), 0.0, cc=10 * i + 5, rc=1) for i in range(1, 5)]
    assert length_bias(perfect)["spearman"] == pytest.approx(1.0)


def test_compute_metrics_and_report_are_consistent() -> None:
    metrics = compute_metrics(FIXED, "half", "tie")
    assert metrics["pairwise"].accuracy == pytest.approx(4 / 6)
    assert metrics["pairwise_by_tie_policy"]["excluded"].accuracy == pytest.approx(3 / 4)
    settings = {"model": "fixed", "backend": "none", "config": {"k": 1, "temperature": 0.0}}
    text = render_report(metrics, data_name="fixed", judge_settings=settings)
    assert "| pairwise accuracy (ties: half, unscorable: tie) | 66.7% |" in text
    assert "| pairs: wins / losses / ties / unscorable | 3 / 1 / 1 / 1 |" in text
    assert "| x | 2 | 100.0% |" in text
    assert "no boxed score" in text
    assert render_report(metrics, data_name="fixed", judge_settings=settings) == text  # deterministic


def test_bad_policy_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="tie_policy"):
        pair_stats(pairs(FIXED), "coin")  # type: ignore[arg-type]
