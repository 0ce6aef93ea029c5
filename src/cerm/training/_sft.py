"""Cold-start SFT (SPEC section 2): teacher trajectories -> a judge that writes the CE-RM format.

Each trajectory is one conversation, ``evaluation_conversation(query, criteria, response)`` followed by the evaluation
turn, rendered by :mod:`cerm.protocol` exactly as inference renders it. The loss covers both assistant turns (the
criteria and the evaluation, each with its end-of-turn markup) and nothing else: the masks come from
:func:`cerm.protocol.assistant_token_mask`, which works for any chat template (SmolLM2's ChatML included, where TRL's
``assistant_only_loss`` would refuse) and checks that the template renders prefixes stably.

The training loop is TRL's ``SFTTrainer`` on pre-tokenized rows (``input_ids`` + ``assistant_masks``). Examples longer
than ``max_length`` are dropped and counted, never cut (TRL's default truncation would silently cut the evaluation
turn, which comes last). Several processes (``torchrun`` / ``accelerate launch``) are handled by the trainer itself:
DDP for LoRA and QLoRA, FSDP for full fine-tuning on GPUs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from cerm._embedded import embedded_model_path
from cerm._errors import BackendUnavailableError, ConfigurationError
from cerm.protocol import Conversation, evaluation_conversation
from cerm.training._artifacts import CHECKPOINTS, model_files
from cerm.training._manifest import file_digest, write_manifest
from cerm.training._settings import settings_from_mapping

logger = logging.getLogger("cerm")

Finetuning = Literal["full", "lora", "qlora"]
_FINETUNING = ("full", "lora", "qlora")
_SAVE_DTYPES = ("float32", "bfloat16", "float16")
_TRAJECTORY_FIELDS = ("query", "criteria", "response", "evaluation")


@dataclass
class SFTConfig:
    """Settings of cerm's cold-start SFT, in the style of TRL's ``SFTConfig``. Defaults follow the CE-RM paper
    (effective batch 64 through gradient accumulation, learning rate 1e-5, 3 epochs).

    Args:
        model: base model: a local folder, a hub id, ``"demo-base"`` (the embedded SmolLM2-135M, untrained) or
            ``"demo"`` (the embedded demo judge, its shipped adapter merged: training goes on from it).
        data: the teacher stage's output: ``teach`` output folders or ``trajectories.jsonl`` files (one SFT example per
            line: ``query``, ``criteria``, ``response``, ``evaluation``...).
        output_dir: where the trained adapter or model, its manifest and ``checkpoints/`` go.
        finetuning: ``"full"``, ``"lora"`` or ``"qlora"`` (4-bit NF4 base through bitsandbytes, LoRA on top).
        lora_r, lora_alpha, lora_dropout, lora_target_modules: the LoRA adapter (``"all-linear"`` or module names).
        lora_layers: only these decoder layer indices get adapters (None: all). Adapting the top layers only stops the
            backward pass early: a cheaper run when compute is scarce.
        effective_batch_size: sequences per optimizer step over all processes; the gradient accumulation steps are
            ``effective_batch_size / (per_device_train_batch_size * world size)`` (must divide exactly).
        max_length: the longest example in tokens; longer ones are dropped and counted.
        max_examples: use at most this many examples (after dropping over-long ones; None: all).
        report_to: ``"auto"`` (tensorboard or trackio when installed, else nothing), ``"none"``, or a list.
        resume_from_checkpoint: ``True`` resumes from the latest checkpoint in ``output_dir/checkpoints``; a path
            resumes from that checkpoint.
        dtype: ``"auto"`` (bf16 on a GPU that supports it, else fp32) or a dtype name for the base weights.
        save_dtype: cast the saved adapter weights (``"bfloat16"`` halves the file); None keeps them as trained.
        chat_template: a Jinja template (string or file path) replacing the tokenizer's own.
        chat_template_kwargs: extra template variables (``enable_thinking=False`` is set for Qwen3 templates).
        fsdp: ``"auto"``: FSDP full-shard for full fine-tuning on several GPUs, DDP otherwise; None: never FSDP; any
            other string is passed to the trainer as its ``fsdp`` option.
        trainer_args: further keyword arguments for ``trl.SFTConfig`` (they win over the values above).
    """

    model: str = "demo"
    data: list[str] = field(default_factory=list)
    output_dir: str = "runs/sft"
    finetuning: Finetuning = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | str = "all-linear"
    lora_layers: list[int] | None = None
    learning_rate: float = 1e-5
    num_train_epochs: float = 3.0
    max_steps: int = -1
    effective_batch_size: int = 64
    per_device_train_batch_size: int = 1
    max_length: int = 4096
    max_examples: int | None = None
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    logging_steps: int = 10
    save_steps: int = 100
    save_total_limit: int | None = 2
    report_to: str | list[str] = "auto"
    resume_from_checkpoint: bool | str | None = None
    dtype: str = "auto"
    use_cpu: bool = False
    gradient_checkpointing: bool = False
    save_dtype: str | None = None
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    fsdp: str | None = "auto"
    trainer_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.data, (str, os.PathLike)):
            self.data = [str(self.data)]
        if self.finetuning not in _FINETUNING:
            raise ConfigurationError(f"finetuning must be one of {_FINETUNING}, got {self.finetuning!r}")
        for name in ("lora_r", "lora_alpha", "effective_batch_size", "per_device_train_batch_size", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ConfigurationError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigurationError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.learning_rate <= 0:
            raise ConfigurationError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ConfigurationError(f"max_examples must be >= 1, got {self.max_examples}")
        if self.save_dtype is not None and self.save_dtype not in _SAVE_DTYPES:
            raise ConfigurationError(f"save_dtype must be one of {_SAVE_DTYPES} or None, got {self.save_dtype!r}")
        if self.lora_layers is not None and isinstance(self.lora_target_modules, str):
            raise ConfigurationError(
                "lora_layers needs lora_target_modules as a list of module names (peft cannot combine layer "
                f"selection with {self.lora_target_modules!r}), e.g. [q_proj, k_proj, v_proj, o_proj]"
            )
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            raise ConfigurationError("set num_train_epochs > 0 or max_steps > 0")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SFTConfig:
        """Build from a mapping (a YAML section), refusing unknown keys by name."""
        return settings_from_mapping(cls, values, "SFT")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def gradient_accumulation_steps(self, world_size: int) -> int:
        per_step = self.per_device_train_batch_size * world_size
        if self.effective_batch_size % per_step:
            raise ConfigurationError(
                f"effective_batch_size={self.effective_batch_size} is not a multiple of per_device_train_batch_size="
                f"{self.per_device_train_batch_size} x {world_size} process(es)"
            )
        return self.effective_batch_size // per_step


@dataclass(frozen=True)
class SFTExamples:
    """Tokenized SFT rows and what happened to the others."""

    input_ids: list[list[int]]
    assistant_masks: list[list[int]]
    read: int
    dropped_too_long: int
    longest_kept: int
    longest_dropped: int | None

    @property
    def kept(self) -> int:
        return len(self.input_ids)

    def stats(self) -> dict[str, Any]:
        loss_tokens = sum(sum(mask) for mask in self.assistant_masks)
        return {
            "examples_read": self.read,
            "examples_kept": self.kept,
            "examples_dropped_too_long": self.dropped_too_long,
            "longest_kept_tokens": self.longest_kept,
            "longest_dropped_tokens": self.longest_dropped,
            "tokens": sum(len(ids) for ids in self.input_ids),
            "loss_tokens": loss_tokens,
        }


@dataclass(frozen=True)
class SFTResult:
    """What an SFT run produced: the folder ``Judge(...)`` loads, and its numbers."""

    output_dir: str
    examples: dict[str, Any]
    train_loss: float | None
    first_logged_loss: float | None
    last_logged_loss: float | None
    global_step: int
    wall_seconds: float
    manifest: dict[str, Any]


# -- data ------------------------------------------------------------------------------------------------------------
def trajectory_conversation(row: Mapping[str, Any]) -> Conversation:
    """The SFT conversation of one teacher trajectory: the evaluation conversation plus the evaluation turn."""
    messages = row.get("messages")
    if messages is not None:
        if not isinstance(messages, list) or not messages:
            raise ValueError("'messages' must be a non-empty list of {role, content} messages")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    missing = [name for name in _TRAJECTORY_FIELDS if not isinstance(row.get(name), str)]
    if missing:
        raise ValueError(f"a trajectory needs string fields {list(_TRAJECTORY_FIELDS)}; missing or not text: {missing}")
    conversation = evaluation_conversation(row["query"], row["criteria"], row["response"])
    conversation.append({"role": "assistant", "content": row["evaluation"]})
    return conversation


def _trajectory_file(source: str) -> Path:
    from cerm.training._teach import TRAJECTORIES_FILE

    path = Path(source)
    return path / TRAJECTORIES_FILE if path.is_dir() else path


def read_trajectory_rows(sources: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The trajectories of every source (teach folders or files), validated, in order; and each file's sha256."""
    from cerm.training._teach import read_trajectories

    rows: list[dict[str, Any]] = []
    digests: dict[str, str] = {}
    for source in sources:
        path = _trajectory_file(source)
        if not path.is_file():
            raise ConfigurationError(f"SFT data not found: {path}")
        rows.extend(t.to_dict() for t in read_trajectories(path))
        digests[str(path)] = file_digest(path)
    return rows, digests


