"""Parsers for the judge's own text: the criteria list and the boxed scores of an evaluation.

Only text the judge generated ever reaches these functions. The Judge never parses the prompt or the response under
evaluation, so a response that contains ``\\boxed{10}`` cannot leak into its own score.
"""

from __future__ import annotations

import re

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
_OTHER_POINTS = re.compile(r"other\s+points?(?:\s*\(s\))?", re.IGNORECASE)


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


def parse_overall_score(text: str) -> tuple[float | None, str | None]:
    """The reward: the last boxed value, validated to 0-10. Returns (score, problem); exactly one is None."""
    boxes = _scan_boxes(text)
    if not boxes:
        return None, "no \\boxed{} score in the evaluation"
    raw = boxes[-1][1]
    if raw is None:
        # Reading the box before it would take a per-criterion score for the overall one.
        return None, "the last \\boxed{ is never closed (the evaluation looks cut off)"
    value = parse_number(raw)
    if value is None:
        return None, f"the last boxed value {raw.strip()!r} is not a number"
    low, high = OVERALL_RANGE
    if not low <= value <= high:
        return None, f"overall score {value:g} is outside {low:g}-{high:g}"
    return value, None


def parse_evaluation(text: str, criteria: Criteria | None = None) -> Evaluation:
    """Parse an evaluation turn: per-criterion scores, the optional Other Point(s) entry, and the overall score.

    Boxes before the last one are per-criterion scores in order; the one that follows an "Other Point(s)" heading is
    that entry. Per-criterion scores are matched to ``criteria.items`` by position.
    """
    overall, problem = parse_overall_score(text)
    all_boxes = _scan_boxes(text)
    # Every closed box except the last one (the overall score, or a malformed/unclosed last box).
    inner = [(pos, raw) for pos, raw in all_boxes[:-1] if raw is not None]
    warnings: list[str] = []

    other: OtherPoints | None = None
    mentions = list(_OTHER_POINTS.finditer(text))
    # The heading of the entry is the last mention followed by a per-criterion box; later mentions (the overall
    # analysis often refers back to "Other Point(s)") and earlier ones (a restated instruction) are not headings.
    other_match = next(
        (m for m in reversed(mentions) if any(pos > m.start() for pos, _ in inner)),
        mentions[-1] if mentions else None,
    )
    if other_match is not None:
        following = [(pos, raw) for pos, raw in inner if pos > other_match.start()]
        if following:
            pos, raw = following[0]
            other = OtherPoints(text=text[other_match.start() : pos].strip(), score=parse_number(raw), raw=raw)
            inner = [(p, r) for p, r in inner if p != pos]
        else:
            end = all_boxes[-1][0] if all_boxes else len(text)
            other = OtherPoints(text=text[other_match.start() : end].strip(), score=None, raw=None)

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
