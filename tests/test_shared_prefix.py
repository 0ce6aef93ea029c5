"""The shared-prefix planner (pure: token ids in, a grouping out). The model-level proof, identical greedy text with
and without sharing on the demo model, is in test_hf_backend.py."""

from __future__ import annotations

from cerm.backends._shared_prefix import common_prefix_length, order_for_sharing, plan_shared_prefix

HEAD = list(range(1000, 1100))  # a 100-token shared prefix


def _rebuilt(prompts: list[list[int]]) -> list[list[int]]:
    plan = plan_shared_prefix(prompts)
    assert plan is not None
    return [list(plan.prefixes[plan.group_of_row[r]]) + list(plan.suffixes[r]) for r in range(len(prompts))]


def test_common_prefix_length() -> None:
    assert common_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([5], [6]) == 0


def test_one_query_many_responses_share_the_whole_head() -> None:
    prompts = [HEAD + [n] * n for n in (5, 20, 11, 3)]
    plan = plan_shared_prefix(prompts)
    assert plan is not None
    assert plan.prefixes == (tuple(HEAD),)
    assert plan.group_of_row == (0, 0, 0, 0)
    assert [len(s) for s in plan.suffixes] == [5, 20, 11, 3]
    assert plan.padded_positions == 100 + 4 * 20
    assert _rebuilt(prompts) == prompts


def test_identical_prompts_leave_one_token_to_each_row() -> None:
    prompts = [HEAD, HEAD, HEAD]  # the n samples of one prompt
    plan = plan_shared_prefix(prompts)
    assert plan is not None
    assert plan.prefixes == (tuple(HEAD[:-1]),)
    assert plan.suffixes == ((HEAD[-1],),) * 3


def test_two_queries_in_one_batch_get_two_groups() -> None:
    # The rows share a 10-token template head, and each query's rows share 100 more: grouping by query wins.
    head = [1] * 10
    a, b = head + [2] * 100, head + [3] * 100
    prompts = [[*a, 9, 9], [*b, 8], [*a, 7], [*b, 6, 6, 6]]
    plan = plan_shared_prefix(prompts)
    assert plan is not None
    assert sorted(plan.prefixes) == sorted([tuple(a), tuple(b)])
    assert plan.group_of_row[0] == plan.group_of_row[2] != plan.group_of_row[1] == plan.group_of_row[3]
    assert _rebuilt(prompts) == prompts


def test_lone_rows_ride_along_in_their_own_group() -> None:
    prompts = [[*HEAD, 1], [*HEAD, 2], [5] * 120]
    plan = plan_shared_prefix(prompts)
    assert plan is not None
    assert len(plan.prefixes) == 2
    lone = plan.group_of_row[2]
    assert plan.prefixes[lone] == tuple([5] * 119)
    assert plan.suffixes[2] == (5,)
    assert _rebuilt(prompts) == prompts


def test_no_plan_when_sharing_saves_too_little() -> None:
    assert plan_shared_prefix([HEAD]) is None  # a single row
    assert plan_shared_prefix([[1] * 50, [2] * 50]) is None  # nothing shared
    assert plan_shared_prefix([[1] * 3 + [2] * 100, [1] * 3 + [3] * 100]) is None  # 3 of 103 shared
    assert plan_shared_prefix([[1], [1]]) is None  # a one-token prompt has no prefix to share


def test_order_keeps_groups_together_longest_first() -> None:
    q1 = [HEAD + [1] * 10, HEAD + [1] * 30]
    q2 = [[4] * 300 + [2], [4] * 300 + [3] * 5]
    lone = [[6] * 200]
    prompts = [q1[0], q2[0], lone[0], q1[1], q2[1]]
    order = order_for_sharing(prompts)
    assert [prompts[i] for i in order] == [q2[1], q2[0], lone[0], q1[1], q1[0]]
    assert order_for_sharing([]) == []
