"""Parsers on realistic CE-RM outputs, well formed and malformed. UNSCORABLE is never a number."""

from __future__ import annotations

import pytest

from cerm.protocol import (
    END_OF_CRITERIA,
    START_OF_CRITERIA,
    boxed_values,
    parse_criteria,
    parse_evaluation,
    parse_number,
    parse_overall_score,
)

# -- criteria turns
CRITERIA_TURN = """The user wants a Python function that removes duplicates from a list while keeping the original \
order. The key signals of quality are whether the code actually works (including edge cases such as an empty list \
or unhashable items), whether it preserves order as requested, and whether the explanation helps the user. \
Performance matters less for a task like this, but a quadratic solution would be a weakness.

[Start of Criteria]
1. **Correctness**: The function returns the input's unique elements in their first-seen order for all inputs.
2. **Requirement Adherence**: The solution preserves order and does not rely on unordered sets alone.
3. **Efficiency**: The approach runs in linear time (e.g. a seen-set with a list), not quadratic.
4. **Explanation Quality**: The accompanying explanation is accurate, concise and helps the user understand the code.
[End of Criteria]"""

CRITERIA_WITH_EARLY_MARKERS = """I will first think about what matters, then give the list between [Start of Criteria] \
and [End of Criteria] as instructed.

The query is a request for a haiku about autumn. A haiku has a 5-7-5 syllable structure, and evocative imagery is \
central to the form.

[Start of Criteria]
1. Form: The poem follows the 5-7-5 syllable structure of a haiku.
2. Imagery: The poem evokes autumn with concrete, vivid images.
[End of Criteria]"""

TRUNCATED_CRITERIA = """The user asks for a summary of a research paper.

[Start of Criteria]
1. Faithfulness: The summary states only what the paper says.
2. Coverage: The main contribution, method and results are all present.
3. Conci"""


def test_criteria_realistic_list() -> None:
    criteria = parse_criteria(CRITERIA_TURN)
    assert criteria.well_formed
    assert criteria.problem is None
    assert criteria.text == CRITERIA_TURN  # the raw text is kept whole: it is what the evaluation turn sees
    assert [c.term for c in criteria.items] == [
        "Correctness",
        "Requirement Adherence",
        "Efficiency",
        "Explanation Quality",
    ]
    assert criteria.items[2].description.startswith("The approach runs in linear time (e.g. a seen-set")


def test_criteria_markers_mentioned_in_the_analysis_before_the_real_list() -> None:
    criteria = parse_criteria(CRITERIA_WITH_EARLY_MARKERS)
    assert criteria.well_formed
    assert [c.term for c in criteria.items] == ["Form", "Imagery"]
    assert criteria.items[1].description.startswith("The poem evokes autumn")


def test_criteria_truncated_without_end_marker() -> None:
    criteria = parse_criteria(TRUNCATED_CRITERIA)
    assert not criteria.well_formed
    assert END_OF_CRITERIA in (criteria.problem or "")
    # What was written is still reported, the cut-off line included, and the raw text is untouched.
    assert [c.term for c in criteria.items][:2] == ["Faithfulness", "Coverage"]
    assert criteria.text == TRUNCATED_CRITERIA


def test_criteria_without_any_marker() -> None:
    text = "The user's response is: The user's response is: The user's response is:"  # what the demo model writes
    criteria = parse_criteria(text)
    assert criteria.items == ()
    assert START_OF_CRITERIA in (criteria.problem or "")
    assert criteria.text == text


def test_criteria_empty_block() -> None:
    criteria = parse_criteria("Analysis.\n[Start of Criteria]\n\n[End of Criteria]")
    assert criteria.items == ()
    assert criteria.problem == "the criteria block is empty"


def test_criteria_bullets_and_lines_without_colon() -> None:
    text = "[Start of Criteria]\n- Accuracy: correct facts\n* Tone\n2) Safety: no harmful advice\n[End of Criteria]"
    criteria = parse_criteria(text)
    assert [(c.term, c.description) for c in criteria.items] == [
        ("Accuracy", "correct facts"),
        ("Tone", ""),
        ("Safety", "no harmful advice"),
    ]


