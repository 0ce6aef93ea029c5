"""Two-stage-rollout GRPO (SPEC section 2), the CE-RM paper's training method, on TRL's GRPOTrainer.

Each training pair (q, y+, y-) becomes a tree of ``nc`` criteria trajectories and ``2 * nc * ne`` evaluation
trajectories (20 with the paper's nc = 4, ne = 2); rewards and the three-group advantages are
:mod:`cerm.protocol`'s; the rollout and the advantage hook are in :mod:`cerm.training._rollout`. Everything else is
TRL's: PPO clipping, the KL term against the reference (the starting adapter, or the base with the adapter disabled),
old log-probabilities when a generation batch feeds several optimizer steps, accumulation, logging, checkpoints and
vLLM weight sync.

Batch arithmetic (the paper: 64 pairs per step in 4 mini-batches): one generation batch holds ``pairs_per_step``
trees (``pairs_per_step * tree`` rows over all processes) and feeds ``mini_batches`` optimizer steps of
``pairs_per_step * tree / mini_batches`` rows each, accumulated from forward passes of
``per_device_train_batch_size`` rows. TRL's ``global_step`` (``max_steps``, ``save_steps``) counts optimizer steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cerm._errors import ConfigurationError
from cerm.protocol import tree_size
from cerm.training._artifacts import CHECKPOINTS, model_files, resolve_trained_dir
from cerm.training._manifest import write_manifest
from cerm.training._settings import settings_from_mapping

logger = logging.getLogger("cerm")

Finetuning = Literal["full", "lora", "qlora"]
_FINETUNING = ("full", "lora", "qlora")
#: TRL loss types whose per-sequence weighting fits trajectories of very different lengths (criteria vs evaluations).
_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
_VLLM_MODES = ("colocate", "server")

VLLM_4BIT_REFUSAL = (
    "vLLM generation with a 4-bit (QLoRA) base is refused: every weight sync merges the LoRA into the base weights "
    "and unmerges it, and with a bitsandbytes 4-bit base that dequantizes and re-quantizes the frozen weights each "
    "time, so the base drifts a little more at every step (TRL issues 3654 and 3125 also report vLLM + bitsandbytes "
    "failures). Generate with HF generate (use_vllm: false), or train a bf16 LoRA (finetuning: lora) with vLLM."
)


@dataclass
class GRPOConfig:
    """Settings of cerm's two-stage-rollout GRPO. Defaults follow the CE-RM paper: nc = 4 criteria per pair, ne = 2
    evaluations per criteria set and response (20 trajectories per pair), 64 pairs per step in 4 mini-batches,
    learning rate 2e-6, KL coefficient 1e-3.

    Args:
        model: the policy to start from: an SFT output folder (its adapter keeps training; the reference is that
            adapter as it starts), a full model folder or hub id, ``"demo"``, ``"demo-sft"`` or ``"demo-base"``.
        data: preference pairs, anything :func:`cerm.training.load_pairs` reads (JSONL, stage folders, hub ids).
        num_criteria, num_evaluations: nc and ne of the rollout tree.
        pairs_per_step: pairs per generation batch over all processes (a multiple of the number of processes).
        mini_batches: optimizer steps per generation batch (``pairs_per_step * tree`` must split evenly).
        per_device_train_batch_size: rows (trajectories) per forward pass.
        beta: KL coefficient (TRL's k3 estimator against the reference policy).
        loss_type: TRL's loss aggregation; ``"grpo"`` (default): each trajectory's token losses are averaged over its
            own length, then over trajectories, so a short criteria turn and a long evaluation weigh the same.
        epsilon: PPO clipping range.
        tie_value: tau, the win-matrix value of two equal scores.
        max_completion_length: the token budget of every generated turn (criteria and evaluations alike).
        temperature, top_p: sampling of both stages.
        use_vllm, vllm_mode: generate with vLLM (``"colocate"`` or ``"server"``) instead of HF ``generate``; refused
            with ``finetuning="qlora"``.
        max_pairs: use at most this many pairs of ``data``.
        resume_from_checkpoint: ``True`` resumes from the latest checkpoint in ``output_dir/checkpoints``; a path
            resumes from that checkpoint. ``save_steps`` must be a multiple of ``mini_batches`` (a checkpoint on a
            generation boundary resumes to the same state as an uninterrupted run).
        trainer_args: further keyword arguments for ``trl.GRPOConfig`` (they win over the values above).
    """

    model: str = "demo"
    data: list[str] = field(default_factory=list)
    output_dir: str = "runs/grpo"
    finetuning: Finetuning = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str = "all-linear"
    lora_layers: list[int] | None = None
    num_criteria: int = 4
    num_evaluations: int = 2
    pairs_per_step: int = 64
    mini_batches: int = 4
    per_device_train_batch_size: int = 4
    learning_rate: float = 2e-6
    beta: float = 1e-3
    loss_type: str = "grpo"
    epsilon: float = 0.2
    tie_value: float = 0.0
    max_completion_length: int = 1024
    temperature: float = 1.0
    top_p: float = 1.0
    num_train_epochs: float = 1.0
    max_steps: int = -1
    max_pairs: int | None = None
    lr_scheduler_type: str = "constant"
    warmup_ratio: float = 0.0
    seed: int = 0
    logging_steps: int = 1
    save_steps: int = 20
    save_total_limit: int | None = 2
    report_to: str | list[str] = "auto"
    resume_from_checkpoint: bool | str | None = None
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    dtype: str = "auto"
    use_cpu: bool = False
    gradient_checkpointing: bool = False
    save_dtype: str | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    trainer_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [str(self.data)]
        if self.finetuning not in _FINETUNING:
            raise ConfigurationError(f"finetuning must be one of {_FINETUNING}, got {self.finetuning!r}")
        for name in (
            "num_criteria",
            "num_evaluations",
            "pairs_per_step",
            "mini_batches",
            "per_device_train_batch_size",
            "max_completion_length",
            "lora_r",
            "lora_alpha",
            "save_steps",
        ):
            if int(getattr(self, name)) < 1:
                raise ConfigurationError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigurationError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.beta < 0:
            raise ConfigurationError(f"beta must be >= 0, got {self.beta}")
        if self.loss_type not in _LOSS_TYPES:
            raise ConfigurationError(f"loss_type must be one of {_LOSS_TYPES}, got {self.loss_type!r}")
        if self.vllm_mode not in _VLLM_MODES:
            raise ConfigurationError(f"vllm_mode must be one of {_VLLM_MODES}, got {self.vllm_mode!r}")
        if self.use_vllm and self.finetuning == "qlora":
            raise ConfigurationError(VLLM_4BIT_REFUSAL)
        rows = self.pairs_per_step * self.tree_size
        if rows % self.mini_batches:
            raise ConfigurationError(
                f"pairs_per_step={self.pairs_per_step} trees of {self.tree_size} rows ({rows} rows) do not split into "
                f"mini_batches={self.mini_batches} equal optimizer steps"
            )
        if self.save_steps % self.mini_batches:
            raise ConfigurationError(
                f"save_steps={self.save_steps} must be a multiple of mini_batches={self.mini_batches}: a checkpoint in "
                "the middle of a generation batch would resume with freshly generated rollouts"
            )
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            raise ConfigurationError("set num_train_epochs > 0 or max_steps > 0")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ConfigurationError(f"max_pairs must be >= 1, got {self.max_pairs}")

    @property
    def tree_size(self) -> int:
        """Trajectories per pair: ``nc + 2 * nc * ne``."""
        return tree_size(self.num_criteria, self.num_evaluations)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GRPOConfig:
        """Build from a mapping (a YAML section), refusing unknown keys by name."""
        return settings_from_mapping(cls, values, "GRPO")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def batch_plan(self, world_size: int) -> dict[str, int]:
        """TRL's batch settings for ``world_size`` processes; a clear error when the tree cannot stay whole."""
        if self.pairs_per_step % world_size:
            raise ConfigurationError(
                f"pairs_per_step={self.pairs_per_step} is not a multiple of the {world_size} processes: every process "
                "must hold whole pair trees"
            )
        rows = self.pairs_per_step * self.tree_size
        per_update = rows // self.mini_batches
        per_pass = self.per_device_train_batch_size * world_size
        if per_update % per_pass:
            raise ConfigurationError(
                f"an optimizer step of {per_update} rows ({self.pairs_per_step} pairs x {self.tree_size} / "
                f"{self.mini_batches} mini-batches) is not a multiple of per_device_train_batch_size="
                f"{self.per_device_train_batch_size} x {world_size} process(es)"
            )
        return {
            "num_generations": self.tree_size,
            "gradient_accumulation_steps": per_update // per_pass,
            "steps_per_generation": rows // per_pass,
            "rows_per_generation": rows,
        }


@dataclass(frozen=True)
class GRPOResult:
    """What a GRPO run produced: the folder ``Judge(...)`` loads, its log and report."""

    output_dir: str
    pairs: int
    global_step: int
    wall_seconds: float
    log_history: list[dict[str, Any]]
    report: str | None
    manifest: dict[str, Any]


# -- model -------------------------------------------------------------------------------------------------------------
def _sft_view(config: GRPOConfig, finetuning: str) -> Any:
    """The SFT stage's config with the model settings of ``config``, to share its model loading."""
    from cerm.training._sft import SFTConfig

    return SFTConfig(
        model=config.model,
        finetuning=finetuning,  # type: ignore[arg-type]
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        lora_target_modules=config.lora_target_modules,
        lora_layers=config.lora_layers,
        dtype=config.dtype,
        use_cpu=config.use_cpu,
        gradient_checkpointing=config.gradient_checkpointing,
    )


def load_policy(config: GRPOConfig, torch: Any, transformers: Any) -> tuple[Any, Any, str]:
    """The model to train, the dtype of its base, and the base model name to record.

    An adapter folder (an SFT output) is loaded on its base and keeps training (TRL keeps a frozen copy of it as the
    reference); anything else gets a fresh LoRA (``lora``/``qlora``) or is trained whole (``full``).
    """
    from cerm.training._sft import _load_model, guard_cpu_4bit, resolve_model_path

    trained = resolve_trained_dir(config.model)
    if trained is None:
        path = resolve_model_path(config.model)
        model, dtype = _load_model(_sft_view(config, config.finetuning), path, torch, transformers)
        base = str(Path(config.model).resolve()) if Path(config.model).exists() else config.model
        return model, dtype, base
    base, adapter = trained
    import peft

    # The base as SFT would load it for "full" (plain) or 4-bit without an adapter ("qlora" loads then adapts).
    sft = _sft_view(config, "full" if config.finetuning != "qlora" else "qlora")
    sft.model = base
    if config.finetuning == "qlora":
        # _load_model adds a fresh LoRA after 4-bit loading; take its base and put the trained adapter on instead.
        fresh, dtype = _load_model(sft, resolve_model_path(base), torch, transformers)
        model = fresh.unload()
    else:
        model, dtype = _load_model(sft, resolve_model_path(base), torch, transformers)
    model = peft.PeftModel.from_pretrained(model, adapter, is_trainable=True)
    if config.finetuning == "full":
        model = model.merge_and_unload()
        for param in model.parameters():
            param.requires_grad_(True)
    if config.finetuning == "qlora":
        guard_cpu_4bit(model)
    return model, dtype, base


# -- data --------------------------------------------------------------------------------------------------------------
def pair_rows(pairs: Sequence[Any]) -> list[dict[str, str]]:
    """One data set row per pair: TRL's ``prompt`` (the query text) and what the rollout needs."""
    return [
        {"prompt": p.prompt, "pair_id": p.id, "query": p.prompt, "chosen": p.chosen, "rejected": p.rejected}
        for p in pairs
    ]


def _load_data(config: GRPOConfig) -> tuple[list[Any], dict[str, str]]:
    from cerm.training._load import load_pairs
    from cerm.training._manifest import file_digest

    if not config.data:
        raise ConfigurationError("no GRPO data: set data (preference pairs: JSONL files, stage folders or hub ids)")
    pairs: list[Any] = []
    inputs: dict[str, str] = {}
    for source in config.data:
        pairs.extend(load_pairs(source))
        if Path(source).is_file():
            inputs[source] = file_digest(Path(source))
        else:
            inputs[source] = "(not a file)"
    if config.max_pairs is not None:
        pairs = pairs[: config.max_pairs]
    return pairs, inputs


# -- the run -----------------------------------------------------------------------------------------------------------
def _trl_args(config: GRPOConfig, trl: Any, torch: Any, dtype: Any, checkpoints: Path, world_size: int) -> Any:
    from cerm.training._sft import common_trainer_args

    plan = config.batch_plan(world_size)
    args = common_trainer_args(config, torch, dtype, checkpoints, world_size, plan["gradient_accumulation_steps"])
    args.update(
        {
            "steps_per_generation": plan["steps_per_generation"],
            "num_generations": plan["num_generations"],
            "beta": config.beta,
            "loss_type": config.loss_type,
            "epsilon": config.epsilon,
            "scale_rewards": "group",  # replaced by cerm's advantages; kept for TRL's own logs
            "max_completion_length": config.max_completion_length,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "use_vllm": config.use_vllm,
            "vllm_mode": config.vllm_mode,
            "remove_unused_columns": False,
            "log_completions": False,
        }
    )
    args.update(config.trainer_args)
    return trl.GRPOConfig(**args)


def build_trainer(
    config: GRPOConfig,
    pairs: Sequence[Any],
    *,
    callbacks: Sequence[Any] = (),
    trainer_class: Any = None,
) -> tuple[Any, Any, str]:
    """The configured two-stage GRPO trainer (not yet trained), the tokenizer, and the base model name."""
    from cerm.training._sft import _import_training, _world, guard_cpu_4bit, keep_trainable_fp32, resolve_model_path

    torch, transformers, trl = _import_training()
    from datasets import Dataset

    from cerm.protocol import chat_template_kwargs
    from cerm.training._rollout import TreeSpec, cerm_two_stage, make_trainer_class

    world_size, _ = _world()
    checkpoints = Path(config.output_dir) / CHECKPOINTS
    trained = resolve_trained_dir(config.model)
    tokenizer_path = trained[1] if trained else resolve_model_path(config.model)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_path)
    template = config.chat_template
    if template is not None and "{" not in template and Path(template).is_file():
        template = Path(template).read_text(encoding="utf-8")
    if template is not None:
        tokenizer.chat_template = template
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigurationError(f"model {config.model!r} has no chat template; set chat_template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    spec = TreeSpec(
        num_criteria=config.num_criteria,
        num_evaluations=config.num_evaluations,
        tie_value=config.tie_value,
        template_kwargs=chat_template_kwargs(tokenizer.chat_template, dict(config.chat_template_kwargs)),
    )
    transformers.set_seed(config.seed)  # a fresh adapter's initial weights are the same in every run of a config
    model, dtype, base = load_policy(config, torch, transformers)
    cls = trainer_class or make_trainer_class()
    trainer = cls(
        model=model,
        reward_funcs=[cerm_two_stage],
        args=_trl_args(config, trl, torch, dtype, checkpoints, world_size),
        train_dataset=Dataset.from_list(pair_rows(pairs)),
        processing_class=tokenizer,
        callbacks=list(callbacks) or None,
        cerm_spec=spec,
    )
    # TRL casts QLoRA adapters to bf16; at lr 2e-6 a bf16 lora_A barely moves. Trainable weights stay fp32.
    keep_trainable_fp32(trainer.model, torch)
    if config.finetuning == "qlora":
        guard_cpu_4bit(trainer.model)
    return trainer, tokenizer, base


