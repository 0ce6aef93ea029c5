"""Two-stage-rollout rewards and group advantages (SPEC section 2), and the one pair rule every surface shares.

For a preference pair (q, y+, y-) the policy writes ``nc`` criteria sets c_1..c_nc; under each c_i it writes ``ne``
evaluations of y+ (scores s+_ij) and ``ne`` of y- (scores s-_ik). A score is a number, or None when the evaluation was
UNSCORABLE (no valid boxed overall score).

* Pair rule (:func:`pair_outcome`): ``"win"`` when both are scorable and the first is strictly higher, ``"loss"`` when
  strictly lower, ``"tie"`` when equal, ``"unscorable"`` when either is None. The eval harness's pairwise outcome and
  ``Judge.compare`` read the same rule.
* Win matrix: ``w(i,j,k) = 1`` on a win of s+_ij over s-_ik, ``tau`` on a tie (default 0), ``0`` on a loss or when
  either side is unscorable.
* ``R_crit(c_i) = mean_{j,k} w(i,j,k)``; ``R_eval(e+_ij) = mean_k w(i,j,k)``, ``R_eval(e-_ik) = mean_j w(i,j,k)``, and
  0 for an unscorable evaluation (the format penalty). Both evaluation roles are rewarded for the same event, the
  chosen response scored above the rejected one: an evaluation of y+ by how often its score beats the y- scores under
  the same criteria, an evaluation of y- by how often its score is beaten.
* Advantages: a z-score inside each of three groups (the nc criteria; the nc x ne chosen evaluations; the nc x ne
  rejected evaluations), ``(r - mean) / std`` with the population standard deviation (divide by n).
  **Zero spread**: when every reward of a group is equal (std below ``1e-6``) every advantage of the group is 0: the
  group carries no preference between its trajectories, and dividing by a tiny std would turn rounding into signal.
  **All unscorable**: a group whose evaluations are all UNSCORABLE has rewards all 0, so it is a zero-spread group and
  gets advantages 0; nothing is learnt from it, and the format failure is penalised only where some siblings succeed.
  A criteria set whose evaluations are all unscorable gets R_crit = 0 like one whose evaluations all lose.

The tree's rows, in the order training lays them out (:func:`tree_layout`): the nc criteria rows, then the chosen
evaluations criteria-major (i = 0: j = 0..ne-1, i = 1: ...), then the rejected evaluations in the same order. That is
``nc + 2 * nc * ne`` rows (20 with the paper's nc = 4, ne = 2).

Pure Python: no torch. Training (``cerm.training``) turns these numbers into tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

PairOutcome = Literal["win", "loss", "tie", "unscorable"]
TreeRole = Literal["criteria", "chosen", "rejected"]

#: A group whose rewards spread less than this (population std) gets advantages 0.
ZERO_SPREAD = 1e-6


def pair_outcome(first: float | None, second: float | None) -> PairOutcome:
    """The verdict on ``first`` against ``second`` (None = UNSCORABLE): the one pair rule of cerm.

    ``"win"`` (first strictly higher), ``"loss"``, ``"tie"`` (equal scores), or ``"unscorable"`` (either is None).
    """
    if first is None or second is None:
        return "unscorable"
    if first > second:
        return "win"
    if first < second:
        return "loss"
    return "tie"


def win_value(chosen: float | None, rejected: float | None, tie_value: float = 0.0) -> float:
    """w: 1 when the chosen score is strictly higher, ``tie_value`` on equal scores, 0 on a loss or when either
    score is None (UNSCORABLE)."""
    outcome = pair_outcome(chosen, rejected)
    return {"win": 1.0, "tie": tie_value, "loss": 0.0, "unscorable": 0.0}[outcome]


@dataclass(frozen=True)
class TreeValues:
    """One number per trajectory of a pair's tree: ``criteria[i]``, ``chosen[i][j]``, ``rejected[i][k]``."""

    criteria: tuple[float, ...]
    chosen: tuple[tuple[float, ...], ...]
    rejected: tuple[tuple[float, ...], ...]

    def flat(self) -> list[float]:
        """The values in the tree's row order (see :func:`tree_layout`)."""
        return [
            *self.criteria,
            *(v for row in self.chosen for v in row),
            *(v for row in self.rejected for v in row),
        ]


@dataclass(frozen=True)
class TreeRow:
    """What one row of a pair's tree is: its role, its criteria set ``i``, and its evaluation index ``j`` (None for
    a criteria row)."""

    role: TreeRole
    criteria_index: int
    evaluation_index: int | None


def tree_size(num_criteria: int, num_evaluations: int) -> int:
    """Rows per pair: ``nc + 2 * nc * ne``."""
    _check_shape(num_criteria, num_evaluations)
    return num_criteria + 2 * num_criteria * num_evaluations


