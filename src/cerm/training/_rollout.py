"""The two-stage rollout inside TRL's GRPOTrainer: one preference pair becomes a tree of ``nc + 2 * nc * ne`` rows.

How it plugs in (trl 1.16; see ``_check_trl_hooks`` for what is relied on):

* The data set has one row per pair (``prompt`` = the query, plus ``pair_id``, ``query``, ``chosen``, ``rejected``)
  and TRL's ``num_generations`` is the tree size, so TRL's ``RepeatSampler`` hands the rollout each pair's row
  ``tree size`` times, contiguously.
* ``_generate_and_score_completions`` is overridden only to stash the rows (``rollout_func`` receives the prompts
  alone) and, after TRL has computed everything else, to replace ``advantages`` with cerm's three-group advantages.
* ``rollout_func`` (:func:`two_stage_rollout`) generates stage 1 (``nc`` criteria per pair from the criteria prompt)
  and stage 2 (``ne`` evaluations of each response under each criteria set, from the evaluation conversation that
  holds that criteria turn) through TRL's own generation path (HF ``generate`` or vLLM, weight sync included), with
  prompts rendered and tokenized by :mod:`cerm.protocol` exactly as the Judge renders them at inference. Each row's
  ``prompt_ids`` is its whole context (for an evaluation: query, criteria turn, evaluation prompt) and its
  ``completion_ids`` its own assistant turn, so each trajectory's loss covers only its own turn.
* Rewards and advantages come from :func:`cerm.protocol.two_stage_rewards` / :func:`two_stage_advantages`; TRL's
  reward function slot gets the same rewards (so TRL logs them), and its clipping, KL, old and reference
  log-probabilities, accumulation, logging and checkpoints are untouched.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cerm._errors import ConfigurationError
from cerm.protocol import (
    criteria_conversation,
    evaluation_conversation,
    parse_criteria,
    parse_overall_score,
    render_chat,
    rollout_pair_outcome,
    tokenize_chat,
    tree_layout,
    tree_size,
    two_stage_advantages,
    two_stage_rewards,
)

logger = logging.getLogger("cerm")

#: The trl releases this integration was tested with (the hooks below are private or experimental in trl).
TESTED_TRL = ">=1.16,<1.17"

#: The TRL methods cerm relies on, with the parameters it passes (checked at start-up and by a test).
TRL_HOOKS: Mapping[str, tuple[str, ...]] = {
    "_generate_and_score_completions": ("self", "inputs"),
    "_generate_single_turn": ("self", "prompt_ids", "images", "multimodal_fields", "num_generations"),
    "__init__.rollout_func": ("rollout_func",),
}


@dataclass(frozen=True)
class TreeSpec:
    """The rollout tree's shape and how its prompts are rendered."""

    num_criteria: int
    num_evaluations: int
    tie_value: float
    template_kwargs: Mapping[str, Any]

    @property
    def size(self) -> int:
        return tree_size(self.num_criteria, self.num_evaluations)


def check_trl_hooks(trainer_class: Any) -> None:
    """Fail loudly when the installed TRL's hooks differ from what cerm was written against."""
    problems = []
    for name, expected in TRL_HOOKS.items():
        method_name, _, parameter = name.partition(".")
        method = getattr(trainer_class, method_name, None)
        if method is None:
            problems.append(f"GRPOTrainer.{method_name} is gone")
            continue
        params = list(inspect.signature(method).parameters)
        if parameter:
            if parameter not in params:
                problems.append(f"GRPOTrainer.{method_name} takes no {parameter!r} argument")
        elif params[: len(expected)] != list(expected):
            problems.append(f"GRPOTrainer.{method_name}{tuple(params)} no longer starts with {expected}")
    if problems:
        import trl

        raise ConfigurationError(
            f"cerm's two-stage GRPO was tested with trl{TESTED_TRL}; the installed trl {trl.__version__} changed the "
            f"hooks it relies on: {'; '.join(problems)}"
        )


def prompt_ids(tokenizer: Any, conversation: Any, spec: TreeSpec) -> list[int]:
    """The exact inference prompt: the protocol's rendering with the generation prompt, contents kept as text."""
    rendered = render_chat(tokenizer, conversation, generation="prompt", template_kwargs=spec.template_kwargs)
    return tokenize_chat(tokenizer, rendered)