def run_grpo(
    config: GRPOConfig, pairs: Sequence[Any] | None = None, *, callbacks: Sequence[Any] = (), trainer_class: Any = None
) -> GRPOResult:
    """Train with two-stage-rollout GRPO and write the output directory (adapter or model, tokenizer, manifest,
    ``log_history.json``, ``report.md`` and ``report.png``)."""
    from cerm.training._manifest import read_manifest
    from cerm.training._sft import _cast_trainable_for_saving, _checkpoint_to_resume, _import_training, _world

    torch, _, _ = _import_training()
    started = time.monotonic()
    world_size, _ = _world()
    output_dir = Path(config.output_dir)
    if pairs is None:
        pairs, inputs = _load_data(config)
    else:
        pairs = list(pairs)
        if config.max_pairs is not None:
            pairs = pairs[: config.max_pairs]
        inputs = {"pairs": f"{len(pairs)} in-memory pairs"}
    if len(pairs) < config.pairs_per_step:
        raise ConfigurationError(f"{len(pairs)} pairs is fewer than pairs_per_step={config.pairs_per_step}")

    trainer, tokenizer, base = build_trainer(config, pairs, callbacks=callbacks, trainer_class=trainer_class)
    resume = _checkpoint_to_resume(config, output_dir / CHECKPOINTS)  # type: ignore[arg-type]
    trainer.train(resume_from_checkpoint=resume)
    _cast_trainable_for_saving(trainer.model, torch, config.save_dtype)
    # TRL's frozen copy of a starting adapter (the KL reference) is not part of the result.
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in (getattr(unwrapped, "peft_config", None) or {}):
        unwrapped.delete_adapter("ref")
    trainer.save_model(str(output_dir))
    wall = time.monotonic() - started
    history = [dict(entry) for entry in trainer.state.log_history]
    stats = {
        "base_model": base,
        "finetuning": config.finetuning,
        "pairs": len(pairs),
        "tree_size": config.tree_size,
        "global_step": trainer.state.global_step,
        "world_size": world_size,
        "batch_plan": config.batch_plan(world_size),
        "resumed_from": resume,
        "wall_seconds": round(wall, 1),
    }
    manifest: dict[str, Any] = {}
    report = None
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(output_dir))
        (output_dir / "log_history.json").write_text(json.dumps(history, indent=1), encoding="utf-8")
        report = str(write_report(history, output_dir, title=f"GRPO run: {output_dir.name}"))
        outputs = model_files(output_dir)
        write_manifest(output_dir, stage="grpo", config=config, inputs=inputs, outputs=outputs, stats=stats)
        manifest = read_manifest(output_dir)
    return GRPOResult(
        output_dir=str(output_dir),
        pairs=len(pairs),
        global_step=trainer.state.global_step,
        wall_seconds=wall,
        log_history=history,
        report=report,
        manifest=manifest,
    )