def tree_layout(num_criteria: int, num_evaluations: int) -> tuple[TreeRow, ...]:
    """The rows of one pair's tree, in order: criteria, chosen evaluations (criteria-major), rejected evaluations."""
    _check_shape(num_criteria, num_evaluations)
    rows = [TreeRow("criteria", i, None) for i in range(num_criteria)]
    roles: tuple[TreeRole, ...] = ("chosen", "rejected")
    for role in roles:
        rows.extend(TreeRow(role, i, j) for i in range(num_criteria) for j in range(num_evaluations))
    return tuple(rows)


def _check_shape(num_criteria: int, num_evaluations: int) -> None:
    if num_criteria < 1 or num_evaluations < 1:
        raise ValueError(f"a rollout tree needs nc >= 1 and ne >= 1, got nc={num_criteria}, ne={num_evaluations}")


def _check_scores(
    chosen: Sequence[Sequence[float | None]], rejected: Sequence[Sequence[float | None]]
) -> tuple[int, int]:
    nc = len(chosen)
    if nc == 0 or len(rejected) != nc:
        raise ValueError(f"need the same number (>= 1) of criteria sets on both sides, got {nc} and {len(rejected)}")
    ne = len(chosen[0])
    if ne == 0 or any(len(row) != ne for row in (*chosen, *rejected)):
        raise ValueError("every criteria set needs the same number (>= 1) of evaluations of each response")
    for row in (*chosen, *rejected):
        for score in row:
            if score is not None and not math.isfinite(score):
                raise ValueError(f"a score must be a finite number or None (UNSCORABLE), got {score!r}")
    return nc, ne


def two_stage_rewards(
    chosen_scores: Sequence[Sequence[float | None]],
    rejected_scores: Sequence[Sequence[float | None]],
    *,
    tie_value: float = 0.0,
) -> TreeValues:
    """R_crit and R_eval of one pair's tree from its parsed scores (``chosen_scores[i][j]`` = s+_ij, None when
    UNSCORABLE). See the module docstring for the formulas."""
    nc, ne = _check_scores(chosen_scores, rejected_scores)
    criteria: list[float] = []
    chosen: list[tuple[float, ...]] = []
    rejected: list[tuple[float, ...]] = []
    for i in range(nc):
        w = [[win_value(chosen_scores[i][j], rejected_scores[i][k], tie_value) for k in range(ne)] for j in range(ne)]
        criteria.append(sum(sum(row) for row in w) / (ne * ne))
        chosen.append(
            tuple(0.0 if chosen_scores[i][j] is None else sum(w[j]) / ne for j in range(ne)),
        )
        rejected.append(
            tuple(0.0 if rejected_scores[i][k] is None else sum(w[j][k] for j in range(ne)) / ne for k in range(ne)),
        )
    return TreeValues(tuple(criteria), tuple(chosen), tuple(rejected))


def group_advantages(rewards: Sequence[float]) -> list[float]:
    """z-scores of one group: ``(r - mean) / std`` (population std); all 0 when the spread is below ``ZERO_SPREAD``."""
    if not rewards:
        return []
    n = len(rewards)
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)
    if std < ZERO_SPREAD:
        return [0.0] * n
    return [(r - mean) / std for r in rewards]


def two_stage_advantages(rewards: TreeValues) -> TreeValues:
    """Advantages of one pair's tree: z-scores within the criteria group, the chosen-evaluation group and the
    rejected-evaluation group, separately."""
    nc = len(rewards.criteria)
    ne = len(rewards.chosen[0]) if rewards.chosen else 0

    def regroup(flat: list[float]) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(flat[i * ne : (i + 1) * ne]) for i in range(nc))

    chosen = group_advantages([v for row in rewards.chosen for v in row])
    rejected = group_advantages([v for row in rewards.rejected for v in row])
    return TreeValues(tuple(group_advantages(list(rewards.criteria))), regroup(chosen), regroup(rejected))


def mean_score(scores: Sequence[float | None]) -> float | None:
    """The mean of the scorable scores, or None when none is scorable."""
    values = [s for s in scores if s is not None]
    return sum(values) / len(values) if values else None


def rollout_pair_outcome(
    chosen_scores: Sequence[Sequence[float | None]], rejected_scores: Sequence[Sequence[float | None]]
) -> PairOutcome:
    """The pair verdict of a whole tree: the chosen response's mean score over all its scorable evaluations against
    the rejected one's (the same pair rule; ``"unscorable"`` when one side has no scorable evaluation)."""
    _check_scores(chosen_scores, rejected_scores)
    return pair_outcome(
        mean_score([s for row in chosen_scores for s in row]),
        mean_score([s for row in rejected_scores for s in row]),
    )
