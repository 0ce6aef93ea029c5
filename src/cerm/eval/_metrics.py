"""Benchmark metrics over per-item records (pure Python: no model, no I/O).

A record is what the runner writes per item (one JSON line)::

    {"id": ..., "category": ..., "subset": ..., "meta": {...},
     "candidates": [{"label": "chosen"|"rejected", "style": str|None, "chars": int,
                     "status": "scored"|"unscorable"|"error", "score": float|None, "reason": str|None}, ...]}

Pairwise protocol. A pointwise judge scores each candidate once, under criteria shared by every candidate of the item,
so the order in which a pair is shown does not exist and position bias cannot arise: there is no "both orders" pass
(JudgeBench's swap is a remedy for pairwise judges). A pair is every (chosen, rejected) combination of an item (1 for a
plain pair, 9 for an RM-Bench item); accuracies pool pairs.

Outcomes of a pair: ``win`` (chosen scored strictly higher), ``loss``, ``tie`` (equal scores), ``unscorable``
(either side has no score: UNSCORABLE, the judge gave no verdict, or ERROR, no judgment was produced). How ties and
pairs without a verdict enter accuracy is explicit:

* ``tie_policy``: ``"half"`` (0.5 credit, default, the expectation of a coin flip), ``"wrong"`` (0), ``"excluded"``
  (left out of the denominator);
* ``unscorable_policy``: ``"wrong"`` (default: a failure is never credit), ``"tie"`` (treated as a tie, so it follows
  ``tie_policy``), ``"excluded"`` (left out). Every accuracy is reported with its coverage (the share of pairs with
  two scores), and ``scorable_accuracy`` gives the accuracy over those pairs only. A judge that scores nothing has
  coverage 0% and accuracy 0%, never 50%.

Benchmarks scored as their authors score them are in :mod:`cerm.eval._presets`.

Tie-breaks (``evaluate(..., tie_break=TieBreak(...))``): a record's candidates then carry a ``tie_break`` entry
(``group``, ``key``, ``rank``, ``contending``, ``chains``, ...; their ``score`` stays the first judgment's). A pair
of two candidates of the same tie group, and the Best-of-N verdict on a tie at the top, follow the tie-break's order
(still a tie only when both were still in contention with equal keys); every other comparison uses the scores. The
Best-of-N curve over subsets and the benchmark presets use the scores only.

Best-of-N follows RewardBench 2: the chosen answer earns 1 when it alone has the top score, 1/m when it ties with m-1
others at the top, 0 otherwise. A set with any UNSCORABLE candidate follows ``unscorable_policy``: ``"tie"`` counts it
as all N tied (1/N, the random baseline), ``"wrong"`` as 0, ``"excluded"`` leaves it out.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cerm._errors import ConfigurationError
from cerm.protocol import PairOutcome, pair_outcome

TiePolicy = Literal["wrong", "half", "excluded"]
UnscorablePolicy = Literal["tie", "wrong", "excluded"]
Outcome = PairOutcome
Record = Mapping[str, Any]

TIE_POLICIES: tuple[str, ...] = ("half", "wrong", "excluded")
UNSCORABLE_POLICIES: tuple[str, ...] = ("wrong", "tie", "excluded")

#: Best-of-N sets bigger than this many combinations per chosen answer are subsampled (seeded) for the curve.
MAX_COMBINATIONS = 64


def check_policies(tie_policy: str, unscorable_policy: str) -> None:
    if tie_policy not in TIE_POLICIES:
        raise ConfigurationError(f"tie_policy must be one of {TIE_POLICIES}, got {tie_policy!r}")
    if unscorable_policy not in UNSCORABLE_POLICIES:
        raise ConfigurationError(f"unscorable_policy must be one of {UNSCORABLE_POLICIES}, got {unscorable_policy!r}")


def outcome(chosen: float | None, rejected: float | None) -> Outcome:
    """The verdict on one pair from its two scores (None = UNSCORABLE): the protocol's one pair rule, which
    ``Judge.compare`` and the GRPO rewards use too."""
    return pair_outcome(chosen, rejected)


def credit(
    result: Outcome, tie_policy: TiePolicy = "half", unscorable_policy: UnscorablePolicy = "wrong"
) -> float | None:
    """The accuracy credit of one pair; None means excluded from the denominator."""
    if result == "win":
        return 1.0
    if result == "loss":
        return 0.0
    if result == "unscorable":
        if unscorable_policy == "wrong":
            return 0.0
        if unscorable_policy == "excluded":
            return None
    return {"half": 0.5, "wrong": 0.0, "excluded": None}[tie_policy]


@dataclass(frozen=True)
class Pair:
    """One (chosen, rejected) comparison inside an item."""

    item_id: str
    chosen: int
    rejected: int
    chosen_score: float | None
    rejected_score: float | None
    chosen_chars: int
    rejected_chars: int
    chosen_style: str | None
    rejected_style: str | None

    #: The verdict of a tie-break when both candidates were in the same tie group (None: from the scores).
    decided: Outcome | None = None

    @property
    def outcome(self) -> Outcome:
        return self.decided or outcome(self.chosen_score, self.rejected_score)


@dataclass(frozen=True)
class PairStats:
    """Counts and accuracies over a set of pairs. Accuracies are None when no pair counts."""

    n: int
    wins: int
    losses: int
    ties: int
    unscorable: int
    accuracy: float | None
    scorable_accuracy: float | None
    tie_policy: str
    unscorable_policy: str

    @property
    def unscorable_rate(self) -> float | None:
        return self.unscorable / self.n if self.n else None

    @property
    def coverage(self) -> float | None:
        """The share of pairs in which both sides were scored (None for no pairs)."""
        return (self.n - self.unscorable) / self.n if self.n else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "unscorable": self.unscorable,
            "accuracy": self.accuracy,
            "scorable_accuracy": self.scorable_accuracy,
            "unscorable_rate": self.unscorable_rate,
            "coverage": self.coverage,
            "tie_policy": self.tie_policy,
            "unscorable_policy": self.unscorable_policy,
        }


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _score(candidate: Mapping[str, Any]) -> float | None:
    # Only a SCORED judgment has a score; anything else is None whatever the file says.
    if candidate.get("status") != "scored":
        return None
    value = candidate.get("score")
    return float(value) if isinstance(value, (int, float)) else None


def _tie_entry(candidate: Mapping[str, Any]) -> Mapping[str, Any] | None:
    entry = candidate.get("tie_break")
    return entry if isinstance(entry, Mapping) and entry.get("group") is not None else None


def tie_break_outcome(chosen: Mapping[str, Any], rejected: Mapping[str, Any]) -> Outcome | None:
    """The verdict of a tie-break on two candidates of the same tie group (by the decision's ``rank``; a tie when
    both were still in contention with equal keys), or None when the scores decide."""
    a, b = _tie_entry(chosen), _tie_entry(rejected)
    if a is None or b is None or a["group"] != b["group"] or _score(chosen) is None or _score(rejected) is None:
        return None
    if a.get("contending") and b.get("contending") and a.get("key") == b.get("key"):
        return "tie"
    return "win" if a["rank"] < b["rank"] else "loss"


def pairs(records: Iterable[Record]) -> list[Pair]:
    """Every (chosen, rejected) pair of every record."""
    out: list[Pair] = []
    for record in records:
        cands = record["candidates"]
        chosen = [i for i, c in enumerate(cands) if c["label"] == "chosen"]
        rejected = [i for i, c in enumerate(cands) if c["label"] == "rejected"]
        for i in chosen:
            for j in rejected:
                out.append(
                    Pair(
                        item_id=str(record["id"]),
                        chosen=i,
                        rejected=j,
                        chosen_score=_score(cands[i]),
                        rejected_score=_score(cands[j]),
                        chosen_chars=int(cands[i].get("chars", 0)),
                        rejected_chars=int(cands[j].get("chars", 0)),
                        chosen_style=cands[i].get("style"),
                        rejected_style=cands[j].get("style"),
                        decided=tie_break_outcome(cands[i], cands[j]),
                    )
                )
    return out


def pair_stats(
    selected: Sequence[Pair], tie_policy: TiePolicy = "half", unscorable_policy: UnscorablePolicy = "wrong"
) -> PairStats:
    check_policies(tie_policy, unscorable_policy)
    counts = Counter(p.outcome for p in selected)
    credits = [c for p in selected if (c := credit(p.outcome, tie_policy, unscorable_policy)) is not None]
    scorable = [c for p in selected if p.outcome != "unscorable" and (c := credit(p.outcome, tie_policy)) is not None]
    return PairStats(
        n=len(selected),
        wins=counts["win"],
        losses=counts["loss"],
        ties=counts["tie"],
        unscorable=counts["unscorable"],
        accuracy=_mean(credits),
        scorable_accuracy=_mean(scorable),
        tie_policy=tie_policy,
        unscorable_policy=unscorable_policy,
    )


def breakdown(
    records: Sequence[Record],
    key: Callable[[Record], str | None],
    tie_policy: TiePolicy = "half",
    unscorable_policy: UnscorablePolicy = "wrong",
) -> dict[str, PairStats]:
    """Pair statistics per group (for example per category); records whose key is None are skipped."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        name = key(record)
        if name is not None:
            groups.setdefault(name, []).append(record)
    return {name: pair_stats(pairs(group), tie_policy, unscorable_policy) for name, group in sorted(groups.items())}