def tokenize_examples(
    tokenizer: Any,
    rows: Iterable[Mapping[str, Any]],
    *,
    max_length: int,
    template_kwargs: Mapping[str, Any] | None = None,
    chat_template: str | None = None,
    max_examples: int | None = None,
) -> SFTExamples:
    """Render and tokenize trajectories with the protocol's own rendering; drop (and count) the over-long ones."""
    from cerm.protocol import assistant_token_mask

    ids_out: list[list[int]] = []
    masks_out: list[list[int]] = []
    read = dropped = longest_kept = 0
    longest_dropped: int | None = None
    for index, row in enumerate(rows):
        if max_examples is not None and len(ids_out) >= max_examples:
            break
        read += 1
        try:
            conversation = trajectory_conversation(row)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"trajectory {index}: {exc}") from None
        input_ids, mask = assistant_token_mask(
            tokenizer, conversation, template_kwargs=dict(template_kwargs or {}), chat_template=chat_template
        )
        if len(input_ids) > max_length:
            dropped += 1
            longest_dropped = max(longest_dropped or 0, len(input_ids))
            continue
        ids_out.append(list(input_ids))
        masks_out.append([int(bit) for bit in mask])
        longest_kept = max(longest_kept, len(input_ids))
    if dropped:
        logger.warning(
            "dropped %d of %d SFT examples longer than max_length=%d tokens (longest: %s)",
            dropped,
            read,
            max_length,
            longest_dropped,
        )
    return SFTExamples(ids_out, masks_out, read, dropped, longest_kept, longest_dropped)