@dataclass(frozen=True)
class TreeResult:
    """One pair's tree after generation: rows in :func:`cerm.protocol.tree_layout` order."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    logprobs: list[list[float]] | None
    roles: list[str]
    rewards: list[float]
    advantages: list[float]
    criteria_ok: list[bool]  # per evaluation row: its criteria turn has both markers and a list
    scores: list[float | None]  # per evaluation row (None: UNSCORABLE); criteria rows: None
    outcome: str  # the rollout pair outcome (chosen's mean score against rejected's)


def _group_rows(inputs: Sequence[Mapping[str, Any]], size: int) -> list[Mapping[str, Any]]:
    """The pairs of a local generation batch (each pair's row repeated ``size`` times, contiguously)."""
    if len(inputs) % size:
        raise ConfigurationError(
            f"this process received {len(inputs)} rows, not a whole number of {size}-row pair trees: a pair's tree "
            "would be split across processes or advantage groups"
        )
    pairs = []
    for start in range(0, len(inputs), size):
        block = inputs[start : start + size]
        ids = {row["pair_id"] for row in block}
        if len(ids) != 1:
            raise ConfigurationError(
                f"rows {start}..{start + size - 1} of this process's batch hold pairs {sorted(ids)}: a pair's tree "
                "must be contiguous and whole (check that num_generations equals the tree size)"
            )
        pairs.append(block[0])
    return pairs


def build_trees(
    pairs: Sequence[Mapping[str, Any]],
    spec: TreeSpec,
    tokenizer: Any,
    generate: Any,
) -> tuple[list[TreeResult], int, float]:
    """Generate and score the trees of ``pairs``. ``generate(prompt_ids, k)`` returns ``(completion_ids, logprobs)``
    for prompts each repeated ``k`` times contiguously (TRL's generation path). Returns the trees, the number of
    generated tokens and the seconds spent generating."""
    nc, ne = spec.num_criteria, spec.num_evaluations
    started = time.perf_counter()

    # Stage 1: nc criteria per pair, from the criteria prompt (the query alone).
    criteria_prompts = [prompt_ids(tokenizer, criteria_conversation(p["query"]), spec) for p in pairs]
    stage1 = [ids for ids in criteria_prompts for _ in range(nc)]
    c_ids, c_logps = generate(stage1, nc)
    c_text = tokenizer.batch_decode(c_ids, skip_special_tokens=True)

    # Stage 2: for each pair, criteria set i and response (chosen, rejected): ne evaluations of that conversation.
    stage2: list[list[int]] = []
    for p_index, pair in enumerate(pairs):
        for i in range(nc):
            criteria_text = c_text[p_index * nc + i]
            for response in (pair["chosen"], pair["rejected"]):
                ids = prompt_ids(tokenizer, evaluation_conversation(pair["query"], criteria_text, response), spec)
                stage2.extend([ids] * ne)
    e_ids, e_logps = generate(stage2, ne)
    e_text = tokenizer.batch_decode(e_ids, skip_special_tokens=True)
    seconds = time.perf_counter() - started
    tokens = sum(len(ids) for ids in c_ids) + sum(len(ids) for ids in e_ids)

    trees = []
    layout = tree_layout(nc, ne)
    for p_index in range(len(pairs)):
        criteria_ok = [parse_criteria(c_text[p_index * nc + i]).problem is None for i in range(nc)]

        def e_row(i: int, side: int, j: int, p: int = p_index) -> int:
            return ((p * nc + i) * 2 + side) * ne + j

        scores = [
            [[parse_overall_score(e_text[e_row(i, side, j)])[0] for j in range(ne)] for i in range(nc)]
            for side in (0, 1)
        ]
        rewards = two_stage_rewards(scores[0], scores[1], tie_value=spec.tie_value)
        advantages = two_stage_advantages(rewards)
        rows_prompt: list[list[int]] = []
        rows_completion: list[list[int]] = []
        rows_logps: list[list[float]] = []
        row_scores: list[float | None] = []
        row_criteria_ok: list[bool] = []
        for row in layout:
            if row.role == "criteria":
                index = p_index * nc + row.criteria_index
                rows_prompt.append(stage1[index])
                rows_completion.append(list(c_ids[index]))
                if c_logps is not None:
                    rows_logps.append(list(c_logps[index]))
                row_scores.append(None)
            else:
                side = 0 if row.role == "chosen" else 1
                assert row.evaluation_index is not None
                index = e_row(row.criteria_index, side, row.evaluation_index)
                rows_prompt.append(stage2[index])
                rows_completion.append(list(e_ids[index]))
                if e_logps is not None:
                    rows_logps.append(list(e_logps[index]))
                row_scores.append(scores[side][row.criteria_index][row.evaluation_index])
            row_criteria_ok.append(criteria_ok[row.criteria_index])
        trees.append(
            TreeResult(
                prompt_ids=rows_prompt,
                completion_ids=rows_completion,
                logprobs=rows_logps if (c_logps is not None and e_logps is not None) else None,
                roles=[row.role for row in layout],
                rewards=rewards.flat(),
                advantages=advantages.flat(),
                criteria_ok=row_criteria_ok,
                scores=row_scores,
                outcome=rollout_pair_outcome(scores[0], scores[1]),
            )
        )
    return trees, tokens, seconds


def tree_metrics(trees: Sequence[TreeResult]) -> dict[str, tuple[float, float]]:
    """Local (sum, count) of each logged metric, to be summed over processes and divided."""
    sums: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        entry = sums.setdefault(name, [0.0, 0.0])
        entry[0] += value
        entry[1] += 1

    for tree in trees:
        add("cerm/rollout_pair_accuracy", 1.0 if tree.outcome == "win" else 0.0)
        for role, reward, score, ok in zip(tree.roles, tree.rewards, tree.scores, tree.criteria_ok, strict=True):
            add(f"cerm/reward/{role}", reward)
            if role == "criteria":
                add("cerm/criteria_format_rate", 1.0 if ok else 0.0)
                continue
            add("cerm/unscorable_fraction", 1.0 if score is None else 0.0)
            # A well-formed chain: criteria markers and list, and a valid overall score.
            add("cerm/format_rate", 1.0 if (ok and score is not None) else 0.0)
    return {name: (total, count) for name, (total, count) in sums.items()}


def two_stage_rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
    """TRL's ``rollout_func``: the trees of the pairs whose rows the trainer stashed (see the module docstring)."""
    result: dict[str, Any] = trainer.cerm_rollout(prompts)
    return result


def cerm_two_stage(completions: list[Any], cerm_reward: list[float], **kwargs: Any) -> list[float]:
    """TRL's reward function slot: the rewards the rollout computed with the protocol's formulas (for TRL's logs)."""
    return [float(r) for r in cerm_reward]


def make_trainer_class() -> Any:
    """The GRPOTrainer subclass (built on first use so ``import cerm.training`` does not import trl)."""
    import torch
    import trl

    base: Any = trl.GRPOTrainer  # type: ignore[attr-defined]
    check_trl_hooks(base)

    class TwoStageGRPOTrainer(base):  # type: ignore[misc]
        """TRL's GRPOTrainer with cerm's two-stage rollout and three-group advantages."""

        def __init__(self, *args: Any, cerm_spec: TreeSpec, **kwargs: Any) -> None:
            self.cerm_spec = cerm_spec
            self._cerm_rows: Sequence[Mapping[str, Any]] | None = None
            self._cerm_advantages: list[float] | None = None
            self._cerm_metrics: dict[str, tuple[float, float]] = {}
            super().__init__(*args, rollout_func=two_stage_rollout, **kwargs)
            size = cerm_spec.size
            if self.num_generations != size:
                raise ConfigurationError(f"num_generations must equal the tree size {size}, got {self.num_generations}")
            per_process = self.args.per_device_train_batch_size * self.args.steps_per_generation
            if per_process % size:
                raise ConfigurationError(
                    f"each process generates {per_process} rows per generation batch, not a multiple of the "
                    f"{size}-row tree of one pair: a pair's tree would be split across processes or advantage groups. "
                    "Make pairs_per_step a multiple of the number of processes."
                )

        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            self._cerm_rows = inputs
            self._cerm_advantages = None
            try:
                out: dict[str, Any] = super()._generate_and_score_completions(inputs)
            finally:
                self._cerm_rows = None
            if self._cerm_advantages is None or len(self._cerm_advantages) != len(inputs):
                raise RuntimeError("the two-stage rollout did not run for this batch (is rollout_func replaced?)")
            previous = out["advantages"]
            out["advantages"] = torch.tensor(self._cerm_advantages, dtype=torch.float32, device=previous.device)
            self._log_cerm_metrics()
            return out

        def cerm_rollout(self, prompts: list[Any]) -> dict[str, Any]:
            rows = self._cerm_rows
            if rows is None or len(rows) != len(prompts):
                raise RuntimeError("cerm's rollout_func was called outside _generate_and_score_completions")
            pairs = _group_rows(rows, self.cerm_spec.size)

            def generate(ids: list[list[int]], k: int) -> tuple[list[list[int]], Any]:
                return self._generate_single_turn(ids, None, {}, k)  # type: ignore[no-any-return]

            trees, tokens, seconds = build_trees(pairs, self.cerm_spec, self.processing_class, generate)
            self._cerm_advantages = [a for tree in trees for a in tree.advantages]
            self._cerm_metrics = tree_metrics(trees)
            self._cerm_metrics["cerm/generated_tokens_per_s"] = (tokens, seconds)
            logprobs = None
            if all(tree.logprobs is not None for tree in trees):
                logprobs = [lp for tree in trees for lp in (tree.logprobs or [])]
            return {
                "prompt_ids": [ids for tree in trees for ids in tree.prompt_ids],
                "completion_ids": [ids for tree in trees for ids in tree.completion_ids],
                "logprobs": logprobs,
                "cerm_reward": [r for tree in trees for r in tree.rewards],
                "cerm_role": [role for tree in trees for role in tree.roles],
            }

        def _log_cerm_metrics(self) -> None:
            """Sum each metric's (total, count) over processes and log the ratio with TRL's own metrics."""
            names = sorted(self._cerm_metrics)
            values = [v for name in names for v in self._cerm_metrics[name]]
            local = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
            totals = self.accelerator.reduce(local, reduction="sum").tolist()
            mode = "train" if self.model.training else "eval"
            for k, name in enumerate(names):
                total, count = totals[2 * k], totals[2 * k + 1]
                if count > 0:
                    self._metrics[mode][name].append(total / count)

    return TwoStageGRPOTrainer