def judgment_stats(records: Iterable[Record]) -> dict[str, Any]:
    """How many candidate judgments were scored, how many were UNSCORABLE (the judge's text gave no score) and how many
    ERROR (no judgment: a generation failed), and why (reasons counted, most common first)."""
    total = scored = errors = 0
    items = errored_items = 0
    reasons: Counter[str] = Counter()
    for record in records:
        items += 1
        item_error = False
        for cand in record["candidates"]:
            total += 1
            if _score(cand) is not None:
                scored += 1
                continue
            if cand.get("status") == "error":
                errors += 1
                item_error = True
                reasons["ERROR: " + str(cand.get("reason") or "no reason recorded")] += 1
            else:
                reasons[str(cand.get("reason") or "no reason recorded")] += 1
        errored_items += item_error
    unscorable = total - scored - errors
    return {
        "judgments": total,
        "scored": scored,
        "unscorable": unscorable,
        "errors": errors,
        "errored_items": errored_items,
        "coverage": scored / total if total else None,
        "unscorable_rate": unscorable / total if total else None,
        "error_rate": errors / total if total else None,
        "reasons": reasons.most_common(),
    }


# -- Best-of-N ---------------------------------------------------------------------------------------------------------
def best_of_n_credit(
    chosen: float | None, others: Sequence[float | None], unscorable_policy: UnscorablePolicy = "wrong"
) -> float | None:
    """RewardBench 2's rule for one set: 1/m when the chosen answer is among the m candidates tied at the top."""
    if chosen is None or any(s is None for s in others):
        if unscorable_policy == "wrong":
            return 0.0
        if unscorable_policy == "excluded":
            return None
        return 1.0 / (1 + len(others))
    scores = [chosen, *(s for s in others if s is not None)]
    top = max(scores)
    if chosen < top:
        return 0.0
    return 1.0 / sum(1 for s in scores if s == top)