# -- evaluation turns
EVALUATION_TURN = r"""**1. Correctness**
The function uses `dict.fromkeys(items)` and converts the result back to a list. This keeps the first occurrence of \
each element and works for the empty list. It fails for unhashable items such as nested lists, which the response \
does not mention.
Score: $\boxed{4}$

**2. Requirement Adherence**
Order is preserved because dictionaries keep insertion order since Python 3.7, and the response says so explicitly.
Score: $\boxed{5}$

**3. Efficiency**
The solution is linear in the length of the input. No issue here.
Score: $\boxed{5}$

**4. Explanation Quality**
The explanation is short and correct but does not discuss the unhashable case.
Score: $\boxed{3.5}$

**Other Point(s)**
The response adds a short doctest, a useful touch beyond the criteria (bonus).
Score: $\boxed{+0.5}$

**Overall Evaluation**
The answer is correct for the common case, meets the ordering requirement and is efficient; its main weakness is the \
unmentioned failure on unhashable items. Considering the bonus for the doctest, the overall quality is high.

Overall score: $\boxed{7.5}$"""


def test_evaluation_realistic_with_other_points_bonus() -> None:
    criteria = parse_criteria(CRITERIA_TURN)
    evaluation = parse_evaluation(EVALUATION_TURN, criteria)
    assert evaluation.overall == 7.5
    assert evaluation.problem is None
    assert evaluation.text == EVALUATION_TURN
    assert [s.score for s in evaluation.criterion_scores] == [4.0, 5.0, 5.0, 3.5]
    assert [s.term for s in evaluation.criterion_scores] == [c.term for c in criteria.items]
    assert [s.index for s in evaluation.criterion_scores] == [0, 1, 2, 3]
    assert evaluation.other_points is not None
    assert evaluation.other_points.score == 0.5
    assert evaluation.other_points.raw == "+0.5"
    assert "doctest" in evaluation.other_points.text
    assert evaluation.warnings == ()


def test_evaluation_other_points_deduction_and_mentioned_again_in_the_overall_analysis() -> None:
    text = (
        "1. Accuracy: The dates are right. $\\boxed{5}$\n"
        "2. Clarity: Clear structure. $\\boxed{4}$\n"
        "Other Point(s): The response invents a citation, which is a serious flaw. $\\boxed{-1}$\n"
        "Overall: Accurate and clear, but the fabricated citation noted under Other Point(s) costs a point. "
        "$\\boxed{ 7 }$"
    )
    criteria = parse_criteria("[Start of Criteria]\n1. Accuracy: facts\n2. Clarity: structure\n[End of Criteria]")
    evaluation = parse_evaluation(text, criteria)
    assert evaluation.overall == 7.0
    assert [s.score for s in evaluation.criterion_scores] == [5.0, 4.0]
    assert evaluation.other_points is not None
    assert evaluation.other_points.score == -1.0
    assert "invents a citation" in evaluation.other_points.text
    assert evaluation.warnings == ()


def test_evaluation_other_points_without_a_box() -> None:
    text = (
        "**Correctness:** right. $\\boxed{5}$\n\n**Other Point(s):** None worth noting.\n\n"
        "**Overall:** Excellent. $\\boxed{10}$"
    )
    evaluation = parse_evaluation(text)
    assert evaluation.overall == 10.0
    assert [s.score for s in evaluation.criterion_scores] == [5.0]
    assert evaluation.other_points is not None
    assert evaluation.other_points.score is None
    assert "None worth noting" in evaluation.other_points.text


def test_evaluation_without_other_points() -> None:
    evaluation = parse_evaluation("Correctness: fine $\\boxed{3}$\nOverall: $\\boxed{6}$")
    assert evaluation.other_points is None
    assert evaluation.overall == 6.0


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ("$\\boxed{7.5}$", 7.5),
        ("\\boxed{ 7 }", 7.0),
        ("\\boxed{7.0}", 7.0),
        ("\\boxed{7}", 7.0),
        ("$\\boxed{0}$", 0.0),
        ("\\boxed{10}", 10.0),
        ("\\boxed {8.5}", 8.5),
    ],
)
def test_overall_box_variants(box: str, expected: float) -> None:
    text = f"Correctness: ok $\\boxed{{4}}$\nOverall quality score: {box}"
    assert parse_overall_score(text) == (expected, None)
    assert parse_evaluation(text).overall == expected


