"""The two-stage-rollout rewards and advantages of cerm.protocol, against values computed by hand (SPEC section 2)."""

from __future__ import annotations

import math

import pytest

from cerm.protocol import (
    TreeRow,
    TreeValues,
    group_advantages,
    pair_outcome,
    rollout_pair_outcome,
    tree_layout,
    tree_size,
    two_stage_advantages,
    two_stage_rewards,
    win_value,
)


def test_pair_rule() -> None:
    assert pair_outcome(7.0, 3.0) == "win"
    assert pair_outcome(3.0, 7.0) == "loss"
    assert pair_outcome(5.0, 5.0) == "tie"
    assert pair_outcome(None, 5.0) == "unscorable"
    assert pair_outcome(5.0, None) == "unscorable"
    assert pair_outcome(None, None) == "unscorable"


def test_win_value_with_ties_and_unscorable() -> None:
    assert win_value(8, 2) == 1.0
    assert win_value(2, 8) == 0.0
    assert win_value(5, 5) == 0.0  # default tau = 0
    assert win_value(5, 5, tie_value=0.5) == 0.5
    assert win_value(None, 2, tie_value=0.5) == 0.0
    assert win_value(8, None, tie_value=0.5) == 0.0


def test_rewards_by_hand_with_a_tie_and_an_unscorable_evaluation() -> None:
    # nc = 2, ne = 2. Criteria 0: chosen (8, 5), rejected (5, None). Criteria 1: chosen (None, 6), rejected (7, 2).
    chosen = [[8.0, 5.0], [None, 6.0]]
    rejected = [[5.0, None], [7.0, 2.0]]
    tau = 0.5
    # w(0,.,.) = [[w(8,5)=1, w(8,None)=0], [w(5,5)=tau, w(5,None)=0]] = [[1, 0], [0.5, 0]]
    # w(1,.,.) = [[w(None,7)=0, w(None,2)=0], [w(6,7)=0, w(6,2)=1]]  = [[0, 0], [0, 1]]
    rewards = two_stage_rewards(chosen, rejected, tie_value=tau)
    assert rewards.criteria == (1.5 / 4, 1 / 4)
    # chosen e+_0j = mean_k w(0,j,k): (1 + 0)/2, (0.5 + 0)/2; e+_10 unscorable -> 0; e+_11 = (0 + 1)/2
    assert rewards.chosen == ((0.5, 0.25), (0.0, 0.5))
    # rejected e-_0k = mean_j w(0,j,k): (1 + 0.5)/2 = 0.75; e-_01 unscorable -> 0; e-_10 = (0+0)/2; e-_11 = (0+1)/2
    assert rewards.rejected == ((0.75, 0.0), (0.0, 0.5))
    assert rewards.flat() == [0.375, 0.25, 0.5, 0.25, 0.0, 0.5, 0.75, 0.0, 0.0, 0.5]

    tied = two_stage_rewards(chosen, rejected)  # tau = 0: the tie earns nothing
    assert tied.criteria == (1 / 4, 1 / 4)
    assert tied.chosen == ((0.5, 0.0), (0.0, 0.5))
    assert tied.rejected == ((0.5, 0.0), (0.0, 0.5))


def test_advantages_are_z_scores_per_group() -> None:
    rewards = two_stage_rewards([[8.0, 5.0], [None, 6.0]], [[5.0, None], [7.0, 2.0]], tie_value=0.5)
    adv = two_stage_advantages(rewards)
    # criteria group (0.375, 0.25): mean 0.3125, population std 0.0625 -> (+1, -1)
    assert adv.criteria == pytest.approx((1.0, -1.0))
    # chosen group (0.5, 0.25, 0, 0.5): mean 0.3125, var = (0.1875^2 + 0.0625^2 + 0.3125^2 + 0.1875^2)/4
    std = math.sqrt((0.1875**2 + 0.0625**2 + 0.3125**2 + 0.1875**2) / 4)
    assert [v for row in adv.chosen for v in row] == pytest.approx(
        [0.1875 / std, -0.0625 / std, -0.3125 / std, 0.1875 / std]
    )
    # rejected group (0.75, 0, 0, 0.5): mean 0.3125
    std = math.sqrt((0.4375**2 + 0.3125**2 + 0.3125**2 + 0.1875**2) / 4)
    assert [v for row in adv.rejected for v in row] == pytest.approx(
        [0.4375 / std, -0.3125 / std, -0.3125 / std, 0.1875 / std]
    )