# -- report ------------------------------------------------------------------------------------------------------------
_REPORT_COLUMNS = (
    ("step", "step"),
    ("mean reward (criteria)", "cerm/reward/criteria"),
    ("mean reward (chosen evals)", "cerm/reward/chosen"),
    ("mean reward (rejected evals)", "cerm/reward/rejected"),
    ("rollout pair accuracy", "cerm/rollout_pair_accuracy"),
    ("format rate", "cerm/format_rate"),
    ("unscorable", "cerm/unscorable_fraction"),
    ("KL", "kl"),
    ("gen tok/s", "cerm/generated_tokens_per_s"),
)


def write_report(history: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike[str], *, title: str) -> Path:
    """``report.md`` (a table of the logged metrics per step) and, when matplotlib is installed, ``report.png``
    (reward and accuracy curves) in ``output_dir``. Returns the Markdown file."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [entry for entry in history if "cerm/rollout_pair_accuracy" in entry]
    lines = [f"# {title}", ""]
    if not rows:
        lines.append("No training step was logged.")
    else:
        lines.append("| " + " | ".join(name for name, _ in _REPORT_COLUMNS) + " |")
        lines.append("|" + "---|" * len(_REPORT_COLUMNS))
        for entry in rows:
            cells = []
            for _, key in _REPORT_COLUMNS:
                value = entry.get(key)
                cells.append("" if value is None else (str(value) if key == "step" else f"{float(value):.4g}"))
            lines.append("| " + " | ".join(cells) + " |")
    png = _plot(rows, folder / "report.png")
    if png is not None:
        lines += ["", f"![reward and accuracy curves]({png.name})"]
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _plot(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: report.md without its PNG")
        return None
    steps = [entry["step"] for entry in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in (
        ("cerm/reward/criteria", "criteria"),
        ("cerm/reward/chosen", "chosen evaluations"),
        ("cerm/reward/rejected", "rejected evaluations"),
    ):
        left.plot(steps, [entry.get(key, math.nan) for entry in rows], marker="o", label=label)
    left.set_title("mean reward per group")
    left.set_xlabel("optimizer step")
    left.legend()
    for key, label in (
        ("cerm/rollout_pair_accuracy", "rollout pair accuracy"),
        ("cerm/format_rate", "format rate"),
        ("cerm/unscorable_fraction", "unscorable fraction"),
    ):
        right.plot(steps, [entry.get(key, math.nan) for entry in rows], marker="o", label=label)
    right.set_ylim(-0.05, 1.05)
    right.set_title("accuracy and format")
    right.set_xlabel("optimizer step")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