def test_last_box_is_the_overall_score() -> None:
    # The per-criterion scores come first; only the last box is the reward, never a combination.
    assert parse_overall_score("a $\\boxed{5}$ b $\\boxed{5}$ c $\\boxed{2}$")[0] == 2.0


# -- malformed evaluations: UNSCORABLE (overall None, a problem), never a number
MALFORMED = {
    "no box": "The response is good. I would give it an 8 out of 10.",
    "non-numeric last box": "Correctness $\\boxed{4}$ Overall: $\\boxed{excellent}$",
    "fraction": "Correctness $\\boxed{4}$ Overall: $\\boxed{7/10}$",
    "out of range high": "Correctness $\\boxed{5}$ Overall: $\\boxed{11}$",
    "out of range negative": "Correctness $\\boxed{1}$ Overall: $\\boxed{-1}$",
    "empty box": "Correctness $\\boxed{4}$ Overall: $\\boxed{}$",
    "two numbers": "Correctness $\\boxed{4}$ Overall: $\\boxed{7 or 8}$",
    "nested braces": "Correctness $\\boxed{4}$ Clarity $\\boxed{5}$ Overall: $\\boxed{\\frac{15}{2}}$",
    "double braces": "Correctness $\\boxed{4}$ Overall: $\\boxed{{7}}$",
    "text inside box": "Correctness $\\boxed{4}$ Overall: $\\boxed{\\text{8}}$",
    "unclosed last box": "Correctness $\\boxed{4}$ Clarity $\\boxed{5}$ Overall: $\\boxed{7",
    "nan": "Overall: $\\boxed{nan}$",
    "infinity": "Overall: $\\boxed{inf}$",
    "exponent": "Overall: $\\boxed{1e1}$",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_evaluations_are_unscorable(name: str) -> None:
    text = MALFORMED[name]
    score, problem = parse_overall_score(text)
    assert score is None, f"{name}: got a number {score!r} from a malformed evaluation"
    assert problem
    evaluation = parse_evaluation(text)
    assert evaluation.overall is None
    assert evaluation.problem == problem
    assert evaluation.text == text


def test_problems_name_the_cause() -> None:
    assert "no \\boxed{}" in (parse_overall_score(MALFORMED["no box"])[1] or "")
    assert "'excellent'" in (parse_overall_score(MALFORMED["non-numeric last box"])[1] or "")
    assert "outside 0-10" in (parse_overall_score(MALFORMED["out of range high"])[1] or "")
    assert "-1" in (parse_overall_score(MALFORMED["out of range negative"])[1] or "")


def test_nested_braces_never_fall_back_to_an_earlier_box() -> None:
    # If the parser skipped the malformed overall box, the last per-criterion score (5) would become the reward.
    text = MALFORMED["nested braces"]
    assert parse_overall_score(text)[0] is None
    assert "\\frac{15}{2}" in (parse_overall_score(text)[1] or "")


def test_truncated_evaluation_does_not_read_a_criterion_score_as_overall() -> None:
    # Cut off in the middle of the overall box: the previous box (a criterion score of 5) must not become the reward.
    score, problem = parse_overall_score(MALFORMED["unclosed last box"])
    assert score is None
    assert problem


def test_per_criterion_problems_are_warnings() -> None:
    # Per-criterion scores are reported as written (an out-of-range 6 stays 6) with a warning; a non-number is None.
    # Neither touches the overall score.
    text = "A $\\boxed{6}$ B $\\boxed{good}$ C $\\boxed{4}$ Overall $\\boxed{8}$"
    evaluation = parse_evaluation(text)
    assert evaluation.overall == 8.0
    assert [s.score for s in evaluation.criterion_scores] == [6.0, None, 4.0]
    assert [s.raw for s in evaluation.criterion_scores] == ["6", "good", "4"]
    assert any("outside 0-5" in w for w in evaluation.warnings)
    assert any("'good'" in w for w in evaluation.warnings)


def test_mismatched_criterion_count_is_a_warning() -> None:
    criteria = parse_criteria(CRITERIA_TURN)  # four criteria
    evaluation = parse_evaluation("Correctness $\\boxed{4}$ Overall $\\boxed{6}$", criteria)
    assert evaluation.overall == 6.0
    assert any("1 per-criterion scores for 4 criteria" in w for w in evaluation.warnings)


def test_boxed_values_positions_and_raw_contents() -> None:
    text = "x \\boxed{1} y $\\boxed{ 2.5 }$"
    assert boxed_values(text) == [(2, "1"), (15, " 2.5 ")]


def test_boxed_values_reads_nested_braces_as_one_box() -> None:
    text = "\\boxed{4} \\boxed{\\frac{15}{2}} \\boxed{\\boxed{3}}"
    assert [raw for _, raw in boxed_values(text)] == ["4", "\\frac{15}{2}", "\\boxed{3}"]


def test_unclosed_box_in_the_middle_does_not_hide_the_overall_score() -> None:
    text = "Correctness $\\boxed{4$ (typo) Clarity $\\boxed{5}$ Overall $\\boxed{8}$"
    assert parse_overall_score(text) == (8.0, None)


def test_other_points_mentioned_in_the_analysis_before_the_entry() -> None:
    text = (
        "1. Accuracy: Correct; see Other Point(s) for the style issue. $\\boxed{5}$\n"
        "2. Clarity: Good. $\\boxed{4}$\n"
        "Other Point(s): Overly long preamble. $\\boxed{-0.5}$\n"
        "Overall: $\\boxed{8}$"
    )
    evaluation = parse_evaluation(text)
    assert [s.score for s in evaluation.criterion_scores] == [5.0, 4.0]
    assert evaluation.other_points is not None
    assert evaluation.other_points.score == -0.5


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("7", 7.0), (" 7.5 ", 7.5), ("+1", 1.0), ("-0.5", -0.5), (".5", 0.5), ("$8$", 8.0)],
)
def test_parse_number_accepts_plain_numbers(raw: str, expected: float) -> None:
    assert parse_number(raw) == expected


