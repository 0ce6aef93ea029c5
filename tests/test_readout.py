"""Expected-score arithmetic (cerm.protocol's readout) on hand-made log-probability sequences.

Tokens are written the way digit-splitting tokenizers (SmolLM2, Qwen) produce them: "10" is "1", "0"; "7.5" is "7",
".", "5". One case uses a tokenizer that keeps "10" whole, one a brace merged into the first score token.
"""

from __future__ import annotations

import math

import pytest

from cerm.backends import TokenLogprob
from cerm.protocol import FORCED_READOUT_SUFFIX, closed_score, read_boxed_score, score_distribution

L = math.log


def tok(token: str, p: float, *alternatives: tuple[str, float]) -> TokenLogprob:
    """A generated token with probability p and alternatives given as (text, probability)."""
    return TokenLogprob(token, L(p), tuple((t, L(q)) for t, q in ((token, p), *alternatives)))


def box(*score_steps: TokenLogprob, before: str = "Overall: $") -> list[TokenLogprob]:
    """A generated sequence ``before`` + ``\\boxed{`` + the score steps, boxed split as SmolLM2 splits it."""
    return [
        TokenLogprob(before, 0.0),
        TokenLogprob("\\", 0.0),
        TokenLogprob("box", 0.0),
        TokenLogprob("ed", 0.0),
        TokenLogprob("{", 0.0),
        *score_steps,
    ]


def as_dict(readout: object) -> dict[float, float]:
    return {v: round(p, 6) for v, p in readout.distribution}  # type: ignore[attr-defined]


def test_single_digit_score_exact_distribution() -> None:
    # "7}" generated; alternatives at the first position "8" (0.2) and "6" (0.1) are taken as complete numbers.
    readout = read_boxed_score(box(tok("7", 0.7, ("8", 0.2), ("6", 0.1)), tok("}", 1.0)))
    assert readout is not None
    assert readout.trusted
    assert readout.greedy == 7.0
    assert readout.mass == pytest.approx(1.0)
    assert readout.expected == pytest.approx(0.7 * 7 + 0.2 * 8 + 0.1 * 6)
    assert readout.assumed_mass == pytest.approx(0.3)
    assert readout.mode == 7.0


def test_multi_token_ten_uses_the_chain_rule() -> None:
    # "1" (0.6) then "0" (0.9) then "}": P(10) = 0.6 * 0.9; P(1) = 0.6 * 0.08 (closure observed); "1." -> 1.5.
    steps = box(
        tok("1", 0.6, ("8", 0.3), ("9", 0.05)),
        tok("0", 0.9, ("}", 0.08), (".", 0.02)),
        tok("}", 1.0),
    )
    readout = read_boxed_score(steps)
    assert readout is not None
    probs = {v: p * readout.mass for v, p in readout.distribution}
    assert probs[10.0] == pytest.approx(0.54)
    assert probs[1.0] == pytest.approx(0.048)
    assert probs[1.5] == pytest.approx(0.012)
    assert probs[8.0] == pytest.approx(0.3)
    assert probs[9.0] == pytest.approx(0.05)
    assert readout.mass == pytest.approx(0.95)  # 0.05 lies outside the top-k
    expected = (0.54 * 10 + 0.048 * 1 + 0.012 * 1.5 + 0.3 * 8 + 0.05 * 9) / 0.95
    assert readout.expected == pytest.approx(expected)
    assert readout.greedy == 10.0


def test_half_point_seven_point_five() -> None:
    # "7" (0.5), "." (0.6; alt "}" 0.4), "5" (0.95; alt "0" 0.05), "}"; alternatives "8" (0.3) and "6" (0.2) at start.
    steps = box(
        tok("7", 0.5, ("8", 0.3), ("6", 0.2)),
        tok(".", 0.6, ("}", 0.4)),
        tok("5", 0.95, ("0", 0.05)),
        tok("}", 1.0),
    )
    readout = read_boxed_score(steps)
    assert readout is not None
    probs = {v: p * readout.mass for v, p in readout.distribution}
    assert probs[7.5] == pytest.approx(0.5 * 0.6 * 0.95)
    assert probs[7.0] == pytest.approx(0.5 * 0.4 + 0.5 * 0.6 * 0.05)  # "7}" and "7.0}" are both 7
    assert probs[8.0] == pytest.approx(0.3)
    assert readout.mass == pytest.approx(1.0)
    assert readout.greedy == 7.5
    assert readout.expected == pytest.approx(sum(v * p for v, p in probs.items()))


