"""Parsers for the judge's own text: the criteria list and the boxed scores of an evaluation.

Only text the judge generated ever reaches these functions. The Judge never parses the prompt or the response under
evaluation, so a response that contains ``\\boxed{10}`` cannot leak into its own score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cerm._types import Criteria, Criterion, CriterionScore, Evaluation, OtherPoints

START_OF_CRITERIA = "[Start of Criteria]"
END_OF_CRITERIA = "[End of Criteria]"

OVERALL_RANGE = (0.0, 10.0)
CRITERION_RANGE = (0.0, 5.0)

# The opening of \boxed{ 7.5 } (optionally inside $...$); the content is read up to the matching brace, so a box
# with nested braces (\boxed{\frac{15}{2}}) is seen as one box instead of being skipped.
_BOXED_OPEN = re.compile(r"\\boxed\s*\{")
# A plain number, optionally signed (Other Point(s) may be written as a bonus "+1" or deduction "-0.5").
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_ITEM_PREFIX = re.compile(r"^\s*(?:\d+\s*[.)]|[-*•])\s*")

# Section headings are matched where a judge writes headings: at the start of a line, after optional Markdown heading
# marks, a bullet, a number ("4." / "4)") and bold or italic marks, in any order the released model uses them
# ("**5. Other Point(s)**", "5. **Other Point(s):**", "### Overall Evaluation"). The same words inside a sentence
# ("other points such as tone") are prose, not a heading.
_HEADING_LEAD = r"^[ \t]*(?P<lead>(?:(?:#{1,6}|[-*•+]|\d{1,2}[ \t]*[.)]|\*\*|__|\*|_)[ \t]*){0,4})"
_OTHER_HEADING = re.compile(
    _HEADING_LEAD + r"other[ \t]+points?(?:[ \t]*\([ \t]*s[ \t]*\))?", re.IGNORECASE | re.MULTILINE
)
_OVERALL_HEADING = re.compile(
    _HEADING_LEAD + r"(?:overall|final|comprehensive|conclusion|summary)\b", re.IGNORECASE | re.MULTILINE
)
# What may follow the heading words on a line without heading marks: a colon, closing bold, or the end of the line
# ("Other Point(s):"), after at most a few more title words for the overall section ("Overall quality score:").
_CLOSE = r"[ \t]*(?:\*\*|__|\*|_)?[ \t]*(?:[:：]|$)"
_OTHER_CLOSE = re.compile(_CLOSE, re.MULTILINE)
_OVERALL_CLOSE = re.compile(r"(?:[ \t]+[A-Za-z()/-]+){0,4}?" + _CLOSE, re.MULTILINE)
# The overall score announced on the line of its box ("... so the overall quality score is $\boxed{7}$").
_OVERALL_ON_LINE = re.compile(r"\b(?:overall|final)\b.*\b(?:score|rating)\b", re.IGNORECASE)


def _strip_markup(text: str) -> str:
    return text.replace("**", "").replace("__", "").strip().strip("*_` ").strip()


def parse_criteria(text: str) -> Criteria:
    """Parse a criteria turn. Never raises: a missing block gives empty ``items`` and a ``problem``.

    The last ``[Start of Criteria]`` marker wins, because an analysis may mention the markers before the real list.
    """
    start = text.rfind(START_OF_CRITERIA)
    if start < 0:
        return Criteria(text=text, items=(), problem=f"no {START_OF_CRITERIA} marker in the criteria turn")
    body_start = start + len(START_OF_CRITERIA)
    end = text.find(END_OF_CRITERIA, body_start)
    problem = None
    if end < 0:
        problem = f"no {END_OF_CRITERIA} marker after {START_OF_CRITERIA} (the list may be truncated)"
        end = len(text)
    items: list[Criterion] = []
    for raw_line in text[body_start:end].splitlines():
        line = _ITEM_PREFIX.sub("", raw_line).strip()
        if not line:
            continue
        term, sep, description = line.partition(":")
        if not sep:
            items.append(Criterion(term=_strip_markup(line), description=""))
        else:
            items.append(Criterion(term=_strip_markup(term), description=_strip_markup(description)))
    if not items and problem is None:
        problem = "the criteria block is empty"
    return Criteria(text=text, items=tuple(items), problem=problem)


def parse_number(raw: str) -> float | None:
    """A boxed value as a number, or None when it is not exactly one plain number (e.g. "7/10", "N/A")."""
    cleaned = raw.strip().strip("$").strip()
    if not _NUMBER.fullmatch(cleaned):
        return None
    return float(cleaned)


def _scan_boxes(text: str) -> list[tuple[int, str | None]]:
    """Every ``\\boxed{`` opening as (position, content up to its matching brace), or content None when the box is
    never closed (a cut-off evaluation). Boxes nested inside a closed box belong to it and are not listed."""
    boxes: list[tuple[int, str | None]] = []
    covered_until = -1
    for match in _BOXED_OPEN.finditer(text):
        if match.start() < covered_until:
            continue
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth:
            boxes.append((match.start(), None))
        else:
            boxes.append((match.start(), text[match.end() : i - 1]))
            covered_until = i
    return boxes


def boxed_values(text: str) -> list[tuple[int, str]]:
    """Every closed ``\\boxed{...}`` in the text, as (position, raw content), in order."""
    return [(pos, raw) for pos, raw in _scan_boxes(text) if raw is not None]


def _headings(pattern: re.Pattern[str], close: re.Pattern[str], text: str) -> list[int]:
    """Start positions of headings: heading marks (``#``, bold, a number) before the words, or a colon, closing bold
    or the end of the line right after them."""
    found = []
    for match in pattern.finditer(text):
        lead = match.group("lead")
        marked = any(mark in lead for mark in ("#", "**", "__")) or any(ch.isdigit() for ch in lead)
        if marked or close.match(text, match.end()):
            found.append(match.start("lead"))
    return found


@dataclass(frozen=True)
class _Layout:
    """Where the parts of an evaluation are: every box, the Other Point(s) entry and its box, the overall box."""

    boxes: list[tuple[int, str | None]]
    overall_headings: list[int]
    other_heading: int | None
    other_box: tuple[int, str] | None


def _line_start(text: str, position: int) -> int:
    return text.rfind("\n", 0, position) + 1


def _layout(text: str) -> _Layout:
    boxes = _scan_boxes(text)
    others = _headings(_OTHER_HEADING, _OTHER_CLOSE, text)
    overall = _headings(_OVERALL_HEADING, _OVERALL_CLOSE, text)

    def entry_box(heading: int) -> tuple[int, str] | None:
        """The first box of the Other Point(s) section that starts at ``heading``: before the next overall or Other
        heading, and not on a later line that announces the overall score."""
        ends = [h for h in (*overall, *others) if h > heading]
        end = min(ends) if ends else len(text)
        for pos, raw in boxes:
            if pos <= heading or raw is None:
                continue
            if pos >= end:
                return None
            line = _line_start(text, pos)
            if line > heading and _OVERALL_ON_LINE.search(text, line, pos):
                return None
            return pos, raw
        return None

    # The entry is the last Other Point(s) heading with a box of its own; failing that, the last one.
    for heading in reversed(others):
        box = entry_box(heading)
        if box is not None:
            return _Layout(boxes, overall, heading, box)
    return _Layout(boxes, overall, others[-1] if others else None, None)


def _overall(layout: _Layout) -> tuple[float | None, str | None]:
    if not layout.boxes:
        return None, "no \\boxed{} score in the evaluation"
    pos, raw = layout.boxes[-1]
    if raw is None:
        # Reading the box before it would take a per-criterion score for the overall one.
        return None, "the last \\boxed{ is never closed (the evaluation looks cut off)"
    if layout.other_box is not None and layout.other_box[0] == pos:
        return None, (
            f"the last boxed value {raw.strip()!r} belongs to the Other Point(s) entry (a bonus or deduction); "
            "the evaluation has no overall score"
        )
    value = parse_number(raw)
    if value is None:
        return None, f"the last boxed value {raw.strip()!r} is not a number"
    if raw.strip().strip("$").strip()[:1] in "+-":
        return None, f"the last boxed value {raw.strip()!r} is signed: a bonus or deduction, never the overall score"
    low, high = OVERALL_RANGE
    if not low <= value <= high:
        return None, f"overall score {value:g} is outside {low:g}-{high:g}"
    return value, None


def parse_overall_score(text: str) -> tuple[float | None, str | None]:
    """The reward: the last boxed value, when it is the overall score. Returns (score, problem); exactly one is None.

    The last box is refused (UNSCORABLE, with the reason) when it is not a plain unsigned number in 0-10, or when it
    is the box of the Other Point(s) entry: an evaluation that ends with its bonus or deduction has no overall score.
    """
    return _overall(_layout(text))


def parse_evaluation(text: str, criteria: Criteria | None = None) -> Evaluation:
    """Parse an evaluation turn: per-criterion scores, the optional Other Point(s) entry, and the overall score.

    The overall score is the last box, read as :func:`parse_overall_score` does. The Other Point(s) entry starts at a
    heading of that name (a heading: at the start of a line, bold, numbered or ``#``; not the words inside a
    sentence) and its score is the first box of its section. The remaining boxes are per-criterion scores in order,
    matched to ``criteria.items`` by position.
    """
    layout = _layout(text)
    overall, problem = _overall(layout)
    all_boxes = layout.boxes
    # Every closed box except the last one (the overall score, or a malformed/unclosed last box).
    inner = [(pos, raw) for pos, raw in all_boxes[:-1] if raw is not None]
    warnings: list[str] = []

    other: OtherPoints | None = None
    if layout.other_heading is not None:
        start = layout.other_heading
        if layout.other_box is not None:
            pos, raw = layout.other_box
            other = OtherPoints(text=text[start:pos].strip(), score=parse_number(raw), raw=raw)
            inner = [(p, r) for p, r in inner if p != pos]
        else:
            # Up to the overall section (or the next box, or the end).
            following = [p for p, _ in all_boxes if p > start] + [h for h in layout.overall_headings if h > start]
            end = min(following) if following else len(text)
            other = OtherPoints(text=text[start:end].strip(), score=None, raw=None)
    terms = criteria.items if criteria is not None else ()
    scores: list[CriterionScore] = []
    low, high = CRITERION_RANGE
    for i, (_, raw) in enumerate(inner):
        value = parse_number(raw)
        term = terms[i].term if i < len(terms) else None
        if value is None:
            warnings.append(f"criterion {i + 1}: boxed value {raw.strip()!r} is not a number")
        elif not low <= value <= high:
            warnings.append(f"criterion {i + 1}: score {value:g} is outside {low:g}-{high:g}")
        scores.append(CriterionScore(index=i, term=term, score=value, raw=raw))
    if terms and overall is not None and len(scores) != len(terms):
        warnings.append(f"{len(scores)} per-criterion scores for {len(terms)} criteria")
    return Evaluation(
        text=text,
        criterion_scores=tuple(scores),
        other_points=other,
        overall=overall,
        problem=problem,
        warnings=tuple(warnings),
    )