# -- model -------------------------------------------------------------------------------------------------------------
def resolve_model_path(model: str) -> str:
    """A model name as the loaders see it: an embedded model (``"demo-base"``, ``"demo"``) becomes its folder."""
    embedded = embedded_model_path(model)
    return str(embedded) if embedded is not None else model


def _import_training() -> tuple[Any, Any, Any]:
    try:
        import torch
        import transformers
        import trl
    except ImportError as exc:
        raise BackendUnavailableError("SFT needs torch, transformers and trl: pip install 'ce-rm[train]'") from exc
    return torch, transformers, trl


def _world() -> tuple[int, int]:
    """(world size, local rank) as torchrun / accelerate set them; (1, 0) in a single process."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))


def _torch_dtype(torch: Any, name: str, on_gpu: bool) -> Any:
    if name == "auto":
        if on_gpu and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        dtype = getattr(torch, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(name, name))
    except AttributeError:
        raise ConfigurationError(f"unknown dtype {name!r}") from None
    if not isinstance(dtype, torch.dtype):
        raise ConfigurationError(f"unknown dtype {name!r}")
    return dtype


def guard_cpu_4bit(model: Any) -> int:
    """Turn off bitsandbytes' CPU repacking on every 4-bit linear layer (FIELD_NOTES: after an inference repacks the
    weights, backward leaves LoRA gradients None or wrong with only a warning). Returns how many layers were set."""
    try:
        from bitsandbytes.nn.modules import Linear4bit
    except ImportError:
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def _load_model(config: SFTConfig, path: str, torch: Any, transformers: Any) -> tuple[Any, Any]:
    """The model to train (a PeftModel for LoRA / QLoRA) and the dtype of its base weights."""
    on_gpu = torch.cuda.is_available() and not config.use_cpu
    dtype = _torch_dtype(torch, config.dtype, on_gpu)
    kwargs: dict[str, Any] = {"dtype": dtype}
    _world_size, local_rank = _world()
    if config.finetuning == "qlora":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailableError("QLoRA needs bitsandbytes: pip install 'ce-rm[peft]'") from exc
        nf4: dict[str, Any] = {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True,
            "bnb_4bit_compute_dtype": dtype,
        }
        if on_gpu and dtype != torch.float32:
            nf4["bnb_4bit_quant_storage"] = dtype  # lets FSDP shard the 4-bit weights like the others
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(**nf4)
        # Each process holds the whole (quantized) model on its own device.
        kwargs["device_map"] = {"": f"cuda:{local_rank}" if on_gpu else "cpu"}
    model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if config.finetuning == "full":
        return model, dtype

    try:
        import peft
    except ImportError as exc:
        raise BackendUnavailableError("LoRA needs peft: pip install 'ce-rm[peft]'") from exc
    if config.finetuning == "qlora":
        prepare: Any = peft.prepare_model_for_kbit_training  # untyped in peft
        model = prepare(model, use_gradient_checkpointing=config.gradient_checkpointing)
    lora = peft.LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        layers_to_transform=config.lora_layers,
        task_type="CAUSAL_LM",
    )
    # The adapter's random initialisation (lora_A) is seeded by the run's seed: the trainer seeds the global RNG only
    # after the model exists, so without this two runs of one config (an uninterrupted run and a killed-and-resumed
    # one, or two ranks) would start from different adapters. A forked RNG leaves the caller's global state alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = peft.get_peft_model(model, lora)
    if config.finetuning == "qlora":
        guard_cpu_4bit(model)
    return model, dtype


def keep_trainable_fp32(model: Any, torch: Any) -> int:
    """Cast every trainable parameter to fp32 (TRL casts QLoRA adapters to bf16; tiny updates then vanish in
    rounding). Returns how many tensors were cast."""
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.to(torch.float32)
            cast += 1
    return cast


def _report_to(value: str | list[str]) -> str | list[str]:
    if value != "auto":
        return value
    import importlib.util

    for tool in ("tensorboard", "trackio"):
        if importlib.util.find_spec(tool) is not None:
            return [tool]
    return "none"


def _checkpoint_to_resume(config: SFTConfig, checkpoints: Path) -> str | None:
    value = config.resume_from_checkpoint
    if value is None or value is False:
        return None
    if value is True:
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None  # type: ignore[no-untyped-call]
        if last is None:
            logger.info("resume_from_checkpoint=True but no checkpoint in %s: starting from scratch", checkpoints)
            return None
        value = last
    if not Path(str(value)).is_dir():
        raise ConfigurationError(f"resume_from_checkpoint: {value!r} is not a checkpoint folder")
    _refuse_finished_checkpoint(Path(str(value)), config.max_steps)
    return str(value)


def _refuse_finished_checkpoint(checkpoint: Path, max_steps: int) -> None:
    """transformers resumes a checkpoint that already reached ``max_steps`` by training one more step before it
    notices (its stop check runs after a step), so the "resumed" result would silently differ from the checkpoint."""
    state_file = checkpoint / "trainer_state.json"
    if max_steps <= 0 or not state_file.is_file():
        return
    done = int(json.loads(state_file.read_text(encoding="utf-8")).get("global_step", 0))
    if done >= max_steps:
        raise ConfigurationError(
            f"resume_from_checkpoint: {checkpoint.name} already reached step {done} and max_steps is {max_steps}, so "
            f"there is nothing left to train; raise max_steps to train further, or use the checkpoint as it is "
            f"(Judge({str(checkpoint)!r}) loads it)"
        )


def common_trainer_args(
    config: Any, torch: Any, dtype: Any, checkpoints: Path, world_size: int, gradient_accumulation_steps: int
) -> dict[str, Any]:
    """The ``transformers.TrainingArguments`` that SFT and GRPO set alike, from the fields both configs share
    (batch, schedule, seeds, logging, checkpoints, device and precision, multi-process settings)."""
    on_gpu = torch.cuda.is_available() and not config.use_cpu
    args: dict[str, Any] = {
        "output_dir": str(checkpoints),
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "lr_scheduler_type": config.lr_scheduler_type,
        "warmup_steps": config.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        "seed": config.seed,
        "data_seed": config.seed,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "report_to": _report_to(config.report_to),
        "use_cpu": config.use_cpu,
        "bf16": on_gpu and dtype == torch.bfloat16,
        "fp16": on_gpu and dtype == torch.float16,
        "dataloader_num_workers": 0,
        # Passed either way: TRL's configs default it to True, so leaving it out when cerm's setting is False would
        # recompute every layer in each backward while the manifest says it was off.
        "gradient_checkpointing": config.gradient_checkpointing,
    }
    if world_size > 1 and config.finetuning != "full":
        args["ddp_find_unused_parameters"] = False  # frozen base weights are not "unused" parameters to look for
    return args


def _trl_args(config: SFTConfig, trl: Any, torch: Any, dtype: Any, checkpoints: Path, world_size: int) -> Any:
    on_gpu = torch.cuda.is_available() and not config.use_cpu
    args = common_trainer_args(
        config, torch, dtype, checkpoints, world_size, config.gradient_accumulation_steps(world_size)
    )
    args["weight_decay"] = config.weight_decay
    # Every row already fits: TRL's truncation is then a no-op, and no packing mixes two trajectories.
    args["max_length"] = config.max_length
    args["packing"] = False
    fsdp = config.fsdp
    if fsdp == "auto":
        fsdp = "full_shard auto_wrap" if (world_size > 1 and on_gpu and config.finetuning == "full") else None
    if fsdp:
        args["fsdp"] = fsdp
    args.update(config.trainer_args)
    return trl.SFTConfig(**args)


def _cast_trainable_for_saving(model: Any, torch: Any, save_dtype: str | None) -> None:
    if save_dtype is None:
        return
    target = getattr(torch, save_dtype)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.to(target)


def run_sft(
    config: SFTConfig, rows: Sequence[Mapping[str, Any]] | None = None, *, callbacks: Sequence[Any] = ()
) -> SFTResult:
    """Train with TRL's SFTTrainer and write the output directory (model or adapter, tokenizer, manifest).

    ``rows`` replaces ``config.data`` (trajectory dicts, e.g. from a ``datasets.Dataset``); otherwise the files in
    ``config.data`` are read and hashed into the manifest. ``callbacks`` are ``transformers.TrainerCallback``
    instances added to the trainer (progress, early stopping, your own metrics).
    """
    torch, transformers, trl = _import_training()
    from datasets import Dataset

    from cerm.protocol import chat_template_kwargs
    from cerm.training._manifest import read_manifest

    started = time.monotonic()
    world_size, _ = _world()
    output_dir = Path(config.output_dir)
    checkpoints = output_dir / CHECKPOINTS
    path = resolve_model_path(config.model)

    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    template = config.chat_template
    if template is not None and "{" not in template and Path(template).is_file():
        template = Path(template).read_text(encoding="utf-8")
    if template is not None:
        tokenizer.chat_template = template
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigurationError(f"model {config.model!r} has no chat template; set chat_template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    template_kwargs = chat_template_kwargs(tokenizer.chat_template, dict(config.chat_template_kwargs))

    if rows is None:
        if not config.data:
            raise ConfigurationError("no SFT data: set data (teach output folders or trajectories.jsonl) or pass rows")
        rows, inputs = read_trajectory_rows(config.data)
    else:
        rows = list(rows)
        inputs = {"rows": f"{len(rows)} in-memory rows"}
    examples = tokenize_examples(
        tokenizer, rows, max_length=config.max_length, template_kwargs=template_kwargs, max_examples=config.max_examples
    )
    if examples.kept == 0:
        raise ConfigurationError(
            f"no SFT example fits max_length={config.max_length} ({examples.dropped_too_long} dropped as too long)"
        )
    logger.info("SFT data: %s", examples.stats())
    dataset = Dataset.from_dict({"input_ids": examples.input_ids, "assistant_masks": examples.assistant_masks})

    model, dtype = _load_model(config, path, torch, transformers)
    trainer = trl.SFTTrainer(
        model=model,
        args=_trl_args(config, trl, torch, dtype, checkpoints, world_size),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks) or None,
    )
    if config.finetuning == "qlora":
        keep_trainable_fp32(trainer.model, torch)
        guard_cpu_4bit(trainer.model)
    resume = _checkpoint_to_resume(config, checkpoints)
    outcome = trainer.train(resume_from_checkpoint=resume)

    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    _cast_trainable_for_saving(trainer.model, torch, config.save_dtype)
    trainer.save_model(str(output_dir))
    wall = time.monotonic() - started
    stats = {
        "base_model": str(Path(config.model).resolve()) if Path(config.model).exists() else config.model,
        "finetuning": config.finetuning,
        **examples.stats(),
        "global_step": trainer.state.global_step,
        "train_loss": outcome.training_loss,
        "logged_losses": losses,
        "world_size": world_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps(world_size),
        "resumed_from": resume,
        "wall_seconds": round(wall, 1),
        "chat_template_kwargs": template_kwargs,
    }
    manifest: dict[str, Any] = {}
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(output_dir))
        write_manifest(
            output_dir,
            stage="sft",
            config=config,
            inputs=inputs,
            outputs=model_files(output_dir),
            stats=stats,
        )
        manifest = read_manifest(output_dir)
    return SFTResult(
        output_dir=str(output_dir),
        examples=examples.stats(),
        train_loss=outcome.training_loss,
        first_logged_loss=losses[0] if losses else None,
        last_logged_loss=losses[-1] if losses else None,
        global_step=trainer.state.global_step,
        wall_seconds=wall,
        manifest=manifest,
    )