@pytest.mark.parametrize("raw", ["", "seven", "7/10", "7 points", "1e3", "nan", "inf", "--1", "7.5.1"])
def test_parse_number_rejects_everything_else(raw: str) -> None:
    assert parse_number(raw) is None


# -- the overall score comes only from the overall section (issue 10 item 2) -------------------------------------------
# Adversarial judge texts in the released model's style: numbered bold criteria, "Score: $\boxed{ 4 }$" lines with
# spaces, an Other Point(s) entry with a signed bonus or deduction, and a final "Overall score" line.
ENDS_WITH_SIGNED_BONUS = r"""**1. Correctness**
The steps are right and the final answer is correct.
Score: $\boxed{ 5 }$

**2. Clarity**
Readable, though the second paragraph repeats the first.
Score: $\boxed{4}$

**Other Point(s)**
The response adds a worked example that goes beyond the criteria, a clear bonus.
Score: $\boxed{+1}$"""

ENDS_WITH_UNSIGNED_BONUS = ENDS_WITH_SIGNED_BONUS.replace(r"$\boxed{+1}$", r"$\boxed{1}$")


@pytest.mark.parametrize("text", [ENDS_WITH_SIGNED_BONUS, ENDS_WITH_UNSIGNED_BONUS])
def test_an_evaluation_ending_with_the_other_points_box_has_no_overall_score(text: str) -> None:
    # Before: the bonus box was the last box, so the reward was 1.0.
    score, problem = parse_overall_score(text)
    assert score is None
    assert "Other Point(s)" in (problem or "")
    evaluation = parse_evaluation(text)
    assert evaluation.overall is None
    assert evaluation.problem == problem
    assert evaluation.other_points is not None
    assert evaluation.other_points.score == 1.0  # still reported as the entry's bonus
    assert [s.score for s in evaluation.criterion_scores] == [5.0, 4.0]


