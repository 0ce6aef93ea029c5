"""Planning shared-prefix prefill: which rows of a generation batch can reuse one computation of their common
prompt prefix.

The CE-RM workload is made of such rows. The N evaluation prompts of one query share the criteria prompt, the whole
criteria turn and the head of the evaluation prompt (about 520 tokens with the demo model's template) and differ only
in the response and the template's tail; the ``n`` samples of one prompt share all of it. A local backend that
computes each shared prefix once per group, then only the suffixes per row, saves most of the prefill, which is the
larger part of a judge call on a CPU.

This module is pure (token ids in, a plan out) so the grouping rule is tested without a model. The Hugging Face
backend turns a plan into tensors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

# A plan must save at least this share of the padded prompt positions that plain left-padded prefill computes;
# below it the second forward pass and the cache copy are not worth their overhead.
MIN_SAVING = 0.15


@dataclass(frozen=True)
class PrefixPlan:
    """Rows grouped by a shared prompt prefix.

    ``prefixes[g]`` is computed once for group ``g``; row ``r`` continues it with ``suffixes[r]`` (never empty, so
    every row has a token left to produce its first logits). ``prefixes[group_of_row[r]] + suffixes[r]`` is row
    ``r``'s whole prompt.
    """

    prefixes: tuple[tuple[int, ...], ...]
    group_of_row: tuple[int, ...]
    suffixes: tuple[tuple[int, ...], ...]

    @property
    def prefix_width(self) -> int:
        return max(len(p) for p in self.prefixes)

    @property
    def suffix_width(self) -> int:
        return max(len(s) for s in self.suffixes)

    @property
    def padded_positions(self) -> int:
        """Prompt positions the two left-padded prefill passes compute: each group's prefix, then each row's suffix."""
        return len(self.prefixes) * self.prefix_width + len(self.suffixes) * self.suffix_width


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def plan_shared_prefix(prompts: Sequence[Sequence[int]], *, min_saving: float = MIN_SAVING) -> PrefixPlan | None:
    """The grouping of ``prompts`` that computes the fewest padded prompt positions, or None when no grouping beats
    plain left-padded prefill by ``min_saving``.

    Rows are sorted by their token ids, so rows with a long common prefix sit next to each other. Every threshold on
    the common-prefix length of neighbours cuts the sorted rows into groups; each threshold is costed (groups times the
    longest group prefix, plus rows times the longest suffix: both passes are padded to a rectangle) and the cheapest
    one wins. With at most a batch of rows this is a few thousand integer comparisons.
    """
    if len(prompts) < 2 or min(len(p) for p in prompts) < 2:
        return None
    order, neighbour_lcp = _sorted_with_neighbour_lcp(prompts)
    plain_cost = len(prompts) * max(len(p) for p in prompts)

    best: PrefixPlan | None = None
    for threshold in sorted({lcp for lcp in neighbour_lcp if lcp > 0}):
        plan = _group(prompts, order, neighbour_lcp, threshold)
        if len(plan.prefixes) < len(prompts) and (best is None or plan.padded_positions < best.padded_positions):
            best = plan
    if best is None or best.padded_positions > (1.0 - min_saving) * plain_cost:
        return None
    return best


def _group(prompts: Sequence[Sequence[int]], order: list[int], neighbour_lcp: list[int], threshold: int) -> PrefixPlan:
    """Cut the sorted rows wherever neighbours share fewer than ``threshold`` tokens."""
    runs = _runs([lcp >= threshold for lcp in neighbour_lcp])  # positions in ``order``

    prefixes: list[tuple[int, ...]] = []
    group_of_row = [0] * len(prompts)
    suffixes: list[tuple[int, ...]] = [()] * len(prompts)
    for group, run in enumerate(runs):
        rows = [order[position] for position in run]
        shared = min(neighbour_lcp[position - 1] for position in run[1:]) if len(run) > 1 else len(prompts[rows[0]])
        # Leave each row at least one suffix token: generation needs the logits of the prompt's last position.
        shared = min(shared, min(len(prompts[row]) for row in rows) - 1)
        prefixes.append(tuple(prompts[rows[0]][:shared]))
        for row in rows:
            group_of_row[row] = group
            suffixes[row] = tuple(prompts[row][shared:])
    return PrefixPlan(prefixes=tuple(prefixes), group_of_row=tuple(group_of_row), suffixes=tuple(suffixes))


def order_for_sharing(prompts: Sequence[Sequence[int]]) -> list[int]:
    """An order for cutting many prompts into batches: prompts that share at least half of the shorter one stay
    together (so a batch holds whole groups), and groups come longest first (so each batch pads little and memory
    trouble shows up on the first batch)."""
    if not prompts:
        return []
    order, neighbour_lcp = _sorted_with_neighbour_lcp(prompts)
    together = [
        2 * lcp >= min(len(prompts[a]), len(prompts[b]))
        for lcp, (a, b) in zip(neighbour_lcp, itertools.pairwise(order), strict=True)
    ]
    groups = [[order[position] for position in run] for run in _runs(together)]
    for group in groups:
        group.sort(key=lambda i: -len(prompts[i]))
    groups.sort(key=lambda group: -len(prompts[group[0]]))
    return [i for group in groups for i in group]


def _sorted_with_neighbour_lcp(prompts: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
    """Row indices sorted by token ids (rows with a long common prefix become neighbours), and the common-prefix
    length of each pair of neighbours in that order."""
    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i]))
    return order, [common_prefix_length(prompts[a], prompts[b]) for a, b in itertools.pairwise(order)]


def _runs(continues: Sequence[bool]) -> list[list[int]]:
    """Positions ``0..len(continues)`` cut into runs; ``continues[p - 1]`` says whether position p joins the run of
    position p - 1."""
    runs: list[list[int]] = [[0]]
    for position, joined in enumerate(continues, start=1):
        if joined:
            runs[-1].append(position)
        else:
            runs.append([position])
    return runs