def test_zero_spread_group_gets_zero_advantages() -> None:
    assert group_advantages([0.5, 0.5, 0.5]) == [0.0, 0.0, 0.0]
    assert group_advantages([1.0, 1.0 + 1e-9]) == [0.0, 0.0]
    assert group_advantages([1.0, 0.0]) == [1.0, -1.0]
    assert group_advantages([]) == []
    # Every chosen evaluation beats every rejected one: all rewards 1, no preference inside any group.
    rewards = two_stage_rewards([[9.0, 8.0], [9.0, 9.0]], [[1.0, 2.0], [3.0, 1.0]])
    assert rewards.flat() == [1.0] * 10
    assert two_stage_advantages(rewards).flat() == [0.0] * 10


def test_all_unscorable_groups() -> None:
    # Every evaluation of the chosen response is unscorable: its group is all 0 (zero spread -> advantages 0), every
    # w is 0, so criteria rewards and rejected rewards are all 0 too.
    rewards = two_stage_rewards([[None, None], [None, None]], [[3.0, 4.0], [None, 5.0]])
    assert rewards.flat() == [0.0] * 10
    assert two_stage_advantages(rewards).flat() == [0.0] * 10
    # Only the rejected side is all unscorable under criteria 0: that criteria set earns 0, the other one wins.
    rewards = two_stage_rewards([[6.0, 6.0], [6.0, 6.0]], [[None, None], [2.0, 2.0]])
    assert rewards.criteria == (0.0, 1.0)
    assert rewards.chosen == ((0.0, 0.0), (1.0, 1.0))
    assert rewards.rejected == ((0.0, 0.0), (1.0, 1.0))
    adv = two_stage_advantages(rewards)
    assert adv.criteria == (-1.0, 1.0)
    assert adv.chosen == ((-1.0, -1.0), (1.0, 1.0))


def test_tree_layout_rows_roles_and_groups() -> None:
    assert tree_size(4, 2) == 20
    layout = tree_layout(2, 2)
    assert len(layout) == tree_size(2, 2) == 10
    assert layout[:2] == (TreeRow("criteria", 0, None), TreeRow("criteria", 1, None))
    assert layout[2:6] == tuple(TreeRow("chosen", i, j) for i in range(2) for j in range(2))
    assert layout[6:] == tuple(TreeRow("rejected", i, k) for i in range(2) for k in range(2))
    # flat() follows the same order.
    values = TreeValues((1.0, 2.0), ((3.0, 4.0), (5.0, 6.0)), ((7.0, 8.0), (9.0, 10.0)))
    assert values.flat() == [float(v) for v in range(1, 11)]
    with pytest.raises(ValueError, match="nc >= 1"):
        tree_layout(0, 2)


def test_rollout_pair_outcome_uses_mean_scores() -> None:
    assert rollout_pair_outcome([[8.0, None]], [[7.0, 7.5]]) == "win"
    assert rollout_pair_outcome([[7.0, 7.0]], [[7.0, 7.0]]) == "tie"
    assert rollout_pair_outcome([[None, None]], [[7.0, 7.0]]) == "unscorable"


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="same number"):
        two_stage_rewards([[1.0]], [[1.0], [2.0]])
    with pytest.raises(ValueError, match="same number"):
        two_stage_rewards([[1.0, 2.0]], [[1.0]])
    with pytest.raises(ValueError, match="finite"):
        two_stage_rewards([[float("nan")]], [[1.0]])