@pytest.mark.parametrize("raw", ["+8", "+ 8", "-0", "+0.5"])
def test_a_signed_last_box_is_never_the_overall_score(raw: str) -> None:
    text = (
        "**1. Correctness**\nFine. Score: $\\boxed{4}$\n\n**Overall Evaluation**\nGood.\n"
        f"Overall score: $\\boxed{{{raw}}}$"
    )
    score, problem = parse_overall_score(text)
    assert score is None
    assert problem is not None
    if parse_number(raw) is not None:  # "+ 8" is not even a number
        assert "signed" in problem


PROSE_MENTIONS_OTHER_POINTS = r"""**1. Correctness**
The answer is factually right. It does not address other points such as tone, which the next criterion covers.
Score: $\boxed{4}$

**2. Tone**
Other points such as politeness are handled well: the reply is courteous throughout.
Score: $\boxed{ 5 }$

**Overall Evaluation**
A correct and courteous answer with a small gap in depth.

Overall score: $\boxed{8}$"""


def test_other_points_in_prose_are_not_the_other_points_entry() -> None:
    # Before: "other points such as tone" made criterion 1's box (then criterion 2's) the Other Point(s) entry.
    criteria = parse_criteria("[Start of Criteria]\n1. Correctness: facts\n2. Tone: politeness\n[End of Criteria]")
    evaluation = parse_evaluation(PROSE_MENTIONS_OTHER_POINTS, criteria)
    assert evaluation.overall == 8.0
    assert evaluation.other_points is None
    assert [(s.term, s.score) for s in evaluation.criterion_scores] == [("Correctness", 4.0), ("Tone", 5.0)]
    assert evaluation.warnings == ()


@pytest.mark.parametrize(
    "heading",
    [
        "**Other Point(s)**",
        "**Other Point(s):**",
        "4. **Other Point(s):**",
        "**4. Other Point(s)**",
        "### Other Point(s)",
        "- **Other Points**:",
        "Other Point(s):",
        "Other points",
    ],
)
def test_other_points_headings_as_the_judge_writes_them(heading: str) -> None:
    text = (
        "**1. Accuracy**\nCorrect. Score: $\\boxed{5}$\n\n"
        "**2. Clarity**\nClear. Score: $\\boxed{4}$\n\n"
        f"{heading}\nIt cites a source that does not exist (deduction).\nScore: $\\boxed{{-1}}$\n\n"
        "**Overall Evaluation**\nAccurate and clear, minus the invented source.\nOverall score: $\\boxed{ 7 }$"
    )
    evaluation = parse_evaluation(text)
    assert evaluation.overall == 7.0
    assert evaluation.other_points is not None
    assert evaluation.other_points.score == -1.0
    assert "does not exist" in evaluation.other_points.text
    assert [s.score for s in evaluation.criterion_scores] == [5.0, 4.0]


def test_other_points_without_a_box_then_the_overall_score_announced_in_prose() -> None:
    text = (
        "**1. Accuracy**\nCorrect. Score: $\\boxed{5}$\n\n"
        "**Other Point(s):** Nothing beyond the criteria.\n\n"
        "Taking everything into account, the overall quality score is $\\boxed{9}$."
    )
    evaluation = parse_evaluation(text)
    assert evaluation.overall == 9.0
    assert evaluation.other_points is not None
    assert evaluation.other_points.score is None
    assert [s.score for s in evaluation.criterion_scores] == [5.0]


def test_a_box_right_after_the_other_points_heading_is_that_entrys_not_the_overall() -> None:
    # Nothing announces an overall section between the heading and the last box: it is the entry's (UNSCORABLE).
    text = "**1. Accuracy**\nCorrect. Score: $\\boxed{5}$\n\n**Other Point(s):** A nice touch.\n$\\boxed{1}$"
    score, problem = parse_overall_score(text)
    assert score is None
    assert "Other Point(s)" in (problem or "")


def test_the_forced_readout_line_is_the_overall_section() -> None:
    # The forced readout appends its own sentence after the evaluation, right after an Other Point(s) entry too.
    from cerm.protocol import FORCED_READOUT_SUFFIX

    text = "1. Accuracy: fine $\\boxed{4}$\nOther Point(s): none." + FORCED_READOUT_SUFFIX + "7}$"
    assert parse_overall_score(text) == (7.0, None)