@dataclass(frozen=True)
class BestOfNPoint:
    """Best-of-N accuracy at one N, with the random baseline 1/N."""

    n_candidates: int
    sets: int
    items: int
    accuracy: float | None
    unscorable_sets: int

    @property
    def baseline(self) -> float:
        return 1.0 / self.n_candidates


def _item_scores(record: Record) -> tuple[list[float | None], list[float | None]]:
    cands = record["candidates"]
    chosen = [_score(c) for c in cands if c["label"] == "chosen"]
    rejected = [_score(c) for c in cands if c["label"] == "rejected"]
    return chosen, rejected


def best_of_n(records: Sequence[Record], unscorable_policy: UnscorablePolicy = "wrong") -> list[BestOfNPoint]:
    """Full-set Best-of-N per set size: each chosen answer of an item against all of its rejected answers
    (RM-Bench: each chosen style against the three rejected styles, best-of-4). Grouped by N."""
    by_n: dict[int, tuple[list[float], set[str], int, int]] = {}
    for record in records:
        chosen, rejected = _item_scores(record)
        if not chosen or not rejected:
            continue
        n = 1 + len(rejected)
        credits, items, sets, bad = by_n.get(n, ([], set(), 0, 0))
        cands = record["candidates"]
        chosen_cands = [cand for cand in cands if cand["label"] == "chosen"]
        rejected_cands = [cand for cand in cands if cand["label"] == "rejected"]
        for c, cand in zip(chosen, chosen_cands, strict=True):
            value = best_of_n_credit(c, rejected, unscorable_policy)
            if value is not None and value > 0:  # at the top: a tie-break may have decided among the tied
                value = _tie_break_credit(cand, rejected_cands, value)
            sets += 1
            bad += c is None or any(s is None for s in rejected)
            if value is not None:
                credits.append(value)
        items.add(str(record["id"]))
        by_n[n] = (credits, items, sets, bad)
    return [
        BestOfNPoint(n, sets, len(items), _mean(credits), bad)
        for n, (credits, items, sets, bad) in sorted(by_n.items())
    ]


