"""Slot-model training (``cerm train slot``): Bradley-Terry on pairs, cross-entropy on labels, NLI pre-adaptation,
cached explanations, checkpoints and resume after a kill, on the tiny real masked LM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cerm import ConfigurationError, MaskedSlotReader, SlotJudge, SlotJudgeConfig, Status, slot_judge_from_config
from cerm._slot._explain import BackendExplainer
from cerm.backends import Completion, MockBackend, SamplingParams
from cerm.protocol import PLAIN_SLOT_TEMPLATE, Conversation, SlotTemplate
from cerm.training import SlotTrainConfig, checkable_pairs, run_slot_training
from cerm.training._slot import ExplanationCache, slot_loss


def config(tiny_mlm: Path, out: Path, **changes: Any) -> SlotTrainConfig:
    values: dict[str, Any] = {
        "model": str(tiny_mlm),
        "output_dir": str(out),
        "template": PLAIN_SLOT_TEMPLATE,
        "checkable_pairs": 16,
        "max_steps": 6,
        "per_device_train_batch_size": 8,
        "learning_rate": 2e-3,
        "save_steps": 3,
        "logging_steps": 1,
        "use_cpu": True,
        "max_length": 96,
    }
    values.update(changes)
    return SlotTrainConfig.from_dict(values)


def pair_loss(model_dir: str, pairs: list[Any]) -> float:
    reader = MaskedSlotReader(model_dir, template=SlotTemplate(PLAIN_SLOT_TEMPLATE), max_length=96)
    rows = [{"kind": "pair", "query": p.prompt, "a": p.chosen, "b": p.rejected, "explanation_a": "",
             "explanation_b": ""} for p in pairs]  # fmt: skip
    import torch

    with torch.no_grad():
        return float(slot_loss(reader, reader.model, rows))


class Kill(Exception):
    """Stands for the process being killed after a checkpoint."""


def test_bradley_terry_training_fits_the_pairs(tiny_mlm: Path, tmp_path: Path) -> None:
    pairs = checkable_pairs(16, seed=0, split="train")
    before = pair_loss(str(tiny_mlm), pairs)
    whole = run_slot_training(config(tiny_mlm, tmp_path / "whole"))
    assert whole.steps == 6
    assert whole.examples == 16
    after = pair_loss(whole.model_dir, pairs)
    assert after < before  # the Bradley-Terry loss on the training pairs went down
    # The output loads as a slot judge (the YAML written beside the model).
    judge = slot_judge_from_config(SlotJudgeConfig.from_yaml(whole.judge_config))
    chosen, _ = judge.judge(pairs[0].prompt, [pairs[0].chosen, pairs[0].rejected])
    assert chosen.status is Status.SCORED
    manifest = json.loads((tmp_path / "whole" / "manifest.json").read_text())
    assert manifest["stage"] == "slot"
    assert manifest["stats"]["pairs"] == 16


def test_training_resumes_from_the_last_checkpoint_after_a_kill(tiny_mlm: Path, tmp_path: Path) -> None:
    import transformers

    class KillAfterCheckpoint(transformers.TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 3:
                raise Kill

    class Steps(transformers.TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.seen: list[int] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seen.append(state.global_step)

    killed = config(tiny_mlm, tmp_path / "killed")
    with pytest.raises(Kill):
        run_slot_training(killed, callbacks=[KillAfterCheckpoint()])
    assert (tmp_path / "killed" / "checkpoints" / "checkpoint-3").is_dir()
    assert not (tmp_path / "killed" / "model").exists()
    steps = Steps()
    resumed = run_slot_training(killed, callbacks=[steps])
    assert resumed.steps == 6
    assert steps.seen == [4, 5, 6]  # continued after the checkpoint, not from the start
    assert [h["step"] for h in resumed.log_history if "loss" in h] == [1, 2, 3, 4, 5, 6]


def test_pointwise_labels_and_nli_pre_adaptation(tiny_mlm: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        "".join(
            json.dumps({"query": p.prompt, "response": r, "label": label}) + "\n"
            for p in checkable_pairs(6, seed=0, split="train")
            for r, label in ((p.chosen, True), (p.rejected, "bad"))
        )
    )
    nli = tmp_path / "nli.jsonl"
    nli.write_text(
        "\n".join(
            json.dumps(row)
            for row in (
                {"premise": "the answer is 42", "hypothesis": "the answer is 42", "label": "entailment"},
                {"premise": "the answer is 42", "hypothesis": "the answer is 41", "label": "contradiction"},
                {"premise": "the answer is 42", "hypothesis": "it is a number", "label": "neutral"},
            )
        )
    )
    result = run_slot_training(
        config(tiny_mlm, tmp_path / "out", checkable_pairs=0, labels=[str(labels)], nli=[str(nli)], max_steps=2)
    )
    assert result.examples == 12
    assert result.nli_examples == 2  # neutral is left out
    assert result.nli_steps == 1  # the two rows in one batch, one epoch
    assert result.final_loss is not None
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "q", "response": "r", "label": "maybe"}) + "\n")
    with pytest.raises(ConfigurationError, match="neither positive nor negative"):
        run_slot_training(config(tiny_mlm, tmp_path / "bad", checkable_pairs=0, labels=[str(bad)]))


def test_explanations_are_cached_and_failures_are_not(tmp_path: Path) -> None:
    calls: list[int] = []

    def respond(conversation: Conversation, params: SamplingParams, sample: int) -> str | Completion:
        calls.append(1)
        if "boom" in conversation[-1]["content"]:
            return Completion.failed("server down")
        return "Looks right."

    explainer = BackendExplainer(MockBackend(respond))
    cache = ExplanationCache(tmp_path / "explanations.jsonl", explainer)
    wanted = [("Q1", "a"), ("Q1", "b"), ("Q2", "boom")]
    first = cache.fill(wanted)
    assert first == {("Q1", "a"): "Looks right.", ("Q1", "b"): "Looks right.", ("Q2", "boom"): None}
    assert len(calls) == 3
    again = ExplanationCache(tmp_path / "explanations.jsonl", explainer).fill(wanted)  # a rerun reads the file
    assert again == first
    assert len(calls) == 4  # only the failed one was generated again


def test_slot_stage_in_the_train_command(tiny_mlm: Path, tmp_path: Path) -> None:
    from cerm.cli import main

    path = tmp_path / "slot.yaml"
    path.write_text(
        f"model: {tiny_mlm}\noutput_dir: {tmp_path / 'run'}\ntemplate: {json.dumps(PLAIN_SLOT_TEMPLATE)}\n"
        "checkable_pairs: 8\nuse_cpu: true\nmax_length: 96\n"
    )
    assert main(["train", "slot", "--config", str(path), "--max-steps", "1", "--set", "save_steps=1"]) == 0
    trained = SlotJudgeConfig.from_yaml(tmp_path / "run" / "slot_judge.yaml")
    assert trained.slot_model == str(tmp_path / "run" / "model")
    reader = MaskedSlotReader(trained.slot_model, template=trained.slot_template())
    assert SlotJudge(reader).score("What is 2+2?", ["4"])[0] is not None
    assert main(["train", "slot", "--config", str(path), "--set", "nonsense=1", "--dry-run"]) == 2
    example = Path(__file__).resolve().parents[1] / "examples" / "train_slot.yaml"
    assert main(["train", "slot", "--config", str(example), "--dry-run"]) == 0