def test_off_path_one_is_ambiguous_and_left_out() -> None:
    # The path writes 8; the alternative "1" could be 1, 1.5 or 10: reported as unresolved, not guessed.
    readout = read_boxed_score(box(tok("8", 0.6, ("1", 0.3), ("9", 0.1)), tok("}", 1.0)))
    assert readout is not None
    assert readout.unresolved_mass == pytest.approx(0.3)
    assert readout.mass == pytest.approx(0.7)
    assert set(as_dict(readout)) == {8.0, 9.0}
    assert readout.expected == pytest.approx((0.6 * 8 + 0.1 * 9) / 0.7)


def test_whole_ten_token_and_spaces() -> None:
    # A tokenizer with "10" as one token, and the "\boxed{ 7 }" spacing.
    readout = read_boxed_score(box(tok(" 10", 0.5, (" 9", 0.5)), tok(" }", 1.0)))
    assert readout is not None
    assert as_dict(readout) == {9.0: 0.5, 10.0: 0.5}
    assert readout.expected == pytest.approx(9.5)
    assert readout.greedy == 10.0


def test_brace_merged_into_the_score_token() -> None:
    # "{7" shares a token with the brace: only alternatives that also open the box count, renormalised.
    steps = [
        TokenLogprob("$\\", 0.0),
        TokenLogprob("box", 0.0),
        TokenLogprob("ed", 0.0),
        tok("{7", 0.4, ("{8", 0.4), ("{", 0.1), ("X", 0.1)),
        tok("}", 1.0),
    ]
    readout = read_boxed_score(steps)
    assert readout is not None
    # "{" alone (0.1 of 0.9) is a bare brace whose continuation is unknown: unresolved.
    assert readout.unresolved_mass == pytest.approx(0.1 / 0.9)
    assert as_dict(readout) == {7.0: 0.5, 8.0: 0.5}
    assert readout.greedy == 7.0


def test_last_box_is_read_not_a_per_criterion_one() -> None:
    per_criterion = [TokenLogprob("\\", 0.0), TokenLogprob("box", 0.0), TokenLogprob("ed", 0.0)]
    per_criterion += [TokenLogprob("{", 0.0), tok("3", 1.0), tok("}", 1.0), TokenLogprob(" then ", 0.0)]
    readout = read_boxed_score(per_criterion + box(tok("9", 0.9, ("8", 0.1)), tok("}", 1.0)))
    assert readout is not None
    assert readout.greedy == 9.0
    assert readout.expected == pytest.approx(8.9)


def test_low_mass_is_untrusted_and_gives_no_number() -> None:
    # Most probability on non-score tokens ("N" as in "N/A", "-"): say so instead of inventing a number.
    readout = read_boxed_score(box(tok("N", 0.7, ("5", 0.2), ("-", 0.1)), tok("/", 1.0)))
    assert readout is not None
    assert not readout.trusted
    assert readout.expected is None
    assert readout.mass == pytest.approx(0.2)
    assert readout.problem is not None
    assert "20.0%" in readout.problem
    assert readout.greedy is None


def test_no_box_gives_none_and_min_mass_is_validated() -> None:
    assert read_boxed_score([TokenLogprob("no", 0.0), TokenLogprob(" box", 0.0)]) is None
    with pytest.raises(ValueError, match="min_mass"):
        score_distribution([tok("7", 1.0)], min_mass=1.5)


def test_out_of_range_values_are_not_scores() -> None:
    readout = score_distribution([tok("1", 0.5, ("4", 0.5)), tok("1", 1.0, ("}", 0.0001)), tok("}", 1.0)])
    # "11" is outside 0-10; only "4" (assumed) and "1}" (tiny) remain.
    assert 11.0 not in as_dict(readout)
    assert readout.greedy is None


def test_forced_suffix_and_closed_score() -> None:
    assert FORCED_READOUT_SUFFIX.endswith("\\boxed{")
    assert closed_score("7}$ and more") == 7.0
    assert closed_score(" 7.5 }") == 7.5
    assert closed_score("10") is None  # never closed
    assert closed_score("12}") is None
    assert closed_score("N/A}") is None