def _tie_break_credit(chosen: Mapping[str, Any], others: Sequence[Mapping[str, Any]], credit: float) -> float:
    """The Best-of-N credit of a chosen answer at the top after a tie-break among the tied (1 if it won, 1/m if m
    contenders stayed tied with it, 0 if it lost); ``credit`` (from the scores) when no tie-break decided."""
    verdicts = [tie_break_outcome(chosen, other) for other in others]
    if all(v is None for v in verdicts):
        return credit
    if any(v == "loss" for v in verdicts):
        return 0.0
    return 1.0 / (1 + sum(1 for v in verdicts if v == "tie"))


def best_of_n_curve(
    records: Sequence[Record], unscorable_policy: UnscorablePolicy = "wrong", seed: int = 0
) -> list[BestOfNPoint]:
    """Best-of-N accuracy as N grows, from items with several rejected answers.

    How sets are built: for N = 2 .. 1 + (most rejected answers of any item), every item with at least N - 1 rejected
    answers contributes, for each of its chosen answers, every combination of N - 1 of its rejected answers (a seeded
    sample of ``MAX_COMBINATIONS`` when there are more), all scored under the item's one criteria set. The credit of a
    set follows :func:`best_of_n_credit`; the point is the mean over sets, so an item weighs the same at every N.
    """
    rng = random.Random(seed)
    prepared = [(str(r["id"]), *_item_scores(r)) for r in records]
    largest = max((len(rej) for _, ch, rej in prepared if ch), default=0)
    points: list[BestOfNPoint] = []
    for size in range(1, largest + 1):
        values: list[float] = []
        items = sets = bad = 0
        for _, chosen, rejected in prepared:
            if not chosen or len(rejected) < size:
                continue
            items += 1
            combos = list(itertools.combinations(range(len(rejected)), size))
            if len(combos) > MAX_COMBINATIONS:
                combos = rng.sample(combos, MAX_COMBINATIONS)
            for c in chosen:
                per_item: list[float] = []
                for combo in combos:
                    others = [rejected[k] for k in combo]
                    sets += 1
                    bad += c is None or any(s is None for s in others)
                    value = best_of_n_credit(c, others, unscorable_policy)
                    if value is not None:
                        per_item.append(value)
                if per_item:
                    values.append(math.fsum(per_item) / len(per_item))
        points.append(BestOfNPoint(size + 1, sets, items, _mean(values), bad))
    return points


# -- RM-Bench ----------------------------------------------------------------------------------------------------------
def style_grid(
    records: Sequence[Record], tie_policy: TiePolicy = "half", unscorable_policy: UnscorablePolicy = "wrong"
) -> dict[str, Any] | None:
    """RM-Bench's 3x3 grid: chosen style (rows) x rejected style (columns), and easy / normal / hard accuracy.

    With styles ordered concise < detailed_plain < detailed_markdown, RM-Bench's hard accuracy is the upper triangle
    (the chosen answer is in a plainer style than the rejected one), normal the diagonal, easy the lower triangle.
    Returns None when no record has styles.
    """
    styled = [p for p in pairs(records) if p.chosen_style is not None and p.rejected_style is not None]
    if not styled:
        return None
    order = list(dict.fromkeys(s for p in styled for s in (p.chosen_style, p.rejected_style) if s is not None))
    known = ["concise", "detailed_plain", "detailed_markdown"]
    if set(order) <= set(known):
        order = [s for s in known if s in order]
    rank = {s: i for i, s in enumerate(order)}
    cells: dict[str, dict[str, PairStats]] = {}
    bands: dict[str, list[Pair]] = {"easy": [], "normal": [], "hard": []}
    for cs in order:
        cells[cs] = {}
        for rs in order:
            cell = [p for p in styled if p.chosen_style == cs and p.rejected_style == rs]
            cells[cs][rs] = pair_stats(cell, tie_policy, unscorable_policy)
            band = "normal" if rank[cs] == rank[rs] else "hard" if rank[cs] < rank[rs] else "easy"
            bands[band].extend(cell)
    return {
        "styles": order,
        "cells": cells,
        "bands": {name: pair_stats(group, tie_policy, unscorable_policy) for name, group in bands.items()},
    }


# -- length bias -------------------------------------------------------------------------------------------------------
def _pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    if len(xs) < 3:
        return None
    mx, my = math.fsum(xs) / len(xs), math.fsum(ys) / len(ys)
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    syy = math.fsum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / math.sqrt(sxx * syy)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # ties share their average rank
        i = j + 1
    return ranks


def length_bias(
    records: Sequence[Record], tie_policy: TiePolicy = "half", unscorable_policy: UnscorablePolicy = "wrong"
) -> dict[str, Any]:
    """Length diagnostics, lengths in characters.

    * Pearson and Spearman correlation of score with length over every scored judgment (None with fewer than 3
      scored judgments or no variation);
    * pair accuracy split by whether the chosen answer is the shorter, the longer, or the same length;
    * among decided pairs (win or loss), the share in which the judge preferred the longer answer.
    """
    lengths: list[float] = []
    scores: list[float] = []
    for record in records:
        for cand in record["candidates"]:
            s = _score(cand)
            if s is not None:
                lengths.append(float(cand.get("chars", 0)))
                scores.append(s)
    all_pairs = pairs(records)
    shorter = [p for p in all_pairs if p.chosen_chars < p.rejected_chars]
    longer = [p for p in all_pairs if p.chosen_chars > p.rejected_chars]
    same = [p for p in all_pairs if p.chosen_chars == p.rejected_chars]
    decided = [p for p in all_pairs if p.outcome in ("win", "loss") and p.chosen_chars != p.rejected_chars]
    prefers_longer = sum(1 for p in decided if (p.outcome == "win") == (p.chosen_chars > p.rejected_chars))
    return {
        "scored_judgments": len(scores),
        "pearson": _pearson(lengths, scores),
        "spearman": _pearson(_ranks(lengths), _ranks(scores)) if len(scores) >= 3 else None,
        "chosen_shorter": pair_stats(shorter, tie_policy, unscorable_policy),
        "chosen_longer": pair_stats(longer, tie_policy, unscorable_policy),
        "same_length": pair_stats(same, tie_policy, unscorable_policy),
        "decided_pairs": len(decided),
        "prefers_longer_rate": prefers_longer / len(decided) if decided else None,
    }


def score_values(records: Iterable[Record], label: str) -> list[float]:
    """Scores of every scored candidate with this label (for histograms)."""
    return [s for r in records for c in r["candidates"] if c["label"] == label and (s := _score(c)) is not None]
